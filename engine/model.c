/* model.c: opening a diffusers model folder: model_index.json, each component's configuration,
 * the tokenizer, and every weight (checked for presence and shape, then converted once onto the
 * backend), with an optional ControlNet folder beside it; the description `sdxs info` prints;
 * tokenizing and encoding prompts. */
#include "engine/model.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/safetensors.h"

#define DEFAULT_MIN_SIDE 128
#define DEFAULT_MAX_SIDE 1024
#define DEFAULT_MAX_BATCH 8

/* The weight files of one folder, open while weights are created. */
typedef struct model_loaders {
    sdxs_loader text, unet, vae, controlnet;
} model_loaders;

/* ---- model_index.json ---- */

/* Checks that key names a [library, class] pair with one of the accepted classes. */
static sdxs_status check_component(sdxs_cfg *c, const char *key, const char *const *classes,
                                   char *cls_out, size_t cls_cap)
{
    json_t *v = json_object_get(c->root, key);
    const char *cls;

    if (!v)
        return sdxs_cfg_reject(c, key, "missing: the folder must have a %s component", key);
    if (!json_is_array(v) || json_array_size(v) != 2 ||
        !json_is_string(json_array_get(v, 1)))
        return sdxs_cfg_reject(c, key, "expected [\"library\", \"ClassName\"]");
    cls = json_string_value(json_array_get(v, 1));
    for (int i = 0; classes[i]; i++) {
        if (!strcmp(cls, classes[i])) {
            if (cls_out)
                snprintf(cls_out, cls_cap, "%s", cls);
            return SDXS_OK;
        }
    }
    return sdxs_cfg_reject(c, key, "class %s is not supported (supported: %s%s%s)", cls,
                           classes[0], classes[1] ? ", " : "", classes[1] ? classes[1] : "");
}

static sdxs_status read_index(sdxs_model *m, sdxs_error *err)
{
    static const char *const text[] = {"CLIPTextModel", NULL};
    static const char *const tok[] = {"CLIPTokenizer", "CLIPTokenizerFast", NULL};
    static const char *const unet[] = {"UNet2DConditionModel", NULL};
    static const char *const vae[] = {"AutoencoderTiny", NULL};
    static const char *const sched[] = {"EulerDiscreteScheduler", "DEISMultistepScheduler",
                                        "DDIMScheduler", "LCMScheduler",
                                        "EulerAncestralDiscreteScheduler", NULL};
    char path[1200];
    sdxs_cfg c;

    if (sdxs_path_join(path, sizeof(path), m->dir, "model_index.json", err) != SDXS_OK)
        return SDXS_ERR_INVALID;
    if (sdxs_cfg_open(&c, path, err) != SDXS_OK)
        return err->status;
    check_component(&c, "text_encoder", text, NULL, 0);
    check_component(&c, "tokenizer", tok, NULL, 0);
    check_component(&c, "unet", unet, NULL, 0);
    check_component(&c, "vae", vae, NULL, 0);
    check_component(&c, "scheduler", sched, m->scheduler_class, sizeof(m->scheduler_class));
    return sdxs_cfg_close(&c);
}

/* ---- configurations ---- */

static sdxs_status read_configs(sdxs_model *m, sdxs_error *err)
{
    char path[1200];
    sdxs_status st;
    const sdxs_unet_config *u;

    if (sdxs_path_join(path, sizeof(path), m->dir, "text_encoder/config.json", err) != SDXS_OK)
        return SDXS_ERR_INVALID;
    st = sdxs_clip_config_load(path, &m->clip.cfg, err);
    if (st == SDXS_OK &&
        sdxs_path_join(path, sizeof(path), m->dir, "unet/config.json", err) == SDXS_OK)
        st = sdxs_unet_config_load(path, &m->unet->cfg, err);
    if (st == SDXS_OK &&
        sdxs_path_join(path, sizeof(path), m->dir, "vae/config.json", err) == SDXS_OK)
        st = sdxs_taesd_config_load(path, &m->taesd.cfg, err);
    if (st == SDXS_OK &&
        sdxs_path_join(path, sizeof(path), m->dir, "scheduler/scheduler_config.json", err) ==
            SDXS_OK)
        st = sdxs_scheduler_load(path, &m->sched, err);
    if (st != SDXS_OK)
        return st;

    /* The components must fit together. */
    u = &m->unet->cfg;
    for (int i = 0; i < u->levels; i++)
        if (u->cross_dim[i] != m->clip.cfg.hidden_size)
            return sdxs_fail(err, SDXS_ERR_MODEL, "unet/config.json",
                             "unet/config.json: cross_attention_dim %d does not match the text "
                             "encoder's hidden_size %d",
                             u->cross_dim[i], m->clip.cfg.hidden_size);
    if (u->in_channels != m->taesd.cfg.latent_channels ||
        u->out_channels != m->taesd.cfg.latent_channels)
        return sdxs_fail(err, SDXS_ERR_MODEL, "unet/config.json",
                         "unet/config.json: in_channels %d and out_channels %d must equal the "
                         "vae's latent_channels %d",
                         u->in_channels, u->out_channels, m->taesd.cfg.latent_channels);
    m->image_multiple = sdxs_taesd_downscale(&m->taesd.cfg) * sdxs_unet_latent_multiple(u);

    /* The ControlNet's configuration, which must fit this U-Net. */
    if (m->controlnet) {
        if (sdxs_path_join(path, sizeof(path), m->controlnet_dir, "config.json", err) != SDXS_OK)
            return SDXS_ERR_INVALID;
        st = sdxs_controlnet_config_load(path, &m->controlnet->cfg, err);
        if (st == SDXS_OK)
            st = sdxs_controlnet_check_fit(&m->controlnet->cfg, path, u,
                                           sdxs_taesd_downscale(&m->taesd.cfg), err);
    }
    return st;
}

/* ---- weights ---- */

static sdxs_status open_loaders(sdxs_model *m, model_loaders *ld, sdxs_error *err)
{
    char path[1200];
    sdxs_status st;

    if (sdxs_path_join(path, sizeof(path), m->dir, "text_encoder", err) != SDXS_OK)
        return SDXS_ERR_INVALID;
    st = sdxs_loader_open(&ld->text, path, "model", "text_encoder", false, m->ws, err);
    if (st == SDXS_OK && sdxs_path_join(path, sizeof(path), m->dir, "unet", err) == SDXS_OK)
        st = sdxs_loader_open(&ld->unet, path, "diffusion_pytorch_model", "unet", false, m->ws,
                              err);
    if (st == SDXS_OK && sdxs_path_join(path, sizeof(path), m->dir, "vae", err) == SDXS_OK)
        st = sdxs_loader_open(&ld->vae, path, "diffusion_pytorch_model", "vae", false, m->ws,
                              err);
    if (st == SDXS_OK && m->controlnet)
        st = sdxs_loader_open(&ld->controlnet, m->controlnet_dir, "diffusion_pytorch_model",
                              "controlnet", false, m->ws, err);
    return st;
}

static void close_loaders(model_loaders *ld)
{
    if (ld->text.st)
        sdxs_loader_close(&ld->text);
    if (ld->unet.st)
        sdxs_loader_close(&ld->unet);
    if (ld->vae.st)
        sdxs_loader_close(&ld->vae);
    if (ld->controlnet.st)
        sdxs_loader_close(&ld->controlnet);
}

/* One pass over every component's layers (sizing or creating, as the store is). */
static sdxs_status build_pass(sdxs_model *m, model_loaders *ld, sdxs_error *err)
{
    sdxs_status st;

    sdxs_loader_begin_pass(&ld->text);
    sdxs_loader_begin_pass(&ld->unet);
    sdxs_loader_begin_pass(&ld->vae);
    if (m->controlnet)
        sdxs_loader_begin_pass(&ld->controlnet);
    st = sdxs_clip_build(&m->clip, &ld->text, err);
    if (st == SDXS_OK)
        st = sdxs_unet_build(m->unet, &ld->unet, err);
    if (st == SDXS_OK)
        st = sdxs_taesd_build_encoder(&m->taesd, &ld->vae, err);
    m->params_encoder = ld->vae.params;
    if (st == SDXS_OK)
        st = sdxs_taesd_build_decoder(&m->taesd, &ld->vae, err);
    m->params_decoder = ld->vae.params - m->params_encoder;
    if (st == SDXS_OK && m->controlnet)
        st = sdxs_controlnet_build(m->controlnet, &ld->controlnet, err);
    m->params_text = ld->text.params;
    m->params_unet = ld->unet.params;
    m->params_controlnet = ld->controlnet.params;
    return st;
}

/* ---- description ---- */

static void put_count(char *out, size_t cap, uint64_t n)
{
    char digits[32];
    size_t len, o = 0;
    snprintf(digits, sizeof(digits), "%" PRIu64, n);
    len = strlen(digits);
    for (size_t i = 0; i < len && o + 2 < cap; i++) {
        if (i && (len - i) % 3 == 0)
            out[o++] = ',';
        out[o++] = digits[i];
    }
    out[o] = '\0';
}

static void append(sdxs_model *m, const char *fmt, ...) SDXS_PRINTF(2, 3);
static void append(sdxs_model *m, const char *fmt, ...)
{
    size_t used = strlen(m->describe);
    va_list ap;
    if (used + 1 >= sizeof(m->describe))
        return;
    va_start(ap, fmt);
    vsnprintf(m->describe + used, sizeof(m->describe) - used, fmt, ap);
    va_end(ap);
}

static void append_ints(sdxs_model *m, const char *label, const int *v, int n)
{
    append(m, " %s [", label);
    for (int i = 0; i < n; i++)
        append(m, i ? ", %d" : "%d", v[i]);
    append(m, "]");
}

static void describe(sdxs_model *m)
{
    const sdxs_clip_config *t = &m->clip.cfg;
    const sdxs_unet_config *u = &m->unet->cfg;
    const sdxs_taesd_config *v = &m->taesd.cfg;
    char a[32], b[32];
    int w, h, mult;

    m->describe[0] = '\0';
    append(m, "model: %s\n", m->dir);
    put_count(a, sizeof(a), m->params_text);
    append(m, "text_encoder: CLIPTextModel hidden_size %d, layers %d, heads %d, "
              "intermediate_size %d, hidden_act %s, vocab_size %d; parameters %s\n",
           t->hidden_size, t->layers, t->heads, t->intermediate_size,
           t->act == SDXS_ACT_GELU ? "gelu" : "quick_gelu", t->vocab_size, a);
    append(m, "tokenizer: CLIPTokenizer pad id %d, context %d tokens\n",
           (int)sdxs_tokenizer_pad_id(m->tok), SDXS_MAX_TOKENS);

    put_count(a, sizeof(a), m->params_unet);
    append(m, "unet: UNet2DConditionModel");
    append_ints(m, "block_out_channels", u->channels, u->levels);
    append_ints(m, "layers_per_block", u->layers_per_block, u->levels);
    append_ints(m, "heads", u->heads, u->levels);
    append(m, " attention down [");
    for (int i = 0; i < u->levels; i++)
        append(m, i ? ", %s" : "%s",
               !u->down_attn[i] ? "none" : (u->only_cross[i] ? "cross-only" : "self+cross"));
    append(m, "], mid block %s, %s projections, cross_attention_dim %d, sample_size %d; "
              "parameters %s\n",
           u->mid_block ? "yes" : "no", u->linear_proj ? "linear" : "conv", u->cross_dim[0],
           u->sample_size, a);

    put_count(a, sizeof(a), m->params_encoder);
    put_count(b, sizeof(b), m->params_decoder);
    append(m, "vae: AutoencoderTiny latent_channels %d", v->latent_channels);
    append_ints(m, "decoder_blocks", v->dec_blocks, v->stages);
    append(m, " scaling_factor %g; encoder parameters %s, decoder parameters %s\n",
           (double)v->scaling_factor, a, b);
    append(m, "scheduler: %s\n", m->scheduler_class);
    if (m->controlnet) {
        const sdxs_controlnet_config *c = &m->controlnet->cfg;
        put_count(a, sizeof(a), m->params_controlnet);
        append(m, "controlnet: ControlNetModel %s,", m->controlnet_dir);
        append_ints(m, "conditioning_embedding_out_channels", c->emb_channels, c->emb_levels);
        append(m, " channel order %s, %d residuals; parameters %s\n", c->bgr ? "bgr" : "rgb",
               m->controlnet->skips + 1, a);
    }

    sdxs_model_default_size(m, &w, &h, &mult);
    append(m, "image: default %dx%d, sides %d to %d in steps of %d\n", w, h,
           m->opt.min_side, m->opt.max_side, mult);
    if (m->be)
        append(m, "backend: %s\n", sdxs_backend_name(m->be));
}

/* ---- open and free ---- */

static sdxs_status create_backend(sdxs_model *m, sdxs_error *err)
{
    sdxs_status st;
    if (m->opt.describe_only)
        return sdxs_backend_cpu_create(1, SDXS_PRECISION_DEFAULT, &m->be, err);
    if (m->opt.backend == SDXS_BACKEND_CUDA)
        return sdxs_backend_cuda_create(m->opt.precision, &m->be, err);
    if (m->opt.backend == SDXS_BACKEND_AUTO) {
        sdxs_error cuda_err;
        st = sdxs_backend_cuda_create(m->opt.precision, &m->be, &cuda_err);
        if (st == SDXS_OK)
            return SDXS_OK;
        SDXS_INFO("model", "using the CPU backend (%s)", cuda_err.message);
        if (m->opt.precision == SDXS_PRECISION_FP16)
            m->opt.precision = SDXS_PRECISION_DEFAULT;
    }
    return sdxs_backend_cpu_create(m->opt.threads, m->opt.precision, &m->be, err);
}

sdxs_status sdxs_model_open(const char *dir, const sdxs_model_options *opt, sdxs_model **out,
                            sdxs_error *err)
{
    sdxs_error local;
    model_loaders ld;
    char path[1200];
    sdxs_model *m;
    sdxs_status st;
    double t0 = sdxs_now_ms();

    if (!err)
        err = &local;
    sdxs_error_clear(err);
    *out = NULL;
    memset(&ld, 0, sizeof(ld));
    if (!dir || strlen(dir) >= sizeof(m->dir) - 64)
        return sdxs_fail(err, SDXS_ERR_INVALID, "model", "model folder path missing or too long");

    m = sdxs_calloc(1, sizeof(*m), err, "a model");
    if (!m)
        return SDXS_ERR_RUNTIME;
    pthread_mutex_init(&m->lock, NULL);
    snprintf(m->dir, sizeof(m->dir), "%s", dir);
    if (opt)
        m->opt = *opt;
    m->opt.controlnet_dir = NULL; /* not kept: the string belongs to the caller */
    if (opt && opt->controlnet_dir) {
        if (strlen(opt->controlnet_dir) >= sizeof(m->controlnet_dir) - 64) {
            st = sdxs_fail(err, SDXS_ERR_INVALID, "controlnet", "ControlNet folder path too long");
            goto fail;
        }
        snprintf(m->controlnet_dir, sizeof(m->controlnet_dir), "%s", opt->controlnet_dir);
        m->controlnet = sdxs_calloc(1, sizeof(*m->controlnet), err, "the ControlNet");
        if (!m->controlnet) {
            st = SDXS_ERR_RUNTIME;
            goto fail;
        }
    }
    if (!m->opt.min_side)
        m->opt.min_side = DEFAULT_MIN_SIDE;
    if (!m->opt.max_side)
        m->opt.max_side = DEFAULT_MAX_SIDE;
    if (!m->opt.max_batch)
        m->opt.max_batch = DEFAULT_MAX_BATCH;
    m->unet = sdxs_calloc(1, sizeof(*m->unet), err, "the U-Net");
    if (!m->unet) {
        st = SDXS_ERR_RUNTIME;
        goto fail;
    }

    /* Configurations and the tokenizer: cheap, and every error names its file. */
    st = read_index(m, err);
    if (st == SDXS_OK && sdxs_path_join(path, sizeof(path), dir, "tokenizer", err) == SDXS_OK)
        st = sdxs_tokenizer_load(path, &m->tok, err);
    if (st == SDXS_OK)
        st = read_configs(m, err);
    if (st != SDXS_OK)
        goto fail;
    if (!(opt && opt->min_side)) {
        /* The default minimum is lowered to the model's own size when that is smaller (the
         * shipped 64-pixel toy model). */
        int w, h, mult;
        sdxs_model_default_size(m, &w, &h, &mult);
        if (w < m->opt.min_side)
            m->opt.min_side = w;
    }

    /* Weights: a sizing pass checks every tensor; the creating pass converts them. */
    st = create_backend(m, err);
    if (st == SDXS_OK)
        st = sdxs_weight_store_create(m->be, &m->ws, err);
    if (st == SDXS_OK)
        st = sdxs_exec_create(m->be, &m->exec, err);
    if (st == SDXS_OK)
        st = open_loaders(m, &ld, err);
    if (st == SDXS_OK)
        st = build_pass(m, &ld, err);
    if (st == SDXS_OK && !m->opt.describe_only) {
        st = sdxs_weight_store_reserve(m->ws, err);
        if (st == SDXS_OK)
            st = build_pass(m, &ld, err);
    }
    if (st == SDXS_OK) {
        sdxs_loader_report_unused(&ld.text);
        sdxs_loader_report_unused(&ld.unet);
        sdxs_loader_report_unused(&ld.vae);
        if (m->controlnet)
            sdxs_loader_report_unused(&ld.controlnet);
    }
    close_loaders(&ld);
    if (st != SDXS_OK)
        goto fail;

    describe(m);
    if (!m->opt.describe_only)
        SDXS_INFO("model", "opened %s on the %s backend in %.0f ms (%.1f MiB of weights)", dir,
                  sdxs_backend_name(m->be), sdxs_now_ms() - t0,
                  (double)sdxs_weight_store_bytes(m->ws) / 1048576.0);
    *out = m;
    return SDXS_OK;

fail:
    close_loaders(&ld);
    sdxs_model_free(m);
    return st;
}

void sdxs_model_free(sdxs_model *m)
{
    if (!m)
        return;
    sdxs_exec_free(m->exec);
    sdxs_weight_store_free(m->ws);
    sdxs_backend_free(m->be);
    sdxs_tokenizer_free(m->tok);
    free(m->unet);
    free(m->controlnet);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

const char *sdxs_model_describe(const sdxs_model *m) { return m->describe; }

void sdxs_model_default_size(const sdxs_model *m, int *width, int *height, int *multiple)
{
    int side = m->unet->cfg.sample_size * sdxs_taesd_downscale(&m->taesd.cfg);
    *width = side;
    *height = side;
    *multiple = m->image_multiple;
}

/* ---- prompts ---- */

sdxs_status sdxs_tokenize(const sdxs_model *m, const char *prompt, int32_t ids[SDXS_MAX_TOKENS],
                          sdxs_error *err)
{
    size_t len;
    if (!prompt)
        return sdxs_fail(err, SDXS_ERR_INVALID, "prompt", "prompt is missing");
    len = strlen(prompt);
    if (len > SDXS_MAX_PROMPT_BYTES)
        return sdxs_fail(err, SDXS_ERR_INVALID, "prompt",
                         "prompt is %zu bytes; the limit is %d", len, SDXS_MAX_PROMPT_BYTES);
    return sdxs_tokenizer_encode(m->tok, prompt, ids, err);
}

typedef struct encode_job {
    const sdxs_model *m;
    const int32_t *ids; /* (N, 77) */
    int n;
    float *out; /* (N, 77, D) */
} encode_job;

static sdxs_status encode_run(sdxs_exec *e, void *user)
{
    encode_job *job = user;
    sdxs_tensor *h = sdxs_clip_forward(e, &job->m->clip, job->ids, job->n, SDXS_MAX_TOKENS);
    sdxs_op_download(e, h, job->out);
    sdxs_release(e, h);
    return SDXS_OK;
}

sdxs_status sdxs_encode_prompts(sdxs_model *m, int n, const char *const *prompts, float *out,
                                size_t out_floats, sdxs_error *err)
{
    sdxs_error local;
    size_t need = (size_t)n * SDXS_MAX_TOKENS * (size_t)m->clip.cfg.hidden_size;
    int32_t *ids;
    encode_job job;
    sdxs_status st = SDXS_OK;

    if (!err)
        err = &local;
    if (m->opt.describe_only)
        return sdxs_fail(err, SDXS_ERR_INVALID, NULL, "the model was opened to describe only");
    if (n < 1 || n > m->opt.max_batch)
        return sdxs_fail(err, SDXS_ERR_INVALID, "n", "%d prompts; 1 to %d are allowed", n,
                         m->opt.max_batch);
    if (out_floats < need)
        return sdxs_fail(err, SDXS_ERR_INVALID, "out", "output holds %zu floats; %zu needed",
                         out_floats, need);
    ids = sdxs_calloc((size_t)n * SDXS_MAX_TOKENS, sizeof(int32_t), err, "token ids");
    if (!ids)
        return SDXS_ERR_RUNTIME;
    for (int i = 0; i < n && st == SDXS_OK; i++)
        st = sdxs_tokenize(m, prompts[i], ids + (size_t)i * SDXS_MAX_TOKENS, err);
    if (st == SDXS_OK) {
        job = (encode_job){m, ids, n, out};
        pthread_mutex_lock(&m->lock);
        st = sdxs_exec_run(m->exec, 0x7465787400000000ull | (uint64_t)n, encode_run, &job, err);
        pthread_mutex_unlock(&m->lock);
    }
    free(ids);
    return st;
}
