/* Training of phase-identification networks on synthetic XRD patterns made on
 * the fly by the simulator (synth/xrd_dataset.h): double-buffered batch
 * generation on worker threads, AdamW with linear warm-up and cosine decay,
 * held-out validation, checkpoints and resume, and the final model file. */
#ifndef PID_MODELS_TRAIN_H
#define PID_MODELS_TRAIN_H

#include <stdint.h>

#include "core/status.h"
#include "models/calib.h"
#include "kernels/backend.h"
#include "models/dataset.h"
#include "synth/phaselib.h"
#include "synth/xrd_dataset.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Validation indices start here in the generator's stream, far from the
 * training stream (step * batch + i), so the two never overlap. */
#define TRAIN_VAL_INDEX_BASE ((uint64_t)1 << 40)
/* Calibration indices (temperature fit, ECE, unknown-phase threshold and
 * AUROC) start here: disjoint from the training and validation streams. The
 * held-out ("unknown") phases are rendered from the same base by their own
 * generator. */
#define TRAIN_CALIB_INDEX_BASE ((uint64_t)1 << 41)
/* Default calibration set size and the true-positive rate on known patterns
 * at which the unknown-phase threshold is set. */
#define TRAIN_CALIB_DEFAULT_N 2000
#define TRAIN_UNKNOWN_TPR 0.95
/* The physics residual threshold (models/residual.h) is the residual of this
 * fraction of the known calibration patterns the model gets right, and at least
 * TRAIN_RESIDUAL_MIN_THRESHOLD; the cell fit allows the training strain plus
 * TRAIN_RESIDUAL_STRAIN_MARGIN. */
#define TRAIN_RESIDUAL_TPR 0.95
#define TRAIN_RESIDUAL_MIN_THRESHOLD 0.10
#define TRAIN_RESIDUAL_STRAIN_MARGIN 0.005
/* The missing-reflection threshold (rsd_result.missing: strong reflections
 * of a phase reported alone that show no peak) is the missing fraction of
 * this fraction of the known calibration patterns the model gets right with
 * one phase, and at least TRAIN_MISSING_MIN_THRESHOLD. Higher than the
 * residual's rate: a texture can hide a reflection of a known phase, and
 * this side only adds the cases the residual and energy miss. */
#define TRAIN_MISSING_TPR 0.99
#define TRAIN_MISSING_MIN_THRESHOLD 0.15
/* Stored unknown_auroc when no phase was held out (nothing to measure it on):
 * the chance value 0.5, finite and in [0, 1] so mf_validate accepts it; the
 * generator attribute then says "unknown_auroc_measured": false. */
#define TRAIN_AUROC_NOT_MEASURED 0.5

/* Placeholders written to a freshly trained model's calibration fields: the
 * file validator needs finite values in range, so an uncalibrated model says
 * so with these (calibration overwrites them): temperature 1 (no scaling),
 * ECE 1 (the worst possible: not measured), unknown-phase threshold 1e30
 * (nothing is ever flagged) and AUROC 0.5 (chance: not measured). The
 * generator attribute also carries "calibrated": false. */
#define TRAIN_UNCALIBRATED_TEMPERATURE 1.0
#define TRAIN_UNCALIBRATED_ECE 1.0
#define TRAIN_UNCALIBRATED_THRESHOLD 1e30
#define TRAIN_UNCALIBRATED_AUROC 0.5

typedef struct {
    const char *spec;                /* architecture (NULL = NET_SPEC_DEFAULT_XRD); a plain `head`
                                        becomes head(sigmoid,fractions) when mixtures > 1 */
    int64_t steps;                   /* optimizer steps, >= 1 */
    int batch;                       /* patterns per step, >= 1 */
    double lr;                       /* peak learning rate, > 0 */
    int64_t warmup;                  /* linear warm-up steps, 0 <= warmup < steps */
    double weight_decay;             /* AdamW decoupled weight decay, >= 0 */
    uint64_t seed;                   /* generator stream, weight init and dropout */
    int mixtures;                    /* phases per pattern 1..K_XRD_MAX_PHASES (1: softmax head) */
    int threads;                     /* generator worker threads (0 = the backend's CPU count) */
    int n_val;                       /* validation patterns (0 = none) */
    pid_xrd_dataset_opts gen;        /* grid, source, LP, augmentation; seed, n and
                                        mixtures_max are set from the fields above */
    const char *checkpoint;          /* model file rewritten every checkpoint_every steps
                                        and at the end (NULL = none) */
    int64_t checkpoint_every;        /* 0 = max(steps / 10, 1) */
    const char *resume;              /* checkpoint to continue from (NULL = fresh start) */
    int quiet;                       /* 1: no progress display */
    double *loss_curve;              /* optional [steps]: batch loss of every step run */
    int n_calib;                     /* calibration patterns after training (0 = no calibration:
                                        the TRAIN_UNCALIBRATED_* placeholders are stored) */
    const pid_phaselib *unknown_lib; /* phases held out of `lib` (NULL = none): their
                                        patterns give the unknown-phase AUROC */
    double holdout_frac;             /* recorded in the provenance only (the split itself is
                                        made by the caller, see train_split_phases), [0, 1) */
    const char *library;             /* library path recorded in the model (NULL = lib's folder) */
    double outlier_frac;             /* outlier exposure: this fraction of every training batch
                                        (the last rows) are outlier patterns of no phase
                                        (synth/outlier.h) with "none of them" targets: uniform
                                        probabilities (softmax) or all-absent (sigmoid);
                                        [0, 0.5], 0 = off */
    double outlier_lattice;          /* the share of those outlier rows that are lattice
                                        outliers (train_relatives) rather than random peak
                                        sets; [0, 1], 0 = none */
    double calib_widen;              /* calibration patterns (temperature, ECE, unknown threshold
                                        and AUROC) are drawn with every augmentation range widened
                                        by this factor (pid_augment_widen), so the confidence holds
                                        on data harder than the training data; >= 1, 1 = the
                                        training ranges */
    int no_residual;                 /* 1: no physics residual check in the model */
    int backend_render;              /* who renders the training batches: -1 (default) the
                                        backend's renderer when it is CUDA (the CUDA renderer,
                                        straight into the network's input; validation and
                                        calibration patterns stay on the CPU), else CPU worker
                                        threads; 1 the backend's renderer on any backend (on
                                        the CPU its one-thread twin: the same patterns bit for
                                        bit); 0 CPU worker threads. Simulated batches only.
                                        Recorded in the generator provenance ("batch_render") */
    const ds_xrd *data;              /* train on the rows of this dataset file (models/dataset.h)
                                        instead of simulating (NULL): its phases must be the
                                        library's, in order; training draws rows at random (with
                                        replacement, from the seed) from all but the last
                                        max(n_val, n_calib) rows (at most a fifth of the file),
                                        which are the validation and calibration set. The grid and
                                        radiation are the file's. */
} train_opts;

/* Defaults: default spec, 1000 steps, batch 64, lr 1e-3, warm-up 100 (capped
 * below steps), weight decay 1e-4, seed 0, single phase, 500 validation
 * patterns, no outlier exposure, calibration on the training ranges
 * (calib_widen 1), the generator's defaults (2-theta 10..80 deg
 * step 0.01, CuKa). */
void train_opts_default(train_opts *o);

typedef struct {
    int64_t steps_done;        /* total steps including resumed ones */
    double final_loss;         /* loss of the last step */
    double train_acc;          /* accuracy over the last (up to 50) steps' batches */
    double val_acc;            /* top-1 (softmax) or exact-set at 0.5 (sigmoid); -1 without n_val */
    double train_seconds;      /* wall time of the training loop */
    double samples_per_s;      /* training patterns per second */
    int calibrated;            /* 1 when the fields below were measured (n_calib > 0) */
    double temperature;        /* fitted temperature */
    double ece_before;         /* ECE at T = 1 on the calibration set (sigmoid heads: of the */
    double ece_after;          /* top phase, calib_ece_top_multilabel); at the fitted T (stored
                                  as the model's ece) */
    double ece_per_class;      /* sigmoid heads: ECE of all k probabilities at T (NaN: softmax) */
    calib_set_rule set_rule;   /* sigmoid heads: how many phases are reported (n = 0: not
                                  fitted, probability >= 0.5) */
    int n_twins;               /* pairs of near twins found in the library (models/twins.h) */
    double set_exact_before;   /* exact-set accuracy on the calibration set at 0.5 (NaN: */
    double set_exact_after;    /* softmax head) and with set_rule */
    double unknown_threshold;  /* energy threshold at TRAIN_UNKNOWN_TPR of the known */
    double unknown_auroc;      /* known vs held-out phases; TRAIN_AUROC_NOT_MEASURED without */
    int n_unknown_phases;      /* phases in unknown_lib (0 = none) */
    double residual_threshold; /* physics residual threshold (0 = no residual check) */
    double residual_strain;    /* cell-length range of its fit */
    double residual_auroc;     /* residual of known vs held-out phases (TRAIN_AUROC_NOT_MEASURED
                                  without) */
    double missing_threshold;  /* missing-reflection threshold (0 = no residual check) */
    double missing_auroc;      /* its AUROC, known vs held-out (TRAIN_AUROC_NOT_MEASURED
                                  without) */
    double flagged_known;      /* calibration patterns flagged unknown (energy, residual or
                                  missing reflections) */
    double flagged_unknown;    /* held-out phase patterns flagged unknown (-1 without) */
    int n_val;                 /* validation patterns used (n_val, capped by a dataset file) */
    int n_calib;               /* calibration patterns used (likewise) */
} train_result;

/* Learning rate at step s (0-based) of `steps`: linear warm-up
 * lr * (s + 1) / warmup for s < warmup, then cosine decay
 * lr * 0.5 * (1 + cos(pi * (s - warmup) / (steps - warmup))), so it equals
 * lr at s = warmup - 1 and s = warmup and reaches 0 at s = steps. */
double train_lr_at(int64_t s, int64_t steps, int64_t warmup, double lr);

/* Check the settings (PID_ERR_ARG naming the field). */
pid_status train_opts_validate(const train_opts *o, pid_error *err);

/* Split the *.cif files of `dir` (or "builtin") reproducibly from `seed`:
 * round(frac * files) of them (at least 1 when frac > 0, and always leaving
 * at least 2) are held out. Symbolic links to the files are made in two new
 * temporary folders, known_dir and unknown_dir (each of cap >= 64 bytes;
 * unknown_dir is "" when nothing is held out), loaded as *known and *unknown
 * (*unknown = NULL when nothing is held out). frac must be in [0, 1).
 * train_split_cleanup removes the folders. */
pid_status train_split_phases(const char *dir, double frac, uint64_t seed, char *known_dir,
                              char *unknown_dir, size_t cap, pid_phaselib **known,
                              pid_phaselib **unknown, pid_error *err);
void train_split_cleanup(const char *known_dir, const char *unknown_dir);

/* Lattice outliers for outlier exposure: up to per_phase relatives of each
 * phase of lib (pid_outlier_relative, seed) on the generator's grid, less
 * those whose patterns come within cosine TRAIN_RELATIVE_MAX_COS of a phase
 * of lib at the augmentation's strain (twins_find), which would teach the
 * network to doubt a known phase. *out (caller frees) is NULL when none is
 * left; *n_rejected counts the dropped ones. */
#define TRAIN_RELATIVE_MAX_COS 0.98
/* Relatives drawn per phase for training's lattice outliers. */
#define TRAIN_RELATIVES_PER_PHASE 4
pid_status train_relatives(const pid_phaselib *lib, const pid_xrd_dataset_opts *g, int per_phase,
                           uint64_t seed, pid_phaselib **out, int *n_rejected, pid_error *err);

/* Train a network on `lib` (borrowed) with backend `be` (borrowed) and, when
 * out_path is non-NULL, save the final model there (mf_save, every field
 * filled). With n_calib > 0 the model is then calibrated on n_calib fresh
 * patterns (TRAIN_CALIB_INDEX_BASE): temperature fit (softmax NLL, or the
 * multi-label BCE for sigmoid heads), ECE before/after, the energy threshold
 * at TRAIN_UNKNOWN_TPR of the known patterns and, with unknown_lib, the AUROC
 * of the energy score on n_calib patterns of the held-out phases; otherwise
 * the calibration fields hold the TRAIN_UNCALIBRATED_* placeholders.
 * Resume: the checkpoint's parameters, step count and AdamW state (moments
 * and step, stored in checkpoints) are loaded, so the optimizer continues
 * exactly; a model file without optimizer state (a finished model) restarts
 * the moments from zero. The data stream and the schedule continue where they
 * stopped. Reproducible: the same settings and
 * seed on the same backend give the same losses whatever `threads` is.
 * res (may be NULL) receives the summary. */
pid_status train_run(const pid_phaselib *lib, const train_opts *o, pid_backend *be,
                     const char *out_path, train_result *res, pid_error *err);

#ifdef __cplusplus
}
#endif
#endif
