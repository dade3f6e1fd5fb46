/* Unit tests for synth/augment.*: validation of every setting, symmetry-
 * keeping strain per crystal system, the reciprocal metric against an
 * independent construction, mixture labels and Hill-Howard scales, ranges
 * of the drawn parameters, and reproducibility of the draw. */
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
#include "synth/augment.h"

static void expect_invalid(const pid_augment *a, const char *needle)
{
    pid_error err;
    pid_error_clear(&err);
    pid_status st = pid_augment_validate(a, &err);
    if (st != PID_ERR_ARG || !strstr(err.msg, needle))
        fprintf(stderr, "expected '%s', got %d '%s'\n", needle, (int)st, err.msg);
    assert_int_equal(st, PID_ERR_ARG);
    assert_non_null(strstr(err.msg, needle));
}

static void test_validation(void **state)
{
    pid_augment a, b;
    pid_error err;
    pid_augment_default(&a);
    assert_int_equal(pid_augment_validate(&a, &err), PID_OK);
    b = a;
    b.strain_max = NAN;
    expect_invalid(&b, "strain_max");
    b = a;
    b.size_nm.lo = 100;
    b.size_nm.hi = 5;
    expect_invalid(&b, "inverted");
    b = a;
    b.size_nm.lo = 0.1;
    expect_invalid(&b, "0.5 nm");
    b = a;
    b.texture_r.lo = 0.0;
    expect_invalid(&b, "texture_r");
    b = a;
    b.noise_sigma.hi = INFINITY;
    expect_invalid(&b, "not finite");
    b = a;
    b.eta.hi = 1.5;
    expect_invalid(&b, "eta");
    b = a;
    b.poisson_counts.lo = 0.0;
    expect_invalid(&b, "poisson_counts");
    b = a;
    b.bg_order_max = 5;
    expect_invalid(&b, "background order");
    b = a;
    b.mixtures_max = 9;
    expect_invalid(&b, "mixtures");
    b = a;
    b.mixtures_max = 8;
    b.min_fraction = 0.2;
    expect_invalid(&b, "min_fraction");
    b = a;
    b.impurities_max = 7;
    expect_invalid(&b, "impurities_max");
    b = a;
    b.cag_u.lo = b.cag_u.hi = 0.0;
    b.cag_w.lo = b.cag_w.hi = 0.0;
    expect_invalid(&b, "no peak width");
}

/* Reciprocal metric: G* must invert the direct metric G built here. */
static void test_gstar(void **state)
{
    const double cell[6] = {5.1, 6.3, 7.7, 81.0, 97.0, 112.0};
    float gs[6];
    pid_augment_gstar(cell, gs);
    const double d = M_PI / 180;
    double a = cell[0], b = cell[1], c = cell[2];
    double G[3][3] = {{a * a, a * b * cos(cell[5] * d), a * c * cos(cell[4] * d)},
                      {a * b * cos(cell[5] * d), b * b, b * c * cos(cell[3] * d)},
                      {a * c * cos(cell[4] * d), b * c * cos(cell[3] * d), c * c}};
    double S[3][3] = {{gs[0], gs[3], gs[4]}, {gs[3], gs[1], gs[5]}, {gs[4], gs[5], gs[2]}};
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) {
            double e = 0;
            for (int k = 0; k < 3; k++)
                e += G[i][k] * S[k][j];
            assert_true(fabs(e - (i == j)) < 1e-5);
        }
    /* Cubic: 1/d^2 = (h^2 + k^2 + l^2) / a^2. */
    const double cub[6] = {4.0, 4.0, 4.0, 90, 90, 90};
    pid_augment_gstar(cub, gs);
    assert_true(fabs(gs[0] - 1.0 / 16) < 1e-7 && fabs(gs[3]) < 1e-7 && fabs(gs[5]) < 1e-7);
}

static int close_rel(double x, double y)
{
    return fabs(x - y) <= 1e-9 * fmax(fabs(x), fabs(y));
}

static void test_strain_symmetry(void **state)
{
    pid_rng r;
    pid_rng_init(&r, 5, 1);
    const double cubic[6] = {5.43, 5.43, 5.43, 90, 90, 90};
    const double tetra[6] = {3.78, 3.78, 9.51, 90, 90, 90};
    const double hexa[6] = {2.95, 2.95, 4.68, 90, 90, 120};
    const double rhombo[6] = {5.49, 5.49, 5.49, 55.3, 55.3, 55.3};
    const double ortho[6] = {4.9, 5.6, 7.2, 90, 90, 90};
    const double mono[6] = {4.7, 3.4, 5.1, 90, 99.5, 90};
    const double tric[6] = {5.1, 6.3, 7.7, 81, 97, 112};
    double o[6];
    for (int t = 0; t < 200; t++) {
        pid_augment_strain_cell(cubic, 0.03, &r, o);
        assert_true(close_rel(o[0], o[1]) && close_rel(o[0], o[2]));
        assert_true(o[3] == 90 && o[4] == 90 && o[5] == 90);
        assert_true(fabs(o[0] / 5.43 - 1) <= 0.03 + 1e-12);
        pid_augment_strain_cell(tetra, 0.03, &r, o);
        assert_true(close_rel(o[0], o[1]) && o[3] == 90 && o[5] == 90);
        pid_augment_strain_cell(hexa, 0.03, &r, o);
        assert_true(close_rel(o[0], o[1]) && o[5] == 120 && o[3] == 90);
        pid_augment_strain_cell(rhombo, 0.03, &r, o);
        assert_true(close_rel(o[0], o[1]) && close_rel(o[1], o[2]));
        assert_true(close_rel(o[3], o[4]) && close_rel(o[4], o[5]));
        pid_augment_strain_cell(ortho, 0.03, &r, o);
        assert_true(o[3] == 90 && o[4] == 90 && o[5] == 90);
        pid_augment_strain_cell(mono, 0.03, &r, o);
        assert_true(o[3] == 90 && o[5] == 90);
        assert_true(fabs((o[4] - 90) / 9.5 - 1) <= 0.03 + 1e-12);
        pid_augment_strain_cell(tric, 0.03, &r, o);
        for (int i = 0; i < 3; i++)
            assert_true(fabs(o[i] / tric[i] - 1) <= 0.03 + 1e-12);
    }
    /* Free lengths do move independently (orthorhombic). */
    pid_augment_strain_cell(ortho, 0.03, &r, o);
    assert_false(close_rel(o[0] / ortho[0], o[1] / ortho[1]));
}

static void ctx_of(pid_aug_phase *ph, int n, pid_aug_ctx *ctx)
{
    for (int i = 0; i < n; i++) {
        memset(&ph[i], 0, sizeof ph[i]);
        ph[i].refl_offset = 10 * i;
        ph[i].refl_count = 10;
        double c[6] = {4.0 + i * 0.1, 4.0 + i * 0.1, 4.0 + i * 0.1, 90, 90, 90};
        memcpy(ph[i].cell, c, sizeof c);
        ph[i].cell_mass_amu = 100.0 * (i + 1);
        ph[i].volume_a3 = 64.0 + i;
    }
    memset(ctx, 0, sizeof *ctx);
    ctx->phases = ph;
    ctx->n_phases = n;
    ctx->grid.axis = K_XRD_AXIS_TWO_THETA;
    ctx->grid.x0 = 10.0f;
    ctx->grid.step = 0.01f;
    ctx->grid.n_points = 7001;
    pid_xrd_source_parse("CuKa", &ctx->source, NULL);
    ctx->lp.mode = PID_LP_LAB;
    ctx->lp.polarization = 0.95;
}

static void test_draw(void **state)
{
    pid_aug_phase ph[6];
    pid_aug_ctx ctx;
    ctx_of(ph, 6, &ctx);
    pid_augment a;
    pid_augment_default(&a);
    a.mixtures_max = 3;
    a.impurities_max = 2;
    pid_error err;
    int count[4] = {0};
    for (uint64_t i = 0; i < 3000; i++) {
        k_xrd_pattern p, q;
        pid_aug_label l, m;
        assert_int_equal(pid_augment_draw(&a, &ctx, 17, i, &p, &l, &err), PID_OK);
        /* Reproducible: the same (seed, index) gives the same draw. */
        assert_int_equal(pid_augment_draw(&a, &ctx, 17, i, &q, &m, &err), PID_OK);
        assert_memory_equal(&p, &q, sizeof p);
        assert_memory_equal(&l, &m, sizeof l);
        /* Labels: 1..3 distinct phases, fractions >= 0.1 summing to 1. */
        assert_true(l.n >= 1 && l.n <= 3);
        count[l.n]++;
        double sum = 0;
        for (int c = 0; c < l.n; c++) {
            sum += l.fraction[c];
            if (l.n > 1) assert_true(l.fraction[c] >= 0.1f - 1e-6f);
            for (int d = 0; d < c; d++)
                assert_true(l.phase[c] != l.phase[d]);
            /* Hill & Howard: scale * Z M V = 1e6 * w. */
            const pid_aug_phase *x = &ph[l.phase[c]];
            assert_true(
                fabs(p.phase[c].scale * x->cell_mass_amu * x->volume_a3 / (1e6 * l.fraction[c]) -
                     1) < 1e-5);
            assert_int_equal(p.phase[c].refl_offset, x->refl_offset);
            assert_true(p.phase[c].md_r >= 0.5f && p.phase[c].md_r <= 1.5f);
            assert_true(p.phase[c].size_nm >= 5.0f && p.phase[c].size_nm <= 100.0f);
            assert_true(p.phase[c].microstrain >= 0.0f && p.phase[c].microstrain <= 0.003f);
        }
        assert_true(fabs(sum - 1) < 1e-5);
        assert_int_equal(p.n_phases, l.n);
        assert_true(fabsf(p.zero_shift_deg) <= 0.3f);
        assert_true(p.noise_sigma >= 0.005f && p.noise_sigma <= 0.015f);
        assert_true(p.poisson_counts >= 1e3f * 0.999f && p.poisson_counts <= 1e5f * 1.001f);
        assert_true(p.n_impurities >= 0 && p.n_impurities <= 2);
        assert_true(p.n_lines == 2 && p.line_weight[1] == 0.5f);
        /* Caglioti stays positive: V^2 < 4 U W. */
        assert_true(p.cag_v_deg2 * p.cag_v_deg2 <= 4 * p.cag_u_deg2 * p.cag_w_deg2 + 1e-12);
        /* The renderer accepts every drawn pattern. */
        k_xrd_refl refl[60];
        memset(refl, 0, sizeof refl);
        assert_int_equal(k_xrd_render_validate(&ctx.grid, refl, 60, &p, 1, &err), PID_OK);
    }
    /* Phase counts uniform in 1..3: 1000 each, +-5 sigma. */
    for (int k = 1; k <= 3; k++)
        assert_true(abs(count[k] - 1000) < 130);
    /* Another seed gives another dataset. */
    k_xrd_pattern p1, p2;
    pid_aug_label l1;
    pid_augment_draw(&a, &ctx, 17, 5, &p1, &l1, &err);
    pid_augment_draw(&a, &ctx, 18, 5, &p2, &l1, &err);
    assert_true(memcmp(&p1, &p2, sizeof p1) != 0);
    /* Clean patterns: no noise, background, shifts or texture. */
    a.enabled = 0;
    pid_augment_draw(&a, &ctx, 17, 5, &p1, &l1, &err);
    assert_true(p1.noise_sigma == 0 && p1.poisson_counts == 0 && p1.n_cheb == 0);
    assert_true(p1.zero_shift_deg == 0 && p1.phase[0].md_r == 1.0f && p1.n_impurities == 0);
    assert_true(p1.phase[0].size_nm == 0 && p1.hump_height == 0);
}

/* Widening: f = 1 is the identity; f = 2 doubles the maxima, halves the
 * minima, squares the texture bounds, caps at the validator's bounds, and the
 * result validates; f < 1 and NaN are refused. */
static void test_widen(void **state)
{
    (void)state;
    pid_augment a, w;
    pid_error err;
    pid_augment_default(&a);
    assert_int_equal(pid_augment_widen(&a, 1.0, &w, &err), PID_OK);
    assert_memory_equal(&a, &w, sizeof a);
    assert_int_equal(pid_augment_widen(&a, 2.0, &w, &err), PID_OK);
    assert_int_equal(pid_augment_validate(&w, &err), PID_OK);
    assert_float_equal(w.strain_max, 2 * a.strain_max, 1e-12);
    assert_float_equal(w.zero_shift_max_deg, 2 * a.zero_shift_max_deg, 1e-12);
    assert_float_equal(w.size_nm.lo, a.size_nm.lo / 2, 1e-12);
    assert_float_equal(w.size_nm.hi, a.size_nm.hi, 1e-12);
    assert_float_equal(w.texture_r.lo, a.texture_r.lo * a.texture_r.lo, 1e-12);
    assert_float_equal(w.texture_r.hi, a.texture_r.hi * a.texture_r.hi, 1e-12);
    assert_float_equal(w.bg_max, 2 * a.bg_max, 1e-12);
    assert_float_equal(w.noise_sigma.lo, a.noise_sigma.lo, 1e-12);
    assert_float_equal(w.noise_sigma.hi, 2 * a.noise_sigma.hi, 1e-12);
    assert_float_equal(w.poisson_counts.lo, a.poisson_counts.lo / 2, 1e-9);
    assert_int_equal(w.mixtures_max, a.mixtures_max);
    /* caps: a huge factor stays within what validate accepts */
    assert_int_equal(pid_augment_widen(&a, 1000.0, &w, &err), PID_OK);
    assert_int_equal(pid_augment_validate(&w, &err), PID_OK);
    assert_true(w.strain_max <= 0.2 && w.size_nm.lo >= 0.5 && w.texture_r.lo >= 1e-3);
    /* refused */
    pid_augment untouched = w;
    assert_int_equal(pid_augment_widen(&a, 0.5, &w, &err), PID_ERR_ARG);
    assert_int_equal(pid_augment_widen(&a, NAN, &w, &err), PID_ERR_ARG);
    assert_memory_equal(&w, &untouched, sizeof w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_widen), cmocka_unit_test(test_validation),
        cmocka_unit_test(test_gstar), cmocka_unit_test(test_strain_symmetry),
        cmocka_unit_test(test_draw),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
