/* cmd_bench.c: `sdxs bench`: after warm-up runs, times repeated text-to-image runs and prints the
 * median, minimum and maximum of each stage (tokenize, text encoder, U-Net, decoder, PNG) and of
 * the whole run, images per second and peak memory; --json prints one JSON object instead. */
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "cli/cli.h"
#include "engine/model.h"
#include "engine/util.h"

#define MAX_RUNS 1000
#define MAX_BATCH 64

enum { ST_TOKENIZE, ST_TEXT, ST_UNET, ST_DECODE, ST_PNG, ST_E2E, ST_COUNT };
static const char *const stage_names[ST_COUNT] = {"tokenize", "text_encoder", "unet", "decoder",
                                                  "png", "end_to_end"};

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : (x > y ? 1 : 0);
}

typedef struct stats {
    double median, min, max;
} stats;

static stats summarise(double *v, int n)
{
    stats s;
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    s.min = v[0];
    s.max = v[n - 1];
    s.median = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
    return s;
}

static int cmp_prof(const void *a, const void *b)
{
    double x = ((const sdxs_op_profile *)a)->ms, y = ((const sdxs_op_profile *)b)->ms;
    return x < y ? 1 : (x > y ? -1 : 0);
}

/* Milliseconds per run of each operation kind, largest first. */
static void print_profile(const sdxs_model *m, int runs, double e2e_ms)
{
    const sdxs_op_profile *p;
    sdxs_op_profile sorted[SDXS_PROFILE_MAX_OPS];
    int n = sdxs_exec_profile_get(m->exec, &p);
    double total = 0.0;

    memcpy(sorted, p, (size_t)n * sizeof(*p));
    qsort(sorted, (size_t)n, sizeof(*p), cmp_prof);
    printf("\n%-18s %10s %12s %8s\n", "operation", "calls/run", "ms/run", "share");
    for (int i = 0; i < n; i++) {
        double ms = sorted[i].ms / runs;
        total += ms;
        printf("%-18s %10ld %12.2f %7.1f%%\n", sorted[i].op, sorted[i].calls / runs, ms,
               100.0 * ms / e2e_ms);
    }
    printf("%-18s %10s %12.2f %7.1f%%\n", "(all operations)", "", total, 100.0 * total / e2e_ms);
}

static void help(FILE *f)
{
    fprintf(f, "usage: sdxs bench [options]\n"
               "  --batch N    images per run (default 1)\n"
               "  --runs N     timed runs (default 10)\n"
               "  --warmup N   untimed runs first (default 2)\n"
               "  --prompt T   the prompt (default: a fixed test prompt)\n"
               "  --json       print one JSON object instead of a table\n"
               "  --profile    also print the time of each operation kind (CPU backend)\n");
    sdxs_cli_common_help(f);
}

int sdxs_cmd_bench(int argc, char **argv)
{
    sdxs_cli_common c = {0};
    long long batch = 1, runs = 10, warmup = 2;
    bool json = false, profile = false;
    const char *prompt = "a photograph of an astronaut riding a horse";
    const char *prompts[MAX_BATCH];
    uint64_t seeds[MAX_BATCH];
    sdxs_image out[MAX_BATCH];
    double *t[ST_COUNT];
    sdxs_model *m = NULL;
    sdxs_request req;
    sdxs_error err;
    struct rusage ru;
    stats s[ST_COUNT];
    int rc = 0;

    for (int i = 1; i < argc; i++) {
        const char *f = argv[i];
        int r = sdxs_cli_common_flag(&c, argc, argv, &i);
        if (r < 0)
            return SDXS_ERR_INVALID;
        if (r == 1)
            continue;
        if (!strcmp(f, "--help")) {
            help(stdout);
            return 0;
        } else if (!strcmp(f, "--json")) {
            json = true;
        } else if (!strcmp(f, "--profile")) {
            profile = true;
        } else if (i + 1 < argc && !strcmp(f, "--batch")) {
            if (!sdxs_cli_int(f, argv[++i], 1, MAX_BATCH, &batch))
                return SDXS_ERR_INVALID;
        } else if (i + 1 < argc && !strcmp(f, "--runs")) {
            if (!sdxs_cli_int(f, argv[++i], 1, MAX_RUNS, &runs))
                return SDXS_ERR_INVALID;
        } else if (i + 1 < argc && !strcmp(f, "--warmup")) {
            if (!sdxs_cli_int(f, argv[++i], 0, MAX_RUNS, &warmup))
                return SDXS_ERR_INVALID;
        } else if (i + 1 < argc && !strcmp(f, "--prompt")) {
            prompt = argv[++i];
        } else {
            fprintf(stderr, "sdxs: bench: unknown option or missing value '%s'\n", f);
            return SDXS_ERR_INVALID;
        }
    }
    if (json)
        c.quiet = true;
    c.opt.max_batch = (int)batch > 8 ? (int)batch : 0;
    rc = sdxs_cli_open(&c, &m);
    if (rc)
        return rc;

    memset(&req, 0, sizeof(req));
    for (int i = 0; i < batch; i++) {
        prompts[i] = prompt;
        seeds[i] = c.seed + (uint64_t)i;
    }
    req.batch = (int)batch;
    req.prompts = prompts;
    req.seeds = seeds;
    req.width = c.width;
    req.height = c.height;
    for (int k = 0; k < ST_COUNT; k++)
        t[k] = calloc((size_t)runs, sizeof(double));

    /* Warm-up, then the timed runs: each a generation plus PNG encoding of every image. */
    for (long long r = 0; r < warmup + runs && !rc; r++) {
        sdxs_timings tm;
        double t0, png = 0.0;
        if (profile && r == warmup)
            sdxs_exec_profile(m->exec, true);
        t0 = sdxs_now_ms();
        if (sdxs_generate(m, &req, out, &tm, &err) != SDXS_OK) {
            rc = sdxs_cli_fail(&err);
            break;
        }
        for (int i = 0; i < batch; i++) {
            uint8_t *bytes = NULL;
            size_t len = 0;
            double p0 = sdxs_now_ms();
            if (sdxs_png_encode(&out[i], NULL, &bytes, &len, &err) != SDXS_OK)
                rc = sdxs_cli_fail(&err);
            png += sdxs_now_ms() - p0;
            free(bytes);
            sdxs_image_free(&out[i]);
        }
        if (r >= warmup) {
            long long k = r - warmup;
            t[ST_TOKENIZE][k] = tm.tokenize_ms;
            t[ST_TEXT][k] = tm.text_ms;
            t[ST_UNET][k] = tm.unet_ms;
            t[ST_DECODE][k] = tm.decode_ms;
            t[ST_PNG][k] = png;
            t[ST_E2E][k] = sdxs_now_ms() - t0;
        }
    }

    if (!rc) {
        double ips, rss_mb;
        for (int k = 0; k < ST_COUNT; k++)
            s[k] = summarise(t[k], (int)runs);
        ips = (double)batch * 1000.0 / s[ST_E2E].median;
        getrusage(RUSAGE_SELF, &ru);
        rss_mb = (double)ru.ru_maxrss / 1024.0;
        if (json) {
            printf("{\"stages\": {");
            for (int k = 0; k < ST_E2E; k++)
                printf("%s\"%s\": {\"median_ms\": %.3f, \"min_ms\": %.3f, \"max_ms\": %.3f}",
                       k ? ", " : "", stage_names[k], s[k].median, s[k].min, s[k].max);
            printf("}, \"end_to_end\": {\"median_ms\": %.3f, \"min_ms\": %.3f, "
                   "\"max_ms\": %.3f}, \"images_per_s\": %.3f, \"peak_rss_mb\": %.1f, "
                   "\"batch\": %lld, \"runs\": %lld}\n",
                   s[ST_E2E].median, s[ST_E2E].min, s[ST_E2E].max, ips, rss_mb, batch, runs);
        } else {
            printf("%s\nbatch %lld, %lld runs after %lld warm-up\n\n", sdxs_model_describe(m),
                   batch, runs, warmup);
            printf("%-14s %12s %12s %12s\n", "stage", "median ms", "min ms", "max ms");
            for (int k = 0; k < ST_COUNT; k++)
                printf("%-14s %12.2f %12.2f %12.2f\n", stage_names[k], s[k].median, s[k].min,
                       s[k].max);
            printf("\nimages/s %.2f   peak RSS %.1f MiB\n", ips, rss_mb);
        }
        if (profile && !json)
            print_profile(m, (int)runs, s[ST_E2E].median);
    }
    for (int k = 0; k < ST_COUNT; k++)
        free(t[k]);
    sdxs_model_free(m);
    return rc;
}
