/* Elementwise network ops, CPU reference: ReLU and GELU (tanh approximation)
 * forward/backward, residual add, and inverted dropout with a Philox mask
 * regenerated from (seed, step, index); CUDA twins in nn_act.cu. The CPU
 * loops run over ranges of elements on the backend's threads. */
#include "kernels/nn.h"

#include <math.h>
#include <string.h>

#include "kernels/par.h"

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

typedef enum { ACT_RELU_F, ACT_RELU_B, ACT_GELU_F, ACT_GELU_B, ACT_ADD, ACT_DROP } act_op;

/* One elementwise loop: y = f(a) or y = f(a, b); for ACT_DROP y = a * scale
 * where the (seed, step) mask keeps element i, else 0. */
typedef struct {
    act_op op;
    const float *a, *b;
    float *y;
    float p, scale;
    uint64_t seed, step;
} act_par;

static void act_range(void *ctx, size_t i0, size_t i1)
{
    const act_par *c = ctx;
    const float *a = c->a, *b = c->b;
    float *y = c->y;
    switch (c->op) {
    /* Both ReLU loops load every operand unconditionally, so the compiler
     * turns the choice into a vector blend; with the load of dy under the
     * branch, ReLU was a scalar loop with a coin-flip branch per element. */
    case ACT_RELU_F:
        for (size_t i = i0; i < i1; i++) {
            const float v = a[i];
            y[i] = v > 0.0f ? v : 0.0f;
        }
        break;
    case ACT_RELU_B: /* a = x, b = dy */
        for (size_t i = i0; i < i1; i++) {
            const float v = a[i], g = b[i];
            y[i] = v > 0.0f ? g : 0.0f;
        }
        break;
    case ACT_GELU_F:
        for (size_t i = i0; i < i1; i++)
            y[i] = k_nn_gelu(a[i]);
        break;
    case ACT_GELU_B: /* a = x, b = dy */
        for (size_t i = i0; i < i1; i++)
            y[i] = b[i] * k_nn_gelu_grad(a[i]);
        break;
    case ACT_ADD:
        for (size_t i = i0; i < i1; i++)
            y[i] = a[i] + b[i];
        break;
    case ACT_DROP:
        for (size_t i = i0; i < i1; i++)
            y[i] = k_nn_dropout_keep(c->seed, c->step, i, c->p) ? a[i] * c->scale : 0.0f;
        break;
    }
}

static void act_run(const pid_backend *be, act_par c, size_t count)
{
    /* GELU's tanh and dropout's Philox draw cost more per element than the
     * memory they touch: worth a thread sooner */
    const int heavy = c.op == ACT_GELU_F || c.op == ACT_GELU_B || c.op == ACT_DROP;
    const size_t grain = k_par_grain(heavy ? 48 : 12);
    k_par_for(be, count, grain, act_range, &c);
}

pid_status k_nn_relu_forward(pid_backend *be, const float *x, float *y, size_t count,
                             pid_error *err)
{
    pid_status st = act_check(be, "relu forward", x, y, y, err);
    if (st || count == 0) return st;
    if (on_cuda(be)) return k_nn_relu_forward_cuda(be, x, y, count, err);
    act_run(be, (act_par){.op = ACT_RELU_F, .a = x, .y = y}, count);
    return PID_OK;
}

pid_status k_nn_relu_backward(pid_backend *be, const float *x, const float *dy, float *dx,
                              size_t count, pid_error *err)
{
    pid_status st = act_check(be, "relu backward", x, dy, dx, err);
    if (st || count == 0) return st;
    if (on_cuda(be)) return k_nn_relu_backward_cuda(be, x, dy, dx, count, err);
    act_run(be, (act_par){.op = ACT_RELU_B, .a = x, .b = dy, .y = dx}, count);
    return PID_OK;
}

pid_status k_nn_gelu_forward(pid_backend *be, const float *x, float *y, size_t count,
                             pid_error *err)
{
    pid_status st = act_check(be, "gelu forward", x, y, y, err);
    if (st || count == 0) return st;
    if (on_cuda(be)) return k_nn_gelu_forward_cuda(be, x, y, count, err);
    act_run(be, (act_par){.op = ACT_GELU_F, .a = x, .y = y}, count);
    return PID_OK;
}

pid_status k_nn_gelu_backward(pid_backend *be, const float *x, const float *dy, float *dx,
                              size_t count, pid_error *err)
{
    pid_status st = act_check(be, "gelu backward", x, dy, dx, err);
    if (st || count == 0) return st;
    if (on_cuda(be)) return k_nn_gelu_backward_cuda(be, x, dy, dx, count, err);
    act_run(be, (act_par){.op = ACT_GELU_B, .a = x, .b = dy, .y = dx}, count);
    return PID_OK;
}

pid_status k_nn_add(pid_backend *be, const float *a, const float *b, float *y, size_t count,
                    pid_error *err)
{
    pid_status st = act_check(be, "add", a, b, y, err);
    if (st || count == 0) return st;
    if (on_cuda(be)) return k_nn_add_cuda(be, a, b, y, count, err);
    act_run(be, (act_par){.op = ACT_ADD, .a = a, .b = b, .y = y}, count);
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
    act_run(be, (act_par){ACT_DROP, x, NULL, y, p, scale, seed, step}, count);
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
    act_run(be, (act_par){ACT_DROP, dy, NULL, dx, p, scale, seed, step}, count);
    return PID_OK;
}
