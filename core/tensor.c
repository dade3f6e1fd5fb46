/* Host/device tensors. Device memory goes through the CUDA runtime's C API
 * when the CUDA backend is built, and is refused otherwise. */
#include "core/tensor.h"

#include <stdlib.h>
#include <string.h>

#ifdef PHASEID_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

size_t pid_dtype_size(pid_dtype t)
{
    switch (t) {
    case PID_F32:
    case PID_I32:
    case PID_U32:
        return 4;
    case PID_F64:
    case PID_I64:
        return 8;
    case PID_U16:
        return 2;
    case PID_U8:
        return 1;
    }
    return 0;
}

const char *pid_dtype_name(pid_dtype t)
{
    switch (t) {
    case PID_F32:
        return "FP32";
    case PID_F64:
        return "FP64";
    case PID_I32:
        return "INT32";
    case PID_I64:
        return "INT64";
    case PID_U8:
        return "UINT8";
    case PID_U16:
        return "UINT16";
    case PID_U32:
        return "UINT32";
    }
    return "?";
}

int64_t pid_tensor_numel(const pid_tensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= t->shape[i];
    return n;
}

size_t pid_tensor_bytes(const pid_tensor *t)
{
    return (size_t)pid_tensor_numel(t) * pid_dtype_size(t->dtype);
}

static pid_status tensor_header(pid_tensor **out, pid_dtype dtype, pid_mem mem, int ndim,
                                const int64_t *shape, pid_error *err)
{
    *out = NULL;
    if (ndim < 0 || ndim > PID_TENSOR_MAX_DIMS || pid_dtype_size(dtype) == 0)
        return pid_fail(err, PID_ERR_ARG, "tensor: bad dtype or ndim %d", ndim);
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0 || (shape[i] > 0 && n > INT64_MAX / 16 / shape[i]))
            return pid_fail(err, PID_ERR_ARG, "tensor: bad shape[%d] = %lld", i,
                            (long long)shape[i]);
        n *= shape[i];
    }
    pid_tensor *t = calloc(1, sizeof *t);
    if (!t) return pid_fail(err, PID_ERR_NOMEM, "tensor: out of memory");
    t->dtype = dtype;
    t->mem = mem;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++)
        t->shape[i] = shape[i];
    *out = t;
    return PID_OK;
}

pid_status pid_tensor_create(pid_tensor **out, pid_dtype dtype, pid_mem mem, int ndim,
                             const int64_t *shape, pid_error *err)
{
    pid_status st = tensor_header(out, dtype, mem, ndim, shape, err);
    if (st) return st;
    pid_tensor *t = *out;
    size_t bytes = pid_tensor_bytes(t);
    if (mem == PID_MEM_HOST) {
        t->data = calloc(bytes ? bytes : 1, 1);
        if (!t->data) st = pid_fail(err, PID_ERR_NOMEM, "tensor: cannot allocate %zu bytes", bytes);
    } else {
#ifdef PHASEID_HAVE_CUDA
        cudaError_t ce = cudaMalloc(&t->data, bytes ? bytes : 1);
        if (ce == cudaSuccess) ce = cudaMemset(t->data, 0, bytes ? bytes : 1);
        if (ce != cudaSuccess)
            st = pid_fail(err, PID_ERR_DEVICE, "tensor: cudaMalloc(%zu): %s", bytes,
                          cudaGetErrorString(ce));
#else
        st = pid_fail(err, PID_ERR_UNSUPPORTED, "tensor: device memory needs a CUDA build");
#endif
    }
    if (st) {
        free(t);
        *out = NULL;
        return st;
    }
    t->owns = 1;
    return PID_OK;
}

pid_status pid_tensor_wrap(pid_tensor **out, void *data, pid_dtype dtype, pid_mem mem, int ndim,
                           const int64_t *shape, pid_error *err)
{
    pid_status st = tensor_header(out, dtype, mem, ndim, shape, err);
    if (st) return st;
    (*out)->data = data;
    return PID_OK;
}

pid_status pid_tensor_copy(pid_tensor *dst, const pid_tensor *src, pid_error *err)
{
    if (dst->dtype != src->dtype || pid_tensor_numel(dst) != pid_tensor_numel(src))
        return pid_fail(err, PID_ERR_ARG, "tensor copy: dtype or size mismatch");
    size_t bytes = pid_tensor_bytes(src);
    if (dst->mem == PID_MEM_HOST && src->mem == PID_MEM_HOST) {
        memmove(dst->data, src->data, bytes);
        return PID_OK;
    }
#ifdef PHASEID_HAVE_CUDA
    cudaError_t ce = cudaMemcpy(dst->data, src->data, bytes, cudaMemcpyDefault);
    if (ce != cudaSuccess)
        return pid_fail(err, PID_ERR_DEVICE, "tensor copy: cudaMemcpy: %s", cudaGetErrorString(ce));
    return PID_OK;
#else
    return pid_fail(err, PID_ERR_UNSUPPORTED, "tensor copy: device memory needs a CUDA build");
#endif
}

void pid_tensor_destroy(pid_tensor *t)
{
    if (!t) return;
    if (t->owns && t->data) {
        if (t->mem == PID_MEM_HOST) free(t->data);
#ifdef PHASEID_HAVE_CUDA
        else
            cudaFree(t->data);
#endif
    }
    free(t);
}
