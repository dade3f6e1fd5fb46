/* KServe v2 infer requests and answers (JSON and binary tensor extension),
 * result records and the per-frame JSON lines of streams and events. Pure
 * functions over memory: no HTTP, no backend, so the parser can be fuzzed.
 * All JSON is read and written through jansson. */
#include "server/proto.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Longest pattern (values) or axis accepted, as for .xy files. */
#define SRV_MAX_WIDTH (1 << 20)
/* Deepest nesting of JSON "data" arrays. */
#define SRV_MAX_DEPTH 8

static const char *const dtype_names[SRV_DT_COUNT] = {"FP32", "UINT16", "UINT32"};
static const size_t dtype_sizes[SRV_DT_COUNT] = {4, 2, 4};
static const char *const output_names[SRV_OUT_COUNT] = {
    "probabilities", "top_phases", "fractions", "unknown_score", "residual", "missing", "unknown"};

int srv_dtype_parse(const char *s, srv_dtype *out)
{
    for (int i = 0; i < SRV_DT_COUNT; i++)
        if (s && !strcmp(s, dtype_names[i])) {
            *out = (srv_dtype)i;
            return 0;
        }
    return -1;
}

const char *srv_dtype_name(srv_dtype dt)
{
    return dt >= 0 && dt < SRV_DT_COUNT ? dtype_names[dt] : "?";
}

size_t srv_dtype_size(srv_dtype dt)
{
    return dt >= 0 && dt < SRV_DT_COUNT ? dtype_sizes[dt] : 0;
}

const char *srv_output_name(int out)
{
    return out >= 0 && out < SRV_OUT_COUNT ? output_names[out] : "?";
}

int srv_convert_le(srv_dtype dt, const void *src, size_t n, float *dst, size_t *bad_index)
{
    const unsigned char *p = src;
    for (size_t i = 0; i < n; i++) {
        if (dt == SRV_DT_UINT16) {
            dst[i] = (float)((uint32_t)p[2 * i] | (uint32_t)p[2 * i + 1] << 8);
        } else {
            const unsigned char *q = p + 4 * i;
            uint32_t u =
                (uint32_t)q[0] | (uint32_t)q[1] << 8 | (uint32_t)q[2] << 16 | (uint32_t)q[3] << 24;
            if (dt == SRV_DT_UINT32) {
                dst[i] = (float)u;
            } else {
                float f;
                memcpy(&f, &u, sizeof f);
                if (!isfinite(f)) {
                    if (bad_index) *bad_index = i;
                    return -1;
                }
                dst[i] = f;
            }
        }
    }
    return 0;
}

long long srv_parse_header_len(const char *s, size_t body_len)
{
    if (!s || !*s) return -1;
    unsigned long long v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9') return -1;
        v = v * 10 + (unsigned long long)(*p - '0');
        if (v > body_len) return -1;
    }
    return (long long)v;
}

int srv_name_valid(const char *s, size_t max_len)
{
    if (!s) return 0;
    size_t n = strlen(s);
    if (n < 1 || n > max_len || !strcmp(s, ".") || !strcmp(s, "..")) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

/* ------------------------------------------------------------- parsing */

typedef struct {
    const char *name;
    srv_dtype dt;
    int ndims;
    int64_t dims[2];
    int64_t count;      /* product of dims */
    const json_t *data; /* JSON data, or NULL */
    const char *bin;    /* binary section, or NULL */
    json_t *params;     /* the input's "parameters", or NULL */
} input_desc;

/* Count the numbers of a (nested) JSON array; -1 when something in it is
 * not an array or a number, or it nests too deep. Stops counting past limit. */
static int64_t count_values(const json_t *a, int depth, int64_t limit)
{
    if (json_is_number(a)) return 1;
    if (!json_is_array(a) || depth > SRV_MAX_DEPTH) return -1;
    int64_t n = 0;
    size_t i;
    const json_t *v;
    json_array_foreach(a, i, v)
    {
        int64_t c = count_values(v, depth + 1, limit);
        if (c < 0) return -1;
        n += c;
        if (n > limit) return n;
    }
    return n;
}

/* Flatten numbers into dst (floats), checking each against dt's range.
 * Returns 0, or -1 with a message. */
static int flatten_values(const json_t *a, srv_dtype dt, float *dst, int64_t *pos, char *why,
                          size_t why_cap)
{
    if (json_is_array(a)) {
        size_t i;
        const json_t *v;
        json_array_foreach(a, i, v)
        {
            if (flatten_values(v, dt, dst, pos, why, why_cap)) return -1;
        }
        return 0;
    }
    double v;
    if (dt == SRV_DT_FP32) {
        v = json_number_value(a);
        if (!isfinite((float)v)) {
            snprintf(why, why_cap, "value %lld is not a finite FP32 number", (long long)*pos);
            return -1;
        }
    } else {
        if (!json_is_integer(a)) {
            snprintf(why, why_cap, "value %lld is not an integer (%s)", (long long)*pos,
                     dtype_names[dt]);
            return -1;
        }
        json_int_t iv = json_integer_value(a);
        json_int_t hi = dt == SRV_DT_UINT16 ? 65535 : 4294967295LL;
        if (iv < 0 || iv > hi) {
            snprintf(why, why_cap, "value %lld (%lld) is out of range for %s", (long long)*pos,
                     (long long)iv, dtype_names[dt]);
            return -1;
        }
        v = (double)iv;
    }
    dst[(*pos)++] = (float)v;
    return 0;
}

/* Values of an input as floats ([d->count], malloc'd into *out). */
static pid_status input_values(const input_desc *d, float **out, pid_error *err)
{
    *out = NULL;
    float *buf = malloc((size_t)(d->count > 0 ? d->count : 1) * sizeof *buf);
    if (!buf) return pid_fail(err, PID_ERR_NOMEM, "out of memory for input '%s'", d->name);
    if (d->bin) {
        size_t bad = 0;
        if (srv_convert_le(d->dt, d->bin, (size_t)d->count, buf, &bad)) {
            free(buf);
            return pid_fail(err, PID_ERR_FORMAT, "input '%s': value %zu is NaN or infinite",
                            d->name, bad);
        }
    } else {
        char why[160];
        int64_t pos = 0;
        if (flatten_values(d->data, d->dt, buf, &pos, why, sizeof why)) {
            free(buf);
            return pid_fail(err, PID_ERR_FORMAT, "input '%s': %s", d->name, why);
        }
    }
    *out = buf;
    return PID_OK;
}

static pid_status parse_input(const json_t *in, input_desc *d, pid_error *err)
{
    memset(d, 0, sizeof *d);
    if (!json_is_object(in)) return pid_fail(err, PID_ERR_FORMAT, "an input is not an object");
    const json_t *name = json_object_get(in, "name");
    if (!json_is_string(name)) return pid_fail(err, PID_ERR_FORMAT, "an input has no name");
    d->name = json_string_value(name);
    if (strcmp(d->name, "patterns") && strcmp(d->name, "axis"))
        return pid_fail(err, PID_ERR_FORMAT, "unknown input '%.64s' (expected patterns, axis)",
                        d->name);
    const json_t *dt = json_object_get(in, "datatype");
    if (!json_is_string(dt) || srv_dtype_parse(json_string_value(dt), &d->dt))
        return pid_fail(err, PID_ERR_FORMAT,
                        "input '%s': datatype must be FP32, UINT16 or UINT32%s%.32s", d->name,
                        json_is_string(dt) ? ", not " : "",
                        json_is_string(dt) ? json_string_value(dt) : "");
    const json_t *shape = json_object_get(in, "shape");
    if (!json_is_array(shape) || json_array_size(shape) < 1 || json_array_size(shape) > 2)
        return pid_fail(err, PID_ERR_FORMAT, "input '%s': shape must be [N] or [B, N]", d->name);
    d->ndims = (int)json_array_size(shape);
    d->count = 1;
    for (int i = 0; i < d->ndims; i++) {
        const json_t *v = json_array_get(shape, (size_t)i);
        if (!json_is_integer(v) || json_integer_value(v) < 1 ||
            json_integer_value(v) > SRV_MAX_WIDTH)
            return pid_fail(err, PID_ERR_FORMAT, "input '%s': shape entries must be integers 1..%d",
                            d->name, SRV_MAX_WIDTH);
        d->dims[i] = (int64_t)json_integer_value(v);
        d->count *= d->dims[i]; /* <= 2^40: no overflow */
    }
    d->params = json_object_get(in, "parameters");
    if (d->params && !json_is_object(d->params))
        return pid_fail(err, PID_ERR_FORMAT, "input '%s': parameters must be an object", d->name);
    d->data = json_object_get(in, "data");
    return PID_OK;
}

pid_status srv_infer_parse(const srv_proto_model *m, const char *body, size_t body_len,
                           long long header_len, srv_infer_req **out, pid_error *err)
{
    *out = NULL;
    if (header_len > (long long)body_len)
        return pid_fail(err, PID_ERR_FORMAT,
                        "Inference-Header-Content-Length %lld exceeds the body (%zu bytes)",
                        header_len, body_len);
    size_t jlen = header_len < 0 ? body_len : (size_t)header_len;
    json_error_t je;
    json_t *root = json_loadb(body, jlen, 0, &je);
    if (!root)
        return pid_fail(err, PID_ERR_PARSE, "malformed JSON: %s (line %d, column %d)", je.text,
                        je.line, je.column);
    pid_status st = PID_OK;
    srv_infer_req *r = calloc(1, sizeof *r);
    if (!r) {
        json_decref(root);
        return pid_fail(err, PID_ERR_NOMEM, "out of memory");
    }
    input_desc pat, ax;
    int have_pat = 0, have_ax = 0;
    if (!json_is_object(root)) {
        st = pid_fail(err, PID_ERR_FORMAT, "the request is not a JSON object");
        goto fail;
    }
    const json_t *id = json_object_get(root, "id");
    if (id) {
        if (!json_is_string(id)) {
            st = pid_fail(err, PID_ERR_FORMAT, "\"id\" must be a string");
            goto fail;
        }
        if (!(r->id = strdup(json_string_value(id)))) {
            st = pid_fail(err, PID_ERR_NOMEM, "out of memory");
            goto fail;
        }
    }

    /* Inputs, with their binary sections in order after the JSON part. */
    const json_t *inputs = json_object_get(root, "inputs");
    if (!json_is_array(inputs) || json_array_size(inputs) < 1) {
        st = pid_fail(err, PID_ERR_FORMAT, "\"inputs\" must be a non-empty array");
        goto fail;
    }
    size_t boff = jlen;
    size_t i;
    const json_t *in;
    json_array_foreach(inputs, i, in)
    {
        input_desc d;
        if ((st = parse_input(in, &d, err))) goto fail;
        int is_pat = !strcmp(d.name, "patterns");
        if ((is_pat && have_pat) || (!is_pat && have_ax)) {
            st = pid_fail(err, PID_ERR_FORMAT, "input '%s' given twice", d.name);
            goto fail;
        }
        const json_t *bsz = d.params ? json_object_get(d.params, "binary_data_size") : NULL;
        if (d.params && json_object_get(d.params, "shared_memory_region")) {
            st =
                pid_fail(err, PID_ERR_FORMAT, "input '%s': shared memory is not supported", d.name);
            goto fail;
        }
        if (bsz) {
            if (d.data) {
                st = pid_fail(err, PID_ERR_FORMAT, "input '%s' has both data and binary_data_size",
                              d.name);
                goto fail;
            }
            if (header_len < 0) {
                st = pid_fail(err, PID_ERR_FORMAT,
                              "input '%s' is binary but the request has no "
                              "Inference-Header-Content-Length header",
                              d.name);
                goto fail;
            }
            size_t want = (size_t)d.count * srv_dtype_size(d.dt);
            if (!json_is_integer(bsz) || json_integer_value(bsz) < 0 ||
                (unsigned long long)json_integer_value(bsz) != (unsigned long long)want) {
                st = pid_fail(err, PID_ERR_FORMAT,
                              "input '%s': binary_data_size must be %zu (shape x %s size)", d.name,
                              want, srv_dtype_name(d.dt));
                goto fail;
            }
            if (want > body_len - boff) {
                st = pid_fail(err, PID_ERR_FORMAT,
                              "truncated binary data: input '%s' needs %zu bytes, %zu left", d.name,
                              want, body_len - boff);
                goto fail;
            }
            d.bin = body + boff;
            boff += want;
        } else if (!d.data) {
            st = pid_fail(err, PID_ERR_FORMAT, "input '%s' has no data", d.name);
            goto fail;
        } else {
            int64_t c = count_values(d.data, 0, d.count);
            if (c != d.count) {
                st = pid_fail(err, PID_ERR_FORMAT,
                              c < 0 ? "input '%s': data must be (nested) arrays of numbers"
                                    : "input '%s': data has %s%lld values, the shape %lld",
                              d.name, c > d.count ? "more than " : "",
                              (long long)(c > d.count ? d.count : c), (long long)d.count);
                goto fail;
            }
        }
        if (is_pat) {
            pat = d;
            have_pat = 1;
        } else {
            ax = d;
            have_ax = 1;
        }
    }
    if (boff != body_len) {
        st = pid_fail(err, PID_ERR_FORMAT, "%zu bytes after the binary sections", body_len - boff);
        goto fail;
    }
    if (!have_pat) {
        st = pid_fail(err, PID_ERR_FORMAT, "the request has no input 'patterns'");
        goto fail;
    }
    r->batch = pat.ndims == 2 ? pat.dims[0] : 1;
    r->width = pat.dims[pat.ndims - 1];
    if (r->batch > m->max_frames) {
        st = pid_fail(err, PID_ERR_FORMAT, "batch of %lld patterns exceeds the limit %lld",
                      (long long)r->batch, (long long)m->max_frames);
        goto fail;
    }
    if (have_ax) {
        if (ax.ndims != 1 || ax.dt != SRV_DT_FP32 || ax.dims[0] != r->width || r->width < 2) {
            st = pid_fail(err, PID_ERR_FORMAT,
                          "input 'axis' must be FP32 [M] with M = the patterns' width %lld (>= 2)",
                          (long long)r->width);
            goto fail;
        }
    } else if (r->width != m->frame_size) {
        st = pid_fail(err, PID_ERR_FORMAT,
                      "patterns have %lld values, the model's grid %lld (send an 'axis' to "
                      "resample)",
                      (long long)r->width, (long long)m->frame_size);
        goto fail;
    }
    if ((st = input_values(&pat, &r->patterns, err))) goto fail;
    if (have_ax) {
        float *axf = NULL;
        if ((st = input_values(&ax, &axf, err))) goto fail;
        r->axis = malloc((size_t)r->width * sizeof *r->axis);
        if (!r->axis) {
            free(axf);
            st = pid_fail(err, PID_ERR_NOMEM, "out of memory");
            goto fail;
        }
        for (int64_t j = 0; j < r->width; j++) {
            r->axis[j] = axf[j];
            if (j > 0 && !(r->axis[j] > r->axis[j - 1])) {
                free(axf);
                st = pid_fail(err, PID_ERR_FORMAT, "axis is not strictly increasing at %lld",
                              (long long)j);
                goto fail;
            }
        }
        free(axf);
        const json_t *wl = ax.params ? json_object_get(ax.params, "wavelength") : NULL;
        const json_t *rp = json_object_get(root, "parameters");
        if (!wl && json_is_object(rp)) wl = json_object_get(rp, "wavelength");
        if (wl) {
            double w = json_number_value(wl);
            if (!json_is_number(wl) || !isfinite(w) || !(w > 0) || w > 100) {
                st = pid_fail(err, PID_ERR_FORMAT, "wavelength must be a number in (0, 100] A");
                goto fail;
            }
            r->has_wavelength = 1;
            r->wavelength_a = w;
        }
    }

    /* Request parameters and outputs. */
    r->top_k = m->n_classes < 3 ? (int)m->n_classes : 3;
    int bin_default = 0;
    const json_t *params = json_object_get(root, "parameters");
    if (params && !json_is_object(params)) {
        st = pid_fail(err, PID_ERR_FORMAT, "\"parameters\" must be an object");
        goto fail;
    }
    if (params) {
        const json_t *tk = json_object_get(params, "top_k");
        if (tk) {
            if (!json_is_integer(tk) || json_integer_value(tk) < 1) {
                st = pid_fail(err, PID_ERR_FORMAT, "top_k must be a positive integer");
                goto fail;
            }
            json_int_t v = json_integer_value(tk);
            r->top_k = v > m->n_classes ? (int)m->n_classes : (int)v;
        }
        const json_t *bo = json_object_get(params, "binary_data_output");
        if (bo) {
            if (!json_is_boolean(bo)) {
                st = pid_fail(err, PID_ERR_FORMAT, "binary_data_output must be a boolean");
                goto fail;
            }
            bin_default = json_is_true(bo);
        }
    }
    const json_t *outs = json_object_get(root, "outputs");
    if (outs && !json_is_array(outs)) {
        st = pid_fail(err, PID_ERR_FORMAT, "\"outputs\" must be an array");
        goto fail;
    }
    if (!outs || json_array_size(outs) == 0) {
        for (int k = 0; k < SRV_OUT_COUNT; k++) {
            r->outputs[k] = k;
            r->binary[k] = bin_default;
        }
        r->n_outputs = SRV_OUT_COUNT;
    } else {
        const json_t *o;
        json_array_foreach(outs, i, o)
        {
            const json_t *on = json_object_get(o, "name");
            int k = -1;
            for (int j = 0; json_is_string(on) && j < SRV_OUT_COUNT; j++)
                if (!strcmp(json_string_value(on), output_names[j])) k = j;
            if (k < 0) {
                st = pid_fail(err, PID_ERR_FORMAT,
                              "unknown output '%.64s' (expected probabilities, top_phases, "
                              "fractions, unknown_score, residual, missing, unknown)",
                              json_is_string(on) ? json_string_value(on) : "?");
                goto fail;
            }
            for (int j = 0; j < r->n_outputs; j++)
                if (r->outputs[j] == k) {
                    st = pid_fail(err, PID_ERR_FORMAT, "output '%s' asked twice", output_names[k]);
                    goto fail;
                }
            int bin = bin_default;
            const json_t *op = json_object_get(o, "parameters");
            const json_t *bd = json_is_object(op) ? json_object_get(op, "binary_data") : NULL;
            if (bd) {
                if (!json_is_boolean(bd)) {
                    st = pid_fail(err, PID_ERR_FORMAT,
                                  "output '%s': binary_data must be a "
                                  "boolean",
                                  output_names[k]);
                    goto fail;
                }
                bin = json_is_true(bd);
            }
            r->outputs[r->n_outputs] = k;
            r->binary[r->n_outputs] = bin;
            r->n_outputs++;
        }
    }
    json_decref(root);
    *out = r;
    return PID_OK;
fail:
    json_decref(root);
    srv_infer_req_destroy(r);
    return st;
}

void srv_infer_req_destroy(srv_infer_req *r)
{
    if (!r) return;
    free(r->id);
    free(r->patterns);
    free(r->axis);
    free(r);
}

/* ------------------------------------------------------------- results */

pid_status srv_results_create(srv_results **out, int n, int64_t k, int keep, int full,
                              pid_error *err)
{
    *out = NULL;
    if (n < 1 || k < 1) return pid_fail(err, PID_ERR_ARG, "results: n %d, k %lld", n, (long long)k);
    if (keep < 1) keep = 1;
    if (keep > k) keep = (int)k;
    srv_results *r = calloc(1, sizeof *r);
    if (!r) return pid_fail(err, PID_ERR_NOMEM, "out of memory");
    r->n = n;
    r->k = k;
    r->keep = keep;
    r->full = full;
    size_t nk = (size_t)n * (size_t)keep;
    r->top = malloc(nk * sizeof *r->top);
    r->top_prob = malloc(nk * sizeof *r->top_prob);
    r->top_frac = malloc(nk * sizeof *r->top_frac);
    r->unknown_score = calloc((size_t)n, sizeof *r->unknown_score);
    r->residual = calloc((size_t)n, sizeof *r->residual);
    r->missing = calloc((size_t)n, sizeof *r->missing);
    r->unknown = calloc((size_t)n, sizeof *r->unknown);
    int ok = r->top && r->top_prob && r->top_frac && r->unknown_score && r->unknown &&
             r->residual && r->missing;
    if (ok && full) {
        r->prob = malloc((size_t)n * (size_t)k * sizeof *r->prob);
        r->fraction = malloc((size_t)n * (size_t)k * sizeof *r->fraction);
        ok = r->prob && r->fraction;
    }
    if (!ok) {
        srv_results_destroy(r);
        return pid_fail(err, PID_ERR_NOMEM, "out of memory for %d results", n);
    }
    *out = r;
    return PID_OK;
}

void srv_results_destroy(srv_results *r)
{
    if (!r) return;
    free(r->top);
    free(r->top_prob);
    free(r->top_frac);
    free(r->prob);
    free(r->fraction);
    free(r->unknown_score);
    free(r->residual);
    free(r->missing);
    free(r->unknown);
    free(r);
}

void srv_results_set(srv_results *r, int row, const float *prob, const float *fraction,
                     const int32_t *order, double unknown_score, double residual, double missing,
                     int unknown)
{
    size_t base = (size_t)row * (size_t)r->keep;
    for (int j = 0; j < r->keep; j++) {
        int32_t c = order[j];
        r->top[base + (size_t)j] = c;
        r->top_prob[base + (size_t)j] = prob[c];
        r->top_frac[base + (size_t)j] = fraction[c];
    }
    if (r->full) {
        memcpy(r->prob + (size_t)row * (size_t)r->k, prob, (size_t)r->k * sizeof *prob);
        memcpy(r->fraction + (size_t)row * (size_t)r->k, fraction, (size_t)r->k * sizeof *fraction);
    }
    r->unknown_score[row] = unknown_score;
    r->residual[row] = residual;
    r->missing[row] = missing;
    r->unknown[row] = (uint8_t)(unknown != 0);
}

/* ------------------------------------------------------------- encoding */

typedef struct {
    char *p;
    size_t len, cap;
} growbuf;

static int gb_put(growbuf *b, const void *src, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) return -1;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, src, n);
    b->len += n;
    return 0;
}

static int gb_put_u32le(growbuf *b, uint32_t v)
{
    unsigned char c[4] = {(unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16),
                          (unsigned char)(v >> 24)};
    return gb_put(b, c, 4);
}

static int gb_put_f32le(growbuf *b, float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return gb_put_u32le(b, u);
}

/* A float as a JSON real, NaN/Inf as null. */
static json_t *jreal(double v)
{
    return isfinite(v) ? json_real(v) : json_null();
}

/* Append one output (its JSON descriptor to outs, its binary section to bin). */
static int encode_output(json_t *outs, growbuf *bin, int which, int binary,
                         const srv_infer_req *req, const srv_results *res, const char *const *names)
{
    const int64_t b = req->batch, k = res->k;
    const int top = req->top_k;
    json_t *o = json_object();
    json_t *shape = json_array();
    json_t *data = binary ? NULL : json_array();
    size_t start = bin->len;
    int fail = !o || !shape || (!binary && !data);
    const char *dt = "FP32";
    if (!fail) {
        switch (which) {
        case SRV_OUT_PROBABILITIES:
        case SRV_OUT_FRACTIONS: {
            const float *src = which == SRV_OUT_PROBABILITIES ? res->prob : res->fraction;
            fail |= json_array_append_new(shape, json_integer(b)) ||
                    json_array_append_new(shape, json_integer(k));
            for (int64_t i = 0; i < b * k && !fail; i++)
                fail |=
                    binary ? gb_put_f32le(bin, src[i]) : json_array_append_new(data, jreal(src[i]));
            break;
        }
        case SRV_OUT_TOP_PHASES:
            dt = "BYTES";
            fail |= json_array_append_new(shape, json_integer(b)) ||
                    json_array_append_new(shape, json_integer(top));
            for (int64_t i = 0; i < b && !fail; i++)
                for (int j = 0; j < top && !fail; j++) {
                    const char *nm = names[res->top[(size_t)i * (size_t)res->keep + (size_t)j]];
                    size_t nl = strlen(nm);
                    fail |= binary ? gb_put_u32le(bin, (uint32_t)nl) || gb_put(bin, nm, nl)
                                   : json_array_append_new(data, json_string(nm));
                }
            break;
        case SRV_OUT_UNKNOWN_SCORE:
            fail |= json_array_append_new(shape, json_integer(b));
            for (int64_t i = 0; i < b && !fail; i++)
                fail |= binary ? gb_put_f32le(bin, (float)res->unknown_score[i])
                               : json_array_append_new(data, jreal((float)res->unknown_score[i]));
            break;
        case SRV_OUT_RESIDUAL:
        case SRV_OUT_MISSING: {
            const double *src = which == SRV_OUT_RESIDUAL ? res->residual : res->missing;
            fail |= json_array_append_new(shape, json_integer(b));
            for (int64_t i = 0; i < b && !fail; i++)
                fail |= binary ? gb_put_f32le(bin, (float)src[i])
                               : json_array_append_new(data, jreal(src[i]));
            break;
        }
        default:
            dt = "BOOL";
            fail |= json_array_append_new(shape, json_integer(b));
            for (int64_t i = 0; i < b && !fail; i++) {
                unsigned char u = res->unknown[i] ? 1 : 0;
                fail |= binary ? gb_put(bin, &u, 1) : json_array_append_new(data, json_boolean(u));
            }
            break;
        }
    }
    if (!fail) {
        fail |= json_object_set_new(o, "name", json_string(output_names[which])) ||
                json_object_set_new(o, "datatype", json_string(dt)) ||
                json_object_set_new(o, "shape", shape);
        shape = NULL;
        if (!fail && binary) {
            json_t *p = json_object();
            fail |= !p ||
                    json_object_set_new(p, "binary_data_size",
                                        json_integer((json_int_t)(bin->len - start))) ||
                    json_object_set_new(o, "parameters", p);
        } else if (!fail) {
            fail |= json_object_set_new(o, "data", data);
            data = NULL;
        }
    }
    if (!fail) {
        fail |= json_array_append_new(outs, o);
        o = NULL;
    }
    json_decref(o);
    json_decref(shape);
    json_decref(data);
    return fail ? -1 : 0;
}

pid_status srv_infer_encode(const srv_infer_req *req, const char *model_name,
                            const srv_results *res, const char *const *names, char **body,
                            size_t *body_len, size_t *json_len, pid_error *err)
{
    *body = NULL;
    *body_len = *json_len = 0;
    if (res->n < req->batch || !res->full || res->keep < req->top_k)
        return pid_fail(err, PID_ERR_INTERNAL, "encode: results do not cover the request");
    growbuf bin = {NULL, 0, 0};
    json_t *root = json_object();
    json_t *outs = json_array();
    int fail = !root || !outs;
    if (!fail)
        fail |= json_object_set_new(root, "model_name", json_string(model_name)) ||
                json_object_set_new(root, "model_version", json_string("1"));
    if (!fail && req->id) fail |= json_object_set_new(root, "id", json_string(req->id));
    for (int i = 0; i < req->n_outputs && !fail; i++)
        fail |= encode_output(outs, &bin, req->outputs[i], req->binary[i], req, res, names);
    if (!fail) {
        fail |= json_object_set_new(root, "outputs", outs);
        outs = NULL;
    }
    char *text =
        fail ? NULL : json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9));
    json_decref(root);
    json_decref(outs);
    if (!text) {
        free(bin.p);
        return pid_fail(err, PID_ERR_NOMEM, "out of memory encoding the answer");
    }
    size_t tl = strlen(text);
    char *all = malloc(tl + bin.len + 1);
    if (!all) {
        free(text);
        free(bin.p);
        return pid_fail(err, PID_ERR_NOMEM, "out of memory encoding the answer");
    }
    memcpy(all, text, tl);
    if (bin.len) memcpy(all + tl, bin.p, bin.len);
    all[tl + bin.len] = '\0';
    free(text);
    free(bin.p);
    *body = all;
    *body_len = tl + bin.len;
    *json_len = tl;
    return PID_OK;
}

/* --------------------------------------------------------- JSON lines */

char *srv_json_quote(const char *s)
{
    json_t *j = json_string(s ? s : "");
    if (!j) return NULL;
    char *t = json_dumps(j, JSON_ENCODE_ANY);
    json_decref(j);
    return t;
}

int srv_fmt_num(char *buf, size_t cap, double v)
{
    if (!isfinite(v)) return snprintf(buf, cap, "null");
    int n = snprintf(buf, cap, "%.6g", v);
    if (n > 0 && (size_t)n + 2 < cap && !strpbrk(buf, ".en")) {
        memcpy(buf + n, ".0", 3);
        n += 2;
    }
    return n;
}

static int put(char *buf, size_t cap, size_t *len, const char *s)
{
    size_t n = strlen(s);
    if (*len + n >= cap) return -1;
    memcpy(buf + *len, s, n + 1);
    *len += n;
    return 0;
}

static int put_num(char *buf, size_t cap, size_t *len, double v)
{
    char t[48];
    srv_fmt_num(t, sizeof t, v);
    return put(buf, cap, len, t);
}

int srv_render_phases(char *buf, size_t cap, size_t *len, const srv_results *r, int row, int top,
                      char *const *name_json, char *const *formula_json, char *const *extra_json)
{
    if (top > r->keep) top = r->keep;
    if (put(buf, cap, len, "[")) return -1;
    for (int j = 0; j < top; j++) {
        size_t at = (size_t)row * (size_t)r->keep + (size_t)j;
        int32_t c = r->top[at];
        if (put(buf, cap, len, j ? ", {\"name\": " : "{\"name\": ") ||
            put(buf, cap, len, name_json[c]) || put(buf, cap, len, ", \"formula\": ") ||
            put(buf, cap, len, formula_json[c]) || put(buf, cap, len, ", \"probability\": ") ||
            put_num(buf, cap, len, r->top_prob[at]) || put(buf, cap, len, ", \"fraction\": ") ||
            put_num(buf, cap, len, r->top_frac[at]) ||
            (extra_json && extra_json[c] && put(buf, cap, len, extra_json[c])) ||
            put(buf, cap, len, "}"))
            return -1;
    }
    return put(buf, cap, len, "]");
}

int srv_render_line(char *buf, size_t cap, size_t *len, long long seq, const srv_results *r,
                    int row, char *const *name_json, char *const *formula_json)
{
    char head[64];
    snprintf(head, sizeof head, "{\"seq\": %lld, \"phases\": ", seq);
    if (put(buf, cap, len, head) ||
        srv_render_phases(buf, cap, len, r, row, 3, name_json, formula_json, NULL) ||
        put(buf, cap, len, ", \"unknown_score\": ") ||
        put_num(buf, cap, len, r->unknown_score[row]) || put(buf, cap, len, ", \"residual\": ") ||
        put_num(buf, cap, len, r->residual[row]) || put(buf, cap, len, ", \"missing\": ") ||
        put_num(buf, cap, len, r->missing[row]) ||
        put(buf, cap, len, r->unknown[row] ? ", \"unknown\": true}\n" : ", \"unknown\": false}\n"))
        return -1;
    return 0;
}
