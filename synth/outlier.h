/* Outlier patterns for outlier-exposure training: powder-like profiles that
 * belong to no crystalline phase (random peak sets with no lattice behind
 * them, and amorphous-only humps), with the same instrument-like background
 * and noise as the augmented phase patterns, so a classifier can learn to be
 * unsure about what it was not trained on (Hendrycks et al., ICLR 2019). */
#ifndef PID_SYNTH_OUTLIER_H
#define PID_SYNTH_OUTLIER_H

#include <stdint.h>

#include "core/status.h"
#include "kernels/xrd_render.h"
#include "synth/structure.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Fraction of outliers that are amorphous only (broad humps, no sharp peak). */
#define PID_OUTLIER_AMORPHOUS_FRAC 0.1
/* Sharp-peak outliers have this many peaks, drawn uniformly. */
#define PID_OUTLIER_MIN_PEAKS 3
#define PID_OUTLIER_MAX_PEAKS 40

/* Render n outlier patterns index0 .. index0 + n - 1 of the stream `seed`
 * on `grid` (2-theta in degrees or Q in 1/angstrom; widths scale with the
 * axis span) into patterns[n, grid->n_points] (caller-owned host memory).
 * Each is either (PID_OUTLIER_AMORPHOUS_FRAC of them) one or two broad humps,
 * or PID_OUTLIER_MIN/MAX_PEAKS pseudo-Voigt peaks at uniformly random
 * positions with heavy-tailed heights and widths like the augmented phases',
 * plus a smooth polynomial background of up to 10 % and Gaussian noise of
 * 0.5-1.5 % of the maximum; every row is then scaled to a maximum of 1 and
 * clipped at 0, as the dataset's rows are. Pattern i depends only on
 * (seed, index0 + i). PID_ERR_ARG for a bad grid or n < 0. */
pid_status pid_outlier_patterns(const k_xrd_grid *grid, uint64_t seed, uint64_t index0, int n,
                                float *patterns, pid_error *err);

/* Lattice outliers: relatives of a known phase that are none of the known
 * phases (a crystal the network has not seen, with a lattice behind its
 * peaks, unlike the random peak sets above). Its cell lengths are scaled by
 * 1 -+ u, u uniform in [PID_OUTLIER_CELL_MIN, PID_OUTLIER_CELL_MAX] (sign at
 * random): one factor for cubic cells, a = b and c apart for tetragonal,
 * trigonal and hexagonal ones, each length apart for lower symmetry, so the
 * symmetry operations stay valid; each element is replaced by another (Z
 * 3..83) with probability 1/2, which changes the intensities. Named
 * "<name>~<index>". *out is owned by the caller (pid_structure_destroy).
 * Deterministic per (seed, index). */
#define PID_OUTLIER_CELL_MIN 0.06
#define PID_OUTLIER_CELL_MAX 0.20
pid_status pid_outlier_relative(const pid_structure *s, uint64_t seed, uint64_t index,
                                pid_structure **out, pid_error *err);

#ifdef __cplusplus
}
#endif
#endif
