/* CUDA twin of the dense layer (kernels/nn_dense.c): cuBLAS sgemm on the
 * backend's handle for the products (row-major operands passed as their
 * column-major transposes), small kernels for the bias broadcast and sum. */
#include "kernels/backend_internal.h"
#include "kernels/cuda_check.cuh"
#include "kernels/nn.h"

/* y[i, o] = b[o] (or 0): the GEMM then accumulates x W^T on top. */
static __global__ void dense_bias_kernel(const float *__restrict__ b, float *__restrict__ y, int n,
                                         int out)
{
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)n * out) return;
    y[i] = b ? b[i % (size_t)out] : 0.0f;
}

/* db[o] = sum_i dy[i, o]; one thread per column, summed in order like the CPU. */
static __global__ void dense_colsum_kernel(const float *__restrict__ dy, float *__restrict__ db,
                                           int n, int out)
{
    int o = blockIdx.x * blockDim.x + threadIdx.x;
    if (o >= out) return;
    double s = 0.0;
    for (int i = 0; i < n; i++)
        s += dy[(size_t)i * out + o];
    db[o] = (float)s;
}

extern "C" pid_status k_nn_dense_forward_cuda(pid_backend *be, const float *x, const float *w,
                                              const float *b, float *y, int n, int in, int out,
                                              pid_error *err)
{
    pid_status st = PID_OK;
    cudaStream_t s = (cudaStream_t)pid_backend_cuda_stream(be);
    cublasHandle_t h = (cublasHandle_t)pid_backend_cublas(be);
    const float one = 1.0f;
    size_t total = (size_t)n * out;
    dense_bias_kernel<<<(unsigned)((total + 255) / 256), 256, 0, s>>>(b, y, n, out);
    PID_CUDA_CHECK_LAUNCH();
    /* Row-major y[n,out] += x W^T is column-major y^T[out,n] += W x^T, where
     * cuBLAS sees row-major W[out,in] as W^T (in x out), hence OP_T. */
    PID_CUBLAS_CHECK(
        cublasSgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, out, n, in, &one, w, in, x, in, &one, y, out));
fail:
    return st;
}

extern "C" pid_status k_nn_dense_backward_cuda(pid_backend *be, const float *x, const float *w,
                                               const float *dy, float *dx, float *dw, float *db,
                                               int n, int in, int out, pid_error *err)
{
    pid_status st = PID_OK;
    cudaStream_t s = (cudaStream_t)pid_backend_cuda_stream(be);
    cublasHandle_t h = (cublasHandle_t)pid_backend_cublas(be);
    const float one = 1.0f, zero = 0.0f;
    if (dx) /* dx[n,in] = dy[n,out] W[out,in] */
        PID_CUBLAS_CHECK(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, in, n, out, &one, w, in, dy, out,
                                     &zero, dx, in));
    if (dw) /* dw[out,in] = dy^T x */
        PID_CUBLAS_CHECK(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_T, in, out, n, &one, x, in, dy, out,
                                     &zero, dw, in));
    if (db) {
        dense_colsum_kernel<<<(out + 127) / 128, 128, 0, s>>>(dy, db, n, out);
        PID_CUDA_CHECK_LAUNCH();
    }
fail:
    return st;
}
