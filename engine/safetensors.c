/* safetensors.c: opens, validates and memory-maps a .safetensors file (see safetensors.h).
 *
 * Layout: 8 bytes little-endian header length, that many bytes of JSON (an object mapping each
 * tensor name to {"dtype", "shape", "data_offsets"}, plus an optional "__metadata__" object of
 * strings), then the data section that the offsets index.
 */
#define _DEFAULT_SOURCE /* madvise */
#define _POSIX_C_SOURCE 200809L
#include "engine/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

void sdxs_shape_format(char *out, size_t cap, int ndim, const int64_t *shape)
{
    size_t n = 0;
    n += (size_t)snprintf(out + n, cap - n, "(");
    for (int i = 0; i < ndim && n < cap; i++)
        n += (size_t)snprintf(out + n, cap - n, i ? ", %lld" : "%lld", (long long)shape[i]);
    if (n < cap)
        snprintf(out + n, cap - n, ndim == 1 ? ",)" : ")");
}

static int cmp_by_name(const void *a, const void *b)
{
    return strcmp(((const sdxs_st_tensor *)a)->name, ((const sdxs_st_tensor *)b)->name);
}

static int cmp_by_offset(const void *a, const void *b)
{
    const sdxs_st_tensor *x = *(const sdxs_st_tensor *const *)a;
    const sdxs_st_tensor *y = *(const sdxs_st_tensor *const *)b;
    return x->offset < y->offset ? -1 : (x->offset > y->offset ? 1 : 0);
}

/* A JSON integer that is >= 0 and fits the destination. */
static bool json_size(const json_t *v, uint64_t limit, uint64_t *out)
{
    json_int_t i;
    if (!json_is_integer(v))
        return false;
    i = json_integer_value(v);
    if (i < 0 || (uint64_t)i > limit)
        return false;
    *out = (uint64_t)i;
    return true;
}

static sdxs_status parse_entry(const char *path, const char *name, const json_t *entry,
                               size_t data_len, sdxs_st_tensor *t, sdxs_error *err)
{
    const json_t *dtype = json_object_get(entry, "dtype");
    const json_t *shape = json_object_get(entry, "shape");
    const json_t *offs = json_object_get(entry, "data_offsets");
    const char *dt;
    uint64_t begin, end, elems = 1, dim;
    size_t bytes;

    if (!json_is_object(entry) || !json_is_string(dtype) || !json_is_array(shape) ||
        !json_is_array(offs))
        return sdxs_fail(err, SDXS_ERR_MODEL, path,
                         "%s: tensor '%s': expected an object with a string dtype and arrays "
                         "shape and data_offsets",
                         path, name);

    /* Element type. */
    dt = json_string_value(dtype);
    if (!strcmp(dt, "F32"))
        t->dtype = SDXS_DTYPE_F32;
    else if (!strcmp(dt, "F16"))
        t->dtype = SDXS_DTYPE_F16;
    else if (!strcmp(dt, "BF16"))
        t->dtype = SDXS_DTYPE_BF16;
    else
        return sdxs_fail(err, SDXS_ERR_MODEL, path,
                         "%s: tensor '%s' has dtype %s; supported are F32, F16 and BF16", path,
                         name, dt);

    /* Shape: at most SDXS_ST_MAX_DIMS non-negative sizes whose product does not overflow. */
    if (json_array_size(shape) > SDXS_ST_MAX_DIMS)
        return sdxs_fail(err, SDXS_ERR_MODEL, path, "%s: tensor '%s' has %zu dimensions (max %d)",
                         path, name, json_array_size(shape), SDXS_ST_MAX_DIMS);
    t->ndim = (int)json_array_size(shape);
    for (int i = 0; i < t->ndim; i++) {
        if (!json_size(json_array_get(shape, (size_t)i), INT64_MAX, &dim))
            return sdxs_fail(err, SDXS_ERR_MODEL, path,
                             "%s: tensor '%s': shape[%d] is not a non-negative integer", path,
                             name, i);
        t->shape[i] = (int64_t)dim;
        if (dim && elems > UINT64_MAX / dim)
            return sdxs_fail(err, SDXS_ERR_MODEL, path, "%s: tensor '%s': shape overflows",
                             path, name);
        elems *= dim;
    }
    if (!sdxs_mul_size((size_t)elems, sdxs_dtype_size(t->dtype), &bytes) ||
        elems > (uint64_t)SIZE_MAX)
        return sdxs_fail(err, SDXS_ERR_MODEL, path, "%s: tensor '%s': size overflows", path,
                         name);

    /* Offsets: inside the data section and exactly as long as the shape says. */
    if (json_array_size(offs) != 2 || !json_size(json_array_get(offs, 0), UINT64_MAX, &begin) ||
        !json_size(json_array_get(offs, 1), UINT64_MAX, &end))
        return sdxs_fail(err, SDXS_ERR_MODEL, path,
                         "%s: tensor '%s': data_offsets must be two non-negative integers", path,
                         name);
    if (begin > end || end > data_len)
        return sdxs_fail(err, SDXS_ERR_MODEL, path,
                         "%s: tensor '%s': data_offsets [%llu, %llu] lie outside the %zu-byte "
                         "data section (file truncated?)",
                         path, name, (unsigned long long)begin, (unsigned long long)end,
                         data_len);
    if (end - begin != bytes)
        return sdxs_fail(err, SDXS_ERR_MODEL, path,
                         "%s: tensor '%s': data_offsets span %llu bytes but shape and dtype "
                         "need %zu",
                         path, name, (unsigned long long)(end - begin), bytes);
    t->offset = (size_t)begin;
    t->nbytes = bytes;
    return SDXS_OK;
}

/* The tensors must tile the data section: sorted by offset, each starts where the last ended. */
static sdxs_status check_tiling(sdxs_safetensors *st, sdxs_error *err)
{
    sdxs_st_tensor **order;
    size_t expect = 0;
    sdxs_status status = SDXS_OK;

    order = sdxs_calloc(st->count, sizeof(*order), err, "tensor order");
    if (!order)
        return SDXS_ERR_RUNTIME;
    for (size_t i = 0; i < st->count; i++)
        order[i] = &st->tensors[i];
    qsort(order, st->count, sizeof(*order), cmp_by_offset);
    for (size_t i = 0; i < st->count && status == SDXS_OK; i++) {
        if (order[i]->offset < expect)
            status = sdxs_fail(err, SDXS_ERR_MODEL, st->path,
                               "%s: tensor '%s' overlaps tensor '%s'", st->path, order[i]->name,
                               order[i - 1]->name);
        else if (order[i]->offset > expect)
            status = sdxs_fail(err, SDXS_ERR_MODEL, st->path,
                               "%s: %zu unused bytes before tensor '%s'", st->path,
                               order[i]->offset - expect, order[i]->name);
        expect = order[i]->offset + order[i]->nbytes;
    }
    if (status == SDXS_OK && expect != st->data_len)
        status = sdxs_fail(err, SDXS_ERR_MODEL, st->path,
                           "%s: %zu bytes of data after the last tensor", st->path,
                           st->data_len - expect);
    free(order);
    return status;
}

static sdxs_status parse_header(sdxs_safetensors *st, const char *text, size_t len,
                                sdxs_error *err)
{
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    const char *key;
    json_t *value;
    sdxs_status status = SDXS_OK;
    size_t n = 0;

    if (!root)
        return sdxs_fail(err, SDXS_ERR_MODEL, st->path, "%s: header is not valid JSON: %s",
                         st->path, jerr.text);
    if (!json_is_object(root)) {
        json_decref(root);
        return sdxs_fail(err, SDXS_ERR_MODEL, st->path, "%s: header is not a JSON object",
                         st->path);
    }

    st->tensors = sdxs_calloc(json_object_size(root), sizeof(sdxs_st_tensor), err, st->path);
    if (!st->tensors) {
        json_decref(root);
        return SDXS_ERR_RUNTIME;
    }
    json_object_foreach(root, key, value) {
        if (!strcmp(key, "__metadata__")) {
            const char *mk;
            json_t *mv;
            if (!json_is_object(value)) {
                status = sdxs_fail(err, SDXS_ERR_MODEL, st->path,
                                   "%s: __metadata__ is not an object", st->path);
                break;
            }
            json_object_foreach(value, mk, mv) {
                if (!json_is_string(mv)) {
                    status = sdxs_fail(err, SDXS_ERR_MODEL, st->path,
                                       "%s: __metadata__ value '%s' is not a string", st->path,
                                       mk);
                    break;
                }
            }
            if (status != SDXS_OK)
                break;
            continue;
        }
        status = parse_entry(st->path, key, value, st->data_len, &st->tensors[n], err);
        if (status != SDXS_OK)
            break;
        st->tensors[n].name = sdxs_strdup(key, err);
        if (!st->tensors[n].name) {
            status = SDXS_ERR_RUNTIME;
            break;
        }
        n++;
    }
    st->count = n;
    json_decref(root);
    if (status != SDXS_OK)
        return status;

    qsort(st->tensors, st->count, sizeof(sdxs_st_tensor), cmp_by_name);
    return check_tiling(st, err);
}

sdxs_status sdxs_safetensors_open(const char *path, sdxs_safetensors **out, sdxs_error *err)
{
    sdxs_safetensors *st;
    struct stat sb;
    uint64_t header_len = 0;
    const uint8_t *bytes;
    sdxs_status status;
    int fd;

    *out = NULL;
    st = sdxs_calloc(1, sizeof(*st), err, "a safetensors file");
    if (!st)
        return SDXS_ERR_RUNTIME;
    st->path = sdxs_strdup(path, err);
    if (!st->path) {
        free(st);
        return SDXS_ERR_RUNTIME;
    }

    /* Map the whole file read-only. */
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        status = sdxs_fail(err, SDXS_ERR_MODEL, path, "%s: cannot open: %s", path,
                           strerror(errno));
        goto fail;
    }
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        status = sdxs_fail(err, SDXS_ERR_MODEL, path, "%s: not a regular file", path);
        goto fail;
    }
    if (sb.st_size < 8) {
        close(fd);
        status = sdxs_fail(err, SDXS_ERR_MODEL, path,
                           "%s: %lld bytes is too short for a safetensors file", path,
                           (long long)sb.st_size);
        goto fail;
    }
    st->map_len = (size_t)sb.st_size;
    st->map = mmap(NULL, st->map_len, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (st->map == MAP_FAILED) {
        st->map = NULL;
        status = sdxs_fail(err, SDXS_ERR_MODEL, path, "%s: cannot map: %s", path,
                           strerror(errno));
        goto fail;
    }
    bytes = st->map;

    /* The header: its length first, within the format's limit and the file. */
    for (int i = 7; i >= 0; i--)
        header_len = header_len << 8 | bytes[i];
    if (header_len > SDXS_ST_MAX_HEADER || header_len > st->map_len - 8) {
        status = sdxs_fail(err, SDXS_ERR_MODEL, path,
                           "%s: header length %llu exceeds the file (%zu bytes) or the %zu-byte "
                           "limit",
                           path, (unsigned long long)header_len, st->map_len,
                           SDXS_ST_MAX_HEADER);
        goto fail;
    }
    st->data = bytes + 8 + header_len;
    st->data_len = st->map_len - 8 - (size_t)header_len;
    status = parse_header(st, (const char *)bytes + 8, (size_t)header_len, err);
    if (status != SDXS_OK)
        goto fail;
    *out = st;
    return SDXS_OK;

fail:
    sdxs_safetensors_close(st);
    return status;
}

void sdxs_safetensors_close(sdxs_safetensors *st)
{
    if (!st)
        return;
    if (st->map)
        munmap(st->map, st->map_len);
    for (size_t i = 0; st->tensors && i < st->count; i++)
        free(st->tensors[i].name);
    free(st->tensors);
    free(st->path);
    free(st);
}

const sdxs_st_tensor *sdxs_safetensors_find(const sdxs_safetensors *st, const char *name)
{
    sdxs_st_tensor key;
    key.name = (char *)name;
    return bsearch(&key, st->tensors, st->count, sizeof(sdxs_st_tensor), cmp_by_name);
}

const void *sdxs_safetensors_data(const sdxs_safetensors *st, const sdxs_st_tensor *t)
{
    return st->data + t->offset;
}

void sdxs_safetensors_drop(const sdxs_safetensors *st, const sdxs_st_tensor *t)
{
    /* The mapping is private and read-only, so dropped pages are read back from the file if they
     * are touched again (a neighbour's first or last page): nothing is lost, only memory freed. */
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t lo = (uintptr_t)(st->data + t->offset), hi = lo + t->nbytes;
    uintptr_t map_lo = (uintptr_t)st->map, map_hi = map_lo + st->map_len;

    if (!st->map || t->nbytes == 0 || lo < map_lo || hi > map_hi)
        return;
    lo &= ~(page - 1);
    hi = (hi + page - 1) & ~(page - 1);
    if (hi > map_hi)
        hi = map_hi;
    (void)madvise((void *)lo, hi - lo, MADV_DONTNEED);
}
