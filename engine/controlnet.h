/* controlnet.h: diffusers' ControlNetModel, configured from a ControlNet folder's config.json:
 * the conditioning embedding (a small convolution stack from the control image to the first
 * U-Net width), a copy of the U-Net's down path and mid block built from the same blocks
 * (engine/unet.h), and the 1x1 "zero" convolutions whose outputs, scaled, are the residuals the
 * U-Net adds to its skip connections and after its middle.
 *
 * Shapes: N batch, C channels, H/W image size, h/w latent size (H = 8 h for SDXS), L text
 * tokens, Dc text width.
 */
#ifndef SDXS_CONTROLNET_H
#define SDXS_CONTROLNET_H

#include "engine/unet.h"

#define SDXS_CONTROLNET_MAX_EMB 8 /* entries of conditioning_embedding_out_channels */

typedef struct sdxs_controlnet_config {
    int in_channels, cond_channels;
    int levels;
    int channels[SDXS_UNET_MAX_LEVELS];
    bool down_attn[SDXS_UNET_MAX_LEVELS];
    int layers_per_block; /* one value for every level, as ControlNetModel takes it */
    int heads[SDXS_UNET_MAX_LEVELS];
    int cross_dim;
    int tlayers[SDXS_UNET_MAX_LEVELS];
    bool only_cross[SDXS_UNET_MAX_LEVELS];
    bool linear_proj, flip_sin_to_cos;
    bool bgr; /* controlnet_conditioning_channel_order "bgr": the image's channels reversed */
    int groups;
    float eps, freq_shift;
    int emb_levels; /* the embedding halves the image emb_levels - 1 times */
    int emb_channels[SDXS_CONTROLNET_MAX_EMB];
    int temb_dim; /* 4 x channels[0] */
} sdxs_controlnet_config;

typedef struct sdxs_controlnet {
    sdxs_controlnet_config cfg;
    sdxs_conv2d conv_in;
    sdxs_linear time1, time2;
    /* Conditioning embedding: emb_in, then per halving a 3x3 conv and a stride-2 conv (each
     * followed by SiLU), then emb_out to channels[0]. */
    sdxs_conv2d emb_in, emb_block[2 * (SDXS_CONTROLNET_MAX_EMB - 1)], emb_out;
    sdxs_down_level down[SDXS_UNET_MAX_LEVELS];
    sdxs_mid_block mid;
    int skips;
    sdxs_conv2d zero_down[SDXS_UNET_MAX_SKIPS], zero_mid; /* 1x1, one per residual */
} sdxs_controlnet;

sdxs_status sdxs_controlnet_config_load(const char *path, sdxs_controlnet_config *cfg,
                                        sdxs_error *err);
/* Checks that the ControlNet can feed this U-Net (same input channels, levels, widths, resnets
 * per level and text width) and that its embedding reduces images by image_downscale, the
 * factor between image and latent sides. Errors name path and the key at fault. */
sdxs_status sdxs_controlnet_check_fit(const sdxs_controlnet_config *cfg, const char *path,
                                      const sdxs_unet_config *unet, int image_downscale,
                                      sdxs_error *err);
sdxs_status sdxs_controlnet_build(sdxs_controlnet *m, sdxs_loader *ld, sdxs_error *err);

/* The residuals' shapes for a batch of n latents h x w: the down residuals in skip order, then
 * the mid residual. Returns their count (skips + 1); shapes needs SDXS_UNET_MAX_SKIPS + 1 rows. */
int sdxs_controlnet_residual_shapes(const sdxs_controlnet_config *cfg, int64_t n, int64_t h,
                                    int64_t w, int64_t (*shapes)[4]);

/* sample (N, C_in, h, w) the U-Net's own input, timesteps N host floats, context (N, L, Dc),
 * cond (N, C_cond, H, W) the control image in [0, 1]. Fills res with the residuals times scale
 * (the caller releases res->down[0..count) and res->mid). Releases nothing it was given. */
void sdxs_controlnet_forward(sdxs_exec *e, const sdxs_controlnet *m, const sdxs_tensor *sample,
                             const float *timesteps, const sdxs_tensor *context,
                             const sdxs_tensor *cond, float scale, sdxs_unet_residuals *res);

#endif /* SDXS_CONTROLNET_H */
