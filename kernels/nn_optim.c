/* AdamW optimizer step, CPU reference: Adam moments with bias correction and
 * decoupled weight decay over one flat parameter array (its gradient and m/v
 * state alongside); the CUDA twin (nn_optim.cu) shares the element math.
 * The CPU loop runs over ranges of parameters on the backend's threads. */
#include "kernels/nn.h"

#include <math.h>

#include "kernels/par.h"

#ifndef PHASEID_HAVE_CUDA
pid_status k_nn_adamw_step_cuda(pid_backend *be, const k_nn_adamw *hp, int t, float *param,
                                const float *grad, float *m, float *v, size_t count, pid_error *err)
{
    return pid_fail(err, PID_ERR_UNSUPPORTED, "nn adamw: this phaseid was built without CUDA");
}
#endif

typedef struct {
    const k_nn_adamw *hp;
    float bc1, bc2; /* bias corrections 1 - beta^t */
    float *param;
    const float *grad;
    float *m, *v;
} adamw_par;

static void adamw_range(void *ctx, size_t i0, size_t i1)
{
    const adamw_par *p = ctx;
    for (size_t i = i0; i < i1; i++)
        k_nn_adamw_elem(p->hp, p->bc1, p->bc2, &p->param[i], p->grad[i], &p->m[i], &p->v[i]);
}

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
    adamw_par p = {
        hp, (float)(1.0 - pow(hp->beta1, t)), (float)(1.0 - pow(hp->beta2, t)), param, grad, m, v};
    k_par_for(be, count, k_par_grain(16), adamw_range, &p);
    return PID_OK;
}
