#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cjson/cJSON.h>

#include "models/fileio.h"
#include "models/safetensors.h"

cvene_status st_write(cvene_ctx *ctx, const char *path, const st_out_tensor *t, int n,
                      const char *const *meta_kv, int n_meta) {
    cJSON *h = cJSON_CreateObject();
    if (!h) return cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
    if (n_meta) {
        cJSON *md = cJSON_AddObjectToObject(h, "__metadata__");
        for (int k = 0; md && k < n_meta; k++) cJSON_AddStringToObject(md, meta_kv[2 * k], meta_kv[2 * k + 1]);
    }
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        uint64_t numel = 1;
        for (int d = 0; d < t[i].ndim; d++) numel *= (uint64_t)t[i].shape[d];
        uint64_t nb = numel * st_dtype_size(t[i].dtype);
        cJSON *e = cJSON_AddObjectToObject(h, t[i].name);
        cJSON_AddStringToObject(e, "dtype", st_dtype_name(t[i].dtype));
        cJSON *shape = cJSON_AddArrayToObject(e, "shape");
        for (int d = 0; d < t[i].ndim; d++) cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)t[i].shape[d]));
        cJSON *offs = cJSON_AddArrayToObject(e, "data_offsets");
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)off));
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)(off + nb)));
        off += nb;
    }
    char *json = cJSON_PrintUnformatted(h);
    cJSON_Delete(h);
    if (!json) return cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
    size_t jl = strlen(json), padded = (jl + 7) & ~(size_t)7; /* data 8-byte aligned */
    char tmp[4096];
    file_remove_stale_tmp(path); /* left by a writer that was killed */
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        free(json);
        return cvene_fail(ctx, CVENE_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
    }
    unsigned char len8[8];
    for (int k = 0; k < 8; k++) len8[k] = (unsigned char)((uint64_t)padded >> (8 * k));
    int ok = fwrite(len8, 1, 8, f) == 8 && fwrite(json, 1, jl, f) == jl;
    for (size_t k = jl; ok && k < padded; k++) ok = fputc(' ', f) != EOF;
    for (int i = 0; ok && i < n; i++) {
        size_t numel = 1;
        for (int d = 0; d < t[i].ndim; d++) numel *= (size_t)t[i].shape[d];
        size_t nb = numel * st_dtype_size(t[i].dtype);
        ok = fwrite(t[i].data, 1, nb, f) == nb;
    }
    free(json);
    if (fclose(f) != 0) ok = 0;
    if (!ok || rename(tmp, path) != 0) {
        int e = errno;
        remove(tmp);
        return cvene_fail(ctx, CVENE_ERR_IO, "%s: write failed: %s", path, strerror(e));
    }
    return CVENE_OK;
}
