/* CUDA twins of the pooling ops (kernels/nn_pool.c): one thread per output
 * for the forwards; the backwards gather, one thread per input element over
 * the windows that cover it, so no atomics and a deterministic order. */
#include "kernels/backend_internal.h"
#include "kernels/cuda_check.cuh"
#include "kernels/nn.h"

#define POOL_THREADS 256

static unsigned pool_blocks(size_t total)
{
    return (unsigned)((total + POOL_THREADS - 1) / POOL_THREADS);
}

static __global__ void maxpool_fwd_kernel(k_nn_pool s, int ho, int wo, const float *x, float *y,
                                          int32_t *argmax)
{
    const size_t out = (size_t)ho * wo, total = (size_t)s.n * s.c * out;
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= total) return;
    size_t pc = idx / out;
    int oh = (int)((idx % out) / wo), ow = (int)(idx % wo);
    const float *xp = x + pc * (size_t)s.h_in * s.w_in;
    int best = oh * s.stride_h * s.w_in + ow * s.stride_w;
    for (int i = 0; i < s.k_h; i++)
        for (int j = 0; j < s.k_w; j++) {
            int k = (oh * s.stride_h + i) * s.w_in + ow * s.stride_w + j;
            if (xp[k] > xp[best]) best = k;
        }
    y[idx] = xp[best];
    argmax[idx] = best;
}

static __global__ void avgpool_fwd_kernel(k_nn_pool s, int ho, int wo, const float *x, float *y)
{
    const size_t out = (size_t)ho * wo, total = (size_t)s.n * s.c * out;
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= total) return;
    size_t pc = idx / out;
    int oh = (int)((idx % out) / wo), ow = (int)(idx % wo);
    const float *xp = x + pc * (size_t)s.h_in * s.w_in;
    float acc = 0.0f;
    for (int i = 0; i < s.k_h; i++)
        for (int j = 0; j < s.k_w; j++)
            acc += xp[(oh * s.stride_h + i) * s.w_in + ow * s.stride_w + j];
    y[idx] = acc * (1.0f / (float)(s.k_h * s.k_w));
}

/* dx at input (pc, h, w): windows oh with oh sh <= h < oh sh + k_h. mode 0:
 * max (dy where argmax points here), mode 1: average (dy / window size). */
static __global__ void pool_bwd_kernel(k_nn_pool s, int ho, int wo, const float *dy,
                                       const int32_t *argmax, float *dx, int mode)
{
    const size_t plane = (size_t)s.h_in * s.w_in, out = (size_t)ho * wo;
    const size_t total = (size_t)s.n * s.c * plane;
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= total) return;
    size_t pc = idx / plane;
    int k = (int)(idx % plane), h = k / s.w_in, w = k % s.w_in;
    int oh0 = h - s.k_h + 1 > 0 ? (h - s.k_h + 1 + s.stride_h - 1) / s.stride_h : 0;
    int ow0 = w - s.k_w + 1 > 0 ? (w - s.k_w + 1 + s.stride_w - 1) / s.stride_w : 0;
    int oh1 = min(h / s.stride_h, ho - 1), ow1 = min(w / s.stride_w, wo - 1);
    const float inv = 1.0f / (float)(s.k_h * s.k_w);
    float acc = 0.0f;
    for (int oh = oh0; oh <= oh1; oh++)
        for (int ow = ow0; ow <= ow1; ow++) {
            size_t q = pc * out + (size_t)oh * wo + ow;
            if (mode == 0) {
                if (argmax[q] == k) acc += dy[q];
            } else {
                acc += dy[q] * inv;
            }
        }
    dx[idx] = acc;
}

static __global__ void gap_fwd_kernel(const float *x, float *y, size_t rows, int l)
{
    size_t r = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows) return;
    double acc = 0.0;
    for (int k = 0; k < l; k++)
        acc += x[r * l + k];
    y[r] = (float)(acc / l);
}

static __global__ void gap_bwd_kernel(const float *dy, float *dx, size_t total, int l)
{
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    dx[i] = dy[i / l] / (float)l;
}

#define POOL_OUT()                                                                                 \
    pid_status st = PID_OK;                                                                        \
    int ho = 0, wo = 0;                                                                            \
    cudaStream_t str = (cudaStream_t)pid_backend_cuda_stream(be);                                  \
    st = k_nn_pool_out(s, &ho, &wo, err);                                                          \
    if (st) return st;                                                                             \
    const size_t outs = (size_t)s->n * s->c * ho * wo;                                             \
    const size_t ins = (size_t)s->n * s->c * s->h_in * s->w_in

extern "C" pid_status k_nn_maxpool_forward_cuda(pid_backend *be, const k_nn_pool *s, const float *x,
                                                float *y, int32_t *argmax, pid_error *err)
{
    POOL_OUT();
    (void)ins;
    maxpool_fwd_kernel<<<pool_blocks(outs), POOL_THREADS, 0, str>>>(*s, ho, wo, x, y, argmax);
    PID_CUDA_CHECK_LAUNCH();
fail:
    return st;
}

extern "C" pid_status k_nn_maxpool_backward_cuda(pid_backend *be, const k_nn_pool *s,
                                                 const float *dy, const int32_t *argmax, float *dx,
                                                 pid_error *err)
{
    POOL_OUT();
    (void)outs;
    pool_bwd_kernel<<<pool_blocks(ins), POOL_THREADS, 0, str>>>(*s, ho, wo, dy, argmax, dx, 0);
    PID_CUDA_CHECK_LAUNCH();
fail:
    return st;
}

extern "C" pid_status k_nn_avgpool_forward_cuda(pid_backend *be, const k_nn_pool *s, const float *x,
                                                float *y, pid_error *err)
{
    POOL_OUT();
    (void)ins;
    avgpool_fwd_kernel<<<pool_blocks(outs), POOL_THREADS, 0, str>>>(*s, ho, wo, x, y);
    PID_CUDA_CHECK_LAUNCH();
fail:
    return st;
}

extern "C" pid_status k_nn_avgpool_backward_cuda(pid_backend *be, const k_nn_pool *s,
                                                 const float *dy, float *dx, pid_error *err)
{
    POOL_OUT();
    (void)outs;
    pool_bwd_kernel<<<pool_blocks(ins), POOL_THREADS, 0, str>>>(*s, ho, wo, dy, NULL, dx, 1);
    PID_CUDA_CHECK_LAUNCH();
fail:
    return st;
}

extern "C" pid_status k_nn_global_avgpool_forward_cuda(pid_backend *be, const float *x, float *y,
                                                       int n, int c, int l, pid_error *err)
{
    pid_status st = PID_OK;
    cudaStream_t str = (cudaStream_t)pid_backend_cuda_stream(be);
    gap_fwd_kernel<<<pool_blocks((size_t)n * c), POOL_THREADS, 0, str>>>(x, y, (size_t)n * c, l);
    PID_CUDA_CHECK_LAUNCH();
fail:
    return st;
}

extern "C" pid_status k_nn_global_avgpool_backward_cuda(pid_backend *be, const float *dy, float *dx,
                                                        int n, int c, int l, pid_error *err)
{
    pid_status st = PID_OK;
    cudaStream_t str = (cudaStream_t)pid_backend_cuda_stream(be);
    const size_t total = (size_t)n * c * l;
    gap_bwd_kernel<<<pool_blocks(total), POOL_THREADS, 0, str>>>(dy, dx, total, l);
    PID_CUDA_CHECK_LAUNCH();
fail:
    return st;
}
