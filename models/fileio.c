#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "models/fileio.h"

void file_describe_error(const char *path, int err, char *why, size_t whylen) {
    const char *what = err == ENOENT  ? "no such file"
                     : err == ELOOP   ? "a symlink loop (or too many levels of symlinks)"
                     : err == ENOTDIR ? "a component of the path is not a directory"
                     : err == EACCES  ? "permission denied"
                                      : strerror(err);
    snprintf(why, whylen, "%.3000s: cannot open: %s", path, what);
}

int file_open_regular(const char *path, size_t *size, char *why, size_t whylen) {
    /* O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        file_describe_error(path, errno, why, whylen);
        return -1;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        file_describe_error(path, errno, why, whylen);
        close(fd);
        return -1;
    }
    if (!S_ISREG(sb.st_mode)) {
        const char *kind = S_ISDIR(sb.st_mode)  ? "a directory"
                         : S_ISFIFO(sb.st_mode) ? "a named pipe"
                         : S_ISCHR(sb.st_mode)  ? "a character device"
                         : S_ISBLK(sb.st_mode)  ? "a block device"
                         : S_ISSOCK(sb.st_mode) ? "a socket"
                                                : "a special file";
        snprintf(why, whylen, "%.3000s: cannot open: it is %s, not a regular file", path, kind);
        close(fd);
        return -1;
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0) fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    if (size) *size = (size_t)sb.st_size;
    return fd;
}

cvene_status file_read_all(const char *path, size_t max, char **buf, size_t *len, char *why, size_t whylen) {
    *buf = NULL;
    if (len) *len = 0;
    size_t n = 0;
    int fd = file_open_regular(path, &n, why, whylen);
    if (fd < 0) return CVENE_ERR_IO;
    if (n > max) {
        snprintf(why, whylen, "%.3000s: %zu bytes is larger than the %zu-byte limit for this file", path, n, max);
        close(fd);
        return CVENE_ERR_IO;
    }
    char *b = malloc(n + 1);
    if (!b) {
        snprintf(why, whylen, "%.3000s: out of memory reading %zu bytes", path, n);
        close(fd);
        return CVENE_ERR_OOM;
    }
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, b + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        got += (size_t)r;
    }
    close(fd);
    if (got != n) {
        snprintf(why, whylen, "%.3000s: short read (%zu of %zu bytes)", path, got, n);
        free(b);
        return CVENE_ERR_IO;
    }
    b[n] = '\0';
    *buf = b;
    if (len) *len = n;
    return CVENE_OK;
}

int file_remove_stale_tmp(const char *path) {
    char dir[4096];
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    if (slash) snprintf(dir, sizeof dir, "%.*s", (int)(slash - path) ? (int)(slash - path) : 1, path);
    else snprintf(dir, sizeof dir, ".");
    size_t bl = strlen(base);
    DIR *d = opendir(dir);
    if (!d) return 0;
    int removed = 0;
    for (struct dirent *e; (e = readdir(d));) {
        const char *nm = e->d_name;
        if (strncmp(nm, base, bl) != 0 || strncmp(nm + bl, ".tmp.", 5) != 0) continue;
        const char *p = nm + bl + 5;
        char *end;
        long pid = strtol(p, &end, 10);
        if (end == p || *end || pid <= 0) continue;
        if (pid == (long)getpid()) continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue; /* alive (or not ours to judge) */
        char full[8192];
        snprintf(full, sizeof full, "%s/%s", dir, nm);
        removed += unlink(full) == 0;
    }
    closedir(d);
    return removed;
}
