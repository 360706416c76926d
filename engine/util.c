/* util.c: error filling, the logger, panic, checked allocation and file reads (see util.h). */
#define _POSIX_C_SOURCE 200809L
#include "util.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

sdxs_status sdxs_fail(sdxs_error *err, sdxs_status status, const char *param, const char *fmt,
                      ...)
{
    if (err) {
        va_list ap;
        err->status = status;
        snprintf(err->param, sizeof(err->param), "%s", param ? param : "");
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof(err->message), fmt, ap);
        va_end(ap);
        /* Messages are one line: a newline inside would break log lines and HTTP bodies. */
        for (char *p = err->message; *p; p++)
            if (*p == '\n' || *p == '\r')
                *p = ' ';
    }
    return status;
}

void sdxs_error_clear(sdxs_error *err)
{
    if (err) {
        err->status = SDXS_OK;
        err->param[0] = '\0';
        err->message[0] = '\0';
    }
}

/* ---- logging ---- */

static sdxs_log_level g_log_level = SDXS_LOG_INFO;
static sdxs_log_sink g_log_sink;
static void *g_log_user;
static pthread_mutex_t g_log_lock = PTHREAD_MUTEX_INITIALIZER;

void sdxs_log_set_level(sdxs_log_level level) { g_log_level = level; }
sdxs_log_level sdxs_log_get_level(void) { return g_log_level; }

void sdxs_log_set_sink(sdxs_log_sink sink, void *user)
{
    pthread_mutex_lock(&g_log_lock);
    g_log_sink = sink;
    g_log_user = user;
    pthread_mutex_unlock(&g_log_lock);
}

void sdxs_log_write(sdxs_log_level level, const char *subsystem, const char *fmt, ...)
{
    static const char *names[] = {"debug", "info", "warn", "error", "off"};
    char line[1024];
    struct timespec ts;
    struct tm tm;
    size_t n;
    va_list ap;

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
    n += (size_t)snprintf(line + n, sizeof(line) - n, ".%03ldZ %-5s %s: ", ts.tv_nsec / 1000000L,
                          names[level <= SDXS_LOG_OFF ? level : SDXS_LOG_OFF], subsystem);
    if (n < sizeof(line)) {
        va_start(ap, fmt);
        vsnprintf(line + n, sizeof(line) - n, fmt, ap);
        va_end(ap);
    }

    pthread_mutex_lock(&g_log_lock);
    if (g_log_sink)
        g_log_sink(level, line, g_log_user);
    else
        fprintf(stderr, "%s\n", line);
    pthread_mutex_unlock(&g_log_lock);
}

void sdxs_panic_at(const char *file, int line, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    fprintf(stderr, "sdxs: panic at %s:%d: %s\n", file, line, msg);
    fflush(stderr);
    abort();
}

/* ---- allocation ---- */

void *sdxs_alloc(size_t bytes, sdxs_error *err, const char *what)
{
    void *p = malloc(bytes ? bytes : 1);
    if (!p)
        sdxs_fail(err, SDXS_ERR_RUNTIME, NULL, "out of memory allocating %zu bytes for %s", bytes,
                  what);
    return p;
}

void *sdxs_calloc(size_t count, size_t size, sdxs_error *err, const char *what)
{
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p)
        sdxs_fail(err, SDXS_ERR_RUNTIME, NULL, "out of memory allocating %zu x %zu bytes for %s",
                  count, size, what);
    return p;
}

char *sdxs_strdup(const char *s, sdxs_error *err)
{
    size_t n = strlen(s) + 1;
    char *p = sdxs_alloc(n, err, "a string");
    if (p)
        memcpy(p, s, n);
    return p;
}

bool sdxs_mul_size(size_t a, size_t b, size_t *out)
{
    if (a && b > SIZE_MAX / a)
        return false;
    *out = a * b;
    return true;
}

bool sdxs_add_size(size_t a, size_t b, size_t *out)
{
    if (b > SIZE_MAX - a)
        return false;
    *out = a + b;
    return true;
}

/* ---- files ---- */

sdxs_status sdxs_read_file(const char *path, size_t max_bytes, char **data, size_t *len,
                           sdxs_error *err)
{
    FILE *f;
    struct stat st;
    char *buf;
    size_t got;

    *data = NULL;
    *len = 0;
    f = fopen(path, "rb");
    if (!f)
        return sdxs_fail(err, SDXS_ERR_MODEL, path, "%s: cannot open: %s", path, strerror(errno));
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return sdxs_fail(err, SDXS_ERR_MODEL, path, "%s: not a regular file", path);
    }
    if ((uint64_t)st.st_size > max_bytes) {
        fclose(f);
        return sdxs_fail(err, SDXS_ERR_MODEL, path, "%s: %lld bytes, over the limit of %zu",
                         path, (long long)st.st_size, max_bytes);
    }
    buf = sdxs_alloc((size_t)st.st_size + 1, err, path);
    if (!buf) {
        fclose(f);
        return SDXS_ERR_RUNTIME;
    }
    got = fread(buf, 1, (size_t)st.st_size, f);
    fclose(f);
    if (got != (size_t)st.st_size) {
        free(buf);
        return sdxs_fail(err, SDXS_ERR_MODEL, path, "%s: short read (%zu of %lld bytes)", path,
                         got, (long long)st.st_size);
    }
    buf[got] = '\0';
    *data = buf;
    *len = got;
    return SDXS_OK;
}

bool sdxs_file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

sdxs_status sdxs_path_join(char *out, size_t cap, const char *dir, const char *rel,
                           sdxs_error *err)
{
    int n = snprintf(out, cap, "%s/%s", dir, rel);
    if (n < 0 || (size_t)n >= cap)
        return sdxs_fail(err, SDXS_ERR_INVALID, "model", "path too long: %s/%s", dir, rel);
    return SDXS_OK;
}

double sdxs_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}
