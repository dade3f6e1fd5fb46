/* Unit tests for server/proto: KServe v2 infer requests (JSON flat and
 * nested, binary sections, raw counts, axis and wavelength, top_k, outputs)
 * and every refusal (malformed JSON, datatype, shape, counts, NaN/Inf,
 * truncated or trailing binary data, limits); answers encoded in JSON and
 * binary decoded back by hand; names, number formatting and stream lines. */
#include <jansson.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "server/proto.h"

#define N 4 /* model grid length */
#define K 3 /* classes */

static const srv_proto_model model = {N, K, 8};

static srv_infer_req *parse_ok(const char *body, size_t len, long long hl)
{
    srv_infer_req *r = NULL;
    pid_error err;
    pid_status st = srv_infer_parse(&model, body, len, hl, &r, &err);
    if (st) fail_msg("parse failed: %s\nbody: %.*s", err.msg, (int)len, body);
    assert_non_null(r);
    return r;
}

/* Refused with a message containing `why`. */
static void parse_bad(const char *body, size_t len, long long hl, const char *why)
{
    srv_infer_req *r = (srv_infer_req *)1;
    pid_error err;
    pid_error_clear(&err);
    pid_status st = srv_infer_parse(&model, body, len, hl, &r, &err);
    if (!st) fail_msg("accepted: %.*s", (int)len, body);
    assert_null(r);
    if (!strstr(err.msg, why)) fail_msg("message '%s' lacks '%s'", err.msg, why);
}

static void parse_bad_s(const char *body, const char *why)
{
    parse_bad(body, strlen(body), -1, why);
}

static void test_json_flat_and_nested(void **state)
{
    const char *flat = "{\"id\":\"r1\",\"inputs\":[{\"name\":\"patterns\",\"shape\":[2,4],"
                       "\"datatype\":\"FP32\",\"data\":[1,2,3,4,5,6,7,8.5]}]}";
    srv_infer_req *r = parse_ok(flat, strlen(flat), -1);
    assert_string_equal(r->id, "r1");
    assert_int_equal(r->batch, 2);
    assert_int_equal(r->width, N);
    assert_null(r->axis);
    assert_true(r->patterns[7] == 8.5f && r->patterns[0] == 1.0f);
    assert_int_equal(r->top_k, 3);
    assert_int_equal(r->n_outputs, SRV_OUT_COUNT);
    for (int i = 0; i < SRV_OUT_COUNT; i++) {
        assert_int_equal(r->outputs[i], i);
        assert_int_equal(r->binary[i], 0);
    }
    srv_infer_req_destroy(r);

    const char *nested = "{\"inputs\":[{\"name\":\"patterns\",\"shape\":[2,4],"
                         "\"datatype\":\"UINT16\",\"data\":[[1,2,3,4],[65535,0,7,8]]}]}";
    r = parse_ok(nested, strlen(nested), -1);
    assert_null(r->id);
    assert_true(r->patterns[4] == 65535.0f && r->patterns[5] == 0.0f);
    srv_infer_req_destroy(r);

    /* [N] is one pattern */
    const char *one = "{\"inputs\":[{\"name\":\"patterns\",\"shape\":[4],"
                      "\"datatype\":\"UINT32\",\"data\":[4294967295,1,2,3]}]}";
    r = parse_ok(one, strlen(one), -1);
    assert_int_equal(r->batch, 1);
    assert_true(r->patterns[0] == 4294967295.0f);
    srv_infer_req_destroy(r);
}

static void put_f32(unsigned char *p, float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(u >> (8 * i));
}

/* A binary request: JSON header for patterns [b, 4] of dtype, then data. */
static size_t binary_request(char *buf, size_t cap, int b, const char *dtype, size_t elem,
                             const unsigned char *data, size_t data_len, long long *hl)
{
    int n = snprintf(buf, cap,
                     "{\"inputs\":[{\"name\":\"patterns\",\"shape\":[%d,4],\"datatype\":\"%s\","
                     "\"parameters\":{\"binary_data_size\":%zu}}],\"outputs\":[{\"name\":"
                     "\"probabilities\",\"parameters\":{\"binary_data\":true}}]}",
                     b, dtype, (size_t)b * 4 * elem);
    assert_true(n > 0 && (size_t)n + data_len <= cap);
    memcpy(buf + n, data, data_len);
    *hl = n;
    return (size_t)n + data_len;
}

static void test_binary_inputs(void **state)
{
    char buf[1024];
    long long hl;
    unsigned char d[32];
    for (int i = 0; i < 8; i++)
        put_f32(d + 4 * i, 0.25f * (float)i);
    size_t len = binary_request(buf, sizeof buf, 2, "FP32", 4, d, 32, &hl);
    srv_infer_req *r = parse_ok(buf, len, hl);
    assert_int_equal(r->batch, 2);
    assert_true(r->patterns[5] == 1.25f);
    assert_int_equal(r->n_outputs, 1);
    assert_int_equal(r->outputs[0], SRV_OUT_PROBABILITIES);
    assert_int_equal(r->binary[0], 1);
    srv_infer_req_destroy(r);

    /* UINT16 little-endian: 0x0102 = 258 */
    unsigned char u[8] = {0x02, 0x01, 0xff, 0xff, 0, 0, 1, 0};
    len = binary_request(buf, sizeof buf, 1, "UINT16", 2, u, 8, &hl);
    r = parse_ok(buf, len, hl);
    assert_true(r->patterns[0] == 258.0f && r->patterns[1] == 65535.0f && r->patterns[3] == 1.0f);
    srv_infer_req_destroy(r);

    /* truncated: one byte short */
    len = binary_request(buf, sizeof buf, 2, "FP32", 4, d, 31, &hl);
    parse_bad(buf, len, hl, "truncated");
    /* trailing bytes */
    unsigned char d2[33];
    memcpy(d2, d, 32);
    d2[32] = 7;
    len = binary_request(buf, sizeof buf, 2, "FP32", 4, d2, 33, &hl);
    parse_bad(buf, len, hl, "after the binary");
    /* NaN and Inf in the binary section */
    put_f32(d + 8, NAN);
    len = binary_request(buf, sizeof buf, 2, "FP32", 4, d, 32, &hl);
    parse_bad(buf, len, hl, "NaN");
    put_f32(d + 8, INFINITY);
    len = binary_request(buf, sizeof buf, 2, "FP32", 4, d, 32, &hl);
    parse_bad(buf, len, hl, "NaN or infinite");
    /* binary input without the header-length header */
    put_f32(d + 8, 1.0f);
    len = binary_request(buf, sizeof buf, 2, "FP32", 4, d, 32, &hl);
    parse_bad(buf, (size_t)hl, -1, "Inference-Header-Content-Length");
    /* header length beyond the body */
    parse_bad(buf, len, (long long)len + 1, "exceeds");
}

static void test_refusals(void **state)
{
    parse_bad_s("{\"inputs\": [", "malformed JSON");
    parse_bad_s("", "malformed JSON");
    parse_bad_s("[1,2]", "not a JSON object");
    parse_bad_s("{}", "inputs");
    parse_bad_s("{\"inputs\":[{\"name\":\"x\",\"shape\":[4],\"datatype\":\"FP32\",\"data\":[1,2,"
                "3,4]}]}",
                "unknown input");
    parse_bad_s("{\"inputs\":[{\"name\":\"patterns\",\"shape\":[4],\"datatype\":\"INT8\",\"data\":"
                "[1,2,3,4]}]}",
                "datatype");
    parse_bad_s("{\"inputs\":[{\"name\":\"patterns\",\"shape\":[5],\"datatype\":\"FP32\",\"data\":"
                "[1,2,3,4,5]}]}",
                "grid");
    parse_bad_s("{\"inputs\":[{\"name\":\"patterns\",\"shape\":[1,1,4],\"datatype\":\"FP32\","
                "\"data\":[1,2,3,4]}]}",
                "shape");
    parse_bad_s("{\"inputs\":[{\"name\":\"patterns\",\"shape\":[0,4],\"datatype\":\"FP32\","
                "\"data\":[]}]}",
                "shape");
    parse_bad_s("{\"inputs\":[{\"name\":\"patterns\",\"shape\":[-1,4],\"datatype\":\"FP32\","
                "\"data\":[1,2,3,4]}]}",
                "shape");
    parse_bad_s("{\"inputs\":[{\"name\":\"patterns\",\"shape\":[2,4],\"datatype\":\"FP32\","
                "\"data\":[1,2,3,4]}]}",
                "values");
    parse_bad_s("{\"inputs\":[{\"name\":\"patterns\",\"shape\":[4],\"datatype\":\"FP32\",\"data\":"
                "[1,2,3,4,5]}]}",
                "values");
    parse_bad_s("{\"inputs\":[{\"name\":\"patterns\",\"shape\":[4],\"datatype\":\"FP32\",\"data\":"
                "[1,2,\"x\",4]}]}",
                "numbers");
    parse_bad_s("{\"inputs\":[{\"name\":\"patterns\",\"shape\":[4],\"datatype\":\"FP32\",\"data\":"
                "[1,2,1e39,4]}]}",
                "finite");
    parse_bad_s(
        "{\"inputs\":[{\"name\":\"patterns\",\"shape\":[4],\"datatype\":\"UINT16\",\"data\":"
        "[1,2,70000,4]}]}",
        "out of range");
    parse_bad_s(
        "{\"inputs\":[{\"name\":\"patterns\",\"shape\":[4],\"datatype\":\"UINT16\",\"data\":"
        "[1,-2,3,4]}]}",
        "out of range");
    parse_bad_s(
        "{\"inputs\":[{\"name\":\"patterns\",\"shape\":[4],\"datatype\":\"UINT32\",\"data\":"
        "[1,2.5,3,4]}]}",
        "not an integer");
    parse_bad_s("{\"inputs\":[{\"name\":\"patterns\",\"shape\":[4],\"datatype\":\"FP32\"}]}",
                "no data");
    parse_bad_s("{\"inputs\":[{\"name\":\"patterns\",\"shape\":[4],\"datatype\":\"FP32\",\"data\":"
                "[1,2,3,4]},{\"name\":\"patterns\",\"shape\":[4],\"datatype\":\"FP32\",\"data\":"
                "[1,2,3,4]}]}",
                "twice");
    /* batch over the model's limit of 8 */
    char big[2048];
    int n = snprintf(big, sizeof big,
                     "{\"inputs\":[{\"name\":\"patterns\",\"shape\":[9,4],\"datatype\":\"FP32\","
                     "\"data\":[");
    for (int i = 0; i < 36; i++)
        n += snprintf(big + n, sizeof big - (size_t)n, i ? ",%d" : "%d", i);
    snprintf(big + n, sizeof big - (size_t)n, "]}]}");
    parse_bad_s(big, "exceeds the limit");
    /* parameters and outputs */
    const char *pat = "{\"inputs\":[{\"name\":\"patterns\",\"shape\":[4],\"datatype\":\"FP32\","
                      "\"data\":[1,2,3,4]}],";
    char b[512];
    snprintf(b, sizeof b, "%s\"parameters\":{\"top_k\":0}}", pat);
    parse_bad_s(b, "top_k");
    snprintf(b, sizeof b, "%s\"outputs\":[{\"name\":\"logits\"}]}", pat);
    parse_bad_s(b, "unknown output");
    snprintf(b, sizeof b, "%s\"outputs\":[{\"name\":\"unknown\"},{\"name\":\"unknown\"}]}", pat);
    parse_bad_s(b, "twice");
}

static void test_axis_topk_outputs(void **state)
{
    const char *ok = "{\"inputs\":[{\"name\":\"patterns\",\"shape\":[1,5],\"datatype\":\"FP32\","
                     "\"data\":[1,2,3,4,5]},{\"name\":\"axis\",\"shape\":[5],\"datatype\":"
                     "\"FP32\",\"data\":[10,20,30,40,50],\"parameters\":{\"wavelength\":0.7093}}"
                     "],\"parameters\":{\"top_k\":99,\"binary_data_output\":true},\"outputs\":["
                     "{\"name\":\"unknown\"},{\"name\":\"top_phases\",\"parameters\":{"
                     "\"binary_data\":false}}]}";
    srv_infer_req *r = parse_ok(ok, strlen(ok), -1);
    assert_int_equal(r->width, 5);
    assert_non_null(r->axis);
    assert_true(r->axis[4] == 50.0);
    assert_int_equal(r->has_wavelength, 1);
    assert_true(fabs(r->wavelength_a - 0.7093) < 1e-12);
    assert_int_equal(r->top_k, K); /* clamped */
    assert_int_equal(r->n_outputs, 2);
    assert_int_equal(r->outputs[0], SRV_OUT_UNKNOWN);
    assert_int_equal(r->binary[0], 1); /* binary_data_output */
    assert_int_equal(r->outputs[1], SRV_OUT_TOP_PHASES);
    assert_int_equal(r->binary[1], 0);
    srv_infer_req_destroy(r);

    parse_bad_s("{\"inputs\":[{\"name\":\"patterns\",\"shape\":[1,3],\"datatype\":\"FP32\",\"data"
                "\":[1,2,3]},{\"name\":\"axis\",\"shape\":[3],\"datatype\":\"FP32\",\"data\":[1,"
                "3,2]}]}",
                "strictly increasing");
    parse_bad_s("{\"inputs\":[{\"name\":\"patterns\",\"shape\":[1,3],\"datatype\":\"FP32\",\"data"
                "\":[1,2,3]},{\"name\":\"axis\",\"shape\":[4],\"datatype\":\"FP32\",\"data\":[1,"
                "2,3,4]}]}",
                "axis");
    parse_bad_s("{\"inputs\":[{\"name\":\"patterns\",\"shape\":[1,3],\"datatype\":\"FP32\",\"data"
                "\":[1,2,3]},{\"name\":\"axis\",\"shape\":[3],\"datatype\":\"FP32\",\"data\":[1,"
                "2,3],\"parameters\":{\"wavelength\":-1}}]}",
                "wavelength");
}

static void test_header_len_and_names(void **state)
{
    assert_int_equal(srv_parse_header_len("12", 100), 12);
    assert_int_equal(srv_parse_header_len("0", 0), 0);
    assert_int_equal(srv_parse_header_len("101", 100), -1);
    assert_int_equal(srv_parse_header_len("1x", 100), -1);
    assert_int_equal(srv_parse_header_len("-1", 100), -1);
    assert_int_equal(srv_parse_header_len("", 100), -1);
    assert_int_equal(srv_parse_header_len("99999999999999999999999", 100), -1);
    assert_true(srv_name_valid("xrd-tiny_v2.1", 128));
    assert_false(srv_name_valid("..", 128));
    assert_false(srv_name_valid(".", 128));
    assert_false(srv_name_valid("a/b", 128));
    assert_false(srv_name_valid("../etc", 128));
    assert_false(srv_name_valid("", 128));
    assert_false(srv_name_valid("abcd", 3));
    assert_false(srv_name_valid("a b", 128));
}

/* Results of 2 frames for K = 3 classes. */
static srv_results *sample_results(int keep)
{
    srv_results *res = NULL;
    pid_error err;
    assert_int_equal(srv_results_create(&res, 2, K, keep, 1, &err), PID_OK);
    const float p0[K] = {0.2f, 0.7f, 0.1f}, f0[K] = {0.0f, 1.0f, 0.0f};
    const int32_t o0[K] = {1, 0, 2};
    const float p1[K] = {0.5f, 0.25f, 0.25f}, f1[K] = {NAN, 0.0f, 0.0f};
    const int32_t o1[K] = {0, 1, 2};
    srv_results_set(res, 0, p0, f0, o0, -3.5, 0.0, 0.0, 0);
    srv_results_set(res, 1, p1, f1, o1, 1.25, 0.5, 0.75, 1);
    return res;
}

static const char *const names[K] = {"alpha", "beta", "gamma"};

static void test_encode_json(void **state)
{
    const char *req = "{\"id\":\"q\",\"inputs\":[{\"name\":\"patterns\",\"shape\":[2,4],"
                      "\"datatype\":\"FP32\",\"data\":[1,2,3,4,5,6,7,8]}],\"parameters\":{"
                      "\"top_k\":2}}";
    srv_infer_req *r = parse_ok(req, strlen(req), -1);
    srv_results *res = sample_results(2);
    char *body = NULL;
    size_t len = 0, jl = 0;
    pid_error err;
    assert_int_equal(srv_infer_encode(r, "m1", res, names, &body, &len, &jl, &err), PID_OK);
    assert_int_equal(len, jl); /* no binary output */
    json_error_t je;
    json_t *j = json_loadb(body, len, 0, &je);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "model_name")), "m1");
    assert_string_equal(json_string_value(json_object_get(j, "id")), "q");
    json_t *outs = json_object_get(j, "outputs");
    assert_int_equal(json_array_size(outs), SRV_OUT_COUNT);
    json_t *prob = json_array_get(outs, 0);
    assert_string_equal(json_string_value(json_object_get(prob, "name")), "probabilities");
    json_t *pd = json_object_get(prob, "data");
    assert_int_equal(json_array_size(pd), 2 * K);
    assert_true(fabs(json_real_value(json_array_get(pd, 1)) - 0.7) < 1e-6);
    json_t *top = json_array_get(outs, 1);
    assert_string_equal(json_string_value(json_object_get(top, "datatype")), "BYTES");
    assert_int_equal(json_integer_value(json_array_get(json_object_get(top, "shape"), 1)), 2);
    json_t *td = json_object_get(top, "data");
    assert_string_equal(json_string_value(json_array_get(td, 0)), "beta");
    assert_string_equal(json_string_value(json_array_get(td, 1)), "alpha");
    assert_string_equal(json_string_value(json_array_get(td, 2)), "alpha");
    json_t *fd = json_object_get(json_array_get(outs, 2), "data");
    assert_true(json_is_null(json_array_get(fd, 3)));              /* NaN fraction */
    json_t *rd = json_object_get(json_array_get(outs, 4), "data"); /* residual */
    assert_string_equal(json_string_value(json_object_get(json_array_get(outs, 4), "name")),
                        "residual");
    assert_true(fabs(json_real_value(json_array_get(rd, 0)) - 0.0) < 1e-9 &&
                fabs(json_real_value(json_array_get(rd, 1)) - 0.5) < 1e-9);
    json_t *md = json_object_get(json_array_get(outs, 5), "data"); /* missing */
    assert_string_equal(json_string_value(json_object_get(json_array_get(outs, 5), "name")),
                        "missing");
    assert_true(fabs(json_real_value(json_array_get(md, 0)) - 0.0) < 1e-9 &&
                fabs(json_real_value(json_array_get(md, 1)) - 0.75) < 1e-9);
    json_t *ud = json_object_get(json_array_get(outs, 6), "data");
    assert_true(json_is_false(json_array_get(ud, 0)) && json_is_true(json_array_get(ud, 1)));
    json_decref(j);
    free(body);
    srv_results_destroy(res);
    srv_infer_req_destroy(r);
}

static uint32_t get_u32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void test_encode_binary(void **state)
{
    const char *req = "{\"inputs\":[{\"name\":\"patterns\",\"shape\":[2,4],\"datatype\":\"FP32\","
                      "\"data\":[1,2,3,4,5,6,7,8]}],\"outputs\":[{\"name\":\"unknown_score\","
                      "\"parameters\":{\"binary_data\":true}},{\"name\":\"top_phases\","
                      "\"parameters\":{\"binary_data\":true}},{\"name\":\"unknown\",\"parameters\""
                      ":{\"binary_data\":true}}],\"parameters\":{\"top_k\":1}}";
    srv_infer_req *r = parse_ok(req, strlen(req), -1);
    srv_results *res = sample_results(3);
    char *body = NULL;
    size_t len = 0, jl = 0;
    pid_error err;
    assert_int_equal(srv_infer_encode(r, "m1", res, names, &body, &len, &jl, &err), PID_OK);
    assert_true(jl < len);
    json_t *j = json_loadb(body, jl, 0, NULL);
    assert_non_null(j);
    json_t *outs = json_object_get(j, "outputs");
    size_t sizes[3];
    for (int i = 0; i < 3; i++) {
        json_t *o = json_array_get(outs, (size_t)i);
        assert_null(json_object_get(o, "data"));
        sizes[i] = (size_t)json_integer_value(
            json_object_get(json_object_get(o, "parameters"), "binary_data_size"));
    }
    assert_int_equal(sizes[0], 8);             /* 2 FP32 */
    assert_int_equal(sizes[1], 4 + 4 + 4 + 5); /* "beta", "alpha" */
    assert_int_equal(sizes[2], 2);             /* 2 BOOL */
    assert_int_equal(jl + sizes[0] + sizes[1] + sizes[2], len);
    const unsigned char *p = (const unsigned char *)body + jl;
    uint32_t u = get_u32(p + 4);
    float f;
    memcpy(&f, &u, 4);
    assert_true(f == 1.25f);
    p += 8;
    assert_int_equal(get_u32(p), 4);
    assert_memory_equal(p + 4, "beta", 4);
    assert_int_equal(get_u32(p + 8), 5);
    assert_memory_equal(p + 12, "alpha", 5);
    p += sizes[1];
    assert_int_equal(p[0], 0);
    assert_int_equal(p[1], 1);
    json_decref(j);
    free(body);
    srv_results_destroy(res);
    srv_infer_req_destroy(r);
}

static void test_numbers_and_lines(void **state)
{
    char b[64];
    srv_fmt_num(b, sizeof b, 1.0);
    assert_string_equal(b, "1.0");
    srv_fmt_num(b, sizeof b, 0.5);
    assert_string_equal(b, "0.5");
    srv_fmt_num(b, sizeof b, -3.0);
    assert_string_equal(b, "-3.0");
    srv_fmt_num(b, sizeof b, 1e-7);
    assert_string_equal(b, "1e-07");
    srv_fmt_num(b, sizeof b, NAN);
    assert_string_equal(b, "null");
    char *q = srv_json_quote("a\"b\\c");
    assert_string_equal(q, "\"a\\\"b\\\\c\"");
    free(q);

    srv_results *res = sample_results(3);
    char *nj[K], *fj[K];
    for (int i = 0; i < K; i++) {
        nj[i] = srv_json_quote(names[i]);
        fj[i] = srv_json_quote("X2O");
    }
    char line[2048];
    size_t len = 0;
    assert_int_equal(srv_render_line(line, sizeof line, &len, 41, res, 1, nj, fj), 0);
    assert_int_equal(line[len - 1], '\n');
    json_t *j = json_loadb(line, len, 0, NULL);
    assert_non_null(j);
    assert_int_equal(json_integer_value(json_object_get(j, "seq")), 41);
    json_t *ph = json_object_get(j, "phases");
    assert_int_equal(json_array_size(ph), 3);
    json_t *p0 = json_array_get(ph, 0);
    assert_string_equal(json_string_value(json_object_get(p0, "name")), "alpha");
    assert_true(json_is_null(json_object_get(p0, "fraction")));
    assert_true(json_is_true(json_object_get(j, "unknown")));
    assert_true(json_real_value(json_object_get(j, "unknown_score")) == 1.25);
    json_decref(j);
    /* a line that does not fit is refused */
    len = 0;
    assert_int_equal(srv_render_line(line, 40, &len, 41, res, 1, nj, fj), -1);
    for (int i = 0; i < K; i++) {
        free(nj[i]);
        free(fj[i]);
    }
    srv_results_destroy(res);

    unsigned char raw[8] = {0, 0, 0x80, 0x3f, 0, 0, 0xc0, 0x7f}; /* 1.0f, NaN */
    float out[2];
    size_t bad = 99;
    assert_int_equal(srv_convert_le(SRV_DT_FP32, raw, 1, out, &bad), 0);
    assert_true(out[0] == 1.0f);
    assert_int_equal(srv_convert_le(SRV_DT_FP32, raw, 2, out, &bad), -1);
    assert_int_equal(bad, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_flat_and_nested),
        cmocka_unit_test(test_binary_inputs),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_axis_topk_outputs),
        cmocka_unit_test(test_header_len_and_names),
        cmocka_unit_test(test_encode_json),
        cmocka_unit_test(test_encode_binary),
        cmocka_unit_test(test_numbers_and_lines),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
