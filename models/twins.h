/* Near twins: pairs of phases whose powder patterns XRD cannot tell apart
 * under the training augmentation. For two phases of the same crystal
 * family with cells the lattice strain can bring together, the cosine
 * similarity of their Gaussian-broadened stick patterns is maximized over
 * the strains of the second phase relative to the first; at or above
 * TWIN_MIN_COS (less than texture alone typically changes one phase's
 * pattern: median 0.9976 over the built-in phases, benchmarks/RESULTS.md)
 * only relative intensities, which texture and noise blur, tell them apart.
 * The classifier reports them with each phase and does not report a twin of
 * an already reported phase as a second phase (calib_present_set). */
#ifndef PID_MODELS_TWINS_H
#define PID_MODELS_TWINS_H

#include <stdint.h>

#include "core/status.h"
#include "synth/structure.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TWIN_MIN_COS 0.995
/* Broadening of the compared patterns (deg 2-theta). */
#define TWIN_FWHM_DEG 0.25

/* One phase as the comparison needs it (arrays borrowed during the call). */
typedef struct {
    double cell[6];         /* a b c (angstrom), alpha beta gamma (deg) */
    int spacegroup;         /* 1..230 */
    int n;                  /* sticks */
    const int32_t *hkl;     /* [n][3] */
    const float *intensity; /* [n], any scale */
} twin_phase;

/* Pairs (i < j) of phases[k] that are near twins on the 2-theta grid
 * x0_deg + step_deg * [0, n_points) at wavelength_a (angstrom) when each
 * phase's cell lengths may be strained by up to +-strain_max (so one
 * relative to the other by up to +-2 strain_max): same crystal family
 * (cubic; tetragonal; hexagonal and trigonal; orthorhombic; monoclinic and
 * triclinic cells are not compared), angles within 0.5 deg, every cell
 * length ratio within (1 + s) / (1 - s), and a best cosine >= min_cos. The
 * strain scan: one factor for cubic cells; a (= b) and c for uniaxial ones;
 * a and one shared for b and c for orthorhombic ones (which can only
 * under-rate a pair), 25 values over +-2 strain_max, then 21 x 11 within
 * +-0.005 of the best. *pairs ([n][2] int32) and *cosines ([n]) are
 * malloc'd (NULL when n = 0; caller frees). PID_ERR_ARG for bad settings
 * or phases. */
pid_status twins_find(const twin_phase *phases, int k, double x0_deg, double step_deg, int n_points,
                      double wavelength_a, double strain_max, double min_cos, int32_t **pairs,
                      float **cosines, int *n_pairs, pid_error *err);

/* Pairs[n][2] of classes in [0, k) as a [k * k] matrix, 1 for each pair
 * both ways, into *out (caller frees); *out = NULL when n = 0. Pairs out of
 * range are skipped (model files refuse them). */
pid_status twins_matrix(const int32_t *pairs, int64_t n, int64_t k, uint8_t **out, pid_error *err);

/* Structure s as twins_find needs it on that grid and wavelength: its
 * sticks as the residual check keeps them (rsd_phase_sticks with
 * strain_max), cell and space group. *hkl and *intensity are malloc'd
 * (caller frees; *out borrows them). Errors of rsd_phase_sticks. */
pid_status twins_phase_of(const pid_structure *s, double x0_deg, double step_deg, int n_points,
                          double wavelength_a, double strain_max, twin_phase *out, int32_t **hkl,
                          float **intensity, pid_error *err);

#ifdef __cplusplus
}
#endif
#endif
