/* main.c: the `sdxs` executable: finds the subcommand and hands over to it.
 * Exit codes: 0 success, 2 bad usage, 3 bad model folder or input file, 4 runtime failure. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

typedef struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} command;

static const command commands[] = {
    {"generate", sdxs_cmd_generate, "prompt (and optionally an init image) to PNG files"},
    {"serve", sdxs_cmd_serve, "the HTTP server and the live demo page"},
    {"bench", sdxs_cmd_bench, "time each stage and the whole pipeline"},
    {"info", sdxs_cmd_info, "a model folder's configuration and parameter counts"},
    {"tokenize", sdxs_cmd_tokenize, "a prompt's 77 token ids"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: sdxs <command> [options]   (sdxs <command> --help for its options)\n\n");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\nexit codes: 0 success, 2 bad usage, 3 bad model folder or input file, "
               "4 runtime failure\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return SDXS_ERR_INVALID;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return SDXS_OK;
    }
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (!strcmp(argv[1], commands[i].name))
            return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "sdxs: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return SDXS_ERR_INVALID;
}
