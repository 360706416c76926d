/* config.c: sticky typed reads of config.json files, and the safetensors weight loader (see
 * config.h). */
#include "engine/config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/torchbin.h"

#define CFG_MAX_BYTES ((size_t)1 << 20)

sdxs_status sdxs_cfg_open(sdxs_cfg *c, const char *path, sdxs_error *err)
{
    json_error_t jerr;
    char *text = NULL;
    size_t len = 0;
    sdxs_status st;

    memset(c, 0, sizeof(*c));
    snprintf(c->path, sizeof(c->path), "%s", path);
    c->err = err;
    st = sdxs_read_file(path, CFG_MAX_BYTES, &text, &len, err);
    if (st != SDXS_OK)
        return st;
    c->root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    free(text);
    if (!c->root)
        return sdxs_fail(err, SDXS_ERR_MODEL, path, "%s: not valid JSON: %s (line %d)", path,
                         jerr.text, jerr.line);
    if (!json_is_object(c->root)) {
        json_decref(c->root);
        c->root = NULL;
        return sdxs_fail(err, SDXS_ERR_MODEL, path, "%s: expected a JSON object", path);
    }
    return SDXS_OK;
}

sdxs_status sdxs_cfg_close(sdxs_cfg *c)
{
    json_decref(c->root);
    c->root = NULL;
    return c->status;
}

sdxs_status sdxs_cfg_reject(sdxs_cfg *c, const char *key, const char *fmt, ...)
{
    char reason[384];
    va_list ap;
    if (c->status != SDXS_OK)
        return c->status;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    c->status = sdxs_fail(c->err, SDXS_ERR_MODEL, c->path, "%s: key '%s': %s", c->path, key,
                          reason);
    return c->status;
}

static json_t *get(const sdxs_cfg *c, const char *key)
{
    json_t *v = c->root ? json_object_get(c->root, key) : NULL;
    return json_is_null(v) ? NULL : v;
}

bool sdxs_cfg_has(const sdxs_cfg *c, const char *key) { return get(c, key) != NULL; }

bool sdxs_cfg_is_null(const sdxs_cfg *c, const char *key)
{
    return c->root && json_is_null(json_object_get(c->root, key));
}

int sdxs_cfg_list_len(const sdxs_cfg *c, const char *key)
{
    json_t *v = get(c, key);
    return json_is_array(v) ? (int)json_array_size(v) : -1;
}

/* An integer-valued JSON number (diffusers configs sometimes write 1.0 for 1). */
static bool as_int(const json_t *v, long long *out)
{
    if (json_is_integer(v)) {
        *out = json_integer_value(v);
        return true;
    }
    if (json_is_real(v)) {
        double d = json_real_value(v);
        if (d >= -1e15 && d <= 1e15 && d == (double)(long long)d) {
            *out = (long long)d;
            return true;
        }
    }
    return false;
}

int sdxs_cfg_int(sdxs_cfg *c, const char *key, int def, int min, int max)
{
    json_t *v = get(c, key);
    long long i;
    if (!v || c->status != SDXS_OK)
        return def;
    if (!as_int(v, &i)) {
        sdxs_cfg_reject(c, key, "expected an integer");
        return def;
    }
    if (i < min || i > max) {
        sdxs_cfg_reject(c, key, "%lld is outside the supported range [%d, %d]", i, min, max);
        return def;
    }
    return (int)i;
}

double sdxs_cfg_num(sdxs_cfg *c, const char *key, double def)
{
    json_t *v = get(c, key);
    if (!v || c->status != SDXS_OK)
        return def;
    if (!json_is_number(v)) {
        sdxs_cfg_reject(c, key, "expected a number");
        return def;
    }
    return json_number_value(v);
}

bool sdxs_cfg_bool(sdxs_cfg *c, const char *key, bool def)
{
    json_t *v = get(c, key);
    if (!v || c->status != SDXS_OK)
        return def;
    if (!json_is_boolean(v)) {
        sdxs_cfg_reject(c, key, "expected true or false");
        return def;
    }
    return json_is_true(v);
}

const char *sdxs_cfg_str(sdxs_cfg *c, const char *key, const char *def)
{
    json_t *v = get(c, key);
    if (!v || c->status != SDXS_OK)
        return def;
    if (!json_is_string(v)) {
        sdxs_cfg_reject(c, key, "expected a string");
        return def;
    }
    return json_string_value(v);
}

int sdxs_cfg_ints(sdxs_cfg *c, const char *key, int *out, int n, int def, int min, int max)
{
    json_t *v = get(c, key);
    long long i;

    for (int k = 0; k < n; k++)
        out[k] = def;
    if (!v || c->status != SDXS_OK)
        return c->status == SDXS_OK ? n : 0;
    if (!json_is_array(v)) {
        if (!as_int(v, &i)) {
            sdxs_cfg_reject(c, key, "expected an integer or a list of %d integers", n);
            return 0;
        }
        if (i < min || i > max) {
            sdxs_cfg_reject(c, key, "%lld is outside the supported range [%d, %d]", i, min, max);
            return 0;
        }
        for (int k = 0; k < n; k++)
            out[k] = (int)i;
        return n;
    }
    if ((int)json_array_size(v) != n) {
        sdxs_cfg_reject(c, key, "expected %d entries, found %zu", n, json_array_size(v));
        return 0;
    }
    for (int k = 0; k < n; k++) {
        if (!as_int(json_array_get(v, (size_t)k), &i)) {
            sdxs_cfg_reject(c, key, "entry %d is not an integer", k);
            return 0;
        }
        if (i < min || i > max) {
            sdxs_cfg_reject(c, key, "entry %d (%lld) is outside the supported range [%d, %d]",
                            k, i, min, max);
            return 0;
        }
        out[k] = (int)i;
    }
    return n;
}

int sdxs_cfg_bools(sdxs_cfg *c, const char *key, bool *out, int n, bool def)
{
    json_t *v = get(c, key);
    for (int k = 0; k < n; k++)
        out[k] = def;
    if (!v || c->status != SDXS_OK)
        return c->status == SDXS_OK ? n : 0;
    if (json_is_boolean(v)) {
        for (int k = 0; k < n; k++)
            out[k] = json_is_true(v);
        return n;
    }
    if (!json_is_array(v) || (int)json_array_size(v) != n) {
        sdxs_cfg_reject(c, key, "expected true, false or a list of %d booleans", n);
        return 0;
    }
    for (int k = 0; k < n; k++) {
        json_t *e = json_array_get(v, (size_t)k);
        if (!json_is_boolean(e)) {
            sdxs_cfg_reject(c, key, "entry %d is not a boolean", k);
            return 0;
        }
        out[k] = json_is_true(e);
    }
    return n;
}

int sdxs_cfg_strs(sdxs_cfg *c, const char *key, const char **out, int max_n)
{
    json_t *v = get(c, key);
    int n;
    if (!v || c->status != SDXS_OK)
        return c->status == SDXS_OK ? 0 : -1;
    if (!json_is_array(v)) {
        sdxs_cfg_reject(c, key, "expected a list of strings");
        return -1;
    }
    n = (int)json_array_size(v);
    if (n > max_n) {
        sdxs_cfg_reject(c, key, "%d entries; at most %d are supported", n, max_n);
        return -1;
    }
    for (int k = 0; k < n; k++) {
        json_t *e = json_array_get(v, (size_t)k);
        if (!json_is_string(e)) {
            sdxs_cfg_reject(c, key, "entry %d is not a string", k);
            return -1;
        }
        out[k] = json_string_value(e);
    }
    return n;
}

/* ---- weights ---- */

sdxs_status sdxs_loader_open(sdxs_loader *ld, const char *dir, const char *base,
                             const char *component, bool prefer_fp16, sdxs_weight_store *ws,
                             sdxs_error *err)
{
    char full[1200], half[1200], bin[1200];
    const char *path;
    sdxs_status st;

    memset(ld, 0, sizeof(*ld));
    snprintf(ld->component, sizeof(ld->component), "%s", component);
    ld->ws = ws;
    if (snprintf(full, sizeof(full), "%s/%s.safetensors", dir, base) >= (int)sizeof(full) ||
        snprintf(half, sizeof(half), "%s/%s.fp16.safetensors", dir, base) >= (int)sizeof(half) ||
        snprintf(bin, sizeof(bin), "%s/%s.bin", dir, base) >= (int)sizeof(bin))
        return sdxs_fail(err, SDXS_ERR_INVALID, "model", "model path too long: %s", dir);

    /* The full-precision file unless only the fp16 variant exists or it is asked for; the
     * PyTorch checkpoint only when there is no safetensors file (as diffusers chooses). */
    if (sdxs_file_exists(full) && !(prefer_fp16 && sdxs_file_exists(half)))
        path = full;
    else if (sdxs_file_exists(half))
        path = half;
    else if (sdxs_file_exists(bin))
        path = bin;
    else
        return sdxs_fail(err, SDXS_ERR_MODEL, full,
                         "%s: missing (and no %s.fp16.safetensors or %s.bin)", full, base, base);
    st = path == bin ? sdxs_torchbin_open(path, &ld->st, err)
                     : sdxs_safetensors_open(path, &ld->st, err);
    if (st != SDXS_OK)
        return st;
    ld->used = sdxs_calloc(ld->st->count, sizeof(bool), err, "tensor flags");
    if (!ld->used) {
        sdxs_safetensors_close(ld->st);
        ld->st = NULL;
        return SDXS_ERR_RUNTIME;
    }
    return SDXS_OK;
}

void sdxs_loader_close(sdxs_loader *ld)
{
    sdxs_safetensors_close(ld->st);
    free(ld->used);
    memset(ld, 0, sizeof(*ld));
}

void sdxs_loader_begin_pass(sdxs_loader *ld)
{
    ld->params = 0;
    if (ld->st)
        memset(ld->used, 0, ld->st->count * sizeof(bool));
}

size_t sdxs_loader_report_unused(const sdxs_loader *ld)
{
    size_t n = 0;
    for (size_t i = 0; i < ld->st->count; i++) {
        if (!ld->used[i]) {
            if (n < 5)
                SDXS_WARN("load", "%s: tensor '%s' is not used by the model", ld->st->path,
                          ld->st->tensors[i].name);
            n++;
        }
    }
    if (n > 5)
        SDXS_WARN("load", "%s: %zu tensors in all are not used", ld->st->path, n);
    return n;
}

/* Finds a tensor and checks its shape. */
static const sdxs_st_tensor *find_checked(sdxs_loader *ld, const char *name, int ndim,
                                          const int64_t *shape, sdxs_error *err)
{
    const sdxs_st_tensor *t = sdxs_safetensors_find(ld->st, name);
    bool same;
    char want[128], have[128];

    if (!t) {
        sdxs_fail(err, SDXS_ERR_MODEL, ld->st->path, "%s: missing tensor '%s'", ld->st->path,
                  name);
        return NULL;
    }
    same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++)
        same = t->shape[i] == shape[i];
    if (!same) {
        sdxs_shape_format(want, sizeof(want), ndim, shape);
        sdxs_shape_format(have, sizeof(have), t->ndim, t->shape);
        sdxs_fail(err, SDXS_ERR_MODEL, ld->st->path,
                  "%s: tensor '%s' has shape %s; the configuration needs %s", ld->st->path, name,
                  have, want);
        return NULL;
    }
    ld->used[t - ld->st->tensors] = true;
    return t;
}

sdxs_tensor *sdxs_loader_tensor(sdxs_loader *ld, const char *name, sdxs_weight_role role,
                                int ndim, const int64_t *shape, sdxs_error *err)
{
    const sdxs_st_tensor *t = find_checked(ld, name, ndim, shape, err);
    sdxs_tensor *w;
    uint64_t numel = 1;
    if (!t)
        return NULL;
    for (int i = 0; i < ndim; i++)
        numel *= (uint64_t)shape[i];
    ld->params += numel;
    w = sdxs_weight_store_add(ld->ws, role, ndim, shape, t->dtype,
                              sdxs_safetensors_data(ld->st, t), err);
    sdxs_safetensors_drop(ld->st, t);
    return w;
}

/* The status a failed weight call left in err (missing tensor: bad model; allocation: runtime). */
static sdxs_status loader_status(const sdxs_error *err)
{
    return err && err->status != SDXS_OK ? err->status : SDXS_ERR_MODEL;
}

static sdxs_status name2(char *out, size_t cap, const char *prefix, const char *leaf,
                         sdxs_error *err)
{
    if (snprintf(out, cap, "%s.%s", prefix, leaf) >= (int)cap)
        return sdxs_fail(err, SDXS_ERR_RUNTIME, NULL, "tensor name too long: %s", prefix);
    return SDXS_OK;
}

sdxs_status sdxs_loader_conv(sdxs_loader *ld, const char *prefix, int cin, int cout, int kernel,
                             int stride, int pad, bool bias, sdxs_conv2d *out, sdxs_error *err)
{
    char name[256];
    int64_t wshape[4] = {cout, cin, kernel, kernel}, bshape[1] = {cout};

    memset(out, 0, sizeof(*out));
    out->cin = cin;
    out->cout = cout;
    out->kernel = kernel;
    out->stride = stride;
    out->pad = pad;
    if (name2(name, sizeof(name), prefix, "weight", err) != SDXS_OK)
        return SDXS_ERR_RUNTIME;
    out->weight = sdxs_loader_tensor(ld, name, SDXS_WEIGHT_CONV, 4, wshape, err);
    if (!out->weight)
        return loader_status(err);
    if (!bias)
        return SDXS_OK;
    if (name2(name, sizeof(name), prefix, "bias", err) != SDXS_OK)
        return SDXS_ERR_RUNTIME;
    out->bias = sdxs_loader_tensor(ld, name, SDXS_WEIGHT_VECTOR, 1, bshape, err);
    return out->bias ? SDXS_OK : loader_status(err);
}

sdxs_status sdxs_loader_linear(sdxs_loader *ld, const char *prefix, int din, int dout, bool bias,
                               sdxs_linear *out, sdxs_error *err)
{
    return sdxs_loader_linear_stack(ld, &prefix, 1, din, dout, bias, out, err);
}

/* Copies src (n elements of type dt) into dst at element offset at, as the same type. */
static void put(void *dst, size_t at, sdxs_dtype dt, const void *src, size_t n)
{
    size_t es = sdxs_dtype_size(dt);
    memcpy((char *)dst + at * es, src, n * es);
}

sdxs_status sdxs_loader_linear_stack(sdxs_loader *ld, const char *const *prefixes, int count,
                                     int din, int dout_each, bool bias, sdxs_linear *out,
                                     sdxs_error *err)
{
    const sdxs_st_tensor *wt[8], *bt[8];
    int64_t wshape[2] = {dout_each, din}, bshape[1] = {dout_each};
    int64_t fw[2] = {(int64_t)dout_each * count, din}, fb[1] = {(int64_t)dout_each * count};
    sdxs_dtype dt;
    void *wbuf = NULL, *bbuf = NULL;
    char name[256];
    bool sizing = sdxs_weight_store_sizing(ld->ws);

    SDXS_ASSERT(count >= 1 && count <= 8);
    memset(out, 0, sizeof(*out));
    out->din = din;
    out->dout = dout_each * count;

    /* Every part must exist with the right shape, and all share one element type. */
    for (int i = 0; i < count; i++) {
        if (name2(name, sizeof(name), prefixes[i], "weight", err) != SDXS_OK)
            return SDXS_ERR_RUNTIME;
        wt[i] = find_checked(ld, name, 2, wshape, err);
        if (!wt[i])
            return loader_status(err);
        bt[i] = NULL;
        if (bias) {
            if (name2(name, sizeof(name), prefixes[i], "bias", err) != SDXS_OK)
                return SDXS_ERR_RUNTIME;
            bt[i] = find_checked(ld, name, 1, bshape, err);
            if (!bt[i])
                return loader_status(err);
        }
        if (wt[i]->dtype != wt[0]->dtype || (bias && bt[i]->dtype != wt[0]->dtype))
            return sdxs_fail(err, SDXS_ERR_MODEL, ld->st->path,
                             "%s: the tensors of '%s' do not share one dtype", ld->st->path,
                             prefixes[i]);
    }
    dt = wt[0]->dtype;
    ld->params += (uint64_t)count * ((uint64_t)dout_each * (uint64_t)din + (bias ? dout_each : 0));

    /* A single layer is passed through; several are stacked row-wise in a host buffer. */
    if (count == 1) {
        out->weight = sdxs_weight_store_add(ld->ws, SDXS_WEIGHT_LINEAR, 2, fw, dt,
                                            sdxs_safetensors_data(ld->st, wt[0]), err);
        if (out->weight && bias)
            out->bias = sdxs_weight_store_add(ld->ws, SDXS_WEIGHT_VECTOR, 1, fb, dt,
                                              sdxs_safetensors_data(ld->st, bt[0]), err);
        return out->weight && (!bias || out->bias) ? SDXS_OK : loader_status(err);
    }
    if (!sizing) {
        size_t per = (size_t)dout_each * (size_t)din;
        wbuf = sdxs_alloc(per * (size_t)count * sdxs_dtype_size(dt), err, "a stacked weight");
        bbuf = sdxs_alloc((size_t)fb[0] * sdxs_dtype_size(dt), err, "a stacked bias");
        if (!wbuf || !bbuf) {
            free(wbuf);
            free(bbuf);
            return SDXS_ERR_RUNTIME;
        }
        for (int i = 0; i < count; i++) {
            put(wbuf, per * (size_t)i, dt, sdxs_safetensors_data(ld->st, wt[i]), per);
            if (bias)
                put(bbuf, (size_t)dout_each * (size_t)i, dt, sdxs_safetensors_data(ld->st, bt[i]),
                    (size_t)dout_each);
        }
    }
    out->weight = sdxs_weight_store_add(ld->ws, SDXS_WEIGHT_LINEAR, 2, fw, dt, wbuf, err);
    if (out->weight && bias)
        out->bias = sdxs_weight_store_add(ld->ws, SDXS_WEIGHT_VECTOR, 1, fb, dt, bbuf, err);
    free(wbuf);
    free(bbuf);
    return out->weight && (!bias || out->bias) ? SDXS_OK : loader_status(err);
}

sdxs_status sdxs_loader_norm(sdxs_loader *ld, const char *prefix, int channels, int groups,
                             float eps, sdxs_norm *out, sdxs_error *err)
{
    char name[256];
    int64_t shape[1] = {channels};

    memset(out, 0, sizeof(*out));
    out->channels = channels;
    out->groups = groups;
    out->eps = eps;
    if (name2(name, sizeof(name), prefix, "weight", err) != SDXS_OK)
        return SDXS_ERR_RUNTIME;
    out->gamma = sdxs_loader_tensor(ld, name, SDXS_WEIGHT_VECTOR, 1, shape, err);
    if (!out->gamma)
        return loader_status(err);
    if (name2(name, sizeof(name), prefix, "bias", err) != SDXS_OK)
        return SDXS_ERR_RUNTIME;
    out->beta = sdxs_loader_tensor(ld, name, SDXS_WEIGHT_VECTOR, 1, shape, err);
    return out->beta ? SDXS_OK : loader_status(err);
}
