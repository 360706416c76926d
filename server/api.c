/* api.c: the endpoints' request and response formats. A request (JSON, a query string, a form,
 * or a raw image) becomes an engine job after every field is checked against its limit (errors
 * name the field); a finished job becomes the route's response: raw image bytes (/v1/txt2img,
 * /v1/img2img, /v1/controlnet), OpenAI's {"created", "data": [{"b64_json", "seed"}]}, or
 * AUTOMATIC1111's {"images", "parameters", "info"}. Also base64, random seeds and the small GET endpoints.
 */
#define _GNU_SOURCE /* getrandom */
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "engine/image.h"
#include "engine/util.h"
#include "server/server.h"

#define FORMAT_PNG 0
#define FORMAT_JPEG 1
#define DEFAULT_JPEG_QUALITY 90
#define DEFAULT_STRENGTH 0.5        /* /v1/img2img, as `sdxs generate` */
#define DEFAULT_A1111_STRENGTH 0.75 /* AUTOMATIC1111's own default */
#define MAX_CONTROL_SCALE 10.0      /* as the engine's SDXS_MAX_CONTROL_SCALE */

/* ---- replies ---- */

static const char *error_type(int status)
{
    switch (status) {
    case 400: return "invalid_request_error";
    case 401: return "authentication_error";
    case 404: return "not_found_error";
    case 405: return "method_not_allowed";
    case 413: return "request_too_large";
    case 415: return "unsupported_media_type";
    case 429: return "rate_limit_error";
    case 503: return "service_unavailable";
    default: return status >= 500 ? "server_error" : "invalid_request_error";
    }
}

void sdxs_reply_json(sdxs_reply *r, int status, void *json)
{
    json_t *j = json;
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    r->status = status;
    r->content_type = "application/json";
    free(r->body);
    r->body = (uint8_t *)text;
    r->len = text ? strlen(text) : 0;
    if (!text) { /* out of memory: an empty 500 is all that is left */
        r->status = 500;
        r->content_type = "text/plain";
    }
}

static void reply_error_msg(sdxs_reply *r, int status, const char *param, const char *msg)
{
    json_t *j = json_pack("{s:{s:s,s:s,s:o}}", "error", "message", msg, "type",
                          error_type(status), "param",
                          param && param[0] ? json_string(param) : json_null());
    sdxs_reply_json(r, status, j);
}

void sdxs_reply_error(sdxs_reply *r, int status, const char *param, const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    reply_error_msg(r, status, param, msg);
}

void sdxs_reply_from_error(sdxs_reply *r, int status, const sdxs_error *err)
{
    reply_error_msg(r, status, err->param, err->message[0] ? err->message : "failed");
}

/* ---- base64 and seeds ---- */

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *sdxs_base64_encode(const uint8_t *data, size_t len, size_t *out_len)
{
    size_t n = (len + 2) / 3 * 4, o = 0, i = 0;
    char *out = malloc(n + 1);
    if (!out)
        return NULL;
    for (; i + 2 < len; i += 3) {
        uint32_t v = (uint32_t)data[i] << 16 | (uint32_t)data[i + 1] << 8 | data[i + 2];
        out[o++] = b64_alphabet[v >> 18 & 63];
        out[o++] = b64_alphabet[v >> 12 & 63];
        out[o++] = b64_alphabet[v >> 6 & 63];
        out[o++] = b64_alphabet[v & 63];
    }
    if (i < len) {
        uint32_t v = (uint32_t)data[i] << 16 | (i + 1 < len ? (uint32_t)data[i + 1] << 8 : 0);
        out[o++] = b64_alphabet[v >> 18 & 63];
        out[o++] = b64_alphabet[v >> 12 & 63];
        out[o++] = i + 1 < len ? b64_alphabet[v >> 6 & 63] : '=';
        out[o++] = '=';
    }
    out[o] = '\0';
    if (out_len)
        *out_len = o;
    return out;
}

static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    return c == '+' ? 62 : (c == '/' ? 63 : -1);
}

sdxs_status sdxs_base64_decode(const char *text, size_t len, uint8_t **out, size_t *out_len,
                               const char *param, sdxs_error *err)
{
    const char *comma;
    uint8_t *buf;
    uint32_t acc = 0;
    size_t o = 0;
    int bits = 0, pad = 0;

    /* A data URL ("data:image/png;base64,....") as browsers make them. */
    if (len > 5 && !memcmp(text, "data:", 5) && (comma = memchr(text, ',', len)) != NULL) {
        len -= (size_t)(comma + 1 - text);
        text = comma + 1;
    }
    buf = sdxs_alloc(len / 4 * 3 + 3, err, "decoded base64");
    if (!buf)
        return SDXS_ERR_RUNTIME;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        int v;
        if (c == '\r' || c == '\n')
            continue;
        if (c == '=') {
            pad++;
            continue;
        }
        v = b64_value(c);
        if (v < 0 || pad) {
            free(buf);
            return sdxs_fail(err, SDXS_ERR_INVALID, param,
                             "%s is not base64: unexpected character at offset %zu", param, i);
        }
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            buf[o++] = (uint8_t)(acc >> bits);
        }
    }
    if (pad > 2 || bits >= 6) {
        free(buf);
        return sdxs_fail(err, SDXS_ERR_INVALID, param, "%s is not base64: bad length", param);
    }
    *out = buf;
    *out_len = o;
    return SDXS_OK;
}

uint64_t sdxs_serve_random_seed(void)
{
    uint32_t v = 0;
    if (getrandom(&v, sizeof(v), 0) != (ssize_t)sizeof(v)) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        v = (uint32_t)(ts.tv_nsec ^ ts.tv_sec * 2654435761u);
    }
    return v;
}

/* ---- parameters: a JSON object, or query/form fields (strings) seen through the same getters */

struct sdxs_params {
    json_t *obj;
    bool text; /* every value is a string from a query string or a form */
};

/* Nesting depth of arrays and objects, counted before jansson sees the text. */
static bool json_depth_ok(const uint8_t *s, size_t n, int max)
{
    int depth = 0;
    bool in_string = false, escaped = false;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = s[i];
        if (in_string) {
            if (escaped)
                escaped = false;
            else if (c == '\\')
                escaped = true;
            else if (c == '"')
                in_string = false;
        } else if (c == '"') {
            in_string = true;
        } else if (c == '[' || c == '{') {
            if (++depth > max)
                return false;
        } else if (c == ']' || c == '}') {
            depth--;
        }
    }
    return true;
}

static int params_from_json(const sdxs_api_input *in, sdxs_params *p, sdxs_reply *reply)
{
    json_error_t jerr;
    if (!json_depth_ok(in->body, in->len, SDXS_SERVE_MAX_JSON_DEPTH)) {
        sdxs_reply_error(reply, 400, "body", "the JSON body nests deeper than %d levels",
                         SDXS_SERVE_MAX_JSON_DEPTH);
        return 400;
    }
    p->obj = json_loadb((const char *)in->body, in->len, JSON_REJECT_DUPLICATES, &jerr);
    if (!p->obj) {
        sdxs_reply_error(reply, 400, "body", "the body is not valid JSON: %s (line %d, column %d)",
                         jerr.text, jerr.line, jerr.column);
        return 400;
    }
    if (!json_is_object(p->obj)) {
        sdxs_reply_error(reply, 400, "body", "the JSON body must be an object");
        return 400;
    }
    p->text = false;
    return 0;
}

static int params_from_fields(const sdxs_api_input *in, sdxs_params *p, sdxs_reply *reply)
{
    p->obj = json_object();
    p->text = true;
    if (!p->obj) {
        sdxs_reply_error(reply, 500, NULL, "out of memory");
        return 500;
    }
    for (int i = 0; i < in->n_fields; i++) {
        json_t *v = json_string(in->field_values[i]);
        if (!v) {
            sdxs_reply_error(reply, 400, in->field_names[i], "%s is not valid UTF-8",
                             in->field_names[i]);
            return 400;
        }
        json_object_set_new(p->obj, in->field_names[i], v); /* a repeated field: the last wins */
    }
    return 0;
}

static json_t *param(const sdxs_params *p, const char *name)
{
    json_t *v = json_object_get(p->obj, name);
    return json_is_null(v) ? NULL : v;
}

static int get_string(const sdxs_params *p, const char *name, size_t max, const char *dflt,
                      const char **out, sdxs_reply *reply)
{
    json_t *v = param(p, name);
    if (!v) {
        *out = dflt;
        return 0;
    }
    if (!json_is_string(v)) {
        sdxs_reply_error(reply, 400, name, "%s must be a string", name);
        return 400;
    }
    if (json_string_length(v) > max) {
        sdxs_reply_error(reply, 400, name, "%s is %zu bytes; the limit is %zu", name,
                         json_string_length(v), max);
        return 400;
    }
    if (strlen(json_string_value(v)) != json_string_length(v)) {
        sdxs_reply_error(reply, 400, name, "%s contains a NUL character", name);
        return 400;
    }
    *out = json_string_value(v);
    return 0;
}

/* An integer: a JSON integer, or a decimal string in a query or form. */
static bool as_integer(const sdxs_params *p, json_t *v, long long *out)
{
    if (json_is_integer(v)) {
        *out = json_integer_value(v);
        return true;
    }
    if (p->text && json_is_string(v)) {
        const char *s = json_string_value(v);
        char *end;
        if (!s[0] || strlen(s) > 20)
            return false;
        *out = strtoll(s, &end, 10);
        return *end == '\0';
    }
    return false;
}

static int get_int(const sdxs_params *p, const char *name, long long lo, long long hi,
                   long long dflt, long long *out, sdxs_reply *reply)
{
    json_t *v = param(p, name);
    long long x;
    if (!v) {
        *out = dflt;
        return 0;
    }
    if (!as_integer(p, v, &x) || x < lo || x > hi) {
        sdxs_reply_error(reply, 400, name, "%s must be an integer from %lld to %lld", name, lo,
                         hi);
        return 400;
    }
    *out = x;
    return 0;
}

static int get_number(const sdxs_params *p, const char *name, double lo, double hi, double dflt,
                      double *out, sdxs_reply *reply)
{
    json_t *v = param(p, name);
    double x = 0.0;
    bool ok = false;
    if (!v) {
        *out = dflt;
        return 0;
    }
    if (json_is_number(v)) {
        x = json_number_value(v);
        ok = true;
    } else if (p->text && json_is_string(v)) {
        const char *s = json_string_value(v);
        char *end;
        x = strtod(s, &end);
        ok = s[0] && *end == '\0';
    }
    if (!ok || !(x >= lo && x <= hi)) {
        sdxs_reply_error(reply, 400, name, "%s must be a number from %g to %g", name, lo, hi);
        return 400;
    }
    *out = x;
    return 0;
}

/* A seed: absent, null (or -1 where AUTOMATIC1111's API is spoken) picks a random one. */
static int get_seed(const sdxs_params *p, const char *name, bool minus_one_random,
                    sdxs_api_state *st, uint64_t *out, sdxs_reply *reply)
{
    long long x;
    int rc = get_int(p, name, minus_one_random ? -1 : 0, (long long)SDXS_SERVE_MAX_SEED, -1, &x,
                     reply);
    if (rc)
        return rc;
    st->seed_random = x < 0;
    *out = x < 0 ? sdxs_serve_random_seed() : (uint64_t)x;
    return 0;
}

static int check_side(const sdxs_server *s, const char *name, long long v, sdxs_reply *reply)
{
    if (v < s->min_side || v > s->max_side || v % s->multiple) {
        sdxs_reply_error(reply, 400, name,
                         "%s %lld is not allowed: use a multiple of %d from %d to %d", name, v,
                         s->multiple, s->min_side, s->max_side);
        return 400;
    }
    return 0;
}

static int get_size(const sdxs_server *s, const sdxs_params *p, int *w, int *h,
                    sdxs_reply *reply)
{
    long long x = 0, y = 0;
    int rc = get_int(p, "width", 0, 1 << 16, s->default_width, &x, reply);
    if (!rc)
        rc = get_int(p, "height", 0, 1 << 16, s->default_height, &y, reply);
    if (!rc)
        rc = check_side(s, "width", x, reply);
    if (!rc)
        rc = check_side(s, "height", y, reply);
    *w = (int)x;
    *h = (int)y;
    return rc;
}

/* OpenAI's "size": "WxH". */
static int get_openai_size(const sdxs_server *s, const sdxs_params *p, int *w, int *h,
                           sdxs_reply *reply)
{
    const char *size;
    int rc = get_string(p, "size", 32, NULL, &size, reply), end = 0;
    unsigned x, y;
    *w = s->default_width;
    *h = s->default_height;
    if (rc || !size || !strcmp(size, "auto"))
        return rc;
    if (sscanf(size, "%5ux%5u%n", &x, &y, &end) != 2 || size[end]) {
        sdxs_reply_error(reply, 400, "size", "size must be \"WIDTHxHEIGHT\" (e.g. \"%dx%d\")",
                         s->default_width, s->default_height);
        return 400;
    }
    rc = check_side(s, "size", x, reply);
    if (!rc)
        rc = check_side(s, "size", y, reply);
    *w = (int)x;
    *h = (int)y;
    return rc;
}

static int get_format(const sdxs_params *p, const char *name, sdxs_api_state *st,
                      sdxs_reply *reply)
{
    const char *f;
    int rc = get_string(p, name, 16, "png", &f, reply);
    if (rc)
        return rc;
    if (!strcmp(f, "png")) {
        st->format = FORMAT_PNG;
    } else if (!strcmp(f, "jpeg") || !strcmp(f, "jpg")) {
        st->format = FORMAT_JPEG;
    } else {
        sdxs_reply_error(reply, 400, name, "%s must be \"png\" or \"jpeg\"", name);
        return 400;
    }
    return 0;
}

/* ---- init images ---- */

static int decode_init(const uint8_t *bytes, size_t len, const char *param, sdxs_image *out,
                       sdxs_reply *reply)
{
    sdxs_image_limits lim = {SDXS_SERVE_MAX_INIT_SIDE, SDXS_SERVE_MAX_INIT_SIDE,
                             SDXS_SERVE_MAX_INIT_PIXELS};
    sdxs_error err;
    if (!len) {
        sdxs_reply_error(reply, 400, param, "%s is empty", param);
        return 400;
    }
    if (sdxs_image_decode(bytes, len, &lim, out, &err) != SDXS_OK) {
        sdxs_reply_error(reply, err.status == SDXS_ERR_RUNTIME ? 500 : 400, param,
                         "%s: %s", param, err.message);
        return err.status == SDXS_ERR_RUNTIME ? 500 : 400;
    }
    return 0;
}

static int decode_b64_init(json_t *v, const char *param, sdxs_image *out, sdxs_reply *reply)
{
    uint8_t *bytes = NULL;
    size_t len = 0;
    sdxs_error err;
    int rc;
    if (!json_is_string(v)) {
        sdxs_reply_error(reply, 400, param, "%s must be a base64 string", param);
        return 400;
    }
    if (sdxs_base64_decode(json_string_value(v), json_string_length(v), &bytes, &len, param,
                           &err) != SDXS_OK) {
        sdxs_reply_from_error(reply, err.status == SDXS_ERR_INVALID ? 400 : 500, &err);
        return err.status == SDXS_ERR_INVALID ? 400 : 500;
    }
    rc = decode_init(bytes, len, param, out, reply);
    free(bytes);
    return rc;
}

/* ---- the routes ---- */

typedef struct gen_fields {
    const char *prompt;
    int n, width, height;
    uint64_t seed;
    double strength;
    sdxs_image init;
    sdxs_image control; /* /v1/controlnet */
    sdxs_control_mode control_mode;
    double control_scale;
} gen_fields;

static int prepare_generations(sdxs_server *s, const sdxs_params *p, sdxs_api_state *st,
                               gen_fields *g, sdxs_reply *reply)
{
    const char *rf;
    long long n = 1, q = DEFAULT_JPEG_QUALITY;
    int rc = get_string(p, "prompt", SDXS_MAX_PROMPT_BYTES, NULL, &g->prompt, reply);
    if (!rc && !g->prompt) {
        sdxs_reply_error(reply, 400, "prompt", "prompt is required");
        return 400;
    }
    if (!rc)
        rc = get_int(p, "n", 1, s->cfg.max_batch, 1, &n, reply);
    if (!rc)
        rc = get_openai_size(s, p, &g->width, &g->height, reply);
    if (!rc)
        rc = get_string(p, "response_format", 16, "b64_json", &rf, reply);
    if (!rc && strcmp(rf, "b64_json")) {
        sdxs_reply_error(reply, 400, "response_format",
                         "response_format must be \"b64_json\": this server keeps no images to "
                         "link to");
        return 400;
    }
    if (!rc)
        rc = get_format(p, "output_format", st, reply);
    if (!rc)
        rc = get_int(p, "output_compression", 1, 100, DEFAULT_JPEG_QUALITY, &q, reply);
    if (!rc)
        rc = get_seed(p, "seed", false, st, &g->seed, reply);
    g->n = (int)n;
    st->quality = (int)q;
    return rc;
}

static int prepare_native(sdxs_server *s, const sdxs_api_input *in, const sdxs_params *p,
                          sdxs_api_state *st, gen_fields *g, sdxs_reply *reply)
{
    long long q = DEFAULT_JPEG_QUALITY;
    int rc = get_string(p, "prompt", SDXS_MAX_PROMPT_BYTES, "", &g->prompt, reply);
    g->n = 1;
    if (!rc)
        rc = get_size(s, p, &g->width, &g->height, reply);
    if (!rc)
        rc = get_format(p, "format", st, reply);
    if (!rc)
        rc = get_int(p, "quality", 1, 100, DEFAULT_JPEG_QUALITY, &q, reply);
    if (!rc)
        rc = get_seed(p, "seed", false, st, &g->seed, reply);
    st->quality = (int)q;
    if (rc || (in->route != SDXS_ROUTE_IMG2IMG && in->route != SDXS_ROUTE_CONTROLNET))
        return rc;

    /* The ControlNet's settings: how the image is prepared and the residuals' scale. */
    if (in->route == SDXS_ROUTE_CONTROLNET) {
        const char *mode;
        rc = get_string(p, "control_mode", 16, "sketch", &mode, reply);
        if (rc)
            return rc;
        if (!strcmp(mode, "sketch"))
            g->control_mode = SDXS_CONTROL_SKETCH;
        else if (!strcmp(mode, "canny"))
            g->control_mode = SDXS_CONTROL_CANNY;
        else if (!strcmp(mode, "none"))
            g->control_mode = SDXS_CONTROL_NONE;
        else {
            sdxs_reply_error(reply, 400, "control_mode",
                             "control_mode must be \"sketch\", \"canny\" or \"none\"");
            return 400;
        }
        rc = get_number(p, "control_scale", 0.0, MAX_CONTROL_SCALE, 1.0, &g->control_scale,
                        reply);
    } else {
        rc = get_number(p, "strength", 0.0, 1.0, DEFAULT_STRENGTH, &g->strength, reply);
    }
    if (rc)
        return rc;

    /* The image (init or control): the raw body, the form's image, or "image" in the JSON. */
    {
        sdxs_image *img = in->route == SDXS_ROUTE_CONTROLNET ? &g->control : &g->init;
        if (in->kind == SDXS_BODY_JSON) {
            json_t *v = param(p, "image");
            if (!v) {
                sdxs_reply_error(reply, 400, "image", "image is required (base64 PNG or JPEG)");
                return 400;
            }
            return decode_b64_init(v, "image", img, reply);
        }
        if (!in->body || !in->len) {
            sdxs_reply_error(reply, 400, "image",
                             "image is required: send it as the body (image/png or image/jpeg), "
                             "as the form field \"image\", or base64 in JSON");
            return 400;
        }
        return decode_init(in->body, in->len, "image", img, reply);
    }
}

/* Records an AUTOMATIC1111 field the model cannot honour, with why. */
static void ignore_field(sdxs_api_state *st, const char *name, const char *why)
{
    if (!st->ignored)
        st->ignored = json_object();
    if (st->ignored)
        json_object_set_new(st->ignored, name, json_string(why));
}

static int prepare_a1111(sdxs_server *s, const sdxs_api_input *in, const sdxs_params *p,
                         sdxs_api_state *st, gen_fields *g, sdxs_reply *reply)
{
    const char *neg;
    long long n = 1, steps = 1;
    double cfg = 1.0;
    int rc = get_string(p, "prompt", SDXS_MAX_PROMPT_BYTES, "", &g->prompt, reply);
    if (!rc)
        rc = get_string(p, "negative_prompt", SDXS_MAX_PROMPT_BYTES, "", &neg, reply);
    if (!rc)
        rc = get_size(s, p, &g->width, &g->height, reply);
    if (!rc)
        rc = get_int(p, "batch_size", 1, s->cfg.max_batch, 1, &n, reply);
    if (!rc)
        rc = get_int(p, "steps", 1, 1000, 1, &steps, reply);
    if (!rc)
        rc = get_number(p, "cfg_scale", 0.0, 100.0, 1.0, &cfg, reply);
    if (!rc)
        rc = get_seed(p, "seed", true, st, &g->seed, reply);
    if (rc)
        return rc;
    g->n = (int)n;
    st->format = FORMAT_PNG;
    if (neg[0])
        ignore_field(st, "negative_prompt",
                     "SDXS runs without classifier-free guidance: nothing uses a negative prompt");
    if (steps > 1)
        ignore_field(st, "steps", "SDXS makes an image in one step");
    if (param(p, "cfg_scale") && cfg != 1.0 && cfg != 0.0)
        ignore_field(st, "cfg_scale", "SDXS runs without classifier-free guidance");
    if (in->route != SDXS_ROUTE_SD_IMG2IMG)
        return 0;

    rc = get_number(p, "denoising_strength", 0.0, 1.0, DEFAULT_A1111_STRENGTH, &g->strength,
                    reply);
    if (rc)
        return rc;
    {
        json_t *images = param(p, "init_images");
        if (!json_is_array(images) || json_array_size(images) == 0) {
            sdxs_reply_error(reply, 400, "init_images",
                             "init_images must be a list of base64 images, at least one");
            return 400;
        }
        if (json_array_size(images) > 1)
            ignore_field(st, "init_images", "only the first init image is used");
        return decode_b64_init(json_array_get(images, 0), "init_images", &g->init, reply);
    }
}

int sdxs_api_prepare(sdxs_server *s, const sdxs_api_input *in, sdxs_api_state *st,
                     sdxs_reply *reply)
{
    sdxs_params p = {NULL, false};
    gen_fields g;
    sdxs_error err;
    int rc;

    /* Step 1: the parameters, from the JSON body or the query/form fields. */
    memset(&g, 0, sizeof(g));
    memset(st, 0, sizeof(*st));
    st->quality = DEFAULT_JPEG_QUALITY;
    rc = in->kind == SDXS_BODY_JSON ? params_from_json(in, &p, reply)
                                    : params_from_fields(in, &p, reply);

    /* Step 2: the route's fields, each checked against its limit. */
    if (!rc) {
        switch (in->route) {
        case SDXS_ROUTE_GENERATIONS:
            rc = prepare_generations(s, &p, st, &g, reply);
            break;
        case SDXS_ROUTE_TXT2IMG:
        case SDXS_ROUTE_IMG2IMG:
            rc = prepare_native(s, in, &p, st, &g, reply);
            break;
        case SDXS_ROUTE_CONTROLNET:
            if (!s->has_controlnet) {
                sdxs_reply_error(reply, 404, NULL, "this server has no ControlNet: start it "
                                 "with --controlnet DIR");
                rc = 404;
                break;
            }
            rc = prepare_native(s, in, &p, st, &g, reply);
            break;
        case SDXS_ROUTE_SD_TXT2IMG:
        case SDXS_ROUTE_SD_IMG2IMG:
            rc = prepare_a1111(s, in, &p, st, &g, reply);
            break;
        default:
            sdxs_panic("sdxs_api_prepare: route %d makes no images", (int)in->route);
        }
    }

    /* Step 3: the job. */
    if (!rc) {
        st->job = sdxs_job_new(g.n, g.prompt, &err);
        if (!st->job) {
            sdxs_reply_from_error(reply, 500, &err);
            rc = 500;
        }
    }
    if (!rc) {
        st->job->width = g.width;
        st->job->height = g.height;
        for (int i = 0; i < g.n; i++)
            st->job->seeds[i] = g.seed + (uint64_t)i;
        st->job->init = g.init;
        g.init.rgb = NULL;
        st->job->strength = (float)g.strength;
        st->job->control = g.control;
        g.control.rgb = NULL;
        st->job->control_mode = g.control_mode;
        st->job->control_scale = (float)g.control_scale;
        st->job->counted = true;
        if (in->route == SDXS_ROUTE_SD_TXT2IMG || in->route == SDXS_ROUTE_SD_IMG2IMG) {
            json_object_del(p.obj, "init_images"); /* the echo leaves the big images out */
            json_object_set_new(p.obj, "seed", json_integer((json_int_t)g.seed));
            st->echo = json_incref(p.obj);
        }
    }
    sdxs_image_free(&g.init);
    sdxs_image_free(&g.control);
    json_decref(p.obj);
    return rc;
}

/* ---- responses ---- */

static sdxs_status encode(const sdxs_job *job, int i, const sdxs_api_state *st, uint8_t **out,
                          size_t *len, sdxs_error *err)
{
    char params[SDXS_MAX_PROMPT_BYTES + 256];
    const char *text[] = {"parameters", params, "Software", "sdxs serve", NULL};
    if (st->format == FORMAT_JPEG)
        return sdxs_jpeg_encode(&job->out[i], st->quality, out, len, err);
    snprintf(params, sizeof(params), "%s\nSteps: 1, Seed: %llu, Size: %dx%d%s%s%s",
             job->prompt, (unsigned long long)job->seeds[i], job->width, job->height,
             job->init.rgb ? ", img2img" : "", job->control.rgb ? ", ControlNet " : "",
             !job->control.rgb ? ""
             : job->control_mode == SDXS_CONTROL_SKETCH ? "sketch"
             : job->control_mode == SDXS_CONTROL_CANNY  ? "canny"
                                                        : "none");
    return sdxs_png_encode_mode(&job->out[i], text, SDXS_PNG_FAST, out, len, err);
}

static json_t *a1111_info(const sdxs_api_state *st, const sdxs_job *job)
{
    json_t *seeds = json_array(), *prompts = json_array(), *info;
    for (int i = 0; i < job->n; i++) {
        json_array_append_new(seeds, json_integer((json_int_t)job->seeds[i]));
        json_array_append_new(prompts, json_string(job->prompt));
    }
    info = json_pack("{s:s,s:o,s:I,s:o,s:i,s:i,s:i,s:i,s:s,s:O?}", "prompt", job->prompt,
                     "all_prompts", prompts, "seed", (json_int_t)job->seeds[0], "all_seeds",
                     seeds, "width", job->width, "height", job->height, "steps", 1,
                     "batch_size", job->n, "sampler_name", "one-step", "ignored", st->ignored);
    if (info && job->init.rgb)
        json_object_set_new(info, "denoising_strength", json_real(job->strength));
    return info;
}

/* The JSON bodies: OpenAI's list of b64_json, or AUTOMATIC1111's images, parameters, info. */
static void reply_images_json(sdxs_route route, sdxs_api_state *st, uint8_t **enc, size_t *lens,
                              sdxs_reply *reply)
{
    const sdxs_job *job = st->job;
    json_t *list = json_array(), *root;
    for (int i = 0; i < job->n; i++) {
        size_t blen;
        char *b64 = sdxs_base64_encode(enc[i], lens[i], &blen);
        json_t *str = b64 ? json_stringn_nocheck(b64, blen) : NULL;
        free(b64);
        if (route == SDXS_ROUTE_GENERATIONS)
            json_array_append_new(list, json_pack("{s:o?,s:I}", "b64_json", str, "seed",
                                                  (json_int_t)job->seeds[i]));
        else
            json_array_append_new(list, str);
    }
    if (route == SDXS_ROUTE_GENERATIONS) {
        root = json_pack("{s:I,s:o,s:s}", "created", (json_int_t)time(NULL), "data", list,
                         "output_format", st->format == FORMAT_JPEG ? "jpeg" : "png");
    } else {
        json_t *info = a1111_info(st, job);
        char *info_text = info ? json_dumps(info, JSON_COMPACT) : NULL;
        json_decref(info);
        root = json_pack("{s:o,s:O,s:s?}", "images", list, "parameters",
                         st->echo ? (json_t *)st->echo : json_object(), "info", info_text);
        free(info_text);
    }
    sdxs_reply_json(reply, 200, root);
}

void sdxs_api_finish(sdxs_server *s, sdxs_route route, sdxs_api_state *st, sdxs_reply *reply)
{
    sdxs_job *job = st->job;
    uint8_t *enc[SDXS_SERVE_MAX_BATCH] = {NULL};
    size_t lens[SDXS_SERVE_MAX_BATCH] = {0};
    sdxs_error err;
    double t0 = sdxs_now_ms();
    int i;

    if (job->http_status != 200) {
        sdxs_reply_from_error(reply, job->http_status, &job->err);
        if (job->http_status == 503)
            reply->retry_after = sdxs_queue_retry_after_s(&s->queue);
        return;
    }

    /* Step 1: encode every image. */
    for (i = 0; i < job->n; i++)
        if (encode(job, i, st, &enc[i], &lens[i], &err) != SDXS_OK)
            break;
    if (i < job->n) {
        sdxs_reply_from_error(reply, 500, &err);
    } else if (route == SDXS_ROUTE_TXT2IMG || route == SDXS_ROUTE_IMG2IMG ||
               route == SDXS_ROUTE_CONTROLNET) {
        /* Step 2a: the image itself. */
        reply->status = 200;
        reply->content_type = st->format == FORMAT_JPEG ? "image/jpeg" : "image/png";
        reply->body = enc[0];
        reply->len = lens[0];
        enc[0] = NULL;
    } else {
        /* Step 2b: base64 inside JSON. */
        reply_images_json(route, st, enc, lens, reply);
    }
    for (i = 0; i < job->n; i++)
        free(enc[i]);
    snprintf(reply->seed, sizeof(reply->seed), "%llu", (unsigned long long)job->seeds[0]);
    snprintf(reply->timing, sizeof(reply->timing),
             "queue;dur=%.1f, engine;dur=%.1f, encode;dur=%.1f, batch;desc=\"%d images\"",
             job->started_ms - job->enqueued_ms, job->finished_ms - job->started_ms,
             sdxs_now_ms() - t0, job->batch_images);
    sdxs_metrics_stage(&s->metrics, SDXS_STAGE_ENCODE, sdxs_now_ms() - t0);
}

void sdxs_api_state_free(sdxs_api_state *st)
{
    sdxs_job_free(st->job);
    json_decref(st->echo);
    json_decref(st->ignored);
    memset(st, 0, sizeof(*st));
}

/* ---- GET endpoints ---- */

void sdxs_api_models(sdxs_server *s, sdxs_reply *reply)
{
    char size[32];
    json_t *model;
    snprintf(size, sizeof(size), "%dx%d", s->default_width, s->default_height);
    model = json_pack("{s:s,s:s,s:i,s:s,s:s,s:s,s:i,s:i,s:i,s:i,s:b}", "id", s->model_name,
                      "object", "model", "created", 0, "owned_by", "sdxs", "backend", s->backend,
                      "default_size", size, "min_side", s->min_side, "max_side", s->max_side,
                      "size_multiple", s->multiple, "max_batch", s->cfg.max_batch, "controlnet",
                      s->has_controlnet);
    sdxs_reply_json(reply, 200, json_pack("{s:s,s:[o]}", "object", "list", "data", model));
}

void sdxs_api_healthz(sdxs_server *s, sdxs_reply *reply)
{
    if (atomic_load(&s->draining))
        sdxs_reply_error(reply, 503, NULL, "the server is shutting down");
    else if (!atomic_load(&s->ready))
        sdxs_reply_error(reply, 503, NULL, "the model is loading");
    else
        sdxs_reply_json(reply, 200,
                        json_pack("{s:s,s:s}", "status", "ok", "model", s->model_name));
}

int sdxs_api_stream_params(sdxs_server *s, const sdxs_api_input *in, sdxs_stream_params *sp,
                           sdxs_reply *reply)
{
    sdxs_params p = {NULL, false};
    const char *prompt = "";
    long long fps = 0, fpseed = 1, q = 80, seed = 0;
    int rc = params_from_fields(in, &p, reply);

    if (!rc)
        rc = get_string(&p, "prompt", SDXS_MAX_PROMPT_BYTES, "", &prompt, reply);
    if (!rc)
        rc = get_size(s, &p, &sp->width, &sp->height, reply);
    if (!rc)
        rc = get_int(&p, "fps", 0, SDXS_SERVE_MAX_FPS, 0, &fps, reply);
    if (!rc)
        rc = get_int(&p, "frames_per_seed", 1, 10000, fps > 0 ? 2 * fps : 16, &fpseed, reply);
    if (!rc)
        rc = get_int(&p, "quality", 1, 100, 80, &q, reply);
    if (!rc)
        rc = get_int(&p, "seed", 0, (long long)SDXS_SERVE_MAX_SEED, 0, &seed, reply);
    snprintf(sp->prompt, sizeof(sp->prompt), "%s", prompt);
    sp->fps = (int)fps;
    sp->frames_per_seed = (int)fpseed;
    sp->quality = (int)q;
    sp->seed = (uint64_t)seed;
    json_decref(p.obj);
    return rc;
}
