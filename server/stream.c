/* stream.c: GET /v1/stream, a multipart/x-mixed-replace JPEG stream of a smooth walk through the
 * noise space: frame k between seeds s and s+1 starts from the spherical interpolation of their
 * noises (sdxs_randn) and goes through the engine's queue like any request. Viewers of the same
 * (prompt, size, fps, seed, frames per seed, quality) share one producer thread, which queues
 * frame k+1 as soon as the engine starts frame k and encodes frame k while the engine runs k+1:
 * the engine does not wait for the encoding, and a stream has at most two frames under way (one
 * in the engine, the other queued behind it or being encoded). Each viewer is sent the newest
 * frame whenever it is ready for one (a slow viewer skips frames, it slows no one), a viewer
 * that goes away only drops its own reference, and the producer ends when nobody watches.
 * While waiting for a frame, a viewer's connection is suspended, not polled.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/util.h"
#include "server/server.h"

/* One encoded frame as sent: part header, JPEG, CRLF. Shared by the viewers sending it. */
typedef struct sdxs_frame {
    int refs; /* under the streams' lock */
    uint64_t seq;
    size_t len;
    uint8_t data[];
} sdxs_frame;

struct sdxs_viewer {
    sdxs_stream *stream;
    struct MHD_Connection *conn;
    sdxs_frame *cur; /* the frame being sent, or NULL */
    size_t off;      /* bytes of cur already sent */
    uint64_t last_seq;
    uint64_t bytes;
    bool waiting;    /* suspended until the next frame */
    sdxs_viewer *next_waiting;
};

struct sdxs_stream {
    sdxs_streams *ss;
    sdxs_stream_params p;
    int slot;             /* in ss->list and ss->threads */
    int viewers;
    int refs;             /* viewers, plus one while the producer runs */
    bool ended;           /* no frame will follow the latest */
    sdxs_frame *latest;
    uint64_t seq;
    sdxs_viewer *waiting;
    /* the producer's frames in the engine (sdxs_pending) */
    pthread_mutex_t job_lock;
    pthread_cond_t job_cond; /* a frame's engine run began or ended */
};

void sdxs_streams_init(sdxs_streams *ss, sdxs_server *srv)
{
    pthread_condattr_t ca;
    memset(ss, 0, sizeof(*ss));
    ss->srv = srv;
    pthread_mutex_init(&ss->lock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&ss->wake, &ca);
    pthread_condattr_destroy(&ca);
}

void sdxs_streams_counts(sdxs_streams *ss, int *streams, int *viewers)
{
    int n = 0;
    pthread_mutex_lock(&ss->lock);
    for (int i = 0; i < SDXS_SERVE_MAX_STREAMS; i++)
        n += ss->list[i] != NULL;
    *streams = n;
    *viewers = ss->viewers;
    pthread_mutex_unlock(&ss->lock);
}

/* ---- frames and stream lifetime (all under ss->lock) ---- */

static void frame_unref(sdxs_frame *f)
{
    if (f && --f->refs == 0)
        free(f);
}

static void stream_unref(sdxs_stream *s)
{
    if (--s->refs > 0)
        return;
    frame_unref(s->latest);
    pthread_mutex_destroy(&s->job_lock);
    pthread_cond_destroy(&s->job_cond);
    free(s);
}

/* Takes the waiting viewers off the list; the caller resumes them once the lock is released
 * (they were suspended under the lock, so each resume follows its suspend). */
static sdxs_viewer *take_waiting(sdxs_stream *s)
{
    sdxs_viewer *w = s->waiting;
    for (sdxs_viewer *v = w; v; v = v->next_waiting)
        v->waiting = false;
    s->waiting = NULL;
    return w;
}

static void resume_all(sdxs_viewer *w)
{
    while (w) {
        sdxs_viewer *next = w->next_waiting;
        w->next_waiting = NULL;
        MHD_resume_connection(w->conn);
        w = next;
    }
}

/* ---- the producer ---- */

/* Spherical interpolation between two noise vectors, as the latent walks of the diffusion
 * literature do: it keeps the norm a Gaussian sample has, which a straight line would not. */
static void slerp(const float *a, const float *b, double t, float *out, size_t n)
{
    double dot = 0.0, na = 0.0, nb = 0.0, theta, s, wa, wb;
    if (t <= 0.0) {
        memcpy(out, a, n * sizeof(float));
        return;
    }
    for (size_t i = 0; i < n; i++) {
        dot += (double)a[i] * b[i];
        na += (double)a[i] * a[i];
        nb += (double)b[i] * b[i];
    }
    s = dot / sqrt(na * nb > 0.0 ? na * nb : 1.0);
    theta = acos(s > 1.0 ? 1.0 : (s < -1.0 ? -1.0 : s));
    if (sin(theta) < 1e-6) {
        wa = 1.0 - t;
        wb = t;
    } else {
        wa = sin((1.0 - t) * theta) / sin(theta);
        wb = sin(t * theta) / sin(theta);
    }
    for (size_t i = 0; i < n; i++)
        out[i] = (float)(wa * a[i] + wb * b[i]);
}

/* One frame on its way through the engine, and what the producer knows of it. A producer has
 * two: the frame whose image is being encoded and sent, and the next one, queued as soon as the
 * engine starts the first, so that the engine never waits for the encoding. */
typedef struct sdxs_pending {
    sdxs_stream *stream;
    sdxs_job *job;      /* NULL while the slot is free */
    float *noise;       /* (C, h, w) the job's starting noise, kept until the job is done */
    uint64_t seed, index;
    double walk;        /* in [0, 1): from seed's noise towards seed + 1's */
    bool started, done; /* under stream->job_lock */
} sdxs_pending;

/* The walk through noise space: frame index lies between the noises of seed and seed + 1. */
typedef struct sdxs_walk {
    float *a, *b;       /* (C, h, w) the noises of seed and seed + 1 */
    uint64_t seed, index;
    size_t per;
    int frames_per_seed;
} sdxs_walk;

static void walk_next(sdxs_walk *w, sdxs_pending *p)
{
    int pos = (int)(w->index % (uint64_t)w->frames_per_seed);
    if (pos == 0 && w->index > 0) {
        float *t = w->a;
        w->a = w->b;
        w->b = t;
        w->seed++;
        sdxs_randn(w->seed + 1, w->b, w->per);
    }
    p->seed = w->seed;
    p->index = w->index++;
    p->walk = (double)pos / w->frames_per_seed;
    slerp(w->a, w->b, p->walk, p->noise, w->per);
}

static void pending_started(sdxs_job *job, void *user)
{
    sdxs_pending *p = user;
    (void)job;
    pthread_mutex_lock(&p->stream->job_lock);
    p->started = true;
    pthread_cond_broadcast(&p->stream->job_cond);
    pthread_mutex_unlock(&p->stream->job_lock);
}

static void pending_done(sdxs_job *job, void *user)
{
    sdxs_pending *p = user;
    (void)job;
    pthread_mutex_lock(&p->stream->job_lock);
    p->started = true;
    p->done = true;
    pthread_cond_broadcast(&p->stream->job_cond);
    pthread_mutex_unlock(&p->stream->job_lock);
}

/* Waits until the frame's engine run has begun (or, with done, has finished). */
static void pending_wait(sdxs_pending *p, bool done)
{
    sdxs_stream *s = p->stream;
    pthread_mutex_lock(&s->job_lock);
    while (!(done ? p->done : p->started))
        pthread_cond_wait(&s->job_cond, &s->job_lock);
    pthread_mutex_unlock(&s->job_lock);
}

/* Queues the frame's engine job; false (and the slot free) when it cannot be queued. */
static bool pending_submit(sdxs_pending *p)
{
    sdxs_stream *s = p->stream;
    sdxs_error err;
    sdxs_job *job = sdxs_job_new(1, s->p.prompt, &err);

    if (!job) {
        SDXS_ERROR("stream", "%s", err.message);
        return false;
    }
    job->width = s->p.width;
    job->height = s->p.height;
    job->seeds[0] = p->seed;
    job->noise = p->noise;
    job->started = pending_started;
    job->done = pending_done;
    job->user = p;
    p->started = p->done = false; /* the worker sees the job only after the queue's lock */
    p->job = job;
    if (sdxs_queue_submit(&s->ss->srv->queue, job, NULL, NULL) != SDXS_SUBMIT_OK) {
        sdxs_job_free(job);
        p->job = NULL;
        return false;
    }
    return true;
}

/* Turns the finished job's image into a frame (part header, JPEG, CRLF) and frees the job;
 * NULL when the engine or the encoder failed. */
static sdxs_frame *pending_encode(sdxs_pending *p)
{
    sdxs_stream *s = p->stream;
    sdxs_job *job = p->job;
    sdxs_frame *f = NULL;
    sdxs_error err;
    uint8_t *jpg = NULL;
    size_t jlen = 0;
    char head[256];
    int hlen;

    if (job->http_status != 200) {
        SDXS_ERROR("stream", "frame %llu of \"%.40s\" failed: %s", (unsigned long long)p->index,
                   s->p.prompt, job->err.message);
    } else if (sdxs_jpeg_encode(&job->out[0], s->p.quality, &jpg, &jlen, &err) != SDXS_OK) {
        SDXS_ERROR("stream", "JPEG encoding failed: %s", err.message);
    } else {
        hlen = snprintf(head, sizeof(head),
                        "--" SDXS_STREAM_BOUNDARY "\r\nContent-Type: image/jpeg\r\n"
                        "Content-Length: %zu\r\nX-Frame: %llu\r\nX-Seed: %llu\r\n"
                        "X-Walk: %.4f\r\n\r\n",
                        jlen, (unsigned long long)p->index, (unsigned long long)p->seed,
                        p->walk);
        f = malloc(sizeof(*f) + (size_t)hlen + jlen + 2);
        if (f) {
            f->refs = 1;
            f->len = (size_t)hlen + jlen + 2;
            memcpy(f->data, head, (size_t)hlen);
            memcpy(f->data + hlen, jpg, jlen);
            memcpy(f->data + hlen + jlen, "\r\n", 2);
        } else {
            SDXS_ERROR("stream", "out of memory for a frame of %zu bytes", jlen);
        }
    }
    free(jpg);
    sdxs_job_free(job);
    p->job = NULL;
    return f;
}

static void publish(sdxs_stream *s, sdxs_frame *f)
{
    sdxs_viewer *w;
    pthread_mutex_lock(&s->ss->lock);
    frame_unref(s->latest);
    f->seq = ++s->seq;
    s->latest = f;
    w = take_waiting(s);
    pthread_mutex_unlock(&s->ss->lock);
    resume_all(w);
    sdxs_metrics_frame(&s->ss->srv->metrics);
}

/* After a frame is queued at the rate asked: when the next one is due. A stream that fell more
 * than a frame behind keeps the rate from now on instead of bursting to catch up. */
static void schedule_next(double *due_ms, int fps)
{
    double now = sdxs_now_ms();
    if (fps <= 0)
        return;
    *due_ms += 1e3 / fps;
    if (*due_ms < now)
        *due_ms = now;
}

/* Waits until due_ms (or the streams stop); returns false when they stop. */
static bool pace(sdxs_streams *ss, double due_ms, int fps)
{
    bool go;
    pthread_mutex_lock(&ss->lock);
    while (fps > 0 && !ss->stopping && sdxs_now_ms() < due_ms) {
        struct timespec ts;
        ts.tv_sec = (time_t)(due_ms / 1e3);
        ts.tv_nsec = (long)((due_ms - (double)ts.tv_sec * 1e3) * 1e6);
        if (ts.tv_nsec > 999999999L)
            ts.tv_nsec = 999999999L;
        pthread_cond_timedwait(&ss->wake, &ss->lock, &ts);
    }
    go = !ss->stopping;
    pthread_mutex_unlock(&ss->lock);
    return go;
}

/* Whether to make another frame: someone watches and the server is not stopping. Otherwise the
 * stream leaves the registry, so that no new viewer joins it. */
static bool keep_going(sdxs_stream *s)
{
    sdxs_streams *ss = s->ss;
    bool go;
    pthread_mutex_lock(&ss->lock);
    go = !ss->stopping && s->viewers > 0;
    if (!go && ss->list[s->slot] == s)
        ss->list[s->slot] = NULL;
    pthread_mutex_unlock(&ss->lock);
    return go;
}

/* Frames until nobody watches, the server stops or the engine fails. Frame k + 1 is queued as
 * soon as the engine starts frame k (when it is due: at once with fps=0), so the engine runs
 * it while frame k is encoded and handed to the viewers; otherwise it is queued when due, after
 * frame k is out. Returns the frames published. */
static uint64_t produce(sdxs_stream *s, sdxs_walk *w, sdxs_pending slot[2])
{
    sdxs_streams *ss = s->ss;
    sdxs_pending *cur = &slot[0], *next = &slot[1];
    double due_ms = sdxs_now_ms();
    uint64_t published = 0;

    if (!keep_going(s))
        return 0;
    walk_next(w, cur);
    if (!pending_submit(cur))
        return 0;
    schedule_next(&due_ms, s->p.fps);
    for (;;) {
        sdxs_frame *f;
        sdxs_pending *t;
        bool queued = false;

        /* Step 1: once the engine has taken this frame, the next one waits behind it. */
        pending_wait(cur, false);
        if ((s->p.fps <= 0 || sdxs_now_ms() >= due_ms) && keep_going(s)) {
            walk_next(w, next);
            queued = pending_submit(next);
            if (!queued)
                return published;
            schedule_next(&due_ms, s->p.fps);
        }

        /* Step 2: this frame's image out to the viewers. */
        pending_wait(cur, true);
        f = pending_encode(cur);
        if (!f)
            return published;
        publish(s, f);
        published++;

        /* Step 3: the next frame, if it was not due yet, at its time. */
        if (!queued) {
            if (!keep_going(s) || !pace(ss, due_ms, s->p.fps))
                return published;
            walk_next(w, next);
            if (!pending_submit(next))
                return published;
            schedule_next(&due_ms, s->p.fps);
        }
        t = cur;
        cur = next;
        next = t;
    }
}

static void *producer_main(void *arg)
{
    sdxs_stream *s = arg;
    sdxs_streams *ss = s->ss;
    size_t per = sdxs_serve_noise_floats(ss->srv->model, s->p.width, s->p.height);
    sdxs_walk w = {0};
    sdxs_pending slot[2];
    uint64_t frames = 0;
    sdxs_viewer *v;

    /* Step 1: the noise buffers, then frames for as long as someone watches. */
    memset(slot, 0, sizeof(slot));
    w.a = malloc(per * sizeof(float));
    w.b = malloc(per * sizeof(float));
    w.seed = s->p.seed;
    w.per = per;
    w.frames_per_seed = s->p.frames_per_seed;
    for (int i = 0; i < 2; i++) {
        slot[i].stream = s;
        slot[i].noise = malloc(per * sizeof(float));
    }
    if (w.a && w.b && slot[0].noise && slot[1].noise) {
        sdxs_randn(w.seed, w.a, per);
        sdxs_randn(w.seed + 1, w.b, per);
        frames = produce(s, &w, slot);
    } else {
        SDXS_ERROR("stream", "out of memory for the noise of a %dx%d stream", s->p.width,
                   s->p.height);
    }

    /* Step 2: a frame still in the engine is waited for (the worker owns it until then). */
    for (int i = 0; i < 2; i++) {
        if (slot[i].job) {
            pending_wait(&slot[i], true);
            sdxs_job_free(slot[i].job);
        }
        free(slot[i].noise);
    }
    free(w.a);
    free(w.b);

    /* Step 3: tell the viewers there is nothing more, and let go. */
    pthread_mutex_lock(&ss->lock);
    if (ss->list[s->slot] == s)
        ss->list[s->slot] = NULL;
    s->ended = true;
    v = take_waiting(s);
    ss->running[s->slot] = false;
    ss->producers--;
    pthread_cond_broadcast(&ss->wake);
    stream_unref(s);
    pthread_mutex_unlock(&ss->lock);
    resume_all(v);
    SDXS_INFO("stream", "producer ended after %llu frames", (unsigned long long)frames);
    return NULL;
}

/* ---- viewers ---- */

static bool same_params(const sdxs_stream_params *a, const sdxs_stream_params *b)
{
    return a->width == b->width && a->height == b->height && a->fps == b->fps &&
           a->seed == b->seed && a->frames_per_seed == b->frames_per_seed &&
           a->quality == b->quality && !strcmp(a->prompt, b->prompt);
}

/* Starts a producer in a free slot; called with the lock held. Returns NULL with err filled. */
static sdxs_stream *stream_start(sdxs_streams *ss, const sdxs_stream_params *p, sdxs_error *err)
{
    int slot = -1, rc, limit = ss->srv->cfg.max_streams;
    sdxs_stream *s;

    for (int i = 0; i < limit && slot < 0; i++)
        if (!ss->running[i])
            slot = i;
    if (slot < 0) {
        sdxs_fail(err, SDXS_ERR_INVALID, NULL,
                  "%d streams are running; the limit is %d (--max-streams)", limit, limit);
        return NULL;
    }
    if (ss->joinable[slot]) { /* a finished producer: reap its thread */
        pthread_join(ss->threads[slot], NULL);
        ss->joinable[slot] = false;
    }
    s = sdxs_calloc(1, sizeof(*s), err, "a stream");
    if (!s)
        return NULL;
    s->ss = ss;
    s->p = *p;
    s->slot = slot;
    s->refs = 1;
    pthread_mutex_init(&s->job_lock, NULL);
    pthread_cond_init(&s->job_cond, NULL);
    rc = pthread_create(&ss->threads[slot], NULL, producer_main, s);
    if (rc != 0) {
        sdxs_fail(err, SDXS_ERR_RUNTIME, NULL, "cannot start a stream producer: %s",
                  strerror(rc));
        stream_unref(s);
        return NULL;
    }
    ss->list[slot] = s;
    ss->running[slot] = true;
    ss->joinable[slot] = true;
    ss->producers++;
    SDXS_INFO("stream", "started %dx%d at %d fps for \"%.60s\"", p->width, p->height, p->fps,
              p->prompt);
    return s;
}

int sdxs_stream_join(sdxs_streams *ss, const sdxs_stream_params *p, struct MHD_Connection *conn,
                     sdxs_viewer **viewer, sdxs_error *err)
{
    sdxs_viewer *v = sdxs_calloc(1, sizeof(*v), err, "a viewer");
    sdxs_stream *s = NULL;
    int status = 0;

    if (!v)
        return 500;
    pthread_mutex_lock(&ss->lock);
    if (ss->stopping) {
        sdxs_fail(err, SDXS_ERR_RUNTIME, NULL, "the server is shutting down");
        status = 503;
    } else if (ss->viewers >= ss->srv->cfg.max_viewers) {
        sdxs_fail(err, SDXS_ERR_INVALID, NULL,
                  "%d viewers are watching streams; the limit is %d (--max-viewers)",
                  ss->viewers, ss->srv->cfg.max_viewers);
        status = 429;
    } else {
        for (int i = 0; i < SDXS_SERVE_MAX_STREAMS && !s; i++)
            if (ss->list[i] && same_params(&ss->list[i]->p, p))
                s = ss->list[i];
        if (!s) {
            s = stream_start(ss, p, err);
            if (!s)
                status = err->status == SDXS_ERR_INVALID ? 429 : 500;
        }
    }
    if (s) {
        s->viewers++;
        s->refs++;
        ss->viewers++;
        v->stream = s;
        v->conn = conn; /* last_seq 0: the newest frame goes out at once */
    }
    pthread_mutex_unlock(&ss->lock);
    if (status) {
        free(v);
        return status;
    }
    *viewer = v;
    return 0;
}

ssize_t sdxs_stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    sdxs_viewer *v = cls;
    sdxs_stream *s = v->stream;
    size_t n;
    (void)pos;

    pthread_mutex_lock(&s->ss->lock);
    if (!v->cur) {
        if (s->latest && s->latest->seq > v->last_seq) {
            v->cur = s->latest;
            v->cur->refs++;
            v->off = 0;
            v->last_seq = v->cur->seq;
        } else if (s->ended) {
            pthread_mutex_unlock(&s->ss->lock);
            return MHD_CONTENT_READER_END_OF_STREAM;
        } else {
            /* Nothing new: sleep until the producer publishes (it resumes us). */
            v->waiting = true;
            v->next_waiting = s->waiting;
            s->waiting = v;
            MHD_suspend_connection(v->conn);
            pthread_mutex_unlock(&s->ss->lock);
            return 0;
        }
    }
    n = v->cur->len - v->off;
    if (n > max)
        n = max;
    memcpy(buf, v->cur->data + v->off, n);
    v->off += n;
    v->bytes += n;
    if (v->off == v->cur->len) {
        frame_unref(v->cur);
        v->cur = NULL;
    }
    pthread_mutex_unlock(&s->ss->lock);
    return (ssize_t)n;
}

uint64_t sdxs_stream_leave(sdxs_streams *ss, sdxs_viewer *v)
{
    uint64_t bytes = v->bytes;
    sdxs_stream *s = v->stream;

    pthread_mutex_lock(&ss->lock);
    if (v->waiting) { /* not expected (a suspended connection does not finish), but harmless */
        sdxs_viewer **pp = &s->waiting;
        while (*pp && *pp != v)
            pp = &(*pp)->next_waiting;
        if (*pp)
            *pp = v->next_waiting;
    }
    frame_unref(v->cur);
    s->viewers--;
    ss->viewers--;
    stream_unref(s);
    pthread_mutex_unlock(&ss->lock);
    free(v);
    return bytes;
}

void sdxs_streams_stop(sdxs_streams *ss)
{
    pthread_mutex_lock(&ss->lock);
    ss->stopping = true;
    pthread_cond_broadcast(&ss->wake);
    pthread_mutex_unlock(&ss->lock);
    for (int i = 0; i < SDXS_SERVE_MAX_STREAMS; i++)
        if (ss->joinable[i]) {
            pthread_join(ss->threads[i], NULL);
            ss->joinable[i] = false;
        }
}

void sdxs_streams_free(sdxs_streams *ss)
{
    SDXS_ASSERT(ss->producers == 0 && ss->viewers == 0);
    pthread_cond_destroy(&ss->wake);
    pthread_mutex_destroy(&ss->lock);
}
