/* Unit tests for network instances (models/net.h) on the CPU backend: whole-
 * network gradients against central finite differences, reproducibility from
 * the seed, a small learning problem, argument errors, inference nets (folded
 * BN, fused kernels, threads) against the training net's inference forward,
 * and CPU vs CUDA parity of a full forward + backward and of an inference net
 * (skipped without a device). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/rng.h"
#include "kernels/backend.h"
#include "models/net.h"
#include "models/spec.h"

/* Gradient check: central differences with step FD_EPS on each parameter of
 * the batch-mean training loss (float32 forward). Pass when |analytic -
 * numeric| <= FD_RTOL max(|a|, |n|) + FD_ATOL for every parameter. Float
 * rounding of a loss near 1 is ~1e-7, i.e. ~5e-5 after dividing by 2 eps. */
#define FD_EPS 1e-3f
#define FD_RTOL 2e-2
#define FD_ATOL 5e-4
/* Where the central difference straddles a ReLU or max-pool kink (the loss is
 * only piecewise smooth), the analytic gradient must instead match one of the
 * one-sided differences within FD_KINK_RTOL |a| + FD_KINK_ATOL; at most 2 %
 * of the parameters may be decided this way. */
#define FD_KINK_RTOL 5e-2
#define FD_KINK_ATOL 1e-3
/* CPU vs CUDA: max |cuda - cpu| / max |cpu| for logits and gradients. */
#define PARITY_TOL 1e-3
/* Inference net vs training net (training = 0), same arrays: max |logit
 * difference| / max(1, max |logit|). The fold rescales weights and the fused
 * kernels sum in another order, so they agree to float rounding: a few 1e-7
 * relative per layer; 1e-5 leaves a wide margin, while any wrong fold, fused
 * pool or slot reuse moves logits by O(1e-1). */
#define INFER_TOL 1e-5
/* Learning sanity check: accuracy on 400 fresh samples after LEARN_STEPS. */
#define LEARN_STEPS 300
#define LEARN_MIN_ACC 0.95

static pid_backend *cpu;
static pid_error err;

#define OK(call) assert_int_equal((call), PID_OK)

static int setup(void **state)
{
    (void)state;
    return pid_backend_create(&cpu, "cpu", 1, &err) ? -1 : 0;
}

static int teardown(void **state)
{
    (void)state;
    pid_backend_destroy(cpu);
    return 0;
}

static net_spec *build_spec(const char *text, const char *shape, int64_t n_classes)
{
    net_spec *s = NULL;
    net_shape sh;
    OK(net_spec_parse(text, &s, &err));
    OK(net_spec_parse_shape(shape, &sh, &err));
    OK(net_spec_build(s, &sh, n_classes, &err));
    return s;
}

static float *rnd(size_t n, uint64_t stream, float lo, float hi)
{
    pid_rng g;
    pid_rng_init(&g, 99, stream);
    float *p = malloc(sizeof(float) * (n ? n : 1));
    for (size_t i = 0; i < n; i++)
        p[i] = (float)pid_rng_range(&g, lo, hi);
    return p;
}

/* Targets for the gradient checks: labels (softmax), multi-hot (sigmoid),
 * plus fractions (rows summing to 1) for a fractions head. */
typedef struct {
    int32_t labels[8];
    float targets[8 * 8];
    float fractions[8 * 8];
} tgt_store;

static net_targets make_targets(tgt_store *ts, int batch, int c, int sigmoid, int fractions)
{
    pid_rng g;
    pid_rng_init(&g, 5, 5);
    net_targets t;
    memset(&t, 0, sizeof t);
    for (int i = 0; i < batch; i++) {
        ts->labels[i] = (int32_t)pid_rng_below(&g, (uint32_t)c);
        double s = 0.0;
        for (int j = 0; j < c; j++) {
            ts->targets[i * c + j] = (float)(pid_rng_uniform(&g) > 0.5);
            ts->fractions[i * c + j] = (float)pid_rng_uniform(&g);
            s += ts->fractions[i * c + j];
        }
        for (int j = 0; j < c; j++)
            ts->fractions[i * c + j] = (float)(ts->fractions[i * c + j] / s);
    }
    if (sigmoid)
        t.targets = ts->targets;
    else
        t.labels = ts->labels;
    if (fractions) {
        t.fractions = ts->fractions;
        t.fraction_weight = 0.5f;
    }
    return t;
}

static double eval_loss(net *n, const float *p, const float *x, int b, const net_targets *t)
{
    double loss = 0.0;
    OK(net_set_params(n, p, NULL, &err));
    OK(net_forward(n, x, b, 1, &err));
    OK(net_loss_backward(n, t, b, &loss, &err));
    return loss;
}

static void grad_check(const char *text, const char *shape, int c, int sigmoid, int fractions)
{
    const int b = 4;
    net_spec *s = build_spec(text, shape, c);
    net *n = NULL;
    OK(net_create(&n, s, cpu, b, 7, &err));
    size_t np = net_param_count(n);
    float *p = malloc(sizeof(float) * np), *ana = malloc(sizeof(float) * np);
    float *x = rnd((size_t)b * (size_t)net_input_count(n), 1, -1.0f, 1.0f);
    tgt_store ts;
    net_targets t = make_targets(&ts, b, c, sigmoid, fractions);
    OK(net_params(n, p, NULL, &err));
    double l0 = eval_loss(n, p, x, b, &t);
    assert_true(isfinite(l0) && l0 > 0.0);
    memcpy(ana, net_grads(n), sizeof(float) * np); /* CPU backend: host memory */
    double worst = 0.0;
    size_t bad = 0, kinks = 0;
    for (size_t j = 0; j < np; j++) {
        float save = p[j];
        p[j] = save + FD_EPS;
        double lp = eval_loss(n, p, x, b, &t);
        p[j] = save - FD_EPS;
        double lm = eval_loss(n, p, x, b, &t);
        p[j] = save;
        double num = (lp - lm) / (2.0 * FD_EPS), a = ana[j];
        double tol = FD_RTOL * fmax(fabs(a), fabs(num)) + FD_ATOL;
        double e = fabs(a - num);
        if (e <= tol) {
            if (e / tol > worst) worst = e / tol;
            continue;
        }
        /* A ReLU / max-pool kink within FD_EPS: the analytic gradient is one
         * of the one-sided slopes (checked to first order in FD_EPS). */
        double right = (lp - l0) / FD_EPS, left = (l0 - lm) / FD_EPS;
        double tol1 = FD_KINK_RTOL * fabs(a) + FD_KINK_ATOL;
        if (fabs(a - right) <= tol1 || fabs(a - left) <= tol1) {
            kinks++;
            continue;
        }
        if (bad < 5)
            printf("  param %zu: analytic %.6g numeric %.6g (one-sided %.6g, %.6g)\n", j, a, num,
                   right, left);
        bad++;
    }
    printf("  grad check \"%s\": %zu params, worst error/tolerance %.3f, %zu at a kink\n", text, np,
           worst, kinks);
    assert_true(kinks <= np / 50);
    assert_int_equal(bad, 0);
    free(p);
    free(ana);
    free(x);
    net_destroy(n);
    net_spec_destroy(s);
}

/* conv1d + bn + relu + pool + res with a strided 1x1 projection + gpool +
 * dense + gelu + softmax head. */
#define SPEC_GC                                                                                    \
    "conv1d(4,k3,p1) bn relu maxpool(2) res(conv1d(6,k3,p1) bn relu conv1d(6,k3,s2,p1)) relu "     \
    "avgpool(2) gpool dense(8) gelu head"

static void test_grad_check(void **state)
{
    (void)state;
    grad_check(SPEC_GC, "2x32", 3, 0, 0);
}

/* Nested identity residuals, dense projection (flat block), sigmoid head, conv2d,
 * 2-D pools, flatten, and a fractions head. */
static void test_grad_check_more(void **state)
{
    (void)state;
    grad_check("conv1d(3,k3,p1) res(res(conv1d(3,k3,p1)) gelu) flatten res(dense(5) relu) bn "
               "head(sigmoid)",
               "2x8", 4, 1, 0);
    grad_check("conv2d(3,k3,p1) bn relu maxpool2d(2) avgpool2d(2) flatten dense(6) relu "
               "head(softmax,fractions)",
               "1x8x8", 3, 0, 1);
}

/* A fractions head without fraction targets: only the class loss, and zero
 * gradients for the fractions dense (its bias is the last n_classes params). */
static void test_fractions_optional(void **state)
{
    (void)state;
    const int b = 4, c = 3;
    net_spec *s = build_spec("conv1d(3,k3,p1) relu gpool head(softmax,fractions)", "1x16", c);
    net *n = NULL;
    OK(net_create(&n, s, cpu, b, 9, &err));
    assert_true(net_has_fractions(n));
    assert_non_null(net_fraction_logits(n));
    float *x = rnd((size_t)b * 16, 6, -1.0f, 1.0f);
    tgt_store ts;
    net_targets t = make_targets(&ts, b, c, 0, 0);
    double l1 = 0.0, l2 = 0.0;
    OK(net_forward(n, x, b, 1, &err));
    OK(net_loss_backward(n, &t, b, &l1, &err));
    size_t np = net_param_count(n);
    for (size_t j = np - (size_t)c; j < np; j++)
        assert_true(net_grads(n)[j] == 0.0f);
    t = make_targets(&ts, b, c, 0, 1);
    OK(net_loss_backward(n, &t, b, &l2, &err));
    assert_true(l2 > l1);
    assert_true(net_grads(n)[np - 1] != 0.0f);
    t.fraction_weight = -1.0f;
    assert_int_equal(net_loss_backward(n, &t, b, &l2, &err), PID_ERR_ARG);
    free(x);
    net_destroy(n);
    net_spec_destroy(s);
    s = build_spec("dense(4) head", "1x16", c);
    OK(net_create(&n, s, cpu, b, 9, &err));
    assert_null(net_fraction_logits(n));
    net_destroy(n);
    net_spec_destroy(s);
}

static void test_reproducible(void **state)
{
    (void)state;
    net_spec *s = build_spec(SPEC_GC, "2x32", 3);
    net *a = NULL, *b = NULL, *c = NULL;
    OK(net_create(&a, s, cpu, 4, 42, &err));
    OK(net_create(&b, s, cpu, 4, 42, &err));
    OK(net_create(&c, s, cpu, 4, 43, &err));
    size_t np = net_param_count(a), nb = net_buffer_count(a);
    assert_int_equal(np, net_param_count(b));
    float *pa = malloc(sizeof(float) * np), *pb = malloc(sizeof(float) * np);
    float *pc = malloc(sizeof(float) * np), *ba = malloc(sizeof(float) * nb);
    float *bb = malloc(sizeof(float) * nb);
    OK(net_params(a, pa, ba, &err));
    OK(net_params(b, pb, bb, &err));
    OK(net_params(c, pc, NULL, &err));
    assert_memory_equal(pa, pb, sizeof(float) * np);
    assert_memory_equal(ba, bb, sizeof(float) * nb);
    assert_memory_not_equal(pa, pc, sizeof(float) * np);
    float *x = rnd(4 * 64, 3, -1.0f, 1.0f);
    for (int training = 0; training <= 1; training++) {
        OK(net_forward(a, x, 4, training, &err));
        OK(net_forward(b, x, 4, training, &err));
        assert_memory_equal(net_logits(a), net_logits(b), sizeof(float) * 4 * 3);
    }
    /* A reloaded net gives the same inference output. */
    OK(net_params(a, pa, ba, &err));
    OK(net_set_params(c, pa, ba, &err));
    OK(net_forward(a, x, 4, 0, &err));
    OK(net_forward(c, x, 4, 0, &err));
    assert_memory_equal(net_logits(a), net_logits(c), sizeof(float) * 4 * 3);
    free(pa);
    free(pb);
    free(pc);
    free(ba);
    free(bb);
    free(x);
    net_destroy(a);
    net_destroy(b);
    net_destroy(c);
    net_spec_destroy(s);
}

/* AdamW state round trip: a net restored from another's parameters AND
 * optimizer state continues bit-identically for further steps; restored from
 * the parameters alone (moments reset) it does not. Bad state is refused. */
static void test_optimizer_state(void **state)
{
    (void)state;
    net_spec *s = build_spec(SPEC_GC, "2x32", 3);
    net *a = NULL, *b = NULL, *c = NULL;
    OK(net_create(&a, s, cpu, 4, 42, &err));
    OK(net_create(&b, s, cpu, 4, 1, &err));
    OK(net_create(&c, s, cpu, 4, 2, &err));
    size_t np = net_param_count(a), nb = net_buffer_count(a);
    float *x = rnd(4 * 64, 9, -1.0f, 1.0f);
    tgt_store ts;
    net_targets t = make_targets(&ts, 4, 3, 0, 0);
    for (int i = 0; i < 5; i++) {
        OK(net_forward(a, x, 4, 1, &err));
        OK(net_loss_backward(a, &t, 4, NULL, &err));
        OK(net_step(a, 1e-2f, 1e-3f, &err));
    }
    float *p = malloc(sizeof(float) * np), *bu = malloc(sizeof(float) * (nb ? nb : 1));
    float *m = malloc(sizeof(float) * np), *v = malloc(sizeof(float) * np);
    int64_t step = -1;
    OK(net_params(a, p, bu, &err));
    OK(net_optimizer_state(a, m, v, &step, &err));
    assert_int_equal(step, 5);
    OK(net_set_params(b, p, bu, &err));
    OK(net_set_optimizer_state(b, m, v, step, &err));
    OK(net_set_params(c, p, bu, &err)); /* moments reset */
    net *all[3] = {a, b, c};
    for (int i = 0; i < 3; i++)
        for (int k = 0; k < 3; k++) {
            OK(net_forward(all[k], x, 4, 1, &err));
            OK(net_loss_backward(all[k], &t, 4, NULL, &err));
            OK(net_step(all[k], 1e-2f, 1e-3f, &err));
        }
    float *pa = malloc(sizeof(float) * np), *pb = malloc(sizeof(float) * np),
          *pc = malloc(sizeof(float) * np);
    OK(net_params(a, pa, NULL, &err));
    OK(net_params(b, pb, NULL, &err));
    OK(net_params(c, pc, NULL, &err));
    assert_memory_equal(pa, pb, sizeof(float) * np);
    assert_memory_not_equal(pa, pc, sizeof(float) * np);
    /* refused: negative second moment, NaN, bad step; nothing changes */
    v[0] = -1.0f;
    assert_int_equal(net_set_optimizer_state(b, m, v, 3, &err), PID_ERR_ARG);
    v[0] = 0.0f;
    m[1] = NAN;
    assert_int_equal(net_set_optimizer_state(b, m, v, 3, &err), PID_ERR_ARG);
    m[1] = 0.0f;
    assert_int_equal(net_set_optimizer_state(b, m, v, -1, &err), PID_ERR_ARG);
    OK(net_optimizer_state(b, m, v, &step, &err));
    assert_int_equal(step, 8);
    free(p);
    free(bu);
    free(m);
    free(v);
    free(pa);
    free(pb);
    free(pc);
    free(x);
    net_destroy(a);
    net_destroy(b);
    net_destroy(c);
    net_spec_destroy(s);
}

/* Two classes of 1-D patterns of 64 points: a Gaussian bump (sigma 2.5,
 * amplitude 0.5..1.5) centred at 20 +- 3 (class 0) or 40 +- 3 (class 1) on
 * Gaussian noise of sd 0.3. */
static void make_bumps(pid_rng *g, float *x, int32_t *y, int n)
{
    for (int i = 0; i < n; i++) {
        int cls = (int)pid_rng_below(g, 2);
        double c = (cls ? 40.0 : 20.0) + pid_rng_range(g, -3.0, 3.0);
        double amp = pid_rng_range(g, 0.5, 1.5);
        for (int k = 0; k < 64; k++) {
            double d = (k - c) / 2.5;
            x[i * 64 + k] = (float)(amp * exp(-0.5 * d * d) + 0.3 * pid_rng_normal(g));
        }
        y[i] = cls;
    }
}

static void test_learns(void **state)
{
    (void)state;
    const int b = 32, n_test = 400;
    net_spec *s = build_spec("conv1d(8,k5,p2) bn relu maxpool(2) conv1d(8,k5,p2) bn relu "
                             "maxpool(2) flatten dense(16) relu dropout(0.1) head",
                             "1x64", 2);
    net *n = NULL;
    OK(net_create(&n, s, cpu, n_test, 11, &err));
    float *x = malloc(sizeof(float) * 64 * (size_t)n_test);
    int32_t *y = malloc(sizeof(int32_t) * (size_t)n_test);
    pid_rng g;
    pid_rng_init(&g, 2024, 1);
    double loss = 0.0, first = 0.0;
    for (int it = 0; it < LEARN_STEPS; it++) {
        make_bumps(&g, x, y, b);
        net_targets t = {.labels = y};
        OK(net_forward(n, x, b, 1, &err));
        OK(net_loss_backward(n, &t, b, &loss, &err));
        if (it == 0) first = loss;
        OK(net_step(n, 3e-3f, 1e-4f, &err));
    }
    make_bumps(&g, x, y, n_test);
    OK(net_forward(n, x, n_test, 0, &err));
    const float *z = net_logits(n);
    int correct = 0;
    for (int i = 0; i < n_test; i++)
        correct += (z[2 * i + 1] > z[2 * i]) == (y[i] == 1);
    double acc = (double)correct / n_test;
    printf("  learning: loss %.4f -> %.4f after %d AdamW steps, test accuracy %.3f\n", first, loss,
           LEARN_STEPS, acc);
    assert_true(acc >= LEARN_MIN_ACC);
    free(x);
    free(y);
    net_destroy(n);
    net_spec_destroy(s);
}

static void test_bad_inputs(void **state)
{
    (void)state;
    net_spec *s = build_spec(SPEC_GC, "2x32", 3);
    net *n = NULL;
    assert_int_equal(net_create(NULL, s, cpu, 4, 1, &err), PID_ERR_ARG);
    assert_int_equal(net_create(&n, NULL, cpu, 4, 1, &err), PID_ERR_ARG);
    assert_null(n);
    assert_int_equal(net_create(&n, s, NULL, 4, 1, &err), PID_ERR_ARG);
    assert_int_equal(net_create(&n, s, cpu, 0, 1, &err), PID_ERR_ARG);
    OK(net_create(&n, s, cpu, 4, 1, &err));
    float *x = rnd(8 * 64, 4, -1.0f, 1.0f);
    int32_t labels[8] = {0, 1, 2, 0, 1, 2, 0, 1};
    net_targets t = {.labels = labels};
    double loss;
    assert_int_equal(net_forward(n, x, 5, 1, &err), PID_ERR_ARG);
    assert_non_null(strstr(err.msg, "max_batch"));
    assert_int_equal(net_forward(n, x, 0, 1, &err), PID_ERR_ARG);
    assert_int_equal(net_forward(n, NULL, 2, 1, &err), PID_ERR_ARG);
    assert_int_equal(net_forward(NULL, x, 2, 1, &err), PID_ERR_ARG);
    /* Backward needs a training forward of the same batch. */
    assert_int_equal(net_loss_backward(n, &t, 2, &loss, &err), PID_ERR_ARG);
    OK(net_forward(n, x, 2, 0, &err));
    assert_int_equal(net_loss_backward(n, &t, 2, &loss, &err), PID_ERR_ARG);
    OK(net_forward(n, x, 2, 1, &err));
    assert_int_equal(net_loss_backward(n, &t, 3, &loss, &err), PID_ERR_ARG);
    assert_int_equal(net_loss_backward(n, NULL, 2, &loss, &err), PID_ERR_ARG);
    net_targets none = {0};
    assert_int_equal(net_loss_backward(n, &none, 2, &loss, &err), PID_ERR_ARG);
    labels[1] = 7; /* out of range: the CPU loss rejects it */
    assert_int_equal(net_loss_backward(n, &t, 2, &loss, &err), PID_ERR_ARG);
    labels[1] = 1;
    OK(net_loss_backward(n, &t, 2, &loss, &err));
    assert_int_equal(net_step(n, NAN, 0.0f, &err), PID_ERR_ARG);
    assert_int_equal(net_step(NULL, 1e-3f, 0.0f, &err), PID_ERR_ARG);
    float *p = calloc(net_param_count(n), sizeof(float));
    p[3] = NAN;
    assert_int_equal(net_set_params(n, p, NULL, &err), PID_ERR_ARG);
    assert_int_equal(net_set_params(n, NULL, NULL, &err), PID_ERR_ARG);
    assert_int_equal(net_params(n, NULL, NULL, &err), PID_ERR_ARG);
    free(p);
    net_destroy(n);
    net_destroy(NULL);
    net_spec_destroy(s);
    /* p=same with an even kernel pads asymmetrically: the kernels cannot. */
    s = build_spec("conv1d(4,k4,p=same) gpool head", "1x32", 2);
    n = (net *)&n; /* must be reset to NULL */
    assert_int_equal(net_create(&n, s, cpu, 4, 1, &err), PID_ERR_UNSUPPORTED);
    assert_null(n);
    assert_non_null(strstr(err.msg, "asymmetric"));
    net_spec_destroy(s);
    /* An unbuilt spec. */
    OK(net_spec_parse("dense(4) head", &s, &err));
    assert_int_equal(net_create(&n, s, cpu, 4, 1, &err), PID_ERR_ARG);
    net_spec_destroy(s);
    free(x);
}

static double max_abs(const float *a, size_t n)
{
    double m = 0.0;
    for (size_t i = 0; i < n; i++)
        m = fmax(m, fabs(a[i]));
    return m;
}

static double rel_diff(const float *a, const float *b, size_t n)
{
    double m = 0.0;
    for (size_t i = 0; i < n; i++)
        m = fmax(m, fabs((double)a[i] - b[i]));
    double s = max_abs(a, n);
    return m / (s > 0.0 ? s : 1.0);
}

static void test_cuda_parity(void **state)
{
    (void)state;
    if (pid_backend_cuda_device_count() <= 0) {
        printf("  CUDA parity: skipped, no CUDA device visible (build has CUDA: %s)\n",
               pid_backend_cuda_built() ? "yes" : "no");
        skip();
    }
    pid_backend *gpu = NULL;
    OK(pid_backend_create(&gpu, "cuda", 0, &err));
    const char *specs[] = {SPEC_GC " ", "conv2d(3,k3,p1) bn relu maxpool2d(2) flatten res(dense(6) "
                                        "gelu) dropout(0.2) head(softmax,fractions)"};
    const char *shapes[] = {"2x32", "1x8x8"};
    for (int k = 0; k < 2; k++) {
        const int b = 8, c = 3;
        net_spec *s = build_spec(specs[k], shapes[k], c);
        net *nc = NULL, *ng = NULL;
        OK(net_create(&nc, s, cpu, b, 3, &err));
        OK(net_create(&ng, s, gpu, b, 3, &err));
        size_t nx = (size_t)b * (size_t)net_input_count(nc), np = net_param_count(nc);
        float *x = rnd(nx, 8, -1.0f, 1.0f);
        tgt_store ts;
        net_targets t = make_targets(&ts, b, c, 0, k == 1);
        net_targets tg = t;
        float *dfr = NULL;
        int32_t *dl = NULL;
        OK(pid_backend_alloc(gpu, (void **)&dl, sizeof(int32_t) * (size_t)b, &err));
        OK(pid_backend_upload(gpu, dl, ts.labels, sizeof(int32_t) * (size_t)b, &err));
        tg.labels = dl;
        if (k == 1) {
            OK(pid_backend_alloc(gpu, (void **)&dfr, sizeof(float) * (size_t)(b * c), &err));
            OK(pid_backend_upload(gpu, dfr, ts.fractions, sizeof(float) * (size_t)(b * c), &err));
            tg.fractions = dfr;
        }
        OK(pid_backend_upload(gpu, net_input_buffer(ng), x, sizeof(float) * nx, &err));
        double lc = 0.0, lg = 0.0;
        OK(net_forward(nc, x, b, 1, &err));
        OK(net_loss_backward(nc, &t, b, &lc, &err));
        OK(net_forward(ng, net_input_buffer(ng), b, 1, &err));
        OK(net_loss_backward(ng, &tg, b, &lg, &err));
        float *zg = malloc(sizeof(float) * (size_t)(b * c)), *gg = malloc(sizeof(float) * np);
        OK(pid_backend_download(gpu, zg, net_logits(ng), sizeof(float) * (size_t)(b * c), &err));
        OK(pid_backend_download(gpu, gg, net_grads(ng), sizeof(float) * np, &err));
        OK(pid_backend_sync(gpu, &err));
        double dz = rel_diff(net_logits(nc), zg, (size_t)(b * c));
        double dg = rel_diff(net_grads(nc), gg, np);
        printf("  CUDA parity \"%s\": loss %.6f vs %.6f, logits %.2e, grads %.2e\n", specs[k], lc,
               lg, dz, dg);
        assert_true(fabs(lc - lg) <= PARITY_TOL * fmax(1.0, fabs(lc)));
        assert_true(dz <= PARITY_TOL);
        assert_true(dg <= PARITY_TOL);
        /* One AdamW step on each keeps the parameters together. */
        OK(net_step(nc, 1e-3f, 1e-2f, &err));
        OK(net_step(ng, 1e-3f, 1e-2f, &err));
        float *pc = malloc(sizeof(float) * np), *pg = malloc(sizeof(float) * np);
        OK(net_params(nc, pc, NULL, &err));
        OK(net_params(ng, pg, NULL, &err));
        assert_true(rel_diff(pc, pg, np) <= PARITY_TOL);
        free(pc);
        free(pg);
        free(zg);
        free(gg);
        free(x);
        pid_backend_free(gpu, dl);
        pid_backend_free(gpu, dfr);
        net_destroy(nc);
        net_destroy(ng);
        net_spec_destroy(s);
    }
    pid_backend_destroy(gpu);
}

/* ------------------------------------------------------------ inference nets */

/* Params from net_create (seed) with every BN's gamma / beta and running
 * stats moved away from 1 / 0 so the fold has something to do. */
static void trained_like(net *n, float **params, float **bufs)
{
    size_t np = net_param_count(n), nb = net_buffer_count(n);
    *params = malloc(sizeof(float) * (np ? np : 1));
    *bufs = malloc(sizeof(float) * (nb ? nb : 1));
    OK(net_params(n, *params, *bufs, &err));
    float *shift = rnd(np, 41, -0.2f, 0.2f), *stats = rnd(nb, 42, 0.2f, 1.5f);
    for (size_t i = 0; i < np; i++)
        (*params)[i] += shift[i];
    for (size_t i = 0; i < nb; i++)
        (*bufs)[i] = stats[i] * ((i / 7) % 2 ? 1.0f : -0.5f) + ((*bufs)[i] == 1.0f ? 0.7f : 0.0f);
    /* Variances must stay positive: the second half of each BN's pair. */
    for (size_t i = 0; i < nb; i++)
        if ((*bufs)[i] <= 0.0f) (*bufs)[i] = -(*bufs)[i] + 0.05f;
    free(shift);
    free(stats);
    OK(net_set_params(n, *params, *bufs, &err));
}

static double logit_diff(const float *a, const float *b, size_t n)
{
    double m = 0.0, s = 1.0;
    for (size_t i = 0; i < n; i++) {
        m = fmax(m, fabs((double)a[i] - b[i]));
        s = fmax(s, fabs((double)a[i]));
    }
    return m / s;
}

/* Spec text -> inference nets at several threads / chunks / kernels vs the
 * training net's forward(training = 0) on random frames. */
static void infer_vs_train(const char *text, const char *shape, int c)
{
    const int max_b = 19;
    net_spec *s = build_spec(text, shape, c);
    net *tn = NULL;
    OK(net_create(&tn, s, cpu, max_b, 17, &err));
    float *params = NULL, *bufs = NULL;
    trained_like(tn, &params, &bufs);
    size_t in = (size_t)net_input_count(tn);
    float *x = rnd((size_t)max_b * in, 43, -1.0f, 1.0f);
    const int batches[] = {1, 5, 19};
    const net_infer_opts variants[] = {
        {1, 0, 0}, {1, 1, 0}, {3, 0, 0}, {3, 2, 0}, {2, 0, 1}, {4, 1, 1},
    };
    double worst = 0.0;
    pid_backend *narrow = NULL; /* AVX2 / plain C kernels where the CPU has wider ones */
    OK(pid_backend_create(&narrow, "cpu", 1, &err));
    for (size_t v = 0; v < sizeof variants / sizeof variants[0] + 2; v++) {
        net *in_net = NULL;
        pid_backend *be = cpu;
        net_infer_opts o = variants[v < 6 ? v : 0];
        if (v >= 6) {
            pid_backend_set_cpu_isa(narrow, v == 6 ? PID_CPU_ISA_AVX2 : PID_CPU_ISA_GENERIC);
            be = narrow;
        }
        OK(net_create_infer(&in_net, s, be, max_b, params, bufs, &o, &err));
        assert_true(net_is_infer(in_net));
        assert_int_equal(net_infer_threads(in_net), o.n_threads);
        for (size_t k = 0; k < sizeof batches / sizeof batches[0]; k++) {
            int b = batches[k];
            OK(net_forward(tn, x, b, 0, &err));
            OK(net_forward(in_net, x, b, 0, &err));
            double d = logit_diff(net_logits(tn), net_logits(in_net), (size_t)b * (size_t)c);
            double df = 0.0;
            if (net_has_fractions(tn))
                df = logit_diff(net_fraction_logits(tn), net_fraction_logits(in_net),
                                (size_t)b * (size_t)c);
            worst = fmax(worst, fmax(d, df));
            if (!(d <= INFER_TOL && df <= INFER_TOL))
                fail_msg("\"%s\" threads %d chunk %d reference %d kernels %s batch %d: logits "
                         "differ by %.3g (fractions %.3g)",
                         text, o.n_threads, o.chunk, o.reference,
                         pid_cpu_isa_name(pid_backend_cpu_isa(be)), b, d, df);
        }
        net_destroy(in_net);
    }
    printf("  inference vs training net, \"%.40s...\": worst relative logit difference %.2e\n",
           text, worst);
    pid_backend_destroy(narrow);
    free(params);
    free(bufs);
    free(x);
    net_destroy(tn);
    net_spec_destroy(s);
}

static void test_infer_matches_training(void **state)
{
    (void)state;
    /* conv + folded BN + relu + fused pool, a stride-2 conv, dilation, a
     * residual block with and without projection (and nested), standalone BN
     * and activation, avg pool, gpool, dense + folded BN, dropout, a
     * fractions head. */
    infer_vs_train(
        "conv1d(9,k5,s2,p2) bn relu maxpool(2) conv1d(12,k3,p1,d2) bn gelu "
        "res(conv1d(12,k3,p1) bn relu res(conv1d(12,k3,p1) bn) relu conv1d(12,k3,p1) bn) "
        "relu maxpool(3,s2) res(conv1d(20,k3,s2,p1) bn relu) bn relu avgpool(2) "
        "conv1d(10,k1) bn maxpool(2) gpool dense(24) bn relu dropout(0.3) "
        "res(dense(24) relu) dense(16) gelu head(softmax,fractions)",
        "2x301", 5);
    /* Flatten into dense, a dense projection, a conv after a pool with
     * relu first, conv + maxpool without activation, a sigmoid head. */
    infer_vs_train("bn conv1d(8,k7,s3,p3) maxpool(2) relu conv1d(16,k3) relu maxpool(4) flatten "
                   "res(dense(12) bn relu dense(7)) dropout(0.5) head(sigmoid)",
                   "1x500", 4);
    /* The default XRD layout: identity residual blocks ending in conv + BN
     * (the add in the conv's epilogue), conv + relu + gpool fused. */
    infer_vs_train("conv1d(16,k15,s2,p7) bn relu maxpool(2) res(conv1d(16,k5,p2) bn relu "
                   "conv1d(16,k5,p2) bn) relu conv1d(24,k5,p2) bn relu maxpool(2) "
                   "res(conv1d(24,k3,p1) bn relu conv1d(24,k3,p1) bn) relu maxpool(2) "
                   "conv1d(32,k3,p1) bn relu gpool dense(32) relu dropout(0.2) head",
                   "1x700", 6);
    /* A residual block whose skip is the network input, ending in a conv
     * without BN; GELU before a fused max pool; conv + gpool without
     * activation. */
    infer_vs_train("res(conv1d(2,k3,p1) bn relu conv1d(2,k3,p1)) relu conv1d(6,k3,p1) gelu "
                   "maxpool(2) conv1d(5,k3) gpool head",
                   "2x50", 3);
    /* 2-D: conv2d with fold (the direct kernel's 2-D path), pools. */
    infer_vs_train("conv2d(6,k3,s2,p1) bn relu maxpool2d(2) conv2d(10,k3,p1,d1) bn relu "
                   "res(conv2d(10,k3,p1) bn relu) avgpool2d(2) gpool head",
                   "3x21x19", 3);
}

static void test_infer_api(void **state)
{
    (void)state;
    net_spec *s =
        build_spec("conv1d(8,k5,p2) bn relu maxpool(2) gpool dense(16) relu head", "1x200", 3);
    net *tn = NULL, *a = NULL, *b = NULL;
    OK(net_create(&tn, s, cpu, 4, 5, &err));
    float *params = NULL, *bufs = NULL;
    trained_like(tn, &params, &bufs);
    /* Refusals. */
    net_infer_opts bad = {0, 65, 0};
    assert_int_equal(net_create_infer(&a, s, cpu, 4, params, bufs, &bad, &err), PID_ERR_ARG);
    assert_null(a);
    assert_int_equal(net_create_infer(&a, s, cpu, 4, NULL, bufs, NULL, &err), PID_ERR_ARG);
    assert_int_equal(net_create_infer(&a, s, cpu, 0, params, bufs, NULL, &err), PID_ERR_ARG);
    params[3] = NAN;
    assert_int_equal(net_create_infer(&a, s, cpu, 4, params, bufs, NULL, &err), PID_ERR_ARG);
    OK(net_params(tn, params, NULL, &err));
    OK(net_create_infer(&a, s, cpu, 4, params, bufs, NULL, &err));
    float *x = rnd(4 * 200, 44, 0.0f, 1.0f);
    assert_int_equal(net_forward(a, x, 4, 1, &err), PID_ERR_UNSUPPORTED);
    assert_int_equal(net_forward(a, x, 5, 0, &err), PID_ERR_ARG);
    tgt_store ts;
    net_targets t = make_targets(&ts, 4, 3, 0, 0);
    assert_int_equal(net_loss_backward(a, &t, 4, NULL, &err), PID_ERR_UNSUPPORTED);
    assert_int_equal(net_step(a, 1e-3f, 0.0f, &err), PID_ERR_UNSUPPORTED);
    assert_int_equal(net_params(a, params, NULL, &err), PID_ERR_UNSUPPORTED);
    assert_null(net_grads(a));
    assert_false(net_is_infer(tn));
    /* net_set_params re-folds: a net loaded later equals one created with
     * the arrays (different starting weights). */
    float *p2 = rnd(net_param_count(tn), 45, -0.3f, 0.3f);
    OK(net_create_infer(&b, s, cpu, 4, p2, NULL, NULL, &err));
    OK(net_set_params(b, params, bufs, &err));
    OK(net_forward(a, x, 4, 0, &err));
    OK(net_forward(b, x, 4, 0, &err));
    assert_memory_equal(net_logits(a), net_logits(b), sizeof(float) * 12);
    /* The staging buffer exists on demand and works as an input. */
    float *stage = net_input_buffer(b);
    assert_non_null(stage);
    memcpy(stage, x, sizeof(float) * 4 * 200);
    OK(net_forward(b, stage, 4, 0, &err));
    assert_memory_equal(net_logits(a), net_logits(b), sizeof(float) * 12);
    /* Profile: one entry per op with the spec's FLOPs, times only when on. */
    assert_int_equal(net_profile_count(a), 4); /* conv+bn+relu+pool, gpool, dense+relu, head */
    net_op_profile pr;
    int64_t fl = 0;
    net_profile_reset(a, 1);
    OK(net_forward(a, x, 4, 0, &err));
    for (size_t i = 0; i < net_profile_count(a); i++) {
        OK(net_profile_get(a, i, &pr, &err));
        fl += pr.flops;
        assert_true(pr.seconds >= 0.0);
    }
    OK(net_profile_get(a, 0, &pr, &err));
    assert_string_equal(pr.name, "conv1d(8,k5,p2)+bn+relu+maxpool(2)");
    assert_true(pr.seconds > 0.0);
    net_spec_totals tot;
    OK(net_spec_totals_get(s, &tot, &err));
    assert_int_equal(fl, tot.flops_infer);
    net_profile_reset(a, 0);
    OK(net_profile_get(a, 0, &pr, &err));
    assert_true(pr.seconds == 0.0);
    assert_int_equal(net_profile_get(a, 4, &pr, &err), PID_ERR_ARG);
    assert_int_equal(net_profile_get(tn, 0, &pr, &err), PID_ERR_UNSUPPORTED);
    free(p2);
    free(x);
    free(params);
    free(bufs);
    net_destroy(a);
    net_destroy(b);
    net_destroy(tn);
    net_spec_destroy(s);
}

/* The inference net's memory does not grow with max_batch beyond the logits
 * (and the training net's does: every layer output and its gradient). */
static void test_infer_memory(void **state)
{
    (void)state;
    net_spec *s = build_spec("conv1d(16,k9,s2,p4) bn relu maxpool(2) conv1d(32,k7,s2,p3) bn relu "
                             "maxpool(2) gpool dense(32) relu head",
                             "1x3501", 10);
    net *tn = NULL, *small = NULL, *big = NULL;
    OK(net_create(&tn, s, cpu, 1, 5, &err));
    float *params = NULL, *bufs = NULL;
    trained_like(tn, &params, &bufs);
    net_infer_opts o = {2, 8, 0};
    OK(net_create_infer(&small, s, cpu, 8, params, bufs, &o, &err));
    OK(net_create_infer(&big, s, cpu, 4096, params, bufs, &o, &err));
    size_t grow = net_infer_bytes(big) - net_infer_bytes(small);
    printf("  inference net: %zu bytes at max_batch 8, %zu at 4096\n", net_infer_bytes(small),
           net_infer_bytes(big));
    /* The logits: (4096 - 8) frames x 10 classes (+ 64-byte rounding). */
    assert_true(grow <= sizeof(float) * (4096 - 8) * 10 + 64);
    /* Two workers of 8 frames: the two largest layer outputs (16x1751
     * before the fused pool is never stored: 16x875 and 32x219) ... a few
     * slots of chunk x the largest output, far below one frame's training
     * activations x 4096. */
    assert_true(net_infer_bytes(small) < 8u << 20);
    free(params);
    free(bufs);
    net_destroy(small);
    net_destroy(big);
    net_destroy(tn);
    net_spec_destroy(s);
}

/* Inference net on CUDA (the reference kernels, cuBLAS) vs on the CPU. */
static void test_infer_cuda_parity(void **state)
{
    (void)state;
    if (pid_backend_cuda_device_count() <= 0) {
        printf("  inference CUDA parity: skipped, no CUDA device visible\n");
        skip();
    }
    pid_backend *gpu = NULL;
    OK(pid_backend_create(&gpu, "cuda", 0, &err));
    const char *text = "conv1d(8,k5,s2,p2) bn relu maxpool(2) res(conv1d(8,k3,p1) bn relu) "
                       "res(conv1d(12,k3,s2,p1) bn) relu gpool dense(16) bn relu dropout(0.2) "
                       "head(sigmoid,fractions)";
    const int b = 9, c = 4;
    net_spec *s = build_spec(text, "1x300", c);
    net *tn = NULL, *nc = NULL, *ng = NULL;
    OK(net_create(&tn, s, cpu, b, 3, &err));
    float *params = NULL, *bufs = NULL;
    trained_like(tn, &params, &bufs);
    OK(net_create_infer(&nc, s, cpu, b, params, bufs, NULL, &err));
    OK(net_create_infer(&ng, s, gpu, b, params, bufs, NULL, &err));
    float *x = rnd((size_t)b * 300, 46, -1.0f, 1.0f);
    float *zg = malloc(sizeof(float) * (size_t)(b * c)),
          *fg = malloc(sizeof(float) * (size_t)(b * c));
    OK(pid_backend_upload(gpu, net_input_buffer(ng), x, sizeof(float) * (size_t)b * 300, &err));
    OK(net_forward(nc, x, b, 0, &err));
    OK(net_forward(ng, net_input_buffer(ng), b, 0, &err));
    OK(pid_backend_download(gpu, zg, net_logits(ng), sizeof(float) * (size_t)(b * c), &err));
    OK(pid_backend_download(gpu, fg, net_fraction_logits(ng), sizeof(float) * (size_t)(b * c),
                            &err));
    OK(pid_backend_sync(gpu, &err));
    double dz = logit_diff(net_logits(nc), zg, (size_t)(b * c));
    double df = logit_diff(net_fraction_logits(nc), fg, (size_t)(b * c));
    printf("  inference CUDA parity: logits %.2e, fractions %.2e\n", dz, df);
    assert_true(dz <= PARITY_TOL && df <= PARITY_TOL);
    free(zg);
    free(fg);
    free(x);
    free(params);
    free(bufs);
    net_destroy(tn);
    net_destroy(nc);
    net_destroy(ng);
    net_spec_destroy(s);
    pid_backend_destroy(gpu);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grad_check),
        cmocka_unit_test(test_grad_check_more),
        cmocka_unit_test(test_fractions_optional),
        cmocka_unit_test(test_reproducible),
        cmocka_unit_test(test_optimizer_state),
        cmocka_unit_test(test_learns),
        cmocka_unit_test(test_bad_inputs),
        cmocka_unit_test(test_cuda_parity),
        cmocka_unit_test(test_infer_matches_training),
        cmocka_unit_test(test_infer_api),
        cmocka_unit_test(test_infer_memory),
        cmocka_unit_test(test_infer_cuda_parity),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
