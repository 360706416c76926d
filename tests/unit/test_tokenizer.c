/* test_tokenizer.c: tokenizer behaviour that needs no reference framework, on a tiny folder
 * written here: BPE results worked out by hand (including a merge list where the reference's
 * merge-everywhere-per-rank order differs from a plain priority queue), truncation, padding with
 * an added pad token, NUL bytes, the text cap, errors, and concurrent encoding. Parity with
 * transformers on the real vocabulary is tests/test_tokenizer.py.
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/tokenizer.h"
#include "engine/util.h"

static int failures;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: %s: ", __FILE__, __LINE__, #cond);                             \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n");                                                                 \
            failures++;                                                                            \
        }                                                                                          \
    } while (0)

/* The folder: byte b's symbol has id b, its end-of-word symbol 256 + b, then the merge results
 * in order, then the two special tokens; the pad token is "!". */
static const char *const merges[][2] = {
    {"h", "e"}, {"l", "l"}, {"l", "o</w>"}, {"he", "ll"}, {"hell", "o</w>"},
    {"ab", "a"}, /* ranked before the merge that makes "ab" */
    {"a", "b"}, {"a", "a"},
};
#define N_MERGES ((int)SDXS_ARRAY_LEN(merges))
enum { ID_HELLO = 512 + 4, ID_ABA = 512 + 5, ID_AB = 512 + 6, ID_AA = 512 + 7 };
enum { ID_BOS = 512 + N_MERGES, ID_EOS, ID_PAD = '!' };
#define END(c) (256 + (c))

static char dir[64];

/* GPT-2's byte-to-unicode symbol of byte b, JSON-escaped, into out. */
static void byte_symbol(int b, char *out)
{
    int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    unsigned cp = (unsigned)b;
    if (!printable) {
        cp = 256;
        for (int k = 0; k < b; k++)
            cp += !((k >= '!' && k <= '~') || (k >= 0xA1 && k <= 0xAC) || k >= 0xAE);
    }
    if (cp == '"' || cp == '\\')
        sprintf(out, "\\%c", (char)cp);
    else if (cp < 0x80)
        sprintf(out, "%c", (char)cp);
    else
        sprintf(out, "%c%c", (char)(0xC0 | (cp >> 6)), (char)(0x80 | (cp & 0x3F)));
}

static int write_folder(void)
{
    char path[128], sym[8];
    FILE *f;

    snprintf(dir, sizeof(dir), "tests/data/unit_tokenizer_XXXXXX");
    mkdir("tests/data", 0755);
    if (!mkdtemp(dir))
        return -1;
    snprintf(path, sizeof(path), "%s/vocab.json", dir);
    if (!(f = fopen(path, "w")))
        return -1;
    fputc('{', f);
    for (int b = 0; b < 256; b++) {
        byte_symbol(b, sym);
        fprintf(f, "\"%s\": %d, \"%s</w>\": %d, ", sym, b, sym, 256 + b);
    }
    for (int i = 0; i < N_MERGES; i++)
        fprintf(f, "\"%s%s\": %d, ", merges[i][0], merges[i][1], 512 + i);
    fprintf(f, "\"<|startoftext|>\": %d, \"<|endoftext|>\": %d}", ID_BOS, ID_EOS);
    fclose(f);
    snprintf(path, sizeof(path), "%s/merges.txt", dir);
    if (!(f = fopen(path, "w")))
        return -1;
    fprintf(f, "#version: 0.2\n");
    for (int i = 0; i < N_MERGES; i++)
        fprintf(f, "%s %s\n", merges[i][0], merges[i][1]);
    fclose(f);
    snprintf(path, sizeof(path), "%s/special_tokens_map.json", dir);
    if (!(f = fopen(path, "w")))
        return -1;
    fprintf(f, "{\"bos_token\": \"<|startoftext|>\", \"eos_token\": \"<|endoftext|>\", "
               "\"unk_token\": \"<|endoftext|>\", \"pad_token\": \"!\"}");
    fclose(f);
    return 0;
}

static void remove_folder(void)
{
    static const char *const files[] = {"vocab.json", "merges.txt", "special_tokens_map.json"};
    char path[128];
    for (size_t i = 0; i < SDXS_ARRAY_LEN(files); i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, files[i]);
        remove(path);
    }
    rmdir(dir);
}

/* Checks that text encodes to BOS, want[0..n), EOS, then padding. */
static void expect(const sdxs_tokenizer *tok, const char *text, size_t len, const int32_t *want,
                   int n)
{
    int32_t ids[SDXS_MAX_TOKENS];
    sdxs_error err;
    sdxs_status s = sdxs_tokenizer_encode_bytes(tok, text, len, ids, &err);
    CHECK(s == SDXS_OK, "%.20s: %s", text, err.message);
    if (s != SDXS_OK)
        return;
    CHECK(ids[0] == ID_BOS, "%.20s: first id %d", text, ids[0]);
    for (int i = 0; i < n; i++)
        CHECK(ids[1 + i] == want[i], "%.20s: id %d is %d, want %d", text, 1 + i, ids[1 + i],
              want[i]);
    CHECK(ids[1 + n] == ID_EOS, "%.20s: id %d is %d, want EOS", text, 1 + n, ids[1 + n]);
    for (int i = n + 2; i < SDXS_MAX_TOKENS; i++)
        CHECK(ids[i] == ID_PAD, "%.20s: id %d is %d, want the pad id", text, i, ids[i]);
}

static void test_bpe(const sdxs_tokenizer *tok)
{
    const int32_t hello[] = {ID_HELLO}, hello_bang[] = {ID_HELLO, '!', '!'};
    /* Rank 6 ("a b") merges at both places before rank 5 ("ab a") can apply. */
    const int32_t ababx[] = {ID_AB, ID_AB, END('x')};
    /* Overlapping pairs merge left to right. */
    const int32_t aaa[] = {ID_AA, END('a')}, aaaa[] = {ID_AA, 'a', END('a')};
    const int32_t a_b[] = {'a', END('b')};

    expect(tok, "hello", 5, hello, 1);
    expect(tok, "  HeLLo\t", 8, hello, 1);
    expect(tok, "hello!!", 7, hello_bang, 3); /* the pad token "!" is split off alone */
    expect(tok, "ababx", 5, ababx, 3);
    expect(tok, "aaa", 3, aaa, 2);
    expect(tok, "aaaa", 4, aaaa, 3);
    expect(tok, "a\0b", 3, a_b, 2); /* NUL is dropped like any control character */
    expect(tok, "", 0, NULL, 0);
}

static void test_truncation_and_cap(const sdxs_tokenizer *tok)
{
    int32_t ids[SDXS_MAX_TOKENS], want[SDXS_MAX_TOKENS - 2];
    size_t n = SDXS_TOKENIZER_MAX_TEXT_BYTES;
    char *text = malloc(n + 2);
    sdxs_error err;
    sdxs_status s;

    for (int i = 0; i < SDXS_MAX_TOKENS - 2; i++)
        want[i] = ID_HELLO;
    for (size_t i = 0; i < n; i++)
        text[i] = "hello "[i % 6];
    expect(tok, text, n, want, SDXS_MAX_TOKENS - 2);
    text[n] = 'x';
    text[n + 1] = '\0';
    s = sdxs_tokenizer_encode(tok, text, ids, &err);
    CHECK(s == SDXS_ERR_INVALID && strcmp(err.param, "prompt") == 0, "status %d param %s", s,
          err.param);
    CHECK(strstr(err.message, "65536") != NULL, "message: %s", err.message);
    s = sdxs_tokenizer_encode(tok, NULL, ids, &err);
    CHECK(s == SDXS_ERR_INVALID, "NULL text gave %d", s);
    free(text);
}

static void test_encode_matches_bytes(const sdxs_tokenizer *tok)
{
    int32_t a[SDXS_MAX_TOKENS], b[SDXS_MAX_TOKENS];
    const char *text = "Hello, ABABX! caf\xc3\xa9 \xff\xfe";
    sdxs_error err;
    CHECK(sdxs_tokenizer_encode(tok, text, a, &err) == SDXS_OK, "%s", err.message);
    CHECK(sdxs_tokenizer_encode_bytes(tok, text, strlen(text), b, &err) == SDXS_OK, "%s",
          err.message);
    CHECK(memcmp(a, b, sizeof(a)) == 0, "encode and encode_bytes differ");
    CHECK(sdxs_tokenizer_pad_id(tok) == ID_PAD && sdxs_tokenizer_bos_id(tok) == ID_BOS &&
              sdxs_tokenizer_eos_id(tok) == ID_EOS,
          "special ids %d %d %d", sdxs_tokenizer_pad_id(tok), sdxs_tokenizer_bos_id(tok),
          sdxs_tokenizer_eos_id(tok));
}

typedef struct thread_job {
    const sdxs_tokenizer *tok;
    int mismatches;
} thread_job;

static void *encode_many(void *arg)
{
    thread_job *job = arg;
    static const char *const texts[] = {"hello ababx", "aaaa HELLO!", "caf\xc3\xa9 ab"};
    int32_t first[3][SDXS_MAX_TOKENS], ids[SDXS_MAX_TOKENS];
    for (int i = 0; i < 3; i++)
        sdxs_tokenizer_encode(job->tok, texts[i], first[i], NULL);
    for (int r = 0; r < 2000; r++) {
        sdxs_tokenizer_encode(job->tok, texts[r % 3], ids, NULL);
        job->mismatches += memcmp(ids, first[r % 3], sizeof(ids)) != 0;
    }
    return NULL;
}

static void test_threads(const sdxs_tokenizer *tok)
{
    pthread_t threads[4];
    thread_job jobs[4];
    for (int i = 0; i < 4; i++) {
        jobs[i] = (thread_job){tok, 0};
        pthread_create(&threads[i], NULL, encode_many, &jobs[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(threads[i], NULL);
        CHECK(jobs[i].mismatches == 0, "thread %d: %d mismatches", i, jobs[i].mismatches);
    }
}

static void test_missing_folder(void)
{
    sdxs_tokenizer *tok = (sdxs_tokenizer *)&failures;
    sdxs_error err;
    sdxs_status s = sdxs_tokenizer_load("tests/data/no_such_tokenizer", &tok, &err);
    CHECK(s == SDXS_ERR_MODEL && tok == NULL, "status %d", s);
    CHECK(strstr(err.message, "vocab.json") != NULL, "message: %s", err.message);
    CHECK(strcmp(err.param, "no_such_tokenizer/vocab.json") == 0, "param: %s", err.param);
}

int main(void)
{
    sdxs_tokenizer *tok = NULL;
    sdxs_error err;

    if (write_folder() != 0) {
        fprintf(stderr, "test_tokenizer: cannot write a tokenizer folder under tests/data\n");
        return 1;
    }
    if (sdxs_tokenizer_load(dir, &tok, &err) != SDXS_OK) {
        fprintf(stderr, "test_tokenizer: %s\n", err.message);
        remove_folder();
        return 1;
    }
    test_bpe(tok);
    test_truncation_and_cap(tok);
    test_encode_matches_bytes(tok);
    test_threads(tok);
    test_missing_folder();
    sdxs_tokenizer_free(tok);
    remove_folder();
    if (failures)
        fprintf(stderr, "test_tokenizer: %d failures\n", failures);
    return failures ? 1 : 0;
}
