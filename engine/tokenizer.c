/* tokenizer.c: the CLIP byte-level BPE tokenizer, token for token what transformers 4.40's slow
 * CLIPTokenizer gives without ftfy (as diffusers runs it). Encoding runs the reference's stages in
 * its order: UTF-8 decoding with replacement, splitting off added tokens, BasicTokenizer's cleaning
 * (controls dropped, whitespace made ' ', CJK ideographs spaced), NFC, str.split(), str.lower(),
 * the pre-tokenisation regex, then BPE over byte symbols. Unicode data: unicode_tables.c.
 */
#define _POSIX_C_SOURCE 200809L
#include "engine/tokenizer.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/unicode_tables.h"
#include "engine/util.h"

/* What the folder's files may hold. */
#define TOK_MAX_VOCAB_BYTES ((size_t)64 << 20)
#define TOK_MAX_MERGES_BYTES ((size_t)64 << 20)
#define TOK_MAX_CONFIG_BYTES ((size_t)4 << 20)
#define TOK_MAX_SYMBOLS (1u << 22)
/* transformers keeps merges.txt lines 1 .. 49152 - 256 - 2 (line 0 is the version header). */
#define TOK_MAX_MERGES (49152 - 256 - 2)
#define TOK_MAX_ADDED 4096
#define TOK_MAX_ADDED_BYTES 1024
/* BPE ids that fit between BOS and EOS. */
#define TOK_MAX_BPE_IDS (SDXS_MAX_TOKENS - 2)

#define NO_SYMBOL UINT32_MAX
#define END_OF_WORD "</w>"

/* Hangul syllable arithmetic (Unicode 3.12). */
#define HANGUL_S 0xAC00u
#define HANGUL_L 0x1100u
#define HANGUL_V 0x1161u
#define HANGUL_T 0x11A7u
#define HANGUL_LCOUNT 19u
#define HANGUL_VCOUNT 21u
#define HANGUL_TCOUNT 28u
#define HANGUL_NCOUNT (HANGUL_VCOUNT * HANGUL_TCOUNT)
#define HANGUL_SCOUNT (HANGUL_LCOUNT * HANGUL_NCOUNT)

/* A pair of symbols BPE may merge, with its priority (the merges.txt line) and its result. */
typedef struct merge_slot {
    uint32_t left, right; /* left == NO_SYMBOL marks an empty slot */
    uint32_t rank, result;
} merge_slot;

/* An added token (the special tokens and tokenizer_config.json's added_tokens_decoder): text
 * equal to it is split off before anything else and becomes its id. */
typedef struct added_token {
    uint32_t *cps; /* (len) the token's code points */
    size_t len;
    char *utf8;
    int32_t id;
} added_token;

struct sdxs_tokenizer {
    /* One symbol per distinct vocab.json key; BPE works on symbols, then maps them to ids. */
    uint32_t n_symbols;
    int32_t *symbol_ids;          /* (n_symbols) */
    uint32_t byte_symbol[256];     /* the symbol of a byte inside a word */
    uint32_t byte_end_symbol[256]; /* the symbol of a word's last byte (with </w>) */
    merge_slot *merges;            /* (merge_mask + 1) open-addressing hash table */
    size_t merge_mask;
    added_token *added; /* (n_added) sorted by first code point, then longest first */
    size_t n_added;
    bool split_special_tokens; /* tokenizer_config.json: added tokens are not split off */
    int32_t bos_id, eos_id, pad_id, unk_id;
    /* Ids of the regex's own "<|startoftext|>" and "<|endoftext|>" matches, which the reference's
     * BPE cache returns whole. */
    int32_t startoftext_id, endoftext_id;
    uint16_t latin1_props[256]; /* sdxs_ucd_props of U+0000..U+00FF, the common case */
};

/* ---- Unicode data lookups ---- */

static uint32_t range_value(const sdxs_ucd_range *r, size_t n, uint32_t cp)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cp < r[mid].first)
            hi = mid;
        else if (cp > r[mid].last)
            lo = mid + 1;
        else
            return r[mid].value;
    }
    return 0;
}

static uint32_t cp_props(const sdxs_tokenizer *tok, uint32_t cp)
{
    if (cp < 256)
        return tok->latin1_props[cp];
    return range_value(sdxs_ucd_props, sdxs_ucd_props_len, cp);
}

static uint32_t cp_class(uint32_t props)
{
    return (props >> SDXS_UCD_CLASS_SHIFT) & SDXS_UCD_CLASS_MASK;
}

static uint8_t cp_ccc(uint32_t cp)
{
    if (cp < 0x300)
        return 0;
    return (uint8_t)range_value(sdxs_ucd_ccc, sdxs_ucd_ccc_len, cp);
}

static const sdxs_ucd_decomposition *find_decomposition(uint32_t cp)
{
    size_t lo = 0, hi = sdxs_ucd_decompositions_len;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (sdxs_ucd_decompositions[mid].cp == cp)
            return &sdxs_ucd_decompositions[mid];
        if (sdxs_ucd_decompositions[mid].cp < cp)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* The primary composite of first + second, or 0 when they do not compose. */
static uint32_t compose_pair(uint32_t first, uint32_t second)
{
    size_t lo = 0, hi = sdxs_ucd_compositions_len;

    if (first - HANGUL_L < HANGUL_LCOUNT && second - HANGUL_V < HANGUL_VCOUNT)
        return HANGUL_S + ((first - HANGUL_L) * HANGUL_VCOUNT + second - HANGUL_V) *
                              HANGUL_TCOUNT;
    if (first - HANGUL_S < HANGUL_SCOUNT && (first - HANGUL_S) % HANGUL_TCOUNT == 0 &&
        second - HANGUL_T - 1 < HANGUL_TCOUNT - 1)
        return first + (second - HANGUL_T);
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const sdxs_ucd_composition *c = &sdxs_ucd_compositions[mid];
        if (c->first == first && c->second == second)
            return c->composite;
        if (c->first < first || (c->first == first && c->second < second))
            lo = mid + 1;
        else
            hi = mid;
    }
    return 0;
}

/* Writes the full canonical decomposition of cp (at most SDXS_UCD_MAX_DECOMPOSITION code
 * points) and returns its length. */
static size_t decompose(uint32_t cp, uint32_t *out)
{
    const sdxs_ucd_decomposition *d;
    size_t n;

    if (cp - HANGUL_S < HANGUL_SCOUNT) {
        uint32_t s = cp - HANGUL_S;
        out[0] = HANGUL_L + s / HANGUL_NCOUNT;
        out[1] = HANGUL_V + (s % HANGUL_NCOUNT) / HANGUL_TCOUNT;
        if (s % HANGUL_TCOUNT == 0)
            return 2;
        out[2] = HANGUL_T + s % HANGUL_TCOUNT;
        return 3;
    }
    d = cp < 0xC0 ? NULL : find_decomposition(cp);
    if (!d) {
        out[0] = cp;
        return 1;
    }
    n = decompose(d->first, out);
    if (d->second)
        n += decompose(d->second, out + n);
    return n;
}

/* Python's str.lower() of one code point outside the final-sigma rule; returns the length. */
static size_t lower_cp(uint32_t cp, uint32_t *out)
{
    size_t lo = 0, hi = sdxs_ucd_lower_len;

    if (cp < 0x80) {
        out[0] = cp >= 'A' && cp <= 'Z' ? cp + 32 : cp;
        return 1;
    }
    for (size_t i = 0; i < sdxs_ucd_lower_long_len; i++) {
        if (sdxs_ucd_lower_long[i].cp == cp) {
            memcpy(out, sdxs_ucd_lower_long[i].lower,
                   (size_t)sdxs_ucd_lower_long[i].len * sizeof(uint32_t));
            return (size_t)sdxs_ucd_lower_long[i].len;
        }
    }
    out[0] = cp;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const sdxs_ucd_lower_run *r = &sdxs_ucd_lower[mid];
        if (cp < r->first) {
            hi = mid;
        } else if (cp > r->last) {
            lo = mid + 1;
        } else {
            if ((cp - r->first) % (uint32_t)r->step == 0)
                out[0] = (uint32_t)((int64_t)cp + r->delta);
            break;
        }
    }
    return 1;
}

/* Whether the pattern, compiled with IGNORECASE, accepts cp for the literal character lit. */
static bool literal_matches(char lit, uint32_t cp)
{
    if (cp == (uint32_t)(unsigned char)lit)
        return true;
    for (size_t i = 0; i < sdxs_ucd_literal_folds_len; i++)
        if (sdxs_ucd_literal_folds[i].literal == (uint32_t)(unsigned char)lit &&
            sdxs_ucd_literal_folds[i].cp == cp)
            return true;
    return false;
}

/* ---- UTF-8 ---- */

/* Decodes one code point at s[*i] strictly (as Python's decoder accepts it); false when the
 * bytes there are not valid UTF-8. */
static bool utf8_next(const uint8_t *s, size_t n, size_t *i, uint32_t *cp)
{
    uint8_t b = s[*i];
    uint32_t c;
    size_t need, k;
    uint8_t lo = 0x80, hi = 0xBF;

    if (b < 0x80) {
        *cp = b;
        (*i)++;
        return true;
    }
    if (b >= 0xC2 && b <= 0xDF) {
        need = 1;
        c = b & 0x1Fu;
    } else if (b >= 0xE0 && b <= 0xEF) {
        need = 2;
        c = b & 0x0Fu;
        if (b == 0xE0)
            lo = 0xA0;
        else if (b == 0xED)
            hi = 0x9F;
    } else if (b >= 0xF0 && b <= 0xF4) {
        need = 3;
        c = b & 0x07u;
        if (b == 0xF0)
            lo = 0x90;
        else if (b == 0xF4)
            hi = 0x8F;
    } else {
        return false;
    }
    for (k = 0; k < need; k++) {
        size_t j = *i + 1 + k;
        if (j >= n || s[j] < lo || s[j] > hi)
            return false;
        c = (c << 6) | (s[j] & 0x3Fu);
        lo = 0x80;
        hi = 0xBF;
    }
    *i += 1 + need;
    *cp = c;
    return true;
}

/* Length of the maximal prefix at s[i] that could start a valid sequence (at least 1): what
 * Python replaces by one U+FFFD before it resumes decoding. */
static size_t utf8_invalid_len(const uint8_t *s, size_t n, size_t i)
{
    uint8_t b = s[i], lo = 0x80, hi = 0xBF;
    size_t need, k;

    if (b >= 0xC2 && b <= 0xDF)
        need = 1;
    else if (b >= 0xE0 && b <= 0xEF)
        need = 2;
    else if (b >= 0xF0 && b <= 0xF4)
        need = 3;
    else
        return 1;
    if (b == 0xE0)
        lo = 0xA0;
    else if (b == 0xED)
        hi = 0x9F;
    else if (b == 0xF0)
        lo = 0x90;
    else if (b == 0xF4)
        hi = 0x8F;
    for (k = 0; k < need; k++) {
        size_t j = i + 1 + k;
        if (j >= n || s[j] < lo || s[j] > hi)
            break;
        lo = 0x80;
        hi = 0xBF;
    }
    return 1 + k;
}

static size_t utf8_put(uint32_t cp, uint8_t *out)
{
    if (cp < 0x80) {
        out[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (uint8_t)(0xC0 | (cp >> 6));
        out[1] = (uint8_t)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (uint8_t)(0xE0 | (cp >> 12));
        out[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (uint8_t)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (uint8_t)(0xF0 | (cp >> 18));
    out[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (uint8_t)(0x80 | (cp & 0x3F));
    return 4;
}

/* ---- the vocabulary while loading: key string -> symbol ---- */

typedef struct vocab_index {
    char *keys;       /* every key, each followed by a NUL */
    size_t *key_off;  /* (n) where symbol i's key starts in keys */
    uint32_t *key_len; /* (n) */
    uint32_t *slots;  /* (mask + 1) symbol + 1, 0 for an empty slot */
    size_t mask;
    uint32_t n;
} vocab_index;

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h ^ (h >> 29);
}

static uint32_t vocab_find(const vocab_index *v, const char *s, size_t n)
{
    size_t i = (size_t)hash_bytes(s, n) & v->mask;
    for (;;) {
        uint32_t slot = v->slots[i];
        if (!slot)
            return NO_SYMBOL;
        slot--;
        if (v->key_len[slot] == n && memcmp(v->keys + v->key_off[slot], s, n) == 0)
            return slot;
        i = (i + 1) & v->mask;
    }
}

static void vocab_index_free(vocab_index *v)
{
    free(v->keys);
    free(v->key_off);
    free(v->key_len);
    free(v->slots);
    memset(v, 0, sizeof(*v));
}

static size_t merge_hash(uint32_t left, uint32_t right)
{
    uint64_t h = (((uint64_t)left << 32) | right) * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 17);
}

static const merge_slot *merge_find(const sdxs_tokenizer *tok, uint32_t left, uint32_t right)
{
    size_t i = merge_hash(left, right) & tok->merge_mask;
    for (;;) {
        const merge_slot *m = &tok->merges[i];
        if (m->left == NO_SYMBOL)
            return NULL;
        if (m->left == left && m->right == right)
            return m;
        i = (i + 1) & tok->merge_mask;
    }
}

/* ---- loading ---- */

/* What loading works with: the folder's paths and labels, and the parsed files. */
typedef struct load_state {
    const char *dir;
    char path[4096];  /* the file being read */
    char label[64];   /* the same as "<folder name>/<file>", for sdxs_error.param */
    vocab_index vocab;
    json_t *config;   /* tokenizer_config.json, or NULL */
    json_t *special_map; /* special_tokens_map.json, or NULL */
    sdxs_error *err;
} load_state;

/* Points st->path and st->label at the folder's file name; false when it does not exist. */
static sdxs_status load_file_name(load_state *st, const char *name, bool *exists)
{
    const char *base = st->dir + strlen(st->dir);
    size_t n;
    sdxs_status s = sdxs_path_join(st->path, sizeof(st->path), st->dir, name, st->err);

    if (s != SDXS_OK)
        return s;
    while (base > st->dir && base[-1] == '/')
        base--;
    n = (size_t)(base - st->dir);
    while (base > st->dir && base[-1] != '/')
        base--;
    n -= (size_t)(base - st->dir);
    if (n == 0)
        snprintf(st->label, sizeof(st->label), "%s", name);
    else
        snprintf(st->label, sizeof(st->label), "%.*s/%s", (int)n, base, name);
    *exists = sdxs_file_exists(st->path);
    return SDXS_OK;
}

static sdxs_status load_read(load_state *st, size_t max_bytes, char **data, size_t *len)
{
    sdxs_status s = sdxs_read_file(st->path, max_bytes, data, len, st->err);
    if (s != SDXS_OK && st->err)
        snprintf(st->err->param, sizeof(st->err->param), "%s", st->label);
    return s;
}

static sdxs_status load_json(load_state *st, size_t max_bytes, json_t **out)
{
    char *data;
    size_t len;
    json_error_t jerr;
    sdxs_status s = load_read(st, max_bytes, &data, &len);

    *out = NULL;
    if (s != SDXS_OK)
        return s;
    *out = json_loadb(data, len, 0, &jerr);
    free(data);
    if (!*out)
        return sdxs_fail(st->err, SDXS_ERR_MODEL, st->label,
                         "%s: not valid JSON: %s (line %d, column %d)", st->path, jerr.text,
                         jerr.line, jerr.column);
    if (!json_is_object(*out)) {
        json_decref(*out);
        *out = NULL;
        return sdxs_fail(st->err, SDXS_ERR_MODEL, st->label, "%s: not a JSON object", st->path);
    }
    return SDXS_OK;
}

/* Step 1 of loading: vocab.json, an object of token string -> id, becomes the symbols. */
static sdxs_status load_vocab(load_state *st, sdxs_tokenizer *tok)
{
    json_t *root, *value;
    const char *key;
    bool exists;
    size_t n, key_bytes = 0, off = 0, slots = 1;
    uint32_t sym = 0;
    vocab_index *v = &st->vocab;
    sdxs_status s = load_file_name(st, "vocab.json", &exists);

    if (s != SDXS_OK)
        return s;
    if (!exists)
        return sdxs_fail(st->err, SDXS_ERR_MODEL, st->label, "%s: missing", st->path);
    s = load_json(st, TOK_MAX_VOCAB_BYTES, &root);
    if (s != SDXS_OK)
        return s;
    n = json_object_size(root);
    if (n == 0 || n > TOK_MAX_SYMBOLS) {
        json_decref(root);
        return sdxs_fail(st->err, SDXS_ERR_MODEL, st->label,
                         "%s: %zu entries; a vocabulary holds 1 to %u", st->path, n,
                         TOK_MAX_SYMBOLS);
    }
    json_object_foreach(root, key, value) {
        key_bytes += strlen(key) + 1;
    }
    while (slots < 2 * n)
        slots *= 2;
    v->keys = sdxs_alloc(key_bytes, st->err, "vocabulary keys");
    v->key_off = sdxs_calloc(n, sizeof(*v->key_off), st->err, "vocabulary");
    v->key_len = sdxs_calloc(n, sizeof(*v->key_len), st->err, "vocabulary");
    v->slots = sdxs_calloc(slots, sizeof(*v->slots), st->err, "vocabulary");
    tok->symbol_ids = sdxs_calloc(n, sizeof(*tok->symbol_ids), st->err, "vocabulary");
    if (!v->keys || !v->key_off || !v->key_len || !v->slots || !tok->symbol_ids) {
        json_decref(root);
        return SDXS_ERR_RUNTIME;
    }
    v->mask = slots - 1;

    /* Keys are unique (the parser keeps the last of duplicates, as Python's json does). */
    json_object_foreach(root, key, value) {
        size_t len = strlen(key), i;
        json_int_t id = json_is_integer(value) ? json_integer_value(value) : -1;
        if (id < 0 || id > INT32_MAX) {
            s = sdxs_fail(st->err, SDXS_ERR_MODEL, st->label,
                          "%s: the value of \"%.60s\" is not a token id (an integer from 0 to "
                          "2147483647)", st->path, key);
            json_decref(root); /* after the message: key lives in root */
            return s;
        }
        memcpy(v->keys + off, key, len + 1);
        v->key_off[sym] = off;
        v->key_len[sym] = (uint32_t)len;
        tok->symbol_ids[sym] = (int32_t)id;
        i = (size_t)hash_bytes(key, len) & v->mask;
        while (v->slots[i])
            i = (i + 1) & v->mask;
        v->slots[i] = sym + 1;
        off += len + 1;
        sym++;
    }
    v->n = sym;
    tok->n_symbols = sym;
    json_decref(root);
    return SDXS_OK;
}

/* Step 2 of loading: every byte's symbol, alone and at a word's end, as GPT-2's byte-to-unicode
 * table spells it (printable bytes stand for themselves, the others for U+0100 onwards). */
static sdxs_status load_byte_symbols(load_state *st, sdxs_tokenizer *tok)
{
    uint32_t next = 256;
    char key[16];

    for (int b = 0; b < 256; b++) {
        bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
        uint32_t cp = printable ? (uint32_t)b : next++;
        size_t n = utf8_put(cp, (uint8_t *)key);
        memcpy(key + n, END_OF_WORD, sizeof(END_OF_WORD));
        tok->byte_symbol[b] = vocab_find(&st->vocab, key, n);
        tok->byte_end_symbol[b] = vocab_find(&st->vocab, key, n + strlen(END_OF_WORD));
        if (tok->byte_symbol[b] == NO_SYMBOL || tok->byte_end_symbol[b] == NO_SYMBOL) {
            key[n] = '\0';
            return sdxs_fail(st->err, SDXS_ERR_MODEL, st->label,
                             "%s: the byte symbol \"%s%s\" (byte 0x%02X) is missing", st->path,
                             key, tok->byte_symbol[b] == NO_SYMBOL ? "" : END_OF_WORD, b);
        }
    }
    return SDXS_OK;
}

static bool is_pyspace(const sdxs_tokenizer *tok, uint32_t cp)
{
    return (cp_props(tok, cp) & SDXS_UCD_PYSPACE) != 0;
}

/* Splits line [a, b) at Python whitespace (str.split()) into at most max fields; returns how
 * many fields there are. */
static size_t split_fields(const sdxs_tokenizer *tok, const uint8_t *s, size_t a, size_t b,
                           size_t *start, size_t *end, size_t max)
{
    size_t n = 0, i = a;
    while (i < b) {
        size_t field = i, j;
        uint32_t cp;
        utf8_next(s, b, &i, &cp);
        if (is_pyspace(tok, cp))
            continue;
        j = i;
        while (j < b) {
            size_t k = j;
            utf8_next(s, b, &k, &cp);
            if (is_pyspace(tok, cp))
                break;
            j = k;
        }
        if (n < max) {
            start[n] = field;
            end[n] = j;
        }
        n++;
        i = j;
    }
    return n;
}

static sdxs_status merges_insert(sdxs_tokenizer *tok, uint32_t left, uint32_t right,
                                 uint32_t rank, uint32_t result)
{
    size_t i = merge_hash(left, right) & tok->merge_mask;
    for (;;) {
        merge_slot *m = &tok->merges[i];
        if (m->left == NO_SYMBOL || (m->left == left && m->right == right)) {
            /* A repeated pair takes its later rank, as in the reference's dict. */
            *m = (merge_slot){left, right, rank, result};
            return SDXS_OK;
        }
        i = (i + 1) & tok->merge_mask;
    }
}

/* Step 3 of loading: merges.txt. As the reference reads it: universal newlines, the text
 * stripped, the first line skipped, then at most TOK_MAX_MERGES lines of "left right". */
static sdxs_status load_merges(load_state *st, sdxs_tokenizer *tok)
{
    char *data, *joined = NULL;
    size_t len, i = 0, a, b, line_no = 1, rank = 0, slots = 1, joined_cap = 0;
    const uint8_t *s;
    bool exists, first = true;
    sdxs_status status = load_file_name(st, "merges.txt", &exists);

    if (status != SDXS_OK)
        return status;
    if (!exists)
        return sdxs_fail(st->err, SDXS_ERR_MODEL, st->label, "%s: missing", st->path);
    status = load_read(st, TOK_MAX_MERGES_BYTES, &data, &len);
    if (status != SDXS_OK)
        return status;
    s = (const uint8_t *)data;
    while (slots < 2 * TOK_MAX_MERGES)
        slots *= 2;
    tok->merges = sdxs_alloc(slots * sizeof(*tok->merges), st->err, "the merge table");
    if (!tok->merges) {
        free(data);
        return SDXS_ERR_RUNTIME;
    }
    for (size_t k = 0; k < slots; k++)
        tok->merges[k].left = NO_SYMBOL;
    tok->merge_mask = slots - 1;

    /* The whole file must be UTF-8 (Python decodes it strictly); strip Python whitespace. */
    a = len;
    b = 0;
    while (i < len) {
        size_t at = i;
        uint32_t cp;
        if (!utf8_next(s, len, &i, &cp)) {
            free(data);
            return sdxs_fail(st->err, SDXS_ERR_MODEL, st->label, "%s: not UTF-8 at byte %zu",
                             st->path, at);
        }
        if (!is_pyspace(tok, cp)) {
            if (a == len)
                a = at;
            b = i;
        }
    }
    for (i = 0; i < a; i++)
        line_no += s[i] == '\n' || (s[i] == '\r' && (i + 1 >= len || s[i + 1] != '\n'));

    /* One merge per line after the first; a line ends at \n, \r\n or \r. */
    for (i = a; i < b && rank < TOK_MAX_MERGES; line_no++) {
        size_t end = i, fs[3], fe[3], nf;
        uint32_t left, right, result;
        while (end < b && s[end] != '\n' && s[end] != '\r')
            end++;
        nf = split_fields(tok, s, i, end, fs, fe, 3);
        i = end + (end < b && s[end] == '\r' && end + 1 < b && s[end + 1] == '\n' ? 2 : 1);
        if (first) {
            first = false;
            continue;
        }
        if (nf != 2) {
            status = sdxs_fail(st->err, SDXS_ERR_MODEL, st->label,
                               "%s: line %zu: a merge is two symbols separated by a space, "
                               "found %zu fields", st->path, line_no, nf);
            break;
        }
        left = vocab_find(&st->vocab, data + fs[0], fe[0] - fs[0]);
        right = vocab_find(&st->vocab, data + fs[1], fe[1] - fs[1]);
        if (left == NO_SYMBOL || right == NO_SYMBOL) {
            size_t f = left == NO_SYMBOL ? 0 : 1;
            status = sdxs_fail(st->err, SDXS_ERR_MODEL, st->label,
                               "%s: line %zu: the symbol \"%.*s\" is not in vocab.json", st->path,
                               line_no, (int)(fe[f] - fs[f] > 60 ? 60 : fe[f] - fs[f]),
                               data + fs[f]);
            break;
        }
        if (fe[0] - fs[0] + fe[1] - fs[1] > joined_cap) {
            char *p;
            joined_cap = 2 * (fe[0] - fs[0] + fe[1] - fs[1]);
            p = realloc(joined, joined_cap);
            if (!p) {
                status = sdxs_fail(st->err, SDXS_ERR_RUNTIME, NULL, "out of memory");
                break;
            }
            joined = p;
        }
        memcpy(joined, data + fs[0], fe[0] - fs[0]);
        memcpy(joined + fe[0] - fs[0], data + fs[1], fe[1] - fs[1]);
        result = vocab_find(&st->vocab, joined, fe[0] - fs[0] + fe[1] - fs[1]);
        if (result == NO_SYMBOL) {
            status = sdxs_fail(st->err, SDXS_ERR_MODEL, st->label,
                               "%s: line %zu: the merge result \"%.*s%.*s\" is not in vocab.json",
                               st->path, line_no, (int)(fe[0] - fs[0] > 40 ? 40 : fe[0] - fs[0]),
                               data + fs[0], (int)(fe[1] - fs[1] > 40 ? 40 : fe[1] - fs[1]),
                               data + fs[1]);
            break;
        }
        merges_insert(tok, left, right, (uint32_t)rank, result);
        rank++;
    }
    free(joined);
    free(data);
    return status;
}

/* The text of a special or added token given in a config file: a string, or an object with a
 * "content" string (the AddedToken form); *content is NULL for JSON null. Stripping and
 * single-word matching are not reproduced, so tokens asking for them are refused. */
static sdxs_status token_content(load_state *st, const char *file, const char *key,
                                 json_t *value, const char **content)
{
    static const char *const flags[] = {"lstrip", "rstrip", "single_word"};
    json_t *c;

    *content = NULL;
    if (json_is_null(value))
        return SDXS_OK;
    if (json_is_string(value)) {
        *content = json_string_value(value);
        return SDXS_OK;
    }
    c = json_is_object(value) ? json_object_get(value, "content") : NULL;
    if (!c || !json_is_string(c))
        return sdxs_fail(st->err, SDXS_ERR_MODEL, file,
                         "%s: %s is neither a string nor an object with a \"content\" string",
                         file, key);
    for (size_t i = 0; i < SDXS_ARRAY_LEN(flags); i++)
        if (json_is_true(json_object_get(value, flags[i])))
            return sdxs_fail(st->err, SDXS_ERR_MODEL, file,
                             "%s: %s sets \"%s\", which this tokenizer does not support", file,
                             key, flags[i]);
    *content = json_string_value(c);
    return SDXS_OK;
}

static added_token *added_find(const sdxs_tokenizer *tok, const char *content)
{
    for (size_t i = 0; i < tok->n_added; i++)
        if (strcmp(tok->added[i].utf8, content) == 0)
            return &tok->added[i];
    return NULL;
}

/* Adds content as an added token with id, or gives an existing one the new id (the reference's
 * dict keeps the last). */
static sdxs_status added_put(load_state *st, sdxs_tokenizer *tok, const char *file,
                             const char *content, int32_t id)
{
    added_token *t = added_find(tok, content);
    size_t len = strlen(content), i = 0;

    if (t) {
        t->id = id;
        return SDXS_OK;
    }
    if (len == 0 || len > TOK_MAX_ADDED_BYTES || tok->n_added == TOK_MAX_ADDED)
        return sdxs_fail(st->err, SDXS_ERR_MODEL, file,
                         "%s: added token \"%.60s\": tokens must be 1 to %d bytes, at most %d "
                         "of them", file, content, TOK_MAX_ADDED_BYTES, TOK_MAX_ADDED);
    t = &tok->added[tok->n_added];
    t->utf8 = sdxs_strdup(content, st->err);
    t->cps = sdxs_calloc(len, sizeof(uint32_t), st->err, "an added token");
    if (!t->utf8 || !t->cps) {
        free(t->utf8);
        free(t->cps);
        return SDXS_ERR_RUNTIME;
    }
    t->len = 0;
    while (i < len) /* the JSON parser has checked that strings are UTF-8 */
        if (!utf8_next((const uint8_t *)content, len, &i, &t->cps[t->len++]))
            sdxs_panic("added token is not UTF-8 after JSON parsing");
    t->id = id;
    tok->n_added++;
    return SDXS_OK;
}

static int added_order(const void *pa, const void *pb)
{
    const added_token *a = pa, *b = pb;
    if (a->cps[0] != b->cps[0])
        return a->cps[0] < b->cps[0] ? -1 : 1;
    if (a->len != b->len)
        return a->len > b->len ? -1 : 1;
    return 0;
}

/* The id of a string as the reference converts a token: added tokens first, then the
 * vocabulary, else the unknown token's id. */
static int32_t token_id(load_state *st, const sdxs_tokenizer *tok, const char *s)
{
    added_token *t = added_find(tok, s);
    uint32_t sym;
    if (t)
        return t->id;
    sym = vocab_find(&st->vocab, s, strlen(s));
    return sym == NO_SYMBOL ? tok->unk_id : tok->symbol_ids[sym];
}

/* Step 4 of loading: the special tokens and any added tokens, resolved as transformers'
 * from_pretrained does: CLIPTokenizer's defaults, then tokenizer_config.json, then
 * special_tokens_map.json unless the config lists added_tokens_decoder. */
static sdxs_status load_special_tokens(load_state *st, sdxs_tokenizer *tok)
{
    static const char *const names[4] = {"bos_token", "eos_token", "unk_token", "pad_token"};
    const char *content[4] = {"<|startoftext|>", "<|endoftext|>", "<|endoftext|>",
                              "<|endoftext|>"};
    const char *from[4] = {"defaults", "defaults", "defaults", "defaults"};
    char config_label[64] = "", map_label[64] = "";
    json_t *decoder = NULL, *extra[2] = {NULL, NULL}, *value;
    const char *key, *extra_from[2] = {config_label, map_label};
    int32_t *ids[4] = {&tok->bos_id, &tok->eos_id, &tok->unk_id, &tok->pad_id};
    bool exists;
    sdxs_status s;

    /* The two optional files. */
    s = load_file_name(st, "tokenizer_config.json", &exists);
    if (s == SDXS_OK && exists) {
        snprintf(config_label, sizeof(config_label), "%s", st->label);
        s = load_json(st, TOK_MAX_CONFIG_BYTES, &st->config);
    }
    if (s == SDXS_OK)
        s = load_file_name(st, "special_tokens_map.json", &exists);
    if (s == SDXS_OK && exists) {
        snprintf(map_label, sizeof(map_label), "%s", st->label);
        s = load_json(st, TOK_MAX_CONFIG_BYTES, &st->special_map);
    }
    if (s != SDXS_OK)
        return s;
    tok->added = sdxs_calloc(TOK_MAX_ADDED, sizeof(*tok->added), st->err, "added tokens");
    if (!tok->added)
        return SDXS_ERR_RUNTIME;
    if (st->config) {
        tok->split_special_tokens =
            json_is_true(json_object_get(st->config, "split_special_tokens"));
        decoder = json_object_get(st->config, "added_tokens_decoder");
        extra[0] = json_object_get(st->config, "additional_special_tokens");
    }
    if (st->special_map && !decoder)
        extra[1] = json_object_get(st->special_map, "additional_special_tokens");

    /* Which text each special token has, and where it was set. */
    for (int k = 0; k < 4; k++) {
        json_t *sources[2] = {st->config, decoder ? NULL : st->special_map};
        const char *labels[2] = {config_label, map_label};
        for (int f = 0; f < 2; f++) {
            if (!sources[f] || !(value = json_object_get(sources[f], names[k])))
                continue;
            s = token_content(st, labels[f], names[k], value, &content[k]);
            if (s != SDXS_OK)
                return s;
            from[k] = labels[f];
        }
        if (!content[k])
            return sdxs_fail(st->err, SDXS_ERR_MODEL, from[k], "%s: %s is null", from[k],
                             names[k]);
    }

    /* added_tokens_decoder: id -> token, kept with the ids it gives. */
    if (decoder) {
        if (!json_is_object(decoder))
            return sdxs_fail(st->err, SDXS_ERR_MODEL, config_label,
                             "%s: added_tokens_decoder is not an object", config_label);
        json_object_foreach(decoder, key, value) {
            const char *text;
            char *end;
            long long id = strtoll(key, &end, 10);
            if (!*key || *end || id < 0 || id > INT32_MAX || key[0] == '+' || key[0] == ' ')
                return sdxs_fail(st->err, SDXS_ERR_MODEL, config_label,
                                 "%s: added_tokens_decoder key \"%.40s\" is not a token id",
                                 config_label, key);
            s = token_content(st, config_label, "an added_tokens_decoder entry", value, &text);
            if (s == SDXS_OK && !text)
                s = sdxs_fail(st->err, SDXS_ERR_MODEL, config_label,
                              "%s: added_tokens_decoder entry %s is null", config_label, key);
            if (s == SDXS_OK)
                s = added_put(st, tok, config_label, text, (int32_t)id);
            if (s != SDXS_OK)
                return s;
        }
    }

    /* The special tokens, then additional_special_tokens: added with their vocabulary ids. */
    for (int k = 0; k < 6; k++) {
        json_t *list = k < 4 ? NULL : extra[k - 4];
        size_t n = k < 4 ? 1 : json_is_array(list) ? json_array_size(list) : 0;
        const char *file = k < 4 ? from[k] : extra_from[k - 4];
        if (k >= 4 && list && !json_is_array(list))
            return sdxs_fail(st->err, SDXS_ERR_MODEL, file,
                             "%s: additional_special_tokens is not a list", file);
        for (size_t j = 0; j < n; j++) {
            const char *text = content[k < 4 ? k : 0];
            uint32_t sym;
            if (k >= 4) {
                s = token_content(st, file, "additional_special_tokens",
                                  json_array_get(list, j), &text);
                if (s != SDXS_OK)
                    return s;
                if (!text)
                    continue;
            }
            if (added_find(tok, text))
                continue;
            sym = vocab_find(&st->vocab, text, strlen(text));
            if (sym == NO_SYMBOL)
                return sdxs_fail(st->err, SDXS_ERR_MODEL, file,
                                 "%s: the special token \"%.60s\" (%s) is not in vocab.json",
                                 file, text, k < 4 ? names[k] : "additional_special_tokens");
            s = added_put(st, tok, file, text, tok->symbol_ids[sym]);
            if (s != SDXS_OK)
                return s;
        }
    }

    /* Ids: an added token's id wins over the vocabulary's for the same string. */
    for (size_t i = 0; i < tok->n_added; i++) {
        uint32_t sym = vocab_find(&st->vocab, tok->added[i].utf8, strlen(tok->added[i].utf8));
        if (sym != NO_SYMBOL)
            tok->symbol_ids[sym] = tok->added[i].id;
    }
    for (int k = 0; k < 4; k++)
        *ids[k] = added_find(tok, content[k])->id;
    tok->startoftext_id = token_id(st, tok, "<|startoftext|>");
    tok->endoftext_id = token_id(st, tok, "<|endoftext|>");
    qsort(tok->added, tok->n_added, sizeof(*tok->added), added_order);
    return SDXS_OK;
}

void sdxs_tokenizer_free(sdxs_tokenizer *tok)
{
    if (!tok)
        return;
    for (size_t i = 0; tok->added && i < tok->n_added; i++) {
        free(tok->added[i].cps);
        free(tok->added[i].utf8);
    }
    free(tok->added);
    free(tok->merges);
    free(tok->symbol_ids);
    free(tok);
}

sdxs_status sdxs_tokenizer_load(const char *dir, sdxs_tokenizer **out, sdxs_error *err)
{
    load_state st;
    sdxs_tokenizer *tok;
    sdxs_status s;
    double t0 = sdxs_now_ms();

    *out = NULL;
    if (!dir)
        return sdxs_fail(err, SDXS_ERR_INVALID, "tokenizer", "no tokenizer folder given");
    tok = sdxs_calloc(1, sizeof(*tok), err, "the tokenizer");
    if (!tok)
        return SDXS_ERR_RUNTIME;
    memset(&st, 0, sizeof(st));
    st.dir = dir;
    st.err = err;
    for (uint32_t cp = 0; cp < 256; cp++)
        tok->latin1_props[cp] = (uint16_t)range_value(sdxs_ucd_props, sdxs_ucd_props_len, cp);

    s = load_vocab(&st, tok);
    if (s == SDXS_OK)
        s = load_byte_symbols(&st, tok);
    if (s == SDXS_OK)
        s = load_merges(&st, tok);
    if (s == SDXS_OK)
        s = load_special_tokens(&st, tok);
    vocab_index_free(&st.vocab);
    json_decref(st.config);
    json_decref(st.special_map);
    if (s != SDXS_OK) {
        sdxs_tokenizer_free(tok);
        return s;
    }
    SDXS_DEBUG("tokenizer", "loaded %s: %u symbols, %zu added tokens, pad id %d, %.1f ms", dir,
               tok->n_symbols, tok->n_added, tok->pad_id, sdxs_now_ms() - t0);
    *out = tok;
    return SDXS_OK;
}

int32_t sdxs_tokenizer_pad_id(const sdxs_tokenizer *tok) { return tok->pad_id; }
int32_t sdxs_tokenizer_bos_id(const sdxs_tokenizer *tok) { return tok->bos_id; }
int32_t sdxs_tokenizer_eos_id(const sdxs_tokenizer *tok) { return tok->eos_id; }

/* ---- encoding ---- */

/* A buffer that grows to what the current text needs; the text cap bounds it. */
typedef struct buffer {
    void *p;
    size_t cap; /* elements */
} buffer;

static bool buffer_reserve(buffer *b, size_t n, size_t elem, sdxs_error *err)
{
    size_t cap = b->cap ? b->cap : 64, bytes;
    void *p;
    if (n <= b->cap)
        return true;
    while (cap < n)
        cap *= 2;
    if (!sdxs_mul_size(cap, elem, &bytes)) {
        sdxs_fail(err, SDXS_ERR_RUNTIME, NULL, "tokenizer buffer size overflows");
        return false;
    }
    p = realloc(b->p, bytes);
    if (!p) {
        sdxs_fail(err, SDXS_ERR_RUNTIME, NULL, "out of memory: %zu bytes for the tokenizer",
                  bytes);
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}

typedef struct bpe_node {
    uint32_t sym; /* NO_SYMBOL once merged into its left neighbour */
    int32_t prev, next;
} bpe_node;

/* Two neighbouring nodes that may merge, ordered by (rank, left): the reference merges the
 * lowest-ranked pair everywhere, left to right, before looking at the next rank. */
typedef struct bpe_pair {
    uint32_t rank;
    int32_t left, right;
    uint32_t left_sym, right_sym, result;
} bpe_pair;

typedef struct encoder {
    const sdxs_tokenizer *tok;
    sdxs_error *err;
    buffer text;   /* uint32_t: the decoded input */
    buffer clean;  /* uint32_t: one stretch between added tokens, cleaned */
    buffer nfc;    /* uint32_t: one word in NFC */
    buffer ccc;    /* uint8_t: the combining classes of nfc */
    buffer sorted; /* uint32_t + uint8_t scratch for canonical ordering */
    buffer lower;  /* uint32_t: one word lower-cased */
    buffer bytes;  /* uint8_t: one piece in UTF-8 */
    buffer nodes;  /* bpe_node: one piece's symbols */
    buffer heap;   /* bpe_pair */
    buffer round;  /* bpe_pair: the pairs of one rank */
    int32_t ids[TOK_MAX_BPE_IDS];
    int n_ids;
    bool full; /* every id that can matter is known: stop */
    sdxs_tokenizer_piece_fn piece_fn; /* set: report pieces instead of encoding them */
    void *user;
} encoder;

static void encoder_free(encoder *e)
{
    buffer *all[] = {&e->text, &e->clean, &e->nfc,   &e->ccc,  &e->sorted,
                     &e->lower, &e->bytes, &e->nodes, &e->heap, &e->round};
    for (size_t i = 0; i < SDXS_ARRAY_LEN(all); i++)
        free(all[i]->p);
}

static void push_id(encoder *e, int32_t id)
{
    if (e->n_ids < TOK_MAX_BPE_IDS)
        e->ids[e->n_ids++] = id;
    e->full = e->piece_fn == NULL && e->n_ids == TOK_MAX_BPE_IDS;
}

static bool pair_before(const bpe_pair *a, const bpe_pair *b)
{
    return a->rank < b->rank || (a->rank == b->rank && a->left < b->left);
}

static void heap_push(bpe_pair *heap, size_t *n, bpe_pair p)
{
    size_t i = (*n)++;
    while (i > 0 && pair_before(&p, &heap[(i - 1) / 2])) {
        heap[i] = heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    heap[i] = p;
}

static bpe_pair heap_pop(bpe_pair *heap, size_t *n)
{
    bpe_pair top = heap[0], last = heap[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n)
            break;
        if (c + 1 < *n && pair_before(&heap[c + 1], &heap[c]))
            c++;
        if (!pair_before(&heap[c], &last))
            break;
        heap[i] = heap[c];
        i = c;
    }
    if (*n > 0)
        heap[i] = last;
    return top;
}

static void push_pair(const sdxs_tokenizer *tok, const bpe_node *nodes, bpe_pair *heap,
                      size_t *n, int32_t left, int32_t right)
{
    const merge_slot *m;
    if (left < 0 || right < 0)
        return;
    m = merge_find(tok, nodes[left].sym, nodes[right].sym);
    if (m)
        heap_push(heap, n, (bpe_pair){m->rank, left, right, m->left, m->right, m->result});
}

/* BPE over one piece of n >= 1 bytes: the bytes' symbols (the last one with </w>) merged pair by
 * pair in rank order; each final symbol's id is pushed. */
static sdxs_status bpe_encode(encoder *e, const uint8_t *bytes, size_t n)
{
    const sdxs_tokenizer *tok = e->tok;
    bpe_node *nodes;
    bpe_pair *heap, *round;
    size_t n_heap = 0;

    if (!buffer_reserve(&e->nodes, n, sizeof(bpe_node), e->err) ||
        !buffer_reserve(&e->heap, 3 * n, sizeof(bpe_pair), e->err) ||
        !buffer_reserve(&e->round, 3 * n, sizeof(bpe_pair), e->err))
        return SDXS_ERR_RUNTIME;
    nodes = e->nodes.p;
    heap = e->heap.p;
    round = e->round.p;
    for (size_t i = 0; i < n; i++) {
        nodes[i].sym = i + 1 < n ? tok->byte_symbol[bytes[i]] : tok->byte_end_symbol[bytes[i]];
        nodes[i].prev = (int32_t)i - 1;
        nodes[i].next = i + 1 < n ? (int32_t)i + 1 : -1;
    }
    for (size_t i = 0; i + 1 < n; i++)
        push_pair(tok, nodes, heap, &n_heap, (int32_t)i, (int32_t)i + 1);

    /* Each round takes every pair of the lowest rank left (one symbol pair), left to right. A
     * merge only creates pairs holding the new, longer symbol, so none joins the round. */
    while (n_heap > 0) {
        size_t n_round = 0;
        round[n_round++] = heap_pop(heap, &n_heap);
        while (n_heap > 0 && heap[0].rank == round[0].rank)
            round[n_round++] = heap_pop(heap, &n_heap);
        for (size_t k = 0; k < n_round; k++) {
            bpe_pair p = round[k];
            bpe_node *l = &nodes[p.left], *r = &nodes[p.right];
            if (l->sym != p.left_sym || l->next != p.right || r->sym != p.right_sym)
                continue; /* one of the two was merged since */
            l->sym = p.result;
            l->next = r->next;
            if (r->next >= 0)
                nodes[r->next].prev = p.left;
            r->sym = NO_SYMBOL;
            push_pair(tok, nodes, heap, &n_heap, l->prev, p.left);
            push_pair(tok, nodes, heap, &n_heap, p.left, l->next);
        }
    }
    for (int32_t i = 0; i >= 0 && !e->full; i = nodes[i].next)
        push_id(e, tok->symbol_ids[nodes[i].sym]);
    return SDXS_OK;
}

/* One regex match, as code points: to UTF-8, then reported or encoded. */
static sdxs_status emit_piece(encoder *e, const uint32_t *cps, size_t n)
{
    uint8_t *bytes;
    size_t len = 0;

    if (!buffer_reserve(&e->bytes, 4 * n, 1, e->err))
        return SDXS_ERR_RUNTIME;
    bytes = e->bytes.p;
    for (size_t i = 0; i < n; i++)
        len += utf8_put(cps[i], bytes + len);
    if (e->piece_fn) {
        e->piece_fn((const char *)bytes, len, e->user);
        return SDXS_OK;
    }
    /* The reference's BPE cache holds these two strings, so they come back whole. */
    if (len == 15 && memcmp(bytes, "<|startoftext|>", 15) == 0) {
        push_id(e, e->tok->startoftext_id);
        return SDXS_OK;
    }
    if (len == 13 && memcmp(bytes, "<|endoftext|>", 13) == 0) {
        push_id(e, e->tok->endoftext_id);
        return SDXS_OK;
    }
    return bpe_encode(e, bytes, len);
}

static bool literal_at(const uint32_t *w, size_t n, size_t i, const char *lit)
{
    for (; *lit; lit++, i++)
        if (i >= n || !literal_matches(*lit, w[i]))
            return false;
    return true;
}

/* The pre-tokenisation regex over one lower-cased word:
 *   <\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
 * with IGNORECASE. Matches never cross the spaces between words, so words go one at a time. */
static sdxs_status regex_word(encoder *e, const uint32_t *w, size_t n)
{
    static const char *const literals[] = {"<|startoftext|>", "<|endoftext|>", "'s", "'t",
                                           "'re", "'ve", "'m", "'ll", "'d"};
    size_t i = 0;

    while (i < n && !e->full) {
        size_t len = 0, k;
        uint32_t cls;
        sdxs_status s;
        /* The literals start with '<' or '\'', which nothing else matches (the generator
         * checks), so other characters skip them. */
        if (w[i] == '<' || w[i] == '\'')
            for (k = 0; k < SDXS_ARRAY_LEN(literals) && !len; k++)
                if (literal_at(w, n, i, literals[k]))
                    len = strlen(literals[k]);
        if (!len) {
            cls = cp_class(cp_props(e->tok, w[i]));
            if (cls == SDXS_UCD_CLASS_SKIP) {
                i++;
                continue;
            }
            len = 1;
            if (cls != SDXS_UCD_CLASS_NUMBER)
                while (i + len < n && cp_class(cp_props(e->tok, w[i + len])) == cls)
                    len++;
        }
        s = emit_piece(e, w + i, len);
        if (s != SDXS_OK)
            return s;
        i += len;
    }
    return SDXS_OK;
}

/* Puts the non-starters of nfc[a, b) in canonical order: a stable sort by combining class. */
static sdxs_status canonical_order(encoder *e, size_t a, size_t b)
{
    uint32_t *cps = e->nfc.p;
    uint8_t *ccc = e->ccc.p;

    if (b - a <= 16) {
        for (size_t i = a + 1; i < b; i++) {
            uint32_t cp = cps[i];
            uint8_t c = ccc[i];
            size_t j = i;
            for (; j > a && ccc[j - 1] > c; j--) {
                cps[j] = cps[j - 1];
                ccc[j] = ccc[j - 1];
            }
            cps[j] = cp;
            ccc[j] = c;
        }
        return SDXS_OK;
    }
    /* Long runs: a counting sort, so adversarial text costs linear time. */
    {
        size_t count[257] = {0}, n = b - a;
        uint32_t *tmp;
        if (!buffer_reserve(&e->sorted, n, sizeof(uint32_t), e->err))
            return SDXS_ERR_RUNTIME;
        tmp = e->sorted.p;
        for (size_t i = a; i < b; i++)
            count[ccc[i] + 1]++;
        for (int c = 1; c < 257; c++)
            count[c] += count[c - 1];
        for (size_t i = a; i < b; i++)
            tmp[count[ccc[i]]++] = cps[i];
        for (size_t i = 0; i < n; i++) {
            cps[a + i] = tmp[i];
            ccc[a + i] = cp_ccc(tmp[i]);
        }
    }
    return SDXS_OK;
}

/* unicodedata.normalize("NFC") of one word into e->nfc; returns the length in *out_n. */
static sdxs_status nfc_word(encoder *e, const uint32_t *w, size_t n, size_t *out_n)
{
    uint32_t *cps;
    uint8_t *ccc;
    size_t m = 0, run, out, starter;
    uint32_t last_class;
    bool have_starter;
    sdxs_status s;

    if (!buffer_reserve(&e->nfc, n * SDXS_UCD_MAX_DECOMPOSITION, sizeof(uint32_t), e->err) ||
        !buffer_reserve(&e->ccc, n * SDXS_UCD_MAX_DECOMPOSITION, 1, e->err))
        return SDXS_ERR_RUNTIME;
    cps = e->nfc.p;
    ccc = e->ccc.p;

    /* Full canonical decomposition. */
    for (size_t i = 0; i < n; i++)
        m += decompose(w[i], cps + m);
    for (size_t i = 0; i < m; i++)
        ccc[i] = cp_ccc(cps[i]);

    /* Canonical ordering of each run of non-starters. */
    for (size_t i = 0; i < m; i = run) {
        for (run = i; run < m && ccc[run] != 0; run++)
            ;
        if (run - i > 1) {
            s = canonical_order(e, i, run);
            if (s != SDXS_OK)
                return s;
        }
        if (run == i)
            run++;
    }

    /* Canonical composition: each character joins the last starter unless blocked (a character
     * between them of class zero or of a class not below its own). */
    have_starter = m > 0 && ccc[0] == 0;
    starter = 0;
    last_class = have_starter ? 0 : 256;
    out = m > 0 ? 1 : 0;
    for (size_t i = 1; i < m; i++) {
        uint32_t cp = cps[i], c = ccc[i], composite = 0;
        if (have_starter && (last_class < c || last_class == 0))
            composite = compose_pair(cps[starter], cp);
        if (composite) {
            cps[starter] = composite;
            continue;
        }
        if (c == 0) {
            starter = out;
            have_starter = true;
        }
        last_class = c;
        cps[out++] = cp;
    }
    *out_n = out;
    return SDXS_OK;
}

/* Python's str.lower() of one word into e->lower, including the final-sigma rule: Σ becomes ς
 * after a cased letter (case-ignorable characters skipped) not followed by one. */
static sdxs_status lower_word(encoder *e, const uint32_t *w, size_t n, size_t *out_n)
{
    const sdxs_tokenizer *tok = e->tok;
    uint32_t *out;
    size_t m = 0;

    if (!buffer_reserve(&e->lower, n * SDXS_UCD_MAX_LOWER, sizeof(uint32_t), e->err))
        return SDXS_ERR_RUNTIME;
    out = e->lower.p;
    for (size_t i = 0; i < n; i++) {
        if (w[i] == 0x3A3) {
            bool final = false;
            size_t j = i;
            while (j > 0 && (cp_props(tok, w[j - 1]) & SDXS_UCD_CASE_IGNORABLE))
                j--;
            final = j > 0 && (cp_props(tok, w[j - 1]) & SDXS_UCD_CASED);
            if (final) {
                for (j = i + 1; j < n && (cp_props(tok, w[j]) & SDXS_UCD_CASE_IGNORABLE); j++)
                    ;
                final = j == n || !(cp_props(tok, w[j]) & SDXS_UCD_CASED);
            }
            out[m++] = final ? 0x3C2 : 0x3C3;
        } else {
            m += lower_cp(w[i], out + m);
        }
    }
    *out_n = m;
    return SDXS_OK;
}

/* One whitespace-separated word of cleaned text: NFC (when it can change anything), lower(),
 * then the regex. NFC works word by word because whitespace never composes or reorders. */
static sdxs_status encode_word(encoder *e, const uint32_t *w, size_t n)
{
    size_t m = n;
    bool touched = false;
    sdxs_status s;

    for (size_t i = 0; i < n && !touched; i++)
        touched = (cp_props(e->tok, w[i]) & SDXS_UCD_NFC_TOUCH) != 0;
    if (touched) {
        s = nfc_word(e, w, n, &m);
        if (s != SDXS_OK)
            return s;
        w = e->nfc.p;
    }
    s = lower_word(e, w, m, &m);
    if (s != SDXS_OK)
        return s;
    return regex_word(e, e->lower.p, m);
}

/* Text between added tokens: BasicTokenizer's _clean_text and CJK spacing, then word by word
 * (str.split()). */
static sdxs_status encode_stretch(encoder *e, const uint32_t *cps, size_t n)
{
    const sdxs_tokenizer *tok = e->tok;
    uint32_t *clean;
    size_t m = 0, i = 0;

    if (n == 0)
        return SDXS_OK;
    if (!buffer_reserve(&e->clean, 3 * n, sizeof(uint32_t), e->err))
        return SDXS_ERR_RUNTIME;
    clean = e->clean.p;
    for (size_t k = 0; k < n; k++) {
        uint32_t p = cp_props(tok, cps[k]);
        if (p & SDXS_UCD_DROP)
            continue;
        if (p & SDXS_UCD_BLANK) {
            clean[m++] = ' ';
        } else if (p & SDXS_UCD_CJK) {
            clean[m++] = ' ';
            clean[m++] = cps[k];
            clean[m++] = ' ';
        } else {
            clean[m++] = cps[k];
        }
    }
    while (i < m && !e->full) {
        size_t j = i;
        sdxs_status s;
        while (j < m && !is_pyspace(tok, clean[j]))
            j++;
        if (j > i) {
            s = encode_word(e, clean + i, j - i);
            if (s != SDXS_OK)
                return s;
        }
        i = j + 1;
    }
    return SDXS_OK;
}

/* The longest added token that starts at text[i], or NULL. */
static const added_token *added_at(const sdxs_tokenizer *tok, const uint32_t *text, size_t n,
                                   size_t i)
{
    size_t lo = 0, hi = tok->n_added;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (tok->added[mid].cps[0] < text[i])
            lo = mid + 1;
        else
            hi = mid;
    }
    for (; lo < tok->n_added && tok->added[lo].cps[0] == text[i]; lo++) {
        const added_token *t = &tok->added[lo];
        if (t->len <= n - i && memcmp(t->cps, text + i, t->len * sizeof(uint32_t)) == 0)
            return t;
    }
    return NULL;
}

/* The whole pipeline over len bytes of text; ids or pieces go to e. */
static sdxs_status encode_text(encoder *e, const char *text, size_t len)
{
    const uint8_t *s = (const uint8_t *)text;
    const sdxs_tokenizer *tok = e->tok;
    uint32_t *cps;
    size_t n = 0, i = 0, start = 0;
    sdxs_status st;

    if (!text)
        return sdxs_fail(e->err, SDXS_ERR_INVALID, "prompt", "no prompt text given");
    if (len > SDXS_TOKENIZER_MAX_TEXT_BYTES)
        return sdxs_fail(e->err, SDXS_ERR_INVALID, "prompt",
                         "prompt: %zu bytes, over the limit of %d", len,
                         SDXS_TOKENIZER_MAX_TEXT_BYTES);

    /* UTF-8 to code points as errors="replace" decodes: each invalid stretch one U+FFFD. */
    if (!buffer_reserve(&e->text, len, sizeof(uint32_t), e->err))
        return SDXS_ERR_RUNTIME;
    cps = e->text.p;
    while (i < len) {
        if (!utf8_next(s, len, &i, &cps[n])) {
            i += utf8_invalid_len(s, len, i);
            cps[n] = 0xFFFD;
        }
        n++;
    }

    /* Added tokens are split off first (longest match at the leftmost place). */
    for (i = 0; i < n && !e->full;) {
        const added_token *t = tok->split_special_tokens ? NULL : added_at(tok, cps, n, i);
        if (!t) {
            i++;
            continue;
        }
        st = encode_stretch(e, cps + start, i - start);
        if (st != SDXS_OK)
            return st;
        if (e->piece_fn)
            e->piece_fn(t->utf8, strlen(t->utf8), e->user);
        else if (!e->full)
            push_id(e, t->id);
        i += t->len;
        start = i;
    }
    if (!e->full)
        return encode_stretch(e, cps + start, n - start);
    return SDXS_OK;
}

sdxs_status sdxs_tokenizer_encode_bytes(const sdxs_tokenizer *tok, const char *text, size_t len,
                                        int32_t ids[SDXS_MAX_TOKENS], sdxs_error *err)
{
    encoder e;
    sdxs_status s;
    int k = 0;

    memset(&e, 0, sizeof(e));
    e.tok = tok;
    e.err = err;
    s = encode_text(&e, text, len);
    encoder_free(&e);
    if (s != SDXS_OK)
        return s;
    ids[k++] = tok->bos_id;
    for (int i = 0; i < e.n_ids; i++)
        ids[k++] = e.ids[i];
    ids[k++] = tok->eos_id;
    while (k < SDXS_MAX_TOKENS)
        ids[k++] = tok->pad_id;
    return SDXS_OK;
}

sdxs_status sdxs_tokenizer_encode(const sdxs_tokenizer *tok, const char *text,
                                  int32_t ids[SDXS_MAX_TOKENS], sdxs_error *err)
{
    if (!text)
        return sdxs_fail(err, SDXS_ERR_INVALID, "prompt", "no prompt text given");
    return sdxs_tokenizer_encode_bytes(tok, text, strlen(text), ids, err);
}

sdxs_status sdxs_tokenizer_pieces(const sdxs_tokenizer *tok, const char *text, size_t len,
                                  sdxs_tokenizer_piece_fn fn, void *user, sdxs_error *err)
{
    encoder e;
    sdxs_status s;

    memset(&e, 0, sizeof(e));
    e.tok = tok;
    e.err = err;
    e.piece_fn = fn;
    e.user = user;
    s = encode_text(&e, text, len);
    encoder_free(&e);
    return s;
}
