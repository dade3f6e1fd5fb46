/* `phaseid synth xrd --sticks FILE.cif`: the stick pattern (one line per
 * family of equivalent reflections) of one structure as TSV on stdout, for
 * comparison with other tools and for checking a CIF before training. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/cli.h"
#include "synth/cif.h"
#include "synth/xrd.h"

static void sticks_usage(FILE *f)
{
    fprintf(f,
            "usage: phaseid synth xrd --sticks FILE.cif [options]\n"
            "\n"
            "Print the powder XRD stick pattern of a structure as tab-separated columns\n"
            "  two_theta_deg  d_angstrom  intensity  h  k  l  multiplicity\n"
            "one row per family of symmetry-equivalent reflections (Friedel pairs included in\n"
            "the multiplicity), sorted by 2-theta; intensity = |F|^2 * multiplicity * LP,\n"
            "scaled so the strongest stick is 100. Form factors: xraylib (X-ray f0).\n"
            "\n"
            "options:\n"
            "  --sticks FILE.cif      structure to simulate (required)\n"
            "  --wavelength W         CuKa, CuKa1, MoKa, MoKa1, CoKa, CrKa, FeKa, AgKa (and\n"
            "                         ...Ka1), or a wavelength in angstrom such as 0.4133.\n"
            "                         Sticks use K-alpha1 only (CuKa -> 1.540562 A).\n"
            "                         Default CuKa.\n"
            "  --two-theta MIN:MAX    2-theta range in degrees, 0 <= MIN < MAX < 180.\n"
            "                         Default 5:90.\n"
            "  --lp MODE              Lorentz-polarization: lab (unpolarized tube, default),\n"
            "                         synchrotron (beam linearly polarized in the horizontal\n"
            "                         plane, 2-theta scanned in the vertical plane), or none.\n"
            "  --mono DEG             lab only: 2-theta of a monochromator crystal in degrees\n"
            "                         (e.g. 26.6 for graphite 002 with Cu), 0 = none (default).\n"
            "  --polarization P       synchrotron only: fraction of linear polarization,\n"
            "                         0..1 (default 0.95).\n"
            "  --no-debye-waller      ignore the B_iso / U_iso of the file (pymatgen's default).\n"
            "  --min-intensity REL    drop sticks weaker than REL times the strongest,\n"
            "                         0 <= REL < 1 (default 0.001). Systematic absences are\n"
            "                         always dropped.\n"
            "  --block N              data block to use when the file holds several\n"
            "                         structures, counted from 0 (default 0).\n"
            "  -h, --help             show this help.\n"
            "\n"
            "exit status: 0 ok, 1 file or simulation error, 2 bad arguments.\n");
}

/* Value of option argv[*i]: "--opt=VALUE" or "--opt VALUE". NULL if absent. */
static const char *opt_value(int argc, char **argv, int *i, const char *name)
{
    size_t n = strlen(name);
    if (strncmp(argv[*i], name, n) != 0) return NULL;
    if (argv[*i][n] == '=') return argv[*i] + n + 1;
    if (argv[*i][n] != '\0') return NULL;
    if (*i + 1 >= argc) return "";
    return argv[++*i];
}

static int missing_value(const char *opt)
{
    fprintf(stderr, "phaseid synth xrd: option '%s' needs a value (see --help)\n", opt);
    return 2;
}

static int is_opt(const char *arg, const char *name)
{
    size_t n = strlen(name);
    return !strncmp(arg, name, n) && (arg[n] == '\0' || arg[n] == '=');
}

int cli_synth_sticks(int argc, char **argv)
{
    const char *path = NULL;
    const char *wave = "CuKa";
    long block = 0;
    pid_xrd_opts opts;
    pid_error err = {0};
    pid_xrd_opts_default(&opts);
    int lp_set_mono = 0, lp_set_pol = 0;

    /* Help first, wherever it stands: `--sticks --help` must not open a file
     * named "--help". */
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            sticks_usage(stdout);
            return 0;
        }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (is_opt(a, "--sticks")) {
            v = opt_value(argc, argv, &i, "--sticks");
            if (!v || !*v) return missing_value(a);
            path = v;
        } else if (is_opt(a, "--wavelength")) {
            v = opt_value(argc, argv, &i, "--wavelength");
            if (!v || !*v) return missing_value(a);
            wave = v;
        } else if (is_opt(a, "--two-theta")) {
            v = opt_value(argc, argv, &i, "--two-theta");
            if (!v || !*v) return missing_value(a);
            char buf[128];
            snprintf(buf, sizeof buf, "%s", v);
            char *colon = strchr(buf, ':');
            if (!colon) {
                fprintf(stderr, "phaseid synth xrd: --two-theta expects MIN:MAX, got '%s'\n", v);
                return 2;
            }
            *colon = '\0';
            double lo, hi;
            if (cli_parse_num(buf, &lo) || cli_parse_num(colon + 1, &hi) || !(lo >= 0.0) ||
                !(hi > lo) || !(hi < 180.0)) {
                fprintf(stderr,
                        "phaseid synth xrd: --two-theta '%s': need 0 <= MIN < MAX < 180 (deg)\n",
                        v);
                return 2;
            }
            opts.two_theta_min_deg = lo;
            opts.two_theta_max_deg = hi;
        } else if (is_opt(a, "--lp")) {
            v = opt_value(argc, argv, &i, "--lp");
            if (!v || !*v) return missing_value(a);
            if (!strcmp(v, "lab"))
                opts.lp.mode = PID_LP_LAB;
            else if (!strcmp(v, "synchrotron"))
                opts.lp.mode = PID_LP_SYNCHROTRON;
            else if (!strcmp(v, "none"))
                opts.lp.mode = PID_LP_NONE;
            else {
                fprintf(stderr, "phaseid synth xrd: --lp '%s': expected lab, synchrotron or none\n",
                        v);
                return 2;
            }
        } else if (is_opt(a, "--mono")) {
            v = opt_value(argc, argv, &i, "--mono");
            if (!v || !*v) return missing_value(a);
            double m;
            if (cli_parse_num(v, &m) || !(m >= 0.0) || !(m < 180.0)) {
                fprintf(stderr, "phaseid synth xrd: --mono '%s': need 0 <= DEG < 180\n", v);
                return 2;
            }
            opts.lp.mono_two_theta_deg = m;
            lp_set_mono = 1;
        } else if (is_opt(a, "--polarization")) {
            v = opt_value(argc, argv, &i, "--polarization");
            if (!v || !*v) return missing_value(a);
            double p;
            if (cli_parse_num(v, &p) || !(p >= 0.0) || !(p <= 1.0)) {
                fprintf(stderr, "phaseid synth xrd: --polarization '%s': need 0 <= P <= 1\n", v);
                return 2;
            }
            opts.lp.polarization = p;
            lp_set_pol = 1;
        } else if (!strcmp(a, "--no-debye-waller")) {
            opts.debye_waller = 0;
        } else if (is_opt(a, "--min-intensity")) {
            v = opt_value(argc, argv, &i, "--min-intensity");
            if (!v || !*v) return missing_value(a);
            double r;
            if (cli_parse_num(v, &r) || !(r >= 0.0) || !(r < 1.0)) {
                fprintf(stderr, "phaseid synth xrd: --min-intensity '%s': need 0 <= REL < 1\n", v);
                return 2;
            }
            opts.min_rel_intensity = r;
        } else if (is_opt(a, "--block")) {
            v = opt_value(argc, argv, &i, "--block");
            if (!v || !*v) return missing_value(a);
            char *end = NULL;
            errno = 0;
            block = strtol(v, &end, 10);
            if (end == v || *end != '\0' || errno == ERANGE || block < 0 || block > 1000000) {
                fprintf(stderr, "phaseid synth xrd: --block '%s': need an index >= 0\n", v);
                return 2;
            }
        } else {
            fprintf(stderr, "phaseid synth xrd: unknown argument '%s' (see --help)\n", a);
            return 2;
        }
    }
    if (!path) {
        fprintf(stderr, "phaseid synth xrd: --sticks FILE.cif is required\n\n");
        sticks_usage(stderr);
        return 2;
    }
    if (lp_set_mono && opts.lp.mode != PID_LP_LAB) {
        fprintf(stderr, "phaseid synth xrd: --mono applies to --lp lab only\n");
        return 2;
    }
    if (lp_set_pol && opts.lp.mode != PID_LP_SYNCHROTRON) {
        fprintf(stderr, "phaseid synth xrd: --polarization applies to --lp synchrotron only\n");
        return 2;
    }
    if (pid_xrd_source_parse(wave, &opts.source, &err)) {
        fprintf(stderr, "phaseid synth xrd: --wavelength: %s\n", err.msg);
        return 2;
    }

    pid_structure *arr = NULL;
    int n_struct = 0;
    if (pid_cif_read(path, &arr, &n_struct, &err)) {
        fprintf(stderr, "phaseid synth xrd: %s\n", err.msg);
        return 1;
    }
    int rc = 1;
    pid_xrd_stick *sk = NULL;
    int n = 0;
    if (block >= n_struct) {
        fprintf(stderr, "phaseid synth xrd: %s: --block %ld but the file holds %d structure(s)\n",
                path, block, n_struct);
        rc = 2;
        goto done;
    }
    if (n_struct > 1 && block == 0)
        fprintf(stderr,
                "phaseid synth xrd: %s holds %d structures; using block 0 (%s), "
                "--block N selects another\n",
                path, n_struct, arr[0].name);
    if (pid_xrd_sticks(&arr[block], &opts, &sk, &n, &err)) {
        fprintf(stderr, "phaseid synth xrd: %s: %s\n", path, err.msg);
        goto done;
    }
    printf("two_theta_deg\td_angstrom\tintensity\th\tk\tl\tmultiplicity\n");
    for (int i = 0; i < n; i++)
        printf("%.6f\t%.6f\t%.4f\t%d\t%d\t%d\t%d\n", sk[i].two_theta_deg, sk[i].d_angstrom,
               sk[i].intensity, sk[i].h, sk[i].k, sk[i].l, sk[i].multiplicity);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "phaseid synth xrd: error writing to stdout\n");
        goto done;
    }
    rc = 0;
done:
    free(sk);
    pid_structure_array_destroy(arr, n_struct);
    return rc;
}
