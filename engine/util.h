/* util.h: what every part of the engine shares: filling an sdxs_error, the logger, the panic
 * function for broken invariants, checked allocation and whole-file reads.
 *
 * Errors travel as sdxs_status return values with the details in an sdxs_error; nothing on a
 * request path exits. sdxs_panic is only for bugs (an invariant the code itself broke).
 */
#ifndef SDXS_UTIL_H
#define SDXS_UTIL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sdxs.h"

#if defined(__GNUC__)
#define SDXS_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#define SDXS_NORETURN __attribute__((noreturn))
#else
#define SDXS_PRINTF(fmt, args)
#define SDXS_NORETURN
#endif

#define SDXS_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Fills err (when not NULL) and returns status, so a failure reads `return sdxs_fail(...)`.
 * param names the field or file at fault; it may be NULL. */
sdxs_status sdxs_fail(sdxs_error *err, sdxs_status status, const char *param, const char *fmt,
                      ...) SDXS_PRINTF(4, 5);
void sdxs_error_clear(sdxs_error *err);

/* Logging: one line per call with time, level and subsystem, to stderr or a replaceable sink. */
typedef enum sdxs_log_level {
    SDXS_LOG_DEBUG = 0,
    SDXS_LOG_INFO,
    SDXS_LOG_WARN,
    SDXS_LOG_ERROR,
    SDXS_LOG_OFF,
} sdxs_log_level;

typedef void (*sdxs_log_sink)(sdxs_log_level level, const char *line, void *user);

void sdxs_log_set_level(sdxs_log_level level);
sdxs_log_level sdxs_log_get_level(void);
void sdxs_log_set_sink(sdxs_log_sink sink, void *user);
void sdxs_log_write(sdxs_log_level level, const char *subsystem, const char *fmt, ...)
    SDXS_PRINTF(3, 4);

/* The level is checked before the arguments are formatted. */
#define SDXS_LOG(level, subsystem, ...)                                                            \
    do {                                                                                           \
        if ((level) >= sdxs_log_get_level())                                                      \
            sdxs_log_write((level), (subsystem), __VA_ARGS__);                                     \
    } while (0)
#define SDXS_DEBUG(sub, ...) SDXS_LOG(SDXS_LOG_DEBUG, sub, __VA_ARGS__)
#define SDXS_INFO(sub, ...) SDXS_LOG(SDXS_LOG_INFO, sub, __VA_ARGS__)
#define SDXS_WARN(sub, ...) SDXS_LOG(SDXS_LOG_WARN, sub, __VA_ARGS__)
#define SDXS_ERROR(sub, ...) SDXS_LOG(SDXS_LOG_ERROR, sub, __VA_ARGS__)

/* A broken invariant: logs where and why, then aborts. Never for bad input. */
SDXS_NORETURN void sdxs_panic_at(const char *file, int line, const char *fmt, ...)
    SDXS_PRINTF(3, 4);
#define sdxs_panic(...) sdxs_panic_at(__FILE__, __LINE__, __VA_ARGS__)
#define SDXS_ASSERT(cond)                                                                          \
    do {                                                                                           \
        if (!(cond))                                                                               \
            sdxs_panic("assertion failed: %s", #cond);                                             \
    } while (0)

/* Allocation that reports failure through err instead of returning silently. */
void *sdxs_alloc(size_t bytes, sdxs_error *err, const char *what);
void *sdxs_calloc(size_t count, size_t size, sdxs_error *err, const char *what);
char *sdxs_strdup(const char *s, sdxs_error *err);

/* Overflow-checked size arithmetic: returns false when the result does not fit. */
bool sdxs_mul_size(size_t a, size_t b, size_t *out);
bool sdxs_add_size(size_t a, size_t b, size_t *out);

/* Reads a whole file up to max_bytes into a NUL-terminated buffer; *len excludes the NUL. */
sdxs_status sdxs_read_file(const char *path, size_t max_bytes, char **data, size_t *len,
                           sdxs_error *err);
bool sdxs_file_exists(const char *path);

/* Joins a directory and a relative path; the result must fit in cap bytes. */
sdxs_status sdxs_path_join(char *out, size_t cap, const char *dir, const char *rel,
                           sdxs_error *err);

/* Monotonic time in milliseconds, for timings and logs. */
double sdxs_now_ms(void);

#endif /* SDXS_UTIL_H */
