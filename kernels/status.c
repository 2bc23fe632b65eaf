/* Status strings and the error channel every layer reports through (kernels/ctx.h). */
#include <stdarg.h>
#include <stdio.h>

#include "kernels/ctx.h"

const char *cvene_status_name(cvene_status s) {
    switch (s) {
    case CVENE_OK: return "ok";
    case CVENE_ERR_INVALID_ARG: return "invalid argument";
    case CVENE_ERR_IO: return "i/o error";
    case CVENE_ERR_FORMAT: return "format error";
    case CVENE_ERR_OOM: return "out of memory";
    case CVENE_ERR_UNSUPPORTED: return "unsupported";
    case CVENE_ERR_BACKEND: return "backend error";
    case CVENE_ERR_CALLBACK: return "stopped by callback";
    case CVENE_ERR_NUMERIC: return "non-finite result";
    }
    return "unknown status";
}

cvene_status cvene_fail(cvene_ctx *ctx, cvene_status s, const char *fmt, ...) {
    if (ctx) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(ctx->err, sizeof ctx->err, fmt, ap);
        va_end(ap);
    }
    return s;
}
