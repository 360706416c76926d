/* clip.h: the CLIP text transformer (transformers' CLIPTextModel), configured from
 * text_encoder/config.json, giving last_hidden_state for a batch of token id rows. */
#ifndef SDXS_CLIP_H
#define SDXS_CLIP_H

#include "engine/config.h"

#define SDXS_CLIP_MAX_LAYERS 64

typedef struct sdxs_clip_config {
    int vocab_size, hidden_size, intermediate_size, layers, heads, max_positions;
    sdxs_act act; /* quick_gelu or gelu */
    float layer_norm_eps;
} sdxs_clip_config;

typedef struct sdxs_clip_layer {
    sdxs_norm ln1, ln2;
    sdxs_linear qkv; /* q, k and v projections stacked: (3D, D) */
    sdxs_linear out, fc1, fc2;
} sdxs_clip_layer;

typedef struct sdxs_clip {
    sdxs_clip_config cfg;
    sdxs_tensor *token_embedding;    /* (V, D) */
    sdxs_tensor *position_embedding; /* (P, D) */
    sdxs_clip_layer layer[SDXS_CLIP_MAX_LAYERS];
    sdxs_norm final_ln;
} sdxs_clip;

sdxs_status sdxs_clip_config_load(const char *path, sdxs_clip_config *cfg, sdxs_error *err);
/* Declares (sizing pass) or creates every weight of the model from ld. */
sdxs_status sdxs_clip_build(sdxs_clip *m, sdxs_loader *ld, sdxs_error *err);
/* ids: (N, L) host token ids with L <= max_positions. Returns last_hidden_state (N, L, D). */
sdxs_tensor *sdxs_clip_forward(sdxs_exec *e, const sdxs_clip *m, const int32_t *ids, int64_t n,
                               int64_t l);

#endif /* SDXS_CLIP_H */
