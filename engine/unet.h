/* unet.h: diffusers' UNet2DConditionModel as the SDXS family uses it, configured from
 * unet/config.json, and the blocks it shares with the ControlNet (resnets, transformers,
 * down-sampling levels).
 *
 * Shapes: N batch, C channels, H/W latent height and width, L text tokens, Dc text width.
 */
#ifndef SDXS_UNET_H
#define SDXS_UNET_H

#include "engine/config.h"

#define SDXS_UNET_MAX_LEVELS 6
#define SDXS_UNET_MAX_RESNETS 4 /* per level: layers_per_block (+ 1 going up) */
#define SDXS_UNET_MAX_TLAYERS 10 /* transformer blocks in one Transformer2D */
#define SDXS_UNET_MAX_SKIPS (1 + SDXS_UNET_MAX_LEVELS * (SDXS_UNET_MAX_RESNETS + 1))

/* ---- blocks ---- */

typedef struct sdxs_resnet {
    sdxs_norm norm1, norm2;
    sdxs_conv2d conv1, conv2, shortcut; /* shortcut.weight is NULL when C_in == C_out */
    sdxs_linear time_proj;              /* (C_out, temb) */
} sdxs_resnet;

/* Attention as diffusers' Attention: q from the hidden states, k and v from the hidden states
 * (self) or the text (cross), stacked into one projection for speed. */
typedef struct sdxs_attention {
    bool cross;
    int heads;
    sdxs_linear qkv; /* self: (3 D, D) */
    sdxs_linear q;   /* cross: (D, D) */
    sdxs_linear kv;  /* cross: (2 D, Dc) */
    sdxs_linear out; /* (D, D) with bias */
} sdxs_attention;

typedef struct sdxs_tblock {
    sdxs_norm norm1, norm2, norm3;
    sdxs_attention attn1, attn2;
    sdxs_linear ff_in, ff_out; /* GEGLU: (8 D, D) then (D, 4 D) */
} sdxs_tblock;

typedef struct sdxs_transformer {
    sdxs_norm norm;
    bool linear_proj;
    sdxs_linear proj_in_lin, proj_out_lin;
    sdxs_conv2d proj_in_conv, proj_out_conv;
    int layers;
    sdxs_tblock block[SDXS_UNET_MAX_TLAYERS];
} sdxs_transformer;

/* The settings one level's blocks are built with. */
typedef struct sdxs_level_spec {
    int channels, heads, cross_dim, tlayers, temb_dim, groups;
    float eps;
    bool attn, only_cross, linear_proj;
} sdxs_level_spec;

typedef struct sdxs_down_level {
    int resnets;
    bool attn, downsample;
    sdxs_resnet res[SDXS_UNET_MAX_RESNETS];
    sdxs_transformer tr[SDXS_UNET_MAX_RESNETS];
    sdxs_conv2d down;
} sdxs_down_level;

typedef struct sdxs_up_level {
    int resnets;
    bool attn, upsample;
    sdxs_resnet res[SDXS_UNET_MAX_RESNETS];
    sdxs_transformer tr[SDXS_UNET_MAX_RESNETS];
    sdxs_conv2d up;
} sdxs_up_level;

typedef struct sdxs_mid_block {
    sdxs_resnet res[2];
    sdxs_transformer tr;
} sdxs_mid_block;

/* ---- the model ---- */

typedef struct sdxs_unet_config {
    int in_channels, out_channels, sample_size;
    int levels;
    int channels[SDXS_UNET_MAX_LEVELS];
    bool down_attn[SDXS_UNET_MAX_LEVELS];
    bool up_attn[SDXS_UNET_MAX_LEVELS]; /* indexed by up block (deepest first) */
    int layers_per_block[SDXS_UNET_MAX_LEVELS];
    int heads[SDXS_UNET_MAX_LEVELS];
    int cross_dim[SDXS_UNET_MAX_LEVELS];
    int tlayers[SDXS_UNET_MAX_LEVELS];
    bool only_cross[SDXS_UNET_MAX_LEVELS];
    bool mid_block;
    bool linear_proj, center_input, flip_sin_to_cos;
    int groups, downsample_padding, conv_in_kernel, conv_out_kernel;
    float eps, freq_shift;
    int temb_dim; /* 4 x channels[0] */
} sdxs_unet_config;

typedef struct sdxs_unet {
    sdxs_unet_config cfg;
    sdxs_conv2d conv_in, conv_out;
    sdxs_linear time1, time2;
    sdxs_down_level down[SDXS_UNET_MAX_LEVELS];
    sdxs_mid_block mid;
    sdxs_up_level up[SDXS_UNET_MAX_LEVELS];
    sdxs_norm norm_out;
} sdxs_unet;

/* Residuals a ControlNet adds: one per skip connection (conv_in's output, then each resnet and
 * down-sampler of each level), and one after the middle, already scaled. */
typedef struct sdxs_unet_residuals {
    int count;
    sdxs_tensor *down[SDXS_UNET_MAX_SKIPS];
    sdxs_tensor *mid;
} sdxs_unet_residuals;

sdxs_status sdxs_unet_config_load(const char *path, sdxs_unet_config *cfg, sdxs_error *err);
sdxs_status sdxs_unet_build(sdxs_unet *m, sdxs_loader *ld, sdxs_error *err);
/* The number of skip connections, which is how many down residuals a ControlNet must give. */
int sdxs_unet_skip_count(const sdxs_unet_config *cfg);
/* The latent side must be a multiple of this (2 to the number of down-samplers). */
int sdxs_unet_latent_multiple(const sdxs_unet_config *cfg);

/* sample (N, C_in, H, W), timesteps N host floats, context (N, L, Dc); res may be NULL.
 * Returns the prediction (N, C_out, H, W). Releases nothing it was given. */
sdxs_tensor *sdxs_unet_forward(sdxs_exec *e, const sdxs_unet *m, const sdxs_tensor *sample,
                               const float *timesteps, const sdxs_tensor *context,
                               const sdxs_unet_residuals *res);

/* ---- shared with the ControlNet ---- */

sdxs_status sdxs_resnet_build(sdxs_resnet *r, sdxs_loader *ld, const char *prefix, int cin,
                              int cout, int temb_dim, int groups, float eps, sdxs_error *err);
sdxs_status sdxs_transformer_build(sdxs_transformer *t, sdxs_loader *ld, const char *prefix,
                                   const sdxs_level_spec *spec, sdxs_error *err);
sdxs_status sdxs_down_level_build(sdxs_down_level *lv, sdxs_loader *ld, const char *prefix,
                                  int cin, int resnets, bool downsample, int pad,
                                  const sdxs_level_spec *spec, sdxs_error *err);
sdxs_status sdxs_mid_block_build(sdxs_mid_block *mb, sdxs_loader *ld, const char *prefix,
                                 const sdxs_level_spec *spec, sdxs_error *err);
/* The time embedding MLP input: sinusoidal embedding -> linear -> SiLU -> linear, then SiLU
 * (what every resnet's time projection reads). Returns (N, temb). */
sdxs_tensor *sdxs_unet_time_embedding(sdxs_exec *e, const sdxs_linear *l1, const sdxs_linear *l2,
                                      const float *timesteps, int64_t n, int dim, bool flip,
                                      float shift);
sdxs_tensor *sdxs_resnet_forward(sdxs_exec *e, const sdxs_resnet *r, const sdxs_tensor *x,
                                 const sdxs_tensor *temb_act);
sdxs_tensor *sdxs_transformer_forward(sdxs_exec *e, const sdxs_transformer *t,
                                      const sdxs_tensor *x, const sdxs_tensor *context);
/* One down level: appends each resnet (+ transformer) output and the down-sampler's output to
 * skips; returns the level's output (the last of them). */
sdxs_tensor *sdxs_down_level_forward(sdxs_exec *e, const sdxs_down_level *lv,
                                     const sdxs_tensor *x, const sdxs_tensor *temb_act,
                                     const sdxs_tensor *context, sdxs_tensor **skips,
                                     int *nskips);
sdxs_tensor *sdxs_mid_block_forward(sdxs_exec *e, const sdxs_mid_block *mb, const sdxs_tensor *x,
                                    const sdxs_tensor *temb_act, const sdxs_tensor *context);

#endif /* SDXS_UNET_H */
