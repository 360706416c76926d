/* taesd.c: AutoencoderTiny (diffusers 0.27): configuration, weights by their nn.Sequential
 * indices, and the encoder and decoder passes.
 *
 * Shapes: N batch, C channels, H/W image size, h/w latent size.
 */
#include "engine/taesd.h"

#include <stdio.h>
#include <string.h>

#define NAME(buf, ...)                                                                             \
    do {                                                                                           \
        if (snprintf((buf), sizeof(buf), __VA_ARGS__) >= (int)sizeof(buf))                         \
            return sdxs_fail(err, SDXS_ERR_RUNTIME, NULL, "tensor name too long");                 \
    } while (0)

#define TRY(call)                                                                                  \
    do {                                                                                           \
        sdxs_status st_ = (call);                                                                  \
        if (st_ != SDXS_OK)                                                                        \
            return st_;                                                                            \
    } while (0)

sdxs_status sdxs_taesd_config_load(const char *path, sdxs_taesd_config *cfg, sdxs_error *err)
{
    static const int def_ch[4] = {64, 64, 64, 64};
    static const int def_enc[4] = {1, 3, 3, 3}, def_dec[4] = {3, 3, 3, 1};
    sdxs_cfg c;
    int n, total_enc = 0, total_dec = 0;
    sdxs_status st = sdxs_cfg_open(&c, path, err);
    if (st != SDXS_OK)
        return st;
    memset(cfg, 0, sizeof(*cfg));

    /* The four lists share one length (4 by default). */
    n = sdxs_cfg_list_len(&c, "encoder_block_out_channels");
    if (n < 0)
        n = 4;
    if (n < 1 || n > SDXS_TAESD_MAX_STAGES)
        sdxs_cfg_reject(&c, "encoder_block_out_channels", "%d stages; 1 to %d are supported", n,
                        SDXS_TAESD_MAX_STAGES);
    cfg->stages = n;
    if (c.status == SDXS_OK) {
        const char *keys[4] = {"encoder_block_out_channels", "num_encoder_blocks",
                               "decoder_block_out_channels", "num_decoder_blocks"};
        int *dst[4] = {cfg->enc_channels, cfg->enc_blocks, cfg->dec_channels, cfg->dec_blocks};
        const int *def[4] = {def_ch, def_enc, def_ch, def_dec};
        for (int k = 0; k < 4 && c.status == SDXS_OK; k++) {
            if (!sdxs_cfg_has(&c, keys[k])) {
                if (n != 4)
                    sdxs_cfg_reject(&c, keys[k], "must be given when the lists are not 4 long");
                else
                    memcpy(dst[k], def[k], sizeof(def_ch));
                continue;
            }
            sdxs_cfg_ints(&c, keys[k], dst[k], n, 0, k % 2 ? 0 : 1, k % 2 ? 16 : 4096);
        }
    }
    for (int i = 0; i < n && c.status == SDXS_OK; i++) {
        total_enc += cfg->enc_blocks[i];
        total_dec += cfg->dec_blocks[i];
        /* EncoderTiny's stride-2 conv keeps its stage's width: widths must not change. */
        if (i > 0 && cfg->enc_channels[i] != cfg->enc_channels[i - 1])
            sdxs_cfg_reject(&c, "encoder_block_out_channels",
                            "widths must be equal (AutoencoderTiny's encoder cannot change them)");
        if (i > 0 && cfg->dec_channels[i] != cfg->dec_channels[i - 1])
            sdxs_cfg_reject(&c, "decoder_block_out_channels",
                            "widths must be equal (AutoencoderTiny's decoder cannot change them)");
    }
    if (total_enc > SDXS_TAESD_MAX_BLOCKS || total_dec > SDXS_TAESD_MAX_BLOCKS)
        sdxs_cfg_reject(&c, "num_encoder_blocks", "more than %d blocks", SDXS_TAESD_MAX_BLOCKS);

    cfg->in_channels = sdxs_cfg_int(&c, "in_channels", 3, 3, 3);
    cfg->out_channels = sdxs_cfg_int(&c, "out_channels", 3, 3, 3);
    cfg->latent_channels = sdxs_cfg_int(&c, "latent_channels", 4, 1, 64);
    cfg->upsampling_factor = sdxs_cfg_int(&c, "upsampling_scaling_factor", 2, 2, 2);
    cfg->scaling_factor = (float)sdxs_cfg_num(&c, "scaling_factor", 1.0);
    cfg->latent_magnitude = (float)sdxs_cfg_num(&c, "latent_magnitude", 3.0);
    cfg->latent_shift = (float)sdxs_cfg_num(&c, "latent_shift", 0.5);
    if (strcmp(sdxs_cfg_str(&c, "act_fn", "relu"), "relu"))
        sdxs_cfg_reject(&c, "act_fn", "only \"relu\" is supported");
    if (strcmp(sdxs_cfg_str(&c, "upsample_fn", "nearest"), "nearest"))
        sdxs_cfg_reject(&c, "upsample_fn", "only \"nearest\" is supported");
    if (c.status == SDXS_OK && !(cfg->scaling_factor > 0.0f))
        sdxs_cfg_reject(&c, "scaling_factor", "must be positive");
    return sdxs_cfg_close(&c);
}

int sdxs_taesd_downscale(const sdxs_taesd_config *cfg) { return 1 << (cfg->stages - 1); }

static sdxs_status block_build(sdxs_taesd_block *b, sdxs_loader *ld, const char *prefix, int c,
                               sdxs_error *err)
{
    char n[128];
    memset(b, 0, sizeof(*b));
    for (int k = 0; k < 3; k++) {
        NAME(n, "%s.conv.%d", prefix, 2 * k);
        TRY(sdxs_loader_conv(ld, n, c, c, 3, 1, 1, true, &b->conv[k], err));
    }
    return SDXS_OK; /* equal widths: the skip is the identity */
}

sdxs_status sdxs_taesd_build_encoder(sdxs_taesd *m, sdxs_loader *ld, sdxs_error *err)
{
    const sdxs_taesd_config *cfg = &m->cfg;
    sdxs_taesd_coder *enc = &m->enc;
    int idx = 0, blk = 0;
    char n[128];

    NAME(n, "encoder.layers.%d", idx++);
    TRY(sdxs_loader_conv(ld, n, cfg->in_channels, cfg->enc_channels[0], 3, 1, 1, true,
                         &enc->conv_first, err));
    for (int i = 0; i < cfg->stages; i++) {
        int c = cfg->enc_channels[i];
        if (i > 0) {
            NAME(n, "encoder.layers.%d", idx++);
            TRY(sdxs_loader_conv(ld, n, c, c, 3, 2, 1, false, &enc->stage_conv[i], err));
        }
        for (int j = 0; j < cfg->enc_blocks[i]; j++) {
            NAME(n, "encoder.layers.%d", idx++);
            TRY(block_build(&enc->block[blk++], ld, n, c, err));
        }
    }
    NAME(n, "encoder.layers.%d", idx++);
    TRY(sdxs_loader_conv(ld, n, cfg->enc_channels[cfg->stages - 1], cfg->latent_channels, 3, 1, 1,
                         true, &enc->conv_last, err));
    m->has_encoder = true;
    return SDXS_OK;
}

sdxs_status sdxs_taesd_build_decoder(sdxs_taesd *m, sdxs_loader *ld, sdxs_error *err)
{
    const sdxs_taesd_config *cfg = &m->cfg;
    sdxs_taesd_coder *dec = &m->dec;
    int idx = 0, blk = 0;
    char n[128];

    /* Index 1 is the ReLU after the first conv; upsamples take an index too. */
    NAME(n, "decoder.layers.%d", idx);
    idx += 2;
    TRY(sdxs_loader_conv(ld, n, cfg->latent_channels, cfg->dec_channels[0], 3, 1, 1, true,
                         &dec->conv_first, err));
    for (int i = 0; i < cfg->stages; i++) {
        int c = cfg->dec_channels[i];
        bool last = i == cfg->stages - 1;
        for (int j = 0; j < cfg->dec_blocks[i]; j++) {
            NAME(n, "decoder.layers.%d", idx++);
            TRY(block_build(&dec->block[blk++], ld, n, c, err));
        }
        if (!last)
            idx++;
        NAME(n, "decoder.layers.%d", idx++);
        TRY(sdxs_loader_conv(ld, n, c, last ? cfg->out_channels : c, 3, 1, 1, last,
                             &dec->stage_conv[i], err));
    }
    m->has_decoder = true;
    return SDXS_OK;
}

static sdxs_tensor *block_forward(sdxs_exec *e, const sdxs_taesd_block *b, sdxs_tensor *x)
{
    sdxs_tensor *a = sdxs_op_conv2d(e, x, &b->conv[0], NULL, NULL, SDXS_ACT_RELU);
    sdxs_tensor *c = sdxs_op_conv2d(e, a, &b->conv[1], NULL, NULL, SDXS_ACT_RELU);
    sdxs_release(e, a);
    a = sdxs_op_conv2d(e, c, &b->conv[2], NULL, x, SDXS_ACT_RELU); /* relu(conv + skip) */
    sdxs_release(e, c);
    return a;
}

sdxs_tensor *sdxs_taesd_encode(sdxs_exec *e, const sdxs_taesd *m, const sdxs_tensor *image)
{
    const sdxs_taesd_config *cfg = &m->cfg;
    int blk = 0;
    sdxs_tensor *h = sdxs_op_conv2d(e, image, &m->enc.conv_first, NULL, NULL, SDXS_ACT_NONE), *t;

    for (int i = 0; i < cfg->stages; i++) {
        if (i > 0) {
            t = sdxs_op_conv2d(e, h, &m->enc.stage_conv[i], NULL, NULL, SDXS_ACT_NONE);
            sdxs_release(e, h);
            h = t;
        }
        for (int j = 0; j < cfg->enc_blocks[i]; j++) {
            t = block_forward(e, &m->enc.block[blk++], h);
            sdxs_release(e, h);
            h = t;
        }
    }
    t = sdxs_op_conv2d(e, h, &m->enc.conv_last, NULL, NULL, SDXS_ACT_NONE);
    sdxs_release(e, h);
    if (cfg->scaling_factor != 1.0f) {
        h = sdxs_op_axpby(e, cfg->scaling_factor, t, 0.0f, NULL, SDXS_ACT_NONE);
        sdxs_release(e, t);
        t = h;
    }
    return t;
}

sdxs_tensor *sdxs_taesd_decode(sdxs_exec *e, const sdxs_taesd *m, const sdxs_tensor *latents)
{
    const sdxs_taesd_config *cfg = &m->cfg;
    int blk = 0;
    sdxs_tensor *h, *t;

    /* latents / scaling_factor, then the decoder's soft clamp tanh(x / 3) * 3. */
    if (cfg->scaling_factor != 1.0f) {
        t = sdxs_op_axpby(e, 1.0f / cfg->scaling_factor, latents, 0.0f, NULL, SDXS_ACT_NONE);
        h = sdxs_op_tanh_clamp(e, t, 3.0f);
        sdxs_release(e, t);
    } else {
        h = sdxs_op_tanh_clamp(e, latents, 3.0f);
    }
    t = sdxs_op_conv2d(e, h, &m->dec.conv_first, NULL, NULL, SDXS_ACT_RELU);
    sdxs_release(e, h);
    h = t;

    for (int i = 0; i < cfg->stages; i++) {
        for (int j = 0; j < cfg->dec_blocks[i]; j++) {
            t = block_forward(e, &m->dec.block[blk++], h);
            sdxs_release(e, h);
            h = t;
        }
        if (i < cfg->stages - 1) {
            t = sdxs_op_upsample2x(e, h);
            sdxs_release(e, h);
            h = t;
        }
        t = sdxs_op_conv2d(e, h, &m->dec.stage_conv[i], NULL, NULL, SDXS_ACT_NONE);
        sdxs_release(e, h);
        h = t;
    }
    return h;
}
