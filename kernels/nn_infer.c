/* Fused forward-only ops for inference, CPU: a direct convolution (input
 * split by stride phase so every tap reads contiguous memory, 8 output
 * channels x one tile of positions held in vector registers) with bias,
 * activation and non-overlapping max pooling applied on the way out, and a
 * blocked dense layer. The epilogue can also add a residual input and
 * average over all positions (global average pooling). AVX-512 / AVX2 micro-kernels, plain C
 * otherwise; CUDA twins in nn_infer.cu. */
#include "kernels/nn.h"

#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define NN_X86 1
#define NN_TARGET(t) __attribute__((target(t)))
#else
#define NN_X86 0
#endif

#ifndef PHASEID_HAVE_CUDA
pid_status k_nn_conv_forward_fused_cuda(pid_backend *be, const k_nn_conv *s, const float *x,
                                        const float *w, const float *b, const float *residual,
                                        k_nn_act act, int pool, float *y, float *work,
                                        pid_error *err)
{
    return pid_fail(err, PID_ERR_UNSUPPORTED, "nn fused: this phaseid was built without CUDA");
}
pid_status k_nn_dense_forward_fused_cuda(pid_backend *be, const float *x, const float *w,
                                         const float *b, k_nn_act act, float *y, int n, int in,
                                         int out, pid_error *err)
{
    return pid_fail(err, PID_ERR_UNSUPPORTED, "nn fused: this phaseid was built without CUDA");
}
#endif

/* Output channels per register block (weights are packed in blocks of 8). */
#define NN_R 8
/* Tile widths (positions per micro-kernel call): AVX-512 16, 32 or 48, AVX2
 * 8, plain C 8. Rows of outputs and input planes are padded to a multiple of
 * NN_TPAD, a common multiple of all of them, so a tile never needs a tail. */
#define NN_TP_AVX2 8
#define NN_TP_GENERIC 8
#define NN_TPAD 96

static size_t round_up(size_t v, size_t m)
{
    return (v + m - 1) / m * m;
}

/* ------------------------------------------------------------ conv plan */

/* Where everything lives in `work` (offsets in floats, each 64-byte aligned
 * relative to work). Input row (c, h) is stored as sw planes (one per stride
 * phase r): plane[m] = x_padded[m sw + r], so output position p of tap j
 * reads plane[(j dw) % sw][p + (j dw) / sw], contiguous in p. */
typedef struct {
    int ho, wo;   /* conv output before pooling */
    int wo_pad;   /* wo rounded up to NN_TPAD */
    int lp;       /* plane length: wo_pad + the largest tap shift */
    int kk;       /* c_in k_h k_w */
    int mb;       /* blocks of NN_R output channels */
    int wy;       /* output width after pooling */
    size_t off_w; /* packed weights [mb][kk][NN_R] */
    size_t off_b; /* packed bias [mb][NN_R] */
    size_t off_planes, off_zero, off_strip, off_rows, off_gsum, total;
} conv_plan;

static int conv_plan_make(const k_nn_conv *s, int pool, conv_plan *p)
{
    int ho = 0, wo = 0;
    if (!s || pool < 0 || k_nn_conv_out(s, &ho, &wo, NULL)) return -1;
    if (pool > 1 && (s->h_in != 1 || s->k_h != 1 || wo < pool)) return -1;
    memset(p, 0, sizeof *p);
    p->ho = ho;
    p->wo = wo;
    p->wy = pool == K_NN_POOL_GLOBAL_AVG ? 1 : wo / pool;
    p->wo_pad = (int)round_up((size_t)wo, NN_TPAD);
    p->lp = (int)round_up((size_t)p->wo_pad + (size_t)((s->k_w - 1) * s->dil_w / s->stride_w), 16);
    p->kk = s->c_in * s->k_h * s->k_w;
    p->mb = (s->c_out + NN_R - 1) / NN_R;
    size_t off = 0;
#define SECTION(field, count)                                                                      \
    do {                                                                                           \
        p->field = off;                                                                            \
        off += round_up((size_t)(count), 16);                                                      \
    } while (0)
    SECTION(off_w, (size_t)p->mb * p->kk * NN_R);
    SECTION(off_b, (size_t)p->mb * NN_R);
    SECTION(off_planes, (size_t)s->c_in * s->h_in * s->stride_w * p->lp);
    SECTION(off_zero, p->lp);
    SECTION(off_strip, (size_t)NN_R * p->wo_pad);
    SECTION(off_rows,
            (size_t)p->kk * ((sizeof(const float *) + sizeof(float) - 1) / sizeof(float)));
    SECTION(off_gsum, (size_t)s->c_out * (sizeof(double) / sizeof(float)));
#undef SECTION
    p->total = off;
    return 0;
}

size_t k_nn_conv_fused_work_floats(const k_nn_conv *s, int pool)
{
    conv_plan p;
    return conv_plan_make(s, pool, &p) ? 0 : p.total;
}

/* ------------------------------------------------------- micro-kernels */

/* One block of NN_R output channels over n_tiles tiles of TP positions:
 * strip[r][p] = bias[r] + sum_k wp[k][r] rows[k][p]. rows[k] must be
 * readable for n_tiles TP floats. */
typedef void (*conv_tiles_fn)(int kk, const float *const *rows, const float *wp, const float *bias,
                              int n_tiles, float *strip, int ld);

static void conv_tiles_generic(int kk, const float *const *rows, const float *wp, const float *bias,
                               int n_tiles, float *strip, int ld)
{
    for (int t = 0; t < n_tiles; t++) {
        const int p0 = t * NN_TP_GENERIC;
        float acc[NN_R][NN_TP_GENERIC];
        for (int r = 0; r < NN_R; r++)
            for (int u = 0; u < NN_TP_GENERIC; u++)
                acc[r][u] = bias[r];
        for (int k = 0; k < kk; k++) {
            const float *src = rows[k] + p0, *wk = wp + (size_t)k * NN_R;
            for (int r = 0; r < NN_R; r++)
                for (int u = 0; u < NN_TP_GENERIC; u++)
                    acc[r][u] += wk[r] * src[u];
        }
        for (int r = 0; r < NN_R; r++)
            memcpy(strip + (size_t)r * ld + p0, acc[r], sizeof acc[r]);
    }
}

#if NN_X86
NN_TARGET("avx2,fma")
static void conv_tiles_avx2(int kk, const float *const *rows, const float *wp, const float *bias,
                            int n_tiles, float *strip, int ld)
{
    for (int t = 0; t < n_tiles; t++) {
        const int p0 = t * NN_TP_AVX2;
        __m256 a0 = _mm256_set1_ps(bias[0]), a1 = _mm256_set1_ps(bias[1]);
        __m256 a2 = _mm256_set1_ps(bias[2]), a3 = _mm256_set1_ps(bias[3]);
        __m256 a4 = _mm256_set1_ps(bias[4]), a5 = _mm256_set1_ps(bias[5]);
        __m256 a6 = _mm256_set1_ps(bias[6]), a7 = _mm256_set1_ps(bias[7]);
        for (int k = 0; k < kk; k++) {
            const __m256 v = _mm256_loadu_ps(rows[k] + p0);
            const float *wk = wp + (size_t)k * NN_R;
            a0 = _mm256_fmadd_ps(_mm256_broadcast_ss(wk + 0), v, a0);
            a1 = _mm256_fmadd_ps(_mm256_broadcast_ss(wk + 1), v, a1);
            a2 = _mm256_fmadd_ps(_mm256_broadcast_ss(wk + 2), v, a2);
            a3 = _mm256_fmadd_ps(_mm256_broadcast_ss(wk + 3), v, a3);
            a4 = _mm256_fmadd_ps(_mm256_broadcast_ss(wk + 4), v, a4);
            a5 = _mm256_fmadd_ps(_mm256_broadcast_ss(wk + 5), v, a5);
            a6 = _mm256_fmadd_ps(_mm256_broadcast_ss(wk + 6), v, a6);
            a7 = _mm256_fmadd_ps(_mm256_broadcast_ss(wk + 7), v, a7);
        }
        float *o = strip + p0;
        _mm256_storeu_ps(o, a0);
        _mm256_storeu_ps(o + (size_t)ld, a1);
        _mm256_storeu_ps(o + 2 * (size_t)ld, a2);
        _mm256_storeu_ps(o + 3 * (size_t)ld, a3);
        _mm256_storeu_ps(o + 4 * (size_t)ld, a4);
        _mm256_storeu_ps(o + 5 * (size_t)ld, a5);
        _mm256_storeu_ps(o + 6 * (size_t)ld, a6);
        _mm256_storeu_ps(o + 7 * (size_t)ld, a7);
    }
}

/* 8 channels x T vectors of 16 (T = 1..3): 8 T accumulators, T loads and 8
 * broadcasts per 8 T FMAs. Inlined into one function per T so the
 * accumulators stay in registers. */
NN_TARGET("avx512f")
static inline __attribute__((always_inline)) void
conv_tiles_avx512_t(const int T, int kk, const float *const *rows, const float *wp,
                    const float *bias, int n_tiles, float *strip, int ld)
{
    for (int t = 0; t < n_tiles; t++) {
        const int p0 = t * 16 * T;
        __m512 a[NN_R][3];
#pragma GCC unroll 8
        for (int r = 0; r < NN_R; r++)
            a[r][0] = a[r][1] = a[r][2] = _mm512_set1_ps(bias[r]);
        for (int k = 0; k < kk; k++) {
            const float *src = rows[k] + p0, *wk = wp + (size_t)k * NN_R;
            __m512 v[3];
#pragma GCC unroll 3
            for (int u = 0; u < T; u++)
                v[u] = _mm512_loadu_ps(src + 16 * u);
#pragma GCC unroll 8
            for (int r = 0; r < NN_R; r++) {
                const __m512 wr = _mm512_set1_ps(wk[r]);
#pragma GCC unroll 3
                for (int u = 0; u < T; u++)
                    a[r][u] = _mm512_fmadd_ps(wr, v[u], a[r][u]);
            }
        }
#pragma GCC unroll 8
        for (int r = 0; r < NN_R; r++)
#pragma GCC unroll 3
            for (int u = 0; u < T; u++)
                _mm512_storeu_ps(strip + (size_t)r * ld + p0 + 16 * u, a[r][u]);
    }
}

NN_TARGET("avx512f")
static void conv_tiles_avx512_1(int kk, const float *const *rows, const float *wp,
                                const float *bias, int n_tiles, float *strip, int ld)
{
    conv_tiles_avx512_t(1, kk, rows, wp, bias, n_tiles, strip, ld);
}
NN_TARGET("avx512f")
static void conv_tiles_avx512_2(int kk, const float *const *rows, const float *wp,
                                const float *bias, int n_tiles, float *strip, int ld)
{
    conv_tiles_avx512_t(2, kk, rows, wp, bias, n_tiles, strip, ld);
}
NN_TARGET("avx512f")
static void conv_tiles_avx512_3(int kk, const float *const *rows, const float *wp,
                                const float *bias, int n_tiles, float *strip, int ld)
{
    conv_tiles_avx512_t(3, kk, rows, wp, bias, n_tiles, strip, ld);
}
#endif

/* The micro-kernel for this backend and output width wo, and its tile width
 * *tp. AVX-512 takes the widest tile unless a narrower one computes fewer
 * wasted positions past wo (short rows of the late layers). */
static conv_tiles_fn conv_tiles_pick(const pid_backend *be, int wo, int *tp)
{
#if NN_X86
    pid_cpu_isa isa = pid_backend_cpu_isa(be);
    if (isa >= PID_CPU_ISA_AVX512) {
        static const conv_tiles_fn fns[3] = {conv_tiles_avx512_1, conv_tiles_avx512_2,
                                             conv_tiles_avx512_3};
        /* Cost in units of 16 positions: padded width times a per-vector
         * overhead (broadcast loads are shared by fewer FMAs at small T). */
        static const double per_vec[3] = {1.25, 1.08, 1.0};
        int best = 3;
        double best_cost = 1e300;
        for (int T = 3; T >= 1; T--) {
            int w = 16 * T, padded = (wo + w - 1) / w * w;
            double cost = padded / 16.0 * per_vec[T - 1];
            if (cost < best_cost - 1e-9) best_cost = cost, best = T;
        }
        *tp = 16 * best;
        return fns[best - 1];
    }
    if (isa >= PID_CPU_ISA_AVX2) {
        *tp = NN_TP_AVX2;
        return conv_tiles_avx2;
    }
#endif
    *tp = NN_TP_GENERIC;
    return conv_tiles_generic;
}

/* ------------------------------------------------------------ epilogue */

static float act_apply(k_nn_act act, float v)
{
    if (act == K_NN_ACT_RELU) return v > 0.0f ? v : 0.0f;
    if (act == K_NN_ACT_GELU) return k_nn_gelu(v);
    return v;
}

/* One output row: src[t] (+ res[t]) through the activation, then either
 * y[t] = max over the pool window (pool >= 1) or the row's sum returned
 * (K_NN_POOL_GLOBAL_AVG; y untouched). */
static double epilogue_row(float *src, const float *res, float *y, int wo, int pool, k_nn_act act)
{
    if (res)
        for (int t = 0; t < wo; t++)
            src[t] += res[t];
    if (pool == K_NN_POOL_GLOBAL_AVG) {
        if (act == K_NN_ACT_RELU)
            for (int t = 0; t < wo; t++)
                src[t] = src[t] > 0.0f ? src[t] : 0.0f;
        else if (act != K_NN_ACT_NONE)
            for (int t = 0; t < wo; t++)
                src[t] = act_apply(act, src[t]);
        /* Four running sums in double (independent chains). */
        double a0 = 0.0, a1 = 0.0, a2 = 0.0, a3 = 0.0;
        int t = 0;
        for (; t + 4 <= wo; t += 4) {
            a0 += src[t];
            a1 += src[t + 1];
            a2 += src[t + 2];
            a3 += src[t + 3];
        }
        for (; t < wo; t++)
            a0 += src[t];
        return (a0 + a1) + (a2 + a3);
    }
    const int wy = wo / pool;
    if (pool == 1) {
        if (act == K_NN_ACT_RELU)
            for (int t = 0; t < wy; t++)
                y[t] = src[t] > 0.0f ? src[t] : 0.0f;
        else if (act == K_NN_ACT_NONE)
            memcpy(y, src, sizeof(float) * (size_t)wy);
        else
            for (int t = 0; t < wy; t++)
                y[t] = act_apply(act, src[t]);
        return 0.0;
    }
    if (pool == 2 && act == K_NN_ACT_RELU) {
        for (int t = 0; t < wy; t++) {
            float m = src[2 * t] > src[2 * t + 1] ? src[2 * t] : src[2 * t + 1];
            y[t] = m > 0.0f ? m : 0.0f;
        }
        return 0.0;
    }
    for (int t = 0; t < wy; t++) {
        const float *w = src + (size_t)t * pool;
        float m = act_apply(act, w[0]);
        for (int u = 1; u < pool; u++) {
            float v = act_apply(act, w[u]);
            if (v > m) m = v;
        }
        y[t] = m;
    }
    return 0.0;
}

/* ------------------------------------------------------------ conv */

/* ceil(a / b) for b > 0, and 0 for a <= 0. */
static int ceil_div_pos(int a, int b)
{
    return a <= 0 ? 0 : (a + b - 1) / b;
}

/* Input row (c, h) of one frame into its sw stride-phase planes with the
 * zero padding around it. */
static void fill_planes(const k_nn_conv *s, const conv_plan *p, const float *xr, float *planes)
{
    const int sw = s->stride_w, lp = p->lp;
    for (int r = 0; r < sw; r++) {
        float *dst = planes + (size_t)r * lp;
        /* dst[m] = x[m sw + r - pad] where that index is inside [0, w_in). */
        int m_lo = ceil_div_pos(s->pad_w - r, sw), m_hi = ceil_div_pos(s->w_in + s->pad_w - r, sw);
        if (m_lo > lp) m_lo = lp;
        if (m_hi > lp) m_hi = lp;
        if (m_hi < m_lo) m_hi = m_lo;
        memset(dst, 0, sizeof(float) * (size_t)m_lo);
        if (m_hi > m_lo) {
            const float *src = xr + (m_lo * sw + r - s->pad_w);
            if (sw == 1) {
                memcpy(dst + m_lo, src, sizeof(float) * (size_t)(m_hi - m_lo));
            } else {
                for (int m = m_lo; m < m_hi; m++)
                    dst[m] = src[(size_t)(m - m_lo) * sw];
            }
        }
        memset(dst + m_hi, 0, sizeof(float) * (size_t)(lp - m_hi));
    }
}

static void conv_fused_cpu(pid_backend *be, const k_nn_conv *s, const conv_plan *p, const float *x,
                           const float *w, const float *b, const float *residual, k_nn_act act,
                           int pool, float *y, float *work)
{
    int tp = 0;
    conv_tiles_fn tiles = conv_tiles_pick(be, p->wo, &tp);
    float *wp = work + p->off_w, *bp = work + p->off_b, *planes = work + p->off_planes;
    float *zero = work + p->off_zero, *strip = work + p->off_strip;
    const float **rows = (const float **)(void *)(work + p->off_rows);
    double *gsum = (double *)(void *)(work + p->off_gsum);
    const int kk = p->kk, sw = s->stride_w, lp = p->lp;
    const int n_tiles = (p->wo + tp - 1) / tp;

    /* Pack the weights: wp[blk][k][r] = w[blk NN_R + r][k] (zero rows pad
     * the last block). */
    for (int blk = 0; blk < p->mb; blk++)
        for (int r = 0; r < NN_R; r++) {
            int o = blk * NN_R + r;
            float *dst = wp + (size_t)blk * kk * NN_R + r;
            bp[blk * NN_R + r] = (o < s->c_out && b) ? b[o] : 0.0f;
            for (int k = 0; k < kk; k++)
                dst[(size_t)k * NN_R] = o < s->c_out ? w[(size_t)o * kk + k] : 0.0f;
        }
    memset(zero, 0, sizeof(float) * (size_t)lp);

    const size_t xs = (size_t)s->c_in * s->h_in * s->w_in;
    const size_t rs = (size_t)s->c_out * p->ho * p->wo; /* residual: the unpooled shape */
    const size_t ys =
        pool == K_NN_POOL_GLOBAL_AVG ? (size_t)s->c_out : (size_t)s->c_out * p->ho * p->wy;
    for (int n = 0; n < s->n; n++) {
        const float *xn = x + n * xs;
        if (pool == K_NN_POOL_GLOBAL_AVG)
            for (int o = 0; o < s->c_out; o++)
                gsum[o] = 0.0;
        for (int c = 0; c < s->c_in; c++)
            for (int h = 0; h < s->h_in; h++)
                fill_planes(s, p, xn + ((size_t)c * s->h_in + h) * s->w_in,
                            planes + ((size_t)c * s->h_in + h) * sw * lp);
        for (int oh = 0; oh < p->ho; oh++) {
            /* rows[(c k_h + i) k_w + j]: the plane holding tap (c, i, j) of
             * output row oh, shifted to output position 0. */
            for (int c = 0; c < s->c_in; c++)
                for (int i = 0; i < s->k_h; i++) {
                    int h = oh * s->stride_h - s->pad_h + i * s->dil_h;
                    for (int j = 0; j < s->k_w; j++) {
                        int tap = j * s->dil_w, ph = tap % sw, sh = tap / sw;
                        const float *base =
                            (h >= 0 && h < s->h_in)
                                ? planes + (((size_t)c * s->h_in + h) * sw + ph) * lp
                                : zero;
                        rows[(c * s->k_h + i) * s->k_w + j] = base + sh;
                    }
                }
            for (int blk = 0; blk < p->mb; blk++) {
                tiles(kk, rows, wp + (size_t)blk * kk * NN_R, bp + blk * NN_R, n_tiles, strip,
                      p->wo_pad);
                for (int r = 0; r < NN_R && blk * NN_R + r < s->c_out; r++) {
                    int o = blk * NN_R + r;
                    const float *res =
                        residual ? residual + n * rs + ((size_t)o * p->ho + oh) * p->wo : NULL;
                    float *yr = pool == K_NN_POOL_GLOBAL_AVG
                                    ? NULL
                                    : y + n * ys + ((size_t)o * p->ho + oh) * p->wy;
                    double sum =
                        epilogue_row(strip + (size_t)r * p->wo_pad, res, yr, p->wo, pool, act);
                    if (pool == K_NN_POOL_GLOBAL_AVG) gsum[o] += sum;
                }
            }
        }
        if (pool == K_NN_POOL_GLOBAL_AVG)
            for (int o = 0; o < s->c_out; o++)
                y[n * ys + o] = (float)(gsum[o] / ((double)p->ho * p->wo));
    }
}

pid_status k_nn_conv_forward_fused(pid_backend *be, const k_nn_conv *s, const float *x,
                                   const float *w, const float *b, const float *residual,
                                   k_nn_act act, int pool, float *y, float *work, pid_error *err)
{
    int ho = 0, wo = 0;
    pid_status st = k_nn_conv_out(s, &ho, &wo, err);
    if (st) return st;
    if (!be || !x || !w || !y || !work)
        return pid_fail(err, PID_ERR_ARG, "nn conv fused: NULL backend, x, w, y or work");
    if (act != K_NN_ACT_NONE && act != K_NN_ACT_RELU && act != K_NN_ACT_GELU)
        return pid_fail(err, PID_ERR_ARG, "nn conv fused: unknown activation %d", (int)act);
    conv_plan p;
    if (conv_plan_make(s, pool, &p))
        return pid_fail(err, PID_ERR_ARG,
                        "nn conv fused: pool %d: expected 0 (global average), 1 or a max pool "
                        "width on a 1-D shape with at least that many outputs (w_out %d)",
                        pool, wo);
    if (pid_backend_kind(be) == PID_DEVICE_CUDA)
        return k_nn_conv_forward_fused_cuda(be, s, x, w, b, residual, act, pool, y, work, err);
    conv_fused_cpu(be, s, &p, x, w, b, residual, act, pool, y, work);
    return PID_OK;
}

/* ------------------------------------------------------------ dense */

/* y[i,o] = b[o] + x[i,:] . w[o,:] for i < n, o < out, before activation. */
static void dense_generic(const float *x, const float *w, const float *b, float *y, int n, int in,
                          int out)
{
    for (int i = 0; i < n; i++)
        for (int o = 0; o < out; o++) {
            const float *xi = x + (size_t)i * in, *wo = w + (size_t)o * in;
            float acc = 0.0f;
            for (int k = 0; k < in; k++)
                acc += xi[k] * wo[k];
            y[(size_t)i * out + o] = acc + (b ? b[o] : 0.0f);
        }
}

#if NN_X86
/* 4 frames x 4 outputs of 16-wide partial dot products, masked tail; rows
 * past n or out repeat the last one (computed, not stored). */
NN_TARGET("avx512f")
static void dense_avx512(const float *x, const float *w, const float *b, float *y, int n, int in,
                         int out)
{
    const int tail = in % 16;
    const __mmask16 tm = (__mmask16)((1u << tail) - 1u);
    for (int i0 = 0; i0 < n; i0 += 4)
        for (int o0 = 0; o0 < out; o0 += 4) {
            const float *xr[4], *wr[4];
            for (int q = 0; q < 4; q++) {
                xr[q] = x + (size_t)(i0 + q < n ? i0 + q : n - 1) * in;
                wr[q] = w + (size_t)(o0 + q < out ? o0 + q : out - 1) * in;
            }
            __m512 a[4][4];
#pragma GCC unroll 4
            for (int q = 0; q < 4; q++)
                a[q][0] = a[q][1] = a[q][2] = a[q][3] = _mm512_setzero_ps();
            int k = 0;
            for (; k + 16 <= in; k += 16) {
                __m512 xv[4], wv[4];
#pragma GCC unroll 4
                for (int q = 0; q < 4; q++) {
                    xv[q] = _mm512_loadu_ps(xr[q] + k);
                    wv[q] = _mm512_loadu_ps(wr[q] + k);
                }
#pragma GCC unroll 4
                for (int q = 0; q < 4; q++)
#pragma GCC unroll 4
                    for (int v = 0; v < 4; v++)
                        a[q][v] = _mm512_fmadd_ps(xv[q], wv[v], a[q][v]);
            }
            if (tail) {
                __m512 xv[4], wv[4];
#pragma GCC unroll 4
                for (int q = 0; q < 4; q++) {
                    xv[q] = _mm512_maskz_loadu_ps(tm, xr[q] + k);
                    wv[q] = _mm512_maskz_loadu_ps(tm, wr[q] + k);
                }
#pragma GCC unroll 4
                for (int q = 0; q < 4; q++)
#pragma GCC unroll 4
                    for (int v = 0; v < 4; v++)
                        a[q][v] = _mm512_fmadd_ps(xv[q], wv[v], a[q][v]);
            }
            for (int q = 0; q < 4 && i0 + q < n; q++)
                for (int v = 0; v < 4 && o0 + v < out; v++)
                    y[(size_t)(i0 + q) * out + o0 + v] =
                        _mm512_reduce_add_ps(a[q][v]) + (b ? b[o0 + v] : 0.0f);
        }
}
#endif

pid_status k_nn_dense_forward_fused(pid_backend *be, const float *x, const float *w, const float *b,
                                    k_nn_act act, float *y, int n, int in, int out, pid_error *err)
{
    if (!be) return pid_fail(err, PID_ERR_ARG, "nn dense fused: NULL backend");
    if (n <= 0 || in <= 0 || out <= 0)
        return pid_fail(err, PID_ERR_ARG,
                        "nn dense fused: sizes must be positive (n=%d in=%d out=%d)", n, in, out);
    if (!x || !w || !y) return pid_fail(err, PID_ERR_ARG, "nn dense fused: NULL x, w or y");
    if (act != K_NN_ACT_NONE && act != K_NN_ACT_RELU && act != K_NN_ACT_GELU)
        return pid_fail(err, PID_ERR_ARG, "nn dense fused: unknown activation %d", (int)act);
    if (pid_backend_kind(be) == PID_DEVICE_CUDA)
        return k_nn_dense_forward_fused_cuda(be, x, w, b, act, y, n, in, out, err);
#if NN_X86
    if (pid_backend_cpu_isa(be) >= PID_CPU_ISA_AVX512)
        dense_avx512(x, w, b, y, n, in, out);
    else
#endif
        dense_generic(x, w, b, y, n, in, out);
    if (act != K_NN_ACT_NONE) {
        size_t cnt = (size_t)n * out;
        for (size_t i = 0; i < cnt; i++)
            y[i] = act_apply(act, y[i]);
    }
    return PID_OK;
}
