/* Post-hoc calibration and unknown-phase scoring on host arrays of logits:
 * temperature scaling (Guo et al. 2017) for softmax and sigmoid heads, expected
 * calibration error with reliability diagrams, energy / max-softmax scores
 * (Liu et al. 2020), rank-based AUROC and a threshold at a target TPR.
 *
 * Conventions: logits are row-major [n, k] float; a softmax head has one int32
 * label in [0, k) per row; a sigmoid (multi-label) head has targets [n, k] in
 * [0, 1]. All arithmetic is in double with max-subtraction, so logits of any
 * finite magnitude are safe. Unknown scores follow "higher = more unknown".
 * Nothing here allocates memory the caller must free. */
#ifndef PID_CALIB_H
#define PID_CALIB_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Default number of equal-width confidence bins for the ECE (Guo et al.). */
#define CALIB_ECE_DEFAULT_BINS 15
/* Search interval of the temperature fits. */
#define CALIB_T_MIN 0.05
#define CALIB_T_MAX 20.0

/* One bin of a reliability diagram. Bin b covers confidences (b/M, (b+1)/M]
 * (bin 0 also takes 0). mean_conf and accuracy are 0 when count is 0; for the
 * multi-label variant `accuracy` is the mean target (fraction positive). */
typedef struct {
    int64_t count;
    double mean_conf;
    double accuracy;
} calib_bin;

/* Temperature T in [CALIB_T_MIN, CALIB_T_MAX] minimizing the mean negative
 * log-likelihood of softmax(logits / T) against `labels` (fit on held-out
 * data). Golden-section search on log T; the NLL is convex in 1/T, hence
 * unimodal in log T. Returns PID_ERR_ARG for NULL pointers, n = 0, k < 2,
 * non-finite logits or labels outside [0, k). *T is written only on success. */
pid_status calib_fit_temperature(const float *logits, const int32_t *labels, size_t n, size_t k,
                                 double *T, pid_error *err);

/* Mean softmax NLL (nats per sample) of logits / T; for checking fits. Same
 * validation as calib_fit_temperature, plus T must be finite and > 0. */
pid_status calib_nll(const float *logits, const int32_t *labels, size_t n, size_t k, double T,
                     double *nll, pid_error *err);

/* Expected calibration error of softmax(logits / T): confidence = max softmax
 * probability, correct = (argmax == label, first index on ties);
 * ECE = sum_b (count_b / n) |accuracy_b - mean_conf_b|. n_bins <= 0 selects
 * CALIB_ECE_DEFAULT_BINS (at most 100000 bins). `bins` may be NULL; otherwise
 * it must hold the resolved number of bins and receives the reliability
 * diagram. Validation as calib_nll. */
pid_status calib_ece(const float *logits, const int32_t *labels, size_t n, size_t k, double T,
                     int n_bins, double *ece, calib_bin *bins, pid_error *err);

/* Multi-label (sigmoid head) twins: every (sample, class) pair is one binary
 * prediction p = sigmoid(logit / T) against target t in [0, 1]. The fit
 * minimizes the mean per-class binary cross-entropy; the ECE bins the n*k
 * probabilities p and compares mean p with the mean target per bin. k >= 1. */
pid_status calib_fit_temperature_multilabel(const float *logits, const float *targets, size_t n,
                                            size_t k, double *T, pid_error *err);
pid_status calib_nll_multilabel(const float *logits, const float *targets, size_t n, size_t k,
                                double T, double *nll, pid_error *err);
pid_status calib_ece_multilabel(const float *logits, const float *targets, size_t n, size_t k,
                                double T, int n_bins, double *ece, calib_bin *bins, pid_error *err);
/* ECE of a multi-label head's top phase, the probability a user reads first:
 * per row, confidence = sigmoid(max logit / T), correct = (target of the
 * argmax > 0.5, first index on ties), binned as calib_ece. The per-class ECE
 * above is dominated by the k - (1..3) absent classes, whose probabilities
 * are near 0 and right, so it stays small while the top phase's
 * probability is off. Validation as calib_ece_multilabel. */
pid_status calib_ece_top_multilabel(const float *logits, const float *targets, size_t n, size_t k,
                                    double T, int n_bins, double *ece, calib_bin *bins,
                                    pid_error *err);

/* Energy score -T * logsumexp(logits / T) of one row of k logits (Liu et al.
 * 2020); higher = more likely unknown. Returns NaN when logits is NULL, k = 0,
 * T is not finite and > 0, or a logit is not finite. */
double calib_energy(const float *logits, size_t k, double T);

/* Most phases a fitted set rule reports. */
#define CALIB_MAX_SET 8
/* Grid of the set rule's thresholds: CALIB_SET_T_LO..CALIB_SET_T_HI by
 * CALIB_SET_T_STEP (calibrated probabilities). */
#define CALIB_SET_T_LO 0.05
#define CALIB_SET_T_HI 0.95
#define CALIB_SET_T_STEP 0.025

/* How many phases a multi-label (sigmoid) classification reports, fitted on
 * held-out patterns (calib_fit_set_rule): with the classes ranked by logit,
 * rank 0 is always present, and rank r (1 <= r < n) is present when rank
 * r - 1 is and its calibrated probability sigmoid(z / T) >= thr[r] (thr[0]
 * is not used). n = 0: no rule fitted, every class with sigmoid(z / T) >= 0.5
 * (z >= 0) is present, however many. */
typedef struct {
    int n; /* 0, or the most phases reported (2..CALIB_MAX_SET) */
    double thr[CALIB_MAX_SET];
} calib_set_rule;

/* The phases a classification reports as present, from one row of k
 * logits: the top class, plus for a multi-label (sigmoid) head the classes
 * `rule` admits at temperature T (rule NULL or rule->n = 0: every class with
 * z >= 0). With a fitted rule and twin ([k * k], twin[i * k + j] != 0 when
 * classes i and j are near twins, models/twins.h; NULL = none), a class
 * that is a twin of one already reported is passed over: it does not count
 * as a rank, the next class by logit takes its place. present[k] gets 0/1;
 * returns how many are present (0 for bad input: NULL, k = 0, T not finite
 * and > 0). The one rule training (the residual threshold's fit) and
 * classification use. */
int calib_present_set(const float *logits, size_t k, int multilabel, double T,
                      const calib_set_rule *rule, const uint8_t *twin, uint8_t *present);

/* Fit the set rule for up to max_phases (2..CALIB_MAX_SET) phases on n rows
 * of sigmoid logits [n, k] with multi-hot targets [n, k] (> 0.5 = present)
 * at temperature T, twins passed over as calib_present_set does (twin may
 * be NULL): the thresholds (each on the grid above) that maximize
 * the exact-set accuracy (reported set == true set) over the rows with at
 * least one true phase, by coordinate ascent from 0.5 (two rounds; ties keep
 * the value nearer 0.5). *exact_before gets that accuracy for the unfitted
 * rule (n = 0), *exact_after for the result; when fitting does not beat the
 * unfitted rule, *rule is the unfitted one (n = 0). PID_ERR_ARG for bad
 * arguments or non-finite logits; no row with a true phase leaves the
 * unfitted rule with both accuracies NaN. */
pid_status calib_fit_set_rule(const float *logits, const float *targets, size_t n, size_t k,
                              double T, int max_phases, const uint8_t *twin, calib_set_rule *rule,
                              double *exact_before, double *exact_after, pid_error *err);

/* Maximum softmax probability of softmax(logits / T), in [1/k, 1]; lower =
 * more likely unknown, so use 1 - calib_msp(...) as an unknown score. NaN on
 * the same bad inputs as calib_energy. */
double calib_msp(const float *logits, size_t k, double T);

/* AUROC of separating unknown from known samples by a score where higher =
 * more unknown: the Mann-Whitney U of the unknown scores over n_known *
 * n_unknown, ties counted half (midranks). 1.0 = perfect, 0.5 = chance.
 * PID_ERR_ARG for NULL pointers, empty sets or NaN scores (+-inf are allowed);
 * PID_ERR_NOMEM if the (n_known + n_unknown) scratch array cannot be had. */
pid_status calib_auroc(const double *scores_known, size_t n_known, const double *scores_unknown,
                       size_t n_unknown, double *auroc, pid_error *err);

/* Threshold for the rule "accept as known when score <= thr": the
 * ceil(tpr * n)-th smallest known score, so at least a fraction tpr of the
 * known samples is accepted (exactly ceil(tpr * n) of them when scores are
 * distinct). tpr in (0, 1]. Errors as calib_auroc. */
pid_status calib_threshold_at_tpr(const double *scores_known, size_t n, double tpr, double *thr,
                                  pid_error *err);

#ifdef __cplusplus
}
#endif
#endif
