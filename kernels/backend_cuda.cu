/* CUDA side of the backend context: device choice, one stream and one cuBLAS
 * handle per context, memory and copies on that stream. */
#include "kernels/backend_internal.h"
#include "kernels/cuda_check.cuh"

#include <stdio.h>

extern "C" int pid_cuda_device_count_impl(void)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError(); /* clear the sticky "no driver" error */
        return 0;
    }
    return n;
}

extern "C" pid_status pid_cuda_init_impl(pid_backend *be, pid_error *err)
{
    pid_status st = PID_OK;
    cudaStream_t stream = NULL;
    cublasHandle_t h = NULL;
    cudaDeviceProp prop;
    be->cuda_device = 0;
    PID_CUDA_CHECK(cudaSetDevice(be->cuda_device));
    PID_CUDA_CHECK(cudaGetDeviceProperties(&prop, be->cuda_device));
    PID_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    PID_CUBLAS_CHECK(cublasCreate(&h));
    PID_CUBLAS_CHECK(cublasSetStream(h, stream));
    be->stream = stream;
    be->cublas = h;
    snprintf(be->desc, sizeof be->desc, "CUDA: %s (sm_%d%d, %.1f GiB)", prop.name, prop.major,
             prop.minor, (double)prop.totalGlobalMem / (1024.0 * 1024.0 * 1024.0));
    return PID_OK;
fail:
    if (h) cublasDestroy(h);
    if (stream) cudaStreamDestroy(stream);
    return st;
}

extern "C" void pid_cuda_fini_impl(pid_backend *be)
{
    if (be->cublas) cublasDestroy((cublasHandle_t)be->cublas);
    if (be->stream) cudaStreamDestroy((cudaStream_t)be->stream);
    be->cublas = NULL;
    be->stream = NULL;
}

extern "C" pid_status pid_cuda_alloc_impl(void **ptr, size_t bytes, pid_error *err)
{
    pid_status st = PID_OK;
    PID_CUDA_CHECK(cudaMalloc(ptr, bytes ? bytes : 1));
    return PID_OK;
fail:
    *ptr = NULL;
    return st;
}

extern "C" void pid_cuda_free_impl(void *ptr)
{
    cudaFree(ptr);
}

extern "C" pid_status pid_cuda_copy_impl(pid_backend *be, void *dst, const void *src, size_t bytes,
                                         int to_device, pid_error *err)
{
    pid_status st = PID_OK;
    cudaStream_t s = (cudaStream_t)be->stream;
    PID_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes,
                                   to_device ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost, s));
    if (!to_device) PID_CUDA_CHECK(cudaStreamSynchronize(s));
    return PID_OK;
fail:
    return st;
}

extern "C" pid_status pid_cuda_sync_impl(pid_backend *be, pid_error *err)
{
    pid_status st = PID_OK;
    PID_CUDA_CHECK(cudaStreamSynchronize((cudaStream_t)be->stream));
    return PID_OK;
fail:
    return st;
}
