/* Shared helpers of the libFuzzer harnesses (tests/fuzz/fuzz_*.c; docs/fuzzing.md).
 *
 * The parsers under test read paths, so each harness writes its input into a scratch
 * directory of its own process (mkdtemp under $TMPDIR, removed at exit) and hands the
 * path over: the bytes reach the parser through the same open/mmap/read code users hit.
 * A harness reports a broken promise (a round trip that differs, a result that breaks a
 * documented invariant) with fuzz_fail, which prints why and aborts, so libFuzzer saves
 * the input as a crash. */
#ifndef CVENE_FUZZ_UTIL_H
#define CVENE_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "cvene.h"

/* The process's scratch directory (created on first use). */
const char *fuzz_tmpdir(void);
#define FUZZ_PATH_MAX 4096
/* "<scratch>/<name>" into out (FUZZ_PATH_MAX bytes). */
void fuzz_path(char *out, const char *name);
/* A subdirectory of the scratch directory, created if missing; its path into out. */
void fuzz_subdir(char *out, const char *name);
/* Write n bytes to path (truncating); aborts if the scratch file cannot be written, since
 * the run would then test nothing. */
void fuzz_write(const char *path, const void *data, size_t n);
/* Make link point at target (replacing what is there); aborts on failure. */
void fuzz_link(const char *target, const char *link);
/* data as a malloc'd NUL-terminated string (embedded NULs end it early, as they would in a
 * file read as text). */
char *fuzz_cstr(const uint8_t *data, size_t n);

/* Repository data: tests/fixtures and assets/, compiled in (CVENE_FIXTURES_PATH,
 * CVENE_ASSETS_PATH), overridable by CVENE_FIXTURES_DIR / CVENE_ASSETS_DIR as in the
 * test suites (tests/test_paths.h). */
void fuzz_fixture(char *out, const char *rel); /* out: FUZZ_PATH_MAX bytes */
void fuzz_asset(char *out, const char *rel);

/* One CPU context on one thread for the whole process (aborts if it cannot be made). */
cvene_ctx *fuzz_ctx(void);

/* printf-style message on stderr, then abort(). */
void fuzz_fail(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2), noreturn))
#endif
    ;
/* With CVENE_FUZZ_VERBOSE=1 in the environment, what happened to an input: "what: status:
 * the context's message" on stderr (replaying one reproducer shows why it was refused). */
void fuzz_note(const char *what, cvene_status st);
/* Abort unless st is CVENE_OK, naming what failed and the context's message. */
void fuzz_ok(cvene_status st, const char *what);

#endif
