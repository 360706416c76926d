/* ops.h: the operations model code runs, on opaque tensors, through an execution context.
 *
 * Model code (engine/) sees tensors only as handles with a logical shape; the backend behind the
 * context chooses layout and precision (NCHW fp32 on the CPU, NHWC fp16 on CUDA) and converts
 * weights once at load. Operations are as coarse as fusion wants: a convolution carries its bias,
 * a per-channel bias, a residual and an activation; a group norm carries its SiLU.
 *
 * Logical shapes, outermost first: images (N, C, H, W), token sequences (N, L, D), vectors (N, D).
 * N batch, C channels, H/W height/width, L tokens, D features.
 *
 * A run: sdxs_exec_run() calls the model's function once in a planning pass per new shape key
 * (operations only compute shapes and place outputs in the activation arena) and then in an
 * executing pass. Both passes make the same calls in the same order, so every tensor lands at the
 * same arena offset and a backend may capture the executing pass as a graph and replay it.
 * Backend failures are sticky: an operation after a failure does nothing, and the run reports the
 * first failure. Shape mistakes are bugs and panic.
 */
#ifndef SDXS_OPS_H
#define SDXS_OPS_H

#include <stdbool.h>
#include <stdint.h>

#include "engine/util.h"

typedef struct sdxs_tensor sdxs_tensor;
typedef struct sdxs_exec sdxs_exec;
typedef struct sdxs_backend sdxs_backend;

typedef enum sdxs_dtype {
    SDXS_DTYPE_F32 = 0,
    SDXS_DTYPE_F16,
    SDXS_DTYPE_BF16,
    SDXS_DTYPE_U8,
} sdxs_dtype;

size_t sdxs_dtype_size(sdxs_dtype dt);
const char *sdxs_dtype_name(sdxs_dtype dt);

typedef enum sdxs_act {
    SDXS_ACT_NONE = 0,
    SDXS_ACT_SILU,       /* x * sigmoid(x) */
    SDXS_ACT_RELU,       /* max(x, 0) */
    SDXS_ACT_GELU,       /* exact: x * (1 + erf(x / sqrt 2)) / 2 */
    SDXS_ACT_QUICK_GELU, /* x * sigmoid(1.702 x) */
} sdxs_act;

/* How a weight is used; lets the backend pick its storage once, at load. */
typedef enum sdxs_weight_role {
    SDXS_WEIGHT_CONV = 0, /* (Cout, Cin, K, K) */
    SDXS_WEIGHT_LINEAR,   /* (Dout, Din) */
    SDXS_WEIGHT_VECTOR,   /* (D): biases, norm scales and shifts */
    SDXS_WEIGHT_TABLE,    /* (rows, D): embedding tables, read by row */
} sdxs_weight_role;

/* ---- layers: weights plus the hyper-parameters the operations need ---- */

typedef struct sdxs_conv2d {
    sdxs_tensor *weight; /* (Cout, Cin, K, K) */
    sdxs_tensor *bias;   /* (Cout) or NULL */
    int cin, cout, kernel, stride, pad;
} sdxs_conv2d;

typedef struct sdxs_linear {
    sdxs_tensor *weight; /* (Dout, Din) */
    sdxs_tensor *bias;   /* (Dout) or NULL */
    int din, dout;
} sdxs_linear;

typedef struct sdxs_norm {
    sdxs_tensor *gamma, *beta; /* (C) each */
    int channels, groups;      /* groups is 0 for a layer norm */
    float eps;
} sdxs_norm;

/* Columns [first, first + count) of an (N, L, D) tensor: q, k and v slices of a fused projection. */
typedef struct sdxs_cols {
    const sdxs_tensor *t;
    int64_t first, count;
} sdxs_cols;

/* ---- backends and execution contexts ---- */

/* Backend constructors. threads 0 means one per core. */
sdxs_status sdxs_backend_cpu_create(int threads, sdxs_precision precision, sdxs_backend **out,
                                    sdxs_error *err);
/* Fails with SDXS_ERR_RUNTIME when the build has no CUDA backend or no GPU is usable. */
sdxs_status sdxs_backend_cuda_create(sdxs_precision precision, sdxs_backend **out,
                                     sdxs_error *err);
void sdxs_backend_free(sdxs_backend *be);
const char *sdxs_backend_name(const sdxs_backend *be); /* "cpu", "cuda" */

sdxs_status sdxs_exec_create(sdxs_backend *be, sdxs_exec **out, sdxs_error *err);
void sdxs_exec_free(sdxs_exec *e);
sdxs_backend *sdxs_exec_backend(sdxs_exec *e);

/* ---- weights ---- */

/* Creates a model's weights on a backend in two passes over the same sequence of calls: a sizing
 * pass (src is not read) after which every weight gets its place in one allocation, then a
 * creating pass that converts each source array into the backend's format. A store that only
 * describes a model (sdxs info) stops after the sizing pass. */
typedef struct sdxs_weight_store sdxs_weight_store;

sdxs_status sdxs_weight_store_create(sdxs_backend *be, sdxs_weight_store **out, sdxs_error *err);
void sdxs_weight_store_free(sdxs_weight_store *ws);
/* Ends the sizing pass: reserves the weight block and starts the creating pass. */
sdxs_status sdxs_weight_store_reserve(sdxs_weight_store *ws, sdxs_error *err);
bool sdxs_weight_store_sizing(const sdxs_weight_store *ws);
/* src: logical layout, element type src_dtype (F32, F16 or BF16); NULL allowed while sizing. */
sdxs_tensor *sdxs_weight_store_add(sdxs_weight_store *ws, sdxs_weight_role role, int ndim,
                                   const int64_t *shape, sdxs_dtype src_dtype, const void *src,
                                   sdxs_error *err);
size_t sdxs_weight_store_bytes(const sdxs_weight_store *ws);

/* ---- runs ---- */

typedef sdxs_status (*sdxs_run_fn)(sdxs_exec *e, void *user);

/* Runs fn (planning first when shape_key is new). err gets the first backend failure. */
sdxs_status sdxs_exec_run(sdxs_exec *e, uint64_t shape_key, sdxs_run_fn fn, void *user,
                          sdxs_error *err);
bool sdxs_exec_planning(const sdxs_exec *e);
/* Marks the start of stage `stage` (0..SDXS_MAX_MARKS-2) for timing; see sdxs_exec_stage_ms. */
#define SDXS_MAX_MARKS 16
void sdxs_exec_mark(sdxs_exec *e, int mark);
/* Milliseconds between two marks of the last executing pass, or -1 if either was not set. */
double sdxs_exec_elapsed_ms(const sdxs_exec *e, int from_mark, int to_mark);
/* Per-operation time: with profiling on, every executing pass adds each operation's wall time
 * (meaningful for synchronous backends such as the CPU's). Turning it on clears the totals. */
#define SDXS_PROFILE_MAX_OPS 32
typedef struct sdxs_op_profile {
    const char *op;
    long calls;
    double ms;
} sdxs_op_profile;
void sdxs_exec_profile(sdxs_exec *e, bool on);
int sdxs_exec_profile_get(const sdxs_exec *e, const sdxs_op_profile **out);

/* Peak bytes of the activation arena over every plan made so far. */
size_t sdxs_exec_arena_bytes(const sdxs_exec *e);

int64_t sdxs_tensor_dim(const sdxs_tensor *t, int i);
int sdxs_tensor_ndim(const sdxs_tensor *t);
int64_t sdxs_tensor_numel(const sdxs_tensor *t);

/* Returns an activation's arena block; releasing NULL or a weight does nothing. */
void sdxs_release(sdxs_exec *e, sdxs_tensor *t);

/* ---- moving data ---- */

/* Host float32 data in logical layout in; read during the call. ndim <= 4. */
sdxs_tensor *sdxs_op_upload(sdxs_exec *e, int ndim, const int64_t *shape, const float *src);
/* Logical-layout float32 out; dst is filled when the run ends. */
void sdxs_op_download(sdxs_exec *e, const sdxs_tensor *t, float *dst);

/* (N, H, W, 3) uint8 host pixels in, (N, 3, H, W) out: (value / 255) * scale + shift. */
sdxs_tensor *sdxs_op_from_rgb8(sdxs_exec *e, const uint8_t *src, int64_t n, int64_t h,
                               int64_t w, float scale, float shift);
/* (N, 3, H, W) in; dst (N, H, W, 3) uint8 = round_half_even(clamp(x * scale + shift, 0, 1) * 255),
 * filled when the run ends. */
void sdxs_op_to_rgb8(sdxs_exec *e, const sdxs_tensor *x, float scale, float shift, uint8_t *dst);

/* ---- compute ---- */

/* y = act(conv(x) + bias + chan_bias[n, c] + residual). chan_bias (N, Cout) and residual
 * (N, Cout, Ho, Wo) may be NULL. */
sdxs_tensor *sdxs_op_conv2d(sdxs_exec *e, const sdxs_tensor *x, const sdxs_conv2d *conv,
                            const sdxs_tensor *chan_bias, const sdxs_tensor *residual,
                            sdxs_act act);
/* y = act(x W^T + bias + residual) over the last dimension; x is (N, D) or (N, L, D). */
sdxs_tensor *sdxs_op_linear(sdxs_exec *e, const sdxs_tensor *x, const sdxs_linear *lin,
                            const sdxs_tensor *residual, sdxs_act act);
/* Group norm over (N, C, H, W) with norm->groups groups, then act (NONE or SILU). */
sdxs_tensor *sdxs_op_group_norm(sdxs_exec *e, const sdxs_tensor *x, const sdxs_norm *norm,
                                sdxs_act act);
/* Layer norm over the last dimension of (N, L, D). */
sdxs_tensor *sdxs_op_layer_norm(sdxs_exec *e, const sdxs_tensor *x, const sdxs_norm *norm);
/* Multi-head attention: softmax(q k^T / sqrt(dh)) v per head, dh = q.count / heads.
 * q (N, Lq, H*dh), k and v (N, Lk, H*dh) column slices; causal masks key j > query i. */
sdxs_tensor *sdxs_op_attention(sdxs_exec *e, sdxs_cols q, sdxs_cols k, sdxs_cols v, int heads,
                               bool causal);
/* (N, L, 2F) -> (N, L, F): first half * gelu(second half). */
sdxs_tensor *sdxs_op_geglu(sdxs_exec *e, const sdxs_tensor *x);
/* y = act(a * x + b * y_in), elementwise over equal shapes; y_in may be NULL (then b is unused). */
sdxs_tensor *sdxs_op_axpby(sdxs_exec *e, float a, const sdxs_tensor *x, float b,
                           const sdxs_tensor *y_in, sdxs_act act);
/* y = min(max(x, lo), hi). */
sdxs_tensor *sdxs_op_clamp(sdxs_exec *e, const sdxs_tensor *x, float lo, float hi);
/* y = tanh(x / limit) * limit: AutoencoderTiny's soft clamp. */
sdxs_tensor *sdxs_op_tanh_clamp(sdxs_exec *e, const sdxs_tensor *x, float limit);
/* (N, C, H, W) -> (N, C, 2H, 2W), nearest. */
sdxs_tensor *sdxs_op_upsample2x(sdxs_exec *e, const sdxs_tensor *x);
/* Channel concatenation of (N, Ca, H, W) and (N, Cb, H, W). */
sdxs_tensor *sdxs_op_concat_channels(sdxs_exec *e, const sdxs_tensor *a, const sdxs_tensor *b);
/* (N, C, H, W) -> (N, H*W, C). */
sdxs_tensor *sdxs_op_image_to_tokens(sdxs_exec *e, const sdxs_tensor *x);
/* (N, H*W, C) -> (N, C, H, W), plus residual (N, C, H, W) when not NULL. */
sdxs_tensor *sdxs_op_tokens_to_image(sdxs_exec *e, const sdxs_tensor *x, int64_t h, int64_t w,
                                     const sdxs_tensor *residual);
/* out[n, l] = table[ids[n * L + l]] + pos[l]: token plus position embeddings, (N, L, D). ids are
 * host memory, read during the call; every id must be < table rows. */
sdxs_tensor *sdxs_op_embed(sdxs_exec *e, const int32_t *ids, int64_t n, int64_t l,
                           const sdxs_tensor *table, const sdxs_tensor *pos);
/* Sinusoidal timestep embedding as diffusers computes it, (N, dim), from host timesteps. */
sdxs_tensor *sdxs_op_timestep_embedding(sdxs_exec *e, const float *timesteps, int64_t n,
                                        int dim, bool flip_sin_to_cos, float freq_shift);
/* Batch gather: out[i] = x[index[i]] for i < count; index is host memory. */
sdxs_tensor *sdxs_op_gather(sdxs_exec *e, const sdxs_tensor *x, const int32_t *index,
                            int64_t count);

#endif /* SDXS_OPS_H */
