/* cuda_conv.cu: the convolution and linear entries.
 *
 * Linear: y (rows, Dout) = x (rows, Din) W^T through cuBLASLt in fp32 compute, then one epilogue
 * pass for bias, residual and activation (k_bias_act). Convolution: cuDNN's legacy API on NHWC
 * tensors with the fastest algorithm cudnnFind measures for the shape (tensor-core math for fp16
 * and bf16, plain fp32 math for fp32), then the same epilogue pass; or, when cuDNN is absent,
 * refuses the shape or SDXS_CUDA_CONV=implicit, the backend's own implicit-GEMM kernels with the
 * epilogue fused (k_conv.cuh). Plans (descriptors and algorithms) are made once per shape in an
 * eager pass and cached; a pass being captured never benchmarks or allocates.
 */
#include <cstdlib>
#include <cstring>

#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/k_conv.cuh"

namespace SDXS_CU_NS {

struct cu_gemm_plan {
    int64_t m, n, k; /* column-major: D (m, n) = op(A) (m, k) op(B) (k, n) */
    sdxs_dtype type;
    uint64_t last_use;
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t a, b, d;
    cublasLtMatmulAlgo_t algo;
};

struct cu_conv_plan {
    int n, h, w, cin, cout, k, stride, pad;
    sdxs_dtype type;
    uint64_t last_use;
    bool cudnn; /* false: the implicit-GEMM kernels take this shape */
#ifdef SDXS_HAVE_CUDNN
    cudnnTensorDescriptor_t xd, yd;
    cudnnFilterDescriptor_t wd;
    cudnnConvolutionDescriptor_t cd;
    cudnnConvolutionFwdAlgo_t algo;
    size_t workspace;
#endif
};

/* ---- matrix products ---- */

static cudaDataType_t lt_type(sdxs_dtype t)
{
    return t == SDXS_DTYPE_F16 ? CUDA_R_16F : t == SDXS_DTYPE_BF16 ? CUDA_R_16BF : CUDA_R_32F;
}

static void gemm_plan_release(cu_gemm_plan *p)
{
    if (p->op)
        cublasLtMatmulDescDestroy(p->op);
    if (p->a)
        cublasLtMatrixLayoutDestroy(p->a);
    if (p->b)
        cublasLtMatrixLayoutDestroy(p->b);
    if (p->d)
        cublasLtMatrixLayoutDestroy(p->d);
    memset(p, 0, sizeof(*p));
}

/* The descriptors and the heuristic's algorithm for y (rows, Dout) = x (rows, Din) W^T. In
 * cuBLASLt's column-major terms: D (Dout, rows) = A^T B, with A = W seen as (Din, Dout) and
 * B = x seen as (Din, rows); m = Dout, n = rows, k = Din. */
static int gemm_plan_make(cu_backend *c, cu_gemm_plan *p, int64_t m, int64_t n, int64_t k)
{
    cublasLtMatmulPreference_t pref = nullptr;
    cublasLtMatmulHeuristicResult_t result;
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    cudaDataType_t type = lt_type(c->act);
    uint64_t ws = c->workspace_bytes;
    int found = 0;
    cublasStatus_t st;

    memset(p, 0, sizeof(*p));
    p->m = m;
    p->n = n;
    p->k = k;
    p->type = c->act;
    CU_CHECK(c, cublasLtMatmulDescCreate(&p->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    CU_CHECK(c, cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
    CU_CHECK(c, cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
    CU_CHECK(c, cublasLtMatrixLayoutCreate(&p->a, type, (uint64_t)k, (uint64_t)m, k));
    CU_CHECK(c, cublasLtMatrixLayoutCreate(&p->b, type, (uint64_t)k, (uint64_t)n, k));
    CU_CHECK(c, cublasLtMatrixLayoutCreate(&p->d, type, (uint64_t)m, (uint64_t)n, m));
    CU_CHECK(c, cublasLtMatmulPreferenceCreate(&pref));
    st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                              sizeof(ws));
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulAlgoGetHeuristic(c->lt, p->op, p->a, p->b, p->d, p->d, pref, 1, &result,
                                            &found);
    cublasLtMatmulPreferenceDestroy(pref);
    CU_CHECK(c, st);
    if (found < 1)
        return cu_fail(c, "cublasLtMatmulAlgoGetHeuristic", "no algorithm for this product",
                       __FILE__, __LINE__);
    p->algo = result.algo;
    return 0;
}

static int gemm_plan_get(cu_backend *c, int64_t m, int64_t n, int64_t k, cu_gemm_plan **out)
{
    cu_gemm_plan *oldest = nullptr;
    for (int i = 0; i < c->ngemm_plans; i++) {
        cu_gemm_plan *p = &c->gemm_plans[i];
        if (p->m == m && p->n == n && p->k == k && p->type == c->act) {
            p->last_use = ++c->clock;
            *out = p;
            return 0;
        }
        if (!oldest || p->last_use < oldest->last_use)
            oldest = p;
    }
    if (c->ngemm_plans < CU_MAX_GEMM_PLANS) {
        oldest = &c->gemm_plans[c->ngemm_plans++];
    } else {
        gemm_plan_release(oldest);
    }
    if (gemm_plan_make(c, oldest, m, n, k)) {
        gemm_plan_release(oldest);
        return SDXS_ERR_RUNTIME;
    }
    oldest->last_use = ++c->clock;
    *out = oldest;
    return 0;
}

/* x (rows, Din), W (Dout, Din), y (rows, Dout), T; bias (Dout) float; residual like y. */
template <typename T>
static int linear_t(cu_backend *c, sdxs_tensor *y, const sdxs_tensor *x, const sdxs_linear *lin,
             const sdxs_tensor *residual, int act)
{
    int64_t din = lin->din, dout = lin->dout, rows = sdxs_tensor_numel(x) / din;
    const float alpha = 1.0f, beta = 0.0f;
    const float *bias = lin->bias ? cu_data<float>(lin->bias) : nullptr;
    cu_gemm_plan *p;

    if (gemm_plan_get(c, dout, rows, din, &p))
        return SDXS_ERR_RUNTIME;
    CU_CHECK(c, cublasLtMatmul(c->lt, p->op, &alpha, lin->weight->data, p->a, x->data, p->b, &beta,
                               y->data, p->d, y->data, p->d, &p->algo, c->workspace,
                               c->workspace_bytes, c->stream));
    if (!bias && !residual && act == SDXS_ACT_NONE)
        return 0;
    return cu_bias_act<T>(c, cu_data<T>(y), rows, dout, bias, nullptr, 1,
                          residual ? cu_data<T>(residual) : nullptr, act, c->stream);
}

/* ---- convolutions ---- */

static conv_geom geom_of(const sdxs_tensor *y, const sdxs_tensor *x, const sdxs_conv2d *conv)
{
    conv_geom g;
    g.n = (int)x->ne[0];
    g.cin = (int)x->ne[1];
    g.h = (int)x->ne[2];
    g.w = (int)x->ne[3];
    g.cout = (int)y->ne[1];
    g.ho = (int)y->ne[2];
    g.wo = (int)y->ne[3];
    g.k = conv->kernel;
    g.stride = conv->stride;
    g.pad = conv->pad;
    g.kk = g.k * g.k * g.cin;
    g.m = g.n * g.ho * g.wo;
    return g;
}

/* The backend's own convolutions: tensor cores for the 2-byte types, with 16-byte loads when
 * Cin is a multiple of 8 (element loads otherwise, e.g. the 3 or 4 channels of image inputs). */
template <typename T>
static int launch_conv_own(cu_backend *c, T *y, const T *x, const T *w, const float *bias,
                           const T *chan_bias, const T *res, const conv_geom &g, int act,
                           cudaStream_t stream)
{
    static_assert(sizeof(T) == 2, "fp32 takes the specialisation below");
    dim3 grid((unsigned)((g.m + CONV_BM - 1) / CONV_BM),
              (unsigned)((g.cout + CONV_BN - 1) / CONV_BN));
    CU_REQUIRE(c, grid.y <= 65535);
    if (g.cin % 8 == 0 && cu_vec_ok(8, 8, x, w))
        CU_LAUNCH(c, (k_conv_wmma<T, true>), grid, CONV_WMMA_THREADS, 0, stream, y, x, w, bias,
                  chan_bias, res, g, act);
    else
        CU_LAUNCH(c, (k_conv_wmma<T, false>), grid, CONV_WMMA_THREADS, 0, stream, y, x, w, bias,
                  chan_bias, res, g, act);
    return 0;
}

/* fp32 has no tensor-core kernel here: the CUDA cores compute it in fp32. */
template <>
int launch_conv_own<float>(cu_backend *c, float *y, const float *x, const float *w,
                           const float *bias, const float *chan_bias, const float *res,
                           const conv_geom &g, int act, cudaStream_t stream)
{
    dim3 grid((unsigned)((g.m + CONV_BM - 1) / CONV_BM),
              (unsigned)((g.cout + CONV_BN - 1) / CONV_BN));
    CU_REQUIRE(c, grid.y <= 65535);
    CU_LAUNCH(c, (k_conv_simt<float>), grid, CONV_SIMT_THREADS, 0, stream, y, x, w, bias,
              chan_bias, res, g, act);
    return 0;
}

static void conv_plan_release(cu_conv_plan *p)
{
#ifdef SDXS_HAVE_CUDNN
    if (p->xd)
        cudnnDestroyTensorDescriptor(p->xd);
    if (p->yd)
        cudnnDestroyTensorDescriptor(p->yd);
    if (p->wd)
        cudnnDestroyFilterDescriptor(p->wd);
    if (p->cd)
        cudnnDestroyConvolutionDescriptor(p->cd);
#endif
    memset(p, 0, sizeof(*p));
}

#ifdef SDXS_HAVE_CUDNN
static cudnnDataType_t dnn_type(sdxs_dtype t)
{
    return t == SDXS_DTYPE_F16 ? CUDNN_DATA_HALF : t == SDXS_DTYPE_BF16 ? CUDNN_DATA_BFLOAT16
                                                                        : CUDNN_DATA_FLOAT;
}

/* Picks the first (fastest) algorithm that succeeded within the workspace. */
static bool pick_algo(const cudnnConvolutionFwdAlgoPerf_t *perf, int count, size_t workspace,
               cudnnConvolutionFwdAlgo_t *algo, size_t *need)
{
    for (int i = 0; i < count; i++)
        if (perf[i].status == CUDNN_STATUS_SUCCESS && perf[i].memory <= workspace) {
            *algo = perf[i].algo;
            *need = perf[i].memory;
            return true;
        }
    return false;
}

/* Descriptors and algorithm for the shape. In an eager pass cudnnFind times the candidates on
 * the real tensors; a pass being captured takes cuDNN's heuristic instead (nothing may
 * synchronise). A shape cuDNN refuses goes to the implicit-GEMM kernels. */
static int conv_plan_cudnn(cu_backend *c, cu_conv_plan *p, const sdxs_tensor *y, const sdxs_tensor *x,
                    const sdxs_conv2d *conv)
{
    enum { kCandidates = 8 };
    cudnnConvolutionFwdAlgoPerf_t perf[kCandidates];
    cudnnDataType_t type = dnn_type(c->act);
    cudnnMathType_t math = c->act == SDXS_DTYPE_F32 ? CUDNN_FMA_MATH : CUDNN_TENSOR_OP_MATH;
    cudnnStatus_t st;
    int count = 0;

    CU_CHECK(c, cudnnCreateTensorDescriptor(&p->xd));
    CU_CHECK(c, cudnnCreateTensorDescriptor(&p->yd));
    CU_CHECK(c, cudnnCreateFilterDescriptor(&p->wd));
    CU_CHECK(c, cudnnCreateConvolutionDescriptor(&p->cd));
    st = cudnnSetTensor4dDescriptor(p->xd, CUDNN_TENSOR_NHWC, type, p->n, p->cin, p->h, p->w);
    if (st == CUDNN_STATUS_SUCCESS)
        st = cudnnSetTensor4dDescriptor(p->yd, CUDNN_TENSOR_NHWC, type, p->n, p->cout,
                                        (int)y->ne[2], (int)y->ne[3]);
    if (st == CUDNN_STATUS_SUCCESS)
        st = cudnnSetFilter4dDescriptor(p->wd, type, CUDNN_TENSOR_NHWC, p->cout, p->cin, p->k,
                                        p->k);
    if (st == CUDNN_STATUS_SUCCESS)
        st = cudnnSetConvolution2dDescriptor(p->cd, p->pad, p->pad, p->stride, p->stride, 1, 1,
                                             CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT);
    if (st == CUDNN_STATUS_SUCCESS)
        st = cudnnSetConvolutionMathType(p->cd, math);
    if (st == CUDNN_STATUS_SUCCESS && c->mode == CU_EAGER)
        st = cudnnFindConvolutionForwardAlgorithmEx(c->dnn, p->xd, x->data, p->wd,
                                                    conv->weight->data, p->cd, p->yd, y->data,
                                                    kCandidates, &count, perf, c->workspace,
                                                    c->workspace_bytes);
    else if (st == CUDNN_STATUS_SUCCESS)
        st = cudnnGetConvolutionForwardAlgorithm_v7(c->dnn, p->xd, p->wd, p->cd, p->yd,
                                                    kCandidates, &count, perf);
    if (st == CUDNN_STATUS_NOT_SUPPORTED || st == CUDNN_STATUS_BAD_PARAM ||
        (st == CUDNN_STATUS_SUCCESS &&
         !pick_algo(perf, count, c->workspace_bytes, &p->algo, &p->workspace))) {
        SDXS_DEBUG("cuda", "conv %dx%d %d->%d (%dx%d, stride %d): no cuDNN algorithm (%s); "
                   "using the implicit-GEMM kernel", p->h, p->w, p->cin, p->cout, p->k, p->k,
                   p->stride, cudnnGetErrorString(st));
        p->cudnn = false;
        return 0;
    }
    CU_CHECK(c, st);
    p->cudnn = true;
    return 0;
}
#endif

static int conv_plan_get(cu_backend *c, const sdxs_tensor *y, const sdxs_tensor *x,
                  const sdxs_conv2d *conv, cu_conv_plan **out)
{
    int n = (int)x->ne[0], h = (int)x->ne[2], w = (int)x->ne[3];
    cu_conv_plan *oldest = nullptr, *p;
    for (int i = 0; i < c->nconv_plans; i++) {
        p = &c->conv_plans[i];
        if (p->n == n && p->h == h && p->w == w && p->cin == conv->cin && p->cout == conv->cout &&
            p->k == conv->kernel && p->stride == conv->stride && p->pad == conv->pad &&
            p->type == c->act) {
            p->last_use = ++c->clock;
            *out = p;
            return 0;
        }
        if (!oldest || p->last_use < oldest->last_use)
            oldest = p;
    }
    p = c->nconv_plans < CU_MAX_CONV_PLANS ? &c->conv_plans[c->nconv_plans++] : oldest;
    conv_plan_release(p);
    p->n = n;
    p->h = h;
    p->w = w;
    p->cin = conv->cin;
    p->cout = conv->cout;
    p->k = conv->kernel;
    p->stride = conv->stride;
    p->pad = conv->pad;
    p->type = c->act;
    p->last_use = ++c->clock;
    p->cudnn = false;
#ifdef SDXS_HAVE_CUDNN
    if (c->use_cudnn && conv_plan_cudnn(c, p, y, x, conv)) {
        conv_plan_release(p);
        return SDXS_ERR_RUNTIME;
    }
#endif
    *out = p;
    return 0;
}

/* x (N, H, W, Cin), W (Cout, K, K, Cin), y (N, Ho, Wo, Cout), T. */
template <typename T>
static int conv2d_t(cu_backend *c, sdxs_tensor *y, const sdxs_tensor *x, const sdxs_conv2d *conv,
             const sdxs_tensor *chan_bias, const sdxs_tensor *residual, int act)
{
    conv_geom g = geom_of(y, x, conv);
    const float *bias = conv->bias ? cu_data<float>(conv->bias) : nullptr;
    const T *cb = chan_bias ? cu_data<T>(chan_bias) : nullptr;
    const T *res = residual ? cu_data<T>(residual) : nullptr;
    cu_conv_plan *p;

    CU_REQUIRE(c, sdxs_tensor_numel(x) <= INT32_MAX && sdxs_tensor_numel(y) <= INT32_MAX &&
                      (int64_t)conv->kernel * conv->kernel * conv->cin <= INT32_MAX);
    if (conv_plan_get(c, y, x, conv, &p))
        return SDXS_ERR_RUNTIME;
    if (!p->cudnn)
        return launch_conv_own<T>(c, cu_data<T>(y), cu_data<T>(x), cu_data<T>(conv->weight), bias,
                                  cb, res, g, act, c->stream);
#ifdef SDXS_HAVE_CUDNN
    {
        const float alpha = 1.0f, beta = 0.0f;
        CU_CHECK(c, cudnnConvolutionForward(c->dnn, &alpha, p->xd, x->data, p->wd,
                                            conv->weight->data, p->cd, p->algo, c->workspace,
                                            c->workspace_bytes, &beta, p->yd, y->data));
    }
    if (!bias && !cb && !res && act == SDXS_ACT_NONE)
        return 0;
    return cu_bias_act<T>(c, cu_data<T>(y), (int64_t)g.m, g.cout, bias, cb,
                          (int64_t)g.ho * g.wo, res, act, c->stream);
#else
    return cu_fail(c, "conv2d", "a cuDNN plan without cuDNN", __FILE__, __LINE__);
#endif
}

/* Layer weights: matrices in T, biases fp32 (vector weights). */
static int check_layer(cu_backend *c, const sdxs_tensor *weight, const sdxs_tensor *bias)
{
    if (weight->dtype != c->act || (bias && bias->dtype != SDXS_DTYPE_F32))
        return cu_fail(c, "layer weights", "weights must be matrices of the activation type and "
                       "biases vector weights (F32)", __FILE__, __LINE__);
    return 0;
}

void cu_conv_free_plans(cu_backend *c)
{
    for (int i = 0; i < c->nconv_plans; i++)
        conv_plan_release(&c->conv_plans[i]);
    for (int i = 0; i < c->ngemm_plans; i++)
        gemm_plan_release(&c->gemm_plans[i]);
    free(c->conv_plans);
    free(c->gemm_plans);
    c->conv_plans = nullptr;
    c->gemm_plans = nullptr;
    c->nconv_plans = c->ngemm_plans = 0;
}

int cu_conv_alloc_plans(cu_backend *c)
{
    c->conv_plans = static_cast<cu_conv_plan *>(calloc(CU_MAX_CONV_PLANS, sizeof(cu_conv_plan)));
    c->gemm_plans = static_cast<cu_gemm_plan *>(calloc(CU_MAX_GEMM_PLANS, sizeof(cu_gemm_plan)));
    return c->conv_plans && c->gemm_plans ? 0 : SDXS_ERR_RUNTIME;
}

int cu_conv2d(sdxs_backend *be, sdxs_tensor *y, const sdxs_tensor *x, const sdxs_conv2d *conv,
              const sdxs_tensor *chan_bias, const sdxs_tensor *residual, sdxs_act act)
{
    cu_backend *c = cu_of(be);
    c->op = "conv2d";
    if (cu_require_act(c, x, "x") || (chan_bias && cu_require_act(c, chan_bias, "chan_bias")) ||
        (residual && cu_require_act(c, residual, "residual")) ||
        check_layer(c, conv->weight, conv->bias))
        return SDXS_ERR_RUNTIME;
    return CU_DISPATCH(c, conv2d_t, c, y, x, conv, chan_bias, residual, (int)act);
}

int cu_linear(sdxs_backend *be, sdxs_tensor *y, const sdxs_tensor *x, const sdxs_linear *lin,
              const sdxs_tensor *residual, sdxs_act act)
{
    cu_backend *c = cu_of(be);
    c->op = "linear";
    if (cu_require_act(c, x, "x") || (residual && cu_require_act(c, residual, "residual")) ||
        check_layer(c, lin->weight, lin->bias))
        return SDXS_ERR_RUNTIME;
    return CU_DISPATCH(c, linear_t, c, y, x, lin, residual, (int)act);
}

} /* namespace SDXS_CU_NS */
