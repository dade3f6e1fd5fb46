/* Pooling, CPU reference: max pooling (with argmax indices for the
 * backward), average pooling (1-D and 2-D, kernel/stride, no padding) and
 * global average pooling, forward and backward; CUDA twins in nn_pool.cu.
 * The CPU loops run over planes (sample, channel) on the backend's threads. */
#include "kernels/nn.h"

#include <string.h>

#include "kernels/par.h"

#define NO_CUDA                                                                                    \
    return pid_fail(err, PID_ERR_UNSUPPORTED, "nn pool: this phaseid was built without CUDA")

#ifndef PHASEID_HAVE_CUDA
pid_status k_nn_maxpool_forward_cuda(pid_backend *be, const k_nn_pool *s, const float *x, float *y,
                                     int32_t *argmax, pid_error *err)
{
    NO_CUDA;
}
pid_status k_nn_maxpool_backward_cuda(pid_backend *be, const k_nn_pool *s, const float *dy,
                                      const int32_t *argmax, float *dx, pid_error *err)
{
    NO_CUDA;
}
pid_status k_nn_avgpool_forward_cuda(pid_backend *be, const k_nn_pool *s, const float *x, float *y,
                                     pid_error *err)
{
    NO_CUDA;
}
pid_status k_nn_avgpool_backward_cuda(pid_backend *be, const k_nn_pool *s, const float *dy,
                                      float *dx, pid_error *err)
{
    NO_CUDA;
}
pid_status k_nn_global_avgpool_forward_cuda(pid_backend *be, const float *x, float *y, int n, int c,
                                            int l, pid_error *err)
{
    NO_CUDA;
}
pid_status k_nn_global_avgpool_backward_cuda(pid_backend *be, const float *dy, float *dx, int n,
                                             int c, int l, pid_error *err)
{
    NO_CUDA;
}
#endif

k_nn_pool k_nn_pool1d_shape(int n, int c, int w_in, int k, int stride)
{
    k_nn_pool s = {n, c, 1, w_in, 1, k, 1, stride};
    return s;
}

pid_status k_nn_pool_out(const k_nn_pool *s, int *h_out, int *w_out, pid_error *err)
{
    if (!s) return pid_fail(err, PID_ERR_ARG, "nn pool: NULL shape");
    if (s->n <= 0 || s->c <= 0 || s->h_in <= 0 || s->w_in <= 0 || s->k_h <= 0 || s->k_w <= 0 ||
        s->stride_h <= 0 || s->stride_w <= 0)
        return pid_fail(err, PID_ERR_ARG, "nn pool: sizes, kernel and stride must be positive");
    if (s->k_h > s->h_in || s->k_w > s->w_in)
        return pid_fail(err, PID_ERR_ARG, "nn pool: kernel %dx%d larger than input %dx%d", s->k_h,
                        s->k_w, s->h_in, s->w_in);
    if (h_out) *h_out = (s->h_in - s->k_h) / s->stride_h + 1;
    if (w_out) *w_out = (s->w_in - s->k_w) / s->stride_w + 1;
    return PID_OK;
}

static pid_status pool_check(const pid_backend *be, const k_nn_pool *s, const void *a,
                             const void *b, const void *c, int *ho, int *wo, pid_error *err)
{
    pid_status st = k_nn_pool_out(s, ho, wo, err);
    if (st) return st;
    if (!be || !a || !b || !c) return pid_fail(err, PID_ERR_ARG, "nn pool: NULL backend or tensor");
    return PID_OK;
}

/* Arguments of the per-plane loops; pool_run splits the n c planes. */
typedef struct {
    const k_nn_pool *s;
    int ho, wo;
    const float *x;
    float *y;
    int32_t *argmax; /* max forward: written */
    const float *dy;
    float *dx;
    const int32_t *argmax_in; /* max backward: read */
} pool_par;

static void pool_run(const pid_backend *be, pool_par *p, k_par_fn fn)
{
    const size_t plane = (size_t)p->s->h_in * p->s->w_in;
    k_par_for(be, (size_t)p->s->n * p->s->c, k_par_grain(sizeof(float) * 2 * plane), fn, p);
}

static void maxpool_fwd_range(void *ctx, size_t p0, size_t p1)
{
    const pool_par *P = ctx;
    const k_nn_pool *s = P->s;
    const int ho = P->ho, wo = P->wo;
    const float *x = P->x;
    float *y = P->y;
    int32_t *argmax = P->argmax;
    const size_t plane = (size_t)s->h_in * s->w_in, out = (size_t)ho * wo;
    if (s->k_h == 1 && s->stride_h == 1 && s->k_w == 2 && s->stride_w == 2) {
        /* pairs along w (every 1-D maxpool(2)): branch-free, so it vectorizes */
        for (size_t pc = p0; pc < p1; pc++)
            for (int oh = 0; oh < ho; oh++) {
                const float *xr = x + pc * plane + (size_t)oh * s->w_in;
                float *yr = y + pc * out + (size_t)oh * wo;
                int32_t *ar = argmax + pc * out + (size_t)oh * wo;
                const int32_t base = oh * s->w_in;
                for (int ow = 0; ow < wo; ow++) {
                    const float a = xr[2 * ow], b = xr[2 * ow + 1];
                    const int second = b > a; /* ties: the first */
                    yr[ow] = second ? b : a;
                    ar[ow] = base + 2 * ow + second;
                }
            }
        return;
    }
    for (size_t pc = p0; pc < p1; pc++) {
        const float *xp = x + pc * plane;
        for (int oh = 0; oh < ho; oh++)
            for (int ow = 0; ow < wo; ow++) {
                int best = oh * s->stride_h * s->w_in + ow * s->stride_w;
                for (int i = 0; i < s->k_h; i++)
                    for (int j = 0; j < s->k_w; j++) {
                        int idx = (oh * s->stride_h + i) * s->w_in + ow * s->stride_w + j;
                        if (xp[idx] > xp[best]) best = idx;
                    }
                y[pc * out + (size_t)oh * wo + ow] = xp[best];
                argmax[pc * out + (size_t)oh * wo + ow] = best;
            }
    }
}

/* dx of planes [p0, p1) zeroed, then dy routed to each window's maximum. */
static void maxpool_bwd_range(void *ctx, size_t p0, size_t p1)
{
    const pool_par *P = ctx;
    const size_t plane = (size_t)P->s->h_in * P->s->w_in, out = (size_t)P->ho * P->wo;
    memset(P->dx + p0 * plane, 0, sizeof(float) * plane * (p1 - p0));
    for (size_t pc = p0; pc < p1; pc++)
        for (size_t q = 0; q < out; q++)
            P->dx[pc * plane + (size_t)P->argmax_in[pc * out + q]] += P->dy[pc * out + q];
}

static void avgpool_fwd_range(void *ctx, size_t p0, size_t p1)
{
    const pool_par *P = ctx;
    const k_nn_pool *s = P->s;
    const int ho = P->ho, wo = P->wo;
    const float *x = P->x;
    float *y = P->y;
    const size_t plane = (size_t)s->h_in * s->w_in, out = (size_t)ho * wo;
    const float inv = 1.0f / (float)(s->k_h * s->k_w);
    for (size_t pc = p0; pc < p1; pc++)
        for (int oh = 0; oh < ho; oh++)
            for (int ow = 0; ow < wo; ow++) {
                float acc = 0.0f;
                for (int i = 0; i < s->k_h; i++)
                    for (int j = 0; j < s->k_w; j++)
                        acc += x[pc * plane + (size_t)(oh * s->stride_h + i) * s->w_in +
                                 ow * s->stride_w + j];
                y[pc * out + (size_t)oh * wo + ow] = acc * inv;
            }
}

static void avgpool_bwd_range(void *ctx, size_t p0, size_t p1)
{
    const pool_par *P = ctx;
    const k_nn_pool *s = P->s;
    const int ho = P->ho, wo = P->wo;
    const float *dy = P->dy;
    float *dx = P->dx;
    const size_t plane = (size_t)s->h_in * s->w_in, out = (size_t)ho * wo;
    const float inv = 1.0f / (float)(s->k_h * s->k_w);
    memset(dx + p0 * plane, 0, sizeof(float) * plane * (p1 - p0));
    for (size_t pc = p0; pc < p1; pc++)
        for (int oh = 0; oh < ho; oh++)
            for (int ow = 0; ow < wo; ow++) {
                float g = dy[pc * out + (size_t)oh * wo + ow] * inv;
                for (int i = 0; i < s->k_h; i++)
                    for (int j = 0; j < s->k_w; j++)
                        dx[pc * plane + (size_t)(oh * s->stride_h + i) * s->w_in +
                           ow * s->stride_w + j] += g;
            }
}

pid_status k_nn_maxpool_forward(pid_backend *be, const k_nn_pool *s, const float *x, float *y,
                                int32_t *argmax, pid_error *err)
{
    int ho = 0, wo = 0;
    pid_status st = pool_check(be, s, x, y, argmax, &ho, &wo, err);
    if (st) return st;
    if (pid_backend_kind(be) == PID_DEVICE_CUDA)
        return k_nn_maxpool_forward_cuda(be, s, x, y, argmax, err);
    pool_par p = {.s = s, .ho = ho, .wo = wo, .x = x, .y = y, .argmax = argmax};
    pool_run(be, &p, maxpool_fwd_range);
    return PID_OK;
}

pid_status k_nn_maxpool_backward(pid_backend *be, const k_nn_pool *s, const float *dy,
                                 const int32_t *argmax, float *dx, pid_error *err)
{
    int ho = 0, wo = 0;
    pid_status st = pool_check(be, s, dy, argmax, dx, &ho, &wo, err);
    if (st) return st;
    if (pid_backend_kind(be) == PID_DEVICE_CUDA)
        return k_nn_maxpool_backward_cuda(be, s, dy, argmax, dx, err);
    pool_par p = {.s = s, .ho = ho, .wo = wo, .dy = dy, .dx = dx, .argmax_in = argmax};
    pool_run(be, &p, maxpool_bwd_range);
    return PID_OK;
}

pid_status k_nn_avgpool_forward(pid_backend *be, const k_nn_pool *s, const float *x, float *y,
                                pid_error *err)
{
    int ho = 0, wo = 0;
    pid_status st = pool_check(be, s, x, y, y, &ho, &wo, err);
    if (st) return st;
    if (pid_backend_kind(be) == PID_DEVICE_CUDA) return k_nn_avgpool_forward_cuda(be, s, x, y, err);
    pool_par p = {.s = s, .ho = ho, .wo = wo, .x = x, .y = y};
    pool_run(be, &p, avgpool_fwd_range);
    return PID_OK;
}

pid_status k_nn_avgpool_backward(pid_backend *be, const k_nn_pool *s, const float *dy, float *dx,
                                 pid_error *err)
{
    int ho = 0, wo = 0;
    pid_status st = pool_check(be, s, dy, dx, dx, &ho, &wo, err);
    if (st) return st;
    if (pid_backend_kind(be) == PID_DEVICE_CUDA)
        return k_nn_avgpool_backward_cuda(be, s, dy, dx, err);
    pool_par p = {.s = s, .ho = ho, .wo = wo, .dy = dy, .dx = dx};
    pool_run(be, &p, avgpool_bwd_range);
    return PID_OK;
}

static pid_status gap_check(const pid_backend *be, const void *a, const void *b, int n, int c,
                            int l, pid_error *err)
{
    if (!be || !a || !b)
        return pid_fail(err, PID_ERR_ARG, "nn global avgpool: NULL backend or tensor");
    if (n <= 0 || c <= 0 || l <= 0)
        return pid_fail(err, PID_ERR_ARG,
                        "nn global avgpool: sizes must be positive (n=%d c=%d l=%d)", n, c, l);
    return PID_OK;
}

pid_status k_nn_global_avgpool_forward(pid_backend *be, const float *x, float *y, int n, int c,
                                       int l, pid_error *err)
{
    pid_status st = gap_check(be, x, y, n, c, l, err);
    if (st) return st;
    if (pid_backend_kind(be) == PID_DEVICE_CUDA)
        return k_nn_global_avgpool_forward_cuda(be, x, y, n, c, l, err);
    for (size_t pc = 0; pc < (size_t)n * c; pc++) {
        double acc = 0.0;
        for (int k = 0; k < l; k++)
            acc += x[pc * l + k];
        y[pc] = (float)(acc / l);
    }
    return PID_OK;
}

pid_status k_nn_global_avgpool_backward(pid_backend *be, const float *dy, float *dx, int n, int c,
                                        int l, pid_error *err)
{
    pid_status st = gap_check(be, dy, dx, n, c, l, err);
    if (st) return st;
    if (pid_backend_kind(be) == PID_DEVICE_CUDA)
        return k_nn_global_avgpool_backward_cuda(be, dy, dx, n, c, l, err);
    for (size_t pc = 0; pc < (size_t)n * c; pc++)
        for (int k = 0; k < l; k++)
            dx[pc * l + k] = dy[pc] / (float)l;
    return PID_OK;
}
