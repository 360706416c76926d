/* server.h: what the files of `sdxs serve` share: the configuration and its limits, the server
 * object, the request queue and its batching worker (queue.c), the frame streams (stream.c), the
 * metrics (metrics.c), the static demo files (static.c), the HTTP layer (http.c), the
 * endpoints (api.c) and the server's start and orderly stop (serve.c). Internal to the executable; the engine is reached through include/sdxs.h.
 */
#ifndef SDXS_SERVER_H
#define SDXS_SERVER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "engine/util.h"
#include "sdxs.h"

struct MHD_Connection;
struct MHD_Daemon;

/* ---- limits: every buffer that grows from a request is capped by one of these ---- */

#define SDXS_SERVE_MAX_BATCH 64            /* --max-batch upper bound (images in one engine run) */
#define SDXS_SERVE_MAX_QUEUE 4096          /* --max-queue upper bound */
#define SDXS_SERVE_DEFAULT_BODY ((size_t)16 << 20) /* --max-body-bytes default */
#define SDXS_SERVE_MAX_BODY ((size_t)256 << 20)    /* --max-body-bytes upper bound */
#define SDXS_SERVE_MAX_JSON_BYTES ((size_t)64 << 10) /* JSON bodies of routes without images */
#define SDXS_SERVE_MAX_JSON_DEPTH 8        /* nesting of arrays and objects in a JSON body */
#define SDXS_SERVE_MAX_PARAMS 32           /* query-string or form fields kept per request */
#define SDXS_SERVE_MAX_PARAM_BYTES (SDXS_MAX_PROMPT_BYTES + 1) /* one query or form value */
#define SDXS_SERVE_MAX_INIT_SIDE 4096      /* init images: pixels a side after decoding */
#define SDXS_SERVE_MAX_INIT_PIXELS ((uint64_t)16 << 20)
#define SDXS_SERVE_MAX_SEED ((uint64_t)9007199254740991) /* 2^53 - 1: exact in JSON everywhere */
#define SDXS_SERVE_MAX_STREAMS 8           /* --max-streams upper bound and default */
#define SDXS_SERVE_MAX_VIEWERS 64          /* --max-viewers default */
#define SDXS_SERVE_MAX_FPS 60
#define SDXS_SERVE_MAX_CORS 16             /* --cors-origin given at most this often */
#define SDXS_SERVE_MAX_HTTP_THREADS 64

/* ---- configuration: the flags of `sdxs serve` ---- */

typedef struct sdxs_serve_config {
    const char *host;
    int port;
    int max_batch;          /* images in one engine run */
    int batch_wait_ms;      /* how long the oldest request waits for others to join its batch */
    int max_queue;          /* HTTP requests accepted and not yet finished by the engine */
    int request_timeout_ms; /* a request still queued after this long is answered 503 */
    size_t max_body_bytes;
    const char *api_key;    /* NULL: no authentication */
    const char *tls_cert, *tls_key;
    const char *cors_origins[SDXS_SERVE_MAX_CORS];
    int n_cors;
    int http_threads;
    int max_streams, max_viewers;
    int default_width, default_height; /* 0: the model's default size */
    const char *static_dir;            /* NULL: found beside the source tree or the binary */
} sdxs_serve_config;

typedef struct sdxs_server sdxs_server;

/* ---- metrics (metrics.c) ---- */

/* A route is one row of the table in http.c (path, method, body kinds, handler) plus a name
 * here and in metrics.c; an image mode such as POST /v1/controlnet also adds its request
 * fields to sdxs_job and a case to sdxs_api_prepare. */
typedef enum sdxs_route {
    SDXS_ROUTE_GENERATIONS = 0, /* POST /v1/images/generations */
    SDXS_ROUTE_TXT2IMG,         /* POST /v1/txt2img */
    SDXS_ROUTE_IMG2IMG,         /* POST /v1/img2img */
    SDXS_ROUTE_SD_TXT2IMG,      /* POST /sdapi/v1/txt2img */
    SDXS_ROUTE_SD_IMG2IMG,      /* POST /sdapi/v1/img2img */
    SDXS_ROUTE_CONTROLNET,      /* POST /v1/controlnet */
    SDXS_ROUTE_STREAM,          /* GET /v1/stream */
    SDXS_ROUTE_MODELS,          /* GET /v1/models */
    SDXS_ROUTE_HEALTHZ,         /* GET /healthz */
    SDXS_ROUTE_METRICS,         /* GET /metrics */
    SDXS_ROUTE_STATIC,          /* GET / and /static/NAME */
    SDXS_ROUTE_OTHER,           /* anything else (404) */
    SDXS_ROUTE_COUNT,
} sdxs_route;

typedef enum sdxs_stage {
    SDXS_STAGE_QUEUE = 0, /* per request: enqueued to the start of its engine run */
    SDXS_STAGE_TEXT,      /* per engine run: text encoder */
    SDXS_STAGE_UNET,      /* per engine run: U-Net */
    SDXS_STAGE_DECODE,    /* per engine run: decoder */
    SDXS_STAGE_ENGINE,    /* per engine run: the whole sdxs_generate call */
    SDXS_STAGE_ENCODE,    /* per request: PNG/JPEG encoding and the response body */
    SDXS_STAGE_COUNT,
} sdxs_stage;

#define SDXS_METRICS_BUCKETS 16
#define SDXS_METRICS_STATUSES 12

typedef struct sdxs_histogram {
    uint64_t counts[SDXS_METRICS_BUCKETS + 1]; /* per bound, then +Inf; not cumulative */
    double sum;
    uint64_t count;
} sdxs_histogram;

typedef struct sdxs_metrics {
    pthread_mutex_t lock;
    uint64_t requests[SDXS_ROUTE_COUNT][SDXS_METRICS_STATUSES];
    uint64_t aborted[SDXS_ROUTE_COUNT]; /* the client went away before the response was sent */
    sdxs_histogram latency[SDXS_ROUTE_COUNT];
    sdxs_histogram stage[SDXS_STAGE_COUNT];
    sdxs_histogram batch;
    uint64_t images, batches, stream_frames;
    uint64_t second_images[10]; /* images finished in each of the last ten wall-clock seconds */
    int64_t second_stamp[10];
} sdxs_metrics;

void sdxs_metrics_init(sdxs_metrics *m);
void sdxs_metrics_free(sdxs_metrics *m);
const char *sdxs_route_name(sdxs_route route);
void sdxs_metrics_request(sdxs_metrics *m, sdxs_route route, int status, double ms, bool aborted);
void sdxs_metrics_stage(sdxs_metrics *m, sdxs_stage stage, double ms);
void sdxs_metrics_batch(sdxs_metrics *m, int images, const sdxs_timings *tm);
void sdxs_metrics_frame(sdxs_metrics *m);
/* The Prometheus text exposition of everything, malloc'ed (NULL when out of memory). */
char *sdxs_metrics_render(sdxs_server *s, size_t *len);

/* ---- the queue and its batching worker (queue.c) ---- */

typedef struct sdxs_job sdxs_job;
typedef void (*sdxs_job_done)(sdxs_job *job, void *user);

/* One request for n images of one prompt. The submitter fills the first block, the worker the
 * results, then calls done (without any lock held) and never touches the job again. */
struct sdxs_job {
    int n;                 /* images, 1..max_batch; image i uses seeds[i] */
    int width, height;
    char *prompt;          /* owned */
    uint64_t seeds[SDXS_SERVE_MAX_BATCH];
    sdxs_image init;       /* owned; image-to-image when init.rgb is set */
    float strength;
    sdxs_image control;    /* owned; through the ControlNet when control.rgb is set */
    sdxs_control_mode control_mode;
    float control_scale;
    const float *noise;    /* (n, C, h, w) explicit starting noise, or NULL; not owned */
    bool counted;          /* counts against --max-queue (HTTP requests do, stream frames not) */
    sdxs_job_done started; /* or NULL: called (no lock held) as the job's engine run begins */
    sdxs_job_done done;
    void *user;

    int http_status;       /* 200, or the error's status */
    sdxs_error err;
    sdxs_image *out;       /* n images, owned by the job */
    int batch_images;      /* images of the engine run this job was part of */
    double enqueued_ms, started_ms, finished_ms;
    sdxs_job *next;
};

typedef enum sdxs_submit {
    SDXS_SUBMIT_OK = 0,
    SDXS_SUBMIT_FULL,     /* --max-queue reached: 429 */
    SDXS_SUBMIT_STOPPING, /* the server is shutting down: 503 */
} sdxs_submit;

typedef struct sdxs_queue {
    pthread_mutex_t lock;
    pthread_cond_t wake;   /* a job arrived, or stop */
    sdxs_job *head, *tail; /* waiting jobs, oldest first */
    int waiting;           /* jobs in the list */
    int counted;           /* counted jobs accepted and not yet done (waiting or running) */
    bool stopping, started;
    pthread_t worker;
    sdxs_server *srv;
    double avg_image_ms;   /* a running average, for Retry-After */
} sdxs_queue;

sdxs_job *sdxs_job_new(int n, const char *prompt, sdxs_error *err);
void sdxs_job_free(sdxs_job *job);
void sdxs_queue_init(sdxs_queue *q, sdxs_server *srv);
sdxs_status sdxs_queue_start(sdxs_queue *q, sdxs_error *err);
/* Admits job (unless full or stopping); on_admit runs under the queue's lock before any worker
 * can see the job (the HTTP layer suspends the connection there, so that the worker's resume
 * always follows it). */
sdxs_submit sdxs_queue_submit(sdxs_queue *q, sdxs_job *job, void (*on_admit)(void *), void *arg);
int sdxs_queue_depth(sdxs_queue *q);
int sdxs_queue_retry_after_s(sdxs_queue *q);
/* Lets the worker finish what is queued, then joins it. */
void sdxs_queue_stop(sdxs_queue *q);
void sdxs_queue_free(sdxs_queue *q);
/* Floats of one image's latent noise at this size. */
size_t sdxs_serve_noise_floats(const sdxs_model *model, int width, int height);

/* ---- frame streams (stream.c) ---- */

typedef struct sdxs_stream sdxs_stream;
typedef struct sdxs_viewer sdxs_viewer;

typedef struct sdxs_stream_params {
    char prompt[SDXS_MAX_PROMPT_BYTES + 1];
    int width, height;
    int fps;             /* 0: as fast as the engine allows */
    uint64_t seed;       /* the walk visits seed, seed + 1, ... */
    int frames_per_seed; /* frames between two seeds' noise */
    int quality;         /* JPEG quality */
} sdxs_stream_params;

typedef struct sdxs_streams {
    pthread_mutex_t lock; /* the registry, every stream and every viewer */
    pthread_cond_t wake;  /* producers pacing their frames wake on stop */
    sdxs_stream *list[SDXS_SERVE_MAX_STREAMS]; /* streams viewers may join */
    pthread_t threads[SDXS_SERVE_MAX_STREAMS]; /* their producers, one per slot */
    bool running[SDXS_SERVE_MAX_STREAMS];      /* the slot's producer has not ended */
    bool joinable[SDXS_SERVE_MAX_STREAMS];     /* the slot's thread is still to be joined */
    int producers;        /* producer threads still running */
    int viewers;
    bool stopping;
    sdxs_server *srv;
} sdxs_streams;

#define SDXS_STREAM_BOUNDARY "sdxsframe"

void sdxs_streams_init(sdxs_streams *ss, sdxs_server *srv);
/* Joins the stream of these parameters or starts one; *viewer is the connection's handle.
 * Fails with 429 (too many streams or viewers) or 500, filling err. */
int sdxs_stream_join(sdxs_streams *ss, const sdxs_stream_params *p, struct MHD_Connection *conn,
                     sdxs_viewer **viewer, sdxs_error *err);
/* MHD's content reader for a viewer's response (cls is the viewer). */
ssize_t sdxs_stream_read(void *cls, uint64_t pos, char *buf, size_t max);
/* Called once the viewer's connection is finished; returns the body bytes it was sent. */
uint64_t sdxs_stream_leave(sdxs_streams *ss, sdxs_viewer *viewer);
/* Ends every stream (viewers see the end of their response) and joins the producers. */
void sdxs_streams_stop(sdxs_streams *ss);
void sdxs_streams_free(sdxs_streams *ss);
void sdxs_streams_counts(sdxs_streams *ss, int *streams, int *viewers);

/* ---- static demo files (static.c) ---- */

#define SDXS_STATIC_MAX_FILES 32
#define SDXS_STATIC_MAX_BYTES ((size_t)8 << 20) /* all files together */

typedef struct sdxs_static_file {
    char name[64];
    const char *mime;
    char *data;
    size_t len;
} sdxs_static_file;

typedef struct sdxs_static {
    char dir[1024];
    sdxs_static_file files[SDXS_STATIC_MAX_FILES];
    int count;
} sdxs_static;

/* Loads every regular file of dir (or the default folder when dir is NULL) into memory. */
sdxs_status sdxs_static_load(sdxs_static *st, const char *dir, sdxs_error *err);
const sdxs_static_file *sdxs_static_find(const sdxs_static *st, const char *name);
void sdxs_static_free(sdxs_static *st);

/* ---- the server ---- */

struct sdxs_server {
    sdxs_serve_config cfg;
    sdxs_model *model;  /* set before ready turns true; NULL while loading */
    atomic_bool ready;  /* the model is loaded and the worker runs */
    atomic_bool draining;
    char model_name[256];
    int default_width, default_height, multiple, min_side, max_side;
    char backend[32];
    bool has_controlnet; /* POST /v1/controlnet is served (the demo's sketch mode turns on) */

    struct MHD_Daemon *daemon;
    char scheme[8];
    int port;
    atomic_uint_fast64_t next_id;

    pthread_mutex_t active_lock;
    pthread_cond_t active_cond;
    int active; /* requests begun and not yet completed */

    sdxs_queue queue;
    sdxs_streams streams;
    sdxs_metrics metrics;
    sdxs_static files;
};

/* serve.c: the server's life, in this order. */
void sdxs_serve_config_defaults(sdxs_serve_config *cfg);
/* Loads the demo files and starts listening (image routes answer 503 until attached). */
sdxs_status sdxs_server_init(sdxs_server *s, const sdxs_serve_config *cfg, sdxs_error *err);
/* Takes the opened model (not owned), starts the engine worker and logs the "ready" line. */
sdxs_status sdxs_server_attach(sdxs_server *s, sdxs_model *model, sdxs_error *err);
/* Stops accepting, ends the streams, finishes every request in flight, stops the daemon. */
void sdxs_server_shutdown(sdxs_server *s);
void sdxs_server_free(sdxs_server *s);

/* http.c */
sdxs_status sdxs_http_start(sdxs_server *s, sdxs_error *err);
/* Stops accepting connections (the listening socket is closed). */
void sdxs_http_quiesce(sdxs_server *s);
/* Waits up to timeout_ms for every begun request to complete. */
bool sdxs_http_drain(sdxs_server *s, int timeout_ms);
void sdxs_http_stop(sdxs_server *s);

/* ---- the endpoints (api.c), called by http.c ---- */

typedef struct sdxs_http_req sdxs_http_req;

/* What an endpoint asks the HTTP layer to send. */
typedef struct sdxs_reply {
    int status;
    const char *content_type;
    uint8_t *body; /* malloc'ed, handed over */
    size_t len;
    char seed[24];    /* X-Seed, or "" */
    char timing[160]; /* Server-Timing, or "" */
    int retry_after;  /* seconds, or 0 */
} sdxs_reply;

void sdxs_reply_error(sdxs_reply *r, int status, const char *param, const char *fmt, ...)
    SDXS_PRINTF(4, 5);
void sdxs_reply_from_error(sdxs_reply *r, int status, const sdxs_error *err);
void sdxs_reply_json(sdxs_reply *r, int status, void *json); /* takes a json_t reference */

/* The parsed parameters of an image request, from JSON, a query string or a form. */
typedef struct sdxs_params sdxs_params;

typedef enum sdxs_body_kind {
    SDXS_BODY_NONE = 0,
    SDXS_BODY_JSON,
    SDXS_BODY_IMAGE,     /* image/png or image/jpeg */
    SDXS_BODY_MULTIPART, /* multipart/form-data */
} sdxs_body_kind;

/* The request as the endpoints see it. */
typedef struct sdxs_api_input {
    sdxs_route route;
    sdxs_body_kind kind;
    const uint8_t *body; /* JSON text or image bytes (the form's image for multipart) */
    size_t len;
    /* query-string (and, for forms, form) fields: names and values, both NUL-terminated */
    int n_fields;
    const char *field_names[SDXS_SERVE_MAX_PARAMS];
    const char *field_values[SDXS_SERVE_MAX_PARAMS];
} sdxs_api_input;

/* What an endpoint leaves between admitting a job and answering it. */
typedef struct sdxs_api_state {
    sdxs_job *job;
    int format;           /* 0 PNG, 1 JPEG */
    int quality;
    void *echo;           /* json_t: the A1111 "parameters" echo, or NULL */
    void *ignored;        /* json_t: A1111 fields the model cannot honour, or NULL */
    bool seed_random;
} sdxs_api_state;

/* Validates the input and builds the engine job (n, size, seeds, prompt, init image). On a
 * client error returns the status and fills reply. */
int sdxs_api_prepare(sdxs_server *s, const sdxs_api_input *in, sdxs_api_state *st,
                     sdxs_reply *reply);
/* Turns a finished job into the route's response. */
void sdxs_api_finish(sdxs_server *s, sdxs_route route, sdxs_api_state *st, sdxs_reply *reply);
void sdxs_api_state_free(sdxs_api_state *st);
/* GET endpoints that answer at once. */
void sdxs_api_models(sdxs_server *s, sdxs_reply *reply);
void sdxs_api_healthz(sdxs_server *s, sdxs_reply *reply);
/* Parses a stream's query; fills reply on error and returns its status, else 0. */
int sdxs_api_stream_params(sdxs_server *s, const sdxs_api_input *in, sdxs_stream_params *p,
                           sdxs_reply *reply);

/* base64 (api.c): encode into a malloc'ed NUL-terminated string; decode ignoring a data-URL
 * prefix, refusing anything but the standard alphabet and padding. */
char *sdxs_base64_encode(const uint8_t *data, size_t len, size_t *out_len);
sdxs_status sdxs_base64_decode(const char *text, size_t len, uint8_t **out, size_t *out_len,
                               const char *param, sdxs_error *err);

/* A random seed in [0, 2^32). */
uint64_t sdxs_serve_random_seed(void);

#endif /* SDXS_SERVER_H */
