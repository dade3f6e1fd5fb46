/* Subcommands of the phaseid command. Each takes argc/argv starting at the
 * subcommand name and returns the process exit code (0 ok, 1 error, 2 usage). */
#ifndef PID_CLI_H
#define PID_CLI_H

typedef struct {
    const char *name;
    const char *help;
    int (*run)(int argc, char **argv);
} cli_command;

int cli_phases(int argc, char **argv);
int cli_synth(int argc, char **argv);
int cli_bench(int argc, char **argv);
int cli_match(int argc, char **argv);
int cli_arch(int argc, char **argv);
int cli_train(int argc, char **argv);
int cli_classify(int argc, char **argv);
int cli_serve(int argc, char **argv);
int cli_stream(int argc, char **argv);
/* `phaseid synth xrd --sticks FILE.cif ...` (called by cli_synth). */
int cli_synth_sticks(int argc, char **argv);

#endif
