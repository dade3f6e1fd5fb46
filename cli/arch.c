/* `phaseid arch SPEC`: parses a network architecture spec (models/spec.h),
 * infers its shapes for an input frame and prints a per-layer table of output
 * shapes, parameters and FLOPs per frame, with totals, as text or JSON. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "models/spec.h"

static void usage_arch(FILE *f)
{
    fprintf(
        f,
        "usage: phaseid arch [SPEC...] [--input 1x7001|CxHxW] [--classes N] [--format text|json]\n"
        "\n"
        "Parse a network architecture spec and print, per layer, its output shape,\n"
        "parameters and MFLOPs for one input frame, then the totals. SPEC may be one\n"
        "quoted argument or several words (they are joined with spaces). With no SPEC\n"
        "the proposed default XRD model is shown:\n"
        "  %s\n"
        "\n"
        "Spec language (layers separated by blanks, the last one 'head'):\n"
        "  conv1d(C,kK[,sS][,pP|,p=same][,dD])  1-D convolution to C channels, kernel K,\n"
        "                        stride S (1), padding P per side (0) or 'same' (output\n"
        "                        length ceil(L/S)), dilation D (1):\n"
        "                        L' = floor((L + 2P - D(K-1) - 1)/S) + 1\n"
        "  conv2d(C,kK[,sS][,pP|,p=same][,dD])  2-D convolution, square K x K kernel\n"
        "  maxpool(K[,sS]), pool(K[,sS]), avgpool(K[,sS])  1-D pooling, stride S = K by\n"
        "                        default: L' = floor((L - K)/S) + 1\n"
        "  maxpool2d(K[,sS]), avgpool2d(K[,sS])  2-D pooling, square window\n"
        "  gpool                 global average over the spatial axes (C x L -> C)\n"
        "  flatten               C x L -> C*L (dense and head flatten implicitly)\n"
        "  dense(N)              fully connected layer with N units\n"
        "  relu, gelu            activations\n"
        "  bn                    batch norm (gamma, beta; running mean/var as buffers)\n"
        "  dropout(P)            dropout with rate 0 <= P < 1 (identity at inference)\n"
        "  res( ... )            residual block, out = x + block(x); when the block\n"
        "                        changes the shape a 1x1 convolution (stride chosen to\n"
        "                        match the length, with bias) projects x\n"
        "  head[(softmax|sigmoid[,fractions])]  final dense to N classes: softmax\n"
        "                        (default, one phase) or sigmoid (multi-label); 'fractions'\n"
        "                        adds a second dense + softmax for phase fractions\n"
        "\n"
        "Counting: params are weights + biases + BN gamma/beta (BN running statistics\n"
        "listed separately); a multiply-add is 2 FLOPs, bias adds are not counted, bn 2,\n"
        "relu 1, gelu 8 per element, residual add 1 per element, pools per window,\n"
        "softmax 3 per class. Training FLOPs ~ 3 x inference (forward + backward).\n"
        "Activations: floats of every layer output (kept for backward, float32 bytes)\n"
        "and the inference peak (largest layer input + output + open skip tensors).\n"
        "\n"
        "options:\n"
        "  --input SHAPE         one input frame: CxL (1-D, default 1x7001), L, or CxHxW\n"
        "  --classes N           number of output classes (phases) of the head (default 83)\n"
        "  --format text|json    per-layer table (default) or one JSON object with\n"
        "                        \"spec\" (canonical form), \"layers\" and \"totals\"\n"
        "  -h, --help            show this help\n"
        "\n"
        "exit status: 0 ok, 1 the spec does not parse or does not fit the input, 2 usage\n",
        NET_SPEC_DEFAULT_XRD);
}

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p < 0x20)
            fprintf(f, "\\u%04x", *p);
        else
            fputc(*p, f);
    }
    fputc('"', f);
}

static void json_shape(FILE *f, const net_shape *sh)
{
    if (sh->rank == 0)
        fprintf(f, "[%lld]", (long long)sh->c);
    else if (sh->rank == 1)
        fprintf(f, "[%lld,%lld]", (long long)sh->c, (long long)sh->w);
    else
        fprintf(f, "[%lld,%lld,%lld]", (long long)sh->c, (long long)sh->h, (long long)sh->w);
}

/* "1234567" -> "1,234,567" */
static const char *group(long long v, char *buf, size_t cap)
{
    char tmp[32];
    int n = snprintf(tmp, sizeof tmp, "%lld", v < 0 ? -v : v), o = 0;
    if (v < 0 && o + 1 < (int)cap) buf[o++] = '-';
    for (int i = 0; i < n && o + 2 < (int)cap; i++) {
        if (i > 0 && (n - i) % 3 == 0) buf[o++] = ',';
        buf[o++] = tmp[i];
    }
    buf[o] = 0;
    return buf;
}

static void print_text(const net_spec *s, const char *canon, const net_shape *input,
                       const net_spec_totals *t)
{
    char sh[64], g1[32];
    size_t n = net_spec_n_layers(s);
    printf("spec:    %s\n", canon);
    printf("input:   %s   classes: %lld\n\n", net_spec_format_shape(input, sh, sizeof sh),
           (long long)t->n_classes);
    printf("%4s  %-30s %-14s %12s %10s\n", "#", "layer", "output", "params", "MFLOPs");
    printf("%4s  %-30s %-14s %12s %10s\n", "-", "input",
           net_spec_format_shape(input, sh, sizeof sh), "", "");
    for (size_t i = 0; i < n; i++) {
        net_layer_info L;
        char name[160];
        if (net_spec_layer(s, i, &L, NULL)) continue;
        int ind = 2 * L.depth;
        if (L.kind == NET_RES_END && L.projection) {
            if (L.out.rank == 0)
                snprintf(name, sizeof name, "%*s) + dense proj", ind, "");
            else
                snprintf(name, sizeof name, "%*s) + 1x1 proj s%d", ind, "", L.proj_stride);
        } else if (L.kind == NET_RES_END) {
            snprintf(name, sizeof name, "%*s) + x", ind, "");
        } else {
            snprintf(name, sizeof name, "%*s%s", ind, "", L.text);
        }
        printf("%4zu  %-30s %-14s %12s %10.3f\n", i + 1, name,
               net_spec_format_shape(&L.out, sh, sizeof sh), group(L.params, g1, sizeof g1),
               L.flops / 1e6);
    }
    printf("\ntotals:\n");
    printf("  parameters      %s trainable (%.1f KiB float32) + %s BN running stats\n",
           group(t->params, g1, sizeof g1), t->params * 4.0 / 1024,
           group(t->buffers, sh, sizeof sh));
    printf("  inference       %.3f MFLOPs per frame (multiply-add = 2 FLOPs)\n",
           t->flops_infer / 1e6);
    printf("  training        %.3f MFLOPs per frame (~3 x forward: forward + backward)\n",
           t->flops_train / 1e6);
    printf("  activations     %.1f KiB per frame, all layer outputs (training); "
           "peak %.1f KiB (inference)\n",
           t->act_total * 4.0 / 1024, t->act_peak * 4.0 / 1024);
}

static void print_json(const net_spec *s, const char *canon, const net_shape *input,
                       const net_spec_totals *t)
{
    size_t n = net_spec_n_layers(s);
    printf("{\"spec\": ");
    json_str(stdout, canon);
    printf(", \"input\": ");
    json_shape(stdout, input);
    printf(", \"classes\": %lld, \"layers\": [", (long long)t->n_classes);
    for (size_t i = 0; i < n; i++) {
        net_layer_info L;
        if (net_spec_layer(s, i, &L, NULL)) continue;
        printf("%s\n  {\"index\": %zu, \"kind\": \"%s\", \"layer\": ", i ? "," : "", i + 1,
               net_spec_kind_name(L.kind));
        json_str(stdout, L.text);
        printf(", \"depth\": %d, \"output\": ", L.depth);
        json_shape(stdout, &L.out);
        printf(", \"params\": %lld, \"buffers\": %lld, \"flops\": %lld", (long long)L.params,
               (long long)L.buffers, (long long)L.flops);
        if (L.kind == NET_RES_END)
            printf(", \"projection\": %s, \"projection_stride\": %d",
                   L.projection ? "true" : "false", L.proj_stride);
        printf("}");
    }
    printf("\n], \"totals\": {\"params\": %lld, \"buffers\": %lld, \"flops_inference\": %lld, "
           "\"flops_training\": %lld, \"activation_floats\": %lld, "
           "\"activation_peak_floats\": %lld}}\n",
           (long long)t->params, (long long)t->buffers, (long long)t->flops_infer,
           (long long)t->flops_train, (long long)t->act_total, (long long)t->act_peak);
}

int cli_arch(int argc, char **argv)
{
    const char *input_text = "1x7001", *format = "text";
    long long classes = 83;
    char *spec_text = NULL, *canon = NULL;
    size_t spec_len = 0;
    net_spec *spec = NULL;
    net_shape input;
    net_spec_totals totals;
    pid_error err;
    int rc = 1;

    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        if (!strcmp(o, "-h") || !strcmp(o, "--help")) {
            usage_arch(stdout);
            rc = 0;
            goto done;
        }
        if (!strcmp(o, "--input") || !strcmp(o, "--classes") || !strcmp(o, "--format")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "phaseid arch: %s needs a value\n", o);
                rc = 2;
                goto done;
            }
            const char *v = argv[++i];
            if (!strcmp(o, "--input")) {
                input_text = v;
            } else if (!strcmp(o, "--format")) {
                format = v;
            } else {
                char *end;
                classes = strtoll(v, &end, 10);
                if (*end || end == v || classes < 1 || classes > 1000000) {
                    fprintf(stderr, "phaseid arch: --classes '%s': expected 1..1000000\n", v);
                    rc = 2;
                    goto done;
                }
            }
            continue;
        }
        if (o[0] == '-' && o[1] == '-') {
            fprintf(stderr, "phaseid arch: unknown option '%s' (see --help)\n", o);
            rc = 2;
            goto done;
        }
        /* A spec word: join with blanks. */
        size_t add = strlen(o);
        char *ns = realloc(spec_text, spec_len + add + 2);
        if (!ns) {
            fprintf(stderr, "phaseid arch: out of memory\n");
            goto done;
        }
        spec_text = ns;
        if (spec_len) spec_text[spec_len++] = ' ';
        memcpy(spec_text + spec_len, o, add + 1);
        spec_len += add;
    }
    if (strcmp(format, "text") && strcmp(format, "json")) {
        fprintf(stderr, "phaseid arch: --format '%s': expected text or json\n", format);
        rc = 2;
        goto done;
    }
    if (net_spec_parse_shape(input_text, &input, &err)) {
        fprintf(stderr, "phaseid arch: %s\n", err.msg);
        rc = 2;
        goto done;
    }
    if (net_spec_parse(spec_text ? spec_text : NET_SPEC_DEFAULT_XRD, &spec, &err) ||
        net_spec_build(spec, &input, classes, &err) || net_spec_totals_get(spec, &totals, &err) ||
        net_spec_canonical(spec, &canon, &err)) {
        fprintf(stderr, "phaseid arch: %s\n", err.msg);
        goto done;
    }
    if (!strcmp(format, "json"))
        print_json(spec, canon, &input, &totals);
    else
        print_text(spec, canon, &input, &totals);
    rc = 0;
done:
    free(canon);
    free(spec_text);
    net_spec_destroy(spec);
    return rc;
}
