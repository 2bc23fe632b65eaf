/* Ranks in the CLI: `mpirun -np N cvene sweep ...` runs one process per rank; each opens the
 * communicator here, checks that every rank runs the same command on the same model, and only
 * rank 0 writes outputs. Without a launcher a command runs alone (rank 0 of 1, no MPI). */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bindings/cli/cli.h"

int cli_ranks_open(const char *cmd, cvene_ctx *ctx, cvene_comm **out) {
    const int launched = cvene_comm_launched();
    if (launched && !cvene_comm_mpi_available() && cvene_comm_launched_size() > 1) {
        fprintf(stderr, "cvene %s: started as %d ranks, but this build has no MPI (install libopenmpi-dev and "
                        "rebuild)\n", cmd, cvene_comm_launched_size());
        return -1;
    }
    if (cvene_comm_new(ctx, launched && cvene_comm_mpi_available(), 0, out) != CVENE_OK) {
        fprintf(stderr, "cvene %s: %s\n", cmd, cvene_ctx_error(ctx));
        return -1;
    }
    return 0;
}

int cli_ranks_agree(cvene_ctx *ctx, cvene_comm *comm, const char *cmd, const cJSON *spec, const cvene_model_info *mi) {
    if (cvene_comm_size(comm) == 1) return 0;
    char *text = cJSON_PrintUnformatted(spec), shape[160];
    /* the model's shape as text (the struct has padding bytes) */
    const int k = snprintf(shape, sizeof shape, "|arch %d layers %d heads %d embd %d inner %d vocab %d ctx %d params %lld",
                           (int)mi->arch, mi->n_layer, mi->n_head, mi->n_embd, mi->n_inner, mi->vocab_size,
                           mi->n_positions, (long long)mi->n_params);
    size_t n = text ? strlen(text) : 0;
    char *all = text ? malloc(n + (size_t)k + 1) : NULL;
    if (!all) {
        free(text);
        fprintf(stderr, "cvene %s: out of memory\n", cmd);
        return -1;
    }
    memcpy(all, text, n), memcpy(all + n, shape, (size_t)k + 1);
    cvene_status st = cvene_comm_agree(comm, all, n + (size_t)k, "command or model");
    free(text), free(all);
    if (st != CVENE_OK) {
        fprintf(stderr, "cvene %s (rank %d): %s\n", cmd, cvene_comm_rank(comm), cvene_ctx_error(ctx));
        return -1;
    }
    return 0;
}

/* ---- a directory's files as bytes (a DAS cell's trained interventions, sent to rank 0) ------ */
static int reserve(unsigned char **buf, size_t n, size_t *cap, size_t k) {
    if (n + k <= *cap) return 0;
    size_t c = *cap ? *cap : 4096;
    while (c < n + k) c *= 2;
    unsigned char *b = realloc(*buf, c);
    if (!b) return -1;
    *buf = b, *cap = c;
    return 0;
}

static int put(unsigned char **buf, size_t *n, size_t *cap, const void *p, size_t k) {
    if (reserve(buf, *n, cap, k)) return -1;
    memcpy(*buf + *n, p, k);
    *n += k;
    return 0;
}

int cli_pack_dir(const char *dir, unsigned char **buf, size_t *n, size_t *cap) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int rc = 0;
    for (struct dirent *e; rc == 0 && (e = readdir(d));) {
        char path[4352];
        struct stat st;
        snprintf(path, sizeof path, "%.4000s/%.255s", dir, e->d_name);
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) continue; /* ".", "..": not files */
        FILE *f = fopen(path, "rb");
        const uint32_t len = (uint32_t)strlen(e->d_name);
        const uint64_t size = (uint64_t)st.st_size;
        rc = !f || put(buf, n, cap, &len, sizeof len) || put(buf, n, cap, e->d_name, len) ||
             put(buf, n, cap, &size, sizeof size) || reserve(buf, *n, cap, size) ? -1 : 0;
        if (rc == 0 && fread(*buf + *n, 1, size, f) != size) rc = -1;
        if (rc == 0) *n += size;
        if (f) fclose(f);
    }
    closedir(d);
    return rc;
}

int cli_unpack_dir(const unsigned char *buf, size_t n, const char *dir, char *err, size_t errlen) {
    if (mkdir(dir, 0777) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot create %s: %s", dir, strerror(errno));
        return -1;
    }
    size_t at = 0;
    while (at < n) {
        uint32_t len;
        uint64_t size;
        char name[256], path[4352], tmp[4400];
        if (n - at < sizeof len) goto bad;
        memcpy(&len, buf + at, sizeof len), at += sizeof len;
        if (len == 0 || len > 255 || n - at < len + sizeof size) goto bad;
        memcpy(name, buf + at, len), name[len] = 0, at += len;
        memcpy(&size, buf + at, sizeof size), at += sizeof size;
        if (strchr(name, '/') || !strcmp(name, ".") || !strcmp(name, "..") || n - at < size) goto bad;
        snprintf(path, sizeof path, "%.4000s/%s", dir, name);
        snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
        FILE *f = fopen(tmp, "wb");
        int ok = f && fwrite(buf + at, 1, size, f) == size;
        if (f && fclose(f) != 0) ok = 0;
        if (!ok || rename(tmp, path) != 0) {
            remove(tmp);
            snprintf(err, errlen, "cannot write %s", path);
            return -1;
        }
        at += size;
    }
    return 0;
bad:
    snprintf(err, errlen, "a malformed file list for %s", dir);
    return -1;
}

int cli_remove_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    for (struct dirent *e; (e = readdir(d));) {
        char path[4352];
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(path, sizeof path, "%.4000s/%.255s", dir, e->d_name);
        remove(path);
    }
    closedir(d);
    return rmdir(dir);
}
