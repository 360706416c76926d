/* cpu_conv.c: the CPU backend's convolutions through oneDNN (see cpu_conv.h).
 *
 * Each weight is stored in the layout oneDNN picks for its layer at a canonical input size, so
 * the weight block holds one copy only; primitives for the real sizes are then asked to read
 * that layout. Each image of a batch runs on its own (N = 1), so a picture does not depend on
 * the batch it was made in, and the per-image bias (the U-Net's time embedding) folds into the
 * convolution's bias. The residual is copied into the output first and added by a "sum"
 * post-op; the activation is an "eltwise" post-op after it.
 * In bf16 mode the weights are stored in bfloat16 and each image is rounded to bfloat16 on its
 * way in (oneDNN then runs AMX or AVX-512 bf16 code), with float32 sums, bias and output.
 * Shapes: images (1, C, H, W) in NHWC, weights (Cout, Cin, K, K).
 */
#include "kernels/cpu/cpu_conv.h"

#include <stdlib.h>
#include <string.h>

#include <dnnl.h>

#define CONV_CANONICAL_SIDE 32 /* the input size a weight's layout is chosen for */
#define CONV_MAX_PRIMS 2048    /* (layer, input size) pairs remembered */

typedef struct conv_prim {
    const sdxs_tensor *weight;
    int64_t h, w;
    int stride, pad;
    sdxs_act act;
    bool residual, bias;
    dnnl_primitive_t prim;
    dnnl_memory_t src, wei, bia, dst, scratch;
    void *own_weights; /* set only when the stored layout could not be used */
} conv_prim;

struct cpu_conv_cache {
    dnnl_engine_t engine;
    dnnl_stream_t stream;
    conv_prim *prims;
    int nprims;
    dnnl_memory_desc_t **descs; /* every weight layout handed out, freed at the end */
    size_t ndescs, cap_descs;
    void *scratch;
    size_t scratch_bytes;
    float *bias; /* one image's combined bias */
    int64_t bias_cap;
    dnnl_data_type_t dt;  /* of weights and inputs: f32, or bf16 */
    uint16_t *src16;      /* bf16 mode: one image's input (H, W, C) */
    int64_t src16_cap;
};

#define DNNL_TRY(call)                                                                             \
    do {                                                                                           \
        dnnl_status_t s_ = (call);                                                                 \
        if (s_ != dnnl_success) {                                                                  \
            SDXS_ERROR("cpu", "oneDNN: %s failed (status %d)", #call, (int)s_);                    \
            goto fail;                                                                             \
        }                                                                                          \
    } while (0)

sdxs_status cpu_conv_cache_create(cpu_conv_cache **out, bool bf16, sdxs_error *err)
{
    cpu_conv_cache *cc = sdxs_calloc(1, sizeof(*cc), err, "the convolution cache");
    if (!cc)
        return SDXS_ERR_RUNTIME;
    cc->dt = bf16 ? dnnl_bf16 : dnnl_f32;
    cc->prims = sdxs_calloc(CONV_MAX_PRIMS, sizeof(conv_prim), err, "convolution primitives");
    if (!cc->prims || dnnl_engine_create(&cc->engine, dnnl_cpu, 0) != dnnl_success ||
        dnnl_stream_create(&cc->stream, cc->engine, dnnl_stream_default_flags) != dnnl_success) {
        cpu_conv_cache_free(cc);
        return sdxs_fail(err, SDXS_ERR_RUNTIME, NULL, "oneDNN: cannot create a CPU engine");
    }
    *out = cc;
    return SDXS_OK;
}

void cpu_conv_cache_free(cpu_conv_cache *cc)
{
    if (!cc)
        return;
    for (int i = 0; cc->prims && i < cc->nprims; i++) {
        conv_prim *p = &cc->prims[i];
        dnnl_primitive_destroy(p->prim);
        dnnl_memory_destroy(p->src);
        dnnl_memory_destroy(p->wei);
        dnnl_memory_destroy(p->bia);
        dnnl_memory_destroy(p->dst);
        dnnl_memory_destroy(p->scratch);
        free(p->own_weights);
    }
    for (size_t i = 0; i < cc->ndescs; i++)
        free(cc->descs[i]);
    free(cc->descs);
    free(cc->prims);
    free(cc->scratch);
    free(cc->bias);
    free(cc->src16);
    if (cc->stream)
        dnnl_stream_destroy(cc->stream);
    if (cc->engine)
        dnnl_engine_destroy(cc->engine);
    free(cc);
}

/* A convolution descriptor for one image of (cin, h, w), input of type dt, with weights laid
 * out as wmd; output and bias float32. */
static dnnl_status_t conv_desc(dnnl_convolution_desc_t *cd, dnnl_data_type_t dt, int cin,
                               int cout, int k, int stride, int pad, int64_t h, int64_t w,
                               const dnnl_memory_desc_t *wmd, bool bias)
{
    dnnl_memory_desc_t src, dst, bia;
    int64_t ho = (h + 2 * pad - k) / stride + 1, wo = (w + 2 * pad - k) / stride + 1;
    dnnl_dims_t sd = {1, cin, h, w}, dd = {1, cout, ho, wo}, bd = {cout};
    dnnl_dims_t strides = {stride, stride}, pads = {pad, pad};
    dnnl_status_t s;

    s = dnnl_memory_desc_init_by_tag(&src, 4, sd, dt, dnnl_nhwc);
    if (s == dnnl_success)
        s = dnnl_memory_desc_init_by_tag(&dst, 4, dd, dnnl_f32, dnnl_nhwc);
    if (s == dnnl_success)
        s = dnnl_memory_desc_init_by_tag(&bia, 1, bd, dnnl_f32, dnnl_x);
    if (s == dnnl_success)
        s = dnnl_convolution_forward_desc_init(cd, dnnl_forward_inference,
                                               dnnl_convolution_direct, &src, wmd,
                                               bias ? &bia : NULL, &dst, strides, pads, pads);
    return s;
}

sdxs_status cpu_conv_weight_size(cpu_conv_cache *cc, sdxs_tensor *t, size_t *bytes,
                                 sdxs_error *err)
{
    int cout = (int)t->ne[0], cin = (int)t->ne[1], k = (int)t->ne[2];
    dnnl_dims_t wd = {cout, cin, k, k};
    dnnl_memory_desc_t any, *kept;
    dnnl_convolution_desc_t cd;
    dnnl_primitive_desc_t pd = NULL;

    /* The layout oneDNN chooses for this layer at the canonical size. */
    DNNL_TRY(dnnl_memory_desc_init_by_tag(&any, 4, wd, cc->dt, dnnl_format_tag_any));
    DNNL_TRY(conv_desc(&cd, cc->dt, cin, cout, k, 1, k / 2, CONV_CANONICAL_SIDE, CONV_CANONICAL_SIDE,
                       &any, true));
    DNNL_TRY(dnnl_primitive_desc_create(&pd, &cd, NULL, cc->engine, NULL));
    if (cc->ndescs == cc->cap_descs) {
        size_t cap = cc->cap_descs ? 2 * cc->cap_descs : 256;
        dnnl_memory_desc_t **d = realloc(cc->descs, cap * sizeof(*d));
        if (!d)
            goto fail;
        cc->descs = d;
        cc->cap_descs = cap;
    }
    kept = malloc(sizeof(*kept));
    if (!kept)
        goto fail;
    *kept = *dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    cc->descs[cc->ndescs++] = kept;
    dnnl_primitive_desc_destroy(pd);
    t->impl = kept;
    *bytes = dnnl_memory_desc_get_size(kept);
    return SDXS_OK;

fail:
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    return sdxs_fail(err, SDXS_ERR_RUNTIME, NULL,
                     "oneDNN cannot lay out a %dx%dx%dx%d convolution weight", cout, cin, k, k);
}

/* Copies a weight from one layout into another. */
static int reorder(cpu_conv_cache *cc, const dnnl_memory_desc_t *from_md, const void *from,
                   const dnnl_memory_desc_t *to_md, void *to)
{
    dnnl_memory_t src = NULL, dst = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_t r = NULL;
    dnnl_exec_arg_t args[2];
    int rc = SDXS_ERR_RUNTIME;

    DNNL_TRY(dnnl_memory_create(&src, from_md, cc->engine, (void *)from));
    DNNL_TRY(dnnl_memory_create(&dst, to_md, cc->engine, to));
    DNNL_TRY(dnnl_reorder_primitive_desc_create(&pd, from_md, cc->engine, to_md, cc->engine,
                                                NULL));
    DNNL_TRY(dnnl_primitive_create(&r, pd));
    args[0] = (dnnl_exec_arg_t){DNNL_ARG_FROM, src};
    args[1] = (dnnl_exec_arg_t){DNNL_ARG_TO, dst};
    DNNL_TRY(dnnl_primitive_execute(r, cc->stream, 2, args));
    DNNL_TRY(dnnl_stream_wait(cc->stream));
    rc = 0;
fail:
    if (r)
        dnnl_primitive_destroy(r);
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    dnnl_memory_destroy(src);
    dnnl_memory_destroy(dst);
    return rc;
}

sdxs_status cpu_conv_weight_fill(cpu_conv_cache *cc, sdxs_tensor *t, const float *oihw,
                                 sdxs_error *err)
{
    const dnnl_memory_desc_t *md = t->impl;
    dnnl_memory_desc_t plain;
    if (dnnl_memory_desc_init_by_tag(&plain, 4, md->dims, dnnl_f32, dnnl_oihw) != dnnl_success ||
        reorder(cc, &plain, oihw, md, t->data))
        return sdxs_fail(err, SDXS_ERR_RUNTIME, NULL, "oneDNN could not reorder a weight");
    return SDXS_OK;
}

static dnnl_alg_kind_t eltwise_of(sdxs_act act, float *alpha)
{
    *alpha = 0.0f;
    switch (act) {
    case SDXS_ACT_RELU: return dnnl_eltwise_relu;
    case SDXS_ACT_SILU: *alpha = 1.0f; return dnnl_eltwise_swish;
    case SDXS_ACT_QUICK_GELU: *alpha = 1.702f; return dnnl_eltwise_swish;
    case SDXS_ACT_GELU: return dnnl_eltwise_gelu_erf;
    case SDXS_ACT_NONE: break;
    }
    return dnnl_alg_kind_undef;
}

/* Makes the primitive for one (layer, size, epilogue), reading the stored weight layout when
 * oneDNN can, else a private reordered copy. */
static conv_prim *make_prim(cpu_conv_cache *cc, const sdxs_conv2d *conv, int64_t h, int64_t w,
                            bool residual, bool bias, sdxs_act act)
{
    const dnnl_memory_desc_t *stored = conv->weight->impl;
    conv_prim *p;
    dnnl_convolution_desc_t cd;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t po = NULL;
    dnnl_primitive_desc_t pd = NULL;
    const dnnl_memory_desc_t *md;
    const char *impl = "";
    float alpha;
    dnnl_alg_kind_t alg = eltwise_of(act, &alpha);
    size_t need;

    if (cc->nprims == CONV_MAX_PRIMS)
        sdxs_panic("more than %d convolution shapes", CONV_MAX_PRIMS);
    p = &cc->prims[cc->nprims];
    memset(p, 0, sizeof(*p));

    DNNL_TRY(dnnl_primitive_attr_create(&attr));
    DNNL_TRY(dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user));
    DNNL_TRY(dnnl_post_ops_create(&po));
    if (residual)
        DNNL_TRY(dnnl_post_ops_append_sum(po, 1.0f));
    if (alg != dnnl_alg_kind_undef)
        DNNL_TRY(dnnl_post_ops_append_eltwise(po, 1.0f, alg, alpha, 0.0f));
    DNNL_TRY(dnnl_primitive_attr_set_post_ops(attr, po));

    /* The stored layout first; any layout (and a private copy) if that is not implemented, or
     * only by oneDNN's reference code (which is a hundred times slower, e.g. on a small input). */
    DNNL_TRY(conv_desc(&cd, cc->dt, conv->cin, conv->cout, conv->kernel, conv->stride, conv->pad,
                       h, w, stored, bias));
    if (dnnl_primitive_desc_create(&pd, &cd, attr, cc->engine, NULL) == dnnl_success) {
        dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl);
        if (!strncmp(impl, "ref", 3)) {
            dnnl_primitive_desc_destroy(pd);
            pd = NULL;
        }
    }
    if (!pd) {
        dnnl_memory_desc_t any;
        DNNL_TRY(dnnl_memory_desc_init_by_tag(&any, 4, stored->dims, cc->dt,
                                              dnnl_format_tag_any));
        DNNL_TRY(conv_desc(&cd, cc->dt, conv->cin, conv->cout, conv->kernel, conv->stride,
                           conv->pad, h, w, &any, bias));
        DNNL_TRY(dnnl_primitive_desc_create(&pd, &cd, attr, cc->engine, NULL));
        SDXS_DEBUG("cpu", "convolution %dx%d at %lldx%lld: private weight copy", conv->cin,
                   conv->cout, (long long)h, (long long)w);
    }
    dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl);
    if (!strncmp(impl, "ref", 3))
        SDXS_WARN("cpu", "convolution %d->%d k%d at %lldx%lld uses oneDNN's slow reference code",
                  conv->cin, conv->cout, conv->kernel, (long long)h, (long long)w);

    /* Memory objects whose data handles are set at each execution. */
    md = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    if (!dnnl_memory_desc_equal(md, stored)) {
        p->own_weights = malloc(dnnl_memory_desc_get_size(md));
        if (!p->own_weights || reorder(cc, stored, conv->weight->data, md, p->own_weights))
            goto fail;
    }
    DNNL_TRY(dnnl_primitive_create(&p->prim, pd));
    DNNL_TRY(dnnl_memory_create(&p->src, dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0),
                                cc->engine, DNNL_MEMORY_NONE));
    DNNL_TRY(dnnl_memory_create(&p->wei, md, cc->engine, DNNL_MEMORY_NONE));
    DNNL_TRY(dnnl_memory_create(&p->dst, dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0),
                                cc->engine, DNNL_MEMORY_NONE));
    if (bias)
        DNNL_TRY(dnnl_memory_create(&p->bia,
                                    dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 1),
                                    cc->engine, DNNL_MEMORY_NONE));
    DNNL_TRY(dnnl_memory_create(&p->scratch,
                                dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0),
                                cc->engine, DNNL_MEMORY_NONE));
    need = dnnl_memory_desc_get_size(dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0));
    if (need > cc->scratch_bytes) {
        void *s = realloc(cc->scratch, need);
        if (!s)
            goto fail;
        cc->scratch = s;
        cc->scratch_bytes = need;
    }
    p->weight = conv->weight;
    p->h = h;
    p->w = w;
    p->stride = conv->stride;
    p->pad = conv->pad;
    p->act = act;
    p->residual = residual;
    p->bias = bias;
    dnnl_primitive_desc_destroy(pd);
    dnnl_post_ops_destroy(po);
    dnnl_primitive_attr_destroy(attr);
    cc->nprims++;
    return p;

fail:
    dnnl_primitive_destroy(p->prim);
    dnnl_memory_destroy(p->src);
    dnnl_memory_destroy(p->wei);
    dnnl_memory_destroy(p->bia);
    dnnl_memory_destroy(p->dst);
    dnnl_memory_destroy(p->scratch);
    free(p->own_weights);
    memset(p, 0, sizeof(*p));
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    if (po)
        dnnl_post_ops_destroy(po);
    if (attr)
        dnnl_primitive_attr_destroy(attr);
    return NULL;
}

/* Rounds n floats to bfloat16, to nearest even (the inputs are finite). */
static void to_bf16(uint16_t *dst, const float *src, int64_t n)
{
#pragma omp parallel for
    for (int64_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &src[i], 4);
        dst[i] = (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
    }
}

static conv_prim *find_prim(cpu_conv_cache *cc, const sdxs_conv2d *conv, int64_t h, int64_t w,
                            bool residual, bool bias, sdxs_act act)
{
    for (int i = cc->nprims - 1; i >= 0; i--) {
        conv_prim *p = &cc->prims[i];
        if (p->weight == conv->weight && p->h == h && p->w == w && p->stride == conv->stride &&
            p->pad == conv->pad && p->act == act && p->residual == residual && p->bias == bias)
            return p;
    }
    return NULL;
}

int cpu_conv_run(cpu_conv_cache *cc, sdxs_tensor *y, const sdxs_tensor *x,
                 const sdxs_conv2d *conv, const sdxs_tensor *chan_bias,
                 const sdxs_tensor *residual, sdxs_act act)
{
    int64_t n = x->ne[0], h = x->ne[2], w = x->ne[3], cout = conv->cout;
    int64_t in_img = conv->cin * h * w, out_img = cout * y->ne[2] * y->ne[3];
    bool bias = conv->bias || chan_bias;
    conv_prim *p = find_prim(cc, conv, h, w, residual != NULL, bias, act);
    dnnl_exec_arg_t args[5];
    int nargs = 0;

    if (!p) {
        p = make_prim(cc, conv, h, w, residual != NULL, bias, act);
        if (!p)
            return SDXS_ERR_RUNTIME;
    }
    /* One image at a time: its bias (with its own time-embedding term), residual, output. */
    dnnl_memory_set_data_handle(p->wei, p->own_weights ? p->own_weights : conv->weight->data);
    dnnl_memory_set_data_handle(p->scratch, cc->scratch);
    if (cc->dt == dnnl_bf16 && cc->src16_cap < in_img) {
        uint16_t *s16 = realloc(cc->src16, (size_t)in_img * sizeof(uint16_t));
        if (!s16)
            return SDXS_ERR_RUNTIME;
        cc->src16 = s16;
        cc->src16_cap = in_img;
    }
    for (int64_t b = 0; b < n; b++) {
        float *out = (float *)y->data + b * out_img;
        nargs = 0;
        if (bias) {
            if (cc->bias_cap < cout) {
                float *nb = realloc(cc->bias, (size_t)cout * sizeof(float));
                if (!nb)
                    return SDXS_ERR_RUNTIME;
                cc->bias = nb;
                cc->bias_cap = cout;
            }
            for (int64_t c = 0; c < cout; c++) {
                float v = conv->bias ? ((const float *)conv->bias->data)[c] : 0.0f;
                if (chan_bias)
                    v += ((const float *)chan_bias->data)[b * cout + c];
                cc->bias[c] = v;
            }
            dnnl_memory_set_data_handle(p->bia, cc->bias);
            args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_BIAS, p->bia};
        }
        if (residual)
            memcpy(out, (const float *)residual->data + b * out_img,
                   (size_t)out_img * sizeof(float));
        if (cc->dt == dnnl_bf16) {
            to_bf16(cc->src16, (const float *)x->data + b * in_img, in_img);
            dnnl_memory_set_data_handle(p->src, cc->src16);
        } else {
            dnnl_memory_set_data_handle(p->src, (float *)x->data + b * in_img);
        }
        dnnl_memory_set_data_handle(p->dst, out);
        args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_SRC, p->src};
        args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_WEIGHTS, p->wei};
        args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_DST, p->dst};
        args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, p->scratch};
        if (dnnl_primitive_execute(p->prim, cc->stream, nargs, args) != dnnl_success)
            return SDXS_ERR_RUNTIME;
    }
    return dnnl_stream_wait(cc->stream) == dnnl_success ? 0 : SDXS_ERR_RUNTIME;
}
