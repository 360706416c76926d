/* emu.h: a CUDA emulation on the CPU, so the CUDA backend's own source compiles as host C++ (g++)
 * and runs in CI, where there is no GPU.
 *
 * Kernels run as written: every CUDA thread of a block is a fiber with its own stack, the blocks
 * of a launch are spread over a few OS threads, __syncthreads is a real barrier over the block's
 * fibers, and warp exchanges (__shfl*_sync, votes, __syncwarp, wmma) are barriers over the warp's
 * 32 fibers that swap values as the hardware would. Misuse that a GPU would hang on or leave
 * undefined (a barrier some threads skip, a partial warp in a shuffle) panics with the kernel's
 * name. The runtime (memory, one in-order stream executed synchronously, stream capture into
 * graphs, events) and the subsets of cuBLASLt and cuDNN the backend calls are emulated too: the
 * libraries compute on the CPU in float. Everything lives in namespace sdxs_emu.
 */
#ifndef SDXS_CUDA_EMU_H
#define SDXS_CUDA_EMU_H

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <tuple>
#include <utility>

#include "kernels/cuda/halfconv.h"

namespace sdxs_emu {

/* ---- launch geometry ---- */

struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

struct uint3 {
    unsigned x, y, z;
};

const uint3 &thread_index();
const uint3 &block_index();
const dim3 &block_dim();
const dim3 &grid_dim();
void *dynamic_smem();

/* ---- barriers and warp exchanges (the calling fiber blocks until its group arrives) ---- */

void syncthreads();
void syncwarp(unsigned mask);
enum shfl_kind { SHFL_IDX, SHFL_XOR, SHFL_DOWN, SHFL_UP };
uint64_t shfl(unsigned mask, uint64_t value, shfl_kind kind, int arg, int width);
enum vote_kind { VOTE_BALLOT, VOTE_ANY, VOTE_ALL };
unsigned vote(unsigned mask, bool pred, vote_kind kind);
/* The warp's scratch row for wmma (512 floats); the caller has passed a warp barrier. */
float *warp_scratch();
void warp_barrier_wmma();
int lane_id();
/* Panics unless p is 32-byte aligned and ldm elements make a multiple of 16 bytes, which wmma
 * loads and stores require on a GPU. */
void wmma_check(const void *p, unsigned ldm, size_t elem_bytes, const char *what);

/* ---- half and bfloat16 ---- */

struct __half {
    uint16_t bits;
};
struct __nv_bfloat16 {
    uint16_t bits;
};

inline float __half2float(__half h) { return sdxs_halfconv::f16_to_f32(h.bits); }
inline __half __float2half_rn(float f) { return __half{sdxs_halfconv::f32_to_f16(f)}; }
inline __half __float2half(float f) { return __float2half_rn(f); }
inline float __bfloat162float(__nv_bfloat16 h) { return sdxs_halfconv::bf16_to_f32(h.bits); }
inline __nv_bfloat16 __float2bfloat16_rn(float f)
{
    return __nv_bfloat16{sdxs_halfconv::f32_to_bf16(f)};
}
inline __nv_bfloat16 __float2bfloat16(float f) { return __float2bfloat16_rn(f); }

/* ---- device intrinsics ---- */

inline void __syncthreads() { syncthreads(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { syncwarp(mask); }

template <typename T> inline uint64_t to_bits(T v)
{
    static_assert(sizeof(T) <= 8, "shuffles move at most 8 bytes");
    uint64_t u = 0;
    std::memcpy(&u, &v, sizeof(T));
    return u;
}

template <typename T> inline T from_bits(uint64_t u)
{
    T v;
    std::memcpy(&v, &u, sizeof(T));
    return v;
}

template <typename T> inline T __shfl_sync(unsigned mask, T v, int src, int width = 32)
{
    return from_bits<T>(shfl(mask, to_bits(v), SHFL_IDX, src, width));
}
template <typename T> inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32)
{
    return from_bits<T>(shfl(mask, to_bits(v), SHFL_XOR, lane_mask, width));
}
template <typename T> inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32)
{
    return from_bits<T>(shfl(mask, to_bits(v), SHFL_DOWN, (int)delta, width));
}
template <typename T> inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32)
{
    return from_bits<T>(shfl(mask, to_bits(v), SHFL_UP, (int)delta, width));
}
inline unsigned __ballot_sync(unsigned mask, int pred) { return vote(mask, pred != 0, VOTE_BALLOT); }
inline int __any_sync(unsigned mask, int pred) { return (int)vote(mask, pred != 0, VOTE_ANY); }
inline int __all_sync(unsigned mask, int pred) { return (int)vote(mask, pred != 0, VOTE_ALL); }

inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline int __float2int_rn(float x) { return (int)std::nearbyint(x); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }

/* ---- wmma: 16x16x16 tiles, fragments spread over the warp (8 elements per lane, row-major
 * order: lane l holds tile elements 8l .. 8l+7), so a lane that reads another lane's result
 * without __syncwarp sees stale data, as it may on a GPU ---- */

namespace nvcuda {
namespace wmma {

struct row_major {};
struct col_major {};
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K, typename T, typename Layout = void> struct fragment {
    static_assert(M == 16 && N == 16 && K == 16, "the emulation has 16x16x16 tiles only");
    enum { num_elements = 8 };
    T x[8];
};

inline float elem_to_float(float v) { return v; }
inline float elem_to_float(__half v) { return __half2float(v); }
inline float elem_to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename Use, typename T, typename L, typename V>
inline void fill_fragment(fragment<Use, 16, 16, 16, T, L> &f, V v)
{
    for (int i = 0; i < 8; i++)
        f.x[i] = v;
}

/* Tile element (r, c) for this lane's i-th slot. */
inline void slot_rc(int i, int *r, int *c)
{
    int e = lane_id() * 8 + i;
    *r = e / 16;
    *c = e % 16;
}

template <typename Use, typename T>
inline void load_matrix_sync(fragment<Use, 16, 16, 16, T, row_major> &f, const T *p, unsigned ldm)
{
    wmma_check(p, ldm, sizeof(T), "wmma::load_matrix_sync");
    for (int i = 0, r, c; i < 8; i++) {
        slot_rc(i, &r, &c);
        f.x[i] = p[(size_t)r * ldm + (size_t)c];
    }
}

template <typename Use, typename T>
inline void load_matrix_sync(fragment<Use, 16, 16, 16, T, col_major> &f, const T *p, unsigned ldm)
{
    wmma_check(p, ldm, sizeof(T), "wmma::load_matrix_sync");
    for (int i = 0, r, c; i < 8; i++) {
        slot_rc(i, &r, &c);
        f.x[i] = p[(size_t)c * ldm + (size_t)r];
    }
}

inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, float> &f, const float *p,
                             unsigned ldm, layout_t layout)
{
    wmma_check(p, ldm, sizeof(float), "wmma::load_matrix_sync");
    for (int i = 0, r, c; i < 8; i++) {
        slot_rc(i, &r, &c);
        f.x[i] = layout == mem_row_major ? p[(size_t)r * ldm + (size_t)c]
                                         : p[(size_t)c * ldm + (size_t)r];
    }
}

inline void store_matrix_sync(float *p, const fragment<accumulator, 16, 16, 16, float> &f,
                              unsigned ldm, layout_t layout)
{
    wmma_check(p, ldm, sizeof(float), "wmma::store_matrix_sync");
    for (int i = 0, r, c; i < 8; i++) {
        slot_rc(i, &r, &c);
        if (layout == mem_row_major)
            p[(size_t)r * ldm + (size_t)c] = f.x[i];
        else
            p[(size_t)c * ldm + (size_t)r] = f.x[i];
    }
}

/* d = a * b + c: the lanes pool a and b in the warp's scratch, each computes its own 8 results
 * in float, and a second barrier keeps the scratch until every lane has read it. */
template <typename T, typename LA, typename LB>
inline void mma_sync(fragment<accumulator, 16, 16, 16, float> &d,
                     const fragment<matrix_a, 16, 16, 16, T, LA> &a,
                     const fragment<matrix_b, 16, 16, 16, T, LB> &b,
                     const fragment<accumulator, 16, 16, 16, float> &c)
{
    float *s = warp_scratch(), *sa = s, *sb = s + 256;
    float out[8];
    for (int i = 0; i < 8; i++) {
        sa[lane_id() * 8 + i] = elem_to_float(a.x[i]);
        sb[lane_id() * 8 + i] = elem_to_float(b.x[i]);
    }
    warp_barrier_wmma();
    for (int i = 0, r, col; i < 8; i++) {
        float acc = c.x[i];
        slot_rc(i, &r, &col);
        for (int k = 0; k < 16; k++)
            acc += sa[r * 16 + k] * sb[k * 16 + col];
        out[i] = acc;
    }
    warp_barrier_wmma();
    for (int i = 0; i < 8; i++)
        d.x[i] = out[i];
}

} /* namespace wmma */
} /* namespace nvcuda */

/* ---- runtime ---- */

enum cudaError_t {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorInvalidResourceHandle = 400,
    cudaErrorNotReady = 600,
    cudaErrorNoDevice = 100,
    cudaErrorStreamCaptureUnsupported = 900,
    cudaErrorStreamCaptureInvalidated = 901,
    cudaErrorIllegalState = 401,
    cudaErrorLaunchFailure = 719,
};

enum cudaMemcpyKind {
    cudaMemcpyHostToHost = 0,
    cudaMemcpyHostToDevice = 1,
    cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3,
    cudaMemcpyDefault = 4,
};

enum cudaStreamCaptureMode {
    cudaStreamCaptureModeGlobal = 0,
    cudaStreamCaptureModeThreadLocal = 1,
    cudaStreamCaptureModeRelaxed = 2,
};

enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
enum cudaDeviceAttr {
    cudaDevAttrMaxSharedMemoryPerBlockOptin = 97,
    cudaDevAttrMultiProcessorCount = 16,
};

#define cudaStreamNonBlocking 0x01u
#define cudaEventDefault 0x00u
#define cudaEventRecordDefault 0x00u
#define cudaEventRecordExternal 0x01u

struct emu_stream;
struct emu_event;
struct emu_graph;
typedef emu_stream *cudaStream_t;
typedef emu_event *cudaEvent_t;
typedef emu_graph *cudaGraph_t;
typedef emu_graph *cudaGraphExec_t;

struct cudaDeviceProp {
    char name[256];
    int major, minor;
    int multiProcessorCount;
    size_t totalGlobalMem;
    size_t sharedMemPerBlockOptin;
};

const char *cudaGetErrorString(cudaError_t e);
const char *cudaGetErrorName(cudaError_t e);
cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
cudaError_t cudaGetDeviceCount(int *count);
cudaError_t cudaSetDevice(int dev);
cudaError_t cudaGetDevice(int *dev);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *prop, int dev);
cudaError_t cudaDeviceGetAttribute(int *value, cudaDeviceAttr attr, int dev);
cudaError_t cudaMalloc(void **p, size_t bytes);
cudaError_t cudaFree(void *p);
cudaError_t cudaMallocHost(void **p, size_t bytes);
cudaError_t cudaFreeHost(void *p);
cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t s);
cudaError_t cudaMemsetAsync(void *dst, int value, size_t bytes, cudaStream_t s);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode mode);
cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t *graph);
cudaError_t cudaGraphInstantiate(cudaGraphExec_t *exec, cudaGraph_t graph,
                                 unsigned long long flags = 0);
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t s);
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec);
cudaError_t cudaGraphDestroy(cudaGraph_t graph);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *ev, unsigned flags);
cudaError_t cudaEventDestroy(cudaEvent_t ev);
cudaError_t cudaEventRecord(cudaEvent_t ev, cudaStream_t s);
cudaError_t cudaEventRecordWithFlags(cudaEvent_t ev, cudaStream_t s, unsigned flags);
cudaError_t cudaEventSynchronize(cudaEvent_t ev);
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end);

/* Work on a stream: run now, or append to the stream's capture. Fails while capture is broken. */
cudaError_t stream_submit(cudaStream_t s, std::function<void()> op);

cudaError_t func_set_smem(const void *func, int bytes);
template <typename... P>
inline cudaError_t cudaFuncSetAttribute(void (*func)(P...), cudaFuncAttribute attr, int value)
{
    if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize)
        return cudaErrorInvalidValue;
    return func_set_smem(reinterpret_cast<const void *>(func), value);
}

/* Runs (or captures) one launch; sets the error cudaGetLastError reports. */
void launch_body(const char *name, const void *func, dim3 grid, dim3 block, size_t smem,
                 cudaStream_t s, std::function<void()> body);

template <typename... P, typename... A>
inline void launch(const char *name, void (*kernel)(P...), dim3 grid, dim3 block, size_t smem,
                   cudaStream_t s, A &&...args)
{
    /* Parameters are copied at the launch, converted to the kernel's types, as CUDA does. */
    std::tuple<typename std::decay<P>::type...> params(std::forward<A>(args)...);
    launch_body(name, reinterpret_cast<const void *>(kernel), grid, block, smem, s,
                [kernel, params]() { std::apply(kernel, params); });
}

/* ---- cuBLASLt: the subset the backend calls ---- */

enum cublasStatus_t {
    CUBLAS_STATUS_SUCCESS = 0,
    CUBLAS_STATUS_NOT_INITIALIZED = 1,
    CUBLAS_STATUS_INVALID_VALUE = 7,
    CUBLAS_STATUS_EXECUTION_FAILED = 13,
    CUBLAS_STATUS_NOT_SUPPORTED = 15,
};
enum cudaDataType_t { CUDA_R_32F = 0, CUDA_R_16F = 2, CUDA_R_16BF = 14 };
enum cublasComputeType_t { CUBLAS_COMPUTE_32F = 68 };
enum cublasOperation_t { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1 };
enum cublasLtMatmulDescAttributes_t {
    CUBLASLT_MATMUL_DESC_TRANSA = 3,
    CUBLASLT_MATMUL_DESC_TRANSB = 4,
    CUBLASLT_MATMUL_DESC_EPILOGUE = 7,
    CUBLASLT_MATMUL_DESC_BIAS_POINTER = 8,
    CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE = 26,
};
enum cublasLtEpilogue_t {
    CUBLASLT_EPILOGUE_DEFAULT = 1,
    CUBLASLT_EPILOGUE_RELU = 2,
    CUBLASLT_EPILOGUE_BIAS = 4,
    CUBLASLT_EPILOGUE_RELU_BIAS = 6,
};
enum cublasLtMatmulPreferenceAttributes_t { CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES = 1 };

struct emu_lt;
struct emu_lt_desc;
struct emu_lt_layout;
struct emu_lt_pref;
typedef emu_lt *cublasLtHandle_t;
typedef emu_lt_desc *cublasLtMatmulDesc_t;
typedef emu_lt_layout *cublasLtMatrixLayout_t;
typedef emu_lt_pref *cublasLtMatmulPreference_t;
struct cublasLtMatmulAlgo_t {
    uint64_t data[8];
};
struct cublasLtMatmulHeuristicResult_t {
    cublasLtMatmulAlgo_t algo;
    size_t workspaceSize;
    cublasStatus_t state;
    float wavesCount;
    int reserved[4];
};

cublasStatus_t cublasLtCreate(cublasLtHandle_t *h);
cublasStatus_t cublasLtDestroy(cublasLtHandle_t h);
cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *d, cublasComputeType_t compute,
                                        cudaDataType_t scale);
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t d);
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d,
                                              cublasLtMatmulDescAttributes_t attr,
                                              const void *buf, size_t size);
cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *l, cudaDataType_t type,
                                          uint64_t rows, uint64_t cols, int64_t ld);
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t l);
cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *p);
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p);
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t p,
                                                    cublasLtMatmulPreferenceAttributes_t attr,
                                                    const void *buf, size_t size);
cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t h, cublasLtMatmulDesc_t op,
                                              cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                                              cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d,
                                              cublasLtMatmulPreference_t pref, int requested,
                                              cublasLtMatmulHeuristicResult_t *results,
                                              int *returned);
cublasStatus_t cublasLtMatmul(cublasLtHandle_t h, cublasLtMatmulDesc_t op, const void *alpha,
                              const void *a, cublasLtMatrixLayout_t adesc, const void *b,
                              cublasLtMatrixLayout_t bdesc, const void *beta, const void *c,
                              cublasLtMatrixLayout_t cdesc, void *d, cublasLtMatrixLayout_t ddesc,
                              const cublasLtMatmulAlgo_t *algo, void *workspace,
                              size_t workspace_bytes, cudaStream_t s);

/* ---- cuDNN: the legacy convolution subset the backend calls ---- */

enum cudnnStatus_t {
    CUDNN_STATUS_SUCCESS = 0,
    CUDNN_STATUS_NOT_INITIALIZED = 1001,
    CUDNN_STATUS_BAD_PARAM = 2000,
    CUDNN_STATUS_NOT_SUPPORTED = 3000,
    CUDNN_STATUS_EXECUTION_FAILED = 5000,
};
enum cudnnDataType_t { CUDNN_DATA_FLOAT = 0, CUDNN_DATA_HALF = 2, CUDNN_DATA_BFLOAT16 = 9 };
enum cudnnTensorFormat_t { CUDNN_TENSOR_NCHW = 0, CUDNN_TENSOR_NHWC = 1 };
enum cudnnConvolutionMode_t { CUDNN_CONVOLUTION = 0, CUDNN_CROSS_CORRELATION = 1 };
enum cudnnMathType_t {
    CUDNN_DEFAULT_MATH = 0,
    CUDNN_TENSOR_OP_MATH = 1,
    CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION = 2,
    CUDNN_FMA_MATH = 3,
};
enum cudnnConvolutionFwdAlgo_t {
    CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM = 0,
    CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM = 1,
    CUDNN_CONVOLUTION_FWD_ALGO_GEMM = 2,
};
enum cudnnDeterminism_t { CUDNN_NON_DETERMINISTIC = 0, CUDNN_DETERMINISTIC = 1 };

struct emu_dnn;
struct emu_dnn_tensor;
struct emu_dnn_filter;
struct emu_dnn_conv;
typedef emu_dnn *cudnnHandle_t;
typedef emu_dnn_tensor *cudnnTensorDescriptor_t;
typedef emu_dnn_filter *cudnnFilterDescriptor_t;
typedef emu_dnn_conv *cudnnConvolutionDescriptor_t;
struct cudnnConvolutionFwdAlgoPerf_t {
    cudnnConvolutionFwdAlgo_t algo;
    cudnnStatus_t status;
    float time;
    size_t memory;
    cudnnDeterminism_t determinism;
    cudnnMathType_t mathType;
    int reserved[3];
};

const char *cudnnGetErrorString(cudnnStatus_t s);
cudnnStatus_t cudnnCreate(cudnnHandle_t *h);
cudnnStatus_t cudnnDestroy(cudnnHandle_t h);
cudnnStatus_t cudnnSetStream(cudnnHandle_t h, cudaStream_t s);
cudnnStatus_t cudnnCreateTensorDescriptor(cudnnTensorDescriptor_t *d);
cudnnStatus_t cudnnDestroyTensorDescriptor(cudnnTensorDescriptor_t d);
cudnnStatus_t cudnnSetTensor4dDescriptor(cudnnTensorDescriptor_t d, cudnnTensorFormat_t format,
                                         cudnnDataType_t type, int n, int c, int h, int w);
cudnnStatus_t cudnnCreateFilterDescriptor(cudnnFilterDescriptor_t *d);
cudnnStatus_t cudnnDestroyFilterDescriptor(cudnnFilterDescriptor_t d);
cudnnStatus_t cudnnSetFilter4dDescriptor(cudnnFilterDescriptor_t d, cudnnDataType_t type,
                                         cudnnTensorFormat_t format, int k, int c, int h, int w);
cudnnStatus_t cudnnCreateConvolutionDescriptor(cudnnConvolutionDescriptor_t *d);
cudnnStatus_t cudnnDestroyConvolutionDescriptor(cudnnConvolutionDescriptor_t d);
cudnnStatus_t cudnnSetConvolution2dDescriptor(cudnnConvolutionDescriptor_t d, int pad_h,
                                              int pad_w, int u, int v, int dil_h, int dil_w,
                                              cudnnConvolutionMode_t mode,
                                              cudnnDataType_t compute);
cudnnStatus_t cudnnSetConvolutionMathType(cudnnConvolutionDescriptor_t d, cudnnMathType_t m);
cudnnStatus_t cudnnGetConvolution2dForwardOutputDim(cudnnConvolutionDescriptor_t conv,
                                                    cudnnTensorDescriptor_t x,
                                                    cudnnFilterDescriptor_t w, int *n, int *c,
                                                    int *h, int *wo);
cudnnStatus_t cudnnGetConvolutionForwardAlgorithm_v7(cudnnHandle_t h, cudnnTensorDescriptor_t x,
                                                     cudnnFilterDescriptor_t w,
                                                     cudnnConvolutionDescriptor_t conv,
                                                     cudnnTensorDescriptor_t y, int requested,
                                                     int *returned,
                                                     cudnnConvolutionFwdAlgoPerf_t *perf);
cudnnStatus_t cudnnFindConvolutionForwardAlgorithmEx(
    cudnnHandle_t h, cudnnTensorDescriptor_t xd, const void *x, cudnnFilterDescriptor_t wd,
    const void *w, cudnnConvolutionDescriptor_t conv, cudnnTensorDescriptor_t yd, void *y,
    int requested, int *returned, cudnnConvolutionFwdAlgoPerf_t *perf, void *workspace,
    size_t workspace_bytes);
cudnnStatus_t cudnnGetConvolutionForwardWorkspaceSize(cudnnHandle_t h, cudnnTensorDescriptor_t x,
                                                      cudnnFilterDescriptor_t w,
                                                      cudnnConvolutionDescriptor_t conv,
                                                      cudnnTensorDescriptor_t y,
                                                      cudnnConvolutionFwdAlgo_t algo,
                                                      size_t *bytes);
cudnnStatus_t cudnnConvolutionForward(cudnnHandle_t h, const void *alpha,
                                      cudnnTensorDescriptor_t xd, const void *x,
                                      cudnnFilterDescriptor_t wd, const void *w,
                                      cudnnConvolutionDescriptor_t conv,
                                      cudnnConvolutionFwdAlgo_t algo, void *workspace,
                                      size_t workspace_bytes, const void *beta,
                                      cudnnTensorDescriptor_t yd, void *y);

} /* namespace sdxs_emu */

using namespace sdxs_emu;

/* ---- CUDA's keywords and built-in variables ---- */

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
/* One block runs on one OS thread at a time, so a thread-local static is the block's shared
 * memory; like real shared memory it keeps whatever the previous block left. */
#define __shared__ static thread_local
#define threadIdx (::sdxs_emu::thread_index())
#define blockIdx (::sdxs_emu::block_index())
#define blockDim (::sdxs_emu::block_dim())
#define gridDim (::sdxs_emu::grid_dim())
#define warpSize 32

#endif /* SDXS_CUDA_EMU_H */
