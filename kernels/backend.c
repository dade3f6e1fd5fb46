/* Backend selection and the CPU side of the context. The CUDA side lives in
 * backend_cuda.cu; in CPU-only builds the stubs below refuse politely. */
#include "kernels/backend_internal.h"

#include <cblas.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef PHASEID_HAVE_CUDA
int pid_cuda_device_count_impl(void)
{
    return 0;
}
pid_status pid_cuda_init_impl(pid_backend *be, pid_error *err)
{
    return pid_fail(err, PID_ERR_UNSUPPORTED, "this phaseid was built without CUDA");
}
void pid_cuda_fini_impl(pid_backend *be) {}
pid_status pid_cuda_alloc_impl(void **ptr, size_t bytes, pid_error *err)
{
    return pid_fail(err, PID_ERR_UNSUPPORTED, "this phaseid was built without CUDA");
}
void pid_cuda_free_impl(void *ptr) {}
pid_status pid_cuda_copy_impl(pid_backend *be, void *dst, const void *src, size_t bytes,
                              int to_device, pid_error *err)
{
    return pid_fail(err, PID_ERR_UNSUPPORTED, "this phaseid was built without CUDA");
}
pid_status pid_cuda_sync_impl(pid_backend *be, pid_error *err)
{
    return PID_OK;
}
#endif

pid_cpu_isa pid_cpu_isa_detect(void)
{
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    if (__builtin_cpu_supports("avx512f")) return PID_CPU_ISA_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return PID_CPU_ISA_AVX2;
#endif
    return PID_CPU_ISA_GENERIC;
}

int pid_backend_cuda_built(void)
{
#ifdef PHASEID_HAVE_CUDA
    return 1;
#else
    return 0;
#endif
}

int pid_backend_cuda_device_count(void)
{
    return pid_cuda_device_count_impl();
}

/* The CPU kernels run their loops, OpenBLAS calls included, on their own
 * threads (kernels/par.h), so OpenBLAS itself runs one thread per call.
 * Left at its default (a thread per core), its idle threads spin in
 * sched_yield on the cores the kernels use: 40 % of a training run's CPU
 * samples on the 2-core VM, and 1,437 against 1,698 training patterns/s
 * (300-step runs, benchmarks/RESULTS.md). */
static void blas_one_thread(void)
{
    openblas_set_num_threads(1);
}

pid_status pid_backend_create(pid_backend **out, const char *want, int n_threads, pid_error *err)
{
    static pthread_once_t blas_once = PTHREAD_ONCE_INIT;
    *out = NULL;
    if (!want) want = "auto";
    int use_cuda;
    if (strcmp(want, "cpu") == 0)
        use_cuda = 0;
    else if (strcmp(want, "cuda") == 0)
        use_cuda = 1;
    else if (strcmp(want, "auto") == 0)
        use_cuda = pid_backend_cuda_device_count() > 0;
    else
        return pid_fail(err, PID_ERR_ARG, "unknown device '%s' (expected cpu, cuda or auto)", want);
    if (use_cuda && !pid_backend_cuda_built())
        return pid_fail(err, PID_ERR_UNSUPPORTED,
                        "--device cuda: this phaseid was built without CUDA (nvcc not found)");
    if (use_cuda && pid_backend_cuda_device_count() <= 0)
        return pid_fail(err, PID_ERR_DEVICE, "--device cuda: no CUDA device is visible");

    pid_backend *be = calloc(1, sizeof *be);
    if (!be) return pid_fail(err, PID_ERR_NOMEM, "backend: out of memory");
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    if (online < 1) online = 1;
    be->n_threads = (n_threads > 0 && n_threads < online) ? n_threads : (int)online;
    be->kind = use_cuda ? PID_DEVICE_CUDA : PID_DEVICE_CPU;
    be->cpu_isa = pid_cpu_isa_detect();
    if (use_cuda) {
        pid_status st = pid_cuda_init_impl(be, err);
        if (st) {
            free(be);
            return st;
        }
    } else {
        pthread_once(&blas_once, blas_one_thread);
        snprintf(be->desc, sizeof be->desc, "CPU: %d threads", be->n_threads);
    }
    *out = be;
    return PID_OK;
}

void pid_backend_destroy(pid_backend *be)
{
    if (!be) return;
    if (be->kind == PID_DEVICE_CUDA) pid_cuda_fini_impl(be);
    free(be);
}

pid_device_kind pid_backend_kind(const pid_backend *be)
{
    return be->kind;
}

const char *pid_backend_name(const pid_backend *be)
{
    return be->kind == PID_DEVICE_CUDA ? "cuda" : "cpu";
}

const char *pid_backend_device_desc(const pid_backend *be)
{
    return be->desc;
}

int pid_backend_threads(const pid_backend *be)
{
    return be->n_threads;
}

pid_cpu_isa pid_backend_cpu_isa(const pid_backend *be)
{
    return be->cpu_isa;
}

pid_cpu_isa pid_backend_set_cpu_isa(pid_backend *be, pid_cpu_isa max)
{
    pid_cpu_isa best = pid_cpu_isa_detect();
    be->cpu_isa = max < best ? max : best;
    return be->cpu_isa;
}

const char *pid_cpu_isa_name(pid_cpu_isa isa)
{
    return isa == PID_CPU_ISA_AVX512 ? "avx512" : isa == PID_CPU_ISA_AVX2 ? "avx2" : "generic";
}

pid_status pid_backend_alloc(pid_backend *be, void **ptr, size_t bytes, pid_error *err)
{
    *ptr = NULL;
    if (be->kind == PID_DEVICE_CUDA) return pid_cuda_alloc_impl(ptr, bytes, err);
    *ptr = calloc(bytes ? bytes : 1, 1);
    if (!*ptr) return pid_fail(err, PID_ERR_NOMEM, "backend: cannot allocate %zu bytes", bytes);
    return PID_OK;
}

void pid_backend_free(pid_backend *be, void *ptr)
{
    if (!ptr) return;
    if (be->kind == PID_DEVICE_CUDA)
        pid_cuda_free_impl(ptr);
    else
        free(ptr);
}

pid_status pid_backend_upload(pid_backend *be, void *dst_dev, const void *src_host, size_t bytes,
                              pid_error *err)
{
    if (be->kind == PID_DEVICE_CUDA)
        return pid_cuda_copy_impl(be, dst_dev, src_host, bytes, 1, err);
    memmove(dst_dev, src_host, bytes);
    return PID_OK;
}

pid_status pid_backend_download(pid_backend *be, void *dst_host, const void *src_dev, size_t bytes,
                                pid_error *err)
{
    if (be->kind == PID_DEVICE_CUDA)
        return pid_cuda_copy_impl(be, dst_host, src_dev, bytes, 0, err);
    memmove(dst_host, src_dev, bytes);
    return PID_OK;
}

pid_status pid_backend_sync(pid_backend *be, pid_error *err)
{
    if (be->kind == PID_DEVICE_CUDA) return pid_cuda_sync_impl(be, err);
    return PID_OK;
}

void *pid_backend_cuda_stream(pid_backend *be)
{
    return be->stream;
}

void *pid_backend_cublas(pid_backend *be)
{
    return be->cublas;
}
