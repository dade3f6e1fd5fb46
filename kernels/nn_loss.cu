/* CUDA twins of the classification losses (kernels/nn_loss.c): one thread per
 * sample running the same row functions (kernels/nn.h) as the CPU; class
 * counts are small (phases), batches supply the parallelism. */
#include "kernels/backend_internal.h"
#include "kernels/cuda_check.cuh"
#include "kernels/nn.h"

/* Integer labels out of range give a NaN loss row (the CPU rejects them up
 * front; a device-side check would need a sync). */
static __global__ void xent_kernel(const float *z, const int32_t *labels, const float *t,
                                   float *loss, float *dz, int n, int c)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    size_t o = (size_t)i * c;
    if (!t && (labels[i] < 0 || labels[i] >= c)) {
        loss[i] = nanf("");
        if (dz)
            for (int j = 0; j < c; j++)
                dz[o + j] = nanf("");
        return;
    }
    loss[i] =
        k_nn_xent_row(z + o, c, t ? 0 : labels[i], t ? t + o : NULL, 1.0 / n, dz ? dz + o : NULL);
}

static __global__ void bce_kernel(const float *z, const float *t, float *loss, float *dz, int n,
                                  int c)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    size_t o = (size_t)i * c;
    loss[i] = k_nn_bce_row(z + o, t + o, c, 1.0 / n, dz ? dz + o : NULL);
}

static __global__ void softmax_kernel(const float *z, float *p, int n, int c, float inv_t)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    k_nn_softmax_row(z + (size_t)i * c, p + (size_t)i * c, c, inv_t);
}

#define LOSS_THREADS 128

#define LAUNCH(kernel, ...)                                                                        \
    pid_status st = PID_OK;                                                                        \
    cudaStream_t s = (cudaStream_t)pid_backend_cuda_stream(be);                                    \
    kernel<<<(n + LOSS_THREADS - 1) / LOSS_THREADS, LOSS_THREADS, 0, s>>>(__VA_ARGS__);            \
    PID_CUDA_CHECK_LAUNCH();                                                                       \
    fail:                                                                                          \
    return st

extern "C" pid_status k_nn_softmax_xent_cuda(pid_backend *be, const float *logits,
                                             const int32_t *labels, float *loss, float *dlogits,
                                             int n, int c, pid_error *err)
{
    LAUNCH(xent_kernel, logits, labels, NULL, loss, dlogits, n, c);
}

extern "C" pid_status k_nn_softmax_xent_soft_cuda(pid_backend *be, const float *logits,
                                                  const float *targets, float *loss, float *dlogits,
                                                  int n, int c, pid_error *err)
{
    LAUNCH(xent_kernel, logits, NULL, targets, loss, dlogits, n, c);
}

extern "C" pid_status k_nn_sigmoid_bce_cuda(pid_backend *be, const float *logits,
                                            const float *targets, float *loss, float *dlogits,
                                            int n, int c, pid_error *err)
{
    LAUNCH(bce_kernel, logits, targets, loss, dlogits, n, c);
}

extern "C" pid_status k_nn_softmax_cuda(pid_backend *be, const float *logits, float *probs, int n,
                                        int c, float temperature, pid_error *err)
{
    LAUNCH(softmax_kernel, logits, probs, n, c, 1.0f / temperature);
}
