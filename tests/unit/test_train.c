/* Unit tests for training (models/train.h) and the in-memory XRD generator
 * (pid_xrd_generate): learning a 4-phase library to >= 90 % validation top-1
 * in < 60 s on the CPU, reproducibility, the LR schedule, mixtures, resume. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/h5.h"
#include "kernels/backend.h"
#include "kernels/xrd_render.h"
#include "models/modelfile.h"
#include "models/train.h"
#include "models/calib.h"
#include "models/classify.h"
#include "synth/outlier.h"
#include "synth/phaselib.h"
#include "synth/xrd_dataset.h"

/* The small CNN of the learning test: two strided conv blocks then a dense
 * layer on the flattened features (positions of peaks matter, so no gpool). */
#define SMALL_CNN                                                                                  \
    "conv1d(8,k9,s2,p4) bn relu maxpool(4) conv1d(16,k9,s2,p4) bn relu maxpool(4) "                \
    "flatten dense(32) relu head"
/* Learning bound: validation top-1 over 400 held-out patterns, within a wall
 * time budget on the CPU (the 2-core reference machine needs ~2 s). */
#define LEARN_MIN_ACC 0.90
#define LEARN_MAX_SECONDS 60.0

static pid_backend *cpu;
static pid_phaselib *lib;
static char tmpdir[256];
static pid_error err;

#define OK(x) assert_int_equal((x), PID_OK)

static int copy_file(const char *src, const char *dst)
{
    FILE *in = fopen(src, "rb"), *out = in ? fopen(dst, "wb") : NULL;
    if (!in || !out) {
        if (in) fclose(in);
        return -1;
    }
    char buf[8192];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        fwrite(buf, 1, n, out);
    fclose(in);
    return fclose(out);
}

static int setup(void **state)
{
    (void)state;
    char data[512], src[1024], dst[1024];
    const char *names[] = {"NaCl_225", "Si_227", "TiO2_136", "TiO2_141"};
    if (pid_backend_create(&cpu, "cpu", 0, &err)) return -1;
    if (pid_phaselib_builtin_dir(data, sizeof data, &err)) return -1;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/pid_test_train_XXXXXX");
    if (!mkdtemp(tmpdir)) return -1;
    for (int i = 0; i < 4; i++) {
        snprintf(src, sizeof src, "%s/%s.cif", data, names[i]);
        snprintf(dst, sizeof dst, "%s/%s.cif", tmpdir, names[i]);
        if (copy_file(src, dst)) return -1;
    }
    return pid_phaselib_load(tmpdir, &lib, &err) ? -1 : 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[512];
    pid_phaselib_destroy(lib);
    pid_backend_destroy(cpu);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Small fast settings: 2-theta 10..80 deg at 0.05 deg (1401 points). */
static void small_opts(train_opts *o)
{
    train_opts_default(o);
    o->spec = SMALL_CNN;
    o->gen.grid.step = 0.05f;
    o->gen.grid.n_points = 1401;
    o->batch = 32;
    o->lr = 3e-3;
    o->warmup = 20;
    o->quiet = 1;
    o->n_val = 400;
    o->n_calib = 500;
    o->threads = 2;
}

static void test_lr_schedule(void **state)
{
    (void)state;
    const double lr = 1e-3;
    /* warm-up: linear from lr/warmup, reaching lr on the last warm-up step */
    assert_true(fabs(train_lr_at(0, 1000, 100, lr) - 1e-5) < 1e-15);
    assert_true(fabs(train_lr_at(49, 1000, 100, lr) - 5e-4) < 1e-15);
    assert_true(fabs(train_lr_at(99, 1000, 100, lr) - lr) < 1e-15);
    /* cosine: lr at its start, lr/2 half-way, 0 at the end */
    assert_true(fabs(train_lr_at(100, 1000, 100, lr) - lr) < 1e-15);
    assert_true(fabs(train_lr_at(550, 1000, 100, lr) - 0.5 * lr) < 1e-15);
    assert_true(train_lr_at(1000, 1000, 100, lr) == 0.0);
    /* last step: lr * 0.5 (1 + cos(pi * 899/900)) */
    double last = lr * 0.5 * (1.0 + cos(M_PI * 899.0 / 900.0));
    assert_true(fabs(train_lr_at(999, 1000, 100, lr) - last) < 1e-18);
    assert_true(last < 1e-8);
    for (int64_t s = 100; s < 999; s++)
        assert_true(train_lr_at(s + 1, 1000, 100, lr) <= train_lr_at(s, 1000, 100, lr));
    /* no warm-up */
    assert_true(fabs(train_lr_at(0, 10, 0, lr) - lr) < 1e-15);
}

static void test_bad_opts(void **state)
{
    (void)state;
    train_opts o;
    small_opts(&o);
    OK(train_opts_validate(&o, &err));
    o.lr = NAN;
    assert_int_equal(train_opts_validate(&o, &err), PID_ERR_ARG);
    small_opts(&o);
    o.steps = 0;
    assert_int_equal(train_opts_validate(&o, &err), PID_ERR_ARG);
    small_opts(&o);
    o.warmup = o.steps;
    assert_int_equal(train_opts_validate(&o, &err), PID_ERR_ARG);
    small_opts(&o);
    o.mixtures = 9;
    assert_int_equal(train_opts_validate(&o, &err), PID_ERR_ARG);
    small_opts(&o);
    o.spec = "conv1d(8,k5) foo head";
    o.steps = 2;
    o.warmup = 0;
    assert_int_equal(train_run(lib, &o, cpu, NULL, NULL, &err), PID_ERR_PARSE);
}

/* The in-memory generator gives exactly the rows of the dataset file, and
 * any split of an index range gives the same values. */
static void test_generator_matches_file(void **state)
{
    (void)state;
    pid_xrd_dataset_opts o;
    pid_xrd_dataset_opts_default(&o);
    o.n = 12;
    o.seed = 77;
    o.grid.step = 0.1f;
    o.grid.n_points = 701;
    o.aug.mixtures_max = 2;
    o.threads = 2;
    char path[512];
    snprintf(path, sizeof path, "%s/ds.h5", tmpdir);
    OK(pid_xrd_dataset_write(lib, &o, cpu, path, NULL, NULL, &err));
    hid_t fid;
    OK(pid_h5_open_ro(path, &fid, &err));
    float *pat = NULL, *fr = NULL;
    int nd;
    int64_t dims[4];
    OK(pid_h5_read_f32(fid, "patterns", &pat, &nd, dims, &err));
    OK(pid_h5_read_f32(fid, "fractions", &fr, &nd, dims, &err));
    H5Fclose(fid);
    pid_xrd_gen *g = NULL;
    OK(pid_xrd_gen_create(&g, lib, &o, &err));
    assert_int_equal(pid_xrd_gen_n_points(g), 701);
    assert_int_equal(pid_xrd_gen_n_phases(g), 4);
    float *x = malloc(sizeof(float) * 12 * 701), *mh = malloc(sizeof(float) * 12 * 4),
          *f = malloc(sizeof(float) * 12 * 4);
    int32_t lab[12];
    OK(pid_xrd_generate(g, 0, 5, x, lab, mh, f, &err));
    OK(pid_xrd_generate(g, 5, 7, x + 5 * 701, lab + 5, mh + 5 * 4, f + 5 * 4, &err));
    assert_memory_equal(x, pat, sizeof(float) * 12 * 701);
    assert_memory_equal(f, fr, sizeof(float) * 12 * 4);
    for (int i = 0; i < 12; i++) {
        int present = 0;
        for (int c = 0; c < 4; c++)
            present += mh[i * 4 + c] == 1.0f;
        assert_true(present >= 1 && present <= 2);
        assert_true((present == 1) == (lab[i] >= 0));
    }
    assert_int_equal(pid_xrd_generate(g, 0, 0, x, NULL, NULL, NULL, &err), PID_ERR_ARG);
    free(x);
    free(mh);
    free(f);
    free(pat);
    free(fr);
    pid_xrd_gen_destroy(g);
}

static void test_learns(void **state)
{
    (void)state;
    train_opts o;
    small_opts(&o);
    o.steps = 300;
    char path[512];
    snprintf(path, sizeof path, "%s/model.h5", tmpdir);
    train_result r;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    OK(train_run(lib, &o, cpu, path, &r, &err));
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double wall = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    printf("  learning: 4 phases, %lld steps x %d: val top-1 %.3f, loss %.4f, %.2f s "
           "(%.0f samples/s)\n",
           (long long)o.steps, o.batch, r.val_acc, r.final_loss, wall, r.samples_per_s);
    assert_true(r.val_acc >= LEARN_MIN_ACC);
    assert_true(wall < LEARN_MAX_SECONDS);
    assert_int_equal(r.steps_done, 300);

    mf_model *m = NULL;
    OK(mf_load(path, &m, &err));
    assert_string_equal(m->modality, "xrd");
    assert_int_equal(m->n_classes, 4);
    assert_int_equal(m->head, NET_HEAD_SOFTMAX);
    assert_int_equal(m->input.w, 1401);
    assert_int_equal(m->train_steps, 300);
    assert_int_equal(m->train_batch, 32);
    /* calibrated on the held-out calibration set (no phases held out) */
    printf("  calibration: T %.4f, ECE %.4f -> %.4f, threshold %.4f, AUROC %.2f (not measured)\n",
           r.temperature, r.ece_before, r.ece_after, r.unknown_threshold, r.unknown_auroc);
    assert_true(r.calibrated);
    assert_true(isfinite(m->temperature) && m->temperature > 0);
    assert_true(m->temperature >= 0.05 && m->temperature <= 20.0);
    assert_true(m->temperature == r.temperature);
    assert_true(r.ece_after <= r.ece_before + 1e-9);
    assert_true(m->ece == r.ece_after);
    assert_true(m->ece >= 0 && m->ece <= 1);
    assert_true(m->ece != TRAIN_UNCALIBRATED_ECE);
    assert_true(isfinite(m->unknown_threshold));
    assert_true(m->unknown_threshold != TRAIN_UNCALIBRATED_THRESHOLD);
    assert_true(m->unknown_threshold == r.unknown_threshold);
    assert_true(m->unknown_auroc == TRAIN_AUROC_NOT_MEASURED);
    assert_int_equal(r.n_unknown_phases, 0);
    assert_non_null(strstr(m->generator, "\"calibrated\": true"));
    assert_non_null(strstr(m->generator, "\"unknown_auroc_measured\": false"));
    /* the physics residual check: a threshold in (0, 1] from the calibration set */
    assert_true(r.residual_threshold >= TRAIN_RESIDUAL_MIN_THRESHOLD &&
                r.residual_threshold <= 1.0);
    assert_true(m->residual_threshold == r.residual_threshold);
    assert_true(m->residual_strain_max > 0 && m->residual_strain_max <= 0.1);
    /* and its missing-reflection side, from the patterns right with one phase */
    assert_true(r.missing_threshold >= TRAIN_MISSING_MIN_THRESHOLD && r.missing_threshold <= 1.0);
    assert_true(m->missing_threshold == r.missing_threshold);
    assert_non_null(strstr(m->generator, "\"missing_threshold\": "));
    assert_true(r.flagged_known >= 0 && r.flagged_known <= 0.2);
    assert_true(m->train_flops > 0);
    assert_string_equal(m->phases[1].name, "Si_227");
    assert_string_equal(m->phases[1].formula, "Si");
    assert_string_equal(m->preprocessing, "max-normalize");
    mf_model_destroy(m);

    /* --calib 0: the placeholders */
    o.n_calib = 0;
    o.steps = 5;
    o.warmup = 1;
    OK(train_run(lib, &o, cpu, path, &r, &err));
    assert_false(r.calibrated);
    OK(mf_load(path, &m, &err));
    assert_true(m->temperature == TRAIN_UNCALIBRATED_TEMPERATURE);
    assert_true(m->ece == TRAIN_UNCALIBRATED_ECE);
    assert_true(m->unknown_threshold == TRAIN_UNCALIBRATED_THRESHOLD);
    assert_true(m->unknown_auroc == TRAIN_UNCALIBRATED_AUROC);
    assert_true(m->residual_threshold == 0.0 && m->missing_threshold == 0.0);
    assert_non_null(strstr(m->generator, "\"calibrated\": false"));
    mf_model_destroy(m);
}

/* Held-out phases: a 1-of-4 split of the library is reproducible from the
 * seed; training on the 3 known phases stores a temperature, an ECE no worse
 * than uncalibrated, the threshold and a measured AUROC in [0, 1]. */
static void test_holdout_calibration(void **state)
{
    (void)state;
    char kd[256], ud[256], kd2[256], ud2[256];
    pid_phaselib *known = NULL, *unknown = NULL, *k2 = NULL, *u2 = NULL;
    OK(train_split_phases(tmpdir, 0.25, 7, kd, ud, sizeof kd, &known, &unknown, &err));
    assert_non_null(unknown);
    assert_int_equal(pid_phaselib_count(known), 3);
    assert_int_equal(pid_phaselib_count(unknown), 1);
    OK(train_split_phases(tmpdir, 0.25, 7, kd2, ud2, sizeof kd2, &k2, &u2, &err));
    assert_string_equal(pid_phaselib_get(unknown, 0)->name, pid_phaselib_get(u2, 0)->name);
    pid_phaselib_destroy(k2);
    pid_phaselib_destroy(u2);
    train_split_cleanup(kd2, ud2);
    assert_int_equal(access(kd2, F_OK), -1);
    /* fraction 0: nothing held out; bad fractions refused */
    OK(train_split_phases(tmpdir, 0.0, 7, kd2, ud2, sizeof kd2, &k2, &u2, &err));
    assert_null(u2);
    assert_int_equal(pid_phaselib_count(k2), 4);
    pid_phaselib_destroy(k2);
    train_split_cleanup(kd2, ud2);
    assert_int_equal(train_split_phases(tmpdir, NAN, 7, kd2, ud2, sizeof kd2, &k2, &u2, &err),
                     PID_ERR_ARG);
    assert_int_equal(train_split_phases(tmpdir, 1.0, 7, kd2, ud2, sizeof kd2, &k2, &u2, &err),
                     PID_ERR_ARG);

    train_opts o;
    small_opts(&o);
    o.steps = 150;
    o.n_val = 100;
    o.unknown_lib = unknown;
    o.holdout_frac = 0.25;
    o.library = tmpdir;
    char path[512];
    snprintf(path, sizeof path, "%s/model_holdout.h5", tmpdir);
    train_result r;
    OK(train_run(known, &o, cpu, path, &r, &err));
    printf("  holdout: T %.4f, ECE %.4f -> %.4f, threshold %.4f, AUROC %.4f\n", r.temperature,
           r.ece_before, r.ece_after, r.unknown_threshold, r.unknown_auroc);
    assert_true(r.ece_after <= r.ece_before + 1e-9);
    assert_int_equal(r.n_unknown_phases, 1);
    mf_model *m = NULL;
    OK(mf_load(path, &m, &err));
    assert_int_equal(m->n_classes, 3);
    assert_true(isfinite(m->temperature) && m->temperature > 0);
    assert_true(m->ece >= 0 && m->ece <= 1 && m->ece == r.ece_after);
    assert_true(isfinite(m->unknown_threshold) && m->unknown_threshold == r.unknown_threshold);
    assert_true(m->unknown_auroc >= 0 && m->unknown_auroc <= 1);
    assert_true(m->unknown_auroc == r.unknown_auroc);
    assert_non_null(strstr(m->generator, "\"unknown_auroc_measured\": true"));
    assert_non_null(strstr(m->generator, pid_phaselib_get(unknown, 0)->name));
    mf_model_destroy(m);

    /* bad settings */
    o.holdout_frac = 1.0;
    assert_int_equal(train_opts_validate(&o, &err), PID_ERR_ARG);
    o.holdout_frac = NAN;
    assert_int_equal(train_opts_validate(&o, &err), PID_ERR_ARG);
    o.holdout_frac = 0.25;
    o.n_calib = -1;
    assert_int_equal(train_opts_validate(&o, &err), PID_ERR_ARG);

    pid_phaselib_destroy(known);
    pid_phaselib_destroy(unknown);
    train_split_cleanup(kd, ud);
}

/* Mean top-1 probability (calibrated) of `model` on n patterns. */
static double mean_top_prob(const char *model, const float *x, int n, int p, double *auroc_vs,
                            const float *known, pid_error *e)
{
    cls_classifier *c = NULL;
    cls_results *r = NULL;
    double mean = -1.0;
    if (cls_open(&c, model, "cpu", 64, e) || cls_results_create(&r, c, n, e)) goto done;
    assert_int_equal(cls_frame_size(c), p);
    float *f = malloc(sizeof(float) * (size_t)n * p);
    double *su = malloc(sizeof(double) * (size_t)n), *sk = malloc(sizeof(double) * (size_t)n);
    assert_non_null(f);
    assert_non_null(su);
    assert_non_null(sk);
    for (int i = 0; i < n; i++)
        OK(cls_prepare_frame(c, x + (size_t)i * p, f + (size_t)i * p, e));
    OK(cls_run(c, f, n, r, e));
    mean = 0.0;
    for (int i = 0; i < n; i++) {
        mean += r->prob[(size_t)i * r->n_classes + r->order[(size_t)i * r->n_classes]];
        su[i] = r->unknown_score[i];
    }
    mean /= n;
    if (known) {
        for (int i = 0; i < n; i++)
            OK(cls_prepare_frame(c, known + (size_t)i * p, f + (size_t)i * p, e));
        OK(cls_run(c, f, n, r, e));
        for (int i = 0; i < n; i++)
            sk[i] = r->unknown_score[i];
        OK(calib_auroc(sk, (size_t)n, su, (size_t)n, auroc_vs, e));
    }
    free(f);
    free(su);
    free(sk);
done:
    cls_results_destroy(r);
    cls_close(c);
    return mean;
}

/* Outlier exposure: with a quarter of every batch made of outlier patterns
 * (random peak sets, humps) trained towards uniform probabilities, the model
 * still learns the phases, is far less sure on fresh outliers than the same
 * model trained without them, and its energy score separates outliers from
 * phase patterns (AUROC). */
static void test_outlier_exposure(void **state)
{
    (void)state;
    enum { N = 200 };
    const int p = 1401;
    float *xo = malloc(sizeof(float) * N * (size_t)p), *xk = malloc(sizeof(float) * N * (size_t)p);
    assert_non_null(xo);
    assert_non_null(xk);
    train_opts o;
    small_opts(&o);
    o.steps = 300;
    OK(pid_outlier_patterns(&o.gen.grid, 99, 0, N, xo, &err));
    pid_xrd_gen *g = NULL;
    pid_xrd_dataset_opts go = o.gen;
    go.seed = 1234;
    OK(pid_xrd_gen_create(&g, lib, &go, &err));
    OK(pid_xrd_generate(g, 0, N, xk, NULL, NULL, NULL, &err));
    pid_xrd_gen_destroy(g);

    char plain[512], oe[512];
    snprintf(plain, sizeof plain, "%s/plain.h5", tmpdir);
    snprintf(oe, sizeof oe, "%s/oe.h5", tmpdir);
    train_result r0, r1;
    OK(train_run(lib, &o, cpu, plain, &r0, &err));
    o.outlier_frac = 0.25;
    o.calib_widen = 1.5;
    OK(train_run(lib, &o, cpu, oe, &r1, &err));
    double au0 = 0, au1 = 0;
    double p0 = mean_top_prob(plain, xo, N, p, &au0, xk, &err);
    double p1 = mean_top_prob(oe, xo, N, p, &au1, xk, &err);
    printf("  outlier exposure: val top-1 %.3f -> %.3f; mean top-1 prob on outliers %.3f -> "
           "%.3f; energy AUROC phases vs outliers %.3f -> %.3f\n",
           r0.val_acc, r1.val_acc, p0, p1, au0, au1);
    assert_true(r1.val_acc >= LEARN_MIN_ACC);
    assert_true(p1 < p0 - 0.2);
    assert_true(p1 < 0.6); /* uniform over 4 phases is 0.25 */
    assert_true(au1 >= 0.95);
    mf_model *m = NULL;
    OK(mf_load(oe, &m, &err));
    assert_non_null(strstr(m->generator, "\"outlier_frac\": 0.25"));
    assert_non_null(strstr(m->generator, "\"calib_widen\": 1.5"));
    mf_model_destroy(m);
    /* lattice outliers: relatives of the 4 phases, none close to one of them,
     * half the outlier rows; the run records the share */
    pid_phaselib *rel = NULL;
    int rejected = -1;
    OK(train_relatives(lib, &o.gen, TRAIN_RELATIVES_PER_PHASE, 5, &rel, &rejected, &err));
    assert_non_null(rel);
    assert_int_equal(pid_phaselib_count(rel) + rejected, 4 * TRAIN_RELATIVES_PER_PHASE);
    for (int i = 0; i < pid_phaselib_count(rel); i++) {
        const char *nm = pid_phaselib_get(rel, i)->name, *t = strchr(nm, '~');
        assert_non_null(t);
        int known = 0;
        for (int c = 0; c < pid_phaselib_count(lib); c++)
            known |= !strncmp(nm, pid_phaselib_get(lib, c)->name, (size_t)(t - nm));
        assert_true(known);
    }
    pid_phaselib_destroy(rel);
    char lat[512];
    snprintf(lat, sizeof lat, "%s/lat.h5", tmpdir);
    o.outlier_lattice = 0.5;
    o.steps = 40;
    OK(train_run(lib, &o, cpu, lat, NULL, &err));
    OK(mf_load(lat, &m, &err));
    assert_non_null(strstr(m->generator, "\"outlier_lattice\": 0.5"));
    mf_model_destroy(m);
    /* bad settings */
    o.outlier_lattice = 1.5;
    assert_int_equal(train_opts_validate(&o, &err), PID_ERR_ARG);
    o.outlier_lattice = 0.0;
    o.outlier_frac = 0.6;
    assert_int_equal(train_opts_validate(&o, &err), PID_ERR_ARG);
    o.outlier_frac = 0.1;
    o.calib_widen = 0.5;
    assert_int_equal(train_opts_validate(&o, &err), PID_ERR_ARG);
    free(xo);
    free(xk);
}

/* The physics residual check end to end: a model trained on the 4 test
 * phases stores a residual threshold; classification applies it; patterns of
 * its own phases are rarely flagged, patterns of brucite (not among them)
 * mostly are, and no_residual switches the check off. The model file carries
 * the phases' sticks (Si's 111 at the published d-spacing), so the check runs
 * with no CIF reachable, giving the same residuals; without them it is off. */
static void test_residual_flag(void **state)
{
    (void)state;
    enum { N = 120 };
    const int p = 1401;
    train_opts o;
    small_opts(&o);
    o.steps = 300;
    char path[512], demo[600], data[512];
    snprintf(path, sizeof path, "%s/resid.h5", tmpdir);
    train_result r;
    OK(train_run(lib, &o, cpu, path, &r, &err));
    assert_true(r.residual_threshold > 0);
    OK(pid_phaselib_builtin_dir(data, sizeof data, &err));
    snprintf(demo, sizeof demo, "%s/../demo", data);
    pid_phaselib *dl = NULL;
    OK(pid_phaselib_load(demo, &dl, &err));
    float *xk = malloc(sizeof(float) * N * (size_t)p), *xu = malloc(sizeof(float) * N * (size_t)p);
    assert_non_null(xk);
    assert_non_null(xu);
    pid_xrd_dataset_opts go = o.gen;
    go.seed = 4321;
    pid_xrd_gen *g = NULL;
    OK(pid_xrd_gen_create(&g, lib, &go, &err));
    OK(pid_xrd_generate(g, 0, N, xk, NULL, NULL, NULL, &err));
    pid_xrd_gen_destroy(g);
    OK(pid_xrd_gen_create(&g, dl, &go, &err));
    OK(pid_xrd_generate(g, 0, N, xu, NULL, NULL, NULL, &err));
    pid_xrd_gen_destroy(g);
    pid_phaselib_destroy(dl);

    double rk_on[N];
    for (int off = 0; off < 2; off++) {
        cls_options co = {.device = "cpu", .max_batch = 32, .no_residual = off};
        cls_classifier *c = NULL;
        cls_results *res = NULL;
        OK(cls_open_opts(&c, path, &co, &err));
        assert_int_equal(cls_has_residual(c), !off);
        OK(cls_results_create(&res, c, N, &err));
        int flag[2] = {0, 0}, resid_flag[2] = {0, 0};
        for (int set = 0; set < 2; set++) {
            float *x = set ? xu : xk;
            for (int i = 0; i < N; i++)
                OK(cls_prepare_frame(c, x + (size_t)i * p, x + (size_t)i * p, &err));
            OK(cls_run(c, x, N, res, &err));
            for (int i = 0; i < N; i++) {
                flag[set] += res->unknown[i];
                if (off)
                    assert_true(isnan(res->residual[i]) && isnan(res->missing[i]));
                else {
                    const mf_model *mm = cls_model(c);
                    assert_true(res->residual[i] >= 0 && res->residual[i] <= 1);
                    assert_true(res->missing[i] >= 0 && res->missing[i] <= 1);
                    /* the flag: energy, residual or missing reflections over their thresholds */
                    assert_int_equal(
                        res->unknown[i],
                        res->unknown_score[i] > mm->unknown_threshold ||
                            res->residual[i] > mm->residual_threshold ||
                            (mm->missing_threshold > 0 && res->missing[i] > mm->missing_threshold));
                    resid_flag[set] += res->residual[i] > mm->residual_threshold;
                    if (set == 0) rk_on[i] = res->residual[i];
                }
            }
        }
        printf("  residual check %s: flagged unknown: own phases %d/%d, brucite %d/%d "
               "(by the residual: %d, %d)\n",
               off ? "off" : "on", flag[0], N, flag[1], N, resid_flag[0], resid_flag[1]);
        if (!off) {
            assert_true(flag[0] <= N * 15 / 100); /* 5 % by the energy threshold by design */
            assert_true(flag[1] >= N * 8 / 10);
        }
        cls_results_destroy(res);
        cls_close(c);
    }

    mf_model *m = NULL;
    OK(mf_load(path, &m, &err));
    assert_non_null(m->stick_off);
    assert_true(m->n_sticks > 0);
    /* Si, a = 5.4309 A: d(111) = a / sqrt(3) = 3.1355 A (ICDD PDF 27-1402) */
    assert_string_equal(m->phases[1].name, "Si_227");
    assert_int_equal(m->phase_sg[1], 227);
    int found = 0;
    for (int64_t j = m->stick_off[1]; j < m->stick_off[2]; j++)
        if (m->stick_hkl[3 * j] == 1 && m->stick_hkl[3 * j + 1] == 1 &&
            m->stick_hkl[3 * j + 2] == 1) {
            assert_float_equal(m->stick_d[j], 3.1355, 2e-3);
            found = 1;
        }
    assert_true(found);
    /* every CIF out of reach: sources renamed, the built-in folder empty */
    for (int64_t i = 0; i < m->n_classes; i++) {
        free(m->phases[i].source);
        m->phases[i].source = strdup("/nonexistent/phase.cif");
        assert_non_null(m->phases[i].source);
    }
    char p2[600], p3[600];
    snprintf(p2, sizeof p2, "%s/resid-nocif.h5", tmpdir);
    snprintf(p3, sizeof p3, "%s/resid-nosticks.h5", tmpdir);
    OK(mf_save(p2, m, &err));
    mf_model_drop_sticks(m);
    OK(mf_save(p3, m, &err));
    mf_model_destroy(m);
    const char *old = getenv("PHASEID_DATA");
    char *keep = old ? strdup(old) : NULL;
    setenv("PHASEID_DATA", tmpdir, 1); /* no phases/ folder there */
    for (int v = 0; v < 2; v++) {
        cls_options co = {.device = "cpu", .max_batch = 32};
        cls_classifier *c = NULL;
        cls_results *res = NULL;
        OK(cls_open_opts(&c, v ? p3 : p2, &co, &err));
        assert_int_equal(cls_has_residual(c), !v);
        if (!v) {
            OK(cls_results_create(&res, c, N, &err));
            OK(cls_run(c, xk, N, res, &err));
            for (int i = 0; i < N; i++)
                assert_true(res->residual[i] == rk_on[i]);
            cls_results_destroy(res);
        }
        cls_close(c);
    }
    if (keep)
        setenv("PHASEID_DATA", keep, 1);
    else
        unsetenv("PHASEID_DATA");
    free(keep);
    free(xk);
    free(xu);
}

/* Same seed -> the identical loss curve, whatever the generator threads;
 * another seed -> another curve. */
static void test_reproducible(void **state)
{
    (void)state;
    double a[20], b[20], c[20];
    train_opts o;
    small_opts(&o);
    o.steps = 20;
    o.warmup = 5;
    o.batch = 16;
    o.n_val = 0;
    o.seed = 5;
    o.loss_curve = a;
    OK(train_run(lib, &o, cpu, NULL, NULL, &err));
    o.loss_curve = b;
    o.threads = 1;
    OK(train_run(lib, &o, cpu, NULL, NULL, &err));
    assert_memory_equal(a, b, sizeof a);
    o.seed = 6;
    o.loss_curve = c;
    OK(train_run(lib, &o, cpu, NULL, NULL, &err));
    assert_true(memcmp(a, c, sizeof a) != 0);
}

/* Batches rendered by the backend's renderer (what a CUDA backend does with
 * the CUDA renderer) instead of CPU worker threads: the generator's draws
 * rendered by the CPU twin equal its own patterns bit for bit, and a
 * training run with mixtures, random-peak and lattice outliers gives the
 * identical loss curve either way (any misplaced row, label or outlier
 * would change it); the model records which renderer made its batches. On a
 * CUDA backend the same path runs the CUDA renderer (its parity with the CPU
 * twin is test_xrd_render's). */
static void test_backend_render(void **state)
{
    (void)state;
    enum { N = 8, K = 4 };
    const int p = 1401;
    train_opts o;
    small_opts(&o);
    o.mixtures = 2;
    pid_xrd_gen *g = NULL;
    OK(pid_xrd_gen_create(&g, lib, &o.gen, &err));
    float *x0 = malloc(sizeof(float) * N * (size_t)p), *x1 = malloc(sizeof(float) * N * (size_t)p);
    float mh0[N * K], mh1[N * K], fr0[N * K], fr1[N * K];
    int32_t l0[N], l1[N];
    k_xrd_pattern pats[N];
    assert_non_null(x0);
    assert_non_null(x1);
    OK(pid_xrd_generate(g, 100, N, x0, l0, mh0, fr0, &err));
    OK(pid_xrd_gen_draw(g, 100, N, pats, l1, mh1, fr1, &err));
    int nr = 0;
    const k_xrd_refl *refl = pid_xrd_gen_refl(g, &nr);
    assert_true(nr > 0);
    OK(k_xrd_render_cpu(NULL, pid_xrd_gen_grid(g), refl, nr, pats, N, x1, &err));
    assert_memory_equal(x0, x1, sizeof(float) * N * (size_t)p);
    assert_memory_equal(l0, l1, sizeof l0);
    assert_memory_equal(mh0, mh1, sizeof mh0);
    assert_memory_equal(fr0, fr1, sizeof fr0);
    assert_int_equal(pid_xrd_gen_draw(g, 0, 0, pats, NULL, NULL, NULL, &err), PID_ERR_ARG);
    pid_xrd_gen_destroy(g);
    free(x0);
    free(x1);

    double a[12], b[12], c[12];
    o.steps = 12;
    o.warmup = 3;
    o.batch = 16;
    o.n_val = 0;
    o.n_calib = 0;
    o.outlier_frac = 0.25;
    o.outlier_lattice = 0.5;
    o.loss_curve = a;
    o.backend_render = 0;
    OK(train_run(lib, &o, cpu, NULL, NULL, &err));
    char path[512];
    snprintf(path, sizeof path, "%s/backend_render.h5", tmpdir);
    o.loss_curve = b;
    o.backend_render = 1;
    OK(train_run(lib, &o, cpu, path, NULL, &err));
    assert_memory_equal(a, b, sizeof a);
    mf_model *m = NULL;
    OK(mf_load(path, &m, &err));
    assert_non_null(strstr(m->generator, "\"batch_render\": \"backend renderer\""));
    mf_model_destroy(m);
    /* the default on a CPU backend is the worker threads (the provenance
     * says so; the curve is the same either way) */
    o.loss_curve = c;
    o.backend_render = -1;
    OK(train_run(lib, &o, cpu, path, NULL, &err));
    assert_memory_equal(a, c, sizeof a);
    OK(mf_load(path, &m, &err));
    assert_non_null(strstr(m->generator, "\"batch_render\": \"CPU worker threads\""));
    mf_model_destroy(m);
}

/* Mixtures: sigmoid + fractions head; checkpoint then resume to the end. */
static void test_mixtures_resume(void **state)
{
    (void)state;
    train_opts o;
    small_opts(&o);
    o.mixtures = 2;
    o.steps = 20;
    o.warmup = 2;
    o.n_val = 64;
    char ck[512], out[512];
    snprintf(ck, sizeof ck, "%s/ck.h5", tmpdir);
    snprintf(out, sizeof out, "%s/mix.h5", tmpdir);
    o.checkpoint = ck;
    o.checkpoint_every = 10;
    train_result r;
    OK(train_run(lib, &o, cpu, NULL, &r, &err));
    assert_true(r.val_acc >= 0.0 && r.val_acc <= 1.0);
    mf_model *m = NULL;
    OK(mf_load(ck, &m, &err));
    assert_int_equal(m->head, NET_HEAD_SIGMOID);
    assert_int_equal(m->head_fractions, 1);
    assert_int_equal(m->train_steps, 20);
    /* a checkpoint carries the AdamW state, one step per training step */
    assert_non_null(m->opt_m);
    assert_non_null(m->opt_v);
    assert_int_equal(m->opt_step, 20);
    mf_model_destroy(m);
    /* resume from the 20-step checkpoint and continue to 30 */
    o.checkpoint = NULL;
    o.resume = ck;
    o.steps = 30;
    OK(train_run(lib, &o, cpu, out, &r, &err));
    assert_int_equal(r.steps_done, 30);
    OK(mf_load(out, &m, &err));
    assert_int_equal(m->train_steps, 30);
    assert_null(m->opt_m); /* a finished model does not */
    mf_model_destroy(m);
    /* a checkpoint of another architecture is refused */
    o.spec = "conv1d(4,k9,s2,p4) relu maxpool(4) flatten dense(8) relu head";
    assert_int_equal(train_run(lib, &o, cpu, NULL, NULL, &err), PID_ERR_ARG);
}

int main(void)
{
    pid_h5_quiet();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lr_schedule),
        cmocka_unit_test(test_bad_opts),
        cmocka_unit_test(test_generator_matches_file),
        cmocka_unit_test(test_learns),
        cmocka_unit_test(test_outlier_exposure),
        cmocka_unit_test(test_residual_flag),
        cmocka_unit_test(test_reproducible),
        cmocka_unit_test(test_backend_render),
        cmocka_unit_test(test_mixtures_resume),
        cmocka_unit_test(test_holdout_calibration),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
