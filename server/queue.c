/* queue.c: the request queue and the one worker thread that runs the engine. Requests wait in
 * arrival order; the worker takes the oldest, lets it wait up to --batch-wait-ms for others of
 * the same size and mode to join, then runs them all as one sdxs_generate batch of at most
 * --max-batch images, each with its own prompt and seed, and hands every request its own images.
 * One worker is enough: calls on one model are serialised by the engine anyway.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/model.h"
#include "engine/taesd.h"
#include "engine/util.h"
#include "server/server.h"

/* ---- jobs ---- */

sdxs_job *sdxs_job_new(int n, const char *prompt, sdxs_error *err)
{
    sdxs_job *job;
    if (n < 1 || n > SDXS_SERVE_MAX_BATCH) {
        sdxs_fail(err, SDXS_ERR_INVALID, "n", "%d images is not allowed: 1 to %d", n,
                  SDXS_SERVE_MAX_BATCH);
        return NULL;
    }
    job = sdxs_calloc(1, sizeof(*job), err, "a job");
    if (!job)
        return NULL;
    job->n = n;
    job->prompt = sdxs_strdup(prompt, err);
    job->out = sdxs_calloc((size_t)n, sizeof(sdxs_image), err, "job images");
    if (!job->prompt || !job->out) {
        sdxs_job_free(job);
        return NULL;
    }
    job->strength = 1.0f;
    return job;
}

void sdxs_job_free(sdxs_job *job)
{
    if (!job)
        return;
    if (job->out)
        for (int i = 0; i < job->n; i++)
            sdxs_image_free(&job->out[i]);
    free(job->out);
    sdxs_image_free(&job->init);
    sdxs_image_free(&job->control);
    free(job->prompt);
    free(job);
}

size_t sdxs_serve_noise_floats(const sdxs_model *model, int width, int height)
{
    int down = sdxs_taesd_downscale(&model->taesd.cfg);
    return (size_t)model->taesd.cfg.latent_channels * (size_t)(height / down) *
           (size_t)(width / down);
}

/* ---- the queue ---- */

void sdxs_queue_init(sdxs_queue *q, sdxs_server *srv)
{
    pthread_condattr_t ca;
    memset(q, 0, sizeof(*q));
    q->srv = srv;
    pthread_mutex_init(&q->lock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&q->wake, &ca);
    pthread_condattr_destroy(&ca);
}

sdxs_submit sdxs_queue_submit(sdxs_queue *q, sdxs_job *job, void (*on_admit)(void *), void *arg)
{
    sdxs_submit r = SDXS_SUBMIT_OK;
    pthread_mutex_lock(&q->lock);
    if (q->stopping) {
        r = SDXS_SUBMIT_STOPPING;
    } else if (job->counted && q->counted >= q->srv->cfg.max_queue) {
        r = SDXS_SUBMIT_FULL;
    } else {
        job->enqueued_ms = sdxs_now_ms();
        job->next = NULL;
        if (q->tail)
            q->tail->next = job;
        else
            q->head = job;
        q->tail = job;
        q->waiting++;
        if (job->counted)
            q->counted++;
        if (on_admit)
            on_admit(arg);
        pthread_cond_signal(&q->wake);
    }
    pthread_mutex_unlock(&q->lock);
    return r;
}

int sdxs_queue_depth(sdxs_queue *q)
{
    int n;
    pthread_mutex_lock(&q->lock);
    n = q->counted;
    pthread_mutex_unlock(&q->lock);
    return n;
}

int sdxs_queue_retry_after_s(sdxs_queue *q)
{
    double s;
    pthread_mutex_lock(&q->lock);
    s = q->counted * q->avg_image_ms / 1e3;
    pthread_mutex_unlock(&q->lock);
    return s < 1.0 ? 1 : (s > 60.0 ? 60 : (int)ceil(s));
}

static void deadline_ts(double ms, struct timespec *ts)
{
    ts->tv_sec = (time_t)(ms / 1e3);
    ts->tv_nsec = (long)((ms - (double)ts->tv_sec * 1e3) * 1e6);
    if (ts->tv_nsec < 0)
        ts->tv_nsec = 0;
    if (ts->tv_nsec >= 1000000000L)
        ts->tv_nsec = 999999999L;
}

static void unlink_job(sdxs_queue *q, sdxs_job *prev, sdxs_job *job)
{
    if (prev)
        prev->next = job->next;
    else
        q->head = job->next;
    if (q->tail == job)
        q->tail = prev;
    job->next = NULL;
    q->waiting--;
}

/* Jobs that could share an engine run with the head. */
static bool same_kind(const sdxs_job *a, const sdxs_job *b)
{
    bool ia = a->init.rgb != NULL, ib = b->init.rgb != NULL;
    bool ca = a->control.rgb != NULL, cb = b->control.rgb != NULL;
    return a->width == b->width && a->height == b->height && ia == ib &&
           (!ia || a->strength == b->strength) && ca == cb &&
           (!ca || (a->control_mode == b->control_mode && a->control_scale == b->control_scale));
}

static int images_like_head(const sdxs_queue *q, int cap)
{
    int images = 0;
    for (const sdxs_job *j = q->head; j && images < cap; j = j->next)
        if (same_kind(q->head, j) && images + j->n <= cap)
            images += j->n;
    return images;
}

/* Removes the counted jobs that waited longer than --request-timeout-ms; returns them as a
 * list. Called with the lock held. */
static sdxs_job *take_expired(sdxs_queue *q, double now)
{
    sdxs_job *out = NULL, **tail = &out, *prev = NULL, *j = q->head;
    while (j) {
        sdxs_job *next = j->next;
        if (j->counted && now - j->enqueued_ms > q->srv->cfg.request_timeout_ms) {
            unlink_job(q, prev, j);
            *tail = j;
            tail = &j->next;
        } else {
            prev = j;
        }
        j = next;
    }
    return out;
}

/* Removes the head and the jobs like it, oldest first, up to max_batch images. */
static int take_batch(sdxs_queue *q, sdxs_job **batch, int *images)
{
    sdxs_job *head = q->head, *prev = NULL, *j = q->head;
    int count = 0;
    *images = 0;
    while (j) {
        sdxs_job *next = j->next;
        if (same_kind(head, j) && *images + j->n <= q->srv->cfg.max_batch) {
            unlink_job(q, prev, j);
            batch[count++] = j;
            *images += j->n;
        } else {
            prev = j;
        }
        j = next;
    }
    return count;
}

/* Marks jobs finished in the queue's books, then hands each back (after which the job belongs
 * to its submitter again and is not touched). */
static void finish_jobs(sdxs_queue *q, sdxs_job **jobs, int count)
{
    sdxs_job_done done[SDXS_SERVE_MAX_BATCH];
    void *user[SDXS_SERVE_MAX_BATCH];
    int counted = 0;
    double now = sdxs_now_ms();

    for (int i = 0; i < count; i++) {
        jobs[i]->finished_ms = now;
        counted += jobs[i]->counted;
        done[i] = jobs[i]->done;
        user[i] = jobs[i]->user;
    }
    pthread_mutex_lock(&q->lock);
    q->counted -= counted;
    pthread_mutex_unlock(&q->lock);
    for (int i = 0; i < count; i++)
        done[i](jobs[i], user[i]);
}

static void expire(sdxs_queue *q, sdxs_job *list)
{
    while (list) {
        sdxs_job *next = list->next;
        list->http_status = 503;
        sdxs_fail(&list->err, SDXS_ERR_RUNTIME, NULL,
                  "the request waited %.0f ms in the queue; the limit is %d ms (--request-"
                  "timeout-ms)",
                  sdxs_now_ms() - list->enqueued_ms, q->srv->cfg.request_timeout_ms);
        list->next = NULL;
        finish_jobs(q, &list, 1);
        list = next;
    }
}

/* The batch's starting noise when some job brings its own: the others get their seed's. */
static float *batch_noise(const sdxs_model *m, sdxs_job **jobs, int count, int images,
                          sdxs_error *err)
{
    size_t per = sdxs_serve_noise_floats(m, jobs[0]->width, jobs[0]->height);
    float *noise = sdxs_calloc((size_t)images * per, sizeof(float), err, "batch noise");
    float *dst = noise;
    if (!noise)
        return NULL;
    for (int b = 0; b < count; b++)
        for (int i = 0; i < jobs[b]->n; i++, dst += per) {
            if (jobs[b]->noise)
                memcpy(dst, jobs[b]->noise + (size_t)i * per, per * sizeof(float));
            else
                sdxs_randn(jobs[b]->seeds[i], dst, per);
        }
    return noise;
}

/* One engine run for the batch; every job gets its images or the run's error. */
static void run_batch(sdxs_queue *q, sdxs_job **jobs, int count, int images)
{
    sdxs_server *s = q->srv;
    const char *prompts[SDXS_SERVE_MAX_BATCH];
    uint64_t seeds[SDXS_SERVE_MAX_BATCH];
    sdxs_image inits[SDXS_SERVE_MAX_BATCH], controls[SDXS_SERVE_MAX_BATCH];
    sdxs_image out[SDXS_SERVE_MAX_BATCH];
    float *noise = NULL; /* (images, C, h, w) */
    sdxs_request req;
    sdxs_timings tm;
    sdxs_error err;
    sdxs_status st = SDXS_OK;
    bool own_noise = false;
    double t0 = sdxs_now_ms();
    int k = 0;

    /* Step 1: the request, entry by entry in job order. */
    memset(out, 0, sizeof(out));
    memset(&tm, 0, sizeof(tm));
    sdxs_error_clear(&err);
    for (int b = 0; b < count; b++) {
        jobs[b]->started_ms = t0;
        jobs[b]->batch_images = images;
        own_noise |= jobs[b]->noise != NULL;
        if (jobs[b]->counted)
            sdxs_metrics_stage(&s->metrics, SDXS_STAGE_QUEUE, t0 - jobs[b]->enqueued_ms);
        for (int i = 0; i < jobs[b]->n; i++, k++) {
            prompts[k] = jobs[b]->prompt;
            seeds[k] = jobs[b]->seeds[i];
            inits[k] = jobs[b]->init;
            controls[k] = jobs[b]->control;
        }
    }
    memset(&req, 0, sizeof(req));
    req.batch = images;
    req.prompts = prompts;
    req.seeds = seeds;
    req.width = jobs[0]->width;
    req.height = jobs[0]->height;
    if (jobs[0]->init.rgb) {
        req.init_images = inits;
        req.strength = jobs[0]->strength;
    }
    if (jobs[0]->control.rgb) {
        req.control_images = controls;
        req.control_mode = jobs[0]->control_mode;
        req.control_scale = jobs[0]->control_scale;
    }
    if (own_noise) {
        noise = batch_noise(s->model, jobs, count, images, &err);
        if (!noise)
            st = SDXS_ERR_RUNTIME;
        req.noise = noise;
    }

    /* Step 2: the run (a stream queues its next frame as soon as this one starts). */
    for (int b = 0; b < count; b++)
        if (jobs[b]->started)
            jobs[b]->started(jobs[b], jobs[b]->user);
    if (st == SDXS_OK)
        st = sdxs_generate(s->model, &req, out, &tm, &err);
    free(noise);

    /* Step 3: hand out the images, or the error, and keep the books. */
    k = 0;
    for (int b = 0; b < count; b++) {
        sdxs_job *j = jobs[b];
        j->http_status = st == SDXS_OK ? 200 : (st == SDXS_ERR_INVALID ? 400 : 500);
        if (st != SDXS_OK)
            j->err = err;
        for (int i = 0; i < j->n; i++, k++)
            j->out[i] = out[k];
    }
    if (st == SDXS_OK) {
        double per_image = tm.total_ms / images;
        sdxs_metrics_batch(&s->metrics, images, &tm);
        pthread_mutex_lock(&q->lock);
        q->avg_image_ms = q->avg_image_ms > 0.0 ? 0.8 * q->avg_image_ms + 0.2 * per_image
                                                : per_image;
        pthread_mutex_unlock(&q->lock);
        SDXS_DEBUG("queue", "batch of %d images (%d requests) %dx%d in %.1f ms", images, count,
                   req.width, req.height, tm.total_ms);
    } else {
        SDXS_ERROR("queue", "batch of %d images (%d requests) %dx%d failed: %s", images, count,
                   req.width, req.height, err.message);
    }
    finish_jobs(q, jobs, count);
}

static void *worker_main(void *arg)
{
    sdxs_queue *q = arg;
    sdxs_job *batch[SDXS_SERVE_MAX_BATCH];

    pthread_mutex_lock(&q->lock);
    for (;;) {
        sdxs_job *expired = take_expired(q, sdxs_now_ms());
        int count, images;
        double deadline;

        if (expired) {
            pthread_mutex_unlock(&q->lock);
            expire(q, expired);
            pthread_mutex_lock(&q->lock);
            continue;
        }
        if (!q->head) {
            if (q->stopping)
                break;
            pthread_cond_wait(&q->wake, &q->lock);
            continue;
        }

        /* Let the oldest request wait a little for company, unless its batch is full. */
        deadline = q->head->enqueued_ms + q->srv->cfg.batch_wait_ms;
        while (!q->stopping && images_like_head(q, q->srv->cfg.max_batch) < q->srv->cfg.max_batch &&
               sdxs_now_ms() < deadline) {
            struct timespec ts;
            deadline_ts(deadline, &ts);
            int rc = pthread_cond_timedwait(&q->wake, &q->lock, &ts);
            if (rc != 0 && rc != ETIMEDOUT)
                sdxs_panic("pthread_cond_timedwait failed: %d", rc);
        }
        count = take_batch(q, batch, &images);
        pthread_mutex_unlock(&q->lock);
        run_batch(q, batch, count, images);
        pthread_mutex_lock(&q->lock);
    }
    pthread_mutex_unlock(&q->lock);
    return NULL;
}

sdxs_status sdxs_queue_start(sdxs_queue *q, sdxs_error *err)
{
    int rc = pthread_create(&q->worker, NULL, worker_main, q);
    if (rc != 0)
        return sdxs_fail(err, SDXS_ERR_RUNTIME, NULL, "cannot start the engine worker: %s",
                         strerror(rc));
    q->started = true;
    return SDXS_OK;
}

void sdxs_queue_stop(sdxs_queue *q)
{
    pthread_mutex_lock(&q->lock);
    q->stopping = true;
    pthread_cond_broadcast(&q->wake);
    pthread_mutex_unlock(&q->lock);
    if (q->started) {
        pthread_join(q->worker, NULL);
        q->started = false;
    }
}

void sdxs_queue_free(sdxs_queue *q)
{
    SDXS_ASSERT(!q->head && !q->started);
    pthread_cond_destroy(&q->wake);
    pthread_mutex_destroy(&q->lock);
}
