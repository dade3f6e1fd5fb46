/* Live events for dashboards (server-sent events): a hub of subscribed
 * clients, each with a bounded outgoing buffer. Results are offered per frame
 * and sent at most ~200 per second per client (with the preprocessed frame at
 * most 10 per second); a stats event once per second and a keepalive comment
 * every 15 s come from the hub's own thread. The hub knows nothing of HTTP:
 * the server passes suspend/resume callbacks for each client's connection. */
#ifndef PID_SERVER_EVENTS_H
#define PID_SERVER_EVENTS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "core/status.h"
#include "server/proto.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct srv_events srv_events;
typedef struct srv_sse_client srv_sse_client;

/* Renders the stats event's JSON data (malloc'd, one line); NULL to skip. */
typedef char *(*srv_stats_fn)(void *user);

typedef struct {
    double result_interval_s; /* min spacing of result events per client (1/200 s) */
    double frame_interval_s;  /* min spacing of events carrying a frame (1/10 s) */
    double stats_interval_s;  /* stats events (1 s); <= 0: none */
    double keepalive_s;       /* keepalive comments (15 s) */
    size_t client_buffer;     /* bytes buffered per client before events are dropped */
    srv_stats_fn stats;
    void *stats_user;
} srv_events_opts;

void srv_events_opts_default(srv_events_opts *o);

/* Start the hub and its thread. */
pid_status srv_events_create(srv_events **out, const srv_events_opts *o, pid_error *err);
/* Close every client, stop the thread, free. Clients must have been
 * unsubscribed first (their connections closed). Accepts NULL. */
void srv_events_destroy(srv_events *e);

/* Stop the hub's thread (no more stats or keepalives); clients stay. Safe
 * to call more than once. */
void srv_events_stop(srv_events *e);

/* Subscribed clients now. */
int srv_events_clients(srv_events *e);

/* A new client, receiving results of `model` only (NULL = all). suspend and
 * resume are called with `user` under the client's lock: suspend when a read
 * finds nothing to send, resume when data arrives for a suspended client.
 * NULL when out of memory. */
srv_sse_client *srv_events_subscribe(srv_events *e, const char *model, void (*suspend)(void *),
                                     void (*resume)(void *), void *user);
/* Remove and free a client; it is never called back afterwards. */
void srv_events_unsubscribe(srv_sse_client *c);

/* Copy up to max pending bytes to buf. Returns the count; 0 after calling
 * suspend when nothing is pending; -1 when the client was closed (hub
 * shutting down) and everything has been read. */
ssize_t srv_events_read(srv_sse_client *c, char *buf, size_t max);

/* Close every client (they read -1 once drained) and wake them. */
void srv_events_close_all(srv_events *e);

/* A result for the live feed. phases as srv_render_phases (top 3 of row
 * `row` of r); frame[n] the preprocessed frame on the grid x0 + i * step,
 * or NULL. */
typedef struct {
    const char *model;
    const char *stream;
    long long seq;
    double latency_ms;
    const srv_results *r;
    int row;
    char *const *name_json;
    char *const *formula_json;
    const float *frame;
    int64_t n;
    double x0, step;
} srv_event_result;

/* Offer a result to every client that wants one now (cheap when none). */
void srv_events_offer(srv_events *e, const srv_event_result *res);

/* Append a raw event to every client (tests, stats). */
void srv_events_broadcast(srv_events *e, const char *event, const char *data);

/* Max-pool frame[n] into at most max_out values; returns the count and the
 * pool width in *pool. */
int srv_events_decimate(const float *frame, int64_t n, int max_out, float *out, int *pool);

#ifdef __cplusplus
}
#endif
#endif
