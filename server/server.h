/* The phaseid inference service: libmicrohttpd daemon (epoll, internal
 * thread pool, suspend/resume) serving the models of a directory over the
 * KServe v2 / Triton HTTP protocol, the plain /v1 endpoints, streams,
 * server-sent events, Prometheus metrics and the dashboard (docs/http-api.md). */
#ifndef PID_SERVER_SERVER_H
#define PID_SERVER_SERVER_H

#include <stddef.h>

#include "core/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct srv_server srv_server;

typedef struct {
    const char *models_dir;
    const char *host;        /* address to bind (default "127.0.0.1") */
    int port;                /* 0 = any free port (see srv_server_port) */
    const char *device;      /* "cpu" | "cuda" | "auto" */
    const char *token;       /* bearer token, NULL = none (only for loopback binds) */
    int max_batch;           /* frames per backend call (64) */
    long max_queue_delay_us; /* (500) */
    int max_queue;           /* frames per model queue (8192) */
    size_t max_body_bytes;   /* (64 MiB) */
    int max_connections;     /* (256) */
    int timeout_s;           /* idle connections and request deadlines (30) */
    int threads;             /* HTTP threads (0 = by CPU count) */
    int no_residual;         /* 1: no physics residual check (unknown from the energy alone) */
} srv_config;

/* The documented defaults (host 127.0.0.1, port 8000, device auto, ...). */
void srv_config_default(srv_config *c);

/* Load the models and start serving. Refuses (PID_ERR_ARG) a non-loopback
 * host without a token and out-of-range settings; PID_ERR_IO when the port
 * cannot be bound or DIR read. On success *out is owned by the caller
 * (srv_server_destroy). Models that fail to load are reported and served as
 * unavailable (readiness 503). */
pid_status srv_server_start(srv_server **out, const srv_config *cfg, pid_error *err);

/* The bound port. */
int srv_server_port(const srv_server *s);

/* Graceful stop: stop accepting connections, answer new requests on open
 * connections with 503, finish every accepted request and stream (at most
 * max_wait_s), close event streams, resume every suspended connection.
 * Call once, before srv_server_destroy. */
void srv_server_drain(srv_server *s, double max_wait_s);

/* Stop the daemon (after srv_server_drain when graceful) and free. Accepts NULL. */
void srv_server_destroy(srv_server *s);

#ifdef __cplusplus
}
#endif
#endif
