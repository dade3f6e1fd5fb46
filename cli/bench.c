/* `phaseid bench xrd`: full-profile XRD simulation throughput (Cu K-alpha
 * doublet, 10-80 deg at 0.01 deg, every default augmentation on, each
 * pattern drawn and rendered) on one CPU thread, on all threads, and on CUDA
 * when a device is visible; prints a table and writes JSON.
 * `phaseid bench classify` (alias infer): network inference throughput of a
 * trained model through cls_run at several batch sizes. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "cli/cli.h"
#include "core/h5.h"
#include "kernels/backend.h"
#include "models/classify.h"
#include "models/modelfile.h"
#include "models/net.h"
#include "models/spec.h"
#include "synth/augment.h"
#include "synth/cif.h"
#include "synth/phaselib.h"
#include "synth/xrd_dataset.h"

#define PROG "phaseid bench xrd"
#define BENCH_BATCH 64

static void bench_usage(FILE *f)
{
    fprintf(f, "usage: phaseid bench xrd [--phase NAME|FILE.cif] [--phases DIR|builtin]\n"
               "                         [--threads T] [--seconds S] [--device cpu|cuda|auto]\n"
               "                         [--json FILE]\n"
               "\n"
               "Measure how many full powder XRD profiles per second the simulator makes:\n"
               "Cu K-alpha1+2, 2-theta 10-80 deg in 0.01 deg steps (7001 points), every default\n"
               "augmentation on (strain, shifts, size and strain broadening, texture, Caglioti\n"
               "widths, background, hump, air scatter, Gaussian and Poisson noise); each pattern\n"
               "is drawn and rendered, not written. Runs one CPU thread, then all threads, then\n"
               "CUDA when a device is visible, and prints phase, reflection families in range,\n"
               "points, threads, patterns/s, patterns/s per core, device and CPU model.\n"
               "\n"
               "options:\n"
               "  --phase NAME|FILE.cif  phase of the library, or a CIF file (default: the\n"
               "                         library phase with the number of families in range\n"
               "                         closest to 150, a mid-size cell)\n"
               "  --phases DIR|builtin   library for --phase NAME (default builtin)\n"
               "  --threads T            threads for the all-threads run (default: all cores)\n"
               "  --seconds S            time per measurement, 0.1..600 (default 3)\n"
               "  --device cpu|cuda|auto cpu: CPU only; cuda: require CUDA; auto (default):\n"
               "                         CUDA too when a device is visible\n"
               "  --json FILE            also write the results as JSON\n"
               "  -h, --help             show this help\n"
               "\n"
               "exit status: 0 ok, 1 error, 2 bad arguments.\n");
}

static double thread_cpu_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void cpu_model(char *buf, size_t cap)
{
    snprintf(buf, cap, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10) != 0) continue;
        char *c = strchr(line, ':');
        if (!c) break;
        c++;
        while (*c == ' ' || *c == '\t')
            c++;
        c[strcspn(c, "\n")] = '\0';
        snprintf(buf, cap, "%s", c);
        break;
    }
    fclose(f);
}

/* One benchmark configuration: a single phase, the default augmentation. */
typedef struct {
    pid_augment aug;
    pid_aug_ctx ctx;
    pid_aug_phase phase;
    k_xrd_refl *refl;
    int n_refl;
    double seconds;
} bench_cfg;

typedef struct {
    const bench_cfg *cfg;
    uint64_t first; /* pattern indices first, first + 1, ... */
    double t_end;   /* shared deadline */
    int64_t done;
    double cpu_s; /* this thread's CPU time */
    pid_status st;
    pid_error err;
} bench_job;

static void *bench_cpu_thread(void *arg)
{
    bench_job *j = arg;
    const bench_cfg *c = j->cfg;
    k_xrd_pattern pats[BENCH_BATCH];
    pid_aug_label lab;
    float *out = malloc(sizeof(float) * BENCH_BATCH * (size_t)c->ctx.grid.n_points);
    if (!out) {
        j->st = pid_fail(&j->err, PID_ERR_NOMEM, "bench: out of memory");
        return NULL;
    }
    uint64_t idx = j->first;
    const double c0 = thread_cpu_s();
    while (pid_mono_s() < j->t_end) {
        for (int i = 0; i < BENCH_BATCH; i++)
            if ((j->st = pid_augment_draw(&c->aug, &c->ctx, 1, idx++, &pats[i], &lab, &j->err)))
                goto done;
        if ((j->st = k_xrd_render_cpu(NULL, &c->ctx.grid, c->refl, c->n_refl, pats, BENCH_BATCH,
                                      out, &j->err)))
            goto done;
        j->done += BENCH_BATCH;
    }
done:
    j->cpu_s = thread_cpu_s() - c0;
    free(out);
    return NULL;
}

/* rate: patterns per wall-clock second; per_cpu: patterns per CPU-second
 * of the worker threads, i.e. per core actually used (the fair per-core
 * figure when other processes share the machine). */
static pid_status bench_cpu(const bench_cfg *c, int threads, double *rate, double *per_cpu,
                            pid_error *err)
{
    bench_job *jobs = calloc((size_t)threads, sizeof *jobs);
    pthread_t *tid = calloc((size_t)threads, sizeof *tid);
    if (!jobs || !tid) {
        free(jobs);
        free(tid);
        return pid_fail(err, PID_ERR_NOMEM, "bench: out of memory");
    }
    double t0 = pid_mono_s();
    int started = 0;
    for (int i = 0; i < threads; i++) {
        jobs[i].cfg = c;
        jobs[i].first = (uint64_t)i << 40;
        jobs[i].t_end = t0 + c->seconds;
        if (pthread_create(&tid[i], NULL, bench_cpu_thread, &jobs[i])) break;
        started++;
    }
    int64_t total = 0;
    double cpu = 0.0;
    pid_status st = started ? PID_OK : pid_fail(err, PID_ERR_INTERNAL, "bench: no thread started");
    for (int i = 0; i < started; i++) {
        pthread_join(tid[i], NULL);
        total += jobs[i].done;
        cpu += jobs[i].cpu_s;
        if (jobs[i].st && !st) {
            st = jobs[i].st;
            *err = jobs[i].err;
        }
    }
    double el = pid_mono_s() - t0;
    *rate = el > 0 ? (double)total / el : 0.0;
    *per_cpu = cpu > 0 ? (double)total / cpu : 0.0;
    free(jobs);
    free(tid);
    return st;
}

/* CUDA: patterns drawn on the host (not timed), rendered into device memory
 * in batches of 4096; the time covers parameter upload and rendering. */
static pid_status bench_cuda(const bench_cfg *c, pid_backend *be, double *rate, pid_error *err)
{
    const int batch = 4096;
    const int p = c->ctx.grid.n_points;
    pid_status st = PID_OK;
    void *d_refl = NULL, *d_out = NULL;
    k_xrd_pattern *pats = malloc(sizeof *pats * (size_t)batch);
    pid_aug_label lab;
    if (!pats) return pid_fail(err, PID_ERR_NOMEM, "bench: out of memory");
    if ((st = pid_backend_alloc(be, &d_refl, sizeof(k_xrd_refl) * (size_t)c->n_refl, err)))
        goto done;
    if ((st = pid_backend_alloc(be, &d_out, sizeof(float) * (size_t)batch * (size_t)p, err)))
        goto done;
    if ((st = pid_backend_upload(be, d_refl, c->refl, sizeof(k_xrd_refl) * (size_t)c->n_refl, err)))
        goto done;
    for (int i = 0; i < batch; i++)
        if ((st = pid_augment_draw(&c->aug, &c->ctx, 1, (uint64_t)i, &pats[i], &lab, err)))
            goto done;
    /* Warm-up launch (module load, shared-memory carve-out). */
    if ((st = k_xrd_render(be, &c->ctx.grid, d_refl, c->n_refl, pats, batch, d_out, err)))
        goto done;
    int64_t total = 0;
    double t0 = pid_mono_s(), el = 0.0;
    while ((el = pid_mono_s() - t0) < c->seconds) {
        if ((st = k_xrd_render(be, &c->ctx.grid, d_refl, c->n_refl, pats, batch, d_out, err)))
            goto done;
        total += batch;
    }
    *rate = el > 0 ? (double)total / el : 0.0;
done:
    pid_backend_free(be, d_refl);
    pid_backend_free(be, d_out);
    free(pats);
    return st;
}

/* Families of s whose K-alpha1 peak lies in the grid. */
static int families_in_range(const k_xrd_refl *r, int n, const pid_structure *s,
                             const k_xrd_grid *g)
{
    double gs[3][3];
    pid_structure_reciprocal_metric(s, gs);
    double last = (double)g->x0 + (double)g->step * (g->n_points - 1);
    int cnt = 0;
    for (int i = 0; i < n; i++) {
        double h[3] = {r[i].hkl[0], r[i].hkl[1], r[i].hkl[2]}, q = 0;
        for (int a = 0; a < 3; a++)
            for (int b = 0; b < 3; b++)
                q += h[a] * gs[a][b] * h[b];
        double sn = 1.540562 * sqrt(q) / 2;
        if (sn >= 1) continue;
        double tt = 2 * asin(sn) * 180 / M_PI;
        cnt += tt >= g->x0 && tt <= last;
    }
    return cnt;
}

/* Set up cfg for structure s. */
static pid_status bench_setup(const pid_structure *s, bench_cfg *c, int *fam, pid_error *err)
{
    pid_xrd_dataset_opts o;
    pid_xrd_dataset_opts_default(&o);
    memset(c, 0, sizeof *c);
    c->aug = o.aug;
    c->ctx.grid = o.grid;
    c->ctx.source = o.source;
    c->ctx.lp = o.lp;
    double lam = o.source.wavelength_a[0];
    double d_min = lam / (2.0 * sin(0.5 * 83.0 * M_PI / 180.0)) / (1.0 + c->aug.strain_max);
    pid_status st = pid_xrd_reflections(s, d_min, 1, &c->refl, &c->n_refl, err);
    if (st) return st;
    c->phase.refl_offset = 0;
    c->phase.refl_count = c->n_refl;
    double cell[6] = {s->a, s->b, s->c, s->alpha, s->beta, s->gamma};
    memcpy(c->phase.cell, cell, sizeof cell);
    c->phase.cell_mass_amu = pid_structure_cell_mass(s);
    c->phase.volume_a3 = pid_structure_volume(s);
    c->ctx.phases = &c->phase;
    c->ctx.n_phases = 1;
    *fam = families_in_range(c->refl, c->n_refl, s, &c->ctx.grid);
    return PID_OK;
}

static int is_file(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
}

static int bench_xrd(int argc, char **argv)
{
    const char *phase = NULL, *phases = "builtin", *device = "auto", *json = NULL;
    long threads = 0;
    double seconds = 3.0;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        if (!strcmp(o, "-h") || !strcmp(o, "--help")) {
            bench_usage(stdout);
            return 0;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, PROG ": %s: %s\n", o,
                    strncmp(o, "--", 2) ? "unexpected argument" : "missing value");
            return 2;
        }
        const char *v = argv[++i];
        char *end = NULL;
        errno = 0;
        if (!strcmp(o, "--phase"))
            phase = v;
        else if (!strcmp(o, "--phases"))
            phases = v;
        else if (!strcmp(o, "--device"))
            device = v;
        else if (!strcmp(o, "--json"))
            json = v;
        else if (!strcmp(o, "--threads")) {
            threads = strtol(v, &end, 10);
            if (end == v || *end || errno || threads < 1 || threads > 4096) {
                fprintf(stderr, PROG ": --threads %s: expected 1..4096\n", v);
                return 2;
            }
        } else if (!strcmp(o, "--seconds")) {
            seconds = strtod(v, &end);
            if (end == v || *end || !isfinite(seconds) || seconds < 0.1 || seconds > 600) {
                fprintf(stderr, PROG ": --seconds %s: expected 0.1..600\n", v);
                return 2;
            }
        } else {
            fprintf(stderr, PROG ": unknown option %s (see --help)\n", o);
            return 2;
        }
    }
    if (strcmp(device, "cpu") && strcmp(device, "cuda") && strcmp(device, "auto")) {
        fprintf(stderr, PROG ": --device %s: expected cpu, cuda or auto\n", device);
        return 2;
    }

    pid_error err;
    pid_error_clear(&err);
    pid_phaselib *lib = NULL;
    pid_structure *cif = NULL;
    int n_cif = 0, rc = 1, fam = 0;
    const pid_structure *s = NULL;
    bench_cfg cfg;
    memset(&cfg, 0, sizeof cfg);
    pid_backend *be = NULL;
    FILE *jf = NULL;
    if (phase && is_file(phase)) {
        if (pid_cif_read(phase, &cif, &n_cif, &err)) {
            fprintf(stderr, PROG ": --phase %s: %s\n", phase, err.msg);
            return 1;
        }
        s = &cif[0];
    } else {
        if (pid_phaselib_load(phases, &lib, &err)) {
            fprintf(stderr, PROG ": --phases %s: %s\n", phases, err.msg);
            return 1;
        }
        if (phase) {
            s = pid_phaselib_find(lib, phase);
            if (!s) {
                fprintf(stderr, PROG ": --phase %s: no such phase in %s (and no such file)\n",
                        phase, pid_phaselib_dir(lib));
                pid_phaselib_destroy(lib);
                return 2;
            }
        } else {
            /* The mid-size default: families in range closest to 150. */
            int best = -1, best_d = 1 << 30;
            for (int i = 0; i < pid_phaselib_count(lib); i++) {
                bench_cfg c;
                int f = 0;
                if (bench_setup(pid_phaselib_get(lib, i), &c, &f, &err)) continue;
                free(c.refl);
                if (abs(f - 150) < best_d) best_d = abs(f - 150), best = i;
            }
            if (best < 0) {
                fprintf(stderr, PROG ": no usable phase in %s\n", pid_phaselib_dir(lib));
                goto out;
            }
            s = pid_phaselib_get(lib, best);
        }
    }
    if (bench_setup(s, &cfg, &fam, &err)) {
        fprintf(stderr, PROG ": %s: %s\n", s->name, err.msg);
        goto out;
    }
    cfg.seconds = seconds;
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    if (online < 1) online = 1;
    int nt = threads > 0 ? (int)threads : (int)online;
    char model[256];
    cpu_model(model, sizeof model);

    double r1 = 0, rn = 0, c1 = 0, cn = 0, rg = -1;
    if (bench_cpu(&cfg, 1, &r1, &c1, &err) || bench_cpu(&cfg, nt, &rn, &cn, &err)) {
        fprintf(stderr, PROG ": %s\n", err.msg);
        goto out;
    }
    char gdesc[256] = "";
    int want_cuda = strcmp(device, "cpu") != 0;
    if (want_cuda && (pid_backend_cuda_device_count() > 0 || !strcmp(device, "cuda"))) {
        if (pid_backend_create(&be, "cuda", 0, &err)) {
            fprintf(stderr, PROG ": %s\n", err.msg); /* the message names --device */
            goto out;
        }
        snprintf(gdesc, sizeof gdesc, "%s", pid_backend_device_desc(be));
        if (bench_cuda(&cfg, be, &rg, &err)) {
            fprintf(stderr, PROG ": CUDA: %s\n", err.msg);
            goto out;
        }
    }

    double load[3] = {0, 0, 0};
    if (getloadavg(load, 3) < 0) load[0] = -1;
    printf("%-16s %-9s %-7s %-8s %-12s %-12s %-16s %s\n", "phase", "families", "points", "threads",
           "patterns/s", "per core", "per CPU-second", "device");
    printf("%-16s %-9d %-7d %-8d %-12.0f %-12.0f %-16.0f CPU: %s\n", s->name, fam,
           cfg.ctx.grid.n_points, 1, r1, r1, c1, model);
    printf("%-16s %-9d %-7d %-8d %-12.0f %-12.0f %-16.0f CPU: %s\n", s->name, fam,
           cfg.ctx.grid.n_points, nt, rn, rn / nt, cn, model);
    if (rg >= 0)
        printf("%-16s %-9d %-7d %-8s %-12.0f %-12s %-16s %s\n", s->name, fam, cfg.ctx.grid.n_points,
               "-", rg, "-", "-", gdesc);
    printf("(per core = patterns/s / threads, wall clock; per CPU-second = patterns per second\n"
           " of CPU time the workers got, robust to other load: load average %.2f, %ld cores)\n",
           load[0], online);
    if (json) {
        jf = fopen(json, "w");
        if (!jf) {
            fprintf(stderr, PROG ": --json %s: cannot write\n", json);
            goto out;
        }
        fprintf(jf,
                "{\n  \"benchmark\": \"xrd_profile_throughput\",\n  \"phaseid_version\": \"%s\",\n"
                "  \"phase\": \"%s\",\n  \"formula\": \"%s\",\n  \"families_in_range\": %d,\n"
                "  \"reflections_table\": %d,\n  \"points\": %d,\n"
                "  \"grid\": \"2-theta 10-80 deg step 0.01\",\n  \"source\": \"CuKa (Ka1+Ka2)\",\n"
                "  \"augmentation\": \"defaults, all on\",\n  \"cpu_model\": \"%s\",\n"
                "  \"cores_online\": %ld,\n  \"load_average_1min\": %.2f,\n"
                "  \"seconds_per_run\": %g,\n  \"results\": [\n"
                "    {\"device\": \"cpu\", \"threads\": 1, \"patterns_per_s\": %.1f, "
                "\"patterns_per_s_per_core\": %.1f, \"patterns_per_cpu_second\": %.1f},\n"
                "    {\"device\": \"cpu\", \"threads\": %d, \"patterns_per_s\": %.1f, "
                "\"patterns_per_s_per_core\": %.1f, \"patterns_per_cpu_second\": %.1f}",
                PHASEID_VERSION, s->name, s->formula, fam, cfg.n_refl, cfg.ctx.grid.n_points, model,
                online, load[0], seconds, r1, r1, c1, nt, rn, rn / nt, cn);
        if (rg >= 0)
            fprintf(jf,
                    ",\n    {\"device\": \"cuda\", \"description\": \"%s\", "
                    "\"patterns_per_s\": %.1f}",
                    gdesc, rg);
        fprintf(jf, "\n  ]\n}\n");
        if (fclose(jf)) {
            jf = NULL;
            fprintf(stderr, PROG ": --json %s: write failed\n", json);
            goto out;
        }
        jf = NULL;
    }
    rc = 0;
out:
    if (jf) fclose(jf);
    free(cfg.refl);
    pid_backend_destroy(be);
    pid_structure_array_destroy(cif, n_cif);
    pid_phaselib_destroy(lib);
    return rc;
}

#define PROGC "phaseid bench classify"
#define BENCHC_MAX_SIZES 16

static void bench_classify_usage(FILE *f)
{
    fprintf(f, "usage: phaseid bench classify (--model MODEL.h5 | --arch SPEC [--input 1x3501]\n"
               "                              [--classes 83]) [--batch 1,64,4096] [--seconds S]\n"
               "                              [--threads T] [--engine infer|reference|train]\n"
               "                              [--chunk N] [--profile] [--device cpu|cuda|auto]\n"
               "                              [--json FILE]\n"
               "(alias: phaseid bench infer)\n"
               "\n"
               "Measure network inference throughput: frames per second through cls_run\n"
               "(inference-mode forward, calibrated probabilities, ranking, unknown score) on\n"
               "frames already on the model grid and preprocessed, so it measures the network,\n"
               "not file parsing or resampling. The frames are synthetic (smooth random peaks,\n"
               "max-normalized). One measurement per batch size; prints batch, frames/s,\n"
               "microseconds per frame, parameters and inference FLOPs per frame (from the\n"
               "spec totals), achieved GFLOP/s, frames per CPU-second, CPU threads and the\n"
               "peak resident memory (getrusage maxrss, cumulative over the runs).\n"
               "\n"
               "options:\n"
               "  --model MODEL.h5        trained model file\n"
               "  --arch SPEC             instead of --model: a network spec with random weights\n"
               "                          (throughput does not depend on them), on --input\n"
               "                          (default 1x3501) with --classes outputs (default 83);\n"
               "                          'default' is the built-in XRD spec (phaseid arch)\n"
               "  --batch B1,B2,...       batch sizes (default 1,64,4096), each 1..65536\n"
               "  --seconds S             time per batch size, 0.1..600 (default 3)\n"
               "  --threads T             CPU threads (default 0: all online cores)\n"
               "  --frames FILE.h5        run on the /patterns of a dataset file (phaseid synth\n"
               "                          xrd on the model's grid, e.g. augmented 1-3-phase\n"
               "                          mixtures), preprocessed as classify does, cycled to\n"
               "                          fill the largest batch (default: synthetic frames)\n"
               "  --no-residual           skip the model's physics residual check (the network\n"
               "                          alone; by default cls_run includes it when the model\n"
               "                          has a residual threshold)\n"
               "  --engine E              infer (default): inference net, BN folded, fused\n"
               "                          direct kernels, batch split over the threads;\n"
               "                          reference: the same net on the reference kernels\n"
               "                          (im2col + BLAS); train: the training net's forward\n"
               "                          (every activation kept, one thread), as before\n"
               "  --chunk N               frames per CPU worker step, 1..64 (default automatic)\n"
               "  --profile               then time each op of the net at the largest batch\n"
               "                          and print where the time goes (infer/reference)\n"
               "  --device cpu|cuda|auto  inference backend (default auto)\n"
               "  --json FILE             also write the results as JSON\n"
               "  -h, --help              show this help\n"
               "\n"
               "exit status: 0 ok, 1 error, 2 bad arguments.\n");
}

static long maxrss_kib(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru)) return -1;
    return ru.ru_maxrss; /* KiB on Linux */
}

static double process_cpu_s(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru)) return 0;
    return (double)ru.ru_utime.tv_sec + 1e-6 * (double)ru.ru_utime.tv_usec +
           (double)ru.ru_stime.tv_sec + 1e-6 * (double)ru.ru_stime.tv_usec;
}

/* Write s as a JSON string body (quotes, backslashes, control characters
 * escaped). */
static void json_escaped(FILE *f, const char *s)
{
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch < 0x20)
            fprintf(f, "\\u%04x", ch);
        else
            fputc(ch, f);
    }
}

static int parse_batches(const char *v, int *sizes, int *n)
{
    *n = 0;
    const char *p = v;
    while (*p) {
        char *end = NULL;
        errno = 0;
        long b = strtol(p, &end, 10);
        if (end == p || errno || b < 1 || b > 65536 || *n >= BENCHC_MAX_SIZES) return -1;
        sizes[(*n)++] = (int)b;
        if (*end == ',')
            p = end + 1;
        else if (*end == '\0')
            p = end;
        else
            return -1;
        if (*end == ',' && !*p) return -1;
    }
    return *n > 0 ? 0 : -1;
}

typedef struct {
    int batch;
    double frames_per_s;
    double us_per_frame;
    int64_t frames;
    double seconds;
    double cpu_s; /* process CPU time (user + system) during the run */
    long maxrss_kib;
} benchc_result;

/* --arch: write a model file of `spec` on `input` with `classes` outputs and
 * random weights (He init from net_create) to `path`. */
static pid_status benchc_write_model(const char *path, const char *spec_text, const char *input,
                                     int classes, pid_error *err)
{
    pid_status st;
    net_shape in;
    mf_model *m = mf_model_create();
    if (!m) return pid_fail(err, PID_ERR_NOMEM, "out of memory");
    if ((st = net_spec_parse_shape(input, &in, err)) ||
        (st = net_random_model(m, spec_text, &in, classes, 1, err)))
        goto done;
    m->phases = calloc((size_t)classes, sizeof *m->phases);
    m->modality = strdup("xrd");
    m->grid.source = strdup("CuKa");
    m->preprocessing = strdup("resample-linear; max-normalize");
    m->unknown_score = strdup("energy");
    m->generator = strdup("{\"bench\": \"random weights\"}");
    m->phaseid_version = strdup(PHASEID_VERSION);
    m->created = strdup("1970-01-01T00:00:00Z");
    m->library = strdup("none");
    if (!m->phases || !m->modality || !m->grid.source || !m->preprocessing || !m->unknown_score ||
        !m->generator || !m->phaseid_version || !m->created || !m->library) {
        st = pid_fail(err, PID_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (int i = 0; i < classes; i++) {
        char name[32];
        snprintf(name, sizeof name, "class%d", i);
        m->phases[i].name = strdup(name);
        m->phases[i].formula = strdup("X");
        m->phases[i].source = strdup("none");
        m->phases[i].reference = strdup("none");
        if (!m->phases[i].name || !m->phases[i].formula || !m->phases[i].source ||
            !m->phases[i].reference) {
            st = pid_fail(err, PID_ERR_NOMEM, "out of memory");
            goto done;
        }
    }
    int64_t len = m->input.w;
    m->grid.axis = 0;
    m->grid.x0 = 10.0;
    m->grid.step = len > 1 ? 70.0 / (double)(len - 1) : 1.0;
    m->grid.n_points = len;
    m->grid.n_lines = 1;
    m->grid.wavelength_a[0] = 1.540562;
    m->grid.wavelength_weight[0] = 1.0;
    m->normalization = MF_NORM_MAX;
    m->temperature = 1.0;
    m->unknown_threshold = 0.0;
    m->unknown_auroc = 0.5;
    st = mf_save(path, m, err);
done:
    mf_model_destroy(m);
    return st;
}

/* Frames per second of cls_run at batch b for `seconds` (after one warm-up call). */
/* frames[max_b, fs] from the /patterns rows of a dataset file (cycled),
 * each through cls_prepare_frame. */
static pid_status benchc_file_frames(const char *path, const cls_classifier *c, float *frames,
                                     int max_b, int64_t fs, int64_t *n_rows, pid_error *err)
{
    hid_t fid = H5I_INVALID_HID;
    float *x = NULL;
    int nd = 0;
    int64_t dims[4] = {0};
    pid_status st = pid_h5_open_ro(path, &fid, err);
    if (st) return st;
    st = pid_h5_read_f32(fid, "patterns", &x, &nd, dims, err);
    H5Fclose(fid);
    if (st) {
        pid_error_prefix(err, "%s: ", path);
        return st;
    }
    if (nd != 2 || dims[0] < 1 || dims[1] != fs) {
        free(x);
        return pid_fail(err, PID_ERR_FORMAT,
                        "%s: /patterns has %lld points per row, the model's grid %lld", path,
                        nd == 2 ? (long long)dims[1] : -1LL, (long long)fs);
    }
    for (int f = 0; f < max_b && !st; f++)
        st = cls_prepare_frame(c, x + (size_t)(f % dims[0]) * (size_t)fs,
                               frames + (size_t)f * (size_t)fs, err);
    free(x);
    if (st) {
        pid_error_prefix(err, "%s: ", path);
        return st;
    }
    *n_rows = dims[0];
    return PID_OK;
}

static pid_status benchc_measure(cls_classifier *c, const float *frames, int b, double seconds,
                                 cls_results *res, benchc_result *o, pid_error *err)
{
    pid_status st = cls_run(c, frames, b, res, err);
    if (st) return st;
    int64_t done = 0;
    double c0 = process_cpu_s();
    double t0 = pid_mono_s(), t = t0;
    do {
        if ((st = cls_run(c, frames, b, res, err))) return st;
        done += b;
        t = pid_mono_s();
    } while (t - t0 < seconds);
    o->batch = b;
    o->frames = done;
    o->seconds = t - t0;
    o->cpu_s = process_cpu_s() - c0;
    o->frames_per_s = (double)done / (t - t0);
    o->us_per_frame = 1e6 * (t - t0) / (double)done;
    o->maxrss_kib = maxrss_kib();
    return PID_OK;
}

static int bench_classify(int argc, char **argv)
{
    const char *model = NULL, *device = "auto", *json = NULL, *arch = NULL, *input = "1x3501";
    const char *engine = "infer", *frames_file = NULL;
    int64_t frame_rows = 0;
    int sizes[BENCHC_MAX_SIZES] = {1, 64, 4096}, n_sizes = 3, profile = 0;
    long threads = 0, chunk = 0, classes = 83;
    int no_residual = 0;
    double seconds = 3.0;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        if (!strcmp(o, "-h") || !strcmp(o, "--help")) {
            bench_classify_usage(stdout);
            return 0;
        }
        if (!strcmp(o, "--profile")) {
            profile = 1;
            continue;
        }
        if (!strcmp(o, "--no-residual")) {
            no_residual = 1;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, PROGC ": %s: %s\n", o,
                    strncmp(o, "--", 2) ? "unexpected argument" : "missing value");
            return 2;
        }
        const char *v = argv[++i];
        char *end = NULL;
        errno = 0;
        if (!strcmp(o, "--model"))
            model = v;
        else if (!strcmp(o, "--arch"))
            arch = strcmp(v, "default") ? v : NET_SPEC_DEFAULT_XRD;
        else if (!strcmp(o, "--input"))
            input = v;
        else if (!strcmp(o, "--device"))
            device = v;
        else if (!strcmp(o, "--json"))
            json = v;
        else if (!strcmp(o, "--frames"))
            frames_file = v;
        else if (!strcmp(o, "--engine"))
            engine = v;
        else if (!strcmp(o, "--batch")) {
            if (parse_batches(v, sizes, &n_sizes)) {
                fprintf(stderr,
                        PROGC ": --batch %s: expected a comma-separated list of 1..65536 "
                              "(at most %d)\n",
                        v, BENCHC_MAX_SIZES);
                return 2;
            }
        } else if (!strcmp(o, "--seconds")) {
            seconds = strtod(v, &end);
            if (end == v || *end || !isfinite(seconds) || seconds < 0.1 || seconds > 600) {
                fprintf(stderr, PROGC ": --seconds %s: expected 0.1..600\n", v);
                return 2;
            }
        } else if (!strcmp(o, "--threads") || !strcmp(o, "--chunk") || !strcmp(o, "--classes")) {
            long val = strtol(v, &end, 10);
            long lo = strcmp(o, "--classes") ? 0 : 1;
            long hi = !strcmp(o, "--threads") ? 64 : !strcmp(o, "--chunk") ? 64 : 100000;
            if (end == v || *end || errno || val < lo || val > hi) {
                fprintf(stderr, PROGC ": %s %s: expected %ld..%ld\n", o, v, lo, hi);
                return 2;
            }
            *(!strcmp(o, "--threads") ? &threads : !strcmp(o, "--chunk") ? &chunk : &classes) = val;
        } else {
            fprintf(stderr, PROGC ": unknown option %s (see --help)\n", o);
            return 2;
        }
    }
    if (!model == !arch) {
        fprintf(stderr, PROGC ": give one of --model and --arch (see --help)\n");
        return 2;
    }
    if (strcmp(device, "cpu") && strcmp(device, "cuda") && strcmp(device, "auto")) {
        fprintf(stderr, PROGC ": --device %s: expected cpu, cuda or auto\n", device);
        return 2;
    }
    if (strcmp(engine, "infer") && strcmp(engine, "reference") && strcmp(engine, "train")) {
        fprintf(stderr, PROGC ": --engine %s: expected infer, reference or train\n", engine);
        return 2;
    }
    int max_b = 1;
    for (int k = 0; k < n_sizes; k++)
        if (sizes[k] > max_b) max_b = sizes[k];

    pid_error err;
    pid_error_clear(&err);
    int rc = 1;
    float *frames = NULL;
    cls_results *res = NULL;
    cls_classifier *c = NULL;
    net_spec *spec = NULL;
    FILE *jf = NULL;
    benchc_result out[BENCHC_MAX_SIZES];
    memset(out, 0, sizeof out);
    char tmp_dir[] = "/tmp/phaseid-bench-XXXXXX", tmp_model[64] = "";
    net_op_profile *prof = NULL;
    size_t n_prof = 0;
    double prof_frames = 0;
    if (arch) {
        if (!mkdtemp(tmp_dir)) {
            fprintf(stderr, PROGC ": cannot create a temporary directory: %s\n", strerror(errno));
            return 1;
        }
        snprintf(tmp_model, sizeof tmp_model, "%s/arch.h5", tmp_dir);
        if (benchc_write_model(tmp_model, arch, input, (int)classes, &err)) {
            fprintf(stderr, PROGC ": --arch: %s\n", err.msg);
            goto out;
        }
        model = tmp_model;
    }
    long rss0 = maxrss_kib();

    cls_options co;
    memset(&co, 0, sizeof co);
    co.device = device;
    co.max_batch = max_b;
    co.n_threads = (int)threads;
    co.chunk = (int)chunk;
    co.reference = !strcmp(engine, "reference");
    co.training_net = !strcmp(engine, "train");
    co.no_residual = no_residual;
    if (cls_open_opts(&c, model, &co, &err)) {
        fprintf(stderr, PROGC ": %s\n", err.msg);
        goto out;
    }
    long rss_open = maxrss_kib();
    const mf_model *m = cls_model(c);
    net_spec_totals tot;
    memset(&tot, 0, sizeof tot);
    if (net_spec_parse(m->arch_spec, &spec, &err) ||
        net_spec_build(spec, &m->input, m->n_classes, &err) ||
        net_spec_totals_get(spec, &tot, &err)) {
        fprintf(stderr, PROGC ": %s: spec: %s\n", model, err.msg);
        goto out;
    }
    int64_t fs = cls_frame_size(c);
    frames = malloc(sizeof(float) * (size_t)fs * (size_t)max_b);
    if (!frames) {
        fprintf(stderr, PROGC ": out of memory for %d frames of %lld values\n", max_b,
                (long long)fs);
        goto out;
    }
    /* Deterministic synthetic frames: a few Gaussian peaks on a low floor,
     * max-normalized, different per frame; or a dataset file's patterns. */
    if (frames_file && benchc_file_frames(frames_file, c, frames, max_b, fs, &frame_rows, &err)) {
        fprintf(stderr, PROGC ": --frames %s\n", err.msg);
        goto out;
    }
    uint64_t rng = 0x9E3779B97F4A7C15ull;
    for (int f = 0; f < max_b && !frames_file; f++) {
        float *x = frames + (size_t)f * (size_t)fs;
        for (int64_t j = 0; j < fs; j++)
            x[j] = 0.02f;
        for (int p = 0; p < 12; p++) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            int64_t ctr = (int64_t)((rng >> 33) % (uint64_t)fs);
            float amp = 0.1f + (float)((rng >> 20) & 1023) / 1137.0f;
            for (int64_t j = ctr - 20; j <= ctr + 20; j++)
                if (j >= 0 && j < fs)
                    x[j] += amp * expf(-0.5f * (float)((j - ctr) * (j - ctr)) / 9.0f);
        }
        float mx = 0;
        for (int64_t j = 0; j < fs; j++)
            if (x[j] > mx) mx = x[j];
        for (int64_t j = 0; j < fs; j++)
            x[j] /= mx;
    }
    if (cls_results_create(&res, c, max_b, &err)) {
        fprintf(stderr, PROGC ": %s\n", err.msg);
        goto out;
    }
    for (int k = 0; k < n_sizes; k++)
        if (benchc_measure(c, frames, sizes[k], seconds, res, &out[k], &err)) {
            fprintf(stderr, PROGC ": batch %d: %s\n", sizes[k], err.msg);
            goto out;
        }
    net *nn = cls_net(c);
    if (profile && net_is_infer(nn)) {
        /* Per-op times at the largest batch: a separate run, since the
         * clock reads around every op cost a little. */
        benchc_result pr;
        net_profile_reset(nn, 1);
        if (benchc_measure(c, frames, max_b, seconds, res, &pr, &err)) {
            fprintf(stderr, PROGC ": profile: %s\n", err.msg);
            goto out;
        }
        prof_frames = (double)pr.frames + max_b; /* + the warm-up call */
        n_prof = net_profile_count(nn);
        prof = calloc(n_prof ? n_prof : 1, sizeof *prof);
        if (!prof) {
            fprintf(stderr, PROGC ": out of memory\n");
            goto out;
        }
        for (size_t i = 0; i < n_prof; i++)
            if (net_profile_get(nn, i, &prof[i], &err)) {
                fprintf(stderr, PROGC ": profile: %s\n", err.msg);
                goto out;
            }
        net_profile_reset(nn, 0);
    }

    char cpu[256];
    cpu_model(cpu, sizeof cpu);
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    double load[3] = {0, 0, 0};
    if (getloadavg(load, 3) < 0) load[0] = -1;
    const char *dev = cls_device_name(c);
    int nthr = cls_threads(c);
    double net_mib = net_is_infer(nn) ? (double)net_infer_bytes(nn) / 1048576.0 : -1.0;
    char shape[64];
    net_spec_format_shape(&m->input, shape, sizeof shape);
    printf("model %s: input %s, %lld classes, %lld params, %.3f MFLOPs/frame, device %s\n",
           arch ? "(--arch, random weights)" : model, shape, (long long)m->n_classes,
           (long long)tot.params, 1e-6 * (double)tot.flops_infer, dev);
    printf("engine %s, %d thread%s, physics residual check %s", engine, nthr, nthr == 1 ? "" : "s",
           cls_has_residual(c) ? "on" : "off");
    if (frames_file)
        printf(", frames: %lld patterns of %s", (long long)frame_rows, frames_file);
    else
        printf(", frames: synthetic (smooth random peaks)");
    if (net_is_infer(nn))
        printf(", chunk %d frames, CPU kernels %s, network buffers %.1f MiB", net_infer_chunk(nn),
               cls_cpu_kernels(c), net_mib);
    printf("\n");
    printf("%-8s %-12s %-10s %-10s %-16s %-8s %-10s %s\n", "batch", "frames/s", "us/frame",
           "GFLOP/s", "per CPU-second", "threads", "frames", "maxrss MiB");
    for (int k = 0; k < n_sizes; k++)
        printf("%-8d %-12.0f %-10.2f %-10.2f %-16.0f %-8d %-10lld %.1f\n", out[k].batch,
               out[k].frames_per_s, out[k].us_per_frame,
               1e-9 * out[k].frames_per_s * (double)tot.flops_infer,
               out[k].cpu_s > 0 ? (double)out[k].frames / out[k].cpu_s : 0.0, nthr,
               (long long)out[k].frames, (double)out[k].maxrss_kib / 1024.0);
    printf("(per CPU-second = frames per second of process CPU time, user + system: robust\n"
           " to other load; CPU: %s, %ld cores online, load average %.2f; maxrss before\n"
           " loading %.1f MiB, after opening the model %.1f MiB; the %d frames of the largest\n"
           " batch take %.1f MiB)\n",
           cpu, online, load[0], (double)rss0 / 1024.0, (double)rss_open / 1024.0, max_b,
           (double)fs * max_b * sizeof(float) / 1048576.0);
    if (prof) {
        double tsum = 0;
        for (size_t i = 0; i < n_prof; i++)
            tsum += prof[i].seconds;
        printf("\nprofile at batch %d (%d thread%s; worker time per frame, summed over threads):\n",
               max_b, nthr, nthr == 1 ? "" : "s");
        printf("%-4s %-56s %10s %10s %8s %10s\n", "#", "op", "MFLOP", "us/frame", "share",
               "GFLOP/s");
        for (size_t i = 0; i < n_prof; i++) {
            double us = 1e6 * prof[i].seconds / prof_frames;
            printf("%-4zu %-56.56s %10.3f %10.2f %7.1f%% %10.1f\n", i + 1, prof[i].name,
                   1e-6 * (double)prof[i].flops, us, tsum > 0 ? 100.0 * prof[i].seconds / tsum : 0,
                   prof[i].seconds > 0
                       ? 1e-9 * (double)prof[i].flops * prof_frames / prof[i].seconds
                       : 0.0);
        }
        printf("%-4s %-56s %10.3f %10.2f %7.1f%% %10.1f\n", "", "total",
               1e-6 * (double)tot.flops_infer, 1e6 * tsum / prof_frames, 100.0,
               tsum > 0 ? 1e-9 * (double)tot.flops_infer * prof_frames / tsum : 0.0);
    }
    if (json) {
        jf = fopen(json, "w");
        if (!jf) {
            fprintf(stderr, PROGC ": --json %s: cannot write\n", json);
            goto out;
        }
        fprintf(jf,
                "{\n  \"benchmark\": \"xrd_inference_throughput\",\n  \"phaseid_version\": "
                "\"%s\",\n  \"model\": \"",
                PHASEID_VERSION);
        json_escaped(jf, arch ? "(--arch, random weights)" : model);
        fprintf(jf, "\",\n  \"arch_spec\": \"");
        json_escaped(jf, m->arch_spec);
        fprintf(jf,
                "\",\n  \"input\": \"%s\",\n  \"n_classes\": %lld,\n  \"params\": %lld,\n"
                "  \"flops_per_frame\": %lld,\n  \"device\": \"%s\",\n  \"engine\": \"%s\",\n"
                "  \"residual_check\": %s,\n  \"frames_rows\": %lld,\n"
                "  \"threads\": %d,\n  \"chunk\": %d,\n  \"cpu_kernels\": \"%s\",\n"
                "  \"network_bytes\": %lld,\n  \"cpu_model\": \"",
                shape, (long long)m->n_classes, (long long)tot.params, (long long)tot.flops_infer,
                dev, engine, cls_has_residual(c) ? "true" : "false", (long long)frame_rows, nthr,
                net_infer_chunk(nn), cls_cpu_kernels(c),
                net_is_infer(nn) ? (long long)net_infer_bytes(nn) : -1LL);
        json_escaped(jf, cpu);
        fprintf(jf,
                "\",\n  \"cores_online\": %ld,\n  \"load_average_1min\": %.2f,\n"
                "  \"seconds_per_run\": %g,\n  \"maxrss_kib_before_model\": %ld,\n"
                "  \"maxrss_kib_after_open\": %ld,\n  \"results\": [",
                online, load[0], seconds, rss0, rss_open);
        for (int k = 0; k < n_sizes; k++)
            fprintf(jf,
                    "%s\n    {\"batch\": %d, \"frames_per_s\": %.1f, \"us_per_frame\": %.3f, "
                    "\"gflops_per_s\": %.3f, \"frames\": %lld, \"seconds\": %.3f, "
                    "\"cpu_seconds\": %.3f, \"frames_per_cpu_second\": %.1f, "
                    "\"threads\": %d, \"maxrss_kib\": %ld}",
                    k ? "," : "", out[k].batch, out[k].frames_per_s, out[k].us_per_frame,
                    1e-9 * out[k].frames_per_s * (double)tot.flops_infer, (long long)out[k].frames,
                    out[k].seconds, out[k].cpu_s,
                    out[k].cpu_s > 0 ? (double)out[k].frames / out[k].cpu_s : 0.0, nthr,
                    out[k].maxrss_kib);
        fprintf(jf, "\n  ]");
        if (prof) {
            fprintf(jf, ",\n  \"profile_batch\": %d,\n  \"profile\": [", max_b);
            for (size_t i = 0; i < n_prof; i++) {
                fprintf(jf, "%s\n    {\"op\": \"", i ? "," : "");
                json_escaped(jf, prof[i].name);
                fprintf(jf, "\", \"flops_per_frame\": %lld, \"us_per_frame\": %.3f}",
                        (long long)prof[i].flops, 1e6 * prof[i].seconds / prof_frames);
            }
            fprintf(jf, "\n  ]");
        }
        fprintf(jf, "\n}\n");
        if (fclose(jf)) {
            jf = NULL;
            fprintf(stderr, PROGC ": --json %s: write failed\n", json);
            goto out;
        }
        jf = NULL;
    }
    rc = 0;
out:
    if (jf) fclose(jf);
    free(frames);
    free(prof);
    cls_results_destroy(res);
    net_spec_destroy(spec);
    cls_close(c);
    if (tmp_model[0]) {
        unlink(tmp_model);
        rmdir(tmp_dir);
    }
    return rc;
}

int cli_bench(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        FILE *f = argc < 2 ? stderr : stdout;
        fprintf(f, "usage: phaseid bench <what> [options]\n\n"
                   "  xrd       XRD profile simulation throughput (patterns/s)\n"
                   "  classify  network inference throughput of a trained model (frames/s);\n"
                   "            alias: infer\n\n"
                   "Run 'phaseid bench xrd --help' or 'phaseid bench classify --help' for the\n"
                   "options.\n");
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "xrd")) return bench_xrd(argc - 1, argv + 1);
    if (!strcmp(argv[1], "classify") || !strcmp(argv[1], "infer"))
        return bench_classify(argc - 1, argv + 1);
    fprintf(stderr, "phaseid bench: unknown benchmark '%s' (available: xrd, classify)\n", argv[1]);
    return 2;
}
