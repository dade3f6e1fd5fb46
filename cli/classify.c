/* `phaseid classify --model MODEL.h5 FILE...`: identifies the phases of
 * measured patterns (.xy/.xye/.csv) and of HDF5 stacks of patterns on the
 * model grid with a trained model (models/classify.h); JSON or TSV out. */
#include <errno.h>
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "core/h5.h"
#include "models/classify.h"
#include "synth/xrd.h"
#include "synth/xy.h"

#define PROG "phaseid classify"
#define CLS_CLI_BATCH 64

static void classify_usage(FILE *f)
{
    fprintf(f,
            "usage: phaseid classify --model MODEL.h5 [options] FILE...\n"
            "\n"
            "Identify the phases in measured diffraction patterns with a trained model.\n"
            "FILE is a text pattern (.xy, .xye, .csv: 2-theta or Q, intensity[, sigma]),\n"
            "or an HDF5 file holding a stack of patterns already on the model's grid (an\n"
            "N x P dataset, P = the model's input length, e.g. the /patterns of\n"
            "'phaseid synth xrd'; when the file has axis_kind / axis_start / axis_step\n"
            "attributes they must match the model grid). HDF5 files are recognized by\n"
            "their signature, whatever the extension.\n"
            "\n"
            "Text patterns are resampled linearly onto the model grid (points outside the\n"
            "measured range are 0; less than 50 %% coverage of the model's range is an\n"
            "error), then background-subtracted (SNIP) when the model was trained that\n"
            "way, and normalized as the model file says. Flat patterns and NaN are refused.\n"
            "\n"
            "options:\n"
            "  --model MODEL.h5      trained model file (required)\n"
            "  --format json|tsv     output format (default json), see below\n"
            "  --top K               phases listed per pattern, by decreasing probability\n"
            "                        (default 3; at most the model's number of phases)\n"
            "  --wavelength W        wavelength of the measurement: CuKa, CuKa1, MoKa, MoKa1,\n"
            "                        CoKa, CrKa, FeKa, AgKa or a value in angstrom. The x column\n"
            "                        is then 2-theta (deg) at W's first line and is converted\n"
            "                        through d-spacing to the model's wavelength,\n"
            "                        2t' = 2 asin(lambda_model / lambda_W * sin t), or to\n"
            "                        Q = 4 pi sin t / lambda_W for a Q model. Default: x is\n"
            "                        already on the model's axis at the model's wavelength.\n"
            "                        Not used for HDF5 stacks.\n"
            "  --dataset NAME        dataset of the HDF5 stacks (default /patterns)\n"
            "  --device cpu|cuda|auto  inference backend (default auto: CUDA when visible)\n"
            "  --no-residual         skip the model's physics residual check (faster; residual\n"
            "                        and missing are then null, and unknown comes from the\n"
            "                        energy score alone)\n"
            "  -h, --help            show this help\n"
            "\n"
            "JSON output: one array with one object per pattern, one per line, in input\n"
            "order (rows of a stack carry \"row\", counted from 0):\n"
            "  {\"file\": \"a.xy\", \"phases\": [{\"name\": \"MnO_225\", \"formula\": \"MnO\",\n"
            "    \"probability\": 0.97, \"fraction\": 1.0}, ...], \"unknown_score\": -7.2,\n"
            "    \"unknown\": false}\n"
            "  probability  calibrated (temperature-scaled) softmax probability, or the\n"
            "               per-phase sigmoid probability of a multi-label model\n"
            "  fraction     phase fraction among the predicted phases: from the model's\n"
            "               fractions head, else 1.0 for a single predicted phase and null\n"
            "               when several are predicted; 0.0 for the others. Predicted: the\n"
            "               top phase, plus for a multi-label model the next ones in order\n"
            "               while their probability reaches the model's fitted threshold\n"
            "               for that rank (phaseid train fits them on its calibration\n"
            "               patterns; /v1/models lists them), up to the phases per\n"
            "               pattern it was trained on; models without them: every phase\n"
            "               with probability >= 0.5\n"
            "  unknown_score  energy -T logsumexp(logits / T): higher = less like the\n"
            "               training phases\n"
            "  near_twins   (models that list them) phases whose patterns match this one's\n"
            "               to a cosine >= 0.995 at some strain the training reached: XRD\n"
            "               alone barely tells them apart; a twin of a reported phase is\n"
            "               not reported as a second phase\n"
            "  residual     fraction of the pattern's peak intensity the predicted phases'\n"
            "               simulated sticks (cells fitted) do not explain; null when the\n"
            "               model has no residual check\n"
            "  missing      when one phase is predicted: fraction of its strong reflections'\n"
            "               intensity (at the fitted cell) that shows no peak; 0 when several\n"
            "               are predicted; null when the model has no residual check\n"
            "  unknown      true when unknown_score, residual or missing exceeds the model's\n"
            "               threshold for it (missing: models that store one)\n"
            "TSV output: a header line, then one line per listed phase with the columns\n"
            "  file row rank name formula probability fraction unknown_score unknown\n"
            "  residual missing near_twins\n"
            "  (row is - for text files, fraction NA when unknown, unknown 0/1, residual\n"
            "  and missing NA where JSON has null, near_twins comma-separated or -).\n"
            "\n"
            "Errors in one file are reported on stderr and the others are still classified.\n"
            "exit status: 0 ok, 1 a file or the model failed, 2 bad arguments.\n");
}

typedef struct {
    cls_classifier *c;
    cls_results *res;
    float *frames; /* [CLS_CLI_BATCH, frame size] */
    int json, top, n_out;
    const double *wavelength_a;
    const char *dataset;
} run_ctx;

static void json_str(const char *s)
{
    putchar('"');
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        if (*p == '"' || *p == '\\')
            printf("\\%c", *p);
        else if (*p < 0x20)
            printf("\\u%04x", *p);
        else
            putchar(*p);
    }
    putchar('"');
}

/* TSV: a number, or NA where JSON writes null. */
static void tsv_num(double v)
{
    if (isfinite(v))
        printf("%.6g", v);
    else
        fputs("NA", stdout);
}

/* A JSON number that reads as a float ("1.0", not "1"); null for NaN. */
static void json_num(double v)
{
    char buf[40];
    if (!isfinite(v)) {
        fputs("null", stdout);
        return;
    }
    snprintf(buf, sizeof buf, "%.6g", v);
    fputs(buf, stdout);
    if (!strpbrk(buf, ".en")) fputs(".0", stdout);
}

/* The phases XRD cannot tell phase k from (models/twins.h): a JSON array
 * of names, or for TSV the names comma-separated (- when there are none). */
static void print_twins(const mf_model *m, int64_t k, int json)
{
    enum { CAP = 64 };
    int32_t tw[CAP];
    int nt = m->n_twins > 0 ? mf_phase_twins(m, k, tw, CAP) : 0;
    if (nt > CAP) nt = CAP;
    if (json) putchar('[');
    if (!json && nt <= 0) putchar('-');
    for (int t = 0; t < nt; t++) {
        if (t) fputs(json ? ", " : ",", stdout);
        if (json)
            json_str(m->phases[tw[t]].name);
        else
            fputs(m->phases[tw[t]].name, stdout);
    }
    if (json) putchar(']');
}

/* Print results rows 0..n-1; rows[f] is frame f's row in a stack (NULL for
 * a text file). */
static void print_results(run_ctx *rc, const char *file, const long long *rows)
{
    const mf_model *m = cls_model(rc->c);
    const cls_results *r = rc->res;
    const int64_t k = r->n_classes;
    for (int f = 0; f < r->n; f++) {
        const float *p = r->prob + (size_t)f * (size_t)k;
        const int32_t *order = r->order + (size_t)f * (size_t)k;
        const float *frac = r->fraction + (size_t)f * (size_t)k;
        if (rc->json) {
            fputs(rc->n_out ? ",\n" : "[\n", stdout);
            fputs("{\"file\": ", stdout);
            json_str(file);
            if (rows) printf(", \"row\": %lld", rows[f]);
            fputs(", \"phases\": [", stdout);
            for (int j = 0; j < rc->top; j++) {
                const mf_phase *ph = &m->phases[order[j]];
                fputs(j ? ", {\"name\": " : "{\"name\": ", stdout);
                json_str(ph->name);
                fputs(", \"formula\": ", stdout);
                json_str(ph->formula);
                fputs(", \"probability\": ", stdout);
                json_num(p[order[j]]);
                fputs(", \"fraction\": ", stdout);
                json_num(frac[order[j]]);
                if (m->n_twins > 0) {
                    fputs(", \"near_twins\": ", stdout);
                    print_twins(m, order[j], 1);
                }
                putchar('}');
            }
            fputs("], \"unknown_score\": ", stdout);
            json_num(r->unknown_score[f]);
            fputs(", \"residual\": ", stdout);
            json_num(r->residual[f]);
            fputs(", \"missing\": ", stdout);
            json_num(r->missing[f]);
            printf(", \"unknown\": %s}", r->unknown[f] ? "true" : "false");
        } else {
            for (int j = 0; j < rc->top; j++) {
                const mf_phase *ph = &m->phases[order[j]];
                if (rows)
                    printf("%s\t%lld", file, rows[f]);
                else
                    printf("%s\t-", file);
                printf("\t%d\t%s\t%s\t%.6g\t", j + 1, ph->name, ph->formula, p[order[j]]);
                tsv_num(frac[order[j]]);
                printf("\t%.6g\t%d\t", r->unknown_score[f], r->unknown[f]);
                tsv_num(r->residual[f]);
                putchar('\t');
                tsv_num(r->missing[f]);
                putchar('\t');
                print_twins(m, order[j], 0);
                putchar('\n');
            }
        }
        rc->n_out++;
    }
    fflush(stdout);
}

static pid_status classify_xy(run_ctx *rc, const char *path, pid_error *err)
{
    pid_xy *xy = NULL;
    pid_status st = pid_xy_read(path, &xy, err);
    if (!st) st = cls_prepare_xy(rc->c, xy, rc->wavelength_a, rc->frames, err);
    if (!st) st = cls_run(rc->c, rc->frames, 1, rc->res, err);
    pid_xy_destroy(xy);
    if (st) return st;
    print_results(rc, path, NULL);
    return PID_OK;
}

/* When the stack says which grid it is on, it must be the model's. */
static pid_status check_stack_grid(hid_t fid, const mf_grid *g, pid_error *err)
{
    if (H5Aexists(fid, "axis_kind") > 0) {
        char *kind = NULL;
        pid_status st = pid_h5_read_attr_str(fid, "axis_kind", &kind, err);
        if (st) return st;
        int axis = !strcmp(kind, "q_inv_angstrom") ? 1 : !strcmp(kind, "two_theta_deg") ? 0 : -1;
        free(kind);
        if (axis != g->axis)
            return pid_fail(err, PID_ERR_FORMAT, "the stack's axis is not the model's (%s)",
                            g->axis == 1 ? "Q" : "2-theta");
    }
    const char *names[2] = {"axis_start", "axis_step"};
    const double want[2] = {g->x0, g->step};
    for (int i = 0; i < 2; i++) {
        if (H5Aexists(fid, names[i]) <= 0) continue;
        double v;
        pid_status st = pid_h5_read_attr_f64(fid, names[i], &v, err);
        if (st) return st;
        if (!(fabs(v - want[i]) <= 1e-6 * fmax(1.0, fabs(want[i]))))
            return pid_fail(err, PID_ERR_FORMAT, "the stack's %s %g differs from the model's %g",
                            names[i], v, want[i]);
    }
    if (g->axis == 0 && H5Aexists(fid, "wavelength_a") > 0) {
        double v;
        pid_status st = pid_h5_read_attr_f64(fid, "wavelength_a", &v, err);
        if (st) return st;
        if (!(fabs(v - g->wavelength_a[0]) <= 1e-6 * g->wavelength_a[0]))
            return pid_fail(err, PID_ERR_FORMAT,
                            "the stack's wavelength %g A differs from the model's %g A", v,
                            g->wavelength_a[0]);
    }
    return PID_OK;
}

/* Classify every row of an N x P dataset, in blocks of CLS_CLI_BATCH rows.
 * A bad row (flat, NaN) is reported and skipped; *bad_rows counts them. */
static pid_status classify_stack(run_ctx *rc, const char *path, int *bad_rows, pid_error *err)
{
    pid_status st = PID_OK;
    hid_t fid = H5I_INVALID_HID, dset = H5I_INVALID_HID, fspace = H5I_INVALID_HID,
          mspace = H5I_INVALID_HID;
    const int64_t p = cls_frame_size(rc->c);
    long long rows[CLS_CLI_BATCH];
    *bad_rows = 0;
    if ((st = pid_h5_open_ro(path, &fid, err))) return st;
    if ((st = check_stack_grid(fid, &cls_model(rc->c)->grid, err))) goto fail;
    if (H5Lexists(fid, rc->dataset, H5P_DEFAULT) <= 0) {
        st = pid_fail(err, PID_ERR_FORMAT, "no dataset %s", rc->dataset);
        goto fail;
    }
    PID_H5_CHECK(dset = H5Dopen2(fid, rc->dataset, H5P_DEFAULT));
    PID_H5_CHECK(fspace = H5Dget_space(dset));
    hsize_t dims[2];
    if (H5Sget_simple_extent_ndims(fspace) != 2 ||
        H5Sget_simple_extent_dims(fspace, dims, NULL) < 0 || (int64_t)dims[1] != p) {
        st = pid_fail(err, PID_ERR_FORMAT, "%s is not an N x %lld dataset (the model's grid)",
                      rc->dataset, (long long)p);
        goto fail;
    }
    for (hsize_t r0 = 0; r0 < dims[0]; r0 += CLS_CLI_BATCH) {
        hsize_t nb = dims[0] - r0 < CLS_CLI_BATCH ? dims[0] - r0 : CLS_CLI_BATCH;
        hsize_t start[2] = {r0, 0}, count[2] = {nb, (hsize_t)p};
        PID_H5_CHECK(H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, NULL, count, NULL));
        PID_H5_CHECK(mspace = H5Screate_simple(2, count, NULL));
        PID_H5_CHECK(H5Dread(dset, H5T_NATIVE_FLOAT, mspace, fspace, H5P_DEFAULT, rc->frames));
        H5Sclose(mspace);
        mspace = H5I_INVALID_HID;
        /* Compact the good rows to the front, keeping their row numbers; a
         * bad row (flat, NaN) is reported and left out. */
        int n_good = 0;
        for (hsize_t i = 0; i < nb; i++) {
            pid_error rerr;
            float *row = rc->frames + (size_t)i * (size_t)p;
            if (cls_prepare_frame(rc->c, row, row, &rerr)) {
                fprintf(stderr, PROG ": %s row %llu: %s\n", path, (unsigned long long)(r0 + i),
                        rerr.msg);
                (*bad_rows)++;
                continue;
            }
            if (n_good != (int)i)
                memmove(rc->frames + (size_t)n_good * (size_t)p, row, (size_t)p * sizeof *row);
            rows[n_good++] = (long long)(r0 + i);
        }
        if (n_good > 0) {
            if ((st = cls_run(rc->c, rc->frames, n_good, rc->res, err))) goto fail;
            print_results(rc, path, rows);
        }
    }
fail:
    if (mspace >= 0) H5Sclose(mspace);
    if (fspace >= 0) H5Sclose(fspace);
    if (dset >= 0) H5Dclose(dset);
    if (fid >= 0) H5Fclose(fid);
    return st;
}

static int is_hdf5(const char *path)
{
    static const unsigned char sig[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
    unsigned char buf[8];
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    return n == sizeof buf && !memcmp(buf, sig, sizeof sig);
}

int cli_classify(int argc, char **argv)
{
    const char *model = NULL, *format = "json", *device = "auto", *wl = NULL;
    const char *dataset = "/patterns";
    long top = 3;
    int no_residual = 0;
    char **files = calloc((size_t)argc, sizeof *files);
    int n_files = 0;
    if (!files) {
        fprintf(stderr, PROG ": out of memory\n");
        return 1;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            classify_usage(stdout);
            free(files);
            return 0;
        }
        if (a[0] != '-' || !strcmp(a, "-")) {
            files[n_files++] = argv[i];
            continue;
        }
        if (!strcmp(a, "--")) {
            while (++i < argc)
                files[n_files++] = argv[i];
            break;
        }
        if (!strcmp(a, "--no-residual")) {
            no_residual = 1;
            continue;
        }
        const char *const with_value[] = {"--model",  "--format",  "--top",
                                          "--device", "--dataset", "--wavelength"};
        int known = 0;
        for (size_t j = 0; j < sizeof with_value / sizeof with_value[0]; j++)
            known |= !strcmp(a, with_value[j]);
        if (!known) {
            fprintf(stderr, PROG ": unknown option %s (see --help)\n", a);
            free(files);
            return 2;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, PROG ": %s needs a value\n", a);
            free(files);
            return 2;
        }
        const char *v = argv[++i];
        if (!strcmp(a, "--model")) {
            model = v;
        } else if (!strcmp(a, "--format")) {
            format = v;
            if (strcmp(v, "json") && strcmp(v, "tsv")) {
                fprintf(stderr, PROG ": --format expects json or tsv, not '%s'\n", v);
                free(files);
                return 2;
            }
        } else if (!strcmp(a, "--top")) {
            char *end = NULL;
            errno = 0;
            top = strtol(v, &end, 10);
            if (end == v || *end || errno || top < 1 || top > 100000) {
                fprintf(stderr, PROG ": --top expects a positive integer, not '%s'\n", v);
                free(files);
                return 2;
            }
        } else if (!strcmp(a, "--device")) {
            device = v;
            if (strcmp(v, "cpu") && strcmp(v, "cuda") && strcmp(v, "auto")) {
                fprintf(stderr, PROG ": --device expects cpu, cuda or auto, not '%s'\n", v);
                free(files);
                return 2;
            }
        } else if (!strcmp(a, "--dataset")) {
            dataset = v;
        } else {
            wl = v;
        }
    }
    if (!model || n_files == 0) {
        fprintf(stderr, PROG ": %s\n", !model ? "--model is required" : "no input files given");
        classify_usage(stderr);
        free(files);
        return 2;
    }
    pid_error err;
    pid_xrd_source src;
    double wavelength_a = 0;
    if (wl) {
        if (pid_xrd_source_parse(wl, &src, &err)) {
            fprintf(stderr, PROG ": --wavelength: %s\n", err.msg);
            free(files);
            return 2;
        }
        wavelength_a = src.wavelength_a[0];
    }

    pid_h5_quiet();
    run_ctx rc = {0};
    rc.json = !strcmp(format, "json");
    rc.wavelength_a = wl ? &wavelength_a : NULL;
    rc.dataset = dataset;
    int rcode = 0;
    const cls_options copts = {
        .device = device, .max_batch = CLS_CLI_BATCH, .no_residual = no_residual};
    if (cls_open_opts(&rc.c, model, &copts, &err) ||
        cls_results_create(&rc.res, rc.c, CLS_CLI_BATCH, &err)) {
        fprintf(stderr, PROG ": %s\n", err.msg);
        rcode = 1;
        goto done;
    }
    int64_t k = cls_model(rc.c)->n_classes;
    rc.top = top < k ? (int)top : (int)k;
    rc.frames = malloc((size_t)CLS_CLI_BATCH * (size_t)cls_frame_size(rc.c) * sizeof *rc.frames);
    if (!rc.frames) {
        fprintf(stderr, PROG ": out of memory\n");
        rcode = 1;
        goto done;
    }
    if (!rc.json)
        printf("file\trow\trank\tname\tformula\tprobability\tfraction\tunknown_score\tunknown\t"
               "residual\tmissing\tnear_twins\n");
    for (int f = 0; f < n_files; f++) {
        int bad_rows = 0;
        pid_status st = is_hdf5(files[f]) ? classify_stack(&rc, files[f], &bad_rows, &err)
                                          : classify_xy(&rc, files[f], &err);
        if (st) {
            /* Messages from the modules may already start with the path, or
             * with "classify: ", which PROG says already. */
            const char *msg = err.msg;
            if (!strncmp(msg, "classify: ", 10)) msg += 10;
            if (strncmp(msg, files[f], strlen(files[f])))
                fprintf(stderr, PROG ": %s: %s\n", files[f], msg);
            else
                fprintf(stderr, PROG ": %s\n", msg);
        }
        if (st || bad_rows) rcode = 1;
    }
    if (rc.json) fputs(rc.n_out ? "\n]\n" : "[]\n", stdout);
done:
    free(rc.frames);
    cls_results_destroy(rc.res);
    cls_close(rc.c);
    free(files);
    return rcode;
}
