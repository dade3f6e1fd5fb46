/* Unit tests for the network operations (kernels/nn.h): every CPU backward
 * against central finite differences of its CPU forward, forwards against
 * hand-computed cases, the BN fold, a hand-computed AdamW update, the fused
 * inference ops against the reference ops at every CPU vector level, and CPU
 * vs CUDA parity on random inputs (skipped without a device); convolution
 * against its definition, and every CPU op on one thread against all. */
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
#include "kernels/nn.h"

/* Finite differences: central, step FD_EPS on float inputs, the scalar loss
 * L = sum_i r_i y_i accumulated in double. Pass when |analytic - numeric| <=
 * FD_RTOL max(|a|, |n|) + FD_ATOL (float forward rounding / (2 eps) is about
 * 1e-4 on these small shapes, so the bound has a wide margin). */
#define FD_EPS 1e-3f
#define FD_RTOL 1e-2
#define FD_ATOL 2e-3
/* CPU vs CUDA: max |cuda - cpu| / max |cpu| over each output below 1e-4. */
#define PARITY_TOL 1e-4
/* Fused inference ops vs the reference ops they replace (conv / dense, then
 * activation, then max pool), on the CPU at every vector level: max |diff| /
 * max |reference| below 1e-5 (the sums of <= 200 products run in another
 * order: float rounding is ~1e-7 relative). */
#define FUSED_TOL 1e-5

#define FB(n) (sizeof(float) * (size_t)(n))

static pid_backend *cpu;
static pid_error err;

#define OK(call) assert_int_equal((call), PID_OK)

static float *rnd(size_t n, uint64_t stream, float lo, float hi)
{
    pid_rng g;
    pid_rng_init(&g, 1234, stream);
    float *p = malloc(sizeof(float) * (n ? n : 1));
    for (size_t i = 0; i < n; i++)
        p[i] = (float)pid_rng_range(&g, lo, hi);
    return p;
}

static double dot(const float *a, const float *b, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += (double)a[i] * b[i];
    return s;
}

/* Compare `ana` (analytic gradient of param) with central differences of f(). */
static void check_grad(const char *what, double (*f)(void), float *param, size_t n,
                       const float *ana)
{
    double worst = 0.0;
    for (size_t j = 0; j < n; j++) {
        float save = param[j];
        param[j] = save + FD_EPS;
        double lp = f();
        param[j] = save - FD_EPS;
        double lm = f();
        param[j] = save;
        double num = (lp - lm) / (2.0 * (double)FD_EPS);
        double d = fabs(num - ana[j]);
        double bound = FD_RTOL * fmax(fabs(num), fabs(ana[j])) + FD_ATOL;
        if (d > bound)
            fail_msg("%s[%zu]: analytic %.6g vs numeric %.6g (bound %.3g)", what, j, (double)ana[j],
                     num, bound);
        worst = fmax(worst, d);
    }
    printf("  fd %-18s %zu values, max |diff| %.2e\n", what, n, worst);
}

/* ------------------------------------------------------------- dense */

static struct {
    float *x, *w, *b, *y, *r;
    int n, in, out;
} D;

static double dense_loss(void)
{
    OK(k_nn_dense_forward(cpu, D.x, D.w, D.b, D.y, D.n, D.in, D.out, &err));
    return dot(D.y, D.r, (size_t)D.n * D.out);
}

static void test_dense(void **state)
{
    /* Hand case: x = [1, 2], W = [[1, 0], [0.5, -1]], b = [0.1, 0.2]. */
    float x[2] = {1, 2}, w[4] = {1, 0, 0.5f, -1}, b[2] = {0.1f, 0.2f}, y[2];
    OK(k_nn_dense_forward(cpu, x, w, b, y, 1, 2, 2, &err));
    assert_float_equal(y[0], 1.1f, 1e-6);
    assert_float_equal(y[1], -1.3f, 1e-6);

    D.n = 3, D.in = 4, D.out = 5;
    D.x = rnd(12, 1, -1, 1), D.w = rnd(20, 2, -1, 1), D.b = rnd(5, 3, -1, 1);
    D.y = malloc(sizeof(float) * 15), D.r = rnd(15, 4, -1, 1);
    float *dx = malloc(sizeof(float) * 12), *dw = malloc(sizeof(float) * 20), db[5];
    OK(k_nn_dense_backward(cpu, D.x, D.w, D.r, dx, dw, db, D.n, D.in, D.out, &err));
    check_grad("dense dx", dense_loss, D.x, 12, dx);
    check_grad("dense dw", dense_loss, D.w, 20, dw);
    check_grad("dense db", dense_loss, D.b, 5, db);
    assert_int_equal(k_nn_dense_forward(cpu, NULL, D.w, D.b, D.y, 3, 4, 5, &err), PID_ERR_ARG);
    assert_int_equal(k_nn_dense_forward(cpu, D.x, D.w, D.b, D.y, 0, 4, 5, &err), PID_ERR_ARG);
    free(D.x), free(D.w), free(D.b), free(D.y), free(D.r), free(dx), free(dw);
}

/* ------------------------------------------------------- activations */

static struct {
    float *x, *y, *r;
    size_t n;
    int kind; /* 0 relu, 1 gelu, 2 dropout */
} A;

static double act_loss(void)
{
    if (A.kind == 0) OK(k_nn_relu_forward(cpu, A.x, A.y, A.n, &err));
    if (A.kind == 1) OK(k_nn_gelu_forward(cpu, A.x, A.y, A.n, &err));
    if (A.kind == 2) OK(k_nn_dropout_forward(cpu, A.x, A.y, A.n, 0.3f, 7, 3, &err));
    return dot(A.y, A.r, A.n);
}

static void test_act(void **state)
{
    float x[4] = {1.0f, -0.5f, 0.0f, 2.0f}, y[4];
    OK(k_nn_gelu_forward(cpu, x, y, 2, &err));
    assert_float_equal(y[0], 0.8411919906f, 1e-6); /* 0.5 x (1 + tanh(...)) in double */
    assert_float_equal(y[1], -0.1542859902f, 1e-6);
    OK(k_nn_relu_forward(cpu, x, y, 4, &err));
    assert_true(y[0] == 1.0f && y[1] == 0.0f && y[2] == 0.0f && y[3] == 2.0f);
    float b[4] = {1, 1, 1, 1};
    OK(k_nn_add(cpu, x, b, y, 4, &err));
    assert_true(y[0] == 2.0f && y[1] == 0.5f && y[3] == 3.0f);

    A.n = 40;
    A.x = rnd(A.n, 10, -2, 2), A.y = malloc(sizeof(float) * A.n), A.r = rnd(A.n, 11, -1, 1);
    for (size_t i = 0; i < A.n; i++) /* keep ReLU inputs away from its kink */
        if (fabsf(A.x[i]) < 0.05f) A.x[i] = 0.1f;
    float *dx = malloc(sizeof(float) * A.n);
    const char *names[3] = {"relu dx", "gelu dx", "dropout dx"};
    for (A.kind = 0; A.kind < 3; A.kind++) {
        if (A.kind == 0) OK(k_nn_relu_backward(cpu, A.x, A.r, dx, A.n, &err));
        if (A.kind == 1) OK(k_nn_gelu_backward(cpu, A.x, A.r, dx, A.n, &err));
        if (A.kind == 2) OK(k_nn_dropout_backward(cpu, A.r, dx, A.n, 0.3f, 7, 3, &err));
        check_grad(names[A.kind], act_loss, A.x, A.n, dx);
    }
    free(A.x), free(A.y), free(A.r), free(dx);

    /* Dropout statistics: keep fraction 1 - p within 0.02 on 20000 draws,
     * kept values scaled by 1/(1-p), a different step draws another mask. */
    const size_t n = 20000;
    float *ones = malloc(sizeof(float) * n), *o1 = malloc(sizeof(float) * n),
          *o2 = malloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++)
        ones[i] = 1.0f;
    OK(k_nn_dropout_forward(cpu, ones, o1, n, 0.25f, 99, 0, &err));
    OK(k_nn_dropout_forward(cpu, ones, o2, n, 0.25f, 99, 1, &err));
    size_t kept = 0, same = 0;
    for (size_t i = 0; i < n; i++) {
        assert_true(o1[i] == 0.0f || fabsf(o1[i] - 1.0f / 0.75f) < 1e-6f);
        kept += o1[i] != 0.0f;
        same += (o1[i] != 0.0f) == (o2[i] != 0.0f);
    }
    assert_true(fabs((double)kept / n - 0.75) < 0.02);
    assert_true(same < n - 1000);
    OK(k_nn_dropout_forward(cpu, ones, o1, n, 0.0f, 1, 0, &err)); /* p = 0 copies */
    for (size_t i = 0; i < n; i++)
        assert_true(o1[i] == 1.0f);
    assert_int_equal(k_nn_dropout_forward(cpu, ones, o1, n, 1.0f, 1, 0, &err), PID_ERR_ARG);
    free(ones), free(o1), free(o2);
}

/* ------------------------------------------------------------- losses */

static struct {
    float *z, *t, *loss;
    int32_t *lab;
    int n, c, kind; /* 0 integer labels, 1 soft targets, 2 sigmoid BCE */
} L;

static double loss_mean(void)
{
    if (L.kind == 0) OK(k_nn_softmax_xent(cpu, L.z, L.lab, L.loss, NULL, L.n, L.c, &err));
    if (L.kind == 1) OK(k_nn_softmax_xent_soft(cpu, L.z, L.t, L.loss, NULL, L.n, L.c, &err));
    if (L.kind == 2) OK(k_nn_sigmoid_bce(cpu, L.z, L.t, L.loss, NULL, L.n, L.c, &err));
    double s = 0.0;
    for (int i = 0; i < L.n; i++)
        s += L.loss[i];
    return s / L.n;
}

static void test_loss(void **state)
{
    /* Hand cases: CE = -log p_label; BCE at z = 0 is log 2 per class;
     * softmax of [0, ln 2] is [1/3, 2/3] at T = 1, [1, sqrt 2]/(1 + sqrt 2) at T = 2. */
    float z[3] = {1, 2, 3}, loss[2], dz[3], p[2];
    int32_t lab = 2;
    OK(k_nn_softmax_xent(cpu, z, &lab, loss, dz, 1, 3, &err));
    double lse = log(exp(1.0) + exp(2.0) + exp(3.0));
    assert_float_equal(loss[0], lse - 3.0, 1e-6);
    assert_float_equal(dz[2], exp(3.0 - lse) - 1.0, 1e-6);
    float t_half[3] = {0.5f, 0.5f, 0.0f}; /* soft: -(log p1 + log p2) / 2 */
    OK(k_nn_softmax_xent_soft(cpu, z, t_half, loss, dz, 1, 3, &err));
    assert_float_equal(loss[0], lse - 1.5, 1e-6);
    assert_float_equal(dz[0], exp(1.0 - lse) - 0.5, 1e-6);
    lab = 3;
    assert_int_equal(k_nn_softmax_xent(cpu, z, &lab, loss, dz, 1, 3, &err), PID_ERR_ARG);
    float z0[2] = {0, 0}, t1[2] = {1, 0};
    OK(k_nn_sigmoid_bce(cpu, z0, t1, loss, NULL, 1, 2, &err));
    assert_float_equal(loss[0], 2.0 * log(2.0), 1e-6);
    float zs[2] = {0, (float)log(2.0)};
    OK(k_nn_softmax(cpu, zs, p, 1, 2, 1.0f, &err));
    assert_float_equal(p[0], 1.0 / 3.0, 1e-6);
    assert_float_equal(p[1], 2.0 / 3.0, 1e-6);
    OK(k_nn_softmax(cpu, zs, p, 1, 2, 2.0f, &err));
    assert_float_equal(p[0], 1.0 / (1.0 + sqrt(2.0)), 1e-6);
    assert_int_equal(k_nn_softmax(cpu, zs, p, 1, 2, 0.0f, &err), PID_ERR_ARG);

    L.n = 4, L.c = 5;
    size_t nc = (size_t)L.n * L.c;
    L.z = rnd(nc, 20, -3, 3), L.t = rnd(nc, 21, 0, 1), L.loss = malloc(sizeof(float) * L.n);
    float *soft = rnd(nc, 22, 0.1f, 1), *g = malloc(sizeof(float) * nc);
    for (int i = 0; i < L.n; i++) { /* normalise soft-target rows to sum 1 */
        double s = 0.0;
        for (int j = 0; j < L.c; j++)
            s += soft[i * L.c + j];
        for (int j = 0; j < L.c; j++)
            soft[i * L.c + j] = (float)(soft[i * L.c + j] / s);
    }
    int32_t labs[4] = {0, 4, 2, 1};
    L.lab = labs;
    L.kind = 0;
    OK(k_nn_softmax_xent(cpu, L.z, L.lab, L.loss, g, L.n, L.c, &err));
    check_grad("xent dlogits", loss_mean, L.z, nc, g);
    float *bce_t = L.t;
    L.t = soft, L.kind = 1;
    OK(k_nn_softmax_xent_soft(cpu, L.z, L.t, L.loss, g, L.n, L.c, &err));
    check_grad("xent soft dlogits", loss_mean, L.z, nc, g);
    L.t = bce_t, L.kind = 2;
    OK(k_nn_sigmoid_bce(cpu, L.z, L.t, L.loss, g, L.n, L.c, &err));
    check_grad("bce dlogits", loss_mean, L.z, nc, g);
    free(L.z), free(L.t), free(L.loss), free(soft), free(g);
}

/* -------------------------------------------------------------- AdamW */

static void test_adamw(void **state)
{
    /* Two steps, p0 = 1, g = 0.5 then -0.25, lr 0.1, betas (0.9, 0.999),
     * eps 1e-8, wd 0.01; expected values worked out by hand (in double):
     * step 1: p = 0.999 - 0.1 * 0.5 / (0.5 + 1e-8) = 0.899000002,
     * step 2: m = 0.02, v = 3.1225e-4, p = 0.8714672987. Bounds allow for
     * float rounding of the settings: 1 - 0.999f is 1.3e-5 (relative) off
     * 0.001, which moves v by about 3e-9. */
    k_nn_adamw hp = {0.1f, 0.9f, 0.999f, 1e-8f, 0.01f};
    float p = 1.0f, m = 0.0f, v = 0.0f, g = 0.5f;
    OK(k_nn_adamw_step(cpu, &hp, 1, &p, &g, &m, &v, 1, &err));
    assert_float_equal(p, 0.899000002, 2e-7);
    assert_float_equal(m, 0.05, 1e-7);
    assert_float_equal(v, 2.5e-4, 1e-8);
    g = -0.25f;
    OK(k_nn_adamw_step(cpu, &hp, 2, &p, &g, &m, &v, 1, &err));
    assert_float_equal(p, 0.8714672987, 5e-7);
    assert_float_equal(m, 0.02, 1e-7);
    assert_float_equal(v, 3.1225e-4, 1e-8);
    assert_int_equal(k_nn_adamw_step(cpu, &hp, 0, &p, &g, &m, &v, 1, &err), PID_ERR_ARG);
}

/* -------------------------------------------------------- convolution */

static struct {
    k_nn_conv s;
    float *x, *w, *b, *y, *r, *work;
} C;

static double conv_loss(void)
{
    OK(k_nn_conv_forward(cpu, &C.s, C.x, C.w, C.b, C.y, C.work, &err));
    int ho, wo;
    OK(k_nn_conv_out(&C.s, &ho, &wo, &err));
    return dot(C.y, C.r, (size_t)C.s.n * C.s.c_out * ho * wo);
}

static void conv_fd(const char *tag, k_nn_conv s)
{
    int ho, wo;
    OK(k_nn_conv_out(&s, &ho, &wo, &err));
    size_t nx = (size_t)s.n * s.c_in * s.h_in * s.w_in,
           nw = (size_t)s.c_out * s.c_in * s.k_h * s.k_w;
    size_t ny = (size_t)s.n * s.c_out * ho * wo;
    C.s = s;
    C.x = rnd(nx, 30, -1, 1), C.w = rnd(nw, 31, -1, 1), C.b = rnd(s.c_out, 32, -1, 1);
    C.y = malloc(sizeof(float) * ny), C.r = rnd(ny, 33, -1, 1);
    C.work = malloc(sizeof(float) * k_nn_conv_work_floats(&s));
    float *dx = malloc(sizeof(float) * nx), *dw = malloc(sizeof(float) * nw),
          *db = malloc(sizeof(float) * s.c_out);
    OK(k_nn_conv_backward(cpu, &s, C.x, C.w, C.r, dx, dw, db, C.work, &err));
    char name[64];
    snprintf(name, sizeof name, "%s dx", tag);
    check_grad(name, conv_loss, C.x, nx, dx);
    snprintf(name, sizeof name, "%s dw", tag);
    check_grad(name, conv_loss, C.w, nw, dw);
    snprintf(name, sizeof name, "%s db", tag);
    check_grad(name, conv_loss, C.b, s.c_out, db);
    free(C.x), free(C.w), free(C.b), free(C.y), free(C.r), free(C.work), free(dx), free(dw),
        free(db);
}

static void test_conv(void **state)
{
    /* Hand case 1: x = 1..5, kernel [1, 0, -1], pad 1: y_i = x_{i-1} - x_{i+1}. */
    float x[7] = {1, 2, 3, 4, 5, 6, 7}, k3[3] = {1, 0, -1}, y[5], work[64];
    k_nn_conv s = k_nn_conv1d_shape(1, 1, 5, 1, 3, 1, 1, 1);
    OK(k_nn_conv_forward(cpu, &s, x, k3, NULL, y, work, &err));
    float want[5] = {-2, -2, -2, -2, 4};
    for (int i = 0; i < 5; i++)
        assert_float_equal(y[i], want[i], 1e-6);
    /* Hand case 2: x = 1..7, kernel [1, 1], dilation 2, stride 2, bias 0.5:
     * y = [x0 + x2, x2 + x4, x4 + x6] + 0.5 = [4.5, 8.5, 12.5]. */
    float k2[2] = {1, 1}, b = 0.5f;
    s = k_nn_conv1d_shape(1, 1, 7, 1, 2, 2, 0, 2);
    int ho, wo;
    OK(k_nn_conv_out(&s, &ho, &wo, &err));
    assert_int_equal(wo, 3);
    OK(k_nn_conv_forward(cpu, &s, x, k2, &b, y, work, &err));
    assert_float_equal(y[0], 4.5f, 1e-6);
    assert_float_equal(y[1], 8.5f, 1e-6);
    assert_float_equal(y[2], 12.5f, 1e-6);
    /* Hand case 3 (2-D): x = 1..9 as 3x3, 2x2 kernel of ones: y = window sums
     * [12, 16, 24, 28]; with pad 1 and stride 2 the windows hold {1}, {2, 3},
     * {4, 7}, {5, 6, 8, 9}: [1, 5, 11, 28]. */
    float x9[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9}, ones[4] = {1, 1, 1, 1};
    k_nn_conv s2d = {1, 1, 3, 3, 1, 2, 2, 1, 1, 0, 0, 1, 1};
    OK(k_nn_conv_forward(cpu, &s2d, x9, ones, NULL, y, work, &err));
    assert_true(y[0] == 12 && y[1] == 16 && y[2] == 24 && y[3] == 28);
    s2d.stride_h = s2d.stride_w = 2, s2d.pad_h = s2d.pad_w = 1;
    OK(k_nn_conv_forward(cpu, &s2d, x9, ones, NULL, y, work, &err));
    assert_true(y[0] == 1 && y[1] == 5 && y[2] == 11 && y[3] == 28);
    s = k_nn_conv1d_shape(1, 1, 3, 1, 5, 1, 0, 1); /* kernel longer than input */
    assert_int_equal(k_nn_conv_forward(cpu, &s, x, k3, NULL, y, work, &err), PID_ERR_ARG);

    conv_fd("conv1d", k_nn_conv1d_shape(2, 2, 9, 3, 3, 2, 1, 2));
    k_nn_conv s2 = {2, 2, 6, 5, 3, 3, 2, 2, 1, 1, 1, 1, 1};
    s2.dil_h = 2;
    conv_fd("conv2d", s2);
}

/* ------------------------------------------------------------ pooling */

static struct {
    k_nn_pool s;
    float *x, *y, *r;
    int32_t *am;
    int kind; /* 0 max, 1 average, 2 global average */
} P;

static double pool_loss(void)
{
    int ho, wo;
    OK(k_nn_pool_out(&P.s, &ho, &wo, &err));
    size_t ny = (size_t)P.s.n * P.s.c * ho * wo;
    if (P.kind == 0) OK(k_nn_maxpool_forward(cpu, &P.s, P.x, P.y, P.am, &err));
    if (P.kind == 1) OK(k_nn_avgpool_forward(cpu, &P.s, P.x, P.y, &err));
    if (P.kind == 2) {
        OK(k_nn_global_avgpool_forward(cpu, P.x, P.y, P.s.n, P.s.c, P.s.h_in * P.s.w_in, &err));
        ny = (size_t)P.s.n * P.s.c;
    }
    return dot(P.y, P.r, ny);
}

static void test_pool(void **state)
{
    /* Hand case: x = [1, 5, 2, 2, 7, 3], k = 2, stride 2: max [5, 2, 7] at
     * [1, 2 (first of a tie), 4]; average [3, 2, 5]; global mean 20/6. */
    float x[6] = {1, 5, 2, 2, 7, 3}, y[3], dx[6], dy[3] = {1, 2, 3};
    int32_t am[3];
    k_nn_pool s = k_nn_pool1d_shape(1, 1, 6, 2, 2);
    OK(k_nn_maxpool_forward(cpu, &s, x, y, am, &err));
    assert_true(y[0] == 5 && y[1] == 2 && y[2] == 7);
    assert_true(am[0] == 1 && am[1] == 2 && am[2] == 4);
    OK(k_nn_maxpool_backward(cpu, &s, dy, am, dx, &err));
    assert_true(dx[0] == 0 && dx[1] == 1 && dx[2] == 2 && dx[3] == 0 && dx[4] == 3 && dx[5] == 0);
    OK(k_nn_avgpool_forward(cpu, &s, x, y, &err));
    assert_true(y[0] == 3 && y[1] == 2 && y[2] == 5);
    OK(k_nn_global_avgpool_forward(cpu, x, y, 1, 1, 6, &err));
    assert_float_equal(y[0], 20.0 / 6.0, 1e-6);

    /* 2-D, overlapping windows (k 3, stride 2); distinct values spaced by
     * more than 2 FD_EPS so the perturbation never moves an argmax. */
    k_nn_pool s2 = {2, 2, 7, 6, 3, 2, 2, 2};
    int ho, wo;
    OK(k_nn_pool_out(&s2, &ho, &wo, &err));
    size_t nx = (size_t)2 * 2 * 7 * 6, ny = (size_t)2 * 2 * ho * wo;
    P.s = s2;
    P.x = malloc(sizeof(float) * nx), P.y = malloc(sizeof(float) * nx);
    P.r = rnd(nx, 41, -1, 1), P.am = malloc(sizeof(int32_t) * ny);
    pid_rng g;
    pid_rng_init(&g, 5, 5);
    for (size_t i = 0; i < nx; i++) /* a shuffled ramp 0.01 apart */
        P.x[i] = 0.01f * (float)i;
    for (size_t i = nx - 1; i > 0; i--) {
        size_t j = pid_rng_below(&g, (uint32_t)(i + 1));
        float t = P.x[i];
        P.x[i] = P.x[j], P.x[j] = t;
    }
    float *gx = malloc(sizeof(float) * nx);
    const char *names[3] = {"maxpool2d dx", "avgpool2d dx", "global avg dx"};
    for (P.kind = 0; P.kind < 3; P.kind++) {
        pool_loss(); /* fills argmax */
        if (P.kind == 0) OK(k_nn_maxpool_backward(cpu, &s2, P.r, P.am, gx, &err));
        if (P.kind == 1) OK(k_nn_avgpool_backward(cpu, &s2, P.r, gx, &err));
        if (P.kind == 2) OK(k_nn_global_avgpool_backward(cpu, P.r, gx, 2, 2, 42, &err));
        check_grad(names[P.kind], pool_loss, P.x, nx, gx);
    }
    s2.k_h = 8;
    assert_int_equal(k_nn_avgpool_forward(cpu, &s2, P.x, P.y, &err), PID_ERR_ARG);
    free(P.x), free(P.y), free(P.r), free(P.am), free(gx);
}

/* --------------------------------------------- conv against direct sums */

/* y, dx, dw, db of a convolution by its definition, in double. */
static void conv_direct(const k_nn_conv *s, const float *x, const float *w, const float *b,
                        const float *dy, double *y, double *dx, double *dw, double *db)
{
    int ho, wo;
    OK(k_nn_conv_out(s, &ho, &wo, &err));
    const size_t nx = (size_t)s->n * s->c_in * s->h_in * s->w_in,
                 nw = (size_t)s->c_out * s->c_in * s->k_h * s->k_w;
    memset(dx, 0, sizeof(double) * nx);
    memset(dw, 0, sizeof(double) * nw);
    for (int o = 0; o < s->c_out; o++)
        db[o] = 0.0;
    for (int n = 0; n < s->n; n++)
        for (int o = 0; o < s->c_out; o++)
            for (int oh = 0; oh < ho; oh++)
                for (int ow = 0; ow < wo; ow++) {
                    const size_t yi = (((size_t)n * s->c_out + o) * ho + oh) * wo + ow;
                    double acc = b[o];
                    db[o] += dy[yi];
                    for (int c = 0; c < s->c_in; c++)
                        for (int i = 0; i < s->k_h; i++)
                            for (int j = 0; j < s->k_w; j++) {
                                int h = oh * s->stride_h - s->pad_h + i * s->dil_h;
                                int v = ow * s->stride_w - s->pad_w + j * s->dil_w;
                                if (h < 0 || h >= s->h_in || v < 0 || v >= s->w_in) continue;
                                size_t xi = (((size_t)n * s->c_in + c) * s->h_in + h) * s->w_in + v;
                                size_t wi = (((size_t)o * s->c_in + c) * s->k_h + i) * s->k_w + j;
                                acc += (double)w[wi] * x[xi];
                                dx[xi] += (double)w[wi] * dy[yi];
                                dw[wi] += (double)x[xi] * dy[yi];
                            }
                    y[yi] = acc;
                }
}

/* max |a - ref| <= tol max |ref| */
static void assert_close(const char *what, const float *a, const double *ref, size_t n, double tol)
{
    double worst = 0.0, scale = 0.0;
    for (size_t i = 0; i < n; i++) {
        worst = fmax(worst, fabs(a[i] - ref[i]));
        scale = fmax(scale, fabs(ref[i]));
    }
    if (!(worst <= tol * scale))
        fail_msg("%s: max |diff| %.3g vs max |ref| %.3g (tol %.1g)", what, worst, scale, tol);
}

static pid_backend *par; /* all online cores */

/* Forward and backward against conv_direct on shapes that put the padding
 * before, after and beyond every kernel tap (the im2col / col2im edges), on
 * one thread and on all, which must agree bit for bit. */
static void test_conv_direct(void **state)
{
    const k_nn_conv shapes[] = {
        k_nn_conv1d_shape(3, 2, 11, 3, 3, 1, 1, 1),
        k_nn_conv1d_shape(2, 1, 40, 4, 9, 2, 4, 1), /* the XRD net's first layer, smaller */
        k_nn_conv1d_shape(2, 2, 5, 2, 3, 1, 6, 1),  /* padding wider than the input */
        k_nn_conv1d_shape(2, 2, 20, 3, 4, 3, 2, 3), /* stride 3, dilation 3 */
        {2, 2, 6, 7, 3, 3, 2, 2, 1, 1, 2, 1, 2},
        {1, 1, 3, 3, 2, 2, 3, 1, 2, 3, 4, 1, 1},
        k_nn_conv1d_shape(64, 4, 300, 20, 5, 1, 2, 1), /* threads; 20 = 2.5 blocks of dw rows */
    };
    for (size_t t = 0; t < sizeof shapes / sizeof shapes[0]; t++) {
        const k_nn_conv s = shapes[t];
        int ho, wo;
        OK(k_nn_conv_out(&s, &ho, &wo, &err));
        const size_t nx = (size_t)s.n * s.c_in * s.h_in * s.w_in,
                     nw = (size_t)s.c_out * s.c_in * s.k_h * s.k_w,
                     ny = (size_t)s.n * s.c_out * ho * wo;
        float *x = rnd(nx, 60 + t, -1, 1), *w = rnd(nw, 70 + t, -1, 1),
              *b = rnd(s.c_out, 80 + t, -1, 1), *dy = rnd(ny, 90 + t, -1, 1);
        float *work = malloc(FB(k_nn_conv_work_floats(&s)));
        float *y[2], *dx[2], *dw[2], *db[2];
        for (int k = 0; k < 2; k++) {
            y[k] = malloc(FB(ny)), dx[k] = malloc(FB(nx)), dw[k] = malloc(FB(nw));
            db[k] = malloc(FB(s.c_out));
            pid_backend *be = k ? par : cpu;
            OK(k_nn_conv_forward(be, &s, x, w, b, y[k], work, &err));
            OK(k_nn_conv_backward(be, &s, x, w, dy, dx[k], dw[k], db[k], work, &err));
        }
        double *ry = malloc(sizeof(double) * ny), *rdx = malloc(sizeof(double) * nx),
               *rdw = malloc(sizeof(double) * nw), *rdb = malloc(sizeof(double) * s.c_out);
        conv_direct(&s, x, w, b, dy, ry, rdx, rdw, rdb);
        char name[64];
        /* float sums of up to 2 x 10^4 products (dw of the last shape) */
        snprintf(name, sizeof name, "conv shape %zu y", t);
        assert_close(name, y[0], ry, ny, 1e-5);
        snprintf(name, sizeof name, "conv shape %zu dx", t);
        assert_close(name, dx[0], rdx, nx, 1e-5);
        snprintf(name, sizeof name, "conv shape %zu dw", t);
        assert_close(name, dw[0], rdw, nw, 1e-5);
        snprintf(name, sizeof name, "conv shape %zu db", t);
        assert_close(name, db[0], rdb, s.c_out, 1e-6);
        assert_memory_equal(y[0], y[1], FB(ny));
        assert_memory_equal(dx[0], dx[1], FB(nx));
        assert_memory_equal(dw[0], dw[1], FB(nw));
        assert_memory_equal(db[0], db[1], FB(s.c_out));
        for (int k = 0; k < 2; k++)
            free(y[k]), free(dx[k]), free(dw[k]), free(db[k]);
        free(x), free(w), free(b), free(dy), free(work), free(ry), free(rdx), free(rdw), free(rdb);
    }
}

/* ------------------------------------------------ thread independence */

/* The CPU kernels split their loops over threads (kernels/par.h): on inputs
 * large enough to be split, one thread and all of them give identical bits. */
static void test_threads(void **state)
{
    if (pid_backend_threads(par) < 2) {
        printf("(one CPU online: nothing to compare one thread with)\n");
        return;
    }
    pid_backend *be[2] = {cpu, par};
    const size_t n = 300000;
    float *x = rnd(n, 100, -2, 2), *g = rnd(n, 101, -1, 1), *o[2];
    for (int k = 0; k < 2; k++)
        o[k] = malloc(FB(n));
#define SAME(call)                                                                                 \
    do {                                                                                           \
        for (int k = 0; k < 2; k++) {                                                              \
            pid_backend *b_ = be[k];                                                               \
            float *out = o[k];                                                                     \
            OK(call);                                                                              \
        }                                                                                          \
        assert_memory_equal(o[0], o[1], FB(n));                                                    \
    } while (0)
    SAME(k_nn_relu_forward(b_, x, out, n, &err));
    SAME(k_nn_relu_backward(b_, x, g, out, n, &err));
    SAME(k_nn_gelu_forward(b_, x, out, n, &err));
    SAME(k_nn_gelu_backward(b_, x, g, out, n, &err));
    SAME(k_nn_add(b_, x, g, out, n, &err));
    SAME(k_nn_dropout_forward(b_, x, out, n, 0.2f, 5, 9, &err));
    SAME(k_nn_dropout_backward(b_, g, out, n, 0.2f, 5, 9, &err));

    /* pools: 1-D pairs (the vector path) and 2-D overlapping windows */
    k_nn_pool ps[2] = {k_nn_pool1d_shape(50, 6, 1000, 2, 2), {20, 5, 30, 100, 3, 3, 2, 2}};
    for (int q = 0; q < 2; q++) {
        int ho, wo;
        OK(k_nn_pool_out(&ps[q], &ho, &wo, &err));
        const size_t ny = (size_t)ps[q].n * ps[q].c * ho * wo;
        int32_t *am[2] = {malloc(sizeof(int32_t) * ny), malloc(sizeof(int32_t) * ny)};
        for (int k = 0; k < 2; k++)
            OK(k_nn_maxpool_forward(be[k], &ps[q], x, o[k], am[k], &err));
        assert_memory_equal(o[0], o[1], FB(ny));
        assert_memory_equal(am[0], am[1], sizeof(int32_t) * ny);
        for (int k = 0; k < 2; k++)
            OK(k_nn_maxpool_backward(be[k], &ps[q], g, am[0], o[k], &err));
        assert_memory_equal(o[0], o[1], FB((size_t)ps[q].n * ps[q].c * ps[q].h_in * ps[q].w_in));
        SAME(k_nn_avgpool_forward(b_, &ps[q], x, out, &err));
        SAME(k_nn_avgpool_backward(b_, &ps[q], g, out, &err));
        free(am[0]), free(am[1]);
    }

    /* batch norm, 6 channels of 50 x 1000: training forward (and its
     * statistics, against a plain double sum), inference forward, backward */
    const int bn = 50, bc = 6, bl = 1000;
    float *gamma = rnd(bc, 102, 0.5f, 1.5f), *beta = rnd(bc, 103, -1, 1);
    float mean[2][6], rstd[2][6], rm[2][6], rv[2][6], dgam[2][6], dbet[2][6];
    for (int k = 0; k < 2; k++) {
        for (int c = 0; c < bc; c++)
            rm[k][c] = 0.1f * c, rv[k][c] = 1.0f + 0.1f * c;
        OK(k_nn_batchnorm_forward_train(be[k], x, gamma, beta, o[k], bn, bc, bl, 1e-5f, 0.1f, rm[k],
                                        rv[k], mean[k], rstd[k], &err));
    }
    assert_memory_equal(o[0], o[1], FB((size_t)bn * bc * bl));
    assert_memory_equal(mean[0], mean[1], sizeof mean[0]);
    assert_memory_equal(rstd[0], rstd[1], sizeof rstd[0]);
    assert_memory_equal(rm[0], rm[1], sizeof rm[0]);
    assert_memory_equal(rv[0], rv[1], sizeof rv[0]);
    for (int c = 0; c < bc; c++) {
        double s = 0.0, s2 = 0.0;
        for (int i = 0; i < bn; i++)
            for (int l = 0; l < bl; l++)
                s += x[((size_t)i * bc + c) * bl + l];
        const double m = s / (bn * bl);
        for (int i = 0; i < bn; i++)
            for (int l = 0; l < bl; l++) {
                double d = x[((size_t)i * bc + c) * bl + l] - m;
                s2 += d * d;
            }
        assert_float_equal(mean[0][c], m, 1e-6);
        assert_float_equal(rstd[0][c], 1.0 / sqrt(s2 / (bn * bl) + 1e-5), 1e-5);
    }
    SAME(k_nn_batchnorm_forward_infer(b_, x, gamma, beta, rm[0], rv[0], out, bn, bc, bl, 1e-5f,
                                      &err));
    for (int k = 0; k < 2; k++)
        OK(k_nn_batchnorm_backward(be[k], x, gamma, mean[0], rstd[0], g, o[k], dgam[k], dbet[k], bn,
                                   bc, bl, &err));
    assert_memory_equal(o[0], o[1], FB((size_t)bn * bc * bl));
    assert_memory_equal(dgam[0], dgam[1], sizeof dgam[0]);
    assert_memory_equal(dbet[0], dbet[1], sizeof dbet[0]);

    /* AdamW over 300000 parameters */
    const k_nn_adamw hp = {1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f};
    float *m[2] = {calloc(n, sizeof(float)), calloc(n, sizeof(float))},
          *v[2] = {calloc(n, sizeof(float)), calloc(n, sizeof(float))};
    for (int k = 0; k < 2; k++) {
        memcpy(o[k], x, FB(n));
        for (int t = 1; t <= 3; t++)
            OK(k_nn_adamw_step(be[k], &hp, t, o[k], g, m[k], v[k], n, &err));
    }
    assert_memory_equal(o[0], o[1], FB(n));
    assert_memory_equal(v[0], v[1], FB(n));
#undef SAME
    for (int k = 0; k < 2; k++)
        free(o[k]), free(m[k]), free(v[k]);
    free(x), free(g), free(gamma), free(beta);
}

/* --------------------------------------------------------- batch norm */

static struct {
    float *x, *gamma, *beta, *y, *r, mean[8], rstd[8];
    int n, c, l;
} B;

static double bn_loss(void)
{
    OK(k_nn_batchnorm_forward_train(cpu, B.x, B.gamma, B.beta, B.y, B.n, B.c, B.l, 1e-5f, 0.1f,
                                    NULL, NULL, B.mean, B.rstd, &err));
    return dot(B.y, B.r, (size_t)B.n * B.c * B.l);
}

static void test_batchnorm(void **state)
{
    /* Hand case: one channel, x = [1, 3]: mean 2, biased var 1, unbiased 2;
     * y = gamma (x - 2) / sqrt(1 + eps) + beta; running stats from (0, 1)
     * with momentum 0.1: mean 0.2, var 0.9 + 0.2 = 1.1. */
    float x[2] = {1, 3}, y[2], gm = 2.0f, bt = 0.5f, rm = 0.0f, rv = 1.0f, sm, sr;
    OK(k_nn_batchnorm_forward_train(cpu, x, &gm, &bt, y, 2, 1, 1, 1e-5f, 0.1f, &rm, &rv, &sm, &sr,
                                    &err));
    assert_float_equal(y[0], 0.5 - 2.0 / sqrt(1.0 + 1e-5), 1e-6);
    assert_float_equal(y[1], 0.5 + 2.0 / sqrt(1.0 + 1e-5), 1e-6);
    assert_float_equal(rm, 0.2, 1e-7);
    assert_float_equal(rv, 1.1, 1e-6);

    B.n = 3, B.c = 2, B.l = 4;
    size_t nx = (size_t)B.n * B.c * B.l;
    B.x = rnd(nx, 50, -2, 2), B.gamma = rnd(2, 51, 0.5f, 1.5f), B.beta = rnd(2, 52, -1, 1);
    B.y = malloc(sizeof(float) * nx), B.r = rnd(nx, 53, -1, 1);
    float *dx = malloc(sizeof(float) * nx), dg[2], dbt[2];
    bn_loss();
    OK(k_nn_batchnorm_backward(cpu, B.x, B.gamma, B.mean, B.rstd, B.r, dx, dg, dbt, B.n, B.c, B.l,
                               &err));
    check_grad("batchnorm dx", bn_loss, B.x, nx, dx);
    check_grad("batchnorm dgamma", bn_loss, B.gamma, 2, dg);
    check_grad("batchnorm dbeta", bn_loss, B.beta, 2, dbt);
    free(B.x), free(B.gamma), free(B.beta), free(B.y), free(B.r), free(dx);
}

static void test_bn_fold(void **state)
{
    /* conv1d (2 -> 3 channels, k 3, pad 1) then inference BN equals the
     * folded conv alone within 1e-5 (absolute, outputs are O(1)). */
    k_nn_conv s = k_nn_conv1d_shape(2, 2, 10, 3, 3, 1, 1, 1);
    size_t nx = 40, nw = 18, ny = 60;
    float *x = rnd(nx, 60, -1, 1), *w = rnd(nw, 61, -1, 1), *b = rnd(3, 62, -1, 1);
    float *gm = rnd(3, 63, 0.5f, 2), *bt = rnd(3, 64, -1, 1), *rm = rnd(3, 65, -0.5f, 0.5f);
    float *rv = rnd(3, 66, 0.2f, 2);
    float *y1 = malloc(sizeof(float) * ny), *y2 = malloc(sizeof(float) * ny);
    float *work = malloc(sizeof(float) * k_nn_conv_work_floats(&s));
    OK(k_nn_conv_forward(cpu, &s, x, w, b, y1, work, &err));
    OK(k_nn_batchnorm_forward_infer(cpu, y1, gm, bt, rm, rv, y1, 2, 3, 10, 1e-5f, &err));
    OK(k_nn_batchnorm_fold(cpu, w, b, gm, bt, rm, rv, 1e-5f, 3, 6, &err));
    OK(k_nn_conv_forward(cpu, &s, x, w, b, y2, work, &err));
    for (size_t i = 0; i < ny; i++)
        assert_float_equal(y1[i], y2[i], 1e-5);
    free(x), free(w), free(b), free(gm), free(bt), free(rm), free(rv), free(y1), free(y2),
        free(work);
}

/* ------------------------------------------------------ fused inference ops */

static double rel_err(const float *a, const float *ref, size_t n)
{
    double md = 0.0, mr = 0.0;
    for (size_t i = 0; i < n; i++) {
        md = fmax(md, fabs((double)a[i] - ref[i]));
        mr = fmax(mr, fabs((double)ref[i]));
    }
    return md / fmax(mr, 1e-30);
}

static void ref_act(k_nn_act act, float *y, size_t n)
{
    if (act == K_NN_ACT_RELU) OK(k_nn_relu_forward(cpu, y, y, n, &err));
    if (act == K_NN_ACT_GELU) OK(k_nn_gelu_forward(cpu, y, y, n, &err));
}

/* Reference for the fused conv: k_nn_conv_forward, + residual, activation,
 * then k_nn_maxpool_forward (window = stride = pool), k_nn_global_avgpool_
 * forward (pool 0) or nothing (pool 1), into yp. */
static void fused_reference(k_nn_conv s, const float *x, const float *w, const float *b,
                            const float *res, k_nn_act act, int pool, float *y, float *yp)
{
    int ho, wo;
    OK(k_nn_conv_out(&s, &ho, &wo, &err));
    size_t ny = (size_t)s.n * s.c_out * ho * wo;
    float *work = malloc(FB(k_nn_conv_work_floats(&s)));
    int32_t *am = malloc(sizeof(int32_t) * ny);
    OK(k_nn_conv_forward(cpu, &s, x, w, b, y, work, &err));
    if (res) OK(k_nn_add(cpu, y, res, y, ny, &err));
    ref_act(act, y, ny);
    if (pool > 1) {
        k_nn_pool ps = k_nn_pool1d_shape(s.n * s.c_out, 1, wo, pool, pool);
        OK(k_nn_maxpool_forward(cpu, &ps, y, yp, am, &err));
    } else if (pool == K_NN_POOL_GLOBAL_AVG) {
        OK(k_nn_global_avgpool_forward(cpu, y, yp, s.n, s.c_out, ho * wo, &err));
    } else {
        memcpy(yp, y, FB(ny));
    }
    free(work), free(am);
}

/* The fused conv on backend `be` (with and without bias and residual)
 * against fused_reference. */
static void fused_conv_case(pid_backend *be, const char *tag, k_nn_conv s, k_nn_act act, int pool)
{
    int ho, wo;
    OK(k_nn_conv_out(&s, &ho, &wo, &err));
    size_t nx = (size_t)s.n * s.c_in * s.h_in * s.w_in,
           nw = (size_t)s.c_out * s.c_in * s.k_h * s.k_w;
    size_t ny = (size_t)s.n * s.c_out * ho * wo;
    size_t np = pool == K_NN_POOL_GLOBAL_AVG ? (size_t)s.n * s.c_out
                                             : (size_t)s.n * s.c_out * ho * (wo / pool);
    float *x = rnd(nx, 130, -1, 1), *w = rnd(nw, 131, -1, 1), *b = rnd(s.c_out, 132, -1, 1);
    float *res = rnd(ny, 133, -1, 1);
    float *y = malloc(FB(ny)), *yp = malloc(FB(np)), *yf = malloc(FB(np) + 4);
    float *fwork = malloc(FB(k_nn_conv_fused_work_floats(&s, pool)));
    double worst = 0.0;
    for (int v = 0; v < 3; v++) {
        const float *bv = v == 1 ? NULL : b, *rv = v == 2 ? res : NULL;
        fused_reference(s, x, w, bv, rv, act, pool, y, yp);
        yf[np] = 12345.0f; /* guard: nothing written past the output */
        OK(k_nn_conv_forward_fused(be, &s, x, w, bv, rv, act, pool, yf, fwork, &err));
        double e = rel_err(yf, yp, np);
        worst = fmax(worst, e);
        if (!(e <= FUSED_TOL))
            fail_msg("fused conv %s (%s, bias %d, residual %d): relative error %.3g", tag,
                     pid_cpu_isa_name(pid_backend_cpu_isa(be)), bv != NULL, rv != NULL, e);
        assert_true(yf[np] == 12345.0f);
    }
    printf("  fused conv %-12s %-7s act %d pool %d: rel %.2e\n", tag,
           pid_cpu_isa_name(pid_backend_cpu_isa(be)), (int)act, pool, worst);
    free(x), free(w), free(b), free(res), free(y), free(yp), free(yf), free(fwork);
}

static void fused_dense_case(pid_backend *be, int n, int in, int out, k_nn_act act, int bias)
{
    float *x = rnd((size_t)n * in, 140, -1, 1), *w = rnd((size_t)out * in, 141, -1, 1);
    float *b = bias ? rnd(out, 142, -1, 1) : NULL;
    float *y = malloc(FB(n * out)), *yf = malloc(FB(n * out));
    OK(k_nn_dense_forward(cpu, x, w, b, y, n, in, out, &err));
    ref_act(act, y, (size_t)n * out);
    OK(k_nn_dense_forward_fused(be, x, w, b, act, yf, n, in, out, &err));
    double e = rel_err(yf, y, (size_t)n * out);
    if (!(e <= FUSED_TOL))
        fail_msg("fused dense n=%d in=%d out=%d act %d (%s): relative error %.3g", n, in, out,
                 (int)act, pid_cpu_isa_name(pid_backend_cpu_isa(be)), e);
    free(x), free(w), free(b), free(y), free(yf);
}

static void test_fused(void **state)
{
    /* Hand case: kernel [1, 0, -1], pad 1, ReLU: max(x_{i-1} - x_{i+1}, 0)
     * = [0, 0, 0, 0, 4]; with max pool 2: [0, 0]. */
    float x[5] = {1, 2, 3, 4, 5}, k3[3] = {1, 0, -1}, y[5];
    k_nn_conv s = k_nn_conv1d_shape(1, 1, 5, 1, 3, 1, 1, 1);
    float *work = malloc(FB(k_nn_conv_fused_work_floats(&s, 1)));
    OK(k_nn_conv_forward_fused(cpu, &s, x, k3, NULL, NULL, K_NN_ACT_RELU, 1, y, work, &err));
    assert_true(y[0] == 0 && y[1] == 0 && y[2] == 0 && y[3] == 0 && y[4] == 4);
    OK(k_nn_conv_forward_fused(cpu, &s, x, k3, NULL, NULL, K_NN_ACT_NONE, 2, y, work, &err));
    assert_true(y[0] == -2 && y[1] == -2);
    /* Refusals: pooling a 2-D shape, a pool wider than the output, an
     * unknown activation, sizes. */
    k_nn_conv s2d = {1, 1, 3, 3, 1, 2, 2, 1, 1, 0, 0, 1, 1};
    assert_int_equal(k_nn_conv_fused_work_floats(&s2d, 2), 0);
    assert_int_equal(
        k_nn_conv_forward_fused(cpu, &s2d, x, k3, NULL, NULL, K_NN_ACT_NONE, 2, y, work, &err),
        PID_ERR_ARG);
    assert_int_equal(
        k_nn_conv_forward_fused(cpu, &s, x, k3, NULL, NULL, K_NN_ACT_NONE, 6, y, work, &err),
        PID_ERR_ARG);
    assert_int_equal(
        k_nn_conv_forward_fused(cpu, &s, x, k3, NULL, NULL, (k_nn_act)7, 1, y, work, &err),
        PID_ERR_ARG);
    assert_int_equal(k_nn_dense_forward_fused(cpu, x, k3, NULL, K_NN_ACT_NONE, y, 0, 3, 1, &err),
                     PID_ERR_ARG);
    free(work);

    /* Every vector level this CPU has, against the reference ops. */
    for (int isa = PID_CPU_ISA_GENERIC; isa <= PID_CPU_ISA_AVX512; isa++) {
        pid_backend *be = NULL;
        OK(pid_backend_create(&be, "cpu", 1, &err));
        if ((int)pid_backend_set_cpu_isa(be, (pid_cpu_isa)isa) != isa) {
            printf("  fused ops: %s not supported here, skipped\n",
                   pid_cpu_isa_name((pid_cpu_isa)isa));
            pid_backend_destroy(be);
            continue;
        }
        /* First layer of an XRD net: 1 channel, stride 2, fused pool. */
        fused_conv_case(be, "c1 s2", k_nn_conv1d_shape(3, 1, 301, 16, 9, 2, 4, 1), K_NN_ACT_RELU,
                        2);
        /* Odd everything: even kernel, stride 3, dilation 2, pool 3, GELU,
         * c_out not a multiple of 8. */
        fused_conv_case(be, "s3 d2", k_nn_conv1d_shape(2, 5, 97, 11, 4, 3, 1, 2), K_NN_ACT_GELU, 3);
        /* Stride 1, 1x1, no activation; short rows (5 and 2 outputs). */
        fused_conv_case(be, "k1", k_nn_conv1d_shape(2, 16, 64, 24, 1, 1, 0, 1), K_NN_ACT_NONE, 1);
        fused_conv_case(be, "short", k_nn_conv1d_shape(2, 7, 5, 3, 3, 1, 1, 1), K_NN_ACT_RELU, 1);
        fused_conv_case(be, "tiny", k_nn_conv1d_shape(1, 2, 3, 9, 2, 1, 0, 1), K_NN_ACT_RELU, 2);
        /* Rows of 109 and 54 (tile choice), 64 channels in. */
        fused_conv_case(be, "w109", k_nn_conv1d_shape(2, 64, 109, 16, 3, 1, 1, 1), K_NN_ACT_RELU,
                        1);
        fused_conv_case(be, "w54", k_nn_conv1d_shape(2, 32, 54, 20, 3, 1, 1, 1), K_NN_ACT_RELU, 2);
        /* Global average pooling (1-D; 2-D below). */
        fused_conv_case(be, "gavg", k_nn_conv1d_shape(3, 6, 77, 10, 3, 1, 1, 1), K_NN_ACT_RELU,
                        K_NN_POOL_GLOBAL_AVG);
        /* 2-D with stride, padding and dilation in h. */
        k_nn_conv c2 = {2, 3, 13, 11, 5, 3, 3, 2, 2, 1, 1, 2, 1};
        fused_conv_case(be, "2d", c2, K_NN_ACT_RELU, 1);
        fused_conv_case(be, "2d gavg", c2, K_NN_ACT_GELU, K_NN_POOL_GLOBAL_AVG);
        fused_dense_case(be, 7, 37, 11, K_NN_ACT_RELU, 1);
        fused_dense_case(be, 4, 64, 8, K_NN_ACT_NONE, 0);
        fused_dense_case(be, 1, 5, 3, K_NN_ACT_GELU, 1);
        fused_dense_case(be, 9, 300, 83, K_NN_ACT_NONE, 1);
        pid_backend_destroy(be);
    }
}

/* ------------------------------------------------------ CUDA parity */

static pid_backend *gpu;

/* A device copy of host data (or of n zero bytes when h is NULL). */
static void *dev(const void *h, size_t bytes)
{
    void *d = NULL;
    OK(pid_backend_alloc(gpu, &d, bytes ? bytes : 4, &err));
    if (h) {
        OK(pid_backend_upload(gpu, d, h, bytes, &err));
    } else {
        void *z = calloc(1, bytes ? bytes : 4);
        OK(pid_backend_upload(gpu, d, z, bytes, &err));
        free(z);
    }
    return d;
}

/* max |cuda - cpu| / max |cpu| < PARITY_TOL; frees the device buffer. */
static void same(const char *what, void *d, const float *h, size_t n)
{
    float *g = malloc(sizeof(float) * n);
    OK(pid_backend_sync(gpu, &err));
    OK(pid_backend_download(gpu, g, d, sizeof(float) * n, &err));
    double md = 0.0, mh = 0.0;
    for (size_t i = 0; i < n; i++) {
        md = fmax(md, fabs((double)g[i] - h[i]));
        mh = fmax(mh, fabs((double)h[i]));
    }
    double rel = md / fmax(mh, 1e-30);
    printf("  parity %-20s n=%zu rel %.2e\n", what, n, rel);
    if (!(rel < PARITY_TOL)) fail_msg("%s: CPU vs CUDA relative error %.3g", what, rel);
    free(g);
    pid_backend_free(gpu, d);
}

static void parity_dense_act_loss_optim(void)
{
    int n = 33, in = 70, out = 21;
    float *x = rnd((size_t)n * in, 100, -1, 1), *w = rnd((size_t)out * in, 101, -1, 1);
    float *b = rnd(out, 102, -1, 1), *dy = rnd((size_t)n * out, 103, -1, 1);
    float *y = malloc(FB(n * out)), *dx = malloc(FB(n * in)), *dw = malloc(FB(out * in)),
          *db = malloc(FB(out));
    void *gx = dev(x, FB(n * in)), *gw = dev(w, FB(out * in)), *gb = dev(b, FB(out)),
         *gdy = dev(dy, FB(n * out));
    OK(k_nn_dense_forward(cpu, x, w, b, y, n, in, out, &err));
    OK(k_nn_dense_backward(cpu, x, w, dy, dx, dw, db, n, in, out, &err));
    void *gy = dev(NULL, FB(n * out)), *gdx = dev(NULL, FB(n * in)), *gdw = dev(NULL, FB(out * in)),
         *gdb = dev(NULL, FB(out));
    OK(k_nn_dense_forward(gpu, gx, gw, gb, gy, n, in, out, &err));
    OK(k_nn_dense_backward(gpu, gx, gw, gdy, gdx, gdw, gdb, n, in, out, &err));
    same("dense y", gy, y, (size_t)n * out);
    same("dense dx", gdx, dx, (size_t)n * in);
    same("dense dw", gdw, dw, (size_t)out * in);
    same("dense db", gdb, db, out);

    size_t m = (size_t)n * in;
    float *h1 = malloc(FB(m));
    void *g1 = dev(NULL, FB(m));
    struct {
        const char *name;
        int op;
    } ops[] = {{"relu fwd", 0}, {"relu bwd", 1},    {"gelu fwd", 2},   {"gelu bwd", 3},
               {"add", 4},      {"dropout fwd", 5}, {"dropout bwd", 6}};
    float *x2 = rnd(m, 104, -1, 1);
    void *gx2 = dev(x2, FB(m));
    for (size_t k = 0; k < sizeof ops / sizeof ops[0]; k++) {
        g1 = k ? dev(NULL, FB(m)) : g1;
        switch (ops[k].op) {
        case 0:
            OK(k_nn_relu_forward(cpu, x, h1, m, &err));
            OK(k_nn_relu_forward(gpu, gx, g1, m, &err));
            break;
        case 1:
            OK(k_nn_relu_backward(cpu, x, x2, h1, m, &err));
            OK(k_nn_relu_backward(gpu, gx, gx2, g1, m, &err));
            break;
        case 2:
            OK(k_nn_gelu_forward(cpu, x, h1, m, &err));
            OK(k_nn_gelu_forward(gpu, gx, g1, m, &err));
            break;
        case 3:
            OK(k_nn_gelu_backward(cpu, x, x2, h1, m, &err));
            OK(k_nn_gelu_backward(gpu, gx, gx2, g1, m, &err));
            break;
        case 4:
            OK(k_nn_add(cpu, x, x2, h1, m, &err));
            OK(k_nn_add(gpu, gx, gx2, g1, m, &err));
            break;
        case 5:
            OK(k_nn_dropout_forward(cpu, x, h1, m, 0.4f, 11, 5, &err));
            OK(k_nn_dropout_forward(gpu, gx, g1, m, 0.4f, 11, 5, &err));
            break;
        default:
            OK(k_nn_dropout_backward(cpu, x2, h1, m, 0.4f, 11, 5, &err));
            OK(k_nn_dropout_backward(gpu, gx2, g1, m, 0.4f, 11, 5, &err));
        }
        same(ops[k].name, g1, h1, m);
    }

    /* Losses: logits[n, out] = x2's first n*out values, scaled to +-4. */
    int c = out;
    size_t nc = (size_t)n * c;
    float *z = rnd(nc, 105, -4, 4), *t = rnd(nc, 106, 0, 1), *loss = malloc(FB(n)),
          *dz = malloc(FB(nc));
    int32_t *lab = malloc(sizeof(int32_t) * n);
    for (int i = 0; i < n; i++)
        lab[i] = (i * 7) % c;
    void *gz = dev(z, FB(nc)), *gt = dev(t, FB(nc)), *glab = dev(lab, sizeof(int32_t) * n);
    for (int kind = 0; kind < 4; kind++) {
        void *gl = dev(NULL, FB(n)), *gdz = dev(NULL, FB(nc));
        const char *nl[4] = {"xent loss", "xent soft loss", "bce loss", "softmax T=1.7"};
        const char *ng[4] = {"xent dlogits", "xent soft dlogits", "bce dlogits", ""};
        if (kind == 0) {
            OK(k_nn_softmax_xent(cpu, z, lab, loss, dz, n, c, &err));
            OK(k_nn_softmax_xent(gpu, gz, glab, gl, gdz, n, c, &err));
        } else if (kind == 1) {
            OK(k_nn_softmax_xent_soft(cpu, z, t, loss, dz, n, c, &err));
            OK(k_nn_softmax_xent_soft(gpu, gz, gt, gl, gdz, n, c, &err));
        } else if (kind == 2) {
            OK(k_nn_sigmoid_bce(cpu, z, t, loss, dz, n, c, &err));
            OK(k_nn_sigmoid_bce(gpu, gz, gt, gl, gdz, n, c, &err));
        } else {
            OK(k_nn_softmax(cpu, z, dz, n, c, 1.7f, &err));
            OK(k_nn_softmax(gpu, gz, gdz, n, c, 1.7f, &err));
        }
        if (kind < 3) {
            same(nl[kind], gl, loss, n);
            same(ng[kind], gdz, dz, nc);
        } else {
            pid_backend_free(gpu, gl);
            same(nl[kind], gdz, dz, nc);
        }
    }

    /* AdamW: three steps on random state. */
    k_nn_adamw hp = {1e-3f, 0.9f, 0.999f, 1e-8f, 0.05f};
    float *p = rnd(m, 107, -1, 1), *mm = malloc(FB(m)), *vv = malloc(FB(m));
    memset(mm, 0, FB(m)), memset(vv, 0, FB(m));
    void *gp = dev(p, FB(m)), *gm = dev(NULL, FB(m)), *gv = dev(NULL, FB(m));
    for (int st = 1; st <= 3; st++) {
        OK(k_nn_adamw_step(cpu, &hp, st, p, x2, mm, vv, m, &err));
        OK(k_nn_adamw_step(gpu, &hp, st, gp, gx2, gm, gv, m, &err));
    }
    same("adamw param", gp, p, m);
    same("adamw m", gm, mm, m);
    same("adamw v", gv, vv, m);

    pid_backend_free(gpu, gx), pid_backend_free(gpu, gw), pid_backend_free(gpu, gb);
    pid_backend_free(gpu, gdy), pid_backend_free(gpu, gx2), pid_backend_free(gpu, gz);
    pid_backend_free(gpu, gt), pid_backend_free(gpu, glab);
    free(x), free(w), free(b), free(dy), free(y), free(dx), free(dw), free(db), free(h1);
    free(x2), free(z), free(t), free(loss), free(dz), free(lab), free(p), free(mm), free(vv);
}

static void parity_conv(const char *tag, k_nn_conv s)
{
    int ho, wo;
    OK(k_nn_conv_out(&s, &ho, &wo, &err));
    size_t nx = (size_t)s.n * s.c_in * s.h_in * s.w_in,
           nw = (size_t)s.c_out * s.c_in * s.k_h * s.k_w;
    size_t ny = (size_t)s.n * s.c_out * ho * wo, nk = k_nn_conv_work_floats(&s);
    float *x = rnd(nx, 110, -1, 1), *w = rnd(nw, 111, -1, 1), *b = rnd(s.c_out, 112, -1, 1);
    float *dy = rnd(ny, 113, -1, 1), *y = malloc(FB(ny)), *dx = malloc(FB(nx)),
          *dw = malloc(FB(nw)), *db = malloc(FB(s.c_out)), *work = malloc(FB(nk));
    OK(k_nn_conv_forward(cpu, &s, x, w, b, y, work, &err));
    OK(k_nn_conv_backward(cpu, &s, x, w, dy, dx, dw, db, work, &err));
    void *gx = dev(x, FB(nx)), *gw = dev(w, FB(nw)), *gb = dev(b, FB(s.c_out)),
         *gdy = dev(dy, FB(ny)), *gwork = dev(NULL, FB(nk));
    void *gy = dev(NULL, FB(ny)), *gdx = dev(NULL, FB(nx)), *gdw = dev(NULL, FB(nw)),
         *gdb = dev(NULL, FB(s.c_out));
    OK(k_nn_conv_forward(gpu, &s, gx, gw, gb, gy, gwork, &err));
    OK(k_nn_conv_backward(gpu, &s, gx, gw, gdy, gdx, gdw, gdb, gwork, &err));
    char name[64];
    snprintf(name, sizeof name, "%s y", tag), same(name, gy, y, ny);
    snprintf(name, sizeof name, "%s dx", tag), same(name, gdx, dx, nx);
    snprintf(name, sizeof name, "%s dw", tag), same(name, gdw, dw, nw);
    snprintf(name, sizeof name, "%s db", tag), same(name, gdb, db, s.c_out);
    pid_backend_free(gpu, gx), pid_backend_free(gpu, gw), pid_backend_free(gpu, gb);
    pid_backend_free(gpu, gdy), pid_backend_free(gpu, gwork);
    free(x), free(w), free(b), free(dy), free(y), free(dx), free(dw), free(db), free(work);
}

static void parity_pool_norm(void)
{
    k_nn_pool s = {4, 3, 9, 31, 3, 4, 2, 3};
    int ho, wo;
    OK(k_nn_pool_out(&s, &ho, &wo, &err));
    size_t nx = (size_t)4 * 3 * 9 * 31, ny = (size_t)4 * 3 * ho * wo;
    float *x = rnd(nx, 120, -1, 1), *dy = rnd(ny, 121, -1, 1), *y = malloc(FB(ny)),
          *dx = malloc(FB(nx));
    int32_t *am = malloc(sizeof(int32_t) * ny);
    void *gx = dev(x, FB(nx)), *gdy = dev(dy, FB(ny)), *gam = dev(NULL, sizeof(int32_t) * ny);
    void *gy = dev(NULL, FB(ny)), *gdx = dev(NULL, FB(nx));
    OK(k_nn_maxpool_forward(cpu, &s, x, y, am, &err));
    OK(k_nn_maxpool_backward(cpu, &s, dy, am, dx, &err));
    OK(k_nn_maxpool_forward(gpu, &s, gx, gy, gam, &err));
    OK(k_nn_maxpool_backward(gpu, &s, gdy, gam, gdx, &err));
    same("maxpool y", gy, y, ny);
    same("maxpool dx", gdx, dx, nx);
    gy = dev(NULL, FB(ny)), gdx = dev(NULL, FB(nx));
    OK(k_nn_avgpool_forward(cpu, &s, x, y, &err));
    OK(k_nn_avgpool_backward(cpu, &s, dy, dx, &err));
    OK(k_nn_avgpool_forward(gpu, &s, gx, gy, &err));
    OK(k_nn_avgpool_backward(gpu, &s, gdy, gdx, &err));
    same("avgpool y", gy, y, ny);
    same("avgpool dx", gdx, dx, nx);
    gy = dev(NULL, FB(12)), gdx = dev(NULL, FB(nx));
    OK(k_nn_global_avgpool_forward(cpu, x, y, 4, 3, 279, &err));
    OK(k_nn_global_avgpool_backward(cpu, dy, dx, 4, 3, 279, &err));
    OK(k_nn_global_avgpool_forward(gpu, gx, gy, 4, 3, 279, &err));
    OK(k_nn_global_avgpool_backward(gpu, gdy, gdx, 4, 3, 279, &err));
    same("global avgpool y", gy, y, 12);
    same("global avgpool dx", gdx, dx, nx);

    /* Batch norm over x viewed as [4, 3, 279]. */
    int n = 4, c = 3, l = 279;
    float *gm = rnd(3, 122, 0.5f, 2), *bt = rnd(3, 123, -1, 1), rm[3] = {0.1f, 0, -0.1f},
          rv[3] = {1, 2, 0.5f}, sm[3], sr[3], dg[3], dbt[3];
    float *dyb = rnd(nx, 124, -1, 1), *yb = malloc(FB(nx));
    void *ggm = dev(gm, FB(3)), *gbt = dev(bt, FB(3)), *grm = dev(rm, FB(3)), *grv = dev(rv, FB(3)),
         *gsm = dev(NULL, FB(3)), *gsr = dev(NULL, FB(3));
    void *gdyb = dev(dyb, FB(nx)), *gyb = dev(NULL, FB(nx));
    OK(k_nn_batchnorm_forward_train(cpu, x, gm, bt, yb, n, c, l, 1e-5f, 0.1f, rm, rv, sm, sr,
                                    &err));
    OK(k_nn_batchnorm_forward_train(gpu, gx, ggm, gbt, gyb, n, c, l, 1e-5f, 0.1f, grm, grv, gsm,
                                    gsr, &err));
    same("bn train y", gyb, yb, nx);
    void *gdxb = dev(NULL, FB(nx)), *gdg = dev(NULL, FB(3)), *gdbt = dev(NULL, FB(3));
    OK(k_nn_batchnorm_backward(cpu, x, gm, sm, sr, dyb, dx, dg, dbt, n, c, l, &err));
    OK(k_nn_batchnorm_backward(gpu, gx, ggm, gsm, gsr, gdyb, gdxb, gdg, gdbt, n, c, l, &err));
    same("bn dx", gdxb, dx, nx);
    same("bn dgamma", gdg, dg, 3);
    same("bn dbeta", gdbt, dbt, 3);
    same("bn save mean", gsm, sm, 3);
    same("bn save rstd", gsr, sr, 3);
    gyb = dev(NULL, FB(nx));
    OK(k_nn_batchnorm_forward_infer(cpu, x, gm, bt, rm, rv, yb, n, c, l, 1e-5f, &err));
    OK(k_nn_batchnorm_forward_infer(gpu, gx, ggm, gbt, grm, grv, gyb, n, c, l, 1e-5f, &err));
    same("bn infer y", gyb, yb, nx);
    float *w = rnd(3 * 17, 125, -1, 1), *bw = rnd(3, 126, -1, 1);
    void *gw = dev(w, FB(51)), *gbw = dev(bw, FB(3));
    OK(k_nn_batchnorm_fold(cpu, w, bw, gm, bt, rm, rv, 1e-5f, 3, 17, &err));
    OK(k_nn_batchnorm_fold(gpu, gw, gbw, ggm, gbt, grm, grv, 1e-5f, 3, 17, &err));
    same("bn fold w", gw, w, 51);
    same("bn fold b", gbw, bw, 3);
    same("bn running mean", grm, rm, 3);
    same("bn running var", grv, rv, 3);
    pid_backend_free(gpu, gx), pid_backend_free(gpu, gdy), pid_backend_free(gpu, gam);
    pid_backend_free(gpu, ggm), pid_backend_free(gpu, gbt), pid_backend_free(gpu, gdyb);
    free(x), free(dy), free(y), free(dx), free(am), free(gm), free(bt), free(dyb), free(yb);
    free(w), free(bw);
}

static void parity_fused(const char *tag, k_nn_conv s, k_nn_act act, int pool)
{
    int ho, wo;
    OK(k_nn_conv_out(&s, &ho, &wo, &err));
    size_t nx = (size_t)s.n * s.c_in * s.h_in * s.w_in,
           nw = (size_t)s.c_out * s.c_in * s.k_h * s.k_w;
    size_t nr = (size_t)s.n * s.c_out * ho * wo, nk = k_nn_conv_fused_work_floats(&s, pool);
    size_t ny = pool == K_NN_POOL_GLOBAL_AVG ? (size_t)s.n * s.c_out
                                             : (size_t)s.n * s.c_out * ho * (wo / pool);
    float *x = rnd(nx, 150, -1, 1), *w = rnd(nw, 151, -1, 1), *b = rnd(s.c_out, 152, -1, 1);
    float *r = rnd(nr, 156, -1, 1), *y = malloc(FB(ny)), *work = malloc(FB(nk));
    OK(k_nn_conv_forward_fused(cpu, &s, x, w, b, r, act, pool, y, work, &err));
    void *gx = dev(x, FB(nx)), *gw = dev(w, FB(nw)), *gb = dev(b, FB(s.c_out)),
         *gr = dev(r, FB(nr)), *gwork = dev(NULL, FB(nk)), *gy = dev(NULL, FB(ny));
    OK(k_nn_conv_forward_fused(gpu, &s, gx, gw, gb, gr, act, pool, gy, gwork, &err));
    same(tag, gy, y, ny);
    pid_backend_free(gpu, gx), pid_backend_free(gpu, gw), pid_backend_free(gpu, gb);
    pid_backend_free(gpu, gr), pid_backend_free(gpu, gwork);
    free(x), free(w), free(b), free(r), free(y), free(work);
    int n = 6, in = 45, out = 13;
    x = rnd((size_t)n * in, 153, -1, 1), w = rnd((size_t)out * in, 154, -1, 1),
    b = rnd(out, 155, -1, 1), y = malloc(FB(n * out));
    OK(k_nn_dense_forward_fused(cpu, x, w, b, act, y, n, in, out, &err));
    gx = dev(x, FB(n * in)), gw = dev(w, FB(out * in)), gb = dev(b, FB(out)),
    gy = dev(NULL, FB(n * out));
    OK(k_nn_dense_forward_fused(gpu, gx, gw, gb, act, gy, n, in, out, &err));
    same("dense fused y", gy, y, (size_t)n * out);
    pid_backend_free(gpu, gx), pid_backend_free(gpu, gw), pid_backend_free(gpu, gb);
    free(x), free(w), free(b), free(y);
}

static void test_cuda_parity(void **state)
{
    if (pid_backend_cuda_device_count() <= 0) {
        printf("  CUDA parity: skipped, no CUDA device visible (build has CUDA: %s)\n",
               pid_backend_cuda_built() ? "yes" : "no");
        skip();
    }
    OK(pid_backend_create(&gpu, "cuda", 0, &err));
    parity_dense_act_loss_optim();
    parity_conv("conv1d", k_nn_conv1d_shape(5, 7, 300, 9, 5, 2, 3, 2));
    k_nn_conv s2 = {3, 4, 17, 23, 6, 3, 5, 2, 1, 1, 2, 2, 1};
    parity_conv("conv2d", s2);
    parity_pool_norm();
    parity_fused("conv fused 1d y", k_nn_conv1d_shape(4, 3, 301, 12, 9, 2, 4, 1), K_NN_ACT_RELU, 2);
    k_nn_conv f2 = {3, 4, 17, 23, 6, 3, 5, 2, 1, 1, 2, 2, 1};
    parity_fused("conv fused 2d y", f2, K_NN_ACT_GELU, 1);
    parity_fused("conv fused gavg y", f2, K_NN_ACT_RELU, K_NN_POOL_GLOBAL_AVG);
    pid_backend_destroy(gpu);
}

static int setup(void **state)
{
    if (pid_backend_create(&cpu, "cpu", 1, &err) != PID_OK) return -1;
    return pid_backend_create(&par, "cpu", 0, &err) == PID_OK ? 0 : -1;
}

static int teardown(void **state)
{
    pid_backend_destroy(cpu);
    pid_backend_destroy(par);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dense),       cmocka_unit_test(test_act),
        cmocka_unit_test(test_loss),        cmocka_unit_test(test_adamw),
        cmocka_unit_test(test_conv),        cmocka_unit_test(test_pool),
        cmocka_unit_test(test_batchnorm),   cmocka_unit_test(test_bn_fold),
        cmocka_unit_test(test_fused),       cmocka_unit_test(test_cuda_parity),
        cmocka_unit_test(test_conv_direct), cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
