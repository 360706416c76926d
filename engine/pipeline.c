/* pipeline.c: one request from prompts to pixels: checks, tokenizing (identical prompts once),
 * seeded noise, control images prepared, then one run on the backend: text encoder, (image
 * encoder and noising), (the ControlNet), one U-Net pass, the scheduler step, the tiny decoder
 * and the conversion to 8-bit RGB.
 *
 * Shapes: N images, U unique prompts, L = 77 tokens, D text width, C latent channels, h/w latent
 * size, H/W image size (H = 8 h for SDXS).
 */
#include "engine/pipeline.h"

#include <stdlib.h>
#include <string.h>

#include "engine/canny.h"
#include "engine/model.h"

/* Everything one run needs, prepared on the host before it. */
typedef struct gen_job {
    sdxs_model *m;
    int n, unique;
    int64_t h, w, height, width;
    int32_t *ids;         /* (U, L) */
    int32_t *prompt_of;   /* (N): which unique prompt each image uses */
    float *noise;         /* (N, C, h, w) */
    uint8_t *init_rgb;    /* (N, H, W, 3) or NULL */
    uint8_t *control_rgb; /* (N, H, W, 3) prepared control images, or NULL */
    float control_scale;
    float *timesteps;     /* (N) */
    sdxs_step_plan plan;
    uint8_t *out_rgb;     /* (N, H, W, 3) */
    const sdxs_debug *debug;
    float *decoded_tmp;   /* (N, 3, H, W): the decoder output when debug->decoded is asked */
} gen_job;

enum { MARK_START, MARK_TEXT, MARK_UNET, MARK_DECODE };

/* Each residual after the previous one in dst. */
static void download_residuals(sdxs_exec *e, const sdxs_unet_residuals *res, float *dst)
{
    for (int i = 0; i <= res->count; i++) {
        const sdxs_tensor *t = i < res->count ? res->down[i] : res->mid;
        sdxs_op_download(e, t, dst);
        dst += sdxs_tensor_numel(t);
    }
}

static sdxs_status gen_run(sdxs_exec *e, void *user)
{
    gen_job *j = user;
    const sdxs_model *m = j->m;
    int64_t c = m->taesd.cfg.latent_channels;
    int64_t lshape[4] = {j->n, c, j->h, j->w};
    sdxs_tensor *text, *ctx, *noise, *x, *t;

    /* Text: the unique prompts, then one row per image. */
    sdxs_exec_mark(e, MARK_START);
    text = sdxs_clip_forward(e, &m->clip, j->ids, j->unique, SDXS_MAX_TOKENS);
    if (j->unique == j->n) { /* all distinct: image i uses prompt i */
        ctx = text;
    } else {
        ctx = sdxs_op_gather(e, text, j->prompt_of, j->n);
        sdxs_release(e, text);
    }
    if (j->debug && j->debug->text)
        sdxs_op_download(e, ctx, j->debug->text);
    sdxs_exec_mark(e, MARK_TEXT);

    /* The starting latent: scaled noise, or the encoded init image noised to the timestep. */
    noise = sdxs_op_upload(e, 4, lshape, j->noise);
    if (j->init_rgb) {
        sdxs_tensor *img = sdxs_op_from_rgb8(e, j->init_rgb, j->n, j->height, j->width, 1.0f,
                                             0.0f);
        sdxs_tensor *clean = sdxs_taesd_encode(e, &m->taesd, img);
        sdxs_release(e, img);
        x = sdxs_op_axpby(e, j->plan.add_x, clean, j->plan.add_noise, noise, SDXS_ACT_NONE);
        sdxs_release(e, clean);
    } else {
        x = sdxs_op_axpby(e, j->plan.init_sigma, noise, 0.0f, NULL, SDXS_ACT_NONE);
    }
    sdxs_release(e, noise);
    if (j->debug && j->debug->latents)
        sdxs_op_download(e, x, j->debug->latents);

    /* One U-Net pass and the scheduler step to the clean latent. */
    if (!j->plan.skip_unet) {
        sdxs_tensor *in = sdxs_op_axpby(e, 1.0f / j->plan.in_div, x, 0.0f, NULL, SDXS_ACT_NONE);
        sdxs_tensor *eps;
        sdxs_unet_residuals res;
        if (j->control_rgb) {
            /* The ControlNet reads the U-Net's own input; its residuals join the U-Net. */
            sdxs_tensor *cond = sdxs_op_from_rgb8(e, j->control_rgb, j->n, j->height, j->width,
                                                  1.0f, 0.0f);
            sdxs_controlnet_forward(e, m->controlnet, in, j->timesteps, ctx, cond,
                                    j->control_scale, &res);
            sdxs_release(e, cond);
            if (j->debug && j->debug->residuals)
                download_residuals(e, &res, j->debug->residuals);
        }
        eps = sdxs_unet_forward(e, m->unet, in, j->timesteps, ctx, j->control_rgb ? &res : NULL);
        if (j->control_rgb) {
            for (int i = 0; i < res.count; i++)
                sdxs_release(e, res.down[i]);
            sdxs_release(e, res.mid);
        }
        sdxs_release(e, in);
        if (j->debug && j->debug->eps)
            sdxs_op_download(e, eps, j->debug->eps);
        t = sdxs_op_axpby(e, j->plan.out_x, x, j->plan.out_eps, eps, SDXS_ACT_NONE);
        if (j->plan.clip > 0.0f) {
            /* DDIM/LCM clip_sample: the clean estimate is clamped before it is mixed in. */
            sdxs_tensor *x0 = sdxs_op_axpby(e, j->plan.x0_x, x, j->plan.x0_eps, eps,
                                            SDXS_ACT_NONE);
            sdxs_tensor *cl = sdxs_op_clamp(e, x0, -j->plan.clip, j->plan.clip);
            sdxs_tensor *sum = sdxs_op_axpby(e, 1.0f, t, j->plan.out_x0, cl, SDXS_ACT_NONE);
            sdxs_release(e, x0);
            sdxs_release(e, cl);
            sdxs_release(e, t);
            t = sum;
        }
        sdxs_release(e, eps);
        sdxs_release(e, x);
        x = t;
    }
    sdxs_release(e, ctx);
    if (j->debug && j->debug->clean)
        sdxs_op_download(e, x, j->debug->clean);
    sdxs_exec_mark(e, MARK_UNET);

    /* Decode and convert: round(clamp(d, 0, 1) * 255), which is diffusers' postprocessing of
     * the decoder's (2 d - 1). */
    t = sdxs_taesd_decode(e, &m->taesd, x);
    sdxs_release(e, x);
    if (j->decoded_tmp)
        sdxs_op_download(e, t, j->decoded_tmp);
    sdxs_op_to_rgb8(e, t, 1.0f, 0.0f, j->out_rgb);
    sdxs_release(e, t);
    sdxs_exec_mark(e, MARK_DECODE);
    return SDXS_OK;
}

/* ---- checks ---- */

static sdxs_status check_side(const sdxs_model *m, const char *name, int v, sdxs_error *err)
{
    if (v < m->opt.min_side || v > m->opt.max_side || v % m->image_multiple)
        return sdxs_fail(err, SDXS_ERR_INVALID, name,
                         "%s %d is not allowed: use a multiple of %d from %d to %d", name, v,
                         m->image_multiple, m->opt.min_side, m->opt.max_side);
    return SDXS_OK;
}

static sdxs_status check_request(const sdxs_model *m, const sdxs_request *r, int w, int h,
                                 sdxs_error *err)
{
    sdxs_status st;
    if (r->batch < 1 || r->batch > m->opt.max_batch)
        return sdxs_fail(err, SDXS_ERR_INVALID, "batch", "batch %d is not allowed: 1 to %d",
                         r->batch, m->opt.max_batch);
    if (!r->prompts || !r->seeds)
        return sdxs_fail(err, SDXS_ERR_INVALID, r->prompts ? "seed" : "prompt",
                         "the request has no %s", r->prompts ? "seeds" : "prompts");
    for (int i = 0; i < r->batch; i++) {
        if (!r->prompts[i])
            return sdxs_fail(err, SDXS_ERR_INVALID, "prompt", "prompt %d is missing", i);
        if (strlen(r->prompts[i]) > SDXS_MAX_PROMPT_BYTES)
            return sdxs_fail(err, SDXS_ERR_INVALID, "prompt",
                             "prompt is %zu bytes; the limit is %d", strlen(r->prompts[i]),
                             SDXS_MAX_PROMPT_BYTES);
    }
    st = check_side(m, "width", w, err);
    if (st == SDXS_OK)
        st = check_side(m, "height", h, err);
    if (st != SDXS_OK)
        return st;
    if (r->init_images) {
        if (!(r->strength >= 0.0f && r->strength <= 1.0f))
            return sdxs_fail(err, SDXS_ERR_INVALID, "strength",
                             "strength %g is outside [0, 1]", (double)r->strength);
        for (int i = 0; i < r->batch; i++)
            if (!r->init_images[i].rgb || r->init_images[i].width < 1 ||
                r->init_images[i].height < 1)
                return sdxs_fail(err, SDXS_ERR_INVALID, "init_image", "init image %d is empty",
                                 i);
    }
    if (r->control_images) {
        if (!m->controlnet)
            return sdxs_fail(err, SDXS_ERR_INVALID, "control_image",
                             "this model was opened without a ControlNet");
        if (r->control_mode != SDXS_CONTROL_NONE && r->control_mode != SDXS_CONTROL_SKETCH &&
            r->control_mode != SDXS_CONTROL_CANNY)
            return sdxs_fail(err, SDXS_ERR_INVALID, "control_mode",
                             "control mode %d is not sketch, canny or none",
                             (int)r->control_mode);
        if (!(r->control_scale >= 0.0f && r->control_scale <= SDXS_MAX_CONTROL_SCALE))
            return sdxs_fail(err, SDXS_ERR_INVALID, "control_scale",
                             "control scale %g is outside [0, %g]", (double)r->control_scale,
                             (double)SDXS_MAX_CONTROL_SCALE);
        for (int i = 0; i < r->batch; i++)
            if (!r->control_images[i].rgb || r->control_images[i].width < 1 ||
                r->control_images[i].height < 1)
                return sdxs_fail(err, SDXS_ERR_INVALID, "control_image",
                                 "control image %d is empty", i);
    }
    return SDXS_OK;
}

/* ---- host preparation ---- */

static sdxs_status prepare(gen_job *j, const sdxs_request *r, sdxs_error *err)
{
    sdxs_model *m = j->m;
    size_t per_noise = (size_t)(m->taesd.cfg.latent_channels * j->h * j->w);
    size_t pixels = (size_t)(j->height * j->width * 3);
    sdxs_status st = SDXS_OK;

    j->ids = sdxs_calloc((size_t)j->n * SDXS_MAX_TOKENS, sizeof(int32_t), err, "token ids");
    j->prompt_of = sdxs_calloc((size_t)j->n, sizeof(int32_t), err, "prompt indices");
    j->timesteps = sdxs_calloc((size_t)j->n, sizeof(float), err, "timesteps");
    j->noise = sdxs_calloc((size_t)j->n * per_noise, sizeof(float), err, "noise");
    j->out_rgb = sdxs_calloc((size_t)j->n * pixels, 1, err, "output pixels");
    if (!j->ids || !j->prompt_of || !j->timesteps || !j->noise || !j->out_rgb)
        return SDXS_ERR_RUNTIME;

    /* Prompts: tokenize each distinct prompt once. */
    for (int i = 0; i < j->n && st == SDXS_OK; i++) {
        j->prompt_of[i] = -1;
        for (int u = 0; u < i; u++)
            if (!strcmp(r->prompts[u], r->prompts[i])) {
                j->prompt_of[i] = j->prompt_of[u];
                break;
            }
        if (j->prompt_of[i] < 0) {
            j->prompt_of[i] = j->unique;
            st = sdxs_tokenize(m, r->prompts[i], j->ids + (size_t)j->unique * SDXS_MAX_TOKENS,
                               err);
            j->unique++;
        }
    }
    if (st != SDXS_OK)
        return st;

    /* The scheduler's step for this strength, and the noise of each seed. */
    st = sdxs_scheduler_plan(&m->sched, r->init_images ? (double)r->strength : 1.0, &j->plan,
                             err);
    if (st != SDXS_OK)
        return st;
    for (int i = 0; i < j->n; i++) {
        j->timesteps[i] = j->plan.timestep;
        if (r->noise)
            memcpy(j->noise + i * per_noise, r->noise + i * per_noise, per_noise * sizeof(float));
        else
            sdxs_randn(r->seeds[i], j->noise + i * per_noise, per_noise);
    }

    /* Init images, resized to the output size when they differ. */
    if (r->init_images) {
        j->init_rgb = sdxs_calloc((size_t)j->n * pixels, 1, err, "init pixels");
        if (!j->init_rgb)
            return SDXS_ERR_RUNTIME;
        for (int i = 0; i < j->n && st == SDXS_OK; i++) {
            const sdxs_image *src = &r->init_images[i];
            sdxs_image tmp = {0, 0, NULL};
            if (src->width != j->width || src->height != j->height) {
                st = sdxs_image_resize(src, (int)j->width, (int)j->height, &tmp, err);
                src = &tmp;
            }
            if (st == SDXS_OK)
                memcpy(j->init_rgb + (size_t)i * pixels, src->rgb, pixels);
            sdxs_image_free(&tmp);
        }
    }

    /* Control images: resized and prepared for their mode; channels reversed for a ControlNet
     * trained on BGR. */
    if (r->control_images && st == SDXS_OK) {
        j->control_scale = r->control_scale;
        j->control_rgb = sdxs_calloc((size_t)j->n * pixels, 1, err, "control pixels");
        if (!j->control_rgb)
            return SDXS_ERR_RUNTIME;
        for (int i = 0; i < j->n && st == SDXS_OK; i++) {
            sdxs_image tmp = {0, 0, NULL};
            uint8_t *dst = j->control_rgb + (size_t)i * pixels;
            st = sdxs_control_prepare(&r->control_images[i], r->control_mode, (int)j->width,
                                      (int)j->height, &tmp, err);
            if (st == SDXS_OK)
                memcpy(dst, tmp.rgb, pixels);
            sdxs_image_free(&tmp);
            if (st == SDXS_OK && m->controlnet->cfg.bgr)
                for (size_t p = 0; p < pixels; p += 3) {
                    uint8_t t = dst[p];
                    dst[p] = dst[p + 2];
                    dst[p + 2] = t;
                }
        }
    }
    return st;
}

static void job_free(gen_job *j)
{
    free(j->ids);
    free(j->prompt_of);
    free(j->timesteps);
    free(j->noise);
    free(j->init_rgb);
    free(j->control_rgb);
    free(j->out_rgb);
    free(j->decoded_tmp);
}

/* Distinguishes plans: the stages a run has and its shapes. */
static uint64_t shape_key(const gen_job *j)
{
    uint64_t k = 0x67656e0000000000ull;
    k ^= (uint64_t)(j->init_rgb != NULL) << 56 | (uint64_t)j->plan.skip_unet << 57 |
         (uint64_t)(j->plan.clip > 0.0f) << 58 | (uint64_t)(j->decoded_tmp != NULL) << 59 |
         (uint64_t)(j->control_rgb != NULL) << 60 | (uint64_t)(j->control_scale == 1.0f) << 61;
    k ^= (uint64_t)j->n << 40 ^ (uint64_t)j->unique << 32 ^ (uint64_t)j->h << 16 ^
         (uint64_t)j->w;
    return k;
}

sdxs_status sdxs_generate_ex(sdxs_model *m, const sdxs_request *r, sdxs_image *out,
                             sdxs_timings *timings, const sdxs_debug *debug, sdxs_error *err)
{
    sdxs_error local;
    gen_job j;
    int width, height, mult, down;
    size_t pixels;
    double t0 = sdxs_now_ms(), t_tok;
    sdxs_status st;

    if (!err)
        err = &local;
    sdxs_error_clear(err);
    if (m->opt.describe_only)
        return sdxs_fail(err, SDXS_ERR_INVALID, NULL, "the model was opened to describe only");
    sdxs_model_default_size(m, &width, &height, &mult);
    if (r->width)
        width = r->width;
    if (r->height)
        height = r->height;
    st = check_request(m, r, width, height, err);
    if (st != SDXS_OK)
        return st;

    memset(&j, 0, sizeof(j));
    down = sdxs_taesd_downscale(&m->taesd.cfg);
    j.m = m;
    j.n = r->batch;
    j.width = width;
    j.height = height;
    j.w = width / down;
    j.h = height / down;
    j.debug = debug;
    pixels = (size_t)width * (size_t)height * 3;
    if (debug && debug->decoded) {
        j.decoded_tmp = sdxs_calloc((size_t)j.n * pixels, sizeof(float), err, "decoded copy");
        if (!j.decoded_tmp)
            return SDXS_ERR_RUNTIME;
    }
    st = prepare(&j, r, err);
    t_tok = sdxs_now_ms();

    /* The run itself, one request at a time. */
    if (st == SDXS_OK) {
        pthread_mutex_lock(&m->lock);
        st = sdxs_exec_run(m->exec, shape_key(&j), gen_run, &j, err);
        if (timings) {
            timings->tokenize_ms = t_tok - t0;
            timings->text_ms = sdxs_exec_elapsed_ms(m->exec, MARK_START, MARK_TEXT);
            timings->unet_ms = sdxs_exec_elapsed_ms(m->exec, MARK_TEXT, MARK_UNET);
            timings->decode_ms = sdxs_exec_elapsed_ms(m->exec, MARK_UNET, MARK_DECODE);
        }
        pthread_mutex_unlock(&m->lock);
    }

    /* Hand out one image per request entry. */
    for (int i = 0; st == SDXS_OK && i < j.n; i++) {
        out[i].rgb = sdxs_alloc(pixels, err, "an image");
        if (!out[i].rgb) {
            for (int k = 0; k < i; k++)
                sdxs_image_free(&out[k]);
            st = SDXS_ERR_RUNTIME;
            break;
        }
        out[i].width = width;
        out[i].height = height;
        memcpy(out[i].rgb, j.out_rgb + (size_t)i * pixels, pixels);
    }
    if (st == SDXS_OK && debug && debug->decoded)
        for (size_t i = 0; i < (size_t)j.n * pixels; i++)
            debug->decoded[i] = j.decoded_tmp[i] * 2.0f - 1.0f;
    if (timings)
        timings->total_ms = sdxs_now_ms() - t0;
    job_free(&j);
    return st;
}

sdxs_status sdxs_generate(sdxs_model *m, const sdxs_request *r, sdxs_image *out,
                          sdxs_timings *timings, sdxs_error *err)
{
    return sdxs_generate_ex(m, r, out, timings, NULL, err);
}
