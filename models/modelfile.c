/* Model files (HDF5): atomic save through "<path>.tmp" + rename, and a loader
 * that refuses, naming the file and the problem, anything it cannot trust:
 * missing, not HDF5, truncated, incomplete, newer, inconsistent with its spec. */
#include "models/modelfile.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/h5.h"
#include "kernels/xrd_render.h"

#define MF_FORMAT_NAME "phaseid-model"

static const char *const norm_names[MF_NORM_COUNT] = {"none", "max", "area"};

const char *mf_norm_name(mf_norm_kind k)
{
    return (k >= 0 && k < MF_NORM_COUNT) ? norm_names[k] : "?";
}

const char *mf_head_name(net_head_kind head, int fractions)
{
    if (head == NET_HEAD_SIGMOID) return fractions ? "sigmoid+fractions" : "sigmoid";
    return fractions ? "softmax+fractions" : "softmax";
}

mf_model *mf_model_create(void)
{
    mf_model *m = calloc(1, sizeof *m);
    if (m) m->format_version = MF_FORMAT_VERSION;
    return m;
}

void mf_model_drop_sticks(mf_model *m)
{
    if (!m) return;
    free(m->twin_pairs);
    free(m->twin_cos);
    m->twin_pairs = NULL;
    m->twin_cos = NULL;
    m->n_twins = 0;
    free(m->phase_cells);
    free(m->phase_sg);
    free(m->stick_off);
    free(m->stick_hkl);
    free(m->stick_d);
    free(m->stick_int);
    m->phase_cells = NULL;
    m->phase_sg = NULL;
    m->stick_off = NULL;
    m->stick_hkl = NULL;
    m->stick_d = NULL;
    m->stick_int = NULL;
    m->n_sticks = 0;
}

void mf_model_destroy(mf_model *m)
{
    if (!m) return;
    if (m->phases) {
        for (int64_t i = 0; i < m->n_classes; i++) {
            free(m->phases[i].name);
            free(m->phases[i].formula);
            free(m->phases[i].source);
            free(m->phases[i].reference);
        }
        free(m->phases);
    }
    free(m->modality);
    free(m->arch_spec);
    free(m->grid.source);
    free(m->preprocessing);
    free(m->unknown_score);
    free(m->generator);
    free(m->phaseid_version);
    free(m->created);
    free(m->library);
    free(m->params);
    free(m->buffers);
    free(m->opt_m);
    free(m->opt_v);
    mf_model_drop_sticks(m);
    free(m);
}

/* ------------------------------------------------------------------------
 * Validation
 * ------------------------------------------------------------------------ */

static int finite_array(const float *v, int64_t n, int64_t *bad)
{
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(v[i])) {
            *bad = i;
            return 0;
        }
    return 1;
}

/* Re-label an error from another module (spec parser) as bad file content. */
static pid_status as_format(pid_error *err)
{
    if (err) err->code = PID_ERR_FORMAT;
    return PID_ERR_FORMAT;
}

static pid_status validate_grid(const mf_model *m, pid_error *err)
{
    const mf_grid *g = &m->grid;
    if (g->axis != K_XRD_AXIS_TWO_THETA && g->axis != K_XRD_AXIS_Q)
        return pid_fail(err, PID_ERR_FORMAT, "grid: unknown axis kind %d", g->axis);
    if (g->n_points < 2 || g->n_points > K_XRD_MAX_POINTS)
        return pid_fail(err, PID_ERR_FORMAT, "grid: n_points %lld outside 2..%d",
                        (long long)g->n_points, K_XRD_MAX_POINTS);
    if (!isfinite(g->x0) || !isfinite(g->step) || g->step <= 0 || g->x0 < 0)
        return pid_fail(err, PID_ERR_FORMAT, "grid: bad x0 %g / step %g (need x0 >= 0, step > 0)",
                        g->x0, g->step);
    double x_end = g->x0 + g->step * (double)(g->n_points - 1);
    if (g->axis == K_XRD_AXIS_TWO_THETA && x_end >= 180.0)
        return pid_fail(err, PID_ERR_FORMAT, "grid: 2-theta range ends at %g deg (>= 180)", x_end);
    if (g->n_lines < 1 || g->n_lines > 2)
        return pid_fail(err, PID_ERR_FORMAT, "grid: %d wavelengths (need 1 or 2)", g->n_lines);
    for (int i = 0; i < g->n_lines; i++) {
        if (!isfinite(g->wavelength_a[i]) || g->wavelength_a[i] <= 0)
            return pid_fail(err, PID_ERR_FORMAT, "grid: wavelength %d is %g angstrom", i,
                            g->wavelength_a[i]);
        if (!isfinite(g->wavelength_weight[i]) || g->wavelength_weight[i] < 0 ||
            (i == 0 && g->wavelength_weight[i] <= 0))
            return pid_fail(err, PID_ERR_FORMAT, "grid: wavelength weight %d is %g", i,
                            g->wavelength_weight[i]);
    }
    if (!g->source || !g->source[0])
        return pid_fail(err, PID_ERR_FORMAT, "grid: missing source name");
    if (m->input.rank != 1 || m->input.w != g->n_points)
        return pid_fail(err, PID_ERR_FORMAT,
                        "grid: %lld points but the network input is %s (need C x %lld)",
                        (long long)g->n_points, net_spec_format_shape(&m->input, (char[64]){0}, 64),
                        (long long)g->n_points);
    return PID_OK;
}

/* Re-derive the parameter and buffer counts from the spec on the stored input
 * shape and class count: a file whose weights do not fit its architecture is
 * useless however well-formed it is. */
static pid_status validate_spec(const mf_model *m, pid_error *err)
{
    net_spec *s = NULL;
    net_spec_totals t;
    net_layer_info head;
    pid_status st = net_spec_parse(m->arch_spec, &s, err);
    if (st) {
        pid_error_prefix(err, "architecture spec");
        return as_format(err);
    }
    st = net_spec_build(s, &m->input, m->n_classes, err);
    if (st) {
        pid_error_prefix(err, "architecture spec on input %s, %lld classes",
                         net_spec_format_shape(&m->input, (char[64]){0}, 64),
                         (long long)m->n_classes);
        st = as_format(err);
        goto done;
    }
    if ((st = net_spec_totals_get(s, &t, err))) goto done;
    if ((st = net_spec_layer(s, net_spec_n_layers(s) - 1, &head, err))) goto done;
    if (t.params != m->n_params) {
        st = pid_fail(err, PID_ERR_FORMAT,
                      "n_params %lld inconsistent with the architecture spec (%lld parameters "
                      "on input %s, %lld classes)",
                      (long long)m->n_params, (long long)t.params,
                      net_spec_format_shape(&m->input, (char[64]){0}, 64), (long long)m->n_classes);
        goto done;
    }
    if (t.buffers != m->n_buffers) {
        st = pid_fail(err, PID_ERR_FORMAT,
                      "n_buffers %lld inconsistent with the architecture spec (%lld)",
                      (long long)m->n_buffers, (long long)t.buffers);
        goto done;
    }
    if (head.head != m->head || head.fractions != (m->head_fractions != 0)) {
        st = pid_fail(err, PID_ERR_FORMAT, "head kind '%s' disagrees with the spec's head '%s'",
                      mf_head_name(m->head, m->head_fractions),
                      mf_head_name(head.head, head.fractions));
        goto done;
    }
done:
    net_spec_destroy(s);
    return st;
}

/* The optional phase cells and sticks: all or none, consistent. */
static pid_status validate_sticks(const mf_model *m, pid_error *err)
{
    const int any =
        m->phase_cells || m->phase_sg || m->stick_off || m->stick_hkl || m->stick_d || m->stick_int;
    if (!any) return PID_OK;
    if (!m->phase_cells || !m->phase_sg || !m->stick_off ||
        (m->n_sticks > 0 && (!m->stick_hkl || !m->stick_d || !m->stick_int)))
        return pid_fail(err, PID_ERR_FORMAT, "phase sticks: datasets incomplete");
    const int64_t k = m->n_classes;
    for (int64_t c = 0; c < k; c++) {
        const double *p = m->phase_cells + 6 * c;
        for (int i = 0; i < 6; i++)
            if (!isfinite(p[i]) || !(p[i] > 0) || (i >= 3 && !(p[i] < 180)))
                return pid_fail(err, PID_ERR_FORMAT, "phase %lld: bad cell", (long long)c);
        if (m->phase_sg[c] < 1 || m->phase_sg[c] > 230)
            return pid_fail(err, PID_ERR_FORMAT, "phase %lld: space group %d outside 1..230",
                            (long long)c, m->phase_sg[c]);
        if (m->stick_off[c] < 0 || m->stick_off[c + 1] < m->stick_off[c])
            return pid_fail(err, PID_ERR_FORMAT, "phase sticks: offsets not increasing at %lld",
                            (long long)c);
    }
    if (m->stick_off[0] != 0 || m->stick_off[k] != m->n_sticks)
        return pid_fail(err, PID_ERR_FORMAT, "phase sticks: offsets do not span the %lld sticks",
                        (long long)m->n_sticks);
    for (int64_t j = 0; j < m->n_sticks; j++) {
        if (!(m->stick_d[j] > 0) || !isfinite(m->stick_d[j]) || !(m->stick_int[j] >= 0.0f) ||
            !isfinite(m->stick_int[j]))
            return pid_fail(err, PID_ERR_FORMAT, "phase sticks: stick %lld: bad d or intensity",
                            (long long)j);
        for (int i = 0; i < 3; i++)
            if (m->stick_hkl[3 * j + i] < -1000 || m->stick_hkl[3 * j + i] > 1000)
                return pid_fail(err, PID_ERR_FORMAT, "phase sticks: index out of range at %lld",
                                (long long)j);
    }
    return PID_OK;
}

pid_status mf_validate(const mf_model *m, pid_error *err)
{
    pid_status st;
    int64_t bad;
    if (!m) return pid_fail(err, PID_ERR_ARG, "model: NULL");
    if (m->format_version > MF_FORMAT_VERSION)
        return pid_fail(err, PID_ERR_UNSUPPORTED,
                        "format version %lld is newer than this phaseid supports (%d); upgrade "
                        "phaseid",
                        (long long)m->format_version, MF_FORMAT_VERSION);
    if (m->format_version < 1)
        return pid_fail(err, PID_ERR_FORMAT, "bad format version %lld",
                        (long long)m->format_version);
    if (!m->modality || strcmp(m->modality, "xrd") != 0)
        return pid_fail(err, PID_ERR_UNSUPPORTED, "unknown modality '%s' (supported: xrd)",
                        m->modality ? m->modality : "(none)");
    if (!m->arch_spec || !m->arch_spec[0])
        return pid_fail(err, PID_ERR_FORMAT, "missing architecture spec");
    if (m->n_classes < 1)
        return pid_fail(err, PID_ERR_FORMAT, "n_classes %lld < 1", (long long)m->n_classes);
    if (m->head != NET_HEAD_SOFTMAX && m->head != NET_HEAD_SIGMOID)
        return pid_fail(err, PID_ERR_FORMAT, "unknown head kind %d", (int)m->head);
    if (!m->phases) return pid_fail(err, PID_ERR_FORMAT, "no phase list");
    for (int64_t i = 0; i < m->n_classes; i++) {
        const mf_phase *p = &m->phases[i];
        if (!p->name || !p->name[0])
            return pid_fail(err, PID_ERR_FORMAT, "phase %lld has no name", (long long)i);
        if (!p->formula || !p->source || !p->reference)
            return pid_fail(err, PID_ERR_FORMAT, "phase '%s': missing formula/source/reference",
                            p->name);
    }
    if ((st = validate_grid(m, err))) return st;
    if (m->n_params < 1 || !m->params)
        return pid_fail(err, PID_ERR_FORMAT, "no parameters (n_params %lld)",
                        (long long)m->n_params);
    if (m->n_buffers < 0 || (m->n_buffers > 0 && !m->buffers))
        return pid_fail(err, PID_ERR_FORMAT, "bad buffers (n_buffers %lld)",
                        (long long)m->n_buffers);
    if ((st = validate_spec(m, err))) return st;
    if (!finite_array(m->params, m->n_params, &bad))
        return pid_fail(err, PID_ERR_FORMAT, "parameter %lld is not finite (%g)", (long long)bad,
                        (double)m->params[bad]);
    if (!finite_array(m->buffers, m->n_buffers, &bad))
        return pid_fail(err, PID_ERR_FORMAT, "buffer %lld is not finite (%g)", (long long)bad,
                        (double)m->buffers[bad]);
    if (!m->preprocessing)
        return pid_fail(err, PID_ERR_FORMAT, "missing preprocessing description");
    if (m->normalization < 0 || m->normalization >= MF_NORM_COUNT)
        return pid_fail(err, PID_ERR_FORMAT, "unknown normalization kind %d",
                        (int)m->normalization);
    if (!isfinite(m->temperature) || m->temperature <= 0)
        return pid_fail(err, PID_ERR_FORMAT, "calibration temperature %g (need > 0)",
                        m->temperature);
    if (!(m->ece >= 0 && m->ece <= 1))
        return pid_fail(err, PID_ERR_FORMAT, "ECE %g outside [0, 1]", m->ece);
    if (!m->unknown_score || strcmp(m->unknown_score, "energy") != 0)
        return pid_fail(err, PID_ERR_FORMAT, "unknown-phase score '%s' (supported: energy)",
                        m->unknown_score ? m->unknown_score : "(none)");
    if (!isfinite(m->unknown_threshold))
        return pid_fail(err, PID_ERR_FORMAT, "unknown-phase threshold is not finite");
    if (!(m->unknown_auroc >= 0 && m->unknown_auroc <= 1))
        return pid_fail(err, PID_ERR_FORMAT, "unknown-phase AUROC %g outside [0, 1]",
                        m->unknown_auroc);
    if ((m->opt_m == NULL) != (m->opt_v == NULL) || m->opt_step < 0)
        return pid_fail(err, PID_ERR_FORMAT, "optimizer state: moments incomplete or step < 0");
    for (int64_t i = 0; m->opt_m && i < m->n_params; i++)
        if (!isfinite(m->opt_m[i]) || !isfinite(m->opt_v[i]) || m->opt_v[i] < 0.0f)
            return pid_fail(err, PID_ERR_FORMAT, "optimizer state: moment %lld is not finite",
                            (long long)i);
    if (!(m->residual_threshold >= 0 && m->residual_threshold <= 1) ||
        !(m->residual_strain_max >= 0 && m->residual_strain_max <= 0.1))
        return pid_fail(err, PID_ERR_FORMAT,
                        "residual check: threshold %g outside [0, 1] or strain %g outside [0, 0.1]",
                        m->residual_threshold, m->residual_strain_max);
    if (!(m->missing_threshold >= 0 && m->missing_threshold <= 1) ||
        (m->missing_threshold > 0 && !(m->residual_threshold > 0)))
        return pid_fail(err, PID_ERR_FORMAT,
                        "missing-reflection check: threshold %g outside [0, 1], or set without "
                        "the residual check",
                        m->missing_threshold);
    if (m->set_rule.n != 0) {
        if (m->set_rule.n < 2 || m->set_rule.n > CALIB_MAX_SET || m->head != NET_HEAD_SIGMOID)
            return pid_fail(err, PID_ERR_FORMAT,
                            "set thresholds: %d ranks (need 2..%d, and a sigmoid head)",
                            m->set_rule.n, CALIB_MAX_SET);
        for (int r = 1; r < m->set_rule.n; r++)
            if (!(m->set_rule.thr[r] > 0.0 && m->set_rule.thr[r] < 1.0))
                return pid_fail(err, PID_ERR_FORMAT, "set threshold of rank %d is %g (need (0, 1))",
                                r, m->set_rule.thr[r]);
    }
    if ((st = validate_sticks(m, err))) return st;
    if (m->n_twins < 0 || (m->n_twins > 0 && (!m->twin_pairs || !m->twin_cos)))
        return pid_fail(err, PID_ERR_FORMAT, "near twins: %lld pairs without data",
                        (long long)m->n_twins);
    for (int64_t i = 0; i < m->n_twins; i++) {
        int32_t a = m->twin_pairs[2 * i], b = m->twin_pairs[2 * i + 1];
        if (a < 0 || b <= a || b >= m->n_classes ||
            !(m->twin_cos[i] >= -1.0f && m->twin_cos[i] <= 1.0001f))
            return pid_fail(err, PID_ERR_FORMAT,
                            "near twins: pair %lld (%d, %d, cosine %g) invalid", (long long)i, a, b,
                            (double)m->twin_cos[i]);
    }
    if (m->train_steps < 0 || m->train_batch < 0 || !isfinite(m->train_flops) || m->train_flops < 0)
        return pid_fail(err, PID_ERR_FORMAT, "bad training provenance (steps/batch/FLOPs)");
    if (!m->generator || !m->phaseid_version || !m->created || !m->library)
        return pid_fail(err, PID_ERR_FORMAT,
                        "missing training provenance (generator/version/date/library)");
    return PID_OK;
}

/* ------------------------------------------------------------------------
 * Save
 * ------------------------------------------------------------------------ */

static pid_status attr_u64(hid_t loc, const char *name, uint64_t v, pid_error *err)
{
    pid_status st = PID_OK;
    hid_t space = H5I_INVALID_HID, a = H5I_INVALID_HID;
    PID_H5_CHECK(space = H5Screate(H5S_SCALAR));
    PID_H5_CHECK(a = H5Acreate2(loc, name, H5T_STD_U64LE, space, H5P_DEFAULT, H5P_DEFAULT));
    PID_H5_CHECK(H5Awrite(a, H5T_NATIVE_UINT64, &v));
fail:
    if (a >= 0) H5Aclose(a);
    if (space >= 0) H5Sclose(space);
    return st;
}

static pid_status write_phases(hid_t fid, const mf_model *m, pid_error *err)
{
    pid_status st = PID_OK;
    hid_t g = H5I_INVALID_HID;
    int64_t n = m->n_classes;
    const char **s = malloc((size_t)n * sizeof *s);
    if (!s) return pid_fail(err, PID_ERR_NOMEM, "phase list: out of memory");
    PID_H5_CHECK(g = H5Gcreate2(fid, "phases", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    for (int field = 0; field < 4; field++) {
        static const char *const names[4] = {"names", "formulas", "sources", "references"};
        for (int64_t i = 0; i < n; i++) {
            const mf_phase *p = &m->phases[i];
            s[i] = field == 0   ? p->name
                   : field == 1 ? p->formula
                   : field == 2 ? p->source
                                : p->reference;
        }
        if ((st = pid_h5_write_strings(g, names[field], n, s, err))) goto fail;
    }
fail:
    if (g >= 0) H5Gclose(g);
    free(s);
    return st;
}

static pid_status write_sticks(hid_t fid, const mf_model *m, pid_error *err)
{
    pid_status st = PID_OK;
    hid_t g = H5I_INVALID_HID;
    const int64_t k = m->n_classes;
    PID_H5_CHECK(g = H5Gopen2(fid, "phases", H5P_DEFAULT));
    if ((st = pid_h5_write_2d(g, "cells", H5T_NATIVE_DOUBLE, k, 6, m->phase_cells, err)) ||
        (st = pid_h5_write_1d(g, "spacegroups", H5T_NATIVE_INT32, k, m->phase_sg, err)) ||
        (st = pid_h5_write_1d(g, "sticks_offset", H5T_NATIVE_INT64, k + 1, m->stick_off, err)) ||
        (st = pid_h5_write_2d(g, "sticks_hkl", H5T_NATIVE_INT32, m->n_sticks, 3, m->stick_hkl,
                              err)) ||
        (st = pid_h5_write_1d(g, "sticks_d", H5T_NATIVE_DOUBLE, m->n_sticks, m->stick_d, err)) ||
        (st = pid_h5_write_1d(g, "sticks_intensity", H5T_NATIVE_FLOAT, m->n_sticks, m->stick_int,
                              err)))
        goto fail;
fail:
    if (g >= 0) H5Gclose(g);
    return st;
}

static pid_status write_grid(hid_t fid, const mf_grid *gr, pid_error *err)
{
    pid_status st = PID_OK;
    hid_t g = H5I_INVALID_HID;
    PID_H5_CHECK(g = H5Gcreate2(fid, "grid", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    if ((st = pid_h5_attr_str(g, "axis", gr->axis == K_XRD_AXIS_Q ? "Q" : "2theta", err)) ||
        (st = pid_h5_attr_f64(g, "x0", gr->x0, err)) ||
        (st = pid_h5_attr_f64(g, "step", gr->step, err)) ||
        (st = pid_h5_attr_i64(g, "n_points", gr->n_points, err)) ||
        (st = pid_h5_attr_f64_array(g, "wavelengths_a", gr->n_lines, gr->wavelength_a, err)) ||
        (st = pid_h5_attr_f64_array(g, "weights", gr->n_lines, gr->wavelength_weight, err)) ||
        (st = pid_h5_attr_str(g, "source", gr->source, err)))
        goto fail;
fail:
    if (g >= 0) H5Gclose(g);
    return st;
}

static pid_status write_file(const char *path, const mf_model *m, pid_error *err)
{
    pid_status st = PID_OK;
    hid_t fid = H5I_INVALID_HID;
    char shape[64];
    if ((st = pid_h5_create(path, &fid, err))) return st;
    net_spec_format_shape(&m->input, shape, sizeof shape);
    if ((st = pid_h5_attr_str(fid, "format", MF_FORMAT_NAME, err)) ||
        (st = pid_h5_attr_i64(fid, "format_version", MF_FORMAT_VERSION, err)) ||
        (st = pid_h5_attr_str(fid, "modality", m->modality, err)) ||
        (st = pid_h5_attr_str(fid, "arch_spec", m->arch_spec, err)) ||
        (st = pid_h5_attr_str(fid, "head", mf_head_name(m->head, m->head_fractions), err)) ||
        (st = pid_h5_attr_str(fid, "input_shape", shape, err)) ||
        (st = pid_h5_attr_i64(fid, "n_classes", m->n_classes, err)) ||
        (st = pid_h5_attr_i64(fid, "n_params", m->n_params, err)) ||
        (st = pid_h5_attr_i64(fid, "n_buffers", m->n_buffers, err)) ||
        (st = pid_h5_attr_str(fid, "preprocessing", m->preprocessing, err)) ||
        (st = pid_h5_attr_i64(fid, "background_removal", m->background_removal ? 1 : 0, err)) ||
        (st = pid_h5_attr_str(fid, "normalization", mf_norm_name(m->normalization), err)) ||
        (st = pid_h5_attr_f64(fid, "temperature", m->temperature, err)) ||
        (st = pid_h5_attr_f64(fid, "ece", m->ece, err)) ||
        (st = pid_h5_attr_str(fid, "unknown_score", m->unknown_score, err)) ||
        (st = pid_h5_attr_f64(fid, "unknown_threshold", m->unknown_threshold, err)) ||
        (st = pid_h5_attr_f64(fid, "unknown_auroc", m->unknown_auroc, err)) ||
        (m->residual_threshold > 0 &&
         ((st = pid_h5_attr_f64(fid, "residual_threshold", m->residual_threshold, err)) ||
          (st = pid_h5_attr_f64(fid, "residual_strain_max", m->residual_strain_max, err)))) ||
        (m->missing_threshold > 0 &&
         (st = pid_h5_attr_f64(fid, "missing_threshold", m->missing_threshold, err))) ||
        (m->set_rule.n > 0 && (st = pid_h5_attr_f64_array(fid, "set_thresholds", m->set_rule.n - 1,
                                                          m->set_rule.thr + 1, err))) ||
        (st = attr_u64(fid, "train_seed", m->train_seed, err)) ||
        (st = pid_h5_attr_i64(fid, "train_steps", m->train_steps, err)) ||
        (st = pid_h5_attr_i64(fid, "train_batch", m->train_batch, err)) ||
        (st = pid_h5_attr_f64(fid, "train_flops", m->train_flops, err)) ||
        (st = pid_h5_attr_str(fid, "generator", m->generator, err)) ||
        (st = pid_h5_attr_str(fid, "phaseid_version", m->phaseid_version, err)) ||
        (st = pid_h5_attr_str(fid, "created", m->created, err)) ||
        (st = pid_h5_attr_str(fid, "library", m->library, err)))
        goto fail;
    if ((st = pid_h5_write_1d(fid, "params", H5T_NATIVE_FLOAT, m->n_params, m->params, err)) ||
        (st = pid_h5_write_1d(fid, "buffers", H5T_NATIVE_FLOAT, m->n_buffers, m->buffers, err)) ||
        (st = write_phases(fid, m, err)) || (st = write_grid(fid, &m->grid, err)))
        goto fail;
    if (m->stick_off && (st = write_sticks(fid, m, err))) goto fail;
    if (m->n_twins > 0) {
        hid_t g = H5Gopen2(fid, "phases", H5P_DEFAULT);
        if (g < 0) {
            st = pid_fail(err, PID_ERR_IO, "HDF5: cannot open /phases");
            goto fail;
        }
        st = pid_h5_write_2d(g, "twins", H5T_NATIVE_INT32, m->n_twins, 2, m->twin_pairs, err);
        if (!st)
            st = pid_h5_write_1d(g, "twin_cosines", H5T_NATIVE_FLOAT, m->n_twins, m->twin_cos, err);
        H5Gclose(g);
        if (st) goto fail;
    }
    if (m->opt_m &&
        ((st = pid_h5_write_1d(fid, "optimizer_m", H5T_NATIVE_FLOAT, m->n_params, m->opt_m, err)) ||
         (st = pid_h5_write_1d(fid, "optimizer_v", H5T_NATIVE_FLOAT, m->n_params, m->opt_v, err)) ||
         (st = pid_h5_attr_i64(fid, "optimizer_step", m->opt_step, err))))
        goto fail;
    PID_H5_CHECK(H5Fflush(fid, H5F_SCOPE_GLOBAL));
fail:
    if (fid >= 0 && H5Fclose(fid) < 0 && !st)
        st = pid_fail(err, PID_ERR_HDF5, "closing the file failed");
    return st;
}

/* fsync a file (or directory) by path so the rename publishes durable data. */
static int sync_path(const char *path, int dir)
{
    int fd = open(path, dir ? O_RDONLY | O_DIRECTORY : O_RDONLY);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

pid_status mf_save(const char *path, const mf_model *m, pid_error *err)
{
    pid_status st;
    if (!path || !path[0]) return pid_fail(err, PID_ERR_ARG, "model file: empty path");
    if ((st = mf_validate(m, err))) {
        pid_error_prefix(err, "%s: refusing to save", path);
        return st;
    }
    size_t n = strlen(path);
    char *tmp = malloc(n + 5);
    if (!tmp) return pid_fail(err, PID_ERR_NOMEM, "%s: out of memory", path);
    memcpy(tmp, path, n);
    memcpy(tmp + n, ".tmp", 5);
    st = write_file(tmp, m, err);
    if (!st && sync_path(tmp, 0) != 0)
        st = pid_fail(err, PID_ERR_IO, "%s: fsync failed: %s", tmp, strerror(errno));
    if (!st && rename(tmp, path) != 0)
        st = pid_fail(err, PID_ERR_IO, "%s: cannot rename %s into place: %s", path, tmp,
                      strerror(errno));
    if (st) {
        unlink(tmp);
        if (st != PID_ERR_IO) pid_error_prefix(err, "%s", path);
    } else {
        /* Make the rename itself durable; failure here is not fatal to the data. */
        char *dir = strdup(path);
        if (dir) {
            char *slash = strrchr(dir, '/');
            if (slash) {
                if (slash == dir)
                    slash[1] = '\0';
                else
                    *slash = '\0';
                sync_path(dir, 1);
            } else {
                sync_path(".", 1);
            }
            free(dir);
        }
    }
    free(tmp);
    return st;
}

/* ------------------------------------------------------------------------
 * Load
 * ------------------------------------------------------------------------ */

/* The innermost HDF5 error message ("truncated file: eof = ..."). */
static herr_t first_error_cb(unsigned n, const H5E_error2_t *e, void *data)
{
    char *buf = data;
    if (!buf[0] && e->desc && e->desc[0]) snprintf(buf, 200, "%s", e->desc);
    return 0;
}

static int has_hdf5_signature(const char *path)
{
    static const unsigned char sig[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
    FILE *f = fopen(path, "rb");
    int found = 0;
    if (!f) return 0;
    /* The superblock sits at 0, 512, 1024, 2048, ... (after a user block). */
    for (long off = 0; off <= (1L << 20) && !found; off = off ? off * 2 : 512) {
        unsigned char b[8];
        if (fseek(f, off, SEEK_SET) != 0 || fread(b, 1, 8, f) != 8) break;
        found = memcmp(b, sig, 8) == 0;
    }
    fclose(f);
    return found;
}

static pid_status open_model_file(const char *path, hid_t *fid, pid_error *err)
{
    struct stat sb;
    *fid = H5I_INVALID_HID;
    if (stat(path, &sb) != 0)
        return pid_fail(err, PID_ERR_IO, "%s: cannot open model file: %s", path, strerror(errno));
    if (!S_ISREG(sb.st_mode)) return pid_fail(err, PID_ERR_IO, "%s: not a regular file", path);
    if (!has_hdf5_signature(path))
        return pid_fail(err, PID_ERR_IO, "%s: not an HDF5 file (no HDF5 signature)", path);
    pid_h5_quiet();
    H5Eclear2(H5E_DEFAULT);
    *fid = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (*fid < 0) {
        char msg[200] = {0};
        H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, first_error_cb, msg);
        H5Eclear2(H5E_DEFAULT);
        return pid_fail(err, PID_ERR_FORMAT,
                        "%s: HDF5 file is truncated or corrupt and cannot be opened (%s)", path,
                        msg[0] ? msg : "no detail");
    }
    return PID_OK;
}

/* Read a float64 attribute holding 1..max values (scalar or 1-D). */
static pid_status read_attr_f64_array(hid_t loc, const char *name, int max, double *v, int *n,
                                      pid_error *err)
{
    pid_status st = PID_OK;
    hid_t a = H5I_INVALID_HID, space = H5I_INVALID_HID;
    a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0) return pid_fail(err, PID_ERR_FORMAT, "missing attribute '%s'", name);
    PID_H5_CHECK(space = H5Aget_space(a));
    hssize_t np = H5Sget_simple_extent_npoints(space);
    if (np < 1 || np > max) {
        st = pid_fail(err, PID_ERR_FORMAT, "attribute '%s' has %lld values (need 1..%d)", name,
                      (long long)np, max);
        goto fail;
    }
    PID_H5_CHECK(H5Aread(a, H5T_NATIVE_DOUBLE, v));
    *n = (int)np;
fail:
    if (space >= 0) H5Sclose(space);
    if (a >= 0) H5Aclose(a);
    return st;
}

static pid_status read_attr_u64(hid_t loc, const char *name, uint64_t *v, pid_error *err)
{
    pid_status st = PID_OK;
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0) return pid_fail(err, PID_ERR_FORMAT, "missing attribute '%s'", name);
    PID_H5_CHECK(H5Aread(a, H5T_NATIVE_UINT64, v));
fail:
    H5Aclose(a);
    return st;
}

/* Read a 1-D string dataset of exactly n entries into out[0..n) (strdup'd). */
static pid_status read_strings(hid_t loc, const char *name, int64_t n, char **out, pid_error *err)
{
    char path[64], **col = NULL;
    int64_t got = 0;
    snprintf(path, sizeof path, "phases/%s", name);
    pid_status st = pid_h5_read_strings(loc, path, &col, &got, err);
    if (st) return st;
    if (got != n)
        st = pid_fail(err, PID_ERR_FORMAT, "phase count %lld in '%s' != n_classes %lld",
                      (long long)got, path, (long long)n);
    for (int64_t i = 0; i < got; i++) {
        if (!st)
            out[i] = col[i];
        else
            free(col[i]);
    }
    free(col);
    return st;
}

/* Read a float32 1-D dataset of exactly n values. */
static pid_status read_floats(hid_t fid, const char *name, int64_t n, float **out, pid_error *err)
{
    int ndim = 0;
    int64_t dims[4] = {0};
    pid_status st = pid_h5_read_f32(fid, name, out, &ndim, dims, err);
    if (st) return st;
    if (ndim != 1 || dims[0] != n) {
        free(*out);
        *out = NULL;
        return pid_fail(err, PID_ERR_FORMAT, "dataset '%s' has %lld values, attribute says %lld",
                        name, ndim == 1 ? (long long)dims[0] : -1LL, (long long)n);
    }
    if (n == 0) {
        free(*out);
        *out = NULL;
    }
    return PID_OK;
}

static pid_status read_head(const char *s, mf_model *m, pid_error *err)
{
    static const struct {
        const char *name;
        net_head_kind head;
        int fractions;
    } kinds[4] = {{"softmax", NET_HEAD_SOFTMAX, 0},
                  {"sigmoid", NET_HEAD_SIGMOID, 0},
                  {"softmax+fractions", NET_HEAD_SOFTMAX, 1},
                  {"sigmoid+fractions", NET_HEAD_SIGMOID, 1}};
    for (int i = 0; i < 4; i++)
        if (strcmp(s, kinds[i].name) == 0) {
            m->head = kinds[i].head;
            m->head_fractions = kinds[i].fractions;
            return PID_OK;
        }
    return pid_fail(err, PID_ERR_FORMAT, "unknown head kind '%s'", s);
}

static pid_status read_grid(hid_t fid, mf_grid *gr, pid_error *err)
{
    pid_status st = PID_OK;
    hid_t g = H5I_INVALID_HID;
    char *axis = NULL;
    int nw = 0;
    g = H5Gopen2(fid, "grid", H5P_DEFAULT);
    if (g < 0) return pid_fail(err, PID_ERR_FORMAT, "missing group 'grid'");
    if ((st = pid_h5_read_attr_str(g, "axis", &axis, err)) ||
        (st = pid_h5_read_attr_f64(g, "x0", &gr->x0, err)) ||
        (st = pid_h5_read_attr_f64(g, "step", &gr->step, err)) ||
        (st = pid_h5_read_attr_i64(g, "n_points", &gr->n_points, err)) ||
        (st = read_attr_f64_array(g, "wavelengths_a", 2, gr->wavelength_a, &gr->n_lines, err)) ||
        (st = read_attr_f64_array(g, "weights", 2, gr->wavelength_weight, &nw, err)) ||
        (st = pid_h5_read_attr_str(g, "source", &gr->source, err)))
        goto fail;
    if (strcmp(axis, "2theta") == 0) {
        gr->axis = K_XRD_AXIS_TWO_THETA;
    } else if (strcmp(axis, "Q") == 0) {
        gr->axis = K_XRD_AXIS_Q;
    } else {
        st = pid_fail(err, PID_ERR_FORMAT, "unknown axis kind '%s' (need 2theta or Q)", axis);
        goto fail;
    }
    if (nw != gr->n_lines)
        st = pid_fail(err, PID_ERR_FORMAT, "%d wavelengths but %d weights", gr->n_lines, nw);
fail:
    if (st) pid_error_prefix(err, "grid");
    free(axis);
    if (g >= 0) H5Gclose(g);
    return st;
}

static pid_status read_phases(hid_t fid, mf_model *m, pid_error *err)
{
    pid_status st = PID_OK;
    int64_t n = m->n_classes;
    char **col = NULL;
    hid_t g = H5Gopen2(fid, "phases", H5P_DEFAULT);
    if (g < 0) return pid_fail(err, PID_ERR_FORMAT, "missing group 'phases'");
    m->phases = calloc((size_t)n, sizeof *m->phases);
    col = calloc((size_t)n, sizeof *col);
    if (!m->phases || !col) {
        st = pid_fail(err, PID_ERR_NOMEM, "phases: out of memory");
        goto fail;
    }
    static const char *const names[4] = {"names", "formulas", "sources", "references"};
    for (int field = 0; field < 4; field++) {
        memset(col, 0, (size_t)n * sizeof *col);
        st = read_strings(fid, names[field], n, col, err);
        for (int64_t i = 0; i < n; i++) {
            mf_phase *p = &m->phases[i];
            char **dst = field == 0   ? &p->name
                         : field == 1 ? &p->formula
                         : field == 2 ? &p->source
                                      : &p->reference;
            *dst = col[i]; /* ownership moves to the record (NULL on failure) */
        }
        if (st) goto fail;
    }
fail:
    free(col);
    H5Gclose(g);
    return st;
}

/* Read dataset `name` of shape [rows] (cols 0) or [rows, cols] as memtype. */
static pid_status read_shaped(hid_t fid, const char *name, hid_t memtype, int64_t rows,
                              int64_t cols, void **out, pid_error *err)
{
    int nd = 0;
    int64_t dims[4] = {0};
    pid_status st = pid_h5_read_as(fid, name, memtype, out, &nd, dims, err);
    if (st) return st;
    if (nd != (cols ? 2 : 1) || dims[0] != rows || (cols && dims[1] != cols)) {
        free(*out);
        *out = NULL;
        return pid_fail(err, PID_ERR_FORMAT, "dataset '%s' has the wrong shape", name);
    }
    return PID_OK;
}

/* The optional phase cells and sticks (all six datasets, or none). */
static pid_status read_sticks(hid_t fid, mf_model *m, pid_error *err)
{
    if (H5Lexists(fid, "phases/sticks_offset", H5P_DEFAULT) <= 0) return PID_OK;
    const int64_t k = m->n_classes;
    void *v = NULL;
    pid_status st;
    if ((st = read_shaped(fid, "phases/cells", H5T_NATIVE_DOUBLE, k, 6, &v, err))) return st;
    m->phase_cells = v;
    if ((st = read_shaped(fid, "phases/spacegroups", H5T_NATIVE_INT32, k, 0, &v, err))) return st;
    m->phase_sg = v;
    if ((st = read_shaped(fid, "phases/sticks_offset", H5T_NATIVE_INT64, k + 1, 0, &v, err)))
        return st;
    m->stick_off = v;
    m->n_sticks = m->stick_off[k];
    if (m->n_sticks < 0 || m->n_sticks > ((int64_t)1 << 28))
        return pid_fail(err, PID_ERR_FORMAT, "phase sticks: count %lld out of range",
                        (long long)m->n_sticks);
    if ((st = read_shaped(fid, "phases/sticks_hkl", H5T_NATIVE_INT32, m->n_sticks, 3, &v, err)))
        return st;
    m->stick_hkl = v;
    if ((st = read_shaped(fid, "phases/sticks_d", H5T_NATIVE_DOUBLE, m->n_sticks, 0, &v, err)))
        return st;
    m->stick_d = v;
    if ((st = read_shaped(fid, "phases/sticks_intensity", H5T_NATIVE_FLOAT, m->n_sticks, 0, &v,
                          err)))
        return st;
    m->stick_int = v;
    return PID_OK;
}

/* The optional near twins (both datasets, or none). */
static pid_status read_twins(hid_t fid, mf_model *m, pid_error *err)
{
    if (H5Lexists(fid, "phases/twins", H5P_DEFAULT) <= 0) return PID_OK;
    int nd = 0;
    int64_t dims[4] = {0};
    void *v = NULL;
    pid_status st = pid_h5_read_as(fid, "phases/twins", H5T_NATIVE_INT32, &v, &nd, dims, err);
    if (st) return st;
    m->twin_pairs = v;
    if (nd != 2 || dims[1] != 2 || dims[0] < 0 || dims[0] > m->n_classes * m->n_classes)
        return pid_fail(err, PID_ERR_FORMAT, "dataset 'phases/twins' has the wrong shape");
    m->n_twins = dims[0];
    if ((st = read_shaped(fid, "phases/twin_cosines", H5T_NATIVE_FLOAT, m->n_twins, 0, &v, err)))
        return st;
    m->twin_cos = v;
    return PID_OK;
}

int mf_phase_twins(const mf_model *m, int64_t k, int32_t *out, int cap)
{
    int n = 0;
    for (int64_t t = 0; t < m->n_twins; t++) {
        int32_t a = m->twin_pairs[2 * t], b = m->twin_pairs[2 * t + 1];
        int32_t o = a == k ? b : b == k ? a : -1;
        if (o < 0) continue;
        if (n < cap) out[n] = o;
        n++;
    }
    return n;
}

static pid_status read_model(hid_t fid, mf_model *m, pid_error *err)
{
    pid_status st;
    char *s = NULL;
    int64_t v = 0;
    /* Identity first: a newer or foreign file may have any other layout. */
    if ((st = pid_h5_read_attr_str(fid, "format", &s, err))) return st;
    if (strcmp(s, MF_FORMAT_NAME) != 0) {
        st = pid_fail(err, PID_ERR_FORMAT, "not a phaseid model file (format '%s')", s);
        free(s);
        return st;
    }
    free(s);
    s = NULL;
    if ((st = pid_h5_read_attr_i64(fid, "format_version", &m->format_version, err))) return st;
    if (m->format_version > MF_FORMAT_VERSION)
        return pid_fail(err, PID_ERR_UNSUPPORTED,
                        "format version %lld is newer than this phaseid supports (%d); upgrade "
                        "phaseid",
                        (long long)m->format_version, MF_FORMAT_VERSION);
    if ((st = pid_h5_read_attr_str(fid, "modality", &m->modality, err))) return st;
    if (strcmp(m->modality, "xrd") != 0)
        return pid_fail(err, PID_ERR_UNSUPPORTED, "unknown modality '%s' (supported: xrd)",
                        m->modality);

    if ((st = pid_h5_read_attr_str(fid, "arch_spec", &m->arch_spec, err))) return st;
    if ((st = pid_h5_read_attr_str(fid, "head", &s, err))) return st;
    st = read_head(s, m, err);
    free(s);
    s = NULL;
    if (st) return st;
    if ((st = pid_h5_read_attr_str(fid, "input_shape", &s, err))) return st;
    st = net_spec_parse_shape(s, &m->input, err);
    free(s);
    s = NULL;
    if (st) {
        pid_error_prefix(err, "attribute 'input_shape'");
        return as_format(err);
    }
    if ((st = pid_h5_read_attr_i64(fid, "n_classes", &m->n_classes, err))) return st;
    if (m->n_classes < 1 || m->n_classes > (1 << 24))
        return pid_fail(err, PID_ERR_FORMAT, "n_classes %lld out of range",
                        (long long)m->n_classes);
    if ((st = pid_h5_read_attr_i64(fid, "n_params", &m->n_params, err)) ||
        (st = pid_h5_read_attr_i64(fid, "n_buffers", &m->n_buffers, err)) ||
        (st = pid_h5_read_attr_str(fid, "preprocessing", &m->preprocessing, err)) ||
        (st = pid_h5_read_attr_i64(fid, "background_removal", &v, err)))
        return st;
    m->background_removal = v != 0;
    if ((st = pid_h5_read_attr_str(fid, "normalization", &s, err))) return st;
    m->normalization = MF_NORM_COUNT;
    for (int k = 0; k < MF_NORM_COUNT; k++)
        if (strcmp(s, norm_names[k]) == 0) m->normalization = (mf_norm_kind)k;
    if (m->normalization == MF_NORM_COUNT)
        st = pid_fail(err, PID_ERR_FORMAT, "unknown normalization kind '%s'", s);
    free(s);
    s = NULL;
    if (st) return st;
    if ((st = pid_h5_read_attr_f64(fid, "temperature", &m->temperature, err)) ||
        (st = pid_h5_read_attr_f64(fid, "ece", &m->ece, err)) ||
        (st = pid_h5_read_attr_str(fid, "unknown_score", &m->unknown_score, err)) ||
        (st = pid_h5_read_attr_f64(fid, "unknown_threshold", &m->unknown_threshold, err)) ||
        (st = pid_h5_read_attr_f64(fid, "unknown_auroc", &m->unknown_auroc, err)) ||
        (H5Aexists(fid, "residual_threshold") > 0 &&
         ((st = pid_h5_read_attr_f64(fid, "residual_threshold", &m->residual_threshold, err)) ||
          (st = pid_h5_read_attr_f64(fid, "residual_strain_max", &m->residual_strain_max, err)))) ||
        (H5Aexists(fid, "missing_threshold") > 0 &&
         (st = pid_h5_read_attr_f64(fid, "missing_threshold", &m->missing_threshold, err))) ||
        (H5Aexists(fid, "set_thresholds") > 0 &&
         (st = read_attr_f64_array(fid, "set_thresholds", CALIB_MAX_SET - 1, m->set_rule.thr + 1,
                                   &m->set_rule.n, err))) ||
        (st = read_attr_u64(fid, "train_seed", &m->train_seed, err)) ||
        (st = pid_h5_read_attr_i64(fid, "train_steps", &m->train_steps, err)) ||
        (st = pid_h5_read_attr_i64(fid, "train_batch", &m->train_batch, err)) ||
        (st = pid_h5_read_attr_f64(fid, "train_flops", &m->train_flops, err)) ||
        (st = pid_h5_read_attr_str(fid, "generator", &m->generator, err)) ||
        (st = pid_h5_read_attr_str(fid, "phaseid_version", &m->phaseid_version, err)) ||
        (st = pid_h5_read_attr_str(fid, "created", &m->created, err)) ||
        (st = pid_h5_read_attr_str(fid, "library", &m->library, err)))
        return st;
    if (m->set_rule.n > 0) m->set_rule.n++; /* thresholds of ranks 1..n-1 */
    if (m->n_params < 1 || m->n_params > ((int64_t)1 << 34) || m->n_buffers < 0 ||
        m->n_buffers > ((int64_t)1 << 34))
        return pid_fail(err, PID_ERR_FORMAT, "n_params %lld / n_buffers %lld out of range",
                        (long long)m->n_params, (long long)m->n_buffers);
    if ((st = read_phases(fid, m, err)) || (st = read_grid(fid, &m->grid, err))) return st;
    /* Cheap consistency checks before reading the (possibly large) arrays. */
    if ((st = validate_grid(m, err)) || (st = validate_spec(m, err))) return st;
    if ((st = read_floats(fid, "params", m->n_params, &m->params, err)) ||
        (st = read_floats(fid, "buffers", m->n_buffers, &m->buffers, err)))
        return st;
    if ((st = read_sticks(fid, m, err)) || (st = read_twins(fid, m, err))) return st;
    if (H5Lexists(fid, "optimizer_m", H5P_DEFAULT) > 0 &&
        ((st = read_floats(fid, "optimizer_m", m->n_params, &m->opt_m, err)) ||
         (st = read_floats(fid, "optimizer_v", m->n_params, &m->opt_v, err)) ||
         (st = pid_h5_read_attr_i64(fid, "optimizer_step", &m->opt_step, err))))
        return st;
    return mf_validate(m, err);
}

pid_status mf_load(const char *path, mf_model **out, pid_error *err)
{
    pid_status st;
    hid_t fid = H5I_INVALID_HID;
    mf_model *m = NULL;
    if (!out) return pid_fail(err, PID_ERR_ARG, "mf_load: NULL output");
    *out = NULL;
    if (!path || !path[0]) return pid_fail(err, PID_ERR_ARG, "model file: empty path");
    if ((st = open_model_file(path, &fid, err))) return st;
    m = mf_model_create();
    if (!m) {
        st = pid_fail(err, PID_ERR_NOMEM, "out of memory");
    } else {
        st = read_model(fid, m, err);
    }
    if (st) {
        pid_error_prefix(err, "%s", path);
        /* Safe on a half-read record: unread fields are NULL (phases, when
         * present, were calloc'd for n_classes entries). */
        mf_model_destroy(m);
        m = NULL;
    }
    H5Eclear2(H5E_DEFAULT);
    if (H5Fclose(fid) < 0 && !st) {
        mf_model_destroy(m);
        m = NULL;
        st = pid_fail(err, PID_ERR_HDF5, "%s: closing the file failed", path);
    }
    *out = m;
    return st;
}

/* ------------------------------------------------------------------------
 * Summary
 * ------------------------------------------------------------------------ */

int mf_auroc_measured(const mf_model *m)
{
    return !(m && m->generator && strstr(m->generator, "\"unknown_auroc_measured\": false"));
}

void mf_print_summary(FILE *f, const mf_model *m)
{
    char shape[64];
    if (!m) return;
    const mf_grid *g = &m->grid;
    int q = g->axis == K_XRD_AXIS_Q;
    fprintf(f, "phaseid model (format %lld, modality %s)\n", (long long)m->format_version,
            m->modality ? m->modality : "?");
    fprintf(f, "  architecture : %s\n", m->arch_spec ? m->arch_spec : "?");
    fprintf(f, "  head         : %s, %lld classes\n", mf_head_name(m->head, m->head_fractions),
            (long long)m->n_classes);
    fprintf(f, "  input        : %s\n", net_spec_format_shape(&m->input, shape, sizeof shape));
    fprintf(f, "  parameters   : %lld trainable, %lld buffers\n", (long long)m->n_params,
            (long long)m->n_buffers);
    fprintf(f, "  grid         : %s %g .. %g %s, step %g, %lld points\n", q ? "Q" : "2-theta",
            g->x0, g->x0 + g->step * (double)(g->n_points - 1), q ? "1/A" : "deg", g->step,
            (long long)g->n_points);
    fprintf(f, "  source       : %s (", g->source ? g->source : "?");
    for (int i = 0; i < g->n_lines && i < 2; i++)
        fprintf(f, "%s%.6f A x %g", i ? ", " : "", g->wavelength_a[i], g->wavelength_weight[i]);
    fprintf(f, ")\n");
    fprintf(f, "  preprocessing: %s (background removal %s, normalization %s)\n",
            m->preprocessing ? m->preprocessing : "?", m->background_removal ? "on" : "off",
            mf_norm_name(m->normalization));
    fprintf(f, "  calibration  : temperature %.4g, ECE %.4g\n", m->temperature, m->ece);
    if (mf_auroc_measured(m))
        fprintf(f, "  unknown phase: %s score, threshold %.4g, held-out AUROC %.4g\n",
                m->unknown_score ? m->unknown_score : "?", m->unknown_threshold, m->unknown_auroc);
    else
        fprintf(f,
                "  unknown phase: %s score, threshold %.4g, held-out AUROC not measured (no "
                "phases held out)\n",
                m->unknown_score ? m->unknown_score : "?", m->unknown_threshold);
    if (m->set_rule.n > 0) {
        fprintf(f, "  phase set    : up to %d phases; rank 2.. reported from probability",
                m->set_rule.n);
        for (int r = 1; r < m->set_rule.n; r++)
            fprintf(f, "%s%.3g", r > 1 ? " / " : " ", m->set_rule.thr[r]);
        fprintf(f, "\n");
    }
    if (m->residual_threshold > 0)
        fprintf(f,
                "  residual     : unexplained peak intensity > %.3g flags unknown (cells +-%.3g; "
                "%s)\n",
                m->residual_threshold, m->residual_strain_max,
                m->stick_off ? "sticks in the file" : "sticks from the phases' CIFs");
    else
        fprintf(f, "  residual     : off\n");
    if (m->missing_threshold > 0)
        fprintf(f,
                "  missing      : strong reflections of a phase reported alone without a peak > "
                "%.3g of their intensity flags unknown\n",
                m->missing_threshold);
    fprintf(f, "  training     : seed %llu, %lld steps x batch %lld, %.3g FLOPs\n",
            (unsigned long long)m->train_seed, (long long)m->train_steps, (long long)m->train_batch,
            m->train_flops);
    fprintf(f, "  provenance   : phaseid %s, %s, library %s\n",
            m->phaseid_version ? m->phaseid_version : "?", m->created ? m->created : "?",
            m->library ? m->library : "?");
    fprintf(f, "  generator    : %s\n", m->generator ? m->generator : "?");
    fprintf(f, "  phases:\n");
    for (int64_t i = 0; m->phases && i < m->n_classes; i++) {
        const mf_phase *p = &m->phases[i];
        fprintf(f, "    %3lld %-24s %-16s %s%s%s\n", (long long)i, p->name ? p->name : "?",
                p->formula ? p->formula : "", p->source ? p->source : "",
                p->reference && p->reference[0] ? "  " : "", p->reference ? p->reference : "");
    }
}
