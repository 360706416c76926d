/* safetensors.h: a validating, memory-mapped reader of .safetensors files.
 *
 * The whole header is checked before any tensor data is touched: its size, its JSON types, every
 * dtype and shape, and that the data offsets tile the data section exactly (inside the file, no
 * overlaps, no gaps, each size equal to its shape times its element size). A file that passes can
 * be read without further checks; a hostile file gets an error, never a crash.
 * The PyTorch checkpoint reader (torchbin.h) fills the same table, with data pointing into its
 * own mapping, so one loader reads both.
 */
#ifndef SDXS_SAFETENSORS_H
#define SDXS_SAFETENSORS_H

#include "kernels/ops.h"

#define SDXS_ST_MAX_DIMS 8
#define SDXS_ST_MAX_HEADER ((size_t)100 << 20) /* the format's own limit on header bytes */

typedef struct sdxs_st_tensor {
    char *name;
    sdxs_dtype dtype; /* F32, F16 or BF16 */
    int ndim;
    int64_t shape[SDXS_ST_MAX_DIMS];
    size_t offset, nbytes; /* inside the data section */
} sdxs_st_tensor;

typedef struct sdxs_safetensors {
    char *path;
    void *map;
    size_t map_len;
    const uint8_t *data; /* the data section, after the header */
    size_t data_len;
    sdxs_st_tensor *tensors; /* sorted by name */
    size_t count;
} sdxs_safetensors;

sdxs_status sdxs_safetensors_open(const char *path, sdxs_safetensors **out, sdxs_error *err);
void sdxs_safetensors_close(sdxs_safetensors *st);
/* NULL when the file has no tensor of that name. */
const sdxs_st_tensor *sdxs_safetensors_find(const sdxs_safetensors *st, const char *name);
const void *sdxs_safetensors_data(const sdxs_safetensors *st, const sdxs_st_tensor *t);
/* Gives the pages of t's data back to the system once a backend has converted it, so that the
 * file mapping and the converted weights are not both resident (peak memory). Harmless on a
 * tensor not yet read, or read again later (the pages come back from the file). */
void sdxs_safetensors_drop(const sdxs_safetensors *st, const sdxs_st_tensor *t);
/* Formats a shape as "(320, 4, 3, 3)" for error messages. */
void sdxs_shape_format(char *out, size_t cap, int ndim, const int64_t *shape);

#endif /* SDXS_SAFETENSORS_H */
