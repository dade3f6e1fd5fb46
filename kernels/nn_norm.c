/* Batch normalization, CPU reference: training forward with batch
 * statistics and running-stat update, inference forward, backward, and the
 * fold of an inference BN into the preceding conv/dense weights. The CPU
 * loops run over channels (each one's sums in a fixed order) on the
 * backend's threads. */
#include "kernels/nn.h"

#include <math.h>

#include "kernels/par.h"

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

/* Arguments of the per-channel loops (each reads what it needs). */
typedef struct {
    const float *x, *gamma, *beta, *dy;
    float *y, *dx, *dgamma, *dbeta;
    int n, c, l;
    float eps, momentum;
    const float *running_mean, *running_var; /* inference: read */
    float *run_mean, *run_var;               /* training: updated (NULL: not kept) */
    float *save_mean, *save_rstd;            /* training: written */
    const float *mean, *rstd;                /* backward: the saved statistics */
} bn_par;

/* Sums over one run of a channel, lanes as in k_sum_run: of (x - mean)^2,
 * and of dy (x - mean) rstd. */
static double run_sq_dev(const float *x, int l, double mean)
{
    double acc[K_SUM_LANES] = {0};
    int k = 0;
    for (; k + K_SUM_LANES <= l; k += K_SUM_LANES)
        for (int j = 0; j < K_SUM_LANES; j++) {
            double d = x[k + j] - mean;
            acc[j] += d * d;
        }
    for (int j = 0; k < l; k++, j++) {
        double d = x[k] - mean;
        acc[j] += d * d;
    }
    return k_sum_lanes(acc);
}

static double run_dy_xhat(const float *dy, const float *x, int l, double mean, double rstd)
{
    double acc[K_SUM_LANES] = {0};
    int k = 0;
    for (; k + K_SUM_LANES <= l; k += K_SUM_LANES)
        for (int j = 0; j < K_SUM_LANES; j++)
            acc[j] += (double)dy[k + j] * (x[k + j] - mean) * rstd;
    for (int j = 0; k < l; k++, j++)
        acc[j] += (double)dy[k] * (x[k] - mean) * rstd;
    return k_sum_lanes(acc);
}

static bn_par bn_par_forward(const float *x, const float *gamma, const float *beta, float *y, int n,
                             int c, int l, float eps)
{
    bn_par p = {.x = x, .gamma = gamma, .beta = beta, .y = y, .n = n, .c = c, .l = l, .eps = eps};
    return p;
}

/* Channels per thread: a channel touches n l floats of x and y (and dy, dx). */
static size_t bn_grain(int n, int l)
{
    return k_par_grain(sizeof(float) * 3 * (size_t)n * l);
}

static void bn_train_range(void *ctx, size_t c0, size_t c1)
{
    const bn_par *P = ctx;
    const float *x = P->x, *gamma = P->gamma, *beta = P->beta;
    float *y = P->y, *running_mean = P->run_mean, *running_var = P->run_var;
    float *save_mean = P->save_mean, *save_rstd = P->save_rstd;
    const int n = P->n, c = P->c, l = P->l;
    const float eps = P->eps, momentum = P->momentum;
    const double m = (double)n * l;
    for (int ch = (int)c0; ch < (int)c1; ch++) {
        double s = 0.0, s2 = 0.0;
        for (int i = 0; i < n; i++)
            s += k_sum_run(x + AT(i, ch, 0), (size_t)l);
        const double mean = s / m;
        for (int i = 0; i < n; i++)
            s2 += run_sq_dev(x + AT(i, ch, 0), l, mean);
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
}

/* Over planes (sample, channel) pc = i c + ch. */
static void bn_infer_range(void *ctx, size_t q0, size_t q1)
{
    const bn_par *P = ctx;
    const int c = P->c, l = P->l;
    for (size_t q = q0; q < q1; q++) {
        const int i = (int)(q / c), ch = (int)(q % c);
        float sc = P->gamma[ch] / sqrtf(P->running_var[ch] + P->eps);
        for (int k = 0; k < l; k++)
            P->y[AT(i, ch, k)] = (P->x[AT(i, ch, k)] - P->running_mean[ch]) * sc + P->beta[ch];
    }
}

static void bn_backward_range(void *ctx, size_t c0, size_t c1)
{
    const bn_par *P = ctx;
    const float *x = P->x, *gamma = P->gamma, *dy = P->dy;
    const float *save_mean = P->mean, *save_rstd = P->rstd;
    float *dx = P->dx, *dgamma = P->dgamma, *dbeta = P->dbeta;
    const int n = P->n, c = P->c, l = P->l;
    const double m = (double)n * l;
    for (int ch = (int)c0; ch < (int)c1; ch++) {
        const double mean = save_mean[ch], rstd = save_rstd[ch];
        double sdy = 0.0, sdyx = 0.0; /* sum dy, sum dy * xhat */
        for (int i = 0; i < n; i++) {
            sdy += k_sum_run(dy + AT(i, ch, 0), (size_t)l);
            sdyx += run_dy_xhat(dy + AT(i, ch, 0), x + AT(i, ch, 0), l, mean, rstd);
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
}

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
    bn_par p = bn_par_forward(x, gamma, beta, y, n, c, l, eps);
    p.momentum = momentum, p.run_mean = running_mean, p.run_var = running_var;
    p.save_mean = save_mean, p.save_rstd = save_rstd;
    k_par_for(be, (size_t)c, bn_grain(n, l), bn_train_range, &p);
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
    bn_par p = bn_par_forward(x, gamma, beta, y, n, c, l, eps);
    p.running_mean = running_mean, p.running_var = running_var;
    k_par_for(be, (size_t)n * c, bn_grain(1, l), bn_infer_range, &p);
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
    bn_par p = {.x = x,
                .gamma = gamma,
                .dy = dy,
                .dx = dx,
                .dgamma = dgamma,
                .dbeta = dbeta,
                .n = n,
                .c = c,
                .l = l,
                .mean = save_mean,
                .rstd = save_rstd};
    k_par_for(be, (size_t)c, bn_grain(n, l), bn_backward_range, &p);
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
