/* Shared command-line value parsing (see args.h): strict strtod/strtoll
 * wrappers and colon-separated lists, so every subcommand rejects the same
 * malformed values with the same kind of message. */
#include "cli/args.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "synth/augment.h"
#include "synth/xrd_dataset.h"

int cli_parse_num(const char *s, double *out)
{
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end != '\0' || errno == ERANGE || !isfinite(v)) return -1;
    *out = v;
    return 0;
}

int cli_parse_int(const char *s, long long lo, long long hi, long long *out)
{
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end != '\0' || errno == ERANGE || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

/* Split s at ':' into exactly n numbers. */
static int parse_list(const char *s, int n, double *v)
{
    char buf[128];
    if (strlen(s) >= sizeof buf) return -1;
    strcpy(buf, s);
    char *p = buf;
    for (int i = 0; i < n; i++) {
        char *c = strchr(p, ':');
        if ((i < n - 1 && !c) || (i == n - 1 && c)) return -1;
        if (c) *c = '\0';
        if (cli_parse_num(p, &v[i])) return -1;
        p = c ? c + 1 : p;
    }
    return 0;
}

int cli_parse_pair(const char *s, double *a, double *b, int allow_off)
{
    double v[2];
    if (allow_off && !strcmp(s, "off")) {
        *a = *b = 0.0;
        return 0;
    }
    if (parse_list(s, 2, v)) return -1;
    *a = v[0];
    *b = v[1];
    return 0;
}

int cli_parse_triple(const char *s, double v[3])
{
    double t[3];
    if (parse_list(s, 3, t)) return -1;
    memcpy(v, t, sizeof t);
    return 0;
}

int cli_bad_arg(const char *prog, const char *opt, const char *val, const char *why)
{
    if (val)
        fprintf(stderr, "%s: %s %s: %s\n", prog, opt, val, why);
    else
        fprintf(stderr, "%s: %s: %s\n", prog, opt, why);
    return 2;
}

static int range_opt(const char *prog, const char *opt, const char *val, pid_range *r,
                     int allow_off, double scale)
{
    double a, b;
    if (cli_parse_pair(val, &a, &b, allow_off))
        return cli_bad_arg(prog, opt, val,
                           allow_off ? "expected MIN:MAX (numbers) or off"
                                     : "expected MIN:MAX (finite numbers)");
    if (a > b) return cli_bad_arg(prog, opt, val, "MIN must not exceed MAX");
    r->lo = a * scale;
    r->hi = b * scale;
    return 0;
}

int cli_aug_option(const char *prog, const char *opt, const char *v, pid_augment *a)
{
    double x;
    long long k;
    int rc = 0;
    if (!strcmp(opt, "--min-fraction")) {
        if (cli_parse_num(v, &x) || x < 0 || x >= 1)
            return cli_bad_arg(prog, opt, v, "expected 0 <= F < 1");
        a->min_fraction = x;
    } else if (!strcmp(opt, "--strain")) {
        if (cli_parse_num(v, &x) || x < 0 || x > 20)
            return cli_bad_arg(prog, opt, v, "expected 0..20 (%)");
        a->strain_max = x / 100.0;
    } else if (!strcmp(opt, "--zero-shift")) {
        if (cli_parse_num(v, &x) || x < 0 || x > 5)
            return cli_bad_arg(prog, opt, v, "expected 0..5 degrees");
        a->zero_shift_max_deg = x;
    } else if (!strcmp(opt, "--displacement")) {
        if (cli_parse_num(v, &x) || x < 0 || x > 0.05)
            return cli_bad_arg(prog, opt, v, "expected 0..0.05");
        a->displacement_max = x;
    } else if (!strcmp(opt, "--size"))
        rc = range_opt(prog, opt, v, &a->size_nm, 1, 1.0);
    else if (!strcmp(opt, "--microstrain"))
        rc = range_opt(prog, opt, v, &a->microstrain, 0, 0.01);
    else if (!strcmp(opt, "--texture")) {
        rc = range_opt(prog, opt, v, &a->texture_r, 1, 1.0);
        if (!rc && a->texture_r.hi == 0.0) a->texture_r.lo = a->texture_r.hi = 1.0;
    } else if (!strcmp(opt, "--caglioti-u"))
        rc = range_opt(prog, opt, v, &a->cag_u, 0, 1.0);
    else if (!strcmp(opt, "--caglioti-v"))
        rc = range_opt(prog, opt, v, &a->cag_v, 0, 1.0);
    else if (!strcmp(opt, "--caglioti-w"))
        rc = range_opt(prog, opt, v, &a->cag_w, 0, 1.0);
    else if (!strcmp(opt, "--eta"))
        rc = range_opt(prog, opt, v, &a->eta, 0, 1.0);
    else if (!strcmp(opt, "--background")) {
        if (cli_parse_num(v, &x) || x < 0 || x > 10)
            return cli_bad_arg(prog, opt, v, "expected 0..10");
        a->bg_max = x;
    } else if (!strcmp(opt, "--bg-order")) {
        double lo, hi;
        if (cli_parse_pair(v, &lo, &hi, 0) || lo != floor(lo) || hi != floor(hi) || lo < 0 ||
            hi > 4 || lo > hi)
            return cli_bad_arg(prog, opt, v, "expected MIN:MAX with 0 <= MIN <= MAX <= 4");
        a->bg_order_min = (int)lo;
        a->bg_order_max = (int)hi;
    } else if (!strcmp(opt, "--hump")) {
        if (cli_parse_num(v, &x) || x < 0 || x > 10)
            return cli_bad_arg(prog, opt, v, "expected 0..10");
        a->hump_height.lo = 0.0;
        a->hump_height.hi = x;
    } else if (!strcmp(opt, "--air")) {
        if (cli_parse_num(v, &x) || x < 0 || x > 10)
            return cli_bad_arg(prog, opt, v, "expected 0..10");
        a->air_height.lo = 0.0;
        a->air_height.hi = x;
    } else if (!strcmp(opt, "--noise"))
        rc = range_opt(prog, opt, v, &a->noise_sigma, 0, 0.01);
    else if (!strcmp(opt, "--poisson"))
        rc = range_opt(prog, opt, v, &a->poisson_counts, 1, 1.0);
    else if (!strcmp(opt, "--impurities")) {
        if (cli_parse_int(v, 0, K_XRD_MAX_IMPURITIES, &k))
            return cli_bad_arg(prog, opt, v, "expected 0..4");
        a->impurities_max = (int)k;
    } else if (!strcmp(opt, "--impurity-height"))
        rc = range_opt(prog, opt, v, &a->impurity_height, 0, 1.0);
    else
        return CLI_AUG_NOT_MINE;
    return rc;
}
