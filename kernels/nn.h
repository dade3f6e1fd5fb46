/* Neural-network operations of the compute backend: dense, convolution
 * (1-D/2-D via im2col + GEMM), pooling, activations, dropout, batch norm,
 * losses and AdamW, and fused forward-only ops for inference. Each op has a
 * CPU reference (nn_*.c) and a CUDA twin (nn_*.cu, name suffix _cuda) with
 * the same signature.
 *
 * Common contract for every function below:
 *  - `be` selects the implementation (pid_backend_kind); every tensor pointer
 *    is memory of that backend (host for the CPU, device for CUDA), float32,
 *    row-major, NCW for 1-D and NCHW for 2-D feature maps.
 *  - The caller owns every buffer before and after the call; no op allocates
 *    or frees, and none keeps a pointer. Scratch space (conv `work`) is
 *    passed in by the caller, sized by the matching *_work_floats function.
 *  - Outputs are overwritten (never accumulated into). In backward functions
 *    an output gradient pointer that is NULL means "not wanted".
 *  - Shapes are checked and NULL required pointers rejected with PID_ERR_ARG
 *    and a message; CUDA failures give PID_ERR_DEVICE. CUDA ops are queued on
 *    the backend's stream (call pid_backend_sync before reading results).
 *  - The public function checks its arguments, then runs the CPU reference
 *    or its CUDA twin (same name + _cuda, same signature, declared at the
 *    end). The twins trust the dispatcher's checks: call the public names. */
#ifndef PID_KERNELS_NN_H
#define PID_KERNELS_NN_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "core/hd.h"
#include "core/rng.h"
#include "core/status.h"
#include "kernels/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- dense */

/* y[n,out] = x[n,in] W[out,in]^T + b[out]. b may be NULL (no bias). */
pid_status k_nn_dense_forward(pid_backend *be, const float *x, const float *w, const float *b,
                              float *y, int n, int in, int out, pid_error *err);
/* Given dy[n,out]: dx[n,in] = dy W; dw[out,in] = dy^T x; db[out] = sum_n dy.
 * Any of dx, dw, db may be NULL. */
pid_status k_nn_dense_backward(pid_backend *be, const float *x, const float *w, const float *dy,
                               float *dx, float *dw, float *db, int n, int in, int out,
                               pid_error *err);

/* ----------------------------------------------------------- activations */

/* y = max(x, 0), elementwise over `count` values; y may alias x. */
pid_status k_nn_relu_forward(pid_backend *be, const float *x, float *y, size_t count,
                             pid_error *err);
/* dx = dy where x > 0 else 0 (x: the forward input); dx may alias dy. */
pid_status k_nn_relu_backward(pid_backend *be, const float *x, const float *dy, float *dx,
                              size_t count, pid_error *err);
/* GELU, tanh approximation: y = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). */
pid_status k_nn_gelu_forward(pid_backend *be, const float *x, float *y, size_t count,
                             pid_error *err);
pid_status k_nn_gelu_backward(pid_backend *be, const float *x, const float *dy, float *dx,
                              size_t count, pid_error *err);
/* Residual add y = a + b (y may alias a or b). Its backward is the identity:
 * both branches receive dy unchanged, so there is no backward function. */
pid_status k_nn_add(pid_backend *be, const float *a, const float *b, float *y, size_t count,
                    pid_error *err);
/* Inverted dropout: element i is dropped when u(seed, step, i) <= p, where u
 * is Philox word i%4 of block i/4 of stream `step` under `seed` mapped to
 * (0,1] (core/rng.h), so the CPU and CUDA drop the same elements without a
 * stored mask; kept elements are scaled by 1/(1-p). 0 <= p < 1 (p = 0 copies).
 * The backward regenerates the mask from the same (seed, step): dx = mask*dy/(1-p). */
pid_status k_nn_dropout_forward(pid_backend *be, const float *x, float *y, size_t count, float p,
                                uint64_t seed, uint64_t step, pid_error *err);
pid_status k_nn_dropout_backward(pid_backend *be, const float *dy, float *dx, size_t count, float p,
                                 uint64_t seed, uint64_t step, pid_error *err);

/* ---------------------------------------------------------------- losses */

/* Softmax cross-entropy with integer labels in [0, c): loss[i] =
 * -log softmax(logits[i,:])[labels[i]] per sample (loss[n]); dlogits[n,c]
 * (may be NULL) is the gradient of the batch mean loss: (p - onehot) / n.
 * labels is int32 in backend memory. The CPU rejects an out-of-range label
 * (PID_ERR_ARG); the CUDA twin cannot check device memory without a sync and
 * writes NaN for that sample's loss and gradient row instead. */
pid_status k_nn_softmax_xent(pid_backend *be, const float *logits, const int32_t *labels,
                             float *loss, float *dlogits, int n, int c, pid_error *err);
/* Softmax cross-entropy with soft targets[n,c] (rows usually summing to 1):
 * loss[i] = -sum_j t_ij log p_ij; dlogits = (p_ij sum_k t_ik - t_ij) / n, the
 * gradient of the batch mean loss (p - t when the row sums to 1). */
pid_status k_nn_softmax_xent_soft(pid_backend *be, const float *logits, const float *targets,
                                  float *loss, float *dlogits, int n, int c, pid_error *err);
/* Sigmoid binary cross-entropy for multi-hot targets[n,c] in [0,1]: loss[i] =
 * sum_j [softplus(z) - t z] (the stable form of -t log s - (1-t) log(1-s));
 * dlogits = (sigmoid(z) - t) / n, the gradient of the batch mean loss. */
pid_status k_nn_sigmoid_bce(pid_backend *be, const float *logits, const float *targets, float *loss,
                            float *dlogits, int n, int c, pid_error *err);
/* Inference: probs[n,c] = softmax(logits / temperature) per row; temperature > 0.
 * probs may alias logits. */
pid_status k_nn_softmax(pid_backend *be, const float *logits, float *probs, int n, int c,
                        float temperature, pid_error *err);

/* ------------------------------------------------------------- optimizer */

typedef struct {
    float lr, beta1, beta2, eps, weight_decay;
} k_nn_adamw;

/* One AdamW step (Loshchilov & Hutter; PyTorch's order) over `count`
 * parameters, step t >= 1 (1 on the first call):
 *   p -= lr * wd * p;  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
 *   p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps).
 * param, m, v are updated in place (m, v start at zero); grad is read. */
pid_status k_nn_adamw_step(pid_backend *be, const k_nn_adamw *hp, int t, float *param,
                           const float *grad, float *m, float *v, size_t count, pid_error *err);

/* ------------------------------------------------------------ convolution */

/* A 2-D convolution: x[n,c_in,h_in,w_in] * w[c_out,c_in,k_h,k_w] + b[c_out]
 * -> y[n,c_out,h_out,w_out] with h_out = (h_in + 2 pad_h - dil_h (k_h-1) - 1)
 * / stride_h + 1 (likewise w). Zero padding. A 1-D convolution (NCW) is the
 * same with h_in = k_h = 1, stride_h = dil_h = 1, pad_h = 0. */
typedef struct {
    int n, c_in, h_in, w_in;
    int c_out, k_h, k_w;
    int stride_h, stride_w, pad_h, pad_w, dil_h, dil_w;
} k_nn_conv;

/* Fill a k_nn_conv for a 1-D convolution over NCW input. */
k_nn_conv k_nn_conv1d_shape(int n, int c_in, int w_in, int c_out, int k, int stride, int pad,
                            int dil);
/* Check the shape (positive sizes, non-empty output) and give the output size. */
pid_status k_nn_conv_out(const k_nn_conv *s, int *h_out, int *w_out, pid_error *err);
/* Floats of scratch `work` the forward and backward need: the im2col
 * matrices of all n samples, n x c_in k_h k_w x h_out w_out (the CPU fills
 * them on several threads at once; the CUDA backend needs one sample's, the
 * value for n = 1). 0 for an invalid shape. */
size_t k_nn_conv_work_floats(const k_nn_conv *s);
/* y = conv(x, w) + b (b may be NULL). `work` is caller-owned scratch. */
pid_status k_nn_conv_forward(pid_backend *be, const k_nn_conv *s, const float *x, const float *w,
                             const float *b, float *y, float *work, pid_error *err);
/* Given dy: dx (input), dw (weight, summed over the batch), db (sum of dy
 * over n, h, w); any may be NULL. */
pid_status k_nn_conv_backward(pid_backend *be, const k_nn_conv *s, const float *x, const float *w,
                              const float *dy, float *dx, float *dw, float *db, float *work,
                              pid_error *err);

/* --------------------------------------------------------------- pooling */

/* Max / average pooling without padding over x[n,c,h_in,w_in] -> y[n,c,h_out,
 * w_out], h_out = (h_in - k_h) / stride_h + 1 (likewise w). 1-D pooling
 * (NCW) is h_in = k_h = stride_h = 1. */
typedef struct {
    int n, c, h_in, w_in, k_h, k_w, stride_h, stride_w;
} k_nn_pool;

k_nn_pool k_nn_pool1d_shape(int n, int c, int w_in, int k, int stride);
pid_status k_nn_pool_out(const k_nn_pool *s, int *h_out, int *w_out, pid_error *err);
/* argmax[n,c,h_out,w_out] (int32, backend memory, caller-owned) receives the
 * index h * w_in + w within the input plane of each window's maximum (the
 * first one on ties); the backward routes dy there. */
pid_status k_nn_maxpool_forward(pid_backend *be, const k_nn_pool *s, const float *x, float *y,
                                int32_t *argmax, pid_error *err);
pid_status k_nn_maxpool_backward(pid_backend *be, const k_nn_pool *s, const float *dy,
                                 const int32_t *argmax, float *dx, pid_error *err);
pid_status k_nn_avgpool_forward(pid_backend *be, const k_nn_pool *s, const float *x, float *y,
                                pid_error *err);
pid_status k_nn_avgpool_backward(pid_backend *be, const k_nn_pool *s, const float *dy, float *dx,
                                 pid_error *err);
/* Global average pooling y[n,c] = mean over the l = h w (or w) positions of
 * x[n,c,l]; backward dx[n,c,l] = dy[n,c] / l. */
pid_status k_nn_global_avgpool_forward(pid_backend *be, const float *x, float *y, int n, int c,
                                       int l, pid_error *err);
pid_status k_nn_global_avgpool_backward(pid_backend *be, const float *dy, float *dx, int n, int c,
                                        int l, pid_error *err);

/* ----------------------------------------------------------- batch norm */

/* Batch normalization over channel c of x[n,c,l] (l = spatial size; 1 for a
 * dense layer's [n,c] output). Training: batch mean and biased variance over
 * the n l values of each channel, y = gamma (x - mean) / sqrt(var + eps) +
 * beta; save_mean[c] and save_rstd[c] = 1/sqrt(var + eps) are written for the
 * backward; running_mean/var (may both be NULL) become (1-momentum) running +
 * momentum batch, with the unbiased variance (PyTorch's convention). */
pid_status k_nn_batchnorm_forward_train(pid_backend *be, const float *x, const float *gamma,
                                        const float *beta, float *y, int n, int c, int l, float eps,
                                        float momentum, float *running_mean, float *running_var,
                                        float *save_mean, float *save_rstd, pid_error *err);
/* Inference: y = gamma (x - running_mean) / sqrt(running_var + eps) + beta. */
pid_status k_nn_batchnorm_forward_infer(pid_backend *be, const float *x, const float *gamma,
                                        const float *beta, const float *running_mean,
                                        const float *running_var, float *y, int n, int c, int l,
                                        float eps, pid_error *err);
/* Backward through the training forward (uses its save_mean/save_rstd):
 * dx, dgamma[c], dbeta[c]; any of the three may be NULL. */
pid_status k_nn_batchnorm_backward(pid_backend *be, const float *x, const float *gamma,
                                   const float *save_mean, const float *save_rstd, const float *dy,
                                   float *dx, float *dgamma, float *dbeta, int n, int c, int l,
                                   pid_error *err);
/* Fold an inference BN into the preceding conv/dense layer, in place:
 * w[c_out, k] *= s[o], b[o] = (b[o] - running_mean[o]) s[o] + beta[o] with
 * s = gamma / sqrt(running_var + eps); k = c_in k_h k_w (conv) or in (dense).
 * b must exist (pass zeros for a layer without bias). */
pid_status k_nn_batchnorm_fold(pid_backend *be, float *w, float *b, const float *gamma,
                               const float *beta, const float *running_mean,
                               const float *running_var, float eps, int c_out, int k,
                               pid_error *err);

/* ------------------------------------------------- fused inference ops
 * Forward-only ops for inference networks (models/net.h, net_create_infer):
 * a layer with its bias, activation and pooling applied in one pass. The
 * CPU versions are direct kernels (no im2col, no BLAS) with AVX-512 / AVX2
 * micro-kernels chosen by pid_backend_cpu_isa, single-threaded, so callers
 * may run them from several threads at once on disjoint data. */

typedef enum { K_NN_ACT_NONE = 0, K_NN_ACT_RELU = 1, K_NN_ACT_GELU = 2 } k_nn_act;

/* Pool value of k_nn_conv_forward_fused for a global average over all
 * output positions (the gpool layer). */
#define K_NN_POOL_GLOBAL_AVG 0

/* Floats of `work` k_nn_conv_forward_fused needs for shape s (any s->n) and
 * its `pool`: packed weights, one frame's zero-padded input split by stride
 * phase, one block of output rows, row pointers and the averaging sums. 0 for
 * an invalid shape or pool. */
size_t k_nn_conv_fused_work_floats(const k_nn_conv *s, int pool);
/* y = pool(act(conv(x, w) + b + residual)): the convolution of
 * k_nn_conv_forward (same x, w, b layouts; b may be NULL), plus `residual`
 * (NULL or a tensor of the convolution's output shape [n, c_out, h_out,
 * w_out], the skip input of a residual block; it must not overlap y), then
 * the activation, then
 *   pool = 1: nothing, y[n, c_out, h_out, w_out];
 *   pool > 1 (1-D shapes only: h_in = k_h = 1): non-overlapping max pooling
 *     of `pool` neighbours along w (window = stride = pool, the tail dropped
 *     like k_nn_maxpool_forward), y[n, c_out, 1, w_out / pool];
 *   pool = K_NN_POOL_GLOBAL_AVG: the mean over all h_out w_out positions
 *     (k_nn_global_avgpool_forward, summed in double), y[n, c_out].
 * work: caller-owned scratch of k_nn_conv_fused_work_floats(s, pool) floats,
 * aligned as malloc returns it (the CUDA twin does not touch it). The sums
 * run in a different order than k_nn_conv_forward's GEMM: equal within float
 * rounding, not bit for bit. */
pid_status k_nn_conv_forward_fused(pid_backend *be, const k_nn_conv *s, const float *x,
                                   const float *w, const float *b, const float *residual,
                                   k_nn_act act, int pool, float *y, float *work, pid_error *err);
/* y[n,out] = act(x[n,in] W[out,in]^T + b[out]); b may be NULL. No scratch. */
pid_status k_nn_dense_forward_fused(pid_backend *be, const float *x, const float *w, const float *b,
                                    k_nn_act act, float *y, int n, int in, int out, pid_error *err);

/* ------------------------------------ math shared by the CPU and CUDA twins */

#define K_NN_GELU_K 0.7978845608028654f /* sqrt(2/pi) */
#define K_NN_GELU_C 0.044715f

static PID_HD PID_INLINE float k_nn_gelu(float x)
{
    float u = K_NN_GELU_K * (x + K_NN_GELU_C * x * x * x);
    return 0.5f * x * (1.0f + tanhf(u));
}

static PID_HD PID_INLINE float k_nn_gelu_grad(float x)
{
    float u = K_NN_GELU_K * (x + K_NN_GELU_C * x * x * x);
    float t = tanhf(u);
    return 0.5f * (1.0f + t) +
           0.5f * x * (1.0f - t * t) * K_NN_GELU_K * (1.0f + 3.0f * K_NN_GELU_C * x * x);
}

/* 1 when dropout keeps element i under (seed, step). */
static PID_HD PID_INLINE int k_nn_dropout_keep(uint64_t seed, uint64_t step, size_t i, float p)
{
    pid_u32x4 r = pid_rng_block(seed, step, (uint64_t)(i >> 2));
    return pid_u01f(r.v[i & 3]) > p;
}

/* Softmax cross-entropy of one row of c logits z against an integer label
 * (t == NULL) or soft targets t; writes dz = (p sum(t) - t) * scale when dz
 * is non-NULL and returns the loss. Sums in double on both backends. */
static PID_HD PID_INLINE float k_nn_xent_row(const float *z, int c, int label, const float *t,
                                             double scale, float *dz)
{
    float mx = z[0];
    for (int j = 1; j < c; j++)
        mx = fmaxf(mx, z[j]);
    double se = 0.0;
    for (int j = 0; j < c; j++)
        se += exp((double)z[j] - (double)mx);
    double lse = (double)mx + log(se), loss = 0.0, tsum = 1.0;
    if (t) {
        tsum = 0.0;
        for (int j = 0; j < c; j++) {
            loss -= (double)t[j] * ((double)z[j] - lse);
            tsum += (double)t[j];
        }
    } else {
        loss = lse - (double)z[label];
    }
    if (dz)
        for (int j = 0; j < c; j++) {
            double tj = t ? (double)t[j] : (double)(j == label);
            dz[j] = (float)((exp((double)z[j] - lse) * tsum - tj) * scale);
        }
    return (float)loss;
}

/* Sigmoid BCE of one row (stable softplus form); dz = (sigmoid(z) - t) * scale. */
static PID_HD PID_INLINE float k_nn_bce_row(const float *z, const float *t, int c, double scale,
                                            float *dz)
{
    double loss = 0.0;
    for (int j = 0; j < c; j++) {
        double zj = z[j], tj = t[j];
        loss += (zj > 0.0 ? zj : 0.0) - tj * zj + log1p(exp(-fabs(zj)));
        if (dz) dz[j] = (float)((1.0 / (1.0 + exp(-zj)) - tj) * scale);
    }
    return (float)loss;
}

/* probs = softmax(z / temperature) for one row (probs may alias z). */
static PID_HD PID_INLINE void k_nn_softmax_row(const float *z, float *probs, int c, float inv_t)
{
    float mx = z[0];
    for (int j = 1; j < c; j++)
        mx = fmaxf(mx, z[j]);
    double se = 0.0;
    for (int j = 0; j < c; j++)
        se += exp(((double)z[j] - (double)mx) * (double)inv_t);
    for (int j = 0; j < c; j++)
        probs[j] = (float)(exp(((double)z[j] - (double)mx) * (double)inv_t) / se);
}

/* One AdamW element; bc1 = 1 - b1^t, bc2 = 1 - b2^t (computed once by the host). */
static PID_HD PID_INLINE void k_nn_adamw_elem(const k_nn_adamw *hp, float bc1, float bc2, float *p,
                                              float g, float *m, float *v)
{
    float pv = *p * (1.0f - hp->lr * hp->weight_decay);
    float mv = hp->beta1 * *m + (1.0f - hp->beta1) * g;
    float vv = hp->beta2 * *v + (1.0f - hp->beta2) * g * g;
    *m = mv;
    *v = vv;
    *p = pv - hp->lr * (mv / bc1) / (sqrtf(vv / bc2) + hp->eps);
}

/* ------------------------------------------------ CUDA twins (internal)
 * Same signatures as above; called only by the dispatchers after their
 * checks. In a CPU-only build they return PID_ERR_UNSUPPORTED. */
pid_status k_nn_dense_forward_cuda(pid_backend *be, const float *x, const float *w, const float *b,
                                   float *y, int n, int in, int out, pid_error *err);
pid_status k_nn_dense_backward_cuda(pid_backend *be, const float *x, const float *w,
                                    const float *dy, float *dx, float *dw, float *db, int n, int in,
                                    int out, pid_error *err);
pid_status k_nn_relu_forward_cuda(pid_backend *be, const float *x, float *y, size_t count,
                                  pid_error *err);
pid_status k_nn_relu_backward_cuda(pid_backend *be, const float *x, const float *dy, float *dx,
                                   size_t count, pid_error *err);
pid_status k_nn_gelu_forward_cuda(pid_backend *be, const float *x, float *y, size_t count,
                                  pid_error *err);
pid_status k_nn_gelu_backward_cuda(pid_backend *be, const float *x, const float *dy, float *dx,
                                   size_t count, pid_error *err);
pid_status k_nn_add_cuda(pid_backend *be, const float *a, const float *b, float *y, size_t count,
                         pid_error *err);
pid_status k_nn_dropout_forward_cuda(pid_backend *be, const float *x, float *y, size_t count,
                                     float p, uint64_t seed, uint64_t step, pid_error *err);
pid_status k_nn_dropout_backward_cuda(pid_backend *be, const float *dy, float *dx, size_t count,
                                      float p, uint64_t seed, uint64_t step, pid_error *err);
pid_status k_nn_softmax_xent_cuda(pid_backend *be, const float *logits, const int32_t *labels,
                                  float *loss, float *dlogits, int n, int c, pid_error *err);
pid_status k_nn_softmax_xent_soft_cuda(pid_backend *be, const float *logits, const float *targets,
                                       float *loss, float *dlogits, int n, int c, pid_error *err);
pid_status k_nn_sigmoid_bce_cuda(pid_backend *be, const float *logits, const float *targets,
                                 float *loss, float *dlogits, int n, int c, pid_error *err);
pid_status k_nn_softmax_cuda(pid_backend *be, const float *logits, float *probs, int n, int c,
                             float temperature, pid_error *err);
pid_status k_nn_adamw_step_cuda(pid_backend *be, const k_nn_adamw *hp, int t, float *param,
                                const float *grad, float *m, float *v, size_t count,
                                pid_error *err);
pid_status k_nn_conv_forward_cuda(pid_backend *be, const k_nn_conv *s, const float *x,
                                  const float *w, const float *b, float *y, float *work,
                                  pid_error *err);
pid_status k_nn_conv_backward_cuda(pid_backend *be, const k_nn_conv *s, const float *x,
                                   const float *w, const float *dy, float *dx, float *dw, float *db,
                                   float *work, pid_error *err);
pid_status k_nn_maxpool_forward_cuda(pid_backend *be, const k_nn_pool *s, const float *x, float *y,
                                     int32_t *argmax, pid_error *err);
pid_status k_nn_maxpool_backward_cuda(pid_backend *be, const k_nn_pool *s, const float *dy,
                                      const int32_t *argmax, float *dx, pid_error *err);
pid_status k_nn_avgpool_forward_cuda(pid_backend *be, const k_nn_pool *s, const float *x, float *y,
                                     pid_error *err);
pid_status k_nn_avgpool_backward_cuda(pid_backend *be, const k_nn_pool *s, const float *dy,
                                      float *dx, pid_error *err);
pid_status k_nn_global_avgpool_forward_cuda(pid_backend *be, const float *x, float *y, int n, int c,
                                            int l, pid_error *err);
pid_status k_nn_global_avgpool_backward_cuda(pid_backend *be, const float *dy, float *dx, int n,
                                             int c, int l, pid_error *err);
pid_status k_nn_batchnorm_forward_train_cuda(pid_backend *be, const float *x, const float *gamma,
                                             const float *beta, float *y, int n, int c, int l,
                                             float eps, float momentum, float *running_mean,
                                             float *running_var, float *save_mean, float *save_rstd,
                                             pid_error *err);
pid_status k_nn_batchnorm_forward_infer_cuda(pid_backend *be, const float *x, const float *gamma,
                                             const float *beta, const float *running_mean,
                                             const float *running_var, float *y, int n, int c,
                                             int l, float eps, pid_error *err);
pid_status k_nn_batchnorm_backward_cuda(pid_backend *be, const float *x, const float *gamma,
                                        const float *save_mean, const float *save_rstd,
                                        const float *dy, float *dx, float *dgamma, float *dbeta,
                                        int n, int c, int l, pid_error *err);
pid_status k_nn_batchnorm_fold_cuda(pid_backend *be, float *w, float *b, const float *gamma,
                                    const float *beta, const float *running_mean,
                                    const float *running_var, float eps, int c_out, int k,
                                    pid_error *err);
pid_status k_nn_conv_forward_fused_cuda(pid_backend *be, const k_nn_conv *s, const float *x,
                                        const float *w, const float *b, const float *residual,
                                        k_nn_act act, int pool, float *y, float *work,
                                        pid_error *err);
pid_status k_nn_dense_forward_fused_cuda(pid_backend *be, const float *x, const float *w,
                                         const float *b, k_nn_act act, float *y, int n, int in,
                                         int out, pid_error *err);

#ifdef __cplusplus
}
#endif
#endif
