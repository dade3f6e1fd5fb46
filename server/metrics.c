/* Service metrics (see metrics.h): counters and fixed-bucket histograms per
 * model behind one mutex each, the Prometheus text page, and the latency
 * window behind its own mutex. */
#include "core/clock.h"
#include "server/metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Duration buckets (seconds): 100 us .. 10 s. */
static const double dur_bounds[] = {1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025,
                                    0.05, 0.1,    0.25, 0.5,  1.0,    2.5,  5.0,  10.0};
#define N_DUR ((int)(sizeof dur_bounds / sizeof dur_bounds[0]))
/* Batch-size buckets: powers of two up to 4096 (the largest --max-batch). */
#define N_BATCH 13

typedef struct {
    uint64_t bucket[N_DUR + 1]; /* last = above every bound */
    uint64_t count;
    double sum;
} dur_hist;

typedef struct {
    char *name;
    pthread_mutex_t mu;
    uint64_t success, fail, frames, batches;
    double success_s, fail_s, queue_s, compute_s, last_unix_s;
    dur_hist request, queue, compute;
    uint64_t batch_bucket[N_BATCH + 1];
    uint64_t batch_count;
    double batch_sum;
    uint64_t *exact_count; /* [max_batch + 1] executions per exact batch size */
    double *exact_s;
} model_m;

#define N_HTTP 600

struct srv_metrics {
    int n_models, max_batch;
    model_m *models;
    pthread_mutex_t mu; /* http counters */
    uint64_t http[N_HTTP];
    double t_start_unix;
};

pid_status srv_metrics_create(srv_metrics **out, const char *const *names, int n_models,
                              int max_batch, pid_error *err)
{
    *out = NULL;
    if (n_models < 0 || max_batch < 1)
        return pid_fail(err, PID_ERR_ARG, "metrics: %d models, max batch %d", n_models, max_batch);
    srv_metrics *m = calloc(1, sizeof *m);
    if (!m) return pid_fail(err, PID_ERR_NOMEM, "out of memory");
    m->models = calloc((size_t)(n_models > 0 ? n_models : 1), sizeof *m->models);
    if (!m->models) {
        free(m);
        return pid_fail(err, PID_ERR_NOMEM, "out of memory");
    }
    m->n_models = n_models;
    m->max_batch = max_batch;
    pthread_mutex_init(&m->mu, NULL);
    m->t_start_unix = pid_unix_s();
    for (int i = 0; i < n_models; i++) {
        model_m *mm = &m->models[i];
        pthread_mutex_init(&mm->mu, NULL);
        mm->name = strdup(names[i]);
        mm->exact_count = calloc((size_t)max_batch + 1, sizeof *mm->exact_count);
        mm->exact_s = calloc((size_t)max_batch + 1, sizeof *mm->exact_s);
        if (!mm->name || !mm->exact_count || !mm->exact_s) {
            m->n_models = i + 1;
            srv_metrics_destroy(m);
            return pid_fail(err, PID_ERR_NOMEM, "out of memory");
        }
    }
    *out = m;
    return PID_OK;
}

void srv_metrics_destroy(srv_metrics *m)
{
    if (!m) return;
    for (int i = 0; i < m->n_models; i++) {
        free(m->models[i].name);
        free(m->models[i].exact_count);
        free(m->models[i].exact_s);
        pthread_mutex_destroy(&m->models[i].mu);
    }
    pthread_mutex_destroy(&m->mu);
    free(m->models);
    free(m);
}

static void dur_add(dur_hist *h, double v)
{
    int b = 0;
    while (b < N_DUR && v > dur_bounds[b])
        b++;
    h->bucket[b]++;
    h->count++;
    h->sum += v;
}

void srv_metrics_request(srv_metrics *m, int model, int http_status, double duration_s)
{
    if (!m) return;
    pthread_mutex_lock(&m->mu);
    m->http[http_status >= 100 && http_status < N_HTTP ? http_status : 0]++;
    pthread_mutex_unlock(&m->mu);
    if (model < 0 || model >= m->n_models) return;
    model_m *mm = &m->models[model];
    pthread_mutex_lock(&mm->mu);
    if (http_status >= 200 && http_status < 300) {
        mm->success++;
        mm->success_s += duration_s;
    } else {
        mm->fail++;
        mm->fail_s += duration_s;
    }
    dur_add(&mm->request, duration_s);
    pthread_mutex_unlock(&mm->mu);
}

void srv_metrics_batch(srv_metrics *m, int model, int n, double compute_s, double queue_sum_s,
                       double queue_max_s)
{
    if (!m || model < 0 || model >= m->n_models || n < 1) return;
    model_m *mm = &m->models[model];
    pthread_mutex_lock(&mm->mu);
    mm->frames += (uint64_t)n;
    mm->batches++;
    mm->compute_s += compute_s;
    mm->queue_s += queue_sum_s;
    mm->last_unix_s = pid_unix_s();
    dur_add(&mm->compute, compute_s);
    dur_add(&mm->queue, queue_max_s);
    int b = 0;
    while (b < N_BATCH && n > (1 << b))
        b++;
    mm->batch_bucket[b]++;
    mm->batch_count++;
    mm->batch_sum += n;
    if (n <= m->max_batch) {
        mm->exact_count[n]++;
        mm->exact_s[n] += compute_s;
    }
    pthread_mutex_unlock(&mm->mu);
}

void srv_metrics_stats(const srv_metrics *m, int model, srv_model_stats *out)
{
    memset(out, 0, sizeof *out);
    if (!m || model < 0 || model >= m->n_models) return;
    model_m *mm = &m->models[model];
    pthread_mutex_lock(&mm->mu);
    out->success_count = mm->success;
    out->fail_count = mm->fail;
    out->success_s = mm->success_s;
    out->fail_s = mm->fail_s;
    out->frames = mm->frames;
    out->batches = mm->batches;
    out->queue_s = mm->queue_s;
    out->compute_s = mm->compute_s;
    out->last_inference_unix_s = mm->last_unix_s;
    pthread_mutex_unlock(&mm->mu);
}

void srv_metrics_batch_stats(const srv_metrics *m, int model, int batch, uint64_t *count,
                             double *compute_s)
{
    *count = 0;
    *compute_s = 0;
    if (!m || model < 0 || model >= m->n_models || batch < 1 || batch > m->max_batch) return;
    model_m *mm = &m->models[model];
    pthread_mutex_lock(&mm->mu);
    *count = mm->exact_count[batch];
    *compute_s = mm->exact_s[batch];
    pthread_mutex_unlock(&mm->mu);
}

void srv_metrics_totals(const srv_metrics *m, uint64_t *requests, uint64_t *frames,
                        uint64_t *batches)
{
    *requests = *frames = *batches = 0;
    if (!m) return;
    for (int i = 0; i < m->n_models; i++) {
        model_m *mm = &m->models[i];
        pthread_mutex_lock(&mm->mu);
        *requests += mm->success + mm->fail;
        *frames += mm->frames;
        *batches += mm->batches;
        pthread_mutex_unlock(&mm->mu);
    }
}

/* ------------------------------------------------------------ text page */

typedef struct {
    char *p;
    size_t len, cap;
    int oom;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...)
{
    if (b->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = 1;
            return;
        }
        if (b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap * 2 + (size_t)n + 1;
        char *q = realloc(b->p, cap);
        if (!q) {
            b->oom = 1;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
}

/* Prometheus float: shortest round-trip form, +Inf/-Inf/NaN spelled out. */
static const char *pnum(char *buf, size_t cap, double v)
{
    if (isnan(v))
        snprintf(buf, cap, "NaN");
    else if (isinf(v))
        snprintf(buf, cap, v > 0 ? "+Inf" : "-Inf");
    else
        for (int prec = 1; prec <= 17; prec++) { /* shortest form that reads back exactly */
            snprintf(buf, cap, "%.*g", prec, v);
            if (strtod(buf, NULL) == v) break;
        }
    return buf;
}

static void head(sbuf *b, const char *name, const char *type, const char *help)
{
    sb_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void dur_lines(sbuf *b, const char *name, const char *model, const dur_hist *h)
{
    char t[40];
    uint64_t cum = 0;
    for (int i = 0; i < N_DUR; i++) {
        cum += h->bucket[i];
        sb_printf(b, "%s_bucket{model=\"%s\",le=\"%s\"} %llu\n", name, model,
                  pnum(t, sizeof t, dur_bounds[i]), (unsigned long long)cum);
    }
    cum += h->bucket[N_DUR];
    sb_printf(b, "%s_bucket{model=\"%s\",le=\"+Inf\"} %llu\n", name, model,
              (unsigned long long)cum);
    sb_printf(b, "%s_sum{model=\"%s\"} %s\n", name, model, pnum(t, sizeof t, h->sum));
    sb_printf(b, "%s_count{model=\"%s\"} %llu\n", name, model, (unsigned long long)h->count);
}

pid_status srv_metrics_format(const srv_metrics *m, const int64_t *queue_depth,
                              const srv_gpu_reading *gpu, char **out, size_t *len, pid_error *err)
{
    *out = NULL;
    *len = 0;
    sbuf b = {malloc(8192), 0, 8192, 0};
    if (!b.p) return pid_fail(err, PID_ERR_NOMEM, "out of memory");
    b.p[0] = '\0';
    char t[40];
    /* Snapshot every model under its lock, then print without locks. */
    model_m *snap = calloc((size_t)(m->n_models > 0 ? m->n_models : 1), sizeof *snap);
    if (!snap) {
        free(b.p);
        return pid_fail(err, PID_ERR_NOMEM, "out of memory");
    }
    for (int i = 0; i < m->n_models; i++) {
        model_m *mm = &m->models[i];
        pthread_mutex_lock(&mm->mu);
        snap[i] = *mm;
        pthread_mutex_unlock(&mm->mu);
    }

    struct {
        const char *name, *help;
        size_t off;
    } counters[] = {
        {"phaseid_inference_request_success_total",
         "Inference requests (infer, classify, stream) answered with a 2xx status.",
         offsetof(model_m, success)},
        {"phaseid_inference_request_failure_total",
         "Inference requests answered with an error status (4xx, 5xx).", offsetof(model_m, fail)},
        {"phaseid_inference_frames_total", "Frames (patterns) run through the model.",
         offsetof(model_m, frames)},
        {"phaseid_inference_exec_total", "Batch executions of the model on its backend.",
         offsetof(model_m, batches)},
    };
    for (size_t c = 0; c < sizeof counters / sizeof counters[0]; c++) {
        head(&b, counters[c].name, "counter", counters[c].help);
        for (int i = 0; i < m->n_models; i++)
            sb_printf(
                &b, "%s{model=\"%s\"} %llu\n", counters[c].name, snap[i].name,
                (unsigned long long)*(const uint64_t *)((const char *)&snap[i] + counters[c].off));
    }

    head(&b, "phaseid_queue_frames", "gauge", "Frames waiting in the model's batcher queue.");
    for (int i = 0; i < m->n_models; i++)
        sb_printf(&b, "phaseid_queue_frames{model=\"%s\"} %lld\n", snap[i].name,
                  queue_depth ? (long long)queue_depth[i] : 0LL);

    head(&b, "phaseid_batch_size", "histogram", "Frames per batch execution.");
    for (int i = 0; i < m->n_models; i++) {
        uint64_t cum = 0;
        for (int k = 0; k < N_BATCH; k++) {
            cum += snap[i].batch_bucket[k];
            sb_printf(&b, "phaseid_batch_size_bucket{model=\"%s\",le=\"%d\"} %llu\n", snap[i].name,
                      1 << k, (unsigned long long)cum);
        }
        cum += snap[i].batch_bucket[N_BATCH];
        sb_printf(&b, "phaseid_batch_size_bucket{model=\"%s\",le=\"+Inf\"} %llu\n", snap[i].name,
                  (unsigned long long)cum);
        sb_printf(&b, "phaseid_batch_size_sum{model=\"%s\"} %s\n", snap[i].name,
                  pnum(t, sizeof t, snap[i].batch_sum));
        sb_printf(&b, "phaseid_batch_size_count{model=\"%s\"} %llu\n", snap[i].name,
                  (unsigned long long)snap[i].batch_count);
    }

    struct {
        const char *name, *help;
        size_t off;
    } hists[] = {
        {"phaseid_request_duration_seconds",
         "Time from a request's arrival to its answer (streams: the whole upload).",
         offsetof(model_m, request)},
        {"phaseid_queue_duration_seconds",
         "Longest time a frame of each batch waited in the queue before the batch ran.",
         offsetof(model_m, queue)},
        {"phaseid_compute_duration_seconds", "Backend time of each batch execution.",
         offsetof(model_m, compute)},
    };
    for (size_t h = 0; h < sizeof hists / sizeof hists[0]; h++) {
        head(&b, hists[h].name, "histogram", hists[h].help);
        for (int i = 0; i < m->n_models; i++)
            dur_lines(&b, hists[h].name, snap[i].name,
                      (const dur_hist *)((const char *)&snap[i] + hists[h].off));
    }

    head(&b, "phaseid_http_requests_total", "counter", "HTTP requests answered, by status code.");
    pthread_mutex_lock((pthread_mutex_t *)&m->mu);
    for (int c = 100; c < N_HTTP; c++)
        if (m->http[c]) {
            sb_printf(&b, "phaseid_http_requests_total{code=\"%d\"} %llu\n", c,
                      (unsigned long long)m->http[c]);
        }
    pthread_mutex_unlock((pthread_mutex_t *)&m->mu);

    head(&b, "phaseid_start_time_seconds", "gauge", "Unix time the server started.");
    sb_printf(&b, "phaseid_start_time_seconds %s\n", pnum(t, sizeof t, m->t_start_unix));

    if (gpu) {
        head(&b, "phaseid_gpu_power_watts", "gauge", "GPU power draw (NVML).");
        sb_printf(&b, "phaseid_gpu_power_watts{gpu=\"0\"} %s\n", pnum(t, sizeof t, gpu->power_w));
        head(&b, "phaseid_gpu_energy_joules_total", "counter",
             "GPU energy since the driver loaded (NVML).");
        sb_printf(&b, "phaseid_gpu_energy_joules_total{gpu=\"0\"} %s\n",
                  pnum(t, sizeof t, gpu->energy_j));
    }
    free(snap);
    if (b.oom) {
        free(b.p);
        return pid_fail(err, PID_ERR_NOMEM, "out of memory formatting metrics");
    }
    *out = b.p;
    *len = b.len;
    return PID_OK;
}

/* --------------------------------------------------------------- window */

typedef struct {
    double t, lat, queue;
} sample;

struct srv_window {
    pthread_mutex_t mu;
    int cap, next, count;
    sample *s;
    double *scratch; /* [2 * cap] */
};

pid_status srv_window_create(srv_window **out, int capacity, pid_error *err)
{
    *out = NULL;
    if (capacity < 1) return pid_fail(err, PID_ERR_ARG, "window capacity %d", capacity);
    srv_window *w = calloc(1, sizeof *w);
    if (!w) return pid_fail(err, PID_ERR_NOMEM, "out of memory");
    pthread_mutex_init(&w->mu, NULL);
    w->s = malloc((size_t)capacity * sizeof *w->s);
    w->scratch = malloc(2 * (size_t)capacity * sizeof *w->scratch);
    if (!w->s || !w->scratch) {
        srv_window_destroy(w);
        return pid_fail(err, PID_ERR_NOMEM, "out of memory");
    }
    w->cap = capacity;
    *out = w;
    return PID_OK;
}

void srv_window_destroy(srv_window *w)
{
    if (!w) return;
    pthread_mutex_destroy(&w->mu);
    free(w->s);
    free(w->scratch);
    free(w);
}

void srv_window_add(srv_window *w, double t_s, double latency_s, double queue_s)
{
    pthread_mutex_lock(&w->mu);
    w->s[w->next] = (sample){t_s, latency_s, queue_s};
    w->next = (w->next + 1) % w->cap;
    if (w->count < w->cap) w->count++;
    pthread_mutex_unlock(&w->mu);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int srv_window_percentiles(srv_window *w, double now_s, double span_s, const double *p, int np,
                           double *lat_out, double *queue_out)
{
    pthread_mutex_lock(&w->mu);
    int n = 0;
    double *lat = w->scratch, *q = w->scratch + w->cap;
    for (int i = 0; i < w->count; i++)
        if (w->s[i].t >= now_s - span_s) {
            lat[n] = w->s[i].lat;
            q[n] = w->s[i].queue;
            n++;
        }
    if (n > 0) {
        qsort(lat, (size_t)n, sizeof *lat, cmp_double);
        qsort(q, (size_t)n, sizeof *q, cmp_double);
    }
    for (int k = 0; k < np; k++) {
        if (n == 0) {
            lat_out[k] = queue_out[k] = 0;
            continue;
        }
        /* nearest rank: ceil(p/100 * n), 1-based */
        double r = ceil(p[k] / 100.0 * n);
        int idx = r < 1 ? 0 : (int)r - 1;
        if (idx >= n) idx = n - 1;
        lat_out[k] = lat[idx];
        queue_out[k] = q[idx];
    }
    pthread_mutex_unlock(&w->mu);
    return n;
}
