/* Training data from a dataset file: an HDF5 file written by
 * `phaseid synth xrd` (synth/xrd_dataset.h) loaded into memory, with its grid,
 * radiation, phase names and generator settings, for training without the
 * on-the-fly simulator. */
#ifndef PID_MODELS_DATASET_H
#define PID_MODELS_DATASET_H

#include <stdint.h>

#include "core/status.h"
#include "kernels/xrd_render.h"
#include "synth/xrd.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Refuse files whose patterns would take more memory than this. */
#define DS_MAX_BYTES ((int64_t)16 << 30)

/* A loaded dataset. A plain record owned by the caller (ds_destroy). */
typedef struct {
    int64_t n;        /* patterns */
    int p;            /* points per pattern */
    int k;            /* phases */
    float *patterns;  /* [n, p] */
    int32_t *labels;  /* [n] phase index, -1 for mixtures */
    float *multi_hot; /* [n, k] 0/1 */
    float *fractions; /* [n, k] rows sum to 1 */
    char **names;     /* [k] phase names (file's /phases) */
    k_xrd_grid grid;  /* from the file's axis attributes */
    pid_xrd_source source;
    int mixtures_max; /* phases per pattern the file was made with */
    char *library;    /* library_path attribute ("" when absent) */
    char *path;       /* the file */
} ds_xrd;

/* Load `path`. Checks: the datasets /patterns [n, p], /labels [n],
 * /multi_hot [n, k], /fractions [n, k], /phases [k] and /axis [p] exist with
 * these shapes; the axis is uniform (start/step attributes agree with it to
 * 1e-4 of a step) and 2-theta; the source attribute parses; every value is
 * finite; labels lie in -1..k-1 and every row has at least one phase
 * present. Errors name the file (PID_ERR_IO missing or not HDF5,
 * PID_ERR_FORMAT otherwise). *out is NULL on failure. */
pid_status ds_load(const char *path, ds_xrd **out, pid_error *err);
void ds_destroy(ds_xrd *d); /* accepts NULL */

#ifdef __cplusplus
}
#endif
#endif
