/* `phaseid stream`: the streaming client a beamline would adapt. It reads a
 * model's grid from GET /v1/models, makes frames on exactly that grid (a demo
 * scenario of synth/demo.h, or an HDF5 stack replayed), sends them over POST
 * /v1/models/{name}/stream in requests of --chunk frames (chunked upload,
 * paced to --rate, sequence numbers continued with X-Seq-Start) and prints
 * the ndjson results as they come back, with the ground truth when known and
 * a summary at the end. libcurl (multi interface, so pacing never blocks the
 * results) and jansson. */
#include <curl/curl.h>
#include <errno.h>
#include <hdf5.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "cli/args.h"
#include "cli/cli.h"
#include "core/h5.h"
#include "synth/demo.h"

#define PROG "phaseid stream"
/* Memory for pre-rendered demo frames / a replayed stack. */
#define STREAM_MAX_BYTES (1ull << 30)

static void stream_usage(FILE *f)
{
    fprintf(f, "usage: phaseid stream --model NAME (--demo SCENARIO | --from FILE.h5) [options]\n"
               "       phaseid stream --demo SCENARIO --grid MIN:MAX:STEP --save FILE.h5\n"
               "\n"
               "Send diffraction frames to a running 'phaseid serve' over its streaming\n"
               "endpoint and print each frame's result as it comes back. The frames are made\n"
               "on the model's own grid, read from GET /v1/models.\n"
               "\n"
               "frames (one of):\n"
               "  --demo SCENARIO   simulated in-situ experiment, each frame with ground truth:\n"
               "                    heating-ramp      anatase -> anatase + rutile -> rutile from\n"
               "                                      300 to 1300 K, then out-of-library frames\n"
               "                                      (brucite) that should be flagged unknown\n"
               "                    composition-scan  combinatorial ZnO-CeO2-Fe2O3 library\n"
               "  --from FILE.h5    replay /patterns of an HDF5 stack ('phaseid synth xrd' or\n"
               "                    --save); its axis must be the model's grid\n"
               "  --frames N        demo frames (default 400, >= 20)\n"
               "  --seed S          demo seed (default 0)\n"
               "\n"
               "server:\n"
               "  --server URL      default http://127.0.0.1:8000\n"
               "  --model NAME      model to stream to (required unless only --save)\n"
               "  --token TOKEN     bearer token (default: $PHASEID_TOKEN)\n"
               "  --stream-id ID    names the stream in /v1/events (default: the scenario or\n"
               "                    'replay')\n"
               "  --rate FPS        frames per second (default 0 = as fast as possible)\n"
               "  --chunk N         frames per request (default: 0.25 s of frames at --rate,\n"
               "                    256 when unpaced)\n"
               "  --loop            repeat the frames until Ctrl-C (sequence numbers go on)\n"
               "\n"
               "output:\n"
               "  --json            print the server's ndjson result lines unchanged (the\n"
               "                    summary then goes to stderr)\n"
               "  --quiet           no per-frame lines, only the summary\n"
               "  --truth-out FILE  write the ground truth of every frame sent, one JSON\n"
               "                    object per line with its seq\n"
               "  --save FILE.h5    write the frames (/patterns, /axis, /truth) to FILE.h5;\n"
               "                    without --model, --grid MIN:MAX:STEP (2-theta, degrees)\n"
               "                    sets the grid and nothing is sent\n"
               "\n"
               "Ctrl-C ends the stream at the next frame, waits for the results of the\n"
               "frames sent and prints the summary. Exit status: 0 when every frame sent got\n"
               "its result, 1 on a server, network or file error, 2 on a usage error.\n");
}

/* ----------------------------------------------------------------- state */

typedef struct {
    const char *server, *model, *from, *demo, *token, *truth_out, *save, *stream_id;
    double rate;
    long long frames, seed, chunk;
    double grid[3];
    int have_grid, json, quiet, loop;
} stream_opts;

typedef struct {
    int axis_q; /* 0: 2-theta (deg), 1: Q */
    double x0, step;
    int n_points;
    int n_wl;
    double wl[2];
} model_grid;

/* Frames to send, row-major n x p, with an optional truth object each. */
typedef struct {
    int n, p;
    float *y;
    json_t **truth; /* n entries (NULL where unknown), or NULL */
} frame_set;

typedef struct {
    char *data;
    size_t len, cap;
} sbuf;

/* Counters of a whole run. */
typedef struct {
    long long sent, results, frame_errors, seq_errors;
    long long truth_known, correct, unk_truth, unk_flagged, known_flagged;
} tally;

typedef struct {
    const stream_opts *o;
    const frame_set *fs;
    tally *t;
    double t0;          /* pacing origin (s) */
    long long seq0;     /* first seq of this request */
    int count;          /* frames this request may send */
    int done;           /* frames fully sent */
    size_t off;         /* bytes of the current frame already sent */
    int paused;         /* read side paused until the next frame is due */
    long long next_seq; /* seq of the next expected result */
    sbuf line;          /* incomplete response line */
    sbuf body;          /* whole body when the status is not 200 */
    long status;
    CURL *h;
    char stream_error[512]; /* a line {"error": ...} without seq */
} req_state;

static volatile sig_atomic_t g_stop = 0;

static void on_sigint(int sig)
{
    (void)sig;
    g_stop = 1;
}

static int sbuf_add(sbuf *b, const char *p, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *d = realloc(b->data, cap);
        if (!d) return -1;
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

static size_t sbuf_write_cb(char *p, size_t sz, size_t n, void *u)
{
    return sbuf_add(u, p, sz * n) ? 0 : sz * n;
}

static void frame_set_free(frame_set *fs)
{
    if (fs->truth)
        for (int i = 0; i < fs->n; i++)
            json_decref(fs->truth[i]);
    free(fs->truth);
    free(fs->y);
    memset(fs, 0, sizeof *fs);
}

/* ------------------------------------------------------------ HTTP basics */

static struct curl_slist *auth_headers(const stream_opts *o, struct curl_slist *h)
{
    if (o->token && *o->token) {
        char line[1200];
        snprintf(line, sizeof line, "Authorization: Bearer %s", o->token);
        h = curl_slist_append(h, line);
    }
    return h;
}

/* The "error" of a JSON error body, else the body itself (shortened). */
static void error_text(const char *body, char *out, size_t cap)
{
    json_t *j = body ? json_loads(body, 0, NULL) : NULL;
    const char *msg = j ? json_string_value(json_object_get(j, "error")) : NULL;
    if (msg)
        snprintf(out, cap, "%s", msg);
    else
        snprintf(out, cap, "%.200s", body && *body ? body : "(empty body)");
    json_decref(j);
}

/* GET /v1/models and find `name`'s grid. Prints the reason and returns 1 on
 * failure. */
static int fetch_model(const stream_opts *o, model_grid *g)
{
    char url[2048];
    snprintf(url, sizeof url, "%s/v1/models", o->server);
    CURL *h = curl_easy_init();
    if (!h) {
        fprintf(stderr, PROG ": cannot initialize libcurl\n");
        return 1;
    }
    sbuf body = {0};
    struct curl_slist *hdr = auth_headers(o, NULL);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, sbuf_write_cb);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &body);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 5L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 30L);
    CURLcode rc = curl_easy_perform(h);
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(hdr);
    curl_easy_cleanup(h);
    int ret = 1;
    json_t *root = NULL;
    if (rc != CURLE_OK) {
        fprintf(stderr, PROG ": cannot reach the server at %s: %s\n", o->server,
                curl_easy_strerror(rc));
        goto done;
    }
    if (status != 200) {
        char msg[512];
        error_text(body.data, msg, sizeof msg);
        fprintf(stderr, PROG ": GET %s answered %ld: %s%s\n", url, status, msg,
                status == 401 ? " (give --token or set PHASEID_TOKEN)" : "");
        goto done;
    }
    json_error_t je;
    root = json_loads(body.data ? body.data : "", 0, &je);
    json_t *models = root ? json_object_get(root, "models") : NULL;
    if (!json_is_array(models)) {
        fprintf(stderr, PROG ": GET %s: not a model list (%s)\n", url,
                root ? "no 'models'" : je.text);
        goto done;
    }
    json_t *m = NULL;
    size_t i;
    json_t *v;
    json_array_foreach(models, i, v)
    {
        const char *nm = json_string_value(json_object_get(v, "name"));
        if (nm && !strcmp(nm, o->model)) m = v;
    }
    if (!m) {
        fprintf(stderr, PROG ": model '%s' is not served at %s (models:", o->model, o->server);
        json_array_foreach(models, i, v)
        {
            const char *nm = json_string_value(json_object_get(v, "name"));
            fprintf(stderr, " %s", nm ? nm : "?");
        }
        fprintf(stderr, "%s)\n", json_array_size(models) ? "" : " none");
        goto done;
    }
    json_t *gr = json_object_get(m, "grid");
    const char *axis = json_string_value(json_object_get(gr, "axis"));
    json_t *jn = json_object_get(gr, "n_points");
    g->x0 = json_number_value(json_object_get(gr, "x0"));
    g->step = json_number_value(json_object_get(gr, "step"));
    g->n_points = json_is_integer(jn) ? (int)json_integer_value(jn) : 0;
    g->axis_q = axis && (!strcmp(axis, "Q") || !strcmp(axis, "q") || strstr(axis, "q_"));
    g->n_wl = 0;
    json_t *wl = json_object_get(gr, "wavelength_a");
    if (json_is_number(wl))
        wl = json_pack("[O]", wl);
    else
        json_incref(wl);
    json_array_foreach(wl, i, v)
    {
        if (g->n_wl < 2 && json_number_value(v) > 0.0) g->wl[g->n_wl++] = json_number_value(v);
    }
    json_decref(wl);
    if (!(g->n_points >= 2 && g->step > 0.0 && isfinite(g->x0))) {
        fprintf(stderr, PROG ": model '%s': the server gave no usable grid\n", o->model);
        goto done;
    }
    ret = 0;
done:
    json_decref(root);
    free(body.data);
    return ret;
}

/* ------------------------------------------------------------------ truth */

static json_t *truth_json(const demo_truth *t)
{
    json_t *ph = json_array();
    for (int k = 0; k < t->n; k++)
        json_array_append_new(ph, json_pack("{s:s, s:f, s:f, s:f, s:f}", "name", t->phase[k],
                                            "fraction", t->fraction[k], "a", t->cell_a[k], "c",
                                            t->cell_c[k], "size_nm", t->size_nm[k]));
    json_t *o = json_pack("{s:o, s:b}", "phases", ph, "unknown", t->unknown);
    if (isfinite(t->temperature_k))
        json_object_set_new(o, "temperature_k", json_real(t->temperature_k));
    if (isfinite(t->composition[0])) {
        json_t *c = json_array();
        for (int k = 0; k < DEMO_MAX_PHASES; k++)
            json_array_append_new(c, json_real(t->composition[k]));
        json_object_set_new(o, "composition", c);
    }
    return o;
}

/* Majority phase of a truth object, or NULL. */
static const char *truth_major(const json_t *t, double *frac)
{
    const char *best = NULL;
    double bf = -1.0;
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(t, "phases"), i, v)
    {
        double f = json_number_value(json_object_get(v, "fraction"));
        if (f > bf) {
            bf = f;
            best = json_string_value(json_object_get(v, "name"));
        }
    }
    if (frac) *frac = bf;
    return best;
}

/* ---------------------------------------------------------------- frames */

static int demo_frames(const stream_opts *o, const model_grid *g, frame_set *fs)
{
    demo_opts d;
    demo_opts_default(&d);
    d.n_frames = (int)o->frames;
    d.seed = (uint64_t)o->seed;
    d.grid.axis = K_XRD_AXIS_TWO_THETA;
    d.grid.x0 = (float)g->x0;
    d.grid.step = (float)g->step;
    d.grid.n_points = g->n_points;
    pid_error err;
    pid_error_clear(&err);
    if (g->axis_q) {
        fprintf(stderr, PROG ": the demo scenarios need a 2-theta model; this one is on Q\n");
        return 1;
    }
    /* The model's radiation: Cu K-alpha when its lines are Cu's, else its
     * first wavelength as a single line. */
    char src[64] = "CuKa";
    if (g->n_wl >= 1 && fabs(g->wl[0] - 1.540562) > 1e-3)
        snprintf(src, sizeof src, "%.6f", g->wl[0]);
    if (g->n_wl == 1 && fabs(g->wl[0] - 1.540562) <= 1e-3) snprintf(src, sizeof src, "CuKa1");
    if (pid_xrd_source_parse(src, &d.source, &err)) {
        fprintf(stderr, PROG ": %s\n", err.msg);
        return 1;
    }
    if ((double)d.n_frames * g->n_points * sizeof(float) > (double)STREAM_MAX_BYTES) {
        fprintf(stderr, PROG ": %d frames of %d points exceed %llu MiB; use fewer --frames\n",
                d.n_frames, g->n_points, STREAM_MAX_BYTES >> 20);
        return 1;
    }
    demo_scenario *sc = NULL;
    if (demo_create(&sc, o->demo, &d, &err)) {
        fprintf(stderr, PROG ": %s\n", err.msg);
        return 1;
    }
    fs->n = d.n_frames;
    fs->p = g->n_points;
    fs->y = malloc(sizeof(float) * (size_t)fs->n * (size_t)fs->p);
    fs->truth = calloc((size_t)fs->n, sizeof *fs->truth);
    int ret = 1;
    if (!fs->y || !fs->truth) {
        fprintf(stderr, PROG ": out of memory for %d frames\n", fs->n);
        goto done;
    }
    double t0 = pid_mono_s();
    if (demo_render(sc, 0, fs->n, fs->y, &err)) {
        fprintf(stderr, PROG ": %s\n", err.msg);
        goto done;
    }
    for (int i = 0; i < fs->n; i++) {
        demo_truth t;
        if (demo_truth_get(sc, i, &t, &err)) {
            fprintf(stderr, PROG ": %s\n", err.msg);
            goto done;
        }
        fs->truth[i] = truth_json(&t);
    }
    if (!o->json && !o->quiet)
        fprintf(stderr, PROG ": %s: %d frames of %d points (%.5g..%.5g deg) rendered in %.2f s\n",
                o->demo, fs->n, fs->p, g->x0, g->x0 + g->step * (fs->p - 1), pid_mono_s() - t0);
    ret = 0;
done:
    demo_destroy(sc);
    return ret;
}

/* Read a 1-D string dataset (variable-length or fixed) into *out (n
 * strdup'd strings). Returns 0 when the dataset exists and is read. */
static int read_strings(hid_t fid, const char *name, int64_t n, char ***out)
{
    *out = NULL;
    if (H5Lexists(fid, name, H5P_DEFAULT) <= 0) return -1;
    hid_t d = H5Dopen2(fid, name, H5P_DEFAULT);
    if (d < 0) return -1;
    hid_t space = H5Dget_space(d), type = H5Dget_type(d), mtype = H5Tcopy(H5T_C_S1);
    char **raw = calloc((size_t)(n > 0 ? n : 1), sizeof *raw);
    int ret = -1;
    if (space >= 0 && type >= 0 && mtype >= 0 && raw && H5Tget_class(type) == H5T_STRING &&
        H5Tis_variable_str(type) > 0 && H5Sget_simple_extent_npoints(space) == n &&
        H5Tset_size(mtype, H5T_VARIABLE) >= 0 &&
        H5Dread(d, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, raw) >= 0) {
        char **s = calloc((size_t)(n > 0 ? n : 1), sizeof *s);
        if (s) {
            for (int64_t i = 0; i < n; i++)
                s[i] = strdup(raw[i] ? raw[i] : "");
            *out = s;
            ret = 0;
        }
        H5Dvlen_reclaim(mtype, space, H5P_DEFAULT, raw);
    }
    free(raw);
    if (mtype >= 0) H5Tclose(mtype);
    if (type >= 0) H5Tclose(type);
    if (space >= 0) H5Sclose(space);
    H5Dclose(d);
    return ret;
}

static void free_strings(char **s, int64_t n)
{
    for (int64_t i = 0; s && i < n; i++)
        free(s[i]);
    free(s);
}

/* Replay /patterns of FILE.h5: the stack's axis must be the model's grid.
 * Truth from /truth (JSON per row, as --save writes) or from /labels and
 * /phases (single-phase rows of 'phaseid synth xrd'). */
static int file_frames(const stream_opts *o, const model_grid *g, frame_set *fs)
{
    pid_error err;
    pid_error_clear(&err);
    hid_t fid = H5I_INVALID_HID;
    float *axis = NULL, *labels = NULL;
    int ret = 1, nd = 0;
    int64_t dims[4] = {0};
    pid_h5_quiet();
    if (pid_h5_open_ro(o->from, &fid, &err)) {
        fprintf(stderr, PROG ": %s: %s\n", o->from, err.msg);
        return 1;
    }
    if (H5Lexists(fid, "patterns", H5P_DEFAULT) <= 0) {
        fprintf(stderr, PROG ": %s: no /patterns dataset\n", o->from);
        goto done;
    }
    if (pid_h5_read_f32(fid, "patterns", &fs->y, &nd, dims, &err)) {
        fprintf(stderr, PROG ": %s: %s\n", o->from, err.msg);
        goto done;
    }
    if (nd != 2 || dims[0] < 1 || dims[1] < 2) {
        fprintf(stderr, PROG ": %s: /patterns is not an N x P dataset\n", o->from);
        goto done;
    }
    fs->n = (int)dims[0];
    fs->p = (int)dims[1];
    /* The grid: /axis when present, else the axis_start / axis_step
     * attributes. */
    double x0 = NAN, step = NAN;
    int64_t ad[4];
    int an = 0;
    if (H5Lexists(fid, "axis", H5P_DEFAULT) > 0 &&
        !pid_h5_read_f32(fid, "axis", &axis, &an, ad, &err) && an == 1 && ad[0] == fs->p) {
        x0 = axis[0];
        step = (axis[fs->p - 1] - axis[0]) / (fs->p - 1);
    } else if (H5Aexists(fid, "axis_start") > 0 && H5Aexists(fid, "axis_step") > 0) {
        pid_h5_read_attr_f64(fid, "axis_start", &x0, &err);
        pid_h5_read_attr_f64(fid, "axis_step", &step, &err);
    }
    int axis_q = 0;
    if (H5Aexists(fid, "axis_kind") > 0) {
        char *kind = NULL;
        if (!pid_h5_read_attr_str(fid, "axis_kind", &kind, &err))
            axis_q = strstr(kind, "q") != NULL;
        free(kind);
    }
    if (fs->p != g->n_points || !(fabs(x0 - g->x0) <= 1e-3 * g->step) ||
        !(fabs(step - g->step) <= 1e-4 * g->step) || axis_q != g->axis_q) {
        fprintf(stderr,
                PROG ": wrong grid: %s has %d points from %g step %g (%s); model '%s' wants %d "
                     "points from %g step %g (%s)\n",
                o->from, fs->p, x0, step, axis_q ? "Q" : "2-theta", o->model, g->n_points, g->x0,
                g->step, g->axis_q ? "Q" : "2-theta");
        goto done;
    }
    if ((double)fs->n * fs->p * sizeof(float) > (double)STREAM_MAX_BYTES) {
        fprintf(stderr, PROG ": %s is larger than %llu MiB\n", o->from, STREAM_MAX_BYTES >> 20);
        goto done;
    }
    fs->truth = calloc((size_t)fs->n, sizeof *fs->truth);
    if (!fs->truth) goto done;
    char **tj = NULL;
    if (!read_strings(fid, "truth", fs->n, &tj)) {
        for (int i = 0; i < fs->n; i++)
            fs->truth[i] = json_loads(tj[i], 0, NULL);
        free_strings(tj, fs->n);
    } else if (H5Lexists(fid, "labels", H5P_DEFAULT) > 0 &&
               H5Lexists(fid, "phases", H5P_DEFAULT) > 0) {
        int ln = 0;
        int64_t ld[4];
        hid_t pd = H5Dopen2(fid, "phases", H5P_DEFAULT);
        hid_t ps = pd >= 0 ? H5Dget_space(pd) : H5I_INVALID_HID;
        int64_t k = ps >= 0 ? (int64_t)H5Sget_simple_extent_npoints(ps) : 0;
        if (ps >= 0) H5Sclose(ps);
        if (pd >= 0) H5Dclose(pd);
        char **names = NULL;
        if (k > 0 && !read_strings(fid, "phases", k, &names) &&
            !pid_h5_read_f32(fid, "labels", &labels, &ln, ld, &err) && ln == 1 && ld[0] == fs->n) {
            for (int i = 0; i < fs->n; i++) {
                int l = (int)labels[i];
                if (l < 0 || l >= k) continue; /* mixture: truth not given per phase here */
                fs->truth[i] = json_pack("{s:[{s:s, s:f}], s:b}", "phases", "name", names[l],
                                         "fraction", 1.0, "unknown", 0);
            }
        }
        free_strings(names, k);
    }
    if (!o->json && !o->quiet)
        fprintf(stderr, PROG ": %s: %d frames of %d points\n", o->from, fs->n, fs->p);
    ret = 0;
done:
    free(axis);
    free(labels);
    if (fid >= 0) H5Fclose(fid);
    return ret;
}

/* Write the frames, their axis and truth to an HDF5 stack --from reads. */
static int save_frames(const stream_opts *o, const frame_set *fs, const model_grid *g)
{
    pid_error err;
    pid_error_clear(&err);
    hid_t fid = H5I_INVALID_HID, ds = H5I_INVALID_HID;
    float *axis = malloc(sizeof(float) * (size_t)fs->p);
    char **tj = calloc((size_t)fs->n, sizeof *tj);
    int ret = 1;
    pid_status st = PID_OK;
    if (!axis || !tj) goto done;
    for (int i = 0; i < fs->p; i++)
        axis[i] = (float)(g->x0 + g->step * i);
    for (int i = 0; i < fs->n; i++)
        tj[i] = fs->truth && fs->truth[i] ? json_dumps(fs->truth[i], JSON_COMPACT) : strdup("null");
    pid_h5_quiet();
    if ((st = pid_h5_create(o->save, &fid, &err))) goto done;
    if ((st = pid_h5_create_2d(fid, "patterns", H5T_NATIVE_FLOAT, fs->n, fs->p, 0, &ds, &err)) ||
        (st = pid_h5_write_rows(ds, H5T_NATIVE_FLOAT, 0, fs->n, fs->p, fs->y, &err)) ||
        (st = pid_h5_write_1d(fid, "axis", H5T_NATIVE_FLOAT, fs->p, axis, &err)) ||
        (st = pid_h5_write_strings(fid, "truth", fs->n, (const char *const *)tj, &err)) ||
        (st = pid_h5_attr_str(fid, "generator", "phaseid stream --save", &err)) ||
        (st = pid_h5_attr_str(fid, "phaseid_version", PHASEID_VERSION, &err)) ||
        (st = pid_h5_attr_str(fid, "scenario", o->demo ? o->demo : "replay", &err)) ||
        (st = pid_h5_attr_i64(fid, "seed", o->seed, &err)) ||
        (st = pid_h5_attr_i64(fid, "n_patterns", fs->n, &err)) ||
        (st = pid_h5_attr_i64(fid, "n_points", fs->p, &err)) ||
        (st = pid_h5_attr_str(fid, "axis_kind", g->axis_q ? "q_inv_angstrom" : "two_theta_deg",
                              &err)) ||
        (st = pid_h5_attr_f64(fid, "axis_start", g->x0, &err)) ||
        (st = pid_h5_attr_f64(fid, "axis_step", g->step, &err)))
        goto done;
    if (g->n_wl > 0 && (st = pid_h5_attr_f64(fid, "wavelength_a", g->wl[0], &err))) goto done;
    ret = 0;
done:
    if (ds >= 0) H5Dclose(ds);
    if (fid >= 0) H5Fclose(fid);
    if (ret) {
        fprintf(stderr, PROG ": cannot write %s: %s\n", o->save, st ? err.msg : "out of memory");
        unlink(o->save);
    } else if (!o->json) {
        fprintf(stderr, PROG ": wrote %d frames to %s\n", fs->n, o->save);
    }
    for (int i = 0; tj && i < fs->n; i++)
        free(tj[i]);
    free(tj);
    free(axis);
    return ret;
}

/* --------------------------------------------------------------- results */

static void print_result(req_state *r, json_t *j, const char *raw, long long seq)
{
    const stream_opts *o = r->o;
    const frame_set *fs = r->fs;
    tally *t = r->t;
    const json_t *truth = fs->truth ? fs->truth[seq % fs->n] : NULL;
    const char *ferr = json_string_value(json_object_get(j, "error"));
    json_t *phases = json_object_get(j, "phases");
    const char *top = json_string_value(json_object_get(json_array_get(phases, 0), "name"));
    double p0 = json_number_value(json_object_get(json_array_get(phases, 0), "probability"));
    int unk = json_is_true(json_object_get(j, "unknown"));
    if (ferr) {
        t->frame_errors++;
    } else if (truth) {
        int t_unk = json_is_true(json_object_get(truth, "unknown"));
        if (t_unk) {
            t->unk_truth++;
            t->unk_flagged += unk;
        } else {
            const char *major = truth_major(truth, NULL);
            t->truth_known++;
            t->correct += top && major && !strcmp(top, major);
            t->known_flagged += unk;
        }
    }
    if (o->quiet) return;
    if (o->json) {
        fputs(raw, stdout);
        fputc('\n', stdout);
        return;
    }
    char line[512];
    int n = 0;
    if (ferr) {
        n = snprintf(line, sizeof line, "%8lld  error: %s", seq, ferr);
    } else {
        n = snprintf(line, sizeof line, "%8lld  %-14s %.3f", seq, top ? top : "?", p0);
        json_t *second = json_array_get(phases, 1);
        double p1 = json_number_value(json_object_get(second, "probability"));
        const char *s1 = json_string_value(json_object_get(second, "name"));
        if (s1 && p1 >= 0.1 && n < (int)sizeof line)
            n += snprintf(line + n, sizeof line - (size_t)n, "  + %-12s %.3f", s1, p1);
        else if (n < (int)sizeof line)
            n += snprintf(line + n, sizeof line - (size_t)n, "  %20s", "");
        if (n < (int)sizeof line)
            n += snprintf(line + n, sizeof line - (size_t)n, "  %-7s", unk ? "UNKNOWN" : "");
    }
    if (truth && n < (int)sizeof line) {
        double f = 0.0;
        const char *major = truth_major(truth, &f);
        int t_unk = json_is_true(json_object_get(truth, "unknown"));
        n += snprintf(line + n, sizeof line - (size_t)n, "  | truth %s%s", t_unk ? "unknown " : "",
                      major ? major : "?");
        if (json_array_size(json_object_get(truth, "phases")) > 1 && n < (int)sizeof line)
            n += snprintf(line + n, sizeof line - (size_t)n, " %.2f +%zu", f,
                          json_array_size(json_object_get(truth, "phases")) - 1);
        json_t *tk = json_object_get(truth, "temperature_k");
        if (tk && n < (int)sizeof line)
            n += snprintf(line + n, sizeof line - (size_t)n, "  %.0f K", json_number_value(tk));
    }
    puts(line);
}

static void handle_line(req_state *r, const char *s)
{
    while (*s == ' ' || *s == '\r')
        s++;
    if (!*s) return;
    json_t *j = json_loads(s, 0, NULL);
    if (!j) {
        snprintf(r->stream_error, sizeof r->stream_error, "unparsable result line: %.120s", s);
        return;
    }
    json_t *js = json_object_get(j, "seq");
    if (!json_is_integer(js)) {
        const char *e = json_string_value(json_object_get(j, "error"));
        snprintf(r->stream_error, sizeof r->stream_error, "%s", e ? e : "result without seq");
        json_decref(j);
        return;
    }
    long long seq = (long long)json_integer_value(js);
    if (seq != r->next_seq) r->t->seq_errors++;
    r->next_seq = seq + 1;
    r->t->results++;
    print_result(r, j, s, seq < 0 ? 0 : seq);
    json_decref(j);
}

static size_t resp_cb(char *p, size_t sz, size_t n, void *u)
{
    req_state *r = u;
    size_t len = sz * n;
    if (!r->status) curl_easy_getinfo(r->h, CURLINFO_RESPONSE_CODE, &r->status);
    if (r->status != 200) return sbuf_add(&r->body, p, len) ? 0 : len;
    if (sbuf_add(&r->line, p, len)) return 0;
    char *start = r->line.data, *nl;
    while ((nl = memchr(start, '\n', r->line.len - (size_t)(start - r->line.data)))) {
        *nl = '\0';
        handle_line(r, start);
        start = nl + 1;
    }
    size_t rest = r->line.len - (size_t)(start - r->line.data);
    memmove(r->line.data, start, rest);
    r->line.len = rest;
    r->line.data[rest] = '\0';
    return len;
}

/* The upload: frames back to back as little-endian float32 (x86 and ARM
 * hosts are little-endian). Paced: a frame starts only when it is due. */
static size_t upload_cb(char *dst, size_t sz, size_t nm, void *u)
{
    req_state *r = u;
    size_t cap = sz * nm, out = 0, fbytes = sizeof(float) * (size_t)r->fs->p;
    while (out < cap && r->done < r->count) {
        if (r->off == 0) {
            if (g_stop) {
                r->count = r->done; /* end the body at a frame boundary */
                break;
            }
            if (r->o->rate > 0.0) {
                double due = r->t0 + (double)r->t->sent / r->o->rate;
                if (pid_mono_s() < due) {
                    if (out > 0) break;
                    r->paused = 1;
                    return CURL_READFUNC_PAUSE;
                }
            }
        }
        long long frame = (r->seq0 + r->done) % r->fs->n;
        const char *src = (const char *)(r->fs->y + (size_t)frame * (size_t)r->fs->p);
        size_t take = fbytes - r->off < cap - out ? fbytes - r->off : cap - out;
        memcpy(dst + out, src + r->off, take);
        out += take;
        r->off += take;
        if (r->off == fbytes) {
            r->off = 0;
            r->done++;
            r->t->sent++;
        }
    }
    return out;
}

/* Write the truth of frames seq0 .. seq0 + n - 1. */
static void write_truth(FILE *f, const frame_set *fs, long long seq0, int n)
{
    for (int i = 0; i < n; i++) {
        long long seq = seq0 + i;
        const json_t *t = fs->truth ? fs->truth[seq % fs->n] : NULL;
        json_t *o = t ? json_deep_copy(t) : json_object();
        json_object_set_new(o, "seq", json_integer(seq));
        json_object_set_new(o, "frame", json_integer(seq % fs->n));
        char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
        if (s) fprintf(f, "%s\n", s);
        free(s);
        json_decref(o);
    }
    fflush(f);
}

/* One stream request: frames seq0 .. seq0 + count - 1. Returns 0 when every
 * frame sent got its result, else prints why and returns 1. */
static int stream_request(CURLM *multi, CURL *h, const stream_opts *o, const frame_set *fs,
                          tally *t, double t0, long long seq0, int count)
{
    char url[2048], hs[4][160];
    snprintf(url, sizeof url, "%s/v1/models/%s/stream", o->server, o->model);
    snprintf(hs[0], sizeof hs[0], "X-Frame-Size: %d", fs->p);
    snprintf(hs[1], sizeof hs[1], "X-Seq-Start: %lld", seq0);
    snprintf(hs[2], sizeof hs[2], "X-Stream-Id: %s", o->stream_id);
    struct curl_slist *hdr = NULL;
    hdr = curl_slist_append(hdr, hs[0]);
    hdr = curl_slist_append(hdr, "X-Frame-Dtype: FP32");
    hdr = curl_slist_append(hdr, hs[1]);
    hdr = curl_slist_append(hdr, hs[2]);
    hdr = curl_slist_append(hdr, "Content-Type: application/octet-stream");
    hdr = curl_slist_append(hdr, "Transfer-Encoding: chunked");
    hdr = curl_slist_append(hdr, "Expect:");
    hdr = auth_headers(o, hdr);

    req_state r;
    memset(&r, 0, sizeof r);
    r.o = o;
    r.fs = fs;
    r.t = t;
    r.t0 = t0;
    r.seq0 = seq0;
    r.count = count;
    r.next_seq = seq0;
    r.h = h;
    long long sent_before = t->sent, results_before = t->results;

    curl_easy_reset(h);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_POST, 1L);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(h, CURLOPT_READFUNCTION, upload_cb);
    curl_easy_setopt(h, CURLOPT_READDATA, &r);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, resp_cb);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 5L);
    curl_easy_setopt(h, CURLOPT_UPLOAD_BUFFERSIZE, 1L << 20);
    curl_multi_add_handle(multi, h);

    int running = 1;
    CURLMcode mc = CURLM_OK;
    while (running && mc == CURLM_OK) {
        mc = curl_multi_perform(multi, &running);
        if (!running || mc != CURLM_OK) break;
        int wait_ms = 100;
        if (r.paused) {
            double due = t0 + (double)t->sent / o->rate, left = due - pid_mono_s();
            if (left <= 0.0 || g_stop) {
                r.paused = 0;
                curl_easy_pause(h, CURLPAUSE_CONT);
                continue;
            }
            wait_ms = left < 0.1 ? (int)(left * 1000.0) : 100;
        }
        mc = curl_multi_poll(multi, NULL, 0, wait_ms, NULL);
    }
    CURLcode rc = CURLE_OK;
    CURLMsg *msg;
    int left_msgs;
    while ((msg = curl_multi_info_read(multi, &left_msgs)))
        if (msg->msg == CURLMSG_DONE && msg->easy_handle == h) rc = msg->data.result;
    if (!r.status) curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r.status);
    curl_multi_remove_handle(multi, h);
    curl_slist_free_all(hdr);
    /* A last line without its newline. */
    if (r.status == 200 && r.line.len > 0) handle_line(&r, r.line.data);

    int ret = 0;
    long long sent = t->sent - sent_before, got = t->results - results_before;
    if (mc != CURLM_OK) {
        fprintf(stderr, PROG ": libcurl: %s\n", curl_multi_strerror(mc));
        ret = 1;
    } else if (rc != CURLE_OK && r.status != 200 && r.status == 0) {
        fprintf(stderr, PROG ": cannot stream to %s: %s\n", o->server, curl_easy_strerror(rc));
        ret = 1;
    } else if (r.status != 200) {
        char m[512];
        error_text(r.body.data, m, sizeof m);
        fprintf(stderr, PROG ": the server refused the stream (%ld): %s%s\n", r.status, m,
                r.status == 401 ? " (give --token or set PHASEID_TOKEN)" : "");
        ret = 1;
    } else if (r.stream_error[0]) {
        fprintf(stderr, PROG ": stream error: %s\n", r.stream_error);
        ret = 1;
    } else if (rc != CURLE_OK) {
        fprintf(stderr, PROG ": stream to %s broke off: %s\n", o->server, curl_easy_strerror(rc));
        ret = 1;
    } else if (got != sent) {
        fprintf(stderr, PROG ": %lld frames sent in this request, %lld results came back\n", sent,
                got);
        ret = 1;
    }
    free(r.line.data);
    free(r.body.data);
    return ret;
}

/* ------------------------------------------------------------------- main */

static int parse_args(int argc, char **argv, stream_opts *o)
{
    for (int i = 1; i < argc; i++) {
        const char *opt = argv[i];
        if (!strcmp(opt, "--help") || !strcmp(opt, "-h")) {
            stream_usage(stdout);
            return -1;
        }
        if (!strcmp(opt, "--json")) {
            o->json = 1;
            continue;
        }
        if (!strcmp(opt, "--loop")) {
            o->loop = 1;
            continue;
        }
        if (!strcmp(opt, "--quiet")) {
            o->quiet = 1;
            continue;
        }
        if (i + 1 >= argc) return cli_bad_arg(PROG, opt, NULL, "unknown option or missing value");
        const char *v = argv[++i];
        double x;
        if (!strcmp(opt, "--server")) {
            if (strncmp(v, "http://", 7) && strncmp(v, "https://", 8))
                return cli_bad_arg(PROG, opt, v, "expected http://HOST:PORT");
            o->server = v;
        } else if (!strcmp(opt, "--model")) {
            size_t n =
                strspn(v, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-");
            if (!*v || v[n] || strlen(v) > 128 || !strcmp(v, ".") || !strcmp(v, ".."))
                return cli_bad_arg(PROG, opt, v, "expected a model name [A-Za-z0-9._-]{1,128}");
            o->model = v;
        } else if (!strcmp(opt, "--rate")) {
            if (cli_parse_num(v, &x) || x < 0.0 || x > 1e7)
                return cli_bad_arg(PROG, opt, v, "expected frames per second >= 0");
            o->rate = x;
        } else if (!strcmp(opt, "--from")) {
            o->from = v;
        } else if (!strcmp(opt, "--demo")) {
            if (demo_kind_parse(v) < 0)
                return cli_bad_arg(PROG, opt, v, "expected heating-ramp or composition-scan");
            o->demo = v;
        } else if (!strcmp(opt, "--frames")) {
            if (cli_parse_int(v, 20, DEMO_MAX_FRAMES, &o->frames))
                return cli_bad_arg(PROG, opt, v, "expected a number of frames 20..1000000");
        } else if (!strcmp(opt, "--seed")) {
            if (cli_parse_int(v, 0, INT64_MAX, &o->seed))
                return cli_bad_arg(PROG, opt, v, "expected a non-negative integer");
        } else if (!strcmp(opt, "--token")) {
            o->token = v;
        } else if (!strcmp(opt, "--chunk")) {
            if (cli_parse_int(v, 1, 1 << 20, &o->chunk))
                return cli_bad_arg(PROG, opt, v, "expected frames per request 1..1048576");
        } else if (!strcmp(opt, "--truth-out")) {
            o->truth_out = v;
        } else if (!strcmp(opt, "--save")) {
            o->save = v;
        } else if (!strcmp(opt, "--stream-id")) {
            size_t n =
                strspn(v, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-");
            if (!*v || v[n] || strlen(v) > 64)
                return cli_bad_arg(PROG, opt, v, "expected [A-Za-z0-9._-]{1,64}");
            o->stream_id = v;
        } else if (!strcmp(opt, "--grid")) {
            if (cli_parse_triple(v, o->grid) || !(o->grid[0] > 0.0) || !(o->grid[1] > o->grid[0]) ||
                !(o->grid[2] > 0.0) || o->grid[1] >= 175.0)
                return cli_bad_arg(PROG, opt, v, "expected MIN:MAX:STEP in 2-theta degrees");
            o->have_grid = 1;
        } else {
            return cli_bad_arg(PROG, opt, NULL, "unknown option");
        }
    }
    if (!o->demo == !o->from) return cli_bad_arg(PROG, "--demo/--from", NULL, "give exactly one");
    if (!o->model && !o->save)
        return cli_bad_arg(PROG, "--model", NULL, "required (the model to stream to)");
    if (!o->model && !o->have_grid)
        return cli_bad_arg(PROG, "--grid", NULL, "required with --save and no --model");
    if (o->model && o->have_grid)
        return cli_bad_arg(PROG, "--grid", NULL, "the grid comes from the model; drop --grid");
    if (o->from && o->save) return cli_bad_arg(PROG, "--save", NULL, "only with --demo");
    return 0;
}

int cli_stream(int argc, char **argv)
{
    stream_opts o;
    memset(&o, 0, sizeof o);
    o.server = "http://127.0.0.1:8000";
    o.frames = 400;
    o.token = getenv("PHASEID_TOKEN");
    int pr = parse_args(argc, argv, &o);
    if (pr) return pr < 0 ? 0 : pr;
    /* No trailing slash: paths are appended. */
    char server[1024];
    snprintf(server, sizeof server, "%s", o.server);
    for (size_t n = strlen(server); n > 0 && server[n - 1] == '/'; n--)
        server[n - 1] = '\0';
    o.server = server;
    if (!o.stream_id) o.stream_id = o.demo ? o.demo : "replay";

    if (curl_global_init(CURL_GLOBAL_DEFAULT)) {
        fprintf(stderr, PROG ": cannot initialize libcurl\n");
        return 1;
    }
    int ret = 1;
    frame_set fs = {0};
    model_grid g = {0};
    FILE *truth = NULL;
    CURL *h = NULL;
    CURLM *multi = NULL;
    if (o.model) {
        if (fetch_model(&o, &g)) goto done;
    } else {
        g.axis_q = 0;
        g.x0 = o.grid[0];
        g.step = o.grid[2];
        g.n_points = (int)floor((o.grid[1] - o.grid[0]) / o.grid[2] + 1e-6) + 1;
        g.n_wl = 2;
        g.wl[0] = 1.540562;
        g.wl[1] = 1.544390;
    }
    if (o.demo ? demo_frames(&o, &g, &fs) : file_frames(&o, &g, &fs)) goto done;
    if (o.save && save_frames(&o, &fs, &g)) goto done;
    if (!o.model) {
        ret = 0;
        goto done;
    }
    if (o.truth_out && !(truth = fopen(o.truth_out, "w"))) {
        fprintf(stderr, PROG ": cannot write %s: %s\n", o.truth_out, strerror(errno));
        goto done;
    }
    long long chunk = o.chunk;
    if (chunk <= 0) chunk = o.rate > 0.0 ? (long long)fmax(1.0, round(o.rate * 0.25)) : 256;

    struct sigaction sa, old_int, old_term;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);

    h = curl_easy_init();
    multi = curl_multi_init();
    if (!h || !multi) {
        fprintf(stderr, PROG ": cannot initialize libcurl\n");
        goto restore;
    }
    tally t = {0};
    double t0 = pid_mono_s();
    long long seq = 0, total = o.loop ? -1 : fs.n;
    int failed = 0;
    while (!g_stop && (total < 0 || seq < total)) {
        int count = (int)(total < 0 ? chunk : (total - seq < chunk ? total - seq : chunk));
        /* Do not cross the end of the frame set in one request when looping:
         * not needed (frames wrap by seq), but keeps requests aligned. */
        if (truth) write_truth(truth, &fs, seq, count);
        long long before = t.sent;
        if (stream_request(multi, h, &o, &fs, &t, t0, seq, count)) {
            failed = 1;
            break;
        }
        seq += t.sent - before;
        if (t.sent == before) break; /* interrupted before the first frame */
    }
    double dt = pid_mono_s() - t0;
    FILE *sf = o.json ? stderr : stdout;
    fprintf(sf,
            "%s%lld frames sent, %lld results received (%lld frame errors%s) in %.2f s: %.1f "
            "frames/s\n",
            o.json ? PROG ": " : "# ", t.sent, t.results, t.frame_errors,
            t.seq_errors ? ", OUT OF ORDER" : "", dt, dt > 0 ? (double)t.sent / dt : 0.0);
    if (t.truth_known > 0)
        fprintf(sf, "%saccuracy vs truth: %lld/%lld = %.1f %% top phase = majority phase%s",
                o.json ? PROG ": " : "# ", t.correct, t.truth_known,
                100.0 * (double)t.correct / (double)t.truth_known, "");
    if (t.truth_known > 0)
        fprintf(sf, "; %lld/%lld in-library frames flagged unknown\n", t.known_flagged,
                t.truth_known);
    if (t.unk_truth > 0)
        fprintf(sf, "%sout-of-library frames flagged unknown: %lld/%lld\n",
                o.json ? PROG ": " : "# ", t.unk_flagged, t.unk_truth);
    fflush(sf);
    ret = failed || t.results != t.sent || t.seq_errors ? 1 : 0;
restore:
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
done:
    if (truth) fclose(truth);
    if (multi) curl_multi_cleanup(multi);
    if (h) curl_easy_cleanup(h);
    frame_set_free(&fs);
    curl_global_cleanup();
    return ret;
}
