/* Shared command-line value parsing (see args.h): strict strtod/strtoll
 * wrappers and colon-separated lists, so every subcommand rejects the same
 * malformed values with the same kind of message. */
#include "cli/args.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
