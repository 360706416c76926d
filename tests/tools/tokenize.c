/* tokenize.c: sdxs-tokenize, the batch driver of tests/test_tokenizer.py. It loads one tokenizer
 * folder and encodes many texts in one process, so thousands of strings take a moment.
 *
 *   sdxs-tokenize [--pieces | --bench N] TOKENIZER_DIR RECORDS
 *
 * RECORDS holds the texts, each written as "<byte count>\n<bytes>\n" (any bytes, NUL included).
 * One output line per text: its 77 ids; with --pieces, the pieces BPE sees, each as hex of its
 * UTF-8, separated by spaces; "error <status> <message>" when encoding fails. --bench N encodes
 * every text N times and prints a timing table. Exit status: 0; 2 bad usage; 3 the folder or the
 * records file is bad (the message names it); 4 anything else.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/tokenizer.h"
#include "engine/util.h"

#define MAX_RECORDS_BYTES ((size_t)1 << 30)

typedef struct record {
    const char *text;
    size_t len;
} record;

static void print_piece(const char *piece, size_t len, void *user)
{
    int *first = user;
    if (!*first)
        putchar(' ');
    *first = 0;
    for (size_t i = 0; i < len; i++)
        printf("%02x", (unsigned char)piece[i]);
}

/* Splits the records file into texts; returns the count, or -1 with a message when malformed. */
static long parse_records(const char *data, size_t len, record **out)
{
    size_t i = 0, n = 0, cap = 0;
    record *recs = NULL;

    while (i < len) {
        size_t count = 0, start = i;
        while (i < len && data[i] >= '0' && data[i] <= '9' && i - start < 12)
            count = count * 10 + (size_t)(data[i++] - '0');
        if (i == start || i >= len || data[i] != '\n' || count > len - i - 1 ||
            i + 1 + count >= len || data[i + 1 + count] != '\n') {
            fprintf(stderr, "sdxs-tokenize: records file malformed at byte %zu\n", start);
            free(recs);
            return -1;
        }
        if (n == cap) {
            record *p;
            cap = cap ? 2 * cap : 1024;
            p = realloc(recs, cap * sizeof(*recs));
            if (!p) {
                fprintf(stderr, "sdxs-tokenize: out of memory\n");
                free(recs);
                return -1;
            }
            recs = p;
        }
        recs[n].text = data + i + 1;
        recs[n].len = count;
        n++;
        i += count + 2;
    }
    *out = recs;
    return (long)n;
}

static int usage(void)
{
    fprintf(stderr, "usage: sdxs-tokenize [--pieces | --bench N] TOKENIZER_DIR RECORDS\n");
    return 2;
}

int main(int argc, char **argv)
{
    int pieces = 0, bench = 0, arg = 1;
    sdxs_tokenizer *tok;
    sdxs_error err;
    sdxs_status s;
    char *data;
    size_t len;
    record *recs;
    long n;
    double t0, load_ms;

    if (arg < argc && strcmp(argv[arg], "--pieces") == 0) {
        pieces = 1;
        arg++;
    } else if (arg + 1 < argc && strcmp(argv[arg], "--bench") == 0) {
        bench = atoi(argv[arg + 1]);
        arg += 2;
        if (bench < 1)
            return usage();
    }
    if (argc - arg != 2)
        return usage();

    /* The folder, then the texts. */
    sdxs_error_clear(&err);
    t0 = sdxs_now_ms();
    s = sdxs_tokenizer_load(argv[arg], &tok, &err);
    load_ms = sdxs_now_ms() - t0;
    if (s != SDXS_OK) {
        fprintf(stderr, "sdxs-tokenize: %s (%s)\n", err.message, err.param);
        return (int)s;
    }
    s = sdxs_read_file(argv[arg + 1], MAX_RECORDS_BYTES, &data, &len, &err);
    if (s != SDXS_OK) {
        fprintf(stderr, "sdxs-tokenize: %s\n", err.message);
        sdxs_tokenizer_free(tok);
        return (int)s;
    }
    n = parse_records(data, len, &recs);
    if (n < 0) {
        free(data);
        sdxs_tokenizer_free(tok);
        return 3;
    }

    /* Encode: ids, pieces, or timings. */
    if (bench) {
        int32_t ids[SDXS_MAX_TOKENS];
        size_t bytes = 0;
        double ms;
        for (long i = 0; i < n; i++)
            bytes += recs[i].len;
        t0 = sdxs_now_ms();
        for (int r = 0; r < bench; r++)
            for (long i = 0; i < n; i++)
                sdxs_tokenizer_encode_bytes(tok, recs[i].text, recs[i].len, ids, &err);
        ms = sdxs_now_ms() - t0;
        printf("| load (ms) | texts | mean bytes | encodes | encode (us/text) |\n");
        printf("|---|---|---|---|---|\n");
        printf("| %.1f | %ld | %.1f | %ld | %.2f |\n", load_ms, n,
               n ? (double)bytes / (double)n : 0.0, n * bench,
               n ? 1000.0 * ms / ((double)n * bench) : 0.0);
    }
    for (long i = 0; i < n && !bench; i++) {
        int32_t ids[SDXS_MAX_TOKENS];
        int first = 1;
        sdxs_error_clear(&err);
        if (pieces)
            s = sdxs_tokenizer_pieces(tok, recs[i].text, recs[i].len, print_piece, &first, &err);
        else
            s = sdxs_tokenizer_encode_bytes(tok, recs[i].text, recs[i].len, ids, &err);
        if (s != SDXS_OK) {
            if (!first)
                putchar('\n');
            printf("error %d %s\n", (int)s, err.message);
            continue;
        }
        for (int k = 0; k < SDXS_MAX_TOKENS && !pieces; k++)
            printf(k ? " %d" : "%d", (int)ids[k]);
        putchar('\n');
    }
    free(recs);
    free(data);
    sdxs_tokenizer_free(tok);
    return fflush(stdout) == 0 ? 0 : 4;
}
