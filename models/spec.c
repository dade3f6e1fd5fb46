/* Network architecture specs: parser for the text language described in
 * spec.h, shape inference, parameter / FLOP / activation counts, and the
 * canonical string form. A hand-written recursive descent over the text. */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "models/spec.h"

struct net_spec {
    net_layer_info *layers;
    size_t n, cap;
    int built;
    net_shape input;
    net_spec_totals totals;
};

/* Products above this are refused as "too large" so int64 counts cannot overflow. */
#define NET_MAX_COUNT 4.0e18
#define NET_MAX_ARGS 8
#define NET_MAX_DIM 1000000000LL

static const char *kind_names[NET_LAYER_KIND_COUNT] = {
    "conv1d", "conv2d", "maxpool", "avgpool", "maxpool2d", "avgpool2d", "gpool",   "flatten",
    "dense",  "relu",   "gelu",    "bn",      "dropout",   "res",       "res_end", "head"};

const char *net_spec_kind_name(net_layer_kind kind)
{
    return (unsigned)kind < NET_LAYER_KIND_COUNT ? kind_names[kind] : "?";
}

/* ---------------------------------------------------------------- shapes */

int64_t net_spec_shape_count(const net_shape *sh)
{
    switch (sh->rank) {
    case 0:
        return sh->c;
    case 1:
        return sh->c * sh->w;
    default:
        return sh->c * sh->h * sh->w;
    }
}

char *net_spec_format_shape(const net_shape *sh, char *buf, size_t cap)
{
    if (sh->rank == 0)
        snprintf(buf, cap, "%lld", (long long)sh->c);
    else if (sh->rank == 1)
        snprintf(buf, cap, "%lldx%lld", (long long)sh->c, (long long)sh->w);
    else
        snprintf(buf, cap, "%lldx%lldx%lld", (long long)sh->c, (long long)sh->h, (long long)sh->w);
    return buf;
}

pid_status net_spec_parse_shape(const char *text, net_shape *out, pid_error *err)
{
    long long d[4];
    int n = 0;
    const char *p = text;
    if (!text || !out) return pid_fail(err, PID_ERR_ARG, "input shape: NULL argument");
    while (*p) {
        char *end;
        if (n == 3) return pid_fail(err, PID_ERR_ARG, "input shape '%s': more than 3 axes", text);
        if (!isdigit((unsigned char)*p))
            return pid_fail(err, PID_ERR_ARG,
                            "input shape '%s': expected CxL, CxHxW or L (positive integers)", text);
        errno = 0;
        d[n] = strtoll(p, &end, 10);
        if (errno || d[n] <= 0 || d[n] > NET_MAX_DIM)
            return pid_fail(err, PID_ERR_ARG, "input shape '%s': axis %d out of range", text,
                            n + 1);
        n++;
        p = end;
        if (*p == 'x' || *p == 'X') {
            p++;
            if (!*p)
                return pid_fail(err, PID_ERR_ARG, "input shape '%s': missing axis after 'x'", text);
        } else if (*p) {
            return pid_fail(err, PID_ERR_ARG,
                            "input shape '%s': expected CxL, CxHxW or L (positive integers)", text);
        }
    }
    if (n == 0) return pid_fail(err, PID_ERR_ARG, "input shape is empty");
    memset(out, 0, sizeof *out);
    if (n == 1) {
        out->rank = 1, out->c = 1, out->h = 1, out->w = d[0];
    } else if (n == 2) {
        out->rank = 1, out->c = d[0], out->h = 1, out->w = d[1];
    } else {
        out->rank = 2, out->c = d[0], out->h = d[1], out->w = d[2];
    }
    return PID_OK;
}

/* ---------------------------------------------------------------- parser */

typedef struct {
    const char *text;
    net_spec *spec;
    pid_error *err;
} parser;

static int column_of(const parser *ps, const char *p)
{
    return (int)(p - ps->text) + 1;
}

static pid_status push_layer(parser *ps, const net_layer_info *L)
{
    net_spec *s = ps->spec;
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 32;
        net_layer_info *nl = realloc(s->layers, cap * sizeof *nl);
        if (!nl) return pid_fail(ps->err, PID_ERR_NOMEM, "spec: out of memory");
        s->layers = nl;
        s->cap = cap;
    }
    s->layers[s->n++] = *L;
    return PID_OK;
}

/* Shortest "%.*g" form of v that reads back as v. */
static void format_double(double v, char *buf, size_t cap)
{
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, cap, "%.*g", prec, v);
        if (strtod(buf, NULL) == v) return;
    }
}

/* Fill L->text with the canonical text of one layer. */
static void layer_text(net_layer_info *L)
{
    char *b = L->text;
    size_t cap = sizeof L->text;
    int n = 0;
    switch (L->kind) {
    case NET_CONV1D:
    case NET_CONV2D:
        n = snprintf(b, cap, "%s(%lld,k%d", kind_names[L->kind], (long long)L->units, L->kernel);
        if (L->stride != 1) n += snprintf(b + n, cap - n, ",s%d", L->stride);
        if (L->pad < 0)
            n += snprintf(b + n, cap - n, ",p=same");
        else if (L->pad > 0)
            n += snprintf(b + n, cap - n, ",p%d", L->pad);
        if (L->dilation != 1) n += snprintf(b + n, cap - n, ",d%d", L->dilation);
        snprintf(b + n, cap - n, ")");
        break;
    case NET_MAXPOOL1D:
    case NET_AVGPOOL1D:
    case NET_MAXPOOL2D:
    case NET_AVGPOOL2D:
        n = snprintf(b, cap, "%s(%d", kind_names[L->kind], L->kernel);
        if (L->stride != L->kernel) n += snprintf(b + n, cap - n, ",s%d", L->stride);
        snprintf(b + n, cap - n, ")");
        break;
    case NET_DENSE:
        snprintf(b, cap, "dense(%lld)", (long long)L->units);
        break;
    case NET_DROPOUT: {
        char num[40];
        format_double(L->p_drop, num, sizeof num);
        snprintf(b, cap, "dropout(%s)", num);
        break;
    }
    case NET_RES_BEGIN:
        snprintf(b, cap, "res(");
        break;
    case NET_RES_END:
        snprintf(b, cap, ")");
        break;
    case NET_HEAD:
        if (L->head == NET_HEAD_SOFTMAX && !L->fractions)
            snprintf(b, cap, "head");
        else
            snprintf(b, cap, "head(%s%s)", L->head == NET_HEAD_SIGMOID ? "sigmoid" : "softmax",
                     L->fractions ? ",fractions" : "");
        break;
    default:
        snprintf(b, cap, "%s", kind_names[L->kind]);
        break;
    }
}

/* Parse a positive (or, with allow_zero, non-negative) int; 0 on success. */
static int parse_int(const char *s, int allow_zero, long long max, long long *out)
{
    char *end;
    if (!isdigit((unsigned char)*s)) return -1;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || v > max || v < (allow_zero ? 0 : 1)) return -1;
    *out = v;
    return 0;
}

typedef struct {
    char *v[NET_MAX_ARGS];
    int n;
} arglist;

/* For error messages: the token as written (name plus its argument list). */
static void token_text(const char *start, const char *end, char *buf, size_t cap)
{
    size_t len = (size_t)(end - start);
    if (len >= cap) len = cap - 1;
    memcpy(buf, start, len);
    buf[len] = 0;
}

#define FAIL_TOKEN(...) pid_fail(ps->err, PID_ERR_PARSE, __VA_ARGS__)

/* Conv arguments: C first, then kK, sS, pP | p=same, dD in any order (k= forms accepted). */
static pid_status parse_conv(parser *ps, net_layer_info *L, arglist *a, const char *tok, int col)
{
    long long v;
    int have_k = 0, have_s = 0, have_p = 0, have_d = 0;
    if (a->n < 1)
        return FAIL_TOKEN("spec column %d, layer '%s': %s needs (C,kK[,sS][,pP][,dD])", col, tok,
                          kind_names[L->kind]);
    if (parse_int(a->v[0], 0, NET_MAX_DIM, &v))
        return FAIL_TOKEN("spec column %d, layer '%s': bad channel count '%s' (positive integer)",
                          col, tok, a->v[0]);
    L->units = v;
    L->stride = 1, L->dilation = 1, L->pad = 0;
    for (int i = 1; i < a->n; i++) {
        char key = (char)tolower((unsigned char)a->v[i][0]);
        const char *val = a->v[i] + 1;
        int *seen;
        if (*val == '=') val++;
        if (key == 'k')
            seen = &have_k;
        else if (key == 's')
            seen = &have_s;
        else if (key == 'p')
            seen = &have_p;
        else if (key == 'd')
            seen = &have_d;
        else
            return FAIL_TOKEN("spec column %d, layer '%s': bad argument '%s' (expected kK, sS, "
                              "pP, p=same or dD)",
                              col, tok, a->v[i]);
        if (*seen)
            return FAIL_TOKEN("spec column %d, layer '%s': argument '%c' given twice", col, tok,
                              key);
        *seen = 1;
        if (key == 'p' && !strcasecmp(val, "same")) {
            L->pad = -1;
            continue;
        }
        if (parse_int(val, key == 'p', 1000000, &v))
            return FAIL_TOKEN("spec column %d, layer '%s': bad argument '%s' (%s)", col, tok,
                              a->v[i],
                              key == 'p' ? "padding is a non-negative integer or 'same'"
                                         : "expected a positive integer");
        if (key == 'k') L->kernel = (int)v;
        if (key == 's') L->stride = (int)v;
        if (key == 'p') L->pad = (int)v;
        if (key == 'd') L->dilation = (int)v;
    }
    if (!have_k)
        return FAIL_TOKEN("spec column %d, layer '%s': kernel size kK is required", col, tok);
    return PID_OK;
}

static pid_status parse_pool(parser *ps, net_layer_info *L, arglist *a, const char *tok, int col)
{
    long long v;
    if (a->n < 1 || a->n > 2)
        return FAIL_TOKEN("spec column %d, layer '%s': %s needs (K[,sS])", col, tok,
                          kind_names[L->kind]);
    if (parse_int(a->v[0][0] == 'k' || a->v[0][0] == 'K' ? a->v[0] + 1 : a->v[0], 0, 1000000, &v))
        return FAIL_TOKEN("spec column %d, layer '%s': bad window '%s' (positive integer)", col,
                          tok, a->v[0]);
    L->kernel = (int)v;
    L->stride = (int)v;
    if (a->n == 2) {
        const char *val = a->v[1] + 1;
        if (*val == '=') val++;
        if (tolower((unsigned char)a->v[1][0]) != 's' || parse_int(val, 0, 1000000, &v))
            return FAIL_TOKEN("spec column %d, layer '%s': bad argument '%s' (expected sS)", col,
                              tok, a->v[1]);
        L->stride = (int)v;
    }
    return PID_OK;
}

static pid_status parse_head(parser *ps, net_layer_info *L, arglist *a, const char *tok, int col)
{
    int have_kind = 0;
    L->head = NET_HEAD_SOFTMAX;
    for (int i = 0; i < a->n; i++) {
        if (!strcasecmp(a->v[i], "softmax") || !strcasecmp(a->v[i], "sigmoid")) {
            if (have_kind)
                return FAIL_TOKEN("spec column %d, layer '%s': two head kinds", col, tok);
            have_kind = 1;
            L->head =
                tolower((unsigned char)a->v[i][1]) == 'i' ? NET_HEAD_SIGMOID : NET_HEAD_SOFTMAX;
        } else if (!strcasecmp(a->v[i], "fractions")) {
            if (L->fractions)
                return FAIL_TOKEN("spec column %d, layer '%s': 'fractions' given twice", col, tok);
            L->fractions = 1;
        } else {
            return FAIL_TOKEN("spec column %d, layer '%s': bad argument '%s' (expected softmax, "
                              "sigmoid or fractions)",
                              col, tok, a->v[i]);
        }
    }
    return PID_OK;
}

static const struct {
    const char *name;
    net_layer_kind kind;
} layer_names[] = {
    {"conv1d", NET_CONV1D},       {"conv2d", NET_CONV2D},       {"pool", NET_MAXPOOL1D},
    {"maxpool", NET_MAXPOOL1D},   {"maxpool1d", NET_MAXPOOL1D}, {"avgpool", NET_AVGPOOL1D},
    {"avgpool1d", NET_AVGPOOL1D}, {"maxpool2d", NET_MAXPOOL2D}, {"avgpool2d", NET_AVGPOOL2D},
    {"gpool", NET_GPOOL},         {"flatten", NET_FLATTEN},     {"dense", NET_DENSE},
    {"relu", NET_RELU},           {"gelu", NET_GELU},           {"bn", NET_BN},
    {"dropout", NET_DROPOUT},     {"head", NET_HEAD},
};

/* Parse one layer whose name is [name, name_end) and whose optional argument
 * list (without parentheses) is [args, args_end) (args NULL when absent). */
static pid_status parse_layer(parser *ps, const char *name, size_t name_len, const char *args,
                              const char *args_end, const char *tok_end, int depth)
{
    char tok[128], nm[32], buf[256];
    int col = column_of(ps, name);
    net_layer_info L;
    arglist a = {{0}, 0};
    int k = -1;
    token_text(name, tok_end, tok, sizeof tok);
    memset(&L, 0, sizeof L);
    L.column = col;
    L.depth = depth;
    L.res_begin = -1;
    if (name_len < sizeof nm) {
        for (size_t i = 0; i < name_len; i++)
            nm[i] = (char)tolower((unsigned char)name[i]);
        nm[name_len] = 0;
        for (size_t i = 0; i < sizeof layer_names / sizeof layer_names[0]; i++)
            if (!strcmp(nm, layer_names[i].name)) k = (int)i;
    }
    if (k < 0) {
        token_text(name, name + name_len, buf, 64);
        return FAIL_TOKEN("spec column %d, layer '%s': unknown layer '%s' (known: conv1d conv2d "
                          "maxpool pool avgpool maxpool2d avgpool2d gpool flatten dense relu "
                          "gelu bn dropout res head)",
                          col, tok, buf);
    }
    L.kind = layer_names[k].kind;
    if (args) {
        /* Split on commas into buf, trimming blanks. */
        size_t len = (size_t)(args_end - args);
        if (len >= sizeof buf)
            return FAIL_TOKEN("spec column %d, layer '%s': argument list too long", col, tok);
        memcpy(buf, args, len);
        buf[len] = 0;
        char *p = buf;
        for (;;) {
            char *comma = strchr(p, ',');
            if (comma) *comma = 0;
            while (isspace((unsigned char)*p))
                p++;
            char *e = p + strlen(p);
            while (e > p && isspace((unsigned char)e[-1]))
                *--e = 0;
            if (!*p) return FAIL_TOKEN("spec column %d, layer '%s': empty argument", col, tok);
            if (a.n == NET_MAX_ARGS)
                return FAIL_TOKEN("spec column %d, layer '%s': too many arguments", col, tok);
            a.v[a.n++] = p;
            if (!comma) break;
            p = comma + 1;
        }
    }
    pid_status st = PID_OK;
    switch (L.kind) {
    case NET_CONV1D:
    case NET_CONV2D:
        st = parse_conv(ps, &L, &a, tok, col);
        break;
    case NET_MAXPOOL1D:
    case NET_AVGPOOL1D:
    case NET_MAXPOOL2D:
    case NET_AVGPOOL2D:
        st = parse_pool(ps, &L, &a, tok, col);
        break;
    case NET_DENSE: {
        long long v;
        if (a.n != 1 || parse_int(a.v[0], 0, NET_MAX_DIM, &v))
            return FAIL_TOKEN("spec column %d, layer '%s': dense needs (N), N a positive integer",
                              col, tok);
        L.units = v;
        break;
    }
    case NET_DROPOUT: {
        char *end;
        if (a.n != 1)
            return FAIL_TOKEN("spec column %d, layer '%s': dropout needs (P), 0 <= P < 1", col,
                              tok);
        errno = 0;
        double p = strtod(a.v[0], &end);
        if (errno || *end || end == a.v[0] || !(p >= 0 && p < 1))
            return FAIL_TOKEN(
                "spec column %d, layer '%s': bad dropout rate '%s' (a number, 0 <= P < 1)", col,
                tok, a.v[0]);
        L.p_drop = p;
        break;
    }
    case NET_HEAD:
        st = parse_head(ps, &L, &a, tok, col);
        break;
    default:
        if (a.n)
            return FAIL_TOKEN("spec column %d, layer '%s': %s takes no arguments", col, tok,
                              kind_names[L.kind]);
        break;
    }
    if (st) return st;
    layer_text(&L);
    return push_layer(ps, &L);
}

/* Parse layers from *pp until the end (depth 0) or a ')' (depth > 0). */
static pid_status parse_seq(parser *ps, const char **pp, int depth, const char *open)
{
    const char *p = *pp;
    for (;;) {
        while (isspace((unsigned char)*p))
            p++;
        if (!*p) {
            if (depth > 0)
                return FAIL_TOKEN("spec column %d, 'res(': no closing ')'", column_of(ps, open));
            break;
        }
        if (*p == ')') {
            if (depth == 0)
                return FAIL_TOKEN("spec column %d, token ')': no matching 'res('",
                                  column_of(ps, p));
            p++;
            break;
        }
        const char *name = p;
        while (isalnum((unsigned char)*p) || *p == '_')
            p++;
        size_t name_len = (size_t)(p - name);
        if (!name_len)
            return FAIL_TOKEN("spec column %d, token '%c': unexpected character (expected a "
                              "layer name)",
                              column_of(ps, name), *name);
        const char *q = p;
        while (isspace((unsigned char)*q))
            q++;
        int has_args = *q == '(';
        if (name_len == 3 && !strncasecmp(name, "res", 3)) {
            if (!has_args)
                return FAIL_TOKEN("spec column %d, layer 'res': expected 'res( ... )'",
                                  column_of(ps, name));
            if (depth + 1 > NET_SPEC_MAX_DEPTH)
                return FAIL_TOKEN("spec column %d, layer 'res': residual blocks nested deeper "
                                  "than %d",
                                  column_of(ps, name), NET_SPEC_MAX_DEPTH);
            net_layer_info L;
            memset(&L, 0, sizeof L);
            L.kind = NET_RES_BEGIN;
            L.column = column_of(ps, name);
            L.depth = depth;
            L.res_begin = -1;
            layer_text(&L);
            pid_status st = push_layer(ps, &L);
            if (st) return st;
            size_t begin = ps->spec->n - 1;
            p = q + 1;
            const char *close_at;
            st = parse_seq(ps, &p, depth + 1, name);
            if (st) return st;
            close_at = p - 1;
            if (ps->spec->n == begin + 1)
                return FAIL_TOKEN("spec column %d, layer 'res()': empty residual block",
                                  column_of(ps, name));
            L.kind = NET_RES_END;
            L.column = column_of(ps, close_at);
            L.res_begin = (int)begin;
            layer_text(&L);
            st = push_layer(ps, &L);
            if (st) return st;
            continue;
        }
        const char *args = NULL, *args_end = NULL;
        if (has_args) {
            args = q + 1;
            args_end = strpbrk(args, "()");
            if (!args_end || *args_end != ')') {
                char tok[64];
                token_text(name, args_end ? args_end + 1 : name + strlen(name), tok, sizeof tok);
                return FAIL_TOKEN("spec column %d, layer '%s': no closing ')' for the arguments",
                                  column_of(ps, name), tok);
            }
            p = args_end + 1;
        }
        pid_status st = parse_layer(ps, name, name_len, args, args_end, p, depth);
        if (st) return st;
    }
    *pp = p;
    return PID_OK;
}

pid_status net_spec_parse(const char *text, net_spec **out, pid_error *err)
{
    pid_status st;
    net_spec *s;
    if (!out) return pid_fail(err, PID_ERR_ARG, "net_spec_parse: NULL output");
    *out = NULL;
    if (!text) return pid_fail(err, PID_ERR_ARG, "net_spec_parse: NULL text");
    s = calloc(1, sizeof *s);
    if (!s) return pid_fail(err, PID_ERR_NOMEM, "spec: out of memory");
    parser ps = {text, s, err};
    const char *p = text;
    st = parse_seq(&ps, &p, 0, NULL);
    if (st) goto fail;
    if (s->n == 0) {
        st = pid_fail(err, PID_ERR_PARSE, "spec is empty (expected layers ending in 'head')");
        goto fail;
    }
    for (size_t i = 0; i < s->n; i++) {
        if (s->layers[i].kind != NET_HEAD) continue;
        if (s->layers[i].depth > 0) {
            st = pid_fail(err, PID_ERR_PARSE,
                          "spec column %d, layer '%s': head inside a residual block",
                          s->layers[i].column, s->layers[i].text);
            goto fail;
        }
        if (i + 1 != s->n) {
            st = pid_fail(err, PID_ERR_PARSE,
                          "spec column %d, layer '%s': layer after the head (head must be last)",
                          s->layers[i + 1].column, s->layers[i + 1].text);
            goto fail;
        }
    }
    if (s->layers[s->n - 1].kind != NET_HEAD) {
        st = pid_fail(err, PID_ERR_PARSE,
                      "spec column %d, layer '%s': spec must end with 'head' (the final dense to "
                      "n_classes)",
                      s->layers[s->n - 1].column, s->layers[s->n - 1].text);
        goto fail;
    }
    *out = s;
    return PID_OK;
fail:
    net_spec_destroy(s);
    return st;
}

void net_spec_destroy(net_spec *s)
{
    if (!s) return;
    free(s->layers);
    free(s);
}

/* ---------------------------------------------------------------- build */

#define FAIL_LAYER(L, ...) layer_fail(err, PID_ERR_FORMAT, i, L, __VA_ARGS__)

static pid_status layer_fail(pid_error *err, pid_status code, size_t i, const net_layer_info *L,
                             const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static pid_status layer_fail(pid_error *err, pid_status code, size_t i, const net_layer_info *L,
                             const char *fmt, ...)
{
    char msg[384];
    char in[64];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return pid_fail(err, code, "spec column %d, layer %zu '%s' (input %s): %s", L->column, i + 1,
                    L->text, net_spec_format_shape(&L->in, in, sizeof in), msg);
}

/* Output length of a conv along one axis, filling the padding for p=same;
 * -1 when the padding p=same needs does not fit an int. */
static int64_t conv_out_len(int64_t len, const net_layer_info *L, int *pl, int *pr)
{
    int64_t span = (int64_t)L->dilation * (L->kernel - 1) + 1;
    if (L->pad >= 0) {
        *pl = *pr = L->pad;
    } else {
        int64_t out = (len + L->stride - 1) / L->stride;
        int64_t total = (out - 1) * L->stride + span - len;
        if (total < 0) total = 0;
        if (total > INT_MAX) return -1;
        *pl = (int)(total / 2);
        *pr = (int)(total - total / 2);
    }
    int64_t num = len + *pl + *pr - span;
    if (num < 0) return 0;
    return num / L->stride + 1;
}

/* Strides s with floor((in - 1)/s) + 1 == out, as the range [*lo, *hi]
 * (*lo > *hi when there is none). */
static void proj_stride_range(int64_t in, int64_t out, int64_t *lo, int64_t *hi)
{
    int64_t q = out - 1;
    if (out < 1 || out > in) {
        *lo = 1, *hi = 0;
    } else if (q == 0) {
        *lo = in, *hi = INT64_MAX; /* any s >= in (s = 1 when in = 1) */
    } else {
        *lo = (in - 1) / (q + 1) + 1;
        *hi = (in - 1) / q;
    }
}

static int64_t pool_out_len(int64_t len, const net_layer_info *L)
{
    if (len < L->kernel) return 0;
    return (len - L->kernel) / L->stride + 1;
}

static int too_large(double v)
{
    return v > NET_MAX_COUNT;
}

pid_status net_spec_build(net_spec *s, const net_shape *input, int64_t n_classes, pid_error *err)
{
    net_shape cur, saved[NET_SPEC_MAX_DEPTH + 1];
    /* Tensor ids (index of the producing layer, -1 = input) so a skip tensor
     * that is also the current input is counted once in act_peak. */
    long saved_id[NET_SPEC_MAX_DEPTH + 1], cur_id = -1;
    int nsaved = 0;
    double params = 0, buffers = 0, flops = 0, act_total, act_peak = 0;
    if (!s || !input) return pid_fail(err, PID_ERR_ARG, "net_spec_build: NULL argument");
    s->built = 0;
    if (input->rank < 1 || input->rank > 2 || input->c <= 0 || input->w <= 0 ||
        (input->rank == 2 && input->h <= 0) || input->c > NET_MAX_DIM || input->w > NET_MAX_DIM ||
        input->h > NET_MAX_DIM)
        return pid_fail(err, PID_ERR_ARG,
                        "net_spec_build: input shape must be C x L or C x H x W, all > 0");
    if (n_classes < 1 || n_classes > NET_MAX_DIM)
        return pid_fail(err, PID_ERR_ARG, "net_spec_build: n_classes %lld must be >= 1",
                        (long long)n_classes);
    cur = *input;
    if (cur.rank == 1) cur.h = 1;
    act_total = (double)net_spec_shape_count(&cur);
    for (size_t i = 0; i < s->n; i++) {
        net_layer_info *L = &s->layers[i];
        net_shape o = cur;
        double in_n = (double)net_spec_shape_count(&cur), out_n, p = 0, f = 0, b = 0;
        long x_id = -2; /* RES_END: id of the skip tensor being added */
        L->in = cur;
        L->pad_left = L->pad_right = L->pad_top = L->pad_bottom = 0;
        L->projection = 0;
        L->proj_stride = 0;
        switch (L->kind) {
        case NET_CONV1D:
        case NET_CONV2D: {
            int want = L->kind == NET_CONV1D ? 1 : 2;
            int pl = 0, pr = 0, pt = 0, pb = 0;
            if (cur.rank != want)
                return FAIL_LAYER(L, "%s needs a %s input", kind_names[L->kind],
                                  want == 1 ? "C x L" : "C x H x W");
            o.c = L->units;
            o.w = conv_out_len(cur.w, L, &pl, &pr);
            if (want == 2) o.h = conv_out_len(cur.h, L, &pt, &pb);
            if (o.w < 0 || o.h < 0) return FAIL_LAYER(L, "padding for p=same too large");
            L->pad_left = pl;
            L->pad_right = pr;
            L->pad_top = pt;
            L->pad_bottom = pb;
            if (o.w == 0 || o.h == 0)
                return FAIL_LAYER(L,
                                  "output size collapses to <= 0 (kernel span %lld > padded "
                                  "input)",
                                  (long long)L->dilation * (L->kernel - 1) + 1);
            double kk = want == 1 ? L->kernel : (double)L->kernel * L->kernel;
            p = (double)o.c * cur.c * kk + (double)o.c;
            f = 2.0 * (double)net_spec_shape_count(&o) * cur.c * kk;
            break;
        }
        case NET_MAXPOOL1D:
        case NET_AVGPOOL1D:
        case NET_MAXPOOL2D:
        case NET_AVGPOOL2D: {
            int two = L->kind == NET_MAXPOOL2D || L->kind == NET_AVGPOOL2D;
            if (cur.rank != (two ? 2 : 1))
                return FAIL_LAYER(L, "%s needs a %s input", kind_names[L->kind],
                                  two ? "C x H x W" : "C x L");
            o.w = pool_out_len(cur.w, L);
            if (two) o.h = pool_out_len(cur.h, L);
            if (o.w <= 0 || o.h <= 0)
                return FAIL_LAYER(L, "output size collapses to <= 0 (window %d > input)",
                                  L->kernel);
            double win = two ? (double)L->kernel * L->kernel : L->kernel;
            int is_max = L->kind == NET_MAXPOOL1D || L->kind == NET_MAXPOOL2D;
            f = (double)net_spec_shape_count(&o) * (is_max ? win - 1 : win);
            break;
        }
        case NET_GPOOL:
            if (cur.rank == 0)
                return FAIL_LAYER(L, "gpool needs a spatial input, not a flat vector");
            o.rank = 0, o.h = 1, o.w = 1;
            f = in_n;
            break;
        case NET_FLATTEN:
            o.rank = 0, o.c = (int64_t)in_n, o.h = 1, o.w = 1;
            break;
        case NET_DENSE:
            o.rank = 0, o.c = L->units, o.h = 1, o.w = 1;
            p = in_n * L->units + L->units;
            f = 2.0 * in_n * L->units;
            break;
        case NET_HEAD: {
            int nh = L->fractions ? 2 : 1;
            o.rank = 0, o.c = n_classes, o.h = 1, o.w = 1;
            p = nh * (in_n * n_classes + n_classes);
            f = nh * (2.0 * in_n * n_classes + 3.0 * n_classes);
            break;
        }
        case NET_RELU:
            f = in_n;
            break;
        case NET_GELU:
            f = 8 * in_n;
            break;
        case NET_BN:
            p = 2.0 * cur.c;
            b = 2.0 * cur.c;
            f = 2 * in_n;
            break;
        case NET_DROPOUT:
            break;
        case NET_RES_BEGIN:
            saved_id[nsaved] = cur_id;
            saved[nsaved++] = cur;
            break;
        case NET_RES_END: {
            net_shape x = saved[--nsaved];
            double x_n = (double)net_spec_shape_count(&x);
            x_id = saved_id[nsaved];
            L->in = cur;
            f = in_n; /* the add */
            if (x.rank == cur.rank && x.c == cur.c && x.h == cur.h && x.w == cur.w) break;
            L->projection = 1;
            if (cur.rank == 0) {
                /* Block ends flat: a dense projection of the (flattened) skip input. */
                p = x_n * cur.c + cur.c;
                f += 2.0 * x_n * cur.c;
                L->proj_stride = 1;
                break;
            }
            if (x.rank != cur.rank)
                return FAIL_LAYER(L, "residual block changes the rank (input %s); no projection",
                                  net_spec_format_shape(&x, (char[64]){0}, 64));
            int64_t lo_w, hi_w, lo_h, hi_h;
            proj_stride_range(x.w, cur.w, &lo_w, &hi_w);
            proj_stride_range(x.h, cur.h, &lo_h, &hi_h);
            if (lo_h > lo_w) lo_w = lo_h;
            if (hi_h < hi_w) hi_w = hi_h;
            if (lo_w <= hi_w && lo_w <= INT_MAX) L->proj_stride = (int)lo_w;
            if (!L->proj_stride)
                return FAIL_LAYER(L,
                                  "residual block maps %s to a size no strided 1x1 projection "
                                  "reaches; keep the length or stride by an integer factor",
                                  net_spec_format_shape(&x, (char[64]){0}, 64));
            p = (double)cur.c * x.c + cur.c;
            f += 2.0 * in_n * x.c;
            break;
        }
        default:
            return pid_fail(err, PID_ERR_INTERNAL, "spec: unknown layer kind %d", (int)L->kind);
        }
        out_n = (double)net_spec_shape_count(&o);
        if (too_large(p) || too_large(f) || too_large(out_n) || too_large(params + p) ||
            too_large(flops + f))
            return FAIL_LAYER(L, "counts too large");
        L->out = o;
        L->params = (int64_t)p;
        L->buffers = (int64_t)b;
        L->flops = (int64_t)f;
        params += p;
        buffers += b;
        flops += f;
        if (L->kind != NET_RES_BEGIN) act_total += out_n;
        /* Live at this layer: its input and output, and every distinct skip
         * tensor still held (for a residual add, the one being added too). */
        double live = in_n + out_n;
        long counted[NET_SPEC_MAX_DEPTH + 2];
        int nc = 0;
        counted[nc++] = cur_id;
        if (x_id != -2) {
            live += (double)net_spec_shape_count(&saved[nsaved]);
            counted[nc++] = x_id;
        }
        for (int k = 0; k < nsaved; k++) {
            int seen = 0;
            for (int m = 0; m < nc; m++)
                seen |= counted[m] == saved_id[k];
            if (seen) continue;
            counted[nc++] = saved_id[k];
            live += (double)net_spec_shape_count(&saved[k]);
        }
        if (L->kind != NET_RES_BEGIN && live > act_peak) act_peak = live;
        if (L->kind != NET_RES_BEGIN) cur_id = (long)i;
        cur = o;
    }
    if (too_large(3 * flops) || too_large(act_total))
        return pid_fail(err, PID_ERR_FORMAT, "spec: counts too large");
    s->input = *input;
    s->totals.params = (int64_t)params;
    s->totals.buffers = (int64_t)buffers;
    s->totals.flops_infer = (int64_t)flops;
    s->totals.flops_train = 3 * (int64_t)flops;
    s->totals.act_total = (int64_t)act_total;
    s->totals.act_peak = (int64_t)act_peak;
    s->totals.n_classes = n_classes;
    s->built = 1;
    return PID_OK;
}

int net_spec_is_built(const net_spec *s)
{
    return s && s->built;
}

size_t net_spec_n_layers(const net_spec *s)
{
    return s ? s->n : 0;
}

pid_status net_spec_layer(const net_spec *s, size_t i, net_layer_info *out, pid_error *err)
{
    if (!s || !out) return pid_fail(err, PID_ERR_ARG, "net_spec_layer: NULL argument");
    if (i >= s->n)
        return pid_fail(err, PID_ERR_ARG, "net_spec_layer: index %zu out of range (%zu layers)", i,
                        s->n);
    *out = s->layers[i];
    return PID_OK;
}

pid_status net_spec_totals_get(const net_spec *s, net_spec_totals *out, pid_error *err)
{
    if (!s || !out) return pid_fail(err, PID_ERR_ARG, "net_spec_totals_get: NULL argument");
    if (!s->built)
        return pid_fail(err, PID_ERR_ARG,
                        "net_spec_totals_get: spec not built (call "
                        "net_spec_build first)");
    *out = s->totals;
    return PID_OK;
}

pid_status net_spec_canonical(const net_spec *s, char **out, pid_error *err)
{
    size_t len = 1;
    char *buf, *p;
    if (!s || !out) return pid_fail(err, PID_ERR_ARG, "net_spec_canonical: NULL argument");
    *out = NULL;
    for (size_t i = 0; i < s->n; i++)
        len += strlen(s->layers[i].text) + 1;
    buf = malloc(len);
    if (!buf) return pid_fail(err, PID_ERR_NOMEM, "spec: out of memory");
    p = buf;
    for (size_t i = 0; i < s->n; i++) {
        const net_layer_info *L = &s->layers[i];
        /* A space between layers, none after "res(" or before ")". */
        if (i > 0 && s->layers[i - 1].kind != NET_RES_BEGIN && L->kind != NET_RES_END) *p++ = ' ';
        size_t n = strlen(L->text);
        memcpy(p, L->text, n);
        p += n;
    }
    *p = 0;
    *out = buf;
    return PID_OK;
}
