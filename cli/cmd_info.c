/* cmd_info.c: `sdxs info` (what a model folder holds, checked tensor by tensor, without loading
 * weights) and `sdxs tokenize` (a prompt's 77 token ids on one line). */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

int sdxs_cmd_info(int argc, char **argv)
{
    sdxs_cli_common c = {0};
    sdxs_model *m;
    int rc;

    for (int i = 1; i < argc; i++) {
        int r = sdxs_cli_common_flag(&c, argc, argv, &i);
        if (r < 0)
            return SDXS_ERR_INVALID;
        if (r == 0 && !strcmp(argv[i], "--controlnet") && i + 1 < argc) {
            c.opt.controlnet_dir = argv[++i];
            continue;
        }
        if (r == 0) {
            FILE *f = strcmp(argv[i], "--help") ? stderr : stdout;
            fprintf(f, "usage: sdxs info [--model DIR] [--controlnet DIR]\n"
                       "Checks the folder (every configuration, tensor name, shape and byte "
                       "range) and prints each component's class, key settings and parameter "
                       "count.\n");
            if (f == stdout)
                return 0;
            fprintf(stderr, "sdxs: info: unknown option '%s'\n", argv[i]);
            return SDXS_ERR_INVALID;
        }
    }
    c.opt.describe_only = 1;
    rc = sdxs_cli_open(&c, &m);
    if (rc)
        return rc;
    fputs(sdxs_model_describe(m), stdout);
    sdxs_model_free(m);
    return 0;
}

int sdxs_cmd_tokenize(int argc, char **argv)
{
    sdxs_cli_common c = {0};
    const char *prompt = NULL;
    int32_t ids[SDXS_MAX_TOKENS];
    sdxs_error err;
    sdxs_model *m;
    int rc;

    for (int i = 1; i < argc; i++) {
        int r = sdxs_cli_common_flag(&c, argc, argv, &i);
        if (r < 0)
            return SDXS_ERR_INVALID;
        if (r == 1)
            continue;
        if (!strcmp(argv[i], "--prompt") && i + 1 < argc) {
            prompt = argv[++i];
            continue;
        }
        if (!strcmp(argv[i], "--help")) {
            printf("usage: sdxs tokenize [--model DIR] --prompt TEXT\n"
                   "Prints the prompt's 77 token ids on one line, separated by spaces.\n");
            return 0;
        }
        fprintf(stderr, "sdxs: tokenize: unknown option '%s' (see --help)\n", argv[i]);
        return SDXS_ERR_INVALID;
    }
    if (!prompt) {
        fprintf(stderr, "sdxs: tokenize: --prompt TEXT is required\n");
        return SDXS_ERR_INVALID;
    }
    c.opt.describe_only = 1;
    rc = sdxs_cli_open(&c, &m);
    if (rc)
        return rc;
    if (sdxs_tokenize(m, prompt, ids, &err) != SDXS_OK) {
        rc = sdxs_cli_fail(&err);
    } else {
        for (int i = 0; i < SDXS_MAX_TOKENS; i++)
            printf(i ? " %d" : "%d", (int)ids[i]);
        printf("\n");
    }
    sdxs_model_free(m);
    return rc;
}
