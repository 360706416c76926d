/* cuda_backend.cu: the CUDA backend's table: creation, device memory, weight conversion, runs
 * recorded as CUDA graphs, and the entries that move host data in and out.
 *
 * Memory is planned: weights in one allocation, activations in one arena, one library workspace,
 * one buffer of group-norm statistics, and a staging area (pinned host + device) for host inputs
 * and outputs; only a shape's first run may grow the staging area. Runs: the first pass of a
 * shape key runs eagerly (cuDNN and cuBLASLt choose their algorithms, staging is sized), the
 * second is captured into a graph on the one stream, and later passes replay it: their entries
 * only copy host inputs into the same staging offsets the recording reads, and run_end copies the
 * outputs the recording left in staging to the callers' buffers.
 *
 * Environment: SDXS_CUDA_CONV=implicit uses the backend's own convolutions instead of cuDNN;
 * SDXS_CUDA_GRAPHS=0 runs every pass eagerly. The same file builds the emulated backend
 * (SDXS_CUDA_EMU, see emu.h) as sdxs_backend_cuda_emu_create.
 */
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/halfconv.h"

#ifdef SDXS_CUDA_EMU
#include "kernels/cuda/cuda_emu.h"
#define CU_CREATE_FN sdxs_backend_cuda_emu_create
#define CU_NAME "cuda-emu"
#else
#define CU_CREATE_FN sdxs_backend_cuda_create
#define CU_NAME "cuda"
#endif

namespace SDXS_CU_NS {

/* ---- errors ---- */

const char *cu_status_text(cudaError_t e) { return e == cudaSuccess ? nullptr : cudaGetErrorString(e); }

const char *cu_status_text(cublasStatus_t s)
{
    switch ((int)s) {
    case 0: return nullptr;
    case 1: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case 3: return "CUBLAS_STATUS_ALLOC_FAILED";
    case 7: return "CUBLAS_STATUS_INVALID_VALUE";
    case 8: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case 11: return "CUBLAS_STATUS_MAPPING_ERROR";
    case 13: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case 14: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case 15: return "CUBLAS_STATUS_NOT_SUPPORTED";
    default: return "CUBLAS_STATUS (unknown)";
    }
}

#ifdef SDXS_HAVE_CUDNN
const char *cu_status_text(cudnnStatus_t s)
{
    return s == CUDNN_STATUS_SUCCESS ? nullptr : cudnnGetErrorString(s);
}
#endif

int cu_fail(cu_backend *c, const char *what, const char *why, const char *file, int line)
{
    const char *at = strstr(file, "kernels/");
    SDXS_ERROR("cuda", "%s: %s failed: %s (%s:%d)", c && c->op ? c->op : "?", what, why,
               at ? at : file, line);
    if (c)
        c->failed = true;
    return SDXS_ERR_RUNTIME;
}

int cu_require_act(cu_backend *c, const sdxs_tensor *t, const char *what)
{
    char why[160];
    if (t->dtype == c->act)
        return 0;
    snprintf(why, sizeof(why), "%s holds %s, not the activation type %s", what,
             sdxs_dtype_name(t->dtype), sdxs_dtype_name(c->act));
    return cu_fail(c, "input type check", why, __FILE__, __LINE__);
}

static size_t align_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

/* ---- recordings ---- */

/* Drops every recorded graph: the arena or the staging area moved. */
static void invalidate_records(cu_backend *c)
{
    for (int i = 0; i < CU_MAX_RECORDS; i++) {
        cu_record *r = &c->records[i];
        if (r->exec)
            cudaGraphExecDestroy(r->exec);
        r->exec = nullptr;
        r->seen = false;
    }
}

static cu_record *record_for(cu_backend *c, uint64_t key)
{
    cu_record *free_slot = nullptr, *oldest = nullptr;
    for (int i = 0; i < CU_MAX_RECORDS; i++) {
        cu_record *r = &c->records[i];
        if (r->used && r->key == key)
            return r;
        if (!r->used && !free_slot)
            free_slot = r;
        if (r->used && (!oldest || r->last_run < oldest->last_run))
            oldest = r;
    }
    if (!free_slot) {
        free_slot = oldest;
        if (free_slot->exec)
            cudaGraphExecDestroy(free_slot->exec);
    }
    memset(free_slot, 0, sizeof(*free_slot));
    free_slot->used = true;
    free_slot->key = key;
    return free_slot;
}

/* ---- staging ---- */

/* Replaces the staging area by one of `bytes`, keeping what this pass already staged. Only an
 * eager pass grows it, after its queued copies have finished. */
static int stage_grow(cu_backend *c, size_t bytes)
{
    unsigned char *host = nullptr, *dev = nullptr;
    CU_CHECK(c, cudaStreamSynchronize(c->stream));
    CU_CHECK(c, cudaMallocHost(reinterpret_cast<void **>(&host), bytes));
    if (cudaMalloc(reinterpret_cast<void **>(&dev), bytes) != cudaSuccess) {
        cudaGetLastError();
        cudaFreeHost(host);
        return cu_fail(c, "cudaMalloc", "out of device memory for staging", __FILE__, __LINE__);
    }
    if (c->stage_used)
        memcpy(host, c->stage_host, c->stage_used);
    if (c->stage_host)
        cudaFreeHost(c->stage_host);
    if (c->stage_dev)
        cudaFree(c->stage_dev);
    c->stage_host = host;
    c->stage_dev = dev;
    c->stage_bytes = bytes;
    invalidate_records(c);
    SDXS_DEBUG("cuda", "staging grown to %.1f MiB", (double)bytes / 1048576.0);
    return 0;
}

int cu_stage_take(cu_backend *c, size_t bytes, size_t *offset)
{
    size_t off = align_up(c->stage_used, CU_STAGE_ALIGN);
    if (off + bytes > c->stage_bytes) {
        size_t want = align_up(off + bytes, CU_STAGE_ALIGN);
        if (c->mode != CU_EAGER)
            return cu_fail(c, "staging", "a recorded pass stages more than its first pass did",
                           __FILE__, __LINE__);
        if (want < 2 * c->stage_bytes)
            want = 2 * c->stage_bytes;
        if (want > CU_STAGE_MAX_BYTES)
            return cu_fail(c, "staging", "one run's host inputs and outputs exceed 1 GiB",
                           __FILE__, __LINE__);
        if (stage_grow(c, want))
            return SDXS_ERR_RUNTIME;
    }
    *offset = off;
    c->stage_used = off + bytes;
    c->host_io++;
    return 0;
}

/* ---- storage ---- */

static sdxs_dtype cu_act_dtype(const sdxs_backend *be) { return static_cast<cu_backend *>(be->impl)->act; }

static void cu_weight_size(sdxs_backend *be, sdxs_tensor *t)
{
    cu_backend *c = cu_of(be);
    size_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= (size_t)t->ne[i];
    t->dtype = t->role == SDXS_WEIGHT_VECTOR ? SDXS_DTYPE_F32 : c->act;
    t->nbytes = n * sdxs_dtype_size(t->dtype);
}

static sdxs_status cu_weights_reserve(sdxs_backend *be, size_t bytes, sdxs_error *err)
{
    cu_backend *c = cu_of(be);
    void *p = nullptr;
    if (c->weights)
        cudaFree(c->weights);
    c->weights = nullptr;
    c->weight_bytes = 0;
    if (cudaMalloc(&p, bytes ? bytes : 256) != cudaSuccess) {
        cudaGetLastError();
        return sdxs_fail(err, SDXS_ERR_RUNTIME, NULL, "out of GPU memory: %.1f MiB of weights",
                         (double)bytes / 1048576.0);
    }
    c->weights = p;
    c->weight_bytes = bytes;
    return SDXS_OK;
}

static float src_value(sdxs_dtype type, const void *src, size_t i)
{
    switch (type) {
    case SDXS_DTYPE_F32: return static_cast<const float *>(src)[i];
    case SDXS_DTYPE_F16: return sdxs_halfconv::f16_to_f32(static_cast<const uint16_t *>(src)[i]);
    case SDXS_DTYPE_BF16: return sdxs_halfconv::bf16_to_f32(static_cast<const uint16_t *>(src)[i]);
    case SDXS_DTYPE_U8: break;
    }
    return 0.0f;
}

static void put_value(sdxs_dtype type, void *dst, size_t i, float v)
{
    if (type == SDXS_DTYPE_F32)
        static_cast<float *>(dst)[i] = v;
    else if (type == SDXS_DTYPE_F16)
        static_cast<uint16_t *>(dst)[i] = sdxs_halfconv::f32_to_f16(v);
    else
        static_cast<uint16_t *>(dst)[i] = sdxs_halfconv::f32_to_bf16(v);
}

/* Converts on the host (convolution weights from (Cout, Cin, K, K) to (Cout, K, K, Cin)) and
 * copies into the weight block: once, at load. */
static sdxs_status cu_weight_create(sdxs_backend *be, sdxs_tensor *t, size_t offset, sdxs_dtype src_dtype,
                             const void *src, sdxs_error *err)
{
    cu_backend *c = cu_of(be);
    size_t n = t->nbytes / sdxs_dtype_size(t->dtype);
    void *host;
    cudaError_t e;

    if (src_dtype == SDXS_DTYPE_U8 || !src)
        return sdxs_fail(err, SDXS_ERR_MODEL, NULL, "cuda: weights of type %s cannot be loaded",
                         sdxs_dtype_name(src_dtype));
    if (t->role == SDXS_WEIGHT_CONV && t->ndim != 4)
        return sdxs_fail(err, SDXS_ERR_MODEL, NULL, "cuda: a convolution weight has %d dimensions",
                         t->ndim);
    SDXS_ASSERT(offset + t->nbytes <= c->weight_bytes);
    host = sdxs_alloc(t->nbytes, err, "a weight's conversion");
    if (!host)
        return SDXS_ERR_RUNTIME;
    if (t->role == SDXS_WEIGHT_CONV) {
        size_t co_n = (size_t)t->ne[0], ci_n = (size_t)t->ne[1], k = (size_t)t->ne[2];
        for (size_t co = 0; co < co_n; co++)
            for (size_t ci = 0; ci < ci_n; ci++)
                for (size_t ky = 0; ky < k; ky++)
                    for (size_t kx = 0; kx < k; kx++)
                        put_value(t->dtype, host, ((co * k + ky) * k + kx) * ci_n + ci,
                                  src_value(src_dtype, src, ((co * ci_n + ci) * k + ky) * k + kx));
    } else {
        for (size_t i = 0; i < n; i++)
            put_value(t->dtype, host, i, src_value(src_dtype, src, i));
    }
    t->data = static_cast<char *>(c->weights) + offset;
    e = cudaMemcpy(t->data, host, t->nbytes, cudaMemcpyHostToDevice);
    free(host);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return sdxs_fail(err, SDXS_ERR_RUNTIME, NULL, "cuda: copying weights failed: %s",
                         cudaGetErrorString(e));
    }
    return SDXS_OK;
}

static sdxs_status cu_arena_reserve(sdxs_backend *be, size_t bytes, void **base, sdxs_error *err)
{
    cu_backend *c = cu_of(be);
    void *p = nullptr;
    cudaStreamSynchronize(c->stream);
    if (c->arena)
        cudaFree(c->arena);
    c->arena = nullptr;
    c->arena_bytes = 0;
    invalidate_records(c);
    if (cudaMalloc(&p, bytes ? bytes : 256) != cudaSuccess) {
        cudaGetLastError();
        return sdxs_fail(err, SDXS_ERR_RUNTIME, NULL,
                         "out of GPU memory: %.1f MiB of activations", (double)bytes / 1048576.0);
    }
    c->arena = p;
    c->arena_bytes = bytes;
    *base = p;
    return SDXS_OK;
}

/* ---- runs ---- */

static int cu_run_begin(sdxs_backend *be, uint64_t key, bool *replay)
{
    cu_backend *c = cu_of(be);
    cu_record *r = record_for(c, key);
    c->op = "run_begin";
    c->stage_used = 0;
    c->host_io = 0;
    c->ndownloads = 0;
    c->marks_set = 0;
    c->failed = false;
    r->last_run = ++c->clock;
    c->cur = r;
    c->mode = CU_EAGER;
    *replay = false;
    if (r->exec) {
        c->mode = CU_REPLAY;
        *replay = true;
    } else if (r->seen && c->use_graphs) {
        CU_CHECK(c, cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeThreadLocal));
        c->mode = CU_CAPTURE;
    }
    return 0;
}

/* Ends a capture: on success the graph is instantiated into r->exec. */
static int end_capture(cu_backend *c, cu_record *r)
{
    cudaGraph_t graph = nullptr;
    cudaError_t e = cudaStreamEndCapture(c->stream, &graph);
    bool failed = c->failed;
    c->mode = CU_EAGER;
    if (e != cudaSuccess || failed) {
        if (graph)
            cudaGraphDestroy(graph);
        cudaGetLastError();
        if (failed)
            return SDXS_ERR_RUNTIME;
        return cu_fail(c, "cudaStreamEndCapture(c->stream, &graph)", cudaGetErrorString(e),
                       __FILE__, __LINE__);
    }
    e = cudaGraphInstantiate(&r->exec, graph, 0);
    cudaGraphDestroy(graph);
    if (e != cudaSuccess) {
        r->exec = nullptr;
        cudaGetLastError();
        return cu_fail(c, "cudaGraphInstantiate(&r->exec, graph, 0)", cudaGetErrorString(e),
                       __FILE__, __LINE__);
    }
    r->stage_bytes = c->stage_used;
    r->host_io = c->host_io;
    return 0;
}

static int finish_pass(cu_backend *c)
{
    cu_record *r = c->cur;
    switch (c->mode) {
    case CU_CAPTURE:
        if (end_capture(c, r))
            return SDXS_ERR_RUNTIME;
        CU_CHECK(c, cudaGraphLaunch(r->exec, c->stream));
        break;
    case CU_REPLAY:
        if (c->failed)
            return SDXS_ERR_RUNTIME;
        if (c->stage_used != r->stage_bytes || c->host_io != r->host_io)
            return cu_fail(c, "replay", "the pass differs from its recording (host inputs or "
                           "outputs changed for the same shape key)", __FILE__, __LINE__);
        CU_CHECK(c, cudaGraphLaunch(r->exec, c->stream));
        break;
    case CU_EAGER:
        break;
    }
    CU_CHECK(c, cudaStreamSynchronize(c->stream));
    if (c->failed)
        return SDXS_ERR_RUNTIME;
    r->seen = true;
    for (int i = 0; i < c->ndownloads; i++)
        memcpy(c->downloads[i].dst, c->stage_host + c->downloads[i].offset,
               c->downloads[i].bytes);
    return 0;
}

static int cu_run_end(sdxs_backend *be)
{
    cu_backend *c = cu_of(be);
    int rc;
    c->op = "run_end";
    rc = finish_pass(c);
    c->mode = CU_EAGER;
    c->cur = nullptr;
    return rc;
}

static int cu_mark(sdxs_backend *be, int mark)
{
    cu_backend *c = cu_of(be);
    c->op = "mark";
    c->marks_set |= 1u << mark;
    if (c->mode == CU_REPLAY)
        return 0; /* the recording holds the event */
    if (c->mode == CU_CAPTURE)
        CU_CHECK(c, cudaEventRecordWithFlags(c->marks[mark], c->stream, cudaEventRecordExternal));
    else
        CU_CHECK(c, cudaEventRecord(c->marks[mark], c->stream));
    return 0;
}

static double cu_elapsed_ms(const sdxs_backend *be, int from, int to)
{
    const cu_backend *c = static_cast<const cu_backend *>(be->impl);
    float ms = 0.0f;
    if (from < 0 || to < 0 || from >= SDXS_MAX_MARKS || to >= SDXS_MAX_MARKS ||
        !(c->marks_set >> from & 1u) || !(c->marks_set >> to & 1u))
        return -1.0;
    if (cudaEventElapsedTime(&ms, c->marks[from], c->marks[to]) != cudaSuccess) {
        cudaGetLastError(); /* not sticky: clear it so the next launch check does not see it */
        return -1.0;
    }
    return (double)ms;
}

/* ---- data movement: host data is staged during the call in every mode ---- */

/* Stages bytes of host data; in a pass that is not replayed, queues its copy to the device. */
static int stage_in(cu_backend *c, const void *src, size_t bytes, size_t *offset)
{
    if (cu_stage_take(c, bytes, offset))
        return SDXS_ERR_RUNTIME;
    memcpy(c->stage_host + *offset, src, bytes);
    if (c->mode != CU_REPLAY)
        CU_CHECK(c, cudaMemcpyAsync(c->stage_dev + *offset, c->stage_host + *offset, bytes,
                                    cudaMemcpyHostToDevice, c->stream));
    return 0;
}

/* Reserves staging for an output and remembers where run_end copies it. */
static int stage_out(cu_backend *c, void *dst, size_t bytes, size_t *offset)
{
    if (c->ndownloads == CU_MAX_HOST_IO)
        return cu_fail(c, "download", "more than 256 downloads in one run", __FILE__, __LINE__);
    if (cu_stage_take(c, bytes, offset))
        return SDXS_ERR_RUNTIME;
    c->downloads[c->ndownloads++] = cu_host_out{*offset, bytes, dst};
    return 0;
}

static int cu_upload(sdxs_backend *be, sdxs_tensor *dst, const float *src)
{
    cu_backend *c = cu_of(be);
    size_t off, bytes = (size_t)sdxs_tensor_numel(dst) * sizeof(float);
    c->op = "upload";
    if (stage_in(c, src, bytes, &off))
        return SDXS_ERR_RUNTIME;
    if (c->mode == CU_REPLAY)
        return 0;
    return cu_upload_convert(c, dst, reinterpret_cast<const float *>(c->stage_dev + off));
}

static int cu_download(sdxs_backend *be, const sdxs_tensor *src, float *dst)
{
    cu_backend *c = cu_of(be);
    size_t off, bytes = (size_t)sdxs_tensor_numel(src) * sizeof(float);
    c->op = "download";
    if (stage_out(c, dst, bytes, &off))
        return SDXS_ERR_RUNTIME;
    if (c->mode == CU_REPLAY)
        return 0;
    if (cu_download_convert(c, reinterpret_cast<float *>(c->stage_dev + off), src))
        return SDXS_ERR_RUNTIME;
    CU_CHECK(c, cudaMemcpyAsync(c->stage_host + off, c->stage_dev + off, bytes,
                                cudaMemcpyDeviceToHost, c->stream));
    return 0;
}

static int cu_from_rgb8(sdxs_backend *be, sdxs_tensor *y, const uint8_t *src, float scale, float shift)
{
    cu_backend *c = cu_of(be);
    size_t off, bytes = (size_t)sdxs_tensor_numel(y); /* (N, H, W, 3) bytes */
    c->op = "from_rgb8";
    if (stage_in(c, src, bytes, &off))
        return SDXS_ERR_RUNTIME;
    if (c->mode == CU_REPLAY)
        return 0;
    return cu_from_rgb8_convert(c, y, c->stage_dev + off, scale, shift);
}

static int cu_to_rgb8(sdxs_backend *be, const sdxs_tensor *x, float scale, float shift, uint8_t *dst)
{
    cu_backend *c = cu_of(be);
    size_t off, bytes = (size_t)sdxs_tensor_numel(x);
    c->op = "to_rgb8";
    if (stage_out(c, dst, bytes, &off))
        return SDXS_ERR_RUNTIME;
    if (c->mode == CU_REPLAY)
        return 0;
    if (cu_to_rgb8_convert(c, c->stage_dev + off, x, scale, shift))
        return SDXS_ERR_RUNTIME;
    CU_CHECK(c, cudaMemcpyAsync(c->stage_host + off, c->stage_dev + off, bytes,
                                cudaMemcpyDeviceToHost, c->stream));
    return 0;
}

static int cu_embed(sdxs_backend *be, sdxs_tensor *y, const int32_t *ids, const sdxs_tensor *table,
             const sdxs_tensor *pos)
{
    cu_backend *c = cu_of(be);
    size_t off, bytes = (size_t)(y->ne[0] * y->ne[1]) * sizeof(int32_t);
    c->op = "embed";
    if (stage_in(c, ids, bytes, &off))
        return SDXS_ERR_RUNTIME;
    if (c->mode == CU_REPLAY)
        return 0;
    return cu_embed_staged(c, y, reinterpret_cast<const int32_t *>(c->stage_dev + off), table, pos);
}

static int cu_gather(sdxs_backend *be, sdxs_tensor *y, const sdxs_tensor *x, const int32_t *index)
{
    cu_backend *c = cu_of(be);
    size_t off, bytes = (size_t)y->ne[0] * sizeof(int32_t);
    c->op = "gather";
    if (stage_in(c, index, bytes, &off))
        return SDXS_ERR_RUNTIME;
    if (c->mode == CU_REPLAY)
        return 0;
    if (x->dtype != y->dtype)
        return cu_fail(c, "gather", "the source is not of the activation type", __FILE__, __LINE__);
    return cu_gather_staged(c, y, x, reinterpret_cast<const int32_t *>(c->stage_dev + off));
}

/* ---- the table ---- */

static void cu_release(cu_backend *c)
{
    if (c->stream)
        cudaStreamSynchronize(c->stream);
    invalidate_records(c);
    cu_conv_free_plans(c);
    for (int i = 0; i < SDXS_MAX_MARKS; i++)
        if (c->marks[i])
            cudaEventDestroy(c->marks[i]);
#ifdef SDXS_HAVE_CUDNN
    if (c->dnn)
        cudnnDestroy(c->dnn);
#endif
    if (c->lt)
        cublasLtDestroy(c->lt);
    if (c->weights)
        cudaFree(c->weights);
    if (c->arena)
        cudaFree(c->arena);
    if (c->workspace)
        cudaFree(c->workspace);
    if (c->gn_stats)
        cudaFree(c->gn_stats);
    if (c->stage_dev)
        cudaFree(c->stage_dev);
    if (c->stage_host)
        cudaFreeHost(c->stage_host);
    if (c->stream)
        cudaStreamDestroy(c->stream);
    cudaGetLastError();
    free(c);
}

static void cu_destroy(sdxs_backend *be)
{
    cu_release(cu_of(be));
    free(be);
}

const sdxs_backend_ops cu_ops = {
    CU_NAME,
    cu_destroy,
    cu_act_dtype,
    cu_weight_size,
    cu_weights_reserve,
    cu_weight_create,
    cu_arena_reserve,
    cu_run_begin,
    cu_run_end,
    cu_mark,
    cu_elapsed_ms,
    cu_upload,
    cu_download,
    cu_from_rgb8,
    cu_to_rgb8,
    cu_conv2d,
    cu_linear,
    cu_group_norm,
    cu_layer_norm,
    cu_attention,
    cu_geglu,
    cu_axpby,
    cu_clamp,
    cu_tanh_clamp,
    cu_upsample2x,
    cu_concat_channels,
    cu_image_to_tokens,
    cu_tokens_to_image,
    cu_embed,
    cu_gather,
};

static bool env_is(const char *name, const char *value)
{
    const char *v = getenv(name);
    return v && strcmp(v, value) == 0;
}

/* Step by step: device, stream, libraries, planned buffers, kernel limits. */
static int cu_setup(cu_backend *c, sdxs_error *err)
{
    int dev = 0, count = 0;
    cudaDeviceProp prop;
    cudaError_t e = cudaGetDeviceCount(&count);

    /* Step 1: a usable device. */
    if (e != cudaSuccess || count < 1) {
        cudaGetLastError();
        return sdxs_fail(err, SDXS_ERR_RUNTIME, "backend", "no usable CUDA device (%s)",
                         e != cudaSuccess ? cudaGetErrorString(e) : "none found");
    }
    if (cudaSetDevice(dev) != cudaSuccess || cudaGetDeviceProperties(&prop, dev) != cudaSuccess) {
        cudaGetLastError();
        return sdxs_fail(err, SDXS_ERR_RUNTIME, "backend", "CUDA device %d cannot be used", dev);
    }
    if (prop.major < 8)
        return sdxs_fail(err, SDXS_ERR_RUNTIME, "backend",
                         "CUDA device %s has compute capability %d.%d; sdxs needs 8.0 or newer",
                         prop.name, prop.major, prop.minor);
    c->sm_count = prop.multiProcessorCount;
    c->smem_optin = (int)prop.sharedMemPerBlockOptin;

    /* Step 2: the stream and the libraries on it. */
    c->op = "setup";
    if (cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking) != cudaSuccess ||
        cublasLtCreate(&c->lt) != CUBLAS_STATUS_SUCCESS)
        goto fail;
#ifdef SDXS_HAVE_CUDNN
    c->use_cudnn = !env_is("SDXS_CUDA_CONV", "implicit");
    if (c->use_cudnn && (cudnnCreate(&c->dnn) != CUDNN_STATUS_SUCCESS ||
                         cudnnSetStream(c->dnn, c->stream) != CUDNN_STATUS_SUCCESS)) {
        SDXS_WARN("cuda", "cuDNN cannot be used here; convolutions use the implicit-GEMM kernels");
        if (c->dnn)
            cudnnDestroy(c->dnn);
        c->dnn = nullptr;
        c->use_cudnn = false;
    }
#endif
    c->use_graphs = !env_is("SDXS_CUDA_GRAPHS", "0");

    /* Step 3: the buffers allocated once. */
    c->workspace_bytes = CU_WORKSPACE_BYTES;
    c->gn_stats_bytes = CU_GN_STATS_BYTES;
    if (cudaMalloc(&c->workspace, c->workspace_bytes) != cudaSuccess ||
        cudaMalloc(reinterpret_cast<void **>(&c->gn_stats), c->gn_stats_bytes) != cudaSuccess ||
        stage_grow(c, CU_STAGE_INITIAL_BYTES) || cu_conv_alloc_plans(c))
        goto fail;
    for (int i = 0; i < SDXS_MAX_MARKS; i++)
        if (cudaEventCreateWithFlags(&c->marks[i], cudaEventDefault) != cudaSuccess)
            goto fail;

    /* Step 4: kernels that need more than the default shared memory. */
    if (cu_attention_init(c))
        goto fail;
    SDXS_INFO("cuda", "%s: %d multiprocessors, %s activations, convolutions through %s", prop.name,
              c->sm_count, sdxs_dtype_name(c->act), c->use_cudnn ? "cuDNN" : "implicit GEMM");
    return 0;

fail:
    e = cudaGetLastError();
    return sdxs_fail(err, SDXS_ERR_RUNTIME, "backend", "CUDA backend setup failed on %s (%s)",
                     prop.name, e != cudaSuccess ? cudaGetErrorString(e) : "see the log");
}

} /* namespace SDXS_CU_NS */

extern "C" sdxs_status CU_CREATE_FN(sdxs_precision precision, sdxs_backend **out, sdxs_error *err)
{
    using namespace SDXS_CU_NS;
    sdxs_backend *be;
    cu_backend *c;

    *out = nullptr;
    be = static_cast<sdxs_backend *>(sdxs_calloc(1, sizeof(*be), err, "a backend"));
    c = static_cast<cu_backend *>(sdxs_calloc(1, sizeof(*c), err, "the CUDA backend"));
    if (!be || !c) {
        free(be);
        free(c);
        return SDXS_ERR_RUNTIME;
    }
    c->precision = precision;
    c->act = precision == SDXS_PRECISION_FP32   ? SDXS_DTYPE_F32
             : precision == SDXS_PRECISION_BF16 ? SDXS_DTYPE_BF16
                                                : SDXS_DTYPE_F16;
    if (cu_setup(c, err)) {
        cu_release(c);
        free(be);
        return SDXS_ERR_RUNTIME;
    }
    be->ops = &cu_ops;
    be->impl = c;
    *out = be;
    return SDXS_OK;
}
