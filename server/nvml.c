/* NVML through dlopen (see nvml.h): the few entry points used are declared
 * here with NVML's C types, so no NVML header is needed to build. Versioned
 * symbols (nvmlInit_v2, nvmlDeviceGetHandleByIndex_v2) as NVML exports them. */
#include "core/clock.h"
#include "server/nvml.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef int nvml_ret; /* nvmlReturn_t: 0 = NVML_SUCCESS */
typedef void *nvml_device;

struct srv_nvml {
    void *lib;
    nvml_device dev;
    char name[96];
    nvml_ret (*shutdown)(void);
    nvml_ret (*power)(nvml_device, unsigned int *);        /* mW */
    nvml_ret (*energy)(nvml_device, unsigned long long *); /* mJ since driver load */
    pthread_mutex_t mu; /* integration state when energy is unavailable */
    double t_last, integrated_j;
};

pid_status srv_nvml_open(srv_nvml **out, int index, pid_error *err)
{
    *out = NULL;
    void *lib = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib) return PID_OK; /* no driver: no GPU metrics */
    nvml_ret (*init)(void) = (nvml_ret(*)(void))dlsym(lib, "nvmlInit_v2");
    nvml_ret (*shutdown)(void) = (nvml_ret(*)(void))dlsym(lib, "nvmlShutdown");
    nvml_ret (*by_index)(unsigned int, nvml_device *) =
        (nvml_ret(*)(unsigned int, nvml_device *))dlsym(lib, "nvmlDeviceGetHandleByIndex_v2");
    nvml_ret (*get_name)(nvml_device, char *, unsigned int) =
        (nvml_ret(*)(nvml_device, char *, unsigned int))dlsym(lib, "nvmlDeviceGetName");
    nvml_ret (*power)(nvml_device, unsigned int *) =
        (nvml_ret(*)(nvml_device, unsigned int *))dlsym(lib, "nvmlDeviceGetPowerUsage");
    nvml_ret (*energy)(nvml_device, unsigned long long *) = (nvml_ret(*)(
        nvml_device, unsigned long long *))dlsym(lib, "nvmlDeviceGetTotalEnergyConsumption");
    nvml_device dev = NULL;
    if (!init || !shutdown || !by_index || !power || init() != 0) {
        dlclose(lib);
        return PID_OK;
    }
    if (by_index((unsigned int)index, &dev) != 0) {
        shutdown();
        dlclose(lib);
        return PID_OK;
    }
    srv_nvml *n = calloc(1, sizeof *n);
    if (!n) {
        shutdown();
        dlclose(lib);
        return pid_fail(err, PID_ERR_NOMEM, "out of memory");
    }
    n->lib = lib;
    n->dev = dev;
    n->shutdown = shutdown;
    n->power = power;
    unsigned long long mj;
    n->energy = energy && energy(dev, &mj) == 0 ? energy : NULL; /* pre-Volta: integrate */
    if (!get_name || get_name(dev, n->name, sizeof n->name) != 0)
        snprintf(n->name, sizeof n->name, "GPU %d", index);
    n->name[sizeof n->name - 1] = '\0';
    pthread_mutex_init(&n->mu, NULL);
    n->t_last = pid_mono_s();
    *out = n;
    return PID_OK;
}

void srv_nvml_close(srv_nvml *n)
{
    if (!n) return;
    n->shutdown();
    dlclose(n->lib);
    pthread_mutex_destroy(&n->mu);
    free(n);
}

int srv_nvml_read(srv_nvml *n, srv_gpu_reading *r)
{
    if (!n) return -1;
    unsigned int mw = 0;
    if (n->power(n->dev, &mw) != 0) return -1;
    double energy_j;
    unsigned long long mj = 0;
    pthread_mutex_lock(&n->mu);
    double t = pid_mono_s();
    n->integrated_j += 1e-3 * mw * (t - n->t_last);
    n->t_last = t;
    energy_j = n->integrated_j;
    pthread_mutex_unlock(&n->mu);
    if (n->energy && n->energy(n->dev, &mj) == 0) energy_j = 1e-3 * (double)mj;
    snprintf(r->name, sizeof r->name, "%s", n->name);
    r->power_w = 1e-3 * mw;
    r->energy_j = energy_j;
    return 0;
}
