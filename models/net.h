/* A network instance: a built spec (models/spec.h) bound to a compute backend
 * with its parameters, gradients, AdamW state and activation buffers, and the
 * forward / loss+backward / optimizer step over a batch, on the CPU or CUDA.
 *
 * Memory (rule 6): the trainable parameters live in ONE backend allocation,
 * their gradients in one, AdamW m in one and v in one, all with the same
 * flat layout (per-layer offsets: weight matrices first, which take weight
 * decay, then biases and BN gamma/beta, which do not). BN running mean and
 * variance live in a separate "buffers" array (one allocation). Activations,
 * their gradients and scratch space are one more float allocation sized for
 * max_batch (plus one int32 allocation for max-pool argmax indices). The net
 * owns all of them; net_destroy frees them.
 *
 * Tensors passed in (x, labels, targets) are memory of the net's backend
 * (host memory for the CPU backend, device memory for CUDA), like every op in
 * kernels/nn.h; net_input_buffer gives a net-owned staging buffer to upload
 * into. Parameters go in and out through host copies (net_params /
 * net_set_params).
 *
 * Inference-only nets (net_create_infer) hold the parameters with BN folded
 * in, the running stats, the logits and a few reused activation buffers per
 * CPU worker thread: no gradients, no AdamW state, no per-layer outputs. */
#ifndef PID_MODELS_NET_H
#define PID_MODELS_NET_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "kernels/backend.h"
#include "models/modelfile.h"
#include "models/spec.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct net net;

/* Create a network for a BUILT spec on backend `be` (both borrowed: they must
 * outlive the net; the net copies the layer list and keeps no pointer to the
 * spec). max_batch >= 1 sizes the activation buffers. Weights get He-normal
 * init (std sqrt(2/fan_in)) except the head's, which get Xavier-normal (std
 * sqrt(2/(fan_in+fan_out))); biases and BN beta 0, gamma 1, running mean 0,
 * running var 1. Draws come from Philox under `seed` (stream = layer index),
 * so the same seed gives identical parameters on every backend.
 * Rejects (PID_ERR_UNSUPPORTED, message naming the layer) what the kernels
 * cannot run, e.g. asymmetric padding from p=same with an even kernel span.
 * On failure *out is NULL and nothing is leaked. */
pid_status net_create(net **out, const net_spec *spec, pid_backend *be, int max_batch,
                      uint64_t seed, pid_error *err);
/* Frees everything the net owns; accepts NULL. */
void net_destroy(net *n);

/* Options of an inference-only net (net_create_infer); zero = default. */
typedef struct {
    int n_threads; /* CPU worker threads (0 = pid_backend_threads(be)); CUDA: always 1 */
    int chunk;     /* CPU: frames per worker step (0 = automatic, <= 64); CUDA: max_batch */
    int reference; /* 1 = run the reference ops of kernels/nn.h (im2col + BLAS conv, separate
                    * activation and pooling) instead of the fused direct ones: for tests and
                    * comparisons; CUDA nets always do (cuBLAS) */
} net_infer_opts;

/* An inference-only network: forward in inference mode and nothing else.
 * params[net_param_count] and buffers[net_buffer_count] (host, borrowed for
 * the call; buffers may be NULL for BN running mean 0 / var 1) are the
 * trained arrays in net_params' layout. Each BN that directly follows a
 * convolution or dense layer is folded into its weights and bias
 * (k_nn_batchnorm_fold); an activation, and a max pool with window =
 * stride after a 1-D convolution, run inside that layer's kernel; dropout,
 * flatten and the residual skip cost nothing. There are no gradients and no
 * AdamW state, and the activations are not kept per layer: each CPU worker
 * owns a few buffers reused along the net (sized for the largest layer
 * outputs alive at once, times its chunk of frames), so memory does not grow
 * with max_batch beyond the logits. On the CPU, net_forward splits the batch
 * into chunks run by opts->n_threads worker threads (pthreads; the calling
 * thread is one of them), each running the whole net on its chunks with
 * single-threaded kernels. Results equal net_forward(training = 0) of a
 * training net with the same arrays within float rounding (the fold and the
 * kernels' summation order differ). opts may be NULL. Rejects non-finite
 * params/buffers (PID_ERR_ARG) and what net_create rejects. On failure *out
 * is NULL and nothing is leaked.
 * net_forward (training must be 0), net_logits, net_fraction_logits,
 * net_input_buffer, net_set_params (re-folds), the size accessors and the
 * profile below work on it; net_loss_backward, net_step and net_params answer
 * PID_ERR_UNSUPPORTED, net_grads NULL. One net runs one forward at a time. */
pid_status net_create_infer(net **out, const net_spec *spec, pid_backend *be, int max_batch,
                            const float *params, const float *buffers, const net_infer_opts *opts,
                            pid_error *err);
/* 1 for a net from net_create_infer. */
int net_is_infer(const net *n);
/* Inference nets: worker threads, frames per chunk, and the bytes of backend
 * memory the net holds (parameters, logits, worker buffers). 0 otherwise. */
int net_infer_threads(const net *n);
int net_infer_chunk(const net *n);
size_t net_infer_bytes(const net *n);

/* Per-op profile of an inference net: the ops it runs (a layer with what is
 * fused into it, e.g. "conv1d(16,k9,s2,p4)+bn+relu+maxpool(2)"), their
 * inference FLOPs per frame (spec counting), and, while profiling is on, the
 * seconds spent in each summed over the worker threads (CPU time of the
 * workers; on CUDA only the launch time). net_profile_reset zeroes the times
 * and sets profiling on (1) or off (0). */
typedef struct {
    char name[192];
    int64_t flops; /* per frame */
    double seconds;
} net_op_profile;
size_t net_profile_count(const net *n);
void net_profile_reset(net *n, int on);
pid_status net_profile_get(const net *n, size_t i, net_op_profile *out, pid_error *err);

/* Run the network on x[batch, input values] (backend memory, caller-owned;
 * the net keeps the pointer: x must stay valid and unchanged until the
 * following net_loss_backward, which needs it for the first layer's weight
 * gradient). training = 1: BN uses batch statistics and
 * updates its running stats, dropout is on (a fresh mask per call);
 * training = 0: running statistics, no dropout. 1 <= batch <= max_batch.
 * The logits are then at net_logits (valid until the next forward). */
pid_status net_forward(net *n, const float *x, int batch, int training, pid_error *err);

/* Targets for net_loss_backward, all in backend memory, caller-owned:
 *   labels     softmax head: int32 class per sample [batch] (or NULL: use targets)
 *   targets    [batch, n_classes]: soft targets (softmax head, when labels is
 *              NULL) or multi-hot targets in [0,1] (sigmoid head; required)
 *   fractions  fractions head only: target phase fractions [batch, n_classes]
 *              (rows summing to 1), trained by softmax cross-entropy; NULL =
 *              the fraction head gets no loss (zero gradient)
 *   fraction_weight  its weight in the total loss (0 = the default 1). */
typedef struct {
    const int32_t *labels;
    const float *targets;
    const float *fractions;
    float fraction_weight;
} net_targets;

/* Loss of the LAST forward, which must have been a training forward of the
 * same batch (the BN backward needs its batch statistics), and the gradient
 * of that batch-mean loss for every parameter (overwriting the gradient
 * array). *loss (may be NULL) receives the batch mean: head loss +
 * fraction_weight * fraction loss. Synchronizes the backend. */
pid_status net_loss_backward(net *n, const net_targets *t, int batch, double *loss, pid_error *err);

/* One AdamW step (beta1 0.9, beta2 0.999, eps 1e-8) with the current
 * gradients; weight decay is applied to weight matrices only (not to biases
 * or BN gamma/beta). */
pid_status net_step(net *n, float lr, float weight_decay, pid_error *err);

/* Sizes: trainable parameters; BN running-stat buffers (mean then var per BN
 * layer, in layer order); classes; input values per frame; max_batch. */
size_t net_param_count(const net *n);
size_t net_buffer_count(const net *n);
int64_t net_n_classes(const net *n);
int64_t net_input_count(const net *n);
int net_max_batch(const net *n);
/* 1 when the spec's head adds a fractions output. */
int net_has_fractions(const net *n);

/* Host copies for saving: params[net_param_count] and (may be NULL)
 * buffers[net_buffer_count], caller-owned. Synchronizes the backend. */
pid_status net_params(net *n, float *params, float *buffers, pid_error *err);
/* Load host arrays (same layout; buffers may be NULL to keep the current
 * running stats). Resets the AdamW state and step count. Non-finite values
 * are rejected with PID_ERR_ARG (nothing changed). */
pid_status net_set_params(net *n, const float *params, const float *buffers, pid_error *err);

/* AdamW state, for checkpoints that resume exactly: host copies of the first
 * and second moments m[net_param_count], v[net_param_count] (same layout as
 * the parameters) and the step count *t. Synchronizes the backend.
 * PID_ERR_UNSUPPORTED for an inference net. */
pid_status net_optimizer_state(net *n, float *m, float *v, int64_t *t, pid_error *err);
/* Restore that state (call after net_set_params, which resets it): m finite,
 * v finite and >= 0, 0 <= t < 2^31; otherwise PID_ERR_ARG and nothing
 * changes. */
pid_status net_set_optimizer_state(net *n, const float *m, const float *v, int64_t t,
                                   pid_error *err);

/* The network fields of a model record without training, for benchmarks and
 * tests that need a model file: the canonical spec of spec_text built on
 * *input with n_classes outputs (arch_spec, input, n_classes, head,
 * head_fractions) and the initial weights net_create draws from `seed` on a
 * CPU backend (n_params / params, n_buffers / buffers; any previous arrays of
 * m are freed). The other fields (phases, grid, calibration, provenance) are
 * the caller's. On failure m's network fields are left partly filled; the
 * caller destroys m. */
pid_status net_random_model(mf_model *m, const char *spec_text, const net_shape *input,
                            int64_t n_classes, uint64_t seed, pid_error *err);

/* Backend-memory views owned by the net (valid until net_destroy):
 * logits[max_batch, n_classes] of the last forward (head before its
 * softmax/sigmoid); fraction logits (before their softmax; NULL without a
 * fractions head);
 * gradients[net_param_count] of the last backward; a staging buffer of
 * max_batch * net_input_count floats the caller may upload into and pass to
 * net_forward. */
const float *net_logits(const net *n);
const float *net_fraction_logits(const net *n);
const float *net_grads(const net *n);
/* Inference nets on the CPU allocate the staging buffer on first use (NULL
 * when out of memory); pass host frames to net_forward directly instead. */
float *net_input_buffer(net *n);

#ifdef __cplusplus
}
#endif
#endif
