/* torchbin.c: PyTorch zip-pickle checkpoints read as data (see torchbin.h): the zip directory,
 * then a restricted pickle machine over data.pkl that builds a table of tensors and refuses
 * everything a state dict does not need.
 *
 * A torch.save'd state dict pickles as: OrderedDict() (GLOBAL + REDUCE), then for each entry a
 * name and _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks), where storage
 * is a persistent id ('storage', torch.FloatStorage, key, location, numel) naming the zip entry
 * <archive>/data/<key>; finally an optional BUILD that attaches the _metadata attribute.
 */
#define _POSIX_C_SOURCE 200809L
#include "engine/torchbin.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define ZIP_NAME_MAX 1024   /* bytes of one entry name */
#define KEY_NAME_MAX 1024   /* bytes of one state-dict key */
#define PROTO_MAX 5         /* the newest pickle protocol */
#define MEMO_MAX (1u << 22) /* memo slots; torch numbers them from 0, one per object */

/* ---- the mapped file and its zip directory ---- */

typedef struct zip_entry {
    char *name;
    size_t data, size; /* absolute offset of the stored bytes, and their count */
} zip_entry;

typedef struct bin_file {
    const char *path;
    const uint8_t *map; /* (len) bytes */
    size_t len;
    zip_entry *entries; /* sorted by name */
    size_t count;
    char prefix[ZIP_NAME_MAX]; /* "archive/": the folder data.pkl is in */
    sdxs_error *err;
} bin_file;

static uint32_t rd16(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8; }
static uint32_t rd32(const uint8_t *p) { return rd16(p) | rd16(p + 2) << 16; }
static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }

static sdxs_status bad(bin_file *f, const char *fmt, ...) SDXS_PRINTF(2, 3);
static sdxs_status bad(bin_file *f, const char *fmt, ...)
{
    char why[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    return sdxs_fail(f->err, SDXS_ERR_MODEL, f->path, "%s: %s", f->path, why);
}

/* Bytes from a file, made printable for a message (at most 60 of them). */
static const char *shown(char *buf, size_t cap, const uint8_t *s, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n && o + 4 < cap && i < 60; i++)
        buf[o++] = s[i] >= 0x20 && s[i] < 0x7f ? (char)s[i] : '?';
    if (n > 60 && o + 4 < cap)
        buf[o++] = '.', buf[o++] = '.', buf[o++] = '.';
    buf[o] = '\0';
    return buf;
}

static int cmp_entry(const void *a, const void *b)
{
    return strcmp(((const zip_entry *)a)->name, ((const zip_entry *)b)->name);
}

static const zip_entry *entry_find(const bin_file *f, const char *name)
{
    zip_entry key;
    key.name = (char *)name;
    return bsearch(&key, f->entries, f->count, sizeof(zip_entry), cmp_entry);
}

/* Where the central directory is and how many entries it has, from the end-of-directory record
 * (and its zip64 form when a field overflowed, as torch always writes one). */
static sdxs_status find_directory(bin_file *f, size_t *cd_off, size_t *cd_size, size_t *count)
{
    size_t eocd = 0, lowest;
    bool found = false;
    uint64_t total, size, off;

    if (f->len < 22)
        return bad(f, "%zu bytes: too short for a zip archive (truncated?)", f->len);
    lowest = f->len - 22 > 65535 ? f->len - 22 - 65535 : 0;
    for (size_t p = f->len - 22 + 1; p-- > lowest;) {
        if (rd32(f->map + p) == 0x06054b50 && p + 22 + rd16(f->map + p + 20) == f->len) {
            eocd = p;
            found = true;
            break;
        }
    }
    if (!found)
        return bad(f, "no end-of-central-directory record: not a zip archive, or truncated");
    if (rd16(f->map + eocd + 4) != 0 || rd16(f->map + eocd + 6) != 0 ||
        rd16(f->map + eocd + 8) != rd16(f->map + eocd + 10))
        return bad(f, "a multi-part zip archive is not supported");
    total = rd16(f->map + eocd + 10);
    size = rd32(f->map + eocd + 12);
    off = rd32(f->map + eocd + 16);

    if (total == 0xffff || size == 0xffffffffu || off == 0xffffffffu) {
        uint64_t z;
        if (eocd < 20 || rd32(f->map + eocd - 20) != 0x07064b50)
            return bad(f, "the zip64 directory locator is missing");
        z = rd64(f->map + eocd - 20 + 8);
        if (z > eocd - 20 || eocd - 20 - z < 56 || rd32(f->map + z) != 0x06064b50)
            return bad(f, "the zip64 end-of-directory record is missing or misplaced");
        total = rd64(f->map + z + 32);
        size = rd64(f->map + z + 40);
        off = rd64(f->map + z + 48);
        eocd = (size_t)z;
    }
    if (off > eocd || size > eocd - off)
        return bad(f, "the central directory (%llu bytes at %llu) lies outside the file "
                      "(truncated?)",
                   (unsigned long long)size, (unsigned long long)off);
    if (total > SDXS_TORCHBIN_MAX_ENTRIES || total * 46 > size)
        return bad(f, "%llu zip entries do not fit the directory or the limit of %d",
                   (unsigned long long)total, SDXS_TORCHBIN_MAX_ENTRIES);
    *cd_off = (size_t)off;
    *cd_size = (size_t)size;
    *count = (size_t)total;
    return SDXS_OK;
}

/* Replaces 0xffffffff fields by their values from a zip64 extra field (id 1). */
static sdxs_status zip64_fields(bin_file *f, const uint8_t *extra, size_t xlen, uint64_t *usize,
                                uint64_t *csize, uint64_t *local)
{
    uint64_t *want[3] = {usize, csize, local};
    size_t at = 0;
    while (at + 4 <= xlen) {
        uint32_t id = rd16(extra + at), n = rd16(extra + at + 2);
        if (at + 4 + n > xlen)
            break;
        if (id == 1) {
            size_t k = 0;
            for (int i = 0; i < 3; i++) {
                if (*want[i] != 0xffffffffu)
                    continue;
                if (k + 8 > n)
                    return bad(f, "a zip64 extra field is too short");
                *want[i] = rd64(extra + at + 4 + k);
                k += 8;
            }
            return SDXS_OK;
        }
        at += 4 + n;
    }
    if (*usize == 0xffffffffu || *csize == 0xffffffffu || *local == 0xffffffffu)
        return bad(f, "an entry needs a zip64 extra field and has none");
    return SDXS_OK;
}

/* One central-directory record at *p: checked against its local header; *p moves past it. */
static sdxs_status read_entry(bin_file *f, size_t *p, size_t cd_end, size_t cd_off,
                              zip_entry *e)
{
    const uint8_t *c = f->map + *p;
    uint32_t flags, method, nlen, xlen, clen, lnlen, lxlen;
    uint64_t csize, usize, local, data;
    char buf[80];

    if (*p + 46 > cd_end || rd32(c) != 0x02014b50)
        return bad(f, "a central directory record is broken (at byte %zu)", *p);
    flags = rd16(c + 8);
    method = rd16(c + 10);
    csize = rd32(c + 20);
    usize = rd32(c + 24);
    nlen = rd16(c + 28);
    xlen = rd16(c + 30);
    clen = rd16(c + 32);
    local = rd32(c + 42);
    if (*p + 46 + nlen + xlen + clen > cd_end)
        return bad(f, "a central directory record runs past the directory");
    if (nlen == 0 || nlen >= ZIP_NAME_MAX || memchr(c + 46, 0, nlen))
        return bad(f, "a zip entry name is empty, too long or holds a NUL byte");
    if (zip64_fields(f, c + 46 + nlen, xlen, &usize, &csize, &local) != SDXS_OK)
        return SDXS_ERR_MODEL;
    shown(buf, sizeof(buf), c + 46, nlen);
    if (flags & 1)
        return bad(f, "entry '%s' is encrypted", buf);
    if (method != 0 || csize != usize)
        return bad(f, "entry '%s' is compressed (method %u): PyTorch stores entries as they are",
                   buf, method);

    /* The local header repeats the name; the data follows it and precedes the directory. */
    if (local > cd_off || cd_off - local < 30 || rd32(f->map + local) != 0x04034b50)
        return bad(f, "entry '%s': its local header is missing", buf);
    lnlen = rd16(f->map + local + 26);
    lxlen = rd16(f->map + local + 28);
    data = local + 30 + lnlen + lxlen;
    if (lnlen != nlen || data > cd_off || memcmp(f->map + local + 30, c + 46, nlen))
        return bad(f, "entry '%s': its local header does not match the directory", buf);
    if (usize > cd_off - data)
        return bad(f, "entry '%s': %llu bytes at %llu run past the end of the data (truncated?)",
                   buf, (unsigned long long)usize, (unsigned long long)data);
    e->name = sdxs_alloc(nlen + 1, f->err, "a zip entry name");
    if (!e->name)
        return SDXS_ERR_RUNTIME;
    memcpy(e->name, c + 46, nlen);
    e->name[nlen] = '\0';
    e->data = (size_t)data;
    e->size = (size_t)usize;
    *p += 46 + nlen + xlen + clen;
    return SDXS_OK;
}

static bool ends_with(const char *s, const char *tail)
{
    size_t n = strlen(s), t = strlen(tail);
    return n >= t && !strcmp(s + n - t, tail);
}

/* Reads the directory; finds the one pickle and the folder it names. */
static sdxs_status read_zip(bin_file *f, const zip_entry **pickle)
{
    size_t cd_off = 0, cd_size = 0, count = 0, p;
    const zip_entry *pk = NULL, *order;
    sdxs_status st;

    if (f->len >= 2 && f->map[0] == 0x80 && f->map[1] <= PROTO_MAX)
        return bad(f, "a checkpoint in PyTorch's legacy (pre-1.6) format is not supported; "
                      "save it again with torch.save, or as safetensors");
    st = find_directory(f, &cd_off, &cd_size, &count);
    if (st != SDXS_OK)
        return st;
    f->entries = sdxs_calloc(count ? count : 1, sizeof(zip_entry), f->err, "zip entries");
    if (!f->entries)
        return SDXS_ERR_RUNTIME;
    p = cd_off;
    for (size_t i = 0; i < count; i++) {
        st = read_entry(f, &p, cd_off + cd_size, cd_off, &f->entries[i]);
        if (st != SDXS_OK)
            return st;
        f->count++;
    }
    qsort(f->entries, f->count, sizeof(zip_entry), cmp_entry);

    /* Names are unique; exactly one pickle, data.pkl, at the top or in one folder. */
    for (size_t i = 0; i < f->count; i++) {
        if (i && !strcmp(f->entries[i].name, f->entries[i - 1].name))
            return bad(f, "entry '%s' appears twice", f->entries[i].name);
        if (ends_with(f->entries[i].name, ".pkl")) {
            if (pk)
                return bad(f, "holds more than one pickle ('%s' and '%s'): nested or extra "
                              "pickles are refused",
                           pk->name, f->entries[i].name);
            pk = &f->entries[i];
        }
    }
    if (!pk)
        return bad(f, "no data.pkl: not a PyTorch checkpoint");
    {
        const char *slash = strchr(pk->name, '/');
        size_t plen = strlen(pk->name) - strlen("data.pkl");
        if (!ends_with(pk->name, "data.pkl") || (slash && slash != pk->name + plen - 1) ||
            (plen && pk->name[plen - 1] != '/'))
            return bad(f, "the pickle is '%s'; a checkpoint has ARCHIVE/data.pkl", pk->name);
        memcpy(f->prefix, pk->name, plen);
        f->prefix[plen] = '\0';
    }
    if (pk->size > SDXS_TORCHBIN_MAX_PICKLE)
        return bad(f, "data.pkl is %zu bytes, over the limit of %zu", pk->size,
                   SDXS_TORCHBIN_MAX_PICKLE);

    /* Tensors are read as little-endian numbers. */
    {
        char name[ZIP_NAME_MAX + 16];
        snprintf(name, sizeof(name), "%sbyteorder", f->prefix);
        order = entry_find(f, name);
        if (order && !(order->size == 6 && !memcmp(f->map + order->data, "little", 6)))
            return bad(f, "the tensors are not stored little-endian");
    }
    *pickle = pk;
    return SDXS_OK;
}

/* ---- the pickle machine ---- */

typedef enum pv_kind {
    PV_MARK = 0,
    PV_NONE,
    PV_BOOL,
    PV_INT,
    PV_STR,
    PV_TUPLE,
    PV_DICT,
    PV_GLOBAL,
    PV_STORAGE,
    PV_TENSOR,
} pv_kind;

/* The only names a GLOBAL may give. */
typedef enum pv_global {
    G_ORDERED_DICT = 0,
    G_REBUILD_TENSOR,
    G_FLOAT_STORAGE,
    G_HALF_STORAGE,
    G_BF16_STORAGE,
} pv_global;

static const struct {
    const char *module, *name;
} g_allowed[] = {
    [G_ORDERED_DICT] = {"collections", "OrderedDict"},
    [G_REBUILD_TENSOR] = {"torch._utils", "_rebuild_tensor_v2"},
    [G_FLOAT_STORAGE] = {"torch", "FloatStorage"},
    [G_HALF_STORAGE] = {"torch", "HalfStorage"},
    [G_BF16_STORAGE] = {"torch", "BFloat16Storage"},
};

/* One value. Strings point into the mapped pickle; tuples and dicts index side arrays. */
typedef struct pv {
    pv_kind kind;
    int64_t i;         /* BOOL, INT; GLOBAL: pv_global; TENSOR: index; STORAGE: numel */
    const uint8_t *s;  /* STR */
    uint32_t len;      /* STR bytes; TUPLE and DICT entries */
    uint32_t first;    /* TUPLE: first child in kids; DICT: first item, or UINT32_MAX */
    uint32_t last;     /* DICT: last item */
    bool built;        /* DICT: BUILD already applied */
    sdxs_dtype dtype;  /* STORAGE */
    size_t data;       /* STORAGE: absolute offset of its bytes */
} pv;

typedef struct pv_item {
    uint32_t key, value, next;
} pv_item;

typedef struct pickle_vm {
    bin_file *f;
    const uint8_t *p; /* (n) bytes of data.pkl */
    size_t n, pos, at; /* at: the offset of the current opcode */
    pv *vals;
    size_t nvals, cap_vals;
    uint32_t *stack;
    size_t nstack, cap_stack;
    size_t *marks; /* stack heights at each MARK */
    size_t nmarks, cap_marks;
    uint32_t *kids;
    size_t nkids, cap_kids;
    pv_item *items;
    size_t nitems, cap_items;
    uint32_t *memo; /* value index + 1; 0 is empty */
    size_t cap_memo, next_memo;
    sdxs_st_tensor *tensors;
    size_t ntensors, cap_tensors;
} pickle_vm;

static sdxs_status vm_bad(pickle_vm *vm, const char *fmt, ...) SDXS_PRINTF(2, 3);
static sdxs_status vm_bad(pickle_vm *vm, const char *fmt, ...)
{
    char why[360];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    return bad(vm->f, "data.pkl byte %zu: %s", vm->at, why);
}

/* Grows *arr to hold need elements. Every array here is bounded by the pickle's length (each
 * opcode adds at most one value, one stack slot, one child or one item), so this only fails
 * when memory runs out. */
static bool grow(pickle_vm *vm, void **arr, size_t *cap, size_t need, size_t elem)
{
    size_t ncap = *cap ? *cap : 64, bytes;
    void *p;
    if (need <= *cap)
        return true;
    while (ncap < need)
        ncap *= 2;
    if (!sdxs_mul_size(ncap, elem, &bytes)) {
        sdxs_fail(vm->f->err, SDXS_ERR_RUNTIME, NULL, "pickle arrays overflow");
        return false;
    }
    p = realloc(*arr, bytes);
    if (!p) {
        sdxs_fail(vm->f->err, SDXS_ERR_RUNTIME, NULL, "out of memory reading %s", vm->f->path);
        return false;
    }
    *arr = p;
    *cap = ncap;
    return true;
}

#define GROW(vm, arr, cap, need) grow((vm), (void **)&(arr), &(cap), (need), sizeof(*(arr)))

/* Adds a value and returns its index, or UINT32_MAX when out of memory. */
static uint32_t vm_new(pickle_vm *vm, pv_kind kind)
{
    if (vm->nvals >= UINT32_MAX - 1 || !GROW(vm, vm->vals, vm->cap_vals, vm->nvals + 1))
        return UINT32_MAX;
    memset(&vm->vals[vm->nvals], 0, sizeof(pv));
    vm->vals[vm->nvals].kind = kind;
    vm->vals[vm->nvals].first = UINT32_MAX;
    return (uint32_t)vm->nvals++;
}

static sdxs_status vm_push(pickle_vm *vm, uint32_t v)
{
    if (v == UINT32_MAX || !GROW(vm, vm->stack, vm->cap_stack, vm->nstack + 1))
        return SDXS_ERR_RUNTIME;
    vm->stack[vm->nstack++] = v;
    return SDXS_OK;
}

/* The value count above the topmost MARK (or the whole stack when there is none). */
static size_t above_mark(const pickle_vm *vm)
{
    return vm->nstack - (vm->nmarks ? vm->marks[vm->nmarks - 1] : 0);
}

/* Pops one value that is not a MARK. */
static sdxs_status vm_pop(pickle_vm *vm, uint32_t *v)
{
    if (above_mark(vm) == 0)
        return vm_bad(vm, "the stack is empty where a value was expected");
    *v = vm->stack[--vm->nstack];
    return SDXS_OK;
}

static pv *val(pickle_vm *vm, uint32_t v) { return &vm->vals[v]; }

static sdxs_status vm_read(pickle_vm *vm, size_t n, const uint8_t **out)
{
    if (n > vm->n - vm->pos)
        return vm_bad(vm, "the pickle ends inside an opcode's argument (truncated)");
    *out = vm->p + vm->pos;
    vm->pos += n;
    return SDXS_OK;
}

/* Pops count values into a new tuple. */
static sdxs_status make_tuple(pickle_vm *vm, size_t count)
{
    uint32_t t;
    if (above_mark(vm) < count)
        return vm_bad(vm, "a tuple needs %zu values on the stack", count);
    if (!GROW(vm, vm->kids, vm->cap_kids, vm->nkids + count))
        return SDXS_ERR_RUNTIME;
    t = vm_new(vm, PV_TUPLE);
    if (t == UINT32_MAX)
        return SDXS_ERR_RUNTIME;
    val(vm, t)->first = (uint32_t)vm->nkids;
    val(vm, t)->len = (uint32_t)count;
    if (count) /* kids is still NULL before the first non-empty tuple */
        memcpy(vm->kids + vm->nkids, vm->stack + vm->nstack - count, count * sizeof(uint32_t));
    vm->nkids += count;
    vm->nstack -= count;
    return vm_push(vm, t);
}

static uint32_t kid(const pickle_vm *vm, const pv *tuple, uint32_t i)
{
    return vm->kids[tuple->first + i];
}

static sdxs_status dict_put(pickle_vm *vm, uint32_t d, uint32_t key, uint32_t value)
{
    pv *dv;
    if (val(vm, d)->kind != PV_DICT)
        return vm_bad(vm, "SETITEM on something that is not a dict");
    if (vm->nitems >= UINT32_MAX - 1 || !GROW(vm, vm->items, vm->cap_items, vm->nitems + 1))
        return SDXS_ERR_RUNTIME;
    vm->items[vm->nitems] = (pv_item){key, value, UINT32_MAX};
    dv = val(vm, d);
    if (dv->first == UINT32_MAX)
        dv->first = (uint32_t)vm->nitems;
    else
        vm->items[dv->last].next = (uint32_t)vm->nitems;
    dv->last = (uint32_t)vm->nitems++;
    dv->len++;
    return SDXS_OK;
}

static sdxs_status op_global(pickle_vm *vm, const uint8_t *mod, size_t mlen, const uint8_t *name,
                             size_t nlen)
{
    char a[80], b[80];
    for (size_t g = 0; g < SDXS_ARRAY_LEN(g_allowed); g++) {
        if (strlen(g_allowed[g].module) == mlen && !memcmp(g_allowed[g].module, mod, mlen) &&
            strlen(g_allowed[g].name) == nlen && !memcmp(g_allowed[g].name, name, nlen)) {
            uint32_t v = vm_new(vm, PV_GLOBAL);
            if (v == UINT32_MAX)
                return SDXS_ERR_RUNTIME;
            val(vm, v)->i = (int64_t)g;
            return vm_push(vm, v);
        }
    }
    return vm_bad(vm, "the global '%s.%s' is not one a state dict uses; refused (allowed: "
                      "collections.OrderedDict, torch._utils._rebuild_tensor_v2, "
                      "torch.FloatStorage, torch.HalfStorage, torch.BFloat16Storage)",
                  shown(a, sizeof(a), mod, mlen), shown(b, sizeof(b), name, nlen));
}

/* GLOBAL: "module\nname\n" as text. */
static sdxs_status op_global_text(pickle_vm *vm)
{
    const uint8_t *start = vm->p + vm->pos, *nl1, *nl2;
    size_t left = vm->n - vm->pos;
    nl1 = memchr(start, '\n', left < 256 ? left : 256);
    if (!nl1)
        return vm_bad(vm, "GLOBAL without a module line");
    left -= (size_t)(nl1 + 1 - start);
    nl2 = memchr(nl1 + 1, '\n', left < 256 ? left : 256);
    if (!nl2)
        return vm_bad(vm, "GLOBAL without a name line");
    vm->pos = (size_t)(nl2 + 1 - vm->p);
    return op_global(vm, start, (size_t)(nl1 - start), nl1 + 1, (size_t)(nl2 - nl1 - 1));
}

static bool is_str(const pv *v, const char *s)
{
    return v->kind == PV_STR && v->len == strlen(s) && !memcmp(v->s, s, v->len);
}

/* BINPERSID: ('storage', StorageType, key, location, numel) -> the entry ARCHIVE/data/key. */
static sdxs_status op_persid(pickle_vm *vm)
{
    static const sdxs_dtype types[] = {
        [G_FLOAT_STORAGE] = SDXS_DTYPE_F32,
        [G_HALF_STORAGE] = SDXS_DTYPE_F16,
        [G_BF16_STORAGE] = SDXS_DTYPE_BF16,
    };
    char name[ZIP_NAME_MAX + 64], key[32];
    const zip_entry *e;
    const pv *t, *ty, *k, *loc, *numel;
    size_t es, bytes;
    uint32_t id, v;
    sdxs_dtype dtype;
    int64_t count;
    pv *s;

    if (vm_pop(vm, &id) != SDXS_OK)
        return SDXS_ERR_MODEL;
    t = val(vm, id);
    if (t->kind != PV_TUPLE || t->len != 5 || !is_str(val(vm, kid(vm, t, 0)), "storage"))
        return vm_bad(vm, "a persistent id that is not ('storage', type, key, location, numel)");
    ty = val(vm, kid(vm, t, 1));
    k = val(vm, kid(vm, t, 2));
    loc = val(vm, kid(vm, t, 3));
    numel = val(vm, kid(vm, t, 4));
    if (ty->kind != PV_GLOBAL || ty->i < G_FLOAT_STORAGE)
        return vm_bad(vm, "a storage whose type is not FloatStorage, HalfStorage or "
                          "BFloat16Storage");
    if (k->kind != PV_STR || k->len == 0 || k->len >= sizeof(key) || loc->kind != PV_STR ||
        numel->kind != PV_INT || numel->i < 0)
        return vm_bad(vm, "a storage with a malformed key, location or size");
    for (uint32_t i = 0; i < k->len; i++)
        if (k->s[i] < '0' || k->s[i] > '9')
            return vm_bad(vm, "a storage key that is not a number");
    memcpy(key, k->s, k->len);
    key[k->len] = '\0';

    /* The entry must hold every element the storage declares. */
    snprintf(name, sizeof(name), "%sdata/%s", vm->f->prefix, key);
    e = entry_find(vm->f, name);
    if (!e)
        return vm_bad(vm, "storage '%s' has no entry '%s' in the archive", key, name);
    es = sdxs_dtype_size(types[ty->i]);
    if ((uint64_t)numel->i > SIZE_MAX / es || (bytes = (size_t)numel->i * es) > e->size)
        return vm_bad(vm, "storage '%s' declares %lld elements of %zu bytes, more than the %zu "
                          "bytes its entry holds",
                      key, (long long)numel->i, es, e->size);
    if (e->data % es)
        return vm_bad(vm, "storage '%s' is not aligned to its element size", key);
    dtype = types[ty->i];
    count = numel->i;
    v = vm_new(vm, PV_STORAGE); /* may move vals: ty and numel are not read after this */
    if (v == UINT32_MAX)
        return SDXS_ERR_RUNTIME;
    s = val(vm, v);
    s->dtype = dtype;
    s->i = count;
    s->data = e->data;
    return vm_push(vm, v);
}

/* _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata]) for a
 * contiguous tensor inside its storage. */
static sdxs_status rebuild_tensor(pickle_vm *vm, const pv *args, uint32_t *out)
{
    const pv *s, *off, *size, *stride, *grad, *hooks, *meta;
    sdxs_st_tensor *t;
    uint64_t numel = 1, expect = 1;
    size_t es;

    if (args->len != 6 && args->len != 7)
        return vm_bad(vm, "_rebuild_tensor_v2 with %u arguments (6 or 7 expected)", args->len);
    s = val(vm, kid(vm, args, 0));
    off = val(vm, kid(vm, args, 1));
    size = val(vm, kid(vm, args, 2));
    stride = val(vm, kid(vm, args, 3));
    grad = val(vm, kid(vm, args, 4));
    hooks = val(vm, kid(vm, args, 5));
    meta = args->len == 7 ? val(vm, kid(vm, args, 6)) : NULL;
    if (s->kind != PV_STORAGE || off->kind != PV_INT || off->i < 0 || size->kind != PV_TUPLE ||
        stride->kind != PV_TUPLE || size->len != stride->len || grad->kind != PV_BOOL ||
        hooks->kind != PV_DICT || hooks->len != 0 ||
        (meta && meta->kind != PV_NONE && !(meta->kind == PV_DICT && meta->len == 0)))
        return vm_bad(vm, "_rebuild_tensor_v2 with arguments that are not (storage, offset, "
                          "size, stride, requires_grad, {} [, metadata])");
    if (size->len > SDXS_ST_MAX_DIMS)
        return vm_bad(vm, "a tensor of %u dimensions (at most %d)", size->len,
                      SDXS_ST_MAX_DIMS);
    if (!GROW(vm, vm->tensors, vm->cap_tensors, vm->ntensors + 1))
        return SDXS_ERR_RUNTIME;
    t = &vm->tensors[vm->ntensors];
    memset(t, 0, sizeof(*t));
    t->dtype = s->dtype;
    t->ndim = (int)size->len;

    /* Sizes, then strides that must be those of a contiguous tensor (size-1 dimensions may
     * carry any stride, as in torch's own contiguity test). */
    for (int i = 0; i < t->ndim; i++) {
        const pv *d = val(vm, kid(vm, size, (uint32_t)i));
        if (d->kind != PV_INT || d->i < 0 || d->i > INT32_MAX)
            return vm_bad(vm, "tensor size %d is not an integer from 0 to %d", i, INT32_MAX);
        t->shape[i] = d->i;
        if (d->i && numel > UINT64_MAX / (uint64_t)d->i)
            return vm_bad(vm, "a tensor's size overflows");
        numel *= (uint64_t)d->i;
    }
    for (int i = t->ndim - 1; i >= 0; i--) {
        const pv *d = val(vm, kid(vm, stride, (uint32_t)i));
        if (d->kind != PV_INT)
            return vm_bad(vm, "tensor stride %d is not an integer", i);
        if (t->shape[i] != 1 && numel && (uint64_t)d->i != expect)
            return vm_bad(vm, "a non-contiguous tensor (stride %d is %lld, %llu expected) is "
                              "not supported",
                          i, (long long)d->i, (unsigned long long)expect);
        expect *= (uint64_t)t->shape[i];
    }

    /* Inside its storage. */
    es = sdxs_dtype_size(t->dtype);
    if (numel && ((uint64_t)off->i > (uint64_t)s->i || numel > (uint64_t)(s->i - off->i)))
        return vm_bad(vm, "a tensor of %llu elements at offset %lld runs past its storage of "
                          "%lld elements",
                      (unsigned long long)numel, (long long)off->i, (long long)s->i);
    t->offset = s->data + (size_t)off->i * es;
    t->nbytes = (size_t)numel * es;
    *out = vm_new(vm, PV_TENSOR);
    if (*out == UINT32_MAX)
        return SDXS_ERR_RUNTIME;
    val(vm, *out)->i = (int64_t)vm->ntensors++;
    return SDXS_OK;
}

/* REDUCE: only OrderedDict() and _rebuild_tensor_v2(...) have a meaning here. */
static sdxs_status op_reduce(pickle_vm *vm)
{
    uint32_t args, fn, out = UINT32_MAX;
    const pv *a, *f;
    sdxs_status st;

    if (vm_pop(vm, &args) != SDXS_OK || vm_pop(vm, &fn) != SDXS_OK)
        return SDXS_ERR_MODEL;
    a = val(vm, args);
    f = val(vm, fn);
    if (f->kind != PV_GLOBAL || (f->i != G_ORDERED_DICT && f->i != G_REBUILD_TENSOR))
        return vm_bad(vm, "REDUCE of something that is not OrderedDict or _rebuild_tensor_v2 "
                          "is refused");
    if (a->kind != PV_TUPLE)
        return vm_bad(vm, "REDUCE with arguments that are not a tuple");
    if (f->i == G_ORDERED_DICT) {
        if (a->len != 0)
            return vm_bad(vm, "OrderedDict with arguments is not supported");
        out = vm_new(vm, PV_DICT);
        if (out == UINT32_MAX)
            return SDXS_ERR_RUNTIME;
        return vm_push(vm, out);
    }
    st = rebuild_tensor(vm, a, &out);
    return st == SDXS_OK ? vm_push(vm, out) : st;
}

/* BUILD on a dict attaches attributes (a state dict's _metadata): checked, then dropped. */
static sdxs_status op_build(pickle_vm *vm)
{
    uint32_t state;
    pv *target;
    if (vm_pop(vm, &state) != SDXS_OK)
        return SDXS_ERR_MODEL;
    if (above_mark(vm) == 0)
        return vm_bad(vm, "BUILD without an object");
    target = val(vm, vm->stack[vm->nstack - 1]);
    if (target->kind != PV_DICT || target->built)
        return vm_bad(vm, "BUILD of something other than the state dict is refused");
    if (val(vm, state)->kind != PV_DICT && val(vm, state)->kind != PV_NONE)
        return vm_bad(vm, "BUILD with a state that is not a dict");
    target->built = true;
    return SDXS_OK;
}

static sdxs_status op_memo_put(pickle_vm *vm, size_t idx)
{
    if (above_mark(vm) == 0)
        return vm_bad(vm, "a memo store with nothing on the stack");
    if (idx >= MEMO_MAX)
        return vm_bad(vm, "memo index %zu is over the limit of %u", idx, MEMO_MAX);
    if (idx >= vm->cap_memo) {
        size_t old = vm->cap_memo;
        if (!GROW(vm, vm->memo, vm->cap_memo, idx + 1))
            return SDXS_ERR_RUNTIME;
        memset(vm->memo + old, 0, (vm->cap_memo - old) * sizeof(uint32_t));
    }
    vm->memo[idx] = vm->stack[vm->nstack - 1] + 1;
    if (idx + 1 > vm->next_memo)
        vm->next_memo = idx + 1;
    return SDXS_OK;
}

static sdxs_status op_memo_get(pickle_vm *vm, size_t idx)
{
    if (idx >= vm->cap_memo || !vm->memo[idx])
        return vm_bad(vm, "memo index %zu was never stored", idx);
    return vm_push(vm, vm->memo[idx] - 1);
}

static sdxs_status op_int(pickle_vm *vm, int64_t i)
{
    uint32_t v = vm_new(vm, PV_INT);
    if (v == UINT32_MAX)
        return SDXS_ERR_RUNTIME;
    val(vm, v)->i = i;
    return vm_push(vm, v);
}

/* Runs one opcode. *stop is set at STOP. */
static sdxs_status vm_step(pickle_vm *vm, bool *stop)
{
    const uint8_t *a = NULL;
    uint8_t op;
    uint32_t v, k, d;
    sdxs_status st;

    vm->at = vm->pos;
    op = vm->p[vm->pos++];
    switch (op) {
    case 0x80: /* PROTO */
        if ((st = vm_read(vm, 1, &a)) != SDXS_OK)
            return st;
        if (a[0] > PROTO_MAX)
            return vm_bad(vm, "pickle protocol %u is unknown", a[0]);
        return SDXS_OK;
    case 0x95: /* FRAME: a length hint */
        return vm_read(vm, 8, &a);
    case '.': /* STOP */
        *stop = true;
        return SDXS_OK;
    case '(': /* MARK */
        if (!GROW(vm, vm->marks, vm->cap_marks, vm->nmarks + 1))
            return SDXS_ERR_RUNTIME;
        vm->marks[vm->nmarks++] = vm->nstack;
        return SDXS_OK;
    case ')': /* EMPTY_TUPLE */
        return make_tuple(vm, 0);
    case 0x85: /* TUPLE1 */
    case 0x86: /* TUPLE2 */
    case 0x87: /* TUPLE3 */
        return make_tuple(vm, (size_t)(op - 0x84));
    case 't': /* TUPLE: everything above the mark */
        if (!vm->nmarks)
            return vm_bad(vm, "TUPLE without a MARK");
        st = make_tuple(vm, above_mark(vm));
        vm->nmarks--;
        /* make_tuple pushed the tuple above the old mark height: that height is now correct. */
        return st;
    case '}': /* EMPTY_DICT */
        v = vm_new(vm, PV_DICT);
        return v == UINT32_MAX ? SDXS_ERR_RUNTIME : vm_push(vm, v);
    case 's': /* SETITEM */
        if (vm_pop(vm, &v) != SDXS_OK || vm_pop(vm, &k) != SDXS_OK)
            return SDXS_ERR_MODEL;
        if (above_mark(vm) == 0)
            return vm_bad(vm, "SETITEM without a dict");
        return dict_put(vm, vm->stack[vm->nstack - 1], k, v);
    case 'u': { /* SETITEMS: key, value pairs above the mark, into the dict below it */
        size_t n, base;
        if (!vm->nmarks)
            return vm_bad(vm, "SETITEMS without a MARK");
        n = above_mark(vm);
        base = vm->nstack - n;
        if (n % 2 || base == 0 || (vm->nmarks > 1 && vm->marks[vm->nmarks - 2] == base))
            return vm_bad(vm, "SETITEMS needs a dict and key, value pairs");
        d = vm->stack[base - 1];
        for (size_t i = 0; i < n; i += 2)
            if ((st = dict_put(vm, d, vm->stack[base + i], vm->stack[base + i + 1])) != SDXS_OK)
                return st;
        vm->nstack = base;
        vm->nmarks--;
        return SDXS_OK;
    }
    case 'K': /* BININT1 */
        if ((st = vm_read(vm, 1, &a)) != SDXS_OK)
            return st;
        return op_int(vm, a[0]);
    case 'M': /* BININT2 */
        if ((st = vm_read(vm, 2, &a)) != SDXS_OK)
            return st;
        return op_int(vm, rd16(a));
    case 'J': /* BININT: signed 32-bit */
        if ((st = vm_read(vm, 4, &a)) != SDXS_OK)
            return st;
        return op_int(vm, (int64_t)(int32_t)rd32(a));
    case 0x8a: { /* LONG1: up to 8 bytes of two's complement here */
        uint64_t u = 0;
        if ((st = vm_read(vm, 1, &a)) != SDXS_OK)
            return st;
        k = a[0];
        if (k > 8)
            return vm_bad(vm, "an integer of %u bytes is out of range", k);
        if ((st = vm_read(vm, k, &a)) != SDXS_OK)
            return st;
        for (uint32_t i = 0; i < k; i++)
            u |= (uint64_t)a[i] << (8 * i);
        if (k && k < 8 && (a[k - 1] & 0x80))
            u |= ~(uint64_t)0 << (8 * k);
        return op_int(vm, (int64_t)u);
    }
    case 'N': /* NONE */
    case 0x88: /* NEWTRUE */
    case 0x89: /* NEWFALSE */
        v = vm_new(vm, op == 'N' ? PV_NONE : PV_BOOL);
        if (v == UINT32_MAX)
            return SDXS_ERR_RUNTIME;
        val(vm, v)->i = op == 0x88;
        return vm_push(vm, v);
    case 'X': /* BINUNICODE */
    case 0x8c: { /* SHORT_BINUNICODE */
        size_t n;
        if ((st = vm_read(vm, op == 'X' ? 4 : 1, &a)) != SDXS_OK)
            return st;
        n = op == 'X' ? rd32(a) : a[0];
        if ((st = vm_read(vm, n, &a)) != SDXS_OK)
            return st;
        v = vm_new(vm, PV_STR);
        if (v == UINT32_MAX)
            return SDXS_ERR_RUNTIME;
        val(vm, v)->s = a;
        val(vm, v)->len = (uint32_t)n;
        return vm_push(vm, v);
    }
    case 'c': /* GLOBAL */
        return op_global_text(vm);
    case 0x93: { /* STACK_GLOBAL: module and name strings from the stack */
        const pv *m, *nm;
        if (vm_pop(vm, &v) != SDXS_OK || vm_pop(vm, &k) != SDXS_OK)
            return SDXS_ERR_MODEL;
        m = val(vm, k);
        nm = val(vm, v);
        if (m->kind != PV_STR || nm->kind != PV_STR)
            return vm_bad(vm, "STACK_GLOBAL without two strings");
        return op_global(vm, m->s, m->len, nm->s, nm->len);
    }
    case 0x94: /* MEMOIZE */
        return op_memo_put(vm, vm->next_memo);
    case 'q': /* BINPUT */
        if ((st = vm_read(vm, 1, &a)) != SDXS_OK)
            return st;
        return op_memo_put(vm, a[0]);
    case 'r': /* LONG_BINPUT */
        if ((st = vm_read(vm, 4, &a)) != SDXS_OK)
            return st;
        return op_memo_put(vm, rd32(a));
    case 'h': /* BINGET */
        if ((st = vm_read(vm, 1, &a)) != SDXS_OK)
            return st;
        return op_memo_get(vm, a[0]);
    case 'j': /* LONG_BINGET */
        if ((st = vm_read(vm, 4, &a)) != SDXS_OK)
            return st;
        return op_memo_get(vm, rd32(a));
    case 'Q': /* BINPERSID */
        return op_persid(vm);
    case 'R': /* REDUCE */
        return op_reduce(vm);
    case 'b': /* BUILD */
        return op_build(vm);
    default:
        return vm_bad(vm, "opcode 0x%02x ('%c') is not one a state dict uses; refused", op,
                      op >= 0x20 && op < 0x7f ? op : '?');
    }
}

static void vm_free(pickle_vm *vm)
{
    free(vm->vals);
    free(vm->stack);
    free(vm->marks);
    free(vm->kids);
    free(vm->items);
    free(vm->memo);
    free(vm->tensors);
}

static int cmp_tensor(const void *a, const void *b)
{
    return strcmp(((const sdxs_st_tensor *)a)->name, ((const sdxs_st_tensor *)b)->name);
}

/* The pickle's result must be a dict of names to tensors: it becomes the table. */
static sdxs_status make_table(pickle_vm *vm, uint32_t root, sdxs_safetensors *st)
{
    const pv *d = val(vm, root);
    size_t n = 0;

    vm->at = vm->n;
    if (d->kind != PV_DICT)
        return vm_bad(vm, "the pickle is not a state dict (a dict of tensors)");
    st->tensors = sdxs_calloc(d->len ? d->len : 1, sizeof(sdxs_st_tensor), vm->f->err,
                              "tensor table");
    if (!st->tensors)
        return SDXS_ERR_RUNTIME;
    for (uint32_t it = d->first; it != UINT32_MAX; it = vm->items[it].next) {
        const pv *k = val(vm, vm->items[it].key), *t = val(vm, vm->items[it].value);
        char shown_key[80];
        if (k->kind != PV_STR || k->len == 0 || k->len >= KEY_NAME_MAX ||
            memchr(k->s, 0, k->len))
            return vm_bad(vm, "a state dict key that is not a name");
        if (t->kind != PV_TENSOR)
            return vm_bad(vm, "state dict entry '%s' is not a tensor",
                          shown(shown_key, sizeof(shown_key), k->s, k->len));
        st->tensors[n] = vm->tensors[t->i];
        st->tensors[n].name = sdxs_alloc(k->len + 1, vm->f->err, "a tensor name");
        if (!st->tensors[n].name)
            return SDXS_ERR_RUNTIME;
        memcpy(st->tensors[n].name, k->s, k->len);
        st->tensors[n].name[k->len] = '\0';
        st->count = ++n;
    }
    qsort(st->tensors, st->count, sizeof(sdxs_st_tensor), cmp_tensor);
    for (size_t i = 1; i < st->count; i++)
        if (!strcmp(st->tensors[i].name, st->tensors[i - 1].name))
            return vm_bad(vm, "state dict key '%s' appears twice", st->tensors[i].name);
    return SDXS_OK;
}

/* Evaluates data.pkl into st's tensor table. */
static sdxs_status run_pickle(bin_file *f, const zip_entry *pk, sdxs_safetensors *st)
{
    pickle_vm vm;
    bool stop = false;
    sdxs_status status = SDXS_OK;

    memset(&vm, 0, sizeof(vm));
    vm.f = f;
    vm.p = f->map + pk->data;
    vm.n = pk->size;
    while (status == SDXS_OK && !stop) {
        if (vm.pos >= vm.n) {
            vm.at = vm.pos;
            status = vm_bad(&vm, "the pickle ends without STOP (truncated)");
            break;
        }
        status = vm_step(&vm, &stop);
    }
    if (status == SDXS_OK && (vm.nstack != 1 || vm.nmarks))
        status = vm_bad(&vm, "STOP with %zu values and %zu marks on the stack (1 and 0 "
                             "expected)",
                        vm.nstack, vm.nmarks);
    if (status == SDXS_OK && vm.pos != vm.n)
        status = vm_bad(&vm, "%zu bytes follow the pickle's STOP (a second pickle?); refused",
                        vm.n - vm.pos);
    if (status == SDXS_OK)
        status = make_table(&vm, vm.stack[0], st);
    vm_free(&vm);
    return status;
}

/* ---- opening ---- */

sdxs_status sdxs_torchbin_open(const char *path, sdxs_safetensors **out, sdxs_error *err)
{
    bin_file f;
    sdxs_safetensors *st;
    const zip_entry *pk = NULL;
    struct stat sb;
    sdxs_status status;
    int fd;

    *out = NULL;
    memset(&f, 0, sizeof(f));
    f.path = path;
    f.err = err;
    st = sdxs_calloc(1, sizeof(*st), err, "a checkpoint");
    if (!st)
        return SDXS_ERR_RUNTIME;
    st->path = sdxs_strdup(path, err);
    if (!st->path) {
        free(st);
        return SDXS_ERR_RUNTIME;
    }

    /* Map the whole file read-only: tensors point into it, as with safetensors. */
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        status = sdxs_fail(err, SDXS_ERR_MODEL, path, "%s: cannot open: %s", path,
                           strerror(errno));
        goto done;
    }
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_size == 0) {
        close(fd);
        status = sdxs_fail(err, SDXS_ERR_MODEL, path, "%s: not a regular, non-empty file", path);
        goto done;
    }
    st->map_len = (size_t)sb.st_size;
    st->map = mmap(NULL, st->map_len, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (st->map == MAP_FAILED) {
        st->map = NULL;
        status = sdxs_fail(err, SDXS_ERR_MODEL, path, "%s: cannot map: %s", path,
                           strerror(errno));
        goto done;
    }
    f.map = st->map;
    f.len = st->map_len;
    st->data = f.map; /* tensor offsets are absolute */
    st->data_len = f.len;

    status = read_zip(&f, &pk);
    if (status == SDXS_OK)
        status = run_pickle(&f, pk, st);

done:
    for (size_t i = 0; i < f.count; i++)
        free(f.entries[i].name);
    free(f.entries);
    if (status != SDXS_OK) {
        sdxs_safetensors_close(st);
        return status;
    }
    *out = st;
    return SDXS_OK;
}
