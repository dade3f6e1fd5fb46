/* `phaseid match`: the physics-only template-matching baseline from the
 * command line: rank the phases of a library against measured patterns. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "synth/match.h"
#include "synth/phaselib.h"

static void match_usage(FILE *f)
{
    fprintf(f, "usage: phaseid match [options] FILE.xy...\n\n"
               "Rank reference phases by profile similarity to measured powder patterns\n"
               "(SNIP background removal, zero shift search, cosine similarity). A physics-only\n"
               "baseline: no trained model is involved.\n\n"
               "options:\n"
               "  --refs DIR|builtin     reference CIFs (default: builtin library)\n"
               "  --wavelength W         CuKa (default), MoKa, CoKa, ..., or angstrom\n"
               "  --two-theta MIN:MAX    compared range in deg (default 10:90)\n"
               "  --max-shift DEG        largest zero shift tried (default 0.3)\n"
               "  --fwhm DEG             simulated peak FWHM (default 0.1)\n"
               "  --top N                hits printed per file (default 5)\n"
               "  --format tsv|json      output format (default tsv)\n"
               "  -h, --help             this help\n");
}

int cli_match(int argc, char **argv)
{
    const char *refs = "builtin", *format = "tsv";
    int top = 5;
    pid_match_opts o;
    pid_match_opts_default(&o);
    pid_error err;
    int first_file = argc;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            match_usage(stdout);
            return 0;
        } else if (a[0] != '-') {
            first_file = i;
            break;
        } else if (!v) {
            fprintf(stderr, "phaseid match: %s needs a value\n", a);
            return 2;
        } else if (!strcmp(a, "--refs")) {
            refs = v;
        } else if (!strcmp(a, "--wavelength")) {
            if (pid_xrd_source_parse(v, &o.source, &err)) {
                fprintf(stderr, "phaseid match: %s\n", err.msg);
                return 2;
            }
        } else if (!strcmp(a, "--two-theta")) {
            if (sscanf(v, "%lf:%lf", &o.two_theta_min_deg, &o.two_theta_max_deg) != 2 ||
                !(o.two_theta_max_deg > o.two_theta_min_deg) || !(o.two_theta_min_deg > 0)) {
                fprintf(stderr, "phaseid match: --two-theta expects MIN:MAX with 0 < MIN < MAX\n");
                return 2;
            }
        } else if (!strcmp(a, "--max-shift")) {
            char *e;
            o.max_zero_shift_deg = strtod(v, &e);
            if (*e || !(o.max_zero_shift_deg >= 0 && o.max_zero_shift_deg <= 5)) {
                fprintf(stderr, "phaseid match: --max-shift expects 0..5 deg\n");
                return 2;
            }
        } else if (!strcmp(a, "--fwhm")) {
            char *e;
            o.fwhm_deg = strtod(v, &e);
            if (*e || !(o.fwhm_deg > 0 && o.fwhm_deg <= 5)) {
                fprintf(stderr, "phaseid match: --fwhm expects 0..5 deg\n");
                return 2;
            }
        } else if (!strcmp(a, "--top")) {
            top = atoi(v);
            if (top < 1) {
                fprintf(stderr, "phaseid match: --top expects a positive integer\n");
                return 2;
            }
        } else if (!strcmp(a, "--format")) {
            format = v;
            if (strcmp(format, "tsv") && strcmp(format, "json")) {
                fprintf(stderr, "phaseid match: --format expects tsv or json\n");
                return 2;
            }
        } else {
            fprintf(stderr, "phaseid match: unknown option %s\n", a);
            match_usage(stderr);
            return 2;
        }
        i++;
    }
    if (first_file >= argc) {
        fprintf(stderr, "phaseid match: no pattern files given\n");
        match_usage(stderr);
        return 2;
    }
    pid_phaselib *lib = NULL;
    if (pid_phaselib_load(refs, &lib, &err)) {
        fprintf(stderr, "phaseid match: %s\n", err.msg);
        return 1;
    }
    int n = pid_phaselib_count(lib), rc = 0;
    const pid_structure **arr = malloc((size_t)n * sizeof *arr);
    pid_match_hit *hits = malloc((size_t)n * sizeof *hits);
    if (!arr || !hits) {
        fprintf(stderr, "phaseid match: out of memory\n");
        rc = 1;
        goto done;
    }
    for (int i = 0; i < n; i++)
        arr[i] = pid_phaselib_get(lib, i);
    int json = !strcmp(format, "json");
    if (json)
        printf("[");
    else
        printf("file\trank\tphase\tformula\tscore\tzero_shift_deg\n");
    for (int f = first_file; f < argc; f++) {
        pid_xy *xy = NULL;
        if (pid_xy_read(argv[f], &xy, &err) || pid_match_rank(xy, arr, n, &o, hits, &err)) {
            fprintf(stderr, "phaseid match: %s\n", err.msg);
            pid_xy_destroy(xy);
            rc = 1;
            continue;
        }
        pid_xy_destroy(xy);
        int k = top < n ? top : n;
        if (json) printf("%s{\"file\": \"%s\", \"hits\": [", f > first_file ? ", " : "", argv[f]);
        for (int r = 0; r < k; r++) {
            const pid_structure *s = arr[hits[r].ref];
            if (json)
                printf("%s{\"phase\": \"%s\", \"formula\": \"%s\", \"score\": %.5f, "
                       "\"zero_shift_deg\": %.3f}",
                       r ? ", " : "", s->name, s->formula, hits[r].score, hits[r].zero_shift_deg);
            else
                printf("%s\t%d\t%s\t%s\t%.5f\t%.3f\n", argv[f], r + 1, s->name, s->formula,
                       hits[r].score, hits[r].zero_shift_deg);
        }
        if (json) printf("]}");
    }
    if (json) printf("]\n");
done:
    free(arr);
    free(hits);
    pid_phaselib_destroy(lib);
    return rc;
}
