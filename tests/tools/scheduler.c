/* scheduler.c (sdxs-scheduler): exposes engine/scheduler.c to tests/test_scheduler.py.
 *   sdxs-scheduler plan CONFIG STRENGTH...   one JSON object per strength (the sdxs_step_plan)
 *   sdxs-scheduler alphas CONFIG             the alphas_cumprod table as a JSON list
 *   sdxs-scheduler apply CONFIG STRENGTH N NOISE CLEAN EPS OUT
 *       reads N float32 values from each of the files NOISE, CLEAN ("-": text-to-image) and EPS,
 *       and writes to OUT the starting latent, the U-Net input and the step's result (3 N floats).
 * Exit codes: 2 bad usage or strength, 3 bad configuration (the message on stderr), 4 I/O.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/scheduler.h"

#define MAX_ELEMENTS ((size_t)1 << 26)

static int usage(void)
{
    fprintf(stderr, "usage: sdxs-scheduler plan CONFIG STRENGTH...\n"
                    "       sdxs-scheduler alphas CONFIG\n"
                    "       sdxs-scheduler apply CONFIG STRENGTH N NOISE CLEAN|- EPS OUT\n");
    return SDXS_ERR_INVALID;
}

static int fail(const sdxs_error *err)
{
    fprintf(stderr, "sdxs-scheduler: %s\n", err->message);
    return err->status;
}

static int parse_strength(const char *text, double *out)
{
    char *end;
    errno = 0;
    *out = strtod(text, &end);
    if (errno || end == text || *end) {
        fprintf(stderr, "sdxs-scheduler: strength '%s' is not a number\n", text);
        return 0;
    }
    return 1;
}

static void print_plan(double strength, const sdxs_step_plan *p)
{
    printf("{\"strength\": %.17g, \"skip_unet\": %s, \"train_step\": %d, \"timestep\": %.9g, "
           "\"init_sigma\": %.9g, \"add_x\": %.9g, \"add_noise\": %.9g, \"in_div\": %.9g, "
           "\"out_x\": %.9g, \"out_eps\": %.9g, \"clip\": %.9g, \"x0_x\": %.9g, "
           "\"x0_eps\": %.9g, \"out_x0\": %.9g}\n",
           strength, p->skip_unet ? "true" : "false", p->train_step, (double)p->timestep,
           (double)p->init_sigma, (double)p->add_x, (double)p->add_noise, (double)p->in_div,
           (double)p->out_x, (double)p->out_eps, (double)p->clip, (double)p->x0_x,
           (double)p->x0_eps, (double)p->out_x0);
}

/* Exactly n float32 values from path. */
static float *read_floats(const char *path, size_t n, sdxs_error *err)
{
    char *data = NULL;
    size_t len = 0;
    if (sdxs_read_file(path, n * sizeof(float), &data, &len, err) != SDXS_OK)
        return NULL;
    if (len != n * sizeof(float)) {
        sdxs_fail(err, SDXS_ERR_INVALID, path, "%s holds %zu bytes, expected %zu", path, len,
                  n * sizeof(float));
        free(data);
        return NULL;
    }
    return (float *)(void *)data;
}

static int run_apply(const sdxs_scheduler *s, char **argv)
{
    sdxs_error err = {0};
    sdxs_step_plan plan;
    double strength;
    char *end;
    unsigned long long n = strtoull(argv[1], &end, 10);
    float *noise = NULL, *clean = NULL, *eps = NULL, *out = NULL;
    int rc = SDXS_ERR_RUNTIME;
    FILE *f;

    if (!parse_strength(argv[0], &strength) || *end || n == 0 || n > MAX_ELEMENTS)
        return usage();
    if (sdxs_scheduler_plan(s, strength, &plan, &err) != SDXS_OK)
        return fail(&err);
    noise = read_floats(argv[2], n, &err);
    clean = strcmp(argv[3], "-") && noise ? read_floats(argv[3], n, &err) : NULL;
    eps = noise ? read_floats(argv[4], n, &err) : NULL;
    out = malloc(3 * n * sizeof(float));
    if (!noise || !eps || (strcmp(argv[3], "-") && !clean) || !out) {
        if (!out)
            fprintf(stderr, "sdxs-scheduler: out of memory\n");
        else
            rc = fail(&err);
        goto done;
    }

    /* start, U-Net input, result, each n floats */
    sdxs_scheduler_start(&plan, n, noise, clean, out);
    sdxs_scheduler_model_input(&plan, n, out, out + n);
    sdxs_scheduler_finish(&plan, n, out, eps, out + 2 * n);

    f = fopen(argv[5], "wb");
    if (!f || fwrite(out, sizeof(float), 3 * n, f) != 3 * n) {
        fprintf(stderr, "sdxs-scheduler: cannot write %s: %s\n", argv[5], strerror(errno));
        if (f)
            fclose(f);
        goto done;
    }
    rc = fclose(f) ? SDXS_ERR_RUNTIME : SDXS_OK;
done:
    free(noise);
    free(clean);
    free(eps);
    free(out);
    return rc;
}

int main(int argc, char **argv)
{
    static sdxs_scheduler sched; /* about 40 KiB: not on the stack */
    sdxs_error err = {0};

    if (argc < 3)
        return usage();
    if (sdxs_scheduler_load(argv[2], &sched, &err) != SDXS_OK)
        return fail(&err);

    if (!strcmp(argv[1], "plan") && argc >= 4) {
        for (int i = 3; i < argc; i++) {
            sdxs_step_plan plan;
            double strength;
            if (!parse_strength(argv[i], &strength))
                return SDXS_ERR_INVALID;
            if (sdxs_scheduler_plan(&sched, strength, &plan, &err) != SDXS_OK)
                return fail(&err);
            print_plan(strength, &plan);
        }
        return SDXS_OK;
    }
    if (!strcmp(argv[1], "alphas") && argc == 3) {
        printf("{\"class\": \"%s\", \"text_timestep\": %d, \"alphas_cumprod\": [",
               sched.class_name, sched.text_timestep);
        for (int i = 0; i < sched.num_train_timesteps; i++)
            printf("%s%.9g", i ? ", " : "", (double)sched.alphas_cumprod[i]);
        printf("]}\n");
        return SDXS_OK;
    }
    if (!strcmp(argv[1], "apply") && argc == 9)
        return run_apply(&sched, argv + 3);
    return usage();
}
