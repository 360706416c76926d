/* controlnet.c: ControlNetModel (diffusers 0.27) for the SDXS sketch checkpoint: configuration
 * with diffusers' defaults, weights by diffusers' names, and the forward pass that turns a
 * latent, a timestep, the text and a control image into the residuals the U-Net adds.
 *
 * Shapes: N batch, C channels, H/W control image size, h/w latent size, L text tokens, Dc text
 * width, T time-embedding width (4 x the first level's channels).
 */
#include "engine/controlnet.h"

#include <stdio.h>
#include <string.h>

#define NAME(buf, ...)                                                                             \
    do {                                                                                           \
        if (snprintf((buf), sizeof(buf), __VA_ARGS__) >= (int)sizeof(buf))                         \
            return sdxs_fail(err, SDXS_ERR_RUNTIME, NULL, "tensor name too long");                 \
    } while (0)

#define TRY(call)                                                                                  \
    do {                                                                                           \
        sdxs_status st_ = (call);                                                                  \
        if (st_ != SDXS_OK)                                                                        \
            return st_;                                                                            \
    } while (0)

/* ---- configuration ---- */

/* Keys whose only supported value is their default. */
static void reject_unless_default(sdxs_cfg *c)
{
    static const char *must_be_null[] = {
        "class_embed_type", "addition_embed_type", "encoder_hid_dim", "encoder_hid_dim_type",
        "num_class_embeds", "projection_class_embeddings_input_dim", "addition_time_embed_dim",
        "num_attention_heads",
    };
    for (size_t i = 0; i < SDXS_ARRAY_LEN(must_be_null); i++)
        if (sdxs_cfg_has(c, must_be_null[i]))
            sdxs_cfg_reject(c, must_be_null[i], "only null is supported");
    if (strcmp(sdxs_cfg_str(c, "act_fn", "silu"), "silu"))
        sdxs_cfg_reject(c, "act_fn", "only \"silu\" is supported");
    if (strcmp(sdxs_cfg_str(c, "resnet_time_scale_shift", "default"), "default"))
        sdxs_cfg_reject(c, "resnet_time_scale_shift", "only \"default\" is supported");
    if (sdxs_cfg_is_null(c, "mid_block_type") ||
        strcmp(sdxs_cfg_str(c, "mid_block_type", "UNetMidBlock2DCrossAttn"),
               "UNetMidBlock2DCrossAttn"))
        sdxs_cfg_reject(c, "mid_block_type", "only \"UNetMidBlock2DCrossAttn\" is supported");
    /* Pooled residuals (the "shuffle" ControlNets' guess mode) are not the sketch model's. */
    if (sdxs_cfg_bool(c, "global_pool_conditions", false))
        sdxs_cfg_reject(c, "global_pool_conditions", "only false is supported");
    if (sdxs_cfg_int(c, "downsample_padding", 1, 0, 16) != 1)
        sdxs_cfg_reject(c, "downsample_padding", "only 1 is supported");
    (void)sdxs_cfg_bool(c, "upcast_attention", false); /* no effect in fp32; type-checked */
}

/* Down block types into per-level attention flags. */
static void read_down_types(sdxs_cfg *c, sdxs_controlnet_config *cfg)
{
    static const char *def[] = {"CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                "CrossAttnDownBlock2D", "DownBlock2D"};
    const char *down[SDXS_UNET_MAX_LEVELS];
    int nd = sdxs_cfg_strs(c, "down_block_types", down, SDXS_UNET_MAX_LEVELS);
    if (nd == 0) {
        nd = 4;
        memcpy(down, def, sizeof(def));
    }
    if (nd < 0)
        return;
    if (nd != cfg->levels) {
        sdxs_cfg_reject(c, "down_block_types", "expected %d entries, one per "
                        "block_out_channels entry", cfg->levels);
        return;
    }
    for (int i = 0; i < cfg->levels; i++) {
        if (!strcmp(down[i], "CrossAttnDownBlock2D"))
            cfg->down_attn[i] = true;
        else if (!strcmp(down[i], "DownBlock2D"))
            cfg->down_attn[i] = false;
        else
            sdxs_cfg_reject(c, "down_block_types", "'%s' is not supported (DownBlock2D or "
                            "CrossAttnDownBlock2D)", down[i]);
    }
}

sdxs_status sdxs_controlnet_config_load(const char *path, sdxs_controlnet_config *cfg,
                                        sdxs_error *err)
{
    sdxs_cfg c;
    const char *order;
    sdxs_status st = sdxs_cfg_open(&c, path, err);
    if (st != SDXS_OK)
        return st;
    memset(cfg, 0, sizeof(*cfg));

    /* Levels and their widths (diffusers' defaults are SD 1.5's four levels). */
    cfg->levels = sdxs_cfg_list_len(&c, "block_out_channels");
    if (cfg->levels < 0) {
        if (sdxs_cfg_has(&c, "block_out_channels"))
            sdxs_cfg_reject(&c, "block_out_channels", "expected a list of integers");
        cfg->levels = 4;
    }
    if (c.status == SDXS_OK && (cfg->levels < 1 || cfg->levels > SDXS_UNET_MAX_LEVELS))
        sdxs_cfg_reject(&c, "block_out_channels", "%d levels; 1 to %d are supported",
                        cfg->levels, SDXS_UNET_MAX_LEVELS);
    if (c.status == SDXS_OK) {
        int n = cfg->levels;
        if (!sdxs_cfg_has(&c, "block_out_channels")) {
            static const int def[4] = {320, 640, 1280, 1280};
            memcpy(cfg->channels, def, sizeof(def));
        } else {
            sdxs_cfg_ints(&c, "block_out_channels", cfg->channels, n, 0, 1, 16384);
        }
        read_down_types(&c, cfg);
        /* ControlNetModel takes one layers_per_block for every level. */
        cfg->layers_per_block = sdxs_cfg_int(&c, "layers_per_block", 2, 1,
                                             SDXS_UNET_MAX_RESNETS - 1);
        sdxs_cfg_ints(&c, "attention_head_dim", cfg->heads, n, 8, 1, 1024);
        sdxs_cfg_ints(&c, "transformer_layers_per_block", cfg->tlayers, n, 1, 1,
                      SDXS_UNET_MAX_TLAYERS);
        sdxs_cfg_bools(&c, "only_cross_attention", cfg->only_cross, n, false);
    }
    cfg->cross_dim = sdxs_cfg_int(&c, "cross_attention_dim", 1280, 1, 16384);
    cfg->in_channels = sdxs_cfg_int(&c, "in_channels", 4, 1, 64);
    cfg->cond_channels = sdxs_cfg_int(&c, "conditioning_channels", 3, 3, 3);
    cfg->linear_proj = sdxs_cfg_bool(&c, "use_linear_projection", false);
    cfg->flip_sin_to_cos = sdxs_cfg_bool(&c, "flip_sin_to_cos", true);
    cfg->freq_shift = (float)sdxs_cfg_num(&c, "freq_shift", 0.0);
    cfg->groups = sdxs_cfg_int(&c, "norm_num_groups", 32, 1, 1024);
    cfg->eps = (float)sdxs_cfg_num(&c, "norm_eps", 1e-5);
    order = sdxs_cfg_str(&c, "controlnet_conditioning_channel_order", "rgb");
    if (!strcmp(order, "bgr"))
        cfg->bgr = true;
    else if (strcmp(order, "rgb"))
        sdxs_cfg_reject(&c, "controlnet_conditioning_channel_order", "'%s' is not \"rgb\" or "
                        "\"bgr\"", order);
    reject_unless_default(&c);

    /* The conditioning embedding's widths. */
    cfg->emb_levels = sdxs_cfg_list_len(&c, "conditioning_embedding_out_channels");
    if (cfg->emb_levels < 0) {
        static const int def[4] = {16, 32, 96, 256};
        if (sdxs_cfg_has(&c, "conditioning_embedding_out_channels"))
            sdxs_cfg_reject(&c, "conditioning_embedding_out_channels",
                            "expected a list of integers");
        cfg->emb_levels = 4;
        memcpy(cfg->emb_channels, def, sizeof(def));
    } else if (cfg->emb_levels < 1 || cfg->emb_levels > SDXS_CONTROLNET_MAX_EMB) {
        sdxs_cfg_reject(&c, "conditioning_embedding_out_channels",
                        "%d entries; 1 to %d are supported", cfg->emb_levels,
                        SDXS_CONTROLNET_MAX_EMB);
    } else {
        sdxs_cfg_ints(&c, "conditioning_embedding_out_channels", cfg->emb_channels,
                      cfg->emb_levels, 0, 1, 16384);
    }

    /* Consistency the layers rely on. */
    for (int i = 0; c.status == SDXS_OK && i < cfg->levels; i++) {
        if (cfg->channels[i] % cfg->groups)
            sdxs_cfg_reject(&c, "norm_num_groups", "%d does not divide block_out_channels[%d] "
                            "= %d", cfg->groups, i, cfg->channels[i]);
        else if (cfg->channels[i] % cfg->heads[i])
            sdxs_cfg_reject(&c, "attention_head_dim", "%d heads do not divide %d channels",
                            cfg->heads[i], cfg->channels[i]);
    }
    cfg->temb_dim = cfg->channels[0] * 4;
    return sdxs_cfg_close(&c);
}

sdxs_status sdxs_controlnet_check_fit(const sdxs_controlnet_config *cfg, const char *path,
                                      const sdxs_unet_config *unet, int image_downscale,
                                      sdxs_error *err)
{
#define MISFIT(key, ...)                                                                           \
    return sdxs_fail(err, SDXS_ERR_MODEL, path, "%s: " key " " __VA_ARGS__)

    if (cfg->in_channels != unet->in_channels)
        MISFIT("in_channels", "%d does not match the U-Net's %d", path, cfg->in_channels,
               unet->in_channels);
    if (cfg->levels != unet->levels)
        MISFIT("block_out_channels", "has %d levels; the U-Net has %d", path, cfg->levels,
               unet->levels);
    for (int i = 0; i < cfg->levels; i++) {
        if (cfg->channels[i] != unet->channels[i])
            MISFIT("block_out_channels", "[%d] = %d does not match the U-Net's %d", path, i,
                   cfg->channels[i], unet->channels[i]);
        if (cfg->layers_per_block != unet->layers_per_block[i])
            MISFIT("layers_per_block", "%d does not match the U-Net's %d at level %d", path,
                   cfg->layers_per_block, unet->layers_per_block[i], i);
        if (cfg->cross_dim != unet->cross_dim[i])
            MISFIT("cross_attention_dim", "%d does not match the U-Net's %d (the text width)",
                   path, cfg->cross_dim, unet->cross_dim[i]);
    }
    if (1 << (cfg->emb_levels - 1) != image_downscale)
        MISFIT("conditioning_embedding_out_channels", "has %d entries, so the control image is "
               "reduced %d times; the image is %d times the latent", path, cfg->emb_levels,
               1 << (cfg->emb_levels - 1), image_downscale);
    return SDXS_OK;
#undef MISFIT
}

/* ---- building ---- */

static sdxs_level_spec level_spec(const sdxs_controlnet_config *cfg, int level, bool attn)
{
    sdxs_level_spec s;
    s.channels = cfg->channels[level];
    s.heads = cfg->heads[level];
    s.cross_dim = cfg->cross_dim;
    s.tlayers = cfg->tlayers[level];
    s.temb_dim = cfg->temb_dim;
    s.groups = cfg->groups;
    s.eps = cfg->eps;
    s.attn = attn;
    s.only_cross = cfg->only_cross[level];
    s.linear_proj = cfg->linear_proj;
    return s;
}

sdxs_status sdxs_controlnet_build(sdxs_controlnet *m, sdxs_loader *ld, sdxs_error *err)
{
    const sdxs_controlnet_config *cfg = &m->cfg;
    int levels = cfg->levels, c0 = cfg->channels[0], z = 0;
    const int *ec = cfg->emb_channels;
    char n[128];

    TRY(sdxs_loader_conv(ld, "conv_in", cfg->in_channels, c0, 3, 1, 1, true, &m->conv_in, err));
    TRY(sdxs_loader_linear(ld, "time_embedding.linear_1", c0, cfg->temb_dim, true, &m->time1,
                           err));
    TRY(sdxs_loader_linear(ld, "time_embedding.linear_2", cfg->temb_dim, cfg->temb_dim, true,
                           &m->time2, err));

    /* The conditioning embedding: per step a 3x3 conv at the same width, then a stride-2 one to
     * the next width. */
    TRY(sdxs_loader_conv(ld, "controlnet_cond_embedding.conv_in", cfg->cond_channels, ec[0], 3,
                         1, 1, true, &m->emb_in, err));
    for (int i = 0; i < cfg->emb_levels - 1; i++) {
        NAME(n, "controlnet_cond_embedding.blocks.%d", 2 * i);
        TRY(sdxs_loader_conv(ld, n, ec[i], ec[i], 3, 1, 1, true, &m->emb_block[2 * i], err));
        NAME(n, "controlnet_cond_embedding.blocks.%d", 2 * i + 1);
        TRY(sdxs_loader_conv(ld, n, ec[i], ec[i + 1], 3, 2, 1, true, &m->emb_block[2 * i + 1],
                             err));
    }
    TRY(sdxs_loader_conv(ld, "controlnet_cond_embedding.conv_out", ec[cfg->emb_levels - 1], c0,
                         3, 1, 1, true, &m->emb_out, err));

    /* The U-Net's down path and a mid block. */
    for (int i = 0; i < levels; i++) {
        sdxs_level_spec s = level_spec(cfg, i, cfg->down_attn[i]);
        NAME(n, "down_blocks.%d", i);
        TRY(sdxs_down_level_build(&m->down[i], ld, n, i ? cfg->channels[i - 1] : c0,
                                  cfg->layers_per_block, i < levels - 1, 1, &s, err));
    }
    {
        sdxs_level_spec s = level_spec(cfg, levels - 1, true);
        s.only_cross = false; /* UNetMidBlock2DCrossAttn has no such option */
        TRY(sdxs_mid_block_build(&m->mid, ld, "mid_block", &s, err));
    }

    /* One 1x1 zero convolution per skip connection, in the order the U-Net keeps them. */
    NAME(n, "controlnet_down_blocks.%d", z);
    TRY(sdxs_loader_conv(ld, n, c0, c0, 1, 1, 0, true, &m->zero_down[z++], err));
    for (int i = 0; i < levels; i++) {
        int c = cfg->channels[i];
        int count = cfg->layers_per_block + (i < levels - 1 ? 1 : 0);
        for (int j = 0; j < count; j++) {
            NAME(n, "controlnet_down_blocks.%d", z);
            TRY(sdxs_loader_conv(ld, n, c, c, 1, 1, 0, true, &m->zero_down[z++], err));
        }
    }
    m->skips = z;
    return sdxs_loader_conv(ld, "controlnet_mid_block", cfg->channels[levels - 1],
                            cfg->channels[levels - 1], 1, 1, 0, true, &m->zero_mid, err);
}

int sdxs_controlnet_residual_shapes(const sdxs_controlnet_config *cfg, int64_t n, int64_t h,
                                    int64_t w, int64_t (*shapes)[4])
{
    int k = 0;
    int64_t hh = h, ww = w;
#define PUT(c)                                                                                     \
    do {                                                                                           \
        shapes[k][0] = n, shapes[k][1] = (c), shapes[k][2] = hh, shapes[k][3] = ww;                \
        k++;                                                                                       \
    } while (0)
    PUT(cfg->channels[0]);
    for (int i = 0; i < cfg->levels; i++) {
        for (int j = 0; j < cfg->layers_per_block; j++)
            PUT(cfg->channels[i]);
        if (i < cfg->levels - 1) {
            /* A stride-2 3x3 convolution with padding 1: ceil(side / 2). */
            hh = (hh + 1) / 2;
            ww = (ww + 1) / 2;
            PUT(cfg->channels[i]);
        }
    }
    PUT(cfg->channels[cfg->levels - 1]);
#undef PUT
    return k;
}

/* ---- forward ---- */

/* The control image to the first level's width at latent size: convolutions with SiLU after
 * each but the last. Returns (N, C0, h, w). */
static sdxs_tensor *cond_embedding(sdxs_exec *e, const sdxs_controlnet *m,
                                   const sdxs_tensor *cond)
{
    sdxs_tensor *h = sdxs_op_conv2d(e, cond, &m->emb_in, NULL, NULL, SDXS_ACT_SILU), *t;
    for (int i = 0; i < 2 * (m->cfg.emb_levels - 1); i++) {
        t = sdxs_op_conv2d(e, h, &m->emb_block[i], NULL, NULL, SDXS_ACT_SILU);
        sdxs_release(e, h);
        h = t;
    }
    t = sdxs_op_conv2d(e, h, &m->emb_out, NULL, NULL, SDXS_ACT_NONE);
    sdxs_release(e, h);
    return t;
}

/* zero(x) * scale; the multiplication is left out at scale 1, where it changes nothing. */
static sdxs_tensor *zero_conv(sdxs_exec *e, const sdxs_conv2d *conv, const sdxs_tensor *x,
                              float scale)
{
    sdxs_tensor *r = sdxs_op_conv2d(e, x, conv, NULL, NULL, SDXS_ACT_NONE), *s;
    if (scale == 1.0f)
        return r;
    s = sdxs_op_axpby(e, scale, r, 0.0f, NULL, SDXS_ACT_NONE);
    sdxs_release(e, r);
    return s;
}

void sdxs_controlnet_forward(sdxs_exec *e, const sdxs_controlnet *m, const sdxs_tensor *sample,
                             const float *timesteps, const sdxs_tensor *context,
                             const sdxs_tensor *cond, float scale, sdxs_unet_residuals *res)
{
    const sdxs_controlnet_config *cfg = &m->cfg;
    sdxs_tensor *skips[SDXS_UNET_MAX_SKIPS];
    int nskips = 0;
    sdxs_tensor *temb, *c, *h, *mid;

    temb = sdxs_unet_time_embedding(e, &m->time1, &m->time2, timesteps,
                                    sdxs_tensor_dim(sample, 0), cfg->channels[0],
                                    cfg->flip_sin_to_cos, cfg->freq_shift);

    /* conv_in(sample) + embedding(cond), then the down path, keeping every skip. */
    c = cond_embedding(e, m, cond);
    h = sdxs_op_conv2d(e, sample, &m->conv_in, NULL, c, SDXS_ACT_NONE);
    sdxs_release(e, c);
    skips[nskips++] = h;
    for (int i = 0; i < cfg->levels; i++)
        h = sdxs_down_level_forward(e, &m->down[i], h, temb, context, skips, &nskips);
    SDXS_ASSERT(nskips == m->skips);
    mid = sdxs_mid_block_forward(e, &m->mid, h, temb, context);
    sdxs_release(e, temb);

    /* The zero convolutions, scaled. */
    res->count = nskips;
    for (int i = 0; i < nskips; i++) {
        res->down[i] = zero_conv(e, &m->zero_down[i], skips[i], scale);
        sdxs_release(e, skips[i]);
    }
    res->mid = zero_conv(e, &m->zero_mid, mid, scale);
    sdxs_release(e, mid);
}
