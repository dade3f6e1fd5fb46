/* Model files: the self-describing, versioned HDF5 file that carries a trained
 * network and everything needed to use it (architecture, weights, phases with
 * provenance, input grid, preprocessing, calibration, unknown-phase threshold,
 * training provenance). Saving is atomic; loading validates every field.
 *
 * Layout (format version 1):
 *   /                 attributes: format = "phaseid-model", format_version,
 *                     modality, arch_spec, head, input_shape, n_classes,
 *                     n_params, n_buffers, preprocessing, background_removal,
 *                     normalization, temperature, ece, unknown_score,
 *                     unknown_threshold, unknown_auroc, [residual_threshold,
 *                     residual_strain_max], [missing_threshold], [set_thresholds],
 *                     train_seed, train_steps,
 *                     train_batch, train_flops, generator, phaseid_version,
 *                     created, library
 *   /params           float32 [n_params]   trainable parameters, flat
 *   /optimizer_m, /optimizer_v  float32 [n_params], optional: AdamW moments
 *                     of a checkpoint (attribute optimizer_step)
 *   /buffers          float32 [n_buffers]  BN running statistics, flat
 *   /phases/names, /phases/formulas, /phases/sources, /phases/references
 *                     variable-length UTF-8 strings [n_classes]
 *   /phases/cells     float64 [n_classes, 6], optional (with the four below):
 *                     a b c (angstrom) alpha beta gamma (deg)
 *   /phases/spacegroups  int32 [n_classes]
 *   /phases/sticks_offset int64 [n_classes + 1]: phase c's sticks are rows
 *                     offset[c] .. offset[c + 1] - 1 of
 *   /phases/sticks_hkl int32 [n_sticks, 3], /phases/sticks_d float64
 *                     [n_sticks] (d-spacing, angstrom) and
 *                     /phases/sticks_intensity float32 [n_sticks] (first
 *                     wavelength, strongest of the phase = 100): the sticks
 *                     the physics residual check uses (rsd_phase_sticks), so
 *                     it (and the dashboard's sticks) need no CIF
 *   /phases/twins     int32 [n, 2], optional, with /phases/twin_cosines
 *                     float32 [n]: the pairs of near twins (models/twins.h)
 *   /grid             attributes: axis ("2theta" | "Q"), x0, step, n_points,
 *                     wavelengths_a, weights (arrays of 1..2), source */
#ifndef PID_MODELS_MODELFILE_H
#define PID_MODELS_MODELFILE_H

#include <stdint.h>
#include <stdio.h>

#include "core/status.h"
#include "models/calib.h"
#include "models/spec.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The newest format this build reads and the one it writes. */
#define MF_FORMAT_VERSION 1

typedef enum { MF_NORM_NONE = 0, MF_NORM_MAX, MF_NORM_AREA, MF_NORM_COUNT } mf_norm_kind;

/* One output class. All strings heap-owned by the enclosing mf_model. */
typedef struct {
    char *name;      /* "quartz-alpha" */
    char *formula;   /* "SiO2" */
    char *source;    /* CIF provenance: path the phase was built from */
    char *reference; /* literature / database reference ("COD 9000775", ...) */
} mf_phase;

/* The grid the network's input is sampled on: x_j = x0 + j * step. */
typedef struct {
    int axis;                    /* k_xrd_axis: 0 = 2-theta (deg), 1 = Q (1/angstrom) */
    double x0;                   /* first point, axis units */
    double step;                 /* spacing, axis units, > 0 */
    int64_t n_points;            /* must equal the input shape's length */
    int n_lines;                 /* 1 or 2 source lines */
    double wavelength_a[2];      /* angstrom */
    double wavelength_weight[2]; /* relative intensity, line 0 > 0 */
    char *source;                /* "CuKa", "0.4133", ... (heap) */
} mf_grid;

/* A model file in memory. A plain record: every pointer field is malloc'd and
 * owned by the record, and mf_model_destroy frees them all (with free()). A
 * caller that fills one by hand for mf_save may point fields at its own
 * memory, but must then not pass it to mf_model_destroy. */
typedef struct {
    int64_t format_version; /* MF_FORMAT_VERSION */
    char *modality;         /* "xrd" */
    char *arch_spec;        /* canonical net spec string (net_spec_canonical) */
    net_head_kind head;     /* must agree with the spec's head layer */
    int head_fractions;     /* 1: the spec's head has a fractions branch */
    net_shape input;        /* per-frame input shape, e.g. 1 x 7001 */
    int64_t n_classes;

    mf_phase *phases; /* [n_classes] */
    mf_grid grid;

    /* Preprocessing applied to a measured pattern before the network. */
    char *preprocessing;    /* e.g. "resample-linear; max-normalize" */
    int background_removal; /* 0 / 1 */
    mf_norm_kind normalization;

    /* Calibration (temperature scaling of the logits). */
    double temperature; /* > 0 */
    double ece;         /* expected calibration error after scaling, [0, 1], of the top
                           phase's probability (older multi-label files: of every phase's;
                           newer ones have ece_per_class in the generator JSON) */

    /* Unknown-phase detection. */
    char *unknown_score;      /* "energy" */
    double unknown_threshold; /* scores above this are flagged unknown */
    double unknown_auroc;     /* held-out AUROC of the score, [0, 1] */
    /* Physics residual check (models/residual.h), optional (attributes
     * residual_threshold and residual_strain_max; absent in older files):
     * a frame is also flagged unknown when the predicted phases leave more
     * than residual_threshold of its peak intensity unexplained, fitting
     * their cells within +-residual_strain_max. 0 = no residual check. */
    double residual_threshold;  /* (0, 1], or 0 = off */
    double residual_strain_max; /* [0, 0.1] */
    /* The check's missing-reflection side (rsd_result.missing), optional
     * attribute missing_threshold (absent in older files), only with the
     * residual check: a frame whose one reported phase leaves more than this
     * fraction of its strong reflections' intensity without a peak is
     * flagged unknown too. 0 = off. */
    double missing_threshold; /* (0, 1], or 0 = off */
    /* How many phases a sigmoid head reports (calib_set_rule), optional
     * attribute set_thresholds: the calibrated-probability thresholds of
     * ranks 1..n-1 (n - 1 values in (0, 1), so n is 2..CALIB_MAX_SET);
     * absent (n = 0, older files): every class with probability >= 0.5. */
    calib_set_rule set_rule;
    /* The phases' cells, space groups and residual-check sticks (optional
     * datasets, see the layout above; all NULL when absent). */
    double *phase_cells; /* [6 n_classes] */
    int32_t *phase_sg;   /* [n_classes], 1..230 */
    int64_t *stick_off;  /* [n_classes + 1], 0 .. n_sticks, non-decreasing */
    int64_t n_sticks;    /* stick_off[n_classes] */
    int32_t *stick_hkl;  /* [3 n_sticks] */
    double *stick_d;     /* [n_sticks], > 0 */
    float *stick_int;    /* [n_sticks], >= 0 */
    /* Near twins among the phases (models/twins.h), optional datasets
     * /phases/twins int32 [n_twins, 2] (pairs i < j) and
     * /phases/twin_cosines float32 [n_twins]; NULL and 0 when absent. */
    int32_t *twin_pairs;
    float *twin_cos;
    int64_t n_twins;

    /* Training provenance. */
    uint64_t train_seed;
    int64_t train_steps;
    int64_t train_batch;
    double train_flops;    /* total training FLOPs */
    char *generator;       /* generator settings, JSON-ish text */
    char *phaseid_version; /* PHASEID_VERSION of the trainer */
    char *created;         /* ISO 8601 UTC date of training */
    char *library;         /* path of the phase library used */

    int64_t n_params;  /* == the spec's trainable count */
    float *params;     /* [n_params], finite */
    int64_t n_buffers; /* == the spec's buffer count (BN running mean / var) */
    float *buffers;    /* [n_buffers], finite; NULL when n_buffers == 0 */

    /* Optional AdamW state of a training checkpoint (datasets optimizer_m,
     * optimizer_v [n_params], attribute optimizer_step): resuming from it
     * continues the optimizer exactly. NULL / 0 in finished models. */
    float *opt_m;     /* [n_params] finite, or NULL */
    float *opt_v;     /* [n_params] finite and >= 0, or NULL (both or neither) */
    int64_t opt_step; /* optimizer steps taken, >= 0 */
} mf_model;

/* A zeroed record with format_version = MF_FORMAT_VERSION, or NULL when out of
 * memory. Owned by the caller: mf_model_destroy. */
mf_model *mf_model_create(void);

/* Free m and everything it points to. Accepts NULL. */
void mf_model_destroy(mf_model *m);

/* Check a record for consistency: the checks mf_load applies (version,
 * modality, spec parses and builds on the input shape and n_classes to exactly
 * n_params / n_buffers with the stored head kind, finite parameters and
 * buffers, phases present, grid valid and matching the input length, settings
 * in range). PID_ERR_UNSUPPORTED for a newer version or unknown modality,
 * PID_ERR_FORMAT otherwise. */
pid_status mf_validate(const mf_model *m, pid_error *err);

/* Validate m and write it to `path`: the file is written to "<path>.tmp",
 * flushed to disk and renamed over `path`, so a crash leaves either the old
 * file or the new one, never half of one. On failure the temporary file is
 * removed and `path` is untouched. m stays owned by the caller. */
pid_status mf_save(const char *path, const mf_model *m, pid_error *err);

/* Read and validate a model file. On success *out is a new record owned by
 * the caller (mf_model_destroy); on failure *out is NULL and err names the
 * file and the problem: missing file or not HDF5 (PID_ERR_IO), truncated or
 * corrupt, missing attribute / dataset, bad content (PID_ERR_FORMAT), newer
 * format version or unknown modality (PID_ERR_UNSUPPORTED). */
pid_status mf_load(const char *path, mf_model **out, pid_error *err);

/* Human-readable multi-line summary of m. */
void mf_print_summary(FILE *f, const mf_model *m);
/* The near twins of phase k (class indices, file order) into out[cap];
 * returns how many there are (may exceed cap: only cap are written). */
int mf_phase_twins(const mf_model *m, int64_t k, int32_t *out, int cap);
/* 0 when training recorded that the unknown-phase AUROC was not measured
 * (no held-out phases: unknown_auroc then holds a placeholder), else 1. */
int mf_auroc_measured(const mf_model *m);
/* Free and clear the optional phase cells, sticks and near twins of a
 * record (a model saved afterwards has none). */
void mf_model_drop_sticks(mf_model *m);

/* Names: "none" / "max" / "area"; "softmax", "sigmoid", "softmax+fractions",
 * "sigmoid+fractions". */
const char *mf_norm_name(mf_norm_kind k);
const char *mf_head_name(net_head_kind head, int fractions);

#ifdef __cplusplus
}
#endif
#endif
