/* exec.c: the dispatcher between model code and a backend, and the one owner of activation and
 * weight placement.
 *
 * Every operation checks its shapes, takes its output from the activation arena and calls the
 * backend's entry. A planning pass runs the same calls without computing, so the arena's size is
 * known before the first executing pass and offsets repeat exactly from run to run.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/backend.h"

#define EXEC_MAX_TENSORS 16384 /* tensor handles one run may create */
#define EXEC_MAX_LIVE 4096     /* activation blocks alive at once */
#define EXEC_MAX_PLANS 64      /* shape keys remembered */
#define EXEC_ALIGN 256         /* bytes; enough for any vector load and for cuBLAS/cuDNN */

typedef struct exec_block {
    size_t offset, size;
} exec_block;

typedef struct exec_plan {
    uint64_t key;
    size_t bytes;
} exec_plan;

struct sdxs_exec {
    sdxs_backend *be;
    bool planning; /* this pass only computes shapes and offsets */
    bool replay;   /* the backend replays a recording: no operation is issued */
    int status;    /* first backend failure of this pass, 0 if none */
    const char *failed_op;

    /* The activation arena: blocks sorted by offset, first fit. */
    void *base;
    size_t capacity, peak;
    exec_block blocks[EXEC_MAX_LIVE];
    int nblocks;

    sdxs_tensor *tensors; /* EXEC_MAX_TENSORS handles, reset at every pass */
    int ntensors;

    exec_plan plans[EXEC_MAX_PLANS];
    int nplans;

    /* Per-operation wall time of executing passes, when profiling (synchronous backends only:
     * an asynchronous backend's entries return before the work is done). */
    bool profile;
    sdxs_op_profile prof[SDXS_PROFILE_MAX_OPS];
    int nprof;
};

size_t sdxs_dtype_size(sdxs_dtype dt)
{
    switch (dt) {
    case SDXS_DTYPE_F32: return 4;
    case SDXS_DTYPE_F16: return 2;
    case SDXS_DTYPE_BF16: return 2;
    case SDXS_DTYPE_U8: return 1;
    }
    sdxs_panic("bad dtype %d", (int)dt);
}

const char *sdxs_dtype_name(sdxs_dtype dt)
{
    switch (dt) {
    case SDXS_DTYPE_F32: return "F32";
    case SDXS_DTYPE_F16: return "F16";
    case SDXS_DTYPE_BF16: return "BF16";
    case SDXS_DTYPE_U8: return "U8";
    }
    return "?";
}

/* ---- backends ---- */

void sdxs_backend_free(sdxs_backend *be)
{
    if (be)
        be->ops->destroy(be);
}

const char *sdxs_backend_name(const sdxs_backend *be) { return be->ops->name; }

#ifndef SDXS_HAVE_CUDA
sdxs_status sdxs_backend_cuda_create(sdxs_precision precision, sdxs_backend **out,
                                     sdxs_error *err)
{
    *out = NULL;
    return sdxs_fail(err, SDXS_ERR_RUNTIME, "backend",
                     "this build of sdxs has no CUDA backend (configured with SDXS_CUDA=OFF, or "
                     "nvcc was not found)");
}
#endif

/* ---- contexts ---- */

sdxs_status sdxs_exec_create(sdxs_backend *be, sdxs_exec **out, sdxs_error *err)
{
    sdxs_exec *e = sdxs_calloc(1, sizeof(*e), err, "an execution context");
    if (!e)
        return SDXS_ERR_RUNTIME;
    e->tensors = sdxs_calloc(EXEC_MAX_TENSORS, sizeof(sdxs_tensor), err, "tensor handles");
    if (!e->tensors) {
        free(e);
        return SDXS_ERR_RUNTIME;
    }
    e->be = be;
    *out = e;
    return SDXS_OK;
}

void sdxs_exec_free(sdxs_exec *e)
{
    if (!e)
        return;
    free(e->tensors);
    free(e);
}

sdxs_backend *sdxs_exec_backend(sdxs_exec *e) { return e->be; }
bool sdxs_exec_planning(const sdxs_exec *e) { return e->planning; }
size_t sdxs_exec_arena_bytes(const sdxs_exec *e) { return e->capacity; }

/* ---- the arena ---- */

static size_t align_up(size_t n) { return (n + EXEC_ALIGN - 1) / EXEC_ALIGN * EXEC_ALIGN; }

static size_t arena_alloc(sdxs_exec *e, size_t size)
{
    size_t offset = 0;
    int at = 0;

    /* First fit: the first gap between live blocks that holds size, else after the last. */
    size = align_up(size ? size : 1);
    for (at = 0; at < e->nblocks; at++) {
        if (e->blocks[at].offset - offset >= size)
            break;
        offset = e->blocks[at].offset + e->blocks[at].size;
    }
    if (e->nblocks == EXEC_MAX_LIVE)
        sdxs_panic("more than %d activations alive at once", EXEC_MAX_LIVE);
    memmove(&e->blocks[at + 1], &e->blocks[at], (size_t)(e->nblocks - at) * sizeof(exec_block));
    e->blocks[at].offset = offset;
    e->blocks[at].size = size;
    e->nblocks++;
    if (offset + size > e->peak)
        e->peak = offset + size;
    if (!e->planning && offset + size > e->capacity)
        sdxs_panic("arena overflow: the executing pass differs from its plan (%zu > %zu)",
                   offset + size, e->capacity);
    return offset;
}

static void arena_free(sdxs_exec *e, size_t offset)
{
    for (int i = 0; i < e->nblocks; i++) {
        if (e->blocks[i].offset == offset) {
            memmove(&e->blocks[i], &e->blocks[i + 1],
                    (size_t)(e->nblocks - i - 1) * sizeof(exec_block));
            e->nblocks--;
            return;
        }
    }
    sdxs_panic("freeing an arena block that is not allocated (offset %zu)", offset);
}

/* ---- tensors ---- */

int64_t sdxs_tensor_dim(const sdxs_tensor *t, int i)
{
    SDXS_ASSERT(i >= 0 && i < t->ndim);
    return t->ne[i];
}

int sdxs_tensor_ndim(const sdxs_tensor *t) { return t->ndim; }

int64_t sdxs_tensor_numel(const sdxs_tensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= t->ne[i];
    return n;
}

static sdxs_tensor *new_tensor(sdxs_exec *e, sdxs_dtype dtype, int ndim, const int64_t *shape)
{
    sdxs_tensor *t;
    size_t bytes = sdxs_dtype_size(dtype);

    if (e->ntensors == EXEC_MAX_TENSORS)
        sdxs_panic("more than %d tensors in one run", EXEC_MAX_TENSORS);
    SDXS_ASSERT(ndim >= 1 && ndim <= 4);
    t = &e->tensors[e->ntensors++];
    memset(t, 0, sizeof(*t));
    t->ndim = ndim;
    for (int i = 0; i < 4; i++)
        t->ne[i] = i < ndim ? shape[i] : 1;
    for (int i = 0; i < ndim; i++) {
        SDXS_ASSERT(shape[i] > 0);
        if (!sdxs_mul_size(bytes, (size_t)shape[i], &bytes))
            sdxs_panic("tensor size overflows");
    }
    t->dtype = dtype;
    t->kind = SDXS_TENSOR_ACTIVATION;
    t->nbytes = bytes;
    t->offset = arena_alloc(e, bytes);
    t->data = e->planning ? NULL : (char *)e->base + t->offset;
    return t;
}

static sdxs_tensor *new_act(sdxs_exec *e, int ndim, const int64_t *shape)
{
    return new_tensor(e, e->be->ops->act_dtype(e->be), ndim, shape);
}

void sdxs_release(sdxs_exec *e, sdxs_tensor *t)
{
    if (!t || t->kind != SDXS_TENSOR_ACTIVATION)
        return;
    if (t->released)
        sdxs_panic("tensor released twice");
    t->released = true;
    arena_free(e, t->offset);
}

/* ---- runs ---- */

static void reset_pass(sdxs_exec *e, bool planning)
{
    e->planning = planning;
    e->replay = false;
    e->status = 0;
    e->failed_op = NULL;
    e->nblocks = 0;
    e->ntensors = 0;
    if (planning)
        e->peak = 0;
}

sdxs_status sdxs_exec_run(sdxs_exec *e, uint64_t shape_key, sdxs_run_fn fn, void *user,
                          sdxs_error *err)
{
    const sdxs_backend_ops *ops = e->be->ops;
    exec_plan *plan = NULL;
    sdxs_status st;
    bool replay = false;
    int rc;

    for (int i = 0; i < e->nplans; i++)
        if (e->plans[i].key == shape_key)
            plan = &e->plans[i];

    /* Planning pass: shapes and offsets only; grows the arena when this shape needs more. */
    if (!plan) {
        reset_pass(e, true);
        st = fn(e, user);
        if (st != SDXS_OK)
            return st;
        if (e->peak > e->capacity) {
            void *base = NULL;
            st = ops->arena_reserve(e->be, e->peak, &base, err);
            if (st != SDXS_OK)
                return st;
            e->base = base;
            e->capacity = e->peak;
            SDXS_DEBUG("exec", "arena grown to %.1f MiB for shape key %016llx",
                       (double)e->capacity / 1048576.0, (unsigned long long)shape_key);
        }
        if (e->nplans == EXEC_MAX_PLANS)
            e->nplans = 0; /* forget the oldest: they are cheap to make again */
        plan = &e->plans[e->nplans++];
        plan->key = shape_key;
        plan->bytes = e->peak;
    }

    /* Executing pass. */
    reset_pass(e, false);
    rc = ops->run_begin(e->be, shape_key, &replay);
    if (rc)
        return sdxs_fail(err, SDXS_ERR_RUNTIME, NULL, "%s backend: could not start a run",
                         ops->name);
    e->replay = replay;
    st = fn(e, user);
    rc = ops->run_end(e->be);
    if (st != SDXS_OK)
        return st;
    if (e->status)
        return sdxs_fail(err, SDXS_ERR_RUNTIME, NULL, "%s backend: operation %s failed",
                         ops->name, e->failed_op ? e->failed_op : "?");
    if (rc)
        return sdxs_fail(err, SDXS_ERR_RUNTIME, NULL, "%s backend: run failed", ops->name);
    return SDXS_OK;
}

void sdxs_exec_mark(sdxs_exec *e, int mark)
{
    SDXS_ASSERT(mark >= 0 && mark < SDXS_MAX_MARKS);
    if (!e->planning && e->be->ops->mark)
        e->be->ops->mark(e->be, mark);
}

double sdxs_exec_elapsed_ms(const sdxs_exec *e, int from_mark, int to_mark)
{
    if (!e->be->ops->elapsed_ms)
        return -1.0;
    return e->be->ops->elapsed_ms(e->be, from_mark, to_mark);
}

static void profile_add(sdxs_exec *e, const char *op, double ms)
{
    int i = 0;
    while (i < e->nprof && e->prof[i].op != op)
        i++;
    if (i == e->nprof) {
        if (e->nprof == SDXS_PROFILE_MAX_OPS)
            return;
        e->prof[e->nprof++] = (sdxs_op_profile){op, 0, 0.0};
    }
    e->prof[i].calls++;
    e->prof[i].ms += ms;
}

void sdxs_exec_profile(sdxs_exec *e, bool on)
{
    e->profile = on;
    e->nprof = 0;
}

int sdxs_exec_profile_get(const sdxs_exec *e, const sdxs_op_profile **out)
{
    *out = e->prof;
    return e->nprof;
}

/* Issues a backend call unless this pass plans or replays, or an earlier call failed. */
#define ISSUE(e, opname, call)                                                                     \
    do {                                                                                           \
        if (!(e)->planning && !(e)->replay && !(e)->status) {                                      \
            double t0_ = (e)->profile ? sdxs_now_ms() : 0.0;                                       \
            int rc_ = (call);                                                                      \
            if ((e)->profile)                                                                      \
                profile_add((e), (opname), sdxs_now_ms() - t0_);                                   \
            if (rc_) {                                                                             \
                (e)->status = rc_;                                                                 \
                (e)->failed_op = (opname);                                                         \
            }                                                                                      \
        }                                                                                          \
    } while (0)

/* Shape checks name the operation; a mismatch is a bug in model code. */
#define CHECK(cond, opname)                                                                        \
    do {                                                                                           \
        if (!(cond))                                                                               \
            sdxs_panic("%s: shape check failed: %s", (opname), #cond);                             \
    } while (0)

static bool same_shape(const sdxs_tensor *a, const sdxs_tensor *b)
{
    if (a->ndim != b->ndim)
        return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->ne[i] != b->ne[i])
            return false;
    return true;
}

static void check_live(const sdxs_tensor *t, const char *op)
{
    if (t && t->kind == SDXS_TENSOR_ACTIVATION && t->released)
        sdxs_panic("%s: input tensor was already released", op);
}

/* ---- moving data ---- */

sdxs_tensor *sdxs_op_upload(sdxs_exec *e, int ndim, const int64_t *shape, const float *src)
{
    sdxs_tensor *y = new_act(e, ndim, shape);
    /* Uploads happen even in a replayed pass: they feed the recording's inputs. */
    if (!e->planning && !e->status) {
        int rc = e->be->ops->upload(e->be, y, src);
        if (rc) {
            e->status = rc;
            e->failed_op = "upload";
        }
    }
    return y;
}

void sdxs_op_download(sdxs_exec *e, const sdxs_tensor *t, float *dst)
{
    check_live(t, "download");
    if (!e->planning && !e->status) {
        int rc = e->be->ops->download(e->be, t, dst);
        if (rc) {
            e->status = rc;
            e->failed_op = "download";
        }
    }
}

sdxs_tensor *sdxs_op_from_rgb8(sdxs_exec *e, const uint8_t *src, int64_t n, int64_t h,
                               int64_t w, float scale, float shift)
{
    int64_t shape[4] = {n, 3, h, w};
    sdxs_tensor *y = new_act(e, 4, shape);
    if (!e->planning && !e->status) {
        int rc = e->be->ops->from_rgb8(e->be, y, src, scale, shift);
        if (rc) {
            e->status = rc;
            e->failed_op = "from_rgb8";
        }
    }
    return y;
}

void sdxs_op_to_rgb8(sdxs_exec *e, const sdxs_tensor *x, float scale, float shift, uint8_t *dst)
{
    check_live(x, "to_rgb8");
    CHECK(x->ndim == 4 && x->ne[1] == 3, "to_rgb8");
    if (!e->planning && !e->status) {
        int rc = e->be->ops->to_rgb8(e->be, x, scale, shift, dst);
        if (rc) {
            e->status = rc;
            e->failed_op = "to_rgb8";
        }
    }
}

/* ---- compute ---- */

sdxs_tensor *sdxs_op_conv2d(sdxs_exec *e, const sdxs_tensor *x, const sdxs_conv2d *conv,
                            const sdxs_tensor *chan_bias, const sdxs_tensor *residual,
                            sdxs_act act)
{
    int64_t shape[4];
    sdxs_tensor *y;

    check_live(x, "conv2d");
    check_live(chan_bias, "conv2d");
    check_live(residual, "conv2d");
    CHECK(x->ndim == 4 && x->ne[1] == conv->cin, "conv2d");
    CHECK(conv->stride >= 1 && conv->kernel >= 1 && conv->pad >= 0, "conv2d");
    shape[0] = x->ne[0];
    shape[1] = conv->cout;
    shape[2] = (x->ne[2] + 2 * conv->pad - conv->kernel) / conv->stride + 1;
    shape[3] = (x->ne[3] + 2 * conv->pad - conv->kernel) / conv->stride + 1;
    CHECK(shape[2] > 0 && shape[3] > 0, "conv2d");
    CHECK(!chan_bias || (chan_bias->ndim == 2 && chan_bias->ne[0] == shape[0] &&
                         chan_bias->ne[1] == conv->cout),
          "conv2d");
    y = new_act(e, 4, shape);
    CHECK(!residual || same_shape(residual, y), "conv2d");
    ISSUE(e, "conv2d", e->be->ops->conv2d(e->be, y, x, conv, chan_bias, residual, act));
    return y;
}

sdxs_tensor *sdxs_op_linear(sdxs_exec *e, const sdxs_tensor *x, const sdxs_linear *lin,
                            const sdxs_tensor *residual, sdxs_act act)
{
    int64_t shape[4];
    sdxs_tensor *y;

    check_live(x, "linear");
    check_live(residual, "linear");
    CHECK((x->ndim == 2 || x->ndim == 3) && x->ne[x->ndim - 1] == lin->din, "linear");
    memcpy(shape, x->ne, sizeof(shape));
    shape[x->ndim - 1] = lin->dout;
    y = new_act(e, x->ndim, shape);
    CHECK(!residual || same_shape(residual, y), "linear");
    ISSUE(e, "linear", e->be->ops->linear(e->be, y, x, lin, residual, act));
    return y;
}

sdxs_tensor *sdxs_op_group_norm(sdxs_exec *e, const sdxs_tensor *x, const sdxs_norm *norm,
                                sdxs_act act)
{
    sdxs_tensor *y;
    check_live(x, "group_norm");
    CHECK(x->ndim == 4 && x->ne[1] == norm->channels, "group_norm");
    CHECK(norm->groups > 0 && norm->channels % norm->groups == 0, "group_norm");
    CHECK(act == SDXS_ACT_NONE || act == SDXS_ACT_SILU, "group_norm");
    y = new_act(e, 4, x->ne);
    ISSUE(e, "group_norm", e->be->ops->group_norm(e->be, y, x, norm, act));
    return y;
}

sdxs_tensor *sdxs_op_layer_norm(sdxs_exec *e, const sdxs_tensor *x, const sdxs_norm *norm)
{
    sdxs_tensor *y;
    check_live(x, "layer_norm");
    CHECK(x->ndim >= 2 && x->ne[x->ndim - 1] == norm->channels, "layer_norm");
    y = new_act(e, x->ndim, x->ne);
    ISSUE(e, "layer_norm", e->be->ops->layer_norm(e->be, y, x, norm));
    return y;
}

static void check_cols(sdxs_cols c, int heads, const char *op)
{
    check_live(c.t, op);
    CHECK(c.t->ndim == 3, op);
    CHECK(c.first >= 0 && c.count > 0 && c.first + c.count <= c.t->ne[2], op);
    CHECK(c.count % heads == 0, op);
}

sdxs_tensor *sdxs_op_attention(sdxs_exec *e, sdxs_cols q, sdxs_cols k, sdxs_cols v, int heads,
                               bool causal)
{
    int64_t shape[3];
    sdxs_tensor *y;

    CHECK(heads > 0, "attention");
    check_cols(q, heads, "attention");
    check_cols(k, heads, "attention");
    check_cols(v, heads, "attention");
    CHECK(q.count == k.count && v.count == q.count, "attention");
    CHECK(k.t->ne[0] == q.t->ne[0] && v.t->ne[0] == q.t->ne[0], "attention");
    CHECK(k.t->ne[1] == v.t->ne[1], "attention");
    CHECK(!causal || q.t->ne[1] == k.t->ne[1], "attention");
    shape[0] = q.t->ne[0];
    shape[1] = q.t->ne[1];
    shape[2] = q.count;
    y = new_act(e, 3, shape);
    ISSUE(e, "attention", e->be->ops->attention(e->be, y, q, k, v, heads, causal));
    return y;
}

sdxs_tensor *sdxs_op_geglu(sdxs_exec *e, const sdxs_tensor *x)
{
    int64_t shape[4];
    sdxs_tensor *y;
    check_live(x, "geglu");
    CHECK(x->ndim >= 2 && x->ne[x->ndim - 1] % 2 == 0, "geglu");
    memcpy(shape, x->ne, sizeof(shape));
    shape[x->ndim - 1] /= 2;
    y = new_act(e, x->ndim, shape);
    ISSUE(e, "geglu", e->be->ops->geglu(e->be, y, x));
    return y;
}

sdxs_tensor *sdxs_op_axpby(sdxs_exec *e, float a, const sdxs_tensor *x, float b,
                           const sdxs_tensor *y_in, sdxs_act act)
{
    sdxs_tensor *y;
    check_live(x, "axpby");
    check_live(y_in, "axpby");
    CHECK(!y_in || same_shape(x, y_in), "axpby");
    y = new_act(e, x->ndim, x->ne);
    ISSUE(e, "axpby", e->be->ops->axpby(e->be, y, a, x, b, y_in, act));
    return y;
}

sdxs_tensor *sdxs_op_clamp(sdxs_exec *e, const sdxs_tensor *x, float lo, float hi)
{
    sdxs_tensor *y;
    check_live(x, "clamp");
    CHECK(lo <= hi, "clamp");
    y = new_act(e, x->ndim, x->ne);
    ISSUE(e, "clamp", e->be->ops->clamp(e->be, y, x, lo, hi));
    return y;
}

sdxs_tensor *sdxs_op_tanh_clamp(sdxs_exec *e, const sdxs_tensor *x, float limit)
{
    sdxs_tensor *y;
    check_live(x, "tanh_clamp");
    CHECK(limit > 0.0f, "tanh_clamp");
    y = new_act(e, x->ndim, x->ne);
    ISSUE(e, "tanh_clamp", e->be->ops->tanh_clamp(e->be, y, x, limit));
    return y;
}

sdxs_tensor *sdxs_op_upsample2x(sdxs_exec *e, const sdxs_tensor *x)
{
    int64_t shape[4];
    sdxs_tensor *y;
    check_live(x, "upsample2x");
    CHECK(x->ndim == 4, "upsample2x");
    shape[0] = x->ne[0];
    shape[1] = x->ne[1];
    shape[2] = x->ne[2] * 2;
    shape[3] = x->ne[3] * 2;
    y = new_act(e, 4, shape);
    ISSUE(e, "upsample2x", e->be->ops->upsample2x(e->be, y, x));
    return y;
}

sdxs_tensor *sdxs_op_concat_channels(sdxs_exec *e, const sdxs_tensor *a, const sdxs_tensor *b)
{
    int64_t shape[4];
    sdxs_tensor *y;
    check_live(a, "concat_channels");
    check_live(b, "concat_channels");
    CHECK(a->ndim == 4 && b->ndim == 4, "concat_channels");
    CHECK(a->ne[0] == b->ne[0] && a->ne[2] == b->ne[2] && a->ne[3] == b->ne[3],
          "concat_channels");
    memcpy(shape, a->ne, sizeof(shape));
    shape[1] = a->ne[1] + b->ne[1];
    y = new_act(e, 4, shape);
    ISSUE(e, "concat_channels", e->be->ops->concat_channels(e->be, y, a, b));
    return y;
}

sdxs_tensor *sdxs_op_image_to_tokens(sdxs_exec *e, const sdxs_tensor *x)
{
    int64_t shape[3];
    sdxs_tensor *y;
    check_live(x, "image_to_tokens");
    CHECK(x->ndim == 4, "image_to_tokens");
    shape[0] = x->ne[0];
    shape[1] = x->ne[2] * x->ne[3];
    shape[2] = x->ne[1];
    y = new_act(e, 3, shape);
    ISSUE(e, "image_to_tokens", e->be->ops->image_to_tokens(e->be, y, x));
    return y;
}

sdxs_tensor *sdxs_op_tokens_to_image(sdxs_exec *e, const sdxs_tensor *x, int64_t h, int64_t w,
                                     const sdxs_tensor *residual)
{
    int64_t shape[4];
    sdxs_tensor *y;
    check_live(x, "tokens_to_image");
    check_live(residual, "tokens_to_image");
    CHECK(x->ndim == 3 && x->ne[1] == h * w, "tokens_to_image");
    shape[0] = x->ne[0];
    shape[1] = x->ne[2];
    shape[2] = h;
    shape[3] = w;
    y = new_act(e, 4, shape);
    CHECK(!residual || same_shape(residual, y), "tokens_to_image");
    ISSUE(e, "tokens_to_image", e->be->ops->tokens_to_image(e->be, y, x, residual));
    return y;
}

sdxs_tensor *sdxs_op_embed(sdxs_exec *e, const int32_t *ids, int64_t n, int64_t l,
                           const sdxs_tensor *table, const sdxs_tensor *pos)
{
    int64_t shape[3];
    sdxs_tensor *y;
    CHECK(table->ndim == 2 && pos->ndim == 2 && pos->ne[1] == table->ne[1], "embed");
    CHECK(l <= pos->ne[0], "embed");
    for (int64_t i = 0; !e->planning && i < n * l; i++)
        CHECK(ids[i] >= 0 && ids[i] < table->ne[0], "embed");
    shape[0] = n;
    shape[1] = l;
    shape[2] = table->ne[1];
    y = new_act(e, 3, shape);
    /* Like an upload, the ids are an input: read even when the pass replays. */
    if (!e->planning && !e->status) {
        int rc = e->be->ops->embed(e->be, y, ids, table, pos);
        if (rc) {
            e->status = rc;
            e->failed_op = "embed";
        }
    }
    return y;
}

sdxs_tensor *sdxs_op_timestep_embedding(sdxs_exec *e, const float *timesteps, int64_t n,
                                        int dim, bool flip_sin_to_cos, float freq_shift)
{
    enum { MAX_DIM = 4096, MAX_N = 256 };
    static const float max_period = 10000.0f;
    int64_t shape[2] = {n, dim};
    int half = dim / 2;
    float freq[MAX_DIM / 2];
    float *host;
    sdxs_tensor *y;

    CHECK(dim > 0 && dim % 2 == 0 && dim <= MAX_DIM && n > 0 && n <= MAX_N,
          "timestep_embedding");
    if (e->planning)
        return new_act(e, 2, shape);

    /* As diffusers' get_timestep_embedding, in float32 and in its order of operations:
     * exp(-ln(max_period) * i / (half - shift)), t * freq, then [sin, cos] or [cos, sin]. */
    host = malloc(sizeof(float) * (size_t)(n * dim));
    if (!host)
        sdxs_panic("out of memory for a timestep embedding");
    for (int i = 0; i < half; i++) {
        float exponent = -logf(max_period) * (float)i;
        exponent = exponent / ((float)half - freq_shift);
        freq[i] = expf(exponent);
    }
    for (int64_t b = 0; b < n; b++) {
        float *row = host + b * dim;
        for (int i = 0; i < half; i++) {
            float arg = timesteps[b] * freq[i];
            float s = sinf(arg), c = cosf(arg);
            row[i] = flip_sin_to_cos ? c : s;
            row[half + i] = flip_sin_to_cos ? s : c;
        }
    }
    y = sdxs_op_upload(e, 2, shape, host);
    free(host);
    return y;
}

sdxs_tensor *sdxs_op_gather(sdxs_exec *e, const sdxs_tensor *x, const int32_t *index,
                            int64_t count)
{
    int64_t shape[4];
    sdxs_tensor *y;
    check_live(x, "gather");
    CHECK(count > 0, "gather");
    for (int64_t i = 0; !e->planning && i < count; i++)
        CHECK(index[i] >= 0 && index[i] < x->ne[0], "gather");
    memcpy(shape, x->ne, sizeof(shape));
    shape[0] = count;
    y = new_act(e, x->ndim, shape);
    if (!e->planning && !e->status) {
        int rc = e->be->ops->gather(e->be, y, x, index);
        if (rc) {
            e->status = rc;
            e->failed_op = "gather";
        }
    }
    return y;
}

/* ---- weights ---- */

#define STORE_ALIGN 256

struct sdxs_weight_store {
    sdxs_backend *be;
    bool sizing;
    size_t offset;      /* next free byte of the weight block */
    size_t total;       /* bytes reserved after sizing */
    sdxs_tensor **list; /* handles of the current pass */
    size_t count, cap;
};

sdxs_status sdxs_weight_store_create(sdxs_backend *be, sdxs_weight_store **out, sdxs_error *err)
{
    sdxs_weight_store *ws = sdxs_calloc(1, sizeof(*ws), err, "a weight store");
    if (!ws)
        return SDXS_ERR_RUNTIME;
    ws->be = be;
    ws->sizing = true;
    *out = ws;
    return SDXS_OK;
}

static void store_drop_handles(sdxs_weight_store *ws)
{
    for (size_t i = 0; i < ws->count; i++)
        free(ws->list[i]);
    ws->count = 0;
}

void sdxs_weight_store_free(sdxs_weight_store *ws)
{
    if (!ws)
        return;
    store_drop_handles(ws);
    free(ws->list);
    free(ws);
}

bool sdxs_weight_store_sizing(const sdxs_weight_store *ws) { return ws->sizing; }
size_t sdxs_weight_store_bytes(const sdxs_weight_store *ws)
{
    return ws->sizing ? ws->offset : ws->total;
}

sdxs_status sdxs_weight_store_reserve(sdxs_weight_store *ws, sdxs_error *err)
{
    sdxs_status st;
    SDXS_ASSERT(ws->sizing);
    st = ws->be->ops->weights_reserve(ws->be, ws->offset, err);
    if (st != SDXS_OK)
        return st;
    ws->total = ws->offset;
    ws->offset = 0;
    ws->sizing = false;
    store_drop_handles(ws);
    return SDXS_OK;
}

sdxs_tensor *sdxs_weight_store_add(sdxs_weight_store *ws, sdxs_weight_role role, int ndim,
                                   const int64_t *shape, sdxs_dtype src_dtype, const void *src,
                                   sdxs_error *err)
{
    sdxs_tensor *t;

    SDXS_ASSERT(ndim >= 1 && ndim <= 4);
    if (ws->count == ws->cap) {
        size_t cap = ws->cap ? ws->cap * 2 : 256;
        sdxs_tensor **list = realloc(ws->list, cap * sizeof(*list));
        if (!list) {
            sdxs_fail(err, SDXS_ERR_RUNTIME, NULL, "out of memory for weight handles");
            return NULL;
        }
        ws->list = list;
        ws->cap = cap;
    }
    t = sdxs_calloc(1, sizeof(*t), err, "a weight handle");
    if (!t)
        return NULL;
    ws->list[ws->count++] = t;
    t->ndim = ndim;
    for (int i = 0; i < 4; i++)
        t->ne[i] = i < ndim ? shape[i] : 1;
    t->kind = SDXS_TENSOR_WEIGHT;
    t->role = role;
    ws->be->ops->weight_size(ws->be, t);
    t->offset = ws->offset;
    ws->offset += (t->nbytes + STORE_ALIGN - 1) / STORE_ALIGN * STORE_ALIGN;

    if (!ws->sizing) {
        if (ws->offset > ws->total)
            sdxs_panic("weight creation differs from its sizing pass");
        if (ws->be->ops->weight_create(ws->be, t, t->offset, src_dtype, src, err) != SDXS_OK)
            return NULL;
    }
    return t;
}
