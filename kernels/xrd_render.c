/* CPU reference of the batched XRD profile renderer (kernels/xrd_render.h):
 * peaks on coarse per-width grids refined by 4-point subdivision, background
 * and Philox noise, with the inner loops written to vectorize; validation of
 * the parameters; dispatch between the CPU and CUDA twins. */

/* Let sqrtf vectorize (errno is never read here) and let selects run both
 * arms (no FP trap is ever enabled); NaN semantics are kept
 * (no -ffast-math), so validation and isnan checks still work. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-math-errno", "no-trapping-math")
#endif

#include "kernels/xrd_render.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The hot function is cloned for AVX-512 and AVX2 and picked at load time
 * (GCC/clang function multiversioning, glibc ifunc). The code uses no FMA
 * contraction (ISO C mode), so every clone computes bit-identical results. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
#define K_XRD_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define K_XRD_CLONES
#endif

#ifndef PHASEID_HAVE_CUDA
pid_status k_xrd_render_cuda(pid_backend *be, const k_xrd_grid *grid, const k_xrd_refl *refl,
                             int n_refl, const k_xrd_pattern *pats, int n_patterns, float *out,
                             pid_error *err)
{
    return pid_fail(err, PID_ERR_UNSUPPORTED, "xrd render: this phaseid was built without CUDA");
}
#endif

/* ------------------------------------------------------------ validation */

static int finite_f(float x)
{
    return isfinite(x);
}

#define VFAIL(...)                                                                                 \
    do {                                                                                           \
        return pid_fail(err, PID_ERR_ARG, __VA_ARGS__);                                            \
    } while (0)

static pid_status validate_grid(const k_xrd_grid *g, pid_error *err)
{
    if (g->axis != K_XRD_AXIS_TWO_THETA && g->axis != K_XRD_AXIS_Q)
        VFAIL("xrd render: grid axis %d is neither 2-theta (0) nor Q (1)", (int)g->axis);
    if (g->n_points < 2 || g->n_points > K_XRD_MAX_POINTS)
        VFAIL("xrd render: grid has %d points (need 2..%d)", (int)g->n_points, K_XRD_MAX_POINTS);
    if (!finite_f(g->x0) || !finite_f(g->step) || !(g->step > 0.0f) || !(g->x0 >= 0.0f))
        VFAIL("xrd render: grid start %g / step %g must be finite, start >= 0 and step > 0",
              (double)g->x0, (double)g->step);
    double last = (double)g->x0 + (double)g->step * (g->n_points - 1);
    if (g->axis == K_XRD_AXIS_TWO_THETA && !(last < 180.0))
        VFAIL("xrd render: grid ends at 2-theta %g deg (must stay below 180)", last);
    return PID_OK;
}

static pid_status validate_pattern(const k_xrd_grid *g, int n_refl, const k_xrd_pattern *p, int ip,
                                   pid_error *err)
{
    if (p->n_phases < 0 || p->n_phases > K_XRD_MAX_PHASES)
        VFAIL("xrd render: pattern %d: %d phases (allowed 0..%d)", ip, (int)p->n_phases,
              K_XRD_MAX_PHASES);
    for (int c = 0; c < p->n_phases; c++) {
        const k_xrd_phase *ph = &p->phase[c];
        if (ph->refl_offset < 0 || ph->refl_count < 0 ||
            (int64_t)ph->refl_offset + ph->refl_count > (int64_t)n_refl)
            VFAIL("xrd render: pattern %d phase %d: reflections [%d, %d+%d) outside the table of "
                  "%d",
                  ip, c, (int)ph->refl_offset, (int)ph->refl_offset, (int)ph->refl_count, n_refl);
        for (int i = 0; i < 6; i++)
            if (!finite_f(ph->gstar[i]))
                VFAIL("xrd render: pattern %d phase %d: reciprocal metric G*[%d] = %g is not "
                      "finite",
                      ip, c, i, (double)ph->gstar[i]);
        if (!(ph->gstar[0] > 0.0f && ph->gstar[1] > 0.0f && ph->gstar[2] > 0.0f))
            VFAIL("xrd render: pattern %d phase %d: reciprocal metric diagonal (%g, %g, %g) must "
                  "be > 0",
                  ip, c, (double)ph->gstar[0], (double)ph->gstar[1], (double)ph->gstar[2]);
        if (!(finite_f(ph->scale) && ph->scale >= 0.0f))
            VFAIL("xrd render: pattern %d phase %d: scale %g must be finite and >= 0", ip, c,
                  (double)ph->scale);
        if (!(finite_f(ph->md_r) && ph->md_r > 0.0f))
            VFAIL("xrd render: pattern %d phase %d: March-Dollase r = %g must be finite and > 0",
                  ip, c, (double)ph->md_r);
        if (ph->md_axis < 0 || ph->md_axis >= PID_TEX_AXES)
            VFAIL("xrd render: pattern %d phase %d: texture axis %d (allowed 0..%d)", ip, c,
                  (int)ph->md_axis, PID_TEX_AXES - 1);
        if (!(finite_f(ph->size_nm) && (ph->size_nm == 0.0f || ph->size_nm >= 0.5f)))
            VFAIL("xrd render: pattern %d phase %d: crystallite size %g nm must be 0 (off) or "
                  ">= 0.5",
                  ip, c, (double)ph->size_nm);
        if (!(finite_f(ph->microstrain) && ph->microstrain >= 0.0f && ph->microstrain <= 0.5f))
            VFAIL("xrd render: pattern %d phase %d: microstrain %g must be in [0, 0.5]", ip, c,
                  (double)ph->microstrain);
    }
    if (p->n_lines < 1 || p->n_lines > K_XRD_MAX_LINES)
        VFAIL("xrd render: pattern %d: %d source lines (allowed 1..%d)", ip, (int)p->n_lines,
              K_XRD_MAX_LINES);
    float wsum = 0.0f;
    for (int l = 0; l < p->n_lines; l++) {
        if (!(finite_f(p->wavelength_a[l]) && p->wavelength_a[l] > 0.01f &&
              p->wavelength_a[l] < 20.0f))
            VFAIL("xrd render: pattern %d: wavelength %g angstrom outside (0.01, 20)", ip,
                  (double)p->wavelength_a[l]);
        if (!(finite_f(p->line_weight[l]) && p->line_weight[l] >= 0.0f))
            VFAIL("xrd render: pattern %d: line weight %g must be finite and >= 0", ip,
                  (double)p->line_weight[l]);
        wsum += p->line_weight[l];
    }
    if (!(wsum > 0.0f)) VFAIL("xrd render: pattern %d: all line weights are 0", ip);
    if (g->axis == K_XRD_AXIS_Q) {
        double qmax = 4.0 * M_PI / p->wavelength_a[0];
        double last = (double)g->x0 + (double)g->step * (g->n_points - 1);
        if (!(last < qmax))
            VFAIL("xrd render: pattern %d: grid ends at Q = %g 1/angstrom, beyond 4 pi / lambda "
                  "= %g",
                  ip, last, qmax);
    }
    if (!(finite_f(p->cag_u_deg2) && finite_f(p->cag_v_deg2) && finite_f(p->cag_w_deg2) &&
          p->cag_u_deg2 >= 0.0f && p->cag_w_deg2 >= 0.0f))
        VFAIL("xrd render: pattern %d: Caglioti U = %g, V = %g, W = %g deg^2 must be finite "
              "with U, W >= 0",
              ip, (double)p->cag_u_deg2, (double)p->cag_v_deg2, (double)p->cag_w_deg2);
    if (!(finite_f(p->eta0) && finite_f(p->eta1_per_deg) && p->eta0 >= 0.0f && p->eta0 <= 1.0f))
        VFAIL("xrd render: pattern %d: pseudo-Voigt eta0 = %g (must be in [0, 1]) / eta1 = %g "
              "(finite)",
              ip, (double)p->eta0, (double)p->eta1_per_deg);
    if (!(finite_f(p->zero_shift_deg) && fabsf(p->zero_shift_deg) <= 10.0f))
        VFAIL("xrd render: pattern %d: zero shift %g deg must be finite and within +-10", ip,
              (double)p->zero_shift_deg);
    if (!(finite_f(p->displacement) && fabsf(p->displacement) <= 0.1f))
        VFAIL("xrd render: pattern %d: sample displacement s/R = %g must be finite and within "
              "+-0.1",
              ip, (double)p->displacement);
    if (p->lp_mode != K_XRD_LP_LAB && p->lp_mode != K_XRD_LP_SYNCHROTRON &&
        p->lp_mode != K_XRD_LP_NONE)
        VFAIL("xrd render: pattern %d: unknown Lorentz-polarization mode %d", ip, (int)p->lp_mode);
    if (!(finite_f(p->lp_mono_two_theta_deg) && p->lp_mono_two_theta_deg >= 0.0f &&
          p->lp_mono_two_theta_deg < 180.0f))
        VFAIL("xrd render: pattern %d: monochromator 2-theta %g deg outside [0, 180)", ip,
              (double)p->lp_mono_two_theta_deg);
    if (!(finite_f(p->lp_polarization) && p->lp_polarization >= 0.0f && p->lp_polarization <= 1.0f))
        VFAIL("xrd render: pattern %d: polarization fraction %g outside [0, 1]", ip,
              (double)p->lp_polarization);
    if (p->n_cheb < 0 || p->n_cheb > K_XRD_MAX_CHEB)
        VFAIL("xrd render: pattern %d: %d Chebyshev coefficients (allowed 0..%d)", ip,
              (int)p->n_cheb, K_XRD_MAX_CHEB);
    float rest = 0.0f;
    for (int k = 0; k < p->n_cheb; k++) {
        if (!finite_f(p->cheb[k]))
            VFAIL("xrd render: pattern %d: Chebyshev coefficient %d = %g is not finite", ip, k,
                  (double)p->cheb[k]);
        if (k > 0) rest += fabsf(p->cheb[k]);
    }
    if (p->n_cheb > 0 && !(p->cheb[0] >= rest * (1.0f - 1e-6f)))
        VFAIL("xrd render: pattern %d: Chebyshev background can go negative (c0 = %g < sum "
              "|c_k| = %g)",
              ip, (double)p->cheb[0], (double)rest);
    if (!(finite_f(p->hump_height) && p->hump_height >= 0.0f))
        VFAIL("xrd render: pattern %d: amorphous hump height %g must be finite and >= 0", ip,
              (double)p->hump_height);
    if (p->hump_height > 0.0f &&
        !(finite_f(p->hump_center_x) && finite_f(p->hump_fwhm_x) && p->hump_fwhm_x > 0.0f))
        VFAIL("xrd render: pattern %d: amorphous hump centre %g / FWHM %g must be finite, FWHM "
              "> 0",
              ip, (double)p->hump_center_x, (double)p->hump_fwhm_x);
    if (!(finite_f(p->air_height) && p->air_height >= 0.0f))
        VFAIL("xrd render: pattern %d: air scatter %g must be finite and >= 0", ip,
              (double)p->air_height);
    if (p->air_height > 0.0f && !(g->x0 > 0.0f))
        VFAIL("xrd render: pattern %d: air scatter (a * x0 / x) needs a grid starting above 0", ip);
    if (p->n_impurities < 0 || p->n_impurities > K_XRD_MAX_IMPURITIES)
        VFAIL("xrd render: pattern %d: %d impurity peaks (allowed 0..%d)", ip, (int)p->n_impurities,
              K_XRD_MAX_IMPURITIES);
    for (int i = 0; i < p->n_impurities; i++) {
        const k_xrd_impurity *im = &p->impurity[i];
        if (!(finite_f(im->pos_x) && finite_f(im->height) && finite_f(im->fwhm_x) &&
              im->height >= 0.0f && im->fwhm_x > 0.0f))
            VFAIL("xrd render: pattern %d: impurity %d (position %g, height %g, FWHM %g) needs "
                  "finite values, height >= 0, FWHM > 0",
                  ip, i, (double)im->pos_x, (double)im->height, (double)im->fwhm_x);
    }
    if (!(finite_f(p->noise_sigma) && p->noise_sigma >= 0.0f && p->noise_sigma <= 10.0f))
        VFAIL("xrd render: pattern %d: noise sigma %g must be in [0, 10] (fraction of max)", ip,
              (double)p->noise_sigma);
    if (!(finite_f(p->poisson_counts) && p->poisson_counts >= 0.0f))
        VFAIL("xrd render: pattern %d: Poisson counts %g must be finite and >= 0 (0 = off)", ip,
              (double)p->poisson_counts);
    return PID_OK;
}

pid_status k_xrd_render_validate(const k_xrd_grid *grid, const k_xrd_refl *refl, int n_refl,
                                 const k_xrd_pattern *pats, int n_patterns, pid_error *err)
{
    if (!grid || (!pats && n_patterns > 0) || n_patterns < 0 || n_refl < 0)
        return pid_fail(err, PID_ERR_ARG, "xrd render: missing grid or patterns");
    pid_status st = validate_grid(grid, err);
    if (st) return st;
    if (refl) {
        for (int i = 0; i < n_refl; i++) {
            const k_xrd_refl *r = &refl[i];
            int ok = finite_f(r->hkl[0]) && finite_f(r->hkl[1]) && finite_f(r->hkl[2]) &&
                     finite_f(r->f2m) && r->f2m >= 0.0f;
            for (int a = 0; a < PID_TEX_AXES && ok; a++)
                for (int k = 0; k < PID_TEX_NCOS && ok; k++)
                    ok = finite_f(r->tex_cos2[a][k]) && finite_f(r->tex_w[a][k]) &&
                         r->tex_w[a][k] >= 0.0f && r->tex_cos2[a][k] >= 0.0f &&
                         r->tex_cos2[a][k] <= 1.0001f;
            if (!ok)
                return pid_fail(err, PID_ERR_ARG,
                                "xrd render: reflection %d (%g %g %g): non-finite or negative "
                                "|F|^2*mult or texture data",
                                i, (double)r->hkl[0], (double)r->hkl[1], (double)r->hkl[2]);
        }
    }
    for (int i = 0; i < n_patterns; i++) {
        st = validate_pattern(grid, n_refl, &pats[i], i, err);
        if (st) return st;
    }
    return PID_OK;
}

/* ------------------------------------------------------------- rendering */

typedef struct {
    float *lv; /* all levels, see k_xrd_level_layout */
    int32_t top[K_XRD_MAX_LEVELS], off[K_XRD_MAX_LEVELS];
    int lv_total;
    /* Peaks of the pattern, struct of arrays (cap long). */
    float *px, *pw, *pe, *pa, *phl, *phg;
    int32_t *pok;
    /* Plans, struct of arrays: tier t of peak i is level lv[t][i], kind
     * kd[t][i], range [k0[t][i], k1[t][i]]. */
    int32_t *lv_t[2], *kd_t[2], *k0_t[2], *k1_t[2];
    float *kc_t[2], *du_t[2]; /* tier frames, see k_xrd_tier_frame */
    /* One phase's families, struct of arrays (fam long): h k l f2m, then
     * the texture axis' cos^2 and weights (PID_TEX_NCOS rows each). */
    float *fh, *fk, *fl, *ff, *fc, *fw;
    float *nrm;                /* normals, n rounded up to 4 */
    uint32_t *words;           /* Philox words, 4 x n/4 */
    uint8_t *small;            /* points needing exact Poisson */
    int32_t *idx;              /* ... their indices */
    float *plam, *pu, *pk_out; /* ... their mean counts, uniforms, draws */
} render_ws;

/* Largest element of y[0..n), n >= 1. Sixteen running maxima updated
 * element-wise vectorize; a plain running max would not (GCC needs
 * -ffinite-math-only to reorder a max reduction). */
K_XRD_CLONES
static float max_of(const float *restrict y, int n)
{
    float m[16];
    for (int l = 0; l < 16; l++)
        m[l] = y[0];
    int j = 0;
    for (; j + 16 <= n; j += 16)
        for (int l = 0; l < 16; l++)
            m[l] = y[j + l] > m[l] ? y[j + l] : m[l];
    float r = m[0];
    for (int l = 1; l < 16; l++)
        r = m[l] > r ? m[l] : r;
    for (; j < n; j++)
        r = y[j] > r ? y[j] : r;
    return r;
}

/* Peaks of one phase for one source line, over all families in one vector
 * loop (k_xrd_peak_eval is straight-line code). Inputs: the families as
 * struct of arrays (texture rows with stride count); outputs at index r.
 * (Arrays are parameters: GCC only trusts restrict there.) */
K_XRD_CLONES
static void eval_families(const k_xrd_grid *g, const k_xrd_pattern *p, const k_xrd_phase *ph,
                          int count, int line, float mono_c2, const float *restrict fh,
                          const float *restrict fk, const float *restrict fl,
                          const float *restrict ff, const float *restrict fc,
                          const float *restrict fw, float *restrict px, float *restrict pw,
                          float *restrict pe, float *restrict pa, int32_t *restrict pok)
{
    for (int r = 0; r < count; r++)
        pok[r] = k_xrd_peak_eval(g, p, ph, fh[r], fk[r], fl[r], ff[r], fc + r, fw + r, count, line,
                                 mono_c2, &px[r], &pw[r], &pe[r], &pa[r]);
}

/* Pseudo-Voigt heights and plans of peaks [0, np), plans written as struct
 * of arrays (through a struct pointer GCC gives up on the vector loop). */
K_XRD_CLONES
static void plan_peaks(const k_xrd_grid *g, int np, float h_ref, const float *restrict px,
                       const float *restrict pw, const float *restrict pe, const float *restrict pa,
                       float *restrict phl, float *restrict phg, int32_t *restrict lv0,
                       int32_t *restrict lv1, int32_t *restrict kd0, int32_t *restrict kd1,
                       int32_t *restrict a0, int32_t *restrict a1, int32_t *restrict b0,
                       int32_t *restrict b1, float *restrict kc0, float *restrict kc1,
                       float *restrict du0, float *restrict du1)
{
    for (int i = 0; i < np; i++) {
        float ih = 1.0f / pw[i];
        phl[i] = pe[i] * pa[i] * (2.0f / K_XRD_PI) * ih;
        phg[i] = (1.0f - pe[i]) * pa[i] * 0.939437279f * ih;
    }
    for (int i = 0; i < np; i++) {
        k_xrd_plan pl;
        k_xrd_peak_plan(g, px[i], pw[i], phl[i], phg[i], h_ref, &pl);
        lv0[i] = pl.level[0];
        lv1[i] = pl.level[1];
        kd0[i] = pl.kind[0];
        kd1[i] = pl.kind[1];
        a0[i] = pl.k0[0];
        a1[i] = pl.k0[1];
        b0[i] = pl.k1[0];
        b1[i] = pl.k1[1];
        k_xrd_tier_frame(g, px[i], pw[i], pl.level[0], &kc0[i], &du0[i]);
        k_xrd_tier_frame(g, px[i], pw[i], pl.level[1], &kc1[i], &du1[i]);
    }
}

/* Add one tier of one peak onto its level: k_xrd_tier_value with the kind
 * fixed, so each loop is straight-line and vectorizes; the length is a
 * multiple of K_XRD_PAD, so there is no scalar remainder. */
static inline __attribute__((always_inline)) void
render_tier(float *restrict b, int kind, int k0, int k1, float hl, float hg, float kc, float du)
{
    if (kind == K_XRD_TIER_WING) {
        for (int k = k0; k <= k1; k++)
            b[k] += k_xrd_tier_value(K_XRD_TIER_WING, hl, hg, ((float)k - kc) * du);
    } else if (kind == K_XRD_TIER_CORE) {
        for (int k = k0; k <= k1; k++)
            b[k] += k_xrd_tier_value(K_XRD_TIER_CORE, hl, hg, ((float)k - kc) * du);
    } else {
        for (int k = k0; k <= k1; k++)
            b[k] += k_xrd_tier_value(K_XRD_TIER_FULL, hl, hg, ((float)k - kc) * du);
    }
}

/* Refine level l onto level l-1 (both with 2-point margins) by the 4-point
 * Deslauriers-Dubuc scheme: even points copy, odd points take
 * (-c[k-1] + 9 c[k] + 9 c[k+1] - c[k+2]) / 16. */
static inline __attribute__((always_inline)) void refine(float *restrict lo,
                                                         const float *restrict up, int top_lo)
{
    /* lo and up point at coarse index 0 (margins at -2, -1). */
    int kmax = (top_lo + 2) / 2;
    /* The last odd point may land one past top_lo + 2: in the slack. */
    for (int k = -1; k <= kmax; k++) {
        lo[2 * k] += up[k];
        lo[2 * k + 1] += (9.0f * (up[k] + up[k + 1]) - (up[k - 1] + up[k + 2])) * 0.0625f;
    }
}

K_XRD_CLONES
static int render_levels(render_ws *ws, int np)
{
    int max_level = 0;
    for (int i = 0; i < np; i++) {
        for (int t = 0; t < 2; t++) {
            int k0 = ws->k0_t[t][i], k1 = ws->k1_t[t][i];
            if (k1 < k0) continue;
            int lv = ws->lv_t[t][i];
            render_tier(ws->lv + ws->off[lv] + 2, ws->kd_t[t][i], k0, k1, ws->phl[i], ws->phg[i],
                        ws->kc_t[t][i], ws->du_t[t][i]);
            max_level = lv > max_level ? lv : max_level;
        }
    }
    return max_level;
}

K_XRD_CLONES
static void cascade(render_ws *ws, int max_level)
{
    for (int l = max_level; l >= 1; l--)
        refine(ws->lv + ws->off[l - 1] + 2, ws->lv + ws->off[l] + 2, ws->top[l - 1]);
}

/* Background onto its coarse level (indices -2 .. top + 2). */
K_XRD_CLONES
static void add_background(const k_xrd_bg *bg, float *restrict b, int top)
{
    const float sc = (float)(1 << bg->level);
    for (int k = -2; k <= top + 2; k++)
        b[k] += k_xrd_bg_at(bg, (float)k * sc);
}

/* out = y / m with the maximum exactly 1: multiply by the reciprocal (a
 * division per point is slower), then pin the maximum and clamp the one-ulp
 * overshoot the reciprocal can cause. */
K_XRD_CLONES
static void normalize(const float *restrict y, float *restrict out, int n, float m)
{
    const float inv = 1.0f / m;
    for (int j = 0; j < n; j++) {
        float v = y[j] * inv;
        v = v > 1.0f ? 1.0f : v;
        out[j] = y[j] == m ? 1.0f : v;
    }
}

/* Normals for all points: block b gives the normals of points b, b + nb,
 * b + 2 nb and b + 3 nb (nb = ceil(n / 4)), so both passes run over
 * contiguous arrays: Philox words, then Box-Muller. nrm holds 4 nb values. */
static void philox_words(uint64_t seed, uint64_t stream, uint64_t base, int nb,
                         uint32_t *restrict w);
K_XRD_CLONES
static void box_muller_all(int nb, const uint32_t *restrict w, float *restrict nrm)
{
    for (int b = 0; b < nb; b++)
        k_xrd_box_muller(w[b], w[nb + b], &nrm[b], &nrm[nb + b]);
    for (int b = 0; b < nb; b++)
        k_xrd_box_muller(w[2 * nb + b], w[3 * nb + b], &nrm[2 * nb + b], &nrm[3 * nb + b]);
}

static void make_normals(uint64_t seed, uint64_t stream, int nb, uint32_t *w, float *nrm)
{
    philox_words(seed, stream, 0, nb, w);
    box_muller_all(nb, w, nrm);
}

/* Add noise in place where the normal approximation holds; flag the points
 * that need an exact Poisson draw. Returns how many were flagged. */
K_XRD_CLONES
static int add_noise_fast(float *restrict y, const float *restrict nrm, int n, float smax,
                          float sigma, float counts, uint8_t *restrict small)
{
    if (!(counts > 0.0f)) {
        for (int j = 0; j < n; j++)
            y[j] += smax * (sigma * nrm[j]);
        return 0;
    }
    const float is = 1.0f / smax, ic = 1.0f / counts, s2 = sigma * sigma;
    int m = 0;
    for (int j = 0; j < n; j++) {
        int exact;
        y[j] += k_xrd_noise_fast(y[j], smax, is, sigma, s2, counts, ic, nrm[j], &exact);
        small[j] = (uint8_t)exact;
        m += exact;
    }
    return m;
}

/* Philox4x32-10 with every 32-bit quantity held in a 64-bit lane: the
 * multiplies are then 32x32->64 products of zero-extended lanes, which
 * x86 does in one instruction per 8 lanes, instead of GCC's unpack-and-
 * widen sequence for mixed 32/64-bit code (2x faster overall). Same words
 * as pid_rng_block (unit test). */
K_XRD_CLONES
static void philox_words(uint64_t seed, uint64_t stream, uint64_t base, int nb,
                         uint32_t *restrict w)
{
    const uint64_t m32 = 0xffffffffull;
    for (int b = 0; b < nb; b++) {
        uint64_t idx = base + (uint64_t)b;
        uint64_t c0 = idx & m32, c1 = idx >> 32, c2 = stream & m32, c3 = stream >> 32;
        uint64_t k0 = seed & m32, k1 = seed >> 32;
        for (int r = 0; r < 10; r++) {
            uint64_t p0 = (c0 & m32) * 0xD2511F53ull;
            uint64_t p1 = (c2 & m32) * 0xCD9E8D57ull;
            uint64_t n0 = ((p1 >> 32) ^ c1 ^ k0) & m32;
            uint64_t n2 = ((p0 >> 32) ^ c3 ^ k1) & m32;
            c1 = p1 & m32;
            c3 = p0 & m32;
            c0 = n0;
            c2 = n2;
            k0 = (k0 + 0x9E3779B9ull) & m32;
            k1 = (k1 + 0xBB67AE85ull) & m32;
        }
        w[b] = (uint32_t)c0;
        w[nb + b] = (uint32_t)c1;
        w[2 * nb + b] = (uint32_t)c2;
        w[3 * nb + b] = (uint32_t)c3;
    }
}

void k_xrd_philox_words_cpu(uint64_t seed, uint64_t stream, uint64_t base, int nb, uint32_t *w)
{
    philox_words(seed, stream, base, nb, w);
}

/* Exact Poisson inversion for m points at once, 16 lanes in lock step:
 * lane l runs k_xrd_poisson_small(lam[l], u[l]) operation for operation
 * (so the counts equal the CUDA kernel's), the chunk stops when every lane
 * has stopped. */
K_XRD_CLONES
static void poisson_invert(int m, const float *restrict lam, const float *restrict u,
                           float *restrict kout)
{
    for (int c = 0; c < m; c += 16) {
        float P[16], F[16], L[16], U[16], K[16];
        for (int l = 0; l < 16; l++) {
            int in = c + l < m;
            L[l] = in ? lam[c + l] : 0.0f;
            U[l] = in ? u[c + l] : 0.0f; /* u = 0 stops at once */
            P[l] = k_xrd_exp(-L[l]);
            F[l] = P[l];
            K[l] = 0.0f;
        }
        for (int it = 1; it <= 96; it++) {
            const float fk = (float)it;
            int any = 0;
            for (int l = 0; l < 16; l++) {
                int act = U[l] > F[l];
                float pn = P[l] * (L[l] / fk);
                P[l] = act ? pn : P[l];
                F[l] = act ? F[l] + pn : F[l];
                K[l] = act ? fk : K[l];
                any |= act;
            }
            if (!any) break;
        }
        for (int l = 0; l < 16 && c + l < m; l++)
            kout[c + l] = K[l];
    }
}

/* The points add_noise_fast flagged: exact Poisson count plus an
 * independent Gaussian, as k_xrd_noise_value. */
static void add_noise_exact(const k_xrd_pattern *p, float *y, int n, float smax, render_ws *ws)
{
    const int nb = (n + 3) / 4;
    const float is = 1.0f / smax, counts = p->poisson_counts;
    int m = 0;
    for (int j = 0; j < n; j++)
        if (ws->small[j]) ws->idx[m++] = j;
    if (m == 0) return;
    /* Uniform of point j: word j / nb of block 2^40 + j % nb. Many points:
     * all blocks in one vector pass (then it is words[j]); few: one by one. */
    int all = m > 64;
    if (all) philox_words(p->noise_seed, p->noise_stream, K_XRD_POISSON_BLOCK0, nb, ws->words);
    for (int i = 0; i < m; i++) {
        int j = ws->idx[i];
        float s = y[j] * is;
        s = s > 0.0f ? s : 0.0f;
        ws->plam[i] = counts * s;
        if (all)
            ws->pu[i] = pid_u01f(ws->words[j]);
        else {
            pid_u32x4 r = pid_rng_block(p->noise_seed, p->noise_stream,
                                        K_XRD_POISSON_BLOCK0 + (uint64_t)(j % nb));
            ws->pu[i] = pid_u01f(r.v[j / nb]);
        }
    }
    poisson_invert(m, ws->plam, ws->pu, ws->pk_out);
    for (int i = 0; i < m; i++) {
        int j = ws->idx[i];
        y[j] += smax * (p->noise_sigma * ws->nrm[j] + (ws->pk_out[i] - ws->plam[i]) / counts);
    }
}

static void render_one(const k_xrd_grid *g, const k_xrd_refl *refl, const k_xrd_pattern *p,
                       render_ws *ws, float *out)
{
    const int n = g->n_points;
    const float x_last = g->x0 + g->step * (float)(n - 1);
    const float mono_c2 = k_xrd_mono_c2(p);
    /* 1. Peaks of every phase and line; the tallest centred on the grid is
     *    the reference h_ref (else the tallest anywhere, else 1). */
    int np = 0;
    for (int c = 0; c < p->n_phases; c++) {
        const k_xrd_phase *ph = &p->phase[c];
        const int cnt = ph->refl_count;
        const k_xrd_refl *rf = refl + ph->refl_offset;
        for (int r = 0; r < cnt; r++) {
            ws->fh[r] = rf[r].hkl[0];
            ws->fk[r] = rf[r].hkl[1];
            ws->fl[r] = rf[r].hkl[2];
            ws->ff[r] = rf[r].f2m;
            for (int i = 0; i < PID_TEX_NCOS; i++) {
                ws->fc[i * cnt + r] = rf[r].tex_cos2[ph->md_axis][i];
                ws->fw[i * cnt + r] = rf[r].tex_w[ph->md_axis][i];
            }
        }
        for (int l = 0; l < p->n_lines; l++) {
            const int base = np;
            eval_families(g, p, ph, cnt, l, mono_c2, ws->fh, ws->fk, ws->fl, ws->ff, ws->fc, ws->fw,
                          ws->px + base, ws->pw + base, ws->pe + base, ws->pa + base,
                          ws->pok + base);
            for (int r = 0; r < cnt; r++) { /* keep the valid ones, in order */
                if (!ws->pok[base + r]) continue;
                ws->px[np] = ws->px[base + r];
                ws->pw[np] = ws->pw[base + r];
                ws->pe[np] = ws->pe[base + r];
                ws->pa[np] = ws->pa[base + r];
                np++;
            }
        }
    }
    float h_ref = 0.0f, h_any = 0.0f;
    for (int i = 0; i < np; i++) {
        float ih = 1.0f / ws->pw[i];
        float h = ws->pe[i] * ws->pa[i] * (2.0f / K_XRD_PI) * ih +
                  (1.0f - ws->pe[i]) * ws->pa[i] * 0.939437279f * ih;
        h_any = h > h_any ? h : h_any;
        int in = ws->px[i] >= g->x0 && ws->px[i] <= x_last;
        h_ref = in && h > h_ref ? h : h_ref;
    }
    if (!(h_ref > 0.0f)) h_ref = h_any > 0.0f ? h_any : 1.0f;
    for (int i = 0; i < p->n_impurities; i++) {
        k_xrd_peak pk;
        k_xrd_impurity_make(g, p, i, h_ref, &pk);
        ws->px[np] = pk.x;
        ws->pw[np] = pk.fwhm;
        ws->pe[np] = pk.eta;
        ws->pa[np] = pk.area;
        np++;
    }

    /* 2. Peaks and background onto their levels, then refine down to the
     *    output grid. */
    memset(ws->lv, 0, sizeof(float) * (size_t)ws->lv_total);
    plan_peaks(g, np, h_ref, ws->px, ws->pw, ws->pe, ws->pa, ws->phl, ws->phg, ws->lv_t[0],
               ws->lv_t[1], ws->kd_t[0], ws->kd_t[1], ws->k0_t[0], ws->k0_t[1], ws->k1_t[0],
               ws->k1_t[1], ws->kc_t[0], ws->kc_t[1], ws->du_t[0], ws->du_t[1]);
    int max_level = render_levels(ws, np);
    k_xrd_bg bg;
    k_xrd_bg_init(g, p, h_ref, &bg);
    if (bg.any) {
        add_background(&bg, ws->lv + ws->off[bg.level] + 2, ws->top[bg.level]);
        max_level = bg.level > max_level ? bg.level : max_level;
    }
    cascade(ws, max_level);
    float *y = ws->lv + ws->off[0] + 2;
    const float smax = max_of(y, n);

    /* 3. Noise relative to the noiseless maximum S. */
    if (smax > 0.0f && (p->noise_sigma > 0.0f || p->poisson_counts > 0.0f)) {
        int nb = (n + 3) / 4;
        make_normals(p->noise_seed, p->noise_stream, nb, ws->words, ws->nrm);
        int m = add_noise_fast(y, ws->nrm, n, smax, p->noise_sigma, p->poisson_counts, ws->small);
        if (m > 0) add_noise_exact(p, y, n, smax, ws);
    }

    /* 4. Normalize to a maximum of exactly 1. */
    float m = max_of(y, n);
    if (m > 0.0f)
        normalize(y, out, n, m);
    else
        memcpy(out, y, sizeof(float) * (size_t)n);
}

pid_status k_xrd_render_cpu(pid_backend *be, const k_xrd_grid *grid, const k_xrd_refl *refl,
                            int n_refl, const k_xrd_pattern *pats, int n_patterns, float *out,
                            pid_error *err)
{
    pid_status st = k_xrd_render_validate(grid, refl, n_refl, pats, n_patterns, err);
    if (st) return st;
    if (n_patterns == 0) return PID_OK;
    if (!out || (n_refl > 0 && !refl))
        return pid_fail(err, PID_ERR_ARG, "xrd render: missing reflection table or output");
    render_ws ws;
    memset(&ws, 0, sizeof ws);
    ws.lv_total = k_xrd_level_layout(grid->n_points, ws.top, ws.off);
    int cap = 0, fam = 1;
    for (int i = 0; i < n_patterns; i++) {
        int c = pats[i].n_impurities;
        for (int k = 0; k < pats[i].n_phases; k++) {
            c += pats[i].phase[k].refl_count * pats[i].n_lines;
            fam = pats[i].phase[k].refl_count > fam ? pats[i].phase[k].refl_count : fam;
        }
        cap = c > cap ? c : cap;
    }
    cap = cap > 0 ? cap : 1;
    size_t n4 = (size_t)(grid->n_points + 3) / 4 * 4;
    ws.lv = malloc(sizeof(float) * (size_t)ws.lv_total);
    ws.px = malloc(sizeof(float) * 10 * (size_t)cap);
    ws.pok = malloc(sizeof(int32_t) * (size_t)cap);
    ws.lv_t[0] = malloc(sizeof(int32_t) * 8 * (size_t)cap);
    ws.fh = malloc(sizeof(float) * (4 + 2 * PID_TEX_NCOS) * (size_t)fam);
    ws.nrm = malloc(sizeof(float) * n4);
    ws.words = malloc(sizeof(uint32_t) * n4);
    ws.small = malloc(n4);
    ws.idx = malloc(sizeof(int32_t) * n4);
    ws.plam = malloc(sizeof(float) * 3 * n4);
    if (!ws.lv || !ws.px || !ws.pok || !ws.lv_t[0] || !ws.fh || !ws.nrm || !ws.words || !ws.small ||
        !ws.idx || !ws.plam) {
        st = pid_fail(err, PID_ERR_NOMEM, "xrd render: out of memory for the workspace");
        goto done;
    }
    ws.pw = ws.px + cap;
    ws.pe = ws.pw + cap;
    ws.pa = ws.pe + cap;
    ws.phl = ws.pa + cap;
    ws.phg = ws.phl + cap;
    ws.kc_t[0] = ws.phg + cap;
    ws.kc_t[1] = ws.kc_t[0] + cap;
    ws.du_t[0] = ws.kc_t[1] + cap;
    ws.du_t[1] = ws.du_t[0] + cap;
    ws.lv_t[1] = ws.lv_t[0] + cap;
    ws.kd_t[0] = ws.lv_t[1] + cap;
    ws.kd_t[1] = ws.kd_t[0] + cap;
    ws.k0_t[0] = ws.kd_t[1] + cap;
    ws.k0_t[1] = ws.k0_t[0] + cap;
    ws.k1_t[0] = ws.k0_t[1] + cap;
    ws.k1_t[1] = ws.k1_t[0] + cap;
    ws.fk = ws.fh + fam;
    ws.fl = ws.fk + fam;
    ws.ff = ws.fl + fam;
    ws.fc = ws.ff + fam;
    ws.pu = ws.plam + n4;
    ws.pk_out = ws.pu + n4;
    ws.fw = ws.fc + PID_TEX_NCOS * fam;
    for (int i = 0; i < n_patterns; i++)
        render_one(grid, refl, &pats[i], &ws, out + (size_t)i * (size_t)grid->n_points);
done:
    free(ws.lv);
    free(ws.px);
    free(ws.pok);
    free(ws.lv_t[0]);
    free(ws.fh);
    free(ws.nrm);
    free(ws.words);
    free(ws.small);
    free(ws.idx);
    free(ws.plam);
    return st;
}

pid_status k_xrd_render(pid_backend *be, const k_xrd_grid *grid, const k_xrd_refl *refl, int n_refl,
                        const k_xrd_pattern *pats, int n_patterns, float *out, pid_error *err)
{
    if (be && pid_backend_kind(be) == PID_DEVICE_CUDA)
        return k_xrd_render_cuda(be, grid, refl, n_refl, pats, n_patterns, out, err);
    return k_xrd_render_cpu(be, grid, refl, n_refl, pats, n_patterns, out, err);
}
