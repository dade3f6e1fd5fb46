/* Host and device tensors: a dtype, up to 4 dimensions (row-major) and a
 * buffer in host or device memory. A tensor owns its buffer unless created
 * with pid_tensor_wrap(); pid_tensor_destroy() frees what it owns. */
#ifndef PID_TENSOR_H
#define PID_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { PID_F32 = 0, PID_F64, PID_I32, PID_I64, PID_U8, PID_U16, PID_U32 } pid_dtype;
typedef enum { PID_MEM_HOST = 0, PID_MEM_DEVICE } pid_mem;

#define PID_TENSOR_MAX_DIMS 4

typedef struct {
    pid_dtype dtype;
    pid_mem mem;
    int ndim;
    int64_t shape[PID_TENSOR_MAX_DIMS];
    void *data;
    int owns; /* 1: pid_tensor_destroy frees data */
} pid_tensor;

size_t pid_dtype_size(pid_dtype t);
const char *pid_dtype_name(pid_dtype t);
int64_t pid_tensor_numel(const pid_tensor *t);
size_t pid_tensor_bytes(const pid_tensor *t);

/* Allocate a zero-filled tensor. Device memory needs a CUDA build and device;
 * otherwise PID_ERR_UNSUPPORTED / PID_ERR_DEVICE. On failure *out is NULL. */
pid_status pid_tensor_create(pid_tensor **out, pid_dtype dtype, pid_mem mem, int ndim,
                             const int64_t *shape, pid_error *err);
/* A tensor header over memory the caller keeps owning. */
pid_status pid_tensor_wrap(pid_tensor **out, void *data, pid_dtype dtype, pid_mem mem, int ndim,
                           const int64_t *shape, pid_error *err);
/* Copy between tensors of equal dtype and element count, any memory kinds. */
pid_status pid_tensor_copy(pid_tensor *dst, const pid_tensor *src, pid_error *err);
/* Frees the tensor and, if owned, its buffer. Accepts NULL. */
void pid_tensor_destroy(pid_tensor *t);

#ifdef __cplusplus
}
#endif
#endif
