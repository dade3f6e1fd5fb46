/* CUDA twins of the fused inference ops (kernels/nn_infer.c): a direct
 * convolution with one thread per (pooled) output value that applies bias,
 * residual, activation and max / global average pooling itself, and the dense layer as the cuBLAS
 * dense forward followed by the activation kernel. */
#include "kernels/backend_internal.h"
#include "kernels/cuda_check.cuh"
#include "kernels/nn.h"

#define FUSED_THREADS 256

static __device__ float fused_act(k_nn_act act, float v)
{
    if (act == K_NN_ACT_RELU) return v > 0.0f ? v : 0.0f;
    if (act == K_NN_ACT_GELU) return k_nn_gelu(v);
    return v;
}

/* Conv output (n, o, oh, ow) after bias, residual and activation. */
static __device__ float conv_fused_at(const k_nn_conv &s, int ho, int wo, const float *x,
                                      const float *w, const float *b, const float *residual,
                                      k_nn_act act, int n, int o, int oh, int ow)
{
    const float *xn = x + (size_t)n * s.c_in * s.h_in * s.w_in;
    const float *wo_ = w + (size_t)o * s.c_in * s.k_h * s.k_w;
    float acc = 0.0f;
    for (int c = 0; c < s.c_in; c++)
        for (int i = 0; i < s.k_h; i++) {
            int h = oh * s.stride_h - s.pad_h + i * s.dil_h;
            if (h < 0 || h >= s.h_in) continue;
            const float *xr = xn + ((size_t)c * s.h_in + h) * s.w_in;
            const float *wr = wo_ + ((size_t)c * s.k_h + i) * s.k_w;
            for (int j = 0; j < s.k_w; j++) {
                int q = ow * s.stride_w - s.pad_w + j * s.dil_w;
                if (q >= 0 && q < s.w_in) acc += wr[j] * xr[q];
            }
        }
    acc += b ? b[o] : 0.0f;
    if (residual) acc += residual[(((size_t)n * s.c_out + o) * ho + oh) * wo + ow];
    return fused_act(act, acc);
}

/* One thread per output value: pool >= 1: y[n, o, oh, t] = max over u < pool
 * of the conv output at column t pool + u; K_NN_POOL_GLOBAL_AVG: y[n, o] =
 * the mean over every (oh, ow), summed in double. */
static __global__ void conv_fused_kernel(k_nn_conv s, int ho, int wo, int wy,
                                         const float *__restrict__ x, const float *__restrict__ w,
                                         const float *__restrict__ b,
                                         const float *__restrict__ residual, k_nn_act act, int pool,
                                         float *__restrict__ y)
{
    const int rows = pool == K_NN_POOL_GLOBAL_AVG ? 1 : ho;
    const size_t total = (size_t)s.n * s.c_out * rows * wy;
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= total) return;
    int t = (int)(idx % wy), r = (int)((idx / wy) % rows);
    int o = (int)((idx / ((size_t)wy * rows)) % s.c_out);
    int n = (int)(idx / ((size_t)wy * rows * s.c_out));
    if (pool == K_NN_POOL_GLOBAL_AVG) {
        double acc = 0.0;
        for (int oh = 0; oh < ho; oh++)
            for (int ow = 0; ow < wo; ow++)
                acc += conv_fused_at(s, ho, wo, x, w, b, residual, act, n, o, oh, ow);
        y[idx] = (float)(acc / ((double)ho * wo));
        return;
    }
    float best = 0.0f;
    for (int u = 0; u < pool; u++) {
        float v = conv_fused_at(s, ho, wo, x, w, b, residual, act, n, o, r, t * pool + u);
        best = (u == 0 || v > best) ? v : best;
    }
    y[idx] = best;
}

extern "C" pid_status k_nn_conv_forward_fused_cuda(pid_backend *be, const k_nn_conv *s,
                                                   const float *x, const float *w, const float *b,
                                                   const float *residual, k_nn_act act, int pool,
                                                   float *y, float *work, pid_error *err)
{
    pid_status st = PID_OK;
    int ho = 0, wo = 0;
    if ((st = k_nn_conv_out(s, &ho, &wo, err))) return st;
    int wy = pool == K_NN_POOL_GLOBAL_AVG ? 1 : wo / pool;
    size_t total = (size_t)s->n * s->c_out * (pool == K_NN_POOL_GLOBAL_AVG ? 1 : ho) * wy;
    cudaStream_t stream = (cudaStream_t)pid_backend_cuda_stream(be);
    conv_fused_kernel<<<(unsigned)((total + FUSED_THREADS - 1) / FUSED_THREADS), FUSED_THREADS, 0,
                        stream>>>(*s, ho, wo, wy, x, w, b, residual, act, pool, y);
    PID_CUDA_CHECK_LAUNCH();
fail:
    return st;
}

extern "C" pid_status k_nn_dense_forward_fused_cuda(pid_backend *be, const float *x, const float *w,
                                                    const float *b, k_nn_act act, float *y, int n,
                                                    int in, int out, pid_error *err)
{
    pid_status st = k_nn_dense_forward_cuda(be, x, w, b, y, n, in, out, err);
    if (st || act == K_NN_ACT_NONE) return st;
    size_t cnt = (size_t)n * out;
    if (act == K_NN_ACT_RELU) return k_nn_relu_forward_cuda(be, y, y, cnt, err);
    return k_nn_gelu_forward_cuda(be, y, y, cnt, err);
}
