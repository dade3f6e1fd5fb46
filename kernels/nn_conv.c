/* 1-D and 2-D convolution with stride, zero padding and dilation, CPU
 * reference: per-sample im2col + OpenBLAS sgemm for the forward and for the
 * input/weight gradients (col2im scatters the input gradient back). The
 * per-sample work (im2col, the sample's products, col2im) and the weight
 * gradient's blocks of output channels run on the backend's threads. */
#include "kernels/nn.h"

#include <cblas.h>
#include <string.h>

#include "kernels/par.h"

#ifndef PHASEID_HAVE_CUDA
pid_status k_nn_conv_forward_cuda(pid_backend *be, const k_nn_conv *s, const float *x,
                                  const float *w, const float *b, float *y, float *work,
                                  pid_error *err)
{
    return pid_fail(err, PID_ERR_UNSUPPORTED, "nn conv: this phaseid was built without CUDA");
}
pid_status k_nn_conv_backward_cuda(pid_backend *be, const k_nn_conv *s, const float *x,
                                   const float *w, const float *dy, float *dx, float *dw, float *db,
                                   float *work, pid_error *err)
{
    return pid_fail(err, PID_ERR_UNSUPPORTED, "nn conv: this phaseid was built without CUDA");
}
#endif

k_nn_conv k_nn_conv1d_shape(int n, int c_in, int w_in, int c_out, int k, int stride, int pad,
                            int dil)
{
    k_nn_conv s = {n, c_in, 1, w_in, c_out, 1, k, 1, stride, 0, pad, 1, dil};
    return s;
}

pid_status k_nn_conv_out(const k_nn_conv *s, int *h_out, int *w_out, pid_error *err)
{
    if (!s) return pid_fail(err, PID_ERR_ARG, "nn conv: NULL shape");
    if (s->n <= 0 || s->c_in <= 0 || s->h_in <= 0 || s->w_in <= 0 || s->c_out <= 0 || s->k_h <= 0 ||
        s->k_w <= 0)
        return pid_fail(err, PID_ERR_ARG,
                        "nn conv: sizes must be positive (n=%d c_in=%d h=%d w=%d c_out=%d k=%dx%d)",
                        s->n, s->c_in, s->h_in, s->w_in, s->c_out, s->k_h, s->k_w);
    if (s->stride_h <= 0 || s->stride_w <= 0 || s->dil_h <= 0 || s->dil_w <= 0 || s->pad_h < 0 ||
        s->pad_w < 0)
        return pid_fail(err, PID_ERR_ARG,
                        "nn conv: stride and dilation must be positive, padding non-negative");
    long eh = (long)s->h_in + 2L * s->pad_h - (long)s->dil_h * (s->k_h - 1) - 1;
    long ew = (long)s->w_in + 2L * s->pad_w - (long)s->dil_w * (s->k_w - 1) - 1;
    if (eh < 0 || ew < 0)
        return pid_fail(err, PID_ERR_ARG,
                        "nn conv: the dilated kernel is larger than the padded input");
    if (h_out) *h_out = (int)(eh / s->stride_h + 1);
    if (w_out) *w_out = (int)(ew / s->stride_w + 1);
    return PID_OK;
}

size_t k_nn_conv_work_floats(const k_nn_conv *s)
{
    int ho = 0, wo = 0;
    if (k_nn_conv_out(s, &ho, &wo, NULL)) return 0;
    return (size_t)s->n * s->c_in * s->k_h * s->k_w * (size_t)ho * wo;
}

/* The output columns ow in [*lo, *hi) whose input column ow sw - pw + j dw
 * lies inside [0, w_in); the others read the zero padding. */
static void in_cols(const k_nn_conv *s, int wo, int j, int *lo, int *hi)
{
    const int off = j * s->dil_w - s->pad_w; /* input column of ow = 0 */
    int a = off >= 0 ? 0 : (-off + s->stride_w - 1) / s->stride_w;
    int b = s->w_in - 1 - off < 0 ? 0 : (s->w_in - 1 - off) / s->stride_w + 1;
    if (b > wo) b = wo;
    if (a > b) a = b;
    *lo = a;
    *hi = b;
}

/* col[(c k_h + i) k_w + j][oh w_out + ow] = x[c][oh sh - ph + i dh][ow sw - pw + j dw]
 * (0 in the padding). Per row, the in-range stretch is a copy and the rest
 * zeros: no bounds test per element (the per-element test made im2col a
 * tenth of a training step). */
static void im2col(const k_nn_conv *s, int ho, int wo, const float *x, float *col)
{
    const size_t p = (size_t)ho * wo;
    for (int c = 0; c < s->c_in; c++)
        for (int i = 0; i < s->k_h; i++)
            for (int j = 0; j < s->k_w; j++) {
                float *row = col + ((size_t)(c * s->k_h + i) * s->k_w + j) * p;
                int lo, hi;
                in_cols(s, wo, j, &lo, &hi);
                const int off = j * s->dil_w - s->pad_w;
                for (int oh = 0; oh < ho; oh++) {
                    float *r = row + (size_t)oh * wo;
                    const int h = oh * s->stride_h - s->pad_h + i * s->dil_h;
                    if (h < 0 || h >= s->h_in) {
                        memset(r, 0, sizeof(float) * (size_t)wo);
                        continue;
                    }
                    const float *xr = x + ((size_t)c * s->h_in + h) * s->w_in;
                    for (int ow = 0; ow < lo; ow++)
                        r[ow] = 0.0f;
                    if (s->stride_w == 1 && hi > lo)
                        memcpy(r + lo, xr + lo + off, sizeof(float) * (size_t)(hi - lo));
                    else
                        for (int ow = lo; ow < hi; ow++)
                            r[ow] = xr[ow * s->stride_w + off];
                    for (int ow = hi; ow < wo; ow++)
                        r[ow] = 0.0f;
                }
            }
}

/* The adjoint of im2col: dx (zeroed here) += every column entry at its
 * source, in the same order as a bounds test per element would add them. */
static void col2im(const k_nn_conv *s, int ho, int wo, const float *col, float *dx)
{
    const size_t p = (size_t)ho * wo;
    memset(dx, 0, sizeof(float) * (size_t)s->c_in * s->h_in * s->w_in);
    for (int c = 0; c < s->c_in; c++)
        for (int i = 0; i < s->k_h; i++)
            for (int j = 0; j < s->k_w; j++) {
                const float *row = col + ((size_t)(c * s->k_h + i) * s->k_w + j) * p;
                int lo, hi;
                in_cols(s, wo, j, &lo, &hi);
                const int off = j * s->dil_w - s->pad_w;
                for (int oh = 0; oh < ho; oh++) {
                    const int h = oh * s->stride_h - s->pad_h + i * s->dil_h;
                    if (h < 0 || h >= s->h_in) continue;
                    const float *r = row + (size_t)oh * wo;
                    float *dr = dx + ((size_t)c * s->h_in + h) * s->w_in;
                    for (int ow = lo; ow < hi; ow++)
                        dr[ow * s->stride_w + off] += r[ow];
                }
            }
}

/* The CPU loops run on the backend's threads (kernels/par.h) over samples,
 * each with its own block of `work`, or over fixed blocks of output
 * channels for the weight gradient: the OpenBLAS calls (one OpenBLAS thread
 * each, set in pid_backend_create) and every sum are the same whatever the
 * thread count, so the results are too. */
#define CONV_DW_ROWS 8 /* output channels per weight-gradient block */

typedef struct {
    const k_nn_conv *s;
    int ho, wo, kk, p;
    size_t xs, ys, cs; /* floats per sample of x, of y (and dy) and of its columns */
    const float *x, *w, *b, *dy;
    float *y, *col, *dx, *dw;
} conv_par;

static void fwd_range(void *ctx, size_t n0, size_t n1)
{
    const conv_par *c = ctx;
    for (size_t n = n0; n < n1; n++) {
        float *yn = c->y + n * c->ys, *col = c->col + n * c->cs;
        im2col(c->s, c->ho, c->wo, c->x + n * c->xs, col);
        for (int o = 0; o < c->s->c_out; o++)
            for (int q = 0; q < c->p; q++)
                yn[(size_t)o * c->p + q] = c->b ? c->b[o] : 0.0f;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, c->s->c_out, c->p, c->kk, 1.0f, c->w,
                    c->kk, col, c->p, 1.0f, yn, c->p);
    }
}

static void im2col_range(void *ctx, size_t n0, size_t n1)
{
    const conv_par *c = ctx;
    for (size_t n = n0; n < n1; n++)
        im2col(c->s, c->ho, c->wo, c->x + n * c->xs, c->col + n * c->cs);
}

/* Blocks [g0, g1) of CONV_DW_ROWS output channels of dw: each the sum over
 * the samples, in order, of dy_n[rows, p] col_n^T. */
static void dw_range(void *ctx, size_t g0, size_t g1)
{
    const conv_par *c = ctx;
    for (size_t g = g0; g < g1; g++) {
        const int o0 = (int)g * CONV_DW_ROWS;
        const int m = c->s->c_out - o0 < CONV_DW_ROWS ? c->s->c_out - o0 : CONV_DW_ROWS;
        for (int n = 0; n < c->s->n; n++)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, c->kk, c->p, 1.0f,
                        c->dy + n * c->ys + (size_t)o0 * c->p, c->p, c->col + n * c->cs, c->p,
                        n ? 1.0f : 0.0f, c->dw + (size_t)o0 * c->kk, c->kk);
    }
}

/* dcol_n[kk, p] = W^T dy_n, then col2im into dx_n. */
static void dx_range(void *ctx, size_t n0, size_t n1)
{
    const conv_par *c = ctx;
    for (size_t n = n0; n < n1; n++) {
        float *col = c->col + n * c->cs;
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, c->kk, c->p, c->s->c_out, 1.0f, c->w,
                    c->kk, c->dy + n * c->ys, c->p, 0.0f, col, c->p);
        col2im(c->s, c->ho, c->wo, col, c->dx + n * c->xs);
    }
}

typedef struct {
    const float *dy;
    float *db;
    int n, p;
    size_t ys;
} conv_db_par;

static void conv_db_range(void *ctx, size_t o0, size_t o1)
{
    const conv_db_par *c = ctx;
    for (size_t o = o0; o < o1; o++) {
        double acc = 0.0;
        for (int n = 0; n < c->n; n++)
            acc += k_sum_run(c->dy + n * c->ys + o * c->p, (size_t)c->p);
        c->db[o] = (float)acc;
    }
}

static conv_par conv_par_make(const k_nn_conv *s, int ho, int wo, const float *x, float *work)
{
    conv_par c = {.s = s, .ho = ho, .wo = wo, .x = x, .col = work};
    c.kk = s->c_in * s->k_h * s->k_w;
    c.p = ho * wo;
    c.xs = (size_t)s->c_in * s->h_in * s->w_in;
    c.ys = (size_t)s->c_out * c.p;
    c.cs = (size_t)c.kk * c.p;
    return c;
}

pid_status k_nn_conv_forward(pid_backend *be, const k_nn_conv *s, const float *x, const float *w,
                             const float *b, float *y, float *work, pid_error *err)
{
    int ho = 0, wo = 0;
    pid_status st = k_nn_conv_out(s, &ho, &wo, err);
    if (st) return st;
    if (!be || !x || !w || !y || !work)
        return pid_fail(err, PID_ERR_ARG, "nn conv forward: NULL backend, x, w, y or work");
    if (pid_backend_kind(be) == PID_DEVICE_CUDA)
        return k_nn_conv_forward_cuda(be, s, x, w, b, y, work, err);
    conv_par c = conv_par_make(s, ho, wo, x, work);
    c.w = w, c.b = b, c.y = y;
    k_par_for(be, (size_t)s->n, k_par_grain(sizeof(float) * (c.cs + c.ys)), fwd_range, &c);
    return PID_OK;
}

pid_status k_nn_conv_backward(pid_backend *be, const k_nn_conv *s, const float *x, const float *w,
                              const float *dy, float *dx, float *dw, float *db, float *work,
                              pid_error *err)
{
    int ho = 0, wo = 0;
    pid_status st = k_nn_conv_out(s, &ho, &wo, err);
    if (st) return st;
    if (!be || !dy || ((dx || dw) && !work))
        return pid_fail(err, PID_ERR_ARG, "nn conv backward: NULL backend, dy or work");
    if ((dx && !w) || (dw && !x))
        return pid_fail(err, PID_ERR_ARG, "nn conv backward: NULL w (for dx) or x (for dw)");
    if (pid_backend_kind(be) == PID_DEVICE_CUDA)
        return k_nn_conv_backward_cuda(be, s, x, w, dy, dx, dw, db, work, err);
    conv_par c = conv_par_make(s, ho, wo, x, work);
    c.w = w, c.dy = dy, c.dx = dx, c.dw = dw;
    const size_t grain = k_par_grain(sizeof(float) * (c.cs + c.ys));
    if (db) {
        conv_db_par d = {dy, db, s->n, c.p, c.ys};
        k_par_for(be, (size_t)s->c_out, k_par_grain(sizeof(float) * (size_t)s->n * c.p),
                  conv_db_range, &d);
    }
    if (dw) {
        k_par_for(be, (size_t)s->n, grain, im2col_range, &c);
        k_par_for(be, (size_t)(s->c_out + CONV_DW_ROWS - 1) / CONV_DW_ROWS, 1, dw_range, &c);
    }
    if (dx) k_par_for(be, (size_t)s->n, grain, dx_range, &c); /* the columns are free again */
    return PID_OK;
}
