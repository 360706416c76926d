/* scheduler.h: the one scheduler step of a one-step model, as a handful of scalars.
 *
 * sdxs_scheduler_load reads scheduler/scheduler_config.json with diffusers 0.27.2's defaults for
 * absent keys; sdxs_scheduler_plan turns it, for one strength, into the timestep the U-Net gets and
 * the elementwise coefficients that start the latent, scale the U-Net input and finish the step.
 * The coefficients are built from the scalars diffusers computes (in float32, as its 0-dim
 * tensors do), combined in double where diffusers applies them one after the other. Applying a
 * plan in float32 gives diffusers' set_timesteps / add_noise / scale_model_input results to
 * float32 rounding, and its step() result within about 2e-7 relative of the exact value of
 * diffusers' step (diffusers' own float32 evaluation of that step can be further off;
 * tests/test_scheduler.py measures both and allows 1e-6).
 *
 * Supported: EulerDiscreteScheduler, EulerAncestralDiscreteScheduler, DEISMultistepScheduler,
 * DDIMScheduler, LCMScheduler; timestep_spacing linspace / leading / trailing with steps_offset;
 * beta_schedule linear / scaled_linear / squaredcos_cap_v2 or trained_betas;
 * rescale_betas_zero_snr; prediction_type epsilon / v_prediction / sample where the class has it;
 * DDIM's and LCM's clip_sample; Euler's timestep_type "continuous". Rejected with an error naming
 * the file and the key: use_karras_sigmas, Euler's interpolation_type "log_linear" and
 * thresholding (their one-step results are degenerate or need a whole-image quantile), and any
 * other class or value.
 *
 * Strength (image-to-image). diffusers' own image-to-image pipeline cannot run a one-step model
 * below strength 1 (it keeps int(1 * strength) = 0 steps), so strength is defined here as follows.
 * Let t1 be the timestep the scheduler gives text-to-image with num_inference_steps = 1, as
 * diffusers computes it: T - 1 with trailing spacing (T = num_train_timesteps); with linspace 0
 * (Euler, DDIM) or T - 1 (DEIS); with leading steps_offset (Euler, DDIM) or T / 2 + steps_offset
 * (DEIS); for LCM (T / original_inference_steps) * original_inference_steps - 1 whatever the
 * spacing. For strength s in (0, 1] the step runs from the training timestep
 *
 *     t(s) = floor(s * (t1 + 1) + 1/2) - 1,
 *
 * i.e. the scheduler is used exactly as diffusers would use it with the one-step schedule [t(s)]:
 * the init latent is noised by the scheduler's add_noise(clean, noise, t(s)), the U-Net gets t(s)
 * (Euler's continuous timestep for it) and scale_model_input's scaling, and step() goes from t(s)
 * to where the scheduler's last step goes (sigma 0 for Euler, the timestep-0 level for DEIS,
 * alpha 1 or alphas_cumprod[0] for DDIM, LCM's denoised sample).
 * s = 1 gives t1 for every spacing, so strength 1 with no init image is text-to-image exactly;
 * for trailing spacing (t1 = T - 1, both SDXS models) t(s) = round(s T) - 1, which is also the
 * first timestep diffusers' image-to-image reaches with trailing spacing as the step count grows.
 * s = 0, or t(s) < 0, leaves the init latent unchanged and the U-Net is not run.
 */
#ifndef SDXS_SCHEDULER_H
#define SDXS_SCHEDULER_H

#include <stdbool.h>
#include <stddef.h>

#include "engine/util.h"

#define SDXS_SCHED_MAX_TRAIN_STEPS 10000 /* num_train_timesteps cap (diffusers models use 1000) */

typedef enum sdxs_sched_kind {
    SDXS_SCHED_EULER = 0,
    SDXS_SCHED_EULER_ANCESTRAL,
    SDXS_SCHED_DEIS,
    SDXS_SCHED_DDIM,
    SDXS_SCHED_LCM,
} sdxs_sched_kind;

typedef enum sdxs_sched_prediction {
    SDXS_PREDICT_EPSILON = 0,
    SDXS_PREDICT_V,
    SDXS_PREDICT_SAMPLE,
} sdxs_sched_prediction;

typedef enum sdxs_sched_spacing {
    SDXS_SPACING_LINSPACE = 0,
    SDXS_SPACING_LEADING,
    SDXS_SPACING_TRAILING,
} sdxs_sched_spacing;

/* The parsed configuration and the noise schedule it implies. */
typedef struct sdxs_scheduler {
    sdxs_sched_kind kind;
    char class_name[48];
    char path[256]; /* the configuration file, for messages */
    int num_train_timesteps; /* T */
    sdxs_sched_prediction prediction;
    sdxs_sched_spacing spacing;
    int steps_offset;
    bool continuous_timestep; /* Euler: timestep_type "continuous" with v_prediction */
    bool set_alpha_to_one;    /* DDIM: the step ends at alpha 1, not alphas_cumprod[0] */
    bool clip_sample;         /* DDIM, LCM: clamp the predicted clean latent */
    float clip_sample_range;
    int original_inference_steps; /* LCM */
    float timestep_scaling;       /* LCM */
    int text_timestep;            /* t1: the single timestep of text-to-image */
    float alphas_cumprod[SDXS_SCHED_MAX_TRAIN_STEPS]; /* (T) float32, as diffusers holds it */
} sdxs_scheduler;

/* One step. Latents, noise and eps are elementwise-compatible float32 arrays. */
typedef struct sdxs_step_plan {
    bool skip_unet;  /* strength 0: the result is the init latent; nothing else applies */
    int train_step;  /* t(s), the index into the training schedule */
    float timestep;  /* the timestep the U-Net is given (as diffusers passes it) */
    float init_sigma; /* text-to-image: starting latent = noise * init_sigma */
    float add_x, add_noise; /* image-to-image: start = add_x * clean + add_noise * noise */
    float in_div;    /* U-Net input = latent / in_div (scale_model_input) */
    /* The step's result: out_x * latent + out_eps * eps, plus, only when clip > 0,
     * out_x0 * clamp(x0_x * latent + x0_eps * eps, -clip, clip) (DDIM/LCM clip_sample). */
    float out_x, out_eps;
    float clip;
    float x0_x, x0_eps, out_x0;
} sdxs_step_plan;

/* Reads a scheduler_config.json. Errors are SDXS_ERR_MODEL with a message naming the file and
 * the key; the text-to-image plan is checked too, so a loaded scheduler always plans strength 1. */
sdxs_status sdxs_scheduler_load(const char *config_path, sdxs_scheduler *out, sdxs_error *err);

/* The plan for strength in [0, 1] (1: text-to-image, or image-to-image at full strength).
 * SDXS_ERR_INVALID for a strength outside [0, 1]; SDXS_ERR_MODEL when the configuration gives a
 * non-finite coefficient at that timestep (e.g. a zero terminal SNR with epsilon prediction). */
sdxs_status sdxs_scheduler_plan(const sdxs_scheduler *s, double strength, sdxs_step_plan *out,
                                sdxs_error *err);

/* Host references of the three elementwise stages, what a backend's kernels must compute: the
 * starting latent (clean NULL: text-to-image), the U-Net input, and the step's result. Every
 * array is a latent batch (N, 4, h, w) float32 flattened to n elements; out may alias an input. */
void sdxs_scheduler_start(const sdxs_step_plan *p, size_t n, const float *noise,
                          const float *clean, float *out);
void sdxs_scheduler_model_input(const sdxs_step_plan *p, size_t n, const float *latent,
                                float *out);
void sdxs_scheduler_finish(const sdxs_step_plan *p, size_t n, const float *latent,
                           const float *eps, float *out);

#endif /* SDXS_SCHEDULER_H */
