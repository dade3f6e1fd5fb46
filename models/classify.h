/* Inference with a trained model file: loads it onto a backend, brings
 * measured patterns onto its input grid (wavelength conversion, resampling,
 * preprocessing) and turns logits into probabilities, fractions, unknown score. */
#ifndef PID_MODELS_CLASSIFY_H
#define PID_MODELS_CLASSIFY_H

#include <stdint.h>

#include "core/status.h"
#include "models/modelfile.h"
#include "models/net.h"
#include "synth/xy.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A pattern covering less than this fraction of the model's grid is refused. */
#define CLS_MIN_COVERAGE 0.5
/* Probability from which a class counts as present for a sigmoid head
 * without a fitted set rule (calib_present_set: logit >= 0); softmax heads
 * always predict their top class. */
#define CLS_PRESENT_PROB 0.5

typedef struct cls_classifier cls_classifier;

/* Results of cls_run for up to `capacity` frames, a plain record owned by the
 * caller (cls_results_create / cls_results_destroy). Row f of each [n, K]
 * array belongs to frame f; K = n_classes.
 *   prob        calibrated probabilities: softmax(z / T) for softmax heads
 *               (rows sum to 1), sigmoid(z / T) per class for sigmoid heads
 *   order       class indices by decreasing logit, so by decreasing
 *               probability (ties: lower index)
 *   present     1 for the predicted phases (calib_present_set, the rule the
 *               residual threshold was fitted with): the top class, plus
 *               (sigmoid heads) the next classes by probability admitted by
 *               the model's fitted set rule (mf_model.set_rule), or without
 *               one every class with logit >= 0, i.e. prob >=
 *               CLS_PRESENT_PROB up to the float rounding of prob
 *   fraction    phase fractions: the fractions head's softmax renormalized
 *               over the present classes; without that head 1.0 for a single
 *               present class and NaN (unknown) when several are present;
 *               0 for absent classes
 *   unknown_score  energy -T * logsumexp(z / T) of the head logits (higher =
 *               less like the training phases)
 *   residual    physics residual (models/residual.h): the fraction of the
 *               frame's peak intensity the present phases do not explain; NaN
 *               when the residual check is off (no threshold in the model
 *               file, a Q-axis model, a phase CIF not found, or no_residual)
 *   missing     the check's other side (rsd_result.missing): with one phase
 *               present, the fraction of its strong reflections' intensity
 *               that shows no peak at its fitted cell; 0 with several present;
 *               NaN when the residual check is off
 *   unknown     1 when unknown_score > the model's unknown_threshold, the
 *               residual > the model's residual_threshold, or missing > the
 *               model's missing_threshold (when it has one) */
typedef struct {
    int capacity;
    int n; /* frames filled by the last cls_run */
    int64_t n_classes;
    float *prob;
    int32_t *order;
    uint8_t *present;
    float *fraction;
    double *unknown_score;
    double *residual;
    double *missing; /* [n] */
    uint8_t *unknown;
} cls_results;

/* Load the model file at `model_path` (mf_load: every field validated), build
 * its spec on the input shape and class count, create the inference network
 * (net_create_infer, all online cores) with the model's weights on backend
 * `device` ("cpu", "cuda", "auto"; NULL = "auto") for batches up to max_batch
 * (>= 1). On success *out is owned by the caller
 * (cls_close); on failure *out is NULL, nothing leaks, and err names the file
 * and the problem (status from mf_load, net_spec_*, pid_backend_create,
 * net_create_infer). */
pid_status cls_open(cls_classifier **out, const char *model_path, const char *device, int max_batch,
                    pid_error *err);

/* cls_open with more choices; zero fields take the defaults. */
typedef struct {
    const char *device; /* "cpu", "cuda", "auto"; NULL = "auto" */
    int max_batch;      /* >= 1 */
    int n_threads;      /* CPU worker threads (0 = all online cores; capped at them) */
    int chunk;          /* frames per CPU worker step (0 = automatic; net_infer_opts) */
    int reference;      /* 1: inference net on the reference kernels (net_infer_opts) */
    int training_net;   /* 1: a training net (net_create: every layer's output and gradient
                         * kept, BN not folded, one thread) run with training = 0, the
                         * engine before inference nets; for comparisons and tests */
    int no_residual;    /* 1: skip the physics residual check (faster; unknown from the
                         * energy score alone) */
} cls_options;

/* Like cls_open; by default the network is an inference net
 * (net_create_infer: BN folded, fused kernels, the batch split over the
 * backend's threads, memory independent of max_batch). */
pid_status cls_open_opts(cls_classifier **out, const char *model_path, const cls_options *opts,
                         pid_error *err);

/* Free everything; accepts NULL. */
void cls_close(cls_classifier *c);

/* The network (owned by c, valid until cls_close; for net_profile_* and
 * net_infer_*), and the CPU threads inference runs on (1 for a training net
 * or CUDA). */
net *cls_net(cls_classifier *c);
int cls_threads(const cls_classifier *c);
/* The vector level of the CPU kernels ("avx512", "avx2", "generic"; "cuda"
 * on a CUDA backend). */
const char *cls_cpu_kernels(const cls_classifier *c);
/* 1 when cls_run applies the physics residual check. */
int cls_has_residual(const cls_classifier *c);

/* The loaded model (owned by c, valid until cls_close); values per frame
 * (the input shape's count); the backend's name ("cpu" / "cuda"). */
const mf_model *cls_model(const cls_classifier *c);
int64_t cls_frame_size(const cls_classifier *c);
const char *cls_device_name(const cls_classifier *c);

/* Bring a measured pattern onto the model's input: frame[cls_frame_size]
 * (caller-owned) gets the pattern linearly resampled onto the model grid
 * (points outside the measured range are 0), then background removal (SNIP,
 * half window 1.5 deg 2-theta or 0.1 1/A in Q) when the model asks for it,
 * then the model's normalization (max: divide by the largest value; area:
 * by the sum).
 * meas_wavelength_a: wavelength (angstrom) of the measurement, whose x is
 * then 2-theta in degrees; it is converted through the d-spacing to the
 * model's first line, 2t' = 2 asin(lambda_model / lambda_meas * sin t), or to
 * Q = 4 pi sin(t) / lambda_meas for a Q model. NULL: x is already on the
 * model's axis at the model's wavelength.
 * Refuses (PID_ERR_FORMAT, frame unspecified): non-finite x or y, a pattern
 * whose (converted) range covers less than CLS_MIN_COVERAGE of the model grid,
 * a flat pattern (nothing left to normalize). PID_ERR_ARG for a bad
 * wavelength. */
pid_status cls_prepare_xy(const cls_classifier *c, const pid_xy *xy,
                          const double *meas_wavelength_a, float *frame, pid_error *err);

/* Preprocess a pattern that is already on the model grid (a row of an HDF5
 * stack): background removal and normalization as above, from in[] into
 * frame[] (both cls_frame_size floats; may alias). Refuses non-finite values
 * and flat patterns (PID_ERR_FORMAT). */
pid_status cls_prepare_frame(const cls_classifier *c, const float *in, float *frame,
                             pid_error *err);

/* Results for up to `capacity` (>= 1) frames of c's model; *out is owned by
 * the caller (cls_results_destroy, which accepts NULL). */
pid_status cls_results_create(cls_results **out, const cls_classifier *c, int capacity,
                              pid_error *err);
void cls_results_destroy(cls_results *r);

/* Classify n frames (host memory, n x cls_frame_size floats, prepared by
 * cls_prepare_*; n <= results->capacity), in batches of the max_batch given
 * to cls_open, with inference-mode forwards (BN running stats, no dropout).
 * Fills results rows 0..n-1 and sets results->n = n. Not for concurrent
 * calls on one classifier (it owns one network); on the CPU each call uses
 * the classifier's threads. */
pid_status cls_run(cls_classifier *c, const float *frames, int n, cls_results *results,
                   pid_error *err);

#ifdef __cplusplus
}
#endif
#endif
