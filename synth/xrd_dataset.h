/* Synthetic XRD datasets: N augmented profiles of the phases of a library,
 * rendered on the CPU (worker threads over pattern blocks) or on CUDA
 * (batches through the CUDA renderer), written to HDF5 as they are made:
 *   /patterns   float32 N x P   each row's maximum is 1
 *   /axis       float32 P       2-theta (deg) or Q (1/angstrom), attribute axis_kind
 *   /labels     int32   N       phase index, -1 for mixtures
 *   /multi_hot  uint8   N x K   1 where a phase is present
 *   /fractions  float32 N x K   weight fractions (rows sum to 1)
 *   /phases, /formulas          K strings
 * and every generator setting as attributes of the root group. The content
 * depends only on the settings and the seed, not on threads or batch sizes
 * (the device can change the last float bits: CUDA rounds differently). */
#ifndef PID_XRD_DATASET_H
#define PID_XRD_DATASET_H

#include <stdint.h>

#include "kernels/backend.h"
#include "synth/augment.h"
#include "synth/phaselib.h"
#include "synth/xrd.h"

typedef struct {
    int64_t n; /* patterns, >= 1 */
    uint64_t seed;
    k_xrd_grid grid; /* output axis */
    pid_xrd_source source;
    pid_lp lp;
    int debye_waller; /* 1: sites' B_iso in |F|^2 */
    pid_augment aug;
    int threads;         /* CPU workers (0 = the backend's count) */
    int batch;           /* patterns per block (0 = automatic) */
    int compress;        /* gzip level 0..9 for /patterns (0 = none: noisy float32
                            compresses ~20 % at ~20x the write time) */
    const char *command; /* command line, stored as provenance (may be NULL) */
} pid_xrd_dataset_opts;

/* Defaults: 1000 patterns, seed 0, 2-theta 10..80 deg step 0.01, CuKa, lab
 * LP, Debye-Waller on, default augmentation, automatic threads and batch. */
void pid_xrd_dataset_opts_default(pid_xrd_dataset_opts *o);

/* Called after every block with patterns done so far (from one thread at a
 * time); may be NULL. */
typedef void (*pid_progress_fn)(int64_t done, int64_t total, void *user);

/* Reflection table of a whole library for a grid/source: every phase's
 * families down to the d-spacing the grid can reach (with room for strain,
 * zero shift and the longest line), concatenated; phases[i] describes phase
 * i for pid_augment_draw. Caller frees *refl and *phases. */
pid_status pid_xrd_dataset_prepare(const pid_phaselib *lib, const k_xrd_grid *grid,
                                   const pid_xrd_source *src, double strain_max, int debye_waller,
                                   k_xrd_refl **refl, int *n_refl, pid_aug_phase **phases,
                                   pid_error *err);

/* Generate and write the dataset to out_path (created or truncated). be
 * picks CPU or CUDA. On failure the partial file is removed. */
pid_status pid_xrd_dataset_write(const pid_phaselib *lib, const pid_xrd_dataset_opts *o,
                                 pid_backend *be, const char *out_path, pid_progress_fn progress,
                                 void *user, pid_error *err);

/* ------------------------------------------------ in-memory batch generator */

/* A reusable generator for training: the library's reflection table and the
 * settings of `o` (n, threads, batch, compress and command are ignored),
 * prepared once. Opaque; immutable after creation, so several threads may
 * call pid_xrd_generate on one handle at once. */
typedef struct pid_xrd_gen pid_xrd_gen;

/* Prepare a generator for `lib` (borrowed: must outlive the handle) and the
 * settings `o` (copied). Validates the settings and probes pattern 0 through
 * the renderer's checks. On failure *out is NULL. Free with
 * pid_xrd_gen_destroy. */
pid_status pid_xrd_gen_create(pid_xrd_gen **out, const pid_phaselib *lib,
                              const pid_xrd_dataset_opts *o, pid_error *err);
void pid_xrd_gen_destroy(pid_xrd_gen *g); /* accepts NULL */
int pid_xrd_gen_n_points(const pid_xrd_gen *g);
int pid_xrd_gen_n_phases(const pid_xrd_gen *g);

/* Render patterns index0 .. index0 + n - 1 of the stream (o->seed) on the
 * calling thread's CPU into caller buffers (host memory, caller-owned):
 *   patterns   [n, n_points]  each row's maximum is 1 (as in the file)
 *   labels     [n]            phase index, -1 for mixtures      (may be NULL)
 *   multi_hot  [n, n_phases]  1 where a phase is present        (may be NULL)
 *   fractions  [n, n_phases]  weight fractions, rows sum to 1   (may be NULL)
 * Pattern i depends only on (seed, index0 + i): the rows equal those of
 * pid_xrd_dataset_write with the same settings, and any split of a range
 * into calls gives the same values. Writes nothing to disk. */
pid_status pid_xrd_generate(const pid_xrd_gen *g, uint64_t index0, int n, float *patterns,
                            int32_t *labels, float *multi_hot, float *fractions, pid_error *err);

/* pid_xrd_generate's draws without the rendering, for rendering elsewhere
 * (k_xrd_render on a backend: the CUDA renderer on a GPU): the render
 * parameters pats[n] (host memory) of patterns index0 .. index0 + n - 1 and
 * their labels as pid_xrd_generate gives them (each may be NULL). The
 * patterns index into the generator's reflection table (pid_xrd_gen_refl);
 * rendered by k_xrd_render_cpu on pid_xrd_gen_grid they equal
 * pid_xrd_generate's bit for bit. */
pid_status pid_xrd_gen_draw(const pid_xrd_gen *g, uint64_t index0, int n, k_xrd_pattern *pats,
                            int32_t *labels, float *multi_hot, float *fractions, pid_error *err);
/* The generator's reflection table (host memory, owned by g) and grid. */
const k_xrd_refl *pid_xrd_gen_refl(const pid_xrd_gen *g, int *n_refl);
const k_xrd_grid *pid_xrd_gen_grid(const pid_xrd_gen *g);

#endif
