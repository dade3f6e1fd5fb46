/* The dynamic batcher of one model: frames submitted by any connection wait
 * in a bounded FIFO; one worker thread, owning the model's classifier, takes
 * up to max_batch frames as soon as that many are queued or the oldest has
 * waited max_queue_delay, runs them on the backend, writes each job's
 * results and calls its completion callback. Jobs complete in submission
 * order. */
#ifndef PID_SERVER_BATCHER_H
#define PID_SERVER_BATCHER_H

#include <stdint.h>

#include "core/status.h"
#include "models/classify.h"
#include "server/proto.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct srv_batcher srv_batcher;

typedef enum {
    SRV_JOB_PENDING = 0,
    SRV_JOB_OK,      /* every frame has its results */
    SRV_JOB_EXPIRED, /* its deadline passed before it ran: no results */
    SRV_JOB_FAILED   /* the backend failed: no results, errmsg says why */
} srv_job_status;

typedef struct srv_job srv_job;
/* Called on the worker thread once the job is finished (any status). The job
 * belongs to the submitter again from this call on. */
typedef void (*srv_job_done_fn)(srv_job *job);

/* A unit of work, a plain record owned by the submitter. The submitter fills
 * the first group, keeps the job and its buffers alive and untouched until
 * `done` is called. */
struct srv_job {
    int n;               /* frames, >= 1 */
    const float *frames; /* [n * frame size], prepared (cls_prepare_*) */
    srv_results *res;    /* n rows, filled by the worker */
    double deadline_s;   /* monotonic time (pid_mono_s) after which it expires; 0 = none */
    srv_job_done_fn done;
    void *user;
    /* for observers (events): stream name and the frames' sequence numbers
     * (seq[i], or seq0 + i when seq is NULL) */
    const char *stream;
    int64_t seq0;
    const int64_t *seq;
    /* set by the batcher */
    srv_job_status status;
    char errmsg[160];
    double t_submit_s, t_start_s, t_done_s; /* monotonic */
    /* private to the batcher */
    int taken_, finished_;
    srv_job *next_;
};

/* Called on the worker thread for every frame after its batch ran, before the
 * job's completion: the job, the frame's index in it, the prepared frame. */
typedef void (*srv_batch_observer)(void *user, const srv_job *job, int index, const float *frame);

/* Called once a submitter refused for lack of room may try again. */
typedef void (*srv_space_fn)(void *user);

typedef struct {
    int max_batch;               /* frames per backend call, >= 1 */
    long max_queue_delay_us;     /* how long the oldest frame may wait for a fuller batch */
    int max_queue;               /* frames the queue holds, >= 1 */
    int model_index;             /* for metrics */
    struct srv_metrics *metrics; /* may be NULL */
    srv_batch_observer observer; /* may be NULL */
    void *observer_user;
} srv_batcher_opts;

/* Start the worker of classifier c (ownership passes to the batcher on
 * success, stays with the caller on failure). */
pid_status srv_batcher_create(srv_batcher **out, cls_classifier *c, const srv_batcher_opts *o,
                              pid_error *err);

/* Queue a job. *queued is
 *    1  queued: job->done will be called;
 *    0  no room for job->n frames now; on_space(user) (when given) will be
 *       called exactly once later, when room may have appeared or the
 *       batcher closes (on the worker thread or in srv_batcher_close);
 *   -1  the batcher is closed: nothing will be called.
 * PID_ERR_ARG for an empty job or one larger than the whole queue. */
pid_status srv_batcher_submit(srv_batcher *b, srv_job *job, srv_space_fn on_space, void *user,
                              int *queued, pid_error *err);

/* Frames waiting now. */
int64_t srv_batcher_depth(srv_batcher *b);
/* 1 when the queue has room for a job of n frames now: srv_batcher_submit's
 * test, for turning work away before preparing it. Advisory (the queue can
 * change before a submit) and blind to closing, which submit reports. */
int srv_batcher_has_room(srv_batcher *b, int64_t n);
/* The classifier (for preprocessing from other threads: cls_prepare_* and
 * cls_model only read the model). */
const cls_classifier *srv_batcher_classifier(const srv_batcher *b);

/* Refuse new jobs (submit answers *queued = 0), keep running queued ones. */
void srv_batcher_close(srv_batcher *b);

/* Run everything queued, stop the worker, free the classifier. Accepts NULL. */
void srv_batcher_destroy(srv_batcher *b);

#ifdef __cplusplus
}
#endif
#endif
