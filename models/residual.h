/* The physics residual of a classification: how much of a pattern's peak
 * intensity the predicted phases cannot explain. Peaks are picked from the
 * frame by prominence; each predicted phase's simulated sticks
 * are fitted with one lattice scale (the strain range) and one zero shift,
 * and a peak counts as explained when a stick of some predicted phase lies
 * within a tolerance. A pattern of a phase the model does not know leaves
 * strong peaks unexplained even when the network is confident, so the
 * residual complements the network's energy score for the unknown flag.
 * Its converse side (rsd_check's missing) asks whether the strong
 * reflections of a phase reported alone are seen at the fitted cell: an
 * unknown phase with few peaks can have them all explained by a known
 * phase with many sticks, which then predicts peaks the pattern lacks. */
#ifndef PID_MODELS_RESIDUAL_H
#define PID_MODELS_RESIDUAL_H

#include <stdint.h>

#include "core/status.h"
#include "kernels/backend.h"
#include "synth/structure.h"
#include "synth/xrd.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Sticks weaker than this (strongest = 100) are not used. */
#define RSD_MIN_STICK 2.0
/* Peaks whose prominence is below this fraction of the most prominent
 * peak's are not picked (the augmentation's noise is at most 1.5 %). */
#define RSD_MIN_PEAK 0.05
/* A peak is explained by a stick within this distance (deg 2-theta) after
 * the phase's fitted scale and zero shift; half a grid step is added. */
#define RSD_TOL_DEG 0.15
/* Zero shifts tried: -RSD_MAX_SHIFT_DEG..+RSD_MAX_SHIFT_DEG by 0.1 deg. */
#define RSD_MAX_SHIFT_DEG 0.3

/* The missing-reflection check looks at reflections at least this strong
 * (strongest of the phase = 100) ... */
#define RSD_MISS_MIN_STICK 20.0
/* ... and counts one missing when its position's prominence is below this
 * fraction of what the phase's best-seen reflection predicts for it (a
 * March-Dollase texture of r = 0.5, the training augmentation's edge,
 * moves families' intensities relative to each other by up to 23x:
 * r^-3 = 8 along the axis, (r^2 + 1/r)^-3/2 = 0.35 across it). */
#define RSD_MISS_FRAC 0.05

/* At most this many peaks are picked (in 2-theta order). */
#define RSD_MAX_PEAKS 256

typedef struct rsd_table rsd_table;

/* Sticks of k phases (structures borrowed during the call) for a 2-theta grid
 * x_j = x0_deg + j * step_deg (j < n_points) and one or two source lines
 * (wavelengths_a, weights; a second line with weight >= 0.3 adds its own
 * sticks), with lattice scales 1 +- strain_max (0 <= strain_max <= 0.1) in
 * steps of 0.001. *out is owned by the caller (rsd_destroy). */
pid_status rsd_create(rsd_table **out, const pid_structure *const *phases, int k, double x0_deg,
                      double step_deg, int n_points, int n_lines, const double wavelengths_a[2],
                      const double weights[2], double strain_max, pid_error *err);
void rsd_destroy(rsd_table *t); /* accepts NULL */

/* A phase as the check needs it, without its structure: the cell, the space
 * group (cubic / uniaxial / lower decides the free cell lengths) and the
 * sticks' Miller indices and d-spacings (as rsd_phase_sticks gives them). A
 * model file stores these, so the check runs without the phases' CIFs. */
typedef struct {
    double cell[6];         /* a b c (angstrom), alpha beta gamma (deg) */
    int spacegroup;         /* 1..230 */
    int n;                  /* sticks */
    const int32_t *hkl;     /* [n][3] */
    const double *d;        /* [n], angstrom */
    const float *intensity; /* [n], strongest = 100; NULL: no missing-reflection check */
} rsd_phase;

/* The sticks rsd_create uses for structure s on that grid and first
 * wavelength with that strain range: every family that can reach the grid
 * at a lattice scale within 1 +- 2 strain_max (2 deg margin), at least
 * RSD_MIN_STICK of the strongest. *out is malloc'd (caller frees). */
pid_status rsd_phase_sticks(const pid_structure *s, double x0_deg, double step_deg, int n_points,
                            double wavelength_a, double strain_max, pid_xrd_stick **out, int *n,
                            pid_error *err);
/* rsd_create from stored phases (arrays borrowed during the call); the same
 * table rsd_create builds from the structures those sticks came from.
 * PID_ERR_ARG for bad settings, cells, space groups or d-spacings. */
pid_status rsd_create_from(rsd_table **out, const rsd_phase *phases, int k, double x0_deg,
                           double step_deg, int n_points, int n_lines,
                           const double wavelengths_a[2], const double weights[2],
                           double strain_max, pid_error *err);

/* Fraction in [0, 1] of the picked peak intensity of frame[n_points] that
 * the phases with present[c] != 0 do not explain (0 when no peak is picked).
 * Thread-safe for distinct scratch; scratch holds rsd_scratch_floats(t)
 * floats (caller-owned). */
double rsd_unexplained(const rsd_table *t, const float *frame, const uint8_t *present,
                       float *scratch);
int64_t rsd_scratch_floats(const rsd_table *t);

/* Both sides of the check: unexplained as rsd_unexplained returns it, and
 * missing. When exactly one phase has present[c] != 0, missing is the
 * fraction of the intensity of its strong reflections (>= RSD_MISS_MIN_STICK
 * of its strongest; reflections within 2 tolerances of each other count as
 * one) on the grid at its fitted cell and zero shift whose position shows a
 * prominence below RSD_MISS_FRAC of what its best-seen reflection predicts
 * for that intensity; 0 with fewer than two such groups, or with several
 * phases present (one phase's reflection can sit on another's shoulder,
 * which prominence does not see), and for phases given without stick
 * intensities (rsd_phase.intensity NULL). Same threading and scratch as
 * rsd_unexplained. */
typedef struct {
    double unexplained;
    double missing;
} rsd_result;
void rsd_check(const rsd_table *t, const float *frame, const uint8_t *present, float *scratch,
               rsd_result *out);
int rsd_n_phases(const rsd_table *t);
/* Caps the vector level of the fits at `max` (never above what the CPU
 * supports; tables start at the best) and returns the level now in force.
 * Every level gives the same results; tests compare them. */
pid_cpu_isa rsd_set_cpu_isa(rsd_table *t, pid_cpu_isa max);

#ifdef __cplusplus
}
#endif
#endif
