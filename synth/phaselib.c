/* The phase library: resolves the built-in data folder, reads every *.cif
 * of a folder in name order through the CIF reader, and answers look-ups by
 * index and by phase name. */
#include "synth/phaselib.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "synth/cif.h"

struct pid_phaselib {
    char dir[PATH_MAX];
    int n;
    pid_structure *phases; /* n structures, owned */
};

static int is_dir(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

pid_status pid_phaselib_builtin_dir(char *buf, size_t cap, pid_error *err)
{
    if (!buf || cap == 0) return pid_fail(err, PID_ERR_ARG, "pid_phaselib_builtin_dir: no buffer");
    const char *env = getenv("PHASEID_DATA");
    if (env && env[0]) {
        if ((size_t)snprintf(buf, cap, "%s/phases", env) >= cap)
            return pid_fail(err, PID_ERR_ARG, "PHASEID_DATA path is too long");
        return PID_OK;
    }
#ifdef PHASEID_DATA_DIR
    /* The source tree's copy, while running from a build folder. */
    if ((size_t)snprintf(buf, cap, "%s/phases", PHASEID_DATA_DIR) < cap && is_dir(buf))
        return PID_OK;
#endif
    /* An installed tree: <prefix>/bin/phaseid beside <prefix>/share/phaseid. */
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) return pid_fail(err, PID_ERR_IO, "cannot locate the built-in phase library");
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (slash) *slash = '\0';
    if ((size_t)snprintf(buf, cap, "%s/../share/phaseid/data/phases", exe) >= cap)
        return pid_fail(err, PID_ERR_ARG, "built-in phase library path is too long");
    return PID_OK;
}

static int has_cif_ext(const char *name)
{
    size_t n = strlen(name);
    return n > 4 && !strcasecmp(name + n - 4, ".cif");
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

void pid_phaselib_destroy(pid_phaselib *lib)
{
    if (!lib) return;
    pid_structure_array_destroy(lib->phases, lib->n);
    free(lib);
}

pid_status pid_phaselib_load(const char *dir_or_builtin, pid_phaselib **out, pid_error *err)
{
    if (!dir_or_builtin || !out)
        return pid_fail(err, PID_ERR_ARG, "pid_phaselib_load: NULL argument");
    *out = NULL;
    pid_status st = PID_OK;
    DIR *d = NULL;
    char **names = NULL;
    size_t n_names = 0, cap_names = 0;
    pid_phaselib *lib = calloc(1, sizeof *lib);
    if (!lib) return pid_fail(err, PID_ERR_NOMEM, "out of memory for the phase library");

    if (!strcmp(dir_or_builtin, "builtin")) {
        st = pid_phaselib_builtin_dir(lib->dir, sizeof lib->dir, err);
        if (st) goto done;
    } else if ((size_t)snprintf(lib->dir, sizeof lib->dir, "%s", dir_or_builtin) >=
               sizeof lib->dir) {
        st = pid_fail(err, PID_ERR_ARG, "phase library path is too long");
        goto done;
    }
    d = opendir(lib->dir);
    if (!d) {
        st = pid_fail(err, PID_ERR_IO, "%s: cannot open phase library folder: %s", lib->dir,
                      strerror(errno));
        goto done;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || !has_cif_ext(e->d_name)) continue;
        if (n_names == cap_names) {
            size_t ncap = cap_names ? cap_names * 2 : 64;
            char **tmp = realloc(names, ncap * sizeof *tmp);
            if (!tmp) goto nomem;
            names = tmp;
            cap_names = ncap;
        }
        if (!(names[n_names] = strdup(e->d_name))) goto nomem;
        n_names++;
    }
    if (n_names == 0) {
        st = pid_fail(err, PID_ERR_IO, "%s: no *.cif files in the phase library folder", lib->dir);
        goto done;
    }
    /* Name order makes phase indices reproducible across machines. */
    qsort(names, n_names, sizeof *names, cmp_str);
    int cap = 0;
    for (size_t i = 0; i < n_names; i++) {
        char path[PATH_MAX + 256];
        snprintf(path, sizeof path, "%s/%s", lib->dir, names[i]);
        pid_structure *got = NULL;
        int n_got = 0;
        st = pid_cif_read(path, &got, &n_got, err);
        if (st) goto done;
        if (lib->n + n_got > cap) {
            int ncap = cap ? cap * 2 : 64;
            while (ncap < lib->n + n_got)
                ncap *= 2;
            pid_structure *tmp = realloc(lib->phases, (size_t)ncap * sizeof *tmp);
            if (!tmp) {
                pid_structure_array_destroy(got, n_got);
                goto nomem;
            }
            lib->phases = tmp;
            cap = ncap;
        }
        /* Take the structures over by value; only the array shell is freed. */
        memcpy(lib->phases + lib->n, got, (size_t)n_got * sizeof *got);
        lib->n += n_got;
        free(got);
    }
    *out = lib;
    lib = NULL;
    goto done;
nomem:
    st = pid_fail(err, PID_ERR_NOMEM, "out of memory loading the phase library");
done:
    if (d) closedir(d);
    for (size_t i = 0; i < n_names; i++)
        free(names[i]);
    free(names);
    pid_phaselib_destroy(lib);
    return st;
}

pid_status pid_phaselib_from(const pid_structure *const *phases, int n, const char *dir,
                             pid_phaselib **out, pid_error *err)
{
    *out = NULL;
    if (n < 1 || !phases) return pid_fail(err, PID_ERR_ARG, "phase library: no phases");
    pid_phaselib *lib = calloc(1, sizeof *lib);
    if (!lib || !(lib->phases = calloc((size_t)n, sizeof *lib->phases))) {
        free(lib);
        return pid_fail(err, PID_ERR_NOMEM, "phase library: out of memory");
    }
    snprintf(lib->dir, sizeof lib->dir, "%s", dir ? dir : "");
    for (int i = 0; i < n; i++) {
        pid_structure *c = NULL;
        pid_status st = pid_structure_clone(phases[i], &c, err);
        if (st) {
            pid_phaselib_destroy(lib);
            return st;
        }
        lib->phases[lib->n++] = *c; /* the arrays move into the library */
        free(c);
    }
    *out = lib;
    return PID_OK;
}

int pid_phaselib_count(const pid_phaselib *lib)
{
    return lib ? lib->n : 0;
}

const pid_structure *pid_phaselib_get(const pid_phaselib *lib, int i)
{
    if (!lib || i < 0 || i >= lib->n) return NULL;
    return &lib->phases[i];
}

int pid_phaselib_index(const pid_phaselib *lib, const char *name)
{
    if (!lib || !name) return -1;
    for (int i = 0; i < lib->n; i++)
        if (!strcmp(lib->phases[i].name, name)) return i;
    for (int i = 0; i < lib->n; i++)
        if (!strcasecmp(lib->phases[i].name, name)) return i;
    return -1;
}

const pid_structure *pid_phaselib_find(const pid_phaselib *lib, const char *name)
{
    return pid_phaselib_get(lib, pid_phaselib_index(lib, name));
}

const char *pid_phaselib_dir(const pid_phaselib *lib)
{
    return lib ? lib->dir : "";
}
