/* Server-sent events hub (see events.h): a list of clients behind the hub
 * lock, each client's buffer behind its own lock, and a thread for stats and
 * keepalives. Connections are resumed outside the hub lock, holding a
 * reference on the client. */
#include "core/clock.h"
#include "server/events.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SRV_EVENT_MAX_POINTS 700

struct srv_sse_client {
    srv_events *hub;
    char *model; /* filter, NULL = all */
    pthread_mutex_t mu;
    char *buf;
    size_t len, cap, off; /* pending bytes are buf[off, len) */
    double next_result_s, next_frame_s;
    int waiting; /* suspended by a read, waiting for data */
    int closed, dead;
    int refs; /* hub list + temporary holders; guarded by the hub lock */
    void (*suspend)(void *);
    void (*resume)(void *);
    void *user;
    srv_sse_client *next;
};

struct srv_events {
    srv_events_opts o;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    srv_sse_client *clients;
    atomic_int n_clients;
    int stop, joined;
    pthread_t thread;
};

void srv_events_opts_default(srv_events_opts *o)
{
    memset(o, 0, sizeof *o);
    o->result_interval_s = 1.0 / 200.0;
    o->frame_interval_s = 1.0 / 10.0;
    o->stats_interval_s = 1.0;
    o->keepalive_s = 15.0;
    o->client_buffer = 1u << 20;
}

static void client_free(srv_sse_client *c)
{
    pthread_mutex_destroy(&c->mu);
    free(c->model);
    free(c->buf);
    free(c);
}

/* Drop a reference; called with the hub lock held. Returns 1 when the
 * client must be freed (after unlocking). */
static int unref_locked(srv_sse_client *c)
{
    return --c->refs == 0;
}

/* Append bytes to a client's buffer (client lock held). 0 ok, -1 dropped. */
static int client_append(srv_sse_client *c, const char *s, size_t n, size_t limit)
{
    if (c->closed) return -1;
    if (c->off > 0 && c->off == c->len) c->off = c->len = 0;
    if (c->len - c->off + n > limit) return -1; /* slow reader: drop */
    if (c->len + n > c->cap) {
        if (c->off > 0) { /* compact first */
            memmove(c->buf, c->buf + c->off, c->len - c->off);
            c->len -= c->off;
            c->off = 0;
        }
        if (c->len + n > c->cap) {
            size_t cap = c->cap ? c->cap : 4096;
            while (cap < c->len + n)
                cap *= 2;
            char *p = realloc(c->buf, cap);
            if (!p) return -1;
            c->buf = p;
            c->cap = cap;
        }
    }
    memcpy(c->buf + c->len, s, n);
    c->len += n;
    return 0;
}

/* Resume the clients in list[0..n) that wait, then drop the references
 * taken for them. */
static void resume_and_release(srv_events *e, srv_sse_client **list, int n)
{
    for (int i = 0; i < n; i++) {
        srv_sse_client *c = list[i];
        pthread_mutex_lock(&c->mu);
        if (c->waiting && !c->dead && c->len > c->off) {
            c->waiting = 0;
            c->resume(c->user);
        } else if (c->waiting && !c->dead && c->closed) {
            c->waiting = 0;
            c->resume(c->user);
        }
        pthread_mutex_unlock(&c->mu);
    }
    pthread_mutex_lock(&e->mu);
    int n_free = 0;
    for (int i = 0; i < n; i++)
        if (unref_locked(list[i])) list[n_free++] = list[i];
    pthread_mutex_unlock(&e->mu);
    for (int i = 0; i < n_free; i++)
        client_free(list[i]);
}

/* Append an event to every client whose filter accepts `model` (NULL = all
 * clients), then wake them. */
static void deliver(srv_events *e, const char *model, const char *text, size_t len)
{
    srv_sse_client *stackl[64], **list = stackl;
    pthread_mutex_lock(&e->mu);
    int cap = 0, n = 0;
    for (srv_sse_client *c = e->clients; c; c = c->next)
        cap++;
    if (cap > 64) list = malloc((size_t)cap * sizeof *list);
    if (!list) {
        pthread_mutex_unlock(&e->mu);
        return;
    }
    for (srv_sse_client *c = e->clients; c; c = c->next) {
        if (model && c->model && strcmp(model, c->model)) continue;
        pthread_mutex_lock(&c->mu);
        client_append(c, text, len, e->o.client_buffer);
        pthread_mutex_unlock(&c->mu);
        c->refs++;
        list[n++] = c;
    }
    pthread_mutex_unlock(&e->mu);
    resume_and_release(e, list, n);
    if (list != stackl) free(list);
}

void srv_events_broadcast(srv_events *e, const char *event, const char *data)
{
    size_t n = strlen(event) + strlen(data) + 32;
    char *t = malloc(n);
    if (!t) return;
    int len = snprintf(t, n, "event: %s\ndata: %s\n\n", event, data);
    deliver(e, NULL, t, (size_t)len);
    free(t);
}

static void *hub_thread(void *arg)
{
    srv_events *e = arg;
    double next_stats = pid_mono_s() + e->o.stats_interval_s;
    double next_keep = pid_mono_s() + e->o.keepalive_s;
    pthread_mutex_lock(&e->mu);
    while (!e->stop) {
        double until = next_keep;
        if (e->o.stats_interval_s > 0 && next_stats < until) until = next_stats;
        struct timespec ts;
        ts.tv_sec = (time_t)until;
        ts.tv_nsec = (long)((until - (double)ts.tv_sec) * 1e9);
        if (ts.tv_nsec >= 1000000000L) ts.tv_nsec = 999999999L;
        pthread_cond_timedwait(&e->cv, &e->mu, &ts);
        if (e->stop) break;
        double now = pid_mono_s();
        int have = atomic_load(&e->n_clients) > 0;
        pthread_mutex_unlock(&e->mu);
        if (e->o.stats_interval_s > 0 && now >= next_stats) {
            next_stats += e->o.stats_interval_s;
            if (next_stats < now) next_stats = now + e->o.stats_interval_s;
            char *data = have && e->o.stats ? e->o.stats(e->o.stats_user) : NULL;
            if (data) srv_events_broadcast(e, "stats", data);
            free(data);
        }
        if (now >= next_keep) {
            next_keep = now + e->o.keepalive_s;
            if (have) deliver(e, NULL, ": keepalive\n\n", 13);
        }
        pthread_mutex_lock(&e->mu);
    }
    pthread_mutex_unlock(&e->mu);
    return NULL;
}

pid_status srv_events_create(srv_events **out, const srv_events_opts *o, pid_error *err)
{
    *out = NULL;
    srv_events *e = calloc(1, sizeof *e);
    if (!e) return pid_fail(err, PID_ERR_NOMEM, "out of memory");
    e->o = *o;
    if (!(e->o.keepalive_s > 0)) e->o.keepalive_s = 15.0;
    pthread_mutex_init(&e->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&e->cv, &ca);
    pthread_condattr_destroy(&ca);
    atomic_init(&e->n_clients, 0);
    int rc = pthread_create(&e->thread, NULL, hub_thread, e);
    if (rc) {
        pthread_cond_destroy(&e->cv);
        pthread_mutex_destroy(&e->mu);
        free(e);
        return pid_fail(err, PID_ERR_INTERNAL, "events: pthread_create: %s", strerror(rc));
    }
    *out = e;
    return PID_OK;
}

void srv_events_stop(srv_events *e)
{
    pthread_mutex_lock(&e->mu);
    int joined = e->joined;
    e->stop = 1;
    e->joined = 1;
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
    if (!joined) pthread_join(e->thread, NULL);
}

void srv_events_destroy(srv_events *e)
{
    if (!e) return;
    srv_events_stop(e);
    /* Clients still listed (never unsubscribed) are freed here. */
    srv_sse_client *c = e->clients;
    while (c) {
        srv_sse_client *next = c->next;
        client_free(c);
        c = next;
    }
    pthread_cond_destroy(&e->cv);
    pthread_mutex_destroy(&e->mu);
    free(e);
}

int srv_events_clients(srv_events *e)
{
    return atomic_load(&e->n_clients);
}

srv_sse_client *srv_events_subscribe(srv_events *e, const char *model, void (*suspend)(void *),
                                     void (*resume)(void *), void *user)
{
    srv_sse_client *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    if (model && !(c->model = strdup(model))) {
        free(c);
        return NULL;
    }
    pthread_mutex_init(&c->mu, NULL);
    c->hub = e;
    c->suspend = suspend;
    c->resume = resume;
    c->user = user;
    c->refs = 1;
    /* A first comment so clients see the stream open at once. */
    client_append(c, ": phaseid events\n\n", 18, e->o.client_buffer);
    pthread_mutex_lock(&e->mu);
    c->next = e->clients;
    e->clients = c;
    atomic_fetch_add(&e->n_clients, 1);
    pthread_mutex_unlock(&e->mu);
    return c;
}

void srv_events_unsubscribe(srv_sse_client *c)
{
    if (!c) return;
    srv_events *e = c->hub;
    pthread_mutex_lock(&c->mu);
    c->dead = 1;
    pthread_mutex_unlock(&c->mu);
    pthread_mutex_lock(&e->mu);
    for (srv_sse_client **p = &e->clients; *p; p = &(*p)->next)
        if (*p == c) {
            *p = c->next;
            atomic_fetch_sub(&e->n_clients, 1);
            break;
        }
    int last = unref_locked(c);
    pthread_mutex_unlock(&e->mu);
    if (last) client_free(c);
}

ssize_t srv_events_read(srv_sse_client *c, char *buf, size_t max)
{
    pthread_mutex_lock(&c->mu);
    size_t avail = c->len - c->off;
    if (avail == 0) {
        if (c->closed) {
            pthread_mutex_unlock(&c->mu);
            return -1;
        }
        c->waiting = 1;
        c->suspend(c->user);
        pthread_mutex_unlock(&c->mu);
        return 0;
    }
    size_t n = avail < max ? avail : max;
    memcpy(buf, c->buf + c->off, n);
    c->off += n;
    pthread_mutex_unlock(&c->mu);
    return (ssize_t)n;
}

void srv_events_close_all(srv_events *e)
{
    srv_sse_client *stackl[64], **list = stackl;
    pthread_mutex_lock(&e->mu);
    int cap = 0, n = 0;
    for (srv_sse_client *c = e->clients; c; c = c->next)
        cap++;
    if (cap > 64) list = malloc((size_t)cap * sizeof *list);
    if (!list) { /* no memory for the list: close without waking */
        for (srv_sse_client *c = e->clients; c; c = c->next) {
            pthread_mutex_lock(&c->mu);
            c->closed = 1;
            pthread_mutex_unlock(&c->mu);
        }
        pthread_mutex_unlock(&e->mu);
        return;
    }
    for (srv_sse_client *c = e->clients; c; c = c->next) {
        pthread_mutex_lock(&c->mu);
        c->closed = 1;
        pthread_mutex_unlock(&c->mu);
        c->refs++;
        list[n++] = c;
    }
    pthread_mutex_unlock(&e->mu);
    resume_and_release(e, list, n);
    if (list != stackl) free(list);
}

int srv_events_decimate(const float *frame, int64_t n, int max_out, float *out, int *pool)
{
    if (n <= 0 || max_out < 1) {
        *pool = 1;
        return 0;
    }
    int64_t p = (n + max_out - 1) / max_out;
    if (p < 1) p = 1;
    int m = 0;
    for (int64_t i = 0; i < n; i += p) {
        float mx = frame[i];
        for (int64_t j = i + 1; j < i + p && j < n; j++)
            if (frame[j] > mx) mx = frame[j];
        out[m++] = mx;
    }
    *pool = (int)p;
    return m;
}

/* Render the result event; with_frame attaches the decimated frame. */
static char *render_result(const srv_event_result *r, int with_frame, size_t *len)
{
    size_t cap = 2048 + (with_frame ? (size_t)SRV_EVENT_MAX_POINTS * 16 : 0);
    char *buf = malloc(cap);
    if (!buf) return NULL;
    char *mq = srv_json_quote(r->model), *sq = srv_json_quote(r->stream ? r->stream : "");
    if (!mq || !sq) {
        free(mq);
        free(sq);
        free(buf);
        return NULL;
    }
    char t2[48];
    srv_fmt_num(t2, sizeof t2, r->latency_ms);
    size_t n = 0;
    int w = snprintf(buf, cap,
                     "event: result\ndata: {\"model\": %s, \"stream\": %s, \"seq\": %lld, "
                     "\"time\": %.3f, \"latency_ms\": %s, \"phases\": ",
                     mq, sq, r->seq, pid_unix_s(), t2);
    free(mq);
    free(sq);
    if (w < 0 || (size_t)w >= cap) goto fail;
    n = (size_t)w;
    if (srv_render_phases(buf, cap, &n, r->r, r->row, 3, r->name_json, r->formula_json, NULL))
        goto fail;
    char us[48], rs[48], ms[48];
    srv_fmt_num(us, sizeof us, r->r->unknown_score[r->row]);
    srv_fmt_num(rs, sizeof rs, r->r->residual[r->row]);
    srv_fmt_num(ms, sizeof ms, r->r->missing[r->row]);
    w = snprintf(buf + n, cap - n,
                 ", \"unknown_score\": %s, \"residual\": %s, \"missing\": %s, \"unknown\": %s", us,
                 rs, ms, r->r->unknown[r->row] ? "true" : "false");
    if (w < 0 || (size_t)w >= cap - n) goto fail;
    n += (size_t)w;
    if (with_frame && r->frame && r->n > 0) {
        float pooled[SRV_EVENT_MAX_POINTS];
        int pool = 1;
        int m = srv_events_decimate(r->frame, r->n, SRV_EVENT_MAX_POINTS, pooled, &pool);
        char a[48], b[48];
        srv_fmt_num(a, sizeof a, r->x0);
        srv_fmt_num(b, sizeof b, r->step * pool);
        w = snprintf(buf + n, cap - n, ", \"frame\": {\"x0\": %s, \"step\": %s, \"y\": [", a, b);
        if (w < 0 || (size_t)w >= cap - n) goto fail;
        n += (size_t)w;
        for (int i = 0; i < m; i++) {
            w = snprintf(buf + n, cap - n, i ? ",%.4g" : "%.4g",
                         isfinite(pooled[i]) ? (double)pooled[i] : 0.0);
            if (w < 0 || (size_t)w >= cap - n) goto fail;
            n += (size_t)w;
        }
        w = snprintf(buf + n, cap - n, "]}");
        if (w < 0 || (size_t)w >= cap - n) goto fail;
        n += (size_t)w;
    }
    w = snprintf(buf + n, cap - n, "}\n\n");
    if (w < 0 || (size_t)w >= cap - n) goto fail;
    n += (size_t)w;
    *len = n;
    return buf;
fail:
    free(buf);
    return NULL;
}

void srv_events_offer(srv_events *e, const srv_event_result *res)
{
    if (!e || atomic_load(&e->n_clients) == 0) return;
    double now = pid_mono_s();
    srv_sse_client *stackl[64], **list = stackl;
    char *plain = NULL, *framed = NULL;
    size_t plain_len = 0, framed_len = 0;
    int n = 0;
    pthread_mutex_lock(&e->mu);
    for (srv_sse_client *c = e->clients; c && n < 64; c = c->next) {
        if (c->model && strcmp(c->model, res->model)) continue;
        if (now < c->next_result_s) continue;
        int with_frame = res->frame && now >= c->next_frame_s;
        char **text = with_frame ? &framed : &plain;
        size_t *tl = with_frame ? &framed_len : &plain_len;
        if (!*text) *text = render_result(res, with_frame, tl);
        if (!*text) continue;
        pthread_mutex_lock(&c->mu);
        if (!client_append(c, *text, *tl, e->o.client_buffer)) {
            c->next_result_s = now + e->o.result_interval_s;
            if (with_frame) c->next_frame_s = now + e->o.frame_interval_s;
        }
        pthread_mutex_unlock(&c->mu);
        c->refs++;
        list[n++] = c;
    }
    pthread_mutex_unlock(&e->mu);
    free(plain);
    free(framed);
    if (n) resume_and_release(e, list, n);
}
