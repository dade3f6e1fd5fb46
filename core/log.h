/* Leveled logging to stderr. The level comes from pid_log_set_level() or the
 * PHASEID_LOG environment variable (error|warn|info|debug). Thread-safe. */
#ifndef PID_LOG_H
#define PID_LOG_H

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { PID_LOG_ERROR = 0, PID_LOG_WARN, PID_LOG_INFO, PID_LOG_DEBUG } pid_log_level;

void pid_log_set_level(pid_log_level level);
pid_log_level pid_log_get_level(void);
/* Parse "error|warn|info|debug"; returns -1 for anything else. */
int pid_log_parse_level(const char *name);
void pid_log(pid_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define PID_LOGE(...) pid_log(PID_LOG_ERROR, __VA_ARGS__)
#define PID_LOGW(...) pid_log(PID_LOG_WARN, __VA_ARGS__)
#define PID_LOGI(...) pid_log(PID_LOG_INFO, __VA_ARGS__)
#define PID_LOGD(...) pid_log(PID_LOG_DEBUG, __VA_ARGS__)

#ifdef __cplusplus
}
#endif
#endif
