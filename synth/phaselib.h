/* The phase library: every crystal structure found in the *.cif files of a
 * folder (the built-in data/phases, or a user's folder), loaded once, in file
 * name order, and looked up by index or phase name. */
#ifndef PID_PHASELIB_H
#define PID_PHASELIB_H

#include <stddef.h>

#include "synth/structure.h"

typedef struct pid_phaselib pid_phaselib;

/* Folder of the built-in library: "<data>/phases", where <data> is
 * $PHASEID_DATA if set, else the source tree's data/ folder compiled in
 * (PHASEID_DATA_DIR) when it exists, else "<folder of the executable>/../
 * share/phaseid/data". Writes the path into buf. */
pid_status pid_phaselib_builtin_dir(char *buf, size_t cap, pid_error *err);

/* Load every *.cif file of `dir_or_builtin` ("builtin" = the folder above),
 * sorted by file name; a file with several structures contributes each
 * ("stem:block"). Any file that fails to load fails the whole load with that
 * file's message; a folder without CIF files is an error too. *out is NULL
 * on failure; free a library with pid_phaselib_destroy. */
pid_status pid_phaselib_load(const char *dir_or_builtin, pid_phaselib **out, pid_error *err);
void pid_phaselib_destroy(pid_phaselib *lib); /* accepts NULL */
/* A library of n structures made in memory (say, pid_outlier_relative's),
 * cloned; dir names it. */
pid_status pid_phaselib_from(const pid_structure *const *phases, int n, const char *dir,
                             pid_phaselib **out, pid_error *err);

int pid_phaselib_count(const pid_phaselib *lib);
/* Phase i (0-based) or NULL when out of range; owned by the library. */
const pid_structure *pid_phaselib_get(const pid_phaselib *lib, int i);
/* Phase by name (exact, else case-insensitive), or NULL; owned by the library. */
const pid_structure *pid_phaselib_find(const pid_phaselib *lib, const char *name);
/* Index of a phase by name as above, or -1. */
int pid_phaselib_index(const pid_phaselib *lib, const char *name);
/* The folder the library was loaded from. */
const char *pid_phaselib_dir(const pid_phaselib *lib);

#endif
