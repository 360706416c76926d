/* static.c: the demo page's files (server/static/: HTML, JavaScript, CSS, no build step), read
 * into memory once at start-up and served by name. Only names found in that folder exist, so
 * no request path ever reaches the file system.
 */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/util.h"
#include "server/server.h"

static bool is_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* server/static beside the source tree the binary was built from, else above the binary. */
static void default_dir(char *buf, size_t cap)
{
    char exe[900]; /* leaves room in buf (1024) for the suffix */
    ssize_t n;
#ifdef SDXS_SOURCE_DIR
    snprintf(buf, cap, "%s/server/static", SDXS_SOURCE_DIR);
    if (is_dir(buf))
        return;
#endif
    n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n > 0) {
        char *slash;
        exe[n] = '\0';
        slash = strrchr(exe, '/');
        if (slash) {
            *slash = '\0';
            snprintf(buf, cap, "%s/../server/static", exe);
            if (is_dir(buf))
                return;
        }
    }
    snprintf(buf, cap, "server/static");
}

static const char *mime_of(const char *name)
{
    static const char *const types[][2] = {
        {".html", "text/html; charset=utf-8"},  {".js", "text/javascript; charset=utf-8"},
        {".css", "text/css; charset=utf-8"},    {".svg", "image/svg+xml"},
        {".png", "image/png"},                  {".jpg", "image/jpeg"},
        {".ico", "image/x-icon"},               {".json", "application/json"},
        {".txt", "text/plain; charset=utf-8"},
    };
    const char *dot = strrchr(name, '.');
    for (size_t i = 0; dot && i < SDXS_ARRAY_LEN(types); i++)
        if (!strcmp(dot, types[i][0]))
            return types[i][1];
    return "application/octet-stream";
}

/* Plain names only: letters, digits, '.', '-', '_', not starting with '.'. */
static bool plain_name(const char *name)
{
    if (!name[0] || name[0] == '.' || strlen(name) >= sizeof(((sdxs_static_file *)0)->name))
        return false;
    for (const char *p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '.' || *p == '-' || *p == '_'))
            return false;
    return true;
}

sdxs_status sdxs_static_load(sdxs_static *st, const char *dir, sdxs_error *err)
{
    DIR *d;
    struct dirent *e;
    size_t total = 0;
    sdxs_status rc = SDXS_OK;

    memset(st, 0, sizeof(*st));
    if (dir)
        snprintf(st->dir, sizeof(st->dir), "%s", dir);
    else
        default_dir(st->dir, sizeof(st->dir));
    d = opendir(st->dir);
    if (!d)
        return sdxs_fail(err, SDXS_ERR_INVALID, "--static-dir",
                         "cannot open the demo page's folder %s", st->dir);
    while (rc == SDXS_OK && (e = readdir(d)) != NULL) {
        char path[sizeof(st->dir) + 258]; /* a folder, "/" and a d_name (at most 255) */
        sdxs_static_file *f;
        struct stat sb;
        if (!plain_name(e->d_name))
            continue;
        snprintf(path, sizeof(path), "%s/%s", st->dir, e->d_name);
        if (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode))
            continue;
        if (st->count == SDXS_STATIC_MAX_FILES) {
            rc = sdxs_fail(err, SDXS_ERR_INVALID, "--static-dir",
                           "%s holds more than %d files", st->dir, SDXS_STATIC_MAX_FILES);
            break;
        }
        f = &st->files[st->count];
        rc = sdxs_read_file(path, SDXS_STATIC_MAX_BYTES - total, &f->data, &f->len, err);
        if (rc != SDXS_OK)
            break;
        snprintf(f->name, sizeof(f->name), "%.63s", e->d_name); /* plain_name: < 64 bytes */
        f->mime = mime_of(f->name);
        total += f->len;
        st->count++;
    }
    closedir(d);
    if (rc != SDXS_OK)
        sdxs_static_free(st);
    return rc;
}

const sdxs_static_file *sdxs_static_find(const sdxs_static *st, const char *name)
{
    for (int i = 0; i < st->count; i++)
        if (!strcmp(st->files[i].name, name))
            return &st->files[i];
    return NULL;
}

void sdxs_static_free(sdxs_static *st)
{
    for (int i = 0; i < st->count; i++)
        free(st->files[i].data);
    st->count = 0;
}
