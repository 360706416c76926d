/* cli.c: the common flags of every subcommand, value parsing with ranges, and opening the model
 * (the one named by --model, else $SDXS_MODEL, else the small model shipped in weights/). */
#define _POSIX_C_SOURCE 200809L
#include "cli/cli.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/util.h"

bool sdxs_cli_int(const char *flag, const char *s, long long lo, long long hi, long long *out)
{
    char *end;
    long long v;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "sdxs: %s: '%s' is not an integer from %lld to %lld\n", flag, s, lo, hi);
        return false;
    }
    *out = v;
    return true;
}

bool sdxs_cli_u64(const char *flag, const char *s, uint64_t *out)
{
    char *end;
    unsigned long long v;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-') {
        fprintf(stderr, "sdxs: %s: '%s' is not an integer from 0 to %llu\n", flag, s,
                (unsigned long long)UINT64_MAX);
        return false;
    }
    *out = (uint64_t)v;
    return true;
}

bool sdxs_cli_float(const char *flag, const char *s, double lo, double hi, double *out)
{
    char *end;
    double v;
    errno = 0;
    v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi)) {
        fprintf(stderr, "sdxs: %s: '%s' is not a number from %g to %g\n", flag, s, lo, hi);
        return false;
    }
    *out = v;
    return true;
}

/* The value after a flag, or NULL with a message. */
static const char *value(int argc, char **argv, int *i)
{
    if (*i + 1 >= argc) {
        fprintf(stderr, "sdxs: %s needs a value\n", argv[*i]);
        return NULL;
    }
    return argv[++*i];
}

static bool parse_backend(const char *what, const char *v, sdxs_backend_kind *out)
{
    if (!strcmp(v, "cpu"))
        *out = SDXS_BACKEND_CPU;
    else if (!strcmp(v, "cuda"))
        *out = SDXS_BACKEND_CUDA;
    else if (!strcmp(v, "auto"))
        *out = SDXS_BACKEND_AUTO;
    else {
        fprintf(stderr, "sdxs: %s: '%s' is not cpu, cuda or auto\n", what, v);
        return false;
    }
    return true;
}

int sdxs_cli_common_flag(sdxs_cli_common *c, int argc, char **argv, int *i)
{
    const char *f = argv[*i], *v;
    long long n;

    if (!strcmp(f, "--quiet") || !strcmp(f, "-q")) {
        c->quiet = true;
        return 1;
    }
    if (strcmp(f, "--model") && strcmp(f, "--backend") && strcmp(f, "--seed") &&
        strcmp(f, "--width") && strcmp(f, "--height") && strcmp(f, "--threads") &&
        strcmp(f, "--precision"))
        return 0;
    v = value(argc, argv, i);
    if (!v)
        return -1;
    if (!strcmp(f, "--model")) {
        c->model = v;
    } else if (!strcmp(f, "--backend")) {
        if (!parse_backend("--backend", v, &c->opt.backend))
            return -1;
        c->backend_given = true;
    } else if (!strcmp(f, "--precision")) {
        if (!strcmp(v, "fp32"))
            c->opt.precision = SDXS_PRECISION_FP32;
        else if (!strcmp(v, "bf16"))
            c->opt.precision = SDXS_PRECISION_BF16;
        else if (!strcmp(v, "fp16"))
            c->opt.precision = SDXS_PRECISION_FP16;
        else {
            fprintf(stderr, "sdxs: --precision: '%s' is not fp32, bf16 or fp16\n", v);
            return -1;
        }
    } else if (!strcmp(f, "--seed")) {
        if (!sdxs_cli_u64(f, v, &c->seed))
            return -1;
    } else if (!strcmp(f, "--threads")) {
        if (!sdxs_cli_int(f, v, 0, 1024, &n))
            return -1;
        c->opt.threads = (int)n;
    } else {
        if (!sdxs_cli_int(f, v, 1, 65536, &n))
            return -1;
        if (!strcmp(f, "--width"))
            c->width = (int)n;
        else
            c->height = (int)n;
    }
    return 1;
}

void sdxs_cli_common_help(FILE *f)
{
    fprintf(f, "common options:\n"
               "  --model DIR          diffusers model folder (default: $SDXS_MODEL, else the\n"
               "                       small model shipped in " SDXS_DEFAULT_MODEL ")\n"
               "  --backend B          cpu, cuda or auto (default: $SDXS_BACKEND, else auto)\n"
               "  --precision P        fp32, bf16 or fp16 (default: fp32 on cpu, fp16 on cuda)\n"
               "  --threads N          CPU threads (default: one per core)\n"
               "  --seed N             noise seed (default 0)\n"
               "  --width W --height H image size (default: the model's)\n"
               "  --quiet              log warnings and errors only\n");
}

int sdxs_cli_fail(const sdxs_error *err)
{
    fprintf(stderr, "sdxs: %s\n", err->message[0] ? err->message : "failed");
    return err->status ? (int)err->status : SDXS_ERR_RUNTIME;
}

static bool is_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* The shipped model: beside the source tree this binary was built from, or above the binary. */
static const char *default_model(char *buf, size_t cap)
{
    char exe[PATH_MAX];
    ssize_t n;
    const char *env = getenv("SDXS_MODEL");

    if (env && *env)
        return env;
#ifdef SDXS_SOURCE_DIR
    snprintf(buf, cap, "%s/%s", SDXS_SOURCE_DIR, SDXS_DEFAULT_MODEL);
    if (is_dir(buf))
        return buf;
#endif
    n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n > 0) {
        char *slash;
        exe[n] = '\0';
        slash = strrchr(exe, '/');
        if (slash) {
            *slash = '\0';
            snprintf(buf, cap, "%s/../%s", exe, SDXS_DEFAULT_MODEL);
            if (is_dir(buf))
                return buf;
        }
    }
    snprintf(buf, cap, "%s", SDXS_DEFAULT_MODEL);
    return buf;
}

int sdxs_cli_open(sdxs_cli_common *c, sdxs_model **out)
{
    char buf[PATH_MAX + 64];
    sdxs_error err;
    const char *dir = c->model;

    const char *env_backend = getenv("SDXS_BACKEND");

    if (c->quiet)
        sdxs_log_set_level(SDXS_LOG_WARN);
    if (!c->backend_given && env_backend && *env_backend &&
        !parse_backend("SDXS_BACKEND", env_backend, &c->opt.backend))
        return SDXS_ERR_INVALID;
    if (!dir) {
        dir = default_model(buf, sizeof(buf));
        SDXS_INFO("cli", "no --model given: using %s, the small model trained by distill/ "
                         "(weights/fetch downloads the public SDXS checkpoints)",
                  dir);
    }
    if (sdxs_model_open(dir, &c->opt, out, &err) != SDXS_OK)
        return sdxs_cli_fail(&err);
    return 0;
}
