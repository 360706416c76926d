/* cuda_attention.cu: the attention entry. fp16 and bf16 heads of up to 160 features whose rows
 * allow 16-byte loads take the tensor-core kernel, padded to the next instantiated head size
 * (48, 64, 80, 96, 128, 160); everything else (fp32, odd sizes) takes the plain kernel.
 */
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/k_attention.cuh"

namespace SDXS_CU_NS {

/* Arguments shared by both kernels: q, k, v point at their first column. */
template <typename T> struct att_args {
    T *y;
    const T *q, *k, *v;
    int ldy, ldq, ldk, ldv, n, heads, lq, lk, dh, causal;
    float scale;
};

template <typename T, int DHP> static int launch_wmma(cu_backend *c, const att_args<T> &a,
                                               cudaStream_t stream)
{
    dim3 grid((unsigned)((a.lq + ATT_BQ - 1) / ATT_BQ), (unsigned)a.heads, (unsigned)a.n);
    CU_REQUIRE(c, (a.dh <= DHP && a.dh % 8 == 0 &&
                   att_wmma_smem<T, DHP>() <= (size_t)c->smem_optin));
    const size_t smem = att_wmma_smem<T, DHP>();
    CU_LAUNCH(c, (k_attention_wmma<T, DHP>), grid, ATT_THREADS, smem, stream, a.y, a.ldy, a.q,
              a.ldq, a.k, a.ldk, a.v, a.ldv, a.lq, a.lk, a.dh, a.scale, a.causal);
    return 0;
}

template <typename T> static int launch_simt(cu_backend *c, const att_args<T> &a, cudaStream_t stream)
{
    dim3 grid((unsigned)((a.lq + ATT_SIMT_ROWS - 1) / ATT_SIMT_ROWS), (unsigned)a.heads,
              (unsigned)a.n);
    CU_REQUIRE(c, a.dh <= ATT_SIMT_MAX_DH);
    CU_LAUNCH(c, (k_attention_simt<T>), grid, ATT_SIMT_ROWS * 32, att_simt_smem(a.dh), stream,
              a.y, a.ldy, a.q, a.ldq, a.k, a.ldk, a.v, a.ldv, a.lq, a.lk, a.dh, a.scale,
              a.causal);
    return 0;
}

/* The tensor-core kernel needs 2-byte elements and 16-byte aligned rows. */
template <typename T> static bool wmma_fits(const att_args<T> &a)
{
    uintptr_t bits = (uintptr_t)a.y | (uintptr_t)a.q | (uintptr_t)a.k | (uintptr_t)a.v;
    return sizeof(T) == 2 && a.dh % 8 == 0 && a.dh <= 160 && (bits & 15u) == 0 &&
           (a.ldy | a.ldq | a.ldk | a.ldv) % 8 == 0;
}

template <typename T> static int launch_attention(cu_backend *c, const att_args<T> &a,
                                           cudaStream_t stream)
{
    CU_REQUIRE(c, a.n <= 65535 && a.heads <= 65535);
    if (!wmma_fits(a))
        return launch_simt(c, a, stream);
    if (a.dh <= 48)
        return launch_wmma<T, 48>(c, a, stream);
    if (a.dh <= 64)
        return launch_wmma<T, 64>(c, a, stream);
    if (a.dh <= 80)
        return launch_wmma<T, 80>(c, a, stream);
    if (a.dh <= 96)
        return launch_wmma<T, 96>(c, a, stream);
    if (a.dh <= 128)
        return launch_wmma<T, 128>(c, a, stream);
    return launch_wmma<T, 160>(c, a, stream);
}

/* fp32 never takes the tensor-core path. */
template <> int launch_attention<float>(cu_backend *c, const att_args<float> &a,
                                        cudaStream_t stream)
{
    CU_REQUIRE(c, a.n <= 65535 && a.heads <= 65535);
    return launch_simt(c, a, stream);
}

template <typename T>
static int attention_t(cu_backend *c, sdxs_tensor *y, sdxs_cols q, sdxs_cols k, sdxs_cols v, int heads,
                bool causal)
{
    att_args<T> a;
    int64_t dh = q.count / heads;
    CU_REQUIRE(c, q.t->ne[2] <= INT32_MAX && k.t->ne[1] <= INT32_MAX && q.t->ne[1] <= INT32_MAX);
    a.y = cu_data<T>(y);
    a.q = cu_data<T>(q.t) + q.first;
    a.k = cu_data<T>(k.t) + k.first;
    a.v = cu_data<T>(v.t) + v.first;
    a.ldy = (int)y->ne[2];
    a.ldq = (int)q.t->ne[2];
    a.ldk = (int)k.t->ne[2];
    a.ldv = (int)v.t->ne[2];
    a.n = (int)q.t->ne[0];
    a.heads = heads;
    a.lq = (int)q.t->ne[1];
    a.lk = (int)k.t->ne[1];
    a.dh = (int)dh;
    a.causal = causal ? 1 : 0;
    a.scale = 1.0f / sqrtf((float)dh); /* as the CPU reference */
    return launch_attention<T>(c, a, c->stream);
}

template <typename T, int DHP> static int allow_smem(cu_backend *c)
{
    if (att_wmma_smem<T, DHP>() > (size_t)c->smem_optin)
        return 0; /* launch_wmma refuses it with a message */
    CU_CHECK(c, cudaFuncSetAttribute(k_attention_wmma<T, DHP>,
                                     cudaFuncAttributeMaxDynamicSharedMemorySize,
                                     (int)att_wmma_smem<T, DHP>()));
    return 0;
}

template <typename T> static int allow_smem_all(cu_backend *c)
{
    if (allow_smem<T, 48>(c) || allow_smem<T, 64>(c) || allow_smem<T, 80>(c) ||
        allow_smem<T, 96>(c) || allow_smem<T, 128>(c) || allow_smem<T, 160>(c))
        return SDXS_ERR_RUNTIME;
    return 0;
}

int cu_attention_init(cu_backend *c)
{
    c->op = "attention setup";
    size_t simt = att_simt_smem(ATT_SIMT_MAX_DH);
    if (simt > (size_t)c->smem_optin)
        return cu_fail(c, "shared memory", "the device offers too little", __FILE__, __LINE__);
    CU_CHECK(c, cudaFuncSetAttribute(k_attention_simt<float>,
                                     cudaFuncAttributeMaxDynamicSharedMemorySize, (int)simt));
    CU_CHECK(c, cudaFuncSetAttribute(k_attention_simt<__half>,
                                     cudaFuncAttributeMaxDynamicSharedMemorySize, (int)simt));
    CU_CHECK(c, cudaFuncSetAttribute(k_attention_simt<__nv_bfloat16>,
                                     cudaFuncAttributeMaxDynamicSharedMemorySize, (int)simt));
    if (allow_smem_all<__half>(c) || allow_smem_all<__nv_bfloat16>(c))
        return SDXS_ERR_RUNTIME;
    return 0;
}

int cu_attention(sdxs_backend *be, sdxs_tensor *y, sdxs_cols q, sdxs_cols k, sdxs_cols v,
                 int heads, bool causal)
{
    cu_backend *c = cu_of(be);
    c->op = "attention";
    if (cu_require_act(c, q.t, "q") || cu_require_act(c, k.t, "k") || cu_require_act(c, v.t, "v"))
        return SDXS_ERR_RUNTIME;
    return CU_DISPATCH(c, attention_t, c, y, q, k, v, heads, causal);
}

} /* namespace SDXS_CU_NS */
