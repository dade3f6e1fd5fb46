/* Network instances (models/net.h): binds a built spec to a backend, lays out
 * the flat parameter / gradient / AdamW arrays and the activation buffers, and
 * runs forward, loss + backward and AdamW through the ops of kernels/nn.h. */
#include "core/clock.h"
#include "models/net.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/rng.h"
#include "kernels/nn.h"

#define NET_BN_EPS 1e-5f
#define NET_BN_MOMENTUM 0.1f

/* Per-layer runtime data. Pointers point into allocations owned by the net. */
typedef struct {
    net_layer_info L;
    int in_t, out_t, skip_t; /* tensor ids (0 = the network input); skip_t: RES_END */
    int64_t in_count, out_count;
    net_shape skip_shape;  /* RES_END: shape of the skip input */
    size_t w_off, b_off;   /* weights (decayed region) and bias / gamma+beta (no decay) */
    size_t w2_off, b2_off; /* head: the fractions dense */
    size_t buf_off;        /* BN: running mean at buf_off, var at buf_off + c */
    uint64_t drop_seed;
    float *save_mean, *save_rstd; /* BN, workspace */
    float *proj_out;              /* RES_END with projection, workspace */
    int32_t *argmax;              /* max pools, int workspace */
} net_layer_rt;

typedef struct net_infer net_infer;

struct net {
    pid_backend *be; /* borrowed */
    int max_batch;
    int plan_batch; /* frames per kernel call, for the int32 size checks */
    net_infer *inf; /* inference-only nets (net_create_infer); NULL when training */
    uint64_t seed;
    size_t n_layers;
    net_layer_rt *ly; /* host, owned */
    /* Tensors: 0 is the input, then one per layer that makes a new value;
     * flatten and res( reuse their input's tensor (same buffer, no copy).
     * act[0] is the caller's x, borrowed from net_forward until the next
     * net_loss_backward; grad[0] is never computed (NULL). */
    int n_tensors;
    float **act, **grad; /* host arrays of backend pointers into ws */
    int64_t *tcount;     /* values per frame of each tensor */
    int *gset;           /* backward: tensor gradient written yet? */
    /* One backend allocation each (rule 6), owned by the net. */
    float *params, *grads, *m, *v, *bufs;
    size_t n_params, n_decay, n_bufs;
    /* Everything else on the backend: activations, their gradients, scratch. */
    float *ws;
    int32_t *iws;
    float *scratch, *work, *lossbuf, *dfrac, *dfrac_raw, *wscale, *zeros, *frac_logits, *input_buf;
    float *host_loss; /* host, max_batch */
    int64_t in_count, n_classes;
    int fractions, head_sigmoid;
    int last_batch, last_training;
    uint64_t fwd_count;
    int t_step;
};

/* ------------------------------------------------------------ helpers */

static size_t i64z(int64_t v)
{
    return (size_t)v;
}

/* k_nn_conv for a conv layer (or a 1x1 projection with stride ps when proj). */
static k_nn_conv conv_shape(const net_layer_rt *r, int batch, int proj)
{
    k_nn_conv s;
    memset(&s, 0, sizeof s);
    const net_shape *in = proj ? &r->skip_shape : &r->L.in;
    s.n = batch;
    s.c_in = (int)in->c;
    s.h_in = in->rank == 2 ? (int)in->h : 1;
    s.w_in = (int)in->w;
    s.c_out = (int)r->L.out.c;
    if (proj) {
        s.k_h = s.k_w = 1;
        s.stride_h = in->rank == 2 ? r->L.proj_stride : 1;
        s.stride_w = r->L.proj_stride;
        s.dil_h = s.dil_w = 1;
        return s;
    }
    int two = r->L.kind == NET_CONV2D;
    s.k_w = r->L.kernel;
    s.k_h = two ? r->L.kernel : 1;
    s.stride_w = r->L.stride;
    s.stride_h = two ? r->L.stride : 1;
    s.dil_w = r->L.dilation;
    s.dil_h = two ? r->L.dilation : 1;
    s.pad_w = r->L.pad_left;
    s.pad_h = two ? r->L.pad_top : 0;
    return s;
}

static k_nn_pool pool_shape(const net_layer_rt *r, int batch)
{
    int two = r->L.kind == NET_MAXPOOL2D || r->L.kind == NET_AVGPOOL2D;
    k_nn_pool s;
    s.n = batch;
    s.c = (int)r->L.in.c;
    s.h_in = two ? (int)r->L.in.h : 1;
    s.w_in = (int)r->L.in.w;
    s.k_w = r->L.kernel;
    s.k_h = two ? r->L.kernel : 1;
    s.stride_w = r->L.stride;
    s.stride_h = two ? r->L.stride : 1;
    return s;
}

/* Backend copy: memcpy on the CPU; on CUDA the dropout op with p = 0, which
 * is documented to copy (backend.h has no device-to-device copy). */
static pid_status dev_copy(net *n, const float *src, float *dst, size_t count, pid_error *err)
{
    if (pid_backend_kind(n->be) == PID_DEVICE_CPU) {
        memcpy(dst, src, sizeof(float) * count);
        return PID_OK;
    }
    return k_nn_dropout_forward(n->be, src, dst, count, 0.0f, 0, 0, err);
}

/* Backward accumulation: a layer writes the gradient of its input tensor t
 * into acc_dst(t): the tensor's own gradient buffer when nothing has written
 * it yet in this backward, else the scratch buffer, which acc_done adds in.
 * Tensor 0 (the network input) needs no gradient: NULL. */
static float *acc_dst(net *n, int t)
{
    if (t == 0) return NULL;
    return n->gset[t] ? n->scratch : n->grad[t];
}

static pid_status acc_done(net *n, int t, const float *dst, size_t count, pid_error *err)
{
    if (t == 0) return PID_OK;
    if (dst == n->scratch) return k_nn_add(n->be, n->grad[t], n->scratch, n->grad[t], count, err);
    n->gset[t] = 1;
    return PID_OK;
}

/* Add an existing gradient g into tensor t's gradient. */
static pid_status acc_add(net *n, int t, const float *g, size_t count, pid_error *err)
{
    if (t == 0) return PID_OK;
    if (!n->gset[t]) {
        n->gset[t] = 1;
        return dev_copy(n, g, n->grad[t], count, err);
    }
    return k_nn_add(n->be, n->grad[t], g, n->grad[t], count, err);
}

/* Host-side parameter initialization. */
static void init_normal(float *p, size_t count, double std, pid_rng *g)
{
    for (size_t i = 0; i < count; i++)
        p[i] = (float)(std * pid_rng_normal(g));
}

/* ------------------------------------------------------------ create */

/* Assign tensors and parameter offsets; check what the kernels support. */
static pid_status plan_layers(net *n, const net_spec *spec, pid_error *err)
{
    int stack[NET_SPEC_MAX_DEPTH + 1], ns = 0, cur = 0;
    size_t nA = 0, nB = 0, nbuf = 0;
    n->tcount[0] = n->in_count;
    n->n_tensors = 1;
    for (size_t i = 0; i < n->n_layers; i++) {
        net_layer_rt *r = &n->ly[i];
        pid_status st = net_spec_layer(spec, i, &r->L, err);
        if (st) return st;
        const net_layer_info *L = &r->L;
        r->in_t = cur;
        r->in_count = net_spec_shape_count(&L->in);
        r->out_count = net_spec_shape_count(&L->out);
        r->drop_seed = pid_rng_mix(n->seed, (uint64_t)i + 1);
        if (r->in_count > INT32_MAX / 4 || r->out_count > INT32_MAX / 4 ||
            r->out_count * n->plan_batch > INT32_MAX)
            return pid_fail(err, PID_ERR_UNSUPPORTED,
                            "net: layer %zu (%s): tensor too large for batches of %d", i, L->text,
                            n->plan_batch);
        switch (L->kind) {
        case NET_CONV1D:
        case NET_CONV2D: {
            if (L->pad_left != L->pad_right || L->pad_top != L->pad_bottom)
                return pid_fail(err, PID_ERR_UNSUPPORTED,
                                "net: layer %zu (%s, column %d): asymmetric padding (%d left, %d "
                                "right) is not supported by the convolution kernels; use an odd "
                                "kernel span or explicit pP",
                                i, L->text, L->column, L->pad_left, L->pad_right);
            int64_t k = L->kind == NET_CONV2D ? (int64_t)L->kernel * L->kernel : L->kernel;
            r->w_off = nA;
            nA += i64z(L->units * L->in.c * k);
            r->b_off = nB;
            nB += i64z(L->units);
            break;
        }
        case NET_DENSE:
            r->w_off = nA;
            nA += i64z(L->units * r->in_count);
            r->b_off = nB;
            nB += i64z(L->units);
            break;
        case NET_BN:
            r->b_off = nB;
            nB += 2 * i64z(L->in.c);
            r->buf_off = nbuf;
            nbuf += 2 * i64z(L->in.c);
            break;
        case NET_HEAD:
            r->w_off = nA;
            nA += i64z(n->n_classes * r->in_count);
            r->b_off = nB;
            nB += i64z(n->n_classes);
            if (L->fractions) {
                r->w2_off = nA;
                nA += i64z(n->n_classes * r->in_count);
                r->b2_off = nB;
                nB += i64z(n->n_classes);
            }
            n->fractions = L->fractions;
            n->head_sigmoid = L->head == NET_HEAD_SIGMOID;
            break;
        case NET_RES_BEGIN:
            if (ns > NET_SPEC_MAX_DEPTH)
                return pid_fail(err, PID_ERR_INTERNAL, "net: residual nesting too deep");
            stack[ns++] = cur;
            break;
        case NET_RES_END:
            if (ns <= 0 || L->res_begin < 0 || (size_t)L->res_begin >= i)
                return pid_fail(err, PID_ERR_INTERNAL, "net: unbalanced residual block");
            r->skip_t = stack[--ns];
            r->skip_shape = n->ly[L->res_begin].L.in;
            if (L->projection) {
                int64_t xin = net_spec_shape_count(&r->skip_shape);
                r->w_off = nA;
                nA += i64z(L->out.rank == 0 ? xin * L->out.c : r->skip_shape.c * L->out.c);
                r->b_off = nB;
                nB += i64z(L->out.c);
            }
            break;
        default:
            break;
        }
        if (L->kind == NET_FLATTEN || L->kind == NET_RES_BEGIN) {
            r->out_t = cur;
        } else {
            r->out_t = n->n_tensors;
            n->tcount[n->n_tensors++] = r->out_count;
        }
        cur = r->out_t;
    }
    /* Region B (no weight decay) follows region A. */
    for (size_t i = 0; i < n->n_layers; i++) {
        n->ly[i].b_off += nA;
        n->ly[i].b2_off += nA;
    }
    n->n_decay = nA;
    n->n_params = nA + nB;
    n->n_bufs = nbuf;
    return PID_OK;
}

/* Workspace layout: pass 1 (base NULL) counts floats and ints, pass 2 assigns. */
static void layout_ws(net *n, float *fbase, int32_t *ibase, size_t *nf, size_t *ni)
{
    size_t f = 0, k = 0, B = (size_t)n->max_batch, maxt = 0, work = 1;
#define TAKE(ptr, cnt)                                                                             \
    do {                                                                                           \
        if (fbase) (ptr) = fbase + f;                                                              \
        f += (cnt);                                                                                \
    } while (0)
    for (int t = 1; t < n->n_tensors; t++) {
        size_t c = B * i64z(n->tcount[t]);
        TAKE(n->act[t], c);
        TAKE(n->grad[t], c);
    }
    for (int t = 0; t < n->n_tensors; t++)
        if (B * i64z(n->tcount[t]) > maxt) maxt = B * i64z(n->tcount[t]);
    for (size_t i = 0; i < n->n_layers; i++) {
        net_layer_rt *r = &n->ly[i];
        switch (r->L.kind) {
        case NET_BN:
            TAKE(r->save_mean, i64z(r->L.in.c));
            TAKE(r->save_rstd, i64z(r->L.in.c));
            break;
        case NET_CONV1D:
        case NET_CONV2D: {
            k_nn_conv s = conv_shape(r, n->max_batch, 0);
            size_t w = k_nn_conv_work_floats(&s);
            if (w > work) work = w;
            break;
        }
        case NET_RES_END:
            if (r->L.projection) {
                TAKE(r->proj_out, B * i64z(r->out_count));
                if (r->L.out.rank != 0) {
                    k_nn_conv s = conv_shape(r, n->max_batch, 1);
                    size_t w = k_nn_conv_work_floats(&s);
                    if (w > work) work = w;
                }
            }
            break;
        case NET_MAXPOOL1D:
        case NET_MAXPOOL2D:
            if (ibase) r->argmax = ibase + k;
            k += B * i64z(r->out_count);
            break;
        default:
            break;
        }
    }
    size_t nc = B * i64z(n->n_classes);
    TAKE(n->scratch, maxt);
    TAKE(n->work, work);
    TAKE(n->lossbuf, B);
    TAKE(n->dfrac, nc);
    TAKE(n->dfrac_raw, nc);
    TAKE(n->wscale, 1);
    TAKE(n->zeros, nc);
    TAKE(n->frac_logits, nc);
    TAKE(n->input_buf, B * i64z(n->in_count));
#undef TAKE
    *nf = f;
    *ni = k ? k : 1;
}

/* Initial parameters and buffers on the host (see net.h for the scheme). */
static void init_host(const net *n, float *p, float *bufs)
{
    for (size_t i = 0; i < n->n_layers; i++) {
        const net_layer_rt *r = &n->ly[i];
        const net_layer_info *L = &r->L;
        pid_rng g;
        pid_rng_init(&g, n->seed, (uint64_t)i);
        switch (L->kind) {
        case NET_CONV1D:
        case NET_CONV2D: {
            int64_t k = L->kind == NET_CONV2D ? (int64_t)L->kernel * L->kernel : L->kernel;
            int64_t fan_in = L->in.c * k;
            init_normal(p + r->w_off, i64z(L->units * fan_in), sqrt(2.0 / (double)fan_in), &g);
            memset(p + r->b_off, 0, sizeof(float) * i64z(L->units));
            break;
        }
        case NET_DENSE:
            init_normal(p + r->w_off, i64z(L->units * r->in_count), sqrt(2.0 / (double)r->in_count),
                        &g);
            memset(p + r->b_off, 0, sizeof(float) * i64z(L->units));
            break;
        case NET_BN:
            for (int64_t c = 0; c < L->in.c; c++) {
                p[r->b_off + i64z(c)] = 1.0f;
                p[r->b_off + i64z(L->in.c + c)] = 0.0f;
                bufs[r->buf_off + i64z(c)] = 0.0f;
                bufs[r->buf_off + i64z(L->in.c + c)] = 1.0f;
            }
            break;
        case NET_HEAD: {
            double sd = sqrt(2.0 / (double)(r->in_count + n->n_classes));
            init_normal(p + r->w_off, i64z(n->n_classes * r->in_count), sd, &g);
            memset(p + r->b_off, 0, sizeof(float) * i64z(n->n_classes));
            if (L->fractions) {
                init_normal(p + r->w2_off, i64z(n->n_classes * r->in_count), sd, &g);
                memset(p + r->b2_off, 0, sizeof(float) * i64z(n->n_classes));
            }
            break;
        }
        case NET_RES_END:
            if (L->projection) {
                int64_t fan_in =
                    L->out.rank == 0 ? net_spec_shape_count(&r->skip_shape) : r->skip_shape.c;
                init_normal(p + r->w_off, i64z(fan_in * L->out.c), sqrt(2.0 / (double)fan_in), &g);
                memset(p + r->b_off, 0, sizeof(float) * i64z(L->out.c));
            }
            break;
        default:
            break;
        }
    }
}

/* Upload `count` zeros to dst (host zero buffer of at least count floats). */
static pid_status upload_zeros(net *n, float *dst, size_t count, const float *z, pid_error *err)
{
    return pid_backend_upload(n->be, dst, z, sizeof(float) * count, err);
}

/* The part of creation both kinds of net share: the host arrays, the layer
 * plan and parameter layout. plan_batch: frames per kernel call. On failure
 * *out is NULL and everything is freed. */
static pid_status net_create_base(net **out, const net_spec *spec, pid_backend *be, int max_batch,
                                  int plan_batch, uint64_t seed, const char *who, pid_error *err)
{
    pid_status st = PID_OK;
    net *n = NULL;
    net_spec_totals tot;
    if (out) *out = NULL;
    if (!out || !spec || !be) return pid_fail(err, PID_ERR_ARG, "%s: NULL argument", who);
    if (max_batch < 1) return pid_fail(err, PID_ERR_ARG, "%s: max_batch must be >= 1", who);
    if (!net_spec_is_built(spec))
        return pid_fail(err, PID_ERR_ARG, "%s: the spec is not built (net_spec_build)", who);
    if ((st = net_spec_totals_get(spec, &tot, err))) return st;
    n = calloc(1, sizeof *n);
    if (!n) return pid_fail(err, PID_ERR_NOMEM, "%s: out of memory", who);
    n->be = be;
    n->max_batch = max_batch;
    n->plan_batch = plan_batch;
    n->seed = seed;
    n->n_classes = tot.n_classes;
    n->n_layers = net_spec_n_layers(spec);
    n->last_batch = -1;
    /* The input shape is layer 0's input. */
    n->ly = calloc(n->n_layers ? n->n_layers : 1, sizeof *n->ly);
    n->act = calloc(n->n_layers + 1, sizeof *n->act);
    n->grad = calloc(n->n_layers + 1, sizeof *n->grad);
    n->tcount = calloc(n->n_layers + 1, sizeof *n->tcount);
    n->gset = calloc(n->n_layers + 1, sizeof *n->gset);
    n->host_loss = calloc((size_t)max_batch, sizeof(float));
    if (!n->ly || !n->act || !n->grad || !n->tcount || !n->gset || !n->host_loss) {
        st = pid_fail(err, PID_ERR_NOMEM, "%s: out of memory", who);
        goto fail;
    }
    if (n->n_layers == 0) {
        st = pid_fail(err, PID_ERR_ARG, "%s: empty spec", who);
        goto fail;
    }
    {
        net_layer_info first;
        if ((st = net_spec_layer(spec, 0, &first, err))) goto fail;
        n->in_count = net_spec_shape_count(&first.in);
    }
    if ((st = plan_layers(n, spec, err))) goto fail;
    if ((int64_t)n->n_params != tot.params || (int64_t)n->n_bufs != tot.buffers) {
        st = pid_fail(err, PID_ERR_INTERNAL,
                      "%s: parameter layout (%zu + %zu buffers) disagrees with the spec "
                      "(%lld + %lld)",
                      who, n->n_params, n->n_bufs, (long long)tot.params, (long long)tot.buffers);
        goto fail;
    }
    *out = n;
    return PID_OK;
fail:
    net_destroy(n);
    return st;
}

pid_status net_create(net **out, const net_spec *spec, pid_backend *be, int max_batch,
                      uint64_t seed, pid_error *err)
{
    net *n = NULL;
    float *hp = NULL, *hb = NULL, *hz = NULL;
    if (out) *out = NULL;
    if (!out) return pid_fail(err, PID_ERR_ARG, "net_create: NULL argument");
    pid_status st = net_create_base(&n, spec, be, max_batch, max_batch, seed, "net_create", err);
    if (st) return st;
    size_t nf = 0, ni = 0;
    layout_ws(n, NULL, NULL, &nf, &ni);
    size_t np = n->n_params ? n->n_params : 1, nb = n->n_bufs ? n->n_bufs : 1;
    size_t zmax = np > nb ? np : nb;
    size_t ncz = (size_t)max_batch * i64z(n->n_classes);
    if (ncz > zmax) zmax = ncz;
    hp = malloc(sizeof(float) * np);
    hb = malloc(sizeof(float) * nb);
    hz = calloc(zmax, sizeof(float));
    if (!hp || !hb || !hz) {
        st = pid_fail(err, PID_ERR_NOMEM, "net_create: out of memory");
        goto fail;
    }
    if ((st = pid_backend_alloc(be, (void **)&n->params, sizeof(float) * np, err)) ||
        (st = pid_backend_alloc(be, (void **)&n->grads, sizeof(float) * np, err)) ||
        (st = pid_backend_alloc(be, (void **)&n->m, sizeof(float) * np, err)) ||
        (st = pid_backend_alloc(be, (void **)&n->v, sizeof(float) * np, err)) ||
        (st = pid_backend_alloc(be, (void **)&n->bufs, sizeof(float) * nb, err)) ||
        (st = pid_backend_alloc(be, (void **)&n->ws, sizeof(float) * nf, err)) ||
        (st = pid_backend_alloc(be, (void **)&n->iws, sizeof(int32_t) * ni, err)))
        goto fail;
    layout_ws(n, n->ws, n->iws, &nf, &ni);
    memset(hp, 0, sizeof(float) * np);
    memset(hb, 0, sizeof(float) * nb);
    init_host(n, hp, hb);
    if ((st = pid_backend_upload(be, n->params, hp, sizeof(float) * np, err)) ||
        (st = pid_backend_upload(be, n->bufs, hb, sizeof(float) * nb, err)) ||
        (st = upload_zeros(n, n->grads, np, hz, err)) ||
        (st = upload_zeros(n, n->m, np, hz, err)) || (st = upload_zeros(n, n->v, np, hz, err)) ||
        (st = upload_zeros(n, n->zeros, ncz, hz, err)) || (st = pid_backend_sync(be, err)))
        goto fail;
    free(hp);
    free(hb);
    free(hz);
    *out = n;
    return PID_OK;
fail:
    free(hp);
    free(hb);
    free(hz);
    net_destroy(n);
    return st;
}

static void infer_free(net *n);
static pid_status infer_forward(net *n, const float *x, int batch, pid_error *err);

void net_destroy(net *n)
{
    if (!n) return;
    infer_free(n);
    if (n->be) {
        pid_backend_free(n->be, n->params);
        pid_backend_free(n->be, n->grads);
        pid_backend_free(n->be, n->m);
        pid_backend_free(n->be, n->v);
        pid_backend_free(n->be, n->bufs);
        pid_backend_free(n->be, n->ws);
        pid_backend_free(n->be, n->iws);
    }
    free(n->ly);
    free(n->act);
    free(n->grad);
    free(n->tcount);
    free(n->gset);
    free(n->host_loss);
    free(n);
}

/* ------------------------------------------------------------ forward */

static pid_status layer_forward(net *n, net_layer_rt *r, int b, int training, pid_error *err)
{
    pid_backend *be = n->be;
    const net_layer_info *L = &r->L;
    const float *x = n->act[r->in_t];
    float *y = n->act[r->out_t];
    float *P = n->params;
    size_t cnt = (size_t)b * i64z(r->in_count);
    switch (L->kind) {
    case NET_CONV1D:
    case NET_CONV2D: {
        k_nn_conv s = conv_shape(r, b, 0);
        return k_nn_conv_forward(be, &s, x, P + r->w_off, P + r->b_off, y, n->work, err);
    }
    case NET_MAXPOOL1D:
    case NET_MAXPOOL2D: {
        k_nn_pool s = pool_shape(r, b);
        return k_nn_maxpool_forward(be, &s, x, y, r->argmax, err);
    }
    case NET_AVGPOOL1D:
    case NET_AVGPOOL2D: {
        k_nn_pool s = pool_shape(r, b);
        return k_nn_avgpool_forward(be, &s, x, y, err);
    }
    case NET_GPOOL:
        return k_nn_global_avgpool_forward(be, x, y, b, (int)L->in.c, (int)(r->in_count / L->in.c),
                                           err);
    case NET_DENSE:
        return k_nn_dense_forward(be, x, P + r->w_off, P + r->b_off, y, b, (int)r->in_count,
                                  (int)L->units, err);
    case NET_RELU:
        return k_nn_relu_forward(be, x, y, cnt, err);
    case NET_GELU:
        return k_nn_gelu_forward(be, x, y, cnt, err);
    case NET_BN: {
        int c = (int)L->in.c, l = (int)(r->in_count / L->in.c);
        const float *gamma = P + r->b_off, *beta = gamma + c;
        float *rm = n->bufs + r->buf_off, *rv = rm + c;
        if (training)
            return k_nn_batchnorm_forward_train(be, x, gamma, beta, y, b, c, l, NET_BN_EPS,
                                                NET_BN_MOMENTUM, rm, rv, r->save_mean, r->save_rstd,
                                                err);
        return k_nn_batchnorm_forward_infer(be, x, gamma, beta, rm, rv, y, b, c, l, NET_BN_EPS,
                                            err);
    }
    case NET_DROPOUT:
        if (training && L->p_drop > 0.0)
            return k_nn_dropout_forward(be, x, y, cnt, (float)L->p_drop, r->drop_seed, n->fwd_count,
                                        err);
        return dev_copy(n, x, y, cnt, err);
    case NET_FLATTEN:
    case NET_RES_BEGIN:
        return PID_OK; /* same tensor */
    case NET_RES_END: {
        const float *skip = n->act[r->skip_t];
        size_t ocnt = (size_t)b * i64z(r->out_count);
        pid_status st;
        if (L->projection) {
            if (L->out.rank == 0) {
                st = k_nn_dense_forward(be, skip, P + r->w_off, P + r->b_off, r->proj_out, b,
                                        (int)net_spec_shape_count(&r->skip_shape), (int)L->out.c,
                                        err);
            } else {
                k_nn_conv s = conv_shape(r, b, 1);
                st = k_nn_conv_forward(be, &s, skip, P + r->w_off, P + r->b_off, r->proj_out,
                                       n->work, err);
            }
            if (st) return st;
            skip = r->proj_out;
        }
        return k_nn_add(be, skip, x, y, ocnt, err);
    }
    case NET_HEAD: {
        pid_status st = k_nn_dense_forward(be, x, P + r->w_off, P + r->b_off, y, b,
                                           (int)r->in_count, (int)n->n_classes, err);
        if (st || !L->fractions) return st;
        return k_nn_dense_forward(be, x, P + r->w2_off, P + r->b2_off, n->frac_logits, b,
                                  (int)r->in_count, (int)n->n_classes, err);
    }
    default:
        return pid_fail(err, PID_ERR_INTERNAL, "net: unknown layer kind %d", (int)L->kind);
    }
}

pid_status net_forward(net *n, const float *x, int batch, int training, pid_error *err)
{
    if (!n || !x) return pid_fail(err, PID_ERR_ARG, "net_forward: NULL argument");
    if (batch < 1 || batch > n->max_batch)
        return pid_fail(err, PID_ERR_ARG, "net_forward: batch %d outside 1..max_batch %d", batch,
                        n->max_batch);
    if (n->inf) {
        if (training)
            return pid_fail(err, PID_ERR_UNSUPPORTED,
                            "net_forward: an inference net cannot run a training forward");
        return infer_forward(n, x, batch, err);
    }
    n->last_batch = -1;
    n->act[0] = (float *)x; /* borrowed for this call and the next backward */
    if (training) n->fwd_count++;
    for (size_t i = 0; i < n->n_layers; i++) {
        pid_status st = layer_forward(n, &n->ly[i], batch, training, err);
        if (st) {
            pid_error_prefix(err, "net_forward: layer %zu (%s): ", i, n->ly[i].L.text);
            return st;
        }
    }
    n->last_batch = batch;
    n->last_training = training;
    return PID_OK;
}

/* ------------------------------------------------------------ backward */

static pid_status layer_backward(net *n, net_layer_rt *r, int b, int have_frac, pid_error *err)
{
    pid_backend *be = n->be;
    const net_layer_info *L = &r->L;
    const float *x = n->act[r->in_t];
    const float *dy = n->grad[r->out_t];
    const float *P = n->params;
    float *G = n->grads;
    size_t cnt = (size_t)b * i64z(r->in_count);
    float *dx = (L->kind == NET_FLATTEN || L->kind == NET_RES_BEGIN) ? NULL : acc_dst(n, r->in_t);
    pid_status st = PID_OK;
    switch (L->kind) {
    case NET_CONV1D:
    case NET_CONV2D: {
        k_nn_conv s = conv_shape(r, b, 0);
        st = k_nn_conv_backward(be, &s, x, P + r->w_off, dy, dx, G + r->w_off, G + r->b_off,
                                n->work, err);
        break;
    }
    case NET_MAXPOOL1D:
    case NET_MAXPOOL2D: {
        k_nn_pool s = pool_shape(r, b);
        if (dx) st = k_nn_maxpool_backward(be, &s, dy, r->argmax, dx, err);
        break;
    }
    case NET_AVGPOOL1D:
    case NET_AVGPOOL2D: {
        k_nn_pool s = pool_shape(r, b);
        if (dx) st = k_nn_avgpool_backward(be, &s, dy, dx, err);
        break;
    }
    case NET_GPOOL:
        if (dx)
            st = k_nn_global_avgpool_backward(be, dy, dx, b, (int)L->in.c,
                                              (int)(r->in_count / L->in.c), err);
        break;
    case NET_DENSE:
        st = k_nn_dense_backward(be, x, P + r->w_off, dy, dx, G + r->w_off, G + r->b_off, b,
                                 (int)r->in_count, (int)L->units, err);
        break;
    case NET_RELU:
        if (dx) st = k_nn_relu_backward(be, x, dy, dx, cnt, err);
        break;
    case NET_GELU:
        if (dx) st = k_nn_gelu_backward(be, x, dy, dx, cnt, err);
        break;
    case NET_BN: {
        int c = (int)L->in.c, l = (int)(r->in_count / L->in.c);
        st = k_nn_batchnorm_backward(be, x, P + r->b_off, r->save_mean, r->save_rstd, dy, dx,
                                     G + r->b_off, G + r->b_off + c, b, c, l, err);
        break;
    }
    case NET_DROPOUT:
        if (!dx) break;
        if (L->p_drop > 0.0)
            st = k_nn_dropout_backward(be, dy, dx, cnt, (float)L->p_drop, r->drop_seed,
                                       n->fwd_count, err);
        else
            st = dev_copy(n, dy, dx, cnt, err);
        break;
    case NET_FLATTEN:
    case NET_RES_BEGIN:
        return PID_OK;
    case NET_RES_END: {
        size_t ocnt = (size_t)b * i64z(r->out_count);
        /* Block output: the add passes dy through unchanged. */
        if ((st = acc_add(n, r->in_t, dy, ocnt, err))) return st;
        if (!L->projection) return acc_add(n, r->skip_t, dy, ocnt, err);
        float *dskip = acc_dst(n, r->skip_t);
        size_t scnt = (size_t)b * i64z(net_spec_shape_count(&r->skip_shape));
        if (L->out.rank == 0) {
            st = k_nn_dense_backward(be, n->act[r->skip_t], P + r->w_off, dy, dskip, G + r->w_off,
                                     G + r->b_off, b, (int)net_spec_shape_count(&r->skip_shape),
                                     (int)L->out.c, err);
        } else {
            k_nn_conv s = conv_shape(r, b, 1);
            st = k_nn_conv_backward(be, &s, n->act[r->skip_t], P + r->w_off, dy, dskip,
                                    G + r->w_off, G + r->b_off, n->work, err);
        }
        if (st) return st;
        return acc_done(n, r->skip_t, dskip, scnt, err);
    }
    case NET_HEAD: {
        int in = (int)r->in_count, c = (int)n->n_classes;
        st = k_nn_dense_backward(be, x, P + r->w_off, dy, dx, G + r->w_off, G + r->b_off, b, in, c,
                                 err);
        if (st) return st;
        if ((st = acc_done(n, r->in_t, dx, cnt, err))) return st;
        if (!L->fractions) return PID_OK;
        /* Without fraction targets the fractions dense gets zero gradients. */
        const float *dfr = have_frac ? n->dfrac : n->zeros;
        float *dx2 = have_frac ? acc_dst(n, r->in_t) : NULL;
        st = k_nn_dense_backward(be, x, P + r->w2_off, dfr, dx2, G + r->w2_off, G + r->b2_off, b,
                                 in, c, err);
        if (st || !dx2) return st;
        return acc_done(n, r->in_t, dx2, cnt, err);
    }
    default:
        return pid_fail(err, PID_ERR_INTERNAL, "net: unknown layer kind %d", (int)L->kind);
    }
    if (st) return st;
    return dx ? acc_done(n, r->in_t, dx, cnt, err) : PID_OK;
}

/* Download the per-sample losses and return their mean in *mean. */
static pid_status mean_loss(net *n, int b, double *mean, pid_error *err)
{
    pid_status st =
        pid_backend_download(n->be, n->host_loss, n->lossbuf, sizeof(float) * (size_t)b, err);
    if (st) return st;
    if ((st = pid_backend_sync(n->be, err))) return st;
    double s = 0.0;
    for (int i = 0; i < b; i++)
        s += n->host_loss[i];
    *mean = s / b;
    return PID_OK;
}

pid_status net_loss_backward(net *n, const net_targets *t, int batch, double *loss, pid_error *err)
{
    pid_status st;
    double l_main = 0.0, l_frac = 0.0;
    if (!n || !t) return pid_fail(err, PID_ERR_ARG, "net_loss_backward: NULL argument");
    if (n->inf)
        return pid_fail(err, PID_ERR_UNSUPPORTED,
                        "net_loss_backward: an inference net has no "
                        "gradients");
    if (batch < 1 || batch > n->max_batch)
        return pid_fail(err, PID_ERR_ARG, "net_loss_backward: batch %d outside 1..max_batch %d",
                        batch, n->max_batch);
    if (n->last_batch != batch || !n->last_training)
        return pid_fail(err, PID_ERR_ARG,
                        "net_loss_backward: needs a training forward of the same batch (%d) first",
                        batch);
    const net_layer_rt *head = &n->ly[n->n_layers - 1];
    float *logits = n->act[head->out_t], *dlogits = n->grad[head->out_t];
    int c = (int)n->n_classes;
    if (n->head_sigmoid) {
        if (!t->targets)
            return pid_fail(err, PID_ERR_ARG, "net_loss_backward: a sigmoid head needs targets");
        st = k_nn_sigmoid_bce(n->be, logits, t->targets, n->lossbuf, dlogits, batch, c, err);
    } else if (t->labels) {
        st = k_nn_softmax_xent(n->be, logits, t->labels, n->lossbuf, dlogits, batch, c, err);
    } else if (t->targets) {
        st = k_nn_softmax_xent_soft(n->be, logits, t->targets, n->lossbuf, dlogits, batch, c, err);
    } else {
        return pid_fail(err, PID_ERR_ARG, "net_loss_backward: no labels or targets");
    }
    if (st || (st = mean_loss(n, batch, &l_main, err))) return st;
    int have_frac = n->fractions && t->fractions;
    float fw = t->fraction_weight == 0.0f ? 1.0f : t->fraction_weight;
    if (have_frac) {
        if (!(fw > 0.0f) || !isfinite(fw))
            return pid_fail(err, PID_ERR_ARG,
                            "net_loss_backward: fraction_weight must be finite and > 0");
        st = k_nn_softmax_xent_soft(n->be, n->frac_logits, t->fractions, n->lossbuf, n->dfrac_raw,
                                    batch, c, err);
        if (st || (st = mean_loss(n, batch, &l_frac, err))) return st;
        /* dfrac = fw * dfrac_raw, as a [batch c, 1] x [1, 1] dense product
         * (nn.h has no scale op). */
        if ((st = pid_backend_upload(n->be, n->wscale, &fw, sizeof fw, err)) ||
            (st = k_nn_dense_forward(n->be, n->dfrac_raw, n->wscale, NULL, n->dfrac, batch * c, 1,
                                     1, err)))
            return st;
    }
    memset(n->gset, 0, sizeof(int) * (size_t)n->n_tensors);
    n->gset[head->out_t] = 1;
    for (size_t i = n->n_layers; i-- > 0;) {
        st = layer_backward(n, &n->ly[i], batch, have_frac, err);
        if (st) {
            pid_error_prefix(err, "net_loss_backward: layer %zu (%s): ", i, n->ly[i].L.text);
            return st;
        }
    }
    if ((st = pid_backend_sync(n->be, err))) return st;
    if (loss) *loss = l_main + (double)fw * l_frac;
    return PID_OK;
}

pid_status net_step(net *n, float lr, float weight_decay, pid_error *err)
{
    if (!n) return pid_fail(err, PID_ERR_ARG, "net_step: NULL net");
    if (n->inf)
        return pid_fail(err, PID_ERR_UNSUPPORTED, "net_step: an inference net has no optimizer");
    if (!(lr >= 0.0f) || !(weight_decay >= 0.0f) || !isfinite(lr) || !isfinite(weight_decay))
        return pid_fail(err, PID_ERR_ARG, "net_step: lr and weight_decay must be finite, >= 0");
    k_nn_adamw hp = {lr, 0.9f, 0.999f, 1e-8f, weight_decay};
    n->t_step++;
    pid_status st = PID_OK;
    if (n->n_decay)
        st = k_nn_adamw_step(n->be, &hp, n->t_step, n->params, n->grads, n->m, n->v, n->n_decay,
                             err);
    hp.weight_decay = 0.0f;
    if (!st && n->n_params > n->n_decay)
        st = k_nn_adamw_step(n->be, &hp, n->t_step, n->params + n->n_decay, n->grads + n->n_decay,
                             n->m + n->n_decay, n->v + n->n_decay, n->n_params - n->n_decay, err);
    return st;
}

/* ------------------------------------------------------------ inference */

/* Inference nets run a list of ops, each one layer with what follows it
 * fused in (folded BN, residual add, activation, pooling), over tensors that
 * live in a few per-worker slots reused along the net. */

#define NET_INFER_MAX_CHUNK 64
#define NET_INFER_MAX_THREADS 64
/* Automatic chunk: frames whose slot buffers fit in about this many bytes
 * (an L2-sized working set per worker). */
#define NET_INFER_CHUNK_BYTES (1u << 20)

typedef enum {
    IOP_CONV,
    IOP_DENSE,
    IOP_HEAD,
    IOP_MAXPOOL,
    IOP_AVGPOOL,
    IOP_GPOOL,
    IOP_ACT,
    IOP_BN,
    IOP_ADD
} net_iop_kind;

typedef struct {
    net_iop_kind kind;
    int in_t, out_t, skip_t;          /* tensors (0 = network input; out_t -1 = the logits;
                                       * skip_t: ADD, or CONV with a fused residual add; -1) */
    int in_slot, out_slot, skip_slot; /* worker slots (-1: the network input / the logits) */
    int64_t in_count, out_count;      /* floats per frame */
    int64_t conv_out;                 /* CONV: floats per frame before the fused pool */
    k_nn_conv cs;                     /* CONV; ADD with a 1x1 conv projection (n set per call) */
    k_nn_pool ps;                     /* MAXPOOL / AVGPOOL (n set per call) */
    k_nn_act act;
    int pool;      /* CONV: fused max pool width, 1 none, K_NN_POOL_GLOBAL_AVG gpool */
    int proj;      /* ADD: 0 identity skip, 1 1x1 conv, 2 dense */
    int din, dout; /* DENSE, HEAD, dense projection */
    int c, l;      /* BN, GPOOL: channels and positions */
    int fractions; /* HEAD */
    int fold;      /* CONV / DENSE: layer index of the folded BN, -1 none */
    size_t w_off, b_off, w2_off, b2_off, buf_off; /* into params (folded) / bufs */
    int64_t flops;                                /* per frame */
    char name[192];
} net_iop;

/* One worker's buffers: pointers into the arena (backend memory). */
typedef struct {
    float **slot;    /* host array [n_slots] */
    float *work;     /* conv scratch */
    float *pre;      /* reference path: conv output before its pool */
    int32_t *argmax; /* max pool indices (k_nn_maxpool_forward writes them; unused) */
    double *op_s;    /* host [n_ops]: profile seconds */
} net_worker;

struct net_infer {
    net_iop *ops; /* host, owned */
    size_t n_ops;
    int n_slots;
    int64_t *slot_count; /* floats per frame of each slot */
    int n_workers, chunk, reference, profile;
    net_worker *wk;
    float *arena;    /* one backend allocation: logits, fraction logits, worker buffers */
    int32_t *iarena; /* one backend allocation: argmax scratch of every worker */
    float *logits, *frac_logits;
    float *input_buf; /* staging, allocated on first net_input_buffer (CPU) */
    size_t bytes;
};

static void infer_free(net *n)
{
    net_infer *I = n->inf;
    if (!I) return;
    if (n->be) {
        pid_backend_free(n->be, I->arena);
        pid_backend_free(n->be, I->iarena);
        pid_backend_free(n->be, I->input_buf);
    }
    if (I->wk)
        for (int w = 0; w < I->n_workers; w++) {
            free(I->wk[w].slot);
            free(I->wk[w].op_s);
        }
    free(I->wk);
    free(I->ops);
    free(I->slot_count);
    free(I);
    n->inf = NULL;
}

static void iop_name_add(net_iop *op, const char *text)
{
    size_t len = strlen(op->name);
    if (len + 1 >= sizeof op->name) return;
    snprintf(op->name + len, sizeof op->name - len, "%s%s", len ? "+" : "", text);
}

static int is_act(net_layer_kind k)
{
    return k == NET_RELU || k == NET_GELU;
}

/* The op list: one op per layer that computes something, with a following
 * BN folded into a conv/dense, the identity-skip add of a residual block
 * that the conv ends taken into the conv's epilogue, an activation fused
 * into conv/dense/add, and a max pool with window = stride (1-D) or a global
 * average pool fused into a conv. Layers are adjacent here only when one
 * consumes the other's output and nothing else does (a residual skip starts
 * at a "res(" between them). */
static pid_status infer_plan_ops(net *n, pid_error *err)
{
    net_infer *I = n->inf;
    int stack[NET_SPEC_MAX_DEPTH + 1], ns = 0, cur = 0, next_t = 1;
    const size_t nl = n->n_layers;
    I->ops = calloc(nl, sizeof *I->ops);
    if (!I->ops) return pid_fail(err, PID_ERR_NOMEM, "net_create_infer: out of memory");
    for (size_t i = 0; i < nl;) {
        const net_layer_rt *r = &n->ly[i];
        const net_layer_info *L = &r->L;
        if (L->kind == NET_FLATTEN || L->kind == NET_DROPOUT) { /* same values at inference */
            i++;
            continue;
        }
        if (L->kind == NET_RES_BEGIN) {
            if (ns > NET_SPEC_MAX_DEPTH)
                return pid_fail(err, PID_ERR_INTERNAL, "net: residual nesting too deep");
            stack[ns++] = cur;
            i++;
            continue;
        }
        net_iop *op = &I->ops[I->n_ops++];
        memset(op, 0, sizeof *op);
        op->in_t = cur;
        op->out_t = next_t++;
        op->skip_t = -1;
        op->in_count = r->in_count;
        op->fold = -1;
        op->pool = 1;
        op->act = K_NN_ACT_NONE;
        size_t last = i;
        switch (L->kind) {
        case NET_CONV1D:
        case NET_CONV2D:
        case NET_DENSE:
            op->kind = L->kind == NET_DENSE ? IOP_DENSE : IOP_CONV;
            op->w_off = r->w_off;
            op->b_off = r->b_off;
            if (op->kind == IOP_CONV) {
                op->cs = conv_shape(r, 1, 0);
                op->conv_out = r->out_count;
            } else {
                op->din = (int)r->in_count;
                op->dout = (int)L->units;
            }
            if (last + 1 < nl && n->ly[last + 1].L.kind == NET_BN) op->fold = (int)++last;
            /* A conv ending a residual block with an identity skip: the add
             * happens in the conv's epilogue, before the activation. */
            if (op->kind == IOP_CONV && last + 1 < nl && n->ly[last + 1].L.kind == NET_RES_END &&
                !n->ly[last + 1].L.projection) {
                if (ns <= 0)
                    return pid_fail(err, PID_ERR_INTERNAL, "net: unbalanced residual block");
                op->skip_t = stack[--ns];
                last++;
            }
            if (last + 1 < nl && is_act(n->ly[last + 1].L.kind)) {
                last++;
                op->act = n->ly[last].L.kind == NET_RELU ? K_NN_ACT_RELU : K_NN_ACT_GELU;
            }
            if (L->kind == NET_CONV1D && last + 1 < nl && n->ly[last + 1].L.kind == NET_MAXPOOL1D &&
                n->ly[last + 1].L.kernel == n->ly[last + 1].L.stride &&
                n->ly[last + 1].L.kernel > 1) {
                last++;
                op->pool = n->ly[last].L.kernel;
            } else if (op->kind == IOP_CONV && last + 1 < nl &&
                       n->ly[last + 1].L.kind == NET_GPOOL) {
                last++;
                op->pool = K_NN_POOL_GLOBAL_AVG;
            }
            break;
        case NET_HEAD:
            op->kind = IOP_HEAD;
            op->w_off = r->w_off;
            op->b_off = r->b_off;
            op->w2_off = r->w2_off;
            op->b2_off = r->b2_off;
            op->din = (int)r->in_count;
            op->dout = (int)n->n_classes;
            op->fractions = L->fractions;
            op->out_t = -1;
            break;
        case NET_MAXPOOL1D:
        case NET_MAXPOOL2D:
        case NET_AVGPOOL1D:
        case NET_AVGPOOL2D:
            op->kind =
                (L->kind == NET_MAXPOOL1D || L->kind == NET_MAXPOOL2D) ? IOP_MAXPOOL : IOP_AVGPOOL;
            op->ps = pool_shape(r, 1);
            break;
        case NET_GPOOL:
            op->kind = IOP_GPOOL;
            op->c = (int)L->in.c;
            op->l = (int)(r->in_count / L->in.c);
            break;
        case NET_RELU:
        case NET_GELU:
            op->kind = IOP_ACT;
            op->act = L->kind == NET_RELU ? K_NN_ACT_RELU : K_NN_ACT_GELU;
            break;
        case NET_BN:
            op->kind = IOP_BN;
            op->c = (int)L->in.c;
            op->l = (int)(r->in_count / L->in.c);
            op->b_off = r->b_off;
            op->buf_off = r->buf_off;
            break;
        case NET_RES_END:
            if (ns <= 0) return pid_fail(err, PID_ERR_INTERNAL, "net: unbalanced residual block");
            op->kind = IOP_ADD;
            op->skip_t = stack[--ns];
            if (L->projection) {
                op->w_off = r->w_off;
                op->b_off = r->b_off;
                if (L->out.rank == 0) {
                    op->proj = 2;
                    op->din = (int)net_spec_shape_count(&r->skip_shape);
                    op->dout = (int)L->out.c;
                } else {
                    op->proj = 1;
                    op->cs = conv_shape(r, 1, 1);
                }
            }
            if (last + 1 < nl && is_act(n->ly[last + 1].L.kind)) {
                last++;
                op->act = n->ly[last].L.kind == NET_RELU ? K_NN_ACT_RELU : K_NN_ACT_GELU;
            }
            break;
        default:
            return pid_fail(err, PID_ERR_INTERNAL, "net: unknown layer kind %d", (int)L->kind);
        }
        op->out_count = n->ly[last].out_count;
        for (size_t j = i; j <= last; j++) {
            op->flops += n->ly[j].L.flops;
            iop_name_add(op, n->ly[j].L.kind == NET_RES_END
                                 ? (n->ly[j].L.projection ? "res-add(proj)" : "res-add")
                                 : n->ly[j].L.text);
        }
        cur = op->out_t;
        i = last + 1;
    }
    if (I->n_ops == 0 || I->ops[I->n_ops - 1].kind != IOP_HEAD)
        return pid_fail(err, PID_ERR_INTERNAL, "net: the spec does not end in its head");
    /* Slots: a tensor lives from its op to its last reader; an op writes a
     * slot whose tensor is dead before it, or (elementwise ops, an add
     * without projection) the slot of its own input when that dies here. */
    int n_t = next_t;
    int *last_use = malloc(sizeof(int) * (size_t)n_t), *slot_of = malloc(sizeof(int) * (size_t)n_t);
    int *holder = malloc(sizeof(int) * (size_t)(I->n_ops + 1));
    I->slot_count = calloc(I->n_ops + 1, sizeof *I->slot_count);
    if (!last_use || !slot_of || !holder || !I->slot_count) {
        free(last_use), free(slot_of), free(holder);
        return pid_fail(err, PID_ERR_NOMEM, "net_create_infer: out of memory");
    }
    for (int t = 0; t < n_t; t++)
        last_use[t] = -1, slot_of[t] = -1;
    for (size_t j = 0; j < I->n_ops; j++) {
        const net_iop *op = &I->ops[j];
        if (op->out_t > 0) last_use[op->out_t] = (int)j;
        last_use[op->in_t] = (int)j;
        if (op->skip_t >= 0) last_use[op->skip_t] = (int)j;
    }
    I->n_slots = 0;
    for (size_t j = 0; j < I->n_ops; j++) {
        net_iop *op = &I->ops[j];
        op->in_slot = slot_of[op->in_t];
        op->skip_slot = op->skip_t >= 0 ? slot_of[op->skip_t] : -1;
        if (op->out_t < 0) {
            op->out_slot = -1;
            continue;
        }
        int inplace =
            op->kind == IOP_ACT || op->kind == IOP_BN || (op->kind == IOP_ADD && !op->proj);
        int s = -1;
        if (inplace && op->in_t != 0 && last_use[op->in_t] == (int)j) s = slot_of[op->in_t];
        for (int k = 0; s < 0 && k < I->n_slots; k++)
            if (last_use[holder[k]] < (int)j) s = k;
        if (s < 0) s = I->n_slots++;
        holder[s] = op->out_t;
        slot_of[op->out_t] = s;
        op->out_slot = s;
        if (op->out_count > I->slot_count[s]) I->slot_count[s] = op->out_count;
    }
    free(last_use), free(slot_of), free(holder);
    return PID_OK;
}

static size_t fl_round(size_t v)
{
    return (v + 15) / 16 * 16;
}

/* One worker's buffers for chunks of I->chunk frames: pass 1 (wk NULL)
 * counts floats and ints, pass 2 points wk's slots and scratch into fb / ib. */
static void infer_worker_layout(const net *n, net_worker *wk, float *fb, int32_t *ib, size_t *nf,
                                size_t *ni)
{
    const net_infer *I = n->inf;
    size_t f = 0, work = 1, pre = 0, am = 1, C = (size_t)I->chunk;
    for (int k = 0; k < I->n_slots; k++) {
        if (wk) wk->slot[k] = fb + f;
        f += fl_round(C * i64z(I->slot_count[k]));
    }
    for (size_t j = 0; j < I->n_ops; j++) {
        const net_iop *op = &I->ops[j];
        if (op->kind == IOP_CONV || (op->kind == IOP_ADD && op->proj == 1)) {
            /* the CPU fills a whole chunk's im2col columns at once; the CUDA
             * convolution one sample's at a time (and its chunk is the batch) */
            k_nn_conv cs = op->cs;
            cs.n = pid_backend_kind(n->be) == PID_DEVICE_CUDA ? 1 : (int)C;
            size_t w = I->reference ? k_nn_conv_work_floats(&cs)
                                    : k_nn_conv_fused_work_floats(&op->cs, op->pool);
            if (w > work) work = w;
            if (I->reference && op->pool != 1) {
                if (C * i64z(op->conv_out) > pre) pre = C * i64z(op->conv_out);
                if (C * i64z(op->out_count) > am) am = C * i64z(op->out_count);
            }
        }
        if (op->kind == IOP_MAXPOOL && C * i64z(op->out_count) > am) am = C * i64z(op->out_count);
    }
    if (wk) {
        wk->work = fb + f;
        wk->pre = pre ? fb + f + fl_round(work) : NULL;
        wk->argmax = ib;
    }
    *nf = f + fl_round(work) + fl_round(pre);
    *ni = fl_round(am);
}

/* Upload params / buffers (host; buffers NULL = keep the current ones) and
 * fold every fused BN into its conv / dense. */
static pid_status infer_load(net *n, const float *params, const float *buffers, pid_error *err)
{
    pid_backend *be = n->be;
    pid_status st;
    if ((st = pid_backend_upload(be, n->params, params, sizeof(float) * n->n_params, err)) ||
        (buffers && n->n_bufs &&
         (st = pid_backend_upload(be, n->bufs, buffers, sizeof(float) * n->n_bufs, err))))
        return st;
    const net_infer *I = n->inf;
    for (size_t j = 0; j < I->n_ops; j++) {
        const net_iop *op = &I->ops[j];
        if (op->fold < 0) continue;
        const net_layer_rt *bn = &n->ly[op->fold];
        int c = (int)bn->L.in.c;
        int k = op->kind == IOP_CONV ? op->cs.c_in * op->cs.k_h * op->cs.k_w : op->din;
        float *gamma = n->params + bn->b_off, *rm = n->bufs + bn->buf_off;
        if ((st = k_nn_batchnorm_fold(be, n->params + op->w_off, n->params + op->b_off, gamma,
                                      gamma + c, rm, rm + c, NET_BN_EPS, c, k, err))) {
            pid_error_prefix(err, "net: folding %s: ", op->name);
            return st;
        }
    }
    return pid_backend_sync(be, err);
}

static pid_status check_finite(const float *a, size_t count, const char *what, const char *who,
                               pid_error *err)
{
    for (size_t i = 0; a && i < count; i++)
        if (!isfinite(a[i]))
            return pid_fail(err, PID_ERR_ARG, "%s: %s %zu is not finite", who, what, i);
    return PID_OK;
}

pid_status net_create_infer(net **out, const net_spec *spec, pid_backend *be, int max_batch,
                            const float *params, const float *buffers, const net_infer_opts *opts,
                            pid_error *err)
{
    static const char *who = "net_create_infer";
    net_infer_opts o;
    memset(&o, 0, sizeof o);
    if (opts) o = *opts;
    if (out) *out = NULL;
    if (!out || !params || !be) return pid_fail(err, PID_ERR_ARG, "%s: NULL argument", who);
    if (o.n_threads < 0 || o.chunk < 0 || o.chunk > NET_INFER_MAX_CHUNK)
        return pid_fail(err, PID_ERR_ARG, "%s: n_threads must be >= 0 and chunk in 0..%d", who,
                        NET_INFER_MAX_CHUNK);
    int cuda = pid_backend_kind(be) == PID_DEVICE_CUDA;
    /* The CUDA net is one worker over the whole batch; the CPU chunk is
     * settled below once the slot sizes are known (checked for the largest). */
    int plan_batch = cuda ? max_batch : NET_INFER_MAX_CHUNK;
    if (!cuda && max_batch < plan_batch) plan_batch = max_batch;
    net *n = NULL;
    pid_status st = net_create_base(&n, spec, be, max_batch, plan_batch, 0, who, err);
    if (st) return st;
    float *hb = NULL;
    n->inf = calloc(1, sizeof *n->inf);
    if (!n->inf) {
        st = pid_fail(err, PID_ERR_NOMEM, "%s: out of memory", who);
        goto fail;
    }
    net_infer *I = n->inf;
    I->reference = cuda || o.reference;
    if ((st = check_finite(params, n->n_params, "parameter", who, err)) ||
        (st = check_finite(buffers, n->n_bufs, "buffer", who, err)) ||
        (st = infer_plan_ops(n, err)))
        goto fail;
    if (cuda) {
        I->n_workers = 1;
        I->chunk = max_batch;
    } else {
        I->n_workers = o.n_threads ? o.n_threads : pid_backend_threads(be);
        if (I->n_workers > NET_INFER_MAX_THREADS) I->n_workers = NET_INFER_MAX_THREADS;
        if (o.chunk) {
            I->chunk = o.chunk;
        } else {
            size_t per_frame = 0;
            for (int k = 0; k < I->n_slots; k++)
                per_frame += sizeof(float) * i64z(I->slot_count[k]);
            size_t c = per_frame ? NET_INFER_CHUNK_BYTES / per_frame : NET_INFER_MAX_CHUNK;
            I->chunk = c < 1 ? 1 : c > NET_INFER_MAX_CHUNK ? NET_INFER_MAX_CHUNK : (int)c;
        }
        if (I->chunk > max_batch) I->chunk = max_batch;
    }
    size_t wf = 0, wi = 0;
    infer_worker_layout(n, NULL, NULL, NULL, &wf, &wi);
    const size_t nk = fl_round((size_t)max_batch * i64z(n->n_classes));
    const size_t head_f = nk * (n->fractions ? 2 : 1);
    size_t total_f = head_f + wf * (size_t)I->n_workers, total_i = wi * (size_t)I->n_workers;
    size_t np = n->n_params ? n->n_params : 1, nb = n->n_bufs ? n->n_bufs : 1;
    I->wk = calloc((size_t)I->n_workers, sizeof *I->wk);
    if (!I->wk) {
        st = pid_fail(err, PID_ERR_NOMEM, "%s: out of memory", who);
        goto fail;
    }
    for (int w = 0; w < I->n_workers; w++) {
        I->wk[w].slot = calloc((size_t)I->n_slots + 1, sizeof(float *));
        I->wk[w].op_s = calloc(I->n_ops, sizeof(double));
        if (!I->wk[w].slot || !I->wk[w].op_s) {
            st = pid_fail(err, PID_ERR_NOMEM, "%s: out of memory", who);
            goto fail;
        }
    }
    if ((st = pid_backend_alloc(be, (void **)&n->params, sizeof(float) * np, err)) ||
        (st = pid_backend_alloc(be, (void **)&n->bufs, sizeof(float) * nb, err)) ||
        (st = pid_backend_alloc(be, (void **)&I->arena, sizeof(float) * total_f, err)) ||
        (st = pid_backend_alloc(be, (void **)&I->iarena, sizeof(int32_t) * total_i, err)))
        goto fail;
    /* The CUDA staging buffer now (cls_run uploads into it); on the CPU the
     * caller's host frames are read in place, so only on demand. */
    if (cuda &&
        (st = pid_backend_alloc(be, (void **)&I->input_buf,
                                sizeof(float) * (size_t)max_batch * i64z(n->in_count), err)))
        goto fail;
    I->bytes = sizeof(float) * (np + nb + total_f) + sizeof(int32_t) * total_i;
    I->logits = I->arena;
    I->frac_logits = n->fractions ? I->arena + nk : NULL;
    for (int w = 0; w < I->n_workers; w++)
        infer_worker_layout(n, &I->wk[w], I->arena + head_f + wf * (size_t)w,
                            I->iarena + wi * (size_t)w, &wf, &wi);
    /* Default running stats (mean 0, var 1) when no buffers are given. */
    hb = malloc(sizeof(float) * nb);
    if (!hb) {
        st = pid_fail(err, PID_ERR_NOMEM, "%s: out of memory", who);
        goto fail;
    }
    memset(hb, 0, sizeof(float) * nb);
    for (size_t i = 0; i < n->n_layers; i++)
        if (n->ly[i].L.kind == NET_BN)
            for (int64_t c = 0; c < n->ly[i].L.in.c; c++)
                hb[n->ly[i].buf_off + i64z(n->ly[i].L.in.c + c)] = 1.0f;
    if ((st = pid_backend_upload(be, n->bufs, hb, sizeof(float) * nb, err)) ||
        (st = infer_load(n, params, buffers, err)))
        goto fail;
    free(hb);
    *out = n;
    return PID_OK;
fail:
    free(hb);
    net_destroy(n);
    return st;
}

static pid_status act_inplace(pid_backend *be, k_nn_act act, float *y, size_t count, pid_error *err)
{
    if (act == K_NN_ACT_RELU) return k_nn_relu_forward(be, y, y, count, err);
    if (act == K_NN_ACT_GELU) return k_nn_gelu_forward(be, y, y, count, err);
    return PID_OK;
}

/* Dense forward with activation: the fused kernel, or the reference one
 * followed by the activation. */
static pid_status infer_dense(const net *n, const float *x, const float *w, const float *b,
                              k_nn_act act, float *y, int nb, int in, int out, pid_error *err)
{
    if (!n->inf->reference)
        return k_nn_dense_forward_fused(n->be, x, w, b, act, y, nb, in, out, err);
    pid_status st = k_nn_dense_forward(n->be, x, w, b, y, nb, in, out, err);
    return st ? st : act_inplace(n->be, act, y, (size_t)nb * out, err);
}

/* Run op on frames [f0, f0 + nb) of the batch x with worker wk's buffers. */
static pid_status infer_op(net *n, net_worker *wk, const net_iop *op, const float *x, int f0,
                           int nb, pid_error *err)
{
    const net_infer *I = n->inf;
    pid_backend *be = n->be;
    const float *P = n->params;
    const float *in = op->in_slot < 0 ? x + (size_t)f0 * i64z(op->in_count) : wk->slot[op->in_slot];
    float *out =
        op->out_slot < 0 ? I->logits + (size_t)f0 * i64z(n->n_classes) : wk->slot[op->out_slot];
    /* The skip input of a residual add (a skip from the network input is
     * the input itself). */
    const float *skip = op->skip_t < 0      ? NULL
                        : op->skip_slot < 0 ? x + (size_t)f0 * i64z(n->in_count)
                                            : wk->slot[op->skip_slot];
    pid_status st = PID_OK;
    switch (op->kind) {
    case IOP_CONV: {
        k_nn_conv s = op->cs;
        s.n = nb;
        if (!I->reference)
            return k_nn_conv_forward_fused(be, &s, in, P + op->w_off, P + op->b_off, skip, op->act,
                                           op->pool, out, wk->work, err);
        float *y = op->pool != 1 ? wk->pre : out;
        size_t cnt = (size_t)nb * i64z(op->conv_out);
        if ((st = k_nn_conv_forward(be, &s, in, P + op->w_off, P + op->b_off, y, wk->work, err)) ||
            (skip && (st = k_nn_add(be, y, skip, y, cnt, err))) ||
            (st = act_inplace(be, op->act, y, cnt, err)) || op->pool == 1)
            return st;
        int ho = 0, wo = 0;
        if ((st = k_nn_conv_out(&s, &ho, &wo, err))) return st;
        if (op->pool == K_NN_POOL_GLOBAL_AVG)
            return k_nn_global_avgpool_forward(be, y, out, nb, s.c_out, ho * wo, err);
        k_nn_pool ps = k_nn_pool1d_shape(nb, s.c_out, wo, op->pool, op->pool);
        return k_nn_maxpool_forward(be, &ps, y, out, wk->argmax, err);
    }
    case IOP_DENSE:
        return infer_dense(n, in, P + op->w_off, P + op->b_off, op->act, out, nb, op->din, op->dout,
                           err);
    case IOP_HEAD:
        if ((st = infer_dense(n, in, P + op->w_off, P + op->b_off, K_NN_ACT_NONE, out, nb, op->din,
                              op->dout, err)) ||
            !op->fractions)
            return st;
        return infer_dense(n, in, P + op->w2_off, P + op->b2_off, K_NN_ACT_NONE,
                           I->frac_logits + (size_t)f0 * i64z(n->n_classes), nb, op->din, op->dout,
                           err);
    case IOP_MAXPOOL:
    case IOP_AVGPOOL: {
        k_nn_pool s = op->ps;
        s.n = nb;
        if (op->kind == IOP_MAXPOOL) return k_nn_maxpool_forward(be, &s, in, out, wk->argmax, err);
        return k_nn_avgpool_forward(be, &s, in, out, err);
    }
    case IOP_GPOOL:
        return k_nn_global_avgpool_forward(be, in, out, nb, op->c, op->l, err);
    case IOP_ACT: {
        size_t cnt = (size_t)nb * i64z(op->in_count);
        if (op->act == K_NN_ACT_RELU) return k_nn_relu_forward(be, in, out, cnt, err);
        return k_nn_gelu_forward(be, in, out, cnt, err);
    }
    case IOP_BN: {
        const float *gamma = P + op->b_off, *rm = n->bufs + op->buf_off;
        return k_nn_batchnorm_forward_infer(be, in, gamma, gamma + op->c, rm, rm + op->c, out, nb,
                                            op->c, op->l, NET_BN_EPS, err);
    }
    case IOP_ADD: {
        size_t cnt = (size_t)nb * i64z(op->out_count);
        if (op->proj == 1) {
            k_nn_conv s = op->cs;
            s.n = nb;
            st = I->reference ? k_nn_conv_forward(be, &s, skip, P + op->w_off, P + op->b_off, out,
                                                  wk->work, err)
                              : k_nn_conv_forward_fused(be, &s, skip, P + op->w_off, P + op->b_off,
                                                        NULL, K_NN_ACT_NONE, 1, out, wk->work, err);
        } else if (op->proj == 2) {
            st = infer_dense(n, skip, P + op->w_off, P + op->b_off, K_NN_ACT_NONE, out, nb, op->din,
                             op->dout, err);
        }
        if (st) return st;
        if ((st = k_nn_add(be, op->proj ? out : skip, in, out, cnt, err))) return st;
        return act_inplace(be, op->act, out, cnt, err);
    }
    }
    return pid_fail(err, PID_ERR_INTERNAL, "net: unknown op kind %d", (int)op->kind);
}

/* All ops over frames [f0, f0 + nb). */
static pid_status infer_chunk(net *n, net_worker *wk, const float *x, int f0, int nb,
                              pid_error *err)
{
    const net_infer *I = n->inf;
    for (size_t j = 0; j < I->n_ops; j++) {
        double t0 = I->profile ? pid_mono_s() : 0.0;
        pid_status st = infer_op(n, wk, &I->ops[j], x, f0, nb, err);
        if (st) {
            pid_error_prefix(err, "net_forward: %s: ", I->ops[j].name);
            return st;
        }
        if (I->profile) wk->op_s[j] += pid_mono_s() - t0;
    }
    return PID_OK;
}

/* One forward split over the workers: chunks handed out through an atomic
 * counter so a worker slowed by other load takes fewer. */
typedef struct {
    net *n;
    const float *x;
    int batch, nb, n_chunks;
    atomic_int next, failed;
} infer_job;

typedef struct {
    infer_job *job;
    int w;
    pid_status st;
    pid_error err;
} infer_arg;

static void *infer_worker(void *arg)
{
    infer_arg *a = arg;
    infer_job *j = a->job;
    /* with several workers, each one's kernels stay on it */
    const int was = pid_backend_cpu_solo(j->n->inf->n_workers > 1);
    while (!atomic_load(&j->failed)) {
        int c = atomic_fetch_add(&j->next, 1);
        if (c >= j->n_chunks) break;
        int f0 = c * j->nb, cnt = j->batch - f0 < j->nb ? j->batch - f0 : j->nb;
        if ((a->st = infer_chunk(j->n, &j->n->inf->wk[a->w], j->x, f0, cnt, &a->err))) {
            atomic_store(&j->failed, 1);
            break;
        }
    }
    pid_backend_cpu_solo(was);
    return NULL;
}

static pid_status infer_forward(net *n, const float *x, int batch, pid_error *err)
{
    net_infer *I = n->inf;
    /* Chunks small enough that every worker gets one. */
    int per = (batch + I->n_workers - 1) / I->n_workers;
    int nb = per < I->chunk ? per : I->chunk;
    infer_job job;
    job.n = n;
    job.x = x;
    job.batch = batch;
    job.nb = nb;
    job.n_chunks = (batch + nb - 1) / nb;
    atomic_init(&job.next, 0);
    atomic_init(&job.failed, 0);
    int n_w = job.n_chunks < I->n_workers ? job.n_chunks : I->n_workers;
    infer_arg args[NET_INFER_MAX_THREADS];
    pthread_t tid[NET_INFER_MAX_THREADS];
    int started = 1;
    for (int w = 0; w < n_w; w++) {
        args[w].job = &job;
        args[w].w = w;
        args[w].st = PID_OK;
        pid_error_clear(&args[w].err);
    }
    /* Worker 0 is this thread; if a thread cannot start, the others take
     * its chunks. */
    for (int w = 1; w < n_w; w++) {
        if (pthread_create(&tid[w], NULL, infer_worker, &args[w])) break;
        started++;
    }
    infer_worker(&args[0]);
    for (int w = 1; w < started; w++)
        pthread_join(tid[w], NULL);
    for (int w = 0; w < started; w++)
        if (args[w].st) {
            if (err) *err = args[w].err;
            return args[w].st;
        }
    return PID_OK;
}

int net_is_infer(const net *n)
{
    return n && n->inf;
}
int net_infer_threads(const net *n)
{
    return n && n->inf ? n->inf->n_workers : 0;
}
int net_infer_chunk(const net *n)
{
    return n && n->inf ? n->inf->chunk : 0;
}
size_t net_infer_bytes(const net *n)
{
    if (!n || !n->inf) return 0;
    int staged = n->inf->input_buf && pid_backend_kind(n->be) == PID_DEVICE_CPU;
    return n->inf->bytes + (staged ? sizeof(float) * (size_t)n->max_batch * i64z(n->in_count) : 0);
}

size_t net_profile_count(const net *n)
{
    return n && n->inf ? n->inf->n_ops : 0;
}

void net_profile_reset(net *n, int on)
{
    if (!n || !n->inf) return;
    n->inf->profile = on;
    for (int w = 0; w < n->inf->n_workers; w++)
        memset(n->inf->wk[w].op_s, 0, sizeof(double) * n->inf->n_ops);
}

pid_status net_profile_get(const net *n, size_t i, net_op_profile *out, pid_error *err)
{
    if (!n || !out) return pid_fail(err, PID_ERR_ARG, "net_profile_get: NULL argument");
    if (!n->inf) return pid_fail(err, PID_ERR_UNSUPPORTED, "net_profile_get: not an inference net");
    if (i >= n->inf->n_ops)
        return pid_fail(err, PID_ERR_ARG, "net_profile_get: op %zu of %zu", i, n->inf->n_ops);
    const net_iop *op = &n->inf->ops[i];
    memset(out, 0, sizeof *out);
    snprintf(out->name, sizeof out->name, "%s", op->name);
    out->flops = op->flops;
    for (int w = 0; w < n->inf->n_workers; w++)
        out->seconds += n->inf->wk[w].op_s[i];
    return PID_OK;
}

/* ------------------------------------------------------------ accessors */

size_t net_param_count(const net *n)
{
    return n ? n->n_params : 0;
}
size_t net_buffer_count(const net *n)
{
    return n ? n->n_bufs : 0;
}
int64_t net_n_classes(const net *n)
{
    return n ? n->n_classes : 0;
}
int64_t net_input_count(const net *n)
{
    return n ? n->in_count : 0;
}
int net_max_batch(const net *n)
{
    return n ? n->max_batch : 0;
}
int net_has_fractions(const net *n)
{
    return n ? n->fractions : 0;
}
const float *net_logits(const net *n)
{
    if (n && n->inf) return n->inf->logits;
    return n ? n->act[n->ly[n->n_layers - 1].out_t] : NULL;
}
const float *net_fraction_logits(const net *n)
{
    if (n && n->inf) return n->inf->frac_logits;
    return n && n->fractions ? n->frac_logits : NULL;
}
const float *net_grads(const net *n)
{
    return n && !n->inf ? n->grads : NULL;
}
float *net_input_buffer(net *n)
{
    if (!n) return NULL;
    if (!n->inf) return n->input_buf;
    if (!n->inf->input_buf &&
        pid_backend_alloc(n->be, (void **)&n->inf->input_buf,
                          sizeof(float) * (size_t)n->max_batch * i64z(n->in_count), NULL))
        return NULL;
    return n->inf->input_buf;
}

pid_status net_params(net *n, float *params, float *buffers, pid_error *err)
{
    pid_status st;
    if (!n || !params) return pid_fail(err, PID_ERR_ARG, "net_params: NULL argument");
    if (n->inf)
        return pid_fail(err, PID_ERR_UNSUPPORTED,
                        "net_params: an inference net holds folded weights, not the trained ones");
    if ((st = pid_backend_download(n->be, params, n->params, sizeof(float) * n->n_params, err)))
        return st;
    if (buffers && n->n_bufs &&
        (st = pid_backend_download(n->be, buffers, n->bufs, sizeof(float) * n->n_bufs, err)))
        return st;
    return pid_backend_sync(n->be, err);
}

pid_status net_set_params(net *n, const float *params, const float *buffers, pid_error *err)
{
    pid_status st;
    if (!n || !params) return pid_fail(err, PID_ERR_ARG, "net_set_params: NULL argument");
    for (size_t i = 0; i < n->n_params; i++)
        if (!isfinite(params[i]))
            return pid_fail(err, PID_ERR_ARG, "net_set_params: parameter %zu is not finite", i);
    if (buffers)
        for (size_t i = 0; i < n->n_bufs; i++)
            if (!isfinite(buffers[i]))
                return pid_fail(err, PID_ERR_ARG, "net_set_params: buffer %zu is not finite", i);
    if (n->inf) return infer_load(n, params, buffers, err);
    float *z = calloc(n->n_params ? n->n_params : 1, sizeof(float));
    if (!z) return pid_fail(err, PID_ERR_NOMEM, "net_set_params: out of memory");
    size_t bytes = sizeof(float) * n->n_params;
    if ((st = pid_backend_upload(n->be, n->params, params, bytes, err)) ||
        (buffers && n->n_bufs &&
         (st = pid_backend_upload(n->be, n->bufs, buffers, sizeof(float) * n->n_bufs, err))) ||
        (st = pid_backend_upload(n->be, n->m, z, bytes, err)) ||
        (st = pid_backend_upload(n->be, n->v, z, bytes, err)) ||
        (st = pid_backend_sync(n->be, err))) {
        free(z);
        return st;
    }
    free(z);
    n->t_step = 0;
    return PID_OK;
}

pid_status net_optimizer_state(net *n, float *m, float *v, int64_t *t, pid_error *err)
{
    pid_status st;
    if (!n || !m || !v || !t) return pid_fail(err, PID_ERR_ARG, "net_optimizer_state: NULL");
    if (n->inf)
        return pid_fail(err, PID_ERR_UNSUPPORTED, "net_optimizer_state: an inference net has none");
    size_t bytes = sizeof(float) * n->n_params;
    if ((st = pid_backend_download(n->be, m, n->m, bytes, err)) ||
        (st = pid_backend_download(n->be, v, n->v, bytes, err)) ||
        (st = pid_backend_sync(n->be, err)))
        return st;
    *t = n->t_step;
    return PID_OK;
}

pid_status net_set_optimizer_state(net *n, const float *m, const float *v, int64_t t,
                                   pid_error *err)
{
    pid_status st;
    if (!n || !m || !v) return pid_fail(err, PID_ERR_ARG, "net_set_optimizer_state: NULL");
    if (n->inf)
        return pid_fail(err, PID_ERR_UNSUPPORTED,
                        "net_set_optimizer_state: an inference net has none");
    if (t < 0 || t >= ((int64_t)1 << 31))
        return pid_fail(err, PID_ERR_ARG, "net_set_optimizer_state: step %lld", (long long)t);
    for (size_t i = 0; i < n->n_params; i++)
        if (!isfinite(m[i]) || !isfinite(v[i]) || v[i] < 0.0f)
            return pid_fail(err, PID_ERR_ARG,
                            "net_set_optimizer_state: moment %zu is not finite (or v < 0)", i);
    size_t bytes = sizeof(float) * n->n_params;
    if ((st = pid_backend_upload(n->be, n->m, m, bytes, err)) ||
        (st = pid_backend_upload(n->be, n->v, v, bytes, err)) ||
        (st = pid_backend_sync(n->be, err)))
        return st;
    n->t_step = (int)t;
    return PID_OK;
}

pid_status net_random_model(mf_model *m, const char *spec_text, const net_shape *input,
                            int64_t n_classes, uint64_t seed, pid_error *err)
{
    pid_status st;
    net_spec *s = NULL;
    pid_backend *be = NULL;
    net *n = NULL;
    net_layer_info head;
    if (!m || !spec_text || !input) return pid_fail(err, PID_ERR_ARG, "net_random_model: NULL");
    free(m->arch_spec);
    m->arch_spec = NULL;
    m->input = *input;
    m->n_classes = n_classes;
    if ((st = net_spec_parse(spec_text, &s, err)) ||
        (st = net_spec_canonical(s, &m->arch_spec, err)) ||
        (st = net_spec_build(s, &m->input, n_classes, err)) ||
        (st = net_spec_layer(s, net_spec_n_layers(s) - 1, &head, err)) ||
        (st = pid_backend_create(&be, "cpu", 1, err)) || (st = net_create(&n, s, be, 1, seed, err)))
        goto done;
    m->head = head.head;
    m->head_fractions = head.fractions;
    free(m->params);
    free(m->buffers);
    m->n_params = (int64_t)net_param_count(n);
    m->n_buffers = (int64_t)net_buffer_count(n);
    m->params = malloc(sizeof(float) * (size_t)(m->n_params ? m->n_params : 1));
    m->buffers = m->n_buffers ? malloc(sizeof(float) * (size_t)m->n_buffers) : NULL;
    if (!m->params || (m->n_buffers && !m->buffers)) {
        st = pid_fail(err, PID_ERR_NOMEM, "net_random_model: out of memory");
        goto done;
    }
    st = net_params(n, m->params, m->buffers, err);
done:
    net_destroy(n);
    pid_backend_destroy(be);
    net_spec_destroy(s);
    return st;
}
