/* unet.c: UNet2DConditionModel (diffusers 0.27) for the SDXS family: configuration with
 * diffusers' defaults, weights by diffusers' names, and the forward pass as one sequence of
 * backend operations.
 *
 * Shapes: N batch, C channels, H/W latent size, L text tokens, Dc text width, T time-embedding
 * width (4 x the first level's channels).
 */
#include "engine/unet.h"

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

/* Keys whose only supported value is their default: any other value is an error. */
static void reject_unless_default(sdxs_cfg *c)
{
    static const char *must_be_null[] = {
        "class_embed_type",   "addition_embed_type", "encoder_hid_dim",
        "encoder_hid_dim_type", "time_cond_proj_dim", "time_embedding_dim",
        "time_embedding_act_fn", "timestep_post_act", "num_class_embeds",
        "projection_class_embeddings_input_dim", "addition_time_embed_dim",
        "reverse_transformer_layers_per_block", "num_attention_heads",
    };
    for (size_t i = 0; i < SDXS_ARRAY_LEN(must_be_null); i++)
        if (sdxs_cfg_has(c, must_be_null[i]))
            sdxs_cfg_reject(c, must_be_null[i], "only null is supported");
    if (strcmp(sdxs_cfg_str(c, "act_fn", "silu"), "silu"))
        sdxs_cfg_reject(c, "act_fn", "only \"silu\" is supported");
    if (strcmp(sdxs_cfg_str(c, "time_embedding_type", "positional"), "positional"))
        sdxs_cfg_reject(c, "time_embedding_type", "only \"positional\" is supported");
    if (strcmp(sdxs_cfg_str(c, "resnet_time_scale_shift", "default"), "default"))
        sdxs_cfg_reject(c, "resnet_time_scale_shift", "only \"default\" is supported");
    if (strcmp(sdxs_cfg_str(c, "attention_type", "default"), "default"))
        sdxs_cfg_reject(c, "attention_type", "only \"default\" is supported");
    if (sdxs_cfg_bool(c, "dual_cross_attention", false))
        sdxs_cfg_reject(c, "dual_cross_attention", "only false is supported");
    if (sdxs_cfg_bool(c, "resnet_skip_time_act", false))
        sdxs_cfg_reject(c, "resnet_skip_time_act", "only false is supported");
    if (sdxs_cfg_bool(c, "class_embeddings_concat", false))
        sdxs_cfg_reject(c, "class_embeddings_concat", "only false is supported");
    if (sdxs_cfg_bool(c, "center_input_sample", false))
        sdxs_cfg_reject(c, "center_input_sample", "only false is supported");
    if (sdxs_cfg_num(c, "resnet_out_scale_factor", 1.0) != 1.0)
        sdxs_cfg_reject(c, "resnet_out_scale_factor", "only 1.0 is supported");
    if (sdxs_cfg_num(c, "mid_block_scale_factor", 1.0) != 1.0)
        sdxs_cfg_reject(c, "mid_block_scale_factor", "only 1.0 is supported");
    if (sdxs_cfg_int(c, "downsample_padding", 1, 0, 16) != 1)
        sdxs_cfg_reject(c, "downsample_padding", "only 1 is supported");
    if (sdxs_cfg_is_null(c, "norm_num_groups"))
        sdxs_cfg_reject(c, "norm_num_groups", "null (no output norm) is not supported");
}

/* Reads the block type lists into per-level attention flags. */
static void read_block_types(sdxs_cfg *c, sdxs_unet_config *cfg)
{
    static const char *def_down[] = {"CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                     "CrossAttnDownBlock2D", "DownBlock2D"};
    static const char *def_up[] = {"UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
                                   "CrossAttnUpBlock2D"};
    const char *down[SDXS_UNET_MAX_LEVELS], *up[SDXS_UNET_MAX_LEVELS];
    int nd = sdxs_cfg_strs(c, "down_block_types", down, SDXS_UNET_MAX_LEVELS);
    int nu = sdxs_cfg_strs(c, "up_block_types", up, SDXS_UNET_MAX_LEVELS);

    if (nd == 0) {
        nd = 4;
        memcpy(down, def_down, sizeof(def_down));
    }
    if (nu == 0) {
        nu = 4;
        memcpy(up, def_up, sizeof(def_up));
    }
    if (nd < 0 || nu < 0)
        return;
    if (nd != cfg->levels || nu != cfg->levels) {
        sdxs_cfg_reject(c, nd != cfg->levels ? "down_block_types" : "up_block_types",
                        "expected %d entries, one per block_out_channels entry", cfg->levels);
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
        if (!strcmp(up[i], "CrossAttnUpBlock2D"))
            cfg->up_attn[i] = true;
        else if (!strcmp(up[i], "UpBlock2D"))
            cfg->up_attn[i] = false;
        else
            sdxs_cfg_reject(c, "up_block_types", "'%s' is not supported (UpBlock2D or "
                            "CrossAttnUpBlock2D)", up[i]);
    }
}

sdxs_status sdxs_unet_config_load(const char *path, sdxs_unet_config *cfg, sdxs_error *err)
{
    sdxs_cfg c;
    const char *mid;
    sdxs_status st = sdxs_cfg_open(&c, path, err);
    if (st != SDXS_OK)
        return st;
    memset(cfg, 0, sizeof(*cfg));

    /* Levels and their widths. */
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
        read_block_types(&c, cfg);
        sdxs_cfg_ints(&c, "layers_per_block", cfg->layers_per_block, n, 2, 1,
                      SDXS_UNET_MAX_RESNETS - 1);
        /* The legacy meaning: attention_head_dim holds the number of heads. */
        sdxs_cfg_ints(&c, "attention_head_dim", cfg->heads, n, 8, 1, 1024);
        sdxs_cfg_ints(&c, "cross_attention_dim", cfg->cross_dim, n, 1280, 1, 16384);
        sdxs_cfg_ints(&c, "transformer_layers_per_block", cfg->tlayers, n, 1, 1,
                      SDXS_UNET_MAX_TLAYERS);
        /* (UNetMidBlock2DCrossAttn ignores only_cross_attention: its attention is plain.) */
        sdxs_cfg_bools(&c, "only_cross_attention", cfg->only_cross, n, false);
    }

    /* Everything else. */
    mid = sdxs_cfg_is_null(&c, "mid_block_type")
              ? NULL
              : sdxs_cfg_str(&c, "mid_block_type", "UNetMidBlock2DCrossAttn");
    cfg->mid_block = mid != NULL;
    if (mid && strcmp(mid, "UNetMidBlock2DCrossAttn"))
        sdxs_cfg_reject(&c, "mid_block_type", "'%s' is not supported (UNetMidBlock2DCrossAttn "
                        "or null)", mid);
    cfg->in_channels = sdxs_cfg_int(&c, "in_channels", 4, 1, 64);
    cfg->out_channels = sdxs_cfg_int(&c, "out_channels", 4, 1, 64);
    cfg->sample_size = sdxs_cfg_int(&c, "sample_size", 64, 1, 1024);
    cfg->linear_proj = sdxs_cfg_bool(&c, "use_linear_projection", false);
    cfg->flip_sin_to_cos = sdxs_cfg_bool(&c, "flip_sin_to_cos", true);
    cfg->freq_shift = (float)sdxs_cfg_num(&c, "freq_shift", 0.0);
    cfg->groups = sdxs_cfg_int(&c, "norm_num_groups", 32, 1, 1024);
    cfg->eps = (float)sdxs_cfg_num(&c, "norm_eps", 1e-5);
    cfg->downsample_padding = 1;
    cfg->conv_in_kernel = sdxs_cfg_int(&c, "conv_in_kernel", 3, 1, 15);
    cfg->conv_out_kernel = sdxs_cfg_int(&c, "conv_out_kernel", 3, 1, 15);
    (void)sdxs_cfg_bool(&c, "upcast_attention", false); /* no effect in fp32; type-checked */
    reject_unless_default(&c);
    if (c.status == SDXS_OK && (cfg->conv_in_kernel % 2 == 0 || cfg->conv_out_kernel % 2 == 0))
        sdxs_cfg_reject(&c, cfg->conv_in_kernel % 2 == 0 ? "conv_in_kernel" : "conv_out_kernel",
                        "only odd kernel sizes are supported");

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

int sdxs_unet_skip_count(const sdxs_unet_config *cfg)
{
    int n = 1;
    for (int i = 0; i < cfg->levels; i++)
        n += cfg->layers_per_block[i] + (i < cfg->levels - 1 ? 1 : 0);
    return n;
}

int sdxs_unet_latent_multiple(const sdxs_unet_config *cfg) { return 1 << (cfg->levels - 1); }

/* ---- building ---- */

sdxs_status sdxs_resnet_build(sdxs_resnet *r, sdxs_loader *ld, const char *prefix, int cin,
                              int cout, int temb_dim, int groups, float eps, sdxs_error *err)
{
    char n[256];
    memset(r, 0, sizeof(*r));
    NAME(n, "%s.norm1", prefix);
    TRY(sdxs_loader_norm(ld, n, cin, groups, eps, &r->norm1, err));
    NAME(n, "%s.conv1", prefix);
    TRY(sdxs_loader_conv(ld, n, cin, cout, 3, 1, 1, true, &r->conv1, err));
    NAME(n, "%s.time_emb_proj", prefix);
    TRY(sdxs_loader_linear(ld, n, temb_dim, cout, true, &r->time_proj, err));
    NAME(n, "%s.norm2", prefix);
    TRY(sdxs_loader_norm(ld, n, cout, groups, eps, &r->norm2, err));
    NAME(n, "%s.conv2", prefix);
    TRY(sdxs_loader_conv(ld, n, cout, cout, 3, 1, 1, true, &r->conv2, err));
    if (cin != cout) {
        NAME(n, "%s.conv_shortcut", prefix);
        TRY(sdxs_loader_conv(ld, n, cin, cout, 1, 1, 0, true, &r->shortcut, err));
    }
    return SDXS_OK;
}

static sdxs_status attention_build(sdxs_attention *a, sdxs_loader *ld, const char *prefix,
                                   int dim, int heads, int cross_dim, sdxs_error *err)
{
    char q[256], k[256], v[256];
    const char *names[3] = {q, k, v};

    memset(a, 0, sizeof(*a));
    a->heads = heads;
    a->cross = cross_dim > 0;
    NAME(q, "%s.to_q", prefix);
    NAME(k, "%s.to_k", prefix);
    NAME(v, "%s.to_v", prefix);
    if (a->cross) {
        TRY(sdxs_loader_linear(ld, q, dim, dim, false, &a->q, err));
        TRY(sdxs_loader_linear_stack(ld, names + 1, 2, cross_dim, dim, false, &a->kv, err));
    } else {
        TRY(sdxs_loader_linear_stack(ld, names, 3, dim, dim, false, &a->qkv, err));
    }
    NAME(q, "%s.to_out.0", prefix);
    return sdxs_loader_linear(ld, q, dim, dim, true, &a->out, err);
}

sdxs_status sdxs_transformer_build(sdxs_transformer *t, sdxs_loader *ld, const char *prefix,
                                   const sdxs_level_spec *spec, sdxs_error *err)
{
    int d = spec->channels;
    char n[256];

    memset(t, 0, sizeof(*t));
    t->linear_proj = spec->linear_proj;
    t->layers = spec->tlayers;
    NAME(n, "%s.norm", prefix);
    TRY(sdxs_loader_norm(ld, n, d, spec->groups, 1e-6f, &t->norm, err));
    NAME(n, "%s.proj_in", prefix);
    TRY(t->linear_proj ? sdxs_loader_linear(ld, n, d, d, true, &t->proj_in_lin, err)
                       : sdxs_loader_conv(ld, n, d, d, 1, 1, 0, true, &t->proj_in_conv, err));

    for (int i = 0; i < t->layers; i++) {
        sdxs_tblock *b = &t->block[i];
        char p[200];
        NAME(p, "%s.transformer_blocks.%d", prefix, i);
        NAME(n, "%s.norm1", p);
        TRY(sdxs_loader_norm(ld, n, d, 0, 1e-5f, &b->norm1, err));
        NAME(n, "%s.attn1", p);
        TRY(attention_build(&b->attn1, ld, n, d, spec->heads,
                            spec->only_cross ? spec->cross_dim : 0, err));
        NAME(n, "%s.norm2", p);
        TRY(sdxs_loader_norm(ld, n, d, 0, 1e-5f, &b->norm2, err));
        NAME(n, "%s.attn2", p);
        TRY(attention_build(&b->attn2, ld, n, d, spec->heads, spec->cross_dim, err));
        NAME(n, "%s.norm3", p);
        TRY(sdxs_loader_norm(ld, n, d, 0, 1e-5f, &b->norm3, err));
        NAME(n, "%s.ff.net.0.proj", p);
        TRY(sdxs_loader_linear(ld, n, d, 8 * d, true, &b->ff_in, err));
        NAME(n, "%s.ff.net.2", p);
        TRY(sdxs_loader_linear(ld, n, 4 * d, d, true, &b->ff_out, err));
    }

    NAME(n, "%s.proj_out", prefix);
    return t->linear_proj ? sdxs_loader_linear(ld, n, d, d, true, &t->proj_out_lin, err)
                          : sdxs_loader_conv(ld, n, d, d, 1, 1, 0, true, &t->proj_out_conv, err);
}

sdxs_status sdxs_down_level_build(sdxs_down_level *lv, sdxs_loader *ld, const char *prefix,
                                  int cin, int resnets, bool downsample, int pad,
                                  const sdxs_level_spec *spec, sdxs_error *err)
{
    char n[256];
    memset(lv, 0, sizeof(*lv));
    lv->resnets = resnets;
    lv->attn = spec->attn;
    lv->downsample = downsample;
    for (int j = 0; j < resnets; j++) {
        NAME(n, "%s.resnets.%d", prefix, j);
        TRY(sdxs_resnet_build(&lv->res[j], ld, n, j == 0 ? cin : spec->channels, spec->channels,
                              spec->temb_dim, spec->groups, spec->eps, err));
        if (spec->attn) {
            NAME(n, "%s.attentions.%d", prefix, j);
            TRY(sdxs_transformer_build(&lv->tr[j], ld, n, spec, err));
        }
    }
    if (downsample) {
        NAME(n, "%s.downsamplers.0.conv", prefix);
        TRY(sdxs_loader_conv(ld, n, spec->channels, spec->channels, 3, 2, pad, true, &lv->down,
                             err));
    }
    return SDXS_OK;
}

sdxs_status sdxs_mid_block_build(sdxs_mid_block *mb, sdxs_loader *ld, const char *prefix,
                                 const sdxs_level_spec *spec, sdxs_error *err)
{
    char n[256];
    int c = spec->channels;
    NAME(n, "%s.resnets.0", prefix);
    TRY(sdxs_resnet_build(&mb->res[0], ld, n, c, c, spec->temb_dim, spec->groups, spec->eps,
                          err));
    NAME(n, "%s.attentions.0", prefix);
    TRY(sdxs_transformer_build(&mb->tr, ld, n, spec, err));
    NAME(n, "%s.resnets.1", prefix);
    return sdxs_resnet_build(&mb->res[1], ld, n, c, c, spec->temb_dim, spec->groups, spec->eps,
                             err);
}

static sdxs_level_spec level_spec(const sdxs_unet_config *cfg, int level, bool attn)
{
    sdxs_level_spec s;
    s.channels = cfg->channels[level];
    s.heads = cfg->heads[level];
    s.cross_dim = cfg->cross_dim[level];
    s.tlayers = cfg->tlayers[level];
    s.temb_dim = cfg->temb_dim;
    s.groups = cfg->groups;
    s.eps = cfg->eps;
    s.attn = attn;
    s.only_cross = cfg->only_cross[level];
    s.linear_proj = cfg->linear_proj;
    return s;
}

sdxs_status sdxs_unet_build(sdxs_unet *m, sdxs_loader *ld, sdxs_error *err)
{
    const sdxs_unet_config *cfg = &m->cfg;
    int levels = cfg->levels, c0 = cfg->channels[0];
    char n[128];

    TRY(sdxs_loader_conv(ld, "conv_in", cfg->in_channels, c0, cfg->conv_in_kernel, 1,
                         (cfg->conv_in_kernel - 1) / 2, true, &m->conv_in, err));
    TRY(sdxs_loader_linear(ld, "time_embedding.linear_1", c0, cfg->temb_dim, true, &m->time1,
                           err));
    TRY(sdxs_loader_linear(ld, "time_embedding.linear_2", cfg->temb_dim, cfg->temb_dim, true,
                           &m->time2, err));

    /* Down levels: each takes the previous level's width. */
    for (int i = 0; i < levels; i++) {
        sdxs_level_spec s = level_spec(cfg, i, cfg->down_attn[i]);
        NAME(n, "down_blocks.%d", i);
        TRY(sdxs_down_level_build(&m->down[i], ld, n, i ? cfg->channels[i - 1] : c0,
                                  cfg->layers_per_block[i], i < levels - 1,
                                  cfg->downsample_padding, &s, err));
    }
    if (cfg->mid_block) {
        sdxs_level_spec s = level_spec(cfg, levels - 1, true);
        s.only_cross = false;
        TRY(sdxs_mid_block_build(&m->mid, ld, "mid_block", &s, err));
    }

    /* Up levels, deepest first: resnet j reads the previous output (or its own width) plus one
     * skip connection, whose width is the level below's for the last resnet. */
    for (int i = 0; i < levels; i++) {
        int lv = levels - 1 - i; /* the matching down level */
        int out = cfg->channels[lv];
        int prev = i ? cfg->channels[lv + 1] : out;
        int in = cfg->channels[lv > 0 ? lv - 1 : 0];
        sdxs_up_level *up = &m->up[i];
        sdxs_level_spec s = level_spec(cfg, lv, cfg->up_attn[i]);

        memset(up, 0, sizeof(*up));
        up->resnets = cfg->layers_per_block[lv] + 1;
        up->attn = cfg->up_attn[i];
        up->upsample = i < levels - 1;
        for (int j = 0; j < up->resnets; j++) {
            int skip = j == up->resnets - 1 ? in : out;
            int rin = j == 0 ? prev : out;
            NAME(n, "up_blocks.%d.resnets.%d", i, j);
            TRY(sdxs_resnet_build(&up->res[j], ld, n, rin + skip, out, cfg->temb_dim, cfg->groups,
                                  cfg->eps, err));
            if (up->attn) {
                NAME(n, "up_blocks.%d.attentions.%d", i, j);
                TRY(sdxs_transformer_build(&up->tr[j], ld, n, &s, err));
            }
        }
        if (up->upsample) {
            NAME(n, "up_blocks.%d.upsamplers.0.conv", i);
            TRY(sdxs_loader_conv(ld, n, out, out, 3, 1, 1, true, &up->up, err));
        }
    }

    TRY(sdxs_loader_norm(ld, "conv_norm_out", c0, cfg->groups, cfg->eps, &m->norm_out, err));
    return sdxs_loader_conv(ld, "conv_out", c0, cfg->out_channels, cfg->conv_out_kernel, 1,
                            (cfg->conv_out_kernel - 1) / 2, true, &m->conv_out, err);
}

/* ---- forward ---- */

sdxs_tensor *sdxs_unet_time_embedding(sdxs_exec *e, const sdxs_linear *l1, const sdxs_linear *l2,
                                      const float *timesteps, int64_t n, int dim, bool flip,
                                      float shift)
{
    sdxs_tensor *t = sdxs_op_timestep_embedding(e, timesteps, n, dim, flip, shift); /* (N, C0) */
    sdxs_tensor *h = sdxs_op_linear(e, t, l1, NULL, SDXS_ACT_SILU);
    sdxs_tensor *emb;
    sdxs_release(e, t);
    emb = sdxs_op_linear(e, h, l2, NULL, SDXS_ACT_NONE); /* (N, T) */
    sdxs_release(e, h);
    /* Every resnet applies SiLU to the embedding before its projection: do it once. */
    h = sdxs_op_axpby(e, 1.0f, emb, 0.0f, NULL, SDXS_ACT_SILU);
    sdxs_release(e, emb);
    return h;
}

sdxs_tensor *sdxs_resnet_forward(sdxs_exec *e, const sdxs_resnet *r, const sdxs_tensor *x,
                                 const sdxs_tensor *temb_act)
{
    sdxs_tensor *h, *t, *h2, *sc, *out;

    /* h = conv1(silu(norm1(x))) + time_proj(silu(temb)) per channel. */
    h = sdxs_op_group_norm(e, x, &r->norm1, SDXS_ACT_SILU);
    t = sdxs_op_linear(e, temb_act, &r->time_proj, NULL, SDXS_ACT_NONE); /* (N, C_out) */
    h2 = sdxs_op_conv2d(e, h, &r->conv1, t, NULL, SDXS_ACT_NONE);
    sdxs_release(e, h);
    sdxs_release(e, t);

    /* out = conv2(silu(norm2(h))) + shortcut(x). */
    h = sdxs_op_group_norm(e, h2, &r->norm2, SDXS_ACT_SILU);
    sdxs_release(e, h2);
    sc = r->shortcut.weight ? sdxs_op_conv2d(e, x, &r->shortcut, NULL, NULL, SDXS_ACT_NONE)
                            : (sdxs_tensor *)x;
    out = sdxs_op_conv2d(e, h, &r->conv2, NULL, sc, SDXS_ACT_NONE);
    sdxs_release(e, h);
    if (sc != x)
        sdxs_release(e, sc);
    return out;
}

/* attn(x) + residual, for tokens x (N, HW, D) and text context (N, L, Dc). */
static sdxs_tensor *attention_forward(sdxs_exec *e, const sdxs_attention *a,
                                      const sdxs_tensor *x, const sdxs_tensor *context,
                                      const sdxs_tensor *residual)
{
    int64_t d = a->out.din;
    sdxs_tensor *o, *y;

    if (a->cross) {
        sdxs_tensor *q = sdxs_op_linear(e, x, &a->q, NULL, SDXS_ACT_NONE);
        sdxs_tensor *kv = sdxs_op_linear(e, context, &a->kv, NULL, SDXS_ACT_NONE); /* (N,L,2D) */
        o = sdxs_op_attention(e, (sdxs_cols){q, 0, d}, (sdxs_cols){kv, 0, d},
                              (sdxs_cols){kv, d, d}, a->heads, false);
        sdxs_release(e, q);
        sdxs_release(e, kv);
    } else {
        sdxs_tensor *qkv = sdxs_op_linear(e, x, &a->qkv, NULL, SDXS_ACT_NONE); /* (N,HW,3D) */
        o = sdxs_op_attention(e, (sdxs_cols){qkv, 0, d}, (sdxs_cols){qkv, d, d},
                              (sdxs_cols){qkv, 2 * d, d}, a->heads, false);
        sdxs_release(e, qkv);
    }
    y = sdxs_op_linear(e, o, &a->out, residual, SDXS_ACT_NONE);
    sdxs_release(e, o);
    return y;
}

sdxs_tensor *sdxs_transformer_forward(sdxs_exec *e, const sdxs_transformer *t,
                                      const sdxs_tensor *x, const sdxs_tensor *context)
{
    int64_t h = sdxs_tensor_dim(x, 2), w = sdxs_tensor_dim(x, 3);
    sdxs_tensor *n, *tok, *u, *out;

    /* Group norm, then the input projection, on the image or on its tokens. */
    n = sdxs_op_group_norm(e, x, &t->norm, SDXS_ACT_NONE);
    if (t->linear_proj) {
        u = sdxs_op_image_to_tokens(e, n);
        tok = sdxs_op_linear(e, u, &t->proj_in_lin, NULL, SDXS_ACT_NONE);
        sdxs_release(e, u);
    } else {
        u = sdxs_op_conv2d(e, n, &t->proj_in_conv, NULL, NULL, SDXS_ACT_NONE);
        tok = sdxs_op_image_to_tokens(e, u);
        sdxs_release(e, u);
    }
    sdxs_release(e, n);

    /* Each block: attention (cross when only_cross), cross-attention, GEGLU feed-forward, each
     * pre-norm with its residual. */
    for (int i = 0; i < t->layers; i++) {
        const sdxs_tblock *b = &t->block[i];
        sdxs_tensor *a, *g, *f;

        n = sdxs_op_layer_norm(e, tok, &b->norm1);
        a = attention_forward(e, &b->attn1, n, context, tok);
        sdxs_release(e, n);
        sdxs_release(e, tok);

        n = sdxs_op_layer_norm(e, a, &b->norm2);
        tok = attention_forward(e, &b->attn2, n, context, a);
        sdxs_release(e, n);
        sdxs_release(e, a);

        n = sdxs_op_layer_norm(e, tok, &b->norm3);
        g = sdxs_op_linear(e, n, &b->ff_in, NULL, SDXS_ACT_NONE);
        sdxs_release(e, n);
        f = sdxs_op_geglu(e, g);
        sdxs_release(e, g);
        a = sdxs_op_linear(e, f, &b->ff_out, tok, SDXS_ACT_NONE);
        sdxs_release(e, f);
        sdxs_release(e, tok);
        tok = a;
    }

    /* The output projection, back to an image, plus the block's input. */
    if (t->linear_proj) {
        u = sdxs_op_linear(e, tok, &t->proj_out_lin, NULL, SDXS_ACT_NONE);
        out = sdxs_op_tokens_to_image(e, u, h, w, x);
    } else {
        u = sdxs_op_tokens_to_image(e, tok, h, w, NULL);
        out = sdxs_op_conv2d(e, u, &t->proj_out_conv, NULL, x, SDXS_ACT_NONE);
    }
    sdxs_release(e, u);
    sdxs_release(e, tok);
    return out;
}

sdxs_tensor *sdxs_down_level_forward(sdxs_exec *e, const sdxs_down_level *lv,
                                     const sdxs_tensor *x, const sdxs_tensor *temb_act,
                                     const sdxs_tensor *context, sdxs_tensor **skips,
                                     int *nskips)
{
    const sdxs_tensor *h = x;
    for (int j = 0; j < lv->resnets; j++) {
        sdxs_tensor *r = sdxs_resnet_forward(e, &lv->res[j], h, temb_act);
        if (lv->attn) {
            sdxs_tensor *a = sdxs_transformer_forward(e, &lv->tr[j], r, context);
            sdxs_release(e, r);
            r = a;
        }
        skips[(*nskips)++] = r;
        h = r;
    }
    if (lv->downsample) {
        sdxs_tensor *d = sdxs_op_conv2d(e, h, &lv->down, NULL, NULL, SDXS_ACT_NONE);
        skips[(*nskips)++] = d;
        h = d;
    }
    return (sdxs_tensor *)h;
}

sdxs_tensor *sdxs_mid_block_forward(sdxs_exec *e, const sdxs_mid_block *mb, const sdxs_tensor *x,
                                    const sdxs_tensor *temb_act, const sdxs_tensor *context)
{
    sdxs_tensor *a = sdxs_resnet_forward(e, &mb->res[0], x, temb_act);
    sdxs_tensor *b = sdxs_transformer_forward(e, &mb->tr, a, context);
    sdxs_release(e, a);
    a = sdxs_resnet_forward(e, &mb->res[1], b, temb_act);
    sdxs_release(e, b);
    return a;
}

sdxs_tensor *sdxs_unet_forward(sdxs_exec *e, const sdxs_unet *m, const sdxs_tensor *sample,
                               const float *timesteps, const sdxs_tensor *context,
                               const sdxs_unet_residuals *res)
{
    const sdxs_unet_config *cfg = &m->cfg;
    sdxs_tensor *skips[SDXS_UNET_MAX_SKIPS];
    int nskips = 0;
    bool h_is_skip = true; /* h is skips[nskips - 1] itself */
    sdxs_tensor *temb, *h, *t;

    temb = sdxs_unet_time_embedding(e, &m->time1, &m->time2, timesteps,
                                    sdxs_tensor_dim(sample, 0), cfg->channels[0],
                                    cfg->flip_sin_to_cos, cfg->freq_shift);

    /* Down: conv_in, then each level; every intermediate output is kept as a skip. */
    h = sdxs_op_conv2d(e, sample, &m->conv_in, NULL, NULL, SDXS_ACT_NONE);
    skips[nskips++] = h;
    for (int i = 0; i < cfg->levels; i++)
        h = sdxs_down_level_forward(e, &m->down[i], h, temb, context, skips, &nskips);

    /* ControlNet residuals join every skip connection. The last level's output goes on to the
     * middle without its residual, as in diffusers, so it is kept apart from its skip. */
    if (res) {
        SDXS_ASSERT(res->count == nskips);
        for (int i = 0; i < nskips; i++) {
            t = sdxs_op_axpby(e, 1.0f, skips[i], 1.0f, res->down[i], SDXS_ACT_NONE);
            if (skips[i] != h)
                sdxs_release(e, skips[i]);
            skips[i] = t;
        }
        h_is_skip = false;
    }

    /* Middle: the mid block if any, then the ControlNet's mid residual even without one. */
    if (cfg->mid_block) {
        t = sdxs_mid_block_forward(e, &m->mid, h, temb, context);
        if (!h_is_skip)
            sdxs_release(e, h);
        h = t;
        h_is_skip = false;
    }
    if (res && res->mid) {
        t = sdxs_op_axpby(e, 1.0f, h, 1.0f, res->mid, SDXS_ACT_NONE);
        if (!h_is_skip)
            sdxs_release(e, h);
        h = t;
        h_is_skip = false;
    }
    /* When h is still the last skip, the first up resnet reads it as both of its inputs, and it
     * is released once. */

    /* Up: each level concatenates skips (last first) before each resnet. */
    for (int i = 0; i < cfg->levels; i++) {
        const sdxs_up_level *up = &m->up[i];
        for (int j = 0; j < up->resnets; j++) {
            sdxs_tensor *skip = skips[--nskips];
            sdxs_tensor *cat = sdxs_op_concat_channels(e, h, skip);
            sdxs_tensor *r;
            if (h != skip)
                sdxs_release(e, h);
            sdxs_release(e, skip);
            r = sdxs_resnet_forward(e, &up->res[j], cat, temb);
            sdxs_release(e, cat);
            if (up->attn) {
                sdxs_tensor *a = sdxs_transformer_forward(e, &up->tr[j], r, context);
                sdxs_release(e, r);
                r = a;
            }
            h = r;
        }
        if (up->upsample) {
            sdxs_tensor *u = sdxs_op_upsample2x(e, h);
            sdxs_release(e, h);
            h = sdxs_op_conv2d(e, u, &up->up, NULL, NULL, SDXS_ACT_NONE);
            sdxs_release(e, u);
        }
    }
    sdxs_release(e, temb);

    /* Out: norm, SiLU, conv. */
    t = sdxs_op_group_norm(e, h, &m->norm_out, SDXS_ACT_SILU);
    sdxs_release(e, h);
    h = sdxs_op_conv2d(e, t, &m->conv_out, NULL, NULL, SDXS_ACT_NONE);
    sdxs_release(e, t);
    return h;
}
