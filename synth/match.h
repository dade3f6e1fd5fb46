/* Physics-only phase identification baseline: rank reference structures by
 * how well their simulated powder profiles match a measured pattern, after
 * SNIP background removal and allowing a small zero shift. No training; this
 * is the template-matching baseline the learned models are compared with. */
#ifndef PID_MATCH_H
#define PID_MATCH_H

#include "synth/structure.h"
#include "synth/xrd.h"
#include "synth/xy.h"

typedef struct {
    pid_xrd_source source;    /* radiation of the measurement */
    double two_theta_min_deg; /* compared range (clipped to the measurement) */
    double two_theta_max_deg;
    double step_deg;              /* comparison grid step */
    double max_zero_shift_deg;    /* zero shifts tried: -max..max in grid steps */
    double background_window_deg; /* SNIP half-window */
    double fwhm_deg;              /* simulated peak FWHM (instrument) */
    double smooth_deg;            /* Gaussian blur (FWHM) applied to both profiles, 0 = none */
} pid_match_opts;

/* Defaults: CuKa, 10..90 deg, 0.02 deg step, zero shift +-0.3 deg, SNIP
 * half-window 1.5 deg, FWHM 0.1 deg, blur 0.15 deg. */
void pid_match_opts_default(pid_match_opts *o);

typedef struct {
    int ref;               /* index into the reference array */
    double score;          /* cosine similarity in [-1, 1] at the best shift */
    double zero_shift_deg; /* shift applied to the simulation at the best score */
} pid_match_hit;

/* Score every reference against the measured pattern. hits (n_refs entries,
 * caller-allocated) come back sorted by score, best first. Errors if the
 * measured range and the options' range do not overlap by 5 deg or more. */
pid_status pid_match_rank(const pid_xy *measured, const pid_structure *const *refs, int n_refs,
                          const pid_match_opts *opts, pid_match_hit *hits, pid_error *err);

#endif
