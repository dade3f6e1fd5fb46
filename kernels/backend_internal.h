/* Private layout of the backend context, shared by backend.c and the CUDA
 * part (backend_cuda.cu). Not for use outside kernels/. */
#ifndef PID_BACKEND_INTERNAL_H
#define PID_BACKEND_INTERNAL_H

#include "kernels/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

struct pid_backend {
    pid_device_kind kind;
    int n_threads;
    pid_cpu_isa cpu_isa; /* CPU kernels' vector level (detected, may be capped) */
    int cuda_device;
    void *stream; /* cudaStream_t */
    void *cublas; /* cublasHandle_t */
    char desc[256];
};

/* Implemented in backend_cuda.cu (CUDA builds) or as stubs in backend.c. */
int pid_cuda_device_count_impl(void);
pid_status pid_cuda_init_impl(pid_backend *be, pid_error *err);
void pid_cuda_fini_impl(pid_backend *be);
pid_status pid_cuda_alloc_impl(void **ptr, size_t bytes, pid_error *err);
void pid_cuda_free_impl(void *ptr);
pid_status pid_cuda_copy_impl(pid_backend *be, void *dst, const void *src, size_t bytes,
                              int to_device, pid_error *err);
pid_status pid_cuda_sync_impl(pid_backend *be, pid_error *err);

#ifdef __cplusplus
}
#endif
#endif
