/* cpu_conv.h: convolutions of the CPU backend through oneDNN primitives, on NHWC float32
 * activations, with weights reordered once at load into the layout oneDNN prefers and one
 * primitive per (layer, input size) made on first use and kept. */
#ifndef SDXS_CPU_CONV_H
#define SDXS_CPU_CONV_H

#include "kernels/backend.h"

typedef struct cpu_conv_cache cpu_conv_cache;

/* bf16: weights stored, and inputs rounded, in bfloat16 (float32 sums and outputs). */
sdxs_status cpu_conv_cache_create(cpu_conv_cache **out, bool bf16, sdxs_error *err);
void cpu_conv_cache_free(cpu_conv_cache *cc);

/* Bytes of a (Cout, Cin, K, K) weight in oneDNN's layout; sets t->impl to its descriptor. */
sdxs_status cpu_conv_weight_size(cpu_conv_cache *cc, sdxs_tensor *t, size_t *bytes,
                                 sdxs_error *err);
/* Reorders oihw (float32, logical layout) into t->data, in the layout t->impl describes. */
sdxs_status cpu_conv_weight_fill(cpu_conv_cache *cc, sdxs_tensor *t, const float *oihw,
                                 sdxs_error *err);

/* y = act(conv(x) + bias + chan_bias[n] + residual), all images NHWC. Returns 0 or an
 * sdxs_status. */
int cpu_conv_run(cpu_conv_cache *cc, sdxs_tensor *y, const sdxs_tensor *x,
                 const sdxs_conv2d *conv, const sdxs_tensor *chan_bias,
                 const sdxs_tensor *residual, sdxs_act act);

#endif /* SDXS_CPU_CONV_H */
