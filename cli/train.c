/* `phaseid train`: parse the options, load the phase library, train a network
 * on synthetic patterns generated on the fly (models/train.h) and save the
 * model file; prints validation accuracy, training time and throughput. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/cli.h"
#include "core/log.h"
#include "models/spec.h"
#include "models/train.h"
#include "models/twins.h"

#define PROG "phaseid train"

static void usage(FILE *f)
{
    fprintf(
        f, "usage: " PROG " --modality xrd --phases DIR|builtin --out MODEL.h5 [options]\n\n"
           "Trains a network on XRD patterns simulated on the fly (double-buffered: CPU\n"
           "worker threads, or with --device cuda the CUDA renderer straight into the\n"
           "network's input), AdamW with linear warm-up then cosine decay, and saves the\n"
           "model.\n\n"
           "  --arch SPEC          network spec (default: the built-in XRD CNN; see phaseid arch)\n"
           "  --steps N            optimizer steps (default 1000)\n"
           "  --batch B            patterns per step (default 64)\n"
           "  --lr LR              peak learning rate (default 1e-3)\n"
           "  --warmup N           warm-up steps (default 100, capped below --steps)\n"
           "  --weight-decay W     AdamW weight decay on weight matrices (default 1e-4)\n"
           "  --seed S             seed of data, init and dropout (default 0)\n"
           "  --mixtures K         up to K phases per pattern; K > 1 trains a sigmoid head\n"
           "                       with a fractions branch (default 1: softmax)\n"
           "  --grid MIN:MAX:STEP  2-theta grid in deg (default 10:80:0.01)\n"
           "  --dataset FILE.h5    train on the patterns of a dataset file (phaseid synth xrd)\n"
           "                       instead of simulating: its grid and radiation, --phases\n"
           "                       defaults to its library, --mixtures to its mixtures;\n"
           "                       rows drawn at random from all but the last max(--val,\n"
           "                       --calib) rows (at most a fifth), which validate and calibrate\n"
           "  --device cpu|cuda|auto  compute backend (default auto)\n"
           "  --threads T          CPU threads (default: all cores)\n"
           "  --val N              held-out validation patterns (default 500; 0 = none)\n"
           "  --checkpoint FILE    write a resumable model file every steps/10 steps\n"
           "  --resume FILE        continue from a checkpoint (parameters, step and AdamW state)\n"
           "  --calib N            calibration patterns after training (default 2000; 0 =\n"
           "                       none): temperature, ECE, unknown-phase threshold/AUROC\n"
           "  --calib-widen F      draw the calibration patterns with every augmentation\n"
           "                       range widened by F >= 1 (stronger strain, texture,\n"
           "                       background, noise, smaller crystallites), so confidence\n"
           "                       and the unknown threshold hold on harder data (default 1)\n"
           "  --holdout-phases F   hold this fraction of the library's phases out of training\n"
           "                       (chosen from --seed) to measure the unknown-phase AUROC\n"
           "                       (default 0: all phases trained, AUROC not measured)\n"
           "  --no-residual        no physics residual check (by default the model flags\n"
           "                       frames whose peaks its predicted phases cannot explain,\n"
           "                       or whose one predicted phase's strong reflections show\n"
           "                       no peak, thresholds from the calibration patterns)\n"
           "  --outliers F         outlier exposure: fraction F of every batch (0..0.5) are\n"
           "                       patterns of no phase (random peak sets, amorphous humps)\n"
           "                       trained towards 'none of the phases' (default 0)\n"
           "  --outliers-lattice S share S (0..1) of those outliers are lattice outliers:\n"
           "                       relatives of the phases with cells 6-20 %% off and\n"
           "                       elements swapped, none close to a phase (default 0)\n"
           "  --quiet              no progress display\n\n"
           "augmentation of the simulated patterns (as for phaseid synth xrd; defaults\n"
           "there): --strain PCT, --zero-shift DEG, --displacement S, --size MIN:MAX,\n"
           "--microstrain MIN:MAX, --texture RMIN:RMAX, --caglioti-u/-v/-w MIN:MAX,\n"
           "--eta MIN:MAX, --background FRAC, --bg-order MIN:MAX, --hump MAX, --air MAX,\n"
           "--noise MIN:MAX, --poisson MIN:MAX|off, --impurities N, --impurity-height\n"
           "MIN:MAX, --min-fraction F. Validation and calibration use the same settings.\n");
}

/* The command; a dataset it loads is handed to *data_out at once, so the
 * caller frees it whatever path returns. */
static int train_cmd(int argc, char **argv, ds_xrd **data_out)
{
    train_opts o;
    train_opts_default(&o);
    const char *modality = NULL, *phases = NULL, *out = NULL, *device = "auto", *dataset = NULL;
    int mixtures_set = 0, grid_set = 0;
    int warmup_set = 0;
    long long threads = 0;
    for (int i = 1; i < argc; i++) {
        const char *opt = argv[i];
        if (!strcmp(opt, "--help") || !strcmp(opt, "-h")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(opt, "--quiet")) {
            o.quiet = 1;
            continue;
        }
        if (!strcmp(opt, "--no-residual")) {
            o.no_residual = 1;
            continue;
        }
        if (i + 1 >= argc) return cli_bad_arg(PROG, opt, NULL, "needs a value (or unknown option)");
        const char *v = argv[++i];
        long long n;
        int rc_aug;
        double d;
        if (!strcmp(opt, "--modality"))
            modality = v;
        else if (!strcmp(opt, "--phases"))
            phases = v;
        else if (!strcmp(opt, "--out"))
            out = v;
        else if (!strcmp(opt, "--arch"))
            o.spec = v;
        else if (!strcmp(opt, "--device"))
            device = v;
        else if (!strcmp(opt, "--dataset"))
            dataset = v;
        else if (!strcmp(opt, "--checkpoint"))
            o.checkpoint = v;
        else if (!strcmp(opt, "--resume"))
            o.resume = v;
        else if (!strcmp(opt, "--steps")) {
            if (cli_parse_int(v, 1, (long long)1 << 40, &n))
                return cli_bad_arg(PROG, opt, v, "expected >= 1");
            o.steps = n;
        } else if (!strcmp(opt, "--batch")) {
            if (cli_parse_int(v, 1, 65536, &n))
                return cli_bad_arg(PROG, opt, v, "expected 1..65536");
            o.batch = (int)n;
        } else if (!strcmp(opt, "--lr")) {
            if (cli_parse_num(v, &d) || d <= 0 || d > 10)
                return cli_bad_arg(PROG, opt, v, "expected a finite number in (0, 10]");
            o.lr = d;
        } else if (!strcmp(opt, "--warmup")) {
            if (cli_parse_int(v, 0, (long long)1 << 40, &n))
                return cli_bad_arg(PROG, opt, v, "expected >= 0");
            o.warmup = n;
            warmup_set = 1;
        } else if (!strcmp(opt, "--weight-decay")) {
            if (cli_parse_num(v, &d) || d < 0 || d >= 1)
                return cli_bad_arg(PROG, opt, v, "expected a finite number in [0, 1)");
            o.weight_decay = d;
        } else if (!strcmp(opt, "--seed")) {
            if (cli_parse_int(v, 0, INT64_MAX, &n))
                return cli_bad_arg(PROG, opt, v, "expected >= 0");
            o.seed = (uint64_t)n;
        } else if (!strcmp(opt, "--mixtures")) {
            if (cli_parse_int(v, 1, K_XRD_MAX_PHASES, &n))
                return cli_bad_arg(PROG, opt, v, "expected 1..8");
            o.mixtures = (int)n;
            mixtures_set = 1;
        } else if (!strcmp(opt, "--threads")) {
            if (cli_parse_int(v, 1, 4096, &n)) return cli_bad_arg(PROG, opt, v, "expected 1..4096");
            threads = n;
        } else if (!strcmp(opt, "--val")) {
            if (cli_parse_int(v, 0, 100000000, &n))
                return cli_bad_arg(PROG, opt, v, "expected 0..1e8");
            o.n_val = (int)n;
        } else if (!strcmp(opt, "--calib")) {
            if (cli_parse_int(v, 0, 100000000, &n))
                return cli_bad_arg(PROG, opt, v, "expected 0..1e8");
            o.n_calib = (int)n;
        } else if (!strcmp(opt, "--holdout-phases")) {
            if (cli_parse_num(v, &d) || d < 0 || d >= 1)
                return cli_bad_arg(PROG, opt, v, "expected a finite fraction in [0, 1)");
            o.holdout_frac = d;
        } else if (!strcmp(opt, "--calib-widen")) {
            if (cli_parse_num(v, &d) || d < 1 || d > 10)
                return cli_bad_arg(PROG, opt, v, "expected a factor in [1, 10]");
            o.calib_widen = d;
        } else if (!strcmp(opt, "--outliers")) {
            if (cli_parse_num(v, &d) || d < 0 || d > 0.5)
                return cli_bad_arg(PROG, opt, v, "expected a fraction in [0, 0.5]");
            o.outlier_frac = d;
        } else if (!strcmp(opt, "--outliers-lattice")) {
            if (cli_parse_num(v, &d) || d < 0 || d > 1)
                return cli_bad_arg(PROG, opt, v, "expected a fraction in [0, 1]");
            o.outlier_lattice = d;
        } else if (!strcmp(opt, "--grid")) {
            double g[3];
            if (cli_parse_triple(v, g) || g[0] < 0 || g[1] <= g[0] || g[1] >= 180 || g[2] <= 0)
                return cli_bad_arg(PROG, opt, v,
                                   "expected MIN:MAX:STEP in deg, 0 <= MIN < MAX < 180");
            double np = floor((g[1] - g[0]) / g[2] + 1e-6) + 1;
            if (np < 2 || np > 1e6) return cli_bad_arg(PROG, opt, v, "grid needs 2..1e6 points");
            o.gen.grid.x0 = (float)g[0];
            o.gen.grid.step = (float)g[2];
            o.gen.grid.n_points = (int)np;
            grid_set = 1;
        } else if ((rc_aug = cli_aug_option(PROG, opt, v, &o.gen.aug)) != CLI_AUG_NOT_MINE) {
            if (rc_aug) return rc_aug;
        } else
            return cli_bad_arg(PROG, opt, NULL, "unknown option (see --help)");
    }
    if (!modality) return cli_bad_arg(PROG, "--modality", NULL, "required (xrd)");
    if (strcmp(modality, "xrd") != 0)
        return cli_bad_arg(PROG, "--modality", modality, "only xrd is supported");
    ds_xrd *data = NULL;
    if (dataset) {
        pid_error derr;
        pid_error_clear(&derr);
        if (grid_set)
            return cli_bad_arg(PROG, "--grid", NULL, "the grid of --dataset is the file's");
        if (ds_load(dataset, &data, &derr)) {
            fprintf(stderr, PROG ": --dataset: %s\n", derr.msg);
            return 1;
        }
        *data_out = data;
        if (!phases && data->library[0]) phases = data->library;
        if (!mixtures_set) o.mixtures = data->mixtures_max;
        o.data = data;
    }
    if (!phases)
        return cli_bad_arg(PROG, "--phases", NULL, "required (a folder of CIF files, or builtin)");
    if (!out) return cli_bad_arg(PROG, "--out", NULL, "required");
    if (strcmp(device, "cpu") && strcmp(device, "cuda") && strcmp(device, "auto"))
        return cli_bad_arg(PROG, "--device", device, "expected cpu, cuda or auto");
    if (!warmup_set && o.warmup >= o.steps) o.warmup = o.steps / 10;
    o.threads = (int)threads;

    pid_error err;
    pid_error_clear(&err);
    /* Spec and settings errors are usage errors (exit 2). */
    {
        net_spec *s = NULL;
        if (net_spec_parse(o.spec ? o.spec : NET_SPEC_DEFAULT_XRD, &s, &err)) {
            fprintf(stderr, PROG ": --arch: %s\n", err.msg);
            return 2;
        }
        net_spec_destroy(s);
        if (train_opts_validate(&o, &err)) {
            fprintf(stderr, PROG ": %s\n", err.msg);
            return 2;
        }
    }
    if (o.holdout_frac > 0 && o.n_calib == 0)
        return cli_bad_arg(PROG, "--holdout-phases", NULL, "needs calibration (--calib > 0)");
    pid_phaselib *lib = NULL, *ulib = NULL;
    pid_backend *be = NULL;
    int rc = 1;
    char kdir[256] = "", udir[256] = "", libdir[1024];
    if (o.holdout_frac > 0) {
        if (!strcmp(phases, "builtin")) {
            if (pid_phaselib_builtin_dir(libdir, sizeof libdir, &err)) {
                fprintf(stderr, PROG ": %s\n", err.msg);
                return 1;
            }
        } else
            snprintf(libdir, sizeof libdir, "%s", phases);
        if (train_split_phases(phases, o.holdout_frac, o.seed, kdir, udir, sizeof kdir, &lib, &ulib,
                               &err)) {
            fprintf(stderr, PROG ": %s\n", err.msg);
            return err.code == PID_ERR_ARG ? 2 : 1;
        }
        o.unknown_lib = ulib;
        o.library = libdir;
    } else if (pid_phaselib_load(phases, &lib, &err)) {
        fprintf(stderr, PROG ": %s\n", err.msg);
        return 1;
    }
    if (pid_backend_create(&be, device, (int)threads, &err)) {
        fprintf(stderr, PROG ": %s\n", err.msg);
        goto done;
    }
    if (!o.quiet)
        fprintf(stderr, PROG ": %d phases from %s, %d points, %s, %lld steps x %d\n",
                pid_phaselib_count(lib), pid_phaselib_dir(lib),
                data ? data->p : o.gen.grid.n_points, pid_backend_device_desc(be),
                (long long)o.steps, o.batch);
    if (!o.quiet && ulib) {
        fprintf(stderr, PROG ": %d phases held out as unknown:", pid_phaselib_count(ulib));
        for (int i = 0; i < pid_phaselib_count(ulib); i++)
            fprintf(stderr, " %s", pid_phaselib_get(ulib, i)->name);
        fputc('\n', stderr);
    }
    train_result r;
    pid_status st = train_run(lib, &o, be, out, &r, &err);
    if (st) {
        fprintf(stderr, PROG ": %s\n", err.msg);
        rc = st == PID_ERR_ARG ? 2 : 1;
        goto done;
    }
    if (r.val_acc >= 0)
        printf("validation accuracy: %.4f (%d patterns, %s)\n", r.val_acc, r.n_val,
               o.mixtures > 1 ? "exact set at 0.5" : "top-1");
    else
        printf("validation accuracy: n/a (--val 0)\n");
    printf("training time: %.2f s\nsamples/s: %.1f\nfinal loss: %.4f\n", r.train_seconds,
           r.samples_per_s, r.final_loss);
    if (r.calibrated) {
        printf("temperature: %.4f\n", r.temperature);
        printf("ECE%s: %.4f before, %.4f after (%d calibration patterns)\n",
               isfinite(r.ece_per_class) ? " of the top phase" : "", r.ece_before, r.ece_after,
               r.n_calib);
        if (isfinite(r.ece_per_class))
            printf("ECE of every phase's probability: %.4f\n", r.ece_per_class);
        printf("near twins in the library: %d pairs (cosine >= %.3f at reachable strain)\n",
               r.n_twins, TWIN_MIN_COS);
        if (r.set_rule.n > 0) {
            printf("phase set: up to %d phases, rank 2.. reported from probability", r.set_rule.n);
            for (int i = 1; i < r.set_rule.n; i++)
                printf("%s%.3f", i > 1 ? " / " : " ", r.set_rule.thr[i]);
            printf(" (calibration exact set %.4f, %.4f at 0.5)\n", r.set_exact_after,
                   r.set_exact_before);
        } else if (isfinite(r.set_exact_before))
            printf("phase set: probability >= 0.5 (calibration exact set %.4f; no fitted rule "
                   "beats it)\n",
                   r.set_exact_before);
        printf("unknown threshold (energy, %.0f%% TPR): %.4f\n", 100.0 * TRAIN_UNKNOWN_TPR,
               r.unknown_threshold);
        if (r.residual_threshold > 0)
            printf("residual threshold (%.0f%% of known explained): %.4f (cells +-%.3f)\n",
                   100.0 * TRAIN_RESIDUAL_TPR, r.residual_threshold, r.residual_strain);
        if (r.missing_threshold > 0)
            printf("missing-reflection threshold (%.0f%% of known right with one phase): %.4f\n",
                   100.0 * TRAIN_MISSING_TPR, r.missing_threshold);
        if (!(r.residual_threshold > 0)) printf("residual check: off\n");
        printf("calibration patterns flagged unknown: %.4f\n", r.flagged_known);
        if (r.n_unknown_phases > 0) {
            printf("unknown AUROC: %.4f (energy, %d held-out phases)\n", r.unknown_auroc,
                   r.n_unknown_phases);
            if (r.residual_threshold > 0)
                printf("unknown AUROC (residual): %.4f; (missing reflections): %.4f\n",
                       r.residual_auroc, r.missing_auroc);
            printf("held-out phase patterns flagged unknown: %.4f\n", r.flagged_unknown);
        } else
            printf("unknown AUROC: not measured (no held-out phases; stored %.1f)\n",
                   r.unknown_auroc);
    } else
        printf("calibration: none (--calib 0)\n");
    printf("model: %s\n", out);
    rc = 0;
done:
    pid_backend_destroy(be);
    pid_phaselib_destroy(lib);
    pid_phaselib_destroy(ulib);
    train_split_cleanup(kdir, udir);
    return rc;
}

int cli_train(int argc, char **argv)
{
    ds_xrd *data = NULL;
    int rc = train_cmd(argc, argv, &data);
    ds_destroy(data);
    return rc;
}
