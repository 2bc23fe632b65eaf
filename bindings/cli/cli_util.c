/* Small helpers every command shares: a clock and reading a whole input file. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bindings/cli/cli.h"
#include "models/fileio.h"

double cli_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

char *cli_read_file(const char *path, char *err, size_t errlen) {
    char *buf = NULL;
    return file_read_all(path, (size_t)256 << 20, &buf, NULL, err, errlen) == CVENE_OK ? buf : NULL;
}

/* "1,2,5-7" -> list of values in [lo, hi), each at most once, for option `opt` (what: "layer",
 * "position"; why: what the bound is). Returns the count, or -1 after printing what is wrong
 * (every value is checked before any is used). */
int cli_parse_list(const char *cmd, const char *opt, const char *s, int *out, int lo, int hi, const char *what,
                   const char *why) {
    int n = 0;
    const char *s0 = s;
    while (*s) {
        char *end;
        errno = 0;
        long a = strtol(s, &end, 10), b = a;
        if (end == s || errno) goto syntax;
        s = end;
        if (*s == '-') {
            errno = 0;
            b = strtol(s + 1, &end, 10);
            if (end == s + 1 || errno || b < a) goto syntax;
            s = end;
        }
        if (a < lo || b >= hi) {
            fprintf(stderr, "cvene %s: %s \"%s\": %s %ld is outside [%d, %d) (%s)\n", cmd, opt, s0, what, a < lo ? a : b,
                    lo, hi, why);
            return -1;
        }
        for (long v = a; v <= b; v++) {
            for (int k = 0; k < n; k++)
                if (out[k] == (int)v) {
                    fprintf(stderr, "cvene %s: %s \"%s\" lists %s %ld twice\n", cmd, opt, s0, what, v);
                    return -1;
                }
            out[n++] = (int)v; /* at most hi - lo distinct values: out has room for them */
        }
        if (*s == ',') s++;
        else if (*s) goto syntax;
    }
    if (n == 0) goto syntax;
    return n;
syntax:
    fprintf(stderr, "cvene %s: %s must list %ss in [%d, %d) like 0,3,5-7, got \"%s\"\n", cmd, opt, what, lo, hi, s0);
    return -1;
}

int cli_load_weights(cvene_ctx *ctx, cvene_config *cfg, const char *config_path, const char *weights) {
    if (!weights && cvene_config_count_trainable(cfg) == 0) return 0;
    char dir[4096]; /* default: the config's directory, where cvene train --out put both */
    if (!weights) {
        const char *slash = strrchr(config_path, '/');
        snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - config_path) : 1, slash ? config_path : ".");
        if (slash == config_path) snprintf(dir, sizeof dir, "/");
    }
    if (cvene_config_load_weights(cfg, weights ? weights : dir) == CVENE_OK) return 0;
    fprintf(stderr, "cvene: %s%s\n", cvene_ctx_error(ctx),
            weights ? "" : " (looked in CONFIG.json's directory; --weights DIR names another)");
    return -1;
}

int cli_type_config(cvene_ctx *ctx, const char *cmd, const char *type, int layer, const char *component, int rank,
                    cvene_config **out) {
    char json[512];
    snprintf(json, sizeof json,
             "{\"representations\": [{\"layer\": %d, \"component\": \"%.64s\", \"intervention_type\": "
             "\"%.64sIntervention\"%s%.0d}]}", layer, component, type, rank ? ", \"low_rank_dimension\": " : "", rank);
    if (cvene_config_parse(ctx, json, out) == CVENE_OK) return 0;
    fprintf(stderr, "cvene %s: --type %s --layer %d --component %s: %s\n", cmd, type, layer, component,
            cvene_ctx_error(ctx));
    return -1;
}

/* text into path through a temporary file renamed over it: a reader sees the old file or the new one,
 * never half of one. 0, or -1 with err set. */
int cli_write_atomic(const char *path, const char *text, char *err, size_t errlen) {
    char tmp[4096];
    file_remove_stale_tmp(path); /* left by a sweep that was killed */
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        snprintf(err, errlen, "%.900s: cannot create: %s", tmp, strerror(errno));
        return -1;
    }
    size_t n = strlen(text);
    int ok = fwrite(text, 1, n, f) == n;
    if (fclose(f) != 0) ok = 0;
    if (!ok || rename(tmp, path) != 0) {
        snprintf(err, errlen, "%.900s: write failed: %s", path, strerror(errno));
        remove(tmp);
        return -1;
    }
    return 0;
}

int cli_parse_positions(const char *cmd, const char *opt, const char *s, int *out, int cap) {
    int n = 0;
    for (const char *p = s; *p;) {
        char *end;
        errno = 0;
        const long v = strtol(p, &end, 10);
        if (end == p || errno || (*end && *end != ',') || v < -100000 || v > 100000 || n == cap) {
            n = 0;
            break;
        }
        out[n++] = (int)v;
        p = *end ? end + 1 : end;
    }
    if (n == 0)
        fprintf(stderr, "cvene %s: %s must be 1 to %d comma-separated integers (negative from the end), got \"%s\"\n",
                cmd, opt, cap, s);
    return n ? n : -1;
}
