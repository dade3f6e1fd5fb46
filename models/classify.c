/* Inference with a trained model file: cls_open builds the stored spec on a
 * backend with the stored weights; cls_prepare_* put patterns on the model
 * grid; cls_run gives probabilities, fractions and the energy unknown score. */
#include "models/classify.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels/backend.h"
#include "models/calib.h"
#include "models/net.h"
#include "models/residual.h"
#include "models/twins.h"
#include "models/spec.h"
#include "core/log.h"
#include "synth/cif.h"
#include "synth/phaselib.h"

/* SNIP half windows for the model's background removal (same 1.5 deg as the
 * physics baseline in synth/match.c; ~the same width in Q near 45 deg Cu). */
#define CLS_BG_WINDOW_DEG 1.5
#define CLS_BG_WINDOW_Q 0.1

struct cls_classifier {
    mf_model *model;
    net_spec *spec;
    pid_backend *be;
    net *net;
    int max_batch;
    int64_t frame_size;
    float *logits;      /* host [max_batch, K] */
    float *flogits;     /* host [max_batch, K], NULL without a fractions head */
    double *scratch;    /* host [K] */
    rsd_table *rsd;     /* physics residual check, NULL when off */
    float *rsd_scratch; /* [threads][rsd_scratch_floats] */
    int rsd_threads;
    uint8_t *twin; /* [K * K] near twins (twins_matrix), NULL when the file has none */
};

/* The CIF of model phase i: its recorded source when readable, else the
 * built-in library's file of that name. The structure whose name matches
 * (or the file's only one) goes to *out (caller destroys). */
static pid_status phase_structure(const mf_phase *ph, pid_structure **out, pid_error *err)
{
    char path[1200], dir[600];
    const char *cand[2] = {NULL, NULL};
    if (ph->source && ph->source[0] && access(ph->source, R_OK) == 0) cand[0] = ph->source;
    if (pid_phaselib_builtin_dir(dir, sizeof dir, err) == PID_OK) {
        snprintf(path, sizeof path, "%s/%s.cif", dir, ph->name);
        if (access(path, R_OK) == 0) cand[1] = path;
    }
    for (int i = 0; i < 2; i++) {
        if (!cand[i]) continue;
        pid_structure *arr = NULL;
        int n = 0;
        if (pid_cif_read(cand[i], &arr, &n, err) || n < 1) continue;
        int pick = 0;
        for (int j = 0; j < n; j++)
            if (!strcmp(arr[j].name, ph->name)) pick = j;
        pid_status st = pid_structure_clone(&arr[pick], out, err);
        pid_structure_array_destroy(arr, n);
        if (!st) return PID_OK;
    }
    return pid_fail(err, PID_ERR_IO, "no readable CIF for phase '%s'", ph->name);
}

/* Build the residual check when the model asks for it; on any failure the
 * check is off (a warning says why) and classification goes on. */
static void residual_setup(cls_classifier *c, int threads)
{
    const mf_model *m = c->model;
    if (!(m->residual_threshold > 0) || m->grid.axis != 0) return;
    const int64_t k = m->n_classes;
    pid_error e;
    pid_error_clear(&e);
    int ok;
    if (m->stick_off) {
        /* the model file carries the sticks: no CIF needed */
        rsd_phase *rp = calloc((size_t)k, sizeof *rp);
        ok = rp != NULL;
        for (int64_t i = 0; ok && i < k; i++) {
            memcpy(rp[i].cell, m->phase_cells + 6 * i, sizeof rp[i].cell);
            rp[i].spacegroup = m->phase_sg[i];
            rp[i].n = (int)(m->stick_off[i + 1] - m->stick_off[i]);
            rp[i].hkl = m->stick_hkl + 3 * m->stick_off[i];
            rp[i].d = m->stick_d + m->stick_off[i];
            rp[i].intensity = m->stick_int ? m->stick_int + m->stick_off[i] : NULL;
        }
        if (ok)
            ok = rsd_create_from(&c->rsd, rp, (int)k, m->grid.x0, m->grid.step,
                                 (int)m->grid.n_points, m->grid.n_lines, m->grid.wavelength_a,
                                 m->grid.wavelength_weight, m->residual_strain_max, &e) == PID_OK;
        else
            pid_fail(&e, PID_ERR_NOMEM, "out of memory");
        free(rp);
    } else {
        /* older model files: the phases' CIFs (their recorded paths, or the
         * built-in library by name) */
        pid_structure **ph = calloc((size_t)k, sizeof *ph);
        ok = ph != NULL;
        for (int64_t i = 0; ok && i < k; i++)
            ok = phase_structure(&m->phases[i], &ph[i], &e) == PID_OK;
        if (ok) {
            ok = rsd_create(&c->rsd, (const pid_structure *const *)ph, (int)k, m->grid.x0,
                            m->grid.step, (int)m->grid.n_points, m->grid.n_lines,
                            m->grid.wavelength_a, m->grid.wavelength_weight, m->residual_strain_max,
                            &e) == PID_OK;
        }
        for (int64_t i = 0; ph && i < k; i++)
            pid_structure_destroy(ph[i]);
        free(ph);
    }
    if (ok) {
        c->rsd_threads = threads > 0 ? threads : 1;
        c->rsd_scratch =
            malloc(sizeof(float) * (size_t)rsd_scratch_floats(c->rsd) * (size_t)c->rsd_threads);
        ok = c->rsd_scratch != NULL;
        if (!ok) pid_fail(&e, PID_ERR_NOMEM, "out of memory");
    }
    if (!ok) {
        PID_LOGW("classify: physics residual check off: %s", e.msg);
        rsd_destroy(c->rsd);
        c->rsd = NULL;
    }
}

int cls_has_residual(const cls_classifier *c)
{
    return c->rsd != NULL;
}

pid_status cls_open(cls_classifier **out, const char *model_path, const char *device, int max_batch,
                    pid_error *err)
{
    cls_options o;
    memset(&o, 0, sizeof o);
    o.device = device;
    o.max_batch = max_batch;
    return cls_open_opts(out, model_path, &o, err);
}

pid_status cls_open_opts(cls_classifier **out, const char *model_path, const cls_options *opts,
                         pid_error *err)
{
    *out = NULL;
    if (!opts) return pid_fail(err, PID_ERR_ARG, "classify: NULL options");
    const int max_batch = opts->max_batch;
    if (max_batch < 1) return pid_fail(err, PID_ERR_ARG, "classify: max_batch %d < 1", max_batch);
    if (opts->n_threads < 0)
        return pid_fail(err, PID_ERR_ARG, "classify: n_threads %d < 0", opts->n_threads);
    cls_classifier *c = calloc(1, sizeof *c);
    if (!c) return pid_fail(err, PID_ERR_NOMEM, "classify: out of memory");
    pid_status st = mf_load(model_path, &c->model, err);
    if (st) goto fail;
    const mf_model *m = c->model;
    if ((st = net_spec_parse(m->arch_spec, &c->spec, err)) ||
        (st = net_spec_build(c->spec, &m->input, m->n_classes, err))) {
        pid_error_prefix(err, "%s: ", model_path);
        goto fail;
    }
    if ((st = pid_backend_create(&c->be, opts->device ? opts->device : "auto",
                                 opts->training_net ? 1 : opts->n_threads, err)))
        goto fail;
    if (opts->training_net) {
        st = net_create(&c->net, c->spec, c->be, max_batch, 0, err);
        if (!st) st = net_set_params(c->net, m->params, m->buffers, err);
    } else {
        net_infer_opts io;
        memset(&io, 0, sizeof io);
        io.chunk = opts->chunk;
        io.reference = opts->reference;
        st = net_create_infer(&c->net, c->spec, c->be, max_batch, m->params, m->buffers, &io, err);
    }
    if (st) {
        pid_error_prefix(err, "%s: ", model_path);
        goto fail;
    }
    c->max_batch = max_batch;
    c->frame_size = net_input_count(c->net);
    size_t k = (size_t)m->n_classes;
    c->logits = malloc((size_t)max_batch * k * sizeof *c->logits);
    c->scratch = malloc(k * sizeof *c->scratch);
    if (net_has_fractions(c->net)) c->flogits = malloc((size_t)max_batch * k * sizeof *c->flogits);
    if (!c->logits || !c->scratch || (net_has_fractions(c->net) && !c->flogits)) {
        st = pid_fail(err, PID_ERR_NOMEM, "classify: out of memory");
        goto fail;
    }
    if ((st = twins_matrix(m->twin_pairs, m->n_twins, m->n_classes, &c->twin, err))) goto fail;
    if (!opts->no_residual) residual_setup(c, pid_backend_threads(c->be));
    *out = c;
    return PID_OK;
fail:
    cls_close(c);
    return st;
}

void cls_close(cls_classifier *c)
{
    if (!c) return;
    net_destroy(c->net);
    pid_backend_destroy(c->be);
    net_spec_destroy(c->spec);
    mf_model_destroy(c->model);
    free(c->logits);
    free(c->flogits);
    free(c->scratch);
    rsd_destroy(c->rsd);
    free(c->rsd_scratch);
    free(c->twin);
    free(c);
}

const mf_model *cls_model(const cls_classifier *c)
{
    return c->model;
}
int64_t cls_frame_size(const cls_classifier *c)
{
    return c->frame_size;
}
const char *cls_device_name(const cls_classifier *c)
{
    return pid_backend_name(c->be);
}
net *cls_net(cls_classifier *c)
{
    return c->net;
}
int cls_threads(const cls_classifier *c)
{
    return net_is_infer(c->net) ? net_infer_threads(c->net) : 1;
}
const char *cls_cpu_kernels(const cls_classifier *c)
{
    if (pid_backend_kind(c->be) != PID_DEVICE_CPU) return "cuda";
    return pid_cpu_isa_name(pid_backend_cpu_isa(c->be));
}

/* ------------------------------------------------------------ preprocessing */

/* Background removal and normalization over frame[lo, hi) (the covered part;
 * the rest is already 0). */
static pid_status preprocess(const cls_classifier *c, float *frame, int64_t lo, int64_t hi,
                             pid_error *err)
{
    const mf_model *m = c->model;
    int64_t n = hi - lo;
    for (int64_t i = lo; i < hi; i++)
        if (!isfinite(frame[i]))
            return pid_fail(err, PID_ERR_FORMAT, "classify: non-finite intensity at point %lld",
                            (long long)i);
    if (m->background_removal && n >= 3) {
        double win = m->grid.axis == 1 ? CLS_BG_WINDOW_Q : CLS_BG_WINDOW_DEG;
        int half_w = (int)ceil(win / m->grid.step);
        float *bg = malloc((size_t)n * sizeof *bg);
        if (!bg) return pid_fail(err, PID_ERR_NOMEM, "classify: out of memory");
        pid_status st = pid_snip_background(frame + lo, (int)n, half_w < 1 ? 1 : half_w, bg, err);
        if (st) {
            free(bg);
            return st;
        }
        for (int64_t i = 0; i < n; i++) {
            float v = frame[lo + i] - bg[i];
            frame[lo + i] = v > 0 ? v : 0;
        }
        free(bg);
    }
    double mx = -INFINITY, mn = INFINITY, sum = 0;
    for (int64_t i = lo; i < hi; i++) {
        mx = fmax(mx, frame[i]);
        mn = fmin(mn, frame[i]);
        sum += frame[i];
    }
    /* Flat: no structure left for the network (constant, or all zero). */
    if (!(n > 0) || !(mx > mn) || !(mx > 0))
        return pid_fail(err, PID_ERR_FORMAT, "classify: the pattern is flat%s",
                        m->background_removal ? " after background removal" : "");
    double scale = 1.0;
    if (m->normalization == MF_NORM_MAX)
        scale = 1.0 / mx;
    else if (m->normalization == MF_NORM_AREA)
        scale = sum > 0 ? 1.0 / sum : 1.0;
    if (scale != 1.0)
        for (int64_t i = lo; i < hi; i++)
            frame[i] = (float)(frame[i] * scale);
    return PID_OK;
}

pid_status cls_prepare_frame(const cls_classifier *c, const float *in, float *frame, pid_error *err)
{
    if (in != frame) memcpy(frame, in, (size_t)c->frame_size * sizeof *frame);
    return preprocess(c, frame, 0, c->frame_size, err);
}

pid_status cls_prepare_xy(const cls_classifier *c, const pid_xy *xy,
                          const double *meas_wavelength_a, float *frame, pid_error *err)
{
    const mf_grid *g = &c->model->grid;
    const double lam_model = g->wavelength_a[0];
    if (c->frame_size != g->n_points)
        return pid_fail(err, PID_ERR_UNSUPPORTED,
                        "classify: the model's input (%lld values) is not one channel on its "
                        "grid (%lld points)",
                        (long long)c->frame_size, (long long)g->n_points);
    if (!xy || xy->n < 2) return pid_fail(err, PID_ERR_FORMAT, "classify: fewer than 2 points");
    for (int i = 0; i < xy->n; i++)
        if (!isfinite(xy->x[i]) || !isfinite(xy->y[i]))
            return pid_fail(err, PID_ERR_FORMAT, "classify: non-finite value at point %d", i);
    if (meas_wavelength_a && !(isfinite(*meas_wavelength_a) && *meas_wavelength_a > 0))
        return pid_fail(err, PID_ERR_ARG, "classify: measurement wavelength %g A (need > 0)",
                        *meas_wavelength_a);

    /* Convert x to the model's axis, dropping points the model cannot see
     * (2-theta beyond 180 deg at the model's wavelength). */
    int convert = 0;
    if (meas_wavelength_a)
        convert = g->axis == 1 || fabs(*meas_wavelength_a - lam_model) > 1e-9 * lam_model;
    pid_xy conv = {0, NULL, NULL, NULL};
    const pid_xy *src = xy;
    if (convert) {
        conv.x = malloc((size_t)xy->n * sizeof *conv.x);
        conv.y = malloc((size_t)xy->n * sizeof *conv.y);
        if (!conv.x || !conv.y) {
            free(conv.x);
            free(conv.y);
            return pid_fail(err, PID_ERR_NOMEM, "classify: out of memory");
        }
        const double lam = *meas_wavelength_a, deg = M_PI / 180.0;
        for (int i = 0; i < xy->n; i++) {
            if (!(xy->x[i] > 0 && xy->x[i] < 180)) continue;
            double s = sin(0.5 * xy->x[i] * deg);
            double x;
            if (g->axis == 1) {
                x = 4.0 * M_PI * s / lam; /* Q depends on the angle and wavelength only */
            } else {
                double a = lam_model / lam * s;
                if (!(a < 1.0)) break; /* monotonic in x: nothing further fits */
                x = 2.0 * asin(a) / deg;
            }
            if (conv.n > 0 && !(x > conv.x[conv.n - 1])) continue;
            conv.x[conv.n] = x;
            conv.y[conv.n] = xy->y[i];
            conv.n++;
        }
        src = &conv;
    }

    pid_status st = PID_OK;
    const int64_t n = c->frame_size;
    int64_t lo = n, hi = 0;
    if (src->n >= 2) {
        const double xa = src->x[0], xb = src->x[src->n - 1];
        for (int64_t j = 0; j < n; j++) {
            double x = g->x0 + (double)j * g->step;
            if (x >= xa && x <= xb) {
                if (j < lo) lo = j;
                hi = j + 1;
            }
        }
    }
    double coverage = hi > lo ? (double)(hi - lo) / (double)n : 0.0;
    if (coverage < CLS_MIN_COVERAGE) {
        st = pid_fail(err, PID_ERR_FORMAT,
                      "classify: the pattern covers %.0f %% of the model's range %g..%g %s "
                      "(need %.0f %%)",
                      100.0 * coverage, g->x0, g->x0 + (double)(n - 1) * g->step,
                      g->axis == 1 ? "1/A" : "deg 2-theta", 100.0 * CLS_MIN_COVERAGE);
        goto done;
    }
    pid_xy_resample(src, g->x0, g->step, (int)n, 0.0, frame);
    st = preprocess(c, frame, lo, hi, err);
done:
    free(conv.x);
    free(conv.y);
    return st;
}

/* ------------------------------------------------------------------ results */

pid_status cls_results_create(cls_results **out, const cls_classifier *c, int capacity,
                              pid_error *err)
{
    *out = NULL;
    if (capacity < 1) return pid_fail(err, PID_ERR_ARG, "classify: capacity %d < 1", capacity);
    cls_results *r = calloc(1, sizeof *r);
    if (!r) return pid_fail(err, PID_ERR_NOMEM, "classify: out of memory");
    size_t nk = (size_t)capacity * (size_t)c->model->n_classes;
    r->capacity = capacity;
    r->n_classes = c->model->n_classes;
    r->prob = malloc(nk * sizeof *r->prob);
    r->order = malloc(nk * sizeof *r->order);
    r->present = malloc(nk * sizeof *r->present);
    r->fraction = malloc(nk * sizeof *r->fraction);
    r->unknown_score = malloc((size_t)capacity * sizeof *r->unknown_score);
    r->unknown = malloc((size_t)capacity * sizeof *r->unknown);
    r->residual = malloc((size_t)capacity * sizeof *r->residual);
    r->missing = malloc((size_t)capacity * sizeof *r->missing);
    if (!r->missing || !r->prob || !r->order || !r->present || !r->fraction || !r->unknown_score ||
        !r->unknown || !r->residual) {
        cls_results_destroy(r);
        return pid_fail(err, PID_ERR_NOMEM, "classify: out of memory");
    }
    *out = r;
    return PID_OK;
}

void cls_results_destroy(cls_results *r)
{
    if (!r) return;
    free(r->prob);
    free(r->order);
    free(r->present);
    free(r->fraction);
    free(r->unknown_score);
    free(r->unknown);
    free(r->residual);
    free(r->missing);
    free(r);
}

/* order[] = 0..k-1 sorted by decreasing p (insertion sort: k is small and
 * the order must be stable so ties keep the lower class index first). */
static void sort_desc(const float *p, int32_t *order, int64_t k)
{
    for (int64_t i = 0; i < k; i++) {
        int32_t v = (int32_t)i;
        int64_t j = i;
        while (j > 0 && p[order[j - 1]] < p[v]) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = v;
    }
}

static void postprocess(const cls_classifier *c, const float *z, const float *fz, cls_results *r,
                        int f)
{
    const mf_model *m = c->model;
    const int64_t k = m->n_classes;
    const double t = m->temperature;
    float *p = r->prob + (size_t)f * (size_t)k;
    int32_t *order = r->order + (size_t)f * (size_t)k;
    uint8_t *present = r->present + (size_t)f * (size_t)k;
    float *frac = r->fraction + (size_t)f * (size_t)k;

    if (m->head == NET_HEAD_SOFTMAX) {
        double mx = -INFINITY, s = 0;
        for (int64_t i = 0; i < k; i++)
            mx = fmax(mx, z[i] / t);
        for (int64_t i = 0; i < k; i++)
            s += (c->scratch[i] = exp(z[i] / t - mx));
        for (int64_t i = 0; i < k; i++)
            p[i] = (float)(c->scratch[i] / s);
    } else {
        for (int64_t i = 0; i < k; i++)
            p[i] = (float)(1.0 / (1.0 + exp(-z[i] / t)));
    }
    sort_desc(z, order, k); /* by logit: the same order as p, without p's float ties */
    /* the same rule the residual threshold was fitted with (calib.h); the
     * top class is order[0] (ties: the first, as calib_present_set takes) */
    const int n_present = calib_present_set(z, (size_t)k, m->head == NET_HEAD_SIGMOID, t,
                                            &m->set_rule, c->twin, present);
    if (fz) {
        /* Softmax of the fraction logits restricted to the present classes. */
        double mx = -INFINITY, s = 0;
        for (int64_t i = 0; i < k; i++)
            if (present[i]) mx = fmax(mx, fz[i]);
        for (int64_t i = 0; i < k; i++)
            s += (c->scratch[i] = present[i] ? exp(fz[i] - mx) : 0.0);
        for (int64_t i = 0; i < k; i++)
            frac[i] = (float)(c->scratch[i] / s);
    } else {
        for (int64_t i = 0; i < k; i++)
            frac[i] = !present[i] ? 0.0f : n_present == 1 ? 1.0f : NAN;
    }
    /* Same function that set the stored threshold at training time. */
    r->unknown_score[f] = calib_energy(z, (size_t)k, t);
    r->unknown[f] = r->unknown_score[f] > m->unknown_threshold;
}

/* The residual check over frames [f0, f0 + b): worker w of nw takes every
 * nw-th frame with its own scratch. */
typedef struct {
    const cls_classifier *c;
    const float *frames; /* host, frame f0 first */
    cls_results *r;
    int f0, b, w, nw;
} rsd_job;

static void *rsd_work(void *arg)
{
    rsd_job *j = arg;
    const cls_classifier *c = j->c;
    const size_t fs = (size_t)c->frame_size;
    const int64_t k = c->model->n_classes;
    float *scr = c->rsd_scratch + (size_t)j->w * (size_t)rsd_scratch_floats(c->rsd);
    for (int i = j->w; i < j->b; i += j->nw) {
        int f = j->f0 + i;
        rsd_result rr;
        rsd_check(c->rsd, j->frames + (size_t)i * fs, j->r->present + (size_t)f * (size_t)k, scr,
                  &rr);
        const mf_model *m = c->model;
        j->r->residual[f] = rr.unexplained;
        j->r->missing[f] = rr.missing;
        if (rr.unexplained > m->residual_threshold ||
            (m->missing_threshold > 0 && rr.missing > m->missing_threshold))
            j->r->unknown[f] = 1;
    }
    return NULL;
}

static void residual_pass(const cls_classifier *c, const float *frames, int f0, int b,
                          cls_results *r)
{
    enum { MAX_W = 64 };
    int nw = c->rsd_threads < b ? c->rsd_threads : b;
    if (nw > MAX_W) nw = MAX_W;
    rsd_job jobs[MAX_W];
    pthread_t tid[MAX_W];
    int started[MAX_W] = {0};
    for (int w = 0; w < nw; w++)
        jobs[w] = (rsd_job){.c = c, .frames = frames, .r = r, .f0 = f0, .b = b, .w = w, .nw = nw};
    for (int w = 1; w < nw; w++)
        started[w] = pthread_create(&tid[w], NULL, rsd_work, &jobs[w]) == 0;
    rsd_work(&jobs[0]);
    for (int w = 1; w < nw; w++) {
        if (started[w])
            pthread_join(tid[w], NULL);
        else
            rsd_work(&jobs[w]);
    }
}

pid_status cls_run(cls_classifier *c, const float *frames, int n, cls_results *results,
                   pid_error *err)
{
    if (n < 0 || n > results->capacity || results->n_classes != c->model->n_classes)
        return pid_fail(err, PID_ERR_ARG, "classify: %d frames for results of capacity %d", n,
                        results->capacity);
    const int64_t k = c->model->n_classes;
    const size_t fs = (size_t)c->frame_size;
    results->n = 0;
    for (int f0 = 0; f0 < n; f0 += c->max_batch) {
        int b = n - f0 < c->max_batch ? n - f0 : c->max_batch;
        pid_status st = PID_OK;
        /* The CPU backend's memory is host memory: the frames go in as they are. */
        const float *x = frames + (size_t)f0 * fs;
        if (pid_backend_kind(c->be) != PID_DEVICE_CPU) {
            float *stage = net_input_buffer(c->net);
            if (!stage) return pid_fail(err, PID_ERR_NOMEM, "classify: out of memory");
            if ((st = pid_backend_upload(c->be, stage, x, (size_t)b * fs * sizeof(float), err)))
                return st;
            x = stage;
        }
        if ((st = net_forward(c->net, x, b, 0, err)) ||
            (st = pid_backend_download(c->be, c->logits, net_logits(c->net),
                                       (size_t)b * (size_t)k * sizeof(float), err)))
            return st;
        if (c->flogits && (st = pid_backend_download(c->be, c->flogits, net_fraction_logits(c->net),
                                                     (size_t)b * (size_t)k * sizeof(float), err)))
            return st;
        if ((st = pid_backend_sync(c->be, err))) return st;
        for (int i = 0; i < b; i++) {
            const float *z = c->logits + (size_t)i * (size_t)k;
            for (int64_t j = 0; j < k; j++)
                if (!isfinite(z[j]))
                    return pid_fail(err, PID_ERR_INTERNAL,
                                    "classify: non-finite logit for frame %d", f0 + i);
            postprocess(c, z, c->flogits ? c->flogits + (size_t)i * (size_t)k : NULL, results,
                        f0 + i);
            results->residual[f0 + i] = NAN;
            results->missing[f0 + i] = NAN;
        }
        if (c->rsd) residual_pass(c, frames + (size_t)f0 * fs, f0, b, results);
    }
    results->n = n;
    return PID_OK;
}
