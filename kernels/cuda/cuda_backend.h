/* cuda_backend.h: the CUDA backend's state and what its sources share: the check macros, the
 * staging area for host inputs and outputs, and the compute entries each source implements.
 *
 * Layout and precision: activations are T = fp16 (default), bf16 or fp32; images are NHWC and
 * token sequences (N, L, D) row-major, so an image's pixels are already its tokens. Weights are
 * T except vectors (biases, norm scales), which stay fp32; convolution weights are (Cout, K, K,
 * Cin). All sums run in fp32.
 *
 * Dimension letters: N batch, C channels, H/W height/width, L tokens, D features.
 */
#ifndef SDXS_CUDA_BACKEND_H
#define SDXS_CUDA_BACKEND_H

#include "kernels/cuda/common.cuh"

#ifdef SDXS_CUDA_EMU
#define SDXS_HAVE_CUDNN 1 /* the emulation computes cuDNN's convolutions on the CPU */
#else
#include <cublasLt.h>
#ifdef SDXS_HAVE_CUDNN
#include <cudnn.h>
#endif
#endif

extern "C" {
#include "engine/util.h"
}

namespace SDXS_CU_NS {

enum {
    CU_MAX_RECORDS = 64,      /* shape keys with a recording; the least recently run is dropped */
    CU_MAX_HOST_IO = 256,     /* downloads one run may make */
    CU_STAGE_ALIGN = 256,     /* bytes between staged items */
    CU_MAX_CONV_PLANS = 512,  /* convolution shapes with a chosen algorithm */
    CU_MAX_GEMM_PLANS = 512,  /* matrix product shapes with a chosen algorithm */
};

/* Library workspace (cuBLASLt and cuDNN share it: one stream runs one call at a time). */
#define CU_WORKSPACE_BYTES ((size_t)64 << 20)
/* Group norm partial statistics: (N, chunks, groups, 3) floats. */
#define CU_GN_STATS_BYTES ((size_t)4 << 20)
/* Pinned staging at creation; grows in a run's first (eager) pass when a shape needs more. */
#define CU_STAGE_INITIAL_BYTES ((size_t)4 << 20)
#define CU_STAGE_MAX_BYTES ((size_t)1 << 30)

/* How the current pass runs: directly, captured into a graph, or replaying a graph. */
typedef enum cu_mode { CU_EAGER = 0, CU_CAPTURE, CU_REPLAY } cu_mode;

typedef struct cu_host_out {
    size_t offset, bytes; /* in the staging area */
    void *dst;            /* the caller's buffer, filled at run_end */
} cu_host_out;

/* A shape key's life: its first pass runs eagerly (algorithms are found, staging is sized), the
 * second is captured into a graph, and later passes replay it. */
typedef struct cu_record {
    uint64_t key;
    bool used, seen;
    cudaGraphExec_t exec;
    size_t stage_bytes; /* staging the recorded pass used, which a replay must match */
    int host_io;
    uint64_t last_run;
} cu_record;

struct cu_conv_plan;
struct cu_gemm_plan;

typedef struct cu_backend {
    sdxs_precision precision;
    sdxs_dtype act; /* T */
    int sm_count;
    int smem_optin;
    const char *op; /* the entry running now, named in error reports */

    cudaStream_t stream;
    cublasLtHandle_t lt;
#ifdef SDXS_HAVE_CUDNN
    cudnnHandle_t dnn;
#endif
    bool use_cudnn; /* convolutions through cuDNN (else the implicit-GEMM kernels) */
    bool use_graphs;

    void *weights;
    size_t weight_bytes;
    void *arena;
    size_t arena_bytes;
    void *workspace;
    size_t workspace_bytes;
    float *gn_stats;
    size_t gn_stats_bytes;

    /* Staging: host inputs are copied into stage_host during the entry's call, and the pass
     * (or its recording) copies them to stage_dev and converts them; outputs go the other way. */
    unsigned char *stage_host, *stage_dev;
    size_t stage_bytes, stage_used;
    int host_io;
    cu_host_out downloads[CU_MAX_HOST_IO];
    int ndownloads;

    cu_mode mode;
    cu_record *cur;
    cu_record records[CU_MAX_RECORDS];
    uint64_t clock;
    bool failed; /* an entry of this pass failed */

    cudaEvent_t marks[SDXS_MAX_MARKS];
    unsigned marks_set;

    struct cu_conv_plan *conv_plans; /* CU_MAX_CONV_PLANS */
    int nconv_plans;
    struct cu_gemm_plan *gemm_plans; /* CU_MAX_GEMM_PLANS */
    int ngemm_plans;
} cu_backend;

static inline cu_backend *cu_of(sdxs_backend *be) { return static_cast<cu_backend *>(be->impl); }

/* ---- errors: every CUDA, cuBLAS and cuDNN call and every launch goes through one macro that
 * logs the statement, the entry and file:line, and makes the caller return SDXS_ERR_RUNTIME ---- */

const char *cu_status_text(cudaError_t e);
const char *cu_status_text(cublasStatus_t s);
#ifdef SDXS_HAVE_CUDNN
const char *cu_status_text(cudnnStatus_t s);
#endif
int cu_fail(cu_backend *c, const char *what, const char *why, const char *file, int line);

#define CU_CHECK(c, stmt)                                                                          \
    do {                                                                                           \
        const char *why_ = cu_status_text(stmt);                                                   \
        if (why_)                                                                                  \
            return cu_fail((c), #stmt, why_, __FILE__, __LINE__);                                  \
    } while (0)

/* Launches kernel<<<grid, block, smem, stream>>>(...) and checks the launch. */
#define CU_LAUNCH(c, kernel, grid, block, smem, stream, ...)                                       \
    do {                                                                                           \
        CU_LAUNCH_RAW(kernel, grid, block, smem, stream, __VA_ARGS__);                             \
        const char *why_ = cu_status_text(cudaGetLastError());                                     \
        if (why_)                                                                                  \
            return cu_fail((c), "launch of " #kernel, why_, __FILE__, __LINE__);                   \
    } while (0)

/* A launcher's precondition. */
#define CU_REQUIRE(c, cond)                                                                        \
    do {                                                                                           \
        if (!(cond))                                                                               \
            return cu_fail((c), "precondition (" #cond ")", "does not hold", __FILE__, __LINE__);  \
    } while (0)

/* Calls fn<T>(args) for the backend's activation type. */
#define CU_DISPATCH(c, fn, ...)                                                                    \
    ((c)->act == SDXS_DTYPE_F16    ? fn<__half>(__VA_ARGS__)                                       \
     : (c)->act == SDXS_DTYPE_BF16 ? fn<__nv_bfloat16>(__VA_ARGS__)                                \
                                   : fn<float>(__VA_ARGS__))

/* Typed data of a tensor. */
template <typename T> static inline T *cu_data(const sdxs_tensor *t)
{
    return static_cast<T *>(t->data);
}

/* Checks that a tensor holds the backend's activation type (weights given as inputs may not). */
int cu_require_act(cu_backend *c, const sdxs_tensor *t, const char *what);

/* True when every pointer is 16-byte aligned and n is a multiple of the vector width. */
static inline bool cu_vec_ok(int64_t n, int width, const void *a, const void *b = nullptr,
                             const void *c = nullptr, const void *d = nullptr)
{
    uintptr_t bits = (uintptr_t)a | (uintptr_t)b | (uintptr_t)c | (uintptr_t)d;
    return n % width == 0 && (bits & 15u) == 0;
}

/* Blocks for a grid-stride loop over `work` items: enough to fill the device, no more. */
static inline unsigned cu_grid_for(const cu_backend *c, int64_t work, int threads)
{
    int64_t blocks = (work + threads - 1) / threads, cap = (int64_t)c->sm_count * 16;
    if (blocks < 1)
        blocks = 1;
    return (unsigned)(blocks < cap ? blocks : cap);
}

/* ---- staging (cuda_backend.cu) ---- */

/* Reserves bytes of staging for a host input or output of this pass; grows the area in an eager
 * pass. *offset is the same in a replay as in the pass that was recorded. */
int cu_stage_take(cu_backend *c, size_t bytes, size_t *offset);

/* ---- entries (cuda_layout.cu, cuda_elementwise.cu, cuda_norm.cu, cuda_attention.cu,
 * cuda_conv.cu) ---- */

int cu_upload_convert(cu_backend *c, sdxs_tensor *dst, const float *staged);
int cu_download_convert(cu_backend *c, float *staged, const sdxs_tensor *src);
int cu_from_rgb8_convert(cu_backend *c, sdxs_tensor *y, const uint8_t *staged, float scale,
                         float shift);
int cu_to_rgb8_convert(cu_backend *c, uint8_t *staged, const sdxs_tensor *x, float scale,
                       float shift);

int cu_conv2d(sdxs_backend *be, sdxs_tensor *y, const sdxs_tensor *x, const sdxs_conv2d *conv,
              const sdxs_tensor *chan_bias, const sdxs_tensor *residual, sdxs_act act);
int cu_linear(sdxs_backend *be, sdxs_tensor *y, const sdxs_tensor *x, const sdxs_linear *lin,
              const sdxs_tensor *residual, sdxs_act act);
int cu_group_norm(sdxs_backend *be, sdxs_tensor *y, const sdxs_tensor *x, const sdxs_norm *norm,
                  sdxs_act act);
int cu_layer_norm(sdxs_backend *be, sdxs_tensor *y, const sdxs_tensor *x, const sdxs_norm *norm);
int cu_attention(sdxs_backend *be, sdxs_tensor *y, sdxs_cols q, sdxs_cols k, sdxs_cols v,
                 int heads, bool causal);
int cu_geglu(sdxs_backend *be, sdxs_tensor *y, const sdxs_tensor *x);
int cu_axpby(sdxs_backend *be, sdxs_tensor *y, float a, const sdxs_tensor *x, float b,
             const sdxs_tensor *y_in, sdxs_act act);
int cu_clamp(sdxs_backend *be, sdxs_tensor *y, const sdxs_tensor *x, float lo, float hi);
int cu_tanh_clamp(sdxs_backend *be, sdxs_tensor *y, const sdxs_tensor *x, float limit);
int cu_upsample2x(sdxs_backend *be, sdxs_tensor *y, const sdxs_tensor *x);
int cu_concat_channels(sdxs_backend *be, sdxs_tensor *y, const sdxs_tensor *a,
                       const sdxs_tensor *b);
int cu_image_to_tokens(sdxs_backend *be, sdxs_tensor *y, const sdxs_tensor *x);
int cu_tokens_to_image(sdxs_backend *be, sdxs_tensor *y, const sdxs_tensor *x,
                       const sdxs_tensor *residual);
int cu_embed_staged(cu_backend *c, sdxs_tensor *y, const int32_t *ids_dev, const sdxs_tensor *table,
                    const sdxs_tensor *pos);
int cu_gather_staged(cu_backend *c, sdxs_tensor *y, const sdxs_tensor *x, const int32_t *index_dev);

/* y = act(y + bias[col] + chan_bias[row / rows_per_n, col] + residual[row, col]) over a
 * (rows, cols) matrix, in place: the epilogue of convolutions and matrix products. */
template <typename T>
int cu_bias_act(cu_backend *c, T *y, int64_t rows, int64_t cols, const float *bias,
                const T *chan_bias, int64_t rows_per_n, const T *residual, int act,
                cudaStream_t stream);

/* Sets the shared-memory limits of the kernels that need more than 48 KiB. */
int cu_attention_init(cu_backend *c);
/* Allocates and frees the plan caches of cuda_conv.cu. */
int cu_conv_alloc_plans(cu_backend *c);
void cu_conv_free_plans(cu_backend *c);

} /* namespace SDXS_CU_NS */

#endif /* SDXS_CUDA_BACKEND_H */
