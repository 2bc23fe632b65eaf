/* Context internals shared by engine/, kernels/ and models/ (not public). */
#ifndef CVENE_CTX_H
#define CVENE_CTX_H

#include "cvene.h"
#include "kernels/backend.h"

#define CVENE_ERR_LEN 1024
/* internal: a site callback ended the forward early on purpose (never returned) */
#define CVENE_SITE_STOPPED ((cvene_status)100)

struct cvene_ctx {
    cvene_ctx_params params;
    cvene_backend *be;  /* op table + device state; owned */
    char err[CVENE_ERR_LEN];
    uint64_t serial;    /* the last identity handed out (a dataset's uid) */
};

/* Record a message on ctx and return status (printf-style). ctx may be NULL. */
cvene_status cvene_fail(cvene_ctx *ctx, cvene_status s, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* Evaluate a status expression; return it from the enclosing function on failure. */
#define CVENE_TRY(expr)                              \
    do {                                             \
        cvene_status try_s_ = (expr);                \
        if (try_s_ != CVENE_OK) return try_s_;       \
    } while (0)

#endif
