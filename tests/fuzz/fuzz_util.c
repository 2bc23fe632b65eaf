#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/fuzz/fuzz_util.h"

void fuzz_fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("cvene fuzz: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    abort();
}

void fuzz_ok(cvene_status st, const char *what) {
    if (st != CVENE_OK)
        fuzz_fail("%s failed (%s): %s", what, cvene_status_name(st), cvene_ctx_error(fuzz_ctx()));
}

void fuzz_note(const char *what, cvene_status st) {
    static int verbose = -1;
    if (verbose < 0) {
        const char *v = getenv("CVENE_FUZZ_VERBOSE");
        verbose = v && *v && strcmp(v, "0") != 0;
    }
    if (verbose)
        fprintf(stderr, "cvene fuzz: %s: %s%s%s\n", what, cvene_status_name(st), st == CVENE_OK ? "" : ": ",
                st == CVENE_OK ? "" : cvene_ctx_error(fuzz_ctx()));
}

/* ---- scratch directory ---------------------------------------------------- */
static char scratch[FUZZ_PATH_MAX];

/* rm -r of the scratch tree (files and one level of subdirectories; symlinks unlinked, never
 * followed) */
static void remove_tree(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    char p[FUZZ_PATH_MAX];
    for (struct dirent *e; (e = readdir(d));) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat sb;
        if (lstat(p, &sb) == 0 && S_ISDIR(sb.st_mode)) remove_tree(p);
        else unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

static void remove_scratch(void) {
    if (scratch[0]) remove_tree(scratch);
}

const char *fuzz_tmpdir(void) {
    if (scratch[0]) return scratch;
    const char *t = getenv("TMPDIR");
    snprintf(scratch, sizeof scratch, "%s/cvene-fuzz-XXXXXX", t && *t ? t : "/tmp");
    if (!mkdtemp(scratch)) fuzz_fail("cannot create a scratch directory %s: %s", scratch, strerror(errno));
    atexit(remove_scratch);
    return scratch;
}

void fuzz_path(char *out, const char *name) { snprintf(out, FUZZ_PATH_MAX, "%s/%s", fuzz_tmpdir(), name); }

void fuzz_subdir(char *out, const char *name) {
    fuzz_path(out, name);
    if (mkdir(out, 0700) != 0 && errno != EEXIST) fuzz_fail("cannot create %s: %s", out, strerror(errno));
}

void fuzz_write(const char *path, const void *data, size_t n) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) fuzz_fail("cannot write %s: %s", path, strerror(errno));
    const char *p = data;
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) fuzz_fail("cannot write %s: %s", path, strerror(errno));
        p += w, n -= (size_t)w;
    }
    close(fd);
}

void fuzz_link(const char *target, const char *link) {
    unlink(link);
    if (symlink(target, link) != 0) fuzz_fail("cannot link %s -> %s: %s", link, target, strerror(errno));
}

char *fuzz_cstr(const uint8_t *data, size_t n) {
    char *s = malloc(n + 1);
    if (!s) fuzz_fail("out of memory copying %zu bytes", n);
    if (n) memcpy(s, data, n);
    s[n] = '\0';
    return s;
}

/* ---- repository data ------------------------------------------------------ */
static void repo_path(char *out, const char *env, const char *compiled_in, const char *rel) {
    const char *v = getenv(env);
    snprintf(out, FUZZ_PATH_MAX, "%s/%s", v && *v ? v : compiled_in, rel);
}
void fuzz_fixture(char *out, const char *rel) { repo_path(out, "CVENE_FIXTURES_DIR", CVENE_FIXTURES_PATH, rel); }
void fuzz_asset(char *out, const char *rel) { repo_path(out, "CVENE_ASSETS_DIR", CVENE_ASSETS_PATH, rel); }

/* ---- context -------------------------------------------------------------- */
static cvene_ctx *ctx;

static void free_ctx(void) {
    cvene_ctx_free(ctx);
    ctx = NULL;
}

cvene_ctx *fuzz_ctx(void) {
    if (ctx) return ctx;
    cvene_ctx_params p = cvene_ctx_default_params();
    p.n_threads = 1; /* libFuzzer runs one input at a time; threads would only add noise */
    char err[256];
    if (cvene_ctx_new(&p, &ctx, err, sizeof err) != CVENE_OK) fuzz_fail("cvene_ctx_new: %s", err);
    atexit(free_ctx);
    return ctx;
}
