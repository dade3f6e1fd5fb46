/* Measured 1-D patterns from text: two-column .xy, three-column .xye (x, y,
 * sigma) and .csv, with '#'/'!'/';' comments and an optional header line.
 * Also resampling onto a uniform grid and SNIP background estimation. */
#ifndef PID_XY_H
#define PID_XY_H

#include <stddef.h>

#include "core/status.h"

/* Files larger than this are refused (bytes): 1e6 points is far beyond any
 * powder pattern. */
#define PID_XY_MAX_BYTES (64u * 1024u * 1024u)

typedef struct {
    int n;
    double *x;     /* strictly increasing (2-theta deg, Q, k, ... as in the file) */
    double *y;     /* intensity / counts */
    double *sigma; /* NULL unless the file has a third column */
} pid_xy;

/* Parse a file / buffer. Columns split by whitespace, commas or semicolons.
 * Refuses: no numeric rows, fewer than 8 points, non-finite values, x not
 * strictly increasing (a descending file is reversed, equal x is an error),
 * ragged rows. Errors name the file and the line. Free with pid_xy_destroy. */
pid_status pid_xy_read(const char *path, pid_xy **out, pid_error *err);
pid_status pid_xy_read_buffer(const char *buf, size_t len, const char *name, pid_xy **out,
                              pid_error *err);
void pid_xy_destroy(pid_xy *p);

/* Linear interpolation of (x, y) onto the uniform grid x0 + i*dx, i < n;
 * points outside the measured range get `fill`. */
void pid_xy_resample(const pid_xy *p, double x0, double dx, int n, double fill, float *out);

/* SNIP background (Ryan et al., Nucl. Instr. Meth. B34 (1988) 396; Morhac et
 * al. 1997) of y[0..n): iterative clipping with half-windows 1..max_half_width
 * points on the log-log-sqrt transformed signal, which follows a smooth
 * background under peaks narrower than the window. bg gets the background. */
pid_status pid_snip_background(const float *y, int n, int max_half_width, float *bg,
                               pid_error *err);

#endif
