/* Service metrics: per-model request/frame/batch counters and duration
 * histograms, formatted in the Prometheus text format 0.0.4 (names checked by
 * `promtool check metrics`), snapshots for the KServe statistics extension,
 * and a sliding window of recent latencies for the live percentiles. */
#ifndef PID_SERVER_METRICS_H
#define PID_SERVER_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct srv_metrics srv_metrics;

/* Counters of one model (totals since start), for the statistics extension. */
typedef struct {
    uint64_t success_count, fail_count;
    double success_s, fail_s; /* summed request durations */
    uint64_t frames;          /* frames inferred */
    uint64_t batches;         /* batch executions */
    double queue_s;           /* summed queue time of the frames */
    double compute_s;         /* summed batch compute time */
    double last_inference_unix_s;
} srv_model_stats;

/* GPU reading for the metrics page (srv_nvml); NULL = no GPU. */
typedef struct {
    char name[96];
    double power_w;
    double energy_j; /* since the driver loaded */
} srv_gpu_reading;

/* n_models models named names[i] (copied), batches of 1..max_batch frames.
 * Owned by the caller (srv_metrics_destroy accepts NULL). */
pid_status srv_metrics_create(srv_metrics **out, const char *const *names, int n_models,
                              int max_batch, pid_error *err);
void srv_metrics_destroy(srv_metrics *m);

/* Record one answered request of model i (-1: not tied to a model) with its
 * HTTP status and duration. 2xx counts as success, anything else as failure. */
void srv_metrics_request(srv_metrics *m, int model, int http_status, double duration_s);
/* Record one batch execution of model i: n frames, compute time, and the
 * summed queue time of its frames. */
void srv_metrics_batch(srv_metrics *m, int model, int n, double compute_s, double queue_sum_s,
                       double queue_max_s);
/* Snapshot of model i's counters. */
void srv_metrics_stats(const srv_metrics *m, int model, srv_model_stats *out);
/* Batch executions of model i with exactly `batch` frames and their summed
 * compute time (0 for sizes never run or out of range). */
void srv_metrics_batch_stats(const srv_metrics *m, int model, int batch, uint64_t *count,
                             double *compute_s);

/* The metrics page. queue_depth[i] is model i's current queue (frames);
 * gpu may be NULL. *out is malloc'd (caller frees). */
pid_status srv_metrics_format(const srv_metrics *m, const int64_t *queue_depth,
                              const srv_gpu_reading *gpu, char **out, size_t *len, pid_error *err);

/* Totals over all models (for per-second rates). */
void srv_metrics_totals(const srv_metrics *m, uint64_t *requests, uint64_t *frames,
                        uint64_t *batches);

/* A sliding window of (time, latency, queue time) samples: the newest
 * `capacity` samples are kept; percentiles are taken over those not older
 * than a span. Thread-safe. */
typedef struct srv_window srv_window;
pid_status srv_window_create(srv_window **out, int capacity, pid_error *err);
void srv_window_destroy(srv_window *w);
void srv_window_add(srv_window *w, double t_s, double latency_s, double queue_s);
/* Percentiles p[0..np) (0..100) of the latencies (lat_out) and queue times
 * (queue_out) of samples with time >= now_s - span_s; returns how many
 * samples were used (outputs 0 when none). Nearest-rank percentiles. */
int srv_window_percentiles(srv_window *w, double now_s, double span_s, const double *p, int np,
                           double *lat_out, double *queue_out);

#ifdef __cplusplus
}
#endif
#endif
