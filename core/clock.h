/* Wall clocks in seconds as double: monotonic (intervals, deadlines) and
 * Unix time (timestamps people read). */
#ifndef PID_CORE_CLOCK_H
#define PID_CORE_CLOCK_H

#ifdef __cplusplus
extern "C" {
#endif

double pid_mono_s(void); /* CLOCK_MONOTONIC */
double pid_unix_s(void); /* CLOCK_REALTIME: seconds since 1970-01-01 UTC */

#ifdef __cplusplus
}
#endif
#endif
