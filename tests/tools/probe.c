/* probe.c: runs the engine's stages for the Python parity tests and writes each stage as a .npy
 * file, so that tests compare them with diffusers' own intermediate tensors.
 *
 *   sdxs-probe text MODEL OUT.npy PROMPT...        last_hidden_state (N, 77, D)
 *   sdxs-probe generate MODEL REQUEST.json OUTDIR  text, latents, eps, clean, decoded (float32)
 *                                                  and images (N, H, W, 3) uint8; with a
 *                                                  ControlNet also residual0.npy ... (the
 *                                                  scaled residuals, the mid one last)
 * REQUEST.json: {"prompts": [...], "seeds": [...], "width": W, "height": H,
 *                "init_images": ["a.png", ...], "strength": S,
 *                "controlnet": DIR, "control_images": ["c.png", ...],
 *                "control_mode": "sketch" | "canny" | "none", "control_scale": S}
 * Exit codes as the sdxs executable's.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "engine/model.h"
#include "engine/pipeline.h"

/* Writes a little-endian .npy file of dtype descr ('<f4' or '|u1'). */
static int write_npy(const char *path, const char *descr, const void *data, size_t elem,
                     int ndim, const int64_t *shape)
{
    char header[256];
    size_t count = 1, n, total;
    FILE *f;
    int len;

    len = snprintf(header, sizeof(header), "{'descr': '%s', 'fortran_order': False, 'shape': (",
                   descr);
    for (int i = 0; i < ndim; i++) {
        len += snprintf(header + len, sizeof(header) - (size_t)len, "%lld, ",
                        (long long)shape[i]);
        count *= (size_t)shape[i];
    }
    len += snprintf(header + len, sizeof(header) - (size_t)len, "), }");
    /* Magic (6) + version (2) + length (2) + header, padded with spaces to 64, ending in \n. */
    total = ((size_t)len + 10 + 1 + 63) / 64 * 64;
    while ((size_t)len + 10 + 1 < total)
        header[len++] = ' ';
    header[len++] = '\n';

    f = fopen(path, "wb");
    if (!f)
        return -1;
    n = fwrite("\x93NUMPY\x01\x00", 1, 8, f);
    fputc(len & 0xff, f);
    fputc(len >> 8, f);
    n += fwrite(header, 1, (size_t)len, f);
    n += fwrite(data, elem, count, f);
    return fclose(f) == 0 && n == 8 + (size_t)len + count ? 0 : -1;
}

static int fail(const sdxs_error *err)
{
    fprintf(stderr, "sdxs-probe: %s\n", err->message);
    return err->status ? err->status : SDXS_ERR_RUNTIME;
}

static int cmd_text(int argc, char **argv)
{
    sdxs_model *m;
    sdxs_error err;
    int n = argc - 4;
    int64_t shape[3];
    float *out;
    int rc = 0;

    if (n < 1) {
        fprintf(stderr, "usage: sdxs-probe text MODEL OUT.npy PROMPT...\n");
        return 2;
    }
    if (sdxs_model_open(argv[2], NULL, &m, &err) != SDXS_OK)
        return fail(&err);
    shape[0] = n;
    shape[1] = SDXS_MAX_TOKENS;
    shape[2] = m->clip.cfg.hidden_size;
    out = calloc((size_t)(shape[0] * shape[1] * shape[2]), sizeof(float));
    if (sdxs_encode_prompts(m, n, (const char *const *)argv + 4, out,
                            (size_t)(shape[0] * shape[1] * shape[2]), &err) != SDXS_OK)
        rc = fail(&err);
    else if (write_npy(argv[3], "<f4", out, 4, 3, shape) != 0)
        rc = 4;
    free(out);
    sdxs_model_free(m);
    return rc;
}

/* Reads the request file; strings point into *root. */
static int read_request(const char *path, json_t **root, sdxs_request *req, const char ***prompts,
                        uint64_t **seeds, sdxs_image **inits, sdxs_image **controls)
{
    json_error_t jerr;
    json_t *p, *s, *imgs;
    size_t n;

    *root = json_load_file(path, 0, &jerr);
    if (!*root) {
        fprintf(stderr, "sdxs-probe: %s: %s\n", path, jerr.text);
        return 2;
    }
    p = json_object_get(*root, "prompts");
    s = json_object_get(*root, "seeds");
    n = json_array_size(p);
    if (!n || json_array_size(s) != n) {
        fprintf(stderr, "sdxs-probe: prompts and seeds must be lists of one length\n");
        return 2;
    }
    *prompts = calloc(n, sizeof(char *));
    *seeds = calloc(n, sizeof(uint64_t));
    for (size_t i = 0; i < n; i++) {
        (*prompts)[i] = json_string_value(json_array_get(p, i));
        (*seeds)[i] = (uint64_t)json_integer_value(json_array_get(s, i));
    }
    memset(req, 0, sizeof(*req));
    req->batch = (int)n;
    req->prompts = *prompts;
    req->seeds = *seeds;
    req->width = (int)json_integer_value(json_object_get(*root, "width"));
    req->height = (int)json_integer_value(json_object_get(*root, "height"));
    req->strength = (float)json_number_value(json_object_get(*root, "strength"));
    imgs = json_object_get(*root, "init_images");
    if (json_array_size(imgs) == n) {
        sdxs_error err;
        *inits = calloc(n, sizeof(sdxs_image));
        for (size_t i = 0; i < n; i++)
            if (sdxs_image_load(json_string_value(json_array_get(imgs, i)), NULL, &(*inits)[i],
                                &err) != SDXS_OK)
                return fail(&err);
        req->init_images = *inits;
    }
    imgs = json_object_get(*root, "control_images");
    if (json_array_size(imgs) == n) {
        sdxs_error err;
        const char *mode = json_string_value(json_object_get(*root, "control_mode"));
        *controls = calloc(n, sizeof(sdxs_image));
        for (size_t i = 0; i < n; i++)
            if (sdxs_image_load(json_string_value(json_array_get(imgs, i)), NULL,
                                &(*controls)[i], &err) != SDXS_OK)
                return fail(&err);
        req->control_images = *controls;
        req->control_mode = !mode || !strcmp(mode, "none") ? SDXS_CONTROL_NONE
                            : !strcmp(mode, "sketch")      ? SDXS_CONTROL_SKETCH
                                                           : SDXS_CONTROL_CANNY;
        req->control_scale = (float)json_number_value(json_object_get(*root, "control_scale"));
    }
    return 0;
}

static int cmd_generate(int argc, char **argv)
{
    sdxs_model *m = NULL;
    sdxs_error err;
    sdxs_request req;
    sdxs_debug dbg;
    json_t *root = NULL;
    const char **prompts = NULL;
    uint64_t *seeds = NULL;
    sdxs_image *inits = NULL, *controls = NULL, *out = NULL;
    sdxs_model_options opt;
    int64_t rshapes[SDXS_UNET_MAX_SKIPS + 1][4];
    int nres = 0;
    size_t res_floats = 0;
    float *res = NULL;
    int rc, n, w, h, mult, down, d;
    int64_t tshape[3], lshape[4], dshape[4], ishape[4];
    char path[1200];
    uint8_t *rgb = NULL;

    if (argc != 5) {
        fprintf(stderr, "usage: sdxs-probe generate MODEL REQUEST.json OUTDIR\n");
        return 2;
    }
    rc = read_request(argv[3], &root, &req, &prompts, &seeds, &inits, &controls);
    if (rc)
        goto done;
    memset(&opt, 0, sizeof(opt));
    opt.controlnet_dir = json_string_value(json_object_get(root, "controlnet"));
    /* The CPU reference unless the request names a backend; fp32 unless it asks for bf16. */
    opt.backend = SDXS_BACKEND_CPU;
    if (json_is_string(json_object_get(root, "backend")) &&
        !strcmp(json_string_value(json_object_get(root, "backend")), "cuda"))
        opt.backend = SDXS_BACKEND_CUDA;
    if (json_is_string(json_object_get(root, "precision")))
        opt.precision = !strcmp(json_string_value(json_object_get(root, "precision")), "bf16")
                            ? SDXS_PRECISION_BF16
                            : SDXS_PRECISION_FP32;
    if (sdxs_model_open(argv[2], &opt, &m, &err) != SDXS_OK) {
        rc = fail(&err);
        goto done;
    }

    /* Buffers for every stage, in the shapes the request implies. */
    n = req.batch;
    sdxs_model_default_size(m, &w, &h, &mult);
    w = req.width ? req.width : w;
    h = req.height ? req.height : h;
    down = sdxs_taesd_downscale(&m->taesd.cfg);
    d = m->clip.cfg.hidden_size;
    tshape[0] = n, tshape[1] = SDXS_MAX_TOKENS, tshape[2] = d;
    lshape[0] = n, lshape[1] = m->taesd.cfg.latent_channels, lshape[2] = h / down,
    lshape[3] = w / down;
    dshape[0] = n, dshape[1] = 3, dshape[2] = h, dshape[3] = w;
    ishape[0] = n, ishape[1] = h, ishape[2] = w, ishape[3] = 3;
    dbg.text = calloc((size_t)(n * SDXS_MAX_TOKENS * d), sizeof(float));
    dbg.latents = calloc((size_t)(lshape[0] * lshape[1] * lshape[2] * lshape[3]), 4);
    dbg.eps = calloc((size_t)(lshape[0] * lshape[1] * lshape[2] * lshape[3]), 4);
    dbg.clean = calloc((size_t)(lshape[0] * lshape[1] * lshape[2] * lshape[3]), 4);
    dbg.decoded = calloc((size_t)(n * 3 * h * w), 4);
    out = calloc((size_t)n, sizeof(sdxs_image));
    rgb = calloc((size_t)(n * h * w * 3), 1);
    dbg.residuals = NULL;
    if (m->controlnet && req.control_images) {
        nres = sdxs_controlnet_residual_shapes(&m->controlnet->cfg, n, h / down, w / down,
                                               rshapes);
        for (int i = 0; i < nres; i++)
            res_floats += (size_t)(rshapes[i][0] * rshapes[i][1] * rshapes[i][2] * rshapes[i][3]);
        res = calloc(res_floats, sizeof(float));
        dbg.residuals = res;
    }

    if (sdxs_generate_ex(m, &req, out, NULL, &dbg, &err) != SDXS_OK) {
        rc = fail(&err);
    } else {
        for (int i = 0; i < n; i++)
            memcpy(rgb + (size_t)i * (size_t)(h * w * 3), out[i].rgb, (size_t)(h * w * 3));
        snprintf(path, sizeof(path), "%s/text.npy", argv[4]);
        rc |= write_npy(path, "<f4", dbg.text, 4, 3, tshape);
        snprintf(path, sizeof(path), "%s/latents.npy", argv[4]);
        rc |= write_npy(path, "<f4", dbg.latents, 4, 4, lshape);
        snprintf(path, sizeof(path), "%s/eps.npy", argv[4]);
        rc |= write_npy(path, "<f4", dbg.eps, 4, 4, lshape);
        snprintf(path, sizeof(path), "%s/clean.npy", argv[4]);
        rc |= write_npy(path, "<f4", dbg.clean, 4, 4, lshape);
        snprintf(path, sizeof(path), "%s/decoded.npy", argv[4]);
        rc |= write_npy(path, "<f4", dbg.decoded, 4, 4, dshape);
        snprintf(path, sizeof(path), "%s/images.npy", argv[4]);
        rc |= write_npy(path, "|u1", rgb, 1, 4, ishape);
        for (int i = 0, at = 0; i < nres; i++) {
            snprintf(path, sizeof(path), "%s/residual%d.npy", argv[4], i);
            rc |= write_npy(path, "<f4", res + at, 4, 4, rshapes[i]);
            at += (int)(rshapes[i][0] * rshapes[i][1] * rshapes[i][2] * rshapes[i][3]);
        }
        rc = rc ? 4 : 0;
        for (int i = 0; i < n; i++)
            sdxs_image_free(&out[i]);
    }
    free(dbg.text);
    free(dbg.latents);
    free(dbg.eps);
    free(dbg.clean);
    free(dbg.decoded);
    free(out);
    free(rgb);
    free(res);

done:
    for (int i = 0; inits && i < req.batch; i++)
        sdxs_image_free(&inits[i]);
    free(inits);
    for (int i = 0; controls && i < req.batch; i++)
        sdxs_image_free(&controls[i]);
    free(controls);
    free(prompts);
    free(seeds);
    json_decref(root);
    sdxs_model_free(m);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "text"))
        return cmd_text(argc, argv);
    if (argc >= 2 && !strcmp(argv[1], "generate"))
        return cmd_generate(argc, argv);
    fprintf(stderr, "usage: sdxs-probe text|generate ...\n");
    return 2;
}
