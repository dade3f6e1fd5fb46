/* Network architecture specs: a one-line text language for phaseid's compact
 * networks ("conv1d(32,k17,s2) relu maxpool(2) ... gpool dense(256) head"),
 * its parser, shape inference, parameter / FLOP / activation counts, and a
 * canonical string form for model files. No compute happens here.
 *
 * Grammar (case-insensitive, layers separated by whitespace):
 *   spec    := layer+                      the last layer must be `head`
 *   layer   := name [ '(' arg (',' arg)* ')' ] | 'res' '(' layer+ ')'
 *   conv1d(C,kK[,sS][,pP|,p=same][,dD])   C x L -> C' x L'   (k required; s1 p0 d1)
 *   conv2d(C,kK[,sS][,pP|,p=same][,dD])   square K x K kernel on C x H x W
 *   maxpool(K[,sS]) | pool(K[,sS]) | avgpool(K[,sS])   1-D, stride defaults to K
 *   maxpool2d(K[,sS]) | avgpool2d(K[,sS])               2-D, square window
 *   gpool        global average over the spatial axes: C x ... -> C
 *   flatten      C x ... -> C*L (dense and head flatten implicitly; same buffer)
 *   dense(N)     fully connected to N units (with bias)
 *   relu | gelu | bn (batch norm: gamma, beta + running mean, var) | dropout(P), 0 <= P < 1
 *   res( ... )   residual block: out = proj(x) + block(x). proj is the identity
 *                when the block keeps the shape; otherwise a 1x1 convolution
 *                (with bias, stride chosen so the length matches; no BN) is
 *                inserted on the skip path, or a dense layer when the block
 *                ends in a flat vector. Blocks may nest (up to 16 deep).
 *   head[(softmax|sigmoid[,fractions])]  the final dense to n_classes, added at
 *                build time; softmax (one phase; default) or sigmoid (multi-
 *                label); `fractions` adds a second dense + softmax from the same
 *                features giving phase fractions.
 * Conv output length: L' = floor((L + pl + pr - d(k-1) - 1)/s) + 1, with
 * pl = pr = P for pP; p=same pads (TensorFlow rule) so that L' = ceil(L/s),
 * the odd extra pad going right. Pools: L' = floor((L - K)/S) + 1.
 *
 * Counting conventions (all per frame, float32):
 *   params   weights + biases + BN gamma/beta (trainable); BN running mean/var
 *            are reported separately as `buffers`.
 *   FLOPs    inference: a multiply-add is 2 FLOPs (conv, dense, projection);
 *            bias adds are not counted separately; bn 2/elt (folded scale +
 *            shift), relu 1/elt, gelu 8/elt (tanh form), residual add 1/elt,
 *            max pool K-1 per output, avg pool K per output, gpool 1 per input
 *            element, softmax/sigmoid 3 per class, dropout/flatten 0.
 *            training ~ 3 x inference (backward = grad wrt inputs + grad wrt
 *            weights, each ~ the forward cost; BN statistics and the optimizer
 *            step are ignored).
 *   memory   act_total: floats of the input plus every layer's output (what
 *            training keeps for backward, no in-place reuse); act_peak: the
 *            largest, over layers, of input + output + the distinct skip
 *            tensors of open residual blocks (at a residual add, the skip
 *            tensor being added): inference with per-layer buffers. */
#ifndef PID_MODELS_SPEC_H
#define PID_MODELS_SPEC_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A proposed default for XRD patterns of 7001 points: ~130 k params and
 * ~44 MFLOPs per frame for 83 classes; `phaseid arch` shows it when given no spec. */
#define NET_SPEC_DEFAULT_XRD                                                                       \
    "conv1d(16,k15,s2,p7) bn relu maxpool(2) "                                                     \
    "conv1d(32,k9,s2,p4) bn relu maxpool(2) "                                                      \
    "res(conv1d(32,k5,p2) bn relu conv1d(32,k5,p2) bn) relu "                                      \
    "conv1d(64,k5,p2) bn relu maxpool(2) "                                                         \
    "res(conv1d(64,k3,p1) bn relu conv1d(64,k3,p1) bn) relu maxpool(2) "                           \
    "conv1d(128,k3,p1) bn relu gpool dense(256) relu dropout(0.2) head"

#define NET_SPEC_MAX_DEPTH 16

typedef enum {
    NET_CONV1D,
    NET_CONV2D,
    NET_MAXPOOL1D,
    NET_AVGPOOL1D,
    NET_MAXPOOL2D,
    NET_AVGPOOL2D,
    NET_GPOOL,
    NET_FLATTEN,
    NET_DENSE,
    NET_RELU,
    NET_GELU,
    NET_BN,
    NET_DROPOUT,
    NET_RES_BEGIN, /* "res(": saves its input for the skip path */
    NET_RES_END,   /* ")": adds the (projected) saved input to the block output */
    NET_HEAD,
    NET_LAYER_KIND_COUNT
} net_layer_kind;

typedef enum { NET_HEAD_SOFTMAX = 0, NET_HEAD_SIGMOID } net_head_kind;

/* A tensor shape per frame. rank 0: a flat vector of c values; rank 1: c
 * channels x w points (h = 1); rank 2: c x h x w. */
typedef struct {
    int rank;
    int64_t c, h, w;
} net_shape;

/* One layer as parsed and, after net_spec_build, with shapes and counts.
 * Fields a kind does not use are 0. A plain value: copy freely. */
typedef struct {
    net_layer_kind kind;
    char text[96]; /* canonical text: "conv1d(32,k17,s2)", "res(", ")" */
    int column;    /* 1-based column of the layer in the parsed text */
    int depth;     /* residual nesting depth (layers inside one res( ) have depth 1) */
    int64_t units; /* conv output channels, dense units */
    int kernel;    /* conv / pool window (square in 2-D) */
    int stride;
    int dilation;
    int pad;      /* pP as written (-1: p=same) */
    int pad_left; /* after build: actual padding of the length (W) axis */
    int pad_right;
    int pad_top; /* after build, conv2d: actual padding of the H axis */
    int pad_bottom;
    double p_drop;
    net_head_kind head;
    int fractions;   /* head: 1 when a fractions head is added */
    int res_begin;   /* NET_RES_END: index of the matching NET_RES_BEGIN */
    int projection;  /* NET_RES_END after build: 1 = 1x1 conv (or dense) on the skip path */
    int proj_stride; /* its stride */
    /* after build */
    net_shape in, out;
    int64_t params;  /* trainable */
    int64_t buffers; /* non-trainable (BN running mean and variance) */
    int64_t flops;   /* inference FLOPs per frame */
} net_layer_info;

typedef struct {
    int64_t params;
    int64_t buffers;
    int64_t flops_infer; /* per frame */
    int64_t flops_train; /* per frame: 3 x flops_infer */
    int64_t act_total;   /* floats, see the conventions above */
    int64_t act_peak;    /* floats */
    int64_t n_classes;
} net_spec_totals;

typedef struct net_spec net_spec;

/* Parse `text` into a new spec (*out, owned by the caller: net_spec_destroy).
 * On failure *out is NULL and err names the offending token and its column
 * (PID_ERR_PARSE for syntax, unknown layers and bad arguments). */
pid_status net_spec_parse(const char *text, net_spec **out, pid_error *err);

void net_spec_destroy(net_spec *s);

/* Infer every layer's shapes and counts for one frame of shape `input` and
 * `n_classes` outputs. May be called again with another input; on failure
 * (PID_ERR_FORMAT: shape collapses to <= 0, layer needs another rank, ...;
 * PID_ERR_ARG: bad input or n_classes) the spec is left unbuilt. */
pid_status net_spec_build(net_spec *s, const net_shape *input, int64_t n_classes, pid_error *err);

/* 1 after a successful net_spec_build. */
int net_spec_is_built(const net_spec *s);

size_t net_spec_n_layers(const net_spec *s);

/* Copy layer i (0 <= i < n_layers) into *out. */
pid_status net_spec_layer(const net_spec *s, size_t i, net_layer_info *out, pid_error *err);

/* Totals of a built spec (PID_ERR_ARG when not built). */
pid_status net_spec_totals_get(const net_spec *s, net_spec_totals *out, pid_error *err);

/* The canonical form: layers in order, one space between them, arguments in
 * the order of the grammar above with defaults left out, `pool` written as
 * `maxpool`, numbers in shortest round-trip form. Parsing it gives the same
 * spec. *out is malloc'd and owned by the caller (free()). */
pid_status net_spec_canonical(const net_spec *s, char **out, pid_error *err);

/* Parse "1x7001" (C x L) or "3x64x64" (C x H x W) or "7001" (1 x L). */
pid_status net_spec_parse_shape(const char *text, net_shape *out, pid_error *err);

/* Write a shape as "32x3501", "16x32x32" or "256"; returns buf. */
char *net_spec_format_shape(const net_shape *sh, char *buf, size_t cap);

/* Number of values in one frame of shape sh. */
int64_t net_spec_shape_count(const net_shape *sh);

/* Layer kind name ("conv1d", "res_end", ...). */
const char *net_spec_kind_name(net_layer_kind kind);

#ifdef __cplusplus
}
#endif
#endif
