/* Demo beamline scenarios (synth/demo.h): the heating ramp (anatase ->
 * rutile with thermal expansion and grain growth, then an out-of-library
 * sample) and the combinatorial composition scan, as ground truth per frame
 * and as frames rendered by the simulator's profile renderer. */
#include "synth/demo.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "synth/augment.h"
#include "synth/cif.h"
#include "synth/phaselib.h"

#define DEMO_NOISE_SALT 0x64656d6f6eull /* "demon" */
#define DEMO_BG_SALT 0x64656d6f62ull    /* "demob" */

/* Composition-scan corners: three built-in phases with clearly different
 * patterns (wurtzite, fluorite, corundum structures). */
static const char *const scan_corners[DEMO_MAX_PHASES] = {"ZnO_186", "CeO2_225", "Fe2O3_167"};
static const char *const ramp_phases[DEMO_MAX_PHASES] = {DEMO_ANATASE, DEMO_RUTILE, DEMO_UNKNOWN};
static const char *const kind_names[] = {"heating-ramp", "composition-scan"};

typedef struct {
    pid_structure *s; /* owned (array of 1 from pid_cif_read) */
    int refl_offset, refl_count;
    double mass_amu; /* cell contents */
} demo_phase;

struct demo_scenario {
    demo_kind kind;
    demo_opts o; /* o.data_dir is not kept (NULL) */
    demo_phase ph[DEMO_MAX_PHASES];
    k_xrd_refl *refl;
    int n_refl;
    int n_unknown;      /* heating ramp: out-of-library frames at the end */
    int tri_m;          /* composition scan: points per triangle edge */
    k_xrd_pattern base; /* instrument and radiation shared by every frame */
};

void demo_opts_default(demo_opts *o)
{
    memset(o, 0, sizeof *o);
    o->n_frames = 400;
    o->seed = 0;
    o->grid.axis = K_XRD_AXIS_TWO_THETA;
    o->grid.x0 = 10.0f;
    o->grid.step = 0.01f;
    o->grid.n_points = 7001;
    pid_xrd_source_parse("CuKa", &o->source, NULL);
    o->noise = 1;
    o->unknown_fraction = 0.05;
    o->data_dir = NULL;
}

int demo_kind_parse(const char *name)
{
    for (int i = 0; name && i < (int)(sizeof kind_names / sizeof kind_names[0]); i++)
        if (!strcmp(name, kind_names[i])) return i;
    return -1;
}

const char *demo_kind_name(demo_kind k)
{
    return (k == DEMO_HEATING_RAMP || k == DEMO_COMPOSITION_SCAN) ? kind_names[k] : "?";
}

static pid_status validate(const demo_opts *o, pid_error *err)
{
    if (o->n_frames < 20 || o->n_frames > DEMO_MAX_FRAMES)
        return pid_fail(err, PID_ERR_ARG, "demo: n_frames %d outside 20..%d", o->n_frames,
                        DEMO_MAX_FRAMES);
    const k_xrd_grid *g = &o->grid;
    if (g->axis != K_XRD_AXIS_TWO_THETA)
        return pid_fail(err, PID_ERR_ARG, "demo: the grid must be a 2-theta axis");
    if (g->n_points < 2 || g->n_points > K_XRD_MAX_POINTS)
        return pid_fail(err, PID_ERR_ARG, "demo: grid points %d outside 2..%d", g->n_points,
                        K_XRD_MAX_POINTS);
    double last = (double)g->x0 + (double)g->step * (g->n_points - 1);
    if (!isfinite(g->x0) || !isfinite(g->step) || !(g->step > 0.0f) || !(g->x0 > 0.0f) ||
        !(last < 175.0))
        return pid_fail(err, PID_ERR_ARG,
                        "demo: grid %g + %g x %d must lie inside 0..175 deg 2-theta", g->x0,
                        g->step, g->n_points);
    if (o->source.n_lines < 1 || o->source.n_lines > K_XRD_MAX_LINES ||
        !(o->source.wavelength_a[0] > 0.0))
        return pid_fail(err, PID_ERR_ARG, "demo: bad radiation source");
    if (!(o->unknown_fraction >= 0.0 && o->unknown_fraction <= 0.5))
        return pid_fail(err, PID_ERR_ARG, "demo: unknown_fraction %g outside 0..0.5",
                        o->unknown_fraction);
    return PID_OK;
}

/* The data folder: o->data_dir, else the parent of the built-in phases/. */
static pid_status data_dir(const demo_opts *o, char *buf, size_t cap, pid_error *err)
{
    if (o->data_dir) {
        if ((size_t)snprintf(buf, cap, "%s", o->data_dir) >= cap)
            return pid_fail(err, PID_ERR_ARG, "demo: data folder name too long");
        return PID_OK;
    }
    pid_status st = pid_phaselib_builtin_dir(buf, cap, err);
    if (st) return st;
    char *slash = strrchr(buf, '/');
    if (!slash) return pid_fail(err, PID_ERR_INTERNAL, "demo: odd built-in folder '%s'", buf);
    *slash = '\0';
    return PID_OK;
}

/* Largest 2-theta (deg) of the grid. */
static double grid_last(const k_xrd_grid *g)
{
    return (double)g->x0 + (double)g->step * (g->n_points - 1);
}

static pid_status load_phase(demo_scenario *d, int i, const char *dir, const char *sub,
                             const char *stem, pid_error *err)
{
    char path[1200];
    snprintf(path, sizeof path, "%s/%s/%s.cif", dir, sub, stem);
    int n = 0;
    pid_status st = pid_cif_read(path, &d->ph[i].s, &n, err);
    if (st) return st;
    if (n != 1) return pid_fail(err, PID_ERR_FORMAT, "%s: expected one structure, got %d", path, n);
    d->ph[i].mass_amu = pid_structure_cell_mass(d->ph[i].s);

    /* Reflections down to the d-spacing 2 deg beyond the grid can show at
     * the shortest line, with room for 2 % thermal expansion. */
    double lam = d->o.source.wavelength_a[0];
    for (int l = 1; l < d->o.source.n_lines; l++)
        lam = fmin(lam, d->o.source.wavelength_a[l]);
    double tt = fmin(grid_last(&d->o.grid) + 2.0, 179.0);
    double d_min = lam / (2.0 * sin(0.5 * tt * M_PI / 180.0)) / 1.02;
    k_xrd_refl *r = NULL;
    int nr = 0;
    if ((st = pid_xrd_reflections(d->ph[i].s, d_min, 1, &r, &nr, err))) {
        pid_error_prefix(err, "%s", path);
        return st;
    }
    k_xrd_refl *grown = realloc(d->refl, sizeof *grown * (size_t)(d->n_refl + nr + 1));
    if (!grown) {
        free(r);
        return pid_fail(err, PID_ERR_NOMEM, "demo: out of memory for reflections");
    }
    d->refl = grown;
    if (nr > 0) memcpy(d->refl + d->n_refl, r, sizeof *r * (size_t)nr);
    free(r);
    d->ph[i].refl_offset = d->n_refl;
    d->ph[i].refl_count = nr;
    d->n_refl += nr;
    return PID_OK;
}

/* The instrument every frame shares: the augmentation module's clean
 * instrument (middle of the Caglioti and pseudo-Voigt ranges, no shifts) for
 * this source and a lab Lorentz-polarization factor. */
static pid_status base_pattern(demo_scenario *d, pid_error *err)
{
    pid_augment a;
    pid_augment_default(&a);
    a.enabled = 0;
    a.mixtures_max = 1;
    pid_aug_phase one = {0};
    one.refl_count = d->ph[0].refl_count;
    one.cell_mass_amu = 1.0;
    one.volume_a3 = 1.0;
    one.cell[0] = one.cell[1] = one.cell[2] = 1.0;
    one.cell[3] = one.cell[4] = one.cell[5] = 90.0;
    pid_aug_ctx ctx = {0};
    ctx.phases = &one;
    ctx.n_phases = 1;
    ctx.grid = d->o.grid;
    ctx.source = d->o.source;
    ctx.lp.mode = PID_LP_LAB;
    ctx.lp.polarization = 0.95;
    pid_aug_label label;
    return pid_augment_draw(&a, &ctx, d->o.seed, 0, &d->base, &label, err);
}

pid_status demo_create(demo_scenario **out, const char *name, const demo_opts *o, pid_error *err)
{
    *out = NULL;
    int kind = demo_kind_parse(name);
    if (kind < 0)
        return pid_fail(err, PID_ERR_ARG,
                        "demo: unknown scenario '%s' (heating-ramp, composition-scan)",
                        name ? name : "(null)");
    demo_opts def;
    if (!o) {
        demo_opts_default(&def);
        o = &def;
    }
    pid_status st = validate(o, err);
    if (st) return st;
    demo_scenario *d = calloc(1, sizeof *d);
    if (!d) return pid_fail(err, PID_ERR_NOMEM, "demo: out of memory");
    d->kind = (demo_kind)kind;
    d->o = *o;
    d->o.data_dir = NULL;

    char dir[1024];
    if ((st = data_dir(o, dir, sizeof dir, err))) goto fail;
    for (int i = 0; i < DEMO_MAX_PHASES; i++) {
        if (d->kind == DEMO_HEATING_RAMP)
            st = load_phase(d, i, dir, i == 2 ? "demo" : "phases", ramp_phases[i], err);
        else
            st = load_phase(d, i, dir, "phases", scan_corners[i], err);
        if (st) goto fail;
    }
    if (d->kind == DEMO_HEATING_RAMP) {
        int n = o->n_frames;
        d->n_unknown = o->unknown_fraction > 0.0 ? (int)lround(o->unknown_fraction * n) : 0;
        if (o->unknown_fraction > 0.0 && d->n_unknown < 1) d->n_unknown = 1;
    } else {
        /* Smallest triangular grid with at least n points. */
        int m = 2;
        while (m * (m + 1) / 2 < o->n_frames)
            m++;
        d->tri_m = m;
    }
    if ((st = base_pattern(d, err))) goto fail;
    *out = d;
    return PID_OK;
fail:
    demo_destroy(d);
    return st;
}

void demo_destroy(demo_scenario *d)
{
    if (!d) return;
    for (int i = 0; i < DEMO_MAX_PHASES; i++)
        pid_structure_array_destroy(d->ph[i].s, d->ph[i].s ? 1 : 0);
    free(d->refl);
    free(d);
}

demo_kind demo_get_kind(const demo_scenario *d)
{
    return d->kind;
}

int demo_n_frames(const demo_scenario *d)
{
    return d->o.n_frames;
}

int demo_n_points(const demo_scenario *d)
{
    return d->o.grid.n_points;
}

const k_xrd_grid *demo_grid(const demo_scenario *d)
{
    return &d->o.grid;
}

const char *demo_corner_name(const demo_scenario *d, int i)
{
    if (d->kind != DEMO_COMPOSITION_SCAN || i < 0 || i >= DEMO_MAX_PHASES) return NULL;
    return d->ph[i].s->name;
}

static double clamp01(double x)
{
    return x < 0.0 ? 0.0 : (x > 1.0 ? 1.0 : x);
}

/* Append phase p of the scenario with weight fraction w to the truth. */
static void truth_add(const demo_scenario *d, demo_truth *t, int p, double w, double fa, double fc,
                      double size_nm)
{
    int k = t->n++;
    const pid_structure *s = d->ph[p].s;
    snprintf(t->phase[k], sizeof t->phase[k], "%s", s->name);
    t->fraction[k] = w;
    t->cell_a[k] = s->a * fa;
    t->cell_c[k] = s->c * fc;
    t->size_nm[k] = size_nm;
}

pid_status demo_truth_get(const demo_scenario *d, int index, demo_truth *t, pid_error *err)
{
    if (index < 0 || index >= d->o.n_frames)
        return pid_fail(err, PID_ERR_ARG, "demo: frame %d outside 0..%d", index, d->o.n_frames - 1);
    memset(t, 0, sizeof *t);
    t->temperature_k = NAN;
    for (int i = 0; i < DEMO_MAX_PHASES; i++)
        t->composition[i] = NAN;

    if (d->kind == DEMO_HEATING_RAMP) {
        int n_ramp = d->o.n_frames - d->n_unknown;
        if (index >= n_ramp) {
            /* The sample changer has moved on to the next capillary: brucite
             * at room temperature, not in the library. */
            t->temperature_k = DEMO_T_START_K;
            t->unknown = 1;
            truth_add(d, t, 2, 1.0, 1.0, 1.0, 60.0);
            return PID_OK;
        }
        double T = DEMO_T_START_K + (DEMO_T_END_K - DEMO_T_START_K) * index / (n_ramp - 1);
        t->temperature_k = T;
        /* Rutile weight fraction: smoothstep over the transformation window. */
        double x = clamp01((T - DEMO_RUTILE_START_K) / (DEMO_RUTILE_END_K - DEMO_RUTILE_START_K));
        double fr = x * x * (3.0 - 2.0 * x);
        double dT = T - DEMO_T_REF_K;
        /* Grain growth: anatase 12 -> 30 nm up to the transformation, rutile
         * nucleates at ~40 nm and coarsens to 100 nm. */
        double s_an =
            12.0 + 18.0 * clamp01((T - DEMO_T_START_K) / (DEMO_RUTILE_END_K - DEMO_T_START_K));
        double s_ru =
            40.0 + 60.0 * clamp01((T - DEMO_RUTILE_START_K) / (DEMO_T_END_K - DEMO_RUTILE_START_K));
        if (fr < 1.0)
            truth_add(d, t, 0, 1.0 - fr, 1.0 + DEMO_ANATASE_ALPHA_A * dT,
                      1.0 + DEMO_ANATASE_ALPHA_C * dT, s_an);
        if (fr > 0.0)
            truth_add(d, t, 1, fr, 1.0 + DEMO_RUTILE_ALPHA_A * dT, 1.0 + DEMO_RUTILE_ALPHA_C * dT,
                      s_ru);
        return PID_OK;
    }

    /* Composition scan: point `index` of a triangular grid with m points per
     * edge, rows of constant third-corner fraction, scanned boustrophedon
     * (as a diffractometer stage rasters a combinatorial wafer). */
    int m = d->tri_m, k = index, r = 0;
    while (k >= m - r) {
        k -= m - r;
        r++;
    }
    int len = m - r;
    int j = (r % 2) ? len - 1 - k : k;
    double c = (double)r / (m - 1), b = (double)j / (m - 1);
    double a = fmax(0.0, 1.0 - b - c);
    double comp[DEMO_MAX_PHASES] = {a, b, c};
    static const double size_nm[DEMO_MAX_PHASES] = {35.0, 15.0, 50.0};
    for (int i = 0; i < DEMO_MAX_PHASES; i++) {
        t->composition[i] = comp[i];
        if (comp[i] > 1e-9) truth_add(d, t, i, comp[i], 1.0, 1.0, size_nm[i]);
    }
    return PID_OK;
}

/* Renderer parameters of frame `index`. */
static pid_status frame_pattern(const demo_scenario *d, int index, k_xrd_pattern *pat,
                                pid_error *err)
{
    demo_truth t;
    pid_status st = demo_truth_get(d, index, &t, err);
    if (st) return st;
    *pat = d->base;
    pat->n_phases = t.n;
    for (int k = 0; k < t.n; k++) {
        int p = 0;
        while (p < DEMO_MAX_PHASES && strcmp(d->ph[p].s->name, t.phase[k]))
            p++;
        if (p == DEMO_MAX_PHASES)
            return pid_fail(err, PID_ERR_INTERNAL, "demo: phase %s lost", t.phase[k]);
        const pid_structure *s = d->ph[p].s;
        double fa = t.cell_a[k] / s->a, fc = t.cell_c[k] / s->c;
        /* Scale a and b together: every phase used here is tetragonal,
         * hexagonal or cubic, so a = b and the symmetry is kept. */
        double cell[6] = {s->a * fa, s->b * fa, s->c * fc, s->alpha, s->beta, s->gamma};
        k_xrd_phase *kp = &pat->phase[k];
        pid_augment_gstar(cell, kp->gstar);
        kp->refl_offset = d->ph[p].refl_offset;
        kp->refl_count = d->ph[p].refl_count;
        double vol = pid_structure_volume(s) * fa * fa * fc;
        /* Hill & Howard weight-fraction scale, as pid_augment_draw does. */
        kp->scale = (float)(1e6 * t.fraction[k] / (d->ph[p].mass_amu * vol));
        kp->md_r = 1.0f;
        kp->md_axis = 0;
        kp->size_nm = (float)t.size_nm[k];
        kp->microstrain = 5e-4f;
    }
    if (!d->o.noise) return PID_OK;

    /* A slowly varying quadratic background (sample holder, fluorescence)
     * with a little per-frame jitter, some air scatter, and counting noise:
     * about 2e4 counts at the strongest peak plus a small detector floor. */
    pid_rng r;
    pid_rng_init(&r, d->o.seed, pid_rng_mix(DEMO_BG_SALT, (uint64_t)index));
    double c0 = 0.06 * pid_rng_range(&r, 0.85, 1.15);
    pat->n_cheb = 3;
    pat->cheb[0] = (float)c0;
    pat->cheb[1] = (float)(-0.4 * c0 * pid_rng_range(&r, 0.8, 1.2));
    pat->cheb[2] = (float)(0.2 * c0 * pid_rng_range(&r, 0.8, 1.2));
    pat->air_height = (float)(0.03 * pid_rng_range(&r, 0.8, 1.2));
    pat->poisson_counts = (float)(2e4 * pid_rng_range(&r, 0.7, 1.3));
    pat->noise_sigma = 0.002f;
    pat->noise_seed = pid_rng_mix(d->o.seed, DEMO_NOISE_SALT);
    pat->noise_stream = (uint64_t)index;
    return PID_OK;
}

pid_status demo_render(const demo_scenario *d, int index0, int n, float *out, pid_error *err)
{
    if (n < 0 || index0 < 0 || index0 > d->o.n_frames - n)
        return pid_fail(err, PID_ERR_ARG, "demo: frames %d..%d outside 0..%d", index0,
                        index0 + n - 1, d->o.n_frames - 1);
    enum { CHUNK = 16 };
    k_xrd_pattern pats[CHUNK];
    size_t np = (size_t)d->o.grid.n_points;
    for (int done = 0; done < n; done += CHUNK) {
        int cnt = n - done < CHUNK ? n - done : CHUNK;
        for (int i = 0; i < cnt; i++) {
            pid_status st = frame_pattern(d, index0 + done + i, &pats[i], err);
            if (st) return st;
        }
        pid_status st = k_xrd_render_cpu(NULL, &d->o.grid, d->refl, d->n_refl, pats, cnt,
                                         out + (size_t)done * np, err);
        if (st) return st;
    }
    return PID_OK;
}
