/* Checked CUDA / cuBLAS calls for .cu files: record the call, file and line
 * in `err`, set `st` and jump to `fail:`. Every kernel launch is followed by
 * PID_CUDA_CHECK_LAUNCH(). */
#ifndef PID_CUDA_CHECK_CUH
#define PID_CUDA_CHECK_CUH

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "core/status.h"

#define PID_CUDA_CHECK(expr)                                                                       \
    do {                                                                                           \
        cudaError_t ce_ = (expr);                                                                  \
        if (ce_ != cudaSuccess) {                                                                  \
            st = pid_fail(err, PID_ERR_DEVICE, "%s: %s (%s:%d)", #expr, cudaGetErrorString(ce_),   \
                          __FILE__, __LINE__);                                                     \
            goto fail;                                                                             \
        }                                                                                          \
    } while (0)

#define PID_CUDA_CHECK_LAUNCH() PID_CUDA_CHECK(cudaGetLastError())

#define PID_CUBLAS_CHECK(expr)                                                                     \
    do {                                                                                           \
        cublasStatus_t cs_ = (expr);                                                               \
        if (cs_ != CUBLAS_STATUS_SUCCESS) {                                                        \
            st = pid_fail(err, PID_ERR_DEVICE, "%s: cuBLAS status %d (%s:%d)", #expr, (int)cs_,    \
                          __FILE__, __LINE__);                                                     \
            goto fail;                                                                             \
        }                                                                                          \
    } while (0)

#endif
