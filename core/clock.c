/* Wall clocks (core/clock.h). */
#include "core/clock.h"

#include <time.h>

static double clock_s(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

double pid_mono_s(void)
{
    return clock_s(CLOCK_MONOTONIC);
}

double pid_unix_s(void)
{
    return clock_s(CLOCK_REALTIME);
}
