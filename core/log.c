/* Leveled logging: one line per message, timestamped, written atomically. */
#include "core/log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int log_level = -1; /* -1: not yet read from the environment */
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

int pid_log_parse_level(const char *name)
{
    static const char *const names[] = {"error", "warn", "info", "debug"};
    if (!name) return -1;
    for (int i = 0; i < 4; i++)
        if (strcmp(name, names[i]) == 0) return i;
    return -1;
}

pid_log_level pid_log_get_level(void)
{
    pthread_mutex_lock(&log_lock);
    if (log_level < 0) {
        int l = pid_log_parse_level(getenv("PHASEID_LOG"));
        log_level = l < 0 ? PID_LOG_INFO : l;
    }
    int l = log_level;
    pthread_mutex_unlock(&log_lock);
    return (pid_log_level)l;
}

void pid_log_set_level(pid_log_level level)
{
    pthread_mutex_lock(&log_lock);
    log_level = (int)level;
    pthread_mutex_unlock(&log_lock);
}

void pid_log(pid_log_level level, const char *fmt, ...)
{
    if ((int)level > (int)pid_log_get_level()) return;
    static const char *const tags[] = {"ERROR", "WARN", "INFO", "DEBUG"};
    char line[1024];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "%02d:%02d:%02d.%03ld %-5s ", tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000, tags[level]);
    va_list ap;
    va_start(ap, fmt);
    if (n > 0 && (size_t)n < sizeof line) vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s\n", line);
}
