/* image.c: the image codecs (PNG through libpng, JPEG through libjpeg-turbo) and Pillow's Lanczos
 * resize. Every image becomes 8-bit RGB (H, W, 3); decoders check the declared size against the
 * caller's limits before any pixel memory exists, and every libpng/libjpeg failure comes back as an
 * sdxs_status through setjmp/longjmp (libjpeg's default handler would call exit()).
 *
 * Letters: W, H are an image's width and height in pixels; C is the channels of a decoder's rows.
 */
#include "image.h"

#include <math.h>
#include <setjmp.h>
#include <stdio.h> /* before jpeglib.h, which uses FILE */
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <jerror.h>
#include <png.h>
#include <zlib.h>

#include "util.h"

/* ---- images ---- */

void sdxs_image_free(sdxs_image *image)
{
    if (!image)
        return;
    free(image->rgb);
    memset(image, 0, sizeof(*image));
}

/* Checks a size against the default limits; wparam and hparam name the fields at fault. */
static sdxs_status check_size(int width, int height, const char *what, const char *wparam,
                              const char *hparam, sdxs_error *err)
{
    if (width < 1 || width > SDXS_IMAGE_MAX_SIDE)
        return sdxs_fail(err, SDXS_ERR_INVALID, wparam, "%s: width %d is outside 1..%d", what,
                         width, SDXS_IMAGE_MAX_SIDE);
    if (height < 1 || height > SDXS_IMAGE_MAX_SIDE)
        return sdxs_fail(err, SDXS_ERR_INVALID, hparam, "%s: height %d is outside 1..%d", what,
                         height, SDXS_IMAGE_MAX_SIDE);
    if ((uint64_t)width * (uint64_t)height > SDXS_IMAGE_MAX_PIXELS)
        return sdxs_fail(err, SDXS_ERR_INVALID, wparam,
                         "%s: %d x %d pixels is over the limit of %llu pixels", what, width,
                         height, (unsigned long long)SDXS_IMAGE_MAX_PIXELS);
    return SDXS_OK;
}

sdxs_status sdxs_image_alloc(sdxs_image *image, int width, int height, const char *param,
                             sdxs_error *err)
{
    sdxs_status st;

    memset(image, 0, sizeof(*image));
    st = check_size(width, height, param, param, param, err);
    if (st != SDXS_OK)
        return st;
    /* (H, W, 3) uint8; the size fits: at most 64 Mi pixels. */
    image->rgb = sdxs_alloc((size_t)width * (size_t)height * 3, err, "image pixels");
    if (!image->rgb)
        return SDXS_ERR_RUNTIME;
    image->width = width;
    image->height = height;
    return SDXS_OK;
}

sdxs_status sdxs_image_check(const sdxs_image *image, const char *param, sdxs_error *err)
{
    if (!image || !image->rgb)
        return sdxs_fail(err, SDXS_ERR_INVALID, param, "%s: no image given", param);
    return check_size(image->width, image->height, param, param, param, err);
}

/* ---- limits shared by both decoders ---- */

static sdxs_status limits_resolve(const sdxs_image_limits *in, sdxs_image_limits *out,
                                  sdxs_error *err)
{
    out->max_width = in && in->max_width ? in->max_width : SDXS_IMAGE_MAX_SIDE;
    out->max_height = in && in->max_height ? in->max_height : SDXS_IMAGE_MAX_SIDE;
    out->max_pixels = in && in->max_pixels ? in->max_pixels : SDXS_IMAGE_MAX_PIXELS;
    if (out->max_width < 0 || out->max_height < 0)
        return sdxs_fail(err, SDXS_ERR_INVALID, "limits", "image limits must not be negative");
    /* The caller may lower the limits, never raise them past what the rest of the engine
     * (sdxs_image_check) accepts. */
    if (out->max_width > SDXS_IMAGE_MAX_SIDE)
        out->max_width = SDXS_IMAGE_MAX_SIDE;
    if (out->max_height > SDXS_IMAGE_MAX_SIDE)
        out->max_height = SDXS_IMAGE_MAX_SIDE;
    if (out->max_pixels > SDXS_IMAGE_MAX_PIXELS)
        out->max_pixels = SDXS_IMAGE_MAX_PIXELS;
    return SDXS_OK;
}

/* Checks the size an image header declares, before anything of that size is allocated. */
static sdxs_status limits_check(const sdxs_image_limits *lim, const char *format,
                                unsigned long width, unsigned long height, sdxs_error *err)
{
    if (width == 0 || height == 0)
        return sdxs_fail(err, SDXS_ERR_MODEL, "image", "bad input file: the %s declares %lu x %lu "
                         "pixels", format, width, height);
    if (width > (unsigned long)lim->max_width)
        return sdxs_fail(err, SDXS_ERR_MODEL, "image", "bad input file: the %s is %lu pixels "
                         "wide, over the limit of %d (max_width)", format, width, lim->max_width);
    if (height > (unsigned long)lim->max_height)
        return sdxs_fail(err, SDXS_ERR_MODEL, "image", "bad input file: the %s is %lu pixels "
                         "high, over the limit of %d (max_height)", format, height,
                         lim->max_height);
    if ((uint64_t)width * (uint64_t)height > lim->max_pixels)
        return sdxs_fail(err, SDXS_ERR_MODEL, "image", "bad input file: the %s has %lu x %lu "
                         "pixels, over the limit of %llu (max_pixels)", format, width, height,
                         (unsigned long long)lim->max_pixels);
    return SDXS_OK;
}

/* Composites one channel value c with alpha a on white, rounded to nearest:
 * (c * a + 255 * (255 - a)) / 255. The numerator is an integer and 255 is odd, so no value is
 * ever half-way and adding 127 before the division rounds exactly. */
static inline uint8_t composite_on_white(unsigned c, unsigned a)
{
    return (uint8_t)((c * a + 255u * (255u - a) + 127u) / 255u);
}

/* ---- EXIF orientation ----
 *
 * Cameras store pictures as the sensor saw them and record how to turn them in the EXIF
 * orientation tag (0x0112): 1 as stored, 2 mirrored, 3 turned 180 degrees, 4 flipped, 5
 * transposed, 6 to be turned 90 degrees clockwise, 7 transversed, 8 to be turned 90 degrees
 * anticlockwise. The decoders apply it, as diffusers' load_image does with
 * PIL.ImageOps.exif_transpose, so a phone photograph comes out upright.
 */

static uint32_t exif_get(const uint8_t *p, int bytes, bool little)
{
    uint32_t v = 0;
    for (int i = 0; i < bytes; i++)
        v |= (uint32_t)p[little ? i : bytes - 1 - i] << (8 * i);
    return v;
}

/* The orientation in TIFF-structured EXIF data, or 1 when it is absent or unreadable. */
static int exif_orientation(const uint8_t *tiff, size_t n)
{
    bool little;
    uint32_t ifd, count;

    if (n < 8)
        return 1;
    if (tiff[0] == 'I' && tiff[1] == 'I')
        little = true;
    else if (tiff[0] == 'M' && tiff[1] == 'M')
        little = false;
    else
        return 1;
    if (exif_get(tiff + 2, 2, little) != 42)
        return 1;
    ifd = exif_get(tiff + 4, 4, little);
    if (ifd > n - 2)
        return 1;
    count = exif_get(tiff + ifd, 2, little);
    for (uint32_t i = 0; i < count; i++) {
        size_t at = (size_t)ifd + 2 + 12 * (size_t)i;
        uint32_t type, value;
        if (at + 12 > n)
            break;
        if (exif_get(tiff + at, 2, little) != 0x0112)
            continue;
        type = exif_get(tiff + at + 2, 2, little);
        if (type == 3) /* SHORT */
            value = exif_get(tiff + at + 8, 2, little);
        else if (type == 4) /* LONG */
            value = exif_get(tiff + at + 8, 4, little);
        else
            return 1;
        return value >= 1 && value <= 8 ? (int)value : 1;
    }
    return 1;
}

/* Turns *pixels (H, W, 3) upright for an orientation of 2..8 (a new buffer replaces the old one;
 * width and height swap for 5..8), then checks the turned size against the limits. */
static sdxs_status orient_apply(uint8_t **pixels, int *width, int *height, int orientation,
                                const sdxs_image_limits *lim, sdxs_error *err)
{
    int w = *width, h = *height, ow = orientation >= 5 ? h : w, oh = orientation >= 5 ? w : h;
    uint8_t *turned;
    sdxs_status st;

    if (orientation <= 1)
        return SDXS_OK;
    st = limits_check(lim, "turned image", (unsigned long)ow, (unsigned long)oh, err);
    if (st != SDXS_OK)
        return st;
    turned = sdxs_alloc((size_t)w * (size_t)h * 3, err, "turned pixels"); /* (oh, ow, 3) */
    if (!turned)
        return SDXS_ERR_RUNTIME;
    for (int y = 0; y < oh; y++) {
        for (int x = 0; x < ow; x++) {
            int sx, sy; /* where the pixel (x, y) of the upright picture is stored */
            switch (orientation) {
            case 2: sx = w - 1 - x; sy = y; break;
            case 3: sx = w - 1 - x; sy = h - 1 - y; break;
            case 4: sx = x; sy = h - 1 - y; break;
            case 5: sx = y; sy = x; break;
            case 6: sx = y; sy = h - 1 - x; break;
            case 7: sx = w - 1 - y; sy = h - 1 - x; break;
            default: sx = w - 1 - y; sy = x; break; /* 8 */
            }
            memcpy(turned + ((size_t)y * (size_t)ow + (size_t)x) * 3,
                   *pixels + ((size_t)sy * (size_t)w + (size_t)sx) * 3, 3);
        }
    }
    free(*pixels);
    *pixels = turned;
    *width = ow;
    *height = oh;
    return SDXS_OK;
}

/* ---- PNG decoding ---- */

/* libpng reports errors to png_on_error, which longjmps back to png_*_run with the message;
 * warnings are only logged. */
typedef struct png_fault {
    char message[200];
} png_fault;

static void png_on_error(png_structp png, png_const_charp msg)
{
    png_fault *fault = png_get_error_ptr(png);
    snprintf(fault->message, sizeof(fault->message), "%s", msg);
    png_longjmp(png, 1);
}

static void png_on_warning(png_structp png, png_const_charp msg)
{
    (void)png;
    SDXS_DEBUG("image", "libpng warning: %s", msg);
}

typedef struct png_reader {
    png_fault fault;
    const uint8_t *bytes;
    size_t len, pos;
    sdxs_image_limits limits;
    sdxs_error *err;
    int width, height, channels;
    int orientation; /* EXIF, 1..8 */
    bool complete;   /* every row is read: what fails after this is ignored */
    uint8_t *pixels; /* (H, W, C) uint8, C = 3 or 4 */
    png_bytep *rows; /* (H) pointers into pixels */
} png_reader;

static void png_on_read(png_structp png, png_bytep data, size_t n)
{
    png_reader *r = png_get_io_ptr(png);
    if (n > r->len - r->pos)
        png_error(png, "the file is truncated");
    memcpy(data, r->bytes + r->pos, n);
    r->pos += n;
}

static unsigned long read_be32(const uint8_t *p)
{
    return (unsigned long)p[0] << 24 | (unsigned long)p[1] << 16 | (unsigned long)p[2] << 8 | p[3];
}

static void png_decode_orientation(png_structp png, png_infop info, png_reader *r)
{
    png_uint_32 n = 0;
    png_bytep exif = NULL;
    if (png_get_valid(png, info, PNG_INFO_eXIf) && png_get_eXIf_1(png, info, &n, &exif) && exif)
        r->orientation = exif_orientation(exif, n);
}

/* Everything that can longjmp happens in here, and it changes only *r: the caller's frame holds
 * the state that the cleanup needs. */
static sdxs_status png_decode_run(png_structp png, png_infop info, png_reader *r)
{
    png_uint_32 width, height;
    int depth, color, interlace;
    size_t bytes;
    sdxs_status st;

    if (setjmp(png_jmpbuf(png))) {
        if (r->complete) {
            SDXS_DEBUG("image", "PNG: after the image data: %s", r->fault.message);
            return SDXS_OK;
        }
        return sdxs_fail(r->err, SDXS_ERR_MODEL, "image", "bad input file: PNG: %s",
                         r->fault.message);
    }

    /* Step 1: the header, and the size check before any pixel memory (the IHDR fields are
     * checked on the bytes first, so that a huge declared size is refused even when the file
     * ends right after it). */
    if (r->len >= 24 && memcmp(r->bytes + 12, "IHDR", 4) == 0) {
        st = limits_check(&r->limits, "PNG", read_be32(r->bytes + 16), read_be32(r->bytes + 20),
                          r->err);
        if (st != SDXS_OK)
            return st;
    }
    png_set_read_fn(png, r, png_on_read);
    png_set_chunk_malloc_max(png, (png_alloc_size_t)8 << 20);
    png_read_info(png, info);
    png_decode_orientation(png, info, r);
    png_get_IHDR(png, info, &width, &height, &depth, &color, &interlace, NULL, NULL);
    st = limits_check(&r->limits, "PNG", width, height, r->err);
    if (st != SDXS_OK)
        return st;

    /* Step 2: transforms to 8-bit RGB or RGBA. 16-bit samples keep their high byte, as Pillow
     * does for RGB;16B; no gamma correction is applied (neither does Pillow). */
    if (color == PNG_COLOR_TYPE_PALETTE)
        png_set_palette_to_rgb(png);
    if (color == PNG_COLOR_TYPE_GRAY && depth < 8)
        png_set_expand_gray_1_2_4_to_8(png);
    if (png_get_valid(png, info, PNG_INFO_tRNS))
        png_set_tRNS_to_alpha(png);
    if (depth == 16)
        png_set_strip_16(png);
    if (color == PNG_COLOR_TYPE_GRAY || color == PNG_COLOR_TYPE_GRAY_ALPHA)
        png_set_gray_to_rgb(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    r->channels = png_get_channels(png, info);
    if ((r->channels != 3 && r->channels != 4) || png_get_bit_depth(png, info) != 8 ||
        png_get_rowbytes(png, info) != (size_t)width * (size_t)r->channels)
        return sdxs_fail(r->err, SDXS_ERR_MODEL, "image", "bad input file: PNG colour type %d "
                         "at %d bits did not expand to 8-bit RGB", color, depth);

    /* Step 3: all rows at once (interlaced images need the whole frame). */
    r->width = (int)width;
    r->height = (int)height;
    bytes = (size_t)width * (size_t)height * (size_t)r->channels;
    r->pixels = sdxs_alloc(bytes, r->err, "PNG pixels");
    r->rows = sdxs_calloc(height, sizeof(*r->rows), r->err, "PNG rows");
    if (!r->pixels || !r->rows)
        return SDXS_ERR_RUNTIME;
    for (png_uint_32 y = 0; y < height; y++)
        r->rows[y] = r->pixels + (size_t)y * width * (size_t)r->channels;
    png_read_image(png, r->rows);

    /* Step 4: the chunks after the image data, for an eXIf chunk there. The picture is whole
     * now, so a file cut off or damaged after its last IDAT is still accepted. */
    r->complete = true;
    png_read_end(png, info);
    png_decode_orientation(png, info, r);
    return SDXS_OK;
}

static sdxs_status png_decode(const uint8_t *bytes, size_t len, const sdxs_image_limits *limits,
                              sdxs_image *out, sdxs_error *err)
{
    png_reader r;
    png_structp png;
    png_infop info;
    sdxs_status st;

    memset(&r, 0, sizeof(r));
    r.orientation = 1;
    r.bytes = bytes;
    r.len = len;
    r.limits = *limits;
    r.err = err;
    png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &r.fault, png_on_error, png_on_warning);
    if (!png)
        return sdxs_fail(err, SDXS_ERR_RUNTIME, NULL, "libpng: cannot create a reader");
    info = png_create_info_struct(png);
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        return sdxs_fail(err, SDXS_ERR_RUNTIME, NULL, "libpng: cannot create an info struct");
    }
    st = png_decode_run(png, info, &r);
    png_destroy_read_struct(&png, &info, NULL);
    free(r.rows);
    if (st != SDXS_OK) {
        free(r.pixels);
        return st;
    }

    /* RGBA rows are composited on white in place: pixel i moves from 4i to 3i, never ahead of
     * what is still to be read. */
    if (r.channels == 4) {
        size_t count = (size_t)r.width * (size_t)r.height;
        uint8_t *shrunk;
        for (size_t i = 0; i < count; i++) {
            const uint8_t *s = r.pixels + 4 * i;
            uint8_t *d = r.pixels + 3 * i;
            unsigned a = s[3];
            uint8_t red = composite_on_white(s[0], a), green = composite_on_white(s[1], a);
            uint8_t blue = composite_on_white(s[2], a);
            d[0] = red;
            d[1] = green;
            d[2] = blue;
        }
        shrunk = realloc(r.pixels, count * 3);
        if (shrunk)
            r.pixels = shrunk;
    }
    st = orient_apply(&r.pixels, &r.width, &r.height, r.orientation, limits, err);
    if (st != SDXS_OK) {
        free(r.pixels);
        return st;
    }
    out->width = r.width;
    out->height = r.height;
    out->rgb = r.pixels;
    return SDXS_OK;
}

/* ---- JPEG decoding ---- */

/* libjpeg's error manager, extended with where to jump: its error_exit would call exit(). */
typedef struct jpeg_fault {
    struct jpeg_error_mgr mgr; /* first: libjpeg hands back cinfo->err */
    jmp_buf jump;
    char message[JMSG_LENGTH_MAX + 64];
} jpeg_fault;

static void jpeg_on_error(j_common_ptr cinfo)
{
    jpeg_fault *fault = (jpeg_fault *)cinfo->err;
    cinfo->err->format_message(cinfo, fault->message);
    longjmp(fault->jump, 1);
}

/* Warnings that mean the entropy-coded data is damaged or cut short are errors here: libjpeg would
 * go on and fill the rest of the picture with grey. Harmless ones (extra bytes before a marker,
 * an unknown JFIF revision, a bad ICC marker) are only logged. */
static bool jpeg_warning_is_corruption(int code)
{
    switch (code) {
    case JWRN_JPEG_EOF:
    case JWRN_HIT_MARKER:
    case JWRN_HUFF_BAD_CODE:
    case JWRN_ARITH_BAD_CODE:
    case JWRN_MUST_RESYNC:
    case JWRN_NOT_SEQUENTIAL:
    case JWRN_BOGUS_PROGRESSION:
        return true;
    default:
        return false;
    }
}

static void jpeg_on_message(j_common_ptr cinfo, int level)
{
    jpeg_fault *fault = (jpeg_fault *)cinfo->err;
    if (level >= 0)
        return; /* trace messages */
    cinfo->err->format_message(cinfo, fault->message);
    if (jpeg_warning_is_corruption(cinfo->err->msg_code))
        longjmp(fault->jump, 1);
    SDXS_DEBUG("image", "libjpeg warning: %s", fault->message);
}

static void jpeg_on_output(j_common_ptr cinfo)
{
    char line[JMSG_LENGTH_MAX];
    cinfo->err->format_message(cinfo, line);
    SDXS_DEBUG("image", "libjpeg: %s", line);
}

static void jpeg_on_progress(j_common_ptr cinfo)
{
    jpeg_fault *fault = (jpeg_fault *)cinfo->err;
    if (cinfo->is_decompressor &&
        ((j_decompress_ptr)cinfo)->input_scan_number > SDXS_JPEG_MAX_SCANS) {
        snprintf(fault->message, sizeof(fault->message),
                 "more than %d scans (the limit for progressive JPEGs)", SDXS_JPEG_MAX_SCANS);
        longjmp(fault->jump, 1);
    }
}

static void jpeg_fault_init(jpeg_fault *fault)
{
    jpeg_std_error(&fault->mgr);
    fault->mgr.error_exit = jpeg_on_error;
    fault->mgr.emit_message = jpeg_on_message;
    fault->mgr.output_message = jpeg_on_output;
    fault->message[0] = '\0';
}

typedef struct jpeg_reader {
    jpeg_fault fault;
    struct jpeg_progress_mgr progress;
    sdxs_image_limits limits;
    sdxs_error *err;
    int width, height;
    int orientation; /* EXIF, 1..8 */
    uint8_t *pixels; /* (H, W, 3) uint8 */
    uint8_t *cmyk;   /* (W, 4) uint8: one CMYK row, only for CMYK/YCCK files */
} jpeg_reader;

/* Pillow reads CMYK JPEGs as Adobe writes them (inverted: raw = 255 - ink) and converts CMYK to
 * RGB as nk - nk * ink / 255 with nk = 255 - black, the product rounded as (t + (t >> 8)) >> 8
 * with t = x * y + 128. The same arithmetic here gives Pillow's pixels. */
static void jpeg_cmyk_row_to_rgb(const uint8_t *cmyk, uint8_t *rgb, int width)
{
    for (int x = 0; x < width; x++) {
        unsigned nk = cmyk[4 * x + 3]; /* 255 - black, as stored inverted */
        for (int c = 0; c < 3; c++) {
            unsigned ink = 255u - cmyk[4 * x + c];
            unsigned t = ink * nk + 128u;
            rgb[3 * x + c] = (uint8_t)(nk - (((t >> 8) + t) >> 8));
        }
    }
}

static sdxs_status jpeg_decode_run(struct jpeg_decompress_struct *cinfo, jpeg_reader *r,
                                   const uint8_t *bytes, size_t len)
{
    bool cmyk;
    sdxs_status st;

    if (setjmp(r->fault.jump))
        return sdxs_fail(r->err, SDXS_ERR_MODEL, "image", "bad input file: JPEG: %s",
                         r->fault.message);

    /* Step 1: the header, and the size check before any pixel memory. */
    jpeg_create_decompress(cinfo);
    /* Coefficient buffers of progressive files are the largest allocation inside libjpeg:
     * 2 bytes per sample, so 8 bytes per pixel covers four full-resolution components. */
    cinfo->mem->max_memory_to_use = (long)(r->limits.max_pixels * 8 + ((uint64_t)16 << 20));
    r->progress.progress_monitor = jpeg_on_progress;
    cinfo->progress = &r->progress;
    jpeg_mem_src(cinfo, bytes, (unsigned long)len);
    jpeg_save_markers(cinfo, JPEG_APP0 + 1, 0xffff);
    jpeg_read_header(cinfo, TRUE);
    for (jpeg_saved_marker_ptr m = cinfo->marker_list; m; m = m->next) {
        if (m->marker == JPEG_APP0 + 1 && m->data_length > 6 &&
            memcmp(m->data, "Exif\0\0", 6) == 0) {
            r->orientation = exif_orientation(m->data + 6, m->data_length - 6);
            break; /* the first EXIF block counts, as in Pillow */
        }
    }
    st = limits_check(&r->limits, "JPEG", cinfo->image_width, cinfo->image_height, r->err);
    if (st != SDXS_OK)
        return st;

    /* Step 2: libjpeg converts grey, YCbCr and RGB files to RGB itself; CMYK and YCCK come out
     * as CMYK and are converted below. */
    switch (cinfo->jpeg_color_space) {
    case JCS_GRAYSCALE:
    case JCS_YCbCr:
    case JCS_RGB:
        cinfo->out_color_space = JCS_RGB;
        cmyk = false;
        break;
    case JCS_CMYK:
    case JCS_YCCK:
        cinfo->out_color_space = JCS_CMYK;
        cmyk = true;
        break;
    default:
        return sdxs_fail(r->err, SDXS_ERR_MODEL, "image", "bad input file: JPEG with %d "
                         "components in an unknown colour space (grey, YCbCr, RGB, CMYK and "
                         "YCCK are supported)", cinfo->num_components);
    }
    jpeg_start_decompress(cinfo);
    if (cinfo->output_width != cinfo->image_width ||
        cinfo->output_height != cinfo->image_height ||
        cinfo->output_components != (cmyk ? 4 : 3))
        return sdxs_fail(r->err, SDXS_ERR_MODEL, "image", "bad input file: JPEG decoded to an "
                         "unexpected layout (%u x %u, %d components)", cinfo->output_width,
                         cinfo->output_height, cinfo->output_components);

    /* Step 3: the rows. */
    r->width = (int)cinfo->output_width;
    r->height = (int)cinfo->output_height;
    r->pixels = sdxs_alloc((size_t)r->width * (size_t)r->height * 3, r->err, "JPEG pixels");
    if (!r->pixels)
        return SDXS_ERR_RUNTIME;
    if (cmyk) {
        r->cmyk = sdxs_alloc((size_t)r->width * 4, r->err, "a JPEG row");
        if (!r->cmyk)
            return SDXS_ERR_RUNTIME;
    }
    while (cinfo->output_scanline < cinfo->output_height) {
        uint8_t *row = r->pixels + (size_t)cinfo->output_scanline * (size_t)r->width * 3;
        JSAMPROW target = cmyk ? r->cmyk : row;
        if (jpeg_read_scanlines(cinfo, &target, 1) != 1)
            return sdxs_fail(r->err, SDXS_ERR_MODEL, "image", "bad input file: JPEG: no row "
                             "%u", cinfo->output_scanline);
        if (cmyk)
            jpeg_cmyk_row_to_rgb(r->cmyk, row, r->width);
    }
    /* Reads up to EOI, so a file cut off after its last scan is noticed (JWRN_JPEG_EOF). */
    jpeg_finish_decompress(cinfo);
    return SDXS_OK;
}

static sdxs_status jpeg_decode(const uint8_t *bytes, size_t len, const sdxs_image_limits *limits,
                               sdxs_image *out, sdxs_error *err)
{
    struct jpeg_decompress_struct cinfo;
    jpeg_reader r;
    sdxs_status st;

    memset(&cinfo, 0, sizeof(cinfo));
    memset(&r, 0, sizeof(r));
    r.orientation = 1;
    r.limits = *limits;
    r.err = err;
    jpeg_fault_init(&r.fault);
    cinfo.err = &r.fault.mgr;
    st = jpeg_decode_run(&cinfo, &r, bytes, len);
    jpeg_destroy_decompress(&cinfo); /* safe on a struct that creation never filled */
    free(r.cmyk);
    if (st == SDXS_OK)
        st = orient_apply(&r.pixels, &r.width, &r.height, r.orientation, limits, err);
    if (st != SDXS_OK) {
        free(r.pixels);
        return st;
    }
    out->width = r.width;
    out->height = r.height;
    out->rgb = r.pixels;
    return SDXS_OK;
}

/* ---- decoding: format detection ---- */

sdxs_status sdxs_image_decode(const uint8_t *bytes, size_t len, const sdxs_image_limits *limits,
                              sdxs_image *out, sdxs_error *err)
{
    static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    sdxs_image_limits lim;
    sdxs_status st;

    if (!out)
        return sdxs_fail(err, SDXS_ERR_INVALID, "image", "no output image given");
    memset(out, 0, sizeof(*out));
    if (!bytes && len)
        return sdxs_fail(err, SDXS_ERR_INVALID, "image", "no input bytes given");
    st = limits_resolve(limits, &lim, err);
    if (st != SDXS_OK)
        return st;
    if (len == 0)
        return sdxs_fail(err, SDXS_ERR_MODEL, "image", "bad input file: it is empty");
    if (len > SDXS_IMAGE_MAX_INPUT_BYTES)
        return sdxs_fail(err, SDXS_ERR_MODEL, "image", "bad input file: %zu bytes, over the "
                         "limit of %zu bytes", len, SDXS_IMAGE_MAX_INPUT_BYTES);
    if (len >= sizeof(png_sig) && memcmp(bytes, png_sig, sizeof(png_sig)) == 0)
        return png_decode(bytes, len, &lim, out, err);
    if (len >= 3 && bytes[0] == 0xff && bytes[1] == 0xd8 && bytes[2] == 0xff)
        return jpeg_decode(bytes, len, &lim, out, err);
    return sdxs_fail(err, SDXS_ERR_MODEL, "image", "bad input file: not a PNG or JPEG image "
                     "(%zu bytes starting %02x %02x %02x %02x)", len, bytes[0],
                     len > 1 ? bytes[1] : 0, len > 2 ? bytes[2] : 0, len > 3 ? bytes[3] : 0);
}

sdxs_status sdxs_image_load(const char *path, const sdxs_image_limits *limits, sdxs_image *out,
                            sdxs_error *err)
{
    char *data;
    size_t len;
    sdxs_status st;

    if (out)
        memset(out, 0, sizeof(*out));
    if (!path)
        return sdxs_fail(err, SDXS_ERR_INVALID, "image", "no image path given");
    st = sdxs_read_file(path, SDXS_IMAGE_MAX_INPUT_BYTES, &data, &len, err);
    if (st != SDXS_OK)
        return st;
    st = sdxs_image_decode((const uint8_t *)data, len, limits, out, err);
    free(data);
    if (st != SDXS_OK && err) {
        /* Name the file rather than the in-memory "image". */
        char message[sizeof(err->message)];
        snprintf(message, sizeof(message), "%s", err->message);
        sdxs_fail(err, st, path, "%s: %s", path, message);
    }
    return st;
}

/* ---- PNG encoding ---- */

/* Why these settings: a generated picture is encoded on a request path, so speed comes first.
 * Measured with `sdxs-image bench` at 512x512 on the shared 2-core build machine (best of 5):
 * libpng's defaults (zlib level 6, adaptive filters) take 60-110 ms. zlib's Z_RLE strategy
 * (matches at distance 1 only) over the UP filter takes 4-5 ms on a smooth picture and 8-20 ms
 * on a noisy photograph, with files 10-20% larger than the defaults' on photographs. Level 1 with
 * ordinary matching is faster and far smaller on flat pictures but 2-3 times slower on noisy
 * ones; Huffman-only coding is no faster on photographs and larger on smooth pictures; Paeth
 * saves 10% on photographs for up to twice the time. SDXS_PNG_STORED (no compression, under
 * 1 ms) is for callers that need more speed and can afford 3 bytes a pixel. */
#define PNG_ZLIB_LEVEL 1
#define PNG_ZLIB_STRATEGY Z_RLE
#define PNG_ROW_FILTER PNG_FILTER_UP

typedef struct png_sink {
    png_fault fault;
    uint8_t *data;
    size_t len, cap, max; /* max: the cap on the encoded size */
} png_sink;

static void png_on_write(png_structp png, png_bytep data, size_t n)
{
    png_sink *s = png_get_io_ptr(png);
    if (n > s->max - s->len)
        png_error(png, "the encoded image outgrew its cap");
    if (s->len + n > s->cap) {
        size_t cap = s->cap ? s->cap : 64 << 10;
        uint8_t *grown;
        while (cap < s->len + n)
            cap = cap > s->max / 2 ? s->max : cap * 2;
        grown = realloc(s->data, cap);
        if (!grown)
            png_error(png, "out of memory");
        s->data = grown;
        s->cap = cap;
    }
    memcpy(s->data + s->len, data, n);
    s->len += n;
}

static void png_on_flush(png_structp png) { (void)png; }

/* A PNG keyword: 1..79 printable Latin-1 characters, no leading, trailing or double spaces. */
static bool png_keyword_ok(const char *key)
{
    size_t n = strlen(key);
    if (n < 1 || n > 79 || key[0] == ' ' || key[n - 1] == ' ')
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)key[i];
        if (!((c >= 32 && c <= 126) || c >= 161) || (c == ' ' && key[i + 1] == ' '))
            return false;
    }
    return true;
}

/* Returns 0 for ASCII text, 1 for other valid UTF-8, -1 for invalid UTF-8. */
static int text_encoding(const char *text)
{
    const unsigned char *p = (const unsigned char *)text;
    int result = 0;
    while (*p) {
        int extra;
        uint32_t cp;
        if (*p < 0x80) {
            p++;
            continue;
        }
        result = 1;
        if ((*p & 0xe0) == 0xc0) {
            extra = 1;
            cp = *p & 0x1f;
        } else if ((*p & 0xf0) == 0xe0) {
            extra = 2;
            cp = *p & 0x0f;
        } else if ((*p & 0xf8) == 0xf0) {
            extra = 3;
            cp = *p & 0x07;
        } else {
            return -1;
        }
        p++;
        for (int i = 0; i < extra; i++, p++) {
            if ((*p & 0xc0) != 0x80)
                return -1;
            cp = (cp << 6) | (*p & 0x3f);
        }
        if ((extra == 1 && cp < 0x80) || (extra == 2 && cp < 0x800) ||
            (extra == 3 && cp < 0x10000) || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return -1;
    }
    return result;
}

/* Checks the key/value pairs and fills libpng's descriptions: ASCII values go into tEXt chunks;
 * any other UTF-8 into uncompressed iTXt chunks, since tEXt is Latin-1 only and a prompt is
 * UTF-8. */
static sdxs_status png_text_prepare(const char *const *text, png_text *chunks, int *count,
                                    size_t *bytes, sdxs_error *err)
{
    int n = 0;
    *count = 0;
    *bytes = 0;
    for (; text && text[2 * n]; n++) {
        const char *key = text[2 * n], *value = text[2 * n + 1];
        size_t len;
        int enc;
        if (n >= SDXS_PNG_MAX_TEXT_PAIRS)
            return sdxs_fail(err, SDXS_ERR_INVALID, "text", "more than %d PNG text pairs",
                             SDXS_PNG_MAX_TEXT_PAIRS);
        if (!png_keyword_ok(key))
            return sdxs_fail(err, SDXS_ERR_INVALID, "text", "PNG text key \"%.80s\" must be 1..79 "
                             "printable Latin-1 characters without leading, trailing or double "
                             "spaces", key);
        if (!value)
            return sdxs_fail(err, SDXS_ERR_INVALID, "text", "PNG text key \"%s\" has no value",
                             key);
        len = strlen(value);
        if (len > SDXS_PNG_MAX_TEXT_BYTES)
            return sdxs_fail(err, SDXS_ERR_INVALID, "text", "PNG text \"%s\" has %zu bytes, over "
                             "the limit of %zu", key, len, SDXS_PNG_MAX_TEXT_BYTES);
        enc = text_encoding(value);
        if (enc < 0)
            return sdxs_fail(err, SDXS_ERR_INVALID, "text", "PNG text \"%s\" is not valid UTF-8",
                             key);
        memset(&chunks[n], 0, sizeof(chunks[n]));
        chunks[n].compression = enc ? PNG_ITXT_COMPRESSION_NONE : PNG_TEXT_COMPRESSION_NONE;
        chunks[n].key = (png_charp)key;
        chunks[n].text = (png_charp)value;
        if (enc) {
            chunks[n].itxt_length = len;
            chunks[n].lang = (png_charp) "";
            chunks[n].lang_key = (png_charp) "";
        } else {
            chunks[n].text_length = len;
        }
        *bytes += len + strlen(key) + 32;
    }
    *count = n;
    return SDXS_OK;
}

static sdxs_status png_encode_run(png_structp png, png_infop info, png_sink *sink,
                                  const sdxs_image *image, png_text *chunks, int nchunks,
                                  sdxs_png_mode mode, sdxs_error *err)
{
    if (setjmp(png_jmpbuf(png)))
        return sdxs_fail(err, SDXS_ERR_RUNTIME, NULL, "PNG encoder: %s", sink->fault.message);

    png_set_write_fn(png, sink, png_on_write, png_on_flush);
    if (mode == SDXS_PNG_STORED) {
        png_set_compression_level(png, 0);
        png_set_filter(png, PNG_FILTER_TYPE_BASE, PNG_FILTER_NONE);
    } else {
        png_set_compression_level(png, PNG_ZLIB_LEVEL);
        png_set_compression_strategy(png, PNG_ZLIB_STRATEGY);
        png_set_filter(png, PNG_FILTER_TYPE_BASE, PNG_ROW_FILTER);
    }
    png_set_IHDR(png, info, (png_uint_32)image->width, (png_uint_32)image->height, 8,
                 PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_BASE,
                 PNG_FILTER_TYPE_BASE);
    if (nchunks)
        png_set_text(png, info, chunks, nchunks);
    png_write_info(png, info);
    for (int y = 0; y < image->height; y++)
        png_write_row(png, image->rgb + (size_t)y * (size_t)image->width * 3);
    png_write_end(png, info);
    return SDXS_OK;
}

sdxs_status sdxs_png_encode(const sdxs_image *image, const char *const *text, uint8_t **out,
                            size_t *len, sdxs_error *err)
{
    return sdxs_png_encode_mode(image, text, SDXS_PNG_FAST, out, len, err);
}

sdxs_status sdxs_png_encode_mode(const sdxs_image *image, const char *const *text,
                                 sdxs_png_mode mode, uint8_t **out, size_t *len, sdxs_error *err)
{
    png_text chunks[SDXS_PNG_MAX_TEXT_PAIRS];
    int nchunks;
    size_t text_bytes;
    png_sink sink;
    png_structp png;
    png_infop info;
    sdxs_status st;

    if (!out || !len)
        return sdxs_fail(err, SDXS_ERR_INVALID, "image", "no output buffer given");
    *out = NULL;
    *len = 0;
    st = sdxs_image_check(image, "image", err);
    if (st != SDXS_OK)
        return st;
    if (mode != SDXS_PNG_FAST && mode != SDXS_PNG_STORED)
        return sdxs_fail(err, SDXS_ERR_INVALID, "mode", "unknown PNG mode %d", (int)mode);
    st = png_text_prepare(text, chunks, &nchunks, &text_bytes, err);
    if (st != SDXS_OK)
        return st;

    /* Stored blocks bound deflate's output: the raw rows (a filter byte each) plus 5 bytes per
     * 16 KiB block; the rest is headers and text. */
    memset(&sink, 0, sizeof(sink));
    {
        size_t raw = (size_t)image->height * ((size_t)image->width * 3 + 1);
        sink.max = raw + raw / 1024 + text_bytes + ((size_t)1 << 16);
    }
    png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &sink.fault, png_on_error,
                                  png_on_warning);
    if (!png)
        return sdxs_fail(err, SDXS_ERR_RUNTIME, NULL, "libpng: cannot create a writer");
    info = png_create_info_struct(png);
    if (!info) {
        png_destroy_write_struct(&png, NULL);
        return sdxs_fail(err, SDXS_ERR_RUNTIME, NULL, "libpng: cannot create an info struct");
    }
    st = png_encode_run(png, info, &sink, image, chunks, nchunks, mode, err);
    png_destroy_write_struct(&png, &info);
    if (st != SDXS_OK) {
        free(sink.data);
        return st;
    }
    *out = sink.data;
    *len = sink.len;
    return SDXS_OK;
}

/* ---- JPEG encoding ---- */

typedef struct jpeg_writer {
    jpeg_fault fault;
    unsigned char *data; /* jpeg_mem_dest's buffer: malloc'ed, replaced as it grows */
    unsigned long len;
} jpeg_writer;

static sdxs_status jpeg_encode_run(struct jpeg_compress_struct *cinfo, jpeg_writer *w,
                                   const sdxs_image *image, int quality, sdxs_error *err)
{
    if (setjmp(w->fault.jump))
        return sdxs_fail(err, SDXS_ERR_RUNTIME, NULL, "JPEG encoder: %s", w->fault.message);

    jpeg_create_compress(cinfo);
    jpeg_mem_dest(cinfo, &w->data, &w->len);
    cinfo->image_width = (JDIMENSION)image->width;
    cinfo->image_height = (JDIMENSION)image->height;
    cinfo->input_components = 3;
    cinfo->in_color_space = JCS_RGB;
    /* libjpeg's defaults are Pillow's: YCbCr with 4:2:0 chroma, the integer DCT, baseline. */
    jpeg_set_defaults(cinfo);
    jpeg_set_quality(cinfo, quality, TRUE);
    jpeg_start_compress(cinfo, TRUE);
    while (cinfo->next_scanline < cinfo->image_height) {
        JSAMPROW row = image->rgb + (size_t)cinfo->next_scanline * (size_t)image->width * 3;
        jpeg_write_scanlines(cinfo, &row, 1);
    }
    jpeg_finish_compress(cinfo);
    return SDXS_OK;
}

sdxs_status sdxs_jpeg_encode(const sdxs_image *image, int quality, uint8_t **out, size_t *len,
                             sdxs_error *err)
{
    struct jpeg_compress_struct cinfo;
    jpeg_writer w;
    sdxs_status st;

    if (!out || !len)
        return sdxs_fail(err, SDXS_ERR_INVALID, "image", "no output buffer given");
    *out = NULL;
    *len = 0;
    if (quality < 1 || quality > 100)
        return sdxs_fail(err, SDXS_ERR_INVALID, "quality", "quality %d is outside 1..100",
                         quality);
    st = sdxs_image_check(image, "image", err);
    if (st != SDXS_OK)
        return st;

    memset(&cinfo, 0, sizeof(cinfo));
    memset(&w, 0, sizeof(w));
    jpeg_fault_init(&w.fault);
    cinfo.err = &w.fault.mgr;
    st = jpeg_encode_run(&cinfo, &w, image, quality, err);
    jpeg_destroy_compress(&cinfo);
    if (st != SDXS_OK) {
        free(w.data);
        return st;
    }
    *out = w.data;
    *len = (size_t)w.len;
    return SDXS_OK;
}

/* ---- Lanczos resize, as Pillow's Image.resize(size, Image.LANCZOS) up to release 12 ----
 *
 * Pillow resamples separably: a horizontal pass into a temporary image holding only the rows the
 * vertical pass reads, then a vertical pass. (Pillow 13 runs the vertical pass first for some
 * shrinks of the height; each pass rounds to 8 bits, so there the two orders can differ by one
 * level. The test suite pins Pillow 12.) For each output index o of a pass with scale
 * s = in / out, the filter is centred at (o + 0.5) * s; when shrinking, the Lanczos-3 window is
 * stretched by s (support 3 * max(s, 1)), the taps are the input indices whose rounded distance
 * falls in the window, clipped to the image, and their weights lanczos((i - centre + 0.5) / f)
 * (f = max(s, 1)) are normalised to sum 1 and then rounded to signed integers with 22 fraction
 * bits. A pass sums uint8 * weight plus one half, shifts right by 22 and clips to 0..255, so each
 * pass rounds to 8 bits. The double arithmetic below follows the same order of operations, which
 * makes the coefficients, and so the pixels, equal to Pillow's.
 */

#define RESIZE_PRECISION_BITS 22 /* 32 bits - 8 for the sample - 2 for sums over 1 or below 0 */
#define RESIZE_LANCZOS_SUPPORT 3.0
#define RESIZE_PI 3.14159265358979323846

static double resize_sinc(double x)
{
    if (x == 0.0)
        return 1.0;
    x = x * RESIZE_PI;
    return sin(x) / x;
}

static double resize_lanczos(double x)
{
    if (-3.0 <= x && x < 3.0)
        return resize_sinc(x) * resize_sinc(x / 3);
    return 0.0;
}

/* The taps of one pass: output index o reads inputs first[o] .. first[o] + count[o] - 1 with
 * weights coef[o * size ..]. */
typedef struct resize_taps {
    int size;       /* the most taps an output reads */
    int *first;     /* (out) */
    int *count;     /* (out) */
    int32_t *coef;  /* (out, size) fixed point, RESIZE_PRECISION_BITS fraction bits */
    double *weight; /* (size) scratch: one output's weights before rounding */
} resize_taps;

static void resize_taps_free(resize_taps *t)
{
    free(t->first);
    free(t->count);
    free(t->coef);
    free(t->weight);
    memset(t, 0, sizeof(*t));
}

static sdxs_status resize_taps_make(int in_size, int out_size, resize_taps *t, sdxs_error *err)
{
    /* Pillow passes the box edges as floats; whole pixel counts up to 2^24 are exact. */
    double scale = (double)(float)in_size / out_size;
    double filterscale = scale < 1.0 ? 1.0 : scale;
    double support = RESIZE_LANCZOS_SUPPORT * filterscale;

    memset(t, 0, sizeof(*t));
    t->size = (int)ceil(support) * 2 + 1;
    t->first = sdxs_calloc((size_t)out_size, sizeof(int), err, "resize taps");
    t->count = sdxs_calloc((size_t)out_size, sizeof(int), err, "resize taps");
    t->coef = sdxs_calloc((size_t)out_size * (size_t)t->size, sizeof(int32_t), err,
                          "resize coefficients");
    t->weight = sdxs_calloc((size_t)t->size, sizeof(double), err, "resize weights");
    if (!t->first || !t->count || !t->coef || !t->weight) {
        resize_taps_free(t);
        return SDXS_ERR_RUNTIME;
    }

    for (int o = 0; o < out_size; o++) {
        double center = (o + 0.5) * scale;
        double ss = 1.0 / filterscale, ww = 0.0;
        int lo = (int)(center - support + 0.5), hi = (int)(center + support + 0.5), n;
        int32_t *k = t->coef + (size_t)o * (size_t)t->size;
        if (lo < 0)
            lo = 0;
        if (hi > in_size)
            hi = in_size;
        n = hi - lo;
        SDXS_ASSERT(n >= 1 && n <= t->size);
        for (int i = 0; i < n; i++) {
            double w = resize_lanczos((i + lo - center + 0.5) * ss);
            t->weight[i] = w;
            ww += w;
        }
        for (int i = 0; i < n; i++) {
            double w = ww != 0.0 ? t->weight[i] / ww : t->weight[i];
            double fixed = w * (1 << RESIZE_PRECISION_BITS);
            k[i] = (int32_t)(w < 0 ? -0.5 + fixed : 0.5 + fixed);
        }
        t->first[o] = lo;
        t->count[o] = n;
    }
    return SDXS_OK;
}

/* Rounds a fixed-point sum (one half already added) to a clipped 8-bit value. */
static inline uint8_t resize_clip(int64_t sum)
{
    if (sum < 0)
        return 0;
    sum >>= RESIZE_PRECISION_BITS;
    return (uint8_t)(sum > 255 ? 255 : sum);
}

/* Horizontal pass over rows [y0, y0 + rows) of src (H, W, 3) into dst (rows, out_w, 3). */
static void resize_horizontal(const uint8_t *src, int src_w, int y0, int rows, uint8_t *dst,
                              int out_w, const resize_taps *t)
{
    for (int y = 0; y < rows; y++) {
        const uint8_t *in = src + (size_t)(y0 + y) * (size_t)src_w * 3;
        uint8_t *out = dst + (size_t)y * (size_t)out_w * 3;
        for (int x = 0; x < out_w; x++) {
            const int32_t *k = t->coef + (size_t)x * (size_t)t->size;
            const uint8_t *p = in + (size_t)t->first[x] * 3;
            int64_t s0 = 1 << (RESIZE_PRECISION_BITS - 1), s1 = s0, s2 = s0;
            for (int i = 0; i < t->count[x]; i++) {
                s0 += (int64_t)p[3 * i + 0] * k[i];
                s1 += (int64_t)p[3 * i + 1] * k[i];
                s2 += (int64_t)p[3 * i + 2] * k[i];
            }
            out[3 * x + 0] = resize_clip(s0);
            out[3 * x + 1] = resize_clip(s1);
            out[3 * x + 2] = resize_clip(s2);
        }
    }
}

/* Vertical pass: src (rows, W, 3) whose row 0 is input row y0, into dst (out_h, W, 3); acc is a
 * (W * 3) scratch row of sums. */
static void resize_vertical(const uint8_t *src, int width, int y0, uint8_t *dst, int out_h,
                            const resize_taps *t, int64_t *acc)
{
    size_t row = (size_t)width * 3;
    for (int y = 0; y < out_h; y++) {
        const int32_t *k = t->coef + (size_t)y * (size_t)t->size;
        for (size_t i = 0; i < row; i++)
            acc[i] = 1 << (RESIZE_PRECISION_BITS - 1);
        for (int j = 0; j < t->count[y]; j++) {
            const uint8_t *in = src + (size_t)(t->first[y] - y0 + j) * row;
            for (size_t i = 0; i < row; i++)
                acc[i] += (int64_t)in[i] * k[j];
        }
        for (size_t i = 0; i < row; i++)
            dst[(size_t)y * row + i] = resize_clip(acc[i]);
    }
}

sdxs_status sdxs_image_resize(const sdxs_image *src, int width, int height, sdxs_image *dst,
                              sdxs_error *err)
{
    resize_taps horiz = {0}, vert = {0};
    uint8_t *temp = NULL;     /* (rows, width, 3) after the horizontal pass */
    int64_t *acc = NULL;      /* (width * 3) */
    const uint8_t *vin;       /* the vertical pass's input */
    int vin_y0 = 0, rows;
    sdxs_status st;

    if (!dst)
        return sdxs_fail(err, SDXS_ERR_INVALID, "image", "no output image given");
    memset(dst, 0, sizeof(*dst));
    st = sdxs_image_check(src, "image", err);
    if (st == SDXS_OK)
        st = check_size(width, height, "resize", "width", "height", err);
    if (st == SDXS_OK)
        st = sdxs_image_alloc(dst, width, height, "width", err);
    if (st != SDXS_OK)
        return st;

    /* Pillow copies when the size does not change, and skips a pass whose side stays. */
    if (width == src->width && height == src->height) {
        memcpy(dst->rgb, src->rgb, (size_t)width * (size_t)height * 3);
        return SDXS_OK;
    }
    st = resize_taps_make(src->height, height, &vert, err);
    if (st != SDXS_OK)
        goto out;

    /* Step 1: the horizontal pass, over the input rows the vertical taps reach. */
    vin = src->rgb;
    if (width != src->width) {
        int first = vert.first[0];
        int last = vert.first[height - 1] + vert.count[height - 1];
        st = resize_taps_make(src->width, width, &horiz, err);
        if (st != SDXS_OK)
            goto out;
        rows = last - first;
        temp = sdxs_alloc((size_t)rows * (size_t)width * 3, err, "resize rows");
        if (!temp) {
            st = SDXS_ERR_RUNTIME;
            goto out;
        }
        resize_horizontal(src->rgb, src->width, first, rows, temp, width, &horiz);
        vin = temp;
        vin_y0 = first;
    }

    /* Step 2: the vertical pass, or a copy when the height stays. */
    if (height != src->height) {
        acc = sdxs_calloc((size_t)width * 3, sizeof(*acc), err, "resize sums");
        if (!acc) {
            st = SDXS_ERR_RUNTIME;
            goto out;
        }
        resize_vertical(vin, width, vin_y0, dst->rgb, height, &vert, acc);
    } else {
        memcpy(dst->rgb, vin, (size_t)width * (size_t)height * 3);
    }

out:
    resize_taps_free(&horiz);
    resize_taps_free(&vert);
    free(temp);
    free(acc);
    if (st != SDXS_OK)
        sdxs_image_free(dst);
    return st;
}
