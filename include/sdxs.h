/* sdxs.h: the public C API of the sdxs engine.
 *
 * Open a diffusers model folder once, then turn prompts (and optionally an init image or a control
 * image) into RGB images. Everything not declared here is internal to the library. Every function
 * that can fail returns an sdxs_status and, when given a non-NULL sdxs_error, fills it with a
 * one-line message and the name of the offending field.
 */
#ifndef SDXS_H
#define SDXS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SDXS_MAX_TOKENS 77 /* CLIP context length: every prompt becomes exactly this many ids */
#define SDXS_MAX_PROMPT_BYTES 4096 /* longer prompts are refused: CLIP reads 75 tokens anyway */

/* The numeric values are the exit codes of the `sdxs` executable. */
typedef enum sdxs_status {
    SDXS_OK = 0,
    SDXS_ERR_INVALID = 2, /* bad argument or request field (exit 2, HTTP 400) */
    SDXS_ERR_MODEL = 3,   /* bad model folder or input file (exit 3) */
    SDXS_ERR_RUNTIME = 4, /* backend failure, out of memory, I/O failure (exit 4, HTTP 500) */
} sdxs_status;

typedef struct sdxs_error {
    sdxs_status status;
    char param[64];    /* the field or file at fault ("width", "unet/config.json"), or "" */
    char message[512]; /* one line, no trailing newline */
} sdxs_error;

typedef enum sdxs_backend_kind {
    SDXS_BACKEND_AUTO = 0, /* CUDA when a GPU is usable, else the CPU */
    SDXS_BACKEND_CPU,
    SDXS_BACKEND_CUDA,
} sdxs_backend_kind;

typedef enum sdxs_precision {
    SDXS_PRECISION_DEFAULT = 0, /* fp32 on the CPU, fp16 on CUDA */
    SDXS_PRECISION_FP32,
    SDXS_PRECISION_BF16,
    SDXS_PRECISION_FP16,
} sdxs_precision;

typedef struct sdxs_model_options {
    sdxs_backend_kind backend;
    sdxs_precision precision;
    int threads; /* CPU worker threads; 0 means one per core */
    /* What a request must be checked against; 0 picks the defaults (128..1024 pixels a side,
     * the minimum lowered to the model's default size when that is smaller;
     * batch 8). */
    int min_side, max_side, max_batch;
    const char *controlnet_dir; /* optional ControlNet folder, NULL for none */
    /* Check the folder completely (configurations, every tensor's presence, shape and bytes, the
     * tokenizer) and count parameters, but convert no weights: what `sdxs info` needs. */
    int describe_only;
} sdxs_model_options;

typedef struct sdxs_model sdxs_model;

/* Opens a diffusers folder (model_index.json, text_encoder/, tokenizer/, unet/, vae/, scheduler/).
 * opt may be NULL for the defaults. On failure *out is NULL and err says which file and why. */
sdxs_status sdxs_model_open(const char *dir, const sdxs_model_options *opt, sdxs_model **out,
                            sdxs_error *err);
void sdxs_model_free(sdxs_model *model);

/* A human-readable description of every component (class, key configuration values and
 * parameter counts), as `sdxs info` prints it. Owned by the model. */
const char *sdxs_model_describe(const sdxs_model *model);

/* The default image size (the U-Net's sample_size times 8) and the step between allowed sizes. */
void sdxs_model_default_size(const sdxs_model *model, int *width, int *height, int *multiple);

/* Tokenizes one prompt: BOS, the byte-level BPE ids, EOS, then padding, truncated to 77. */
sdxs_status sdxs_tokenize(const sdxs_model *model, const char *prompt,
                          int32_t ids[SDXS_MAX_TOKENS], sdxs_error *err);

/* Runs the text encoder on n prompts; out holds n * 77 * hidden floats (last_hidden_state). */
sdxs_status sdxs_encode_prompts(sdxs_model *model, int n, const char *const *prompts, float *out,
                                size_t out_floats, sdxs_error *err);

/* ---- images ---- */

/* An 8-bit RGB image, rows top to bottom, pixels (H, W, 3) interleaved. */
typedef struct sdxs_image {
    int width, height;
    uint8_t *rgb;
} sdxs_image;

void sdxs_image_free(sdxs_image *image); /* frees rgb and zeroes the struct */

/* What a decoded image may be; zeros pick the defaults (8192 a side, 64 Mi pixels). */
typedef struct sdxs_image_limits {
    int max_width, max_height;
    uint64_t max_pixels;
} sdxs_image_limits;

/* Decodes PNG or JPEG (told apart by their signatures) to RGB: grey and palette images are
 * expanded, alpha is composited on white, 16-bit samples are reduced to 8. Declared dimensions are
 * checked against the limits before any pixel memory is allocated. A corrupt or truncated image is
 * SDXS_ERR_MODEL ("bad input file") with a message saying what is wrong. */
sdxs_status sdxs_image_decode(const uint8_t *bytes, size_t len, const sdxs_image_limits *limits,
                              sdxs_image *out, sdxs_error *err);
sdxs_status sdxs_image_load(const char *path, const sdxs_image_limits *limits, sdxs_image *out,
                            sdxs_error *err);
/* PNG with optional tEXt chunks: text holds key, value pairs and ends with a NULL key. The
 * result is malloc'ed. */
sdxs_status sdxs_png_encode(const sdxs_image *image, const char *const *text, uint8_t **out,
                            size_t *len, sdxs_error *err);
/* Baseline JPEG, quality 1..100; the result is malloc'ed. */
sdxs_status sdxs_jpeg_encode(const sdxs_image *image, int quality, uint8_t **out, size_t *len,
                             sdxs_error *err);
/* Resizes as Pillow's Image.resize(size, Image.LANCZOS) does, which is what diffusers applies to
 * init images of another size. */
sdxs_status sdxs_image_resize(const sdxs_image *src, int width, int height, sdxs_image *dst,
                              sdxs_error *err);

/* ---- generation ---- */

typedef enum sdxs_control_mode {
    SDXS_CONTROL_NONE = 0, /* the control image is used as it is */
    SDXS_CONTROL_SKETCH,   /* dark strokes on white, inverted to white on black */
    SDXS_CONTROL_CANNY,    /* edges found in the image */
} sdxs_control_mode;

typedef struct sdxs_request {
    int batch;                  /* images to make, 1..max_batch */
    const char *const *prompts; /* batch prompts; identical prompts are encoded once */
    const uint64_t *seeds;      /* batch seeds: noise equals torch.randn with a CPU generator */
    int width, height;          /* 0 picks the model's default size */
    /* Optional (batch, 4, height/8, width/8) float32 noise used instead of the seeded noise
     * (a stream walking between seeds). */
    const float *noise;
    /* Image-to-image: batch init images (any size; resized to width x height), and how much of
     * the image is re-drawn, in [0, 1]. NULL for text-to-image. */
    const sdxs_image *init_images;
    float strength;
    /* ControlNet conditioning: batch control images (any size; resized to width x height), how
     * they are prepared, and the scale of the residuals (0 to 10; 1 is the trained strength).
     * NULL unless the model was opened with a ControlNet. */
    const sdxs_image *control_images;
    sdxs_control_mode control_mode;
    float control_scale;
} sdxs_request;

/* Wall-clock milliseconds of each stage of one sdxs_generate call. */
typedef struct sdxs_timings {
    double tokenize_ms, text_ms, unet_ms, decode_ms, total_ms;
} sdxs_timings;

/* Makes req->batch images into out[0..batch) (each rgb allocated here; release with
 * sdxs_image_free). Calls on one model are serialised internally. timings may be NULL. */
sdxs_status sdxs_generate(sdxs_model *model, const sdxs_request *req, sdxs_image *out,
                          sdxs_timings *timings, sdxs_error *err);

/* The seeded noise of one image: torch.randn(shape, generator=torch.Generator("cpu")
 * .manual_seed(seed)) for count floats. */
void sdxs_randn(uint64_t seed, float *out, size_t count);

#ifdef __cplusplus
}
#endif

#endif /* SDXS_H */
