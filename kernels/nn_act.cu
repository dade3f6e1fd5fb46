/* CUDA twins of the elementwise network ops (kernels/nn_act.c): ReLU, GELU,
 * residual add and Philox dropout, one thread per element (grid-stride), the
 * same inline math (kernels/nn.h) as the CPU so masks and values match. */
#include "kernels/backend_internal.h"
#include "kernels/cuda_check.cuh"
#include "kernels/nn.h"

#define ACT_THREADS 256

static unsigned act_blocks(size_t count)
{
    size_t b = (count + ACT_THREADS - 1) / ACT_THREADS;
    return (unsigned)(b > 65535 * 8 ? 65535 * 8 : b);
}

#define GRID_STRIDE(i, count)                                                                      \
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (count);                    \
         i += (size_t)gridDim.x * blockDim.x)

static __global__ void relu_fwd_kernel(const float *x, float *y, size_t count)
{
    GRID_STRIDE(i, count) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

static __global__ void relu_bwd_kernel(const float *x, const float *dy, float *dx, size_t count)
{
    GRID_STRIDE(i, count) dx[i] = x[i] > 0.0f ? dy[i] : 0.0f;
}

static __global__ void gelu_fwd_kernel(const float *x, float *y, size_t count)
{
    GRID_STRIDE(i, count) y[i] = k_nn_gelu(x[i]);
}

static __global__ void gelu_bwd_kernel(const float *x, const float *dy, float *dx, size_t count)
{
    GRID_STRIDE(i, count) dx[i] = dy[i] * k_nn_gelu_grad(x[i]);
}

static __global__ void add_kernel(const float *a, const float *b, float *y, size_t count)
{
    GRID_STRIDE(i, count) y[i] = a[i] + b[i];
}

static __global__ void dropout_kernel(const float *x, float *y, size_t count, float p, float scale,
                                      uint64_t seed, uint64_t step)
{
    GRID_STRIDE(i, count) y[i] = k_nn_dropout_keep(seed, step, i, p) ? x[i] * scale : 0.0f;
}

#define LAUNCH(kernel, count, ...)                                                                 \
    pid_status st = PID_OK;                                                                        \
    cudaStream_t s = (cudaStream_t)pid_backend_cuda_stream(be);                                    \
    kernel<<<act_blocks(count), ACT_THREADS, 0, s>>>(__VA_ARGS__);                                 \
    PID_CUDA_CHECK_LAUNCH();                                                                       \
    fail:                                                                                          \
    return st

extern "C" pid_status k_nn_relu_forward_cuda(pid_backend *be, const float *x, float *y,
                                             size_t count, pid_error *err)
{
    LAUNCH(relu_fwd_kernel, count, x, y, count);
}

extern "C" pid_status k_nn_relu_backward_cuda(pid_backend *be, const float *x, const float *dy,
                                              float *dx, size_t count, pid_error *err)
{
    LAUNCH(relu_bwd_kernel, count, x, dy, dx, count);
}

extern "C" pid_status k_nn_gelu_forward_cuda(pid_backend *be, const float *x, float *y,
                                             size_t count, pid_error *err)
{
    LAUNCH(gelu_fwd_kernel, count, x, y, count);
}

extern "C" pid_status k_nn_gelu_backward_cuda(pid_backend *be, const float *x, const float *dy,
                                              float *dx, size_t count, pid_error *err)
{
    LAUNCH(gelu_bwd_kernel, count, x, dy, dx, count);
}

extern "C" pid_status k_nn_add_cuda(pid_backend *be, const float *a, const float *b, float *y,
                                    size_t count, pid_error *err)
{
    LAUNCH(add_kernel, count, a, b, y, count);
}

extern "C" pid_status k_nn_dropout_forward_cuda(pid_backend *be, const float *x, float *y,
                                                size_t count, float p, uint64_t seed, uint64_t step,
                                                pid_error *err)
{
    LAUNCH(dropout_kernel, count, x, y, count, p, 1.0f / (1.0f - p), seed, step);
}

/* The backward is the same masked scaling applied to dy. */
extern "C" pid_status k_nn_dropout_backward_cuda(pid_backend *be, const float *dy, float *dx,
                                                 size_t count, float p, uint64_t seed,
                                                 uint64_t step, pid_error *err)
{
    LAUNCH(dropout_kernel, count, dy, dx, count, p, 1.0f / (1.0f - p), seed, step);
}
