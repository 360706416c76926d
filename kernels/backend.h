/* backend.h: the table of operations every compute backend implements, and the tensor it sees.
 *
 * Only backends and the dispatcher (kernels/exec.c) include this; model code uses ops.h. The
 * dispatcher checks shapes, places outputs in the activation arena and calls the backend, so a
 * backend entry may assume valid shapes and resolved data pointers. Entries may run
 * asynchronously (a CUDA stream); they return 0 or an sdxs_status and never exit.
 *
 * Storage: weights are converted once (weight_create) into the backend's chosen format; the
 * dispatcher sizes the activation arena by a planning pass and asks the backend for one block of
 * that size (arena_reserve), then hands out offsets inside it. A backend chooses the element
 * type of activations (act_dtype) and may use any internal layout: upload and download convert
 * to and from logical-layout float32.
 */
#ifndef SDXS_BACKEND_H
#define SDXS_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/ops.h"

typedef enum sdxs_tensor_kind {
    SDXS_TENSOR_ACTIVATION = 0,
    SDXS_TENSOR_WEIGHT,
} sdxs_tensor_kind;

struct sdxs_tensor {
    int ndim;
    int64_t ne[4];        /* logical shape, outermost first; unused dimensions are 1 */
    sdxs_dtype dtype;     /* storage element type */
    sdxs_tensor_kind kind;
    sdxs_weight_role role;  /* weights only */
    size_t offset, nbytes;  /* activations: place in the arena */
    void *data;             /* backend memory; NULL while planning */
    void *impl;             /* weights: backend-private data (e.g. a layout descriptor), owned
                               and freed by the backend */
    bool released;
};

/* Numbers of the timing marks of sdxs_exec_mark. */
typedef struct sdxs_backend_ops {
    const char *name;
    void (*destroy)(sdxs_backend *be);

    /* ---- storage ---- */
    sdxs_dtype (*act_dtype)(const sdxs_backend *be);
    /* Sets t->dtype and t->nbytes for a weight of t's shape and role; no data yet. */
    void (*weight_size)(sdxs_backend *be, sdxs_tensor *t);
    /* One allocation for every weight, before any weight_create. */
    sdxs_status (*weights_reserve)(sdxs_backend *be, size_t bytes, sdxs_error *err);
    /* Converts src (logical layout, element type src_dtype) into the weight at byte offset
     * `offset` of the weight block, and sets t->data. */
    sdxs_status (*weight_create)(sdxs_backend *be, sdxs_tensor *t, size_t offset,
                                 sdxs_dtype src_dtype, const void *src, sdxs_error *err);
    /* The activation arena; called again only to grow it (never inside a run). Growing moves
     * the arena, so it invalidates every recording made for replay. */
    sdxs_status (*arena_reserve)(sdxs_backend *be, size_t bytes, void **base, sdxs_error *err);

    /* ---- runs ---- */
    /* Called before each executing pass. A backend that sets *replay runs no operations in this
     * pass (the dispatcher skips them) and replays its recording of the same key at run_end. */
    int (*run_begin)(sdxs_backend *be, uint64_t key, bool *replay);
    /* Finishes the pass: replays or completes the work, fills downloaded host buffers. */
    int (*run_end)(sdxs_backend *be);
    int (*mark)(sdxs_backend *be, int mark);
    double (*elapsed_ms)(const sdxs_backend *be, int from_mark, int to_mark);

    /* ---- data movement ----
     * Host inputs (upload, from_rgb8, embed's ids, gather's index) are read during the call, and
     * these entries are called even in a replayed pass: a replaying backend must deliver them at
     * the same point of its recorded sequence (e.g. a staging buffer the recording copies from),
     * since an arena block may serve several tensors over one run. */
    int (*upload)(sdxs_backend *be, sdxs_tensor *dst, const float *src);
    int (*download)(sdxs_backend *be, const sdxs_tensor *src, float *dst);
    int (*from_rgb8)(sdxs_backend *be, sdxs_tensor *y, const uint8_t *src, float scale,
                     float shift);
    int (*to_rgb8)(sdxs_backend *be, const sdxs_tensor *x, float scale, float shift,
                   uint8_t *dst);

    /* ---- compute (shapes already checked by the dispatcher) ---- */
    int (*conv2d)(sdxs_backend *be, sdxs_tensor *y, const sdxs_tensor *x, const sdxs_conv2d *conv,
                  const sdxs_tensor *chan_bias, const sdxs_tensor *residual, sdxs_act act);
    int (*linear)(sdxs_backend *be, sdxs_tensor *y, const sdxs_tensor *x, const sdxs_linear *lin,
                  const sdxs_tensor *residual, sdxs_act act);
    int (*group_norm)(sdxs_backend *be, sdxs_tensor *y, const sdxs_tensor *x,
                      const sdxs_norm *norm, sdxs_act act);
    int (*layer_norm)(sdxs_backend *be, sdxs_tensor *y, const sdxs_tensor *x,
                      const sdxs_norm *norm);
    int (*attention)(sdxs_backend *be, sdxs_tensor *y, sdxs_cols q, sdxs_cols k, sdxs_cols v,
                     int heads, bool causal);
    int (*geglu)(sdxs_backend *be, sdxs_tensor *y, const sdxs_tensor *x);
    int (*axpby)(sdxs_backend *be, sdxs_tensor *y, float a, const sdxs_tensor *x, float b,
                 const sdxs_tensor *y_in, sdxs_act act);
    int (*clamp)(sdxs_backend *be, sdxs_tensor *y, const sdxs_tensor *x, float lo, float hi);
    int (*tanh_clamp)(sdxs_backend *be, sdxs_tensor *y, const sdxs_tensor *x, float limit);
    int (*upsample2x)(sdxs_backend *be, sdxs_tensor *y, const sdxs_tensor *x);
    int (*concat_channels)(sdxs_backend *be, sdxs_tensor *y, const sdxs_tensor *a,
                           const sdxs_tensor *b);
    int (*image_to_tokens)(sdxs_backend *be, sdxs_tensor *y, const sdxs_tensor *x);
    int (*tokens_to_image)(sdxs_backend *be, sdxs_tensor *y, const sdxs_tensor *x,
                           const sdxs_tensor *residual);
    /* ids are host memory (N * L entries), already range-checked. */
    int (*embed)(sdxs_backend *be, sdxs_tensor *y, const int32_t *ids, const sdxs_tensor *table,
                 const sdxs_tensor *pos);
    /* index is host memory, already range-checked. */
    int (*gather)(sdxs_backend *be, sdxs_tensor *y, const sdxs_tensor *x, const int32_t *index);
} sdxs_backend_ops;

struct sdxs_backend {
    const sdxs_backend_ops *ops;
    void *impl;
};

#endif /* SDXS_BACKEND_H */
