/* cmd_serve.c: `sdxs serve`: the HTTP server's flags, then its life: listen, open the model,
 * serve until SIGINT or SIGTERM, finish what is in flight and exit 0. The signals are blocked in
 * every thread and taken by sigwait here, so no handler runs inside the server's code. */
#define _POSIX_C_SOURCE 200809L
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "engine/util.h"
#include "server/server.h"

static void help(FILE *f)
{
    fprintf(f,
            "usage: sdxs serve [options]\n"
            "  --host H               address to listen on (default 127.0.0.1)\n"
            "  --port P               port, 0 for any free one (default 8080)\n"
            "  --max-batch N          images in one engine run, 1 to %d (default 8)\n"
            "  --batch-wait-ms MS     how long a request waits for others to batch with "
            "(default 2)\n"
            "  --max-queue N          requests accepted and not finished; more get 429 "
            "(default 64)\n"
            "  --request-timeout-ms MS  a request queued longer gets 503 (default 60000)\n"
            "  --max-body-bytes N     request bodies with images (default %zu)\n"
            "  --api-key K            require \"Authorization: Bearer K\" (or ?api_key=K)\n"
            "  --tls-cert F --tls-key F  serve HTTPS with this PEM certificate and key\n"
            "  --cors-origin O        allow this browser origin (repeatable; * for any)\n"
            "  --http-threads N       HTTP polling threads (default 2)\n"
            "  --max-streams N        frame streams at once, 1 to %d (default %d)\n"
            "  --max-viewers N        stream viewers at once (default %d)\n"
            "  --static-dir DIR       the demo page's files (default server/static)\n"
            "  --controlnet DIR       a ControlNet folder: serves POST /v1/controlnet\n",
            SDXS_SERVE_MAX_BATCH, SDXS_SERVE_DEFAULT_BODY, SDXS_SERVE_MAX_STREAMS,
            SDXS_SERVE_MAX_STREAMS, SDXS_SERVE_MAX_VIEWERS);
    sdxs_cli_common_help(f);
}

static int parse(sdxs_cli_common *c, sdxs_serve_config *cfg, int argc, char **argv)
{
    static const struct {
        const char *flag;
        long long lo, hi;
    } ints[] = {
        {"--port", 0, 65535},
        {"--max-batch", 1, SDXS_SERVE_MAX_BATCH},
        {"--batch-wait-ms", 0, 10000},
        {"--max-queue", 1, SDXS_SERVE_MAX_QUEUE},
        {"--request-timeout-ms", 1, 3600000},
        {"--max-body-bytes", 1024, (long long)SDXS_SERVE_MAX_BODY},
        {"--http-threads", 1, SDXS_SERVE_MAX_HTTP_THREADS},
        {"--max-streams", 1, SDXS_SERVE_MAX_STREAMS},
        {"--max-viewers", 1, 4096},
    };
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i], *v;
        long long n;
        size_t k;
        int r = sdxs_cli_common_flag(c, argc, argv, &i);
        if (r < 0)
            return SDXS_ERR_INVALID;
        if (r == 1)
            continue;
        if (!strcmp(f, "--help")) {
            help(stdout);
            return -1;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "sdxs: serve: unknown option or missing value: '%s'\n", f);
            return SDXS_ERR_INVALID;
        }
        v = argv[++i];
        for (k = 0; k < SDXS_ARRAY_LEN(ints) && strcmp(f, ints[k].flag); k++)
            ;
        if (k < SDXS_ARRAY_LEN(ints)) {
            if (!sdxs_cli_int(f, v, ints[k].lo, ints[k].hi, &n))
                return SDXS_ERR_INVALID;
            switch (k) {
            case 0: cfg->port = (int)n; break;
            case 1: cfg->max_batch = (int)n; break;
            case 2: cfg->batch_wait_ms = (int)n; break;
            case 3: cfg->max_queue = (int)n; break;
            case 4: cfg->request_timeout_ms = (int)n; break;
            case 5: cfg->max_body_bytes = (size_t)n; break;
            case 6: cfg->http_threads = (int)n; break;
            case 7: cfg->max_streams = (int)n; break;
            default: cfg->max_viewers = (int)n; break;
            }
        } else if (!strcmp(f, "--host")) {
            cfg->host = v;
        } else if (!strcmp(f, "--controlnet")) {
            c->opt.controlnet_dir = v;
        } else if (!strcmp(f, "--api-key")) {
            if (!v[0]) {
                fprintf(stderr, "sdxs: --api-key: the key must not be empty\n");
                return SDXS_ERR_INVALID;
            }
            cfg->api_key = v;
        } else if (!strcmp(f, "--tls-cert")) {
            cfg->tls_cert = v;
        } else if (!strcmp(f, "--tls-key")) {
            cfg->tls_key = v;
        } else if (!strcmp(f, "--static-dir")) {
            cfg->static_dir = v;
        } else if (!strcmp(f, "--cors-origin")) {
            if (cfg->n_cors == SDXS_SERVE_MAX_CORS) {
                fprintf(stderr, "sdxs: --cors-origin: at most %d origins\n",
                        SDXS_SERVE_MAX_CORS);
                return SDXS_ERR_INVALID;
            }
            cfg->cors_origins[cfg->n_cors++] = v;
        } else {
            fprintf(stderr, "sdxs: serve: unknown option '%s' (see --help)\n", f);
            return SDXS_ERR_INVALID;
        }
    }
    cfg->default_width = c->width;
    cfg->default_height = c->height;
    return 0;
}

int sdxs_cmd_serve(int argc, char **argv)
{
    sdxs_cli_common c;
    sdxs_serve_config cfg;
    sdxs_server *s;
    sdxs_model *model = NULL;
    sdxs_error err;
    sigset_t sigs;
    int rc, sig = 0;

    memset(&c, 0, sizeof(c));
    sdxs_serve_config_defaults(&cfg);
    rc = parse(&c, &cfg, argc, argv);
    if (rc)
        return rc < 0 ? 0 : rc;
    if (c.quiet)
        sdxs_log_set_level(SDXS_LOG_WARN);
    c.opt.max_batch = cfg.max_batch;

    /* Before any thread starts: they all inherit the blocked signals. */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    s = calloc(1, sizeof(*s));
    if (!s) {
        fprintf(stderr, "sdxs: out of memory\n");
        return SDXS_ERR_RUNTIME;
    }
    if (sdxs_server_init(s, &cfg, &err) != SDXS_OK) {
        rc = sdxs_cli_fail(&err);
        goto done;
    }
    rc = sdxs_cli_open(&c, &model);
    if (rc)
        goto done;
    if (sdxs_server_attach(s, model, &err) != SDXS_OK) {
        rc = sdxs_cli_fail(&err);
        goto done;
    }

    sigwait(&sigs, &sig);
    SDXS_INFO("serve", "%s: finishing the requests in flight", sig == SIGINT ? "SIGINT" : "SIGTERM");
    sdxs_server_shutdown(s);

done:
    sdxs_server_free(s);
    free(s);
    sdxs_model_free(model);
    return rc;
}
