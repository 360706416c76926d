/* torchbin.h: a reader of PyTorch's zip-pickle checkpoints (what torch.save writes for a state
 * dict: the diffusion_pytorch_model.bin that some diffusers folders ship instead of safetensors)
 * that never executes anything from the file.
 *
 * The file is memory-mapped and its zip directory checked (stored entries only, every entry
 * inside the file). Its one pickle, data.pkl, is then evaluated by a small machine that knows
 * only the opcodes a saved state dict uses and five global names: collections.OrderedDict,
 * torch._utils._rebuild_tensor_v2 and torch.FloatStorage / HalfStorage / BFloat16Storage.
 * Those names are matched as text and stand for fixed data-building steps here; nothing is
 * imported or called. Any other opcode, name or shape of arguments is refused with the byte at
 * which it appears. The result is the same tensor table the safetensors reader makes, its data
 * pointing into the mapped storages, so the weight loader reads either kind of file.
 */
#ifndef SDXS_TORCHBIN_H
#define SDXS_TORCHBIN_H

#include "engine/safetensors.h"

#define SDXS_TORCHBIN_MAX_PICKLE ((size_t)64 << 20) /* data.pkl of a state dict is KiBs */
#define SDXS_TORCHBIN_MAX_ENTRIES 1000000           /* zip entries (one per storage) */

/* Opens path as a PyTorch zip checkpoint holding a flat state dict of float32, float16 or
 * bfloat16 tensors. Anything else (the pre-1.6 format, compressed or encrypted entries,
 * globals outside the allowed set, storages larger than their entries, non-contiguous tensors,
 * more than one pickle, bytes after the pickle's STOP) is SDXS_ERR_MODEL with a message that
 * names the file and what was refused. */
sdxs_status sdxs_torchbin_open(const char *path, sdxs_safetensors **out, sdxs_error *err);

#endif /* SDXS_TORCHBIN_H */
