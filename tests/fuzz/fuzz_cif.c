/* libFuzzer target for the CIF reader: any byte string through
 * pid_cif_read_buffer must either fail cleanly (no output, a message) or
 * give structures that keep the pid_structure invariants; everything is
 * freed. Also feeds the first bytes to the element and space-group parsers. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "synth/cif.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    /* Warnings about P1 fallbacks would flood the fuzzer's output. */
    pid_log_set_level(PID_LOG_ERROR);
    return 0;
}

static void check_structure(const pid_structure *s)
{
    if (s->n_asym < 1 || s->n_sites < s->n_asym || s->n_sites > PID_STRUCTURE_MAX_SITES) abort();
    if (s->n_ops < 1 || !s->rot || !s->trans || !s->sites) abort();
    if (!(pid_structure_volume(s) > 0)) abort();
    if (!isfinite(pid_structure_density(s))) abort();
    if (memchr(s->name, 0, sizeof s->name) == NULL) abort();
    if (memchr(s->formula, 0, sizeof s->formula) == NULL) abort();
    if (memchr(s->reference, 0, sizeof s->reference) == NULL) abort();
    for (int i = 0; i < s->n_sites; i++) {
        const pid_site *t = &s->sites[i];
        if (t->z < 1 || t->z > 98) abort();
        if (!(t->occupancy > 0 && t->occupancy <= 1)) abort();
        if (!(t->b_iso >= 0) || !isfinite(t->b_iso)) abort();
        for (int k = 0; k < 3; k++)
            if (!(t->frac[k] >= 0 && t->frac[k] < 1)) abort();
    }
    (void)pid_structure_formula_units(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pid_structure *s = NULL;
    int n = -1;
    pid_error err;
    pid_error_clear(&err);
    pid_status st = pid_cif_read_buffer((const char *)data, size, "fuzz.cif", &s, &n, &err);
    if (st == PID_OK) {
        if (!s || n < 1) abort();
        for (int i = 0; i < n; i++)
            check_structure(&s[i]);
        pid_structure_array_destroy(s, n);
    } else {
        if (s || n != 0 || !err.msg[0] || err.code != st) abort();
    }

    /* The symbol parsers take C strings: use the first line. */
    char line[80];
    size_t m = 0;
    while (m < size && m + 1 < sizeof line && data[m] != '\n') {
        line[m] = data[m] ? (char)data[m] : ' ';
        m++;
    }
    line[m] = '\0';
    int charge;
    (void)pid_element_z(line, &charge);
    (void)pid_spacegroup_hall_number(line, line, 0);
    return 0;
}
