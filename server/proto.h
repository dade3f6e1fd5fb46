/* The wire formats of the inference service, kept free of HTTP and of the
 * backend so they can be unit-tested and fuzzed: KServe v2 infer requests
 * (JSON and the binary tensor extension) parsed and validated into frames,
 * infer responses encoded from results, and the per-frame JSON lines of
 * streams and events. */
#ifndef PID_SERVER_PROTO_H
#define PID_SERVER_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Tensor datatypes a pattern may come in (raw counts or floats). */
typedef enum { SRV_DT_FP32 = 0, SRV_DT_UINT16, SRV_DT_UINT32, SRV_DT_COUNT } srv_dtype;

/* "FP32" / "UINT16" / "UINT32" -> 0 and *out; anything else -> -1. */
int srv_dtype_parse(const char *s, srv_dtype *out);
const char *srv_dtype_name(srv_dtype dt);
size_t srv_dtype_size(srv_dtype dt);

/* Convert n little-endian values of type dt at src into floats at dst.
 * Refuses (-1, *bad_index set) a non-finite FP32 value; 0 otherwise. */
int srv_convert_le(srv_dtype dt, const void *src, size_t n, float *dst, size_t *bad_index);

/* The outputs of an infer answer, in the order they are listed by default. */
enum {
    SRV_OUT_PROBABILITIES = 0,
    SRV_OUT_TOP_PHASES,
    SRV_OUT_FRACTIONS,
    SRV_OUT_UNKNOWN_SCORE,
    SRV_OUT_RESIDUAL,
    SRV_OUT_MISSING,
    SRV_OUT_UNKNOWN,
    SRV_OUT_COUNT
};
const char *srv_output_name(int out);

/* What the parser checks a request against. */
typedef struct {
    int64_t frame_size; /* N: the model's grid length */
    int64_t n_classes;  /* K */
    int64_t max_frames; /* largest batch B a request may carry (>= 1) */
} srv_proto_model;

/* A validated infer request. A plain record owned by the caller
 * (srv_infer_req_destroy). */
typedef struct {
    char *id;           /* the request's "id", NULL when absent */
    int64_t batch;      /* B >= 1 */
    int64_t width;      /* M values per pattern: N, or the axis length */
    float *patterns;    /* [B * M], finite, converted from the wire dtype */
    double *axis;       /* [M] strictly increasing, or NULL (patterns on the model grid) */
    int has_wavelength; /* 1: wavelength_a applies to the axis */
    double wavelength_a;
    int top_k;                  /* 1..K */
    int n_outputs;              /* outputs to answer, 1..SRV_OUT_COUNT */
    int outputs[SRV_OUT_COUNT]; /* SRV_OUT_* in the order asked */
    int binary[SRV_OUT_COUNT];  /* per entry of outputs[]: 1 = binary section */
} srv_infer_req;

/* Parse and validate an infer request body. header_len is the value of the
 * Inference-Header-Content-Length header (the JSON part is body[0, header_len)
 * and the binary sections follow), or -1 when the header is absent (the whole
 * body is JSON). Checks: JSON well-formed, an object; inputs "patterns"
 * (required) and "axis" (optional), nothing else, each once; datatypes; shapes
 * ([N] or [B, N], B <= max_frames, N the model's grid length unless an axis is
 * given; axis [M] with M the patterns' width, M >= 2, strictly increasing);
 * data count equal to the shape's (flat or nested JSON, or binary_data_size
 * equal to the tensor's byte size, the binary sections exactly filling the
 * rest of the body); integer counts in range; no NaN/Inf; "wavelength" > 0;
 * top_k 1..K (larger values are clamped to K); outputs named from the five
 * known ones, each once. On success *out is owned by the caller; on failure
 * *out is NULL and err says why (PID_ERR_PARSE: not JSON; PID_ERR_FORMAT:
 * anything else; PID_ERR_NOMEM). */
pid_status srv_infer_parse(const srv_proto_model *m, const char *body, size_t body_len,
                           long long header_len, srv_infer_req **out, pid_error *err);
void srv_infer_req_destroy(srv_infer_req *r);

/* The value of an Inference-Header-Content-Length header: a decimal integer
 * 0..body_len. -1 when malformed or out of range. */
long long srv_parse_header_len(const char *s, size_t body_len);

/* Results of n frames for K classes, a plain record owned by whoever created
 * it (srv_results_create / srv_results_destroy). Per frame: the `keep` best
 * classes (index, probability, fraction) by decreasing probability, the
 * unknown score and flag; with `full`, also every class's probability and
 * fraction in the model's class order. */
typedef struct {
    int n;
    int64_t k;
    int keep;
    int full;
    int32_t *top;          /* [n * keep] */
    float *top_prob;       /* [n * keep] */
    float *top_frac;       /* [n * keep], NaN = the model cannot say */
    float *prob;           /* [n * k] when full, else NULL */
    float *fraction;       /* [n * k] when full, else NULL */
    double *unknown_score; /* [n] */
    double *residual;      /* [n] physics residual, NaN when the model has no residual check */
    double *missing;       /* [n] missing-reflection fraction (cls_results), NaN likewise */
    uint8_t *unknown;      /* [n] */
} srv_results;

/* keep is clamped to 1..k. */
pid_status srv_results_create(srv_results **out, int n, int64_t k, int keep, int full,
                              pid_error *err);
void srv_results_destroy(srv_results *r); /* accepts NULL */

/* Fill row `row` of r from one frame's outputs: prob[k] and fraction[k] in
 * class order, order[k] the class indices by decreasing probability. */
void srv_results_set(srv_results *r, int row, const float *prob, const float *fraction,
                     const int32_t *order, double unknown_score, double residual, double missing,
                     int unknown);

/* Encode the answer to req: {"model_name", "model_version", "id"?,
 * "outputs": [...]} in the order of req->outputs, JSON data or a binary
 * section per output (BYTES as 4-byte little-endian length + bytes, BOOL as
 * one byte). res holds req->batch rows with full results and keep >= top_k.
 * names[k] are the phase names. *body is malloc'd (caller frees);
 * *json_len is the length of its JSON part (== *body_len when no output is
 * binary). */
pid_status srv_infer_encode(const srv_infer_req *req, const char *model_name,
                            const srv_results *res, const char *const *names, char **body,
                            size_t *body_len, size_t *json_len, pid_error *err);

/* JSON text of a string (quotes included, escaped by jansson), malloc'd;
 * NULL when out of memory or not valid UTF-8. */
char *srv_json_quote(const char *s);

/* A JSON number as `phaseid classify` prints it: %.6g, with ".0" added when
 * it would read as an integer; "null" for NaN/Inf. Returns the length. */
int srv_fmt_num(char *buf, size_t cap, double v);

/* One frame's phases as the JSON array of `phaseid classify`:
 * [{"name": .., "formula": .., "probability": .., "fraction": ..}, ...] for
 * the first min(top, r->keep) ranked classes of row `row`. name_json /
 * formula_json are pre-quoted (srv_json_quote) per class; extra_json (NULL:
 * none) is per class text appended inside the object (", \"near_twins\":
 * [...]"). Appends to buf at *len (capacity cap); returns -1 when it does
 * not fit (buf unspecified beyond *len), else 0. */
int srv_render_phases(char *buf, size_t cap, size_t *len, const srv_results *r, int row, int top,
                      char *const *name_json, char *const *formula_json, char *const *extra_json);

/* A stream's result line: {"seq": S, "phases": [...], "unknown_score": x,
 * "unknown": b}\n. Same conventions as srv_render_phases. */
int srv_render_line(char *buf, size_t cap, size_t *len, long long seq, const srv_results *r,
                    int row, char *const *name_json, char *const *formula_json);

/* Names of models and streams: [A-Za-z0-9._-]{1,max_len}, not "." or "..". */
int srv_name_valid(const char *s, size_t max_len);

#ifdef __cplusplus
}
#endif
#endif
