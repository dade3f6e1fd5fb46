/* Elementwise network ops, CPU reference: ReLU and GELU (tanh approximation)
 * forward/backward, residual add, and inverted dropout with a Philox mask
 * regenerated from (seed, step, index); CUDA twins in nn_act.cu. */
#include "kernels/nn.h"

#include <math.h>
#include <string.h>

#define NO_CUDA                                                                                    \
    return pid_fail(err, PID_ERR_UNSUPPORTED, "nn act: this phaseid was built without CUDA")

#ifndef PHASEID_HAVE_CUDA
pid_status k_nn_relu_forward_cuda(pid_backend *be, const float *x, float *y, size_t count,
                                  pid_error *err)
{
    NO_CUDA;
}
pid_status k_nn_relu_backward_cuda(pid_backend *be, const float *x, const float *dy, float *dx,
                                   size_t count, pid_error *err)
{
    NO_CUDA;
}
pid_status k_nn_gelu_forward_cuda(pid_backend *be, const float *x, float *y, size_t count,
                                  pid_error *err)
{
    NO_CUDA;
}
pid_status k_nn_gelu_backward_cuda(pid_backend *be, const float *x, const float *dy, float *dx,
                                   size_t count, pid_error *err)
{
    NO_CUDA;
}
pid_status k_nn_add_cuda(pid_backend *be, const float *a, const float *b, float *y, size_t count,
                         pid_error *err)
{
    NO_CUDA;
}
pid_status k_nn_dropout_forward_cuda(pid_backend *be, const float *x, float *y, size_t count,
                                     float p, uint64_t seed, uint64_t step, pid_error *err)
{
    NO_CUDA;
}
pid_status k_nn_dropout_backward_cuda(pid_backend *be, const float *dy, float *dx, size_t count,
                                      float p, uint64_t seed, uint64_t step, pid_error *err)
{
    NO_CUDA;
}
#endif

static pid_status act_check(const pid_backend *be, const char *op, const void *a, const void *b,
                            const void *c, pid_error *err)
{
    if (!be) return pid_fail(err, PID_ERR_ARG, "nn %s: NULL backend", op);
    if (!a || !b || !c) return pid_fail(err, PID_ERR_ARG, "nn %s: NULL tensor", op);
    return PID_OK;
}

static int on_cuda(const pid_backend *be)
{
    return pid_backend_kind(be) == PID_DEVICE_CUDA;
}

pid_status k_nn_relu_forward(pid_backend *be, const float *x, float *y, size_t count,
                             pid_error *err)
{
    pid_status st = act_check(be, "relu forward", x, y, y, err);
    if (st || count == 0) return st;
    if (on_cuda(be)) return k_nn_relu_forward_cuda(be, x, y, count, err);
    for (size_t i = 0; i < count; i++)
        y[i] = x[i] > 0.0f ? x[i] : 0.0f;
    return PID_OK;
}

pid_status k_nn_relu_backward(pid_backend *be, const float *x, const float *dy, float *dx,
                              size_t count, pid_error *err)
{
    pid_status st = act_check(be, "relu backward", x, dy, dx, err);
    if (st || count == 0) return st;
    if (on_cuda(be)) return k_nn_relu_backward_cuda(be, x, dy, dx, count, err);
    for (size_t i = 0; i < count; i++)
        dx[i] = x[i] > 0.0f ? dy[i] : 0.0f;
    return PID_OK;
}

pid_status k_nn_gelu_forward(pid_backend *be, const float *x, float *y, size_t count,
                             pid_error *err)
{
    pid_status st = act_check(be, "gelu forward", x, y, y, err);
    if (st || count == 0) return st;
    if (on_cuda(be)) return k_nn_gelu_forward_cuda(be, x, y, count, err);
    for (size_t i = 0; i < count; i++)
        y[i] = k_nn_gelu(x[i]);
    return PID_OK;
}

pid_status k_nn_gelu_backward(pid_backend *be, const float *x, const float *dy, float *dx,
                              size_t count, pid_error *err)
{
    pid_status st = act_check(be, "gelu backward", x, dy, dx, err);
    if (st || count == 0) return st;
    if (on_cuda(be)) return k_nn_gelu_backward_cuda(be, x, dy, dx, count, err);
    for (size_t i = 0; i < count; i++)
        dx[i] = dy[i] * k_nn_gelu_grad(x[i]);
    return PID_OK;
}

pid_status k_nn_add(pid_backend *be, const float *a, const float *b, float *y, size_t count,
                    pid_error *err)
{
    pid_status st = act_check(be, "add", a, b, y, err);
    if (st || count == 0) return st;
    if (on_cuda(be)) return k_nn_add_cuda(be, a, b, y, count, err);
    for (size_t i = 0; i < count; i++)
        y[i] = a[i] + b[i];
    return PID_OK;
}

static pid_status dropout_check(float p, pid_error *err)
{
    if (!(p >= 0.0f && p < 1.0f))
        return pid_fail(err, PID_ERR_ARG, "nn dropout: p must be in [0, 1), got %g", (double)p);
    return PID_OK;
}

pid_status k_nn_dropout_forward(pid_backend *be, const float *x, float *y, size_t count, float p,
                                uint64_t seed, uint64_t step, pid_error *err)
{
    pid_status st = act_check(be, "dropout forward", x, y, y, err);
    if (!st) st = dropout_check(p, err);
    if (st || count == 0) return st;
    if (on_cuda(be)) return k_nn_dropout_forward_cuda(be, x, y, count, p, seed, step, err);
    const float scale = 1.0f / (1.0f - p);
    for (size_t i = 0; i < count; i++)
        y[i] = k_nn_dropout_keep(seed, step, i, p) ? x[i] * scale : 0.0f;
    return PID_OK;
}

pid_status k_nn_dropout_backward(pid_backend *be, const float *dy, float *dx, size_t count, float p,
                                 uint64_t seed, uint64_t step, pid_error *err)
{
    pid_status st = act_check(be, "dropout backward", dy, dx, dx, err);
    if (!st) st = dropout_check(p, err);
    if (st || count == 0) return st;
    if (on_cuda(be)) return k_nn_dropout_backward_cuda(be, dy, dx, count, p, seed, step, err);
    const float scale = 1.0f / (1.0f - p);
    for (size_t i = 0; i < count; i++)
        dx[i] = k_nn_dropout_keep(seed, step, i, p) ? dy[i] * scale : 0.0f;
    return PID_OK;
}
