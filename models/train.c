/* Training loop (models/train.h): a producer thread renders the next batch
 * (split over worker threads) while the current one trains, AdamW with
 * warm-up + cosine decay, validation on a held-out index range, checkpoints
 * and the final model file with full provenance. */
#include "core/clock.h"
#include "models/train.h"
#include "synth/outlier.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/rng.h"
#include "kernels/xrd_render.h"
#include "models/calib.h"
#include "models/modelfile.h"
#include "models/net.h"
#include "models/residual.h"
#include "models/spec.h"
#include "models/twins.h"

void train_opts_default(train_opts *o)
{
    memset(o, 0, sizeof *o);
    o->spec = NULL;
    o->steps = 1000;
    o->batch = 64;
    o->lr = 1e-3;
    o->warmup = 100;
    o->weight_decay = 1e-4;
    o->seed = 0;
    o->mixtures = 1;
    o->threads = 0;
    o->n_val = 500;
    o->n_calib = TRAIN_CALIB_DEFAULT_N;
    o->calib_widen = 1.0;
    o->backend_render = -1;
    pid_xrd_dataset_opts_default(&o->gen);
}

double train_lr_at(int64_t s, int64_t steps, int64_t warmup, double lr)
{
    if (s < 0) s = 0;
    if (s < warmup) return lr * (double)(s + 1) / (double)warmup;
    if (s >= steps || steps <= warmup) return 0.0;
    double t = (double)(s - warmup) / (double)(steps - warmup);
    return lr * 0.5 * (1.0 + cos(M_PI * t));
}

pid_status train_opts_validate(const train_opts *o, pid_error *err)
{
    if (o->steps < 1)
        return pid_fail(err, PID_ERR_ARG, "train: steps %lld < 1", (long long)o->steps);
    if (o->batch < 1) return pid_fail(err, PID_ERR_ARG, "train: batch %d < 1", o->batch);
    if (!isfinite(o->lr) || o->lr <= 0 || o->lr > 10)
        return pid_fail(err, PID_ERR_ARG, "train: learning rate %g (need 0 < lr <= 10)", o->lr);
    if (o->warmup < 0 || o->warmup >= o->steps)
        return pid_fail(err, PID_ERR_ARG, "train: warm-up %lld (need 0 <= warmup < steps %lld)",
                        (long long)o->warmup, (long long)o->steps);
    if (!isfinite(o->weight_decay) || o->weight_decay < 0 || o->weight_decay >= 1)
        return pid_fail(err, PID_ERR_ARG, "train: weight decay %g (need 0 <= wd < 1)",
                        o->weight_decay);
    if (o->mixtures < 1 || o->mixtures > K_XRD_MAX_PHASES)
        return pid_fail(err, PID_ERR_ARG, "train: mixtures %d (need 1..%d)", o->mixtures,
                        K_XRD_MAX_PHASES);
    if (o->threads < 0 || o->threads > 4096)
        return pid_fail(err, PID_ERR_ARG, "train: threads %d (need 0..4096)", o->threads);
    if (o->n_val < 0) return pid_fail(err, PID_ERR_ARG, "train: validation size %d < 0", o->n_val);
    if (o->n_calib < 0)
        return pid_fail(err, PID_ERR_ARG, "train: calibration size %d < 0", o->n_calib);
    if (!(o->holdout_frac >= 0 && o->holdout_frac < 1))
        return pid_fail(err, PID_ERR_ARG, "train: held-out phase fraction %g (need 0 <= f < 1)",
                        o->holdout_frac);
    if (!(o->outlier_lattice >= 0 && o->outlier_lattice <= 1))
        return pid_fail(err, PID_ERR_ARG, "train: lattice outlier share %g (need 0..1)",
                        o->outlier_lattice);
    if (!(o->outlier_frac >= 0 && o->outlier_frac <= 0.5))
        return pid_fail(err, PID_ERR_ARG, "train: outlier fraction %g (need 0 <= f <= 0.5)",
                        o->outlier_frac);
    if (!(isfinite(o->calib_widen) && o->calib_widen >= 1.0 && o->calib_widen <= 10.0))
        return pid_fail(err, PID_ERR_ARG, "train: calibration widening %g (need 1 <= f <= 10)",
                        o->calib_widen);
    if (o->checkpoint_every < 0)
        return pid_fail(err, PID_ERR_ARG, "train: checkpoint interval %lld < 0",
                        (long long)o->checkpoint_every);
    return PID_OK;
}

/* ------------------------------------------------ parallel batch rendering */

typedef struct {
    const pid_xrd_gen *gen;
    uint64_t index0;
    int n, p, k;
    float *x, *mh, *fr;
    int32_t *lab;
    pid_status st;
    pid_error err;
} gen_slice;

static void *gen_slice_run(void *arg)
{
    gen_slice *s = arg;
    s->st = pid_xrd_generate(s->gen, s->index0, s->n, s->x, s->lab, s->mh, s->fr, &s->err);
    return NULL;
}

/* Where batches come from: the simulator (gen), or the rows of a dataset
 * file (data): training index i draws row hash(seed, i) mod n_train (with
 * replacement), validation and calibration indices read the n - n_train
 * held-out rows at the end of the file. */
typedef struct {
    const pid_xrd_gen *gen;
    const ds_xrd *data;
    int64_t n_train;
    uint64_t seed;
} train_src;

static int src_n_phases(const train_src *src)
{
    return src->data ? src->data->k : pid_xrd_gen_n_phases(src->gen);
}

static pid_status file_rows(const train_src *src, uint64_t index0, int n, float *x, int32_t *lab,
                            float *mh, float *fr)
{
    const ds_xrd *d = src->data;
    const int64_t n_hold = d->n - src->n_train;
    for (int i = 0; i < n; i++) {
        uint64_t idx = index0 + (uint64_t)i;
        int64_t row;
        if (idx >= TRAIN_CALIB_INDEX_BASE)
            row = src->n_train + (int64_t)((idx - TRAIN_CALIB_INDEX_BASE) % (uint64_t)n_hold);
        else if (idx >= TRAIN_VAL_INDEX_BASE)
            row = src->n_train + (int64_t)((idx - TRAIN_VAL_INDEX_BASE) % (uint64_t)n_hold);
        else {
            pid_u32x4 b = pid_rng_block(src->seed, 0x66696c65ULL /* "file" */, idx);
            uint64_t u = ((uint64_t)b.v[0] << 32) | b.v[1];
            row = (int64_t)(u % (uint64_t)src->n_train);
        }
        memcpy(x + (size_t)i * d->p, d->patterns + row * d->p, sizeof(float) * (size_t)d->p);
        if (lab) lab[i] = d->labels[row];
        if (mh) memcpy(mh + (size_t)i * d->k, d->multi_hot + row * d->k, sizeof(float) * d->k);
        if (fr) memcpy(fr + (size_t)i * d->k, d->fractions + row * d->k, sizeof(float) * d->k);
    }
    return PID_OK;
}

/* Render patterns [index0, index0 + n) into host buffers, split over up to
 * `threads` threads (the calling thread does the first slice). The result
 * does not depend on `threads`. */
static pid_status gen_parallel(const train_src *src, uint64_t index0, int n, int threads, float *x,
                               int32_t *lab, float *mh, float *fr, pid_error *err)
{
    if (src->data) return file_rows(src, index0, n, x, lab, mh, fr);
    const pid_xrd_gen *gen = src->gen;
    enum { MAX_SLICES = 64 };
    gen_slice sl[MAX_SLICES];
    pthread_t tid[MAX_SLICES];
    int started[MAX_SLICES] = {0};
    const int p = pid_xrd_gen_n_points(gen), k = pid_xrd_gen_n_phases(gen);
    if (threads < 1) threads = 1;
    if (threads > MAX_SLICES) threads = MAX_SLICES;
    if (threads > n) threads = n;
    for (int t = 0; t < threads; t++) {
        int a = (int)((int64_t)n * t / threads), b = (int)((int64_t)n * (t + 1) / threads);
        sl[t] = (gen_slice){.gen = gen,
                            .index0 = index0 + (uint64_t)a,
                            .n = b - a,
                            .p = p,
                            .k = k,
                            .x = x + (size_t)a * p,
                            .lab = lab + a,
                            .mh = mh + (size_t)a * k,
                            .fr = fr + (size_t)a * k,
                            .st = PID_OK};
        pid_error_clear(&sl[t].err);
    }
    for (int t = 1; t < threads; t++)
        started[t] = pthread_create(&tid[t], NULL, gen_slice_run, &sl[t]) == 0;
    gen_slice_run(&sl[0]);
    for (int t = 1; t < threads; t++) {
        if (started[t])
            pthread_join(tid[t], NULL);
        else
            gen_slice_run(&sl[t]); /* could not start a thread: do it here */
    }
    for (int t = 0; t < threads; t++)
        if (sl[t].st) {
            if (err) *err = sl[t].err;
            return sl[t].st;
        }
    return PID_OK;
}

/* --------------------------------------------- double-buffered producer */

typedef struct {
    float *x, *mh, *fr;
    float *tgt; /* soft targets [batch, k] (softmax head with outliers), else NULL */
    int32_t *lab;
    /* Rendering on the backend (producer.render_be): the render parameters
     * of the phase rows [0, batch - n_out) and then of the lattice outlier
     * rows (in the lattice generator's reflection table); x then holds only
     * the random-peak outlier rows. NULL otherwise. */
    k_xrd_pattern *pats;
    int full;
} batch_buf;

typedef struct {
    const train_src *src;
    int batch, threads;
    int n_out;            /* outlier rows at the end of every batch */
    int n_lat;            /* the first n_lat of them: lattice outliers from lat */
    pid_xrd_gen *lat;     /* (train_relatives), NULL when n_lat = 0 */
    uint64_t out_seed;    /* their stream */
    k_xrd_grid grid;      /* the generator's grid */
    int render_be;        /* 1: draw only; the training thread renders (batch_buf.pats) */
    int64_t step0, steps; /* produce batches for steps [step0, steps) */
    batch_buf buf[2];     /* step s uses buf[s % 2] */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop;
    pid_status st;
    pid_error err;
} producer;

/* Replace the last n_out rows of step s's batch by outlier patterns with
 * "no phase" targets: label -1, multi-hot 0, uniform fractions and (softmax)
 * uniform soft targets; the other rows get one-hot soft targets. */
static pid_status outliers_fill(const producer *pr, int64_t s, batch_buf *b, pid_error *err)
{
    const int bsz = pr->batch, k = src_n_phases(pr->src), p = pr->grid.n_points;
    const int first = bsz - pr->n_out, nl = pr->n_lat;
    pid_status st = PID_OK;
    if (nl > 0 && pr->render_be)
        st = pid_xrd_gen_draw(pr->lat, (uint64_t)s * (uint64_t)nl, nl, b->pats + first, NULL, NULL,
                              NULL, err);
    else if (nl > 0)
        st = pid_xrd_generate(pr->lat, (uint64_t)s * (uint64_t)nl, nl, b->x + (size_t)first * p,
                              NULL, NULL, NULL, err);
    if (!st)
        st = pid_outlier_patterns(&pr->grid, pr->out_seed, (uint64_t)s * (uint64_t)pr->n_out,
                                  pr->n_out - nl, b->x + (size_t)(first + nl) * p, err);
    if (st) return st;
    for (int i = first; i < bsz; i++) {
        b->lab[i] = -1;
        for (int c = 0; c < k; c++) {
            b->mh[(size_t)i * k + c] = 0.0f;
            b->fr[(size_t)i * k + c] = 1.0f / (float)k;
        }
    }
    if (b->tgt)
        for (int i = 0; i < bsz; i++)
            for (int c = 0; c < k; c++)
                b->tgt[(size_t)i * k + c] =
                    i >= first ? 1.0f / (float)k : (b->lab[i] == c ? 1.0f : 0.0f);
    return PID_OK;
}

static void *producer_run(void *arg)
{
    producer *pr = arg;
    for (int64_t s = pr->step0; s < pr->steps; s++) {
        batch_buf *b = &pr->buf[s % 2];
        pthread_mutex_lock(&pr->mu);
        while (b->full && !pr->stop)
            pthread_cond_wait(&pr->cv, &pr->mu);
        int stop = pr->stop;
        pthread_mutex_unlock(&pr->mu);
        if (stop) break;
        pid_error e;
        pid_error_clear(&e);
        const uint64_t i0 = (uint64_t)s * (uint64_t)pr->batch;
        /* drawing is cheap next to rendering: one thread draws for the backend */
        pid_status st =
            pr->render_be
                ? pid_xrd_gen_draw(pr->src->gen, i0, pr->batch, b->pats, b->lab, b->mh, b->fr, &e)
                : gen_parallel(pr->src, i0, pr->batch, pr->threads, b->x, b->lab, b->mh, b->fr, &e);
        if (!st && pr->n_out > 0) st = outliers_fill(pr, s, b, &e);
        pthread_mutex_lock(&pr->mu);
        if (st) {
            pr->st = st;
            pr->err = e;
        } else
            b->full = 1;
        pthread_cond_broadcast(&pr->cv);
        pthread_mutex_unlock(&pr->mu);
        if (st) break;
    }
    return NULL;
}

/* Wait for step s's batch; NULL (and the producer's error) on failure. */
static batch_buf *producer_get(producer *pr, int64_t s, pid_status *st, pid_error *err)
{
    batch_buf *b = &pr->buf[s % 2];
    pthread_mutex_lock(&pr->mu);
    while (!b->full && !pr->st)
        pthread_cond_wait(&pr->cv, &pr->mu);
    if (!b->full) {
        *st = pr->st;
        if (err) *err = pr->err;
        b = NULL;
    }
    pthread_mutex_unlock(&pr->mu);
    return b;
}

static void producer_release(producer *pr, batch_buf *b)
{
    pthread_mutex_lock(&pr->mu);
    b->full = 0;
    pthread_cond_broadcast(&pr->cv);
    pthread_mutex_unlock(&pr->mu);
}

/* Step input in the network's input buffer `in` (backend memory): the
 * host rows uploaded, or with render_be the phase rows and the lattice
 * outlier rows rendered by the backend (from the reflection tables d_refl
 * and d_lat_refl in its memory) and only the random-peak outlier rows
 * uploaded. */
static pid_status batch_input(const producer *pr, pid_backend *be, const batch_buf *b,
                              const void *d_refl, const void *d_lat_refl, float *in, pid_error *err)
{
    const int bsz = pr->batch, p = pr->grid.n_points;
    if (!pr->render_be)
        return pid_backend_upload(be, in, b->x, sizeof(float) * (size_t)bsz * (size_t)p, err);
    const int first = bsz - pr->n_out, nl = pr->n_lat; /* n_lat is 0 without outliers */
    int nr = 0;
    pid_xrd_gen_refl(pr->src->gen, &nr);
    pid_status st = k_xrd_render(be, &pr->grid, d_refl, nr, b->pats, first, in, err);
    if (!st && nl > 0) {
        int nlr = 0;
        pid_xrd_gen_refl(pr->lat, &nlr);
        st = k_xrd_render(be, pid_xrd_gen_grid(pr->lat), d_lat_refl, nlr, b->pats + first, nl,
                          in + (size_t)first * (size_t)p, err);
    }
    const int r0 = first + nl;
    if (!st && r0 < bsz)
        st = pid_backend_upload(be, in + (size_t)r0 * (size_t)p, b->x + (size_t)r0 * (size_t)p,
                                sizeof(float) * (size_t)(bsz - r0) * (size_t)p, err);
    return st;
}

/* ---------------------------------------------------------- helpers */

/* Correct predictions in a batch of host logits z[b, k]: argmax == label
 * (softmax head), or every class's (z > 0) == multi-hot (sigmoid head:
 * exact set at probability 0.5). */
static int count_correct(const float *z, int b, int k, net_head_kind head, const int32_t *lab,
                         const float *mh)
{
    int correct = 0;
    for (int i = 0; i < b; i++) {
        const float *r = z + (size_t)i * k;
        if (head == NET_HEAD_SOFTMAX) {
            int best = 0;
            for (int c = 1; c < k; c++)
                if (r[c] > r[best]) best = c;
            correct += best == lab[i];
        } else {
            int ok = 1;
            for (int c = 0; c < k && ok; c++)
                ok = (r[c] > 0.0f) == (mh[(size_t)i * k + c] > 0.5f);
            correct += ok;
        }
    }
    return correct;
}

/* The spec text to build: a plain `head` becomes head(sigmoid,fractions)
 * for mixtures. *out is malloc'd. */
static pid_status resolve_spec(const char *text, int mixtures, char **out, pid_error *err)
{
    net_spec *s = NULL;
    char *canon = NULL;
    *out = NULL;
    pid_status st = net_spec_parse(text, &s, err);
    if (st) return st;
    size_t nl = net_spec_n_layers(s);
    net_layer_info last;
    if ((st = net_spec_layer(s, nl - 1, &last, err))) goto done;
    if ((st = net_spec_canonical(s, &canon, err))) goto done;
    if (mixtures > 1) {
        if (!strcmp(last.text, "head")) {
            size_t len = strlen(canon) - strlen("head");
            const char *h = "head(sigmoid,fractions)";
            char *t = malloc(len + strlen(h) + 1);
            if (!t) {
                st = pid_fail(err, PID_ERR_NOMEM, "train: out of memory");
                goto done;
            }
            memcpy(t, canon, len);
            strcpy(t + len, h);
            free(canon);
            canon = t;
        } else if (last.head != NET_HEAD_SIGMOID) {
            st = pid_fail(err, PID_ERR_ARG,
                          "train: mixtures need a sigmoid head (write `head` or "
                          "`head(sigmoid,fractions)`), not '%s'",
                          last.text);
            goto done;
        }
    }
    *out = canon;
    canon = NULL;
done:
    free(canon);
    net_spec_destroy(s);
    return st;
}

static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

/* Fill a model record and save it (atomically) at path. */
/* The phases' cells, space groups and residual-check sticks into the model
 * record (m's grid and residual_strain_max set), so the check runs from the
 * model file alone. */
static pid_status attach_sticks(mf_model *m, const pid_phaselib *lib, pid_error *err)
{
    const int k = pid_phaselib_count(lib);
    pid_xrd_stick **st = calloc((size_t)k, sizeof *st);
    int *ns = calloc((size_t)k, sizeof *ns);
    pid_status s = PID_OK;
    m->phase_cells = malloc(sizeof(double) * 6 * (size_t)k);
    m->phase_sg = malloc(sizeof(int32_t) * (size_t)k);
    m->stick_off = malloc(sizeof(int64_t) * ((size_t)k + 1));
    if (!st || !ns || !m->phase_cells || !m->phase_sg || !m->stick_off) {
        s = pid_fail(err, PID_ERR_NOMEM, "train: out of memory for the phase sticks");
        goto done;
    }
    m->stick_off[0] = 0;
    for (int c = 0; c < k; c++) {
        const pid_structure *p = pid_phaselib_get(lib, c);
        if ((s = rsd_phase_sticks(p, m->grid.x0, m->grid.step, (int)m->grid.n_points,
                                  m->grid.wavelength_a[0], m->residual_strain_max, &st[c], &ns[c],
                                  err)))
            goto done;
        const double cell[6] = {p->a, p->b, p->c, p->alpha, p->beta, p->gamma};
        memcpy(m->phase_cells + 6 * c, cell, sizeof cell);
        m->phase_sg[c] = p->spacegroup_number;
        m->stick_off[c + 1] = m->stick_off[c] + ns[c];
    }
    m->n_sticks = m->stick_off[k];
    m->stick_hkl = malloc(sizeof(int32_t) * 3 * (size_t)(m->n_sticks > 0 ? m->n_sticks : 1));
    m->stick_d = malloc(sizeof(double) * (size_t)(m->n_sticks > 0 ? m->n_sticks : 1));
    m->stick_int = malloc(sizeof(float) * (size_t)(m->n_sticks > 0 ? m->n_sticks : 1));
    if (!m->stick_hkl || !m->stick_d || !m->stick_int) {
        s = pid_fail(err, PID_ERR_NOMEM, "train: out of memory for the phase sticks");
        goto done;
    }
    for (int c = 0; c < k; c++)
        for (int j = 0; j < ns[c]; j++) {
            int64_t r = m->stick_off[c] + j;
            m->stick_hkl[3 * r] = st[c][j].h;
            m->stick_hkl[3 * r + 1] = st[c][j].k;
            m->stick_hkl[3 * r + 2] = st[c][j].l;
            m->stick_d[r] = st[c][j].d_angstrom;
            m->stick_int[r] = (float)st[c][j].intensity;
        }
done:
    for (int c = 0; st && c < k; c++)
        free(st[c]);
    free(st);
    free(ns);
    return s;
}

/* Near twins among the library's phases (models/twins.h) on the training
 * grid and first wavelength, at the strain the augmentation reaches;
 * none on a Q grid. */
typedef struct {
    int32_t *pairs; /* [n][2] */
    float *cos;     /* [n] */
    int n;
} twin_list;

static pid_status library_twins(const pid_phaselib *lib, const pid_xrd_dataset_opts *g,
                                twin_list *tl, pid_error *err)
{
    memset(tl, 0, sizeof *tl);
    if (g->grid.axis != K_XRD_AXIS_TWO_THETA) return PID_OK;
    const int k = pid_phaselib_count(lib);
    const double strain = g->aug.enabled ? g->aug.strain_max : 0.0;
    twin_phase *tp = calloc((size_t)k, sizeof *tp);
    int32_t **hkl = calloc((size_t)k, sizeof *hkl);
    float **in = calloc((size_t)k, sizeof *in);
    pid_status st = PID_OK;
    if (!tp || !hkl || !in) {
        st = pid_fail(err, PID_ERR_NOMEM, "train: out of memory for the near twins");
        goto done;
    }
    for (int c = 0; c < k; c++)
        if ((st = twins_phase_of(pid_phaselib_get(lib, c), g->grid.x0, g->grid.step,
                                 g->grid.n_points, g->source.wavelength_a[0], strain, &tp[c],
                                 &hkl[c], &in[c], err)))
            goto done;
    st = twins_find(tp, k, g->grid.x0, g->grid.step, g->grid.n_points, g->source.wavelength_a[0],
                    strain, TWIN_MIN_COS, &tl->pairs, &tl->cos, &tl->n, err);
done:
    for (int c = 0; c < k; c++) {
        if (hkl) free(hkl[c]);
        if (in) free(in[c]);
    }
    free(hkl);
    free(in);
    free(tp);
    return st;
}

pid_status train_relatives(const pid_phaselib *lib, const pid_xrd_dataset_opts *g, int per_phase,
                           uint64_t seed, pid_phaselib **out, int *n_rejected, pid_error *err)
{
    *out = NULL;
    *n_rejected = 0;
    const int k = pid_phaselib_count(lib), m = k * per_phase, all = k + m;
    if (per_phase < 1 || g->grid.axis != K_XRD_AXIS_TWO_THETA)
        return pid_fail(err, PID_ERR_ARG, "train: lattice outliers need a 2-theta grid");
    const double strain = g->aug.enabled ? g->aug.strain_max : 0.0;
    pid_structure **rel = calloc((size_t)m, sizeof *rel);
    twin_phase *tp = calloc((size_t)all, sizeof *tp);
    int32_t **hkl = calloc((size_t)all, sizeof *hkl), *pairs = NULL;
    float **in = calloc((size_t)all, sizeof *in), *cosv = NULL;
    uint8_t *drop = calloc((size_t)m, 1);
    int n_pairs = 0;
    pid_status st = PID_OK;
    if (!rel || !tp || !hkl || !in || !drop) {
        st = pid_fail(err, PID_ERR_NOMEM, "train: out of memory for lattice outliers");
        goto done;
    }
    for (int i = 0; i < m && !st; i++)
        st = pid_outlier_relative(pid_phaselib_get(lib, i / per_phase), seed, (uint64_t)i, &rel[i],
                                  err);
    for (int i = 0; i < all && !st; i++)
        st = twins_phase_of(i < k ? pid_phaselib_get(lib, i) : rel[i - k], g->grid.x0, g->grid.step,
                            g->grid.n_points, g->source.wavelength_a[0], strain, &tp[i], &hkl[i],
                            &in[i], err);
    if (!st)
        st = twins_find(tp, all, g->grid.x0, g->grid.step, g->grid.n_points,
                        g->source.wavelength_a[0], strain, TRAIN_RELATIVE_MAX_COS, &pairs, &cosv,
                        &n_pairs, err);
    if (st) goto done;
    /* pairs are i < j: a relative (j >= k) close to a known phase (i < k) */
    for (int p = 0; p < n_pairs; p++)
        if (pairs[2 * p] < k && pairs[2 * p + 1] >= k) drop[pairs[2 * p + 1] - k] = 1;
    const pid_structure **keep = malloc(sizeof *keep * (size_t)m);
    int nk = 0;
    if (!keep) {
        st = pid_fail(err, PID_ERR_NOMEM, "train: out of memory for lattice outliers");
        goto done;
    }
    for (int i = 0; i < m; i++)
        if (!drop[i]) keep[nk++] = rel[i];
    *n_rejected = m - nk;
    if (nk > 0) st = pid_phaselib_from(keep, nk, "(lattice outliers)", out, err);
    free(keep);
done:
    for (int i = 0; i < all; i++) {
        if (hkl) free(hkl[i]);
        if (in) free(in[i]);
    }
    for (int i = 0; rel && i < m; i++)
        pid_structure_destroy(rel[i]);
    free(rel);
    free(tp);
    free(hkl);
    free(in);
    free(drop);
    free(pairs);
    free(cosv);
    return st;
}

static pid_status save_model(const char *path, const pid_phaselib *lib, const train_opts *o,
                             const char *canon, const net_spec *spec, net *n, int64_t steps_done,
                             double val_acc, const train_result *cal, const twin_list *tw,
                             double t_nll, int with_opt, pid_error *err)
{
    pid_status st = PID_OK;
    net_spec_totals tot;
    if ((st = net_spec_totals_get(spec, &tot, err))) return st;
    mf_model *m = mf_model_create();
    if (!m) return pid_fail(err, PID_ERR_NOMEM, "train: out of memory");
    const int k = pid_phaselib_count(lib);
    const pid_xrd_dataset_opts *g = &o->gen;
    net_layer_info head;
    if ((st = net_spec_layer(spec, net_spec_n_layers(spec) - 1, &head, err))) goto done;
    char gen_text[8192];
    const char *lp = g->lp.mode == PID_LP_SYNCHROTRON ? "synchrotron"
                     : g->lp.mode == PID_LP_NONE      ? "none"
                                                      : "lab";
    snprintf(gen_text, sizeof gen_text,
             "{\"generator\": \"phaseid train (synth xrd on the fly)\", \"seed\": %llu, "
             "\"mixtures_max\": %d, \"augment\": %d, \"strain_max\": %g, \"zero_shift_max_deg\": "
             "%g, \"displacement_max\": %g, \"size_nm\": [%g, %g], \"microstrain\": [%g, %g], "
             "\"texture_r\": [%g, %g], \"bg_max\": %g, \"hump_height\": [%g, %g], "
             "\"air_height\": [%g, %g], \"poisson_counts\": [%g, %g], \"impurities_max\": %d, "
             "\"min_fraction\": %g, \"outlier_frac\": %g, \"outlier_lattice\": %g, "
             "\"calib_widen\": %g, \"batch_render\": \"%s\", "
             "\"noise_sigma\": [%g, %g], \"lp\": \"%s\", \"debye_waller\": %d, "
             "\"lr\": %g, \"warmup\": %lld, \"schedule\": \"linear warm-up + cosine\", "
             "\"weight_decay\": %g, \"train_index\": \"step * batch + i\", \"n_val\": %d, "
             "\"val_index_base\": %llu, \"val_acc\": %.6f, \"calibrated\": %s",
             (unsigned long long)o->seed, o->mixtures, g->aug.enabled, g->aug.strain_max,
             g->aug.zero_shift_max_deg, g->aug.displacement_max, g->aug.size_nm.lo,
             g->aug.size_nm.hi, g->aug.microstrain.lo, g->aug.microstrain.hi, g->aug.texture_r.lo,
             g->aug.texture_r.hi, g->aug.bg_max, g->aug.hump_height.lo, g->aug.hump_height.hi,
             g->aug.air_height.lo, g->aug.air_height.hi, g->aug.poisson_counts.lo,
             g->aug.poisson_counts.hi, g->aug.impurities_max, g->aug.min_fraction, o->outlier_frac,
             o->outlier_lattice, o->calib_widen,
             o->backend_render > 0 ? "backend renderer" : "CPU worker threads",
             g->aug.noise_sigma.lo, g->aug.noise_sigma.hi, lp, g->debye_waller, o->lr,
             (long long)o->warmup, o->weight_decay, o->n_val,
             (unsigned long long)TRAIN_VAL_INDEX_BASE, val_acc, cal ? "true" : "false");
    size_t gl = strlen(gen_text);
    if (o->data && !strpbrk(o->data->path, "\"\\") &&
        gl + strlen(o->data->path) + 32 < sizeof gen_text) {
        snprintf(gen_text + gl, sizeof gen_text - gl, ", \"dataset\": \"%s\"", o->data->path);
        gl = strlen(gen_text);
    }
    if (cal) {
        snprintf(gen_text + gl, sizeof gen_text - gl,
                 ", \"n_calib\": %d, \"calib_index_base\": %llu, \"temperature_nll_fit\": %.6g, "
                 "\"ece_before\": %.6f, \"ece_after\": %.6f, \"unknown_tpr\": %g, "
                 "\"holdout_frac\": %g, \"n_holdout_phases\": %d, \"residual_threshold\": %g, "
                 "\"residual_auroc\": %.6f, \"missing_threshold\": %g, \"missing_auroc\": %.6f, "
                 "\"flagged_known\": %.6f, \"flagged_unknown\": %.6f, "
                 "\"unknown_auroc_measured\": %s",
                 o->n_calib, (unsigned long long)TRAIN_CALIB_INDEX_BASE, t_nll, cal->ece_before,
                 cal->ece_after, TRAIN_UNKNOWN_TPR, o->holdout_frac, cal->n_unknown_phases,
                 cal->residual_threshold, cal->residual_auroc, cal->missing_threshold,
                 cal->missing_auroc, cal->flagged_known, cal->flagged_unknown,
                 cal->n_unknown_phases > 0 ? "true" : "false");
        gl = strlen(gen_text);
        if (isfinite(cal->ece_per_class) && gl + 40 < sizeof gen_text) {
            snprintf(gen_text + gl, sizeof gen_text - gl, ", \"ece_per_class\": %.6f",
                     cal->ece_per_class);
            gl = strlen(gen_text);
        }
        if (isfinite(cal->set_exact_before) && gl + 160 < sizeof gen_text) {
            snprintf(gen_text + gl, sizeof gen_text - gl,
                     ", \"near_twin_pairs\": %d, \"set_exact_before\": %.6f, "
                     "\"set_exact_after\": %.6f, \"set_thresholds\": [",
                     cal->n_twins, cal->set_exact_before, cal->set_exact_after);
            gl = strlen(gen_text);
            for (int i = 1; i < cal->set_rule.n; i++) {
                snprintf(gen_text + gl, sizeof gen_text - gl, "%s%.4g", i > 1 ? ", " : "",
                         cal->set_rule.thr[i]);
                gl = strlen(gen_text);
            }
            snprintf(gen_text + gl, sizeof gen_text - gl, "]");
            gl = strlen(gen_text);
        }
        if (o->unknown_lib && gl + 32 < sizeof gen_text) {
            strcpy(gen_text + gl, ", \"holdout_phases\": [");
            gl = strlen(gen_text);
            for (int i = 0; i < pid_phaselib_count(o->unknown_lib); i++) {
                const pid_structure *u = pid_phaselib_get(o->unknown_lib, i);
                if (gl + strlen(u->name) + 8 >= sizeof gen_text) break;
                gl += (size_t)snprintf(gen_text + gl, sizeof gen_text - gl, "%s\"%s\"",
                                       i ? ", " : "", u->name);
            }
            strcpy(gen_text + gl, "]");
            gl = strlen(gen_text);
        }
    }
    snprintf(gen_text + gl, sizeof gen_text - gl, "}");
    char created[32];
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(created, sizeof created, "%Y-%m-%dT%H:%M:%SZ", &tm);

    m->modality = dup_str("xrd");
    m->arch_spec = dup_str(canon);
    m->head = head.head;
    m->head_fractions = head.fractions;
    m->input = (net_shape){.rank = 1, .c = 1, .h = 1, .w = g->grid.n_points};
    m->n_classes = k;
    m->phases = calloc((size_t)k, sizeof *m->phases);
    m->grid.axis = g->grid.axis;
    m->grid.x0 = g->grid.x0;
    m->grid.step = g->grid.step;
    m->grid.n_points = g->grid.n_points;
    m->grid.n_lines = g->source.n_lines;
    for (int l = 0; l < g->source.n_lines && l < 2; l++) {
        m->grid.wavelength_a[l] = g->source.wavelength_a[l];
        m->grid.wavelength_weight[l] = g->source.weight[l];
    }
    m->grid.source = dup_str(g->source.name);
    m->preprocessing = dup_str("max-normalize");
    m->background_removal = 0;
    m->normalization = MF_NORM_MAX;
    m->temperature = cal ? cal->temperature : TRAIN_UNCALIBRATED_TEMPERATURE;
    m->ece = cal ? cal->ece_after : TRAIN_UNCALIBRATED_ECE;
    m->unknown_score = dup_str("energy");
    if (cal) {
        m->residual_threshold = cal->residual_threshold;
        m->residual_strain_max = cal->residual_strain;
        m->missing_threshold = cal->missing_threshold;
        m->set_rule = cal->set_rule;
    }
    m->unknown_threshold = cal ? cal->unknown_threshold : TRAIN_UNCALIBRATED_THRESHOLD;
    m->unknown_auroc = cal ? cal->unknown_auroc : TRAIN_UNCALIBRATED_AUROC;
    m->train_seed = o->seed;
    m->train_steps = steps_done;
    m->train_batch = o->batch;
    m->train_flops = (double)steps_done * (double)o->batch * (double)tot.flops_train;
    m->generator = dup_str(gen_text);
    m->phaseid_version = dup_str(PHASEID_VERSION);
    m->created = dup_str(created);
    const char *libdir = o->library ? o->library : pid_phaselib_dir(lib);
    char *abs = realpath(libdir, NULL);
    m->library = dup_str(abs ? abs : libdir);
    free(abs);
    m->n_params = (int64_t)net_param_count(n);
    m->n_buffers = (int64_t)net_buffer_count(n);
    m->params = malloc(sizeof(float) * (size_t)(m->n_params > 0 ? m->n_params : 1));
    m->buffers = m->n_buffers > 0 ? malloc(sizeof(float) * (size_t)m->n_buffers) : NULL;
    if (!m->modality || !m->arch_spec || !m->phases || !m->grid.source || !m->preprocessing ||
        !m->unknown_score || !m->generator || !m->phaseid_version || !m->created || !m->library ||
        !m->params || (m->n_buffers > 0 && !m->buffers)) {
        st = pid_fail(err, PID_ERR_NOMEM, "train: out of memory for the model record");
        goto done;
    }
    for (int i = 0; i < k; i++) {
        const pid_structure *s = pid_phaselib_get(lib, i);
        m->phases[i].name = dup_str(s->name);
        m->phases[i].formula = dup_str(s->formula);
        m->phases[i].source = dup_str(s->source);
        m->phases[i].reference = dup_str(s->reference);
        if (!m->phases[i].name || !m->phases[i].formula || !m->phases[i].source ||
            !m->phases[i].reference) {
            st = pid_fail(err, PID_ERR_NOMEM, "train: out of memory for the phase list");
            goto done;
        }
    }
    if (m->residual_threshold > 0 && (st = attach_sticks(m, lib, err))) goto done;
    if (tw && tw->n > 0) {
        m->twin_pairs = malloc(sizeof(int32_t) * 2 * (size_t)tw->n);
        m->twin_cos = malloc(sizeof(float) * (size_t)tw->n);
        if (!m->twin_pairs || !m->twin_cos) {
            st = pid_fail(err, PID_ERR_NOMEM, "train: out of memory for the near twins");
            goto done;
        }
        memcpy(m->twin_pairs, tw->pairs, sizeof(int32_t) * 2 * (size_t)tw->n);
        memcpy(m->twin_cos, tw->cos, sizeof(float) * (size_t)tw->n);
        m->n_twins = tw->n;
    }
    if ((st = net_params(n, m->params, m->buffers, err))) goto done;
    if (with_opt) {
        /* a checkpoint: the AdamW state too, so a resume continues exactly */
        m->opt_m = malloc(sizeof(float) * (size_t)(m->n_params > 0 ? m->n_params : 1));
        m->opt_v = malloc(sizeof(float) * (size_t)(m->n_params > 0 ? m->n_params : 1));
        if (!m->opt_m || !m->opt_v) {
            st = pid_fail(err, PID_ERR_NOMEM, "train: out of memory for the optimizer state");
            goto done;
        }
        if ((st = net_optimizer_state(n, m->opt_m, m->opt_v, &m->opt_step, err))) goto done;
    }
    st = mf_save(path, m, err);
done:
    mf_model_destroy(m);
    return st;
}

/* Load a checkpoint's weights into n; *step0 = its step count. */
static pid_status load_checkpoint(const char *path, const char *canon, int64_t n_classes,
                                  int64_t n_points, net *n, int64_t *step0, pid_error *err)
{
    mf_model *m = NULL;
    pid_status st = mf_load(path, &m, err);
    if (st) return st;
    if (strcmp(m->arch_spec, canon) != 0 || m->n_classes != n_classes || m->input.w != n_points ||
        m->n_params != (int64_t)net_param_count(n)) {
        st = pid_fail(err, PID_ERR_ARG,
                      "%s: checkpoint does not match (arch '%s', %lld classes, %lld points; "
                      "this run: '%s', %lld classes, %lld points)",
                      path, m->arch_spec, (long long)m->n_classes, (long long)m->input.w, canon,
                      (long long)n_classes, (long long)n_points);
    } else {
        st = net_set_params(n, m->params, m->buffers, err);
        if (!st && m->opt_m) st = net_set_optimizer_state(n, m->opt_m, m->opt_v, m->opt_step, err);
        *step0 = m->train_steps;
    }
    mf_model_destroy(m);
    return st;
}

/* ------------------------------------------------------ calibration */

/* Logits [n, k] of patterns [base, base + n) of generator g (kg phases),
 * rendered and run in batches of bsz; labels [n] and multi-hot [n, kg] are
 * copied out when non-NULL. */
/* Logits (and labels, multi-hot) of `count` patterns from index base; with
 * rsd, also the physics residual of each pattern for the phases the logits
 * predict at temperature T (resid[count]) and its missing-reflection
 * fraction (miss[count]). */
static pid_status forward_set(net *n, pid_backend *be, const train_src *g, uint64_t base, int count,
                              int bsz, int threads, int p, int k, float *logits, int32_t *labels,
                              float *mh, const rsd_table *rsd, net_head_kind head, double T,
                              const calib_set_rule *rule, const uint8_t *twin, double *resid,
                              double *miss, pid_error *err)
{
    const int kg = src_n_phases(g);
    pid_status st = PID_OK;
    float *x = malloc(sizeof(float) * (size_t)bsz * p);
    int32_t *lab = malloc(sizeof(int32_t) * (size_t)bsz);
    float *bm = malloc(sizeof(float) * (size_t)bsz * kg);
    float *bf = malloc(sizeof(float) * (size_t)bsz * kg);
    float *scr = rsd ? malloc(sizeof(float) * (size_t)rsd_scratch_floats(rsd)) : NULL;
    uint8_t *pres = rsd ? malloc((size_t)k) : NULL;
    if (!x || !lab || !bm || !bf || (rsd && (!scr || !pres))) {
        st = pid_fail(err, PID_ERR_NOMEM, "train: out of memory for calibration");
        goto done;
    }
    for (int i0 = 0; i0 < count; i0 += bsz) {
        int cnt = count - i0 < bsz ? count - i0 : bsz;
        if ((st = gen_parallel(g, base + (uint64_t)i0, cnt, threads, x, lab, bm, bf, err)) ||
            (st = pid_backend_upload(be, net_input_buffer(n), x, sizeof(float) * (size_t)cnt * p,
                                     err)) ||
            (st = net_forward(n, net_input_buffer(n), cnt, 0, err)) ||
            (st = pid_backend_download(be, logits + (size_t)i0 * k, net_logits(n),
                                       sizeof(float) * (size_t)cnt * k, err)))
            goto done;
        if (labels) memcpy(labels + i0, lab, sizeof(int32_t) * (size_t)cnt);
        for (int i = 0; rsd && i < cnt; i++) {
            calib_present_set(logits + (size_t)(i0 + i) * k, (size_t)k, head != NET_HEAD_SOFTMAX, T,
                              rule, twin, pres);
            rsd_result rr;
            rsd_check(rsd, x + (size_t)i * p, pres, scr, &rr);
            resid[i0 + i] = rr.unexplained;
            miss[i0 + i] = rr.missing;
        }
        if (mh) memcpy(mh + (size_t)i0 * kg, bm, sizeof(float) * (size_t)cnt * kg);
    }
done:
    free(x);
    free(lab);
    free(bm);
    free(bf);
    free(scr);
    free(pres);
    return st;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The value at fraction q of v[n] (sorted here; 1.0 when n = 0), at least
 * lo and at most 1: a threshold that passes q of the known patterns. */
static double quantile_at_least(double *v, int n, double q, double lo)
{
    if (n == 0) return 1.0;
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    int64_t i = (int64_t)ceil(q * n) - 1;
    if (i < 0) i = 0;
    if (i >= n) i = n - 1;
    double t = v[i] > lo ? v[i] : lo;
    return t > 1.0 ? 1.0 : t;
}

/* The classifier's unknown flag (classify.c) from a pattern's energy,
 * residual and missing fraction, at r's thresholds (0 = that check off). */
static int flagged(double energy, double resid, double miss, const train_result *r)
{
    return energy > r->unknown_threshold ||
           (r->residual_threshold > 0 && resid > r->residual_threshold) ||
           (r->missing_threshold > 0 && miss > r->missing_threshold);
}

/* Temperature, ECE before/after, energy threshold and AUROC into r. The
 * temperature is the NLL fit (*t_nll); should it raise the ECE on the
 * calibration set above that of T = 1 (possible: the NLL and the binned ECE
 * are different criteria), T = 1 is kept, so calibration never worsens the
 * stored ECE. */
static pid_status calibrate(net *n, pid_backend *be, const train_src *src, const pid_phaselib *lib,
                            const train_opts *o, net_head_kind head, int threads, int bsz, int p,
                            int k, const twin_list *tw, train_result *r, double *t_nll,
                            pid_error *err)
{
    const int nc = o->n_calib;
    pid_status st = PID_OK;
    pid_xrd_gen *ugen = NULL, *wgen = NULL;
    rsd_table *rsd = NULL;
    uint8_t *twin = NULL;
    double *rk = NULL, *ru = NULL, *mk = NULL, *mu = NULL, rstrain = 0.0;
    /* The settings of the calibration patterns: the training ones, widened. */
    pid_xrd_dataset_opts co = o->gen;
    co.seed = o->seed;
    co.aug.mixtures_max = o->mixtures;
    co.n = 1;
    if (o->calib_widen > 1.0) {
        if ((st = pid_augment_widen(&o->gen.aug, o->calib_widen, &co.aug, err))) return st;
        co.aug.mixtures_max = o->mixtures;
        if ((st = pid_xrd_gen_create(&wgen, lib, &co, err))) return st;
    }
    const train_src wsrc = {.gen = wgen};
    const train_src *gen = wgen ? &wsrc : src;
    float *z = malloc(sizeof(float) * (size_t)nc * k);
    float *zu = NULL;
    int32_t *lab = malloc(sizeof(int32_t) * (size_t)nc);
    float *mh = malloc(sizeof(float) * (size_t)nc * k);
    double *ek = malloc(sizeof(double) * (size_t)nc), *eu = NULL;
    if (!z || !lab || !mh || !ek) {
        st = pid_fail(err, PID_ERR_NOMEM, "train: out of memory for calibration");
        goto done;
    }
    /* The physics residual check: sticks of every phase on the model grid. */
    if (!o->no_residual) {
        const pid_structure **ph = malloc(sizeof *ph * (size_t)k);
        if (!ph) {
            st = pid_fail(err, PID_ERR_NOMEM, "train: out of memory for calibration");
            goto done;
        }
        for (int c = 0; c < k; c++)
            ph[c] = pid_phaselib_get(lib, c);
        rstrain = co.aug.enabled ? co.aug.strain_max + TRAIN_RESIDUAL_STRAIN_MARGIN
                                 : TRAIN_RESIDUAL_STRAIN_MARGIN;
        if (rstrain > 0.1) rstrain = 0.1;
        st = rsd_create(&rsd, ph, k, co.grid.x0, co.grid.step, co.grid.n_points, co.source.n_lines,
                        co.source.wavelength_a, co.source.weight, rstrain, err);
        free(ph);
        if (st) goto done;
        rk = malloc(sizeof(double) * (size_t)nc);
        ru = malloc(sizeof(double) * (size_t)nc);
        mk = malloc(sizeof(double) * (size_t)nc);
        mu = malloc(sizeof(double) * (size_t)nc);
        if (!rk || !ru || !mk || !mu) {
            st = pid_fail(err, PID_ERR_NOMEM, "train: out of memory for calibration");
            goto done;
        }
    }
    if ((st = forward_set(n, be, gen, TRAIN_CALIB_INDEX_BASE, nc, bsz, threads, p, k, z, lab, mh,
                          NULL, head, 1.0, NULL, NULL, NULL, NULL, err)))
        goto done;
    double T = 1.0, e1 = 1.0, eT = 1.0;
    if (head == NET_HEAD_SOFTMAX) {
        if ((st = calib_fit_temperature(z, lab, (size_t)nc, (size_t)k, &T, err)) ||
            (st = calib_ece(z, lab, (size_t)nc, (size_t)k, 1.0, 0, &e1, NULL, err)) ||
            (st = calib_ece(z, lab, (size_t)nc, (size_t)k, T, 0, &eT, NULL, err)))
            goto done;
    } else {
        /* the stored ECE is the top phase's (calib.h: the per-class one
         * is small whatever the top phase's probability) */
        if ((st = calib_fit_temperature_multilabel(z, mh, (size_t)nc, (size_t)k, &T, err)) ||
            (st = calib_ece_top_multilabel(z, mh, (size_t)nc, (size_t)k, 1.0, 0, &e1, NULL, err)) ||
            (st = calib_ece_top_multilabel(z, mh, (size_t)nc, (size_t)k, T, 0, &eT, NULL, err)))
            goto done;
    }
    *t_nll = T;
    if (eT > e1) {
        T = 1.0;
        eT = e1;
    }
    r->calibrated = 1;
    r->temperature = T;
    r->ece_before = e1;
    r->ece_after = eT;
    r->ece_per_class = NAN;
    if (head != NET_HEAD_SOFTMAX && (st = calib_ece_multilabel(z, mh, (size_t)nc, (size_t)k, T, 0,
                                                               &r->ece_per_class, NULL, err)))
        goto done;
    /* how many phases to report (at T, near twins passed over), then the
     * residuals of that set */
    if (tw && (st = twins_matrix(tw->pairs, tw->n, k, &twin, err))) goto done;
    r->n_twins = tw ? tw->n : 0;
    memset(&r->set_rule, 0, sizeof r->set_rule);
    r->set_exact_before = r->set_exact_after = NAN;
    if (head != NET_HEAD_SOFTMAX && o->mixtures > 1 &&
        (st = calib_fit_set_rule(z, mh, (size_t)nc, (size_t)k, T,
                                 o->mixtures < CALIB_MAX_SET ? o->mixtures : CALIB_MAX_SET, twin,
                                 &r->set_rule, &r->set_exact_before, &r->set_exact_after, err)))
        goto done;
    if (rsd && (st = forward_set(n, be, gen, TRAIN_CALIB_INDEX_BASE, nc, bsz, threads, p, k, z,
                                 NULL, NULL, rsd, head, T, &r->set_rule, twin, rk, mk, err)))
        goto done;
    for (int i = 0; i < nc; i++) {
        ek[i] = calib_energy(z + (size_t)i * k, (size_t)k, T);
        if (isnan(ek[i])) {
            st =
                pid_fail(err, PID_ERR_ARG, "train: non-finite logits on calibration pattern %d", i);
            goto done;
        }
    }
    if ((st =
             calib_threshold_at_tpr(ek, (size_t)nc, TRAIN_UNKNOWN_TPR, &r->unknown_threshold, err)))
        goto done;
    r->residual_threshold = 0.0;
    r->residual_strain = 0.0;
    r->residual_auroc = TRAIN_AUROC_NOT_MEASURED;
    r->missing_threshold = 0.0;
    r->missing_auroc = TRAIN_AUROC_NOT_MEASURED;
    r->flagged_unknown = -1.0;
    if (rsd) {
        double *sorted = malloc(sizeof(double) * (size_t)nc);
        double *msorted = malloc(sizeof(double) * (size_t)nc);
        if (!sorted || !msorted) {
            free(sorted);
            free(msorted);
            st = pid_fail(err, PID_ERR_NOMEM, "train: out of memory for calibration");
            goto done;
        }
        /* over the patterns whose predicted set is right: the residual a
         * right answer leaves (a wrong one should be flagged too) */
        int nr = 0, nm = 0;
        uint8_t *pres = malloc((size_t)k);
        if (!pres) {
            free(sorted);
            free(msorted);
            st = pid_fail(err, PID_ERR_NOMEM, "train: out of memory for calibration");
            goto done;
        }
        for (int i = 0; i < nc; i++) {
            calib_present_set(z + (size_t)i * k, (size_t)k, head != NET_HEAD_SOFTMAX, T,
                              &r->set_rule, twin, pres);
            int right = 1, n_pres = 0;
            for (int c = 0; c < k; c++) {
                n_pres += pres[c] != 0;
                if (right)
                    right = head == NET_HEAD_SOFTMAX ? (c != lab[i] || pres[c])
                                                     : (pres[c] == (mh[(size_t)i * k + c] > 0.5f));
            }
            if (right) sorted[nr++] = rk[i];
            /* the missing side judges a phase reported alone (rsd_check) */
            if (right && n_pres == 1) msorted[nm++] = mk[i];
        }
        free(pres);
        r->residual_threshold =
            quantile_at_least(sorted, nr, TRAIN_RESIDUAL_TPR, TRAIN_RESIDUAL_MIN_THRESHOLD);
        r->missing_threshold =
            quantile_at_least(msorted, nm, TRAIN_MISSING_TPR, TRAIN_MISSING_MIN_THRESHOLD);
        r->residual_strain = rstrain;
        free(sorted);
        free(msorted);
    }
    {
        int64_t fl = 0;
        for (int i = 0; i < nc; i++)
            fl += flagged(ek[i], rk ? rk[i] : 0.0, mk ? mk[i] : 0.0, r);
        r->flagged_known = (double)fl / nc;
    }
    r->unknown_auroc = TRAIN_AUROC_NOT_MEASURED;
    r->n_unknown_phases = 0;
    if (o->unknown_lib && pid_phaselib_count(o->unknown_lib) > 0) {
        pid_xrd_dataset_opts uo = co;
        if (uo.aug.mixtures_max > pid_phaselib_count(o->unknown_lib))
            uo.aug.mixtures_max = pid_phaselib_count(o->unknown_lib);
        uo.n = 1;
        if ((st = pid_xrd_gen_create(&ugen, o->unknown_lib, &uo, err))) goto done;
        if (pid_xrd_gen_n_points(ugen) != p) {
            st = pid_fail(err, PID_ERR_INTERNAL, "train: unknown-phase grid mismatch");
            goto done;
        }
        zu = malloc(sizeof(float) * (size_t)nc * k);
        eu = malloc(sizeof(double) * (size_t)nc);
        if (!zu || !eu) {
            st = pid_fail(err, PID_ERR_NOMEM, "train: out of memory for calibration");
            goto done;
        }
        const train_src usrc = {.gen = ugen};
        if ((st = forward_set(n, be, &usrc, TRAIN_CALIB_INDEX_BASE, nc, bsz, threads, p, k, zu,
                              NULL, NULL, rsd, head, T, &r->set_rule, twin, ru, mu, err)))
            goto done;
        for (int i = 0; i < nc; i++) {
            eu[i] = calib_energy(zu + (size_t)i * k, (size_t)k, T);
            if (isnan(eu[i])) {
                st =
                    pid_fail(err, PID_ERR_ARG, "train: non-finite logits on unknown pattern %d", i);
                goto done;
            }
        }
        if ((st = calib_auroc(ek, (size_t)nc, eu, (size_t)nc, &r->unknown_auroc, err))) goto done;
        if (rsd && ((st = calib_auroc(rk, (size_t)nc, ru, (size_t)nc, &r->residual_auroc, err)) ||
                    (st = calib_auroc(mk, (size_t)nc, mu, (size_t)nc, &r->missing_auroc, err))))
            goto done;
        int64_t fl = 0;
        for (int i = 0; i < nc; i++)
            fl += flagged(eu[i], ru ? ru[i] : 0.0, mu ? mu[i] : 0.0, r);
        r->flagged_unknown = (double)fl / nc;
        r->n_unknown_phases = pid_phaselib_count(o->unknown_lib);
    }
done:
    free(twin);
    rsd_destroy(rsd);
    free(rk);
    free(ru);
    free(mk);
    free(mu);
    pid_xrd_gen_destroy(ugen);
    pid_xrd_gen_destroy(wgen);
    free(z);
    free(zu);
    free(lab);
    free(mh);
    free(ek);
    free(eu);
    return st;
}

/* ---------------------------------------------------- held-out phases */

void train_split_cleanup(const char *known_dir, const char *unknown_dir)
{
    const char *dirs[2] = {known_dir, unknown_dir};
    for (int d = 0; d < 2; d++) {
        if (!dirs[d] || !dirs[d][0]) continue;
        DIR *dp = opendir(dirs[d]);
        if (dp) { /* remove the symbolic links made by train_split_phases */
            struct dirent *e;
            while ((e = readdir(dp)) != NULL) {
                char path[1024];
                struct stat sb;
                snprintf(path, sizeof path, "%s/%s", dirs[d], e->d_name);
                if (!lstat(path, &sb) && S_ISLNK(sb.st_mode)) unlink(path);
            }
            closedir(dp);
        }
        rmdir(dirs[d]);
    }
}

pid_status train_split_phases(const char *dir, double frac, uint64_t seed, char *known_dir,
                              char *unknown_dir, size_t cap, pid_phaselib **known,
                              pid_phaselib **unknown, pid_error *err)
{
    *known = NULL;
    *unknown = NULL;
    if (cap < 64) return pid_fail(err, PID_ERR_ARG, "train: folder buffers too small");
    known_dir[0] = unknown_dir[0] = '\0';
    if (!(frac >= 0 && frac < 1))
        return pid_fail(err, PID_ERR_ARG, "train: held-out phase fraction %g (need 0 <= f < 1)",
                        frac);
    pid_phaselib *all = NULL;
    pid_status st = pid_phaselib_load(dir, &all, err);
    if (st) return st;
    const int np = pid_phaselib_count(all);
    char **files = calloc((size_t)(np > 0 ? np : 1), sizeof *files);
    int *perm = calloc((size_t)(np > 0 ? np : 1), sizeof *perm);
    int nf = 0;
    if (!files || !perm) {
        st = pid_fail(err, PID_ERR_NOMEM, "train: out of memory");
        goto done;
    }
    for (int i = 0; i < np; i++) { /* distinct source files, in library order */
        char *rp = realpath(pid_phaselib_get(all, i)->source, NULL);
        if (!rp) {
            st = pid_fail(err, PID_ERR_IO, "train: cannot resolve %s",
                          pid_phaselib_get(all, i)->source);
            goto done;
        }
        int dup = 0;
        for (int j = 0; j < nf && !dup; j++)
            dup = !strcmp(files[j], rp);
        if (dup)
            free(rp);
        else
            files[nf++] = rp;
    }
    int h = (int)llround(frac * nf);
    if (frac > 0 && h < 1) h = 1;
    if (h > nf - 2) h = nf - 2;
    if (h < 0) h = 0;
    if (frac > 0 && h < 1) {
        st = pid_fail(err, PID_ERR_ARG,
                      "train: cannot hold out phases of a %d-file library (need >= 3 files)", nf);
        goto done;
    }
    for (int i = 0; i < nf; i++)
        perm[i] = i;
    pid_rng rng;
    pid_rng_init(&rng, seed, 0x686f6c646f7574ULL); /* "holdout" */
    for (int i = nf - 1; i > 0; i--) {
        int j = (int)pid_rng_below(&rng, (uint32_t)(i + 1));
        int t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    /* perm[0..h) are held out */
    snprintf(known_dir, cap, "/tmp/phaseid_known_XXXXXX");
    if (!mkdtemp(known_dir)) {
        known_dir[0] = '\0';
        st = pid_fail(err, PID_ERR_IO, "train: cannot make a temporary folder");
        goto done;
    }
    if (h > 0) {
        snprintf(unknown_dir, cap, "/tmp/phaseid_unknown_XXXXXX");
        if (!mkdtemp(unknown_dir)) {
            unknown_dir[0] = '\0';
            st = pid_fail(err, PID_ERR_IO, "train: cannot make a temporary folder");
            goto done;
        }
    }
    for (int i = 0; i < nf; i++) {
        const char *f = files[perm[i]];
        const char *b = strrchr(f, '/');
        char link[1024];
        snprintf(link, sizeof link, "%s/%s", i < h ? unknown_dir : known_dir, b ? b + 1 : f);
        if (symlink(f, link)) {
            st = pid_fail(err, PID_ERR_IO, "train: cannot link %s", link);
            goto done;
        }
    }
    if ((st = pid_phaselib_load(known_dir, known, err))) goto done;
    if (h > 0 && (st = pid_phaselib_load(unknown_dir, unknown, err))) goto done;
done:
    if (st) {
        pid_phaselib_destroy(*known);
        pid_phaselib_destroy(*unknown);
        *known = *unknown = NULL;
        train_split_cleanup(known_dir, unknown_dir);
        known_dir[0] = unknown_dir[0] = '\0';
    }
    for (int i = 0; i < nf; i++)
        free(files[i]);
    free(files);
    free(perm);
    pid_phaselib_destroy(all);
    return st;
}

/* ---------------------------------------------------------- train_run */

/* A dataset file must hold the library's phases in its order, fit the head
 * (mixture rows need mixtures > 1) and leave rows for training after the
 * held-out tail (validation and calibration: max(n_val, n_calib) rows, at most
 * a fifth of the file). */
static pid_status check_data(const pid_phaselib *lib, const train_opts *o, int64_t *n_train,
                             pid_error *err)
{
    const ds_xrd *d = o->data;
    if (d->k != pid_phaselib_count(lib))
        return pid_fail(err, PID_ERR_ARG, "train: %s has %d phases, the library %s has %d", d->path,
                        d->k, pid_phaselib_dir(lib), pid_phaselib_count(lib));
    for (int i = 0; i < d->k; i++)
        if (strcmp(d->names[i], pid_phaselib_get(lib, i)->name) != 0)
            return pid_fail(err, PID_ERR_ARG,
                            "train: phase %d of %s is '%s' but '%s' in the library %s", i, d->path,
                            d->names[i], pid_phaselib_get(lib, i)->name, pid_phaselib_dir(lib));
    if (d->mixtures_max > o->mixtures)
        return pid_fail(err, PID_ERR_ARG,
                        "train: %s has patterns of up to %d phases: train with mixtures >= %d",
                        d->path, d->mixtures_max, d->mixtures_max);
    if (o->unknown_lib)
        return pid_fail(err, PID_ERR_ARG,
                        "train: held-out phases need simulated calibration data, not a file");
    if (o->calib_widen > 1.0)
        return pid_fail(err, PID_ERR_ARG,
                        "train: calibration widening needs simulated calibration data, not a file");
    int64_t hold = o->n_val > o->n_calib ? o->n_val : o->n_calib;
    if (hold > d->n / 5) hold = d->n / 5;
    if (hold < 1 && (o->n_val > 0 || o->n_calib > 0)) hold = 1;
    if (d->n - hold < 1)
        return pid_fail(err, PID_ERR_ARG, "train: %s has too few patterns (%lld)", d->path,
                        (long long)d->n);
    *n_train = d->n - hold;
    return PID_OK;
}

/* "  eta 42s", "  eta 12m05s" or "  eta 1h02m": the rest of the training
 * at the rate so far (steps only: calibration comes after). */
static void fmt_eta(char *buf, size_t size, double sec)
{
    if (!(sec >= 0.0) || sec > 1e7) {
        buf[0] = '\0';
        return;
    }
    long v = lround(sec);
    if (v < 60)
        snprintf(buf, size, "  eta %lds", v);
    else if (v < 3600)
        snprintf(buf, size, "  eta %ldm%02lds", v / 60, v % 60);
    else
        snprintf(buf, size, "  eta %ldh%02ldm", v / 3600, v % 3600 / 60);
}

pid_status train_run(const pid_phaselib *lib, const train_opts *o, pid_backend *be,
                     const char *out_path, train_result *res, pid_error *err)
{
    pid_status st;
    if ((st = train_opts_validate(o, err))) return st;
    train_opts opt = *o;
    opt.gen.seed = o->seed;
    opt.gen.aug.mixtures_max = o->mixtures;
    opt.gen.n = 1;
    const int k = pid_phaselib_count(lib);
    const int bsz = o->batch;
    const int threads = o->threads > 0 ? o->threads : (be ? pid_backend_threads(be) : 1);
    pid_xrd_gen *gen = NULL;
    pid_phaselib *lat_lib = NULL; /* lattice outliers (train_relatives) */
    pid_xrd_gen *lat_gen = NULL;
    net_spec *spec = NULL;
    net *n = NULL;
    char *canon = NULL;
    float *zh = NULL, *vx = NULL, *vmh = NULL, *vfr = NULL;
    int32_t *vlab = NULL;
    void *d_lab = NULL, *d_mh = NULL, *d_fr = NULL, *d_tgt = NULL;
    void *d_refl = NULL, *d_lat_refl = NULL; /* reflection tables when rendering on the backend */
    producer pr;
    memset(&pr, 0, sizeof pr);
    int pr_sync = 0, pr_started = 0;
    pthread_t pr_tid;
    train_result r = {.val_acc = -1.0};
    twin_list tw = {0};

    train_src src = {.data = o->data, .seed = pid_rng_mix(o->seed, 0x737263ULL)};
    if (o->data) {
        if ((st = check_data(lib, o, &src.n_train, err))) return st;
        opt.gen.grid = o->data->grid;
        opt.gen.source = o->data->source;
        const int64_t n_hold = o->data->n - src.n_train;
        if (opt.n_val > n_hold) opt.n_val = (int)n_hold;
        if (opt.n_calib > n_hold) opt.n_calib = (int)n_hold;
        o = &opt;
    } else {
        if ((st = pid_xrd_gen_create(&gen, lib, &opt.gen, err))) return st;
        src.gen = gen;
    }
    const int p = o->data ? o->data->p : pid_xrd_gen_n_points(gen);
    if ((st = resolve_spec(o->spec ? o->spec : NET_SPEC_DEFAULT_XRD, o->mixtures, &canon, err)))
        goto done;
    if ((st = net_spec_parse(canon, &spec, err))) goto done;
    net_shape in = {.rank = 1, .c = 1, .h = 1, .w = p};
    if ((st = net_spec_build(spec, &in, k, err))) goto done;
    net_layer_info head;
    if ((st = net_spec_layer(spec, net_spec_n_layers(spec) - 1, &head, err))) goto done;
    if (head.head == NET_HEAD_SOFTMAX && o->mixtures > 1) {
        st = pid_fail(err, PID_ERR_ARG, "train: a softmax head cannot learn mixtures");
        goto done;
    }
    if ((st = net_create(&n, spec, be, bsz, pid_rng_mix(o->seed, 0x6e6574ULL), err))) goto done;
    const size_t kb = (size_t)bsz * (size_t)k;
    zh = malloc(sizeof(float) * kb);
    if (!zh) {
        st = pid_fail(err, PID_ERR_NOMEM, "train: out of memory");
        goto done;
    }
    if ((st = pid_backend_alloc(be, &d_lab, sizeof(int32_t) * (size_t)bsz, err)) ||
        (st = pid_backend_alloc(be, &d_mh, sizeof(float) * kb, err)) ||
        (st = pid_backend_alloc(be, &d_fr, sizeof(float) * kb, err)) ||
        (st = pid_backend_alloc(be, &d_tgt, sizeof(float) * kb, err)))
        goto done;

    int64_t step0 = 0;
    if (o->resume && (st = load_checkpoint(o->resume, canon, k, p, n, &step0, err))) goto done;
    if (step0 > o->steps) step0 = o->steps;

    pr.src = &src;
    pr.batch = bsz;
    pr.n_out = (int)floor(o->outlier_frac * bsz + 0.5);
    if (pr.n_out >= bsz) pr.n_out = bsz - 1;
    pr.out_seed = pid_rng_mix(o->seed, 0x6f7574ULL);
    if (pr.n_out > 0 && o->outlier_lattice > 0) {
        int rejected = 0;
        pid_xrd_dataset_opts lo = opt.gen;
        lo.aug.mixtures_max = 1;
        lo.seed = pid_rng_mix(o->seed, 0x6c6174ULL);
        if ((st = train_relatives(lib, &opt.gen, TRAIN_RELATIVES_PER_PHASE, lo.seed, &lat_lib,
                                  &rejected, err)))
            goto done;
        if (lat_lib && (st = pid_xrd_gen_create(&lat_gen, lat_lib, &lo, err))) goto done;
        pr.lat = lat_gen;
        pr.n_lat = lat_gen ? (int)floor(o->outlier_lattice * pr.n_out + 0.5) : 0;
        if (!o->quiet)
            printf("phaseid train: %d lattice outliers (%d too close to a known phase dropped), "
                   "%d of the %d outlier rows per batch\n",
                   lat_lib ? pid_phaselib_count(lat_lib) : 0, rejected, pr.n_lat, pr.n_out);
    }
    pr.grid = opt.gen.grid;
    pr.threads = threads;
    /* Batches rendered by the backend's renderer (the CUDA renderer straight
     * into the network's input) or by CPU worker threads. */
    pr.render_be = !o->data && (o->backend_render > 0 || (o->backend_render < 0 && be &&
                                                          pid_backend_kind(be) == PID_DEVICE_CUDA));
    opt.backend_render = pr.render_be;
    o = &opt; /* (the same settings; the provenance records the choice) */
    if (!o->quiet && pr.render_be)
        printf("phaseid train: training batches rendered by the %s renderer (validation and "
               "calibration patterns by CPU threads)\n",
               be && pid_backend_kind(be) == PID_DEVICE_CUDA ? "CUDA" : "backend's");
    if (pr.render_be) {
        int nr = 0, nlr = 0;
        const k_xrd_refl *refl = pid_xrd_gen_refl(gen, &nr);
        const k_xrd_refl *lrefl = lat_gen ? pid_xrd_gen_refl(lat_gen, &nlr) : NULL;
        if ((st = pid_backend_alloc(be, &d_refl, sizeof(k_xrd_refl) * (size_t)(nr > 0 ? nr : 1),
                                    err)) ||
            (nr > 0 &&
             (st = pid_backend_upload(be, d_refl, refl, sizeof(k_xrd_refl) * (size_t)nr, err))))
            goto done;
        if (lat_gen &&
            ((st = pid_backend_alloc(be, &d_lat_refl,
                                     sizeof(k_xrd_refl) * (size_t)(nlr > 0 ? nlr : 1), err)) ||
             (nlr > 0 && (st = pid_backend_upload(be, d_lat_refl, lrefl,
                                                  sizeof(k_xrd_refl) * (size_t)nlr, err)))))
            goto done;
    }
    pr.step0 = step0;
    pr.steps = o->steps;
    for (int i = 0; i < 2; i++) {
        pr.buf[i].x = malloc(sizeof(float) * (size_t)bsz * (size_t)p);
        pr.buf[i].lab = malloc(sizeof(int32_t) * (size_t)bsz);
        pr.buf[i].mh = malloc(sizeof(float) * kb);
        pr.buf[i].fr = malloc(sizeof(float) * kb);
        if (pr.n_out > 0 && head.head == NET_HEAD_SOFTMAX)
            pr.buf[i].tgt = malloc(sizeof(float) * kb);
        if (pr.render_be) pr.buf[i].pats = malloc(sizeof(k_xrd_pattern) * (size_t)bsz);
        if (!pr.buf[i].x || !pr.buf[i].lab || !pr.buf[i].mh || !pr.buf[i].fr ||
            (pr.n_out > 0 && head.head == NET_HEAD_SOFTMAX && !pr.buf[i].tgt) ||
            (pr.render_be && !pr.buf[i].pats)) {
            st = pid_fail(err, PID_ERR_NOMEM, "train: out of memory for batch buffers");
            goto done;
        }
    }
    pthread_mutex_init(&pr.mu, NULL);
    pthread_cond_init(&pr.cv, NULL);
    pr_sync = 1;
    if (pthread_create(&pr_tid, NULL, producer_run, &pr)) {
        st = pid_fail(err, PID_ERR_INTERNAL, "train: cannot start the generator thread");
        goto done;
    }
    pr_started = 1;

    const int tty = isatty(fileno(stderr));
    const int64_t every = o->steps / 20 > 0 ? o->steps / 20 : 1;
    const int64_t ck_every =
        o->checkpoint_every > 0 ? o->checkpoint_every : (o->steps / 10 > 0 ? o->steps / 10 : 1);
    const int has_fr = net_has_fractions(n);
    double t0 = pid_mono_s(), t_print = t0, loss = 0.0;
    int64_t win_correct = 0, win_total = 0, tail_correct = 0, tail_total = 0;
    for (int64_t s = step0; s < o->steps; s++) {
        batch_buf *b = producer_get(&pr, s, &st, err);
        if (!b) goto done;
        st = batch_input(&pr, be, b, d_refl, d_lat_refl, net_input_buffer(n), err);
        if (!st) st = pid_backend_upload(be, d_lab, b->lab, sizeof(int32_t) * (size_t)bsz, err);
        if (!st) st = pid_backend_upload(be, d_mh, b->mh, sizeof(float) * kb, err);
        if (!st) st = pid_backend_upload(be, d_fr, b->fr, sizeof(float) * kb, err);
        if (!st && b->tgt) st = pid_backend_upload(be, d_tgt, b->tgt, sizeof(float) * kb, err);
        if (!st) st = net_forward(n, net_input_buffer(n), bsz, 1, err);
        net_targets tg = {0};
        if (head.head == NET_HEAD_SOFTMAX && b->tgt)
            tg.targets = d_tgt;
        else if (head.head == NET_HEAD_SOFTMAX)
            tg.labels = d_lab;
        else
            tg.targets = d_mh;
        if (has_fr) tg.fractions = d_fr;
        if (!st) st = net_loss_backward(n, &tg, bsz, &loss, err);
        if (!st) st = pid_backend_download(be, zh, net_logits(n), sizeof(float) * kb, err);
        /* training accuracy over the phase rows (outliers have no right class) */
        int correct = st ? 0 : count_correct(zh, bsz - pr.n_out, k, head.head, b->lab, b->mh);
        producer_release(&pr, b);
        if (st) goto done;
        if (!isfinite(loss)) {
            st = pid_fail(err, PID_ERR_ARG,
                          "train: loss is %g at step %lld (learning rate too high?)", loss,
                          (long long)s);
            goto done;
        }
        double lr = train_lr_at(s, o->steps, o->warmup, o->lr);
        if ((st = net_step(n, (float)lr, (float)o->weight_decay, err))) goto done;
        if (o->loss_curve) o->loss_curve[s] = loss;
        win_correct += correct;
        win_total += bsz - pr.n_out;
        if (s >= o->steps - 50) {
            tail_correct += correct;
            tail_total += bsz - pr.n_out;
        }
        int last = s + 1 == o->steps;
        double t = pid_mono_s();
        if (!o->quiet &&
            ((tty && (t - t_print > 0.25 || last)) || (!tty && ((s + 1) % every == 0 || last)))) {
            double sps = (double)(s + 1 - step0) * bsz / (t - t0 > 1e-9 ? t - t0 : 1e-9);
            char eta[32] = "";
            if (!last) fmt_eta(eta, sizeof eta, (double)(o->steps - s - 1) * bsz / sps);
            fprintf(stderr, "%sstep %lld/%lld  loss %.4f  acc %.3f  lr %.2e  %.0f samples/s%s%s",
                    tty ? "\r" : "", (long long)(s + 1), (long long)o->steps, loss,
                    (double)win_correct / (double)win_total, lr, sps, eta, tty ? "  " : "\n");
            if (tty && last) fputc('\n', stderr);
            t_print = t;
            win_correct = win_total = 0;
        }
        if (o->checkpoint && ((s + 1) % ck_every == 0 || last)) {
            if ((st = save_model(o->checkpoint, lib, &opt, canon, spec, n, s + 1, -1.0, NULL, NULL,
                                 1.0, 1, err)))
                goto done;
        }
    }
    r.n_val = o->n_val;
    r.n_calib = o->n_calib;
    r.train_seconds = pid_mono_s() - t0;
    r.steps_done = o->steps;
    r.final_loss = loss;
    r.train_acc = tail_total ? (double)tail_correct / (double)tail_total : 0.0;
    r.samples_per_s = r.train_seconds > 0 ? (double)(o->steps - step0) * bsz / r.train_seconds : 0;

    if (o->n_val > 0) {
        vx = malloc(sizeof(float) * (size_t)bsz * p);
        vlab = malloc(sizeof(int32_t) * (size_t)bsz);
        vmh = malloc(sizeof(float) * kb);
        vfr = malloc(sizeof(float) * kb);
        if (!vx || !vlab || !vmh || !vfr) {
            st = pid_fail(err, PID_ERR_NOMEM, "train: out of memory for validation");
            goto done;
        }
        int64_t correct = 0;
        for (int i0 = 0; i0 < o->n_val; i0 += bsz) {
            int cnt = o->n_val - i0 < bsz ? o->n_val - i0 : bsz;
            if ((st = gen_parallel(&src, TRAIN_VAL_INDEX_BASE + (uint64_t)i0, cnt, threads, vx,
                                   vlab, vmh, vfr, err)))
                goto done;
            if ((st = pid_backend_upload(be, net_input_buffer(n), vx,
                                         sizeof(float) * (size_t)cnt * p, err)) ||
                (st = net_forward(n, net_input_buffer(n), cnt, 0, err)) ||
                (st = pid_backend_download(be, zh, net_logits(n), sizeof(float) * (size_t)cnt * k,
                                           err)))
                goto done;
            correct += count_correct(zh, cnt, k, head.head, vlab, vmh);
        }
        r.val_acc = (double)correct / (double)o->n_val;
    }
    double t_nll = 1.0;
    if (o->n_calib > 0 && ((st = library_twins(lib, &opt.gen, &tw, err)) ||
                           (st = calibrate(n, be, &src, lib, o, head.head, threads, bsz, p, k, &tw,
                                           &r, &t_nll, err))))
        goto done;
    if (out_path && (st = save_model(out_path, lib, &opt, canon, spec, n, o->steps, r.val_acc,
                                     o->n_calib > 0 ? &r : NULL, &tw, t_nll, 0, err)))
        goto done;
    if (res) *res = r;

done:
    if (pr_started) {
        pthread_mutex_lock(&pr.mu);
        pr.stop = 1;
        pthread_cond_broadcast(&pr.cv);
        pthread_mutex_unlock(&pr.mu);
        pthread_join(pr_tid, NULL);
    }
    if (pr_sync) {
        pthread_mutex_destroy(&pr.mu);
        pthread_cond_destroy(&pr.cv);
    }
    for (int i = 0; i < 2; i++) {
        free(pr.buf[i].x);
        free(pr.buf[i].lab);
        free(pr.buf[i].mh);
        free(pr.buf[i].fr);
        free(pr.buf[i].tgt);
        free(pr.buf[i].pats);
    }
    if (be) {
        pid_backend_free(be, d_refl);
        pid_backend_free(be, d_lat_refl);
        pid_backend_free(be, d_lab);
        pid_backend_free(be, d_mh);
        pid_backend_free(be, d_fr);
        pid_backend_free(be, d_tgt);
    }
    free(zh);
    free(vx);
    free(vlab);
    free(tw.pairs);
    free(tw.cos);
    free(vmh);
    free(vfr);
    net_destroy(n);
    net_spec_destroy(spec);
    free(canon);
    pid_xrd_gen_destroy(gen);
    pid_xrd_gen_destroy(lat_gen);
    pid_phaselib_destroy(lat_lib);
    return st;
}
