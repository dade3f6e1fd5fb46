/* AdamW optimizer step, CPU reference: Adam moments with bias correction and
 * decoupled weight decay over one flat parameter array (its gradient and m/v
 * state alongside); the CUDA twin (nn_optim.cu) shares the element math. */
#include "kernels/nn.h"

#include <math.h>

#ifndef PHASEID_HAVE_CUDA
pid_status k_nn_adamw_step_cuda(pid_backend *be, const k_nn_adamw *hp, int t, float *param,
                                const float *grad, float *m, float *v, size_t count, pid_error *err)
{
    return pid_fail(err, PID_ERR_UNSUPPORTED, "nn adamw: this phaseid was built without CUDA");
}
#endif

pid_status k_nn_adamw_step(pid_backend *be, const k_nn_adamw *hp, int t, float *param,
                           const float *grad, float *m, float *v, size_t count, pid_error *err)
{
    if (!be || !hp) return pid_fail(err, PID_ERR_ARG, "nn adamw: NULL backend or settings");
    if (t < 1) return pid_fail(err, PID_ERR_ARG, "nn adamw: step must be >= 1, got %d", t);
    if (!(hp->lr >= 0.0f) || !(hp->beta1 >= 0.0f && hp->beta1 < 1.0f) ||
        !(hp->beta2 >= 0.0f && hp->beta2 < 1.0f) || !(hp->eps > 0.0f) ||
        !(hp->weight_decay >= 0.0f))
        return pid_fail(err, PID_ERR_ARG,
                        "nn adamw: need lr >= 0, betas in [0, 1), eps > 0, weight decay >= 0");
    if (count == 0) return PID_OK;
    if (!param || !grad || !m || !v)
        return pid_fail(err, PID_ERR_ARG, "nn adamw: NULL parameter, gradient or state array");
    if (pid_backend_kind(be) == PID_DEVICE_CUDA)
        return k_nn_adamw_step_cuda(be, hp, t, param, grad, m, v, count, err);
    const float bc1 = (float)(1.0 - pow(hp->beta1, t)), bc2 = (float)(1.0 - pow(hp->beta2, t));
    for (size_t i = 0; i < count; i++)
        k_nn_adamw_elem(hp, bc1, bc2, &param[i], grad[i], &m[i], &v[i]);
    return PID_OK;
}
