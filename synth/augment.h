/* XRD augmentation: settings (ranges with literature defaults), their
 * validation and HDF5 provenance, and the reproducible draw of one
 * pattern's renderer parameters (kernels/xrd_render.h) and labels: phases
 * and weight fractions of a mixture, symmetry-keeping lattice strain, zero
 * shift, sample displacement, crystallite size, microstrain, March-Dollase
 * texture, Caglioti widths, pseudo-Voigt mixing, background, impurity peaks
 * and noise. Pattern i draws only from Philox stream pid_rng_mix(seed, i),
 * so a dataset does not depend on how many threads or which device made it. */
#ifndef PID_AUGMENT_H
#define PID_AUGMENT_H

#include <hdf5.h>
#include <stdint.h>

#include "core/status.h"
#include "kernels/xrd_render.h"
#include "synth/xrd.h"

/* A closed range [lo, hi]; lo == hi draws that value. */
typedef struct {
    double lo, hi;
} pid_range;

/* Augmentation settings. Defaults (pid_augment_default) follow the ranges of
 * XRD-AutoAnalyzer, XCA and Schuetzke et al. (see REFERENCES.md). */
typedef struct {
    int enabled;       /* 0: clean patterns (fixed instrument, no noise); mixtures still drawn */
    double strain_max; /* lattice strain, fraction: 0.03 -> up to +-3 % per free cell length */
    double zero_shift_max_deg; /* zero shift uniform in [-max, max] (default 0.3) */
    double displacement_max;   /* sample displacement s/R uniform in [-max, max] (0.002: 0.2 deg at
                                  low angle) */
    pid_range size_nm;         /* crystallite size (5..100); {0, 0} = no size broadening */
    pid_range microstrain;     /* epsilon, fraction (0..0.003) */
    pid_range texture_r; /* March-Dollase r (0.5..1.5), axis uniform among the 4; {1, 1} = off */
    pid_range cag_u, cag_v,
        cag_w;     /* Caglioti U, V, W in deg^2 (V capped so the width stays real) */
    pid_range eta; /* pseudo-Voigt mixing (0.2..0.8) */
    int bg_order_min, bg_order_max; /* Chebyshev order (2..4) */
    double bg_max;         /* background up to this fraction of the peak maximum (0.10); 0 = none */
    pid_range hump_height; /* amorphous hump height, fraction of max (0..0.05) */
    pid_range hump_center_deg,
        hump_fwhm_deg;        /* its centre (15..35) and FWHM (5..15), 2-theta deg */
    pid_range air_height;     /* 1/x air scatter at the first point, fraction of max (0..0.05) */
    pid_range noise_sigma;    /* Gaussian noise, fraction of max (0.005..0.015) */
    pid_range poisson_counts; /* counts at max, log-uniform (1e3..1e5); {0, 0} = no Poisson noise */
    int impurities_max; /* extra unlabelled peaks per pattern, 0..max (default 0: labels stay clean)
                         */
    pid_range impurity_height;   /* fraction of the tallest phase peak (0.01..0.10) */
    pid_range impurity_fwhm_deg; /* 2-theta deg (0.05..0.3) */
    int mixtures_max;    /* phases per pattern drawn uniformly in 1..max (1 = single phase) */
    double min_fraction; /* smallest weight fraction in a mixture (0.1) */
} pid_augment;

void pid_augment_default(pid_augment *a);
/* Every range finite and lo <= hi, physical bounds (strain < 20 %, sizes >=
 * 0.5 nm, r > 0, fractions, counts >= 0, ...). PID_ERR_ARG names the field. */
pid_status pid_augment_validate(const pid_augment *a, pid_error *err);
/* Widen every augmentation range of `a` by the factor f >= 1 into *out (for
 * calibrating on data harder than the training data): strain, zero shift,
 * displacement, microstrain, background, hump, air scatter, noise and
 * impurity height maxima times f; crystallite size minimum and Poisson
 * counts minimum divided by f; texture r range [lo^f, hi^f] for lo < 1 < hi
 * (stronger texture both ways). Each result is capped at the bound
 * pid_augment_validate accepts, so *out validates whenever a does. f = 1
 * copies a. PID_ERR_ARG for f < 1 or non-finite f (out untouched). */
pid_status pid_augment_widen(const pid_augment *a, double f, pid_augment *out, pid_error *err);
/* Write every setting as an attribute of `loc` ("aug_strain_max", ...). */
pid_status pid_augment_write_attrs(const pid_augment *a, hid_t loc, pid_error *err);

/* One phase as the draw sees it: its families in the batch's k_xrd_refl
 * table, its unstrained cell, and the cell mass and volume for the
 * weight-fraction scale. */
typedef struct {
    int refl_offset, refl_count;
    double cell[6];       /* a b c (angstrom), alpha beta gamma (deg) */
    double cell_mass_amu; /* Z * M */
    double volume_a3;
} pid_aug_phase;

/* What a draw needs besides the settings. */
typedef struct {
    const pid_aug_phase *phases;
    int n_phases;
    k_xrd_grid grid;
    pid_xrd_source source;
    pid_lp lp;
} pid_aug_ctx;

/* Labels of one pattern: the phases present (library indices, distinct) and
 * their weight fractions (sum 1, each >= min_fraction). */
typedef struct {
    int n;
    int phase[K_XRD_MAX_PHASES];
    float fraction[K_XRD_MAX_PHASES];
} pid_aug_label;

/* Draw pattern `index` of a dataset with `seed`. Phases: their number
 * uniform in 1..mixtures_max (at most the library size), chosen uniformly
 * without repetition; fractions Dirichlet(1) mapped affinely onto
 * [min_fraction, 1]; per-phase scale = w / (cell_mass_amu * V) (Hill &
 * Howard 1987: W = S Z M V / sum S Z M V), relative to |F|^2 per cell. */
pid_status pid_augment_draw(const pid_augment *a, const pid_aug_ctx *ctx, uint64_t seed,
                            uint64_t index, k_xrd_pattern *pat, pid_aug_label *label,
                            pid_error *err);

/* Symmetry-keeping strain of a cell (a b c alpha beta gamma): lengths equal
 * within 1e-4 relative share one factor 1 + U(-s, s); angles at 90 or 120
 * deg stay; other angles equal within 1e-3 deg share one factor applied to
 * their deviation from 90 deg. So cubic changes a, tetragonal and hexagonal a
 * and c, rhombohedral a and alpha, orthorhombic a b c, monoclinic a b c beta,
 * triclinic all six. Exposed for tests. */
void pid_augment_strain_cell(const double cell[6], double strain_max, pid_rng *r, double out[6]);
/* Reciprocal metric of a cell as the renderer wants it: g11 g22 g33 g12 g13
 * g23 (1/angstrom^2). */
void pid_augment_gstar(const double cell[6], float gstar[6]);

#endif
