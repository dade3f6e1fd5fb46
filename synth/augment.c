/* XRD augmentation: defaults, validation, HDF5 provenance, and the
 * reproducible per-pattern draw of renderer parameters and labels
 * (synth/augment.h). */
#include "synth/augment.h"

#include <math.h>
#include <string.h>

#include "core/h5.h"
#include "core/rng.h"

/* Key for the noise streams, derived from the dataset seed so that noise
 * (stream = pattern index) and the augmentation draws (stream =
 * pid_rng_mix(seed, index)) never share Philox blocks. */
#define AUG_NOISE_SALT 0x6e6f697365ull /* "noise" */

static pid_range rng_of(double lo, double hi)
{
    pid_range r = {lo, hi};
    return r;
}

void pid_augment_default(pid_augment *a)
{
    memset(a, 0, sizeof *a);
    a->enabled = 1;
    a->strain_max = 0.03;
    a->zero_shift_max_deg = 0.3;
    a->displacement_max = 0.002;
    a->size_nm = rng_of(5.0, 100.0);
    a->microstrain = rng_of(0.0, 0.003);
    a->texture_r = rng_of(0.5, 1.5);
    a->cag_u = rng_of(0.0, 0.02);
    a->cag_v = rng_of(-0.01, 0.0);
    a->cag_w = rng_of(0.001, 0.01);
    a->eta = rng_of(0.2, 0.8);
    a->bg_order_min = 2;
    a->bg_order_max = 4;
    a->bg_max = 0.10;
    a->hump_height = rng_of(0.0, 0.05);
    a->hump_center_deg = rng_of(15.0, 35.0);
    a->hump_fwhm_deg = rng_of(5.0, 15.0);
    a->air_height = rng_of(0.0, 0.05);
    a->noise_sigma = rng_of(0.005, 0.015);
    a->poisson_counts = rng_of(1e3, 1e5);
    a->impurities_max = 0;
    a->impurity_height = rng_of(0.01, 0.10);
    a->impurity_fwhm_deg = rng_of(0.05, 0.3);
    a->mixtures_max = 1;
    a->min_fraction = 0.1;
}

/* ------------------------------------------------------------ validation */

static pid_status check_range(const char *name, pid_range r, double min, double max, pid_error *err)
{
    if (!isfinite(r.lo) || !isfinite(r.hi))
        return pid_fail(err, PID_ERR_ARG, "augment: %s range [%g, %g] is not finite", name, r.lo,
                        r.hi);
    if (r.lo > r.hi)
        return pid_fail(err, PID_ERR_ARG, "augment: %s range [%g, %g] is inverted (min > max)",
                        name, r.lo, r.hi);
    if (r.lo < min || r.hi > max)
        return pid_fail(err, PID_ERR_ARG, "augment: %s range [%g, %g] must lie within [%g, %g]",
                        name, r.lo, r.hi, min, max);
    return PID_OK;
}

static pid_status check_value(const char *name, double v, double min, double max, pid_error *err)
{
    if (!isfinite(v) || v < min || v > max)
        return pid_fail(err, PID_ERR_ARG, "augment: %s = %g must be finite and within [%g, %g]",
                        name, v, min, max);
    return PID_OK;
}

pid_status pid_augment_validate(const pid_augment *a, pid_error *err)
{
    pid_status st;
#define CHK(x)                                                                                     \
    do {                                                                                           \
        if ((st = (x))) return st;                                                                 \
    } while (0)
    CHK(check_value("strain_max", a->strain_max, 0.0, 0.2, err));
    CHK(check_value("zero_shift_max_deg", a->zero_shift_max_deg, 0.0, 5.0, err));
    CHK(check_value("displacement_max", a->displacement_max, 0.0, 0.05, err));
    CHK(check_range("size_nm", a->size_nm, 0.0, 1e5, err));
    if (a->size_nm.hi > 0.0 && a->size_nm.lo < 0.5)
        return pid_fail(err, PID_ERR_ARG,
                        "augment: size_nm range [%g, %g]: sizes below 0.5 nm are not "
                        "crystallites (use 0:0 to switch size broadening off)",
                        a->size_nm.lo, a->size_nm.hi);
    CHK(check_range("microstrain", a->microstrain, 0.0, 0.1, err));
    CHK(check_range("texture_r", a->texture_r, 1e-3, 10.0, err));
    CHK(check_range("cag_u", a->cag_u, 0.0, 10.0, err));
    CHK(check_range("cag_v", a->cag_v, -10.0, 10.0, err));
    CHK(check_range("cag_w", a->cag_w, 0.0, 10.0, err));
    if (!(a->cag_u.hi + a->cag_w.hi > 0.0))
        return pid_fail(err, PID_ERR_ARG, "augment: Caglioti U and W are both 0: no peak width");
    CHK(check_range("eta", a->eta, 0.0, 1.0, err));
    if (a->bg_order_min < 0 || a->bg_order_max > K_XRD_MAX_CHEB - 1 ||
        a->bg_order_min > a->bg_order_max)
        return pid_fail(err, PID_ERR_ARG,
                        "augment: background order range %d..%d must lie within 0..%d, min <= max",
                        a->bg_order_min, a->bg_order_max, K_XRD_MAX_CHEB - 1);
    CHK(check_value("bg_max", a->bg_max, 0.0, 10.0, err));
    CHK(check_range("hump_height", a->hump_height, 0.0, 10.0, err));
    CHK(check_range("hump_center_deg", a->hump_center_deg, 0.0, 180.0, err));
    CHK(check_range("hump_fwhm_deg", a->hump_fwhm_deg, 1e-3, 180.0, err));
    CHK(check_range("air_height", a->air_height, 0.0, 10.0, err));
    CHK(check_range("noise_sigma", a->noise_sigma, 0.0, 1.0, err));
    CHK(check_range("poisson_counts", a->poisson_counts, 0.0, 1e12, err));
    if (a->poisson_counts.hi > 0.0 && !(a->poisson_counts.lo > 0.0))
        return pid_fail(err, PID_ERR_ARG,
                        "augment: poisson_counts range [%g, %g] is drawn log-uniformly: the "
                        "minimum must be > 0 (0:0 switches Poisson noise off)",
                        a->poisson_counts.lo, a->poisson_counts.hi);
    if (a->impurities_max < 0 || a->impurities_max > K_XRD_MAX_IMPURITIES)
        return pid_fail(err, PID_ERR_ARG, "augment: impurities_max = %d must be in 0..%d",
                        a->impurities_max, K_XRD_MAX_IMPURITIES);
    CHK(check_range("impurity_height", a->impurity_height, 0.0, 10.0, err));
    CHK(check_range("impurity_fwhm_deg", a->impurity_fwhm_deg, 1e-3, 20.0, err));
    if (a->mixtures_max < 1 || a->mixtures_max > K_XRD_MAX_PHASES)
        return pid_fail(err, PID_ERR_ARG,
                        "augment: mixtures (phases per pattern) = %d must be in "
                        "1..%d",
                        a->mixtures_max, K_XRD_MAX_PHASES);
    CHK(check_value("min_fraction", a->min_fraction, 0.0, 1.0, err));
    if (a->mixtures_max > 1 && !(a->min_fraction * a->mixtures_max < 1.0))
        return pid_fail(err, PID_ERR_ARG,
                        "augment: min_fraction %g times %d phases must stay below 1",
                        a->min_fraction, a->mixtures_max);
#undef CHK
    return PID_OK;
}

pid_status pid_augment_write_attrs(const pid_augment *a, hid_t loc, pid_error *err)
{
    pid_status st = PID_OK;
#define RNG(name, r)                                                                               \
    do {                                                                                           \
        double v_[2] = {(r).lo, (r).hi};                                                           \
        if ((st = pid_h5_attr_f64_array(loc, name, 2, v_, err))) return st;                        \
    } while (0)
#define F64(name, v)                                                                               \
    do {                                                                                           \
        if ((st = pid_h5_attr_f64(loc, name, (v), err))) return st;                                \
    } while (0)
#define I64(name, v)                                                                               \
    do {                                                                                           \
        if ((st = pid_h5_attr_i64(loc, name, (int64_t)(v), err))) return st;                       \
    } while (0)
    I64("aug_enabled", a->enabled);
    F64("aug_strain_max", a->strain_max);
    F64("aug_zero_shift_max_deg", a->zero_shift_max_deg);
    F64("aug_displacement_max", a->displacement_max);
    RNG("aug_size_nm", a->size_nm);
    RNG("aug_microstrain", a->microstrain);
    RNG("aug_texture_r", a->texture_r);
    RNG("aug_caglioti_u_deg2", a->cag_u);
    RNG("aug_caglioti_v_deg2", a->cag_v);
    RNG("aug_caglioti_w_deg2", a->cag_w);
    RNG("aug_eta", a->eta);
    I64("aug_bg_order_min", a->bg_order_min);
    I64("aug_bg_order_max", a->bg_order_max);
    F64("aug_bg_max", a->bg_max);
    RNG("aug_hump_height", a->hump_height);
    RNG("aug_hump_center_deg", a->hump_center_deg);
    RNG("aug_hump_fwhm_deg", a->hump_fwhm_deg);
    RNG("aug_air_height", a->air_height);
    RNG("aug_noise_sigma", a->noise_sigma);
    RNG("aug_poisson_counts", a->poisson_counts);
    I64("aug_impurities_max", a->impurities_max);
    RNG("aug_impurity_height", a->impurity_height);
    RNG("aug_impurity_fwhm_deg", a->impurity_fwhm_deg);
    I64("mixtures_max", a->mixtures_max);
    F64("mixtures_min_fraction", a->min_fraction);
#undef RNG
#undef F64
#undef I64
    return st;
}

/* ------------------------------------------------------------------ cell */

static int close_rel(double x, double y, double tol)
{
    return fabs(x - y) <= tol * fmax(fabs(x), fabs(y));
}

void pid_augment_strain_cell(const double cell[6], double strain_max, pid_rng *r, double out[6])
{
    /* Draw one factor per slot in a fixed order (6 draws), then let equal
     * parameters copy the factor of the first of their group: the number of
     * draws never depends on the cell, so streams stay aligned. */
    double f[6];
    for (int i = 0; i < 6; i++)
        f[i] = pid_rng_range(r, -strain_max, strain_max);
    for (int i = 0; i < 3; i++) {
        int src = i;
        for (int j = 0; j < i; j++)
            if (close_rel(cell[i], cell[j], 1e-4)) {
                src = j;
                break;
            }
        out[i] = cell[i] * (1.0 + f[src]);
    }
    for (int i = 3; i < 6; i++) {
        double ang = cell[i];
        if (fabs(ang - 90.0) < 1e-3 || fabs(ang - 120.0) < 1e-3) {
            out[i] = ang; /* symmetry-fixed */
            continue;
        }
        int src = i;
        for (int j = 3; j < i; j++)
            if (fabs(cell[i] - cell[j]) < 1e-3) {
                src = j;
                break;
            }
        out[i] = 90.0 + (ang - 90.0) * (1.0 + f[src]);
    }
}

void pid_augment_gstar(const double cell[6], float gstar[6])
{
    const double d2r = M_PI / 180.0;
    double a = cell[0], b = cell[1], c = cell[2];
    double ca = cos(cell[3] * d2r), cb = cos(cell[4] * d2r), cg = cos(cell[5] * d2r);
    double g[3][3] = {{a * a, a * b * cg, a * c * cb},
                      {a * b * cg, b * b, b * c * ca},
                      {a * c * cb, b * c * ca, c * c}};
    /* Inverse of the symmetric direct metric by cofactors. */
    double i00 = g[1][1] * g[2][2] - g[1][2] * g[1][2];
    double i11 = g[0][0] * g[2][2] - g[0][2] * g[0][2];
    double i22 = g[0][0] * g[1][1] - g[0][1] * g[0][1];
    double i01 = g[0][2] * g[1][2] - g[0][1] * g[2][2];
    double i02 = g[0][1] * g[1][2] - g[0][2] * g[1][1];
    double i12 = g[0][1] * g[0][2] - g[0][0] * g[1][2];
    double det = g[0][0] * i00 + g[0][1] * i01 + g[0][2] * i02;
    gstar[0] = (float)(i00 / det);
    gstar[1] = (float)(i11 / det);
    gstar[2] = (float)(i22 / det);
    gstar[3] = (float)(i01 / det);
    gstar[4] = (float)(i02 / det);
    gstar[5] = (float)(i12 / det);
}

/* ------------------------------------------------------------------ draw */

/* Always one draw, even for lo == hi, so the stream position of every later
 * quantity does not depend on which ranges are degenerate. */
static double draw(pid_rng *r, pid_range x)
{
    return pid_rng_range(r, x.lo, x.hi);
}

static double mid(pid_range x)
{
    return 0.5 * (x.lo + x.hi);
}

/* 2-theta (deg) -> axis units, and a 2-theta width there -> axis units. */
static double to_axis(const pid_aug_ctx *ctx, double tt_deg)
{
    if (ctx->grid.axis != K_XRD_AXIS_Q) return tt_deg;
    return 4.0 * M_PI * sin(0.5 * tt_deg * M_PI / 180.0) / ctx->source.wavelength_a[0];
}

static double width_to_axis(const pid_aug_ctx *ctx, double tt_deg, double w_deg)
{
    if (ctx->grid.axis != K_XRD_AXIS_Q) return w_deg;
    return w_deg * M_PI / 180.0 * 2.0 * M_PI / ctx->source.wavelength_a[0] *
           cos(0.5 * tt_deg * M_PI / 180.0);
}

pid_status pid_augment_draw(const pid_augment *a, const pid_aug_ctx *ctx, uint64_t seed,
                            uint64_t index, k_xrd_pattern *pat, pid_aug_label *label,
                            pid_error *err)
{
    if (ctx->n_phases < 1) return pid_fail(err, PID_ERR_ARG, "augment: the library has no phases");
    pid_rng r;
    pid_rng_init(&r, seed, pid_rng_mix(seed, index));
    memset(pat, 0, sizeof *pat);
    memset(label, 0, sizeof *label);

    /* Phases and weight fractions. */
    int kmax = a->mixtures_max < ctx->n_phases ? a->mixtures_max : ctx->n_phases;
    int n = 1 + (int)pid_rng_below(&r, (uint32_t)kmax);
    for (int i = 0; i < n; i++) {
        int p;
        int dup;
        do { /* rejection keeps phases distinct; n <= 8, so it ends fast */
            p = (int)pid_rng_below(&r, (uint32_t)ctx->n_phases);
            dup = 0;
            for (int j = 0; j < i; j++)
                dup |= label->phase[j] == p;
        } while (dup);
        label->phase[i] = p;
    }
    double w[K_XRD_MAX_PHASES], sum = 0.0;
    for (int i = 0; i < n; i++)
        sum += (w[i] = -log(pid_rng_uniform(&r)));
    double fmin = n > 1 ? a->min_fraction : 0.0;
    for (int i = 0; i < n; i++) {
        w[i] = n > 1 ? fmin + (1.0 - n * fmin) * (w[i] / sum) : 1.0;
        label->fraction[i] = (float)w[i];
    }
    label->n = n;

    /* Per phase: strained metric, scale, texture, size, microstrain. */
    pat->n_phases = n;
    for (int i = 0; i < n; i++) {
        const pid_aug_phase *ph = &ctx->phases[label->phase[i]];
        k_xrd_phase *kp = &pat->phase[i];
        double cell[6];
        if (a->enabled)
            pid_augment_strain_cell(ph->cell, a->strain_max, &r, cell);
        else
            memcpy(cell, ph->cell, sizeof cell);
        pid_augment_gstar(cell, kp->gstar);
        kp->refl_offset = ph->refl_offset;
        kp->refl_count = ph->refl_count;
        /* Hill & Howard: intensity per |F|^2 scales as w / (Z M V); 1e6
         * keeps typical values near 1 in float. */
        kp->scale = (float)(1e6 * w[i] / (ph->cell_mass_amu * ph->volume_a3));
        kp->md_r = 1.0f;
        kp->md_axis = 0;
        if (a->enabled) {
            double rr = draw(&r, a->texture_r);
            int ax = (int)pid_rng_below(&r, PID_TEX_AXES);
            kp->md_r = (float)rr;
            kp->md_axis = ax;
            double sz = draw(&r, a->size_nm);
            kp->size_nm = a->size_nm.hi > 0.0 ? (float)sz : 0.0f;
            kp->microstrain = (float)draw(&r, a->microstrain);
        }
    }

    /* Radiation and Lorentz-polarization from the dataset settings. */
    pat->n_lines = ctx->source.n_lines;
    for (int l = 0; l < ctx->source.n_lines && l < K_XRD_MAX_LINES; l++) {
        pat->wavelength_a[l] = (float)ctx->source.wavelength_a[l];
        pat->line_weight[l] = (float)ctx->source.weight[l];
    }
    pat->lp_mode = (int32_t)ctx->lp.mode;
    pat->lp_mono_two_theta_deg = (float)ctx->lp.mono_two_theta_deg;
    pat->lp_polarization = (float)ctx->lp.polarization;

    /* Instrument: Caglioti with V capped at -1.8 sqrt(U W), so that
     * U t^2 + V t + W stays positive for every t. */
    double u = a->enabled ? draw(&r, a->cag_u) : mid(a->cag_u);
    double wq = a->enabled ? draw(&r, a->cag_w) : mid(a->cag_w);
    double v = a->enabled ? draw(&r, a->cag_v) : mid(a->cag_v);
    double vmin = -1.8 * sqrt(u * wq);
    pat->cag_u_deg2 = (float)u;
    pat->cag_v_deg2 = (float)(v < vmin ? vmin : v);
    pat->cag_w_deg2 = (float)wq;
    pat->eta0 = (float)(a->enabled ? draw(&r, a->eta) : mid(a->eta));
    pat->eta1_per_deg = 0.0f;
    if (!a->enabled) return PID_OK;
    pat->zero_shift_deg = (float)pid_rng_range(&r, -a->zero_shift_max_deg, a->zero_shift_max_deg);
    pat->displacement = (float)pid_rng_range(&r, -a->displacement_max, a->displacement_max);

    /* Background: order uniform; c0 = A / 2 and sum |c_k| <= A / 2, so it
     * stays within [0, A], A uniform in [0, bg_max]. */
    const k_xrd_grid *g = &ctx->grid;
    int order =
        a->bg_order_min + (int)pid_rng_below(&r, (uint32_t)(a->bg_order_max - a->bg_order_min + 1));
    double amp = pid_rng_range(&r, 0.0, a->bg_max), raw[K_XRD_MAX_CHEB], rs = 0.0;
    for (int k = 1; k <= order; k++)
        rs += fabs(raw[k] = pid_rng_range(&r, -1.0, 1.0));
    double share = pid_rng_uniform(&r);
    if (amp > 0.0) {
        pat->n_cheb = order + 1;
        pat->cheb[0] = (float)(0.5 * amp);
        for (int k = 1; k <= order; k++)
            pat->cheb[k] = rs > 0.0 ? (float)(0.5 * amp * share * raw[k] / rs) : 0.0f;
    }
    double hh = draw(&r, a->hump_height), hc = draw(&r, a->hump_center_deg),
           hw = draw(&r, a->hump_fwhm_deg);
    if (hh > 0.0) {
        pat->hump_height = (float)hh;
        pat->hump_center_x = (float)to_axis(ctx, hc);
        pat->hump_fwhm_x = (float)width_to_axis(ctx, hc, hw);
    }
    double air = draw(&r, a->air_height);
    pat->air_height = g->x0 > 0.0f ? (float)air : 0.0f;

    /* Impurity peaks anywhere on the grid. */
    int ni = (int)pid_rng_below(&r, (uint32_t)(a->impurities_max + 1));
    double x_last = (double)g->x0 + (double)g->step * (g->n_points - 1);
    for (int i = 0; i < ni; i++) {
        double x = pid_rng_range(&r, g->x0, x_last);
        double h = draw(&r, a->impurity_height), fw = draw(&r, a->impurity_fwhm_deg);
        double tt = x;
        if (g->axis == K_XRD_AXIS_Q) {
            double s = x * ctx->source.wavelength_a[0] / (4.0 * M_PI);
            tt = 2.0 * asin(s < 1.0 ? s : 1.0) * 180.0 / M_PI;
        }
        pat->impurity[i].pos_x = (float)x;
        pat->impurity[i].height = (float)h;
        pat->impurity[i].fwhm_x = (float)width_to_axis(ctx, tt, fw);
    }
    pat->n_impurities = ni;

    /* Noise. */
    pat->noise_sigma = (float)draw(&r, a->noise_sigma);
    if (a->poisson_counts.hi > 0.0)
        pat->poisson_counts =
            (float)exp(pid_rng_range(&r, log(a->poisson_counts.lo), log(a->poisson_counts.hi)));
    pat->noise_seed = pid_rng_mix(seed, AUG_NOISE_SALT);
    pat->noise_stream = index;
    return PID_OK;
}

static double cap(double v, double hi)
{
    return v < hi ? v : hi;
}

pid_status pid_augment_widen(const pid_augment *a, double f, pid_augment *out, pid_error *err)
{
    if (!(isfinite(f) && f >= 1.0))
        return pid_fail(err, PID_ERR_ARG, "augment: widening factor %g (need a finite f >= 1)", f);
    pid_augment w = *a;
    w.strain_max = cap(a->strain_max * f, 0.19);
    w.zero_shift_max_deg = cap(a->zero_shift_max_deg * f, 5.0);
    w.displacement_max = cap(a->displacement_max * f, 0.05);
    if (a->size_nm.hi > 0.0) {
        w.size_nm.lo = a->size_nm.lo / f;
        if (w.size_nm.lo < 0.5) w.size_nm.lo = 0.5;
    }
    w.microstrain.hi = cap(a->microstrain.hi * f, 0.1);
    if (a->texture_r.lo < 1.0)
        w.texture_r.lo = pow(a->texture_r.lo, f) > 1e-3 ? pow(a->texture_r.lo, f) : 1e-3;
    if (a->texture_r.hi > 1.0) w.texture_r.hi = cap(pow(a->texture_r.hi, f), 10.0);
    w.bg_max = cap(a->bg_max * f, 10.0);
    w.hump_height.hi = cap(a->hump_height.hi * f, 10.0);
    w.air_height.hi = cap(a->air_height.hi * f, 10.0);
    w.noise_sigma.hi = cap(a->noise_sigma.hi * f, 1.0);
    if (a->poisson_counts.hi > 0.0) w.poisson_counts.lo = a->poisson_counts.lo / f;
    w.impurity_height.hi = cap(a->impurity_height.hi * f, 10.0);
    *out = w;
    return PID_OK;
}
