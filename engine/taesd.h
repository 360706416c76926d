/* taesd.h: diffusers' AutoencoderTiny (TAESD), the tiny image encoder and decoder SDXS uses,
 * configured from vae/config.json. */
#ifndef SDXS_TAESD_H
#define SDXS_TAESD_H

#include "engine/config.h"

#define SDXS_TAESD_MAX_STAGES 8
#define SDXS_TAESD_MAX_BLOCKS 32 /* blocks over all stages */

typedef struct sdxs_taesd_config {
    int in_channels, out_channels, latent_channels;
    int stages; /* entries of the block lists */
    int enc_channels[SDXS_TAESD_MAX_STAGES], enc_blocks[SDXS_TAESD_MAX_STAGES];
    int dec_channels[SDXS_TAESD_MAX_STAGES], dec_blocks[SDXS_TAESD_MAX_STAGES];
    int upsampling_factor;
    float scaling_factor, latent_magnitude, latent_shift;
} sdxs_taesd_config;

/* conv, ReLU, conv, ReLU, conv, plus a skip (a bias-free 1x1 conv when widths differ), ReLU. */
typedef struct sdxs_taesd_block {
    sdxs_conv2d conv[3], skip;
} sdxs_taesd_block;

typedef struct sdxs_taesd_coder {
    sdxs_conv2d conv_first;                    /* encoder: input conv; decoder: latent conv */
    sdxs_conv2d stage_conv[SDXS_TAESD_MAX_STAGES]; /* encoder: stride-2 conv before stage i > 0;
                                                   decoder: conv after stage i's upsample */
    sdxs_taesd_block block[SDXS_TAESD_MAX_BLOCKS];
    sdxs_conv2d conv_last; /* encoder only: to the latent channels */
} sdxs_taesd_coder;

typedef struct sdxs_taesd {
    sdxs_taesd_config cfg;
    bool has_encoder, has_decoder;
    sdxs_taesd_coder enc, dec;
} sdxs_taesd;

sdxs_status sdxs_taesd_config_load(const char *path, sdxs_taesd_config *cfg, sdxs_error *err);
/* Builds the encoder and/or decoder (their parameter counts are ld->params differences). */
sdxs_status sdxs_taesd_build_encoder(sdxs_taesd *m, sdxs_loader *ld, sdxs_error *err);
sdxs_status sdxs_taesd_build_decoder(sdxs_taesd *m, sdxs_loader *ld, sdxs_error *err);
/* The factor between image and latent sides (2 per encoder stage after the first). */
int sdxs_taesd_downscale(const sdxs_taesd_config *cfg);

/* image (N, 3, H, W) in [0, 1] (EncoderTiny's own input scaling already applied) -> latents
 * (N, C_lat, H/f, W/f), multiplied by scaling_factor as the pipelines do. */
sdxs_tensor *sdxs_taesd_encode(sdxs_exec *e, const sdxs_taesd *m, const sdxs_tensor *image);
/* latents (N, C_lat, h, w) -> the decoder's last layer (N, 3, h f, w f), in [0, 1] before
 * diffusers' final "* 2 - 1" (latents are divided by scaling_factor first). */
sdxs_tensor *sdxs_taesd_decode(sdxs_exec *e, const sdxs_taesd *m, const sdxs_tensor *latents);

#endif /* SDXS_TAESD_H */
