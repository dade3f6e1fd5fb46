/* Unit tests for the batched XRD profile renderer (kernels/xrd_render.*):
 * the fast math against libm, the CPU renderer against an independent
 * full-range double-precision pseudo-Voigt sum, peak position / area /
 * width / K-alpha2 / texture physics, noise statistics and reproducibility,
 * CPU vs CUDA parity (skipped without a device), and parameter validation. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/rng.h"
#include "kernels/backend.h"
#include "kernels/xrd_render.h"

#define CU_KA1 1.540562f
#define CU_KA2 1.544390f

/* ------------------------------------------------------------ fixtures */

/* A cubic cell's reflection list: every family (h >= k >= l >= 0) with
 * d >= d_min, |F|^2 * mult = a smooth made-up value, one texture entry per
 * axis (cos^2 from the family direction for [001]). */
static int make_cubic(double a, double d_min, k_xrd_refl **out)
{
    int cap = 4096, n = 0;
    k_xrd_refl *r = calloc((size_t)cap, sizeof *r);
    int hmax = (int)(a / d_min) + 1;
    for (int h = 0; h <= hmax; h++)
        for (int k = 0; k <= h; k++)
            for (int l = 0; l <= k; l++) {
                if (!h && !k && !l) continue;
                double q = (h * h + k * k + l * l) / (a * a);
                if (1.0 / sqrt(q) < d_min || n == cap) continue;
                k_xrd_refl *x = &r[n++];
                x->hkl[0] = (float)h;
                x->hkl[1] = (float)k;
                x->hkl[2] = (float)l;
                x->f2m = (float)(1000.0 * exp(-2.0 * q) * (1 + (h + k + l) % 3));
                for (int ax = 0; ax < PID_TEX_AXES; ax++) {
                    x->tex_cos2[ax][0] = (float)(l * l / (a * a) / q);
                    x->tex_w[ax][0] = 1.0f;
                }
            }
    *out = r;
    return n;
}

/* An orthorhombic-like list with random strengths: ~300 families in 10-80
 * deg for Cu, a dense pattern with many overlapping peaks. */
static int make_dense(uint64_t seed, k_xrd_refl **out, float gstar[6])
{
    double a = 8, b = 9, c = 10;
    int cap = 4096, n = 0;
    k_xrd_refl *r = calloc((size_t)cap, sizeof *r);
    pid_rng g;
    pid_rng_init(&g, seed, 1);
    double dmin = 1.54 / (2 * sin(41 * M_PI / 180));
    for (int h = 0; h <= 12; h++)
        for (int k = 0; k <= 12; k++)
            for (int l = 0; l <= 12; l++) {
                if (!h && !k && !l) continue;
                double q = h * h / (a * a) + k * k / (b * b) + l * l / (c * c);
                if (1.0 / sqrt(q) < dmin || n == cap) continue;
                k_xrd_refl *x = &r[n++];
                x->hkl[0] = (float)h;
                x->hkl[1] = (float)k;
                x->hkl[2] = (float)l;
                x->f2m = (float)exp(pid_rng_range(&g, 0, 8));
                for (int ax = 0; ax < PID_TEX_AXES; ax++) {
                    x->tex_cos2[ax][0] = (float)pid_rng_uniform(&g);
                    x->tex_w[ax][0] = 0.6f;
                    x->tex_cos2[ax][1] = (float)pid_rng_uniform(&g);
                    x->tex_w[ax][1] = 0.4f;
                }
            }
    memset(gstar, 0, 6 * sizeof(float));
    gstar[0] = (float)(1 / (a * a));
    gstar[1] = (float)(1 / (b * b));
    gstar[2] = (float)(1 / (c * c));
    *out = r;
    return n;
}

static void cubic_gstar(float a, float g[6])
{
    memset(g, 0, 6 * sizeof(float));
    g[0] = g[1] = g[2] = 1.0f / (a * a);
}

/* A clean single-phase pattern: one line, no background, no noise. */
static k_xrd_pattern clean_pattern(int n_refl, const float gstar[6])
{
    k_xrd_pattern p;
    memset(&p, 0, sizeof p);
    p.n_phases = 1;
    p.phase[0].refl_count = n_refl;
    memcpy(p.phase[0].gstar, gstar, 6 * sizeof(float));
    p.phase[0].scale = 1.0f;
    p.phase[0].md_r = 1.0f;
    p.n_lines = 1;
    p.wavelength_a[0] = CU_KA1;
    p.line_weight[0] = 1.0f;
    p.cag_u_deg2 = 0.004f;
    p.cag_v_deg2 = -0.002f;
    p.cag_w_deg2 = 0.003f;
    p.eta0 = 0.5f;
    p.lp_mode = K_XRD_LP_LAB;
    p.lp_polarization = 0.95f;
    return p;
}

static k_xrd_grid grid_tt(float x0, float x1, float step)
{
    k_xrd_grid g;
    g.axis = K_XRD_AXIS_TWO_THETA;
    g.x0 = x0;
    g.step = step;
    g.n_points = (int)lrint((x1 - x0) / step) + 1;
    return g;
}

static float *render(const k_xrd_grid *g, const k_xrd_refl *r, int nr, const k_xrd_pattern *p,
                     int np)
{
    float *out = malloc(sizeof(float) * (size_t)g->n_points * (size_t)np);
    pid_error err;
    pid_error_clear(&err);
    pid_status st = k_xrd_render_cpu(NULL, g, r, nr, p, np, out, &err);
    if (st) fprintf(stderr, "render failed: %s\n", err.msg);
    assert_int_equal(st, PID_OK);
    return out;
}

/* ------------------------------------------------ independent reference */

/* The documented model in double precision, written from the formulas in
 * kernels/xrd_render.h (not from its code): every peak summed over every
 * grid point, no windows, no coarse grids. Phases only (no background,
 * impurities or noise), 2-theta axis. Not normalized. */
static double tch5(double g, double l)
{
    return pow(g, 5) + 2.69269 * pow(g, 4) * l + 2.42843 * pow(g, 3) * l * l +
           4.47163 * g * g * pow(l, 3) + 0.07842 * g * pow(l, 4) + pow(l, 5);
}

static double tch_eta(double q)
{
    return 1.36603 * q - 0.47719 * q * q + 0.11116 * q * q * q;
}

static void reference(const k_xrd_grid *g, const k_xrd_refl *refl, const k_xrd_pattern *p,
                      double *y)
{
    const double deg = M_PI / 180.0;
    for (int j = 0; j < g->n_points; j++)
        y[j] = 0.0;
    for (int c = 0; c < p->n_phases; c++) {
        const k_xrd_phase *ph = &p->phase[c];
        const float *G = ph->gstar;
        for (int r = 0; r < ph->refl_count; r++) {
            const k_xrd_refl *rf = &refl[ph->refl_offset + r];
            double h = rf->hkl[0], k = rf->hkl[1], l = rf->hkl[2];
            double q = G[0] * h * h + G[1] * k * k + G[2] * l * l +
                       2 * (G[3] * h * k + G[4] * h * l + G[5] * k * l);
            for (int li = 0; li < p->n_lines; li++) {
                double lam = p->wavelength_a[li], s = lam * sqrt(q) / 2;
                if (!(s < 0.9999)) continue;
                double th = asin(s), ct = cos(th), tn = tan(th), c2 = cos(2 * th);
                double tt = 2 * th / deg + p->zero_shift_deg - 2 * p->displacement * ct / deg;
                double lp = (1 + c2 * c2) / (s * s * ct);
                if (p->lp_mode == K_XRD_LP_NONE) lp = 1;
                double md = 0;
                if (ph->md_r == 1.0f)
                    md = 1;
                else
                    for (int i = 0; i < PID_TEX_NCOS; i++) {
                        double w = rf->tex_w[ph->md_axis][i], cc = rf->tex_cos2[ph->md_axis][i];
                        double rr = ph->md_r;
                        if (w > 0) md += w * pow(rr * rr * cc + (1 - cc) / rr, -1.5);
                    }
                double area = ph->scale * rf->f2m * p->line_weight[li] * lp * md;
                double hi2 = p->cag_u_deg2 * tn * tn + p->cag_v_deg2 * tn + p->cag_w_deg2;
                double hi = sqrt(fmax(hi2, 1e-6));
                double eta = fmin(1, fmax(0, p->eta0 + p->eta1_per_deg * tt)), H = hi;
                double hs = 0;
                if (ph->size_nm > 0) hs += 0.9 * lam / (10 * ph->size_nm * ct);
                hs = (hs + 4 * ph->microstrain * tn) / deg;
                if (hs > 0) {
                    double e = eta;
                    double hg =
                        hi * sqrt(fmax(0, 1 - 0.74417 * e - 0.24781 * e * e - 0.00810 * e * e * e));
                    double hl = hi * (0.72928 * e + 0.19289 * e * e + 0.07783 * e * e * e);
                    double h0 = pow(tch5(hg, hl), 0.2), h1 = pow(tch5(hg, hl + hs), 0.2);
                    H = hi * h1 / h0;
                    eta = fmin(1, fmax(0, eta + tch_eta((hl + hs) / h1) - tch_eta(hl / h0)));
                }
                for (int j = 0; j < g->n_points; j++) {
                    double x = g->x0 + (double)g->step * j, u = (x - tt) / H;
                    y[j] +=
                        area * (eta * 2 / (M_PI * H) / (1 + 4 * u * u) +
                                (1 - eta) * 2 * sqrt(log(2) / M_PI) / H * exp(-4 * log(2) * u * u));
                }
            }
        }
    }
}

static double max_abs_err_vs_reference(const k_xrd_grid *g, const k_xrd_refl *r, int nr,
                                       const k_xrd_pattern *p)
{
    float *out = render(g, r, nr, p, 1);
    double *ref = malloc(sizeof(double) * (size_t)g->n_points);
    reference(g, r, p, ref);
    double m = 0, e = 0;
    for (int j = 0; j < g->n_points; j++)
        m = fmax(m, ref[j]);
    for (int j = 0; j < g->n_points; j++)
        e = fmax(e, fabs(out[j] - ref[j] / m));
    free(out);
    free(ref);
    return e;
}

/* --------------------------------------------------------- fast math */

static void test_fast_math(void **state)
{
    double e_exp2 = 0, e_exp = 0, e_log = 0, e_sin = 0, e_asin = 0, e_sqrt = 0;
    for (int i = 0; i <= 200000; i++) {
        float x = -30.0f + 60.0f * (float)i / 200000.0f;
        e_exp2 = fmax(e_exp2, fabs(k_xrd_exp2(x) / exp2((double)x) - 1));
        if (fabsf(x) <= 20.0f) e_exp = fmax(e_exp, fabs(k_xrd_exp(x) / exp((double)x) - 1));
        float u = (float)i / 200000.0f;
        float s, c;
        k_xrd_sincos_turn(u, &s, &c);
        e_sin = fmax(e_sin, fmax(fabs(s - sin(2 * M_PI * u)), fabs(c - cos(2 * M_PI * u))));
        e_asin = fmax(e_asin, fabs(k_xrd_asin(u) - asin((double)u)) / fmax(asin((double)u), 1e-3));
        float v = 1e-6f + 1e3f * u;
        e_log = fmax(e_log, fabs(k_xrd_log(v) - log((double)v)) / fmax(fabs(log((double)v)), 1));
        e_sqrt = fmax(e_sqrt, fabs(k_xrd_sqrt(v) / sqrt((double)v) - 1));
    }
    /* Bounds: a few float ulps (float eps = 6e-8), 1e-6 for exp as the
     * renderer documents. */
    assert_true(e_exp2 < 3e-7);
    assert_true(e_exp < 1e-6);
    assert_true(e_log < 3e-7);
    assert_true(e_sin < 3e-7);
    assert_true(e_asin < 5e-7);
    assert_true(e_sqrt < 3e-7);
    assert_true(k_xrd_exp2(-200.0f) == 0.0f);
    assert_true(k_xrd_exp2(-125.0f) > 0.0f);
}

/* The CPU renderer's 64-bit-lane Philox gives pid_rng_block's words (whose
 * own test checks them against the Random123 known answers). */
/* Edge draws of the noise path: a uniform of exactly 1 (word 0xffffffff)
 * gives radius 0, not an overflow (UBSan build) or NaN; tiny uniforms give
 * the largest finite radius, sqrt(-2 ln 2^-24) = 5.77. */
static void test_box_muller_edges(void **state)
{
    float n0, n1;
    k_xrd_box_muller(0xffffffffu, 0x12345678u, &n0, &n1);
    assert_true(n0 == 0.0f && n1 == 0.0f);
    k_xrd_box_muller(0u, 0u, &n0, &n1);
    assert_true(isfinite(n0) && isfinite(n1));
    assert_true(fabsf(sqrtf(n0 * n0 + n1 * n1) - 5.7686f) < 1e-3f);
    assert_true(k_xrd_sqrt(-0.0f) == 0.0f);
    assert_true(fabsf(k_xrd_sqrt(2.0f) - 1.41421356f) < 1e-6f);
}

static void test_philox_words(void **state)
{
    const int nb = 1000;
    uint32_t *w = malloc(sizeof(uint32_t) * 4 * nb);
    const uint64_t seeds[] = {0, 42, 0xffffffffffffffffull, 0x0123456789abcdefull};
    for (int s = 0; s < 4; s++) {
        uint64_t stream = pid_rng_mix(seeds[s], 9), base = s == 3 ? (1ull << 40) - 17 : 0;
        k_xrd_philox_words_cpu(seeds[s], stream, base, nb, w);
        for (int b = 0; b < nb; b++) {
            pid_u32x4 r = pid_rng_block(seeds[s], stream, base + (uint64_t)b);
            for (int q = 0; q < 4; q++)
                assert_int_equal(w[q * nb + b], r.v[q]);
        }
    }
    free(w);
}

/* ------------------------------------------ (a) accuracy vs reference */

static void test_accuracy_vs_reference(void **state)
{
    k_xrd_refl *r;
    float gs[6];
    int nr = make_dense(3, &r, gs);
    assert_true(nr > 200);
    k_xrd_grid g = grid_tt(10.0f, 80.0f, 0.01f);
    const float sizes[] = {0, 5, 20, 100}, etas[] = {0, 0.5f, 1};
    double worst = 0;
    for (int si = 0; si < 4; si++)
        for (int ei = 0; ei < 3; ei++) {
            k_xrd_pattern p = clean_pattern(nr, gs);
            p.n_lines = 2;
            p.wavelength_a[1] = CU_KA2;
            p.line_weight[1] = 0.5f;
            p.cag_u_deg2 = 0.01f;
            p.cag_v_deg2 = -0.005f;
            p.cag_w_deg2 = 0.005f;
            p.eta0 = etas[ei];
            p.phase[0].size_nm = sizes[si];
            p.phase[0].microstrain = 0.001f;
            p.phase[0].md_r = 0.7f;
            p.phase[0].md_axis = 1;
            p.zero_shift_deg = 0.1f;
            p.displacement = 0.001f;
            worst = fmax(worst, max_abs_err_vs_reference(&g, r, nr, &p));
        }
    free(r);
    /* A sparse cubic pattern with very narrow peaks and one with a
     * two-phase mixture. */
    k_xrd_refl *rc;
    int nc = make_cubic(5.43, 0.9, &rc);
    float gc[6];
    cubic_gstar(5.43f, gc);
    k_xrd_pattern p = clean_pattern(nc, gc);
    p.cag_u_deg2 = 0.0f;
    p.cag_v_deg2 = 0.0f;
    p.cag_w_deg2 = 0.0004f;
    worst = fmax(worst, max_abs_err_vs_reference(&g, rc, nc, &p));
    p.n_phases = 2;
    p.phase[1] = p.phase[0];
    cubic_gstar(4.05f, p.phase[1].gstar);
    p.phase[1].scale = 0.7f;
    p.phase[1].size_nm = 15.0f;
    worst = fmax(worst, max_abs_err_vs_reference(&g, rc, nc, &p));
    free(rc);
    printf("  max |CPU - reference| = %.2e of the maximum (bound 2e-3)\n", worst);
    assert_true(worst < 2e-3);
}

/* ------------------------------------------------ (b) single reflection */

/* Peak position by a parabola through the three highest samples. */
static double peak_position(const float *y, const k_xrd_grid *g, int j0, int j1)
{
    int jm = j0;
    for (int j = j0; j <= j1; j++)
        if (y[j] > y[jm]) jm = j;
    double a = y[jm - 1], b = y[jm], c = y[jm + 1];
    double off = 0.5 * (a - c) / (a - 2 * b + c);
    return g->x0 + (double)g->step * (jm + off);
}

/* FWHM by linear interpolation of the half-maximum crossings. */
static double peak_fwhm(const float *y, const k_xrd_grid *g, int j0, int j1)
{
    int jm = j0;
    for (int j = j0; j <= j1; j++)
        if (y[j] > y[jm]) jm = j;
    double half = 0.5 * y[jm];
    int a = jm, b = jm;
    while (a > j0 && y[a] > half)
        a--;
    while (b < j1 && y[b] > half)
        b++;
    double xa = a + (half - y[a]) / (y[a + 1] - y[a]);
    double xb = (b - 1) + (y[b - 1] - half) / (y[b - 1] - y[b]);
    return (xb - xa) * g->step;
}

static double area(const float *y, const k_xrd_grid *g, int j0, int j1)
{
    double s = 0;
    for (int j = j0; j <= j1; j++)
        s += y[j];
    return s * g->step;
}

static void test_single_reflection(void **state)
{
    k_xrd_refl rf;
    memset(&rf, 0, sizeof rf);
    rf.hkl[0] = rf.hkl[1] = rf.hkl[2] = 1.0f;
    rf.f2m = 100.0f;
    float gs[6];
    cubic_gstar(4.0f, gs);
    double d = 4.0 / sqrt(3.0);
    double bragg = 2 * asin(CU_KA1 / (2 * d)) * 180 / M_PI; /* 38.93 deg */
    k_xrd_grid g = grid_tt(30.0f, 50.0f, 0.002f);
    k_xrd_pattern p = clean_pattern(1, gs);
    const float zero[] = {0.0f, 0.2f, -0.35f}, disp[] = {0.0f, 0.002f, -0.001f};
    for (int i = 0; i < 3; i++) {
        p.zero_shift_deg = zero[i];
        p.displacement = disp[i];
        float *y = render(&g, &rf, 1, &p, 1);
        double expect = bragg + zero[i] - 2 * disp[i] * cos(bragg / 2 * M_PI / 180) * 180 / M_PI;
        double pos = peak_position(y, &g, 1, g.n_points - 2);
        assert_true(fabs(pos - expect) < 0.005);
        free(y);
    }
    p.zero_shift_deg = 0;
    p.displacement = 0;
    /* FWHM = Caglioti (size/strain off) within 2 %, for eta 0, 0.5, 1. */
    const float etas[] = {0.0f, 0.5f, 1.0f};
    for (int i = 0; i < 3; i++) {
        p.eta0 = etas[i];
        float *y = render(&g, &rf, 1, &p, 1);
        double t = tan(bragg / 2 * M_PI / 180);
        double cag = sqrt(p.cag_u_deg2 * t * t + p.cag_v_deg2 * t + p.cag_w_deg2);
        double fw = peak_fwhm(y, &g, 1, g.n_points - 2);
        assert_true(fabs(fw / cag - 1) < 0.02);
        free(y);
    }
    /* Area of phase B relative to phase A is linear in B's scale. */
    k_xrd_refl two[2];
    two[0] = rf;
    two[1] = rf;
    two[1].hkl[0] = 2.0f;
    two[1].hkl[1] = 0.0f;
    two[1].hkl[2] = 0.0f; /* (200) of the same cell: 45.3 deg */
    p.n_phases = 2;
    p.phase[0].refl_count = 1;
    p.phase[1] = p.phase[0];
    p.phase[1].refl_offset = 1;
    const float scales[] = {0.5f, 1.0f, 2.0f, 4.0f};
    double ratio0 = 0;
    for (int i = 0; i < 4; i++) {
        p.phase[1].scale = scales[i];
        float *y = render(&g, two, 2, &p, 1);
        int mid = (int)((42.0 - g.x0) / g.step);
        double ra = area(y, &g, 0, mid) / area(y, &g, mid + 1, g.n_points - 1);
        double ratio = 1.0 / ra; /* B / A */
        if (i == 0) ratio0 = ratio / scales[0];
        assert_true(fabs(ratio / scales[i] / ratio0 - 1) < 1e-3);
        free(y);
    }
}

/* --------------------------------------------------------- (c) K-alpha2 */

static void test_kalpha2(void **state)
{
    /* A high-angle reflection, narrow peaks: the doublet is resolved. */
    k_xrd_refl rf;
    memset(&rf, 0, sizeof rf);
    rf.hkl[0] = 4.0f;
    rf.hkl[1] = 2.0f;
    rf.hkl[2] = 2.0f;
    rf.f2m = 100.0f;
    float gs[6];
    cubic_gstar(5.0f, gs);
    double d = 5.0 / sqrt(24.0);
    double t1 = 2 * asin(CU_KA1 / (2 * d)) * 180 / M_PI,
           t2 = 2 * asin(CU_KA2 / (2 * d)) * 180 / M_PI;
    k_xrd_grid g = grid_tt(90.0f, 110.0f, 0.002f);
    k_xrd_pattern p = clean_pattern(1, gs);
    p.cag_u_deg2 = 0.0f;
    p.cag_v_deg2 = 0.0f;
    p.cag_w_deg2 = 0.0009f; /* 0.03 deg: the doublet (0.37 deg apart) is resolved */
    p.lp_mode = K_XRD_LP_NONE;
    p.n_lines = 2;
    p.wavelength_a[1] = CU_KA2;
    p.line_weight[1] = 0.5f;
    float *y = render(&g, &rf, 1, &p, 1);
    int mid = (int)((0.5 * (t1 + t2) - g.x0) / g.step);
    double p1 = peak_position(y, &g, 1, mid), p2 = peak_position(y, &g, mid, g.n_points - 2);
    assert_true(fabs(p1 - t1) < 0.005);
    assert_true(fabs(p2 - t2) < 0.005);
    assert_true(fabs((p2 - p1) - (t2 - t1)) < 0.005);
    float h1 = 0, h2 = 0;
    for (int j = 0; j <= mid; j++)
        h1 = fmaxf(h1, y[j]);
    for (int j = mid; j < g.n_points; j++)
        h2 = fmaxf(h2, y[j]);
    /* Same width to 0.1 %, so heights go as the line weights (within the
     * other line's tail, < 1 %). */
    assert_true(fabs(h2 / h1 - 0.5) < 0.01);
    free(y);
}

/* ------------------------------------------------------ (d) March-Dollase */

static void test_march_dollase(void **state)
{
    k_xrd_refl rf[2];
    memset(rf, 0, sizeof rf);
    rf[0].hkl[2] = 1.0f; /* (001): parallel to axis 0 */
    rf[1].hkl[0] = 1.0f; /* (100): perpendicular */
    rf[0].f2m = rf[1].f2m = 100.0f;
    for (int ax = 0; ax < PID_TEX_AXES; ax++) {
        rf[0].tex_cos2[ax][0] = 1.0f;
        rf[0].tex_w[ax][0] = 1.0f;
        rf[1].tex_cos2[ax][0] = 0.0f;
        rf[1].tex_w[ax][0] = 0.7f; /* weights need not sum to 1: r = 1 ignores them */
        rf[1].tex_cos2[ax][1] = 0.3f;
        rf[1].tex_w[ax][1] = 0.2f;
    }
    float gs[6];
    memset(gs, 0, sizeof gs);
    gs[0] = 1.0f / 16.0f;
    gs[1] = 1.0f / 16.0f;
    gs[2] = 1.0f / 25.0f;
    k_xrd_grid g = grid_tt(15.0f, 30.0f, 0.005f);
    k_xrd_pattern p = clean_pattern(2, gs);
    p.lp_mode = K_XRD_LP_NONE;
    float *ref = render(&g, rf, 2, &p, 1);
    /* r = 1 leaves intensities unchanged whatever the axis. */
    for (int ax = 0; ax < PID_TEX_AXES; ax++) {
        p.phase[0].md_axis = ax;
        float *y = render(&g, rf, 2, &p, 1);
        assert_memory_equal(y, ref, sizeof(float) * (size_t)g.n_points);
        free(y);
    }
    /* r = 0.8 (plates): (001) gets r^-3, (100) r^1.5 with weight 0.7 plus
     * the 0.3 entry; the area ratio changes by the ratio of the factors. */
    rf[1].tex_w[0][0] = 1.0f;
    rf[1].tex_w[0][1] = 0.0f;
    p.phase[0].md_axis = 0;
    float *y0 = render(&g, rf, 2, &p, 1);
    p.phase[0].md_r = 0.8f;
    float *y1 = render(&g, rf, 2, &p, 1);
    int mid = (int)((0.5 * (17.7 + 22.2) - g.x0) / g.step); /* (001) 17.7, (100) 22.2 deg */
    double r0 = area(y0, &g, 0, mid) / area(y0, &g, mid + 1, g.n_points - 1);
    double r1 = area(y1, &g, 0, mid) / area(y1, &g, mid + 1, g.n_points - 1);
    double expect = pow(0.8, -3.0) / pow(0.8, 1.5);
    assert_true(fabs((r1 / r0) / expect - 1) < 0.01);
    free(y0);
    free(y1);
    free(ref);
}

/* ------------------------------------------------------------ (e) noise */

static k_xrd_pattern flat_pattern(float sigma, float counts, uint64_t seed, uint64_t stream)
{
    float gs[6];
    cubic_gstar(4.0f, gs);
    k_xrd_pattern p = clean_pattern(0, gs);
    p.n_cheb = 1;
    p.cheb[0] = 1.0f; /* flat signal: noiseless level = S = 1 */
    p.noise_sigma = sigma;
    p.poisson_counts = counts;
    p.noise_seed = seed;
    p.noise_stream = stream;
    return p;
}

/* Relative standard deviation and excess kurtosis of a flat noisy row. */
static void flat_stats(const float *y, int n, double *rel_sd, double *kurt)
{
    double m = 0, v = 0, k4 = 0;
    for (int j = 0; j < n; j++)
        m += y[j];
    m /= n;
    for (int j = 0; j < n; j++) {
        double d = y[j] / m - 1;
        v += d * d;
        k4 += d * d * d * d;
    }
    v /= n;
    *rel_sd = sqrt(v);
    *kurt = k4 / n / (v * v) - 3;
}

static void test_noise(void **state)
{
    k_xrd_grid g = grid_tt(10.0f, 110.0f, 0.001f); /* 100001 points */
    k_xrd_refl dummy;
    memset(&dummy, 0, sizeof dummy);
    double sd, ku;
    /* Gaussian sigma = 1 % of the maximum. With N = 1e5 the relative error
     * of a sample sd is ~0.2 %: 5 % is a wide bound. */
    k_xrd_pattern p = flat_pattern(0.01f, 0.0f, 11, 0);
    float *y = render(&g, &dummy, 0, &p, 1);
    flat_stats(y, g.n_points, &sd, &ku);
    assert_true(fabs(sd / 0.01 - 1) < 0.05);
    assert_true(fabs(ku) < 0.1); /* normal: excess kurtosis 0 (sd of estimate 0.015) */
    /* Poisson with 1e4 counts at the max: sd = 1 / sqrt(1e4) = 1 %. */
    k_xrd_pattern q = flat_pattern(0.0f, 1e4f, 11, 0);
    float *z = render(&g, &dummy, 0, &q, 1);
    flat_stats(z, g.n_points, &sd, &ku);
    assert_true(fabs(sd / 0.01 - 1) < 0.05);
    /* Both: variance adds. */
    k_xrd_pattern b = flat_pattern(0.01f, 1e4f, 11, 0);
    float *w = render(&g, &dummy, 0, &b, 1);
    flat_stats(w, g.n_points, &sd, &ku);
    assert_true(fabs(sd / sqrt(2e-4) - 1) < 0.05);
    /* Exact Poisson below 20 counts: 5 counts, sd/mean = 1/sqrt(5), values
     * on a lattice of 1/5 of the mean. */
    k_xrd_pattern e = flat_pattern(0.0f, 5.0f, 11, 0);
    float *x = render(&g, &dummy, 0, &e, 1);
    flat_stats(x, g.n_points, &sd, &ku);
    assert_true(fabs(sd / sqrt(0.2) - 1) < 0.05);
    double mean = 0;
    for (int j = 0; j < g.n_points; j++)
        mean += x[j];
    mean /= g.n_points;
    int off_lattice = 0;
    for (int j = 0; j < g.n_points; j++) {
        double c = x[j] / mean * 5.0; /* counts, up to the mean's sampling error */
        off_lattice += fabs(c - floor(c + 0.5)) > 0.05;
    }
    assert_true(off_lattice < g.n_points / 100);
    /* Same seed -> identical; another seed or stream -> different. */
    float *y2 = render(&g, &dummy, 0, &p, 1);
    assert_memory_equal(y, y2, sizeof(float) * (size_t)g.n_points);
    k_xrd_pattern p2 = flat_pattern(0.01f, 0.0f, 12, 0), p3 = flat_pattern(0.01f, 0.0f, 11, 1);
    float *y3 = render(&g, &dummy, 0, &p2, 1), *y4 = render(&g, &dummy, 0, &p3, 1);
    int same3 = 0, same4 = 0;
    for (int j = 0; j < g.n_points; j++) {
        same3 += y[j] == y3[j];
        same4 += y[j] == y4[j];
    }
    assert_true(same3 < g.n_points / 100);
    assert_true(same4 < g.n_points / 100);
    /* A batch renders each pattern as if alone. */
    k_xrd_pattern batch[3] = {p2, p, p3};
    float *yb = render(&g, &dummy, 0, batch, 3);
    assert_memory_equal(yb + g.n_points, y, sizeof(float) * (size_t)g.n_points);
    assert_memory_equal(yb, y3, sizeof(float) * (size_t)g.n_points);
    free(y);
    free(z);
    free(w);
    free(x);
    free(y2);
    free(y3);
    free(y4);
    free(yb);
}

/* Every row has maximum exactly 1 with all augmentations on. */
static void test_full_augmentation_max_one(void **state)
{
    k_xrd_refl *r;
    float gs[6];
    int nr = make_dense(5, &r, gs);
    k_xrd_grid g = grid_tt(10.0f, 80.0f, 0.01f);
    k_xrd_pattern p[4];
    for (int i = 0; i < 4; i++) {
        p[i] = clean_pattern(nr, gs);
        p[i].n_lines = 2;
        p[i].wavelength_a[1] = CU_KA2;
        p[i].line_weight[1] = 0.5f;
        p[i].phase[0].size_nm = 10.0f + 20.0f * i;
        p[i].phase[0].microstrain = 0.001f;
        p[i].phase[0].md_r = 1.3f;
        p[i].phase[0].md_axis = i;
        p[i].n_cheb = 3;
        p[i].cheb[0] = 0.05f;
        p[i].cheb[1] = 0.02f;
        p[i].cheb[2] = -0.01f;
        p[i].hump_height = 0.04f;
        p[i].hump_center_x = 25.0f;
        p[i].hump_fwhm_x = 8.0f;
        p[i].air_height = 0.03f;
        p[i].n_impurities = 2;
        p[i].impurity[0] = (k_xrd_impurity){33.3f, 0.05f, 0.1f};
        p[i].impurity[1] = (k_xrd_impurity){61.0f, 0.08f, 0.2f};
        p[i].noise_sigma = 0.01f;
        p[i].poisson_counts = i % 2 ? 1e3f : 0.0f;
        p[i].noise_seed = 99;
        p[i].noise_stream = (uint64_t)i;
    }
    p[3].lp_mode = K_XRD_LP_SYNCHROTRON;
    p[2].lp_mono_two_theta_deg = 26.6f;
    float *y = render(&g, r, nr, p, 4);
    for (int i = 0; i < 4; i++) {
        float m = -1;
        for (int j = 0; j < g.n_points; j++) {
            assert_true(isfinite(y[(size_t)i * g.n_points + j]));
            m = fmaxf(m, y[(size_t)i * g.n_points + j]);
        }
        assert_true(m == 1.0f);
    }
    free(y);
    free(r);
}

/* Q axis: a peak at Q = 4 pi sin(theta) / lambda. */
static void test_q_axis(void **state)
{
    k_xrd_refl rf;
    memset(&rf, 0, sizeof rf);
    rf.hkl[0] = rf.hkl[1] = rf.hkl[2] = 1.0f;
    rf.f2m = 100.0f;
    float gs[6];
    cubic_gstar(4.0f, gs);
    k_xrd_grid g;
    g.axis = K_XRD_AXIS_Q;
    g.x0 = 2.0f;
    g.step = 0.0005f;
    g.n_points = 2001;
    k_xrd_pattern p = clean_pattern(1, gs);
    float *y = render(&g, &rf, 1, &p, 1);
    double q = 2 * M_PI * sqrt(3.0) / 4.0; /* 2 pi / d = 2.7207 */
    assert_true(fabs(peak_position(y, &g, 1, g.n_points - 2) - q) < 1e-3);
    free(y);
}

/* ----------------------------------------------------- (f) CUDA parity */

static void random_patterns(k_xrd_pattern *p, int n, int nr, const float gs[6], uint64_t seed,
                            int noise)
{
    pid_rng g;
    pid_rng_init(&g, seed, 77);
    for (int i = 0; i < n; i++) {
        p[i] = clean_pattern(nr, gs);
        p[i].n_phases = 1 + (int)pid_rng_below(&g, 2);
        for (int c = 0; c < p[i].n_phases; c++) {
            k_xrd_phase *ph = &p[i].phase[c];
            *ph = p[i].phase[0];
            for (int k = 0; k < 3; k++)
                ph->gstar[k] = gs[k] * (float)pid_rng_range(&g, 0.94, 1.06);
            ph->scale = (float)pid_rng_range(&g, 0.2, 1.0);
            ph->md_r = (float)pid_rng_range(&g, 0.5, 1.5);
            ph->md_axis = (int)pid_rng_below(&g, PID_TEX_AXES);
            ph->size_nm = pid_rng_uniform(&g) < 0.2 ? 0.0f : (float)pid_rng_range(&g, 5, 100);
            ph->microstrain = (float)pid_rng_range(&g, 0, 0.003);
        }
        p[i].n_lines = 2;
        p[i].wavelength_a[1] = CU_KA2;
        p[i].line_weight[1] = 0.5f;
        p[i].cag_u_deg2 = (float)pid_rng_range(&g, 0, 0.02);
        p[i].cag_v_deg2 = (float)pid_rng_range(&g, -0.01, 0);
        p[i].cag_w_deg2 = (float)pid_rng_range(&g, 0.001, 0.01);
        p[i].eta0 = (float)pid_rng_range(&g, 0.2, 0.8);
        p[i].zero_shift_deg = (float)pid_rng_range(&g, -0.3, 0.3);
        p[i].displacement = (float)pid_rng_range(&g, -0.002, 0.002);
        p[i].n_cheb = 3;
        p[i].cheb[0] = (float)pid_rng_range(&g, 0.02, 0.1);
        p[i].cheb[1] = p[i].cheb[0] * (float)pid_rng_range(&g, -0.4, 0.4);
        p[i].cheb[2] = p[i].cheb[0] * (float)pid_rng_range(&g, -0.4, 0.4);
        p[i].hump_height = (float)pid_rng_range(&g, 0, 0.05);
        p[i].hump_center_x = (float)pid_rng_range(&g, 15, 35);
        p[i].hump_fwhm_x = (float)pid_rng_range(&g, 5, 15);
        p[i].air_height = (float)pid_rng_range(&g, 0, 0.05);
        p[i].n_impurities = (int)pid_rng_below(&g, 3);
        for (int k = 0; k < p[i].n_impurities; k++)
            p[i].impurity[k] =
                (k_xrd_impurity){(float)pid_rng_range(&g, 12, 78), (float)pid_rng_range(&g, 0, 0.1),
                                 (float)pid_rng_range(&g, 0.05, 0.5)};
        if (noise) {
            p[i].noise_sigma = (float)pid_rng_range(&g, 0.005, 0.015);
            p[i].poisson_counts = (float)pow(10, pid_rng_range(&g, 3, 5));
        }
        p[i].noise_seed = seed;
        p[i].noise_stream = (uint64_t)i;
    }
}

static void test_cuda_parity(void **state)
{
    if (pid_backend_cuda_device_count() <= 0) {
        printf("  CUDA parity: skipped, no CUDA device visible (build has CUDA: %s)\n",
               pid_backend_cuda_built() ? "yes" : "no");
        skip();
    }
    pid_error err;
    pid_backend *be = NULL;
    assert_int_equal(pid_backend_create(&be, "cuda", 0, &err), PID_OK);
    k_xrd_refl *r;
    float gs[6];
    int nr = make_dense(9, &r, gs);
    k_xrd_grid g = grid_tt(10.0f, 80.0f, 0.01f);
    const int n = 64;
    const size_t np = (size_t)g.n_points * n;
    k_xrd_pattern *p = calloc(n, sizeof *p);
    float *cpu = malloc(sizeof(float) * np), *gpu = malloc(sizeof(float) * np);
    void *d_refl = NULL, *d_out = NULL;
    assert_int_equal(pid_backend_alloc(be, &d_refl, sizeof(k_xrd_refl) * (size_t)nr, &err), 0);
    assert_int_equal(pid_backend_alloc(be, &d_out, sizeof(float) * np, &err), 0);
    assert_int_equal(pid_backend_upload(be, d_refl, r, sizeof(k_xrd_refl) * (size_t)nr, &err), 0);
    for (int noise = 0; noise < 2; noise++) {
        random_patterns(p, n, nr, gs, 1234 + (uint64_t)noise, noise);
        assert_int_equal(k_xrd_render_cpu(NULL, &g, r, nr, p, n, cpu, &err), PID_OK);
        assert_int_equal(k_xrd_render(be, &g, d_refl, nr, p, n, d_out, &err), PID_OK);
        assert_int_equal(pid_backend_download(be, gpu, d_out, sizeof(float) * np, &err), 0);
        /* Rows are normalized to max 1, so absolute = relative to the max.
         * Noise off: < 1e-4. Noise on: the same draws, < 1e-4, except that a
         * point whose count sits within float rounding of an exact-Poisson
         * step may land one count apart (< 1 in 1e4 points). */
        double e = 0;
        size_t bad = 0;
        for (size_t i = 0; i < np; i++) {
            double d = fabs((double)cpu[i] - gpu[i]);
            if (d >= 1e-4) bad++;
            e = fmax(e, d);
        }
        printf("  CUDA parity (noise %s): max |CPU - GPU| = %.2e, points over 1e-4: %zu\n",
               noise ? "on" : "off", e, bad);
        if (!noise)
            assert_true(e < 1e-4);
        else
            assert_true(bad <= np / 10000);
    }
    pid_backend_free(be, d_refl);
    pid_backend_free(be, d_out);
    pid_backend_destroy(be);
    free(p);
    free(cpu);
    free(gpu);
    free(r);
}

/* ------------------------------------------------------- (g) validation */

static void expect_invalid(const k_xrd_grid *g, const k_xrd_refl *r, int nr, const k_xrd_pattern *p,
                           const char *needle)
{
    pid_error err;
    pid_error_clear(&err);
    float out[64];
    pid_status st = k_xrd_render_cpu(NULL, g, r, nr, p, 1, out, &err);
    if (st != PID_ERR_ARG || !strstr(err.msg, needle))
        fprintf(stderr, "expected error with '%s', got %d '%s'\n", needle, (int)st, err.msg);
    assert_int_equal(st, PID_ERR_ARG);
    assert_non_null(strstr(err.msg, needle));
}

static void test_validation(void **state)
{
    k_xrd_refl rf;
    memset(&rf, 0, sizeof rf);
    rf.hkl[0] = 1.0f;
    rf.f2m = 1.0f;
    float gs[6];
    cubic_gstar(4.0f, gs);
    k_xrd_grid g = grid_tt(10.0f, 20.0f, 0.5f);
    k_xrd_pattern ok = clean_pattern(1, gs), p;
    float out[64];
    pid_error err;
    assert_int_equal(k_xrd_render_cpu(NULL, &g, &rf, 1, &ok, 1, out, &err), PID_OK);

    p = ok;
    p.phase[0].md_r = NAN;
    expect_invalid(&g, &rf, 1, &p, "March-Dollase");
    p = ok;
    p.phase[0].md_r = -1.0f;
    expect_invalid(&g, &rf, 1, &p, "March-Dollase");
    p = ok;
    p.phase[0].scale = -2.0f;
    expect_invalid(&g, &rf, 1, &p, "scale");
    p = ok;
    p.phase[0].gstar[1] = NAN;
    expect_invalid(&g, &rf, 1, &p, "G*");
    p = ok;
    p.phase[0].refl_count = 2;
    expect_invalid(&g, &rf, 1, &p, "outside the table");
    p = ok;
    p.phase[0].size_nm = 0.1f;
    expect_invalid(&g, &rf, 1, &p, "crystallite size");
    p = ok;
    p.phase[0].md_axis = 4;
    expect_invalid(&g, &rf, 1, &p, "texture axis");
    p = ok;
    p.wavelength_a[0] = 0.0f;
    expect_invalid(&g, &rf, 1, &p, "wavelength");
    p = ok;
    p.n_lines = 0;
    expect_invalid(&g, &rf, 1, &p, "source lines");
    p = ok;
    p.cag_w_deg2 = INFINITY;
    expect_invalid(&g, &rf, 1, &p, "Caglioti");
    p = ok;
    p.eta0 = 1.5f;
    expect_invalid(&g, &rf, 1, &p, "eta0");
    p = ok;
    p.noise_sigma = NAN;
    expect_invalid(&g, &rf, 1, &p, "noise sigma");
    p = ok;
    p.poisson_counts = -5.0f;
    expect_invalid(&g, &rf, 1, &p, "Poisson");
    p = ok;
    p.n_cheb = 2;
    p.cheb[0] = 0.01f;
    p.cheb[1] = 0.05f;
    expect_invalid(&g, &rf, 1, &p, "negative");
    p = ok;
    p.n_impurities = 1;
    p.impurity[0] = (k_xrd_impurity){15.0f, 0.1f, 0.0f};
    expect_invalid(&g, &rf, 1, &p, "impurity");
    p = ok;
    p.lp_mode = 7;
    expect_invalid(&g, &rf, 1, &p, "Lorentz");
    k_xrd_grid bad = g;
    bad.step = -0.01f;
    expect_invalid(&bad, &rf, 1, &ok, "step");
    bad = g;
    bad.x0 = 170.0f;
    bad.n_points = 2001;
    expect_invalid(&bad, &rf, 1, &ok, "180");
    bad = g;
    bad.n_points = 1;
    expect_invalid(&bad, &rf, 1, &ok, "points");
    k_xrd_refl badr = rf;
    badr.f2m = NAN;
    expect_invalid(&g, &badr, 1, &ok, "reflection 0");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fast_math),
        cmocka_unit_test(test_box_muller_edges),
        cmocka_unit_test(test_philox_words),
        cmocka_unit_test(test_accuracy_vs_reference),
        cmocka_unit_test(test_single_reflection),
        cmocka_unit_test(test_kalpha2),
        cmocka_unit_test(test_march_dollase),
        cmocka_unit_test(test_noise),
        cmocka_unit_test(test_full_augmentation_max_one),
        cmocka_unit_test(test_q_axis),
        cmocka_unit_test(test_cuda_parity),
        cmocka_unit_test(test_validation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
