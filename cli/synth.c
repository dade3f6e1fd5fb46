/* `phaseid synth`: simulated data. `phaseid synth xrd --sticks FILE.cif`
 * prints a stick pattern (cli/synth_sticks.c); otherwise `phaseid synth xrd`
 * writes an augmented synthetic XRD dataset (HDF5) from a phase library,
 * with a progress bar on stderr. */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "cli/args.h"
#include "cli/cli.h"
#include "kernels/backend.h"
#include "synth/phaselib.h"
#include "synth/xrd_dataset.h"

#define PROG "phaseid synth xrd"

static void synth_usage(FILE *f)
{
    fprintf(f, "usage: phaseid synth <modality> [options]\n\n"
               "modalities:\n"
               "  xrd      powder X-ray diffraction: a synthetic training dataset (HDF5), or\n"
               "           with --sticks FILE.cif the stick pattern of one structure\n\n"
               "Run 'phaseid synth xrd --help' for the options.\n");
}

static void xrd_usage(FILE *f)
{
    fprintf(
        f,
        "usage: phaseid synth xrd --phases DIR|builtin --n N --out FILE.h5 [options]\n"
        "       phaseid synth xrd --sticks FILE.cif [options]   (see --sticks --help)\n"
        "\n"
        "Write N augmented powder XRD profiles of the phases of a library to an HDF5\n"
        "file: /patterns (N x P float32, each row's maximum is 1), /axis (P), /labels\n"
        "(phase index, -1 for mixtures), /multi_hot and /fractions (N x phases), /phases\n"
        "and /formulas, and every setting below as attributes of the file. The same\n"
        "settings and seed give the same file whatever --threads.\n"
        "\n"
        "required:\n"
        "  --phases DIR|builtin  folder of *.cif files, or the built-in library\n"
        "  --n N                 number of patterns (>= 1)\n"
        "  --out FILE.h5         output file (overwritten)\n"
        "\n"
        "data:\n"
        "  --seed S              random seed, a non-negative integer (default 0)\n"
        "  --wavelength W        CuKa (K-alpha1 1.540562 + K-alpha2 1.544390 A, ratio 0.5,\n"
        "                        default), CuKa1, MoKa, MoKa1, CoKa, CrKa, FeKa, AgKa, or a\n"
        "                        wavelength in angstrom (a single line, e.g. 0.4133)\n"
        "  --two-theta MIN:MAX:STEP  2-theta grid in degrees (default 10:80:0.01)\n"
        "  --q MIN:MAX:STEP      Q grid in 1/angstrom instead (Q = 4 pi sin(theta) / lambda of\n"
        "                        the first line; MAX below 4 pi / lambda)\n"
        "  --mixtures K          phases per pattern drawn uniformly in 1..K (default 1: single\n"
        "                        phase); K <= 8\n"
        "  --min-fraction F      smallest weight fraction in a mixture (default 0.1)\n"
        "  --lp MODE             Lorentz-polarization: lab (default), synchrotron, none\n"
        "  --mono DEG            lab: monochromator 2-theta in degrees (default 0 = none)\n"
        "  --polarization P      synchrotron: linear polarization fraction 0..1 (0.95)\n"
        "  --no-debye-waller     ignore the files' B_iso / U_iso\n"
        "\n"
        "augmentation (ranges are MIN:MAX, drawn uniformly per pattern unless noted):\n"
        "  --no-augment          clean patterns: no strain, shifts, size/strain broadening,\n"
        "                        texture, background, impurities or noise; the instrument\n"
        "                        takes the middle of its ranges\n"
        "  --strain PCT          lattice strain up to +-PCT %% per free cell parameter, keeping\n"
        "                        the crystal system (default 3)\n"
        "  --zero-shift DEG      zero shift up to +-DEG degrees (default 0.3)\n"
        "  --displacement S      sample displacement s/R up to +-S (default 0.002)\n"
        "  --size MIN:MAX|off    crystallite size in nm (default 5:100)\n"
        "  --microstrain MIN:MAX microstrain in %% (default 0:0.3)\n"
        "  --texture RMIN:RMAX|off  March-Dollase r, axis random among [001] [100] [110]\n"
        "                        [111] (default 0.5:1.5)\n"
        "  --caglioti-u MIN:MAX, --caglioti-v MIN:MAX, --caglioti-w MIN:MAX\n"
        "                        Caglioti U, V, W in deg^2 (defaults 0:0.02, -0.01:0,\n"
        "                        0.001:0.01; V is raised where U tan^2 + V tan + W could\n"
        "                        turn negative)\n"
        "  --eta MIN:MAX         pseudo-Voigt Lorentzian fraction (default 0.2:0.8)\n"
        "  --background FRAC     Chebyshev background up to FRAC of the maximum (0.1); 0 = off\n"
        "  --bg-order MIN:MAX    Chebyshev order (default 2:4, at most 4)\n"
        "  --hump MAX            amorphous hump height up to MAX of the maximum (0.05)\n"
        "  --air MAX             1/x air scatter up to MAX of the maximum (0.05)\n"
        "  --noise MIN:MAX       Gaussian noise sigma in %% of the maximum (default 0.5:1.5)\n"
        "  --poisson MIN:MAX|off counts at the maximum, log-uniform (default 1000:100000)\n"
        "  --impurities N        up to N unlabelled impurity peaks per pattern (default 0)\n"
        "  --impurity-height MIN:MAX  their heights, fraction of the tallest peak (0.01:0.1)\n"
        "\n"
        "execution:\n"
        "  --device cpu|cuda|auto  renderer (default auto: CUDA when a device is visible)\n"
        "  --threads T           CPU worker threads (default: all cores)\n"
        "  --batch B             patterns per block (default 256 CPU, 4096 CUDA)\n"
        "  --compress LEVEL      gzip level 0..9 for /patterns (default 0: none; noisy\n"
        "                        float32 shrinks ~20 %% at ~20x the write time)\n"
        "  --quiet               no progress bar\n"
        "  -h, --help            show this help\n"
        "\n"
        "exit status: 0 ok, 1 library, file or device error, 2 bad arguments.\n");
}

/* Range option: both ends finite, min <= max. */
/* ---------------------------------------------------------- progress */

typedef struct {
    double t0, last;
    int quiet;
    int64_t last_decile;
} progress_state;

static void progress_cb(int64_t done, int64_t total, void *user)
{
    progress_state *ps = user;
    if (ps->quiet) return;
    double t = pid_mono_s();
    int tty = isatty(fileno(stderr));
    /* Off a terminal (logs, CI) print a plain line every 10 % instead of
     * redrawing one line with carriage returns. */
    if (!tty && done < total && done * 10 / total == ps->last_decile) return;
    if (tty && done < total && t - ps->last < 0.2) return;
    ps->last = t;
    ps->last_decile = done * 10 / total;
    double el = t - ps->t0, rate = el > 0 ? (double)done / el : 0.0;
    double eta = rate > 0 ? (double)(total - done) / rate : 0.0;
    int width = 30, fill = (int)((double)width * (double)done / (double)total);
    char bar[64];
    for (int i = 0; i < width; i++)
        bar[i] = i < fill ? '=' : (i == fill ? '>' : ' ');
    bar[width] = '\0';
    fprintf(stderr, "%s[%s] %lld/%lld  %.0f patterns/s  ETA %d:%02d   ", tty ? "\r" : "", bar,
            (long long)done, (long long)total, rate, (int)(eta / 60), (int)fmod(eta, 60.0));
    if (done >= total || !tty) fputc('\n', stderr);
    fflush(stderr);
}

/* ------------------------------------------------------------- command */

static int synth_xrd(int argc, char **argv)
{
    const char *phases = NULL, *out = NULL, *device = "auto", *wave = "CuKa";
    long long n = -1, threads = 0, batch = 0;
    int quiet = 0, have_q = 0, have_tt = 0;
    double grid[3] = {10.0, 80.0, 0.01};
    pid_xrd_dataset_opts o;
    pid_xrd_dataset_opts_default(&o);
    pid_augment *a = &o.aug;

    for (int i = 1; i < argc; i++) {
        const char *opt = argv[i];
        if (!strcmp(opt, "-h") || !strcmp(opt, "--help")) {
            xrd_usage(stdout);
            return 0;
        }
        if (!strcmp(opt, "--no-augment")) {
            a->enabled = 0;
            continue;
        }
        if (!strcmp(opt, "--quiet")) {
            quiet = 1;
            continue;
        }
        if (!strcmp(opt, "--no-debye-waller")) {
            o.debye_waller = 0;
            continue;
        }
        if (strncmp(opt, "--", 2) != 0) return cli_bad_arg(PROG, opt, NULL, "unexpected argument");
        if (i + 1 >= argc) return cli_bad_arg(PROG, opt, NULL, "missing value");
        const char *v = argv[++i];
        double x;
        long long k;
        int rc = 0;
        if (!strcmp(opt, "--phases"))
            phases = v;
        else if (!strcmp(opt, "--out"))
            out = v;
        else if (!strcmp(opt, "--device"))
            device = v;
        else if (!strcmp(opt, "--wavelength"))
            wave = v;
        else if (!strcmp(opt, "--n")) {
            if (cli_parse_int(v, 1, INT64_MAX / 2, &n))
                return cli_bad_arg(PROG, opt, v, "expected a whole number of patterns >= 1");
        } else if (!strcmp(opt, "--seed")) {
            char *end = NULL;
            errno = 0;
            unsigned long long s = strtoull(v, &end, 10);
            if (end == v || *end || errno == ERANGE || v[0] == '-')
                return cli_bad_arg(PROG, opt, v, "expected a non-negative integer");
            o.seed = (uint64_t)s;
        } else if (!strcmp(opt, "--threads")) {
            if (cli_parse_int(v, 1, 4096, &threads))
                return cli_bad_arg(PROG, opt, v, "expected 1..4096");
        } else if (!strcmp(opt, "--compress")) {
            long long lvl;
            if (cli_parse_int(v, 0, 9, &lvl)) return cli_bad_arg(PROG, opt, v, "expected 0..9");
            o.compress = (int)lvl;
        } else if (!strcmp(opt, "--batch")) {
            if (cli_parse_int(v, 1, 1 << 20, &batch))
                return cli_bad_arg(PROG, opt, v, "expected 1..1048576");
        } else if (!strcmp(opt, "--two-theta") || !strcmp(opt, "--q")) {
            int q = !strcmp(opt, "--q");
            if (cli_parse_triple(v, grid))
                return cli_bad_arg(PROG, opt, v, "expected MIN:MAX:STEP (numbers)");
            if (!(grid[0] >= 0.0)) return cli_bad_arg(PROG, opt, v, "MIN must be >= 0");
            if (!(grid[0] < grid[1]))
                return cli_bad_arg(PROG, opt, v, "MIN must be smaller than MAX");
            if (!(grid[2] > 0.0)) return cli_bad_arg(PROG, opt, v, "STEP must be > 0");
            if (!q && !(grid[1] < 180.0))
                return cli_bad_arg(PROG, opt, v, "MAX must be below 180 degrees");
            double np = (grid[1] - grid[0]) / grid[2];
            if (np + 1 > K_XRD_MAX_POINTS || np < 1)
                return cli_bad_arg(PROG, opt, v, "the grid must have 2..4194304 points");
            if (q)
                have_q = 1;
            else
                have_tt = 1;
        } else if (!strcmp(opt, "--mixtures")) {
            if (cli_parse_int(v, 1, K_XRD_MAX_PHASES, &k))
                return cli_bad_arg(PROG, opt, v, "expected a number of phases 1..8");
            a->mixtures_max = (int)k;
        } else if (!strcmp(opt, "--lp")) {
            if (!strcmp(v, "lab"))
                o.lp.mode = PID_LP_LAB;
            else if (!strcmp(v, "synchrotron"))
                o.lp.mode = PID_LP_SYNCHROTRON;
            else if (!strcmp(v, "none"))
                o.lp.mode = PID_LP_NONE;
            else
                return cli_bad_arg(PROG, opt, v, "expected lab, synchrotron or none");
        } else if (!strcmp(opt, "--mono")) {
            if (cli_parse_num(v, &x) || x < 0 || x >= 180)
                return cli_bad_arg(PROG, opt, v, "expected degrees in [0, 180)");
            o.lp.mono_two_theta_deg = x;
        } else if (!strcmp(opt, "--polarization")) {
            if (cli_parse_num(v, &x) || x < 0 || x > 1)
                return cli_bad_arg(PROG, opt, v, "expected 0..1");
            o.lp.polarization = x;
        } else if ((rc = cli_aug_option(PROG, opt, v, a)) != CLI_AUG_NOT_MINE) {
            if (rc) return rc;
        } else
            return cli_bad_arg(PROG, opt, NULL, "unknown option (see --help)");
        if (rc) return rc;
    }
    if (have_q && have_tt)
        return cli_bad_arg(PROG, "--q", NULL, "give either --two-theta or --q, not both");
    if (!phases)
        return cli_bad_arg(PROG, "--phases", NULL, "required (a folder of CIF files, or builtin)");
    if (n < 1) return cli_bad_arg(PROG, "--n", NULL, "required (number of patterns)");
    if (!out) return cli_bad_arg(PROG, "--out", NULL, "required (output .h5 file)");

    pid_error err;
    pid_error_clear(&err);
    if (pid_xrd_source_parse(wave, &o.source, &err))
        return cli_bad_arg(PROG, "--wavelength", wave, err.msg);
    o.grid.axis = have_q ? K_XRD_AXIS_Q : K_XRD_AXIS_TWO_THETA;
    o.grid.x0 = (float)grid[0];
    o.grid.step = (float)grid[2];
    o.grid.n_points = (int)floor((grid[1] - grid[0]) / grid[2] + 1e-6) + 1;
    if (have_q && !(grid[1] < 4.0 * M_PI / o.source.wavelength_a[0]))
        return cli_bad_arg(PROG, "--q", NULL, "MAX must be below 4 pi / lambda");
    o.n = n;
    o.threads = (int)threads;
    o.batch = (int)batch;
    if (pid_augment_validate(&o.aug, &err)) {
        fprintf(stderr, PROG ": %s\n", err.msg);
        return 2;
    }

    /* The command line, stored in the file as provenance. */
    char cmd[2048];
    size_t used = (size_t)snprintf(cmd, sizeof cmd, "phaseid synth");
    for (int i = 0; i < argc && used < sizeof cmd; i++)
        used += (size_t)snprintf(cmd + used, sizeof cmd - used, " %s", argv[i]);
    o.command = cmd;

    pid_phaselib *lib = NULL;
    pid_backend *be = NULL;
    int rc = 0;
    if (pid_phaselib_load(phases, &lib, &err)) {
        fprintf(stderr, PROG ": --phases %s: %s\n", phases, err.msg);
        return 1;
    }
    if (pid_backend_create(&be, device, (int)threads, &err)) {
        fprintf(stderr, PROG ": %s\n", err.msg); /* the message names --device */
        pid_phaselib_destroy(lib);
        return err.code == PID_ERR_ARG ? 2 : 1;
    }
    progress_state ps = {pid_mono_s(), 0.0, quiet, -1};
    if (!quiet)
        fprintf(stderr, PROG ": %lld patterns, %d points, %d phases, %s\n", n, o.grid.n_points,
                pid_phaselib_count(lib), pid_backend_device_desc(be));
    pid_status st = pid_xrd_dataset_write(lib, &o, be, out, progress_cb, &ps, &err);
    if (st) {
        if (!quiet) fputc('\n', stderr);
        fprintf(stderr, PROG ": %s\n", err.msg);
        rc = st == PID_ERR_ARG ? 2 : 1;
    } else if (!quiet) {
        double el = pid_mono_s() - ps.t0;
        fprintf(stderr, PROG ": wrote %s (%lld patterns in %.1f s, %.0f patterns/s)\n", out, n, el,
                el > 0 ? (double)n / el : 0.0);
    }
    pid_backend_destroy(be);
    pid_phaselib_destroy(lib);
    return rc;
}

int cli_synth(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
        !strcmp(argv[1], "help")) {
        synth_usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "xrd") != 0) {
        fprintf(stderr, "phaseid synth: unknown modality '%s' (available: xrd)\n", argv[1]);
        return 2;
    }
    for (int i = 2; i < argc; i++)
        if (!strcmp(argv[i], "--sticks")) return cli_synth_sticks(argc - 1, argv + 1);
    return synth_xrd(argc - 1, argv + 1);
}
