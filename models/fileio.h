/* Reading the files a user hands us (configs, checkpoints, tokenizers, inputs) safely, and
 * cleaning up after writers that were killed. Shared by models/, engine/ and bindings/. */
#ifndef CVENE_FILEIO_H
#define CVENE_FILEIO_H

#include <stddef.h>
#include "cvene.h"

/* Open path read-only for a regular file. A named pipe, device, socket or directory is
 * refused before anything can block (the open is non-blocking, then fstat decides); a
 * symlink loop or a missing file is reported as such. Returns the descriptor (blocking mode
 * restored) and its size, or -1 with the reason in why (path included). */
int file_open_regular(const char *path, size_t *size, char *why, size_t whylen);

/* The whole regular file, NUL-terminated, in a malloc'd *buf of *len bytes (len may be
 * NULL). Refuses files larger than max bytes. On failure *buf is NULL, why holds the message
 * (path included) and the status says what kind of failure (CVENE_ERR_IO, CVENE_ERR_OOM). */
cvene_status file_read_all(const char *path, size_t max, char **buf, size_t *len, char *why, size_t whylen);

/* What a failed stat/open of path means, as "path: reason" in why ("no such file", "a
 * symlink loop", ...); for messages of callers that probe for optional files. */
void file_describe_error(const char *path, int err, char *why, size_t whylen);

/* Writers here write "PATH.tmp.PID" and rename it over PATH. A writer that was killed leaves
 * its temporary file behind; this removes every "PATH.tmp.PID" whose process PID no longer
 * exists (a live writer's file is left alone). Returns how many were removed. */
int file_remove_stale_tmp(const char *path);

#endif
