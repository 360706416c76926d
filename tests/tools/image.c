/* sdxs-image: drives the image module for tests/test_image.py (decode, resize, canny, control
 * preparation, PNG and JPEG encoding, each from files to files) and prints a benchmark table of
 * the codecs and the resize (`bench`). Errors print "error: <param>: <message>" on stderr and
 * exit with the sdxs_status value.
 */
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "engine/canny.h"
#include "engine/image.h"
#include "engine/util.h"
#include "sdxs.h"

static int report(sdxs_status st, const sdxs_error *err)
{
    if (st != SDXS_OK)
        fprintf(stderr, "error: %s: %s\n", err->param, err->message);
    return (int)st;
}

/* Writes a binary PPM (P6): the exact pixels, readable by any image library. */
static int write_ppm(const char *path, const sdxs_image *image)
{
    FILE *f = fopen(path, "wb");
    size_t n = (size_t)image->width * (size_t)image->height * 3;
    int ok;
    if (!f) {
        fprintf(stderr, "error: %s: cannot write\n", path);
        return SDXS_ERR_RUNTIME;
    }
    fprintf(f, "P6\n%d %d\n255\n", image->width, image->height);
    ok = fwrite(image->rgb, 1, n, f) == n;
    ok = (fclose(f) == 0) && ok;
    if (!ok) {
        fprintf(stderr, "error: %s: short write\n", path);
        return SDXS_ERR_RUNTIME;
    }
    return 0;
}

static int write_bytes(const char *path, const uint8_t *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    int ok;
    if (!f) {
        fprintf(stderr, "error: %s: cannot write\n", path);
        return SDXS_ERR_RUNTIME;
    }
    ok = fwrite(data, 1, len, f) == len;
    ok = (fclose(f) == 0) && ok;
    return ok ? 0 : SDXS_ERR_RUNTIME;
}

static int usage(void)
{
    fprintf(stderr,
            "usage: sdxs-image decode IN OUT.ppm [MAX_WIDTH MAX_HEIGHT MAX_PIXELS]\n"
            "       sdxs-image resize IN WIDTH HEIGHT OUT.ppm\n"
            "       sdxs-image canny IN LOW HIGH OUT.ppm grey|rgb\n"
            "       sdxs-image control IN none|sketch|canny WIDTH HEIGHT OUT.ppm\n"
            "       sdxs-image png IN OUT.png [KEY VALUE]...\n"
            "       sdxs-image jpeg IN QUALITY OUT.jpg\n"
            "       sdxs-image bench [SIDE | FILE]\n");
    return 2;
}

static int load(const char *path, sdxs_image *image)
{
    sdxs_error err;
    sdxs_status st = sdxs_image_load(path, NULL, image, &err);
    return report(st, &err);
}

/* ---- bench ---- */

/* A photograph-like test picture: smooth gradients, a few discs, fine noise. */
static void bench_picture(sdxs_image *image)
{
    uint32_t seed = 12345;
    for (int y = 0; y < image->height; y++) {
        for (int x = 0; x < image->width; x++) {
            uint8_t *p = image->rgb + ((size_t)y * (size_t)image->width + (size_t)x) * 3;
            int dx = x - image->width / 3, dy = y - image->height / 2;
            int disc = dx * dx + dy * dy < image->width * image->width / 16 ? 60 : 0;
            for (int c = 0; c < 3; c++) {
                int v;
                seed = seed * 1664525u + 1013904223u;
                v = (x * (c + 1) * 255) / (image->width * 3) + (y * 160) / image->height + disc +
                    (int)(seed >> 28) - 8;
                p[c] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
            }
        }
    }
}

/* libpng with its default zlib level, strategy and adaptive filters: what the chosen settings of
 * sdxs_png_encode are measured against. Writes to a discarding sink and returns the size. */
typedef struct bench_counter {
    size_t bytes;
} bench_counter;

static void bench_count(png_structp png, png_bytep data, size_t n)
{
    (void)data;
    ((bench_counter *)png_get_io_ptr(png))->bytes += n;
}

static void bench_flush(png_structp png) { (void)png; }

static size_t bench_png_with(const sdxs_image *image, int level, int strategy, int filters)
{
    bench_counter counter = {0};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info || setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        return 0;
    }
    png_set_write_fn(png, &counter, bench_count, bench_flush);
    if (level >= 0)
        png_set_compression_level(png, level);
    if (strategy >= 0)
        png_set_compression_strategy(png, strategy);
    if (filters >= 0)
        png_set_filter(png, PNG_FILTER_TYPE_BASE, filters);
    png_set_IHDR(png, info, (png_uint_32)image->width, (png_uint_32)image->height, 8,
                 PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_BASE,
                 PNG_FILTER_TYPE_BASE);
    png_write_info(png, info);
    for (int y = 0; y < image->height; y++)
        png_write_row(png, image->rgb + (size_t)y * (size_t)image->width * 3);
    png_write_end(png, info);
    png_destroy_write_struct(&png, &info);
    return counter.bytes;
}

#define BENCH_REPEATS 5

static double bench_min(double a, double b) { return a < b ? a : b; }

static int bench(const char *what)
{
    static const struct {
        const char *name;
        int level, strategy, filters;
    } variants[] = {
        {"libpng defaults (level 6, adaptive)", -1, -1, -1},
        {"level 1, adaptive filters", 1, -1, -1},
        {"level 1, Z_FILTERED, SUB", 1, Z_FILTERED, PNG_FILTER_SUB},
        {"level 1, Z_RLE, SUB", 1, Z_RLE, PNG_FILTER_SUB},
        {"level 1, Z_RLE, UP", 1, Z_RLE, PNG_FILTER_UP},
        {"level 1, Z_RLE, PAETH", 1, Z_RLE, PNG_FILTER_PAETH},
        {"level 1, Z_HUFFMAN_ONLY, UP", 1, Z_HUFFMAN_ONLY, PNG_FILTER_UP},
        {"level 1, Z_HUFFMAN_ONLY, PAETH", 1, Z_HUFFMAN_ONLY, PNG_FILTER_PAETH},
    };
    sdxs_image image, out;
    sdxs_error err;
    uint8_t *bytes;
    size_t len;
    double t0, best;
    sdxs_status st;

    /* A number is the side of the generated picture; anything else an image file. */
    if (strspn(what, "0123456789") == strlen(what)) {
        st = sdxs_image_alloc(&image, atoi(what), atoi(what), "side", &err);
        if (st != SDXS_OK)
            return report(st, &err);
        bench_picture(&image);
    } else {
        int rc = load(what, &image);
        if (rc != 0)
            return rc;
    }
    printf("| operation (%dx%d, best of %d) | ms | bytes |\n|---|---|---|\n", image.width,
           image.height, BENCH_REPEATS);

    for (size_t v = 0; v < SDXS_ARRAY_LEN(variants); v++) {
        size_t got = 0;
        best = 1e30;
        for (int r = 0; r < BENCH_REPEATS; r++) {
            t0 = sdxs_now_ms();
            got = bench_png_with(&image, variants[v].level, variants[v].strategy,
                                 variants[v].filters);
            best = bench_min(best, sdxs_now_ms() - t0);
        }
        printf("| libpng: %s | %.2f | %zu |\n", variants[v].name, best, got);
    }

    best = 1e30;
    len = 0;
    for (int r = 0; r < BENCH_REPEATS; r++) {
        t0 = sdxs_now_ms();
        st = sdxs_png_encode(&image, NULL, &bytes, &len, &err);
        if (st != SDXS_OK)
            return report(st, &err);
        best = bench_min(best, sdxs_now_ms() - t0);
        if (r + 1 < BENCH_REPEATS)
            free(bytes);
    }
    printf("| sdxs_png_encode | %.2f | %zu |\n", best, len);
    {
        uint8_t *stored;
        size_t stored_len = 0;
        double fastest = 1e30;
        for (int r = 0; r < BENCH_REPEATS; r++) {
            t0 = sdxs_now_ms();
            st = sdxs_png_encode_mode(&image, NULL, SDXS_PNG_STORED, &stored, &stored_len, &err);
            if (st != SDXS_OK)
                return report(st, &err);
            fastest = bench_min(fastest, sdxs_now_ms() - t0);
            free(stored);
        }
        printf("| sdxs_png_encode_mode (stored) | %.2f | %zu |\n", fastest, stored_len);
    }
    best = 1e30;
    for (int r = 0; r < BENCH_REPEATS; r++) {
        t0 = sdxs_now_ms();
        st = sdxs_image_decode(bytes, len, NULL, &out, &err);
        if (st != SDXS_OK)
            return report(st, &err);
        best = bench_min(best, sdxs_now_ms() - t0);
        sdxs_image_free(&out);
    }
    printf("| sdxs_image_decode (PNG) | %.2f | %zu |\n", best, len);
    free(bytes);

    best = 1e30;
    for (int r = 0; r < BENCH_REPEATS; r++) {
        t0 = sdxs_now_ms();
        st = sdxs_jpeg_encode(&image, 90, &bytes, &len, &err);
        if (st != SDXS_OK)
            return report(st, &err);
        best = bench_min(best, sdxs_now_ms() - t0);
        if (r + 1 < BENCH_REPEATS)
            free(bytes);
    }
    printf("| sdxs_jpeg_encode (quality 90) | %.2f | %zu |\n", best, len);
    best = 1e30;
    for (int r = 0; r < BENCH_REPEATS; r++) {
        t0 = sdxs_now_ms();
        st = sdxs_image_decode(bytes, len, NULL, &out, &err);
        if (st != SDXS_OK)
            return report(st, &err);
        best = bench_min(best, sdxs_now_ms() - t0);
        sdxs_image_free(&out);
    }
    printf("| sdxs_image_decode (JPEG) | %.2f | %zu |\n", best, len);
    free(bytes);

    {
        static const int sizes[][2] = {{640, 480}, {256, 256}, {1024, 1024}};
        for (size_t s = 0; s < SDXS_ARRAY_LEN(sizes); s++) {
            best = 1e30;
            for (int r = 0; r < BENCH_REPEATS; r++) {
                t0 = sdxs_now_ms();
                st = sdxs_image_resize(&image, sizes[s][0], sizes[s][1], &out, &err);
                if (st != SDXS_OK)
                    return report(st, &err);
                best = bench_min(best, sdxs_now_ms() - t0);
                sdxs_image_free(&out);
            }
            printf("| sdxs_image_resize to %dx%d | %.2f | |\n", sizes[s][0], sizes[s][1], best);
        }
    }
    best = 1e30;
    for (int r = 0; r < BENCH_REPEATS; r++) {
        t0 = sdxs_now_ms();
        st = sdxs_canny(&image, SDXS_CANNY_LOW, SDXS_CANNY_HIGH, &out, &err);
        if (st != SDXS_OK)
            return report(st, &err);
        best = bench_min(best, sdxs_now_ms() - t0);
        sdxs_image_free(&out);
    }
    printf("| sdxs_canny | %.2f | |\n", best);
    best = 1e30;
    for (int r = 0; r < BENCH_REPEATS; r++) {
        t0 = sdxs_now_ms();
        st = sdxs_canny_rgb(&image, SDXS_CANNY_LOW, SDXS_CANNY_HIGH, &out, &err);
        if (st != SDXS_OK)
            return report(st, &err);
        best = bench_min(best, sdxs_now_ms() - t0);
        sdxs_image_free(&out);
    }
    printf("| sdxs_canny_rgb | %.2f | |\n", best);
    sdxs_image_free(&image);
    return 0;
}

/* ---- commands ---- */

static int cmd_decode(int argc, char **argv)
{
    sdxs_image_limits limits = {0};
    sdxs_image image;
    sdxs_error err;
    sdxs_status st;
    int rc;
    if (argc != 4 && argc != 7)
        return usage();
    if (argc == 7) {
        limits.max_width = atoi(argv[4]);
        limits.max_height = atoi(argv[5]);
        limits.max_pixels = strtoull(argv[6], NULL, 10);
    }
    st = sdxs_image_load(argv[2], &limits, &image, &err);
    if (st != SDXS_OK)
        return report(st, &err);
    rc = write_ppm(argv[3], &image);
    sdxs_image_free(&image);
    return rc;
}

static int cmd_resize(int argc, char **argv)
{
    sdxs_image src, dst;
    sdxs_error err;
    sdxs_status st;
    int rc;
    if (argc != 6)
        return usage();
    if ((rc = load(argv[2], &src)) != 0)
        return rc;
    st = sdxs_image_resize(&src, atoi(argv[3]), atoi(argv[4]), &dst, &err);
    sdxs_image_free(&src);
    if (st != SDXS_OK)
        return report(st, &err);
    rc = write_ppm(argv[5], &dst);
    sdxs_image_free(&dst);
    return rc;
}

static int cmd_canny(int argc, char **argv)
{
    sdxs_image src, dst;
    sdxs_error err;
    sdxs_status st;
    bool colour;
    int rc;
    if (argc != 7 || (strcmp(argv[6], "grey") != 0 && strcmp(argv[6], "rgb") != 0))
        return usage();
    colour = strcmp(argv[6], "rgb") == 0;
    if ((rc = load(argv[2], &src)) != 0)
        return rc;
    if (colour)
        st = sdxs_canny_rgb(&src, atof(argv[3]), atof(argv[4]), &dst, &err);
    else
        st = sdxs_canny(&src, atof(argv[3]), atof(argv[4]), &dst, &err);
    sdxs_image_free(&src);
    if (st != SDXS_OK)
        return report(st, &err);
    rc = write_ppm(argv[5], &dst);
    sdxs_image_free(&dst);
    return rc;
}

static int cmd_control(int argc, char **argv)
{
    sdxs_image src, dst;
    sdxs_error err;
    sdxs_status st;
    sdxs_control_mode mode;
    int rc;
    if (argc != 7)
        return usage();
    if (strcmp(argv[3], "none") == 0)
        mode = SDXS_CONTROL_NONE;
    else if (strcmp(argv[3], "sketch") == 0)
        mode = SDXS_CONTROL_SKETCH;
    else if (strcmp(argv[3], "canny") == 0)
        mode = SDXS_CONTROL_CANNY;
    else
        return usage();
    if ((rc = load(argv[2], &src)) != 0)
        return rc;
    st = sdxs_control_prepare(&src, mode, atoi(argv[4]), atoi(argv[5]), &dst, &err);
    sdxs_image_free(&src);
    if (st != SDXS_OK)
        return report(st, &err);
    rc = write_ppm(argv[6], &dst);
    sdxs_image_free(&dst);
    return rc;
}

static int cmd_png(int argc, char **argv)
{
    const char *text[2 * SDXS_PNG_MAX_TEXT_PAIRS + 4];
    sdxs_image src;
    sdxs_error err;
    sdxs_status st;
    uint8_t *bytes;
    size_t len;
    int rc, pairs = (argc - 4) / 2;
    if (argc < 4 || (argc - 4) % 2 != 0 || pairs > SDXS_PNG_MAX_TEXT_PAIRS + 1)
        return usage();
    for (int i = 0; i < 2 * pairs; i++)
        text[i] = argv[4 + i];
    text[2 * pairs] = NULL;
    text[2 * pairs + 1] = NULL;
    if ((rc = load(argv[2], &src)) != 0)
        return rc;
    st = sdxs_png_encode(&src, text, &bytes, &len, &err);
    sdxs_image_free(&src);
    if (st != SDXS_OK)
        return report(st, &err);
    rc = write_bytes(argv[3], bytes, len);
    free(bytes);
    return rc;
}

static int cmd_jpeg(int argc, char **argv)
{
    sdxs_image src;
    sdxs_error err;
    sdxs_status st;
    uint8_t *bytes;
    size_t len;
    int rc;
    if (argc != 5)
        return usage();
    if ((rc = load(argv[2], &src)) != 0)
        return rc;
    st = sdxs_jpeg_encode(&src, atoi(argv[3]), &bytes, &len, &err);
    sdxs_image_free(&src);
    if (st != SDXS_OK)
        return report(st, &err);
    rc = write_bytes(argv[4], bytes, len);
    free(bytes);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage();
    if (strcmp(argv[1], "decode") == 0)
        return cmd_decode(argc, argv);
    if (strcmp(argv[1], "resize") == 0)
        return cmd_resize(argc, argv);
    if (strcmp(argv[1], "canny") == 0)
        return cmd_canny(argc, argv);
    if (strcmp(argv[1], "control") == 0)
        return cmd_control(argc, argv);
    if (strcmp(argv[1], "png") == 0)
        return cmd_png(argc, argv);
    if (strcmp(argv[1], "jpeg") == 0)
        return cmd_jpeg(argc, argv);
    if (strcmp(argv[1], "bench") == 0)
        return bench(argc > 2 ? argv[2] : "512");
    return usage();
}
