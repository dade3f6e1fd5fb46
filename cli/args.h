/* Shared command-line value parsing for the phaseid subcommands: strict
 * numbers (whole string, finite), bounded integers, "A:B" pairs and
 * "A:B:C" triples, and the usage-error message every subcommand prints. */
#ifndef PID_CLI_ARGS_H
#define PID_CLI_ARGS_H

/* Each parser returns 0 and writes *out on success, -1 on anything else
 * (empty, trailing junk, NaN/Inf, out of range) and then leaves *out alone. */
int cli_parse_num(const char *s, double *out);
int cli_parse_int(const char *s, long long lo, long long hi, long long *out);
/* "A:B"; with allow_off also "off" (-> 0:0). */
int cli_parse_pair(const char *s, double *a, double *b, int allow_off);
/* "A:B:C" (e.g. MIN:MAX:STEP). */
int cli_parse_triple(const char *s, double v[3]);

/* Print "PROG: OPT VAL: WHY" (or "PROG: OPT: WHY" without a value) to
 * stderr and return 2, the usage-error exit status. */
int cli_bad_arg(const char *prog, const char *opt, const char *val, const char *why);

#include "synth/augment.h"

/* Returned by cli_aug_option for an option that is not an augmentation one. */
#define CLI_AUG_NOT_MINE (-1)

/* The augmentation options shared by `synth xrd` and `train` (--strain,
 * --zero-shift, --displacement, --size, --microstrain, --texture,
 * --caglioti-u/v/w, --eta, --background, --bg-order, --hump, --air, --noise,
 * --poisson, --impurities, --impurity-height, --min-fraction), each with its
 * value v: sets the field of *a and returns 0, returns 2 after printing the
 * usage error for a bad value, or CLI_AUG_NOT_MINE for any other option. */
int cli_aug_option(const char *prog, const char *opt, const char *v, pid_augment *a);

#endif
