/* Batch normalization, CPU reference: training forward with batch
 * statistics and running-stat update, inference forward, backward, and the
 * fold of an inference BN into the preceding conv/dense weights. */
#include "kernels/nn.h"

#include <math.h>

#define NO_CUDA                                                                                    \
    return pid_fail(err, PID_ERR_UNSUPPORTED, "nn batchnorm: this phaseid was built without CUDA")

#ifndef PHASEID_HAVE_CUDA
pid_status k_nn_batchnorm_forward_train_cuda(pid_backend *be, const float *x, const float *gamma,
                                             const float *beta, float *y, int n, int c, int l,
                                             float eps, float momentum, float *running_mean,
                                             float *running_var, float *save_mean, float *save_rstd,
                                             pid_error *err)
{
    NO_CUDA;
}
pid_status k_nn_batchnorm_forward_infer_cuda(pid_backend *be, const float *x, const float *gamma,
                                             const float *beta, const float *running_mean,
                                             const float *running_var, float *y, int n, int c,
                                             int l, float eps, pid_error *err)
{
    NO_CUDA;
}
pid_status k_nn_batchnorm_backward_cuda(pid_backend *be, const float *x, const float *gamma,
                                        const float *save_mean, const float *save_rstd,
                                        const float *dy, float *dx, float *dgamma, float *dbeta,
                                        int n, int c, int l, pid_error *err)
{
    NO_CUDA;
}
pid_status k_nn_batchnorm_fold_cuda(pid_backend *be, float *w, float *b, const float *gamma,
                                    const float *beta, const float *running_mean,
                                    const float *running_var, float eps, int c_out, int k,
                                    pid_error *err)
{
    NO_CUDA;
}
#endif

static pid_status bn_check(const pid_backend *be, int n, int c, int l, float eps, pid_error *err)
{
    if (!be) return pid_fail(err, PID_ERR_ARG, "nn batchnorm: NULL backend");
    if (n <= 0 || c <= 0 || l <= 0)
        return pid_fail(err, PID_ERR_ARG, "nn batchnorm: sizes must be positive (n=%d c=%d l=%d)",
                        n, c, l);
    if (!(eps > 0.0f)) return pid_fail(err, PID_ERR_ARG, "nn batchnorm: eps must be positive");
    return PID_OK;
}

#define AT(i, ch, k) (((size_t)(i)*c + (ch)) * l + (k))

pid_status k_nn_batchnorm_forward_train(pid_backend *be, const float *x, const float *gamma,
                                        const float *beta, float *y, int n, int c, int l, float eps,
                                        float momentum, float *running_mean, float *running_var,
                                        float *save_mean, float *save_rstd, pid_error *err)
{
    pid_status st = bn_check(be, n, c, l, eps, err);
    if (st) return st;
    if (!x || !gamma || !beta || !y || !save_mean || !save_rstd)
        return pid_fail(err, PID_ERR_ARG, "nn batchnorm train: NULL tensor");
    if (!running_mean != !running_var)
        return pid_fail(err, PID_ERR_ARG, "nn batchnorm train: give both running stats or neither");
    if (!(momentum >= 0.0f && momentum <= 1.0f))
        return pid_fail(err, PID_ERR_ARG, "nn batchnorm train: momentum must be in [0, 1]");
    if (pid_backend_kind(be) == PID_DEVICE_CUDA)
        return k_nn_batchnorm_forward_train_cuda(be, x, gamma, beta, y, n, c, l, eps, momentum,
                                                 running_mean, running_var, save_mean, save_rstd,
                                                 err);
    const double m = (double)n * l;
    for (int ch = 0; ch < c; ch++) {
        double s = 0.0, s2 = 0.0;
        for (int i = 0; i < n; i++)
            for (int k = 0; k < l; k++)
                s += x[AT(i, ch, k)];
        const double mean = s / m;
        for (int i = 0; i < n; i++)
            for (int k = 0; k < l; k++) {
                double d = x[AT(i, ch, k)] - mean;
                s2 += d * d;
            }
        const double var = s2 / m, rstd = 1.0 / sqrt(var + eps);
        save_mean[ch] = (float)mean;
        save_rstd[ch] = (float)rstd;
        for (int i = 0; i < n; i++)
            for (int k = 0; k < l; k++)
                y[AT(i, ch, k)] = (float)(gamma[ch] * (x[AT(i, ch, k)] - mean) * rstd + beta[ch]);
        if (running_mean) {
            double unb = m > 1.0 ? s2 / (m - 1.0) : var;
            running_mean[ch] = (float)((1.0 - momentum) * running_mean[ch] + momentum * mean);
            running_var[ch] = (float)((1.0 - momentum) * running_var[ch] + momentum * unb);
        }
    }
    return PID_OK;
}

pid_status k_nn_batchnorm_forward_infer(pid_backend *be, const float *x, const float *gamma,
                                        const float *beta, const float *running_mean,
                                        const float *running_var, float *y, int n, int c, int l,
                                        float eps, pid_error *err)
{
    pid_status st = bn_check(be, n, c, l, eps, err);
    if (st) return st;
    if (!x || !gamma || !beta || !running_mean || !running_var || !y)
        return pid_fail(err, PID_ERR_ARG, "nn batchnorm infer: NULL tensor");
    if (pid_backend_kind(be) == PID_DEVICE_CUDA)
        return k_nn_batchnorm_forward_infer_cuda(be, x, gamma, beta, running_mean, running_var, y,
                                                 n, c, l, eps, err);
    for (int i = 0; i < n; i++)
        for (int ch = 0; ch < c; ch++) {
            float sc = gamma[ch] / sqrtf(running_var[ch] + eps);
            for (int k = 0; k < l; k++)
                y[AT(i, ch, k)] = (x[AT(i, ch, k)] - running_mean[ch]) * sc + beta[ch];
        }
    return PID_OK;
}

pid_status k_nn_batchnorm_backward(pid_backend *be, const float *x, const float *gamma,
                                   const float *save_mean, const float *save_rstd, const float *dy,
                                   float *dx, float *dgamma, float *dbeta, int n, int c, int l,
                                   pid_error *err)
{
    pid_status st = bn_check(be, n, c, l, 1.0f, err); /* no eps here: any positive */
    if (st) return st;
    if (!x || !gamma || !save_mean || !save_rstd || !dy)
        return pid_fail(err, PID_ERR_ARG, "nn batchnorm backward: NULL tensor");
    if (pid_backend_kind(be) == PID_DEVICE_CUDA)
        return k_nn_batchnorm_backward_cuda(be, x, gamma, save_mean, save_rstd, dy, dx, dgamma,
                                            dbeta, n, c, l, err);
    const double m = (double)n * l;
    for (int ch = 0; ch < c; ch++) {
        const double mean = save_mean[ch], rstd = save_rstd[ch];
        double sdy = 0.0, sdyx = 0.0; /* sum dy, sum dy * xhat */
        for (int i = 0; i < n; i++)
            for (int k = 0; k < l; k++) {
                double g = dy[AT(i, ch, k)];
                sdy += g;
                sdyx += g * (x[AT(i, ch, k)] - mean) * rstd;
            }
        if (dgamma) dgamma[ch] = (float)sdyx;
        if (dbeta) dbeta[ch] = (float)sdy;
        if (dx)
            for (int i = 0; i < n; i++)
                for (int k = 0; k < l; k++) {
                    double xh = (x[AT(i, ch, k)] - mean) * rstd;
                    dx[AT(i, ch, k)] =
                        (float)(gamma[ch] * rstd / m * (m * dy[AT(i, ch, k)] - sdy - xh * sdyx));
                }
    }
    return PID_OK;
}

pid_status k_nn_batchnorm_fold(pid_backend *be, float *w, float *b, const float *gamma,
                               const float *beta, const float *running_mean,
                               const float *running_var, float eps, int c_out, int k,
                               pid_error *err)
{
    pid_status st = bn_check(be, 1, c_out, k, eps, err);
    if (st) return st;
    if (!w || !b || !gamma || !beta || !running_mean || !running_var)
        return pid_fail(err, PID_ERR_ARG, "nn batchnorm fold: NULL tensor");
    if (pid_backend_kind(be) == PID_DEVICE_CUDA)
        return k_nn_batchnorm_fold_cuda(be, w, b, gamma, beta, running_mean, running_var, eps,
                                        c_out, k, err);
    for (int o = 0; o < c_out; o++) {
        float sc = gamma[o] / sqrtf(running_var[o] + eps);
        for (int j = 0; j < k; j++)
            w[(size_t)o * k + j] *= sc;
        b[o] = (b[o] - running_mean[o]) * sc + beta[o];
    }
    return PID_OK;
}
