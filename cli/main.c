/* main.c: the `sdxs` executable: parses the subcommand and hands over to it.
 * Exit codes: 0 success, 2 bad usage, 3 bad model folder or input file, 4 runtime failure. */
#include <stdio.h>
#include <string.h>

#include "sdxs.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: sdxs <command> [options]\n"
               "commands: generate, serve, bench, info, tokenize\n");
}

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? SDXS_ERR_INVALID : SDXS_OK;
    }
    fprintf(stderr, "sdxs: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return SDXS_ERR_INVALID;
}
