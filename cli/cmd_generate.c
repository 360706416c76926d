/* cmd_generate.c: `sdxs generate`: prompt (and optionally an init image, or a control image for a
 * ControlNet) to PNG files, with the generation parameters in each PNG's "parameters" text chunk.
 * With --batch N the files are numbered (out.png -> out-0.png ... out-{N-1}.png) and image i uses
 * seed + i. */
#define _POSIX_C_SOURCE 200809L
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/cli.h"
#include "engine/util.h"

#define MAX_BATCH 64

typedef struct gen_args {
    sdxs_cli_common c;
    const char *prompt, *output, *init_image;
    double strength;
    int batch;
    const char *controlnet, *control_image, *control_mode_name;
    sdxs_control_mode control_mode;
    double control_scale;
} gen_args;

static void help(FILE *f)
{
    fprintf(f, "usage: sdxs generate --prompt TEXT --output FILE.png [options]\n"
               "  --prompt TEXT        what to draw (may be empty)\n"
               "  --output FILE.png    where to write; with --batch, FILE-0.png, FILE-1.png, ...\n"
               "  --batch N            images in one run, seeds seed .. seed+N-1 (default 1)\n"
               "  --init-image FILE    PNG or JPEG to start from (image-to-image)\n"
               "  --strength S         how much of the init image is redrawn, 0 to 1 "
               "(default 0.5)\n"
               "  --controlnet DIR     a ControlNet folder (config.json and\n"
               "                       diffusion_pytorch_model.safetensors or .bin)\n"
               "  --control-image FILE PNG or JPEG that conditions the ControlNet\n"
               "  --control-mode M     sketch (dark strokes on white, inverted), canny (edges\n"
               "                       found first) or none (used as it is); default sketch\n"
               "  --control-scale S    weight of the ControlNet's residuals, 0 to 10 "
               "(default 1)\n");
    sdxs_cli_common_help(f);
}

static int parse(gen_args *a, int argc, char **argv)
{
    long long n;
    a->batch = 1;
    a->strength = 0.5;
    a->control_mode = SDXS_CONTROL_SKETCH;
    a->control_mode_name = "sketch";
    a->control_scale = 1.0;
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i];
        int r = sdxs_cli_common_flag(&a->c, argc, argv, &i);
        if (r < 0)
            return SDXS_ERR_INVALID;
        if (r == 1)
            continue;
        if (!strcmp(f, "--help")) {
            help(stdout);
            return -1;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "sdxs: generate: unknown option or missing value: '%s'\n", f);
            return SDXS_ERR_INVALID;
        }
        if (!strcmp(f, "--prompt")) {
            a->prompt = argv[++i];
        } else if (!strcmp(f, "--output")) {
            a->output = argv[++i];
        } else if (!strcmp(f, "--init-image")) {
            a->init_image = argv[++i];
        } else if (!strcmp(f, "--strength")) {
            if (!sdxs_cli_float(f, argv[++i], 0.0, 1.0, &a->strength))
                return SDXS_ERR_INVALID;
        } else if (!strcmp(f, "--controlnet")) {
            a->controlnet = argv[++i];
        } else if (!strcmp(f, "--control-image")) {
            a->control_image = argv[++i];
        } else if (!strcmp(f, "--control-mode")) {
            const char *v = argv[++i];
            if (!strcmp(v, "sketch"))
                a->control_mode = SDXS_CONTROL_SKETCH;
            else if (!strcmp(v, "canny"))
                a->control_mode = SDXS_CONTROL_CANNY;
            else if (!strcmp(v, "none"))
                a->control_mode = SDXS_CONTROL_NONE;
            else {
                fprintf(stderr, "sdxs: --control-mode: '%s' is not sketch, canny or none\n", v);
                return SDXS_ERR_INVALID;
            }
            a->control_mode_name = v;
        } else if (!strcmp(f, "--control-scale")) {
            if (!sdxs_cli_float(f, argv[++i], 0.0, 10.0, &a->control_scale))
                return SDXS_ERR_INVALID;
        } else if (!strcmp(f, "--batch")) {
            if (!sdxs_cli_int(f, argv[++i], 1, MAX_BATCH, &n))
                return SDXS_ERR_INVALID;
            a->batch = (int)n;
        } else {
            fprintf(stderr, "sdxs: generate: unknown option '%s' (see --help)\n", f);
            return SDXS_ERR_INVALID;
        }
    }
    if (!a->prompt || !a->output) {
        fprintf(stderr, "sdxs: generate: --prompt and --output are required (see --help)\n");
        return SDXS_ERR_INVALID;
    }
    if (!a->controlnet != !a->control_image) {
        fprintf(stderr, "sdxs: generate: --controlnet and --control-image go together\n");
        return SDXS_ERR_INVALID;
    }
    return 0;
}

/* The output's folder must exist before any work is done. */
static int check_output(const char *path)
{
    char *copy = strdup(path);
    struct stat st;
    int rc = 0;
    if (!copy)
        return SDXS_ERR_RUNTIME;
    if (stat(dirname(copy), &st) != 0 || !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "sdxs: --output: the folder of '%s' does not exist\n", path);
        rc = SDXS_ERR_INVALID;
    }
    free(copy);
    return rc;
}

/* out.png -> out-3.png; other names get -3 appended. */
static void numbered(char *buf, size_t cap, const char *path, int i)
{
    const char *dot = strrchr(path, '.'), *slash = strrchr(path, '/');
    if (dot && (!slash || dot > slash))
        snprintf(buf, cap, "%.*s-%d%s", (int)(dot - path), path, i, dot);
    else
        snprintf(buf, cap, "%s-%d", path, i);
}

static int write_png(const char *path, const sdxs_image *img, const char *params)
{
    const char *text[] = {"parameters", params, "Software", "sdxs", NULL};
    uint8_t *png = NULL;
    size_t len = 0;
    sdxs_error err;
    FILE *f;
    int ok;

    if (sdxs_png_encode(img, text, &png, &len, &err) != SDXS_OK)
        return sdxs_cli_fail(&err);
    f = fopen(path, "wb");
    ok = f && fwrite(png, 1, len, f) == len;
    if (f && fclose(f) != 0)
        ok = 0;
    free(png);
    if (!ok) {
        fprintf(stderr, "sdxs: cannot write %s\n", path);
        return SDXS_ERR_RUNTIME;
    }
    return 0;
}

int sdxs_cmd_generate(int argc, char **argv)
{
    gen_args a;
    sdxs_model *m = NULL;
    const char *prompts[MAX_BATCH];
    uint64_t seeds[MAX_BATCH];
    sdxs_image init[MAX_BATCH], control[MAX_BATCH], out[MAX_BATCH], loaded = {0, 0, NULL};
    sdxs_image control_loaded = {0, 0, NULL};
    sdxs_request req;
    sdxs_timings tm;
    sdxs_error err;
    int rc;

    memset(&a, 0, sizeof(a));
    memset(out, 0, sizeof(out));
    rc = parse(&a, argc, argv);
    if (rc)
        return rc < 0 ? 0 : rc;
    rc = check_output(a.output);
    if (rc)
        return rc;
    if (a.init_image && sdxs_image_load(a.init_image, NULL, &loaded, &err) != SDXS_OK)
        return sdxs_cli_fail(&err);
    if (a.control_image &&
        sdxs_image_load(a.control_image, NULL, &control_loaded, &err) != SDXS_OK) {
        sdxs_image_free(&loaded);
        return sdxs_cli_fail(&err);
    }
    a.c.opt.max_batch = a.batch > 8 ? a.batch : 0;
    a.c.opt.controlnet_dir = a.controlnet;
    rc = sdxs_cli_open(&a.c, &m);
    if (rc)
        goto done;

    /* One request for the whole batch. */
    memset(&req, 0, sizeof(req));
    for (int i = 0; i < a.batch; i++) {
        prompts[i] = a.prompt;
        seeds[i] = a.c.seed + (uint64_t)i;
        init[i] = loaded;
        control[i] = control_loaded;
    }
    req.batch = a.batch;
    req.prompts = prompts;
    req.seeds = seeds;
    req.width = a.c.width;
    req.height = a.c.height;
    if (a.init_image) {
        req.init_images = init;
        req.strength = (float)a.strength;
    }
    if (a.control_image) {
        req.control_images = control;
        req.control_mode = a.control_mode;
        req.control_scale = (float)a.control_scale;
    }
    if (sdxs_generate(m, &req, out, &tm, &err) != SDXS_OK) {
        rc = sdxs_cli_fail(&err);
        goto done;
    }

    /* One PNG per image, each saying how it was made. */
    for (int i = 0; i < a.batch && !rc; i++) {
        char path[4096], params[SDXS_MAX_PROMPT_BYTES + 512];
        if (a.batch > 1)
            numbered(path, sizeof(path), a.output, i);
        else
            snprintf(path, sizeof(path), "%s", a.output);
        char cn_params[1200] = "";
        if (a.control_image)
            snprintf(cn_params, sizeof(cn_params), ", ControlNet: %s, Control mode: %s, "
                     "Control scale: %g", a.controlnet, a.control_mode_name, a.control_scale);
        snprintf(params, sizeof(params), "%s\nSteps: 1, Seed: %llu, Size: %dx%d, Model: %s%s%s",
                 a.prompt, (unsigned long long)seeds[i], out[i].width, out[i].height,
                 a.c.model ? a.c.model : "default", a.init_image ? ", img2img" : "", cn_params);
        rc = write_png(path, &out[i], params);
        if (!rc && !a.c.quiet)
            printf("%s  seed %llu  %dx%d\n", path, (unsigned long long)seeds[i], out[i].width,
                   out[i].height);
    }
    if (!rc && !a.c.quiet)
        printf("%d image%s in %.1f ms (text %.1f, unet %.1f, decode %.1f)\n", a.batch,
               a.batch > 1 ? "s" : "", tm.total_ms, tm.text_ms, tm.unet_ms, tm.decode_ms);

done:
    for (int i = 0; i < a.batch; i++)
        sdxs_image_free(&out[i]);
    sdxs_image_free(&loaded);
    sdxs_image_free(&control_loaded);
    sdxs_model_free(m);
    return rc;
}
