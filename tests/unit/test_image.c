/* test_image.c: the image module's error paths and invariants, which need no reference library:
 * empty, random, truncated, corrupted and oversized PNG and JPEG input (run under ASan this also
 * checks that every libpng/libjpeg failure path frees what it took), odd and 1x1 sizes, argument
 * checks of the encoders, resize and Canny. Parity with Pillow and OpenCV is tests/test_image.py.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>

#include "engine/canny.h"
#include "engine/image.h"
#include "sdxs.h"

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

static uint32_t rng_state = 2463534242u;

static uint32_t rng_next(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 17;
    rng_state ^= rng_state << 5;
    return rng_state;
}

/* A width x height picture with gradients and noise; the caller frees it. */
static sdxs_image picture(int width, int height)
{
    sdxs_image image;
    sdxs_error err;
    sdxs_status st = sdxs_image_alloc(&image, width, height, "test", &err);
    if (st != SDXS_OK) {
        fprintf(stderr, "cannot allocate a test picture: %s\n", err.message);
        exit(1);
    }
    for (int y = 0; y < height; y++)
        for (int x = 0; x < width; x++)
            for (int c = 0; c < 3; c++)
                image.rgb[((size_t)y * (size_t)width + (size_t)x) * 3 + (size_t)c] =
                    (uint8_t)((x * 7 + y * 3 + c * 50 + (int)(rng_next() % 16)) & 255);
    return image;
}

static int contains(const uint8_t *bytes, size_t len, const char *text)
{
    size_t n = strlen(text);
    for (size_t i = 0; i + n <= len; i++)
        if (memcmp(bytes + i, text, n) == 0)
            return 1;
    return 0;
}

static void encode_png(const sdxs_image *image, uint8_t **bytes, size_t *len)
{
    sdxs_error err;
    sdxs_status st = sdxs_png_encode(image, NULL, bytes, len, &err);
    if (st != SDXS_OK) {
        fprintf(stderr, "cannot encode a test PNG: %s\n", err.message);
        exit(1);
    }
}

/* Decodes and expects failure with SDXS_ERR_MODEL and a message containing words. */
static void expect_bad(const uint8_t *bytes, size_t len, const sdxs_image_limits *limits,
                       const char *words, const char *what)
{
    sdxs_image out = {1, 1, NULL};
    sdxs_error err;
    sdxs_status st = sdxs_image_decode(bytes, len, limits, &out, &err);
    CHECK(st == SDXS_ERR_MODEL, "%s: status %d (%s)", what, (int)st,
          st == SDXS_OK ? "decoded" : err.message);
    if (st != SDXS_OK) {
        CHECK(out.rgb == NULL && out.width == 0 && out.height == 0, "%s: output not cleared", what);
        CHECK(strcmp(err.param, "image") == 0, "%s: param %s", what, err.param);
        CHECK(!words || strstr(err.message, words), "%s: message \"%s\" lacks \"%s\"", what,
              err.message, words);
    }
    sdxs_image_free(&out);
}

/* ---- JPEG files made with libjpeg directly, for what sdxs_jpeg_encode never writes ---- */

typedef struct jpeg_spec {
    int width, height, components;
    J_COLOR_SPACE space;
    int progressive; /* 1: libjpeg's progression; 2: a script of more than 500 scans */
    int arithmetic;  /* arithmetic coding instead of Huffman */
} jpeg_spec;

static jpeg_scan_info many_scans[1024];

/* Grey only: DC, then each of the 63 AC coefficients in its own band, each band sent at Al = 10
 * and refined one bit at a time: 11 + 63 * 11 = 704 scans. */
static int many_scans_script(void)
{
    int n = 0;
    for (int k = 0; k < 64; k++) {
        for (int al = 10; al >= 0; al--) {
            jpeg_scan_info *s = &many_scans[n++];
            memset(s, 0, sizeof(*s));
            s->comps_in_scan = 1;
            s->component_index[0] = 0;
            s->Ss = k;
            s->Se = k;
            s->Ah = al == 10 ? 0 : al + 1;
            s->Al = al;
        }
    }
    return n;
}

static void make_jpeg(const jpeg_spec *spec, uint8_t **bytes, size_t *len)
{
    struct jpeg_compress_struct cinfo;
    struct jpeg_error_mgr jerr;
    unsigned char *buf = NULL;
    unsigned long size = 0;
    uint8_t *row = malloc((size_t)spec->width * (size_t)spec->components);

    cinfo.err = jpeg_std_error(&jerr); /* a test: libjpeg may exit on its own bugs here */
    jpeg_create_compress(&cinfo);
    jpeg_mem_dest(&cinfo, &buf, &size);
    cinfo.image_width = (JDIMENSION)spec->width;
    cinfo.image_height = (JDIMENSION)spec->height;
    cinfo.input_components = spec->components;
    cinfo.in_color_space = spec->space;
    jpeg_set_defaults(&cinfo);
    if (spec->space == JCS_UNKNOWN || spec->space == JCS_CMYK)
        jpeg_set_colorspace(&cinfo, spec->space);
    if (spec->progressive == 1) {
        jpeg_simple_progression(&cinfo);
    } else if (spec->progressive == 2) {
        cinfo.scan_info = many_scans;
        cinfo.num_scans = many_scans_script();
    }
    cinfo.arith_code = spec->arithmetic ? TRUE : FALSE;
    jpeg_start_compress(&cinfo, TRUE);
    while (cinfo.next_scanline < cinfo.image_height) {
        for (int i = 0; i < spec->width * spec->components; i++)
            row[i] = (uint8_t)(i * 5 + (int)cinfo.next_scanline * 9);
        jpeg_write_scanlines(&cinfo, &row, 1);
    }
    jpeg_finish_compress(&cinfo);
    jpeg_destroy_compress(&cinfo);
    free(row);
    *bytes = buf;
    *len = size;
}

/* The offset of the first JPEG SOFn segment's payload (after the marker and length). */
static size_t jpeg_find_sof(const uint8_t *bytes, size_t len)
{
    for (size_t i = 2; i + 9 < len; i++)
        if (bytes[i] == 0xff && bytes[i + 1] >= 0xc0 && bytes[i + 1] <= 0xc2)
            return i + 4;
    return 0;
}

/* ---- tests ---- */

static void test_empty_and_random(void)
{
    uint8_t bytes[4096];
    expect_bad(NULL, 0, NULL, "empty", "NULL, 0 bytes");
    expect_bad(bytes, 0, NULL, "empty", "0 bytes");
    {
        uint8_t *big = calloc(SDXS_IMAGE_MAX_INPUT_BYTES + 1, 1);
        expect_bad(big, SDXS_IMAGE_MAX_INPUT_BYTES + 1, NULL, "over the limit of 67108864 bytes",
                   "input over the byte cap");
        free(big);
    }
    for (int round = 0; round < 200; round++) {
        size_t len = 1 + rng_next() % sizeof(bytes);
        for (size_t i = 0; i < len; i++)
            bytes[i] = (uint8_t)rng_next();
        expect_bad(bytes, len, NULL, "not a PNG or JPEG", "random bytes");
    }
    /* Random bytes after a valid signature reach libpng's and libjpeg's own checks. */
    for (int round = 0; round < 200; round++) {
        static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
        size_t len = 8 + rng_next() % 512;
        for (size_t i = 0; i < len; i++)
            bytes[i] = (uint8_t)rng_next();
        if (round % 2) {
            memcpy(bytes, png_sig, sizeof(png_sig));
            expect_bad(bytes, len, NULL, "PNG", "PNG signature then random bytes");
        } else {
            bytes[0] = 0xff;
            bytes[1] = 0xd8;
            bytes[2] = 0xff;
            expect_bad(bytes, len, NULL, "JPEG", "JPEG SOI then random bytes");
        }
    }
}

static void test_png_truncated(void)
{
    sdxs_image image = picture(37, 29), out;
    sdxs_error err;
    uint8_t *bytes;
    size_t len, idat_end = 0, pos = 8;
    char what[96];

    encode_png(&image, &bytes, &len);
    /* Where the image data ends: past the last IDAT chunk and its CRC. */
    while (pos + 8 <= len) {
        size_t n = (size_t)bytes[pos] << 24 | (size_t)bytes[pos + 1] << 16 |
                   (size_t)bytes[pos + 2] << 8 | bytes[pos + 3];
        if (memcmp(bytes + pos + 4, "IDAT", 4) == 0)
            idat_end = pos + 12 + n;
        pos += 12 + n;
    }
    CHECK(idat_end > 8 && idat_end < len, "no IDAT found (end %zu of %zu)", idat_end, len);
    for (size_t cut = 1; cut < idat_end; cut++) {
        snprintf(what, sizeof(what), "PNG cut at %zu of %zu", cut, len);
        expect_bad(bytes, cut, NULL, NULL, what);
    }
    /* The picture is whole once its data is: a missing IEND is not an error. */
    for (size_t cut = idat_end; cut <= len; cut++) {
        sdxs_status st = sdxs_image_decode(bytes, cut, NULL, &out, &err);
        CHECK(st == SDXS_OK, "PNG cut at %zu after the data: %s", cut, err.message);
        if (st == SDXS_OK)
            CHECK(memcmp(out.rgb, image.rgb, 37 * 29 * 3) == 0, "pixels differ after cut %zu",
                  cut);
        sdxs_image_free(&out);
    }
    free(bytes);
    sdxs_image_free(&image);
}

static void test_png_corrupt(void)
{
    sdxs_image image = picture(23, 17), out;
    sdxs_error err;
    uint8_t *bytes, *copy;
    size_t len;
    int decoded = 0;

    encode_png(&image, &bytes, &len);
    copy = malloc(len);
    /* A changed byte anywhere in a chunk breaks its CRC: libpng refuses critical chunks. */
    memcpy(copy, bytes, len);
    copy[30] ^= 0x01; /* IHDR CRC */
    expect_bad(copy, len, NULL, "CRC", "IHDR with a bad CRC");
    memcpy(copy, bytes, len);
    copy[len - 30] ^= 0x40; /* inside IDAT */
    expect_bad(copy, len, NULL, NULL, "IDAT with a bad CRC");
    /* Random damage: whatever happens, no crash, no leak, a clean status. */
    for (int round = 0; round < 300; round++) {
        sdxs_status st;
        memcpy(copy, bytes, len);
        for (int k = 0; k < 1 + round % 4; k++)
            copy[8 + rng_next() % (len - 8)] = (uint8_t)rng_next();
        st = sdxs_image_decode(copy, len, NULL, &out, &err);
        CHECK(st == SDXS_OK || st == SDXS_ERR_MODEL, "status %d", (int)st);
        if (st == SDXS_OK) {
            decoded++;
            CHECK(out.width == 23 && out.height == 17, "size %dx%d", out.width, out.height);
        }
        sdxs_image_free(&out);
    }
    /* Almost every change breaks a CRC; the few that pass hit ancillary bytes. */
    CHECK(decoded < 30, "%d of 300 damaged files decoded", decoded);
    free(copy);
    free(bytes);
    sdxs_image_free(&image);
}

static void test_png_huge_header(void)
{
    /* Signature and an IHDR declaring 30000 x 30000 RGB: refused at the header. */
    uint8_t file[33] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13, 'I', 'H', 'D',
                        'R', 0, 0, 0x75, 0x30, 0, 0, 0x75, 0x30, 8, 2, 0, 0, 0, 0, 0, 0, 0};
    sdxs_image_limits small = {100, 100, 0};
    sdxs_image_limits few = {0, 0, 1000};
    sdxs_image image = picture(50, 40);
    uint8_t *bytes;
    size_t len;
    sdxs_image out;
    sdxs_error err;

    expect_bad(file, sizeof(file), NULL, "30000 pixels wide, over the limit of 8192 (max_width)",
               "PNG 30000x30000");
    file[18] = 0;
    file[19] = 10; /* 10 x 30000 */
    expect_bad(file, sizeof(file), NULL, "30000 pixels high, over the limit of 8192 (max_height)",
               "PNG 10x30000");
    /* A real file against the caller's limits. */
    encode_png(&image, &bytes, &len);
    small.max_width = 49;
    expect_bad(bytes, len, &small, "over the limit of 49 (max_width)", "PNG over max_width");
    small.max_width = 50;
    small.max_height = 39;
    expect_bad(bytes, len, &small, "over the limit of 39 (max_height)", "PNG over max_height");
    expect_bad(bytes, len, &few, "over the limit of 1000 (max_pixels)", "PNG over max_pixels");
    few.max_pixels = 2000;
    CHECK(sdxs_image_decode(bytes, len, &few, &out, &err) == SDXS_OK, "at the limit: %s",
          err.message);
    sdxs_image_free(&out);
    {
        sdxs_image_limits negative = {-1, 0, 0};
        CHECK(sdxs_image_decode(bytes, len, &negative, &out, &err) == SDXS_ERR_INVALID &&
                  strcmp(err.param, "limits") == 0,
              "negative limit: %s", err.message);
    }
    free(bytes);
    sdxs_image_free(&image);
}

static void test_jpeg_truncated_and_huge(void)
{
    sdxs_image image = picture(41, 33), out;
    sdxs_image_limits few = {0, 0, 1000};
    sdxs_error err;
    uint8_t *bytes, *copy;
    size_t len, sof;
    char what[96];
    sdxs_status st;

    CHECK(sdxs_jpeg_encode(&image, 85, &bytes, &len, &err) == SDXS_OK, "%s", err.message);
    /* Every prefix is refused: even without its last byte the EOI marker is missing. */
    for (size_t cut = 1; cut < len; cut++) {
        snprintf(what, sizeof(what), "JPEG cut at %zu of %zu", cut, len);
        expect_bad(bytes, cut, NULL, NULL, what);
    }
    st = sdxs_image_decode(bytes, len, NULL, &out, &err);
    CHECK(st == SDXS_OK && out.width == 41 && out.height == 33, "whole JPEG: %s", err.message);
    sdxs_image_free(&out);
    expect_bad(bytes, len, &few, "over the limit of 1000 (max_pixels)", "JPEG over max_pixels");

    /* The SOF0 size fields: precision, height (2 bytes), width (2 bytes). */
    sof = jpeg_find_sof(bytes, len);
    CHECK(sof > 0, "no SOF marker");
    copy = malloc(len);
    memcpy(copy, bytes, len);
    copy[sof + 1] = 0x75;
    copy[sof + 2] = 0x30;
    copy[sof + 3] = 0x75;
    copy[sof + 4] = 0x30;
    expect_bad(copy, len, NULL, "30000 pixels wide, over the limit of 8192 (max_width)",
               "JPEG 30000x30000");
    memcpy(copy, bytes, len);
    copy[sof] = 12; /* 12-bit precision: not in an 8-bit libjpeg */
    expect_bad(copy, len, NULL, "JPEG", "12-bit JPEG");
    free(copy);
    free(bytes);
    sdxs_image_free(&image);
}

static void test_jpeg_kinds(void)
{
    const jpeg_spec progressive = {45, 31, 3, JCS_RGB, 1, 0};
    const jpeg_spec arithmetic = {21, 13, 3, JCS_RGB, 1, 1};
    const jpeg_spec two = {16, 16, 2, JCS_UNKNOWN, 0, 0};
    const jpeg_spec cmyk = {19, 11, 4, JCS_CMYK, 0, 0};
    const jpeg_spec scans = {8, 8, 1, JCS_GRAYSCALE, 2, 0};
    uint8_t *bytes;
    size_t len;
    sdxs_image out;
    sdxs_error err;
    sdxs_status st;
    char what[96];

    make_jpeg(&progressive, &bytes, &len);
    st = sdxs_image_decode(bytes, len, NULL, &out, &err);
    CHECK(st == SDXS_OK && out.width == 45 && out.height == 31, "progressive: %s", err.message);
    sdxs_image_free(&out);
    for (size_t cut = 1; cut < len; cut += 7) {
        snprintf(what, sizeof(what), "progressive JPEG cut at %zu of %zu", cut, len);
        expect_bad(bytes, cut, NULL, NULL, what);
    }
    free(bytes);

    make_jpeg(&arithmetic, &bytes, &len);
    st = sdxs_image_decode(bytes, len, NULL, &out, &err);
    CHECK(st == SDXS_OK && out.width == 21 && out.height == 13, "arithmetic: %s", err.message);
    sdxs_image_free(&out);
    free(bytes);

    make_jpeg(&two, &bytes, &len);
    expect_bad(bytes, len, NULL, "2 components in an unknown colour space", "2-component JPEG");
    free(bytes);

    make_jpeg(&cmyk, &bytes, &len);
    st = sdxs_image_decode(bytes, len, NULL, &out, &err);
    CHECK(st == SDXS_OK && out.width == 19 && out.height == 11, "CMYK: %s", err.message);
    sdxs_image_free(&out);
    free(bytes);

    make_jpeg(&scans, &bytes, &len);
    expect_bad(bytes, len, NULL, "more than 500 scans", "704-scan JPEG");
    free(bytes);
}

/* A copy of a JPEG with an APP1 segment holding payload inserted after SOI; the caller frees. */
static uint8_t *jpeg_with_app1(const uint8_t *jpeg, size_t len, const uint8_t *payload, size_t n,
                               size_t *out_len)
{
    uint8_t *out = malloc(len + n + 4);
    memcpy(out, jpeg, 2);
    out[2] = 0xff;
    out[3] = 0xe1;
    out[4] = (uint8_t)((n + 2) >> 8);
    out[5] = (uint8_t)(n + 2);
    memcpy(out + 6, payload, n);
    memcpy(out + 6 + n, jpeg + 2, len - 2);
    *out_len = len + n + 4;
    return out;
}

static void test_exif(void)
{
    /* "Exif\0\0", a big-endian TIFF header, one IFD entry: orientation (SHORT) = 6. */
    uint8_t exif[32] = {'E', 'x', 'i', 'f', 0, 0, 'M', 'M', 0, 42, 0, 0, 0, 8, 0, 1,
                        0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0, 0, 0, 0, 0};
    sdxs_image image = picture(50, 40), out;
    sdxs_image_limits limits = {50, 45, 0};
    sdxs_error err;
    uint8_t *jpeg, *bytes;
    size_t len, n;
    sdxs_status st;

    CHECK(sdxs_jpeg_encode(&image, 90, &jpeg, &len, &err) == SDXS_OK, "%s", err.message);
    bytes = jpeg_with_app1(jpeg, len, exif, sizeof(exif), &n);
    st = sdxs_image_decode(bytes, n, NULL, &out, &err);
    CHECK(st == SDXS_OK && out.width == 40 && out.height == 50, "orientation 6: %s %dx%d",
          err.message, out.width, out.height);
    sdxs_image_free(&out);
    /* The stored 50 x 40 is within the limits; turned upright it is too high. */
    expect_bad(bytes, n, &limits, "50 pixels high, over the limit of 45 (max_height)",
               "turned over max_height");
    free(bytes);

    /* Broken EXIF blocks are ignored: an IFD offset past the end, an entry count past it, an
     * unknown byte order, an orientation out of range. */
    {
        uint8_t broken[4][32];
        for (int k = 0; k < 4; k++)
            memcpy(broken[k], exif, sizeof(exif));
        broken[0][10] = 0xff; /* IFD offset 0xff000008 */
        broken[1][14] = 0xff; /* 0xff01 entries */
        broken[1][16] = 0;    /* and the first one is no longer the orientation */
        broken[2][6] = 'X';
        broken[3][25] = 9;
        for (int k = 0; k < 4; k++) {
            bytes = jpeg_with_app1(jpeg, len, broken[k], sizeof(exif), &n);
            st = sdxs_image_decode(bytes, n, NULL, &out, &err);
            CHECK(st == SDXS_OK && out.width == 50 && out.height == 40, "broken EXIF %d: %s", k,
                  err.message);
            sdxs_image_free(&out);
            free(bytes);
        }
    }
    free(jpeg);
    sdxs_image_free(&image);
}

static void test_jpeg_corrupt(void)
{
    sdxs_image image = picture(40, 24), out;
    sdxs_error err;
    uint8_t *bytes, *copy;
    size_t len;

    CHECK(sdxs_jpeg_encode(&image, 80, &bytes, &len, &err) == SDXS_OK, "%s", err.message);
    copy = malloc(len);
    /* JPEG has no checksums: damaged entropy data may decode to wrong pixels. Here only a clean
     * status, no crash and no leak are required. */
    for (int round = 0; round < 300; round++) {
        sdxs_status st;
        memcpy(copy, bytes, len);
        for (int k = 0; k < 1 + round % 4; k++)
            copy[3 + rng_next() % (len - 3)] = (uint8_t)rng_next();
        st = sdxs_image_decode(copy, len, NULL, &out, &err);
        CHECK(st == SDXS_OK || st == SDXS_ERR_MODEL, "status %d", (int)st);
        if (st == SDXS_OK)
            CHECK(out.width >= 1 && out.height >= 1 && out.rgb, "empty image decoded");
        sdxs_image_free(&out);
    }
    free(copy);
    free(bytes);
    sdxs_image_free(&image);
}

static void test_round_trips_odd_sizes(void)
{
    static const int sizes[][2] = {{1, 1}, {1, 7}, {7, 1}, {3, 5}, {17, 2}, {513, 3}};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        int w = sizes[i][0], h = sizes[i][1];
        sdxs_image image = picture(w, h), out;
        sdxs_error err;
        uint8_t *bytes;
        size_t len;
        sdxs_status st;

        encode_png(&image, &bytes, &len);
        st = sdxs_image_decode(bytes, len, NULL, &out, &err);
        CHECK(st == SDXS_OK && out.width == w && out.height == h &&
                  memcmp(out.rgb, image.rgb, (size_t)w * (size_t)h * 3) == 0,
              "PNG %dx%d round trip: %s", w, h, err.message);
        sdxs_image_free(&out);
        free(bytes);

        st = sdxs_png_encode_mode(&image, NULL, SDXS_PNG_STORED, &bytes, &len, &err);
        CHECK(st == SDXS_OK, "stored PNG: %s", err.message);
        st = sdxs_image_decode(bytes, len, NULL, &out, &err);
        CHECK(st == SDXS_OK && memcmp(out.rgb, image.rgb, (size_t)w * (size_t)h * 3) == 0,
              "stored PNG %dx%d round trip: %s", w, h, err.message);
        sdxs_image_free(&out);
        free(bytes);

        st = sdxs_jpeg_encode(&image, 95, &bytes, &len, &err);
        CHECK(st == SDXS_OK, "JPEG %dx%d: %s", w, h, err.message);
        st = sdxs_image_decode(bytes, len, NULL, &out, &err);
        CHECK(st == SDXS_OK && out.width == w && out.height == h, "JPEG %dx%d back: %s", w, h,
              err.message);
        sdxs_image_free(&out);
        free(bytes);
        sdxs_image_free(&image);
    }
}

static void test_encoder_arguments(void)
{
    sdxs_image image = picture(4, 4), none = {0, 0, NULL}, wide = image;
    const char *bad_key[] = {"bad  key", "v", NULL};
    const char *no_value[] = {"key", NULL, NULL};
    const char *bad_utf8[] = {"key", "caf\xe9", NULL};
    const char *good[] = {"prompt", "a cat", "Comment", "\xc3\xa9t\xc3\xa9", NULL};
    uint8_t *bytes = (uint8_t *)&image;
    size_t len = 1;
    sdxs_error err;

    CHECK(sdxs_jpeg_encode(&image, 0, &bytes, &len, &err) == SDXS_ERR_INVALID &&
              strcmp(err.param, "quality") == 0 && bytes == NULL && len == 0,
          "quality 0: %s", err.message);
    CHECK(sdxs_jpeg_encode(&image, 101, &bytes, &len, &err) == SDXS_ERR_INVALID &&
              strcmp(err.param, "quality") == 0 && strstr(err.message, "1..100"),
          "quality 101: %s", err.message);
    CHECK(sdxs_jpeg_encode(&none, 50, &bytes, &len, &err) == SDXS_ERR_INVALID, "no image");
    CHECK(sdxs_png_encode(NULL, NULL, &bytes, &len, &err) == SDXS_ERR_INVALID, "NULL image");
    wide.width = 0;
    CHECK(sdxs_png_encode(&wide, NULL, &bytes, &len, &err) == SDXS_ERR_INVALID, "width 0");
    wide.width = 9000;
    CHECK(sdxs_png_encode(&wide, NULL, &bytes, &len, &err) == SDXS_ERR_INVALID &&
              strstr(err.message, "1..8192"),
          "width 9000: %s", err.message);
    CHECK(sdxs_png_encode(&image, bad_key, &bytes, &len, &err) == SDXS_ERR_INVALID &&
              strcmp(err.param, "text") == 0,
          "double space key: %s", err.message);
    CHECK(sdxs_png_encode(&image, no_value, &bytes, &len, &err) == SDXS_ERR_INVALID,
          "key without value");
    CHECK(sdxs_png_encode(&image, bad_utf8, &bytes, &len, &err) == SDXS_ERR_INVALID &&
              strstr(err.message, "UTF-8"),
          "Latin-1 value: %s", err.message);
    CHECK(sdxs_png_encode(&image, good, &bytes, &len, &err) == SDXS_OK, "%s", err.message);
    CHECK(contains(bytes, len, "tEXtprompt") && contains(bytes, len, "iTXtComment"),
          "text chunks missing");
    free(bytes);
    sdxs_image_free(&image);
    sdxs_image_free(&image); /* freeing twice is harmless: the struct was zeroed */
    sdxs_image_free(NULL);
}

static void test_resize_properties(void)
{
    static const int sizes[][4] = {{1, 1, 1, 1}, {1, 1, 9, 4}, {30, 20, 7, 3}, {5, 5, 64, 64},
                                   {100, 3, 3, 100}};
    sdxs_image src, dst;
    sdxs_error err;

    /* A flat picture stays flat: the weights of every output sum to one. */
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        for (int value = 0; value <= 255; value += 85) {
            sdxs_status st = sdxs_image_alloc(&src, sizes[i][0], sizes[i][1], "src", &err);
            CHECK(st == SDXS_OK, "%s", err.message);
            memset(src.rgb, value, (size_t)src.width * (size_t)src.height * 3);
            st = sdxs_image_resize(&src, sizes[i][2], sizes[i][3], &dst, &err);
            CHECK(st == SDXS_OK && dst.width == sizes[i][2] && dst.height == sizes[i][3],
                  "resize: %s", err.message);
            for (size_t k = 0; st == SDXS_OK && k < (size_t)dst.width * dst.height * 3; k++)
                if (dst.rgb[k] != value) {
                    CHECK(0, "flat %d became %d at %zu (%dx%d)", value, dst.rgb[k], k, dst.width,
                          dst.height);
                    break;
                }
            sdxs_image_free(&dst);
            sdxs_image_free(&src);
        }
    }
    src = picture(8, 8);
    CHECK(sdxs_image_resize(&src, 0, 8, &dst, &err) == SDXS_ERR_INVALID &&
              strcmp(err.param, "width") == 0 && dst.rgb == NULL,
          "width 0: %s", err.message);
    CHECK(sdxs_image_resize(&src, 8, 8193, &dst, &err) == SDXS_ERR_INVALID &&
              strcmp(err.param, "height") == 0,
          "height 8193: %s", err.message);
    CHECK(sdxs_image_resize(NULL, 8, 8, &dst, &err) == SDXS_ERR_INVALID, "NULL source");
    CHECK(sdxs_image_resize(&src, 8, 8, &dst, &err) == SDXS_OK &&
              memcmp(src.rgb, dst.rgb, 8 * 8 * 3) == 0,
          "same size is a copy");
    sdxs_image_free(&dst);
    sdxs_image_free(&src);
}

static void test_canny_step(void)
{
    /* A vertical step from black to white between columns 9 and 10: both columns have the
     * largest gradient; OpenCV's tie rule (strictly above the left neighbour, at least the right
     * one) keeps column 9 alone. */
    sdxs_image src, edges;
    sdxs_error err;
    sdxs_status st = sdxs_image_alloc(&src, 20, 12, "src", &err);
    CHECK(st == SDXS_OK, "%s", err.message);
    for (int y = 0; y < 12; y++)
        for (int x = 0; x < 20; x++)
            memset(src.rgb + ((size_t)y * 20 + (size_t)x) * 3, x < 10 ? 0 : 255, 3);
    st = sdxs_canny(&src, SDXS_CANNY_LOW, SDXS_CANNY_HIGH, &edges, &err);
    CHECK(st == SDXS_OK, "%s", err.message);
    for (int y = 0; st == SDXS_OK && y < 12; y++)
        for (int x = 0; x < 20; x++) {
            const uint8_t *p = edges.rgb + ((size_t)y * 20 + (size_t)x) * 3;
            int want = x == 9 ? 255 : 0;
            CHECK(p[0] == want && p[1] == want && p[2] == want, "(%d, %d) is %d", x, y, p[0]);
        }
    sdxs_image_free(&edges);

    /* Thresholds above the step's gradient (4 * 255 = 1020) find nothing. */
    st = sdxs_canny(&src, 1020, 1021, &edges, &err);
    for (size_t k = 0; st == SDXS_OK && k < 20 * 12 * 3; k++)
        CHECK(edges.rgb[k] == 0, "edge at %zu above the gradient", k);
    sdxs_image_free(&edges);

    CHECK(sdxs_canny(&src, NAN, 10, &edges, &err) == SDXS_ERR_INVALID &&
              strcmp(err.param, "canny_low") == 0,
          "NaN low: %s", err.message);
    CHECK(sdxs_canny(&src, 10, 1e9, &edges, &err) == SDXS_ERR_INVALID &&
              strcmp(err.param, "canny_high") == 0,
          "huge high: %s", err.message);
    CHECK(sdxs_canny(NULL, 10, 20, &edges, &err) == SDXS_ERR_INVALID, "NULL source");
    sdxs_image_free(&src);
}

static void test_control_prepare(void)
{
    sdxs_image src, out;
    sdxs_error err;
    sdxs_status st = sdxs_image_alloc(&src, 10, 6, "src", &err);
    CHECK(st == SDXS_OK, "%s", err.message);
    memset(src.rgb, 255, 10 * 6 * 3);
    st = sdxs_control_prepare(&src, SDXS_CONTROL_SKETCH, 16, 8, &out, &err);
    CHECK(st == SDXS_OK && out.width == 16 && out.height == 8, "sketch: %s", err.message);
    for (size_t k = 0; st == SDXS_OK && k < 16 * 8 * 3; k++)
        CHECK(out.rgb[k] == 0, "white paper is not black at %zu", k);
    sdxs_image_free(&out);
    st = sdxs_control_prepare(&src, SDXS_CONTROL_CANNY, 16, 8, &out, &err);
    CHECK(st == SDXS_OK && out.width == 16, "canny: %s", err.message);
    sdxs_image_free(&out);
    CHECK(sdxs_control_prepare(&src, (sdxs_control_mode)7, 16, 8, &out, &err) ==
                  SDXS_ERR_INVALID &&
              strcmp(err.param, "control_mode") == 0,
          "mode 7: %s", err.message);
    CHECK(sdxs_control_prepare(&src, SDXS_CONTROL_NONE, 16, -8, &out, &err) == SDXS_ERR_INVALID &&
              strcmp(err.param, "height") == 0,
          "height -8: %s", err.message);
    sdxs_image_free(&src);
}

static void test_load_missing(void)
{
    sdxs_image out;
    sdxs_error err;
    CHECK(sdxs_image_load("tests/data/no-such-image.png", NULL, &out, &err) == SDXS_ERR_MODEL &&
              strstr(err.message, "no-such-image.png"),
          "missing file: %s", err.message);
}

int main(void)
{
    test_empty_and_random();
    test_png_truncated();
    test_png_corrupt();
    test_png_huge_header();
    test_jpeg_truncated_and_huge();
    test_jpeg_kinds();
    test_jpeg_corrupt();
    test_exif();
    test_round_trips_odd_sizes();
    test_encoder_arguments();
    test_resize_properties();
    test_canny_step();
    test_control_prepare();
    test_load_missing();
    if (failures) {
        fprintf(stderr, "test_image: %d failures\n", failures);
        return 1;
    }
    printf("test_image: all passed\n");
    return 0;
}
