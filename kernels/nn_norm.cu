/* CUDA twins of batch normalization (kernels/nn_norm.c): one block per
 * channel reduces the batch statistics (double, like the CPU) in shared
 * memory; elementwise kernels for inference and the BN fold. */
#include "kernels/backend_internal.h"
#include "kernels/cuda_check.cuh"
#include "kernels/nn.h"

#define BN_THREADS 256
#define AT(i, ch, k) (((size_t)(i)*c + (ch)) * l + (k))

/* Sum a per-thread double across the block (blockDim.x == BN_THREADS). */
static __device__ double bn_block_sum(double v, double *red)
{
    __syncthreads(); /* red may still be read by a previous reduction */
    red[threadIdx.x] = v;
    __syncthreads();
    for (int s = BN_THREADS / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s) red[threadIdx.x] += red[threadIdx.x + s];
        __syncthreads();
    }
    return red[0];
}

static __global__ void __launch_bounds__(BN_THREADS)
    bn_train_kernel(const float *x, const float *gamma, const float *beta, float *y, int n, int c,
                    int l, float eps, float momentum, float *rmean, float *rvar, float *smean,
                    float *srstd)
{
    __shared__ double red[BN_THREADS];
    const int ch = blockIdx.x;
    const size_t m = (size_t)n * l;
    double s = 0.0;
    for (size_t t = threadIdx.x; t < m; t += BN_THREADS)
        s += x[AT(t / l, ch, t % l)];
    const double mean = bn_block_sum(s, red) / (double)m;
    double s2 = 0.0;
    for (size_t t = threadIdx.x; t < m; t += BN_THREADS) {
        double d = x[AT(t / l, ch, t % l)] - mean;
        s2 += d * d;
    }
    s2 = bn_block_sum(s2, red);
    const double var = s2 / (double)m, rstd = 1.0 / sqrt(var + eps);
    for (size_t t = threadIdx.x; t < m; t += BN_THREADS) {
        size_t at = AT(t / l, ch, t % l);
        y[at] = (float)(gamma[ch] * (x[at] - mean) * rstd + beta[ch]);
    }
    if (threadIdx.x == 0) {
        smean[ch] = (float)mean;
        srstd[ch] = (float)rstd;
        if (rmean) {
            double unb = m > 1 ? s2 / (double)(m - 1) : var;
            rmean[ch] = (float)((1.0 - momentum) * rmean[ch] + momentum * mean);
            rvar[ch] = (float)((1.0 - momentum) * rvar[ch] + momentum * unb);
        }
    }
}

static __global__ void bn_infer_kernel(const float *x, const float *gamma, const float *beta,
                                       const float *rmean, const float *rvar, float *y, int n,
                                       int c, int l, float eps)
{
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)n * c * l) return;
    int ch = (int)((idx / l) % c);
    float sc = gamma[ch] / sqrtf(rvar[ch] + eps);
    y[idx] = (x[idx] - rmean[ch]) * sc + beta[ch];
}

static __global__ void __launch_bounds__(BN_THREADS)
    bn_bwd_kernel(const float *x, const float *gamma, const float *smean, const float *srstd,
                  const float *dy, float *dx, float *dgamma, float *dbeta, int n, int c, int l)
{
    __shared__ double red[BN_THREADS];
    const int ch = blockIdx.x;
    const size_t m = (size_t)n * l;
    const double mean = smean[ch], rstd = srstd[ch];
    double a = 0.0, b = 0.0;
    for (size_t t = threadIdx.x; t < m; t += BN_THREADS) {
        size_t at = AT(t / l, ch, t % l);
        a += dy[at];
        b += (double)dy[at] * (x[at] - mean) * rstd;
    }
    const double sdy = bn_block_sum(a, red);
    const double sdyx = bn_block_sum(b, red);
    if (threadIdx.x == 0) {
        if (dgamma) dgamma[ch] = (float)sdyx;
        if (dbeta) dbeta[ch] = (float)sdy;
    }
    if (dx)
        for (size_t t = threadIdx.x; t < m; t += BN_THREADS) {
            size_t at = AT(t / l, ch, t % l);
            double xh = (x[at] - mean) * rstd;
            dx[at] = (float)(gamma[ch] * rstd / (double)m * ((double)m * dy[at] - sdy - xh * sdyx));
        }
}

static __global__ void bn_fold_kernel(float *w, float *b, const float *gamma, const float *beta,
                                      const float *rmean, const float *rvar, float eps, int c_out,
                                      int k)
{
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)c_out * (k + 1)) return;
    /* Threads [0, c_out k) scale weights; the last c_out fold the biases. */
    if (idx < (size_t)c_out * k) {
        int o = (int)(idx / k);
        w[idx] *= gamma[o] / sqrtf(rvar[o] + eps);
    } else {
        int o = (int)(idx - (size_t)c_out * k);
        b[o] = (b[o] - rmean[o]) * (gamma[o] / sqrtf(rvar[o] + eps)) + beta[o];
    }
}

extern "C" pid_status k_nn_batchnorm_forward_train_cuda(pid_backend *be, const float *x,
                                                        const float *gamma, const float *beta,
                                                        float *y, int n, int c, int l, float eps,
                                                        float momentum, float *running_mean,
                                                        float *running_var, float *save_mean,
                                                        float *save_rstd, pid_error *err)
{
    pid_status st = PID_OK;
    cudaStream_t s = (cudaStream_t)pid_backend_cuda_stream(be);
    bn_train_kernel<<<c, BN_THREADS, 0, s>>>(x, gamma, beta, y, n, c, l, eps, momentum,
                                             running_mean, running_var, save_mean, save_rstd);
    PID_CUDA_CHECK_LAUNCH();
fail:
    return st;
}

extern "C" pid_status k_nn_batchnorm_forward_infer_cuda(pid_backend *be, const float *x,
                                                        const float *gamma, const float *beta,
                                                        const float *running_mean,
                                                        const float *running_var, float *y, int n,
                                                        int c, int l, float eps, pid_error *err)
{
    pid_status st = PID_OK;
    cudaStream_t s = (cudaStream_t)pid_backend_cuda_stream(be);
    size_t total = (size_t)n * c * l;
    bn_infer_kernel<<<(unsigned)((total + 255) / 256), 256, 0, s>>>(x, gamma, beta, running_mean,
                                                                    running_var, y, n, c, l, eps);
    PID_CUDA_CHECK_LAUNCH();
fail:
    return st;
}

extern "C" pid_status k_nn_batchnorm_backward_cuda(pid_backend *be, const float *x,
                                                   const float *gamma, const float *save_mean,
                                                   const float *save_rstd, const float *dy,
                                                   float *dx, float *dgamma, float *dbeta, int n,
                                                   int c, int l, pid_error *err)
{
    pid_status st = PID_OK;
    cudaStream_t s = (cudaStream_t)pid_backend_cuda_stream(be);
    bn_bwd_kernel<<<c, BN_THREADS, 0, s>>>(x, gamma, save_mean, save_rstd, dy, dx, dgamma, dbeta, n,
                                           c, l);
    PID_CUDA_CHECK_LAUNCH();
fail:
    return st;
}

extern "C" pid_status k_nn_batchnorm_fold_cuda(pid_backend *be, float *w, float *b,
                                               const float *gamma, const float *beta,
                                               const float *running_mean, const float *running_var,
                                               float eps, int c_out, int k, pid_error *err)
{
    pid_status st = PID_OK;
    cudaStream_t s = (cudaStream_t)pid_backend_cuda_stream(be);
    size_t total = (size_t)c_out * (k + 1);
    bn_fold_kernel<<<(unsigned)((total + 255) / 256), 256, 0, s>>>(w, b, gamma, beta, running_mean,
                                                                   running_var, eps, c_out, k);
    PID_CUDA_CHECK_LAUNCH();
fail:
    return st;
}
