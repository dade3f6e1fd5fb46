/* Unit tests for server/batcher with a tiny model saved in the test: jobs
 * from several threads complete in submission order with results equal to
 * cls_run on the same frames; batches never exceed max_batch and a lone
 * frame waits no longer than about the queue delay; a full queue refuses and
 * calls back once room appears; expired jobs; closing; oversized jobs;
 * metrics recorded per batch. */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/clock.h"
#include "kernels/backend.h"
#include "models/classify.h"
#include "models/net.h"
#include "server/batcher.h"
#include "server/metrics.h"

#define N_POINTS 64
#define N_CLASSES 4

static char g_model[512];

/* A softmax model on a 64-point grid with random weights (net_create). */
static void write_model(const char *path)
{
    pid_error err;
    mf_model *m = mf_model_create();
    assert_non_null(m);
    const net_shape in = {1, 1, 1, N_POINTS};
    assert_int_equal(net_random_model(m, "dense(8) relu head", &in, N_CLASSES, 77, &err), PID_OK);
    m->modality = strdup("xrd");
    m->phases = calloc(N_CLASSES, sizeof *m->phases);
    for (int i = 0; i < N_CLASSES; i++) {
        char buf[32];
        snprintf(buf, sizeof buf, "phase%d", i);
        m->phases[i].name = strdup(buf);
        m->phases[i].formula = strdup("X");
        m->phases[i].source = strdup("none.cif");
        m->phases[i].reference = strdup("");
    }
    m->grid.axis = 0;
    m->grid.x0 = 10.0;
    m->grid.step = 1.0;
    m->grid.n_points = N_POINTS;
    m->grid.n_lines = 1;
    m->grid.wavelength_a[0] = 1.540562;
    m->grid.wavelength_weight[0] = 1.0;
    m->grid.source = strdup("CuKa1");
    m->preprocessing = strdup("max-normalize");
    m->normalization = MF_NORM_MAX;
    m->temperature = 1.0;
    m->ece = 0.0;
    m->unknown_score = strdup("energy");
    m->unknown_threshold = 0.0;
    m->unknown_auroc = 0.5;
    m->train_steps = 1;
    m->train_batch = 1;
    m->train_flops = 1.0;
    m->generator = strdup("{}");
    m->phaseid_version = strdup(PHASEID_VERSION);
    m->created = strdup("2026-11-24T07:00:00Z");
    m->library = strdup("none");
    pid_status st = mf_save(path, m, &err);
    if (st) fail_msg("mf_save %s: %s", path, err.msg);
    mf_model_destroy(m);
}

static int setup(void **state)
{
    char dir[] = "/tmp/pid_srv_batcher_XXXXXX";
    if (!mkdtemp(dir)) return -1;
    snprintf(g_model, sizeof g_model, "%s/tiny.h5", dir);
    write_model(g_model);
    return 0;
}

static int teardown(void **state)
{
    unlink(g_model);
    char *slash = strrchr(g_model, '/');
    *slash = '\0';
    rmdir(g_model);
    return 0;
}

static cls_classifier *open_cls(int max_batch)
{
    cls_classifier *c = NULL;
    pid_error err;
    pid_status st = cls_open(&c, g_model, "cpu", max_batch, &err);
    if (st) fail_msg("cls_open: %s", err.msg);
    return c;
}

/* Deterministic prepared frames: a peak at a frame-dependent position. */
static void make_frames(float *f, int n, int salt)
{
    for (int i = 0; i < n; i++)
        for (int j = 0; j < N_POINTS; j++) {
            int c = (7 * (i + salt) + 3) % N_POINTS;
            f[i * N_POINTS + j] = 0.05f + expf(-0.5f * (float)((j - c) * (j - c)) / 4.0f);
        }
}

/* Completion log shared by the callbacks. */
static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t log_cv = PTHREAD_COND_INITIALIZER;
static srv_job *done_order[256];
static int n_done;

static void on_done(srv_job *j)
{
    pthread_mutex_lock(&log_mu);
    done_order[n_done++] = j;
    pthread_cond_broadcast(&log_cv);
    pthread_mutex_unlock(&log_mu);
}

static void wait_done(int n)
{
    pthread_mutex_lock(&log_mu);
    while (n_done < n)
        pthread_cond_wait(&log_cv, &log_mu);
    pthread_mutex_unlock(&log_mu);
}

static void reset_log(void)
{
    pthread_mutex_lock(&log_mu);
    n_done = 0;
    pthread_mutex_unlock(&log_mu);
}

/* Observer: counts the frames it is shown. */
static int frames_seen;
static void observe(void *user, const srv_job *job, int index, const float *frame)
{
    pthread_mutex_lock(&log_mu);
    frames_seen++;
    pthread_mutex_unlock(&log_mu);
}

typedef struct {
    srv_batcher *b;
    srv_job *jobs;
    int first, count;
    pthread_mutex_t *submit_mu;
    srv_job **submit_order;
    int *n_submitted;
    int failures;
} submitter;

static void *submit_thread(void *arg)
{
    submitter *s = arg;
    for (int i = s->first; i < s->first + s->count; i++) {
        pid_error err;
        int queued = -2;
        pthread_mutex_lock(s->submit_mu);
        /* cmocka asserts only on the main thread: count failures here */
        if (srv_batcher_submit(s->b, &s->jobs[i], NULL, NULL, &queued, &err) || queued != 1)
            s->failures++;
        else
            s->submit_order[(*s->n_submitted)++] = &s->jobs[i];
        pthread_mutex_unlock(s->submit_mu);
        usleep(100);
    }
    return NULL;
}

static void test_order_and_results(void **state)
{
    enum { N_JOBS = 40, N_THREADS = 4 };
    const char *names[1] = {"tiny"};
    srv_metrics *met = NULL;
    pid_error err;
    assert_int_equal(srv_metrics_create(&met, names, 1, 8, &err), PID_OK);
    srv_batcher *b = NULL;
    srv_batcher_opts o = {8, 3000, 4096, 0, met, observe, NULL};
    assert_int_equal(srv_batcher_create(&b, open_cls(8), &o, &err), PID_OK);
    srv_job jobs[N_JOBS];
    float *frames[N_JOBS];
    int total = 0;
    memset(jobs, 0, sizeof jobs);
    for (int i = 0; i < N_JOBS; i++) {
        int n = 1 + (i * 7) % 13; /* 1..13 frames: some span batches */
        frames[i] = malloc((size_t)n * N_POINTS * sizeof(float));
        make_frames(frames[i], n, i);
        jobs[i].n = n;
        jobs[i].frames = frames[i];
        assert_int_equal(srv_results_create(&jobs[i].res, n, N_CLASSES, N_CLASSES, 1, &err),
                         PID_OK);
        jobs[i].done = on_done;
        total += n;
    }
    reset_log();
    frames_seen = 0;
    pthread_mutex_t submit_mu = PTHREAD_MUTEX_INITIALIZER;
    srv_job *submit_order[N_JOBS];
    int n_sub = 0;
    pthread_t th[N_THREADS];
    submitter sub[N_THREADS];
    for (int t = 0; t < N_THREADS; t++) {
        sub[t] = (submitter){
            b,      jobs, t * (N_JOBS / N_THREADS), N_JOBS / N_THREADS, &submit_mu, submit_order,
            &n_sub, 0};
        pthread_create(&th[t], NULL, submit_thread, &sub[t]);
    }
    for (int t = 0; t < N_THREADS; t++) {
        pthread_join(th[t], NULL);
        assert_int_equal(sub[t].failures, 0);
    }
    assert_int_equal(n_sub, N_JOBS);
    wait_done(N_JOBS);
    /* FIFO: completion order is submission order */
    for (int i = 0; i < N_JOBS; i++)
        assert_ptr_equal(done_order[i], submit_order[i]);
    assert_int_equal(frames_seen, total);

    /* Results equal a direct cls_run of the same frames. */
    cls_classifier *ref = open_cls(16);
    cls_results *rr = NULL;
    assert_int_equal(cls_results_create(&rr, ref, 16, &err), PID_OK);
    for (int i = 0; i < N_JOBS; i++) {
        assert_int_equal(jobs[i].status, SRV_JOB_OK);
        assert_true(jobs[i].t_submit_s <= jobs[i].t_start_s &&
                    jobs[i].t_start_s <= jobs[i].t_done_s);
        assert_int_equal(cls_run(ref, frames[i], jobs[i].n, rr, &err), PID_OK);
        for (int f = 0; f < jobs[i].n; f++) {
            for (int k = 0; k < N_CLASSES; k++) {
                float a = jobs[i].res->prob[f * N_CLASSES + k], e = rr->prob[f * N_CLASSES + k];
                if (!(fabsf(a - e) <= 1e-5f * fmaxf(1.0f, fabsf(e))))
                    fail_msg("job %d frame %d class %d: %g vs %g", i, f, k, a, e);
            }
            assert_int_equal(jobs[i].res->top[f * N_CLASSES], rr->order[f * N_CLASSES]);
            assert_true(fabs(jobs[i].res->unknown_score[f] - rr->unknown_score[f]) < 1e-5);
        }
    }
    cls_results_destroy(rr);
    cls_close(ref);

    /* metrics: every frame counted once, batches of at most 8 */
    srv_model_stats st;
    srv_metrics_stats(met, 0, &st);
    assert_int_equal(st.frames, (uint64_t)total);
    assert_true(st.batches >= (uint64_t)((total + 7) / 8));
    uint64_t sum = 0;
    for (int bs = 1; bs <= 8; bs++) {
        uint64_t c;
        double sec;
        srv_metrics_batch_stats(met, 0, bs, &c, &sec);
        sum += c * (uint64_t)bs;
    }
    assert_int_equal(sum, (uint64_t)total); /* no batch above 8 */
    srv_batcher_destroy(b);
    for (int i = 0; i < N_JOBS; i++) {
        srv_results_destroy(jobs[i].res);
        free(frames[i]);
    }
    srv_metrics_destroy(met);
}

static void test_queue_delay(void **state)
{
    /* A lone frame with max_batch 64 runs after about the delay (20 ms),
     * not later than a generous bound. */
    pid_error err;
    srv_batcher *b = NULL;
    srv_batcher_opts o = {64, 20000, 64, 0, NULL, NULL, NULL};
    assert_int_equal(srv_batcher_create(&b, open_cls(64), &o, &err), PID_OK);
    float f[N_POINTS];
    make_frames(f, 1, 3);
    srv_job j;
    memset(&j, 0, sizeof j);
    j.n = 1;
    j.frames = f;
    j.done = on_done;
    assert_int_equal(srv_results_create(&j.res, 1, N_CLASSES, 3, 0, &err), PID_OK);
    reset_log();
    int queued;
    assert_int_equal(srv_batcher_submit(b, &j, NULL, NULL, &queued, &err), PID_OK);
    assert_int_equal(queued, 1);
    wait_done(1);
    double waited = j.t_start_s - j.t_submit_s;
    if (!(waited >= 0.019 && waited < 0.5)) fail_msg("queue wait %.4f s for a 20 ms delay", waited);
    srv_results_destroy(j.res);
    srv_batcher_destroy(b);
}

static int space_calls;
static void on_space(void *user)
{
    pthread_mutex_lock(&log_mu);
    space_calls++;
    pthread_cond_broadcast(&log_cv);
    pthread_mutex_unlock(&log_mu);
}

static void test_full_expired_closed(void **state)
{
    pid_error err;
    srv_batcher *b = NULL;
    /* max_batch 8 > queue 4 and a 300 ms delay: a full queue stays full
     * until the worker's delay runs out. */
    srv_batcher_opts o = {8, 300000, 4, 0, NULL, NULL, NULL};
    assert_int_equal(srv_batcher_create(&b, open_cls(8), &o, &err), PID_OK);
    float f[5 * N_POINTS];
    make_frames(f, 5, 0);
    srv_job a, c, big, old;
    memset(&a, 0, sizeof a);
    a.n = 4;
    a.frames = f;
    a.done = on_done;
    assert_int_equal(srv_results_create(&a.res, 4, N_CLASSES, 3, 0, &err), PID_OK);
    c = a;
    c.n = 1;
    assert_int_equal(srv_results_create(&c.res, 1, N_CLASSES, 3, 0, &err), PID_OK);
    big = a;
    big.n = 5;
    assert_int_equal(srv_results_create(&big.res, 5, N_CLASSES, 3, 0, &err), PID_OK);
    reset_log();
    space_calls = 0;
    int queued;
    assert_int_equal(srv_batcher_submit(b, &big, NULL, NULL, &queued, &err), PID_ERR_ARG);
    /* has_room answers what submit would: 4 frames fit the empty queue, 5
     * never do, and none once it holds 4 */
    assert_true(srv_batcher_has_room(b, 4));
    assert_false(srv_batcher_has_room(b, 5));
    assert_int_equal(srv_batcher_submit(b, &a, NULL, NULL, &queued, &err), PID_OK);
    assert_int_equal(queued, 1);
    assert_int_equal(srv_batcher_depth(b), 4);
    assert_false(srv_batcher_has_room(b, 1));
    assert_int_equal(srv_batcher_submit(b, &c, on_space, NULL, &queued, &err), PID_OK);
    assert_int_equal(queued, 0); /* full */
    assert_int_equal(space_calls, 0);
    wait_done(1);
    pthread_mutex_lock(&log_mu);
    while (space_calls < 1)
        pthread_cond_wait(&log_cv, &log_mu);
    pthread_mutex_unlock(&log_mu);
    assert_int_equal(space_calls, 1);
    assert_int_equal(srv_batcher_submit(b, &c, NULL, NULL, &queued, &err), PID_OK);
    assert_int_equal(queued, 1);
    wait_done(2);
    assert_int_equal(c.status, SRV_JOB_OK);

    /* a job whose deadline has passed expires without results */
    old = c;
    old.deadline_s = pid_mono_s() - 1.0;
    assert_int_equal(srv_batcher_submit(b, &old, NULL, NULL, &queued, &err), PID_OK);
    assert_int_equal(queued, 1);
    wait_done(3);
    assert_int_equal(old.status, SRV_JOB_EXPIRED);

    srv_batcher_close(b);
    assert_int_equal(srv_batcher_submit(b, &c, on_space, NULL, &queued, &err), PID_OK);
    assert_int_equal(queued, -1);
    assert_int_equal(space_calls, 1); /* not registered when closed */
    srv_batcher_destroy(b);
    srv_results_destroy(a.res);
    srv_results_destroy(c.res);
    srv_results_destroy(big.res);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_order_and_results),
        cmocka_unit_test(test_queue_delay),
        cmocka_unit_test(test_full_expired_closed),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
