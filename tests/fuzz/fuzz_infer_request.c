/* libFuzzer target for the infer request parser (server/proto): the first
 * two bytes choose the Inference-Header-Content-Length (0xffff = absent,
 * else taken modulo the body length + 1), the rest is the body. A parse must
 * fail cleanly or give a request that keeps the srv_infer_req invariants;
 * accepted requests are encoded (fake results) and the JSON part of the
 * answer must parse again. Everything is freed. */
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "server/proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FN 16 /* model grid length */
#define FK 5  /* classes */

static const char *const names[FK] = {"a", "b\"q", "c\\d", "\xc3\xa9", "e"};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) return 0;
    unsigned sel = (unsigned)data[0] | (unsigned)data[1] << 8;
    const char *body = (const char *)data + 2;
    size_t len = size - 2;
    long long hl = sel == 0xffff ? -1 : (long long)(sel % (len + 1));
    const srv_proto_model m = {FN, FK, 8};
    srv_infer_req *r = NULL;
    pid_error err;
    pid_status st = srv_infer_parse(&m, body, len, hl, &r, &err);
    if (st) {
        if (r) abort();
        if (!memchr(err.msg, 0, sizeof err.msg) || !err.msg[0]) abort();
        return 0;
    }
    if (!r || r->batch < 1 || r->batch > 8 || r->width < 1) abort();
    if (!r->axis && r->width != FN) abort();
    if (r->top_k < 1 || r->top_k > FK || r->n_outputs < 1 || r->n_outputs > SRV_OUT_COUNT) abort();
    for (int64_t i = 0; i < r->batch * r->width; i++)
        if (!isfinite(r->patterns[i])) abort();
    for (int64_t i = 1; r->axis && i < r->width; i++)
        if (!(r->axis[i] > r->axis[i - 1])) abort();
    if (r->has_wavelength && !(r->wavelength_a > 0)) abort();

    srv_results *res = NULL;
    if (srv_results_create(&res, (int)r->batch, FK, r->top_k, 1, &err)) abort();
    float prob[FK], frac[FK];
    int32_t order[FK];
    for (int k = 0; k < FK; k++) {
        prob[k] = 0.2f;
        frac[k] = k == 0 ? NAN : 0.0f;
        order[k] = k;
    }
    for (int i = 0; i < r->batch; i++)
        srv_results_set(res, i, prob, frac, order, -1.5, (i & 1) ? 0.25 : NAN, (i & 1) ? 0.5 : NAN,
                        i & 1);
    char *out = NULL;
    size_t olen = 0, jlen = 0;
    if (srv_infer_encode(r, "fuzz", res, names, &out, &olen, &jlen, &err)) abort();
    if (jlen > olen) abort();
    json_t *j = json_loadb(out, jlen, 0, NULL);
    if (!j) abort();
    json_decref(j);
    free(out);
    srv_results_destroy(res);
    srv_infer_req_destroy(r);
    return 0;
}
