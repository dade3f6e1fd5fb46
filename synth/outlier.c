/* Outlier patterns (see outlier.h): random peak sets and amorphous humps with
 * background and noise, for outlier-exposure training of the unknown-phase
 * score. Deterministic per (seed, index) through Philox streams. */
#include "synth/outlier.h"

#include <math.h>

#include <stdio.h>
#include <string.h>

#include "core/rng.h"

/* Philox stream family of the outliers, apart from the augmentation's. */
#define OUTLIER_STREAM_TAG 0x6f75746c6965ULL /* "outlie" */

static void add_pv(float *y, const k_xrd_grid *g, double x_c, double fwhm, double eta, double h)
{
    /* pseudo-Voigt evaluated within +-20 FWHM (the Lorentzian tail beyond
     * holds < 2 % of the area and is lost in the noise). */
    const double hw = 0.5 * fwhm, reach = 20.0 * fwhm;
    int j0 = (int)floor((x_c - reach - g->x0) / g->step),
        j1 = (int)ceil((x_c + reach - g->x0) / g->step);
    if (j0 < 0) j0 = 0;
    if (j1 > g->n_points - 1) j1 = g->n_points - 1;
    const double ln2 = 0.69314718055994530942;
    for (int j = j0; j <= j1; j++) {
        double d = (g->x0 + j * (double)g->step - x_c) / hw;
        y[j] += (float)(h * (eta / (1.0 + d * d) + (1.0 - eta) * exp(-ln2 * d * d)));
    }
}

static void one_pattern(const k_xrd_grid *g, pid_rng *r, float *y)
{
    const int p = g->n_points;
    const double lo = g->x0, span = (double)g->step * (p - 1);
    /* Widths are set for a 2-theta axis in degrees and scaled for other
     * axes by the span ratio to the usual 70-degree scan. */
    const double wscale = g->axis == K_XRD_AXIS_TWO_THETA ? 1.0 : span / 70.0;
    for (int j = 0; j < p; j++)
        y[j] = 0.0f;
    if (pid_rng_uniform(r) < PID_OUTLIER_AMORPHOUS_FRAC) {
        int nh = 1 + (int)pid_rng_below(r, 2);
        for (int i = 0; i < nh; i++)
            add_pv(y, g, lo + span * pid_rng_uniform(r), wscale * pid_rng_range(r, 3.0, 15.0), 0.3,
                   pid_rng_range(r, 0.3, 1.0));
    } else {
        int np = PID_OUTLIER_MIN_PEAKS +
                 (int)pid_rng_below(r, PID_OUTLIER_MAX_PEAKS - PID_OUTLIER_MIN_PEAKS + 1);
        double w0 = wscale * exp(pid_rng_range(r, log(0.05), log(0.5)));
        double eta = pid_rng_range(r, 0.2, 0.8);
        for (int i = 0; i < np; i++) {
            double u = pid_rng_uniform(r);
            double h = i == 0 ? 1.0 : 0.01 + u * u * u; /* many weak, few strong peaks */
            add_pv(y, g, lo + span * pid_rng_uniform(r), w0 * pid_rng_range(r, 0.8, 1.25), eta, h);
        }
    }
    float peak = 0.0f;
    for (int j = 0; j < p; j++)
        if (y[j] > peak) peak = y[j];
    if (peak <= 0.0f) peak = 1.0f;
    /* background: quadratic in t = -1..1, up to 10 % of the maximum */
    double b = pid_rng_uniform(r) * 0.10 * peak, c1 = pid_rng_range(r, -1.0, 1.0),
           c2 = pid_rng_range(r, -1.0, 1.0);
    double sigma = pid_rng_range(r, 0.005, 0.015) * peak;
    for (int j = 0; j < p; j++) {
        double t = p > 1 ? 2.0 * j / (p - 1) - 1.0 : 0.0;
        double bg = b * (1.0 + 0.5 * c1 * t + 0.5 * c2 * (2.0 * t * t - 1.0)) / 2.0;
        y[j] += (float)(bg + sigma * pid_rng_normal(r));
    }
    float mx = 0.0f;
    for (int j = 0; j < p; j++) {
        if (y[j] < 0.0f) y[j] = 0.0f;
        if (y[j] > mx) mx = y[j];
    }
    if (mx > 0.0f)
        for (int j = 0; j < p; j++)
            y[j] /= mx;
}

pid_status pid_outlier_patterns(const k_xrd_grid *grid, uint64_t seed, uint64_t index0, int n,
                                float *patterns, pid_error *err)
{
    if (!grid || grid->n_points < 2 || !(grid->step > 0.0f) || !isfinite(grid->x0) ||
        (grid->axis != K_XRD_AXIS_TWO_THETA && grid->axis != K_XRD_AXIS_Q))
        return pid_fail(err, PID_ERR_ARG, "outlier: bad grid");
    if (n < 0 || (n > 0 && !patterns)) return pid_fail(err, PID_ERR_ARG, "outlier: bad count");
    for (int i = 0; i < n; i++) {
        pid_rng r;
        pid_rng_init(&r, pid_rng_mix(seed, OUTLIER_STREAM_TAG), index0 + (uint64_t)i);
        one_pattern(grid, &r, patterns + (size_t)i * (size_t)grid->n_points);
    }
    return PID_OK;
}

/* A cell-length factor 1 -+ u (outlier.h). */
static double cell_factor(pid_rng *r)
{
    double u = pid_rng_range(r, PID_OUTLIER_CELL_MIN, PID_OUTLIER_CELL_MAX);
    return pid_rng_uniform(r) < 0.5 ? 1.0 - u : 1.0 + u;
}

pid_status pid_outlier_relative(const pid_structure *s, uint64_t seed, uint64_t index,
                                pid_structure **out, pid_error *err)
{
    *out = NULL;
    pid_structure *c = NULL;
    pid_status st = pid_structure_clone(s, &c, err);
    if (st) return st;
    pid_rng r;
    pid_rng_init(&r, seed, (OUTLIER_STREAM_TAG + 1) ^ (index * 0x9e3779b97f4a7c15ULL));
    const int sg = s->spacegroup_number;
    if (sg >= 195) {
        double f = cell_factor(&r);
        c->a *= f;
        c->b *= f;
        c->c *= f;
    } else if (sg >= 75) {
        double fa = cell_factor(&r), fc = cell_factor(&r);
        c->a *= fa;
        c->b *= fa;
        c->c *= fc;
    } else {
        c->a *= cell_factor(&r);
        c->b *= cell_factor(&r);
        c->c *= cell_factor(&r);
    }
    /* each element of the structure, in site order, swapped or kept */
    int from[16], to[16], n = 0;
    for (int i = 0; i < c->n_sites; i++) {
        pid_site *p = &c->sites[i];
        int j = 0;
        while (j < n && from[j] != p->z)
            j++;
        if (j == n && n < 16) {
            from[n] = p->z;
            to[n] = pid_rng_uniform(&r) < 0.5 ? 3 + (int)pid_rng_below(&r, 81) : p->z;
            n++;
        }
        if (j < n && to[j] != p->z) {
            p->z = to[j];
            p->charge = 0;
            snprintf(p->element, sizeof p->element, "%s", pid_element_symbol(to[j]));
        }
    }
    char name[PID_NAME_LEN];
    snprintf(name, sizeof name, "%.*s~%llu", (int)(sizeof name - 24), s->name,
             (unsigned long long)index);
    memcpy(c->name, name, sizeof name);
    pid_structure_update_formula(c);
    *out = c;
    return PID_OK;
}
