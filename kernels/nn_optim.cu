/* CUDA twin of the AdamW step (kernels/nn_optim.c): one thread per
 * parameter (grid-stride), the bias corrections computed once on the host
 * exactly as the CPU does, the element update shared through kernels/nn.h. */
#include "kernels/backend_internal.h"
#include "kernels/cuda_check.cuh"
#include "kernels/nn.h"

#include <math.h>

static __global__ void adamw_kernel(k_nn_adamw hp, float bc1, float bc2, float *p, const float *g,
                                    float *m, float *v, size_t count)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < count;
         i += (size_t)gridDim.x * blockDim.x)
        k_nn_adamw_elem(&hp, bc1, bc2, &p[i], g[i], &m[i], &v[i]);
}

extern "C" pid_status k_nn_adamw_step_cuda(pid_backend *be, const k_nn_adamw *hp, int t,
                                           float *param, const float *grad, float *m, float *v,
                                           size_t count, pid_error *err)
{
    pid_status st = PID_OK;
    cudaStream_t s = (cudaStream_t)pid_backend_cuda_stream(be);
    const float bc1 = (float)(1.0 - pow(hp->beta1, t)), bc2 = (float)(1.0 - pow(hp->beta2, t));
    size_t blocks = (count + 255) / 256;
    if (blocks > 65535 * 8) blocks = 65535 * 8;
    adamw_kernel<<<(unsigned)blocks, 256, 0, s>>>(*hp, bc1, bc2, param, grad, m, v, count);
    PID_CUDA_CHECK_LAUNCH();
fail:
    return st;
}
