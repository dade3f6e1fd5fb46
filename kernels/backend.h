/* The compute backend: a context (device, stream, cuBLAS handle) passed
 * explicitly to every operation, and run-time selection between the CPU
 * reference and the CUDA implementation ("cpu", "cuda" or "auto"). There is
 * no global device state: two contexts may coexist in one process. */
#ifndef PID_BACKEND_H
#define PID_BACKEND_H

#include <stddef.h>

#include "core/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { PID_DEVICE_CPU = 0, PID_DEVICE_CUDA = 1 } pid_device_kind;

typedef struct pid_backend pid_backend;

/* Vector instruction level the CPU kernels may use (kernels/nn_infer.c picks
 * its micro-kernels by it): plain C, AVX2 + FMA, AVX-512F. */
typedef enum { PID_CPU_ISA_GENERIC = 0, PID_CPU_ISA_AVX2 = 1, PID_CPU_ISA_AVX512 = 2 } pid_cpu_isa;

/* Create a backend. `want` is "cpu", "cuda" or "auto" (NULL = "auto"): auto
 * picks CUDA when this build has it and cudaGetDeviceCount reports a device,
 * else the CPU. Asking for "cuda" without one fails with PID_ERR_DEVICE or
 * PID_ERR_UNSUPPORTED and a message saying why. `n_threads` caps CPU worker
 * threads (0 = all online cores). */
pid_status pid_backend_create(pid_backend **out, const char *want, int n_threads, pid_error *err);
void pid_backend_destroy(pid_backend *be);

pid_device_kind pid_backend_kind(const pid_backend *be);
const char *pid_backend_name(const pid_backend *be); /* "cpu" or "cuda" */
/* Human-readable device description ("CPU: 2 threads", "CUDA: NVIDIA H100 ..."). */
const char *pid_backend_device_desc(const pid_backend *be);
int pid_backend_threads(const pid_backend *be);
/* For a thread that is one of several calling the CPU kernels at once on
 * shares of a batch: while `solo` is 1, the kernels it calls stay on it
 * instead of starting pid_backend_threads() threads of their own (which
 * would put threads x threads on the cores). Per thread; returns the
 * previous setting, to restore. */
int pid_backend_cpu_solo(int solo);

/* The CPU vector level of this backend: the best this CPU supports (checked
 * at pid_backend_create), unless capped. pid_backend_set_cpu_isa caps it at
 * `max` (it never goes above what the CPU supports) and returns the level now
 * in force; tests and benchmarks use it to run the narrower kernels. */
pid_cpu_isa pid_backend_cpu_isa(const pid_backend *be);
pid_cpu_isa pid_backend_set_cpu_isa(pid_backend *be, pid_cpu_isa max);
/* "generic", "avx2" or "avx512". */
const char *pid_cpu_isa_name(pid_cpu_isa isa);
/* The best vector level this CPU supports (and the compiler can target),
 * for CPU code outside a backend. */
pid_cpu_isa pid_cpu_isa_detect(void);

/* 1 if this build includes the CUDA backend; number of visible CUDA devices
 * (0 when none or not built). */
int pid_backend_cuda_built(void);
int pid_backend_cuda_device_count(void);

/* Memory on the backend's device (host memory for the CPU backend). */
pid_status pid_backend_alloc(pid_backend *be, void **ptr, size_t bytes, pid_error *err);
void pid_backend_free(pid_backend *be, void *ptr);
pid_status pid_backend_upload(pid_backend *be, void *dst_dev, const void *src_host, size_t bytes,
                              pid_error *err);
pid_status pid_backend_download(pid_backend *be, void *dst_host, const void *src_dev, size_t bytes,
                                pid_error *err);
pid_status pid_backend_sync(pid_backend *be, pid_error *err);

/* Backend-private: the CUDA stream / cuBLAS handle as void* for .cu files. */
void *pid_backend_cuda_stream(pid_backend *be);
void *pid_backend_cublas(pid_backend *be);

#ifdef __cplusplus
}
#endif
#endif
