/* pipeline.h: sdxs_generate with optional copies of its intermediate stages, for the parity
 * tests that compare each stage with diffusers. */
#ifndef SDXS_PIPELINE_H
#define SDXS_PIPELINE_H

#include "sdxs.h"

/* The largest control_scale a request may ask for (diffusers sets no limit; the public demo
 * stays within 0 to 2). */
#define SDXS_MAX_CONTROL_SCALE 10.0f

/* Each non-NULL buffer receives that stage for the whole batch, as float32 in logical layout. */
typedef struct sdxs_debug {
    float *text;    /* (N, 77, D) text encoder output per image */
    float *latents; /* (N, C, h, w) the U-Net's input latent, before scale_model_input */
    float *eps;     /* (N, C, h, w) the U-Net's prediction */
    float *clean;   /* (N, C, h, w) the scheduler step's result */
    float *decoded; /* (N, 3, H, W) the decoder's output in [-1, 1], as diffusers returns it */
    /* The ControlNet's scaled residuals one after another, each (N, C_i, h_i, w_i), in the
     * order of sdxs_controlnet_residual_shapes (down residuals, then the mid one). */
    float *residuals;
} sdxs_debug;

sdxs_status sdxs_generate_ex(sdxs_model *model, const sdxs_request *req, sdxs_image *out,
                             sdxs_timings *timings, const sdxs_debug *debug, sdxs_error *err);

#endif /* SDXS_PIPELINE_H */
