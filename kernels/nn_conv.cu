/* CUDA twin of the convolution (kernels/nn_conv.c): per-sample im2col kernel
 * + cuBLAS sgemm on the backend's handle; the input gradient gathers each
 * input element's column entries (col2im without atomics, deterministic). */
#include "kernels/backend_internal.h"
#include "kernels/cuda_check.cuh"
#include "kernels/nn.h"

#define CONV_THREADS 256

/* Row-major C[M,N] = alpha op(A)[M,K] op(B)[K,N] + beta C through
 * column-major cuBLAS: compute C^T = op(B)^T op(A)^T. */
static cublasStatus_t gemm_rm(cublasHandle_t h, int ta, int tb, int m, int n, int k, float alpha,
                              const float *a, int lda, const float *b, int ldb, float beta,
                              float *c, int ldc)
{
    return cublasSgemm(h, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, k,
                       &alpha, b, ldb, a, lda, &beta, c, ldc);
}

static __global__ void im2col_kernel(k_nn_conv s, int ho, int wo, const float *__restrict__ x,
                                     float *__restrict__ col)
{
    const size_t p = (size_t)ho * wo, total = (size_t)s.c_in * s.k_h * s.k_w * p;
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= total) return;
    size_t r = idx / p, q = idx % p;
    int j = (int)(r % s.k_w), i = (int)((r / s.k_w) % s.k_h), c = (int)(r / (s.k_w * s.k_h));
    int oh = (int)(q / wo), ow = (int)(q % wo);
    int h = oh * s.stride_h - s.pad_h + i * s.dil_h, w = ow * s.stride_w - s.pad_w + j * s.dil_w;
    col[idx] = (h >= 0 && h < s.h_in && w >= 0 && w < s.w_in)
                   ? x[((size_t)c * s.h_in + h) * s.w_in + w]
                   : 0.0f;
}

/* dx[c,h,w] = sum of dcol entries whose im2col source is (c,h,w). */
static __global__ void col2im_kernel(k_nn_conv s, int ho, int wo, const float *__restrict__ col,
                                     float *__restrict__ dx)
{
    const size_t p = (size_t)ho * wo, total = (size_t)s.c_in * s.h_in * s.w_in;
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= total) return;
    int w = (int)(idx % s.w_in), h = (int)((idx / s.w_in) % s.h_in);
    int c = (int)(idx / ((size_t)s.w_in * s.h_in));
    float acc = 0.0f;
    for (int i = 0; i < s.k_h; i++) {
        int th = h + s.pad_h - i * s.dil_h;
        if (th < 0 || th % s.stride_h) continue;
        int oh = th / s.stride_h;
        if (oh >= ho) continue;
        for (int j = 0; j < s.k_w; j++) {
            int tw = w + s.pad_w - j * s.dil_w;
            if (tw < 0 || tw % s.stride_w) continue;
            int ow = tw / s.stride_w;
            if (ow >= wo) continue;
            acc += col[((size_t)(c * s.k_h + i) * s.k_w + j) * p + (size_t)oh * wo + ow];
        }
    }
    dx[idx] = acc;
}

/* y_n[o, q] = b[o] (or 0) for every sample before the GEMMs accumulate. */
static __global__ void conv_bias_kernel(const float *__restrict__ b, float *__restrict__ y,
                                        size_t total, int p, int c_out)
{
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= total) return;
    y[idx] = b ? b[(idx / (size_t)p) % (size_t)c_out] : 0.0f;
}

/* db[o] = sum over samples and positions of dy; one block per channel. */
static __global__ void conv_db_kernel(const float *__restrict__ dy, float *__restrict__ db, int n,
                                      int c_out, int p)
{
    __shared__ double red[CONV_THREADS];
    const int o = blockIdx.x;
    double acc = 0.0;
    for (size_t k = threadIdx.x; k < (size_t)n * p; k += blockDim.x) {
        size_t sn = k / p, q = k % p;
        acc += dy[(sn * c_out + o) * p + q];
    }
    red[threadIdx.x] = acc;
    __syncthreads();
    for (int st = blockDim.x / 2; st > 0; st >>= 1) {
        if ((int)threadIdx.x < st) red[threadIdx.x] += red[threadIdx.x + st];
        __syncthreads();
    }
    if (threadIdx.x == 0) db[o] = (float)red[0];
}

static unsigned conv_blocks(size_t total)
{
    return (unsigned)((total + CONV_THREADS - 1) / CONV_THREADS);
}

extern "C" pid_status k_nn_conv_forward_cuda(pid_backend *be, const k_nn_conv *s, const float *x,
                                             const float *w, const float *b, float *y, float *work,
                                             pid_error *err)
{
    pid_status st = PID_OK;
    int ho = 0, wo = 0;
    cudaStream_t str = (cudaStream_t)pid_backend_cuda_stream(be);
    cublasHandle_t h = (cublasHandle_t)pid_backend_cublas(be);
    st = k_nn_conv_out(s, &ho, &wo, err);
    if (st) return st;
    {
        const int kk = s->c_in * s->k_h * s->k_w, p = ho * wo;
        const size_t xs = (size_t)s->c_in * s->h_in * s->w_in, ys = (size_t)s->c_out * p;
        const size_t cols = (size_t)kk * p;
        conv_bias_kernel<<<conv_blocks(ys * s->n), CONV_THREADS, 0, str>>>(b, y, ys * s->n, p,
                                                                           s->c_out);
        PID_CUDA_CHECK_LAUNCH();
        for (int n = 0; n < s->n; n++) {
            im2col_kernel<<<conv_blocks(cols), CONV_THREADS, 0, str>>>(*s, ho, wo, x + n * xs,
                                                                       work);
            PID_CUDA_CHECK_LAUNCH();
            PID_CUBLAS_CHECK(
                gemm_rm(h, 0, 0, s->c_out, p, kk, 1.0f, w, kk, work, p, 1.0f, y + n * ys, p));
        }
    }
fail:
    return st;
}

extern "C" pid_status k_nn_conv_backward_cuda(pid_backend *be, const k_nn_conv *s, const float *x,
                                              const float *w, const float *dy, float *dx, float *dw,
                                              float *db, float *work, pid_error *err)
{
    pid_status st = PID_OK;
    int ho = 0, wo = 0;
    cudaStream_t str = (cudaStream_t)pid_backend_cuda_stream(be);
    cublasHandle_t h = (cublasHandle_t)pid_backend_cublas(be);
    st = k_nn_conv_out(s, &ho, &wo, err);
    if (st) return st;
    {
        const int kk = s->c_in * s->k_h * s->k_w, p = ho * wo;
        const size_t xs = (size_t)s->c_in * s->h_in * s->w_in, ys = (size_t)s->c_out * p;
        const size_t cols = (size_t)kk * p;
        if (db) {
            conv_db_kernel<<<s->c_out, CONV_THREADS, 0, str>>>(dy, db, s->n, s->c_out, p);
            PID_CUDA_CHECK_LAUNCH();
        }
        for (int n = 0; n < s->n; n++) {
            const float *dyn = dy + n * ys;
            if (dw) {
                im2col_kernel<<<conv_blocks(cols), CONV_THREADS, 0, str>>>(*s, ho, wo, x + n * xs,
                                                                           work);
                PID_CUDA_CHECK_LAUNCH();
                PID_CUBLAS_CHECK(gemm_rm(h, 0, 1, s->c_out, kk, p, 1.0f, dyn, p, work, p,
                                         n ? 1.0f : 0.0f, dw, kk));
            }
            if (dx) {
                PID_CUBLAS_CHECK(
                    gemm_rm(h, 1, 0, kk, p, s->c_out, 1.0f, w, kk, dyn, p, 0.0f, work, p));
                col2im_kernel<<<conv_blocks(xs), CONV_THREADS, 0, str>>>(*s, ho, wo, work,
                                                                         dx + n * xs);
                PID_CUDA_CHECK_LAUNCH();
            }
        }
    }
fail:
    return st;
}
