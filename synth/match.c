/* Template matching: simulate each reference on the comparison grid with the
 * profile renderer (no augmentation), remove the measured background with
 * SNIP, blur both with the same Gaussian so small width and position
 * differences still overlap, and take the best cosine similarity over integer
 * zero shifts of the simulation. */
#include "synth/match.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/xrd_render.h"

void pid_match_opts_default(pid_match_opts *o)
{
    memset(o, 0, sizeof *o);
    pid_xrd_source_parse("CuKa", &o->source, NULL);
    o->two_theta_min_deg = 10.0;
    o->two_theta_max_deg = 90.0;
    o->step_deg = 0.02;
    o->max_zero_shift_deg = 0.3;
    o->background_window_deg = 1.5;
    o->fwhm_deg = 0.1;
    o->smooth_deg = 0.15;
}

/* Gaussian blur with FWHM given in points (in place, using tmp). */
static void blur(float *y, float *tmp, int n, double fwhm_pts)
{
    if (fwhm_pts <= 0.5) return;
    double sigma = fwhm_pts / 2.3548200450309493;
    int half = (int)ceil(3.0 * sigma);
    float kern[512];
    if (half > 255) half = 255;
    double sum = 0;
    for (int k = -half; k <= half; k++)
        sum += kern[k + half] = (float)exp(-0.5 * k * k / (sigma * sigma));
    for (int k = 0; k <= 2 * half; k++)
        kern[k] = (float)(kern[k] / sum);
    for (int i = 0; i < n; i++) {
        double acc = 0;
        for (int k = -half; k <= half; k++) {
            int j = i + k;
            if (j >= 0 && j < n) acc += kern[k + half] * y[j];
        }
        tmp[i] = (float)acc;
    }
    memcpy(y, tmp, (size_t)n * sizeof *y);
}

static double norm2(const float *y, int n)
{
    double s = 0;
    for (int i = 0; i < n; i++)
        s += (double)y[i] * y[i];
    return sqrt(s);
}

/* Simulated, background-free profile of one structure on the grid. */
static pid_status simulate(const pid_structure *s, const pid_match_opts *o, const k_xrd_grid *g,
                           pid_backend *be, float *out, pid_error *err)
{
    k_xrd_refl *refl = NULL;
    int n_refl = 0;
    double lam_max = o->source.wavelength_a[o->source.n_lines > 1 ? 1 : 0];
    double tt_max = g->x0 + g->step * (g->n_points - 1) + o->max_zero_shift_deg + 1.0;
    if (tt_max > 179.0) tt_max = 179.0;
    double d_min = lam_max / (2.0 * sin(0.5 * tt_max * M_PI / 180.0));
    pid_status st = pid_xrd_reflections(s, d_min, 1, &refl, &n_refl, err);
    if (st) return st;
    k_xrd_pattern p;
    memset(&p, 0, sizeof p);
    p.n_phases = 1;
    double gs[3][3];
    pid_structure_reciprocal_metric(s, gs);
    k_xrd_phase *ph = &p.phase[0];
    ph->refl_offset = 0;
    ph->refl_count = n_refl;
    ph->gstar[0] = (float)gs[0][0];
    ph->gstar[1] = (float)gs[1][1];
    ph->gstar[2] = (float)gs[2][2];
    ph->gstar[3] = (float)gs[0][1];
    ph->gstar[4] = (float)gs[0][2];
    ph->gstar[5] = (float)gs[1][2];
    ph->scale = 1.0f;
    ph->md_r = 1.0f;
    p.n_lines = o->source.n_lines;
    for (int i = 0; i < p.n_lines; i++) {
        p.wavelength_a[i] = (float)o->source.wavelength_a[i];
        p.line_weight[i] = (float)o->source.weight[i];
    }
    p.cag_w_deg2 = (float)(o->fwhm_deg * o->fwhm_deg);
    p.eta0 = 0.5f;
    p.lp_mode = K_XRD_LP_LAB;
    if (n_refl == 0)
        memset(out, 0, (size_t)g->n_points * sizeof *out);
    else
        st = k_xrd_render(be, g, refl, n_refl, &p, 1, out, err);
    if (st) pid_error_prefix(err, "%s", s->name);
    free(refl);
    return st;
}

static int hit_cmp(const void *a, const void *b)
{
    const pid_match_hit *x = a, *y = b;
    if (x->score != y->score) return x->score < y->score ? 1 : -1;
    return x->ref - y->ref;
}

pid_status pid_match_rank(const pid_xy *measured, const pid_structure *const *refs, int n_refs,
                          const pid_match_opts *o, pid_match_hit *hits, pid_error *err)
{
    if (!(o->step_deg > 0) || !(o->max_zero_shift_deg >= 0) || !(o->fwhm_deg > 0) ||
        !(o->background_window_deg > 0) || !(o->smooth_deg >= 0))
        return pid_fail(err, PID_ERR_ARG, "match: invalid options (step, shift, width, window)");
    double lo = fmax(o->two_theta_min_deg, measured->x[0]);
    double hi = fmin(o->two_theta_max_deg, measured->x[measured->n - 1]);
    if (!(hi - lo >= 5.0))
        return pid_fail(err, PID_ERR_ARG,
                        "match: measured range %.2f..%.2f deg and compared range %.2f..%.2f deg "
                        "overlap by less than 5 deg",
                        measured->x[0], measured->x[measured->n - 1], o->two_theta_min_deg,
                        o->two_theta_max_deg);
    int shift_pts = (int)floor(o->max_zero_shift_deg / o->step_deg + 0.5);
    /* Simulate on a grid padded by the largest shift on both sides. */
    int n = (int)floor((hi - lo) / o->step_deg) + 1;
    int np = n + 2 * shift_pts;
    k_xrd_grid g = {K_XRD_AXIS_TWO_THETA, np, (float)(lo - shift_pts * o->step_deg),
                    (float)o->step_deg};
    pid_status st = PID_OK;
    pid_backend *be = NULL;
    float *meas = malloc((size_t)n * sizeof *meas), *bg = malloc((size_t)n * sizeof *bg);
    float *sim = malloc((size_t)np * sizeof *sim), *tmp = malloc((size_t)np * sizeof *tmp);
    if (!meas || !bg || !sim || !tmp) {
        st = pid_fail(err, PID_ERR_NOMEM, "match: out of memory");
        goto done;
    }
    st = pid_backend_create(&be, "cpu", 1, err);
    if (st) goto done;
    pid_xy_resample(measured, lo, o->step_deg, n, 0.0, meas);
    int half_w = (int)ceil(o->background_window_deg / o->step_deg);
    st = pid_snip_background(meas, n, half_w, bg, err);
    if (st) goto done;
    for (int i = 0; i < n; i++) {
        float v = meas[i] - bg[i];
        meas[i] = v > 0 ? v : 0;
    }
    blur(meas, tmp, n, o->smooth_deg / o->step_deg);
    double mnorm = norm2(meas, n);
    if (!(mnorm > 0)) {
        st = pid_fail(err, PID_ERR_FORMAT,
                      "match: the measured pattern is flat after background "
                      "removal");
        goto done;
    }
    for (int r = 0; r < n_refs; r++) {
        st = simulate(refs[r], o, &g, be, sim, err);
        if (st) goto done;
        blur(sim, tmp, np, o->smooth_deg / o->step_deg);
        double best = -2, best_shift = 0;
        for (int k = -shift_pts; k <= shift_pts; k++) {
            /* The simulation shifted by +k points: sim index i + shift_pts - k. */
            const float *sv = sim + shift_pts - k;
            double dot = 0, sn = 0;
            for (int i = 0; i < n; i++) {
                dot += (double)meas[i] * sv[i];
                sn += (double)sv[i] * sv[i];
            }
            double c = sn > 0 ? dot / (sqrt(sn) * mnorm) : 0;
            if (c > best) {
                best = c;
                best_shift = k * o->step_deg;
            }
        }
        hits[r].ref = r;
        hits[r].score = best;
        hits[r].zero_shift_deg = best_shift;
    }
    qsort(hits, (size_t)n_refs, sizeof *hits, hit_cmp);
done:
    pid_backend_destroy(be);
    free(meas);
    free(bg);
    free(sim);
    free(tmp);
    return st;
}
