/* tokenizer.h: the CLIP byte-level BPE tokenizer. It gives, token for token, the ids that
 * transformers 4.40's slow CLIPTokenizer gives without ftfy installed (as diffusers runs it):
 * BasicTokenizer cleaning, NFC, Python's lower(), the pre-tokenisation regex, BPE with </w>.
 *
 * A loaded tokenizer is read-only: any number of threads may encode with it at once.
 */
#ifndef SDXS_TOKENIZER_H
#define SDXS_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "sdxs.h"

/* Longest text the tokenizer accepts, in bytes (the engine takes prompts of at most 4096). */
#define SDXS_TOKENIZER_MAX_TEXT_BYTES 65536

typedef struct sdxs_tokenizer sdxs_tokenizer;

/* dir is a diffusers tokenizer/ folder: vocab.json, merges.txt, special_tokens_map.json and/or
 * tokenizer_config.json (without either, CLIPTokenizer's default special tokens apply). A file
 * that is missing or malformed is SDXS_ERR_MODEL, with the file and the problem named. */
sdxs_status sdxs_tokenizer_load(const char *dir, sdxs_tokenizer **out, sdxs_error *err);
void sdxs_tokenizer_free(sdxs_tokenizer *tok);

/* Encodes text (UTF-8, NUL-terminated) into exactly SDXS_MAX_TOKENS ids: BOS, the BPE ids
 * truncated so that EOS fits, EOS, then the pad id. Invalid UTF-8 is decoded as Python's
 * bytes.decode("utf-8", errors="replace") does (each maximal invalid subsequence becomes one
 * U+FFFD), and the tokenizer's cleaning then drops every U+FFFD, exactly as transformers does
 * with the decoded string. Text over SDXS_TOKENIZER_MAX_TEXT_BYTES is SDXS_ERR_INVALID. */
sdxs_status sdxs_tokenizer_encode(const sdxs_tokenizer *tok, const char *text,
                                  int32_t ids[SDXS_MAX_TOKENS], sdxs_error *err);
/* The same for len bytes that may hold NUL (which the cleaning drops, as it drops U+0000). */
sdxs_status sdxs_tokenizer_encode_bytes(const sdxs_tokenizer *tok, const char *text, size_t len,
                                        int32_t ids[SDXS_MAX_TOKENS], sdxs_error *err);

int32_t sdxs_tokenizer_pad_id(const sdxs_tokenizer *tok);
int32_t sdxs_tokenizer_bos_id(const sdxs_tokenizer *tok);
int32_t sdxs_tokenizer_eos_id(const sdxs_tokenizer *tok);

/* The pieces BPE is applied to, in order, for tests and debugging: every match of the
 * pre-tokenisation regex (UTF-8, after cleaning, NFC and lower-casing) and the text of every
 * added token split off whole. All pieces are reported, not only those that fit in 77 ids. */
typedef void (*sdxs_tokenizer_piece_fn)(const char *piece, size_t len, void *user);
sdxs_status sdxs_tokenizer_pieces(const sdxs_tokenizer *tok, const char *text, size_t len,
                                  sdxs_tokenizer_piece_fn fn, void *user, sdxs_error *err);

#endif /* SDXS_TOKENIZER_H */
