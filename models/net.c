/* Network instances (models/net.h): binds a built spec to a backend, lays out
 * the flat parameter / gradient / AdamW arrays and the activation buffers, and
 * runs forward, loss + backward and AdamW through the ops of kernels/nn.h. */
#include "models/net.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

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

struct net {
    pid_backend *be; /* borrowed */
    int max_batch;
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
            r->out_count * n->max_batch > INT32_MAX)
            return pid_fail(err, PID_ERR_UNSUPPORTED,
                            "net: layer %zu (%s): tensor too large for max_batch %d", i, L->text,
                            n->max_batch);
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

pid_status net_create(net **out, const net_spec *spec, pid_backend *be, int max_batch,
                      uint64_t seed, pid_error *err)
{
    pid_status st = PID_OK;
    net *n = NULL;
    float *hp = NULL, *hb = NULL, *hz = NULL;
    net_spec_totals tot;
    if (out) *out = NULL;
    if (!out || !spec || !be) return pid_fail(err, PID_ERR_ARG, "net_create: NULL argument");
    if (max_batch < 1) return pid_fail(err, PID_ERR_ARG, "net_create: max_batch must be >= 1");
    if (!net_spec_is_built(spec))
        return pid_fail(err, PID_ERR_ARG, "net_create: the spec is not built (net_spec_build)");
    if ((st = net_spec_totals_get(spec, &tot, err))) return st;
    n = calloc(1, sizeof *n);
    if (!n) return pid_fail(err, PID_ERR_NOMEM, "net_create: out of memory");
    n->be = be;
    n->max_batch = max_batch;
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
        st = pid_fail(err, PID_ERR_NOMEM, "net_create: out of memory");
        goto fail;
    }
    if (n->n_layers == 0) {
        st = pid_fail(err, PID_ERR_ARG, "net_create: empty spec");
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
                      "net_create: parameter layout (%zu + %zu buffers) disagrees with the spec "
                      "(%lld + %lld)",
                      n->n_params, n->n_bufs, (long long)tot.params, (long long)tot.buffers);
        goto fail;
    }
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

void net_destroy(net *n)
{
    if (!n) return;
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
    return n ? n->act[n->ly[n->n_layers - 1].out_t] : NULL;
}
const float *net_fraction_logits(const net *n)
{
    return n && n->fractions ? n->frac_logits : NULL;
}
const float *net_grads(const net *n)
{
    return n ? n->grads : NULL;
}
float *net_input_buffer(net *n)
{
    return n ? n->input_buf : NULL;
}

pid_status net_params(net *n, float *params, float *buffers, pid_error *err)
{
    pid_status st;
    if (!n || !params) return pid_fail(err, PID_ERR_ARG, "net_params: NULL argument");
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
