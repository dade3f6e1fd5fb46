#include "cli/cli.h"
#include <stdio.h>
int cli_synth(int argc, char **argv)
{
    fprintf(stderr, "not yet\n");
    return 1;
}
int cli_bench(int argc, char **argv)
{
    fprintf(stderr, "not yet\n");
    return 1;
}
