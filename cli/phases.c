/* `phaseid phases list|show`: lists the phases of a library (TSV or JSON) and
 * shows one phase or CIF file in full (cell, space group found by spglib,
 * asymmetric-unit and expanded sites). */
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "cli/cli.h"
#include "synth/cif.h"
#include "synth/phaselib.h"

static void usage_phases(FILE *f)
{
    fprintf(f, "usage: phaseid phases list [--phases DIR|builtin] [--format tsv|json]\n"
               "       phaseid phases show NAME|FILE.cif [--phases DIR|builtin] "
               "[--format text|json]\n\n"
               "Run 'phaseid phases list --help' or 'phaseid phases show --help' for details.\n");
}

static void usage_list(FILE *f)
{
    fprintf(f, "usage: phaseid phases list [--phases DIR|builtin] [--format tsv|json]\n\n"
               "List every phase of a phase library: one line per phase with name, reduced\n"
               "formula, space group (number and symbol, found by spglib), cell a b c\n"
               "(angstrom) alpha beta gamma (deg), formula units Z, density (g/cm^3), atoms in\n"
               "the unit cell and the literature reference named by the file.\n\n"
               "options:\n"
               "  --phases DIR|builtin  folder whose *.cif files form the library (default\n"
               "                        builtin: $PHASEID_DATA/phases, else the data/phases\n"
               "                        folder of the source tree or installation)\n"
               "  --format tsv|json     tab-separated columns with a header line (default),\n"
               "                        or one JSON object {\"phases\": [...]}\n"
               "  -h, --help            show this help\n");
}

static void usage_show(FILE *f)
{
    fprintf(
        f,
        "usage: phaseid phases show NAME|FILE.cif [--phases DIR|builtin] [--format text|json]\n\n"
        "Show one phase in full: name, formula, source file, reference, cell, volume,\n"
        "density, the space group spglib finds on the expanded cell, the number of\n"
        "symmetry operations, and the sites of the asymmetric unit and of the whole\n"
        "cell (element, charge, fractional coordinates, occupancy, B in angstrom^2).\n"
        "A FILE (an argument ending in .cif or naming an existing file) is read\n"
        "directly and every structure block in it is shown; a NAME is looked up in\n"
        "the phase library.\n\n"
        "options:\n"
        "  --phases DIR|builtin  library to look NAME up in (default builtin)\n"
        "  --format text|json    readable blocks (default), or one JSON object\n"
        "                        {\"phases\": [...]} with the sites included\n"
        "  -h, --help            show this help\n");
}

/* Write s as a JSON string literal. */
static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"':
            fputs("\\\"", f);
            break;
        case '\\':
            fputs("\\\\", f);
            break;
        case '\n':
            fputs("\\n", f);
            break;
        case '\t':
            fputs("\\t", f);
            break;
        case '\r':
            fputs("\\r", f);
            break;
        default:
            if (*p < 0x20)
                fprintf(f, "\\u%04x", *p);
            else
                fputc(*p, f);
        }
    }
    fputc('"', f);
}

/* Tab-separated fields must not contain tabs or newlines. */
static void tsv_str(FILE *f, const char *s)
{
    for (const char *p = s; *p; p++)
        fputc((*p == '\t' || *p == '\n' || *p == '\r') ? ' ' : *p, f);
}

static void json_site(FILE *f, const pid_site *t)
{
    fprintf(f, "{\"label\": ");
    json_str(f, t->label);
    fprintf(f, ", \"element\": ");
    json_str(f, t->element);
    fprintf(f,
            ", \"z\": %d, \"charge\": %d, \"frac\": [%.8f, %.8f, %.8f], \"occupancy\": %.6g, "
            "\"b_iso\": %.6g}",
            t->z, t->charge, t->frac[0], t->frac[1], t->frac[2], t->occupancy, t->b_iso);
}

static void json_phase(FILE *f, const pid_structure *s, int with_sites)
{
    fprintf(f, "{\"name\": ");
    json_str(f, s->name);
    fprintf(f, ", \"formula\": ");
    json_str(f, s->formula);
    fprintf(f, ", \"source\": ");
    json_str(f, s->source);
    fprintf(f, ", \"reference\": ");
    json_str(f, s->reference);
    fprintf(f, ", \"spacegroup_number\": %d, \"spacegroup_symbol\": ", s->spacegroup_number);
    json_str(f, s->spacegroup_hm);
    fprintf(f,
            ", \"a\": %.8g, \"b\": %.8g, \"c\": %.8g, \"alpha\": %.8g, \"beta\": %.8g, "
            "\"gamma\": %.8g, \"volume_a3\": %.10g, \"density_g_cm3\": %.8g, \"z\": %d, "
            "\"mass_amu\": %.10g, \"n_ops\": %d, \"n_asym\": %d, \"n_sites\": %d",
            s->a, s->b, s->c, s->alpha, s->beta, s->gamma, pid_structure_volume(s),
            pid_structure_density(s), pid_structure_formula_units(s), pid_structure_cell_mass(s),
            s->n_ops, s->n_asym, s->n_sites);
    if (with_sites) {
        fprintf(f, ",\n  \"asym_sites\": [");
        for (int i = 0; i < s->n_asym; i++) {
            fprintf(f, "%s\n    ", i ? "," : "");
            json_site(f, &s->sites[i]);
        }
        fprintf(f, "],\n  \"sites\": [");
        for (int i = 0; i < s->n_sites; i++) {
            fprintf(f, "%s\n    ", i ? "," : "");
            json_site(f, &s->sites[i]);
        }
        fprintf(f, "]");
    }
    fprintf(f, "}");
}

static void json_phases(FILE *f, const pid_structure *const *list, int n, int with_sites)
{
    fprintf(f, "{\"phases\": [");
    for (int i = 0; i < n; i++) {
        fprintf(f, "%s\n ", i ? "," : "");
        json_phase(f, list[i], with_sites);
    }
    fprintf(f, "\n]}\n");
}

static void text_site(FILE *f, const pid_site *t)
{
    char charge[16] = "0";
    if (t->charge)
        snprintf(charge, sizeof charge, "%d%c", t->charge > 0 ? t->charge : -t->charge,
                 t->charge > 0 ? '+' : '-');
    fprintf(f, "  %-8s %-2s %4s  %10.6f %10.6f %10.6f  %6.4f  %6.3f\n", t->label, t->element,
            charge, t->frac[0], t->frac[1], t->frac[2], t->occupancy, t->b_iso);
}

static void text_phase(FILE *f, const pid_structure *s)
{
    fprintf(f, "name:        %s\n", s->name);
    fprintf(f, "formula:     %s (Z = %d)\n", s->formula, pid_structure_formula_units(s));
    fprintf(f, "source:      %s\n", s->source);
    fprintf(f, "reference:   %s\n", s->reference[0] ? s->reference : "(none given)");
    fprintf(f, "cell:        a = %.5f  b = %.5f  c = %.5f angstrom\n", s->a, s->b, s->c);
    fprintf(f, "             alpha = %.4f  beta = %.4f  gamma = %.4f deg\n", s->alpha, s->beta,
            s->gamma);
    fprintf(f, "volume:      %.4f angstrom^3\n", pid_structure_volume(s));
    fprintf(f, "density:     %.4f g/cm^3 (cell mass %.3f amu)\n", pid_structure_density(s),
            pid_structure_cell_mass(s));
    fprintf(f, "space group: %s (No. %d), %d symmetry operations in this cell\n",
            s->spacegroup_hm[0] ? s->spacegroup_hm : "?", s->spacegroup_number, s->n_ops);
    const char *hdr = "  label    el charge       x          y          z       occ      B\n";
    fprintf(f, "asymmetric unit (%d sites, as listed in the file):\n%s", s->n_asym, hdr);
    for (int i = 0; i < s->n_asym; i++)
        text_site(f, &s->sites[i]);
    fprintf(f, "unit cell (%d atoms after symmetry expansion):\n%s", s->n_sites, hdr);
    for (int i = 0; i < s->n_sites; i++)
        text_site(f, &s->sites[i]);
}

typedef struct {
    const char *phases;
    const char *format;
    const char *target;
    int help;
} phases_opts;

/* Shared option parser; returns 0 or 2 (usage error, message printed). */
static int parse_opts(int argc, char **argv, const char *cmd, int want_target, phases_opts *o)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char **dst = NULL;
        const char *name = NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            o->help = 1;
            continue;
        }
        if (!strncmp(a, "--phases", 8) && (a[8] == '\0' || a[8] == '=')) {
            dst = &o->phases;
            name = "--phases";
        } else if (!strncmp(a, "--format", 8) && (a[8] == '\0' || a[8] == '=')) {
            dst = &o->format;
            name = "--format";
        }
        if (dst) {
            if (a[8] == '=') {
                *dst = a + 9;
            } else if (i + 1 < argc) {
                *dst = argv[++i];
            } else {
                fprintf(stderr, "phaseid phases %s: %s needs a value\n", cmd, name);
                return 2;
            }
            continue;
        }
        if (a[0] == '-' && a[1] != '\0') {
            fprintf(stderr, "phaseid phases %s: unknown option '%s'\n", cmd, a);
            return 2;
        }
        if (want_target && !o->target) {
            o->target = a;
            continue;
        }
        fprintf(stderr, "phaseid phases %s: unexpected argument '%s'\n", cmd, a);
        return 2;
    }
    return 0;
}

static int cmd_list(int argc, char **argv)
{
    phases_opts o = {.phases = "builtin", .format = "tsv"};
    int rc = parse_opts(argc, argv, "list", 0, &o);
    if (rc || o.help) {
        usage_list(rc ? stderr : stdout);
        return rc;
    }
    int json = !strcmp(o.format, "json");
    if (!json && strcmp(o.format, "tsv")) {
        fprintf(stderr, "phaseid phases list: --format must be tsv or json, not '%s'\n", o.format);
        return 2;
    }
    pid_error err;
    pid_error_clear(&err);
    pid_phaselib *lib = NULL;
    if (pid_phaselib_load(o.phases, &lib, &err)) {
        fprintf(stderr, "phaseid: %s\n", err.msg);
        return 1;
    }
    int n = pid_phaselib_count(lib);
    if (json) {
        const pid_structure *list[n > 0 ? n : 1];
        for (int i = 0; i < n; i++)
            list[i] = pid_phaselib_get(lib, i);
        json_phases(stdout, list, n, 0);
    } else {
        printf("name\tformula\tspacegroup_number\tspacegroup_symbol\ta\tb\tc\talpha\tbeta\tgamma\t"
               "Z\tdensity_g_cm3\tatoms_in_cell\treference\n");
        for (int i = 0; i < n; i++) {
            const pid_structure *s = pid_phaselib_get(lib, i);
            tsv_str(stdout, s->name);
            printf("\t%s\t%d\t%s\t%.5f\t%.5f\t%.5f\t%.4f\t%.4f\t%.4f\t%d\t%.4f\t%d\t", s->formula,
                   s->spacegroup_number, s->spacegroup_hm, s->a, s->b, s->c, s->alpha, s->beta,
                   s->gamma, pid_structure_formula_units(s), pid_structure_density(s), s->n_sites);
            tsv_str(stdout, s->reference);
            putchar('\n');
        }
    }
    pid_phaselib_destroy(lib);
    return 0;
}

static int looks_like_file(const char *arg)
{
    size_t n = strlen(arg);
    if (n > 4 && !strcasecmp(arg + n - 4, ".cif")) return 1;
    if (strchr(arg, '/')) return 1;
    struct stat sb;
    return stat(arg, &sb) == 0 && S_ISREG(sb.st_mode);
}

static int cmd_show(int argc, char **argv)
{
    phases_opts o = {.phases = "builtin", .format = "text"};
    int rc = parse_opts(argc, argv, "show", 1, &o);
    if (rc || o.help) {
        usage_show(rc ? stderr : stdout);
        return rc;
    }
    if (!o.target) {
        fprintf(stderr, "phaseid phases show: give a phase NAME or a FILE.cif\n");
        usage_show(stderr);
        return 2;
    }
    int json = !strcmp(o.format, "json");
    if (!json && strcmp(o.format, "text")) {
        fprintf(stderr, "phaseid phases show: --format must be text or json, not '%s'\n", o.format);
        return 2;
    }
    pid_error err;
    pid_error_clear(&err);
    pid_phaselib *lib = NULL;
    pid_structure *arr = NULL;
    int n = 0;
    const pid_structure *one = NULL;
    if (looks_like_file(o.target)) {
        if (pid_cif_read(o.target, &arr, &n, &err)) {
            fprintf(stderr, "phaseid: %s\n", err.msg);
            return 1;
        }
    } else {
        if (pid_phaselib_load(o.phases, &lib, &err)) {
            fprintf(stderr, "phaseid: %s\n", err.msg);
            return 1;
        }
        one = pid_phaselib_find(lib, o.target);
        if (!one) {
            fprintf(stderr, "phaseid: no phase named '%s' in %s (see 'phaseid phases list')\n",
                    o.target, pid_phaselib_dir(lib));
            pid_phaselib_destroy(lib);
            return 1;
        }
        n = 1;
    }
    const pid_structure *list[n];
    for (int i = 0; i < n; i++)
        list[i] = one ? one : &arr[i];
    if (json) {
        json_phases(stdout, list, n, 1);
    } else {
        for (int i = 0; i < n; i++) {
            if (i) putchar('\n');
            text_phase(stdout, list[i]);
        }
    }
    pid_structure_array_destroy(arr, one ? 0 : n);
    pid_phaselib_destroy(lib);
    return 0;
}

int cli_phases(int argc, char **argv)
{
    if (argc < 2) {
        usage_phases(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage_phases(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "list")) return cmd_list(argc - 1, argv + 1);
    if (!strcmp(argv[1], "show")) return cmd_show(argc - 1, argv + 1);
    fprintf(stderr, "phaseid phases: unknown subcommand '%s'\n", argv[1]);
    usage_phases(stderr);
    return 2;
}
