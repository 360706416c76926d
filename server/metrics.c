/* metrics.c: the server's counters and histograms (requests by route and status, latency per
 * route and per stage, batch sizes, images per second, queue and stream gauges) and their
 * Prometheus text exposition for GET /metrics. Every series is fixed at compile time, so the
 * page has a bounded size whatever the traffic.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/util.h"
#include "server/server.h"

/* Seconds: from half a millisecond (a cached page) to a minute (a big batch on the CPU). */
static const double seconds_bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                        0.25,   0.5,   1.0,    2.5,   5.0,  10.0,  30.0, 60.0};
static const double batch_bounds[] = {1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64};

static const int statuses[SDXS_METRICS_STATUSES] = {200, 204, 400, 401, 404, 405,
                                                    413, 415, 429, 500, 503, 0};

static const char *const route_names[SDXS_ROUTE_COUNT] = {
    "/v1/images/generations", "/v1/txt2img", "/v1/img2img", "/sdapi/v1/txt2img",
    "/sdapi/v1/img2img",      "/v1/controlnet", "/v1/stream", "/v1/models", "/healthz",
    "/metrics",               "static",      "other",
};

static const char *const stage_names[SDXS_STAGE_COUNT] = {"queue",   "text_encoder", "unet",
                                                          "decoder", "engine",       "encode"};

const char *sdxs_route_name(sdxs_route route)
{
    return route >= 0 && route < SDXS_ROUTE_COUNT ? route_names[route] : "other";
}

void sdxs_metrics_init(sdxs_metrics *m)
{
    memset(m, 0, sizeof(*m));
    pthread_mutex_init(&m->lock, NULL);
}

void sdxs_metrics_free(sdxs_metrics *m) { pthread_mutex_destroy(&m->lock); }

static void observe(sdxs_histogram *h, const double *bounds, int nb, double v)
{
    int i = 0;
    while (i < nb && v > bounds[i])
        i++;
    h->counts[i]++;
    h->sum += v;
    h->count++;
}

static int status_index(int status)
{
    for (int i = 0; i < SDXS_METRICS_STATUSES - 1; i++)
        if (statuses[i] == status)
            return i;
    return SDXS_METRICS_STATUSES - 1;
}

void sdxs_metrics_request(sdxs_metrics *m, sdxs_route route, int status, double ms, bool aborted)
{
    if (route < 0 || route >= SDXS_ROUTE_COUNT)
        route = SDXS_ROUTE_OTHER;
    pthread_mutex_lock(&m->lock);
    m->requests[route][status_index(status)]++;
    if (aborted)
        m->aborted[route]++;
    observe(&m->latency[route], seconds_bounds, (int)SDXS_ARRAY_LEN(seconds_bounds), ms / 1e3);
    pthread_mutex_unlock(&m->lock);
}

void sdxs_metrics_stage(sdxs_metrics *m, sdxs_stage stage, double ms)
{
    pthread_mutex_lock(&m->lock);
    observe(&m->stage[stage], seconds_bounds, (int)SDXS_ARRAY_LEN(seconds_bounds), ms / 1e3);
    pthread_mutex_unlock(&m->lock);
}

static int64_t wall_second(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec;
}

void sdxs_metrics_batch(sdxs_metrics *m, int images, const sdxs_timings *tm)
{
    int64_t now = wall_second();
    int slot = (int)(now % 10);

    pthread_mutex_lock(&m->lock);
    observe(&m->batch, batch_bounds, (int)SDXS_ARRAY_LEN(batch_bounds), images);
    m->batches++;
    m->images += (uint64_t)images;
    if (m->second_stamp[slot] != now) {
        m->second_stamp[slot] = now;
        m->second_images[slot] = 0;
    }
    m->second_images[slot] += (uint64_t)images;
    if (tm) {
        int nb = (int)SDXS_ARRAY_LEN(seconds_bounds);
        observe(&m->stage[SDXS_STAGE_TEXT], seconds_bounds, nb, tm->text_ms / 1e3);
        observe(&m->stage[SDXS_STAGE_UNET], seconds_bounds, nb, tm->unet_ms / 1e3);
        observe(&m->stage[SDXS_STAGE_DECODE], seconds_bounds, nb, tm->decode_ms / 1e3);
        observe(&m->stage[SDXS_STAGE_ENGINE], seconds_bounds, nb, tm->total_ms / 1e3);
    }
    pthread_mutex_unlock(&m->lock);
}

void sdxs_metrics_frame(sdxs_metrics *m)
{
    pthread_mutex_lock(&m->lock);
    m->stream_frames++;
    pthread_mutex_unlock(&m->lock);
}

/* ---- rendering ---- */

#define RENDER_MAX_BYTES ((size_t)1 << 20) /* far above what the fixed series need */

typedef struct text {
    char *buf;
    size_t len, cap;
    bool failed;
} text;

static void put(text *t, const char *fmt, ...) SDXS_PRINTF(2, 3);
static void put(text *t, const char *fmt, ...)
{
    va_list ap;
    int n;
    if (t->failed)
        return;
    for (;;) {
        va_start(ap, fmt);
        n = vsnprintf(t->buf + t->len, t->cap - t->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            t->failed = true;
            return;
        }
        if ((size_t)n < t->cap - t->len) {
            t->len += (size_t)n;
            return;
        }
        if (t->cap * 2 > RENDER_MAX_BYTES) {
            t->failed = true;
            return;
        }
        char *grown = realloc(t->buf, t->cap * 2);
        if (!grown) {
            t->failed = true;
            return;
        }
        t->buf = grown;
        t->cap *= 2;
    }
}

static void put_histogram(text *t, const char *name, const char *label, const char *value,
                          const sdxs_histogram *h, const double *bounds, int nb)
{
    uint64_t cum = 0;
    char sep[128];
    snprintf(sep, sizeof(sep), "%s=\"%s\",", label, value);
    if (!label[0])
        sep[0] = '\0';
    for (int i = 0; i < nb; i++) {
        cum += h->counts[i];
        put(t, "%s_bucket{%sle=\"%g\"} %llu\n", name, sep, bounds[i], (unsigned long long)cum);
    }
    cum += h->counts[nb];
    put(t, "%s_bucket{%sle=\"+Inf\"} %llu\n", name, sep, (unsigned long long)cum);
    if (label[0]) {
        put(t, "%s_sum{%s=\"%s\"} %.6f\n", name, label, value, h->sum);
        put(t, "%s_count{%s=\"%s\"} %llu\n", name, label, value, (unsigned long long)h->count);
    } else {
        put(t, "%s_sum %.6f\n", name, h->sum);
        put(t, "%s_count %llu\n", name, (unsigned long long)h->count);
    }
}

static void put_help(text *t, const char *name, const char *type, const char *help)
{
    put(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* The counters, copied under the lock so that the page is one consistent snapshot. */
static void render_counters(text *t, const sdxs_metrics *m, int64_t now)
{
    int nb = (int)SDXS_ARRAY_LEN(seconds_bounds);
    uint64_t recent = 0;

    put_help(t, "sdxs_requests_total", "counter", "HTTP requests answered, by route and status.");
    for (int r = 0; r < SDXS_ROUTE_COUNT; r++)
        for (int i = 0; i < SDXS_METRICS_STATUSES; i++)
            if (m->requests[r][i]) {
                char status[16];
                if (statuses[i])
                    snprintf(status, sizeof(status), "%d", statuses[i]);
                else
                    snprintf(status, sizeof(status), "other");
                put(t, "sdxs_requests_total{route=\"%s\",status=\"%s\"} %llu\n", route_names[r],
                    status, (unsigned long long)m->requests[r][i]);
            }
    put_help(t, "sdxs_requests_aborted_total", "counter",
             "Requests whose client went away before the response was sent.");
    for (int r = 0; r < SDXS_ROUTE_COUNT; r++)
        if (m->aborted[r])
            put(t, "sdxs_requests_aborted_total{route=\"%s\"} %llu\n", route_names[r],
                (unsigned long long)m->aborted[r]);
    put_help(t, "sdxs_request_seconds", "histogram", "Request latency by route.");
    for (int r = 0; r < SDXS_ROUTE_COUNT; r++)
        if (m->latency[r].count)
            put_histogram(t, "sdxs_request_seconds", "route", route_names[r], &m->latency[r],
                          seconds_bounds, nb);
    put_help(t, "sdxs_stage_seconds", "histogram",
             "Latency of each stage: queue and encode per request, the engine's per batch.");
    for (int s = 0; s < SDXS_STAGE_COUNT; s++)
        put_histogram(t, "sdxs_stage_seconds", "stage", stage_names[s], &m->stage[s],
                      seconds_bounds, nb);
    put_help(t, "sdxs_batch_size", "histogram", "Images per engine run.");
    put_histogram(t, "sdxs_batch_size", "", "", &m->batch, batch_bounds,
                  (int)SDXS_ARRAY_LEN(batch_bounds));
    put_help(t, "sdxs_batches_total", "counter", "Engine runs.");
    put(t, "sdxs_batches_total %llu\n", (unsigned long long)m->batches);
    put_help(t, "sdxs_images_total", "counter", "Images made by the engine.");
    put(t, "sdxs_images_total %llu\n", (unsigned long long)m->images);
    for (int i = 0; i < 10; i++)
        if (m->second_stamp[i] > now - 10 && m->second_stamp[i] <= now)
            recent += m->second_images[i];
    put_help(t, "sdxs_images_per_second", "gauge", "Images made per second over the last 10 s.");
    put(t, "sdxs_images_per_second %.3f\n", (double)recent / 10.0);
    put_help(t, "sdxs_stream_frames_total", "counter", "Frames produced for /v1/stream.");
    put(t, "sdxs_stream_frames_total %llu\n", (unsigned long long)m->stream_frames);
}

char *sdxs_metrics_render(sdxs_server *s, size_t *len)
{
    text t = {malloc(16384), 0, 16384, false};
    sdxs_metrics *snap = malloc(sizeof(*snap));
    int streams = 0, viewers = 0;

    if (!t.buf || !snap) {
        free(t.buf);
        free(snap);
        return NULL;
    }
    pthread_mutex_lock(&s->metrics.lock);
    memcpy(snap, &s->metrics, sizeof(*snap));
    pthread_mutex_unlock(&s->metrics.lock);
    render_counters(&t, snap, wall_second());
    free(snap);

    sdxs_streams_counts(&s->streams, &streams, &viewers);
    put_help(&t, "sdxs_queue_depth", "gauge",
             "HTTP image requests accepted and not yet finished by the engine.");
    put(&t, "sdxs_queue_depth %d\n", sdxs_queue_depth(&s->queue));
    put_help(&t, "sdxs_queue_capacity", "gauge", "The --max-queue limit.");
    put(&t, "sdxs_queue_capacity %d\n", s->cfg.max_queue);
    put_help(&t, "sdxs_max_batch", "gauge", "The --max-batch limit.");
    put(&t, "sdxs_max_batch %d\n", s->cfg.max_batch);
    put_help(&t, "sdxs_streams", "gauge", "Frame streams with a running producer.");
    put(&t, "sdxs_streams %d\n", streams);
    put_help(&t, "sdxs_stream_viewers", "gauge", "Connections watching a frame stream.");
    put(&t, "sdxs_stream_viewers %d\n", viewers);
    put_help(&t, "sdxs_model_loaded", "gauge", "1 once the model is loaded.");
    put(&t, "sdxs_model_loaded %d\n", atomic_load(&s->ready) ? 1 : 0);
    if (t.failed) {
        free(t.buf);
        return NULL;
    }
    *len = t.len;
    return t.buf;
}
