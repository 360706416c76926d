/* cli.h: what the subcommands of the `sdxs` executable share: the common flags, opening the
 * model they name (or the shipped default), and turning failures into exit codes. */
#ifndef SDXS_CLI_H
#define SDXS_CLI_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "sdxs.h"

/* The model shipped in the repository, used when --model is not given. */
#define SDXS_DEFAULT_MODEL "weights/sdxs-tiny-shapes"

typedef struct sdxs_cli_common {
    const char *model; /* NULL: the default model */
    sdxs_model_options opt;
    uint64_t seed;
    int width, height; /* 0: the model's default */
    bool quiet;
    bool backend_given; /* --backend was on the command line (else $SDXS_BACKEND, else auto) */
} sdxs_cli_common;

/* Parses one common flag at argv[*i] (advancing *i past its value). Returns 1 when it was one,
 * 0 when it is not a common flag, or -1 after printing a usage error. */
int sdxs_cli_common_flag(sdxs_cli_common *c, int argc, char **argv, int *i);
/* Help text of the common flags. */
void sdxs_cli_common_help(FILE *f);

/* Parsers that print "sdxs: FLAG: ..." and return false on a bad value. */
bool sdxs_cli_int(const char *flag, const char *s, long long lo, long long hi, long long *out);
bool sdxs_cli_u64(const char *flag, const char *s, uint64_t *out);
bool sdxs_cli_float(const char *flag, const char *s, double lo, double hi, double *out);

/* Opens c->model or the default model; prints the error and returns its exit code. */
int sdxs_cli_open(sdxs_cli_common *c, sdxs_model **out);
/* Prints "sdxs: <message>" and returns the status as an exit code. */
int sdxs_cli_fail(const sdxs_error *err);

int sdxs_cmd_info(int argc, char **argv);
int sdxs_cmd_tokenize(int argc, char **argv);
int sdxs_cmd_generate(int argc, char **argv);
int sdxs_cmd_bench(int argc, char **argv);
int sdxs_cmd_serve(int argc, char **argv);

#endif /* SDXS_CLI_H */
