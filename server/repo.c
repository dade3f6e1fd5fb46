/* Model repository (see repo.h): scanning DIR, loading each model behind a
 * batcher, and the metadata documents, built with jansson. */
#include "server/repo.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/log.h"
#include "models/modelfile.h"
#include "server/proto.h"
#include "synth/cif.h"
#include "synth/phaselib.h"
#include "synth/xrd.h"

/* Reference peaks listed per phase in /v1/models. */
#define SRV_PEAKS_MAX 40

struct srv_repo {
    char *dir;
    int n;
    srv_model *models;
    const char **names;
    pthread_mutex_t v1_mu;
    char *v1_json;
};

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

pid_status srv_repo_scan(srv_repo **out, const char *dir, pid_error *err)
{
    *out = NULL;
    DIR *d = opendir(dir);
    if (!d) return pid_fail(err, PID_ERR_IO, "%s: %s", dir, strerror(errno));
    char **stems = NULL;
    int n = 0, cap = 0;
    pid_status st = PID_OK;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t len = strlen(de->d_name);
        if (len < 4 || strcmp(de->d_name + len - 3, ".h5")) continue;
        char stem[SRV_MODEL_NAME_MAX + 1];
        if (len - 3 > SRV_MODEL_NAME_MAX) {
            PID_LOGW("serve: %s/%s: name too long, skipped", dir, de->d_name);
            continue;
        }
        memcpy(stem, de->d_name, len - 3);
        stem[len - 3] = '\0';
        if (!srv_name_valid(stem, SRV_MODEL_NAME_MAX)) {
            PID_LOGW("serve: %s/%s: not a valid model name ([A-Za-z0-9._-]), skipped", dir,
                     de->d_name);
            continue;
        }
        char path[4096];
        struct stat sb;
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        if (stat(path, &sb) || !S_ISREG(sb.st_mode)) continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 8;
            char **p = realloc(stems, (size_t)cap * sizeof *p);
            if (!p) {
                st = pid_fail(err, PID_ERR_NOMEM, "out of memory");
                goto done;
            }
            stems = p;
        }
        if (!(stems[n] = strdup(stem))) {
            st = pid_fail(err, PID_ERR_NOMEM, "out of memory");
            goto done;
        }
        n++;
    }
    if (n == 0) {
        st = pid_fail(err, PID_ERR_ARG, "%s: no model files (*.h5)", dir);
        goto done;
    }
    qsort(stems, (size_t)n, sizeof *stems, cmp_str);
    srv_repo *r = calloc(1, sizeof *r);
    if (!r || !(r->models = calloc((size_t)n, sizeof *r->models)) ||
        !(r->names = calloc((size_t)n, sizeof *r->names)) || !(r->dir = strdup(dir))) {
        if (r) {
            free(r->models);
            free(r->names);
            free(r);
        }
        st = pid_fail(err, PID_ERR_NOMEM, "out of memory");
        goto done;
    }
    pthread_mutex_init(&r->v1_mu, NULL);
    r->n = n;
    for (int i = 0; i < n; i++) {
        srv_model *m = &r->models[i];
        m->index = i;
        m->name = stems[i];
        stems[i] = NULL;
        r->names[i] = m->name;
        size_t pl = strlen(dir) + strlen(m->name) + 5;
        m->path = malloc(pl);
        if (m->path) snprintf(m->path, pl, "%s/%s.h5", dir, m->name);
        if (!m->path) {
            srv_repo_destroy(r);
            st = pid_fail(err, PID_ERR_NOMEM, "out of memory");
            goto done;
        }
    }
    *out = r;
done:
    closedir(d);
    for (int i = 0; i < n; i++)
        if (stems) free(stems[i]);
    free(stems);
    return st;
}

int srv_repo_count(const srv_repo *r)
{
    return r->n;
}

srv_model *srv_repo_get(srv_repo *r, int i)
{
    return i >= 0 && i < r->n ? &r->models[i] : NULL;
}

srv_model *srv_repo_find(srv_repo *r, const char *name)
{
    if (!srv_name_valid(name, SRV_MODEL_NAME_MAX)) return NULL;
    for (int i = 0; i < r->n; i++)
        if (!strcmp(r->models[i].name, name)) return &r->models[i];
    return NULL;
}

const char *const *srv_repo_names(const srv_repo *r)
{
    return r->names;
}

/* ------------------------------------------------------------ documents */

static json_t *shape2(int64_t a, int64_t b)
{
    json_t *s = json_array();
    json_array_append_new(s, json_integer(a));
    if (b != 0) json_array_append_new(s, json_integer(b));
    return s;
}

static json_t *tensor_meta(const char *name, const char *dt, json_t *shape)
{
    return json_pack("{s:s, s:s, s:o}", "name", name, "datatype", dt, "shape", shape);
}

static char *dump(json_t *j)
{
    char *s = j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9)) : NULL;
    json_decref(j);
    return s;
}

static char *metadata_doc(const srv_model *m)
{
    const int64_t n = m->frame_size, k = m->n_classes;
    json_t *in = json_array(), *outs = json_array();
    json_array_append_new(in, tensor_meta("patterns", "FP32", shape2(-1, n)));
    json_array_append_new(outs, tensor_meta("probabilities", "FP32", shape2(-1, k)));
    json_array_append_new(outs, tensor_meta("top_phases", "BYTES", shape2(-1, -1)));
    json_array_append_new(outs, tensor_meta("fractions", "FP32", shape2(-1, k)));
    json_array_append_new(outs, tensor_meta("unknown_score", "FP32", shape2(-1, 0)));
    json_array_append_new(outs, tensor_meta("residual", "FP32", shape2(-1, 0)));
    json_array_append_new(outs, tensor_meta("missing", "FP32", shape2(-1, 0)));
    json_array_append_new(outs, tensor_meta("unknown", "BOOL", shape2(-1, 0)));
    return dump(json_pack("{s:s, s:[s], s:s, s:o, s:o}", "name", m->name, "versions", "1",
                          "platform", "phaseid", "inputs", in, "outputs", outs));
}

static json_t *config_tensor(const char *name, const char *dt, int64_t dim, int scalar)
{
    json_t *t =
        json_pack("{s:s, s:s, s:[I]}", "name", name, "data_type", dt, "dims", (json_int_t)dim);
    if (t && scalar) json_object_set_new(t, "reshape", json_pack("{s:[]}", "shape"));
    return t;
}

static char *config_doc(const srv_model *m, const srv_repo_opts *o, const char *device)
{
    json_t *in = json_array(), *outs = json_array();
    json_array_append_new(in, config_tensor("patterns", "TYPE_FP32", m->frame_size, 0));
    json_array_append_new(outs, config_tensor("probabilities", "TYPE_FP32", m->n_classes, 0));
    json_array_append_new(outs, config_tensor("top_phases", "TYPE_STRING", -1, 0));
    json_array_append_new(outs, config_tensor("fractions", "TYPE_FP32", m->n_classes, 0));
    json_array_append_new(outs, config_tensor("unknown_score", "TYPE_FP32", 1, 1));
    json_array_append_new(outs, config_tensor("residual", "TYPE_FP32", 1, 1));
    json_array_append_new(outs, config_tensor("missing", "TYPE_FP32", 1, 1));
    json_array_append_new(outs, config_tensor("unknown", "TYPE_BOOL", 1, 1));
    int gpu = device && !strcmp(device, "cuda");
    return dump(json_pack("{s:s, s:s, s:s, s:i, s:o, s:o, s:{s:I, s:[i]}, s:[{s:s, s:i}]}", "name",
                          m->name, "platform", "phaseid", "backend", "phaseid", "max_batch_size",
                          o->max_queue, "input", in, "output", outs, "dynamic_batching",
                          "max_queue_delay_microseconds", (json_int_t)o->max_queue_delay_us,
                          "preferred_batch_size", o->max_batch, "instance_group", "kind",
                          gpu ? "KIND_GPU" : "KIND_CPU", "count", 1));
}

/* The names of phase k's near twins as a JSON array (NULL: out of memory). */
static json_t *twin_names(const mf_model *mf, int64_t k)
{
    enum { CAP = 64 };
    int32_t t[CAP];
    int n = mf_phase_twins(mf, k, t, CAP);
    json_t *a = json_array();
    for (int i = 0; a && i < n && i < CAP; i++)
        json_array_append_new(a, json_string(mf->phases[t[i]].name));
    return a;
}

pid_status srv_repo_load(srv_repo *r, const srv_repo_opts *o, int *n_failed, pid_error *err)
{
    *n_failed = 0;
    for (int i = 0; i < r->n; i++) {
        srv_model *m = &r->models[i];
        pid_error e;
        cls_classifier *c = NULL;
        srv_batcher_opts bo = {o->max_batch, o->max_queue_delay_us, o->max_queue,    i,
                               o->metrics,   o->observer,           o->observer_user};
        cls_options co = {
            .device = o->device, .max_batch = o->max_batch, .no_residual = o->no_residual};
        pid_status st = cls_open_opts(&c, m->path, &co, &e);
        if (!st && cls_frame_size(c) != cls_model(c)->grid.n_points)
            st = pid_fail(&e, PID_ERR_UNSUPPORTED, "%s: input is not one channel on its grid",
                          m->path);
        if (!st) st = srv_batcher_create(&m->batcher, c, &bo, &e);
        if (st) {
            cls_close(c);
            PID_LOGE("serve: model %s not available: %s", m->name, e.msg);
            if (!(m->reason = strdup(e.msg))) return pid_fail(err, PID_ERR_NOMEM, "out of memory");
            (*n_failed)++;
            continue;
        }
        m->c = srv_batcher_classifier(m->batcher);
        const mf_model *mf = cls_model(m->c);
        m->frame_size = cls_frame_size(m->c);
        m->n_classes = mf->n_classes;
        m->names = calloc((size_t)m->n_classes, sizeof *m->names);
        m->name_json = calloc((size_t)m->n_classes, sizeof *m->name_json);
        m->formula_json = calloc((size_t)m->n_classes, sizeof *m->formula_json);
        if (!m->names || !m->name_json || !m->formula_json)
            return pid_fail(err, PID_ERR_NOMEM, "out of memory");
        for (int64_t k = 0; k < m->n_classes; k++) {
            m->names[k] = mf->phases[k].name;
            m->name_json[k] = srv_json_quote(mf->phases[k].name);
            m->formula_json[k] = srv_json_quote(mf->phases[k].formula);
            if (!m->name_json[k] || !m->formula_json[k])
                return pid_fail(err, PID_ERR_NOMEM, "out of memory");
        }
        if (mf->n_twins > 0) {
            /* each phase's near twins, as phaseid classify lists them */
            m->twins_json = calloc((size_t)m->n_classes, sizeof *m->twins_json);
            if (!m->twins_json) return pid_fail(err, PID_ERR_NOMEM, "out of memory");
            for (int64_t k = 0; k < m->n_classes; k++) {
                json_t *a = twin_names(mf, k);
                char *txt = a ? json_dumps(a, JSON_COMPACT) : NULL;
                json_decref(a);
                size_t n = txt ? strlen(txt) + 20 : 0;
                m->twins_json[k] = txt ? malloc(n) : NULL;
                if (m->twins_json[k]) snprintf(m->twins_json[k], n, ", \"near_twins\": %s", txt);
                free(txt);
                if (!m->twins_json[k]) return pid_fail(err, PID_ERR_NOMEM, "out of memory");
            }
        }
        m->metadata_json = metadata_doc(m);
        m->config_json = config_doc(m, o, cls_device_name(m->c));
        if (!m->metadata_json || !m->config_json)
            return pid_fail(err, PID_ERR_NOMEM, "out of memory");
        PID_LOGI("serve: model %s: %lld classes, %lld points, %s", m->name, (long long)m->n_classes,
                 (long long)m->frame_size, cls_device_name(m->c));
    }
    return PID_OK;
}

void srv_repo_close(srv_repo *r)
{
    for (int i = 0; r && i < r->n; i++)
        if (r->models[i].batcher) srv_batcher_close(r->models[i].batcher);
}

char *srv_repo_index_json(const srv_repo *r)
{
    json_t *a = json_array();
    for (int i = 0; a && i < r->n; i++) {
        const srv_model *m = &r->models[i];
        json_t *o = json_pack("{s:s, s:s, s:s}", "name", m->name, "version", "1", "state",
                              m->batcher ? "READY" : "UNAVAILABLE");
        if (o && m->reason) json_object_set_new(o, "reason", json_string(m->reason));
        json_array_append_new(a, o);
    }
    return dump(a);
}

/* --------------------------------------------------------------- peaks */

static int cmp_stick_intensity(const void *a, const void *b)
{
    double x = ((const pid_xrd_stick *)a)->intensity, y = ((const pid_xrd_stick *)b)->intensity;
    return (x < y) - (x > y);
}

static int cmp_stick_angle(const void *a, const void *b)
{
    double x = ((const pid_xrd_stick *)a)->two_theta_deg,
           y = ((const pid_xrd_stick *)b)->two_theta_deg;
    return (x > y) - (x < y);
}

/* Append to a the strongest SRV_PEAKS_MAX of st[n] (intensity >= 1), by
 * angle, as [two_theta, intensity] pairs (st is reordered). */
static void append_strongest(json_t *a, pid_xrd_stick *st, int n)
{
    qsort(st, (size_t)n, sizeof *st, cmp_stick_intensity);
    int keep = 0;
    while (keep < n && keep < SRV_PEAKS_MAX && st[keep].intensity >= 1.0)
        keep++;
    qsort(st, (size_t)keep, sizeof *st, cmp_stick_angle);
    for (int i = 0; i < keep; i++)
        json_array_append_new(a, json_pack("[f, f]", round(st[i].two_theta_deg * 1e4) / 1e4,
                                           round(st[i].intensity * 100) / 100));
}

/* The strongest SRV_PEAKS_MAX sticks (intensity >= 1) of s at the model's
 * first wavelength over its range, by angle: [[two_theta, intensity], ...]. */
static json_t *peaks_of(const pid_structure *s, const mf_grid *g)
{
    pid_xrd_opts o;
    pid_xrd_opts_default(&o);
    o.source.n_lines = 1;
    o.source.wavelength_a[0] = g->wavelength_a[0];
    o.source.weight[0] = 1.0;
    o.min_rel_intensity = 0.01;
    if (g->axis == 0) {
        o.two_theta_min_deg = fmax(g->x0, 0.5);
        o.two_theta_max_deg = fmin(g->x0 + (double)(g->n_points - 1) * g->step, 179.0);
    } else {
        o.two_theta_min_deg = 5.0;
        o.two_theta_max_deg = 170.0;
    }
    pid_xrd_stick *st = NULL;
    int n = 0;
    pid_error e;
    json_t *a = json_array();
    if (!a || pid_xrd_sticks(s, &o, &st, &n, &e)) return a;
    append_strongest(a, st, n);
    free(st);
    return a;
}

/* Peaks of phase c from the sticks the model file carries (first
 * wavelength, in the grid's 2-theta range, renormalized there: the same
 * sticks as peaks_of gives, except those under 2 % of the phase's strongest,
 * which the file does not keep). */
static json_t *stored_peaks(const mf_model *m, int64_t c)
{
    const mf_grid *g = &m->grid;
    json_t *a = json_array();
    const int64_t o = m->stick_off[c], n = m->stick_off[c + 1] - o;
    pid_xrd_stick *st = malloc(sizeof *st * (size_t)(n > 0 ? n : 1));
    if (!a || !st) {
        free(st);
        return a;
    }
    const double lo = g->axis == 0 ? fmax(g->x0, 0.5) : 5.0,
                 hi = g->axis == 0 ? fmin(g->x0 + (double)(g->n_points - 1) * g->step, 179.0)
                                   : 170.0;
    int keep = 0;
    double top = 0.0;
    for (int64_t j = 0; j < n; j++) {
        double s = g->wavelength_a[0] / (2.0 * m->stick_d[o + j]);
        if (!(s < 1.0)) continue;
        double tt = 2.0 * asin(s) * 180.0 / M_PI;
        if (tt < lo || tt > hi) continue;
        st[keep] = (pid_xrd_stick){.two_theta_deg = tt, .intensity = m->stick_int[o + j]};
        if (st[keep].intensity > top) top = st[keep].intensity;
        keep++;
    }
    for (int i = 0; i < keep && top > 0; i++)
        st[i].intensity *= 100.0 / top;
    append_strongest(a, st, keep);
    free(st);
    return a;
}

/* Peaks of phase p: from its source CIF when readable, else the built-in
 * library (loaded once, on demand, into *lib). */
static json_t *phase_peaks(const mf_phase *p, const mf_grid *g, pid_phaselib **lib, int *lib_tried)
{
    pid_error e;
    if (p->source && *p->source && access(p->source, R_OK) == 0) {
        pid_structure *arr = NULL;
        int n = 0;
        if (!pid_cif_read(p->source, &arr, &n, &e)) {
            const pid_structure *pick = n == 1 ? &arr[0] : NULL;
            for (int i = 0; i < n && !pick; i++)
                if (!strcmp(arr[i].name, p->name)) pick = &arr[i];
            json_t *peaks = pick ? peaks_of(pick, g) : NULL;
            pid_structure_array_destroy(arr, n);
            if (peaks) return peaks;
        }
    }
    if (!*lib_tried) {
        *lib_tried = 1;
        if (pid_phaselib_load("builtin", lib, &e)) *lib = NULL;
    }
    const pid_structure *s = *lib ? pid_phaselib_find(*lib, p->name) : NULL;
    return s ? peaks_of(s, g) : json_array();
}

/* A JSON value for the generator text: parsed when it is JSON. */
static json_t *generator_value(const char *s)
{
    if (!s) return json_null();
    json_t *j = json_loads(s, 0, NULL);
    return j ? j : json_string(s);
}

static json_t *jnum(double v)
{
    return isfinite(v) ? json_real(v) : json_null();
}

static json_t *model_doc(const srv_model *m, pid_phaselib **lib, int *lib_tried)
{
    const mf_model *mf = cls_model(m->c);
    net_spec *spec = NULL;
    net_spec_totals tot;
    memset(&tot, 0, sizeof tot);
    pid_error e;
    if (!net_spec_parse(mf->arch_spec, &spec, &e) &&
        !net_spec_build(spec, &mf->input, mf->n_classes, &e))
        net_spec_totals_get(spec, &tot, &e);
    net_spec_destroy(spec);
    const mf_grid *g = &mf->grid;
    json_t *wl = json_array();
    for (int i = 0; i < g->n_lines; i++)
        json_array_append_new(wl, json_real(g->wavelength_a[i]));
    json_t *phases = json_array();
    for (int64_t k = 0; k < mf->n_classes; k++) {
        const mf_phase *p = &mf->phases[k];
        /* the phases XRD barely tells this one from (models/twins.h) */
        json_t *tw = twin_names(mf, k);
        json_array_append_new(
            phases,
            json_pack("{s:s, s:s, s:s, s:s, s:o, s:o}", "name", p->name, "formula",
                      p->formula ? p->formula : "", "source", p->source ? p->source : "",
                      "reference", p->reference ? p->reference : "", "peaks",
                      mf->stick_off ? stored_peaks(mf, k) : phase_peaks(p, g, lib, lib_tried),
                      "near_twins", tw));
    }
    json_t *o = json_pack(
        "{s:s, s:s, s:s, s:s, s:I, s:f, s:{s:s, s:f, s:f, s:I, s:o}, s:o, s:{s:o, s:o}, "
        "s:{s:s, s:o, s:o, s:o, s:o}}",
        "name", m->name, "modality", mf->modality, "device", cls_device_name(m->c), "head",
        mf_head_name(mf->head, mf->head_fractions), "n_params", (json_int_t)mf->n_params,
        "flops_per_frame", (double)tot.flops_infer, "grid", "axis", g->axis == 1 ? "Q" : "2theta",
        "x0", g->x0, "step", g->step, "n_points", (json_int_t)g->n_points, "wavelength_a", wl,
        "phases", phases, "calibration", "temperature", jnum(mf->temperature), "ece", jnum(mf->ece),
        "unknown", "score", mf->unknown_score ? mf->unknown_score : "energy", "threshold",
        jnum(mf->unknown_threshold), "auroc", jnum(mf_auroc_measured(mf) ? mf->unknown_auroc : NAN),
        "residual_threshold", jnum(cls_has_residual(m->c) ? mf->residual_threshold : NAN),
        "missing_threshold",
        jnum(cls_has_residual(m->c) && mf->missing_threshold > 0 ? mf->missing_threshold : NAN));
    if (!o) return NULL;
    /* the fitted set rule: probability thresholds of ranks 2.. (null: 0.5, no cap) */
    json_t *st = json_null();
    if (mf->set_rule.n > 0) {
        st = json_array();
        for (int r = 1; r < mf->set_rule.n; r++)
            json_array_append_new(st, json_real(mf->set_rule.thr[r]));
    }
    json_object_set_new(json_object_get(o, "calibration"), "set_thresholds", st);
    json_t *tr =
        json_pack("{s:I, s:I, s:I, s:o, s:o, s:s, s:s, s:s}", "seed", (json_int_t)mf->train_seed,
                  "steps", (json_int_t)mf->train_steps, "batch", (json_int_t)mf->train_batch,
                  "flops", jnum(mf->train_flops), "generator", generator_value(mf->generator),
                  "phaseid_version", mf->phaseid_version ? mf->phaseid_version : "", "created",
                  mf->created ? mf->created : "", "library", mf->library ? mf->library : "");
    json_object_set_new(o, "training", tr ? tr : json_null());
    return o;
}

const char *srv_repo_v1_models(srv_repo *r)
{
    pthread_mutex_lock(&r->v1_mu);
    if (!r->v1_json) {
        pid_phaselib *lib = NULL;
        int tried = 0;
        json_t *arr = json_array();
        for (int i = 0; arr && i < r->n; i++)
            if (r->models[i].batcher) {
                json_t *d = model_doc(&r->models[i], &lib, &tried);
                if (d) json_array_append_new(arr, d);
            }
        pid_phaselib_destroy(lib);
        r->v1_json = dump(json_pack("{s:o}", "models", arr));
    }
    const char *s = r->v1_json;
    pthread_mutex_unlock(&r->v1_mu);
    return s;
}

void srv_repo_destroy(srv_repo *r)
{
    if (!r) return;
    for (int i = 0; i < r->n; i++) {
        srv_model *m = &r->models[i];
        srv_batcher_destroy(m->batcher);
        for (int64_t k = 0; m->name_json && k < m->n_classes; k++)
            free(m->name_json[k]);
        for (int64_t k = 0; m->formula_json && k < m->n_classes; k++)
            free(m->formula_json[k]);
        for (int64_t k = 0; m->twins_json && k < m->n_classes; k++)
            free(m->twins_json[k]);
        free(m->name_json);
        free(m->formula_json);
        free(m->twins_json);
        free(m->names);
        free(m->metadata_json);
        free(m->config_json);
        free(m->name);
        free(m->path);
        free(m->reason);
    }
    pthread_mutex_destroy(&r->v1_mu);
    free(r->models);
    free(r->names);
    free(r->dir);
    free(r->v1_json);
    free(r);
}
