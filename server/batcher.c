/* Dynamic batcher (see batcher.h): a FIFO of jobs counted in frames behind
 * one mutex, and a worker thread that forms batches, runs cls_run and
 * completes jobs outside the lock. */
#include "core/clock.h"
#include "server/batcher.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server/metrics.h"

/* A batch's part of one job: frames [first, first + count) of job. */
typedef struct {
    srv_job *job;
    int first, count;
} segment;

/* A registered on_space callback. */
typedef struct waiter {
    srv_space_fn fn;
    void *user;
    struct waiter *next;
} waiter;

struct srv_batcher {
    cls_classifier *c;
    srv_batcher_opts o;
    int64_t frame_size;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* work arrived / stop */
    srv_job *head, *tail;
    int64_t depth; /* frames queued, not yet taken */
    waiter *waiters;
    int closed, stop;
    /* worker-only state */
    float *batch;       /* [max_batch * frame size] */
    cls_results *res;   /* max_batch rows */
    segment *segs;      /* [max_batch] */
    srv_job **finished; /* [max_batch + 1] jobs completed by one batch */
};

static void abs_deadline(struct timespec *ts, double t_mono)
{
    ts->tv_sec = (time_t)t_mono;
    ts->tv_nsec = (long)((t_mono - (double)ts->tv_sec) * 1e9);
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

static void finish_job(srv_job *j, srv_job_status st)
{
    j->status = st;
    j->t_done_s = pid_mono_s();
    j->done(j);
}

/* Call and free every waiter taken from the list (outside the lock). */
static void wake(waiter *w)
{
    while (w) {
        waiter *next = w->next;
        w->fn(w->user);
        free(w);
        w = next;
    }
}

static void run_batch(srv_batcher *b, int n_segs, int n)
{
    pid_error err;
    const int64_t fs = b->frame_size;
    const float *frames;
    if (n_segs == 1) {
        frames = b->segs[0].job->frames + (size_t)b->segs[0].first * (size_t)fs;
    } else {
        int row = 0;
        for (int s = 0; s < n_segs; s++) {
            memcpy(b->batch + (size_t)row * (size_t)fs,
                   b->segs[s].job->frames + (size_t)b->segs[s].first * (size_t)fs,
                   (size_t)b->segs[s].count * (size_t)fs * sizeof(float));
            row += b->segs[s].count;
        }
        frames = b->batch;
    }
    double t0 = pid_mono_s();
    pid_status st = cls_run(b->c, frames, n, b->res, &err);
    double t1 = pid_mono_s();
    double qsum = 0, qmax = 0;
    for (int s = 0; s < n_segs; s++) {
        srv_job *j = b->segs[s].job;
        if (j->t_start_s == 0) j->t_start_s = t0;
        double q = t0 - j->t_submit_s;
        qsum += q * b->segs[s].count;
        if (q > qmax) qmax = q;
    }
    if (!st) srv_metrics_batch(b->o.metrics, b->o.model_index, n, t1 - t0, qsum, qmax);
    int row = 0, n_fin = 0;
    const cls_results *r = b->res;
    const int64_t k = r->n_classes;
    for (int s = 0; s < n_segs; s++) {
        srv_job *j = b->segs[s].job;
        for (int i = 0; i < b->segs[s].count; i++, row++) {
            int f = b->segs[s].first + i;
            if (st) continue;
            srv_results_set(j->res, f, r->prob + (size_t)row * (size_t)k,
                            r->fraction + (size_t)row * (size_t)k,
                            r->order + (size_t)row * (size_t)k, r->unknown_score[row],
                            r->residual[row], r->missing[row], r->unknown[row]);
            if (b->o.observer)
                b->o.observer(b->o.observer_user, j, f, frames + (size_t)row * (size_t)fs);
        }
        if (st && j->status == SRV_JOB_PENDING) {
            j->status = SRV_JOB_FAILED;
            snprintf(j->errmsg, sizeof j->errmsg, "inference failed: %.120s", err.msg);
        }
        j->finished_ += b->segs[s].count;
        if (j->finished_ == j->n) b->finished[n_fin++] = j;
    }
    for (int i = 0; i < n_fin; i++) {
        srv_job *j = b->finished[i];
        finish_job(j, j->status == SRV_JOB_FAILED ? SRV_JOB_FAILED : SRV_JOB_OK);
    }
}

static void *worker(void *arg)
{
    srv_batcher *b = arg;
    const double delay = 1e-6 * (double)b->o.max_queue_delay_us;
    pthread_mutex_lock(&b->mu);
    for (;;) {
        while (!b->head && !b->stop)
            pthread_cond_wait(&b->cv, &b->mu);
        if (!b->head) break; /* stopping with nothing left */
        /* Wait for a full batch, at most until the oldest queued frame has
         * waited `delay` (not at all when stopping). */
        double until = b->head->t_submit_s + delay;
        while (b->depth < b->o.max_batch && !b->stop) {
            double now = pid_mono_s();
            if (now >= until) break;
            struct timespec ts;
            abs_deadline(&ts, until);
            pthread_cond_timedwait(&b->cv, &b->mu, &ts);
        }
        /* Take up to max_batch frames; jobs past their deadline that have not
         * started expire whole. */
        int n = 0, n_segs = 0;
        srv_job *expired = NULL, **exp_tail = &expired;
        double now = pid_mono_s();
        while (b->head && n < b->o.max_batch) {
            srv_job *j = b->head;
            if (j->taken_ == 0 && j->deadline_s > 0 && now > j->deadline_s) {
                b->head = j->next_;
                if (!b->head) b->tail = NULL;
                b->depth -= j->n;
                j->next_ = NULL;
                *exp_tail = j;
                exp_tail = &j->next_;
                continue;
            }
            int take = j->n - j->taken_;
            if (take > b->o.max_batch - n) take = b->o.max_batch - n;
            b->segs[n_segs++] = (segment){j, j->taken_, take};
            j->taken_ += take;
            n += take;
            b->depth -= take;
            if (j->taken_ == j->n) {
                b->head = j->next_;
                if (!b->head) b->tail = NULL;
                j->next_ = NULL;
            }
        }
        waiter *w = b->waiters;
        b->waiters = NULL;
        pthread_mutex_unlock(&b->mu);

        wake(w);
        while (expired) {
            srv_job *j = expired;
            expired = j->next_;
            j->next_ = NULL;
            snprintf(j->errmsg, sizeof j->errmsg, "deadline passed while queued");
            finish_job(j, SRV_JOB_EXPIRED);
        }
        if (n > 0) run_batch(b, n_segs, n);
        pthread_mutex_lock(&b->mu);
    }
    waiter *w = b->waiters;
    b->waiters = NULL;
    pthread_mutex_unlock(&b->mu);
    wake(w);
    return NULL;
}

pid_status srv_batcher_create(srv_batcher **out, cls_classifier *c, const srv_batcher_opts *o,
                              pid_error *err)
{
    *out = NULL;
    if (!c || o->max_batch < 1 || o->max_queue < 1 || o->max_queue_delay_us < 0)
        return pid_fail(err, PID_ERR_ARG, "batcher: max batch %d, queue %d, delay %ld us",
                        o->max_batch, o->max_queue, o->max_queue_delay_us);
    srv_batcher *b = calloc(1, sizeof *b);
    if (!b) return pid_fail(err, PID_ERR_NOMEM, "out of memory");
    b->c = c;
    b->o = *o;
    b->frame_size = cls_frame_size(c);
    pid_status st = cls_results_create(&b->res, c, o->max_batch, err);
    if (!st) {
        b->batch = malloc((size_t)o->max_batch * (size_t)b->frame_size * sizeof *b->batch);
        b->segs = malloc((size_t)o->max_batch * sizeof *b->segs);
        b->finished = malloc(((size_t)o->max_batch + 1) * sizeof *b->finished);
        if (!b->batch || !b->segs || !b->finished)
            st = pid_fail(err, PID_ERR_NOMEM, "out of memory for a batch of %d", o->max_batch);
    }
    if (st) goto fail;
    pthread_mutex_init(&b->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&b->cv, &ca);
    pthread_condattr_destroy(&ca);
    int e = pthread_create(&b->thread, NULL, worker, b);
    if (e) {
        pthread_cond_destroy(&b->cv);
        pthread_mutex_destroy(&b->mu);
        st = pid_fail(err, PID_ERR_INTERNAL, "batcher: pthread_create: %s", strerror(e));
        goto fail;
    }
    *out = b;
    return PID_OK;
fail:
    cls_results_destroy(b->res);
    free(b->batch);
    free(b->segs);
    free(b->finished);
    free(b);
    return st;
}

/* The admission rule (b->mu held). */
static int fits(const srv_batcher *b, int64_t n)
{
    return b->depth + n <= b->o.max_queue;
}

pid_status srv_batcher_submit(srv_batcher *b, srv_job *job, srv_space_fn on_space, void *user,
                              int *queued, pid_error *err)
{
    *queued = -1;
    if (job->n < 1 || job->n > b->o.max_queue || !job->done || !job->frames || !job->res ||
        job->res->n < job->n)
        return pid_fail(err, PID_ERR_ARG, "a job of %d frames does not fit a queue of %d", job->n,
                        b->o.max_queue);
    job->status = SRV_JOB_PENDING;
    job->errmsg[0] = '\0';
    job->taken_ = job->finished_ = 0;
    job->next_ = NULL;
    job->t_start_s = job->t_done_s = 0;
    waiter *w = on_space ? malloc(sizeof *w) : NULL;
    if (on_space && !w) return pid_fail(err, PID_ERR_NOMEM, "out of memory");
    pthread_mutex_lock(&b->mu);
    if (b->closed) {
        *queued = -1;
    } else if (fits(b, job->n)) {
        job->t_submit_s = pid_mono_s();
        if (b->tail)
            b->tail->next_ = job;
        else
            b->head = job;
        b->tail = job;
        b->depth += job->n;
        *queued = 1;
        pthread_cond_signal(&b->cv);
    } else {
        *queued = 0;
        if (w) {
            w->fn = on_space;
            w->user = user;
            w->next = b->waiters;
            b->waiters = w;
            w = NULL;
        }
    }
    pthread_mutex_unlock(&b->mu);
    free(w);
    return PID_OK;
}

int64_t srv_batcher_depth(srv_batcher *b)
{
    pthread_mutex_lock(&b->mu);
    int64_t d = b->depth;
    pthread_mutex_unlock(&b->mu);
    return d;
}

int srv_batcher_has_room(srv_batcher *b, int64_t n)
{
    pthread_mutex_lock(&b->mu);
    int ok = fits(b, n);
    pthread_mutex_unlock(&b->mu);
    return ok;
}

const cls_classifier *srv_batcher_classifier(const srv_batcher *b)
{
    return b->c;
}

void srv_batcher_close(srv_batcher *b)
{
    pthread_mutex_lock(&b->mu);
    b->closed = 1;
    waiter *w = b->waiters;
    b->waiters = NULL;
    pthread_mutex_unlock(&b->mu);
    wake(w); /* they will find the batcher closed */
}

void srv_batcher_destroy(srv_batcher *b)
{
    if (!b) return;
    pthread_mutex_lock(&b->mu);
    b->closed = 1;
    b->stop = 1;
    pthread_cond_signal(&b->cv);
    pthread_mutex_unlock(&b->mu);
    pthread_join(b->thread, NULL);
    pthread_cond_destroy(&b->cv);
    pthread_mutex_destroy(&b->mu);
    cls_results_destroy(b->res);
    cls_close(b->c);
    free(b->batch);
    free(b->segs);
    free(b->finished);
    free(b);
}
