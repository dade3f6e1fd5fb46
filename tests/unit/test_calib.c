/* Unit tests for models/calib against independent facts: synthetic data drawn
 * calibrated by construction (fixed-seed generator), recovery of a known
 * over-confidence factor, hand-computed Mann-Whitney U and energy values,
 * order statistics for TPR thresholds, huge logits, and bad inputs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/rng.h"
#include "models/calib.h"

/* splitmix64: fixed-seed, platform-independent draws. */
typedef struct {
    uint64_t s;
} rng;

static uint64_t rng_u64(rng *r)
{
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Uniform in [0, 1). */
static double rng_unif(rng *r)
{
    return (double)(rng_u64(r) >> 11) * (1.0 / 9007199254740992.0);
}

static double rng_normal(rng *r)
{
    double u1 = rng_unif(r), u2 = rng_unif(r);
    return sqrt(-2.0 * log(1.0 - u1)) * cos(6.283185307179586 * u2);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n);
    if (!p) fail_msg("out of memory (%zu bytes)", n);
    return p;
}

/* Perfectly calibrated by construction: confidence c ~ U[0.4, 1) on class 0
 * (the other two classes share 1 - c, so class 0 is the argmax), the label is
 * 0 with probability c and otherwise one of the other classes. The expected
 * ECE is pure sampling noise: ~8 filled bins of ~12500 samples each, standard
 * error of a bin accuracy <= sqrt(0.25 / 12500) = 0.0045, so ECE < 0.02 holds
 * with a wide margin for n = 100000. */
static void test_ece_calibrated_small(void **state)
{
    (void)state;
    const size_t n = 100000, k = 3;
    float *z = xmalloc(n * k * sizeof *z);
    int32_t *y = xmalloc(n * sizeof *y);
    rng r = {12345};
    for (size_t i = 0; i < n; i++) {
        double c = 0.4 + 0.6 * rng_unif(&r);
        if (c > 0.999) c = 0.999;
        z[i * k + 0] = (float)log(c);
        z[i * k + 1] = z[i * k + 2] = (float)log((1.0 - c) / 2.0);
        y[i] = rng_unif(&r) < c ? 0 : (rng_unif(&r) < 0.5 ? 1 : 2);
    }
    double ece = -1.0;
    calib_bin bins[CALIB_ECE_DEFAULT_BINS];
    pid_error err;
    assert_int_equal(calib_ece(z, y, n, k, 1.0, 0, &ece, bins, &err), PID_OK);
    assert_true(ece >= 0.0 && ece < 0.02);
    int64_t total = 0;
    for (int b = 0; b < CALIB_ECE_DEFAULT_BINS; b++) {
        total += bins[b].count;
        if (bins[b].count) {
            /* Every filled bin's mean confidence lies inside the bin. */
            assert_true(bins[b].mean_conf > (double)b / 15.0 - 1e-6);
            assert_true(bins[b].mean_conf <= (double)(b + 1) / 15.0 + 1e-6);
        }
    }
    assert_int_equal(total, (int64_t)n);
    /* Confidences start at 0.4 > 6/15: bins 0..5 are empty. */
    for (int b = 0; b < 6; b++)
        assert_int_equal(bins[b].count, 0);
    free(z);
    free(y);
}

/* Hand-made reliability diagram: 4 samples, 2 bins. Confidences 0.3 / 0.45
 * (sigmoid-free: 2 classes, logits (0, log(p/(1-p))) give class-1 prob p).
 * Sample A: p1 = 0.8 -> conf 0.8 predicted 1, label 1 (correct), bin 1.
 * Sample B: p1 = 0.6 -> conf 0.6 predicted 1, label 0 (wrong), bin 1.
 * Sample C: p1 = 0.9 -> conf 0.9 predicted 1, label 1, bin 1.
 * Sample D: p1 = 0.5 -> conf 0.5 (tie, class 0 first), label 0, bin 0 ((0, 0.5]).
 * bin 0: conf 0.5 acc 1; bin 1: conf (0.8+0.6+0.9)/3 acc 2/3.
 * ECE = 1/4 * 0.5 + 3/4 * |2/3 - 2.3/3| = 0.125 + 0.075 = 0.2. */
static void test_ece_hand(void **state)
{
    (void)state;
    const double p[4] = {0.8, 0.6, 0.9, 0.5};
    const int32_t y[4] = {1, 0, 1, 0};
    float z[8];
    for (int i = 0; i < 4; i++) {
        z[2 * i] = 0.0f;
        z[2 * i + 1] = (float)log(p[i] / (1.0 - p[i]));
    }
    calib_bin bins[2];
    double ece;
    assert_int_equal(calib_ece(z, y, 4, 2, 1.0, 2, &ece, bins, NULL), PID_OK);
    assert_int_equal(bins[0].count, 1);
    assert_int_equal(bins[1].count, 3);
    assert_true(fabs(bins[0].mean_conf - 0.5) < 1e-6);
    assert_true(fabs(bins[0].accuracy - 1.0) < 1e-12);
    assert_true(fabs(bins[1].mean_conf - 2.3 / 3.0) < 1e-6);
    assert_true(fabs(bins[1].accuracy - 2.0 / 3.0) < 1e-12);
    assert_true(fabs(ece - 0.2) < 1e-6);
}

/* True logits z ~ 2 N(0, 1) over 5 classes, labels drawn from softmax(z), so
 * T = 1 is the population optimum; feeding 3 z must give T ~ 3 back. */
static void make_overconfident(size_t n, size_t k, float *z3, int32_t *y, uint64_t seed)
{
    rng r = {seed};
    double *p = xmalloc(k * sizeof *p);
    for (size_t i = 0; i < n; i++) {
        double zt[16], m = -1e300, s = 0.0;
        for (size_t j = 0; j < k; j++) {
            zt[j] = 2.0 * rng_normal(&r);
            if (zt[j] > m) m = zt[j];
        }
        for (size_t j = 0; j < k; j++)
            s += (p[j] = exp(zt[j] - m));
        double u = rng_unif(&r) * s, acc = 0.0;
        y[i] = (int32_t)(k - 1);
        for (size_t j = 0; j < k; j++) {
            acc += p[j];
            if (u < acc) {
                y[i] = (int32_t)j;
                break;
            }
        }
        for (size_t j = 0; j < k; j++)
            z3[i * k + j] = (float)(3.0 * zt[j]);
    }
    free(p);
}

static void test_fit_temperature_recovers_3(void **state)
{
    (void)state;
    const size_t n = 20000, k = 5;
    float *z = xmalloc(n * k * sizeof *z);
    int32_t *y = xmalloc(n * sizeof *y);
    make_overconfident(n, k, z, y, 777);
    double T = 0.0;
    pid_error err;
    assert_int_equal(calib_fit_temperature(z, y, n, k, &T, &err), PID_OK);
    assert_true(fabs(T - 3.0) < 0.05 * 3.0);

    /* T is a minimum of the NLL: nudging it either way does not help. */
    double nll0, nll_lo, nll_hi, nll1;
    assert_int_equal(calib_nll(z, y, n, k, T, &nll0, &err), PID_OK);
    assert_int_equal(calib_nll(z, y, n, k, T * 0.9, &nll_lo, &err), PID_OK);
    assert_int_equal(calib_nll(z, y, n, k, T * 1.1, &nll_hi, &err), PID_OK);
    assert_int_equal(calib_nll(z, y, n, k, 1.0, &nll1, &err), PID_OK);
    assert_true(nll0 <= nll_lo && nll0 <= nll_hi && nll0 < nll1);

    /* Temperature scaling lowers the ECE (over-confident logits have a large
     * one; the calibrated ones are at sampling-noise level). */
    double ece_before, ece_after;
    assert_int_equal(calib_ece(z, y, n, k, 1.0, 15, &ece_before, NULL, &err), PID_OK);
    assert_int_equal(calib_ece(z, y, n, k, T, 15, &ece_after, NULL, &err), PID_OK);
    assert_true(ece_after < ece_before);
    assert_true(ece_before > 0.05);
    assert_true(ece_after < 0.03);
    free(z);
    free(y);
}

/* Multi-label: z ~ 2 N(0, 1) per class, targets ~ Bernoulli(sigmoid(z)); the
 * sigmoid head sees 3 z and must get T ~ 3 back, and a lower ECE after. */
static void test_multilabel_temperature(void **state)
{
    (void)state;
    const size_t n = 10000, k = 4;
    float *z = xmalloc(n * k * sizeof *z), *t = xmalloc(n * k * sizeof *t);
    rng r = {4242};
    for (size_t i = 0; i < n * k; i++) {
        double zt = 2.0 * rng_normal(&r);
        t[i] = rng_unif(&r) < 1.0 / (1.0 + exp(-zt)) ? 1.0f : 0.0f;
        z[i] = (float)(3.0 * zt);
    }
    double T = 0.0, ece_before, ece_after, ece_true;
    pid_error err;
    assert_int_equal(calib_fit_temperature_multilabel(z, t, n, k, &T, &err), PID_OK);
    assert_true(fabs(T - 3.0) < 0.05 * 3.0);
    calib_bin bins[10];
    assert_int_equal(calib_ece_multilabel(z, t, n, k, 1.0, 10, &ece_before, NULL, &err), PID_OK);
    assert_int_equal(calib_ece_multilabel(z, t, n, k, T, 10, &ece_after, bins, &err), PID_OK);
    assert_int_equal(calib_ece_multilabel(z, t, n, k, 3.0, 10, &ece_true, NULL, &err), PID_OK);
    assert_true(ece_after < ece_before);
    assert_true(ece_true < 0.02); /* 40000 calibrated probabilities */
    int64_t total = 0;
    for (int b = 0; b < 10; b++)
        total += bins[b].count;
    assert_int_equal(total, (int64_t)(n * k));

    /* BCE at T = 1 of a single logit 0 vs target 1 is log 2. */
    const float z0 = 0.0f, t1 = 1.0f;
    double nll;
    assert_int_equal(calib_nll_multilabel(&z0, &t1, 1, 1, 1.0, &nll, &err), PID_OK);
    assert_true(fabs(nll - log(2.0)) < 1e-12);
    free(z);
    free(t);
}

/* Top-phase ECE of a multi-label head, worked by hand: 4 rows of 20
 * classes, the top logit 4 in every row, right in 2 of them; in the other
 * two the present class sits at -6 with the rest. Every row's confidence is
 * sigmoid(4 / T), so top ECE = |0.5 - sigmoid(4 / T)|; at T = 1 that is 0.48,
 * while the per-class ECE over the 80 probabilities is about 0.06 (75 of
 * them are 0.0025, and 73 of those are absent). */
static void test_multilabel_top_ece(void **state)
{
    (void)state;
    enum { N = 4, K = 20 };
    float z[N * K], t[N * K];
    for (int i = 0; i < N * K; i++) {
        z[i] = -6.0f;
        t[i] = 0.0f;
    }
    for (int i = 0; i < N; i++) {
        z[i * K + 3] = 4.0f;               /* top class of every row */
        t[i * K + (i < 2 ? 3 : 7)] = 1.0f; /* right in rows 0, 1 */
    }
    z[1 * K + 5] = 4.0f; /* a tie in row 1: the first index (3) is the top */
    pid_error err;
    double top, per_class;
    calib_bin bins[15];
    for (double T = 0.5; T <= 4.0; T *= 2.0) {
        assert_int_equal(calib_ece_top_multilabel(z, t, N, K, T, 15, &top, bins, &err), PID_OK);
        double conf = 1.0 / (1.0 + exp(-4.0 / T));
        assert_true(fabs(top - fabs(0.5 - conf)) < 1e-12);
        int64_t total = 0;
        for (int b = 0; b < 15; b++)
            total += bins[b].count;
        assert_int_equal(total, N); /* one confidence per row */
    }
    assert_int_equal(calib_ece_top_multilabel(z, t, N, K, 1.0, 15, &top, NULL, &err), PID_OK);
    assert_int_equal(calib_ece_multilabel(z, t, N, K, 1.0, 15, &per_class, NULL, &err), PID_OK);
    assert_true(top > 0.45 && per_class < 0.1);
    /* validation */
    float bad[N * K];
    memcpy(bad, z, sizeof bad);
    bad[7] = NAN;
    assert_int_equal(calib_ece_top_multilabel(bad, t, N, K, 1.0, 15, &top, NULL, &err),
                     PID_ERR_ARG);
    assert_int_equal(calib_ece_top_multilabel(z, t, N, K, 0.0, 15, &top, NULL, &err), PID_ERR_ARG);
    assert_int_equal(calib_ece_top_multilabel(z, t, N, K, 1.0, 15, NULL, NULL, &err), PID_ERR_ARG);
    assert_int_equal(calib_ece_top_multilabel(NULL, t, N, K, 1.0, 15, &top, NULL, &err),
                     PID_ERR_ARG);
}

/* Energy = -T log sum exp(z / T), computed here directly (small logits). */
static void test_energy_closed_form(void **state)
{
    (void)state;
    const float z[3] = {1.0f, 2.0f, 3.0f};
    double e1 = -log(exp(1.0) + exp(2.0) + exp(3.0));
    double e2 = -2.0 * log(exp(0.5) + exp(1.0) + exp(1.5));
    assert_true(fabs(calib_energy(z, 3, 1.0) - e1) < 1e-12);
    assert_true(fabs(calib_energy(z, 3, 2.0) - e2) < 1e-12);
    /* Single logit: energy = -z. */
    assert_true(fabs(calib_energy(z + 2, 1, 0.7) + 3.0) < 1e-12);
    /* MSP of (1, 2, 3) = e^3 / (e + e^2 + e^3). */
    double msp = exp(3.0) / (exp(1.0) + exp(2.0) + exp(3.0));
    assert_true(fabs(calib_msp(z, 3, 1.0) - msp) < 1e-12);
    /* Uniform logits: MSP = 1/k. */
    const float u[4] = {5.0f, 5.0f, 5.0f, 5.0f};
    assert_true(fabs(calib_msp(u, 4, 1.0) - 0.25) < 1e-12);
    /* Bad rows give NaN. */
    const float bad[2] = {1.0f, NAN};
    assert_true(isnan(calib_energy(bad, 2, 1.0)));
    assert_true(isnan(calib_energy(z, 0, 1.0)));
    assert_true(isnan(calib_energy(z, 3, 0.0)));
    assert_true(isnan(calib_msp(NULL, 3, 1.0)));
    assert_true(isnan(calib_msp(z, 3, -1.0)));
}

/* Logits of magnitude 1e4: max-subtraction keeps everything finite. */
static void test_large_logits_stable(void **state)
{
    (void)state;
    const float a[2] = {1e4f, 1e4f};
    assert_true(fabs(calib_energy(a, 2, 1.0) + (1e4 + log(2.0))) < 1e-9);
    const float b[3] = {1e4f, 0.0f, -1e4f};
    assert_true(fabs(calib_energy(b, 3, 1.0) + 1e4) < 1e-9);
    assert_true(fabs(calib_msp(b, 3, 1.0) - 1.0) < 1e-12);
    const float c[3] = {-1e4f, -1e4f, -1e4f};
    assert_true(fabs(calib_msp(c, 3, 0.05) - 1.0 / 3.0) < 1e-12);
    assert_true(isfinite(calib_energy(c, 3, 0.05)));

    /* 2 classes, logits +-1e4, 70 % correct: NLL is finite at every T, the
     * fit stays in range (the data want a large T), ECE is finite. */
    enum { N = 100 };
    float z[2 * N];
    int32_t y[N];
    for (int i = 0; i < N; i++) {
        z[2 * i] = 1e4f;
        z[2 * i + 1] = -1e4f;
        y[i] = i < 70 ? 0 : 1;
    }
    double T, nll, ece;
    pid_error err;
    assert_int_equal(calib_fit_temperature(z, y, N, 2, &T, &err), PID_OK);
    assert_true(T >= CALIB_T_MIN && T <= CALIB_T_MAX);
    assert_true(T > 1.0);
    assert_int_equal(calib_nll(z, y, N, 2, 0.05, &nll, &err), PID_OK);
    /* 30 % of samples pay 2e4 / 0.05 = 4e5 nats. */
    assert_true(isfinite(nll) && fabs(nll - 0.3 * 4e5) < 1e-6 * 4e5);
    assert_int_equal(calib_ece(z, y, N, 2, 1.0, 15, &ece, NULL, &err), PID_OK);
    assert_true(fabs(ece - 0.3) < 1e-9); /* confidence 1, accuracy 0.7 */
    double Tm;
    float t[2 * N];
    for (int i = 0; i < 2 * N; i++)
        t[i] = (i % 2 == 0) ? (i < 140 ? 1.0f : 0.0f) : 0.0f;
    assert_int_equal(calib_fit_temperature_multilabel(z, t, N, 2, &Tm, &err), PID_OK);
    assert_true(isfinite(Tm) && Tm >= CALIB_T_MIN && Tm <= CALIB_T_MAX);
    assert_int_equal(calib_ece_multilabel(z, t, N, 2, 1.0, 15, &ece, NULL, &err), PID_OK);
    assert_true(isfinite(ece));
}

/* Separable data want T -> 0: the fit returns the lower bound. */
static void test_fit_separable_hits_bound(void **state)
{
    (void)state;
    const float z[4] = {2.0f, 0.0f, 0.0f, 2.0f};
    const int32_t y[2] = {0, 1};
    double T;
    assert_int_equal(calib_fit_temperature(z, y, 2, 2, &T, NULL), PID_OK);
    assert_true(fabs(T - CALIB_T_MIN) < 1e-9);
}

/* Hand example: known {1, 2, 2, 3}, unknown {2, 3, 4}. Pairs with
 * unknown > known count 1, ties 1/2:
 *   u = 2: 1 (vs 1) + 0.5 + 0.5 (vs 2, 2) + 0 (vs 3)  = 2
 *   u = 3: 1 + 1 + 1 (vs 1, 2, 2) + 0.5 (vs 3)        = 3.5
 *   u = 4: 4                                           = 4
 * U = 9.5, AUROC = 9.5 / (4 * 3). Swapping the roles gives 1 - that. */
static void test_auroc_hand_ties(void **state)
{
    (void)state;
    const double kn[4] = {3.0, 2.0, 1.0, 2.0}, un[3] = {4.0, 2.0, 3.0};
    double a;
    pid_error err;
    assert_int_equal(calib_auroc(kn, 4, un, 3, &a, &err), PID_OK);
    assert_true(fabs(a - 9.5 / 12.0) < 1e-12);
    assert_int_equal(calib_auroc(un, 3, kn, 4, &a, &err), PID_OK);
    assert_true(fabs(a - 2.5 / 12.0) < 1e-12);
    /* All tied: exactly 0.5. */
    const double same[3] = {1.0, 1.0, 1.0};
    assert_int_equal(calib_auroc(same, 3, same, 2, &a, &err), PID_OK);
    assert_true(fabs(a - 0.5) < 1e-12);
    /* Infinite scores are ordinary extreme values. */
    const double inf_un[1] = {INFINITY};
    assert_int_equal(calib_auroc(kn, 4, inf_un, 1, &a, &err), PID_OK);
    assert_true(fabs(a - 1.0) < 1e-12);
}

/* Identical distributions: AUROC ~ 0.5 (sd sqrt((n1+n2+1)/(12 n1 n2)) = 0.0029
 * for 20000 each; bound 0.015 is ~5 sd). Separated ranges: exactly 1 and 0. */
static void test_auroc_distributions(void **state)
{
    (void)state;
    const size_t n = 20000;
    double *kn = xmalloc(n * sizeof *kn), *un = xmalloc(n * sizeof *un);
    rng r = {99};
    for (size_t i = 0; i < n; i++) {
        kn[i] = rng_normal(&r);
        un[i] = rng_normal(&r);
    }
    double a;
    pid_error err;
    assert_int_equal(calib_auroc(kn, n, un, n, &a, &err), PID_OK);
    assert_true(fabs(a - 0.5) < 0.015);
    for (size_t i = 0; i < n; i++) {
        kn[i] = rng_unif(&r);
        un[i] = 2.0 + rng_unif(&r);
    }
    assert_int_equal(calib_auroc(kn, n, un, n, &a, &err), PID_OK);
    assert_true(a == 1.0);
    assert_int_equal(calib_auroc(un, n, kn, n, &a, &err), PID_OK);
    assert_true(a == 0.0);
    free(kn);
    free(un);
}

static size_t count_le(const double *s, size_t n, double thr)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        c += s[i] <= thr;
    return c;
}

static void test_threshold_at_tpr(void **state)
{
    (void)state;
    /* Scores 0..99 in scrambled order: tpr 0.95 -> accept 95 -> thr = 94. */
    double s[100];
    for (int i = 0; i < 100; i++)
        s[i] = (double)((i * 37) % 100);
    double thr;
    pid_error err;
    assert_int_equal(calib_threshold_at_tpr(s, 100, 0.95, &thr, &err), PID_OK);
    assert_true(thr == 94.0);
    assert_int_equal(count_le(s, 100, thr), 95);
    assert_int_equal(calib_threshold_at_tpr(s, 100, 1.0, &thr, &err), PID_OK);
    assert_true(thr == 99.0);
    assert_int_equal(calib_threshold_at_tpr(s, 100, 0.001, &thr, &err), PID_OK);
    assert_true(thr == 0.0); /* at least one sample is accepted */

    /* Random continuous scores: the accepted fraction is ceil(tpr n) / n. */
    const size_t n = 1000;
    double *x = xmalloc(n * sizeof *x);
    rng r = {2024};
    for (size_t i = 0; i < n; i++)
        x[i] = rng_normal(&r);
    const double tprs[3] = {0.5, 0.9, 0.95};
    for (int j = 0; j < 3; j++) {
        assert_int_equal(calib_threshold_at_tpr(x, n, tprs[j], &thr, &err), PID_OK);
        assert_int_equal(count_le(x, n, thr), (size_t)ceil(tprs[j] * (double)n - 1e-9));
    }
    /* Ties: at least the requested fraction. */
    const double t[5] = {1.0, 1.0, 1.0, 2.0, 3.0};
    assert_int_equal(calib_threshold_at_tpr(t, 5, 0.4, &thr, &err), PID_OK);
    assert_true(thr == 1.0);
    assert_true(count_le(t, 5, thr) >= 2);
    free(x);
}

static void test_bad_inputs(void **state)
{
    (void)state;
    float z[6] = {0.0f, 1.0f, 2.0f, 3.0f, 4.0f, 5.0f};
    int32_t y[2] = {0, 2};
    float t[6] = {0, 1, 0, 1, 0, 1};
    double T = -7.0, v;
    pid_error err;

    /* n = 0, k too small, NULL pointers. */
    assert_int_equal(calib_fit_temperature(z, y, 0, 3, &T, &err), PID_ERR_ARG);
    assert_int_equal(err.code, PID_ERR_ARG);
    assert_true(strlen(err.msg) > 0);
    assert_int_equal(calib_fit_temperature(z, y, 2, 1, &T, &err), PID_ERR_ARG);
    assert_int_equal(calib_fit_temperature(NULL, y, 2, 3, &T, &err), PID_ERR_ARG);
    assert_int_equal(calib_fit_temperature(z, NULL, 2, 3, &T, &err), PID_ERR_ARG);
    assert_int_equal(calib_fit_temperature(z, y, 2, 3, NULL, &err), PID_ERR_ARG);
    assert_true(T == -7.0); /* untouched on failure */

    /* Labels out of range. */
    y[1] = 3;
    assert_int_equal(calib_fit_temperature(z, y, 2, 3, &T, &err), PID_ERR_ARG);
    assert_int_equal(calib_ece(z, y, 2, 3, 1.0, 15, &v, NULL, &err), PID_ERR_ARG);
    y[1] = -1;
    assert_int_equal(calib_nll(z, y, 2, 3, 1.0, &v, NULL), PID_ERR_ARG);
    y[1] = 2;
    assert_int_equal(calib_fit_temperature(z, y, 2, 3, &T, &err), PID_OK);

    /* NaN / inf logits. */
    z[4] = NAN;
    assert_int_equal(calib_fit_temperature(z, y, 2, 3, &T, &err), PID_ERR_ARG);
    assert_int_equal(calib_ece(z, y, 2, 3, 1.0, 15, &v, NULL, &err), PID_ERR_ARG);
    assert_int_equal(calib_fit_temperature_multilabel(z, t, 2, 3, &T, &err), PID_ERR_ARG);
    z[4] = INFINITY;
    assert_int_equal(calib_nll(z, y, 2, 3, 1.0, &v, &err), PID_ERR_ARG);
    z[4] = 4.0f;

    /* Bad temperature, bins, outputs. */
    assert_int_equal(calib_ece(z, y, 2, 3, 0.0, 15, &v, NULL, &err), PID_ERR_ARG);
    assert_int_equal(calib_ece(z, y, 2, 3, NAN, 15, &v, NULL, &err), PID_ERR_ARG);
    assert_int_equal(calib_ece(z, y, 2, 3, 1.0, 1000001, &v, NULL, &err), PID_ERR_ARG);
    assert_int_equal(calib_ece(z, y, 2, 3, 1.0, 15, NULL, NULL, &err), PID_ERR_ARG);
    assert_int_equal(calib_nll(z, y, 2, 3, -1.0, &v, &err), PID_ERR_ARG);

    /* Multi-label targets outside [0, 1] or NaN. */
    t[3] = 1.5f;
    assert_int_equal(calib_fit_temperature_multilabel(z, t, 2, 3, &T, &err), PID_ERR_ARG);
    t[3] = NAN;
    assert_int_equal(calib_ece_multilabel(z, t, 2, 3, 1.0, 15, &v, NULL, &err), PID_ERR_ARG);
    t[3] = 1.0f;
    assert_int_equal(calib_nll_multilabel(z, t, 0, 3, 1.0, &v, &err), PID_ERR_ARG);
    assert_int_equal(calib_nll_multilabel(z, t, 2, 3, 1.0, &v, &err), PID_OK);

    /* Scores: NaN, empty, NULL, tpr range. */
    double s[3] = {0.1, NAN, 0.3}, u[2] = {0.5, 0.6};
    assert_int_equal(calib_auroc(s, 3, u, 2, &v, &err), PID_ERR_ARG);
    s[1] = 0.2;
    assert_int_equal(calib_auroc(s, 0, u, 2, &v, &err), PID_ERR_ARG);
    assert_int_equal(calib_auroc(s, 3, u, 0, &v, &err), PID_ERR_ARG);
    assert_int_equal(calib_auroc(s, 3, NULL, 2, &v, &err), PID_ERR_ARG);
    assert_int_equal(calib_auroc(s, 3, u, 2, NULL, &err), PID_ERR_ARG);
    assert_int_equal(calib_threshold_at_tpr(s, 3, 0.0, &v, &err), PID_ERR_ARG);
    assert_int_equal(calib_threshold_at_tpr(s, 3, 1.01, &v, &err), PID_ERR_ARG);
    assert_int_equal(calib_threshold_at_tpr(s, 3, NAN, &v, &err), PID_ERR_ARG);
    assert_int_equal(calib_threshold_at_tpr(s, 0, 0.9, &v, &err), PID_ERR_ARG);
    assert_int_equal(calib_threshold_at_tpr(NULL, 3, 0.9, &v, &err), PID_ERR_ARG);
    assert_int_equal(calib_threshold_at_tpr(s, 3, 0.9, NULL, &err), PID_ERR_ARG);
}

/* The predicted-set rule: top class, plus every class with logit >= 0 for
 * multi-label heads; ties go to the lower index. */
static void test_present_set(void **state)
{
    (void)state;
    const float z[5] = {-1.0f, 2.0f, 0.0f, 3.0f, -0.0001f};
    uint8_t pr[5];
    assert_int_equal(calib_present_set(z, 5, 1, 1.0, NULL, NULL, pr), 3);
    const uint8_t want_ml[5] = {0, 1, 1, 1, 0};
    assert_memory_equal(pr, want_ml, 5);
    assert_int_equal(calib_present_set(z, 5, 0, 1.0, NULL, NULL, pr), 1);
    const uint8_t want_sm[5] = {0, 0, 0, 1, 0};
    assert_memory_equal(pr, want_sm, 5);
    const float neg[3] = {-2.0f, -1.0f, -1.0f}; /* all absent: the top (first of the tie) */
    assert_int_equal(calib_present_set(neg, 3, 1, 1.0, NULL, NULL, pr), 1);
    assert_true(pr[0] == 0 && pr[1] == 1 && pr[2] == 0);
    assert_int_equal(calib_present_set(NULL, 3, 1, 1.0, NULL, NULL, pr), 0);
    assert_int_equal(calib_present_set(z, 0, 1, 1.0, NULL, NULL, pr), 0);
    assert_int_equal(calib_present_set(z, 5, 1, 0.0, NULL, NULL, pr), 0);
    assert_int_equal(calib_present_set(z, 5, 1, NAN, NULL, NULL, pr), 0);
    /* an unfitted rule (n = 0) is the 0.5 rule */
    calib_set_rule none = {0};
    assert_int_equal(calib_present_set(z, 5, 1, 1.0, &none, NULL, pr), 3);
    assert_memory_equal(pr, want_ml, 5);
}

/* A fitted set rule: ranks by logit (3, 1, 2, 4, 0 here), each admitted
 * while the rank before it is and its probability sigmoid(z / T) reaches
 * that rank's threshold, at most n; softmax heads ignore it. */
static void test_present_set_rule(void **state)
{
    (void)state;
    const float z[5] = {-1.0f, 2.0f, 0.0f, 3.0f, -0.5f}; /* p at T=1: .27 .88 .5 .95 .38 */
    uint8_t pr[5];
    calib_set_rule r = {.n = 3, .thr = {0.0, 0.3, 0.6}};
    assert_int_equal(calib_present_set(z, 5, 1, 1.0, &r, NULL, pr), 2);
    const uint8_t want2[5] = {0, 1, 0, 1, 0};
    assert_memory_equal(pr, want2, 5);
    r.thr[2] = 0.45; /* rank 2 (p 0.5) now in; rank 3 (p 0.38 >= 0.3 too) capped by n */
    assert_int_equal(calib_present_set(z, 5, 1, 1.0, &r, NULL, pr), 3);
    const uint8_t want3[5] = {0, 1, 1, 1, 0};
    assert_memory_equal(pr, want3, 5);
    calib_set_rule r4 = {.n = 4, .thr = {0.0, 0.3, 0.6, 0.1}};
    /* rank 2 fails, so rank 3 stays out however low its threshold */
    assert_int_equal(calib_present_set(z, 5, 1, 1.0, &r4, NULL, pr), 2);
    assert_memory_equal(pr, want2, 5);
    r4.thr[2] = 0.5;
    assert_int_equal(calib_present_set(z, 5, 1, 1.0, &r4, NULL, pr), 4);
    const uint8_t want4[5] = {0, 1, 1, 1, 1};
    assert_memory_equal(pr, want4, 5);
    /* the temperature enters: at T = 4 rank 1 has p = sigmoid(0.5) = 0.62 */
    calib_set_rule rt = {.n = 2, .thr = {0.0, 0.7}};
    assert_int_equal(calib_present_set(z, 5, 1, 1.0, &rt, NULL, pr), 2);
    assert_int_equal(calib_present_set(z, 5, 1, 4.0, &rt, NULL, pr), 1);
    assert_true(pr[3] == 1 && pr[1] == 0);
    /* n above k: every class can be reached */
    calib_set_rule big = {.n = CALIB_MAX_SET};
    for (int i = 1; i < CALIB_MAX_SET; i++)
        big.thr[i] = 0.01;
    const float z3[3] = {1.0f, 0.5f, -2.0f};
    assert_int_equal(calib_present_set(z3, 3, 1, 1.0, &big, NULL, pr), 3);
    assert_int_equal(calib_present_set(z3, 3, 0, 1.0, &big, NULL, pr), 1);
    /* near twins: class 1 (rank 1) is a twin of class 3 (rank 0) and is
     * passed over; class 2 (p 0.5) takes rank 1, class 4 (p 0.38) rank 2 */
    uint8_t tw[25] = {0};
    tw[1 * 5 + 3] = tw[3 * 5 + 1] = 1;
    calib_set_rule rw = {.n = 3, .thr = {0.0, 0.3, 0.45}};
    assert_int_equal(calib_present_set(z, 5, 1, 1.0, &rw, tw, pr), 2);
    const uint8_t want_tw[5] = {0, 0, 1, 1, 0};
    assert_memory_equal(pr, want_tw, 5);
    rw.thr[2] = 0.35;
    assert_int_equal(calib_present_set(z, 5, 1, 1.0, &rw, tw, pr), 3);
    const uint8_t want_tw3[5] = {0, 0, 1, 1, 1};
    assert_memory_equal(pr, want_tw3, 5);
    /* twins only matter to a fitted rule */
    assert_int_equal(calib_present_set(z, 5, 1, 1.0, NULL, tw, pr), 3);
    assert_memory_equal(pr, want3, 5);
}

static float logit_of(double p)
{
    return (float)log(p / (1.0 - p));
}

/* Fitting the rule: one-phase rows whose runner-up has p in [0.05, 0.25]
 * and two-phase rows whose second phase has p in [0.31, 0.45]. At 0.5 only
 * the one-phase rows are right (0.5); a rank-1 threshold in (0.25, 0.31]
 * gets every row right, and of those grid values 0.3 is nearest 0.5. Rank
 * 2 (p 0.02 everywhere) keeps 0.5. Rows with no true phase are skipped. */
static void test_fit_set_rule(void **state)
{
    (void)state;
    enum { N = 401, K = 6 };
    float *z = malloc(sizeof(float) * N * K), *t = calloc(N * K, sizeof(float));
    assert_non_null(z);
    assert_non_null(t);
    pid_rng r;
    pid_rng_init(&r, 5, 0);
    for (int i = 0; i < N; i++) {
        float *zi = z + i * K, *ti = t + i * K;
        for (int c = 0; c < K; c++)
            zi[c] = logit_of(0.001 + 0.009 * pid_rng_uniform(&r));
        int a = i % K, b = (i + 1) % K, c3 = (i + 2) % K;
        zi[a] = logit_of(0.97);
        zi[c3] = logit_of(0.02);
        if (i == N - 1) continue; /* no true phase */
        ti[a] = 1.0f;
        if (i % 2) {
            zi[b] = logit_of(0.31 + 0.14 * pid_rng_uniform(&r));
            ti[b] = 1.0f;
        } else
            zi[b] = logit_of(0.05 + 0.20 * pid_rng_uniform(&r));
    }
    calib_set_rule rule;
    double before, after;
    pid_error err;
    assert_int_equal(calib_fit_set_rule(z, t, N, K, 1.0, 3, NULL, &rule, &before, &after, &err),
                     PID_OK);
    assert_true(fabs((before) - (200.0 / 400.0)) < 1e-12);
    assert_true(fabs((after) - (1.0)) < 1e-12);
    assert_int_equal(rule.n, 3);
    assert_true(fabs((rule.thr[1]) - (0.3)) < 1e-9);
    assert_true(fabs((rule.thr[2]) - (0.5)) < 1e-9);
    /* the fit's accuracy is that of calib_present_set with the rule */
    uint8_t pr[K];
    int hit = 0;
    for (int i = 0; i < N - 1; i++) {
        calib_present_set(z + i * K, K, 1, 1.0, &rule, NULL, pr);
        int same = 1;
        for (int c = 0; c < K; c++)
            same = same && pr[c] == (t[i * K + c] > 0.5f);
        hit += same;
    }
    assert_int_equal(hit, N - 1);
    /* with near twins (classes 1 and 2: the second phase of the two-phase
     * rows whose first is class 1 is passed over, so those rows are lost)
     * the fit's accuracy is exactly that of calib_present_set with its rule */
    {
        uint8_t tw[K * K] = {0};
        tw[1 * K + 2] = tw[2 * K + 1] = 1;
        calib_set_rule rt;
        double b2, a2;
        assert_int_equal(calib_fit_set_rule(z, t, N, K, 1.0, 3, tw, &rt, &b2, &a2, &err), PID_OK);
        int h2 = 0;
        for (int i = 0; i < N - 1; i++) {
            calib_present_set(z + i * K, K, 1, 1.0, rt.n ? &rt : NULL, tw, pr);
            int same = 1;
            for (int c = 0; c < K; c++)
                same = same && pr[c] == (t[i * K + c] > 0.5f);
            h2 += same;
        }
        assert_true(fabs(a2 - (double)h2 / (N - 1)) < 1e-12);
        assert_true(b2 == before && a2 < 0.9 && a2 > 0.75 && rt.n == 3);
    }
    /* the same logits at T = 2: the probabilities move, the fit follows */
    assert_int_equal(calib_fit_set_rule(z, t, N, K, 2.0, 3, NULL, &rule, &before, &after, &err),
                     PID_OK);
    assert_true(fabs((after) - (1.0)) < 1e-12);
    /* runner-ups now reach sigmoid(logit(0.25) / 2) = 0.366, second phases
     * start at sigmoid(logit(0.31) / 2) = 0.401: 0.4 is the grid value */
    assert_true(fabs((rule.thr[1]) - (0.4)) < 1e-9);
    /* nothing to gain (one-phase rows only): the unfitted rule is kept */
    for (int i = 1; i < N; i += 2)
        t[i * K + (i + 1) % K] = 0.0f;
    for (int i = 1; i < N; i += 2)
        z[i * K + (i + 1) % K] = logit_of(0.1);
    assert_int_equal(calib_fit_set_rule(z, t, N, K, 1.0, 3, NULL, &rule, &before, &after, &err),
                     PID_OK);
    assert_int_equal(rule.n, 0);
    assert_true(fabs((before) - (1.0)) < 1e-12);
    assert_true(fabs((after) - (1.0)) < 1e-12);
    /* bad input */
    assert_int_equal(calib_fit_set_rule(z, t, N, K, 1.0, 1, NULL, &rule, &before, &after, &err),
                     PID_ERR_ARG);
    assert_int_equal(
        calib_fit_set_rule(z, t, N, K, 1.0, CALIB_MAX_SET + 1, NULL, &rule, &before, &after, &err),
        PID_ERR_ARG);
    assert_int_equal(calib_fit_set_rule(z, t, N, K, 0.0, 3, NULL, &rule, &before, &after, &err),
                     PID_ERR_ARG);
    assert_int_equal(calib_fit_set_rule(NULL, t, N, K, 1.0, 3, NULL, &rule, &before, &after, &err),
                     PID_ERR_ARG);
    z[7] = NAN;
    assert_int_equal(calib_fit_set_rule(z, t, N, K, 1.0, 3, NULL, &rule, &before, &after, &err),
                     PID_ERR_ARG);
    /* no row with a true phase: unfitted, NaN accuracies */
    memset(t, 0, sizeof(float) * N * K);
    z[7] = 0.0f;
    assert_int_equal(calib_fit_set_rule(z, t, N, K, 1.0, 3, NULL, &rule, &before, &after, &err),
                     PID_OK);
    assert_int_equal(rule.n, 0);
    assert_true(isnan(before) && isnan(after));
    free(z);
    free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_present_set),
        cmocka_unit_test(test_present_set_rule),
        cmocka_unit_test(test_fit_set_rule),
        cmocka_unit_test(test_ece_calibrated_small),
        cmocka_unit_test(test_ece_hand),
        cmocka_unit_test(test_fit_temperature_recovers_3),
        cmocka_unit_test(test_multilabel_temperature),
        cmocka_unit_test(test_multilabel_top_ece),
        cmocka_unit_test(test_energy_closed_form),
        cmocka_unit_test(test_large_logits_stable),
        cmocka_unit_test(test_fit_separable_hits_bound),
        cmocka_unit_test(test_auroc_hand_ties),
        cmocka_unit_test(test_auroc_distributions),
        cmocka_unit_test(test_threshold_at_tpr),
        cmocka_unit_test(test_bad_inputs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
