/* Status codes and error message formatting. */
#include "core/status.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const char *const status_names[PID_STATUS_COUNT] = {
    [PID_OK] = "ok",
    [PID_ERR_NOMEM] = "out of memory",
    [PID_ERR_ARG] = "invalid argument",
    [PID_ERR_IO] = "i/o error",
    [PID_ERR_PARSE] = "parse error",
    [PID_ERR_FORMAT] = "invalid content",
    [PID_ERR_UNSUPPORTED] = "unsupported",
    [PID_ERR_DEVICE] = "device error",
    [PID_ERR_HDF5] = "hdf5 error",
    [PID_ERR_INTERNAL] = "internal error",
};

const char *pid_status_str(pid_status s)
{
    if ((int)s < 0 || s >= PID_STATUS_COUNT) return "unknown status";
    return status_names[s];
}

pid_status pid_fail(pid_error *err, pid_status code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->code = code;
    }
    return code;
}

void pid_error_prefix(pid_error *err, const char *fmt, ...)
{
    if (!err) return;
    char prefix[PID_ERROR_MSG_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    /* Build "prefix: msg" by hand so truncation is explicit, not a warning. */
    char joined[PID_ERROR_MSG_LEN];
    size_t n = strlen(prefix), m = strlen(err->msg);
    if (n > sizeof joined - 3) n = sizeof joined - 3;
    memcpy(joined, prefix, n);
    joined[n++] = ':';
    joined[n++] = ' ';
    if (m > sizeof joined - 1 - n) m = sizeof joined - 1 - n;
    memcpy(joined + n, err->msg, m);
    joined[n + m] = '\0';
    memcpy(err->msg, joined, sizeof joined);
}

void pid_error_clear(pid_error *err)
{
    if (!err) return;
    err->code = PID_OK;
    err->msg[0] = '\0';
}
