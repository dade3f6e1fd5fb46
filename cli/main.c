/* The phaseid command: dispatches to subcommands (synth, phases, bench, ...). */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

static const cli_command commands[] = {
    {"phases", "list or show the phases of a library", cli_phases},
    {"synth", "simulate XRD sticks or write a synthetic dataset", cli_synth},
    {"match", "rank reference phases against measured patterns (physics baseline)", cli_match},
    {"bench", "measure simulator and inference throughput", cli_bench},
    {"arch", "parameters and FLOPs per frame of a network spec", cli_arch},
    {"train", "train a phase-identification network on simulated patterns", cli_train},
    {"classify", "identify the phases of measured patterns with a trained model", cli_classify},
    {"serve", "serve models over HTTP (KServe v2, streams, events, metrics)", cli_serve},
    {"stream", "stream frames (demo scenarios or a file) to a server, print results", cli_stream},
};

static void usage(FILE *f)
{
    fprintf(f,
            "phaseid %s: real-time diffraction phase identification\n\n"
            "usage: phaseid <command> [options]\n\ncommands:\n",
            PHASEID_VERSION);
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-8s %s\n", commands[i].name, commands[i].help);
    fprintf(f, "\nRun 'phaseid <command> --help' for the options of a command.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("phaseid %s\n", PHASEID_VERSION);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "phaseid: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
