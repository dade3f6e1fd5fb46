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

#endif
