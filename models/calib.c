/* Temperature scaling, expected calibration error, energy / max-softmax
 * unknown scores, AUROC (Mann-Whitney U with midranks) and TPR thresholds on
 * host arrays of logits; see calib.h for the contracts. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "models/calib.h"

#define CALIB_MAX_BINS 100000
/* Golden-section tolerance on log T: ~1e-7 relative in T. */
#define CALIB_LOGT_TOL 1e-7

/* ---- validation ---------------------------------------------------------- */

static pid_status check_logits(const float *logits, size_t n, size_t k, size_t k_min,
                               pid_error *err)
{
    if (!logits) return pid_fail(err, PID_ERR_ARG, "calib: logits is NULL");
    if (n == 0) return pid_fail(err, PID_ERR_ARG, "calib: no samples (n = 0)");
    if (k < k_min) return pid_fail(err, PID_ERR_ARG, "calib: k = %zu, need >= %zu", k, k_min);
    if (n > SIZE_MAX / k) return pid_fail(err, PID_ERR_ARG, "calib: n * k overflows");
    for (size_t i = 0; i < n * k; i++)
        if (!isfinite(logits[i]))
            return pid_fail(err, PID_ERR_ARG, "calib: non-finite logit at sample %zu, class %zu",
                            i / k, i % k);
    return PID_OK;
}

static pid_status check_labels(const int32_t *labels, size_t n, size_t k, pid_error *err)
{
    if (!labels) return pid_fail(err, PID_ERR_ARG, "calib: labels is NULL");
    for (size_t i = 0; i < n; i++)
        if (labels[i] < 0 || (size_t)labels[i] >= k)
            return pid_fail(err, PID_ERR_ARG, "calib: label %d of sample %zu outside [0, %zu)",
                            (int)labels[i], i, k);
    return PID_OK;
}

static pid_status check_targets(const float *targets, size_t n, size_t k, pid_error *err)
{
    if (!targets) return pid_fail(err, PID_ERR_ARG, "calib: targets is NULL");
    for (size_t i = 0; i < n * k; i++)
        if (!(targets[i] >= 0.0f && targets[i] <= 1.0f)) /* also rejects NaN */
            return pid_fail(err, PID_ERR_ARG,
                            "calib: target %g of sample %zu, class %zu outside [0, 1]",
                            (double)targets[i], i / k, i % k);
    return PID_OK;
}

static pid_status check_T(double T, pid_error *err)
{
    if (!(isfinite(T) && T > 0.0))
        return pid_fail(err, PID_ERR_ARG, "calib: temperature %g must be finite and > 0", T);
    return PID_OK;
}

static pid_status resolve_bins(int n_bins, int *out, pid_error *err)
{
    if (n_bins <= 0) n_bins = CALIB_ECE_DEFAULT_BINS;
    if (n_bins > CALIB_MAX_BINS)
        return pid_fail(err, PID_ERR_ARG, "calib: %d bins, at most %d", n_bins, CALIB_MAX_BINS);
    *out = n_bins;
    return PID_OK;
}

/* ---- row math (double, max-subtracted) ----------------------------------- */

/* Row max m = max_j z_j / T (first maximal index in *argmax) and the shifted
 * sum s = sum_j exp(z_j / T - m) in [1, k]: logsumexp = m + log s and the max
 * softmax probability is exactly 1 / s, with no cancellation of large m. */
static double row_shifted_sum(const float *z, size_t k, double T, double *m_out, size_t *argmax)
{
    size_t am = 0;
    for (size_t j = 1; j < k; j++)
        if (z[j] > z[am]) am = j;
    double m = (double)z[am] / T, s = 0.0;
    for (size_t j = 0; j < k; j++)
        s += exp((double)z[j] / T - m);
    if (m_out) *m_out = m;
    if (argmax) *argmax = am;
    return s;
}

static double row_lse(const float *z, size_t k, double T)
{
    double m;
    double s = row_shifted_sum(z, k, T, &m, NULL);
    return m + log(s); /* s >= 1 (the max term), so log is safe */
}

/* log(1 + exp(x)) without overflow. */
static double softplus(double x)
{
    return (x > 0.0 ? x : 0.0) + log1p(exp(-fabs(x)));
}

static double softmax_nll(const float *logits, const int32_t *labels, size_t n, size_t k, double T)
{
    double sum = 0.0;
    for (size_t i = 0; i < n; i++) {
        const float *z = logits + i * k;
        sum += row_lse(z, k, T) - (double)z[labels[i]] / T;
    }
    return sum / (double)n;
}

/* BCE of sigmoid(x) vs t: softplus(x) - t x. */
static double sigmoid_nll(const float *logits, const float *targets, size_t n, size_t k, double T)
{
    double sum = 0.0;
    for (size_t i = 0; i < n * k; i++) {
        double x = (double)logits[i] / T;
        sum += softplus(x) - (double)targets[i] * x;
    }
    return sum / ((double)n * (double)k);
}

static double sigmoid(double x)
{
    if (x >= 0.0) return 1.0 / (1.0 + exp(-x));
    double e = exp(x);
    return e / (1.0 + e);
}

/* ---- temperature fit ----------------------------------------------------- */

typedef double (*nll_fn)(const void *ctx, double T);

typedef struct {
    const float *logits;
    const int32_t *labels;
    const float *targets;
    size_t n, k;
} nll_ctx;

static double nll_softmax_cb(const void *ctx, double T)
{
    const nll_ctx *c = ctx;
    return softmax_nll(c->logits, c->labels, c->n, c->k, T);
}

static double nll_sigmoid_cb(const void *ctx, double T)
{
    const nll_ctx *c = ctx;
    return sigmoid_nll(c->logits, c->targets, c->n, c->k, T);
}

/* Golden-section minimum of f(exp(u)) on u in [log T_MIN, log T_MAX]. The NLL
 * is convex in beta = 1/T, so it is unimodal in u = -log beta and the search
 * cannot be trapped; a minimum on the boundary returns that boundary. */
static double golden_min_logT(nll_fn f, const void *ctx)
{
    const double g = 0.5 * (sqrt(5.0) - 1.0); /* 0.618... */
    double a = log(CALIB_T_MIN), b = log(CALIB_T_MAX);
    double c = b - g * (b - a), d = a + g * (b - a);
    double fc = f(ctx, exp(c)), fd = f(ctx, exp(d));
    while (b - a > CALIB_LOGT_TOL) {
        if (fc <= fd) {
            b = d;
            d = c;
            fd = fc;
            c = b - g * (b - a);
            fc = f(ctx, exp(c));
        } else {
            a = c;
            c = d;
            fc = fd;
            d = a + g * (b - a);
            fd = f(ctx, exp(d));
        }
    }
    /* Compare the bracket midpoint with the interval ends so a boundary optimum
     * (e.g. separable data wanting T -> 0) returns exactly the boundary. */
    double best = 0.5 * (a + b), fbest = f(ctx, exp(best));
    double lo = log(CALIB_T_MIN), hi = log(CALIB_T_MAX);
    if (a - lo < 1e-6) {
        double fl = f(ctx, CALIB_T_MIN);
        if (fl <= fbest) best = lo, fbest = fl;
    }
    if (hi - b < 1e-6) {
        double fh = f(ctx, CALIB_T_MAX);
        if (fh < fbest) best = hi;
    }
    if (best == lo) return CALIB_T_MIN;
    if (best == hi) return CALIB_T_MAX;
    return exp(best);
}

pid_status calib_fit_temperature(const float *logits, const int32_t *labels, size_t n, size_t k,
                                 double *T, pid_error *err)
{
    pid_status st = check_logits(logits, n, k, 2, err);
    if (st) return st;
    st = check_labels(labels, n, k, err);
    if (st) return st;
    if (!T) return pid_fail(err, PID_ERR_ARG, "calib: T is NULL");
    nll_ctx ctx = {logits, labels, NULL, n, k};
    *T = golden_min_logT(nll_softmax_cb, &ctx);
    return PID_OK;
}

pid_status calib_nll(const float *logits, const int32_t *labels, size_t n, size_t k, double T,
                     double *nll, pid_error *err)
{
    pid_status st = check_logits(logits, n, k, 2, err);
    if (st) return st;
    st = check_labels(labels, n, k, err);
    if (st) return st;
    st = check_T(T, err);
    if (st) return st;
    if (!nll) return pid_fail(err, PID_ERR_ARG, "calib: nll is NULL");
    *nll = softmax_nll(logits, labels, n, k, T);
    return PID_OK;
}

pid_status calib_fit_temperature_multilabel(const float *logits, const float *targets, size_t n,
                                            size_t k, double *T, pid_error *err)
{
    pid_status st = check_logits(logits, n, k, 1, err);
    if (st) return st;
    st = check_targets(targets, n, k, err);
    if (st) return st;
    if (!T) return pid_fail(err, PID_ERR_ARG, "calib: T is NULL");
    nll_ctx ctx = {logits, NULL, targets, n, k};
    *T = golden_min_logT(nll_sigmoid_cb, &ctx);
    return PID_OK;
}

pid_status calib_nll_multilabel(const float *logits, const float *targets, size_t n, size_t k,
                                double T, double *nll, pid_error *err)
{
    pid_status st = check_logits(logits, n, k, 1, err);
    if (st) return st;
    st = check_targets(targets, n, k, err);
    if (st) return st;
    st = check_T(T, err);
    if (st) return st;
    if (!nll) return pid_fail(err, PID_ERR_ARG, "calib: nll is NULL");
    *nll = sigmoid_nll(logits, targets, n, k, T);
    return PID_OK;
}

/* ---- ECE ----------------------------------------------------------------- */

/* Right-closed bins (b/M, (b+1)/M]; confidence 0 goes to bin 0. */
static int conf_bin(double conf, int M)
{
    double b = ceil(conf * (double)M) - 1.0;
    if (b < 0.0) return 0;
    if (b > (double)(M - 1)) return M - 1;
    return (int)b;
}

/* The bins of one ECE: per bin count, sum of confidences, sum of
 * "accuracy" (correct, or the target of a multi-label probability). */
typedef struct {
    int M;
    double *sums;    /* [2 M]: confidence, accuracy */
    int64_t *counts; /* [M] */
} ece_bins;

static pid_status ece_open(ece_bins *e, int M, pid_error *err)
{
    e->M = M;
    e->sums = calloc((size_t)M * 2, sizeof *e->sums);
    e->counts = calloc((size_t)M, sizeof *e->counts);
    if (e->sums && e->counts) return PID_OK;
    free(e->sums);
    free(e->counts);
    return pid_fail(err, PID_ERR_NOMEM, "calib: ECE bins (%d)", M);
}

static void ece_add(ece_bins *e, double conf, double acc)
{
    int b = conf_bin(conf, e->M);
    e->counts[b]++;
    e->sums[2 * b] += conf;
    e->sums[2 * b + 1] += acc;
}

/* ECE over n_total predictions into *ece (and the diagram into bins when
 * not NULL); frees the bins. */
static void ece_close(ece_bins *e, double n_total, double *ece, calib_bin *bins)
{
    double v = 0.0;
    for (int b = 0; b < e->M; b++) {
        double conf = 0.0, acc = 0.0;
        if (e->counts[b] > 0) {
            conf = e->sums[2 * b] / (double)e->counts[b];
            acc = e->sums[2 * b + 1] / (double)e->counts[b];
            v += ((double)e->counts[b] / n_total) * fabs(acc - conf);
        }
        if (bins) {
            bins[b].count = e->counts[b];
            bins[b].mean_conf = conf;
            bins[b].accuracy = acc;
        }
    }
    *ece = v;
    free(e->sums);
    free(e->counts);
}

pid_status calib_ece(const float *logits, const int32_t *labels, size_t n, size_t k, double T,
                     int n_bins, double *ece, calib_bin *bins, pid_error *err)
{
    int M = 0;
    pid_status st = check_logits(logits, n, k, 2, err);
    if (!st) st = check_labels(labels, n, k, err);
    if (!st) st = check_T(T, err);
    if (!st) st = resolve_bins(n_bins, &M, err);
    if (st) return st;
    if (!ece) return pid_fail(err, PID_ERR_ARG, "calib: ece is NULL");
    ece_bins e;
    if ((st = ece_open(&e, M, err))) return st;
    for (size_t i = 0; i < n; i++) {
        const float *z = logits + i * k;
        size_t am;
        double conf = 1.0 / row_shifted_sum(z, k, T, NULL, &am); /* max softmax prob. */
        ece_add(&e, conf, (am == (size_t)labels[i]) ? 1.0 : 0.0);
    }
    ece_close(&e, (double)n, ece, bins);
    return PID_OK;
}

/* Validation shared by the two multi-label ECEs. */
static pid_status check_multilabel_ece(const float *logits, const float *targets, size_t n,
                                       size_t k, double T, int n_bins, const double *ece, int *M,
                                       pid_error *err)
{
    pid_status st = check_logits(logits, n, k, 1, err);
    if (!st) st = check_targets(targets, n, k, err);
    if (!st) st = check_T(T, err);
    if (!st) st = resolve_bins(n_bins, M, err);
    if (!st && !ece) st = pid_fail(err, PID_ERR_ARG, "calib: ece is NULL");
    return st;
}

pid_status calib_ece_multilabel(const float *logits, const float *targets, size_t n, size_t k,
                                double T, int n_bins, double *ece, calib_bin *bins, pid_error *err)
{
    int M = 0;
    ece_bins e;
    pid_status st = check_multilabel_ece(logits, targets, n, k, T, n_bins, ece, &M, err);
    if (st || (st = ece_open(&e, M, err))) return st;
    for (size_t i = 0; i < n * k; i++)
        ece_add(&e, sigmoid((double)logits[i] / T), (double)targets[i]);
    ece_close(&e, (double)n * (double)k, ece, bins);
    return PID_OK;
}

pid_status calib_ece_top_multilabel(const float *logits, const float *targets, size_t n, size_t k,
                                    double T, int n_bins, double *ece, calib_bin *bins,
                                    pid_error *err)
{
    int M = 0;
    ece_bins e;
    pid_status st = check_multilabel_ece(logits, targets, n, k, T, n_bins, ece, &M, err);
    if (st || (st = ece_open(&e, M, err))) return st;
    for (size_t i = 0; i < n; i++) {
        const float *z = logits + i * k;
        size_t am = 0;
        for (size_t j = 1; j < k; j++)
            if (z[j] > z[am]) am = j;
        ece_add(&e, sigmoid((double)z[am] / T), targets[i * k + am] > 0.5f ? 1.0 : 0.0);
    }
    ece_close(&e, (double)n, ece, bins);
    return PID_OK;
}

/* ---- unknown scores ------------------------------------------------------ */

static int row_ok(const float *logits, size_t k, double T)
{
    if (!logits || k == 0 || !(isfinite(T) && T > 0.0)) return 0;
    for (size_t j = 0; j < k; j++)
        if (!isfinite(logits[j])) return 0;
    return 1;
}

double calib_energy(const float *logits, size_t k, double T)
{
    if (!row_ok(logits, k, T)) return NAN;
    return -T * row_lse(logits, k, T);
}

/* The classes of the r largest logits (r <= k), largest first (ties: lower
 * index), into top[r]. */
static void top_classes(const float *z, size_t k, int r, int32_t *top)
{
    int m = 0;
    for (size_t c = 0; c < k; c++) {
        if (m == r && !(z[c] > z[top[m - 1]])) continue;
        int j = m < r ? m++ : m - 1;
        while (j > 0 && z[c] > z[top[j - 1]]) {
            top[j] = top[j - 1];
            j--;
        }
        top[j] = (int32_t)c;
    }
}

static double sigmoid_t(float z, double T)
{
    return 1.0 / (1.0 + exp(-(double)z / T));
}

/* The candidates of a fitted rule, in rank order: the classes by
 * decreasing logit, each twin of an earlier candidate passed over, at most
 * r (of the first CALIB_MAX_CAND by logit). Returns how many. */
#define CALIB_MAX_CAND (2 * CALIB_MAX_SET)
static int rule_candidates(const float *z, size_t k, int r, const uint8_t *twin, int32_t *cand)
{
    int32_t top[CALIB_MAX_CAND];
    const int m = k < CALIB_MAX_CAND ? (int)k : CALIB_MAX_CAND;
    top_classes(z, k, m, top);
    int n = 0;
    for (int i = 0; i < m && n < r; i++) {
        int tw = 0;
        for (int j = 0; twin && j < n && !tw; j++)
            tw = twin[(size_t)top[i] * k + (size_t)cand[j]] != 0;
        if (!tw) cand[n++] = top[i];
    }
    return n;
}

int calib_present_set(const float *logits, size_t k, int multilabel, double T,
                      const calib_set_rule *rule, const uint8_t *twin, uint8_t *present)
{
    if (!logits || !present || k == 0 || !(isfinite(T) && T > 0.0)) return 0;
    if (multilabel && rule && rule->n > 0) {
        int32_t cand[CALIB_MAX_SET];
        const int r = rule_candidates(logits, k, rule->n, twin, cand);
        memset(present, 0, k);
        present[cand[0]] = 1;
        int n = 1;
        while (n < r && sigmoid_t(logits[cand[n]], T) >= rule->thr[n])
            present[cand[n++]] = 1;
        return n;
    }
    size_t top = 0;
    int n = 0;
    for (size_t c = 0; c < k; c++) {
        if (logits[c] > logits[top]) top = c;
        present[c] = multilabel && logits[c] >= 0.0f;
    }
    present[top] = 1;
    for (size_t c = 0; c < k; c++)
        n += present[c];
    return n;
}

/* Per row of the set-rule fit: the calibrated probabilities of the
 * candidates of ranks 1..R-1 (-1 where there is none), and whether the
 * first L candidates (L = 1..R) are exactly the true set. */
typedef struct {
    double p[CALIB_MAX_SET];
    uint8_t ok[CALIB_MAX_SET + 1];
} set_row;

static double set_exact(const set_row *rows, size_t n, int r, const double *thr)
{
    size_t hit = 0;
    for (size_t i = 0; i < n; i++) {
        int len = 1;
        while (len < r && rows[i].p[len] >= thr[len])
            len++;
        hit += rows[i].ok[len];
    }
    return (double)hit / (double)n;
}

pid_status calib_fit_set_rule(const float *logits, const float *targets, size_t n, size_t k,
                              double T, int max_phases, const uint8_t *twin, calib_set_rule *rule,
                              double *exact_before, double *exact_after, pid_error *err)
{
    if (!logits || !targets || !rule || !exact_before || !exact_after || n == 0 || k < 2 ||
        max_phases < 2 || max_phases > CALIB_MAX_SET || !(isfinite(T) && T > 0.0))
        return pid_fail(err, PID_ERR_ARG, "calib: bad set-rule fit arguments");
    memset(rule, 0, sizeof *rule);
    *exact_before = *exact_after = NAN;
    const int r = (size_t)max_phases < k ? max_phases : (int)k;
    set_row *rows = malloc(n * sizeof *rows);
    uint8_t *pres = malloc(k);
    if (!rows || !pres) {
        free(rows);
        free(pres);
        return pid_fail(err, PID_ERR_NOMEM, "calib: out of memory");
    }
    size_t m = 0, before = 0;
    for (size_t i = 0; i < n; i++) {
        const float *z = logits + i * k, *t = targets + i * k;
        size_t n_true = 0;
        for (size_t c = 0; c < k; c++) {
            if (!isfinite(z[c])) {
                free(rows);
                free(pres);
                return pid_fail(err, PID_ERR_ARG, "calib: non-finite logit in row %zu", i);
            }
            n_true += t[c] > 0.5f;
        }
        if (n_true == 0) continue;
        set_row *w = &rows[m++];
        int32_t top[CALIB_MAX_SET];
        const int nc = rule_candidates(z, k, r, twin, top);
        /* the first L ranks are the true set when all L are true and L of them exist */
        memset(w, 0, sizeof *w);
        int all = 1;
        for (int l = 0; l < nc; l++) {
            w->p[l] = sigmoid_t(z[top[l]], T);
            all = all && t[top[l]] > 0.5f;
            w->ok[l + 1] = (uint8_t)(all && (size_t)(l + 1) == n_true);
        }
        for (int l = nc; l < r; l++)
            w->p[l] = -1.0; /* no candidate: never reached */
        calib_present_set(z, k, 1, T, NULL, NULL, pres);
        int same = 1;
        for (size_t c = 0; c < k && same; c++)
            same = pres[c] == (t[c] > 0.5f);
        before += (size_t)same;
    }
    free(pres);
    if (m == 0) {
        free(rows);
        return PID_OK;
    }
    *exact_before = (double)before / (double)m;
    double thr[CALIB_MAX_SET] = {0.0};
    for (int l = 1; l < r; l++)
        thr[l] = 0.5;
    double best = set_exact(rows, m, r, thr);
    const int steps = (int)lround((CALIB_SET_T_HI - CALIB_SET_T_LO) / CALIB_SET_T_STEP);
    for (int round = 0; round < 2; round++)
        for (int l = 1; l < r; l++) {
            double keep = thr[l];
            for (int s = 0; s <= steps; s++) {
                double v = CALIB_SET_T_LO + s * CALIB_SET_T_STEP;
                thr[l] = v;
                double e = set_exact(rows, m, r, thr);
                if (e > best || (e == best && fabs(v - 0.5) < fabs(keep - 0.5))) {
                    best = e;
                    keep = v;
                }
            }
            thr[l] = keep;
        }
    free(rows);
    if (best > *exact_before) {
        rule->n = r;
        memcpy(rule->thr, thr, sizeof thr);
        *exact_after = best;
    } else
        *exact_after = *exact_before;
    return PID_OK;
}

double calib_msp(const float *logits, size_t k, double T)
{
    if (!row_ok(logits, k, T)) return NAN;
    return 1.0 / row_shifted_sum(logits, k, T, NULL, NULL);
}

/* ---- AUROC and thresholds ------------------------------------------------ */

typedef struct {
    double s;
    int unknown;
} scored;

static int cmp_scored(const void *a, const void *b)
{
    double x = ((const scored *)a)->s, y = ((const scored *)b)->s;
    return (x > y) - (x < y);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static pid_status check_scores(const double *s, size_t n, const char *what, pid_error *err)
{
    if (!s) return pid_fail(err, PID_ERR_ARG, "calib: %s scores are NULL", what);
    if (n == 0) return pid_fail(err, PID_ERR_ARG, "calib: no %s scores", what);
    for (size_t i = 0; i < n; i++)
        if (isnan(s[i])) return pid_fail(err, PID_ERR_ARG, "calib: %s score %zu is NaN", what, i);
    return PID_OK;
}

pid_status calib_auroc(const double *scores_known, size_t n_known, const double *scores_unknown,
                       size_t n_unknown, double *auroc, pid_error *err)
{
    pid_status st = check_scores(scores_known, n_known, "known", err);
    if (!st) st = check_scores(scores_unknown, n_unknown, "unknown", err);
    if (st) return st;
    if (!auroc) return pid_fail(err, PID_ERR_ARG, "calib: auroc is NULL");
    if (n_known > SIZE_MAX / sizeof(scored) - n_unknown)
        return pid_fail(err, PID_ERR_ARG, "calib: too many scores");

    size_t n = n_known + n_unknown;
    scored *all = malloc(n * sizeof *all);
    if (!all) return pid_fail(err, PID_ERR_NOMEM, "calib: AUROC scratch (%zu scores)", n);
    for (size_t i = 0; i < n_known; i++)
        all[i] = (scored){scores_known[i], 0};
    for (size_t i = 0; i < n_unknown; i++)
        all[n_known + i] = (scored){scores_unknown[i], 1};
    qsort(all, n, sizeof *all, cmp_scored);

    /* Sum of the unknown samples' midranks (1-based); a tie group i..j-1 shares
     * rank (i + 1 + j) / 2. */
    double rank_sum = 0.0;
    for (size_t i = 0; i < n;) {
        size_t j = i + 1;
        while (j < n && all[j].s == all[i].s)
            j++;
        double mid = 0.5 * ((double)(i + 1) + (double)j);
        for (size_t t = i; t < j; t++)
            if (all[t].unknown) rank_sum += mid;
        i = j;
    }
    free(all);
    double nu = (double)n_unknown, nk = (double)n_known;
    double U = rank_sum - nu * (nu + 1.0) / 2.0;
    *auroc = U / (nu * nk);
    return PID_OK;
}

pid_status calib_threshold_at_tpr(const double *scores_known, size_t n, double tpr, double *thr,
                                  pid_error *err)
{
    pid_status st = check_scores(scores_known, n, "known", err);
    if (st) return st;
    if (!(tpr > 0.0 && tpr <= 1.0))
        return pid_fail(err, PID_ERR_ARG, "calib: tpr %g outside (0, 1]", tpr);
    if (!thr) return pid_fail(err, PID_ERR_ARG, "calib: thr is NULL");

    double *s = malloc(n * sizeof *s);
    if (!s) return pid_fail(err, PID_ERR_NOMEM, "calib: threshold scratch (%zu scores)", n);
    memcpy(s, scores_known, n * sizeof *s);
    qsort(s, n, sizeof *s, cmp_double);
    /* The small slack keeps tpr * n = 95.000000001 (rounding of 0.95 * 100)
     * from asking for one sample more than intended. */
    double want = ceil(tpr * (double)n - 1e-9);
    size_t m = want < 1.0 ? 1 : (size_t)want;
    if (m > n) m = n;
    *thr = s[m - 1];
    free(s);
    return PID_OK;
}
