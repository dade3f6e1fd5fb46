/* Unit tests for models/spec: parameter and FLOP counts of small specs against
 * hand-computed values, shape inference with stride / padding / dilation,
 * parse errors naming the token, canonical round trips, and a model family. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "models/spec.h"

static net_shape shape1(int64_t c, int64_t l)
{
    net_shape s = {1, c, 1, l};
    return s;
}

static net_spec *build_ok(const char *text, net_shape in, int64_t classes)
{
    pid_error err;
    net_spec *s = NULL;
    pid_status st = net_spec_parse(text, &s, &err);
    if (st) fail_msg("parse '%s': %s", text, err.msg);
    st = net_spec_build(s, &in, classes, &err);
    if (st) fail_msg("build '%s': %s", text, err.msg);
    return s;
}

static net_layer_info layer(const net_spec *s, size_t i)
{
    net_layer_info L;
    assert_int_equal(net_spec_layer(s, i, &L, NULL), PID_OK);
    return L;
}

static net_spec_totals totals(const net_spec *s)
{
    net_spec_totals t;
    assert_int_equal(net_spec_totals_get(s, &t, NULL), PID_OK);
    return t;
}

static void assert_shape1(net_shape sh, int64_t c, int64_t l)
{
    assert_int_equal(sh.rank, 1);
    assert_int_equal(sh.c, c);
    assert_int_equal(sh.w, l);
}

/* conv1d(8,k5) on 1x100: params 8*1*5+8 = 48, output 8x96, MACs 8*96*5 = 3840. */
static void test_conv_counts(void **state)
{
    net_spec *s = build_ok("conv1d(8,k5) head", shape1(1, 100), 3);
    net_layer_info c = layer(s, 0), h = layer(s, 1);
    assert_int_equal(c.params, 48);
    assert_shape1(c.out, 8, 96);
    assert_int_equal(c.flops, 2 * 3840);
    /* Head flattens 8x96 = 768: 768*3 + 3 params; 2*768*3 FLOPs + softmax 3 per class. */
    assert_int_equal(h.out.rank, 0);
    assert_int_equal(h.out.c, 3);
    assert_int_equal(h.params, 768 * 3 + 3);
    assert_int_equal(h.flops, 2 * 768 * 3 + 9);
    net_spec_totals t = totals(s);
    assert_int_equal(t.params, 48 + 2307);
    assert_int_equal(t.buffers, 0);
    assert_int_equal(t.flops_infer, 7680 + 4617);
    assert_int_equal(t.flops_train, 3 * (7680 + 4617));
    /* act_total: input 100 + conv 768 + head 3. */
    assert_int_equal(t.act_total, 100 + 768 + 3);
    assert_int_equal(t.act_peak, 100 + 768);
    net_spec_destroy(s);

    /* Two input channels, 2-D conv: conv2d(4,k3) on 2x10x12 -> 4x8x10,
     * params 4*2*9+4 = 76, MACs 4*8*10*2*9 = 5760. */
    net_shape in2 = {2, 2, 10, 12};
    s = build_ok("conv2d(4,k3) maxpool2d(2) avgpool2d(2,s1) head", in2, 2);
    c = layer(s, 0);
    assert_int_equal(c.params, 76);
    assert_int_equal(c.out.rank, 2);
    assert_int_equal(c.out.c, 4);
    assert_int_equal(c.out.h, 8);
    assert_int_equal(c.out.w, 10);
    assert_int_equal(c.flops, 2 * 5760);
    net_layer_info mp = layer(s, 1), ap = layer(s, 2);
    assert_true(mp.out.h == 4 && mp.out.w == 5);
    assert_int_equal(mp.flops, 4 * 4 * 5 * 3); /* K*K-1 compares per output */
    assert_true(ap.out.h == 3 && ap.out.w == 4);
    assert_int_equal(ap.flops, 4 * 3 * 4 * 4); /* K*K per output */
    net_spec_destroy(s);
}

static void test_dense_bn_counts(void **state)
{
    /* dense(10) on 1x20: 20*10+10 = 210 params, 400 FLOPs; head 10->5: 55 params. */
    net_spec *s = build_ok("dense(10) relu head(sigmoid)", shape1(1, 20), 5);
    assert_int_equal(layer(s, 0).params, 210);
    assert_int_equal(layer(s, 0).flops, 400);
    assert_int_equal(layer(s, 1).flops, 10);
    assert_int_equal(layer(s, 2).params, 55);
    assert_int_equal(layer(s, 2).head, NET_HEAD_SIGMOID);
    assert_int_equal(totals(s).params, 265);
    net_spec_destroy(s);

    /* Fractions head doubles the head: 2 * (10*5+5). */
    s = build_ok("dense(10) head(fractions)", shape1(1, 20), 5);
    assert_int_equal(layer(s, 1).params, 110);
    assert_int_equal(layer(s, 1).fractions, 1);
    net_spec_destroy(s);

    /* bn on 8 channels: gamma+beta 16 params, running mean+var 16 buffers,
     * 2 FLOPs per element; relu 1, gelu 8; gpool 1 per input element. */
    s = build_ok("conv1d(8,k5) bn relu gelu dropout(0.5) gpool head", shape1(1, 100), 3);
    net_layer_info bn = layer(s, 1);
    assert_int_equal(bn.params, 16);
    assert_int_equal(bn.buffers, 16);
    assert_int_equal(bn.flops, 2 * 768);
    assert_int_equal(layer(s, 2).flops, 768);
    assert_int_equal(layer(s, 3).flops, 8 * 768);
    assert_int_equal(layer(s, 4).flops, 0);
    net_layer_info gp = layer(s, 5);
    assert_int_equal(gp.out.rank, 0);
    assert_int_equal(gp.out.c, 8);
    assert_int_equal(gp.flops, 768);
    assert_int_equal(layer(s, 6).params, 8 * 3 + 3);
    net_spec_totals t = totals(s);
    assert_int_equal(t.params, 48 + 16 + 27);
    assert_int_equal(t.buffers, 16);
    net_spec_destroy(s);

    /* bn after dense normalizes features. */
    s = build_ok("dense(6) bn head", shape1(1, 4), 2);
    assert_int_equal(layer(s, 1).params, 12);
    net_spec_destroy(s);
}

static void test_residual(void **state)
{
    /* Identity skip: shapes match, only the add (1 FLOP per element). */
    net_spec *s = build_ok("conv1d(8,k3,p1) res(conv1d(8,k3,p1) relu) head", shape1(1, 100), 2);
    assert_int_equal(net_spec_n_layers(s), 6);
    net_layer_info b = layer(s, 1), e = layer(s, 4);
    assert_int_equal(b.kind, NET_RES_BEGIN);
    assert_int_equal(e.kind, NET_RES_END);
    assert_int_equal(e.res_begin, 1);
    assert_int_equal(layer(s, 2).depth, 1);
    assert_int_equal(e.projection, 0);
    assert_int_equal(e.params, 0);
    assert_int_equal(e.flops, 800);
    assert_shape1(e.out, 8, 100);
    /* Activations: input 100 + four 8x100 outputs + head 2; peak inside the
     * block: relu's input and output plus the skip tensor, 3 x 800. */
    assert_int_equal(totals(s).act_total, 100 + 4 * 800 + 2);
    assert_int_equal(totals(s).act_peak, 3 * 800);
    net_spec_destroy(s);

    /* Projection: block 8x100 -> 16x50; 1x1 conv stride 2 with bias:
     * 16*8+16 = 144 params, 2*16*50*8 = 12800 FLOPs + 800 for the add. */
    s = build_ok("conv1d(8,k3,p1) res(conv1d(16,k3,s2,p1) bn relu) head", shape1(1, 100), 2);
    e = layer(s, 5);
    net_layer_info inner = layer(s, 2);
    assert_shape1(inner.out, 16, 50);
    assert_int_equal(inner.params, 16 * 8 * 3 + 16);
    assert_int_equal(inner.flops, 2 * 16 * 50 * 8 * 3);
    assert_int_equal(e.kind, NET_RES_END);
    assert_int_equal(e.projection, 1);
    assert_int_equal(e.proj_stride, 2);
    assert_int_equal(e.params, 144);
    assert_int_equal(e.flops, 12800 + 800);
    assert_int_equal(totals(s).params, 32 + 400 + 32 + 144 + (800 * 2 + 2));
    net_spec_destroy(s);

    /* Block ending flat: dense projection 32 -> 16: 32*16+16 = 528. */
    s = build_ok("dense(32) res(dense(16) relu) head", shape1(1, 64), 2);
    assert_int_equal(layer(s, 4).projection, 1);
    assert_int_equal(layer(s, 4).params, 528);
    net_spec_destroy(s);

    /* Nested blocks parse and build. */
    s = build_ok("conv1d(4,k3,p1) res(res(conv1d(4,k3,p1)) relu conv1d(4,k3,p1)) head",
                 shape1(1, 50), 2);
    assert_int_equal(layer(s, 3).depth, 2);
    assert_int_equal(layer(s, 4).res_begin, 2);
    assert_int_equal(layer(s, 7).res_begin, 1);
    net_spec_destroy(s);
}

static void test_shapes(void **state)
{
    /* L_out = floor((L + 2p - d(k-1) - 1)/s) + 1 */
    net_spec *s = build_ok("conv1d(4,k3,s2,p1,d2) conv1d(4,k5,d3) conv1d(4,k7,s3,p3) "
                           "maxpool(3) avgpool(4,s2) head",
                           shape1(1, 100), 2);
    assert_shape1(layer(s, 0).out, 4, 49);          /* (100+2-4-1)/2+1 = 49 */
    assert_shape1(layer(s, 1).out, 4, 37);          /* (49-12-1)/1+1 = 37 */
    assert_shape1(layer(s, 2).out, 4, 13);          /* (37+6-6-1)/3+1 = 13 */
    assert_shape1(layer(s, 3).out, 4, 4);           /* (13-3)/3+1 = 4 */
    assert_shape1(layer(s, 4).out, 4, 1);           /* (4-4)/2+1 = 1 */
    assert_int_equal(layer(s, 3).flops, 4 * 4 * 2); /* K-1 compares per output */
    assert_int_equal(layer(s, 4).flops, 4 * 1 * 4); /* K per output */
    net_spec_destroy(s);

    /* p=same: output ceil(L/s); odd extra pad goes right. */
    s = build_ok("conv1d(4,k3,s2,p=same) conv1d(4,k5,p=same,d2) conv1d(4,k4,p=same) head",
                 shape1(1, 100), 2);
    net_layer_info a = layer(s, 0), b = layer(s, 1), c = layer(s, 2);
    assert_shape1(a.out, 4, 50);
    assert_true(a.pad_left == 0 && a.pad_right == 1); /* (49*2+3-100) = 1 */
    assert_shape1(b.out, 4, 50);
    assert_true(b.pad_left == 4 && b.pad_right == 4);
    assert_shape1(c.out, 4, 50);
    assert_true(c.pad_left == 1 && c.pad_right == 2);
    assert_int_equal(a.pad, -1);
    net_spec_destroy(s);

    /* 2-D with padding and stride: (32+2-3)/2+1 = 16. */
    net_shape in2 = {2, 3, 32, 30};
    s = build_ok("conv2d(8,k3,s2,p1) bn relu flatten head", in2, 4);
    net_layer_info c2 = layer(s, 0), fl = layer(s, 3);
    assert_true(c2.out.h == 16 && c2.out.w == 15 && c2.out.c == 8);
    assert_int_equal(fl.out.rank, 0);
    assert_int_equal(fl.out.c, 8 * 16 * 15);
    assert_int_equal(layer(s, 4).params, 8 * 16 * 15 * 4 + 4);
    net_spec_destroy(s);

    /* 2-D p=same on a non-square frame pads each axis for itself. */
    net_shape in3 = {2, 1, 10, 7};
    s = build_ok("conv2d(4,k4,s2,p=same) head", in3, 2);
    net_layer_info c3 = layer(s, 0);
    assert_true(c3.out.h == 5 && c3.out.w == 4);
    assert_true(c3.pad_left == 1 && c3.pad_right == 2); /* 3*2+4-7 = 3 */
    assert_true(c3.pad_top == 1 && c3.pad_bottom == 1); /* 4*2+4-10 = 2 */
    net_spec_destroy(s);

    /* 2-D residual projection: 4x16x9 -> 8x8x5 by a 1x1 conv with stride 2. */
    net_shape in4 = {2, 4, 16, 9};
    s = build_ok("res(conv2d(8,k3,s2,p1)) head", in4, 2);
    net_layer_info e4 = layer(s, 2);
    assert_true(e4.projection == 1 && e4.proj_stride == 2);
    assert_int_equal(e4.params, 8 * 4 + 8);
    assert_int_equal(e4.flops, 8 * 8 * 5 + 2 * 8 * 8 * 5 * 4);
    net_spec_destroy(s);

    /* Block collapsing the length to 1: any stride >= L projects; the smallest is used. */
    s = build_ok("res(conv1d(4,k10)) head", shape1(2, 10), 2);
    assert_int_equal(layer(s, 2).proj_stride, 10);
    net_spec_destroy(s);

    /* Shape strings. */
    net_shape sh;
    char buf[64];
    assert_int_equal(net_spec_parse_shape("1x7001", &sh, NULL), PID_OK);
    assert_true(sh.rank == 1 && sh.c == 1 && sh.w == 7001);
    assert_int_equal(net_spec_parse_shape("7001", &sh, NULL), PID_OK);
    assert_true(sh.rank == 1 && sh.c == 1 && sh.w == 7001);
    assert_int_equal(net_spec_parse_shape("3x64x48", &sh, NULL), PID_OK);
    assert_true(sh.rank == 2 && sh.c == 3 && sh.h == 64 && sh.w == 48);
    assert_string_equal(net_spec_format_shape(&sh, buf, sizeof buf), "3x64x48");
    pid_error err;
    assert_int_equal(net_spec_parse_shape("1x", &sh, &err), PID_ERR_ARG);
    assert_int_equal(net_spec_parse_shape("0x10", &sh, &err), PID_ERR_ARG);
    assert_int_equal(net_spec_parse_shape("1x2x3x4", &sh, &err), PID_ERR_ARG);
    assert_int_equal(net_spec_parse_shape("axb", &sh, &err), PID_ERR_ARG);
}

static void expect_parse_error(const char *text, const char *needle1, const char *needle2)
{
    pid_error err;
    net_spec *s = (net_spec *)1;
    assert_int_equal(net_spec_parse(text, &s, &err), PID_ERR_PARSE);
    assert_null(s);
    if (!strstr(err.msg, needle1)) fail_msg("'%s' not in '%s'", needle1, err.msg);
    if (needle2 && !strstr(err.msg, needle2)) fail_msg("'%s' not in '%s'", needle2, err.msg);
}

static void expect_build_error(const char *text, net_shape in, const char *needle1,
                               const char *needle2)
{
    pid_error err;
    net_spec *s = NULL;
    net_spec_totals t;
    assert_int_equal(net_spec_parse(text, &s, &err), PID_OK);
    assert_int_equal(net_spec_build(s, &in, 3, &err), PID_ERR_FORMAT);
    if (!strstr(err.msg, needle1)) fail_msg("'%s' not in '%s'", needle1, err.msg);
    if (needle2 && !strstr(err.msg, needle2)) fail_msg("'%s' not in '%s'", needle2, err.msg);
    assert_int_equal(net_spec_is_built(s), 0);
    assert_int_equal(net_spec_totals_get(s, &t, NULL), PID_ERR_ARG);
    net_spec_destroy(s);
}

static void test_parse_errors(void **state)
{
    expect_parse_error("conv1d(8,k5) foo relu head", "unknown layer 'foo'", "column 14");
    expect_parse_error("conv1d(8,x5) head", "bad argument 'x5'", "'conv1d(8,x5)'");
    expect_parse_error("conv1d(8) head", "kernel size kK is required", "'conv1d(8)'");
    expect_parse_error("conv1d head", "conv1d needs (C,kK", NULL);
    expect_parse_error("conv1d(0,k3) head", "bad channel count '0'", NULL);
    expect_parse_error("conv1d(8,k3,s0) head", "bad argument 's0'", NULL);
    expect_parse_error("conv1d(8,k5,k3) head", "given twice", NULL);
    expect_parse_error("conv1d(8,k5,) head", "empty argument", NULL);
    expect_parse_error("relu dropout(1.5) head", "bad dropout rate '1.5'", "column 6");
    expect_parse_error("dense(-4) head", "'dense(-4)'", "dense needs (N)");
    expect_parse_error("relu(3) head", "takes no arguments", "'relu(3)'");
    expect_parse_error("head(softmax,tanh)", "bad argument 'tanh'", NULL);
    expect_parse_error("conv1d(8,k5) relu", "must end with 'head'", "'relu'");
    expect_parse_error("head relu", "layer after the head", "column 6");
    expect_parse_error("res(relu head", "no closing ')'", "column 1");
    expect_parse_error("relu) head", "no matching 'res('", "column 5");
    expect_parse_error("res() head", "empty residual block", NULL);
    expect_parse_error("res(relu head) ", "head inside a residual block", NULL);
    expect_parse_error("conv1d(8,k5 relu head", "no closing ')'", NULL);
    expect_parse_error("relu , head", "unexpected character", "','");
    expect_parse_error("", "spec is empty", NULL);
    expect_parse_error("   \n ", "spec is empty", NULL);

    net_shape in1 = shape1(1, 100);
    net_shape in2 = {2, 1, 16, 16};
    expect_build_error("conv1d(8,k200) head", in1, "collapses", "'conv1d(8,k200)'");
    expect_build_error("conv1d(8,k5) maxpool(200) head", in1, "collapses", "layer 2");
    expect_build_error("conv1d(8,k1000000,d1000000) head", in1, "collapses", "999999000001");
    expect_build_error("res(conv1d(8,k1,p5)) head", in1, "no strided 1x1 projection", NULL);
    expect_build_error("conv2d(8,k3) head", in1, "needs a C x H x W input", NULL);
    expect_build_error("conv1d(8,k3) head", in2, "needs a C x L input", NULL);
    expect_build_error("maxpool(2) head", in2, "needs a C x L input", NULL);
    expect_build_error("dense(8) conv1d(4,k3) head", in1, "needs a C x L input", "input 8");
    expect_build_error("dense(8) gpool head", in1, "gpool needs a spatial input", NULL);
    /* 100 -> 33: no strided 1x1 projection gives 33 from 100. */
    expect_build_error("res(conv1d(8,k3,s3)) head", in1, "no strided 1x1 projection", "')'");
    expect_build_error("conv1d(4,k3,p1) res(flatten conv1d(4,k1)) head", in1, "needs a C x L",
                       NULL);

    /* Bad build arguments. */
    net_spec *s = NULL;
    pid_error err;
    assert_int_equal(net_spec_parse("relu head", &s, &err), PID_OK);
    net_shape bad = {1, 0, 1, 10};
    assert_int_equal(net_spec_build(s, &bad, 3, &err), PID_ERR_ARG);
    assert_int_equal(net_spec_build(s, &in1, 0, &err), PID_ERR_ARG);
    assert_int_equal(net_spec_build(s, &in1, 3, &err), PID_OK);
    net_layer_info L;
    assert_int_equal(net_spec_layer(s, 2, &L, &err), PID_ERR_ARG);
    net_spec_destroy(s);
    net_spec_destroy(NULL);
}

static char *canon_of(const char *text)
{
    net_spec *s = NULL;
    char *c = NULL;
    pid_error err;
    if (net_spec_parse(text, &s, &err)) fail_msg("parse '%s': %s", text, err.msg);
    assert_int_equal(net_spec_canonical(s, &c, &err), PID_OK);
    net_spec_destroy(s);
    return c;
}

static void check_round_trip(const char *text, const char *expect, net_shape in)
{
    char *c1 = canon_of(text);
    if (expect) assert_string_equal(c1, expect);
    char *c2 = canon_of(c1);
    assert_string_equal(c1, c2);
    net_spec *a = build_ok(text, in, 7), *b = build_ok(c1, in, 7);
    net_spec_totals ta = totals(a), tb = totals(b);
    assert_int_equal(net_spec_n_layers(a), net_spec_n_layers(b));
    assert_int_equal(ta.params, tb.params);
    assert_int_equal(ta.flops_infer, tb.flops_infer);
    assert_int_equal(ta.act_total, tb.act_total);
    net_spec_destroy(a);
    net_spec_destroy(b);
    free(c1);
    free(c2);
}

static void test_canonical(void **state)
{
    net_shape in1 = shape1(1, 7001);
    check_round_trip("  CONV1D( 32 , s2, k17 )\trelu  pool(2)\n conv1d(64,k9,s1,d2,p0)   bn relu "
                     "gpool dense(256) gelu dropout(0.20) head(softmax)",
                     "conv1d(32,k17,s2) relu maxpool(2) conv1d(64,k9,d2) bn relu gpool "
                     "dense(256) gelu dropout(0.2) head",
                     in1);
    check_round_trip("conv1d(32,k3,p=same) res( conv1d(32,k3,p1) bn relu conv1d(32,k3,p1) bn ) "
                     "relu avgpool(4,s4) maxpool(3,s2) dense (16) head(fractions,softmax)",
                     "conv1d(32,k3,p=same) res(conv1d(32,k3,p1) bn relu conv1d(32,k3,p1) bn) "
                     "relu avgpool(4) maxpool(3,s2) dense(16) head(softmax,fractions)",
                     in1);
    check_round_trip("conv1d(8,k=5,s=2) res(res(relu) bn) dropout(0.123456789) head(sigmoid)",
                     "conv1d(8,k5,s2) res(res(relu) bn) dropout(0.123456789) head(sigmoid)", in1);
    net_shape in2 = {2, 1, 64, 64};
    check_round_trip("conv2d(16,k3,s1,p1) bn relu maxpool2d(2) conv2d(32,k3,p1) avgpool2d(2,s2) "
                     "gpool head",
                     "conv2d(16,k3,p1) bn relu maxpool2d(2) conv2d(32,k3,p1) avgpool2d(2) gpool "
                     "head",
                     in2);
    check_round_trip(NET_SPEC_DEFAULT_XRD, NET_SPEC_DEFAULT_XRD, in1);
}

/* A family of models for 1x7001 XRD frames and 83 phases, with their sizes
 * bounded; the numbers are printed for the record. */
static void test_family(void **state)
{
    static const struct {
        const char *name, *spec;
        double min_params, max_params, max_mflops;
    } fam[] = {
        {"mlp", "dense(128) relu dropout(0.2) dense(128) relu head", 5e5, 2e6, 5},
        {"small-cnn",
         "conv1d(8,k9,s2,p4) relu maxpool(4) conv1d(16,k9,s2,p4) relu maxpool(4) "
         "conv1d(32,k5,p2) relu gpool dense(64) relu head",
         5e3, 2e5, 10},
        {"medium-cnn", NET_SPEC_DEFAULT_XRD, 1e5, 3e5, 50},
        {"wider",
         "conv1d(32,k15,s2,p7) bn relu maxpool(2) conv1d(64,k9,s2,p4) bn relu maxpool(2) "
         "res(conv1d(64,k5,p2) bn relu conv1d(64,k5,p2) bn) relu conv1d(128,k5,p2) bn relu "
         "maxpool(2) res(conv1d(128,k3,p1) bn relu conv1d(128,k3,p1) bn) relu maxpool(2) "
         "conv1d(256,k3,p1) bn relu gpool dense(512) relu dropout(0.2) head",
         3e5, 2e6, 200},
        {"deeper",
         "conv1d(16,k15,s2,p7) bn relu maxpool(2) conv1d(32,k9,s2,p4) bn relu "
         "res(conv1d(32,k5,p2) bn relu conv1d(32,k5,p2) bn) relu "
         "res(conv1d(32,k5,p2) bn relu conv1d(32,k5,p2) bn) relu maxpool(2) "
         "res(conv1d(64,k3,s2,p1) bn relu conv1d(64,k3,p1) bn) relu "
         "res(conv1d(64,k3,p1) bn relu conv1d(64,k3,p1) bn) relu "
         "res(conv1d(128,k3,s2,p1) bn relu conv1d(128,k3,p1) bn) relu "
         "res(conv1d(128,k3,p1) bn relu conv1d(128,k3,p1) bn) relu gpool dense(256) gelu "
         "dropout(0.2) head(softmax,fractions)",
         1e5, 1.5e6, 150},
    };
    net_shape in = shape1(1, 7001);
    int64_t prev_medium = 0;
    for (size_t i = 0; i < sizeof fam / sizeof fam[0]; i++) {
        net_spec *s = build_ok(fam[i].spec, in, 83);
        net_spec_totals t = totals(s);
        double mflops = t.flops_infer / 1e6;
        printf("  %-11s params %8lld  buffers %5lld  %8.3f MFLOPs/frame inference, %8.3f "
               "training, activations %7.1f KiB\n",
               fam[i].name, (long long)t.params, (long long)t.buffers, mflops, t.flops_train / 1e6,
               t.act_total * 4.0 / 1024);
        if (t.params < fam[i].min_params || t.params > fam[i].max_params ||
            mflops > fam[i].max_mflops || mflops <= 0)
            fail_msg("%s: params %lld or %.3f MFLOPs out of range", fam[i].name,
                     (long long)t.params, mflops);
        assert_int_equal(t.n_classes, 83);
        assert_int_equal(t.flops_train, 3 * t.flops_infer);
        assert_true(t.act_peak > 0 && t.act_peak <= t.act_total);
        net_layer_info last = layer(s, net_spec_n_layers(s) - 1);
        assert_int_equal(last.out.c, 83);
        if (!strcmp(fam[i].name, "medium-cnn")) prev_medium = t.params;
        if (!strcmp(fam[i].name, "wider")) assert_true(t.params > 2 * prev_medium);
        net_spec_destroy(s);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conv_counts),  cmocka_unit_test(test_dense_bn_counts),
        cmocka_unit_test(test_residual),     cmocka_unit_test(test_shapes),
        cmocka_unit_test(test_parse_errors), cmocka_unit_test(test_canonical),
        cmocka_unit_test(test_family),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
