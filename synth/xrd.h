/* Powder X-ray diffraction physics: radiation sources, reflections to a
 * 2-theta/d limit, structure factors with X-ray atomic form factors (xraylib),
 * isotropic Debye-Waller, Lorentz-polarization (lab tube with optional
 * monochromator, linearly polarized synchrotron beam), symmetry-equivalent
 * reflections merged with their multiplicity, and stick patterns. */
#ifndef PID_XRD_H
#define PID_XRD_H

#include "kernels/xrd_types.h"
#include "synth/structure.h"

/* Radiation: up to two lines (K-alpha1, K-alpha2) with relative weights. */
typedef struct {
    int n_lines;
    double wavelength_a[2]; /* angstrom */
    double weight[2];       /* relative intensity (line 0 = 1) */
    char name[32];          /* "CuKa", "MoKa", "1.0000A", ... */
} pid_xrd_source;

/* Parse "CuKa" (K-alpha1 1.540562 + K-alpha2 1.544390, ratio 0.5), "CuKa1",
 * "MoKa", "MoKa1", "CoKa", "CrKa", "FeKa", "AgKa" (and "...Ka1"; wavelengths
 * from International Tables Vol. C, Table 4.2.2.1; names case-insensitive),
 * or a plain wavelength in angstrom ("0.4133"), which is a single line.
 * Anything else (empty, NaN, infinite, <= 0, trailing junk) -> PID_ERR_ARG
 * with a message naming the input. */
pid_status pid_xrd_source_parse(const char *spec, pid_xrd_source *src, pid_error *err);

typedef enum {
    PID_LP_LAB = 0,     /* unpolarized tube; monochromator angle optional */
    PID_LP_SYNCHROTRON, /* linearly polarized beam, scattering in the vertical plane */
    PID_LP_NONE
} pid_lp_mode;

typedef struct {
    pid_lp_mode mode;
    double mono_two_theta_deg; /* lab: monochromator 2-theta, 0 = none */
    double polarization;       /* synchrotron: fraction of linear polarization (0.95..1) */
} pid_lp;

/* Lorentz-polarization factor at scattering angle two_theta_deg (2t):
 * Lorentz 1/(sin^2 t cos t) times
 *   LAB, no monochromator:  1 + cos^2 2t
 *   LAB, monochromator 2t_m: (1 + cos^2 2t cos^2 2t_m) / (1 + cos^2 2t_m)
 *   SYNCHROTRON, polarization fraction p, E horizontal, 2t in the vertical
 *   plane (pyFAI's convention with chi = 90 deg, f = 2p - 1):
 *                            p + (1 - p) cos^2 2t
 * and NONE -> 1. The settings are not checked here (pid_xrd_sticks does). */
double pid_xrd_lp_factor(const pid_lp *lp, double two_theta_deg);

typedef struct {
    double two_theta_min_deg, two_theta_max_deg; /* range for sticks */
    pid_xrd_source source;                       /* sticks use line 0 only */
    pid_lp lp;
    int debye_waller;         /* 1: apply the sites' B_iso; 0: ignore them */
    double min_rel_intensity; /* drop sticks below this fraction of max (e.g. 1e-3) */
} pid_xrd_opts;

/* Defaults: 2-theta 5..90, CuKa, lab LP without monochromator (polarization
 * 0.95 kept for a switch to SYNCHROTRON), Debye-Waller on, min_rel_intensity
 * 1e-3. */
void pid_xrd_opts_default(pid_xrd_opts *o);

typedef struct {
    int h, k, l;      /* representative: most non-negative indices, then largest
                         (h,k,l) lexicographically ({100} -> 1 0 0) */
    int multiplicity; /* members of the family (Friedel pairs included) */
    double d_angstrom;
    double two_theta_deg;
    double f2;        /* |F|^2 of one member */
    double intensity; /* scaled so the strongest stick is 100 */
} pid_xrd_stick;

/* Stick pattern of one line of `opts->source` (line 0): one stick per family
 * of symmetry-equivalent reflections inside the 2-theta range, intensity =
 * |F|^2 * multiplicity * LP, sorted by 2-theta, strongest = 100. Families are
 * orbits of (h,k,l) under the rotations of s->rot plus Friedel's -h (rotations
 * that do not preserve the cell metric are ignored, with a warning). Sticks
 * below min_rel_intensity of the strongest, and systematic absences
 * (|F|^2 * mult < 1e-9 of the strongest), are dropped. *out is malloc'd
 * (caller frees); *out = NULL, *n = 0 when no reflection is in range. */
pid_status pid_xrd_sticks(const pid_structure *s, const pid_xrd_opts *opts, pid_xrd_stick **out,
                          int *n, pid_error *err);

/* Reflection table for the profile renderer: every family with d >= d_min
 * (angstrom) and relative |F|^2*mult above 1e-6 of the strongest, at the
 * unstrained cell, sorted by d descending, with texture data for the
 * PID_TEX_AXES axes (angles through G*; cos^2 values within 1e-4 merged;
 * beyond PID_TEX_NCOS values the closest are merged into their weighted
 * mean; weights sum to 1). *out is malloc'd (caller frees). Form factors are
 * evaluated at the unstrained d-spacing; the renderer recomputes positions
 * for strained cells. Cost O(reflections x Laue operations + families x
 * atoms): well under a millisecond to a few ms per phase for Cu to 90 deg. */
pid_status pid_xrd_reflections(const pid_structure *s, double d_min_angstrom, int debye_waller,
                               k_xrd_refl **out, int *n, pid_error *err);

/* X-ray atomic form factor f0(s) in electrons for atomic number z at
 * s = sin(theta)/lambda = 1/(2d) (1/angstrom), from xraylib's FF_Rayl (whose
 * momentum transfer q is this s). NaN for z outside xraylib's range or s < 0. */
double pid_xrd_form_factor(int z, double s_inv_angstrom);

#endif
