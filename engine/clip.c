/* clip.c: the CLIP text transformer as transformers' CLIPTextModel computes it: token plus
 * position embeddings, pre-norm layers of causal self-attention and an MLP, a final layer norm.
 * Shapes: N prompts, L tokens, D hidden size. */
#include "engine/clip.h"

#include <stdio.h>
#include <string.h>

sdxs_status sdxs_clip_config_load(const char *path, sdxs_clip_config *cfg, sdxs_error *err)
{
    sdxs_cfg c;
    const char *act;
    sdxs_status st = sdxs_cfg_open(&c, path, err);
    if (st != SDXS_OK)
        return st;

    /* transformers' CLIPTextConfig defaults for absent keys. */
    cfg->vocab_size = sdxs_cfg_int(&c, "vocab_size", 49408, 1, 1 << 20);
    cfg->hidden_size = sdxs_cfg_int(&c, "hidden_size", 512, 1, 16384);
    cfg->intermediate_size = sdxs_cfg_int(&c, "intermediate_size", 2048, 1, 65536);
    cfg->layers = sdxs_cfg_int(&c, "num_hidden_layers", 12, 1, SDXS_CLIP_MAX_LAYERS);
    cfg->heads = sdxs_cfg_int(&c, "num_attention_heads", 8, 1, 1024);
    cfg->max_positions = sdxs_cfg_int(&c, "max_position_embeddings", 77, 1, 4096);
    cfg->layer_norm_eps = (float)sdxs_cfg_num(&c, "layer_norm_eps", 1e-5);
    act = sdxs_cfg_str(&c, "hidden_act", "quick_gelu");
    if (!strcmp(act, "quick_gelu"))
        cfg->act = SDXS_ACT_QUICK_GELU;
    else if (!strcmp(act, "gelu"))
        cfg->act = SDXS_ACT_GELU;
    else
        sdxs_cfg_reject(&c, "hidden_act", "'%s' is not supported (quick_gelu or gelu)", act);
    if (c.status == SDXS_OK && cfg->hidden_size % cfg->heads != 0)
        sdxs_cfg_reject(&c, "num_attention_heads", "%d does not divide hidden_size %d",
                        cfg->heads, cfg->hidden_size);
    if (c.status == SDXS_OK && cfg->max_positions < SDXS_MAX_TOKENS)
        sdxs_cfg_reject(&c, "max_position_embeddings", "%d is fewer than the %d tokens a prompt has",
                        cfg->max_positions, SDXS_MAX_TOKENS);
    return sdxs_cfg_close(&c);
}

sdxs_status sdxs_clip_build(sdxs_clip *m, sdxs_loader *ld, sdxs_error *err)
{
    const sdxs_clip_config *cfg = &m->cfg;
    int d = cfg->hidden_size;
    int64_t tok[2] = {cfg->vocab_size, d}, pos[2] = {cfg->max_positions, d};
    char p[64], q[128], k[128], v[128];
    const char *qkv[3] = {q, k, v};
    sdxs_status st;

    m->token_embedding = sdxs_loader_tensor(ld, "text_model.embeddings.token_embedding.weight",
                                            SDXS_WEIGHT_TABLE, 2, tok, err);
    if (!m->token_embedding)
        return err->status;
    m->position_embedding = sdxs_loader_tensor(
        ld, "text_model.embeddings.position_embedding.weight", SDXS_WEIGHT_TABLE, 2, pos, err);
    if (!m->position_embedding)
        return err->status;

    for (int i = 0; i < cfg->layers; i++) {
        sdxs_clip_layer *ly = &m->layer[i];
        snprintf(p, sizeof(p), "text_model.encoder.layers.%d", i);
        snprintf(q, sizeof(q), "%s.self_attn.q_proj", p);
        snprintf(k, sizeof(k), "%s.self_attn.k_proj", p);
        snprintf(v, sizeof(v), "%s.self_attn.v_proj", p);
        st = sdxs_loader_linear_stack(ld, qkv, 3, d, d, true, &ly->qkv, err);
        if (st == SDXS_OK) {
            snprintf(q, sizeof(q), "%s.self_attn.out_proj", p);
            st = sdxs_loader_linear(ld, q, d, d, true, &ly->out, err);
        }
        if (st == SDXS_OK) {
            snprintf(q, sizeof(q), "%s.layer_norm1", p);
            st = sdxs_loader_norm(ld, q, d, 0, cfg->layer_norm_eps, &ly->ln1, err);
        }
        if (st == SDXS_OK) {
            snprintf(q, sizeof(q), "%s.layer_norm2", p);
            st = sdxs_loader_norm(ld, q, d, 0, cfg->layer_norm_eps, &ly->ln2, err);
        }
        if (st == SDXS_OK) {
            snprintf(q, sizeof(q), "%s.mlp.fc1", p);
            st = sdxs_loader_linear(ld, q, d, cfg->intermediate_size, true, &ly->fc1, err);
        }
        if (st == SDXS_OK) {
            snprintf(q, sizeof(q), "%s.mlp.fc2", p);
            st = sdxs_loader_linear(ld, q, cfg->intermediate_size, d, true, &ly->fc2, err);
        }
        if (st != SDXS_OK)
            return st;
    }
    return sdxs_loader_norm(ld, "text_model.final_layer_norm", d, 0, cfg->layer_norm_eps,
                            &m->final_ln, err);
}

sdxs_tensor *sdxs_clip_forward(sdxs_exec *e, const sdxs_clip *m, const int32_t *ids, int64_t n,
                               int64_t l)
{
    int64_t d = m->cfg.hidden_size;
    sdxs_tensor *h = sdxs_op_embed(e, ids, n, l, m->token_embedding, m->position_embedding);

    for (int i = 0; i < m->cfg.layers; i++) {
        const sdxs_clip_layer *ly = &m->layer[i];
        sdxs_tensor *x, *qkv, *a, *h2, *f;

        /* Causal self-attention, pre-norm, with the residual added by the output projection. */
        x = sdxs_op_layer_norm(e, h, &ly->ln1);
        qkv = sdxs_op_linear(e, x, &ly->qkv, NULL, SDXS_ACT_NONE); /* (N, L, 3D) */
        sdxs_release(e, x);
        a = sdxs_op_attention(e, (sdxs_cols){qkv, 0, d}, (sdxs_cols){qkv, d, d},
                              (sdxs_cols){qkv, 2 * d, d}, m->cfg.heads, true);
        sdxs_release(e, qkv);
        h2 = sdxs_op_linear(e, a, &ly->out, h, SDXS_ACT_NONE);
        sdxs_release(e, a);
        sdxs_release(e, h);

        /* The MLP, pre-norm, residual again. */
        x = sdxs_op_layer_norm(e, h2, &ly->ln2);
        f = sdxs_op_linear(e, x, &ly->fc1, NULL, m->cfg.act);
        sdxs_release(e, x);
        h = sdxs_op_linear(e, f, &ly->fc2, h2, SDXS_ACT_NONE);
        sdxs_release(e, f);
        sdxs_release(e, h2);
    }

    {
        sdxs_tensor *out = sdxs_op_layer_norm(e, h, &m->final_ln);
        sdxs_release(e, h);
        return out;
    }
}
