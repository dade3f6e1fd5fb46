/* HTTP front of the inference service (see server.h, docs/http-api.md):
 * routing, authentication and limits, request bodies gathered in the upload
 * callback, work handed to the model batchers while the connection is
 * suspended, streams classified frame by frame as they arrive, server-sent
 * events, metrics, and the graceful drain. Every libmicrohttpd call is
 * checked through SRV_MHD_OK / SRV_MHD_PTR, which log call, file and line. */
#include "core/clock.h"
#include "server/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "server/batcher.h"
#include "server/events.h"
#include "server/metrics.h"
#include "server/nvml.h"
#include "server/proto.h"
#include "server/repo.h"
#include "server/web.h"
#include "synth/xrd.h"
#include "synth/xy.h"

/* ------------------------------------------------ libmicrohttpd checking */

static int srv_mhd_ok_(int ok, const char *call, const char *file, int line)
{
    if (!ok) PID_LOGW("serve: libmicrohttpd call failed: %s (%s:%d)", call, file, line);
    return ok;
}

static void *srv_mhd_ptr_(void *p, const char *call, const char *file, int line)
{
    if (!p) PID_LOGW("serve: libmicrohttpd call failed: %s (%s:%d)", call, file, line);
    return p;
}

/* SRV_MHD_OK(call): call returns enum MHD_Result; evaluates to 1 on MHD_YES.
 * SRV_MHD_PTR(call): call returns a pointer; evaluates to it (NULL logged). */
#define SRV_MHD_OK(call) srv_mhd_ok_((call) == MHD_YES, #call, __FILE__, __LINE__)
#define SRV_MHD_PTR(call) srv_mhd_ptr_((void *)(call), #call, __FILE__, __LINE__)

/* Frames per stream segment (one batcher job) at most. */
#define SRV_SEG_MAX 256
/* Bytes of results memory a stream may hold per frame (bounds frames per
 * stream request by the body limit). */
#define SRV_STREAM_BYTES_PER_FRAME 64
/* Ring of recent latencies for the live percentiles. */
#define SRV_WINDOW 65536

typedef enum {
    K_NONE = 0,
    K_DONE,     /* answered at the headers */
    K_DEFERRED, /* an error to answer once the body is discarded */
    K_INFER,
    K_CLASSIFY,
    K_STREAM,
    K_INDEX,
    K_EVENTS
} req_kind;

typedef struct req req;

/* Frames of a stream that arrived together: one batcher job. */
typedef struct seg {
    req *r;
    int64_t seq0;
    int n;       /* frames, in order */
    int n_valid; /* frames handed to the batcher (rows of res) */
    uint8_t *bad;
    char **errq; /* [n] quoted error message of a bad frame, lazily allocated */
    float *frames;
    int64_t *seqs;
    srv_results *res;
    srv_job job;
    int done;
    struct seg *next;
} seg;

typedef struct {
    srv_dtype dt;
    size_t frame_bytes;
    int64_t seq_next;
    char id[72];
    unsigned char *partial;
    size_t partial_len;
    seg *head, *tail, *pending;
    int64_t n_frames, max_frames;
    int too_long, refused;
    int segs_out;
    int final_wait;
    /* rendering: lines are staged in out[out_off, out_len) so any buffer
     * size MHD offers can be filled */
    int rrow, ridx, tail_written;
    char *out;
    size_t out_len, out_off;
} stream_ctx;

struct srv_server;

struct req {
    struct srv_server *s;
    struct MHD_Connection *conn;
    req_kind kind;
    srv_model *model;
    double t0;
    int status; /* answered status, 0 before */
    /* libmicrohttpd 0.9.75 closes the connection after a response queued in
     * the first call of a request, so answers decided there are held until
     * the next call (except 413, where closing is the point). */
    int first, now;
    struct MHD_Response *held;
    int http_status_deferred;
    char msg[PID_ERROR_MSG_LEN];
    /* body */
    char *body;
    size_t len, cap, discarded;
    int too_big;
    /* async */
    pthread_mutex_t mu;
    atomic_int refs;
    int suspended, gone, aborted;
    req *sprev, *snext; /* list of suspended requests */
    int job_state;      /* 0 none, 1 queued, 2 done */
    srv_job job;
    srv_results *res;
    float *frames;
    srv_infer_req *ireq;
    stream_ctx *st;
    srv_sse_client *sse;
};

struct srv_server {
    srv_config cfg;
    char host[64];
    srv_repo *repo;
    srv_metrics *metrics;
    srv_events *events;
    srv_window *window;
    srv_nvml *nvml;
    struct MHD_Daemon *d;
    MHD_socket listen_fd; /* returned by MHD_quiesce_daemon */
    int port;
    atomic_int draining;
    atomic_int active;
    atomic_long stream_counter;
    pthread_mutex_t mu; /* suspended list, stopping */
    req *susp;
    int stopping;
    char *v2_json;
    char device[16];
    int all_loaded;
    /* stats deltas (events thread) */
    double st_t;
    uint64_t st_req, st_frames, st_batches;
    double st_energy;
};

void srv_config_default(srv_config *c)
{
    memset(c, 0, sizeof *c);
    c->host = "127.0.0.1";
    c->port = 8000;
    c->device = "auto";
    c->max_batch = 64;
    c->max_queue_delay_us = 500;
    c->max_queue = 8192;
    c->max_body_bytes = (size_t)64 << 20;
    c->max_connections = 256;
    c->timeout_s = 30;
}

/* ---------------------------------------------------------- requests */

static void seg_free(seg *g)
{
    if (!g) return;
    if (g->errq)
        for (int i = 0; i < g->n; i++)
            free(g->errq[i]);
    free(g->errq);
    free(g->bad);
    free(g->frames);
    free(g->seqs);
    srv_results_destroy(g->res);
    free(g);
}

static void req_free(req *r)
{
    if (r->st) {
        seg *g = r->st->head;
        while (g) {
            seg *next = g->next;
            seg_free(g);
            g = next;
        }
        free(r->st->out);
        free(r->st->partial);
        free(r->st);
    }
    free(r->body);
    free(r->frames);
    srv_results_destroy(r->res);
    srv_infer_req_destroy(r->ireq);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

static void req_unref(req *r)
{
    if (atomic_fetch_sub(&r->refs, 1) == 1) req_free(r);
}

/* Suspend / resume the connection; r->mu held. Suspended requests are listed
 * so a stop can resume every one of them. */
static void req_suspend(req *r)
{
    if (r->suspended) return;
    srv_server *s = r->s;
    pthread_mutex_lock(&s->mu);
    r->snext = s->susp;
    r->sprev = NULL;
    if (s->susp) s->susp->sprev = r;
    s->susp = r;
    pthread_mutex_unlock(&s->mu);
    r->suspended = 1;
    MHD_suspend_connection(r->conn);
}

static void req_resume(req *r)
{
    if (!r->suspended || r->gone) return;
    srv_server *s = r->s;
    pthread_mutex_lock(&s->mu);
    if (r->sprev)
        r->sprev->snext = r->snext;
    else
        s->susp = r->snext;
    if (r->snext) r->snext->sprev = r->sprev;
    r->sprev = r->snext = NULL;
    pthread_mutex_unlock(&s->mu);
    r->suspended = 0;
    MHD_resume_connection(r->conn);
}

/* ---------------------------------------------------------- responses */

typedef struct {
    const char *name, *value;
} header;

static enum MHD_Result send_resp(req *r, int status, struct MHD_Response *resp, const char *ctype,
                                 const header *hs, int nh)
{
    if (!resp) return MHD_NO;
    if (ctype) SRV_MHD_OK(MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype));
    for (int i = 0; i < nh; i++)
        SRV_MHD_OK(MHD_add_response_header(resp, hs[i].name, hs[i].value));
    if (atomic_load(&r->s->draining))
        SRV_MHD_OK(MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close"));
    if (r->first && !r->now) {
        r->held = resp;
        r->status = status;
        return MHD_YES;
    }
    int ok = SRV_MHD_OK(MHD_queue_response(r->conn, (unsigned int)status, resp));
    MHD_destroy_response(resp);
    if (ok) r->status = status;
    return ok ? MHD_YES : MHD_NO;
}

/* Respond with a malloc'd buffer (ownership passes to MHD). */
static enum MHD_Result send_owned(req *r, int status, const char *ctype, char *data, size_t len,
                                  const header *hs, int nh)
{
    struct MHD_Response *resp =
        SRV_MHD_PTR(MHD_create_response_from_buffer(len, data, MHD_RESPMEM_MUST_FREE));
    if (!resp) {
        free(data);
        return MHD_NO;
    }
    return send_resp(r, status, resp, ctype, hs, nh);
}

/* Respond with memory that outlives the response (documents, web files). */
static enum MHD_Result send_static(req *r, int status, const char *ctype, const void *data,
                                   size_t len)
{
    struct MHD_Response *resp =
        SRV_MHD_PTR(MHD_create_response_from_buffer(len, (void *)data, MHD_RESPMEM_PERSISTENT));
    return send_resp(r, status, resp, ctype, NULL, 0);
}

static enum MHD_Result send_json_text(req *r, int status, char *text)
{
    if (!text) return MHD_NO;
    return send_owned(r, status, "application/json", text, strlen(text), NULL, 0);
}

/* {"error": msg} with the status; 503 gets Retry-After, 401 WWW-Authenticate. */
static enum MHD_Result send_error(req *r, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static enum MHD_Result send_error(req *r, int status, const char *fmt, ...)
{
    char msg[PID_ERROR_MSG_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    for (char *p = msg; *p; p++) /* messages may quote client bytes: keep ASCII */
        if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e) *p = '?';
    json_t *j = json_pack("{s:s}", "error", msg);
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!text) return MHD_NO;
    header hs[2];
    int nh = 0;
    if (status == MHD_HTTP_SERVICE_UNAVAILABLE) hs[nh++] = (header){"Retry-After", "1"};
    if (status == MHD_HTTP_UNAUTHORIZED)
        hs[nh++] = (header){MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer"};
    return send_owned(r, status, "application/json", text, strlen(text), hs, nh);
}

/* An error answered once the body has been read (and discarded). */
static void defer_error(req *r, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void defer_error(req *r, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->msg, sizeof r->msg, fmt, ap);
    va_end(ap);
    r->http_status_deferred = status;
    r->kind = K_DEFERRED;
}

static const char *header_value(req *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

static const char *query_value(req *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, name);
}

/* ---------------------------------------------------------- auth */

static int const_time_eq(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    unsigned char d = (unsigned char)(la != lb);
    for (size_t i = 0; i < la; i++)
        d |= (unsigned char)(a[i] ^ b[lb ? i % lb : 0]);
    return d == 0;
}

static int authorized(req *r, int allow_query)
{
    const char *tok = r->s->cfg.token;
    if (!tok) return 1;
    const char *h = header_value(r, MHD_HTTP_HEADER_AUTHORIZATION);
    if (h && !strncmp(h, "Bearer ", 7) && const_time_eq(h + 7, tok)) return 1;
    const char *q = allow_query ? query_value(r, "token") : NULL;
    return q && const_time_eq(q, tok);
}

/* ---------------------------------------------------------- documents */

static enum MHD_Result send_stats(req *r, srv_model *only)
{
    srv_server *s = r->s;
    json_t *arr = json_array();
    for (int i = 0; arr && i < srv_repo_count(s->repo); i++) {
        srv_model *m = srv_repo_get(s->repo, i);
        if ((only && m != only) || !m->batcher) continue;
        srv_model_stats st;
        srv_metrics_stats(s->metrics, i, &st);
        json_t *bs = json_array();
        for (int b = 1; b <= s->cfg.max_batch; b++) {
            uint64_t c;
            double sec;
            srv_metrics_batch_stats(s->metrics, i, b, &c, &sec);
            if (!c) continue;
            json_array_append_new(bs, json_pack("{s:i, s:{s:I, s:I}, s:{s:I, s:I}, s:{s:I, s:I}}",
                                                "batch_size", b, "compute_input", "count",
                                                (json_int_t)c, "ns", (json_int_t)0, "compute_infer",
                                                "count", (json_int_t)c, "ns",
                                                (json_int_t)(sec * 1e9), "compute_output", "count",
                                                (json_int_t)c, "ns", (json_int_t)0));
        }
#define CNT(c, ns) "count", (json_int_t)(c), "ns", (json_int_t)(ns)
        json_t *is = json_pack(
            "{s:{s:I, s:I}, s:{s:I, s:I}, s:{s:I, s:I}, s:{s:I, s:I}, s:{s:I, s:I}, s:{s:I, s:I}, "
            "s:{s:I, s:I}, s:{s:I, s:I}}",
            "success", CNT(st.success_count, st.success_s * 1e9), "fail",
            CNT(st.fail_count, st.fail_s * 1e9), "queue", CNT(st.frames, st.queue_s * 1e9),
            "compute_input", CNT(st.batches, 0), "compute_infer",
            CNT(st.batches, st.compute_s * 1e9), "compute_output", CNT(st.batches, 0), "cache_hit",
            CNT(0, 0), "cache_miss", CNT(0, 0));
#undef CNT
        json_array_append_new(
            arr, json_pack("{s:s, s:s, s:I, s:I, s:I, s:o, s:o}", "name", m->name, "version", "1",
                           "last_inference", (json_int_t)(st.last_inference_unix_s * 1e3),
                           "inference_count", (json_int_t)st.frames, "execution_count",
                           (json_int_t)st.batches, "inference_stats", is ? is : json_object(),
                           "batch_stats", bs ? bs : json_array()));
    }
    json_t *root = json_pack("{s:o}", "model_stats", arr ? arr : json_array());
    char *text = root ? json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(root);
    return send_json_text(r, 200, text);
}

static enum MHD_Result send_metrics(req *r)
{
    srv_server *s = r->s;
    int n = srv_repo_count(s->repo);
    int64_t *depth = calloc((size_t)n, sizeof *depth);
    if (!depth) return send_error(r, 500, "out of memory");
    for (int i = 0; i < n; i++) {
        srv_model *m = srv_repo_get(s->repo, i);
        depth[i] = m->batcher ? srv_batcher_depth(m->batcher) : 0;
    }
    srv_gpu_reading g;
    int have_gpu = srv_nvml_read(s->nvml, &g) == 0;
    char *text = NULL;
    size_t len = 0;
    pid_error e;
    pid_status st = srv_metrics_format(s->metrics, depth, have_gpu ? &g : NULL, &text, &len, &e);
    free(depth);
    if (st) return send_error(r, 500, "%s", e.msg);
    return send_owned(r, 200, "text/plain; version=0.0.4; charset=utf-8", text, len, NULL, 0);
}

/* ---------------------------------------------------------- inference */

static void on_job_done(srv_job *j)
{
    req *r = j->user;
    if (j->status == SRV_JOB_OK)
        srv_window_add(r->s->window, j->t_done_s, j->t_done_s - j->t_submit_s,
                       j->t_start_s - j->t_submit_s);
    pthread_mutex_lock(&r->mu);
    r->job_state = 2;
    req_resume(r);
    pthread_mutex_unlock(&r->mu);
    req_unref(r);
}

/* Hand r->job to the model's batcher and suspend until it is done. */
static enum MHD_Result submit_and_wait(req *r)
{
    srv_server *s = r->s;
    pid_error e;
    int queued = -1;
    r->job.done = on_job_done;
    r->job.user = r;
    r->job.deadline_s = pid_mono_s() + r->s->cfg.timeout_s;
    pthread_mutex_lock(&r->mu);
    atomic_fetch_add(&r->refs, 1);
    pid_status st = srv_batcher_submit(r->model->batcher, &r->job, NULL, NULL, &queued, &e);
    if (st || queued != 1) {
        atomic_fetch_sub(&r->refs, 1);
        pthread_mutex_unlock(&r->mu);
        if (st) return send_error(r, 400, "%s", e.msg);
        return send_error(r, 503, queued == 0 ? "model %s: queue full" : "model %s: shutting down",
                          r->model->name);
    }
    r->job_state = 1;
    pthread_mutex_lock(&s->mu);
    int stopping = s->stopping;
    pthread_mutex_unlock(&s->mu);
    if (!stopping) req_suspend(r);
    pthread_mutex_unlock(&r->mu);
    if (stopping) return send_error(r, 503, "server is shutting down");
    return MHD_YES;
}

static enum MHD_Result infer_start(req *r)
{
    srv_model *m = r->model;
    pid_error e;
    long long hlen = -1;
    const char *hl = header_value(r, "Inference-Header-Content-Length");
    if (hl && (hlen = srv_parse_header_len(hl, r->len)) < 0)
        return send_error(r, 400, "Inference-Header-Content-Length '%.32s' is not 0..%zu", hl,
                          r->len);
    srv_proto_model pm = {m->frame_size, m->n_classes, r->s->cfg.max_queue};
    pid_status st = srv_infer_parse(&pm, r->body ? r->body : "", r->len, hlen, &r->ireq, &e);
    free(r->body);
    r->body = NULL;
    if (st) return send_error(r, st == PID_ERR_NOMEM ? 500 : 400, "%s", e.msg);
    const srv_infer_req *q = r->ireq;
    /* Shed load before preparing the frames: under overload most requests
     * are turned away, and preparing them would take CPU from the batches
     * being served. The batcher's own check below stays authoritative. */
    if (!srv_batcher_has_room(m->batcher, q->batch))
        return send_error(r, 503, "model %s: queue full", m->name);
    const int64_t n = m->frame_size;
    r->frames = malloc((size_t)q->batch * (size_t)n * sizeof *r->frames);
    if (!r->frames) return send_error(r, 500, "out of memory for %lld frames", (long long)q->batch);
    double *y = q->axis ? malloc((size_t)q->width * sizeof *y) : NULL;
    if (q->axis && !y) return send_error(r, 500, "out of memory");
    for (int64_t b = 0; b < q->batch; b++) {
        float *frame = r->frames + (size_t)b * (size_t)n;
        const float *row = q->patterns + (size_t)b * (size_t)q->width;
        if (q->axis) {
            for (int64_t j = 0; j < q->width; j++)
                y[j] = row[j];
            pid_xy xy = {(int)q->width, q->axis, y, NULL};
            st = cls_prepare_xy(m->c, &xy, q->has_wavelength ? &q->wavelength_a : NULL, frame, &e);
        } else {
            st = cls_prepare_frame(m->c, row, frame, &e);
        }
        if (st) {
            free(y);
            const char *msg = strncmp(e.msg, "classify: ", 10) ? e.msg : e.msg + 10;
            return send_error(r, st == PID_ERR_NOMEM ? 500 : 400, "pattern %lld: %s", (long long)b,
                              msg);
        }
    }
    free(y);
    if (srv_results_create(&r->res, (int)q->batch, m->n_classes, q->top_k, 1, &e))
        return send_error(r, 500, "%s", e.msg);
    memset(&r->job, 0, sizeof r->job);
    r->job.n = (int)q->batch;
    r->job.frames = r->frames;
    r->job.res = r->res;
    r->job.stream = "infer";
    return submit_and_wait(r);
}

static enum MHD_Result job_failed(req *r)
{
    if (r->aborted) return send_error(r, 503, "server is shutting down");
    if (r->job.status == SRV_JOB_EXPIRED)
        return send_error(r, 504, "model %s: %s", r->model->name, r->job.errmsg);
    return send_error(r, 500, "model %s: %s", r->model->name, r->job.errmsg);
}

static enum MHD_Result infer_finish(req *r)
{
    if (r->job_state != 2 || r->job.status != SRV_JOB_OK) return job_failed(r);
    char *body = NULL;
    size_t blen = 0, jlen = 0;
    pid_error e;
    if (srv_infer_encode(r->ireq, r->model->name, r->res, r->model->names, &body, &blen, &jlen, &e))
        return send_error(r, 500, "%s", e.msg);
    char hl[32];
    snprintf(hl, sizeof hl, "%zu", jlen);
    header h = {"Inference-Header-Content-Length", hl};
    if (jlen < blen) return send_owned(r, 200, "application/octet-stream", body, blen, &h, 1);
    return send_owned(r, 200, "application/json", body, blen, NULL, 0);
}

static enum MHD_Result classify_start(req *r)
{
    srv_model *m = r->model;
    pid_error e;
    double wl = 0;
    const char *wq = query_value(r, "wavelength");
    if (wq) {
        pid_xrd_source src;
        if (pid_xrd_source_parse(wq, &src, &e)) return send_error(r, 400, "wavelength: %s", e.msg);
        wl = src.wavelength_a[0];
    }
    if (!r->len) return send_error(r, 400, "empty body: send an .xy / .xye / .csv pattern");
    pid_xy *xy = NULL;
    pid_status st = pid_xy_read_buffer(r->body, r->len, "request", &xy, &e);
    free(r->body);
    r->body = NULL;
    if (st) return send_error(r, st == PID_ERR_NOMEM ? 500 : 400, "%s", e.msg);
    r->frames = malloc((size_t)m->frame_size * sizeof *r->frames);
    if (!r->frames) {
        pid_xy_destroy(xy);
        return send_error(r, 500, "out of memory");
    }
    st = cls_prepare_xy(m->c, xy, wq ? &wl : NULL, r->frames, &e);
    pid_xy_destroy(xy);
    if (st) return send_error(r, 400, "%s", strncmp(e.msg, "classify: ", 10) ? e.msg : e.msg + 10);
    if (srv_results_create(&r->res, 1, m->n_classes, 3, 0, &e))
        return send_error(r, 500, "%s", e.msg);
    memset(&r->job, 0, sizeof r->job);
    r->job.n = 1;
    r->job.frames = r->frames;
    r->job.res = r->res;
    r->job.stream = "classify";
    return submit_and_wait(r);
}

static enum MHD_Result classify_finish(req *r)
{
    if (r->job_state != 2 || r->job.status != SRV_JOB_OK) return job_failed(r);
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    if (!buf) return send_error(r, 500, "out of memory");
    len = (size_t)snprintf(buf, cap, "{\"file\": \"request\", \"phases\": ");
    char us[48], rs[48], ms[48];
    srv_fmt_num(us, sizeof us, r->res->unknown_score[0]);
    srv_fmt_num(rs, sizeof rs, r->res->residual[0]);
    srv_fmt_num(ms, sizeof ms, r->res->missing[0]);
    if (srv_render_phases(buf, cap, &len, r->res, 0, 3, r->model->name_json, r->model->formula_json,
                          r->model->twins_json) ||
        len + 140 + strlen(us) + strlen(rs) + strlen(ms) > cap) {
        free(buf);
        return send_error(r, 500, "answer too long");
    }
    len += (size_t)snprintf(buf + len, cap - len,
                            ", \"unknown_score\": %s, \"residual\": %s, \"missing\": %s, "
                            "\"unknown\": %s}\n",
                            us, rs, ms, r->res->unknown[0] ? "true" : "false");
    return send_owned(r, 200, "application/json", buf, len, NULL, 0);
}

/* ---------------------------------------------------------- streams */

static void on_seg_done(srv_job *j)
{
    seg *g = j->user;
    req *r = g->r;
    if (j->status == SRV_JOB_OK)
        srv_window_add(r->s->window, j->t_done_s, j->t_done_s - j->t_submit_s,
                       j->t_start_s - j->t_submit_s);
    pthread_mutex_lock(&r->mu);
    g->done = 1;
    free(g->frames);
    g->frames = NULL;
    free(g->seqs);
    g->seqs = NULL;
    r->st->segs_out--;
    if (r->st->segs_out == 0 && r->st->final_wait) req_resume(r);
    pthread_mutex_unlock(&r->mu);
    req_unref(r);
}

static void on_space(void *user)
{
    req *r = user;
    pthread_mutex_lock(&r->mu);
    req_resume(r);
    pthread_mutex_unlock(&r->mu);
    req_unref(r);
}

/* Record frame i of g as refused with message msg. */
static void seg_bad(seg *g, int i, const char *msg)
{
    g->bad[i] = 1;
    if (!g->errq) g->errq = calloc((size_t)g->n, sizeof *g->errq);
    if (g->errq && !g->errq[i]) g->errq[i] = srv_json_quote(msg);
}

/* Submit segment g (r->mu held). Returns 1 when queued or nothing to queue,
 * 0 when the queue is full (a space callback is registered), -1 when
 * refused for good (its frames become error lines). */
static int seg_submit(req *r, seg *g)
{
    if (g->n_valid == 0) {
        g->done = 1;
        return 1;
    }
    pid_error e;
    int queued = -1;
    atomic_fetch_add(&r->refs, 2); /* the job, and the space callback */
    pid_status st = srv_batcher_submit(r->model->batcher, &g->job, on_space, r, &queued, &e);
    if (!st && queued == 1) {
        atomic_fetch_sub(&r->refs, 1); /* no space callback */
        r->st->segs_out++;
        return 1;
    }
    if (!st && queued == 0) {
        atomic_fetch_sub(&r->refs, 1); /* no job */
        return 0;
    }
    atomic_fetch_sub(&r->refs, 2);
    const char *why = st ? e.msg : "server is shutting down";
    for (int i = 0; i < g->n; i++)
        if (!g->bad[i]) seg_bad(g, i, why);
    g->n_valid = 0;
    g->done = 1;
    r->st->refused = 1;
    return -1;
}

static seg *seg_new(req *r, int n)
{
    srv_model *m = r->model;
    seg *g = calloc(1, sizeof *g);
    if (!g) return NULL;
    pid_error e;
    g->r = r;
    g->n = n;
    g->seq0 = r->st->seq_next;
    g->bad = calloc((size_t)n, 1);
    g->frames = malloc((size_t)n * (size_t)m->frame_size * sizeof *g->frames);
    g->seqs = malloc((size_t)n * sizeof *g->seqs);
    if (!g->bad || !g->frames || !g->seqs ||
        srv_results_create(&g->res, n, m->n_classes, 3, 0, &e)) {
        seg_free(g);
        return NULL;
    }
    return g;
}

static void stream_append(stream_ctx *st, seg *g)
{
    if (st->tail)
        st->tail->next = g;
    else
        st->head = g;
    st->tail = g;
}

/* Consume upload data: complete frames become segments handed to the
 * batcher at once; when the queue is full the connection is suspended with
 * the rest of the data left in MHD's buffer. */
static enum MHD_Result stream_upload(req *r, const char *data, size_t *size)
{
    stream_ctx *st = r->st;
    srv_model *m = r->model;
    const size_t fb = st->frame_bytes;
    pthread_mutex_lock(&r->mu);
    if (st->pending) {
        int q = seg_submit(r, st->pending);
        if (q == 0) {
            req_suspend(r);
            pthread_mutex_unlock(&r->mu);
            return MHD_YES;
        }
        st->pending = NULL;
    }
    pthread_mutex_unlock(&r->mu);
    size_t off = 0;
    while (off < *size) {
        if (st->too_long || st->refused) {
            off = *size; /* discard the rest */
            break;
        }
        size_t avail = (st->partial_len + (*size - off)) / fb;
        if (avail == 0) {
            memcpy(st->partial + st->partial_len, data + off, *size - off);
            st->partial_len += *size - off;
            off = *size;
            break;
        }
        int64_t room = st->max_frames - st->n_frames;
        if (room <= 0) {
            st->too_long = 1;
            continue;
        }
        int cap = SRV_SEG_MAX < r->s->cfg.max_queue ? SRV_SEG_MAX : r->s->cfg.max_queue;
        int n = (int)(avail < (size_t)cap ? avail : (size_t)cap);
        if (n > room) n = (int)room;
        seg *g = seg_new(r, n);
        if (!g) {
            st->refused = 1;
            continue;
        }
        for (int i = 0; i < n; i++) {
            const unsigned char *src;
            if (st->partial_len > 0) {
                size_t need = fb - st->partial_len;
                memcpy(st->partial + st->partial_len, data + off, need);
                off += need;
                st->partial_len = 0;
                src = st->partial;
            } else {
                src = (const unsigned char *)data + off;
                off += fb;
            }
            float *frame = g->frames + (size_t)g->n_valid * (size_t)m->frame_size;
            size_t badi = 0;
            pid_error e;
            if (srv_convert_le(st->dt, src, (size_t)m->frame_size, frame, &badi)) {
                char msg[96];
                snprintf(msg, sizeof msg, "non-finite value at point %zu", badi);
                seg_bad(g, i, msg);
            } else if (cls_prepare_frame(m->c, frame, frame, &e)) {
                seg_bad(g, i, strncmp(e.msg, "classify: ", 10) ? e.msg : e.msg + 10);
            } else {
                g->seqs[g->n_valid++] = g->seq0 + i;
            }
        }
        st->seq_next += n;
        st->n_frames += n;
        g->job.n = g->n_valid;
        g->job.frames = g->frames;
        g->job.res = g->res;
        g->job.done = on_seg_done;
        g->job.user = g;
        g->job.stream = st->id;
        g->job.seq0 = g->seq0;
        g->job.seq = g->seqs;
        g->job.deadline_s = pid_mono_s() + r->s->cfg.timeout_s;
        pthread_mutex_lock(&r->mu);
        stream_append(st, g);
        int q = seg_submit(r, g);
        if (q == 0) {
            st->pending = g;
            req_suspend(r);
            pthread_mutex_unlock(&r->mu);
            *size -= off;
            return MHD_YES;
        }
        pthread_mutex_unlock(&r->mu);
    }
    *size = 0;
    return MHD_YES;
}

/* Render one frame's line at buf[*len]; -1 when it does not fit. */
static int stream_line(req *r, seg *g, int i, char *buf, size_t cap, size_t *len)
{
    size_t at = *len;
    if (g->bad[i]) {
        char head[48];
        snprintf(head, sizeof head, "{\"seq\": %lld, \"error\": ", (long long)(g->seq0 + i));
        const char *q = g->errq && g->errq[i] ? g->errq[i] : "\"bad frame\"";
        size_t need = strlen(head) + strlen(q) + 3;
        if (at + need >= cap) return -1;
        *len += (size_t)snprintf(buf + at, cap - at, "%s%s}\n", head, q);
        return 0;
    }
    if (g->job.status != SRV_JOB_OK) {
        char msg[200];
        snprintf(msg, sizeof msg, "{\"seq\": %lld, \"error\": \"%s\"}\n", (long long)(g->seq0 + i),
                 g->job.status == SRV_JOB_EXPIRED ? "deadline passed while queued"
                                                  : "inference failed");
        size_t need = strlen(msg);
        if (at + need >= cap) return -1;
        memcpy(buf + at, msg, need);
        *len += need;
        return 0;
    }
    if (srv_render_line(buf, cap, len, (long long)(g->seq0 + i), g->res, r->st->rrow,
                        r->model->name_json, r->model->formula_json)) {
        *len = at;
        return -1;
    }
    return 0;
}

#define SRV_STAGE_BYTES 65536

/* Render lines into the staging buffer (empty on entry) until it is nearly
 * full or everything, trailer included, is rendered. */
static void stream_stage(req *r)
{
    stream_ctx *st = r->st;
    char *buf = st->out;
    size_t len = 0;
    st->out_off = 0;
    while (st->head) {
        seg *g = st->head;
        while (st->ridx < g->n) {
            if (stream_line(r, g, st->ridx, buf, SRV_STAGE_BYTES, &len)) {
                st->out_len = len;
                return;
            }
            if (!g->bad[st->ridx]) st->rrow++;
            st->ridx++;
        }
        st->head = g->next;
        if (!st->head) st->tail = NULL;
        seg_free(g);
        st->ridx = st->rrow = 0;
    }
    if (!st->tail_written) {
        char line[300];
        line[0] = '\0';
        if (st->too_long)
            snprintf(line, sizeof line,
                     "{\"error\": \"stream too long: at most %lld frames per request (continue "
                     "in a new request with X-Seq-Start: %lld)\"}\n",
                     (long long)st->max_frames, (long long)st->seq_next);
        else if (st->refused)
            snprintf(line, sizeof line,
                     "{\"error\": \"frames refused: server is shutting down "
                     "or out of memory\"}\n");
        else if (st->partial_len > 0)
            snprintf(line, sizeof line,
                     "{\"error\": \"truncated frame after seq %lld: %zu of %zu bytes\"}\n",
                     (long long)st->seq_next - 1, st->partial_len, st->frame_bytes);
        size_t ll = strlen(line);
        if (len + ll >= SRV_STAGE_BYTES) {
            st->out_len = len;
            return;
        }
        memcpy(buf + len, line, ll);
        len += ll;
        st->tail_written = 1;
    }
    st->out_len = len;
}

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    req *r = cls;
    stream_ctx *st = r->st;
    if (st->out_off == st->out_len) stream_stage(r);
    size_t n = st->out_len - st->out_off;
    if (n == 0) return MHD_CONTENT_READER_END_OF_STREAM;
    if (n > max) n = max;
    memcpy(buf, st->out + st->out_off, n);
    st->out_off += n;
    return (ssize_t)n;
}

static enum MHD_Result stream_final(req *r)
{
    stream_ctx *st = r->st;
    pthread_mutex_lock(&r->mu);
    if (r->aborted) {
        /* stopping: whatever is left is answered as refused */
        st->refused |= st->pending != NULL || st->segs_out > 0;
    }
    if (st->pending && !r->aborted) {
        int q = seg_submit(r, st->pending);
        if (q == 0) {
            req_suspend(r);
            pthread_mutex_unlock(&r->mu);
            return MHD_YES;
        }
        st->pending = NULL;
    }
    if (st->segs_out > 0 && !r->aborted) {
        st->final_wait = 1;
        req_suspend(r);
        pthread_mutex_unlock(&r->mu);
        return MHD_YES;
    }
    int busy = st->segs_out > 0;
    pthread_mutex_unlock(&r->mu);
    if (busy) return send_error(r, 503, "server is shutting down");
    if (st->pending) { /* never queued: its frames are refused */
        seg *g = st->pending;
        st->pending = NULL;
        for (int i = 0; i < g->n; i++)
            if (!g->bad[i]) seg_bad(g, i, "server is shutting down");
        g->n_valid = 0;
        g->done = 1;
    }
    if (!(st->out = malloc(SRV_STAGE_BYTES))) return send_error(r, 500, "out of memory");
    struct MHD_Response *resp = SRV_MHD_PTR(
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 65536, stream_reader, r, NULL));
    return send_resp(r, 200, resp, "application/x-ndjson", NULL, 0);
}

/* Validate the stream headers and set up r->st; answers errors at once. */
static enum MHD_Result stream_begin(req *r)
{
    srv_model *m = r->model;
    const char *fs = header_value(r, "X-Frame-Size");
    const char *dt = header_value(r, "X-Frame-Dtype");
    const char *ss = header_value(r, "X-Seq-Start");
    const char *id = header_value(r, "X-Stream-Id");
    char *end = NULL;
    long long n = fs ? strtoll(fs, &end, 10) : -1;
    if (!fs || end == fs || *end || n != m->frame_size)
        return send_error(r, 400, "X-Frame-Size must be the model's grid length %lld",
                          (long long)m->frame_size);
    srv_dtype dtype;
    if (!dt || srv_dtype_parse(dt, &dtype))
        return send_error(r, 400, "X-Frame-Dtype must be FP32, UINT16 or UINT32");
    long long s0 = 0;
    if (ss) {
        errno = 0;
        s0 = strtoll(ss, &end, 10);
        if (end == ss || *end || errno || s0 < 0)
            return send_error(r, 400, "X-Seq-Start must be an integer >= 0");
    }
    if (id && !srv_name_valid(id, 64))
        return send_error(r, 400, "X-Stream-Id must match [A-Za-z0-9._-]{1,64}");
    r->st = calloc(1, sizeof *r->st);
    if (!r->st) return send_error(r, 500, "out of memory");
    stream_ctx *st = r->st;
    st->dt = dtype;
    st->frame_bytes = (size_t)m->frame_size * srv_dtype_size(dtype);
    st->partial = malloc(st->frame_bytes);
    if (!st->partial) return send_error(r, 500, "out of memory");
    st->seq_next = s0;
    st->max_frames = (int64_t)(r->s->cfg.max_body_bytes / SRV_STREAM_BYTES_PER_FRAME);
    if (st->max_frames < 1) st->max_frames = 1;
    if (id)
        snprintf(st->id, sizeof st->id, "%s", id);
    else
        snprintf(st->id, sizeof st->id, "s%ld", atomic_fetch_add(&r->s->stream_counter, 1) + 1);
    r->kind = K_STREAM;
    return MHD_YES;
}

/* ---------------------------------------------------------- events */

static void sse_suspend(void *user)
{
    req *r = user;
    pthread_mutex_lock(&r->mu);
    req_suspend(r);
    pthread_mutex_unlock(&r->mu);
}

static void sse_resume(void *user)
{
    req *r = user;
    pthread_mutex_lock(&r->mu);
    req_resume(r);
    pthread_mutex_unlock(&r->mu);
}

static ssize_t sse_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    req *r = cls;
    ssize_t n = srv_events_read(r->sse, buf, max);
    return n < 0 ? MHD_CONTENT_READER_END_OF_STREAM : n;
}

static enum MHD_Result events_begin(req *r)
{
    srv_server *s = r->s;
    const char *model = query_value(r, "model");
    if (model && !srv_repo_find(s->repo, model))
        return send_error(r, 404, "unknown model '%.128s'", model);
    r->sse = srv_events_subscribe(s->events, model, sse_suspend, sse_resume, r);
    if (!r->sse) return send_error(r, 500, "out of memory");
    struct MHD_Response *resp = SRV_MHD_PTR(
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, sse_reader, r, NULL));
    header hs[2] = {{MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache"}, {"X-Accel-Buffering", "no"}};
    r->kind = K_EVENTS;
    return send_resp(r, 200, resp, "text/event-stream", hs, 2);
}

/* Observer of every inferred frame (worker threads): feeds the live events. */
static void observe(void *user, const srv_job *job, int index, const float *frame)
{
    srv_server *s = user;
    if (srv_events_clients(s->events) == 0) return;
    req *r = job->done == on_seg_done ? ((seg *)job->user)->r : job->user;
    srv_model *m = r->model;
    const mf_grid *g = &cls_model(m->c)->grid;
    srv_event_result ev = {m->name,
                           job->stream,
                           (long long)(job->seq ? job->seq[index] : job->seq0 + index),
                           1e3 * (pid_mono_s() - job->t_submit_s),
                           job->res,
                           index,
                           m->name_json,
                           m->formula_json,
                           frame,
                           m->frame_size,
                           g->x0,
                           g->step};
    srv_events_offer(s->events, &ev);
}

static char *stats_json(void *user)
{
    srv_server *s = user;
    double now = pid_mono_s();
    uint64_t req_n, frames, batches;
    srv_metrics_totals(s->metrics, &req_n, &frames, &batches);
    double dt = now - s->st_t;
    if (!(dt > 0)) dt = 1;
    double fps = (double)(frames - s->st_frames) / dt;
    double rps = (double)(req_n - s->st_req) / dt;
    uint64_t db = batches - s->st_batches;
    double bmean = db ? (double)(frames - s->st_frames) / (double)db : 0;
    const double ps[3] = {50, 90, 99};
    double lat[3], q[3];
    srv_window_percentiles(s->window, now, 10.0, ps, 3, lat, q);
    int64_t depth = 0;
    for (int i = 0; i < srv_repo_count(s->repo); i++) {
        srv_model *m = srv_repo_get(s->repo, i);
        if (m->batcher) depth += srv_batcher_depth(m->batcher);
    }
    json_t *gpu = json_null();
    srv_gpu_reading g;
    if (srv_nvml_read(s->nvml, &g) == 0) {
        double de = g.energy_j - s->st_energy;
        json_t *fpj = s->st_energy > 0 && de > 0 ? json_real((double)(frames - s->st_frames) / de)
                                                 : json_null();
        gpu = json_pack("{s:s, s:f, s:f, s:o}", "name", g.name, "power_w", g.power_w, "energy_j",
                        g.energy_j, "frames_per_joule", fpj);
        s->st_energy = g.energy_j;
    }
    s->st_t = now;
    s->st_req = req_n;
    s->st_frames = frames;
    s->st_batches = batches;
#define R3(x) (round((x)*1e3) / 1e3)
    json_t *o = json_pack("{s:f, s:f, s:f, s:{s:f, s:f, s:f}, s:{s:f, s:f}, s:f, s:I, s:s, s:o}",
                          "time", R3(pid_unix_s()), "frames_per_s", R3(fps), "requests_per_s",
                          R3(rps), "latency_ms", "p50", R3(1e3 * lat[0]), "p90", R3(1e3 * lat[1]),
                          "p99", R3(1e3 * lat[2]), "queue_ms", "p50", R3(1e3 * q[0]), "p99",
                          R3(1e3 * q[2]), "batch_mean", R3(bmean), "queue_depth", (json_int_t)depth,
                          "device", s->device, "gpu", gpu ? gpu : json_null());
#undef R3
    char *text =
        o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(15)) : NULL;
    json_decref(o);
    return text;
}

/* ---------------------------------------------------------- routing */

#define MAX_SEGS 8

/* Split url ("/a/b/c") into at most MAX_SEGS segments (in buf); -1 when
 * it has more or is too long. */
static int split_path(const char *url, char *buf, size_t cap, char **seg_out)
{
    size_t n = strlen(url);
    if (n + 1 > cap) return -1;
    memcpy(buf, url, n + 1);
    int k = 0;
    char *p = buf;
    while (*p == '/')
        p++;
    while (*p) {
        if (k == MAX_SEGS) return -1;
        seg_out[k++] = p;
        char *slash = strchr(p, '/');
        if (!slash) break;
        *slash = '\0';
        p = slash + 1;
    }
    return k;
}

static int method_is(const char *m, const char *want)
{
    return !strcmp(m, want) || (!strcmp(want, "GET") && !strcmp(m, "HEAD"));
}

static enum MHD_Result wrong_method(req *r, const char *allow)
{
    header h = {MHD_HTTP_HEADER_ALLOW, allow};
    json_t *j = json_pack("{s:s}", "error", "method not allowed");
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!text) return MHD_NO;
    return send_owned(r, 405, "application/json", text, strlen(text), &h, 1);
}

/* Resolve a model name for a route. Answers (or defers, for uploads) 400 /
 * 404 / 503 and returns NULL when it cannot be served. */
static srv_model *route_model(req *r, const char *name, int post, enum MHD_Result *res)
{
    srv_model *m = NULL;
    int status = 0;
    if (!srv_name_valid(name, SRV_MODEL_NAME_MAX))
        status = 400;
    else if (!(m = srv_repo_find(r->s->repo, name)))
        status = 404;
    else if (!m->batcher)
        status = 503;
    if (!status) return m;
    const char *why = status == 400   ? "invalid model name"
                      : status == 404 ? "unknown model"
                                      : "model not available";
    if (post) {
        defer_error(r, status, "%s '%.128s'%s%s", why, name, m && m->reason ? ": " : "",
                    m && m->reason ? m->reason : "");
        *res = MHD_YES;
    } else {
        *res = send_error(r, status, "%s '%.128s'%s%s", why, name, m && m->reason ? ": " : "",
                          m && m->reason ? m->reason : "");
    }
    return NULL;
}

/* First call of a request: decide what it is, answer what needs no body. */
static enum MHD_Result route(req *r, const char *url, const char *method)
{
    srv_server *s = r->s;
    char buf[1024];
    char *sg[MAX_SEGS];
    int n = split_path(url, buf, sizeof buf, sg);
    int post = !strcmp(method, "POST");
    enum MHD_Result res = MHD_YES;
    if (n < 0) return send_error(r, 404, "not found");

    /* health: no token, answered even while draining */
    if (n == 3 && !strcmp(sg[0], "v2") && !strcmp(sg[1], "health") &&
        (!strcmp(sg[2], "live") || !strcmp(sg[2], "ready"))) {
        if (!method_is(method, "GET")) return wrong_method(r, "GET");
        if (!strcmp(sg[2], "live")) return send_static(r, 200, "application/json", "", 0);
        if (atomic_load(&s->draining)) return send_error(r, 503, "server is shutting down");
        if (!s->all_loaded) return send_error(r, 503, "not every model is loaded");
        return send_static(r, 200, "application/json", "", 0);
    }
    int web = (n == 0) || (n == 1 && !strcmp(sg[0], "index.html")) ||
              (n == 2 && !strcmp(sg[0], "web")) ||
              (n == 2 && !strcmp(sg[0], "v1") && !strcmp(sg[1], "events"));
    if (!authorized(r, web)) return send_error(r, 401, "missing or wrong bearer token");
    if (atomic_load(&s->draining)) return send_error(r, 503, "server is shutting down");

    if (n == 0 || (n == 1 && !strcmp(sg[0], "index.html")) || (n == 2 && !strcmp(sg[0], "web"))) {
        if (!method_is(method, "GET")) return wrong_method(r, "GET");
        const char *name = n == 2 ? sg[1] : "index.html";
        const srv_web_file *f = srv_name_valid(name, 128) ? srv_web_find(name) : NULL;
        if (!f) return send_error(r, 404, "not found");
        return send_static(r, 200, f->content_type, f->data, f->len);
    }
    if (n == 1 && !strcmp(sg[0], "metrics")) {
        if (!method_is(method, "GET")) return wrong_method(r, "GET");
        return send_metrics(r);
    }
    if (n == 1 && !strcmp(sg[0], "v2")) {
        if (!method_is(method, "GET")) return wrong_method(r, "GET");
        return send_static(r, 200, "application/json", s->v2_json, strlen(s->v2_json));
    }
    if (n == 3 && !strcmp(sg[0], "v2") && !strcmp(sg[1], "repository") && !strcmp(sg[2], "index")) {
        if (!post) return wrong_method(r, "POST");
        r->kind = K_INDEX;
        return MHD_YES;
    }
    if (n == 3 && !strcmp(sg[0], "v2") && !strcmp(sg[1], "models") && !strcmp(sg[2], "stats")) {
        if (!method_is(method, "GET")) return wrong_method(r, "GET");
        return send_stats(r, NULL);
    }
    if (n >= 3 && !strcmp(sg[0], "v2") && !strcmp(sg[1], "models")) {
        /* /v2/models/NAME[/versions/V][/ACTION] */
        int k = 3;
        if (n >= 5 && !strcmp(sg[3], "versions")) {
            if (strcmp(sg[4], "1"))
                return send_error(r, 404, "model '%.128s' has no version '%.32s'", sg[2], sg[4]);
            k = 5;
        }
        if (n > k + 1) return send_error(r, 404, "not found");
        const char *action = n == k + 1 ? sg[k] : "";
        if (!strcmp(action, "infer")) {
            if (!post) return wrong_method(r, "POST");
            r->kind = K_INFER;
            r->model = route_model(r, sg[2], 1, &res);
            return res;
        }
        if (!method_is(method, "GET")) return wrong_method(r, "GET");
        if (!strcmp(action, "ready")) {
            srv_model *m = srv_repo_find(s->repo, sg[2]);
            if (!m || !m->batcher) return send_error(r, 404, "model '%.128s' is not ready", sg[2]);
            return send_static(r, 200, "application/json", "", 0);
        }
        srv_model *m = route_model(r, sg[2], 0, &res);
        if (!m) return res;
        if (!*action)
            return send_static(r, 200, "application/json", m->metadata_json,
                               strlen(m->metadata_json));
        if (!strcmp(action, "config"))
            return send_static(r, 200, "application/json", m->config_json, strlen(m->config_json));
        if (!strcmp(action, "stats")) return send_stats(r, m);
        return send_error(r, 404, "not found");
    }
    if (n == 2 && !strcmp(sg[0], "v1") && !strcmp(sg[1], "models")) {
        if (!method_is(method, "GET")) return wrong_method(r, "GET");
        const char *doc = srv_repo_v1_models(s->repo);
        if (!doc) return send_error(r, 500, "out of memory");
        return send_static(r, 200, "application/json", doc, strlen(doc));
    }
    if (n == 2 && !strcmp(sg[0], "v1") && !strcmp(sg[1], "events")) {
        if (!method_is(method, "GET")) return wrong_method(r, "GET");
        return events_begin(r);
    }
    if (n == 4 && !strcmp(sg[0], "v1") && !strcmp(sg[1], "models") &&
        (!strcmp(sg[3], "classify") || !strcmp(sg[3], "stream"))) {
        if (!post) return wrong_method(r, "POST");
        int is_stream = !strcmp(sg[3], "stream");
        r->kind = is_stream ? K_STREAM : K_CLASSIFY;
        r->model = route_model(r, sg[2], !is_stream, &res);
        if (is_stream && r->model) return stream_begin(r);
        return res;
    }
    return send_error(r, 404, "not found");
}

/* ---------------------------------------------------------- MHD callbacks */

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    srv_server *s = cls;
    req *r = *con_cls;
    if (!r) {
        r = calloc(1, sizeof *r);
        if (!r) return MHD_NO;
        r->s = s;
        r->conn = conn;
        r->t0 = pid_mono_s();
        pthread_mutex_init(&r->mu, NULL);
        atomic_init(&r->refs, 1);
        *con_cls = r;
        atomic_fetch_add(&s->active, 1);
        int post = !strcmp(method, "POST");
        if (post) {
            /* Bodies over the limit are refused before they are read. */
            const char *cl = header_value(r, MHD_HTTP_HEADER_CONTENT_LENGTH);
            size_t ul = strlen(url);
            int stream = ul >= 7 && !strcmp(url + ul - 7, "/stream");
            if (cl && !stream) { /* streams are bounded per frame, not per body */
                char *end = NULL;
                errno = 0;
                unsigned long long v = strtoull(cl, &end, 10);
                if (end != cl && !*end && !errno && v > s->cfg.max_body_bytes) {
                    r->now = 1;
                    r->kind = K_DONE;
                    return send_error(r, 413, "body of %llu bytes exceeds the limit of %zu", v,
                                      s->cfg.max_body_bytes);
                }
            }
        }
        r->first = 1;
        enum MHD_Result res = route(r, url, method);
        r->first = 0;
        if (r->status) r->kind = K_DONE; /* answered at the headers */
        return res;
    }
    /* libmicrohttpd may call again at once after a suspension made in this
     * callback (the rest of a chunk): do nothing until resumed. */
    pthread_mutex_lock(&r->mu);
    int suspended = r->suspended;
    pthread_mutex_unlock(&r->mu);
    if (suspended) return MHD_YES;
    if (r->kind == K_DONE || r->kind == K_NONE || r->kind == K_EVENTS) {
        /* answered (or held) already: ignore any body */
        if (*upload_data_size) {
            r->discarded += *upload_data_size;
            *upload_data_size = 0;
            if (r->discarded > s->cfg.max_body_bytes + (size_t)(1 << 20)) return MHD_NO;
            return MHD_YES;
        }
        if (r->held) {
            struct MHD_Response *resp = r->held;
            r->held = NULL;
            int ok = SRV_MHD_OK(MHD_queue_response(conn, (unsigned int)r->status, resp));
            MHD_destroy_response(resp);
            return ok ? MHD_YES : MHD_NO;
        }
        return MHD_YES;
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        switch (r->kind) {
        case K_STREAM:
            return stream_upload(r, upload_data, upload_data_size);
        case K_INFER:
        case K_CLASSIFY:
            if (!r->too_big && r->len + n <= s->cfg.max_body_bytes) {
                if (r->len + n + 1 > r->cap) {
                    size_t cap = r->cap ? r->cap : 65536;
                    while (cap < r->len + n + 1)
                        cap *= 2;
                    if (cap > s->cfg.max_body_bytes + 1) cap = s->cfg.max_body_bytes + 1;
                    char *p = realloc(r->body, cap);
                    if (!p) return MHD_NO;
                    r->body = p;
                    r->cap = cap;
                }
                memcpy(r->body + r->len, upload_data, n);
                r->len += n;
                r->body[r->len] = '\0';
                break;
            }
            r->too_big = 1;
            free(r->body);
            r->body = NULL;
            r->len = r->cap = 0;
            /* fall through - discard the body */
        default:
            r->discarded += n;
            if (r->discarded > s->cfg.max_body_bytes + (size_t)(1 << 20))
                return MHD_NO; /* endless body to an error: close */
            break;
        }
        *upload_data_size = 0;
        return MHD_YES;
    }
    /* The whole body is in (or the connection was resumed). */
    switch (r->kind) {
    case K_DEFERRED:
        r->kind = K_DONE;
        return send_error(r, r->http_status_deferred, "%s", r->msg);
    case K_INDEX: {
        r->kind = K_DONE;
        return send_json_text(r, 200, srv_repo_index_json(s->repo));
    }
    case K_INFER:
    case K_CLASSIFY:
        if (r->too_big) {
            r->kind = K_DONE;
            return send_error(r, 413, "body exceeds the limit of %zu bytes", s->cfg.max_body_bytes);
        }
        if (r->job_state == 0) {
            enum MHD_Result res = r->kind == K_INFER ? infer_start(r) : classify_start(r);
            return res;
        }
        if (r->job_state == 1) { /* resumed by a stop before the job finished */
            if (r->aborted) return send_error(r, 503, "server is shutting down");
            return MHD_YES;
        }
        return r->kind == K_INFER ? infer_finish(r) : classify_finish(r);
    case K_STREAM:
        return stream_final(r);
    default:
        return MHD_YES;
    }
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    srv_server *s = cls;
    req *r = *con_cls;
    if (!r) return;
    *con_cls = NULL;
    int inference = r->kind == K_INFER || r->kind == K_CLASSIFY || r->kind == K_STREAM ||
                    (r->kind == K_DONE && r->model) || (r->kind == K_DEFERRED && r->model);
    if (r->kind != K_EVENTS)
        srv_metrics_request(s->metrics, inference && r->model ? r->model->index : -1, r->status,
                            pid_mono_s() - r->t0);
    if (r->held) {
        MHD_destroy_response(r->held);
        r->held = NULL;
    }
    if (r->sse) {
        srv_events_unsubscribe(r->sse);
        r->sse = NULL;
    }
    pthread_mutex_lock(&r->mu);
    r->gone = 1;
    pthread_mutex_unlock(&r->mu);
    atomic_fetch_sub(&s->active, 1);
    req_unref(r);
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    PID_LOGD("serve: libmicrohttpd: %s", msg);
}

/* ---------------------------------------------------------- lifecycle */

static int is_loopback(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        return (ntohl(a->sin_addr.s_addr) >> 24) == 127;
    }
    const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
    return IN6_IS_ADDR_LOOPBACK(&a->sin6_addr);
}

pid_status srv_server_start(srv_server **out, const srv_config *cfg, pid_error *err)
{
    *out = NULL;
    if (!cfg->models_dir) return pid_fail(err, PID_ERR_ARG, "serve: no models directory");
    if (cfg->port < 0 || cfg->port > 65535 || cfg->max_batch < 1 || cfg->max_batch > 4096 ||
        cfg->max_queue < 1 || cfg->max_queue_delay_us < 0 || cfg->max_body_bytes < 1024 ||
        cfg->max_connections < 1 || cfg->timeout_s < 1 || cfg->threads < 0)
        return pid_fail(err, PID_ERR_ARG, "serve: setting out of range");
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    const char *host = cfg->host ? cfg->host : "127.0.0.1";
    struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
    int v6 = 0;
    if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)cfg->port);
    } else if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)cfg->port);
        v6 = 1;
    } else {
        return pid_fail(err, PID_ERR_ARG, "serve: --host %s is not an IPv4 or IPv6 address", host);
    }
    if (!is_loopback(&ss) && !(cfg->token && *cfg->token))
        return pid_fail(err, PID_ERR_ARG,
                        "serve: binding %s (not loopback) needs a bearer token (--token-file "
                        "FILE or PHASEID_TOKEN)",
                        host);

    srv_server *s = calloc(1, sizeof *s);
    if (!s) return pid_fail(err, PID_ERR_NOMEM, "out of memory");
    s->cfg = *cfg;
    snprintf(s->host, sizeof s->host, "%s", host);
    s->cfg.host = s->host;
    pthread_mutex_init(&s->mu, NULL);
    s->listen_fd = MHD_INVALID_SOCKET;
    atomic_init(&s->draining, 0);
    atomic_init(&s->active, 0);
    atomic_init(&s->stream_counter, 0);
    pid_status st;
    int n_failed = 0;
    if ((st = srv_repo_scan(&s->repo, cfg->models_dir, err))) goto fail;
    if ((st = srv_metrics_create(&s->metrics, srv_repo_names(s->repo), srv_repo_count(s->repo),
                                 cfg->max_batch, err)))
        goto fail;
    if ((st = srv_window_create(&s->window, SRV_WINDOW, err))) goto fail;
    if ((st = srv_nvml_open(&s->nvml, 0, err))) goto fail;
    srv_events_opts eo;
    srv_events_opts_default(&eo);
    eo.stats = stats_json;
    eo.stats_user = s;
    s->st_t = pid_mono_s();
    if ((st = srv_events_create(&s->events, &eo, err))) goto fail;
    srv_repo_opts ro = {cfg->device ? cfg->device : "auto",
                        cfg->max_batch,
                        cfg->max_queue_delay_us,
                        cfg->max_queue,
                        s->metrics,
                        observe,
                        s,
                        cfg->no_residual};
    if ((st = srv_repo_load(s->repo, &ro, &n_failed, err))) goto fail;
    s->all_loaded = n_failed == 0;
    snprintf(s->device, sizeof s->device, "none");
    for (int i = 0; i < srv_repo_count(s->repo); i++) {
        srv_model *m = srv_repo_get(s->repo, i);
        if (m->batcher) {
            snprintf(s->device, sizeof s->device, "%s", cls_device_name(m->c));
            break;
        }
    }
    json_t *v2 = json_pack("{s:s, s:s, s:[s, s, s, s]}", "name", "phaseid", "version",
                           PHASEID_VERSION, "extensions", "binary_tensor_data", "model_repository",
                           "statistics", "model_configuration");
    s->v2_json = v2 ? json_dumps(v2, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(v2);
    if (!s->v2_json) {
        st = pid_fail(err, PID_ERR_NOMEM, "out of memory");
        goto fail;
    }

    int threads = cfg->threads;
    if (threads == 0) {
        long nc = sysconf(_SC_NPROCESSORS_ONLN);
        threads = nc < 2 ? 2 : nc > 8 ? 8 : (int)nc;
    }
    unsigned int flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL |
                         MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG | (v6 ? MHD_USE_IPv6 : 0);
    s->d = SRV_MHD_PTR(MHD_start_daemon(
        flags, (uint16_t)cfg->port, NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR,
        (struct sockaddr *)&ss, MHD_OPTION_THREAD_POOL_SIZE, (unsigned int)threads,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned int)cfg->max_connections,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)cfg->timeout_s,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(256 * 1024), MHD_OPTION_NOTIFY_COMPLETED,
        on_completed, s, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, s, MHD_OPTION_END));
    if (!s->d) {
        st = pid_fail(err, PID_ERR_IO, "serve: cannot listen on %s port %d (in use?)", host,
                      cfg->port);
        goto fail;
    }
    const union MHD_DaemonInfo *di =
        SRV_MHD_PTR(MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT));
    s->port = di ? di->port : cfg->port;
    *out = s;
    return PID_OK;
fail:
    srv_server_destroy(s);
    return st;
}

int srv_server_port(const srv_server *s)
{
    return s->port;
}

static void wait_idle(srv_server *s, double max_wait_s)
{
    double until = pid_mono_s() + max_wait_s;
    while (atomic_load(&s->active) > 0 && pid_mono_s() < until) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

void srv_server_drain(srv_server *s, double max_wait_s)
{
    if (!s || !s->d) return;
    atomic_store(&s->draining, 1);
    s->listen_fd = MHD_quiesce_daemon(s->d); /* closed after MHD_stop_daemon */
    srv_events_close_all(s->events);
    wait_idle(s, max_wait_s);
    /* Whatever is still suspended is resumed and answered 503. */
    pthread_mutex_lock(&s->mu);
    s->stopping = 1;
    int n = 0;
    for (req *r = s->susp; r; r = r->snext)
        n++;
    req **list = n ? calloc((size_t)n, sizeof *list) : NULL;
    n = 0;
    for (req *r = s->susp; list && r; r = r->snext) {
        atomic_fetch_add(&r->refs, 1);
        list[n++] = r;
    }
    pthread_mutex_unlock(&s->mu);
    for (int i = 0; i < n; i++) {
        pthread_mutex_lock(&list[i]->mu);
        list[i]->aborted = 1;
        req_resume(list[i]);
        pthread_mutex_unlock(&list[i]->mu);
        req_unref(list[i]);
    }
    free(list);
    if (n) wait_idle(s, 2.0);
    srv_repo_close(s->repo);
}

void srv_server_destroy(srv_server *s)
{
    if (!s) return;
    if (s->d) {
        pthread_mutex_lock(&s->mu);
        s->stopping = 1;
        int suspended = s->susp != NULL;
        pthread_mutex_unlock(&s->mu);
        if (suspended && !atomic_load(&s->draining)) srv_server_drain(s, 0);
        MHD_stop_daemon(s->d);
        if (s->listen_fd != MHD_INVALID_SOCKET) close(s->listen_fd);
    }
    /* No stats from here on; the hub itself lives until the workers (whose
     * observer offers results) are gone. */
    if (s->events) srv_events_stop(s->events);
    srv_repo_destroy(s->repo); /* runs queued jobs; their requests are gone */
    srv_events_destroy(s->events);
    srv_nvml_close(s->nvml);
    srv_window_destroy(s->window);
    srv_metrics_destroy(s->metrics);
    pthread_mutex_destroy(&s->mu);
    free(s->v2_json);
    free(s);
}
