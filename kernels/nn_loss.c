/* Classification losses, CPU reference: softmax cross-entropy with integer
 * labels or soft targets, sigmoid binary cross-entropy for multi-hot targets
 * (per-sample loss + gradient of the batch mean), and tempered softmax. */
#include "kernels/nn.h"

#define NO_CUDA                                                                                    \
    return pid_fail(err, PID_ERR_UNSUPPORTED, "nn loss: this phaseid was built without CUDA")

#ifndef PHASEID_HAVE_CUDA
pid_status k_nn_softmax_xent_cuda(pid_backend *be, const float *logits, const int32_t *labels,
                                  float *loss, float *dlogits, int n, int c, pid_error *err)
{
    NO_CUDA;
}
pid_status k_nn_softmax_xent_soft_cuda(pid_backend *be, const float *logits, const float *targets,
                                       float *loss, float *dlogits, int n, int c, pid_error *err)
{
    NO_CUDA;
}
pid_status k_nn_sigmoid_bce_cuda(pid_backend *be, const float *logits, const float *targets,
                                 float *loss, float *dlogits, int n, int c, pid_error *err)
{
    NO_CUDA;
}
pid_status k_nn_softmax_cuda(pid_backend *be, const float *logits, float *probs, int n, int c,
                             float temperature, pid_error *err)
{
    NO_CUDA;
}
#endif

static pid_status loss_check(const pid_backend *be, const char *op, const void *logits,
                             const void *target, const void *loss, int n, int c, pid_error *err)
{
    if (!be) return pid_fail(err, PID_ERR_ARG, "nn %s: NULL backend", op);
    if (n <= 0 || c <= 0)
        return pid_fail(err, PID_ERR_ARG, "nn %s: sizes must be positive (n=%d c=%d)", op, n, c);
    if (!logits || !target || !loss)
        return pid_fail(err, PID_ERR_ARG, "nn %s: NULL logits, targets or output", op);
    return PID_OK;
}

pid_status k_nn_softmax_xent(pid_backend *be, const float *logits, const int32_t *labels,
                             float *loss, float *dlogits, int n, int c, pid_error *err)
{
    pid_status st = loss_check(be, "softmax xent", logits, labels, loss, n, c, err);
    if (st) return st;
    if (pid_backend_kind(be) == PID_DEVICE_CUDA)
        return k_nn_softmax_xent_cuda(be, logits, labels, loss, dlogits, n, c, err);
    for (int i = 0; i < n; i++)
        if (labels[i] < 0 || labels[i] >= c)
            return pid_fail(err, PID_ERR_ARG,
                            "nn softmax xent: label %d of sample %d not in [0, %d)", (int)labels[i],
                            i, c);
    for (int i = 0; i < n; i++)
        loss[i] = k_nn_xent_row(logits + (size_t)i * c, c, labels[i], NULL, 1.0 / n,
                                dlogits ? dlogits + (size_t)i * c : NULL);
    return PID_OK;
}

pid_status k_nn_softmax_xent_soft(pid_backend *be, const float *logits, const float *targets,
                                  float *loss, float *dlogits, int n, int c, pid_error *err)
{
    pid_status st = loss_check(be, "softmax xent soft", logits, targets, loss, n, c, err);
    if (st) return st;
    if (pid_backend_kind(be) == PID_DEVICE_CUDA)
        return k_nn_softmax_xent_soft_cuda(be, logits, targets, loss, dlogits, n, c, err);
    for (int i = 0; i < n; i++)
        loss[i] = k_nn_xent_row(logits + (size_t)i * c, c, 0, targets + (size_t)i * c, 1.0 / n,
                                dlogits ? dlogits + (size_t)i * c : NULL);
    return PID_OK;
}

pid_status k_nn_sigmoid_bce(pid_backend *be, const float *logits, const float *targets, float *loss,
                            float *dlogits, int n, int c, pid_error *err)
{
    pid_status st = loss_check(be, "sigmoid bce", logits, targets, loss, n, c, err);
    if (st) return st;
    if (pid_backend_kind(be) == PID_DEVICE_CUDA)
        return k_nn_sigmoid_bce_cuda(be, logits, targets, loss, dlogits, n, c, err);
    for (int i = 0; i < n; i++)
        loss[i] = k_nn_bce_row(logits + (size_t)i * c, targets + (size_t)i * c, c, 1.0 / n,
                               dlogits ? dlogits + (size_t)i * c : NULL);
    return PID_OK;
}

pid_status k_nn_softmax(pid_backend *be, const float *logits, float *probs, int n, int c,
                        float temperature, pid_error *err)
{
    pid_status st = loss_check(be, "softmax", logits, probs, probs, n, c, err);
    if (st) return st;
    if (!(temperature > 0.0f) || temperature == INFINITY)
        return pid_fail(err, PID_ERR_ARG, "nn softmax: temperature must be positive and finite");
    if (pid_backend_kind(be) == PID_DEVICE_CUDA)
        return k_nn_softmax_cuda(be, logits, probs, n, c, temperature, err);
    for (int i = 0; i < n; i++)
        k_nn_softmax_row(logits + (size_t)i * c, probs + (size_t)i * c, c, 1.0f / temperature);
    return PID_OK;
}
