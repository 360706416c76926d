/* cuda_emu.h: the CUDA backend built against the CPU emulation of emu.h, for tests: the same
 * source as the real backend, its kernels run on CPU threads and its cuBLASLt and cuDNN calls on
 * a CPU reference. Linked by the programs that test the backend where there is no GPU. */
#ifndef SDXS_CUDA_EMU_BACKEND_H
#define SDXS_CUDA_EMU_BACKEND_H

#ifdef __cplusplus
extern "C" {
#endif

#include "kernels/ops.h" /* bool, sdxs_status, sdxs_backend */

/* Like sdxs_backend_cuda_create; fails with SDXS_ERR_RUNTIME when SDXS_EMU_NO_DEVICE is set. */
sdxs_status sdxs_backend_cuda_emu_create(sdxs_precision precision, sdxs_backend **out,
                                         sdxs_error *err);

/* Resumes the threads of a block from the highest index down instead of from 0 up (until a
 * barrier each), so that a missing barrier shows whichever thread writes first on a GPU. */
void sdxs_cuda_emu_reverse_order(bool reverse);

/* The kernels the emulation has run so far, one per line as their launches name them
 * ("k_conv_wmma<T, true>"), sorted; valid until the next call. */
const char *sdxs_cuda_emu_kernels_ran(void);

#ifdef __cplusplus
}
#endif

#endif /* SDXS_CUDA_EMU_BACKEND_H */
