/* canny.c: OpenCV's Canny edge detector (cv2.Canny with aperture 3 and the L1 gradient, on the
 * COLOR_RGB2GRAY grey or on all three channels) re-done in C with the same integer arithmetic, so
 * the edge map is OpenCV's pixel for pixel; and sdxs_control_prepare, which turns a request's
 * control image into what the ControlNet sees. See canny.h for the contracts.
 *
 * Letters: W, H are the image's width and height; padded planes are (H + 2, W + 2) with a one
 * pixel border, so the neighbours of every image pixel exist.
 */
#include "canny.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "image.h"
#include "util.h"

/* OpenCV's fixed-point grey for 8-bit images: 15 fraction bits, weights 0.299, 0.587 and 0.114
 * times 2^15 rounded (summing to exactly 2^15), and one half added before the shift. (The 14-bit
 * weights 4899/9617/1868 of its YUV code give a different grey in about 1 pixel in 800.) */
#define GREY_SHIFT 15
#define GREY_R 9798
#define GREY_G 19235
#define GREY_B 3735

/* The sector test of non-maximum suppression compares |dy| * 2^15 with |dx| * tan(22.5 degrees)
 * * 2^15 (rounded) and |dx| * tan(67.5 degrees) * 2^15 = that plus 2 * 2^15 * |dx|. */
#define CANNY_SHIFT 15
#define CANNY_TAN22 13573 /* round(0.41421356 * 2^15) */

/* Map values, as OpenCV's: 0 may be an edge (a local maximum above low), 1 is not an edge,
 * 2 is an edge. */
enum { MAP_MAYBE = 0, MAP_NO = 1, MAP_EDGE = 2 };

typedef struct canny_planes {
    int width, height;
    uint8_t *plane; /* (H + 2, W + 2) one channel or grey, replicated border */
    int16_t *dx;    /* (H, W) Sobel x */
    int16_t *dy;    /* (H, W) Sobel y */
    int32_t *mag;   /* (H + 2, W + 2) |dx| + |dy|, zero border */
    uint8_t *map;   /* (H + 2, W + 2) MAP_*, MAP_NO border */
    int32_t *stack; /* (H * W) padded indices of edge pixels still to grow from */
} canny_planes;

static void canny_planes_free(canny_planes *p)
{
    free(p->plane);
    free(p->dx);
    free(p->dy);
    free(p->mag);
    free(p->map);
    free(p->stack);
    memset(p, 0, sizeof(*p));
}

static sdxs_status canny_planes_alloc(canny_planes *p, int width, int height, sdxs_error *err)
{
    size_t n = (size_t)width * (size_t)height;
    size_t padded = (size_t)(width + 2) * (size_t)(height + 2);

    memset(p, 0, sizeof(*p));
    p->width = width;
    p->height = height;
    p->plane = sdxs_alloc(padded, err, "canny plane");
    p->dx = sdxs_alloc(n * sizeof(int16_t), err, "canny gradients");
    p->dy = sdxs_alloc(n * sizeof(int16_t), err, "canny gradients");
    p->mag = sdxs_calloc(padded, sizeof(int32_t), err, "canny magnitudes");
    p->map = sdxs_alloc(padded, err, "canny map");
    p->stack = sdxs_alloc(n * sizeof(int32_t), err, "canny stack");
    if (!p->plane || !p->dx || !p->dy || !p->mag || !p->map || !p->stack) {
        canny_planes_free(p);
        return SDXS_ERR_RUNTIME;
    }
    return SDXS_OK;
}

/* One channel of src (0..2), or its COLOR_RGB2GRAY grey (channel -1), into the padded plane; the
 * border repeats the nearest pixel (OpenCV's BORDER_REPLICATE for the Sobel filter). */
static void canny_plane(const sdxs_image *src, int channel, canny_planes *p)
{
    int w = p->width, h = p->height, pw = w + 2;
    for (int y = 0; y < h; y++) {
        const uint8_t *in = src->rgb + (size_t)y * (size_t)w * 3;
        uint8_t *out = p->plane + (size_t)(y + 1) * (size_t)pw + 1;
        if (channel < 0) {
            for (int x = 0; x < w; x++) {
                int v = in[3 * x] * GREY_R + in[3 * x + 1] * GREY_G + in[3 * x + 2] * GREY_B;
                out[x] = (uint8_t)((v + (1 << (GREY_SHIFT - 1))) >> GREY_SHIFT);
            }
        } else {
            for (int x = 0; x < w; x++)
                out[x] = in[3 * x + channel];
        }
        out[-1] = out[0];
        out[w] = out[w - 1];
    }
    memcpy(p->plane, p->plane + pw, (size_t)pw);
    memcpy(p->plane + (size_t)(h + 1) * (size_t)pw, p->plane + (size_t)h * (size_t)pw,
           (size_t)pw);
}

/* Sobel 3x3 of the plane (x: [-1 0 1] across, [1 2 1] down; y the transpose) and the L1
 * magnitude. The first plane fills dx, dy and mag; a later one replaces them where its magnitude
 * is strictly larger, which is how OpenCV picks the channel of a multi-channel image. */
static void canny_gradients(canny_planes *p, bool first)
{
    int w = p->width, h = p->height, pw = w + 2;
    for (int y = 0; y < h; y++) {
        const uint8_t *up = p->plane + (size_t)y * (size_t)pw + 1;
        const uint8_t *mid = up + pw, *down = mid + pw;
        int16_t *dx = p->dx + (size_t)y * (size_t)w, *dy = p->dy + (size_t)y * (size_t)w;
        int32_t *mag = p->mag + (size_t)(y + 1) * (size_t)pw + 1;
        for (int x = 0; x < w; x++) {
            int gx = (up[x + 1] - up[x - 1]) + 2 * (mid[x + 1] - mid[x - 1]) +
                     (down[x + 1] - down[x - 1]);
            int gy = (down[x - 1] - up[x - 1]) + 2 * (down[x] - up[x]) + (down[x + 1] - up[x + 1]);
            int m = abs(gx) + abs(gy);
            if (first || m > mag[x]) {
                dx[x] = (int16_t)gx;
                dy[x] = (int16_t)gy;
                mag[x] = m;
            }
        }
    }
}

/* Non-maximum suppression: a pixel above low survives when it beats its two neighbours along
 * the gradient's sector (strictly on the left/upper side, or-equal on the right/lower side for
 * the horizontal and vertical sectors, strictly on both diagonals, as OpenCV). Survivors above
 * high are edges and seed the hysteresis. Returns the number of seeds on the stack. */
static size_t canny_suppress(canny_planes *p, int low, int high)
{
    int w = p->width, h = p->height, pw = w + 2;
    size_t top = 0;

    memset(p->map, MAP_NO, (size_t)pw * (size_t)(h + 2));
    for (int y = 0; y < h; y++) {
        const int16_t *dx = p->dx + (size_t)y * (size_t)w, *dy = p->dy + (size_t)y * (size_t)w;
        size_t row = (size_t)(y + 1) * (size_t)pw + 1;
        const int32_t *mag = p->mag + row;
        uint8_t *map = p->map + row;
        for (int x = 0; x < w; x++) {
            int m = mag[x], ax = abs(dx[x]), ay = abs(dy[x]) << CANNY_SHIFT;
            int tan22 = ax * CANNY_TAN22, tan67 = tan22 + (ax << (CANNY_SHIFT + 1));
            bool keep;
            if (m <= low)
                continue;
            if (ay < tan22) {
                keep = m > mag[x - 1] && m >= mag[x + 1];
            } else if (ay > tan67) {
                keep = m > mag[x - pw] && m >= mag[x + pw];
            } else {
                /* Same signs: the gradient runs from upper left to lower right. */
                int s = (dx[x] ^ dy[x]) < 0 ? -1 : 1;
                keep = m > mag[x - pw - s] && m > mag[x + pw + s];
            }
            if (!keep)
                continue;
            if (m > high) {
                map[x] = MAP_EDGE;
                p->stack[top++] = (int32_t)(row + (size_t)x);
            } else {
                map[x] = MAP_MAYBE;
            }
        }
    }
    return top;
}

/* Hysteresis: every possible edge pixel 8-connected to an edge becomes an edge. Each pixel is
 * pushed at most once (it is marked when pushed), so the stack never holds more than W * H. */
static void canny_hysteresis(canny_planes *p, size_t top)
{
    int pw = p->width + 2;
    const int step[8] = {-1, 1, -pw - 1, -pw, -pw + 1, pw - 1, pw, pw + 1};
    size_t cap = (size_t)p->width * (size_t)p->height;

    while (top > 0) {
        int32_t at = p->stack[--top];
        for (int k = 0; k < 8; k++) {
            int32_t next = at + step[k];
            if (p->map[next] == MAP_MAYBE) {
                SDXS_ASSERT(top < cap);
                p->map[next] = MAP_EDGE;
                p->stack[top++] = next;
            }
        }
    }
}

/* Both detectors: grey (cv2.Canny on the COLOR_RGB2GRAY image) or colour (cv2.Canny on the
 * three-channel image). */
static sdxs_status canny_run(const sdxs_image *src, bool colour, double low, double high,
                             sdxs_image *edges, sdxs_error *err)
{
    canny_planes p;
    sdxs_status st;
    int lo, hi;

    if (!edges)
        return sdxs_fail(err, SDXS_ERR_INVALID, "image", "no output image given");
    memset(edges, 0, sizeof(*edges));
    st = sdxs_image_check(src, "image", err);
    if (st != SDXS_OK)
        return st;
    if (!isfinite(low) || low < 0 || low > SDXS_CANNY_MAX_THRESHOLD)
        return sdxs_fail(err, SDXS_ERR_INVALID, "canny_low", "canny_low %g is outside 0..%g",
                         low, SDXS_CANNY_MAX_THRESHOLD);
    if (!isfinite(high) || high < 0 || high > SDXS_CANNY_MAX_THRESHOLD)
        return sdxs_fail(err, SDXS_ERR_INVALID, "canny_high", "canny_high %g is outside 0..%g",
                         high, SDXS_CANNY_MAX_THRESHOLD);
    if (low > high) {
        double t = low;
        low = high;
        high = t;
    }
    lo = (int)floor(low);
    hi = (int)floor(high);

    st = canny_planes_alloc(&p, src->width, src->height, err);
    if (st != SDXS_OK)
        return st;
    st = sdxs_image_alloc(edges, src->width, src->height, "image", err);
    if (st != SDXS_OK) {
        canny_planes_free(&p);
        return st;
    }

    /* Step 1: gradients, of the grey image or of the strongest channel at each pixel. */
    if (colour) {
        for (int c = 0; c < 3; c++) {
            canny_plane(src, c, &p);
            canny_gradients(&p, c == 0);
        }
    } else {
        canny_plane(src, -1, &p);
        canny_gradients(&p, true);
    }

    /* Step 2: thin ridges, then grow the strong edges through the weak ones. */
    canny_hysteresis(&p, canny_suppress(&p, lo, hi));

    /* Step 3: white edges on black, in all three channels. */
    for (int y = 0; y < src->height; y++) {
        const uint8_t *map = p.map + (size_t)(y + 1) * (size_t)(src->width + 2) + 1;
        uint8_t *out = edges->rgb + (size_t)y * (size_t)src->width * 3;
        for (int x = 0; x < src->width; x++) {
            uint8_t v = map[x] == MAP_EDGE ? 255 : 0;
            out[3 * x] = out[3 * x + 1] = out[3 * x + 2] = v;
        }
    }
    canny_planes_free(&p);
    return SDXS_OK;
}

sdxs_status sdxs_canny(const sdxs_image *src, double low, double high, sdxs_image *edges,
                       sdxs_error *err)
{
    return canny_run(src, false, low, high, edges, err);
}

sdxs_status sdxs_canny_rgb(const sdxs_image *src, double low, double high, sdxs_image *edges,
                           sdxs_error *err)
{
    return canny_run(src, true, low, high, edges, err);
}

sdxs_status sdxs_control_prepare(const sdxs_image *src, sdxs_control_mode mode, int width,
                                 int height, sdxs_image *out, sdxs_error *err)
{
    sdxs_image sized;
    sdxs_status st;

    if (!out)
        return sdxs_fail(err, SDXS_ERR_INVALID, "control_image", "no output image given");
    memset(out, 0, sizeof(*out));
    if (mode != SDXS_CONTROL_NONE && mode != SDXS_CONTROL_SKETCH && mode != SDXS_CONTROL_CANNY)
        return sdxs_fail(err, SDXS_ERR_INVALID, "control_mode", "unknown control mode %d",
                         (int)mode);
    st = sdxs_image_check(src, "control_image", err);
    if (st != SDXS_OK)
        return st;
    st = sdxs_image_resize(src, width, height, &sized, err);
    if (st != SDXS_OK)
        return st;

    switch (mode) {
    case SDXS_CONTROL_SKETCH: {
        size_t n = (size_t)width * (size_t)height * 3;
        for (size_t i = 0; i < n; i++)
            sized.rgb[i] = (uint8_t)(255 - sized.rgb[i]);
        *out = sized;
        return SDXS_OK;
    }
    case SDXS_CONTROL_CANNY:
        st = sdxs_canny_rgb(&sized, SDXS_CANNY_LOW, SDXS_CANNY_HIGH, out, err);
        sdxs_image_free(&sized);
        return st;
    case SDXS_CONTROL_NONE:
    default:
        *out = sized;
        return SDXS_OK;
    }
}
