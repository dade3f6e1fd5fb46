/* The model repository of the server: every DIR/NAME.h5 loaded onto the
 * backend behind its own batcher, named by the file stem, with the metadata
 * documents the HTTP API serves (KServe metadata, Triton config, the
 * dashboard's /v1/models with simulated reference peaks, built lazily). */
#ifndef PID_SERVER_REPO_H
#define PID_SERVER_REPO_H

#include <pthread.h>
#include <stdint.h>

#include "core/status.h"
#include "server/batcher.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Longest model name (and file stem) served. */
#define SRV_MODEL_NAME_MAX 128

/* One model of the repository. A record owned by the repository; only the
 * repository writes it after loading. */
typedef struct {
    int index;
    char *name;              /* file stem */
    char *path;              /* DIR/name.h5 */
    char *reason;            /* why it is not available, NULL when loaded */
    srv_batcher *batcher;    /* NULL when not loaded */
    const cls_classifier *c; /* the batcher's classifier (read-only use) */
    int64_t frame_size, n_classes;
    const char **names;  /* [K] phase names (owned by the model file record) */
    char **name_json;    /* [K] names quoted as JSON */
    char **formula_json; /* [K] formulas quoted as JSON */
    char **twins_json;   /* [K] ", \"near_twins\": [...]" as the CLI prints it, NULL
                            when the model file lists no near twins */
    char *metadata_json; /* GET /v2/models/{name} */
    char *config_json;   /* GET /v2/models/{name}/config */
} srv_model;

typedef struct srv_repo srv_repo;

typedef struct {
    const char *device; /* "cpu" / "cuda" / "auto" */
    int max_batch;      /* per backend call */
    long max_queue_delay_us;
    int max_queue;               /* frames per model queue; also the largest request */
    struct srv_metrics *metrics; /* may be NULL; models are indexed in load order */
    srv_batch_observer observer;
    void *observer_user;
    int no_residual; /* 1: models run without the physics residual check (faster) */
} srv_repo_opts;

/* List the DIR/NAME.h5 files (sorted), skipping names that are not valid model names (a
 * warning each), without loading anything yet. PID_ERR_IO when DIR cannot be
 * read, PID_ERR_ARG when it holds no model file. */
pid_status srv_repo_scan(srv_repo **out, const char *dir, pid_error *err);
int srv_repo_count(const srv_repo *r);
srv_model *srv_repo_get(srv_repo *r, int i);
/* The model named `name`, NULL when there is none (any name: checked here). */
srv_model *srv_repo_find(srv_repo *r, const char *name);
/* Names in load order (valid until srv_repo_destroy). */
const char *const *srv_repo_names(const srv_repo *r);

/* Load every model: cls_open on the device and start its batcher. A model
 * that fails is kept with its reason (logged) and the others go on; returns
 * how many failed in *n_failed. Fails only on out of memory. */
pid_status srv_repo_load(srv_repo *r, const srv_repo_opts *o, int *n_failed, pid_error *err);

/* Refuse new work in every batcher (srv_batcher_close). */
void srv_repo_close(srv_repo *r);

/* The /v1/models document (computed on first use, then cached; reference
 * peaks come from each phase's CIF: the recorded source path, else the
 * built-in library). Returns a pointer owned by the repository, or NULL
 * when out of memory. */
const char *srv_repo_v1_models(srv_repo *r);

/* The /v2/repository/index document, malloc'd (caller frees). */
char *srv_repo_index_json(const srv_repo *r);

/* Stop every batcher (running what is queued) and free everything. Accepts NULL. */
void srv_repo_destroy(srv_repo *r);

#ifdef __cplusplus
}
#endif
#endif
