/* serve.c: the life of `sdxs serve`: listen first (so /healthz can say "loading"), attach the
 * model once it is open and start the engine worker, then on SIGINT/SIGTERM stop accepting,
 * let every request in flight and every stream finish, and release everything in order.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/model.h"
#include "engine/util.h"
#include "kernels/backend.h"
#include "server/server.h"

void sdxs_serve_config_defaults(sdxs_serve_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->host = "127.0.0.1";
    cfg->port = 8080;
    cfg->max_batch = 8;
    cfg->batch_wait_ms = 2;
    cfg->max_queue = 64;
    cfg->request_timeout_ms = 60000;
    cfg->max_body_bytes = SDXS_SERVE_DEFAULT_BODY;
    cfg->http_threads = 2;
    cfg->max_streams = SDXS_SERVE_MAX_STREAMS;
    cfg->max_viewers = SDXS_SERVE_MAX_VIEWERS;
}

sdxs_status sdxs_server_init(sdxs_server *s, const sdxs_serve_config *cfg, sdxs_error *err)
{
    pthread_condattr_t ca;
    sdxs_status st;

    memset(s, 0, sizeof(*s));
    s->cfg = *cfg;
    atomic_init(&s->ready, false);
    atomic_init(&s->draining, false);
    atomic_init(&s->next_id, 0);
    pthread_mutex_init(&s->active_lock, NULL);
    pthread_condattr_init(&ca);
    pthread_cond_init(&s->active_cond, &ca);
    pthread_condattr_destroy(&ca);
    sdxs_metrics_init(&s->metrics);
    sdxs_queue_init(&s->queue, s);
    sdxs_streams_init(&s->streams, s);

    st = sdxs_static_load(&s->files, cfg->static_dir, err);
    if (st == SDXS_OK)
        st = sdxs_http_start(s, err);
    if (st == SDXS_OK)
        SDXS_INFO("serve", "listening on %s://%s:%d (model loading)", s->scheme, cfg->host,
                  s->port);
    return st;
}

sdxs_status sdxs_server_attach(sdxs_server *s, sdxs_model *model, sdxs_error *err)
{
    const char *slash;
    size_t n;
    sdxs_status st;

    s->model = model;
    sdxs_model_default_size(model, &s->default_width, &s->default_height, &s->multiple);
    if (s->cfg.default_width)
        s->default_width = s->cfg.default_width;
    if (s->cfg.default_height)
        s->default_height = s->cfg.default_height;
    s->min_side = model->opt.min_side;
    s->max_side = model->opt.max_side;
    s->has_controlnet = model->controlnet != NULL;
    snprintf(s->backend, sizeof(s->backend), "%s", model->be && model->be->ops->name ?
                                                       model->be->ops->name : "cpu");
    n = strlen(model->dir);
    while (n > 1 && model->dir[n - 1] == '/')
        n--;
    slash = model->dir + n;
    while (slash > model->dir && slash[-1] != '/')
        slash--;
    snprintf(s->model_name, sizeof(s->model_name), "%.*s", (int)(n - (size_t)(slash - model->dir)),
             slash);

    st = sdxs_queue_start(&s->queue, err);
    if (st != SDXS_OK)
        return st;
    atomic_store(&s->ready, true);
    SDXS_INFO("serve", "ready: %s (%s, default %dx%d, max batch %d) on %s://%s:%d",
              s->model_name, s->backend, s->default_width, s->default_height, s->cfg.max_batch,
              s->scheme, s->cfg.host, s->port);
    return SDXS_OK;
}

void sdxs_server_shutdown(sdxs_server *s)
{
    double t0 = sdxs_now_ms();
    int limit = s->cfg.request_timeout_ms + 30000;

    /* Step 1: no new connections; new requests on open ones are answered 503. */
    atomic_store(&s->draining, true);
    sdxs_http_quiesce(s);

    /* Step 2: end the streams (their viewers see the end of the response), then wait for the
     * requests in flight, which the engine worker is still serving. */
    sdxs_streams_stop(&s->streams);
    if (!sdxs_http_drain(s, limit))
        SDXS_WARN("serve", "requests still open after %d ms", limit);

    /* Step 3: the worker (nothing is queued any more), then the daemon. */
    sdxs_queue_stop(&s->queue);
    sdxs_http_drain(s, 5000); /* requests resumed by the worker's last batch */
    sdxs_http_stop(s);
    SDXS_INFO("serve", "stopped after draining for %.0f ms", sdxs_now_ms() - t0);
}

void sdxs_server_free(sdxs_server *s)
{
    sdxs_http_stop(s);
    sdxs_queue_stop(&s->queue);
    sdxs_streams_stop(&s->streams);
    sdxs_queue_free(&s->queue);
    sdxs_streams_free(&s->streams);
    sdxs_static_free(&s->files);
    sdxs_metrics_free(&s->metrics);
    pthread_cond_destroy(&s->active_cond);
    pthread_mutex_destroy(&s->active_lock);
}
