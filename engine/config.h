/* config.h: typed reads of a component's config.json with diffusers' defaults, and the weight
 * loader that matches the tensors of a weight file (safetensors, or a PyTorch .bin read by
 * torchbin.h) to the layers model code declares.
 *
 * Reads are sticky: the first wrong type or unsupported value is recorded with the file and the
 * key, later reads return their defaults, and sdxs_cfg_close reports that first error. Absent keys
 * and JSON null take the default.
 */
#ifndef SDXS_CONFIG_H
#define SDXS_CONFIG_H

#include <jansson.h>

#include "engine/safetensors.h"
#include "kernels/ops.h"

typedef struct sdxs_cfg {
    json_t *root;
    char path[1024]; /* for messages, relative to nothing: as given */
    sdxs_error *err;
    sdxs_status status;
} sdxs_cfg;

/* Opens path (a JSON object, at most 1 MiB). */
sdxs_status sdxs_cfg_open(sdxs_cfg *c, const char *path, sdxs_error *err);
/* Releases the JSON and returns the first error of the reads. */
sdxs_status sdxs_cfg_close(sdxs_cfg *c);
/* Records an unsupported value of key (printf-style reason); returns the status. */
sdxs_status sdxs_cfg_reject(sdxs_cfg *c, const char *key, const char *fmt, ...)
    SDXS_PRINTF(3, 4);

bool sdxs_cfg_has(const sdxs_cfg *c, const char *key); /* present and not null */
bool sdxs_cfg_is_null(const sdxs_cfg *c, const char *key); /* present as JSON null */
int sdxs_cfg_int(sdxs_cfg *c, const char *key, int def, int min, int max);
double sdxs_cfg_num(sdxs_cfg *c, const char *key, double def);
bool sdxs_cfg_bool(sdxs_cfg *c, const char *key, bool def);
/* The string, or def when absent; the result lives as long as the config. */
const char *sdxs_cfg_str(sdxs_cfg *c, const char *key, const char *def);
/* An integer or a list of integers: a single value is repeated n times. Returns the count read
 * (n), or 0 after recording an error (wrong type, wrong length, out of [min, max]). */
int sdxs_cfg_ints(sdxs_cfg *c, const char *key, int *out, int n, int def, int min, int max);
/* A list of at most max_n strings; returns its length, or -1 after recording an error, or 0
 * when absent. */
int sdxs_cfg_strs(sdxs_cfg *c, const char *key, const char **out, int max_n);
/* Like sdxs_cfg_ints for booleans. */
int sdxs_cfg_bools(sdxs_cfg *c, const char *key, bool *out, int n, bool def);
/* The length of a list-valued key, or -1 when absent or not a list. */
int sdxs_cfg_list_len(const sdxs_cfg *c, const char *key);

/* ---- weights ---- */

typedef struct sdxs_loader {
    sdxs_safetensors *st;
    sdxs_weight_store *ws;
    char component[64]; /* "unet", "text_encoder": prefixes messages */
    uint64_t params;    /* elements of every tensor taken, in the current pass */
    bool *used;         /* per file tensor: taken by the model */
} sdxs_loader;

/* Opens dir/<base>.safetensors, or dir/<base>.fp16.safetensors when that is the only one (or
 * when prefer_fp16), or else the PyTorch checkpoint dir/<base>.bin. */
sdxs_status sdxs_loader_open(sdxs_loader *ld, const char *dir, const char *base,
                             const char *component, bool prefer_fp16, sdxs_weight_store *ws,
                             sdxs_error *err);
void sdxs_loader_close(sdxs_loader *ld);
/* Starts a pass over the model's layers (counts restart). */
void sdxs_loader_begin_pass(sdxs_loader *ld);
/* Names of file tensors the model did not take, for a warning; returns how many. */
size_t sdxs_loader_report_unused(const sdxs_loader *ld);

/* A tensor of exactly this shape; an error names the tensor and both shapes. */
sdxs_tensor *sdxs_loader_tensor(sdxs_loader *ld, const char *name, sdxs_weight_role role,
                                int ndim, const int64_t *shape, sdxs_error *err);
sdxs_status sdxs_loader_conv(sdxs_loader *ld, const char *prefix, int cin, int cout, int kernel,
                             int stride, int pad, bool bias, sdxs_conv2d *out, sdxs_error *err);
sdxs_status sdxs_loader_linear(sdxs_loader *ld, const char *prefix, int din, int dout, bool bias,
                               sdxs_linear *out, sdxs_error *err);
/* Several linears of one input stacked into one (rows in the order given): fused q/k/v. */
sdxs_status sdxs_loader_linear_stack(sdxs_loader *ld, const char *const *prefixes, int count,
                                     int din, int dout_each, bool bias, sdxs_linear *out,
                                     sdxs_error *err);
/* groups 0: a layer norm. */
sdxs_status sdxs_loader_norm(sdxs_loader *ld, const char *prefix, int channels, int groups,
                             float eps, sdxs_norm *out, sdxs_error *err);

#endif /* SDXS_CONFIG_H */
