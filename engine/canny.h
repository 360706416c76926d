/* canny.h: preparing control images for a ControlNet: OpenCV's Canny edge detector re-done in C,
 * and the resize-then-convert step that every control image of a request goes through.
 */
#ifndef SDXS_CANNY_H
#define SDXS_CANNY_H

#include "sdxs.h"

/* The thresholds of `--control-mode canny`: those of the ControlNet canny annotator and of
 * diffusers' ControlNet canny example, both cv2.Canny(image, 100, 200) on the RGB image. */
#define SDXS_CANNY_LOW 100.0
#define SDXS_CANNY_HIGH 200.0
/* Thresholds above the largest possible L1 gradient (2 * 4 * 255 = 2040) only mean "no edges";
 * anything past this is refused as a mistake. */
#define SDXS_CANNY_MAX_THRESHOLD 100000.0

/* Edges as cv2.Canny(gray, low, high) finds them (aperture 3, L2gradient=False), where gray is
 * cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY): no blur, Sobel 3x3 gradients with replicated borders,
 * L1 magnitudes, non-maximum suppression in four sectors, hysteresis between the floors of the
 * two thresholds (swapped when low > high). edges becomes a new image of the same size: white
 * (255, 255, 255) on edges, black elsewhere. */
sdxs_status sdxs_canny(const sdxs_image *src, double low, double high, sdxs_image *edges,
                       sdxs_error *err);

/* The same on the colour image, as cv2.Canny(rgb, low, high) with a three-channel array: the
 * gradients of each pixel are those of its channel with the largest L1 magnitude (the first of
 * equals, in R, G, B order). Colour edges between regions of equal grey are found too. */
sdxs_status sdxs_canny_rgb(const sdxs_image *src, double low, double high, sdxs_image *edges,
                           sdxs_error *err);

/* Makes the control image of one request: src resized to width x height with sdxs_image_resize
 * (Pillow's Lanczos), then
 *   SDXS_CONTROL_NONE:   used as it is;
 *   SDXS_CONTROL_SKETCH: inverted, 255 - v per channel (dark strokes on white become white on
 *                        black, as the SDXS sketch demo feeds its ControlNet);
 *   SDXS_CONTROL_CANNY:  sdxs_canny_rgb with SDXS_CANNY_LOW and SDXS_CANNY_HIGH and no blur: the
 *                        common ControlNet preprocess (the annotator and diffusers' example both
 *                        run cv2.Canny on the resized RGB array). A webcam's noise shows up as
 *                        short edges; a blur would change the edges the ControlNet was trained on.
 * out becomes a new image. */
sdxs_status sdxs_control_prepare(const sdxs_image *src, sdxs_control_mode mode, int width,
                                 int height, sdxs_image *out, sdxs_error *err);

#endif /* SDXS_CANNY_H */
