/* Text pattern reader (.xy/.xye/.csv), linear resampling and SNIP background.
 * The reader is hand-written because the format is "two or three numbers per
 * line" with tool-specific comment and header habits; no Debian library
 * parses it. */
#include "synth/xy.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void pid_xy_destroy(pid_xy *p)
{
    if (!p) return;
    free(p->x);
    free(p->y);
    free(p->sigma);
    free(p);
}

/* Parse up to 3 numbers from one line; returns the count, -1 on a non-numeric
 * token (a header or junk). */
static int parse_line(const char *s, const char *end, double v[3])
{
    int n = 0;
    while (s < end) {
        while (s < end && (isspace((unsigned char)*s) || *s == ',' || *s == ';'))
            s++;
        if (s >= end) break;
        char tok[64];
        size_t k = 0;
        while (s < end && !isspace((unsigned char)*s) && *s != ',' && *s != ';') {
            if (k < sizeof tok - 1) tok[k++] = *s;
            s++;
        }
        tok[k] = 0;
        char *e;
        errno = 0;
        double d = strtod(tok, &e);
        if (e == tok || *e != 0) return -1;
        if (n < 3) v[n] = d;
        n++;
    }
    return n;
}

pid_status pid_xy_read_buffer(const char *buf, size_t len, const char *name, pid_xy **out,
                              pid_error *err)
{
    pid_status st = PID_OK;
    *out = NULL;
    pid_xy *p = calloc(1, sizeof *p);
    if (!p) return pid_fail(err, PID_ERR_NOMEM, "%s: out of memory", name);
    size_t cap = 0;
    int ncol = 0, header_lines = 0;
    const char *s = buf, *end = buf + len;
    int line = 0;
    if (memchr(buf, 0, len)) {
        st =
            pid_fail(err, PID_ERR_PARSE, "%s: binary data (NUL byte), expected text columns", name);
        goto fail;
    }
    while (s < end) {
        const char *eol = memchr(s, '\n', (size_t)(end - s));
        if (!eol) eol = end;
        line++;
        const char *t = s;
        while (t < eol && isspace((unsigned char)*t))
            t++;
        if (t == eol || *t == '#' || *t == '!' || *t == ';' || *t == '%') {
            s = eol + 1;
            continue;
        }
        double v[3];
        int k = parse_line(t, eol, v);
        if (k < 0) {
            /* Allow a header line before the data; junk inside the data is an error. */
            if (p->n == 0 && header_lines++ < 2) {
                s = eol + 1;
                continue;
            }
            st =
                pid_fail(err, PID_ERR_PARSE, "%s:%d: expected numbers, got '%.40s'", name, line, t);
            goto fail;
        }
        if (k < 2) {
            st = pid_fail(err, PID_ERR_PARSE, "%s:%d: expected 2 or 3 columns, got %d", name, line,
                          k);
            goto fail;
        }
        if (k > 3) k = 3;
        if (ncol == 0) ncol = k;
        if (k != ncol) {
            st = pid_fail(err, PID_ERR_PARSE, "%s:%d: %d columns where earlier lines have %d", name,
                          line, k, ncol);
            goto fail;
        }
        for (int i = 0; i < k; i++)
            if (!isfinite(v[i])) {
                st = pid_fail(err, PID_ERR_FORMAT, "%s:%d: non-finite value in column %d", name,
                              line, i + 1);
                goto fail;
            }
        if ((size_t)p->n == cap) {
            cap = cap ? cap * 2 : 4096;
            double *nx = realloc(p->x, cap * sizeof *nx);
            if (nx) p->x = nx;
            double *ny = nx ? realloc(p->y, cap * sizeof *ny) : NULL;
            if (ny) p->y = ny;
            double *ns = ny ? realloc(p->sigma, cap * sizeof *ns) : NULL;
            if (ns) p->sigma = ns;
            if (!nx || !ny || !ns) {
                st = pid_fail(err, PID_ERR_NOMEM, "%s: out of memory", name);
                goto fail;
            }
        }
        p->x[p->n] = v[0];
        p->y[p->n] = v[1];
        p->sigma[p->n] = ncol == 3 ? v[2] : 0.0;
        p->n++;
        s = eol + 1;
    }
    if (p->n < 8) {
        st = pid_fail(err, PID_ERR_FORMAT, "%s: %d data points, need at least 8", name, p->n);
        goto fail;
    }
    if (p->x[p->n - 1] < p->x[0]) { /* descending file: reverse */
        for (int i = 0, j = p->n - 1; i < j; i++, j--) {
            double t;
            t = p->x[i], p->x[i] = p->x[j], p->x[j] = t;
            t = p->y[i], p->y[i] = p->y[j], p->y[j] = t;
            t = p->sigma[i], p->sigma[i] = p->sigma[j], p->sigma[j] = t;
        }
    }
    for (int i = 1; i < p->n; i++)
        if (!(p->x[i] > p->x[i - 1])) {
            st = pid_fail(err, PID_ERR_FORMAT,
                          "%s: x values must be strictly monotonic (point %d: %g after %g)", name,
                          i + 1, p->x[i], p->x[i - 1]);
            goto fail;
        }
    if (ncol != 3) {
        free(p->sigma);
        p->sigma = NULL;
    }
    *out = p;
    return PID_OK;
fail:
    pid_xy_destroy(p);
    return st;
}

pid_status pid_xy_read(const char *path, pid_xy **out, pid_error *err)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return pid_fail(err, PID_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    pid_status st = PID_OK;
    char *buf = NULL;
    if (fseek(f, 0, SEEK_END) != 0) {
        st = pid_fail(err, PID_ERR_IO, "%s: not a regular file", path);
        goto done;
    }
    long size = ftell(f);
    rewind(f);
    if (size < 0 || (unsigned long)size > PID_XY_MAX_BYTES) {
        st = pid_fail(err, PID_ERR_FORMAT, "%s: file size %ld exceeds the %u-byte limit", path,
                      size, PID_XY_MAX_BYTES);
        goto done;
    }
    buf = malloc((size_t)size + 1);
    if (!buf) {
        st = pid_fail(err, PID_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    if (fread(buf, 1, (size_t)size, f) != (size_t)size) {
        st = pid_fail(err, PID_ERR_IO, "%s: read error", path);
        goto done;
    }
    st = pid_xy_read_buffer(buf, (size_t)size, path, out, err);
done:
    free(buf);
    fclose(f);
    return st;
}

void pid_xy_resample(const pid_xy *p, double x0, double dx, int n, double fill, float *out)
{
    int j = 0;
    for (int i = 0; i < n; i++) {
        double x = x0 + dx * i;
        if (x < p->x[0] || x > p->x[p->n - 1]) {
            out[i] = (float)fill;
            continue;
        }
        while (j < p->n - 2 && p->x[j + 1] < x)
            j++;
        double t = (x - p->x[j]) / (p->x[j + 1] - p->x[j]);
        out[i] = (float)(p->y[j] + t * (p->y[j + 1] - p->y[j]));
    }
}

pid_status pid_snip_background(const float *y, int n, int max_half_width, float *bg, pid_error *err)
{
    if (n < 3 || max_half_width < 1)
        return pid_fail(err, PID_ERR_ARG, "snip: need n >= 3 and half width >= 1");
    double *v = malloc((size_t)n * sizeof *v), *w = malloc((size_t)n * sizeof *w);
    if (!v || !w) {
        free(v);
        free(w);
        return pid_fail(err, PID_ERR_NOMEM, "snip: out of memory");
    }
    /* LLS operator compresses the dynamic range so clipping works on peaks
     * of very different heights. */
    for (int i = 0; i < n; i++) {
        double yi = y[i] > 0 ? y[i] : 0;
        v[i] = log(log(sqrt(yi + 1.0) + 1.0) + 1.0);
    }
    /* Decreasing window (Morhac's variant) gives a smoother estimate. */
    for (int p = max_half_width; p >= 1; p--) {
        for (int i = 0; i < n; i++) {
            if (i - p < 0 || i + p >= n) {
                w[i] = v[i];
                continue;
            }
            double m = 0.5 * (v[i - p] + v[i + p]);
            w[i] = v[i] < m ? v[i] : m;
        }
        double *t = v;
        v = w;
        w = t;
    }
    for (int i = 0; i < n; i++) {
        double e = exp(exp(v[i]) - 1.0) - 1.0;
        bg[i] = (float)(e * e - 1.0);
        if (bg[i] < 0) bg[i] = 0;
    }
    free(v);
    free(w);
    return PID_OK;
}
