/* Demo beamline scenarios: sequences of powder XRD frames of physically
 * plausible in-situ experiments, rendered with the simulator (reflection
 * tables from synth/xrd.h, the instrument of synth/augment.h, the profile
 * renderer of kernels/xrd_render.h), each frame with its ground truth:
 *   heating-ramp      anatase -> anatase + rutile -> rutile while T rises
 *                     from 300 K to 1300 K (thermal expansion, grain growth),
 *                     then a few frames of brucite, a phase that is not in
 *                     the built-in library (truth: unknown)
 *   composition-scan  a combinatorial library: a triangular grid over the
 *                     ZnO - CeO2 - Fe2O3 (hematite) weight-fraction triangle
 * Frames carry Poisson counting noise and a smooth polynomial background;
 * everything depends only on the options and the seed. */
#ifndef PID_DEMO_H
#define PID_DEMO_H

#include <stdint.h>

#include "core/status.h"
#include "kernels/xrd_render.h"
#include "synth/structure.h"
#include "synth/xrd.h"

#define DEMO_MAX_PHASES 3
#define DEMO_MAX_FRAMES 1000000

/* Heating ramp (kelvin): the range and the anatase -> rutile transformation
 * window. Pure anatase transforms in air at roughly 870-1000 K, depending
 * on particle size and impurities (Hanaor & Sorrell, J. Mater. Sci. 46, 855
 * (2011)); the demo spreads it over DEMO_RUTILE_START_K .. END_K. */
#define DEMO_T_START_K 300.0
#define DEMO_T_END_K 1300.0
#define DEMO_RUTILE_START_K 850.0
#define DEMO_RUTILE_END_K 1100.0
/* Temperature of the CIF cells (room temperature) and the linear thermal
 * expansion coefficients (1/K) at 298 K of Hummer, Heaney & Post, Powder
 * Diffraction 22, 352 (2007): anatase alpha_a = 4.47e-6, alpha_c = 8.43e-6;
 * rutile alpha_a = 7.00e-6, alpha_c = 9.37e-6. The demo takes them constant
 * (a(T) = a_298 (1 + alpha (T - 298))), which underestimates the expansion
 * near 1300 K by some 20 %, plenty for a demo. */
#define DEMO_T_REF_K 298.0
#define DEMO_ANATASE_ALPHA_A 4.47e-6
#define DEMO_ANATASE_ALPHA_C 8.43e-6
#define DEMO_RUTILE_ALPHA_A 7.00e-6
#define DEMO_RUTILE_ALPHA_C 9.37e-6

/* Phase names (CIF file stems) the scenarios use. */
#define DEMO_ANATASE "TiO2_141"
#define DEMO_RUTILE "TiO2_136"
#define DEMO_UNKNOWN "brucite_164"

typedef enum { DEMO_HEATING_RAMP = 0, DEMO_COMPOSITION_SCAN = 1 } demo_kind;

typedef struct {
    int n_frames;  /* 20 .. DEMO_MAX_FRAMES (default 400) */
    uint64_t seed; /* default 0 */
    /* Output grid: 2-theta only (default 10..80 deg, step 0.01: 7001 points). */
    k_xrd_grid grid;
    pid_xrd_source source;   /* default CuKa (K-alpha1 + K-alpha2) */
    int noise;               /* 1 (default): Poisson noise and background; 0: clean */
    double unknown_fraction; /* heating ramp: share of out-of-library frames at the
                                end, 0 .. 0.5 (default 0.05; at least 1 frame when > 0) */
    const char *data_dir;    /* folder holding phases/ and demo/; NULL: the built-in data
                                folder (see pid_phaselib_builtin_dir) */
} demo_opts;

void demo_opts_default(demo_opts *o);

/* Ground truth of one frame. */
typedef struct {
    int n; /* phases present (fraction > 0), 1..DEMO_MAX_PHASES */
    char phase[DEMO_MAX_PHASES][PID_NAME_LEN];
    double fraction[DEMO_MAX_PHASES]; /* weight fractions, sum 1 */
    double cell_a[DEMO_MAX_PHASES];   /* a and c of each phase at this frame, angstrom */
    double cell_c[DEMO_MAX_PHASES];
    double size_nm[DEMO_MAX_PHASES]; /* crystallite size */
    int unknown;                     /* 1: the sample is not in the built-in library */
    double temperature_k;            /* heating ramp; NaN for the composition scan */
    /* Composition scan: nominal weight fractions of the three corners (phase
     * order of demo_corner_name); NaN for the heating ramp. */
    double composition[DEMO_MAX_PHASES];
} demo_truth;

typedef struct demo_scenario demo_scenario;

/* Scenario names ("heating-ramp", "composition-scan") -> kind; -1 if none. */
int demo_kind_parse(const char *name);
const char *demo_kind_name(demo_kind k);

/* Prepare scenario `name` with options `o` (copied; NULL = defaults): loads
 * the CIF files it needs from the data folder and their reflection tables.
 * PID_ERR_ARG for an unknown name or bad options (message names them),
 * PID_ERR_IO / PID_ERR_FORMAT when a CIF file is missing or bad. *out is NULL
 * on failure; free with demo_destroy. */
pid_status demo_create(demo_scenario **out, const char *name, const demo_opts *o, pid_error *err);
void demo_destroy(demo_scenario *d); /* accepts NULL */

demo_kind demo_get_kind(const demo_scenario *d);
int demo_n_frames(const demo_scenario *d);
int demo_n_points(const demo_scenario *d);
const k_xrd_grid *demo_grid(const demo_scenario *d);
/* Composition scan: the three corner phases (i = 0..2); NULL otherwise. */
const char *demo_corner_name(const demo_scenario *d, int i);

/* Ground truth of frame `index` (0 .. n_frames-1); PID_ERR_ARG outside. */
pid_status demo_truth_get(const demo_scenario *d, int index, demo_truth *t, pid_error *err);

/* Render frames index0 .. index0 + n - 1 into out (n x n_points floats,
 * caller-owned), each row's maximum 1, on the calling thread. A frame
 * depends only on (options, seed, index). Thread-safe on one handle. */
pid_status demo_render(const demo_scenario *d, int index0, int n, float *out, pid_error *err);

#endif
