/* Status codes and error messages shared by every phaseid module.
 * Fallible functions return pid_status (0 = OK) and, when given a non-NULL
 * pid_error, fill it with a human-readable message naming the problem. */
#ifndef PID_STATUS_H
#define PID_STATUS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    PID_OK = 0,
    PID_ERR_NOMEM,       /* allocation failed */
    PID_ERR_ARG,         /* invalid argument or setting (NaN, out of range, ...) */
    PID_ERR_IO,          /* file could not be opened/read/written */
    PID_ERR_PARSE,       /* malformed input text (CIF, .xy, spec, ...) */
    PID_ERR_FORMAT,      /* well-formed but unusable content (missing cell, unknown element) */
    PID_ERR_UNSUPPORTED, /* feature not built in (e.g. CUDA) or not implemented for input */
    PID_ERR_DEVICE,      /* CUDA / cuBLAS failure, or no device */
    PID_ERR_HDF5,        /* HDF5 library call failed */
    PID_ERR_INTERNAL,    /* broken invariant */
    PID_STATUS_COUNT
} pid_status;

#define PID_ERROR_MSG_LEN 512

typedef struct {
    pid_status code;
    char msg[PID_ERROR_MSG_LEN];
} pid_error;

/* Short, static description of a status code ("out of memory", ...). */
const char *pid_status_str(pid_status s);

/* Record `code` and a printf-style message in `err` (which may be NULL) and
 * return `code`, so callers can write `return pid_fail(err, PID_ERR_ARG, ...)`. */
pid_status pid_fail(pid_error *err, pid_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prefix an existing message in `err` with context ("file.cif: ..."). */
void pid_error_prefix(pid_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Reset `err` to PID_OK with an empty message. */
void pid_error_clear(pid_error *err);

#ifdef __cplusplus
}
#endif
#endif
