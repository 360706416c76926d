/* image.h: internal extras of the image module (engine/image.c): the caps every decoder and encoder
 * enforces, and helpers for making and checking sdxs_image values. The public codec and resize
 * functions are declared in include/sdxs.h; the control-image preparation is in engine/canny.h.
 */
#ifndef SDXS_IMAGE_H
#define SDXS_IMAGE_H

#include "sdxs.h"

/* What sdxs_image_decode makes of a file, in the detail include/sdxs.h leaves out:
 * - PNG: every colour type and depth, interlaced or not. 16-bit samples keep their high byte and
 *   no gamma correction is applied (as Pillow reads them). Alpha, including palette and colour-key
 *   transparency, is composited on white per channel as (c * a + 255 * (255 - a)) / 255, rounded
 *   to nearest. Anything after the last image data (text chunks, IEND) may be missing or damaged.
 * - JPEG: baseline, progressive and arithmetic-coded files in grey, YCbCr, RGB, CMYK or YCCK,
 *   decoded as Pillow decodes them (libjpeg-turbo's integer IDCT and fancy upsampling; CMYK read
 *   as Adobe writes it, inverted); other colour spaces, 12-bit and lossless files are refused.
 *   Damaged entropy-coded data (a premature end, bad Huffman codes, markers where data should
 *   be) is an error, where libjpeg alone would fill the rest with grey.
 * - Both: the EXIF orientation (a JPEG's APP1 Exif block, a PNG's eXIf chunk) is applied, as
 *   diffusers' load_image does with PIL.ImageOps.exif_transpose; the limits apply to the stored
 *   size before decoding and to the upright size after. Colour profiles (ICC) are ignored.
 */

/* Defaults of sdxs_image_limits (a zero field picks these). Limits above them are lowered to
 * them: no other part of the engine takes bigger images. */
#define SDXS_IMAGE_MAX_SIDE 8192
#define SDXS_IMAGE_MAX_PIXELS ((uint64_t)64 << 20)

/* The largest encoded file sdxs_image_decode and sdxs_image_load accept (64 MiB). */
#define SDXS_IMAGE_MAX_INPUT_BYTES ((size_t)64 << 20)

/* tEXt/iTXt chunks sdxs_png_encode writes at most: pairs, and bytes of one value. */
#define SDXS_PNG_MAX_TEXT_PAIRS 64
#define SDXS_PNG_MAX_TEXT_BYTES ((size_t)64 << 10)

/* Progressive JPEGs with more scans than this are refused (a file of many tiny scans costs a full
 * pass over the coefficients each; real encoders write about ten). */
#define SDXS_JPEG_MAX_SCANS 500

/* How sdxs_png_encode_mode compresses: SDXS_PNG_FAST is what sdxs_png_encode does (zlib's run
 * length strategy over the UP filter, see image.c for the measurements); SDXS_PNG_STORED writes
 * uncompressed deflate blocks, several times faster and about 3 bytes a pixel. */
typedef enum sdxs_png_mode {
    SDXS_PNG_FAST = 0,
    SDXS_PNG_STORED,
} sdxs_png_mode;

sdxs_status sdxs_png_encode_mode(const sdxs_image *image, const char *const *text,
                                 sdxs_png_mode mode, uint8_t **out, size_t *len, sdxs_error *err);

/* Allocates an uninitialised width x height image; the size is checked against the default
 * limits, and param names the field reported when it is out of range. */
sdxs_status sdxs_image_alloc(sdxs_image *image, int width, int height, const char *param,
                             sdxs_error *err);

/* Checks that an image given as an argument is usable: pixels present and its size within the
 * default limits. param names the argument in the message. */
sdxs_status sdxs_image_check(const sdxs_image *image, const char *param, sdxs_error *err);

#endif /* SDXS_IMAGE_H */
