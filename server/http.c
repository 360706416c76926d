/* http.c: the HTTP layer of `sdxs serve` on libmicrohttpd: the route table, request bodies read
 * up to their cap, authentication, CORS, the access log, and the hand-over to the engine queue.
 * A request that waits for the engine is suspended (no thread sleeps on it) and resumed by the
 * queue's worker when its images are ready. Every error answers as JSON through api.c.
 *
 * Adding a route is one row in `routes` (and, for a new image mode, a case in sdxs_api_prepare).
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "engine/util.h"
#include "server/server.h"

/* ---- the route table ---- */

#define BODY_JSON (1u << SDXS_BODY_JSON)
#define BODY_IMAGE (1u << SDXS_BODY_IMAGE)
#define BODY_MULTIPART (1u << SDXS_BODY_MULTIPART)

typedef enum handler_kind {
    HANDLE_JOB,    /* an engine job: sdxs_api_prepare, the queue, sdxs_api_finish */
    HANDLE_NOW,    /* answered at once by route_def.now */
    HANDLE_STREAM, /* a multipart frame stream (stream.c) */
    HANDLE_STATIC, /* a file of the demo page */
} handler_kind;

typedef struct route_def {
    const char *path; /* exact, or a prefix when it ends in '/' */
    bool post;        /* POST, else GET (and HEAD) */
    sdxs_route route;
    handler_kind kind;
    unsigned bodies; /* BODY_* accepted (POST) */
    bool images;     /* the body may carry images: --max-body-bytes, else the JSON cap */
    bool open;       /* no API key needed */
    void (*now)(sdxs_server *s, sdxs_reply *reply);
} route_def;

static void metrics_page(sdxs_server *s, sdxs_reply *reply);

static const route_def routes[] = {
    {"/v1/images/generations", true, SDXS_ROUTE_GENERATIONS, HANDLE_JOB, BODY_JSON, false, false,
     NULL},
    {"/v1/txt2img", true, SDXS_ROUTE_TXT2IMG, HANDLE_JOB, BODY_JSON, false, false, NULL},
    {"/v1/img2img", true, SDXS_ROUTE_IMG2IMG, HANDLE_JOB, BODY_JSON | BODY_IMAGE | BODY_MULTIPART,
     true, false, NULL},
    {"/sdapi/v1/txt2img", true, SDXS_ROUTE_SD_TXT2IMG, HANDLE_JOB, BODY_JSON, false, false, NULL},
    {"/sdapi/v1/img2img", true, SDXS_ROUTE_SD_IMG2IMG, HANDLE_JOB, BODY_JSON, true, false, NULL},
    {"/v1/controlnet", true, SDXS_ROUTE_CONTROLNET, HANDLE_JOB,
     BODY_JSON | BODY_IMAGE | BODY_MULTIPART, true, false, NULL},
    {"/v1/stream", false, SDXS_ROUTE_STREAM, HANDLE_STREAM, 0, false, false, NULL},
    {"/v1/models", false, SDXS_ROUTE_MODELS, HANDLE_NOW, 0, false, false, sdxs_api_models},
    {"/healthz", false, SDXS_ROUTE_HEALTHZ, HANDLE_NOW, 0, false, true, sdxs_api_healthz},
    {"/metrics", false, SDXS_ROUTE_METRICS, HANDLE_NOW, 0, false, false, metrics_page},
    {"/", false, SDXS_ROUTE_STATIC, HANDLE_STATIC, 0, false, true, NULL},
    {"/static/", false, SDXS_ROUTE_STATIC, HANDLE_STATIC, 0, false, true, NULL},
};

static const route_def *find_route(const char *url)
{
    for (size_t i = 0; i < SDXS_ARRAY_LEN(routes); i++) {
        const char *p = routes[i].path;
        size_t n = strlen(p);
        if (n > 1 && p[n - 1] == '/' ? !strncmp(url, p, n) && url[n] : !strcmp(url, p))
            return &routes[i];
    }
    return NULL;
}

static void metrics_page(sdxs_server *s, sdxs_reply *reply)
{
    size_t len = 0;
    char *text = sdxs_metrics_render(s, &len);
    if (!text) {
        sdxs_reply_error(reply, 500, NULL, "out of memory while rendering the metrics");
        return;
    }
    reply->status = 200;
    reply->content_type = "text/plain; version=0.0.4; charset=utf-8";
    reply->body = (uint8_t *)text;
    reply->len = len;
}

/* ---- one request ---- */

typedef enum phase {
    PHASE_BODY = 0, /* reading the body */
    PHASE_QUEUED,   /* the job is with the engine; the connection is suspended */
    PHASE_ANSWERED, /* a response is queued */
} phase;

struct sdxs_http_req {
    sdxs_server *srv;
    struct MHD_Connection *conn;
    uint64_t id;
    double t0;
    char method[8];
    char path[128]; /* for the access log: the path without the query, truncated */
    const route_def *def;
    sdxs_route route;
    phase phase;

    /* An error found before the body was read: answered once it has been (discarded). */
    int pending_status;
    sdxs_reply pending;

    sdxs_body_kind kind;
    uint8_t *body; /* the JSON text or the image bytes (multipart: the image field) */
    size_t len, cap, limit;
    bool too_large;
    uint64_t discarded;
    struct MHD_PostProcessor *pp;
    int form_status; /* an error in a multipart field: 400 or 413 */
    char form_param[64];

    int n_fields;
    char *names[SDXS_SERVE_MAX_PARAMS], *values[SDXS_SERVE_MAX_PARAMS];
    size_t value_lens[SDXS_SERVE_MAX_PARAMS];
    bool too_many_fields;

    sdxs_api_state st;
    atomic_bool job_finished;
    sdxs_viewer *viewer;

    int status;
    uint64_t bytes;
};

/* Bodies whose size is unknown or over the cap are read and dropped up to this many bytes, so
 * that the client sees the 413 instead of a reset; past it the connection is closed. */
#define DISCARD_MAX_BYTES ((uint64_t)1 << 30)

static void req_free(sdxs_http_req *r)
{
    if (r->pp)
        MHD_destroy_post_processor(r->pp);
    free(r->body);
    free(r->pending.body);
    for (int i = 0; i < r->n_fields; i++) {
        free(r->names[i]);
        free(r->values[i]);
    }
    sdxs_api_state_free(&r->st);
    free(r);
}

static void active_add(sdxs_server *s, int d)
{
    pthread_mutex_lock(&s->active_lock);
    s->active += d;
    if (s->active == 0)
        pthread_cond_broadcast(&s->active_cond);
    pthread_mutex_unlock(&s->active_lock);
}

/* ---- responses ---- */

static bool origin_allowed(const sdxs_server *s, const char *origin, const char **allow)
{
    for (int i = 0; origin && i < s->cfg.n_cors; i++) {
        if (!strcmp(s->cfg.cors_origins[i], "*")) {
            *allow = "*";
            return true;
        }
        if (!strcmp(s->cfg.cors_origins[i], origin)) {
            *allow = origin;
            return true;
        }
    }
    return false;
}

static void add_cors(sdxs_server *s, struct MHD_Connection *conn, struct MHD_Response *resp)
{
    const char *origin = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Origin"), *allow;
    if (!origin_allowed(s, origin, &allow))
        return;
    MHD_add_response_header(resp, "Access-Control-Allow-Origin", allow);
    MHD_add_response_header(resp, "Vary", "Origin");
    MHD_add_response_header(resp, "Access-Control-Expose-Headers",
                            "X-Seed, X-Request-Id, Server-Timing, Retry-After");
}

static enum MHD_Result send_response(sdxs_http_req *r, struct MHD_Response *resp, int status)
{
    enum MHD_Result ok;
    char id[24];
    snprintf(id, sizeof(id), "%llu", (unsigned long long)r->id);
    MHD_add_response_header(resp, "X-Request-Id", id);
    add_cors(r->srv, r->conn, resp);
    if (atomic_load(&r->srv->draining))
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    ok = MHD_queue_response(r->conn, (unsigned)status, resp);
    MHD_destroy_response(resp);
    r->status = status;
    r->phase = PHASE_ANSWERED;
    return ok;
}

/* Sends reply (taking its body). */
static enum MHD_Result send_reply(sdxs_http_req *r, sdxs_reply *reply)
{
    struct MHD_Response *resp;
    char num[24];

    if (reply->body)
        resp = MHD_create_response_from_buffer(reply->len, reply->body, MHD_RESPMEM_MUST_FREE);
    else
        resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (!resp) {
        free(reply->body);
        reply->body = NULL;
        return MHD_NO;
    }
    reply->body = NULL;
    r->bytes = reply->len;
    if (reply->content_type)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, reply->content_type);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (reply->seed[0])
        MHD_add_response_header(resp, "X-Seed", reply->seed);
    if (reply->timing[0])
        MHD_add_response_header(resp, "Server-Timing", reply->timing);
    if (reply->retry_after > 0) {
        snprintf(num, sizeof(num), "%d", reply->retry_after);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, num);
    }
    if (reply->status == 401)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    if (reply->status == 405 && r->def)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW,
                                r->def->post ? "POST, OPTIONS" : "GET, HEAD, OPTIONS");
    return send_response(r, resp, reply->status);
}

static enum MHD_Result send_error(sdxs_http_req *r, int status, const char *param,
                                  int retry_after, const char *fmt, ...) SDXS_PRINTF(5, 6);
static enum MHD_Result send_error(sdxs_http_req *r, int status, const char *param,
                                  int retry_after, const char *fmt, ...)
{
    sdxs_reply reply;
    char msg[600];
    va_list ap;
    memset(&reply, 0, sizeof(reply));
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    sdxs_reply_error(&reply, status, param, "%s", msg);
    reply.retry_after = retry_after;
    return send_reply(r, &reply);
}

/* An error decided before the body was read; answered after it (see DISCARD_MAX_BYTES). */
static void set_pending(sdxs_http_req *r, int status, const char *param, int retry_after,
                        const char *fmt, ...) SDXS_PRINTF(5, 6);
static void set_pending(sdxs_http_req *r, int status, const char *param, int retry_after,
                        const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    if (r->pending_status)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    sdxs_reply_error(&r->pending, status, param, "%s", msg);
    r->pending.retry_after = retry_after;
    r->pending_status = status;
}

/* ---- request fields: the query string, and a form's text fields ---- */

static int find_field(sdxs_http_req *r, const char *name)
{
    for (int i = r->n_fields - 1; i >= 0; i--)
        if (!strcmp(r->names[i], name))
            return i;
    return -1;
}

/* Appends to field name (a new one unless append and it exists); false when a cap is hit. */
static bool add_field(sdxs_http_req *r, const char *name, const char *data, size_t len,
                      bool append)
{
    int i = append ? find_field(r, name) : -1;
    char *grown;
    if (i < 0) {
        if (r->n_fields == SDXS_SERVE_MAX_PARAMS) {
            r->too_many_fields = true;
            return false;
        }
        i = r->n_fields;
        r->names[i] = strdup(name);
        r->values[i] = calloc(1, 1);
        r->value_lens[i] = 0;
        if (!r->names[i] || !r->values[i]) {
            free(r->names[i]);
            free(r->values[i]);
            return false;
        }
        r->n_fields++;
    }
    if (r->value_lens[i] + len > SDXS_SERVE_MAX_PARAM_BYTES) {
        snprintf(r->form_param, sizeof(r->form_param), "%s", name);
        return false;
    }
    grown = realloc(r->values[i], r->value_lens[i] + len + 1);
    if (!grown)
        return false;
    memcpy(grown + r->value_lens[i], data, len);
    r->value_lens[i] += len;
    grown[r->value_lens[i]] = '\0';
    r->values[i] = grown;
    return true;
}

static enum MHD_Result query_field(void *cls, enum MHD_ValueKind kind, const char *key,
                                   const char *value)
{
    sdxs_http_req *r = cls;
    (void)kind;
    if (!add_field(r, key, value ? value : "", value ? strlen(value) : 0, false)) {
        if (!r->too_many_fields && !r->pending_status)
            set_pending(r, 400, key, 0, "%s is longer than %d bytes", key,
                        (int)SDXS_SERVE_MAX_PARAM_BYTES);
        return MHD_NO;
    }
    return MHD_YES;
}

/* ---- bodies ---- */

static bool body_append(sdxs_http_req *r, const char *data, size_t size)
{
    if (r->too_large || r->len + size > r->limit) {
        r->too_large = true;
        r->discarded += size;
        return r->discarded <= DISCARD_MAX_BYTES;
    }
    if (r->len + size > r->cap) {
        size_t cap = r->cap ? r->cap : 16384;
        uint8_t *grown;
        while (cap < r->len + size)
            cap *= 2;
        if (cap > r->limit)
            cap = r->limit;
        grown = realloc(r->body, cap + 1);
        if (!grown) {
            r->too_large = true; /* answered as 413: the memory for it is not there */
            return true;
        }
        r->body = grown;
        r->cap = cap;
    }
    memcpy(r->body + r->len, data, size);
    r->len += size;
    r->body[r->len] = '\0';
    return true;
}

/* A multipart/form-data field: the image (a field named "image" or any file) goes to the body,
 * text fields to the field list. */
static enum MHD_Result form_field(void *cls, enum MHD_ValueKind kind, const char *key,
                                  const char *filename, const char *content_type,
                                  const char *transfer_encoding, const char *data, uint64_t off,
                                  size_t size)
{
    sdxs_http_req *r = cls;
    (void)kind;
    (void)content_type;
    (void)transfer_encoding;
    if (r->form_status)
        return MHD_YES;
    if (!strcmp(key, "image") || filename) {
        if (off == 0 && r->len) {
            r->form_status = 400;
            snprintf(r->form_param, sizeof(r->form_param), "%s", key);
            return MHD_YES;
        }
        if (!body_append(r, data, size))
            return MHD_NO;
        return MHD_YES;
    }
    if (!add_field(r, key, data, size, off > 0)) {
        r->form_status = r->too_many_fields ? 400 : 413;
        snprintf(r->form_param, sizeof(r->form_param), "%s", key);
    }
    return MHD_YES;
}

/* What the body is, from its Content-Type. curl -d sends form-urlencoded by default, so that
 * and a missing type are read as JSON too (the body must still parse as JSON). */
static int body_kind(const char *ct, sdxs_body_kind *kind)
{
    size_t n;
    if (!ct || !ct[0]) {
        *kind = SDXS_BODY_JSON;
        return 0;
    }
    n = strcspn(ct, "; \t");
    if ((n == 16 && !strncasecmp(ct, "application/json", n)) ||
        (n == 33 && !strncasecmp(ct, "application/x-www-form-urlencoded", n)))
        *kind = SDXS_BODY_JSON;
    else if ((n == 9 && !strncasecmp(ct, "image/png", n)) ||
             (n == 10 && !strncasecmp(ct, "image/jpeg", n)) ||
             (n == 9 && !strncasecmp(ct, "image/jpg", n)))
        *kind = SDXS_BODY_IMAGE;
    else if (n == 19 && !strncasecmp(ct, "multipart/form-data", n))
        *kind = SDXS_BODY_MULTIPART;
    else
        return -1;
    return 0;
}

/* ---- authentication ---- */

static bool same_secret(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    unsigned diff = (unsigned)(la ^ lb);
    for (size_t i = 0; i < la; i++)
        diff |= (unsigned)(a[i] ^ b[i % (lb ? lb : 1)]);
    return diff == 0;
}

/* A bearer token in Authorization, or api_key in the query (an <img> cannot send headers). */
static bool authorized(sdxs_server *s, sdxs_http_req *r)
{
    const char *auth, *key;
    if (!s->cfg.api_key || r->def->open)
        return true;
    auth = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (auth && !strncasecmp(auth, "Bearer ", 7)) {
        auth += 7;
        while (*auth == ' ')
            auth++;
        if (same_secret(auth, s->cfg.api_key))
            return true;
    }
    key = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "api_key");
    return key && same_secret(key, s->cfg.api_key);
}

/* ---- the first call: route, method, authentication, type and size, before any body ---- */

static void first_checks(sdxs_server *s, sdxs_http_req *r, const char *url, const char *method)
{
    bool is_get = !strcmp(method, "GET") || !strcmp(method, "HEAD");
    const char *ct, *cl;

    if (!r->def) {
        set_pending(r, 404, NULL, 0, "no route %s %.100s: see GET / for the API", method, url);
        return;
    }
    if (r->def->post ? strcmp(method, "POST") != 0 : !is_get) {
        set_pending(r, 405, NULL, 0, "%.100s takes %s, not %s", r->def->path,
                    r->def->post ? "POST" : "GET", method);
        return;
    }
    if (!authorized(s, r)) {
        set_pending(r, 401, "Authorization", 0,
                    "this server needs an API key: send \"Authorization: Bearer KEY\"");
        return;
    }
    if (r->def->kind == HANDLE_JOB || r->def->kind == HANDLE_STREAM) {
        if (atomic_load(&s->draining)) {
            set_pending(r, 503, NULL, 1, "the server is shutting down");
            return;
        }
        if (!atomic_load(&s->ready)) {
            set_pending(r, 503, NULL, 1, "the model is loading; try again shortly");
            return;
        }
    }
    if (!r->def->post)
        return;

    /* The body's kind and its cap. */
    ct = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    if (body_kind(ct, &r->kind) != 0 || !(r->def->bodies & (1u << r->kind))) {
        set_pending(r, 415, "Content-Type", 0, "%.100s does not take %.60s: send %s",
                    r->def->path, ct ? ct : "(none)",
                    r->def->bodies & BODY_IMAGE
                        ? "application/json, image/png, image/jpeg or multipart/form-data"
                        : "application/json");
        return;
    }
    r->limit = r->def->images ? s->cfg.max_body_bytes : SDXS_SERVE_MAX_JSON_BYTES;
    cl = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl) {
        unsigned long long n = strtoull(cl, NULL, 10);
        if (n > r->limit) {
            set_pending(r, 413, "body", 0, "the body is %llu bytes; the limit for %s is %zu",
                        n, r->def->path, r->limit);
            return;
        }
    }
    if (r->kind == SDXS_BODY_MULTIPART) {
        r->pp = MHD_create_post_processor(r->conn, 65536, form_field, r);
        if (!r->pp)
            set_pending(r, 400, "Content-Type", 0,
                        "multipart/form-data needs a boundary in its Content-Type");
    }
}

/* ---- the final call: dispatch ---- */

static void job_done(sdxs_job *job, void *user)
{
    sdxs_http_req *r = user;
    (void)job;
    atomic_store(&r->job_finished, true);
    MHD_resume_connection(r->conn);
}

static void suspend_conn(void *arg)
{
    sdxs_http_req *r = arg;
    r->phase = PHASE_QUEUED;
    MHD_suspend_connection(r->conn);
}

static void api_input(sdxs_http_req *r, sdxs_api_input *in)
{
    memset(in, 0, sizeof(*in));
    in->route = r->route;
    in->kind = r->kind;
    in->body = r->body;
    in->len = r->len;
    in->n_fields = r->n_fields;
    for (int i = 0; i < r->n_fields; i++) {
        in->field_names[i] = r->names[i];
        in->field_values[i] = r->values[i];
    }
}

static enum MHD_Result start_job(sdxs_server *s, sdxs_http_req *r)
{
    sdxs_api_input in;
    sdxs_reply reply;
    sdxs_submit sub;

    memset(&reply, 0, sizeof(reply));
    api_input(r, &in);
    if (sdxs_api_prepare(s, &in, &r->st, &reply) != 0)
        return send_reply(r, &reply);
    r->st.job->done = job_done;
    r->st.job->user = r;
    sub = sdxs_queue_submit(&s->queue, r->st.job, suspend_conn, r);
    if (sub == SDXS_SUBMIT_OK)
        return MHD_YES; /* suspended; job_done resumes us */
    if (sub == SDXS_SUBMIT_FULL)
        return send_error(r, 429, NULL, sdxs_queue_retry_after_s(&s->queue),
                          "%d requests are queued; the limit is %d (--max-queue)",
                          s->cfg.max_queue, s->cfg.max_queue);
    return send_error(r, 503, NULL, 1, "the server is shutting down");
}

static enum MHD_Result finish_job(sdxs_server *s, sdxs_http_req *r)
{
    sdxs_reply reply;
    memset(&reply, 0, sizeof(reply));
    SDXS_ASSERT(atomic_load(&r->job_finished));
    sdxs_api_finish(s, r->route, &r->st, &reply);
    return send_reply(r, &reply);
}

static enum MHD_Result start_stream(sdxs_server *s, sdxs_http_req *r)
{
    sdxs_api_input in;
    sdxs_reply reply;
    sdxs_stream_params p;
    sdxs_error err;
    struct MHD_Response *resp;
    int status;

    memset(&reply, 0, sizeof(reply));
    memset(&p, 0, sizeof(p));
    api_input(r, &in);
    if (sdxs_api_stream_params(s, &in, &p, &reply) != 0)
        return send_reply(r, &reply);
    status = sdxs_stream_join(&s->streams, &p, r->conn, &r->viewer, &err);
    if (status) {
        sdxs_reply_from_error(&reply, status, &err);
        if (status == 429 || status == 503)
            reply.retry_after = 1;
        return send_reply(r, &reply);
    }
    resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 64 * 1024, sdxs_stream_read,
                                             r->viewer, NULL);
    if (!resp)
        return MHD_NO; /* the viewer leaves in the completion callback */
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
                            "multipart/x-mixed-replace; boundary=" SDXS_STREAM_BOUNDARY);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    return send_response(r, resp, 200);
}

static enum MHD_Result serve_static(sdxs_server *s, sdxs_http_req *r, const char *url)
{
    const char *name = !strcmp(url, "/") ? "index.html" : url + strlen("/static/");
    const sdxs_static_file *f = sdxs_static_find(&s->files, name);
    struct MHD_Response *resp;
    if (!f)
        return send_error(r, 404, NULL, 0, "no file %.100s", url);
    resp = MHD_create_response_from_buffer(f->len, f->data, MHD_RESPMEM_PERSISTENT);
    if (!resp)
        return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, f->mime);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    r->bytes = f->len;
    return send_response(r, resp, 200);
}

static enum MHD_Result preflight(sdxs_server *s, sdxs_http_req *r)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(0, (void *)"",
                                                                MHD_RESPMEM_PERSISTENT);
    const char *origin = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Origin"), *allow;
    if (!resp)
        return MHD_NO;
    if (origin_allowed(s, origin, &allow)) {
        MHD_add_response_header(resp, "Access-Control-Allow-Methods",
                                r->def->post ? "POST, OPTIONS" : "GET, HEAD, OPTIONS");
        MHD_add_response_header(resp, "Access-Control-Allow-Headers",
                                "Authorization, Content-Type");
        MHD_add_response_header(resp, "Access-Control-Max-Age", "600");
    }
    return send_response(r, resp, 204);
}

static enum MHD_Result dispatch(sdxs_server *s, sdxs_http_req *r, const char *url)
{
    sdxs_reply reply;

    /* Errors found on the way in, now that the body is read. */
    if (r->pending_status) {
        r->pending_status = 0;
        return send_reply(r, &r->pending);
    }
    if (r->too_large)
        return send_error(r, 413, "body", 0, "the body is over the limit of %zu bytes for %s",
                          r->limit, r->def->path);
    if (r->form_status == 413)
        return send_error(r, 413, r->form_param, 0, "form field %s is over %d bytes",
                          r->form_param, (int)SDXS_SERVE_MAX_PARAM_BYTES);
    if (r->form_status)
        return send_error(r, 400, r->form_param, 0, "the form has more than one image (%s)",
                          r->form_param);
    if (r->too_many_fields)
        return send_error(r, 400, NULL, 0, "more than %d query or form fields",
                          SDXS_SERVE_MAX_PARAMS);

    switch (r->def->kind) {
    case HANDLE_JOB:
        return start_job(s, r);
    case HANDLE_STREAM:
        return start_stream(s, r);
    case HANDLE_STATIC:
        return serve_static(s, r, url);
    case HANDLE_NOW:
        memset(&reply, 0, sizeof(reply));
        r->def->now(s, &reply);
        return send_reply(r, &reply);
    }
    sdxs_panic("route kind %d", (int)r->def->kind);
}

/* ---- libmicrohttpd's callbacks ---- */

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    sdxs_server *s = cls;
    sdxs_http_req *r = *con_cls;
    (void)version;

    /* First call: the headers are in. */
    if (!r) {
        r = calloc(1, sizeof(*r));
        if (!r)
            return MHD_NO;
        r->srv = s;
        r->conn = conn;
        r->id = atomic_fetch_add(&s->next_id, 1) + 1;
        r->t0 = sdxs_now_ms();
        snprintf(r->method, sizeof(r->method), "%s", method);
        snprintf(r->path, sizeof(r->path), "%s", url);
        r->def = find_route(url);
        r->route = r->def ? r->def->route : SDXS_ROUTE_OTHER;
        *con_cls = r;
        active_add(s, 1);
        if (!strcmp(method, "OPTIONS") && r->def)
            return preflight(s, r);
        first_checks(s, r, url, method);
        if (!r->pending_status && r->def && (r->def->kind == HANDLE_JOB ||
                                             r->def->kind == HANDLE_STREAM))
            MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, query_field, r);
        /* A client that waits for "100 Continue" has sent no body: answer now. */
        if (r->pending_status) {
            const char *expect = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                             MHD_HTTP_HEADER_EXPECT);
            if (expect && !strcasecmp(expect, "100-continue")) {
                r->pending_status = 0;
                return send_reply(r, &r->pending);
            }
        }
        return MHD_YES;
    }

    /* Body data. */
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (r->phase != PHASE_BODY)
            return MHD_YES;
        if (r->pending_status) {
            r->discarded += n;
            return r->discarded <= DISCARD_MAX_BYTES ? MHD_YES : MHD_NO;
        }
        if (r->pp) {
            if (r->too_large) {
                r->discarded += n;
                return r->discarded <= DISCARD_MAX_BYTES ? MHD_YES : MHD_NO;
            }
            if (MHD_post_process(r->pp, upload_data, n) != MHD_YES && !r->too_large &&
                !r->form_status)
                set_pending(r, 400, "body", 0, "the multipart/form-data body is malformed");
            return MHD_YES;
        }
        return body_append(r, upload_data, n) ? MHD_YES : MHD_NO;
    }

    /* The request is complete (or the engine finished its job). */
    switch (r->phase) {
    case PHASE_BODY:
        return dispatch(s, r, url);
    case PHASE_QUEUED:
        return finish_job(s, r);
    case PHASE_ANSWERED:
        return MHD_YES;
    }
    return MHD_NO;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    sdxs_server *s = cls;
    sdxs_http_req *r = *con_cls;
    bool aborted = toe != MHD_REQUEST_TERMINATED_COMPLETED_OK;
    double ms;
    (void)conn;

    if (!r)
        return;
    *con_cls = NULL;
    if (r->phase == PHASE_QUEUED && !atomic_load(&r->job_finished))
        sdxs_panic("request %llu completed while its job is queued", (unsigned long long)r->id);
    if (r->viewer)
        r->bytes = sdxs_stream_leave(&s->streams, r->viewer);
    ms = sdxs_now_ms() - r->t0;
    if (!r->status)
        r->status = 500; /* the connection ended before any response was queued */
    sdxs_metrics_request(&s->metrics, r->route, r->status, ms, aborted);
    SDXS_INFO("access", "id=%llu %s %s %d %llu bytes %.1f ms%s", (unsigned long long)r->id,
              r->method, r->path, r->status, (unsigned long long)r->bytes, ms,
              aborted ? " (client gone)" : "");
    req_free(r);
    active_add(s, -1);
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char line[512];
    size_t n;
    (void)cls;
    vsnprintf(line, sizeof(line), fmt, ap);
    n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
    SDXS_WARN("http", "libmicrohttpd: %s", line);
}

/* ---- the daemon ---- */

static sdxs_status resolve(const char *host, struct sockaddr_storage *addr, bool *v6,
                           sdxs_error *err)
{
    struct addrinfo hints, *res = NULL;
    int rc;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    rc = getaddrinfo(host, NULL, &hints, &res);
    if (rc != 0 || !res)
        return sdxs_fail(err, SDXS_ERR_INVALID, "--host", "cannot resolve --host %s: %s", host,
                         gai_strerror(rc));
    memset(addr, 0, sizeof(*addr));
    memcpy(addr, res->ai_addr, res->ai_addrlen);
    *v6 = res->ai_family == AF_INET6;
    freeaddrinfo(res);
    return SDXS_OK;
}

sdxs_status sdxs_http_start(sdxs_server *s, sdxs_error *err)
{
    struct sockaddr_storage addr;
    char *cert = NULL, *key = NULL;
    size_t cert_len = 0, key_len = 0;
    unsigned flags = MHD_USE_AUTO_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ITC |
                     MHD_USE_ERROR_LOG;
    const union MHD_DaemonInfo *info;
    bool v6 = false;
    sdxs_status st;

    /* Step 1: the address and, for HTTPS, the certificate and key. */
    st = resolve(s->cfg.host, &addr, &v6, err);
    if (st != SDXS_OK)
        return st;
    if (v6)
        flags |= MHD_USE_IPv6;
    if (v6)
        ((struct sockaddr_in6 *)&addr)->sin6_port = htons((uint16_t)s->cfg.port);
    else
        ((struct sockaddr_in *)&addr)->sin_port = htons((uint16_t)s->cfg.port);
    if (s->cfg.tls_cert || s->cfg.tls_key) {
        if (!s->cfg.tls_cert || !s->cfg.tls_key)
            return sdxs_fail(err, SDXS_ERR_INVALID, s->cfg.tls_cert ? "--tls-key" : "--tls-cert",
                             "HTTPS needs both --tls-cert and --tls-key");
        if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES)
            return sdxs_fail(err, SDXS_ERR_INVALID, "--tls-cert",
                             "this libmicrohttpd was built without TLS (GnuTLS)");
        st = sdxs_read_file(s->cfg.tls_cert, (size_t)1 << 20, &cert, &cert_len, err);
        if (st == SDXS_OK)
            st = sdxs_read_file(s->cfg.tls_key, (size_t)1 << 20, &key, &key_len, err);
        if (st != SDXS_OK) {
            free(cert);
            return st;
        }
        flags |= MHD_USE_TLS;
    }
    snprintf(s->scheme, sizeof(s->scheme), "%s", cert ? "https" : "http");

    /* Step 2: the daemon: a pool of polling threads; requests for the engine are suspended. */
    s->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, s, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, NULL,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned)s->cfg.http_threads,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)120, MHD_OPTION_CONNECTION_LIMIT, (unsigned)1000,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)128 * 1024, cert ? MHD_OPTION_HTTPS_MEM_CERT : MHD_OPTION_END, cert,
        MHD_OPTION_HTTPS_MEM_KEY, key, MHD_OPTION_END);
    free(cert);
    free(key);
    if (!s->daemon)
        return sdxs_fail(err, SDXS_ERR_RUNTIME, "--port",
                         "cannot listen on %s port %d (in use, or not allowed?)%s", s->cfg.host,
                         s->cfg.port, cert_len ? "; or the TLS certificate/key is invalid" : "");
    info = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    s->port = info ? info->port : s->cfg.port;
    return SDXS_OK;
}

void sdxs_http_quiesce(sdxs_server *s)
{
    MHD_socket fd;
    if (!s->daemon)
        return;
    fd = MHD_quiesce_daemon(s->daemon);
    if (fd != MHD_INVALID_SOCKET)
        close(fd);
}

bool sdxs_http_drain(sdxs_server *s, int timeout_ms)
{
    double deadline = sdxs_now_ms() + timeout_ms;
    bool done;
    pthread_mutex_lock(&s->active_lock);
    while (s->active > 0 && sdxs_now_ms() < deadline) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 50 * 1000000L; /* re-check every 50 ms */
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&s->active_cond, &s->active_lock, &ts);
    }
    done = s->active == 0;
    pthread_mutex_unlock(&s->active_lock);
    return done;
}

void sdxs_http_stop(sdxs_server *s)
{
    if (s->daemon)
        MHD_stop_daemon(s->daemon);
    s->daemon = NULL;
}
