/* GPU power and energy through NVML, loaded at run time with dlopen
 * (libnvidia-ml.so.1) so the server builds and runs where no driver exists:
 * absent library or no device = no GPU metrics, no error. */
#ifndef PID_SERVER_NVML_H
#define PID_SERVER_NVML_H

#include "server/metrics.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct srv_nvml srv_nvml;

/* Open NVML and GPU `index`. *out is NULL (and PID_OK is returned) when the
 * library or the device is not there; a handle otherwise (srv_nvml_close). */
pid_status srv_nvml_open(srv_nvml **out, int index, pid_error *err);
void srv_nvml_close(srv_nvml *n); /* accepts NULL */

/* Current power (W), energy since the driver loaded (J; where the device
 * cannot report energy, power integrated since open) and device name.
 * Returns -1 (r untouched) when n is NULL or the reading failed. */
int srv_nvml_read(srv_nvml *n, srv_gpu_reading *r);

#ifdef __cplusplus
}
#endif
#endif
