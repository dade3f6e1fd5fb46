/* Synthetic XRD dataset generation (synth/xrd_dataset.h): the library's
 * reflection table, augmentation draws, rendering on CPU worker threads or
 * CUDA, and incremental HDF5 output with full provenance. */
#include "synth/xrd_dataset.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/h5.h"
#include "core/log.h"

void pid_xrd_dataset_opts_default(pid_xrd_dataset_opts *o)
{
    memset(o, 0, sizeof *o);
    o->n = 1000;
    o->seed = 0;
    o->grid.axis = K_XRD_AXIS_TWO_THETA;
    o->grid.x0 = 10.0f;
    o->grid.step = 0.01f;
    o->grid.n_points = 7001;
    pid_xrd_source_parse("CuKa", &o->source, NULL);
    o->lp.mode = PID_LP_LAB;
    o->lp.mono_two_theta_deg = 0.0;
    o->lp.polarization = 0.95;
    o->debye_waller = 1;
    pid_augment_default(&o->aug);
}

/* Largest 2-theta (deg) the grid reaches. */
static double grid_two_theta_max(const k_xrd_grid *g, const pid_xrd_source *src)
{
    double last = (double)g->x0 + (double)g->step * (g->n_points - 1);
    if (g->axis != K_XRD_AXIS_Q) return last;
    double s = last * src->wavelength_a[0] / (4.0 * M_PI);
    return 2.0 * asin(s < 1.0 ? s : 1.0) * 180.0 / M_PI;
}

/* Smallest d-spacing (angstrom) a pattern on this grid can show: 3 deg
 * beyond the grid (zero shift, displacement, tails of peaks just outside),
 * the shortest line, and cells compressed by the largest strain. */
static double dataset_d_min(const k_xrd_grid *grid, const pid_xrd_source *src, double strain_max)
{
    double lam_min = src->wavelength_a[0];
    for (int l = 1; l < src->n_lines; l++)
        lam_min = fmin(lam_min, src->wavelength_a[l]);
    double tt = fmin(grid_two_theta_max(grid, src) + 3.0, 179.9);
    return lam_min / (2.0 * sin(0.5 * tt * M_PI / 180.0)) / (1.0 + strain_max);
}

pid_status pid_xrd_dataset_prepare(const pid_phaselib *lib, const k_xrd_grid *grid,
                                   const pid_xrd_source *src, double strain_max, int debye_waller,
                                   k_xrd_refl **refl_out, int *n_refl_out,
                                   pid_aug_phase **phases_out, pid_error *err)
{
    *refl_out = NULL;
    *phases_out = NULL;
    *n_refl_out = 0;
    pid_status st = PID_OK;
    int k = pid_phaselib_count(lib);
    k_xrd_refl *all = NULL;
    pid_aug_phase *ph = calloc((size_t)(k > 0 ? k : 1), sizeof *ph);
    if (!ph) return pid_fail(err, PID_ERR_NOMEM, "dataset: out of memory");
    double d_min = dataset_d_min(grid, src, strain_max);
    int total = 0;
    for (int i = 0; i < k; i++) {
        const pid_structure *s = pid_phaselib_get(lib, i);
        k_xrd_refl *r = NULL;
        int n = 0;
        st = pid_xrd_reflections(s, d_min, debye_waller, &r, &n, err);
        if (st) {
            pid_error_prefix(err, "phase %s", s->name);
            goto fail;
        }
        k_xrd_refl *grown = realloc(all, sizeof *all * (size_t)(total + n > 0 ? total + n : 1));
        if (!grown) {
            free(r);
            st = pid_fail(err, PID_ERR_NOMEM, "dataset: out of memory for reflections");
            goto fail;
        }
        all = grown;
        if (n > 0) memcpy(all + total, r, sizeof *r * (size_t)n);
        free(r);
        ph[i].refl_offset = total;
        ph[i].refl_count = n;
        ph[i].cell[0] = s->a;
        ph[i].cell[1] = s->b;
        ph[i].cell[2] = s->c;
        ph[i].cell[3] = s->alpha;
        ph[i].cell[4] = s->beta;
        ph[i].cell[5] = s->gamma;
        ph[i].cell_mass_amu = pid_structure_cell_mass(s);
        ph[i].volume_a3 = pid_structure_volume(s);
        if (!(ph[i].cell_mass_amu > 0.0 && ph[i].volume_a3 > 0.0)) {
            st = pid_fail(err, PID_ERR_FORMAT, "phase %s: cell mass %g amu / volume %g A^3",
                          s->name, ph[i].cell_mass_amu, ph[i].volume_a3);
            goto fail;
        }
        if (n == 0) PID_LOGW("phase %s has no reflection in range", s->name);
        total += n;
    }
    if (!all && !(all = calloc(1, sizeof *all))) {
        st = pid_fail(err, PID_ERR_NOMEM, "dataset: out of memory");
        goto fail;
    }
    *refl_out = all;
    *n_refl_out = total;
    *phases_out = ph;
    return PID_OK;
fail:
    free(all);
    free(ph);
    return st;
}

/* ------------------------------------------------------------ generation */

typedef struct {
    const pid_xrd_dataset_opts *o;
    const pid_augment *aug;
    pid_aug_ctx ctx;
    const k_xrd_refl *refl;
    int n_refl, n_phases, batch;
    int64_t n_blocks;
    hid_t d_pat, d_mh, d_fr;
    int32_t *labels; /* N, written at the end */
    pthread_mutex_t mu;
    int64_t next_block, done;
    pid_status st;
    pid_error err;
    pid_progress_fn progress;
    void *user;
} gen_state;

/* Per-worker buffers for one block. */
typedef struct {
    k_xrd_pattern *pats;
    pid_aug_label *labs;
    float *out, *fr;
    uint8_t *mh;
} gen_buf;

static void buf_free(gen_buf *b)
{
    free(b->pats);
    free(b->labs);
    free(b->out);
    free(b->fr);
    free(b->mh);
    memset(b, 0, sizeof *b);
}

static pid_status buf_alloc(gen_buf *b, int batch, int n_points, int n_phases, pid_error *err)
{
    memset(b, 0, sizeof *b);
    b->pats = malloc(sizeof *b->pats * (size_t)batch);
    b->labs = malloc(sizeof *b->labs * (size_t)batch);
    b->out = malloc(sizeof(float) * (size_t)batch * (size_t)n_points);
    b->fr = malloc(sizeof(float) * (size_t)batch * (size_t)n_phases);
    b->mh = malloc((size_t)batch * (size_t)n_phases);
    if (!b->pats || !b->labs || !b->out || !b->fr || !b->mh) {
        buf_free(b);
        return pid_fail(err, PID_ERR_NOMEM, "dataset: out of memory for a block of %d patterns",
                        batch);
    }
    return PID_OK;
}

/* Draw the augmentation of rows [row0, row0 + cnt) and fill their labels. */
static pid_status draw_block(gen_state *g, gen_buf *b, int64_t row0, int cnt, pid_error *err)
{
    const int k = g->n_phases;
    memset(b->fr, 0, sizeof(float) * (size_t)cnt * (size_t)k);
    memset(b->mh, 0, (size_t)cnt * (size_t)k);
    for (int i = 0; i < cnt; i++) {
        pid_status st = pid_augment_draw(g->aug, &g->ctx, g->o->seed, (uint64_t)(row0 + i),
                                         &b->pats[i], &b->labs[i], err);
        if (st) return st;
        for (int c = 0; c < b->labs[i].n; c++) {
            b->mh[(size_t)i * k + b->labs[i].phase[c]] = 1;
            b->fr[(size_t)i * k + b->labs[i].phase[c]] = b->labs[i].fraction[c];
        }
    }
    return PID_OK;
}

/* Write a rendered block (caller holds the mutex). */
static pid_status write_block(gen_state *g, gen_buf *b, int64_t row0, int cnt, pid_error *err)
{
    pid_status st;
    const int p = g->ctx.grid.n_points, k = g->n_phases;
    if ((st = pid_h5_write_rows(g->d_pat, H5T_NATIVE_FLOAT, row0, cnt, p, b->out, err))) return st;
    if ((st = pid_h5_write_rows(g->d_mh, H5T_NATIVE_UINT8, row0, cnt, k, b->mh, err))) return st;
    if ((st = pid_h5_write_rows(g->d_fr, H5T_NATIVE_FLOAT, row0, cnt, k, b->fr, err))) return st;
    for (int i = 0; i < cnt; i++)
        g->labels[row0 + i] = b->labs[i].n == 1 ? b->labs[i].phase[0] : -1;
    g->done += cnt;
    if (g->progress) g->progress(g->done, g->o->n, g->user);
    return PID_OK;
}

static void record_error(gen_state *g, pid_status st, const pid_error *e)
{
    pthread_mutex_lock(&g->mu);
    if (!g->st) {
        g->st = st;
        g->err = *e;
    }
    pthread_mutex_unlock(&g->mu);
}

static void *cpu_worker(void *arg)
{
    gen_state *g = arg;
    gen_buf b;
    pid_error err;
    pid_error_clear(&err);
    const int p = g->ctx.grid.n_points;
    pid_status st = buf_alloc(&b, g->batch, p, g->n_phases, &err);
    if (st) {
        record_error(g, st, &err);
        return NULL;
    }
    for (;;) {
        pthread_mutex_lock(&g->mu);
        int64_t blk = g->st ? g->n_blocks : g->next_block++;
        pthread_mutex_unlock(&g->mu);
        if (blk >= g->n_blocks) break;
        int64_t row0 = blk * g->batch;
        int cnt = (int)(g->o->n - row0 < g->batch ? g->o->n - row0 : g->batch);
        st = draw_block(g, &b, row0, cnt, &err);
        if (!st)
            st = k_xrd_render_cpu(NULL, &g->ctx.grid, g->refl, g->n_refl, b.pats, cnt, b.out, &err);
        if (!st) {
            pthread_mutex_lock(&g->mu);
            st = write_block(g, &b, row0, cnt, &err);
            pthread_mutex_unlock(&g->mu);
        }
        if (st) {
            record_error(g, st, &err);
            break;
        }
    }
    buf_free(&b);
    return NULL;
}

static pid_status run_cpu(gen_state *g, int threads, pid_error *err)
{
    if (threads < 1) threads = 1;
    if (threads > g->n_blocks) threads = (int)g->n_blocks;
    pthread_t *tid = calloc((size_t)threads, sizeof *tid);
    if (!tid) return pid_fail(err, PID_ERR_NOMEM, "dataset: out of memory for threads");
    int started = 0;
    for (; started < threads; started++)
        if (pthread_create(&tid[started], NULL, cpu_worker, g)) break;
    if (started == 0) {
        free(tid);
        return pid_fail(err, PID_ERR_INTERNAL, "dataset: cannot start a worker thread");
    }
    for (int i = 0; i < started; i++)
        pthread_join(tid[i], NULL);
    free(tid);
    if (g->st) {
        *err = g->err;
        return g->st;
    }
    return PID_OK;
}

static pid_status run_cuda(gen_state *g, pid_backend *be, pid_error *err)
{
    pid_status st = PID_OK;
    gen_buf b;
    void *d_refl = NULL, *d_out = NULL;
    const int p = g->ctx.grid.n_points;
    const size_t out_bytes = sizeof(float) * (size_t)g->batch * (size_t)p;
    if ((st = buf_alloc(&b, g->batch, p, g->n_phases, err))) return st;
    st = pid_backend_alloc(be, &d_refl,
                           sizeof(k_xrd_refl) * (size_t)(g->n_refl > 0 ? g->n_refl : 1), err);
    if (!st) st = pid_backend_alloc(be, &d_out, out_bytes, err);
    if (!st && g->n_refl > 0)
        st = pid_backend_upload(be, d_refl, g->refl, sizeof(k_xrd_refl) * (size_t)g->n_refl, err);
    for (int64_t blk = 0; !st && blk < g->n_blocks; blk++) {
        int64_t row0 = blk * g->batch;
        int cnt = (int)(g->o->n - row0 < g->batch ? g->o->n - row0 : g->batch);
        st = draw_block(g, &b, row0, cnt, err);
        if (!st)
            st = k_xrd_render(be, &g->ctx.grid, (const k_xrd_refl *)d_refl, g->n_refl, b.pats, cnt,
                              (float *)d_out, err);
        if (!st)
            st = pid_backend_download(be, b.out, d_out, sizeof(float) * (size_t)cnt * (size_t)p,
                                      err);
        if (!st) st = write_block(g, &b, row0, cnt, err);
    }
    pid_backend_free(be, d_refl);
    pid_backend_free(be, d_out);
    buf_free(&b);
    return st;
}

/* ------------------------------------------------------------ provenance */

static pid_status write_attrs(hid_t fid, const pid_xrd_dataset_opts *o, const pid_phaselib *lib,
                              pid_backend *be, double d_min, pid_error *err)
{
    pid_status st;
    const k_xrd_grid *g = &o->grid;
    double last = (double)g->x0 + (double)g->step * (g->n_points - 1);
    double wl[2] = {o->source.wavelength_a[0], o->source.wavelength_a[1]};
    double wt[2] = {o->source.weight[0], o->source.weight[1]};
    const char *lp = o->lp.mode == PID_LP_SYNCHROTRON ? "synchrotron"
                     : o->lp.mode == PID_LP_NONE      ? "none"
                                                      : "lab";
#define TRY(x)                                                                                     \
    do {                                                                                           \
        if ((st = (x))) return st;                                                                 \
    } while (0)
    TRY(pid_h5_attr_str(fid, "generator", "phaseid synth xrd", err));
    TRY(pid_h5_attr_str(fid, "phaseid_version", PHASEID_VERSION, err));
    TRY(pid_h5_attr_str(fid, "command", o->command ? o->command : "", err));
    TRY(pid_h5_attr_i64(fid, "seed", (int64_t)o->seed, err));
    TRY(pid_h5_attr_i64(fid, "compress_level", (int64_t)o->compress, err));
    TRY(pid_h5_attr_i64(fid, "n_patterns", o->n, err));
    TRY(pid_h5_attr_i64(fid, "n_points", g->n_points, err));
    TRY(pid_h5_attr_str(fid, "axis_kind",
                        g->axis == K_XRD_AXIS_Q ? "q_inv_angstrom" : "two_theta_deg", err));
    TRY(pid_h5_attr_f64(fid, "axis_start", g->x0, err));
    TRY(pid_h5_attr_f64(fid, "axis_step", g->step, err));
    TRY(pid_h5_attr_f64(fid, "axis_stop", last, err));
    if (g->axis == K_XRD_AXIS_Q) {
        TRY(pid_h5_attr_f64(fid, "q_min_inv_angstrom", g->x0, err));
        TRY(pid_h5_attr_f64(fid, "q_max_inv_angstrom", last, err));
        TRY(pid_h5_attr_f64(fid, "q_step_inv_angstrom", g->step, err));
    } else {
        TRY(pid_h5_attr_f64(fid, "two_theta_min_deg", g->x0, err));
        TRY(pid_h5_attr_f64(fid, "two_theta_max_deg", last, err));
        TRY(pid_h5_attr_f64(fid, "two_theta_step_deg", g->step, err));
    }
    TRY(pid_h5_attr_str(fid, "source", o->source.name, err));
    TRY(pid_h5_attr_f64(fid, "wavelength_a", o->source.wavelength_a[0], err));
    TRY(pid_h5_attr_f64_array(fid, "wavelengths_a", o->source.n_lines, wl, err));
    TRY(pid_h5_attr_f64_array(fid, "line_weights", o->source.n_lines, wt, err));
    TRY(pid_h5_attr_str(fid, "lp_mode", lp, err));
    TRY(pid_h5_attr_f64(fid, "lp_mono_two_theta_deg", o->lp.mono_two_theta_deg, err));
    TRY(pid_h5_attr_f64(fid, "lp_polarization", o->lp.polarization, err));
    TRY(pid_h5_attr_i64(fid, "debye_waller", o->debye_waller, err));
    TRY(pid_h5_attr_f64(fid, "d_min_angstrom", d_min, err));
    TRY(pid_h5_attr_str(fid, "library_path", pid_phaselib_dir(lib), err));
    TRY(pid_h5_attr_i64(fid, "n_phases", pid_phaselib_count(lib), err));
    TRY(pid_h5_attr_str(fid, "device", be ? pid_backend_name(be) : "cpu", err));
    TRY(pid_h5_attr_str(fid, "normalization", "each pattern divided by its maximum", err));
    TRY(pid_h5_attr_str(fid, "labels", "phase index; -1 for mixtures (see multi_hot, fractions)",
                        err));
    TRY(pid_h5_attr_str(fid, "fractions", "weight fractions; scale = w / (cell mass * V)", err));
    TRY(pid_augment_write_attrs(&o->aug, fid, err));
#undef TRY
    return PID_OK;
}

/* ----------------------------------------------------------------- write */

pid_status pid_xrd_dataset_write(const pid_phaselib *lib, const pid_xrd_dataset_opts *o,
                                 pid_backend *be, const char *out_path, pid_progress_fn progress,
                                 void *user, pid_error *err)
{
    pid_status st = PID_OK;
    k_xrd_refl *refl = NULL;
    pid_aug_phase *phases = NULL;
    float *axis = NULL;
    const char **names = NULL, **formulas = NULL;
    hid_t fid = H5I_INVALID_HID, d_pat = H5I_INVALID_HID, d_mh = H5I_INVALID_HID,
          d_fr = H5I_INVALID_HID;
    int created = 0, mu_init = 0;
    gen_state g;
    memset(&g, 0, sizeof g);
    const int k = pid_phaselib_count(lib);
    const int p = o->grid.n_points;

    if (o->n < 1)
        return pid_fail(err, PID_ERR_ARG, "dataset: number of patterns %lld must be >= 1",
                        (long long)o->n);
    if (k < 1) return pid_fail(err, PID_ERR_ARG, "dataset: the phase library is empty");
    if ((st = pid_augment_validate(&o->aug, err))) return st;
    if (o->source.n_lines < 1 || o->source.n_lines > K_XRD_MAX_LINES)
        return pid_fail(err, PID_ERR_ARG, "dataset: source has %d lines", o->source.n_lines);
    if ((st = k_xrd_render_validate(&o->grid, NULL, 0, NULL, 0, err))) return st;
    int n_refl = 0;
    st =
        pid_xrd_dataset_prepare(lib, &o->grid, &o->source, o->aug.enabled ? o->aug.strain_max : 0.0,
                                o->debye_waller, &refl, &n_refl, &phases, err);
    if (st) return st;

    g.o = o;
    g.aug = &o->aug;
    g.ctx.phases = phases;
    g.ctx.n_phases = k;
    g.ctx.grid = o->grid;
    g.ctx.source = o->source;
    g.ctx.lp = o->lp;
    g.refl = refl;
    g.n_refl = n_refl;
    g.n_phases = k;
    g.progress = progress;
    g.user = user;
    /* Probe: pattern 0's parameters through the renderer's validation
     * (catches e.g. a Q grid beyond 4 pi / lambda) before creating a file. */
    {
        k_xrd_pattern probe;
        pid_aug_label lab;
        if ((st = pid_augment_draw(&o->aug, &g.ctx, o->seed, 0, &probe, &lab, err))) goto done;
        if ((st = k_xrd_render_validate(&o->grid, refl, n_refl, &probe, 1, err))) goto done;
    }
    int cuda = be && pid_backend_kind(be) == PID_DEVICE_CUDA;
    /* Blocks: whole HDF5 chunks of /patterns (the h5 helper uses ~1 MiB
     * chunks of whole rows), about 256 patterns on the CPU, 4096 on CUDA. */
    int crow = (int)(1048576 / (4 * (size_t)p));
    crow = crow < 1 ? 1 : crow;
    int want = o->batch > 0 ? o->batch : (cuda ? 4096 : 256);
    g.batch = want < crow ? crow : (want / crow) * crow;
    if (g.batch > o->n) g.batch = (int)o->n;
    g.n_blocks = (o->n + g.batch - 1) / g.batch;
    g.labels = malloc(sizeof(int32_t) * (size_t)o->n);
    axis = malloc(sizeof(float) * (size_t)p);
    names = malloc(sizeof(char *) * (size_t)k);
    formulas = malloc(sizeof(char *) * (size_t)k);
    if (!g.labels || !axis || !names || !formulas) {
        st =
            pid_fail(err, PID_ERR_NOMEM, "dataset: out of memory for %lld labels", (long long)o->n);
        goto done;
    }
    for (int j = 0; j < p; j++)
        axis[j] = o->grid.x0 + o->grid.step * (float)j;
    for (int i = 0; i < k; i++) {
        names[i] = pid_phaselib_get(lib, i)->name;
        formulas[i] = pid_phaselib_get(lib, i)->formula;
    }

    if ((st = pid_h5_create(out_path, &fid, err))) goto done;
    created = 1;
    if ((st = pid_h5_create_2d(fid, "patterns", H5T_NATIVE_FLOAT, o->n, p, o->compress, &d_pat,
                               err)))
        goto done;
    if ((st = pid_h5_create_2d(fid, "multi_hot", H5T_NATIVE_UINT8, o->n, k, 1, &d_mh, err)))
        goto done;
    if ((st = pid_h5_create_2d(fid, "fractions", H5T_NATIVE_FLOAT, o->n, k, 1, &d_fr, err)))
        goto done;
    if ((st = pid_h5_write_1d(fid, "axis", H5T_NATIVE_FLOAT, p, axis, err))) goto done;
    {
        hid_t ad = H5Dopen2(fid, "axis", H5P_DEFAULT);
        if (ad < 0) {
            st = pid_fail(err, PID_ERR_HDF5, "dataset: cannot reopen /axis");
            goto done;
        }
        st =
            pid_h5_attr_str(ad, "axis_kind",
                            o->grid.axis == K_XRD_AXIS_Q ? "q_inv_angstrom" : "two_theta_deg", err);
        H5Dclose(ad);
        if (st) goto done;
    }
    if ((st = pid_h5_write_strings(fid, "phases", k, names, err))) goto done;
    if ((st = pid_h5_write_strings(fid, "formulas", k, formulas, err))) goto done;
    double d_min_attr =
        dataset_d_min(&o->grid, &o->source, o->aug.enabled ? o->aug.strain_max : 0.0);
    if ((st = write_attrs(fid, o, lib, be, d_min_attr, err))) goto done;

    g.d_pat = d_pat;
    g.d_mh = d_mh;
    g.d_fr = d_fr;
    pthread_mutex_init(&g.mu, NULL);
    mu_init = 1;
    if (cuda)
        st = run_cuda(&g, be, err);
    else {
        int threads = o->threads > 0 ? o->threads : (be ? pid_backend_threads(be) : 1);
        st = run_cpu(&g, threads, err);
    }
    if (st) goto done;
    st = pid_h5_write_1d(fid, "labels", H5T_NATIVE_INT32, o->n, g.labels, err);

done:
    if (mu_init) pthread_mutex_destroy(&g.mu);
    if (d_pat >= 0) H5Dclose(d_pat);
    if (d_mh >= 0) H5Dclose(d_mh);
    if (d_fr >= 0) H5Dclose(d_fr);
    if (fid >= 0 && H5Fclose(fid) < 0 && !st)
        st = pid_fail(err, PID_ERR_HDF5, "%s: closing the file failed", out_path);
    if (st && created) unlink(out_path);
    free(g.labels);
    free(axis);
    free(names);
    free(formulas);
    free(refl);
    free(phases);
    return st;
}

/* ----------------------------------------------- in-memory batch generator */

struct pid_xrd_gen {
    pid_xrd_dataset_opts o;
    pid_aug_ctx ctx;
    k_xrd_refl *refl;
    int n_refl;
    pid_aug_phase *phases;
    int n_phases;
};

void pid_xrd_gen_destroy(pid_xrd_gen *g)
{
    if (!g) return;
    free(g->refl);
    free(g->phases);
    free(g);
}

pid_status pid_xrd_gen_create(pid_xrd_gen **out, const pid_phaselib *lib,
                              const pid_xrd_dataset_opts *o, pid_error *err)
{
    pid_status st;
    *out = NULL;
    const int k = lib ? pid_phaselib_count(lib) : 0;
    if (k < 1) return pid_fail(err, PID_ERR_ARG, "generator: the phase library is empty");
    if ((st = pid_augment_validate(&o->aug, err))) return st;
    if (o->source.n_lines < 1 || o->source.n_lines > K_XRD_MAX_LINES)
        return pid_fail(err, PID_ERR_ARG, "generator: source has %d lines", o->source.n_lines);
    if ((st = k_xrd_render_validate(&o->grid, NULL, 0, NULL, 0, err))) return st;
    pid_xrd_gen *g = calloc(1, sizeof *g);
    if (!g) return pid_fail(err, PID_ERR_NOMEM, "generator: out of memory");
    g->o = *o;
    g->o.command = NULL; /* not owned; not needed */
    st =
        pid_xrd_dataset_prepare(lib, &o->grid, &o->source, o->aug.enabled ? o->aug.strain_max : 0.0,
                                o->debye_waller, &g->refl, &g->n_refl, &g->phases, err);
    if (st) {
        free(g);
        return st;
    }
    g->n_phases = k;
    g->ctx.phases = g->phases;
    g->ctx.n_phases = k;
    g->ctx.grid = o->grid;
    g->ctx.source = o->source;
    g->ctx.lp = o->lp;
    k_xrd_pattern probe;
    pid_aug_label lab;
    st = pid_augment_draw(&g->o.aug, &g->ctx, o->seed, 0, &probe, &lab, err);
    if (!st) st = k_xrd_render_validate(&o->grid, g->refl, g->n_refl, &probe, 1, err);
    if (st) {
        pid_xrd_gen_destroy(g);
        return st;
    }
    *out = g;
    return PID_OK;
}

int pid_xrd_gen_n_points(const pid_xrd_gen *g)
{
    return g->ctx.grid.n_points;
}
int pid_xrd_gen_n_phases(const pid_xrd_gen *g)
{
    return g->n_phases;
}

pid_status pid_xrd_gen_draw(const pid_xrd_gen *g, uint64_t index0, int n, k_xrd_pattern *pats,
                            int32_t *labels, float *multi_hot, float *fractions, pid_error *err)
{
    if (n < 1 || !pats) return pid_fail(err, PID_ERR_ARG, "generator: bad batch (n %d)", n);
    const int k = g->n_phases;
    if (multi_hot) memset(multi_hot, 0, sizeof(float) * (size_t)n * (size_t)k);
    if (fractions) memset(fractions, 0, sizeof(float) * (size_t)n * (size_t)k);
    for (int i = 0; i < n; i++) {
        pid_aug_label lab;
        pid_status st = pid_augment_draw(&g->o.aug, &g->ctx, g->o.seed, index0 + (uint64_t)i,
                                         &pats[i], &lab, err);
        if (st) return st;
        if (labels) labels[i] = lab.n == 1 ? lab.phase[0] : -1;
        for (int c = 0; c < lab.n; c++) {
            if (multi_hot) multi_hot[(size_t)i * k + lab.phase[c]] = 1.0f;
            if (fractions) fractions[(size_t)i * k + lab.phase[c]] = lab.fraction[c];
        }
    }
    return PID_OK;
}

const k_xrd_refl *pid_xrd_gen_refl(const pid_xrd_gen *g, int *n_refl)
{
    if (n_refl) *n_refl = g->n_refl;
    return g->refl;
}

const k_xrd_grid *pid_xrd_gen_grid(const pid_xrd_gen *g)
{
    return &g->ctx.grid;
}

pid_status pid_xrd_generate(const pid_xrd_gen *g, uint64_t index0, int n, float *patterns,
                            int32_t *labels, float *multi_hot, float *fractions, pid_error *err)
{
    if (n < 1 || !patterns) return pid_fail(err, PID_ERR_ARG, "generator: bad batch (n %d)", n);
    k_xrd_pattern *pats = malloc(sizeof *pats * (size_t)n);
    if (!pats) return pid_fail(err, PID_ERR_NOMEM, "generator: out of memory for %d patterns", n);
    pid_status st = pid_xrd_gen_draw(g, index0, n, pats, labels, multi_hot, fractions, err);
    if (!st) st = k_xrd_render_cpu(NULL, &g->ctx.grid, g->refl, g->n_refl, pats, n, patterns, err);
    free(pats);
    return st;
}
