#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cjson/cJSON.h>

#include "models/fileio.h"
#include "models/safetensors.h"
#include "kernels/tensor.h"

static const struct { const char *name; size_t size; } st_dtypes[ST_N_DTYPES] = {
    [ST_BOOL] = {"BOOL", 1}, [ST_U8] = {"U8", 1},     [ST_I8] = {"I8", 1},
    [ST_I16] = {"I16", 2},   [ST_U16] = {"U16", 2},   [ST_F16] = {"F16", 2},
    [ST_BF16] = {"BF16", 2}, [ST_I32] = {"I32", 4},   [ST_U32] = {"U32", 4},
    [ST_F32] = {"F32", 4},   [ST_F64] = {"F64", 8},   [ST_I64] = {"I64", 8},
    [ST_U64] = {"U64", 8},   [ST_F8_E4M3] = {"F8_E4M3", 1}, [ST_F8_E5M2] = {"F8_E5M2", 1},
};

const char *st_dtype_name(st_dtype d) { return d < ST_N_DTYPES ? st_dtypes[d].name : "?"; }
size_t st_dtype_size(st_dtype d) { return d < ST_N_DTYPES ? st_dtypes[d].size : 0; }

static int st_dtype_parse(const char *s, st_dtype *out) {
    for (int i = 0; i < ST_N_DTYPES; i++)
        if (strcmp(s, st_dtypes[i].name) == 0) {
            *out = (st_dtype)i;
            return 1;
        }
    return 0;
}

/* A JSON number that is a non-negative integer exactly representable. */
static int json_uint(const cJSON *j, uint64_t *out) {
    if (!cJSON_IsNumber(j)) return 0;
    double v = j->valuedouble;
    if (!(v >= 0.0) || v > 9007199254740992.0 || floor(v) != v) return 0;
    *out = (uint64_t)v;
    return 1;
}

/* Parse exactly len bytes of JSON: only whitespace may follow the value. */
static cJSON *parse_json_exact(const char *s, size_t len) {
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(s, len, &end, 0);
    if (!root) return NULL;
    for (; end < s + len; end++)
        if (*end != ' ' && *end != '\t' && *end != '\n' && *end != '\r') {
            cJSON_Delete(root);
            return NULL;
        }
    return root;
}

typedef struct { size_t begin, end; const char *name; } span;
static int span_cmp(const void *a, const void *b) {
    const span *x = a, *y = b;
    return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : (x->end < y->end ? -1 : x->end > y->end);
}

/* ---- the name index ---- */
static uint64_t name_hash(const char *s) { /* FNV-1a */
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static void hash_insert(st_archive *a, int i) {
    size_t m = a->hash_cap - 1;
    for (size_t k = (size_t)name_hash(a->tensors[i].name) & m;; k = (k + 1) & m)
        if (a->hash[k] < 0) {
            a->hash[k] = i;
            return;
        }
}

/* Room for n tensors in the index (rebuilt from a->tensors when it grows). */
static int hash_reserve(st_archive *a, size_t n) {
    if (2 * n < a->hash_cap) return 1;
    size_t cap = 64;
    while (cap <= 2 * n) cap *= 2;
    int *h = malloc(sizeof(int) * cap);
    if (!h) return 0;
    free(a->hash);
    a->hash = h, a->hash_cap = cap;
    for (size_t k = 0; k < cap; k++) h[k] = -1;
    for (int i = 0; i < a->n_tensors; i++) hash_insert(a, i);
    return 1;
}

/* After tensors were dropped (a failed file): the index again from what is left. */
static void hash_rebuild(st_archive *a) {
    for (size_t k = 0; k < a->hash_cap; k++) a->hash[k] = -1;
    for (int i = 0; i < a->n_tensors; i++) hash_insert(a, i);
}

static void free_tensors(st_tensor *t, int from, int to) {
    for (int i = from; i < to; i++) free(t[i].name);
}

/* Parse the header of a mapped file; append tensors to a (arrays already grown). */
static cvene_status parse_header(cvene_ctx *ctx, st_archive *a, const char *path,
                                 const unsigned char *map, size_t size, int file_idx) {
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | map[i];
    if (hlen == 0)
        return cvene_fail(ctx, CVENE_ERR_FORMAT, "%s: safetensors header length is 0", path);
    if (hlen > size - 8)
        return cvene_fail(ctx, CVENE_ERR_FORMAT,
                          "%s: safetensors header length %llu is past the end of the file "
                          "(%zu bytes)",
                          path, (unsigned long long)hlen, size);
    if (hlen > ST_MAX_HEADER)
        return cvene_fail(ctx, CVENE_ERR_FORMAT,
                          "%s: safetensors header length %llu exceeds the %u-byte limit", path,
                          (unsigned long long)hlen, ST_MAX_HEADER);
    const char *json = (const char *)map + 8;
    const unsigned char *data = map + 8 + hlen;
    size_t data_size = size - 8 - (size_t)hlen;
    cJSON *root = parse_json_exact(json, (size_t)hlen);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return cvene_fail(ctx, CVENE_ERR_FORMAT, "%s: safetensors header is not a JSON object",
                          path);
    }
    int n = 0;
    for (cJSON *e = root->child; e; e = e->next) n += strcmp(e->string, "__metadata__") != 0;
    st_tensor *grown = realloc(a->tensors, sizeof(st_tensor) * (size_t)(a->n_tensors + n + 1));
    span *spans = malloc(sizeof(span) * (size_t)(n + 1));
    if (!grown || !spans) {
        if (grown) a->tensors = grown;
        free(spans);
        cJSON_Delete(root);
        return cvene_fail(ctx, CVENE_ERR_OOM, "%s: out of memory reading header", path);
    }
    a->tensors = grown;
    if (!hash_reserve(a, (size_t)a->n_tensors + (size_t)n)) {
        free(spans);
        cJSON_Delete(root);
        return cvene_fail(ctx, CVENE_ERR_OOM, "%s: out of memory reading header", path);
    }
    int base = a->n_tensors, k = 0;
    cvene_status st = CVENE_OK;
    for (cJSON *e = root->child; e && st == CVENE_OK; e = e->next) {
        const char *name = e->string;
        if (strcmp(name, "__metadata__") == 0) continue;
        st_tensor *t = &a->tensors[base + k];
        memset(t, 0, sizeof *t);
        const cJSON *jd = cJSON_GetObjectItemCaseSensitive(e, "dtype");
        const cJSON *js = cJSON_GetObjectItemCaseSensitive(e, "shape");
        const cJSON *jo = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
        uint64_t b = 0, en = 0;
        const char *bad = !cJSON_IsObject(e)   ? "entry is not an object"
                          : !cJSON_IsString(jd) ? "\"dtype\" is missing or not a string"
                          : !cJSON_IsArray(js)  ? "\"shape\" is missing or not an array"
                          : !cJSON_IsArray(jo) || cJSON_GetArraySize(jo) != 2
                              ? "\"data_offsets\" is missing or not [begin, end]"
                              : NULL;
        if (bad) {
            st = cvene_fail(ctx, CVENE_ERR_FORMAT, "%s: tensor '%s': %s", path, name, bad);
            break;
        }
        if (!st_dtype_parse(jd->valuestring, &t->dtype)) {
            st = cvene_fail(ctx, CVENE_ERR_FORMAT, "%s: tensor '%s' has unknown dtype '%s'",
                            path, name, jd->valuestring);
            break;
        }
        int nd = cJSON_GetArraySize(js);
        if (nd > ST_MAX_DIMS) {
            st = cvene_fail(ctx, CVENE_ERR_FORMAT, "%s: tensor '%s' has %d dims (max %d)", path,
                            name, nd, ST_MAX_DIMS);
            break;
        }
        uint64_t numel = 1;
        int dim_ok = 1;
        for (int d = 0; d < nd; d++) {
            uint64_t v;
            if (!json_uint(cJSON_GetArrayItem(js, d), &v) || v > ((uint64_t)1 << 40)) {
                dim_ok = 0;
                break;
            }
            t->shape[d] = (int64_t)v;
            if (v && numel > UINT64_MAX / v) { dim_ok = 0; break; }
            numel *= v;
        }
        if (dim_ok && numel > UINT64_MAX / st_dtype_size(t->dtype)) dim_ok = 0; /* byte count wraps */
        if (!dim_ok) {
            st = cvene_fail(ctx, CVENE_ERR_FORMAT, "%s: tensor '%s' has an invalid shape", path,
                            name);
            break;
        }
        t->ndim = nd;
        if (!json_uint(cJSON_GetArrayItem(jo, 0), &b) || !json_uint(cJSON_GetArrayItem(jo, 1), &en)) {
            char *txt = cJSON_PrintUnformatted(jo);
            st = cvene_fail(ctx, CVENE_ERR_FORMAT,
                            "%s: tensor '%s' data_offsets %s must be two non-negative integers", path,
                            name, txt ? txt : "");
            cJSON_free(txt);
            break;
        }
        if (b > en || en > data_size) {
            st = cvene_fail(ctx, CVENE_ERR_FORMAT,
                            "%s: tensor '%s' data_offsets [%llu, %llu] are not a range within "
                            "the data region (%zu bytes)",
                            path, name, (unsigned long long)b, (unsigned long long)en, data_size);
            break;
        }
        uint64_t want = numel * st_dtype_size(t->dtype);
        if (en - b != want) {
            st = cvene_fail(ctx, CVENE_ERR_FORMAT,
                            "%s: tensor '%s' spans %llu bytes but dtype %s x shape needs %llu",
                            path, name, (unsigned long long)(en - b), jd->valuestring,
                            (unsigned long long)want);
            break;
        }
        const st_tensor *prev = st_archive_find(a, name);
        if (prev) {
            if (prev->file == file_idx)
                st = cvene_fail(ctx, CVENE_ERR_FORMAT, "%s: tensor '%s' appears twice", path, name);
            else
                st = cvene_fail(ctx, CVENE_ERR_FORMAT, "%s: tensor '%s' appears twice (also in %s)",
                                path, name, a->files[prev->file].path);
            break;
        }
        t->name = strdup(name);
        if (!t->name) {
            st = cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
            break;
        }
        t->data = data + b;
        t->nbytes = (size_t)(en - b);
        t->file = file_idx;
        spans[k] = (span){(size_t)b, (size_t)en, t->name};
        k++;
        a->n_tensors = base + k; /* visible to the duplicate check */
        hash_insert(a, base + k - 1);
    }
    if (st == CVENE_OK) {
        qsort(spans, (size_t)k, sizeof(span), span_cmp);
        /* compare each non-empty span with the earlier one reaching furthest, so an
         * empty tensor sorted in between cannot hide an overlap */
        int far = -1;
        for (int i = 0; i < k; i++) {
            if (spans[i].end == spans[i].begin) continue;
            if (far >= 0 && spans[i].begin < spans[far].end) {
                st = cvene_fail(ctx, CVENE_ERR_FORMAT,
                                "%s: tensors '%s' [%zu, %zu) and '%s' [%zu, %zu) overlap", path,
                                spans[far].name, spans[far].begin, spans[far].end,
                                spans[i].name, spans[i].begin, spans[i].end);
                break;
            }
            if (far < 0 || spans[i].end > spans[far].end) far = i;
        }
    }
    free(spans);
    cJSON_Delete(root);
    if (st != CVENE_OK) {
        free_tensors(a->tensors, base, a->n_tensors);
        a->n_tensors = base;
        hash_rebuild(a);
    }
    return st;
}

cvene_status st_archive_add_file(cvene_ctx *ctx, st_archive *a, const char *path) {
    char why[4200];
    size_t size = 0;
    int fd = file_open_regular(path, &size, why, sizeof why);
    if (fd < 0) return cvene_fail(ctx, CVENE_ERR_IO, "%s", why);
    if (size < 8) {
        close(fd);
        return cvene_fail(ctx, CVENE_ERR_FORMAT,
                          "%s: truncated safetensors file (%zu bytes, need at least 8)", path, size);
    }
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) return cvene_fail(ctx, CVENE_ERR_IO, "%s: mmap failed: %s", path, strerror(errno));
    st_file *files = realloc(a->files, sizeof(st_file) * (size_t)(a->n_files + 1));
    char *pcopy = strdup(path);
    if (!files || !pcopy) {
        if (files) a->files = files;
        free(pcopy);
        munmap(map, size);
        return cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
    }
    a->files = files;
    cvene_status st = parse_header(ctx, a, path, map, size, a->n_files);
    if (st != CVENE_OK) {
        free(pcopy);
        munmap(map, size);
        return st;
    }
    a->files[a->n_files++] = (st_file){pcopy, map, size};
    return CVENE_OK;
}

/* present, or there but unreadable (a symlink loop, no permission): opening it then says why */
static int file_exists(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0 || errno != ENOENT;
}

static cvene_status open_index(cvene_ctx *ctx, st_archive *a, const char *dir, const char *ipath) {
    char *buf = NULL, why[4200];
    size_t len = 0;
    cvene_status rs = file_read_all(ipath, (size_t)64 << 20, &buf, &len, why, sizeof why);
    if (rs != CVENE_OK) return cvene_fail(ctx, rs, "%s", why);
    cJSON *root = parse_json_exact(buf, (size_t)len);
    free(buf);
    const cJSON *wm = root ? cJSON_GetObjectItemCaseSensitive(root, "weight_map") : NULL;
    if (!cJSON_IsObject(wm)) {
        cJSON_Delete(root);
        return cvene_fail(ctx, CVENE_ERR_FORMAT, "%s: missing or malformed \"weight_map\" object", ipath);
    }
    cvene_status st = CVENE_OK;
    char path[4096];
    /* open each distinct shard once, in the order first named */
    for (const cJSON *e = wm->child; e && st == CVENE_OK; e = e->next) {
        if (!cJSON_IsString(e) || strchr(e->valuestring, '/') || strcmp(e->valuestring, "..") == 0) {
            st = cvene_fail(ctx, CVENE_ERR_FORMAT, "%s: weight_map[\"%s\"] must be a file name in %s",
                            ipath, e->string, dir);
            break;
        }
        snprintf(path, sizeof path, "%s/%s", dir, e->valuestring);
        int seen = 0;
        for (int i = 0; i < a->n_files && !seen; i++) seen = strcmp(a->files[i].path, path) == 0;
        if (!seen) st = st_archive_add_file(ctx, a, path);
    }
    char *listed = st == CVENE_OK ? calloc((size_t)a->n_tensors + 1, 1) : NULL;
    if (st == CVENE_OK && !listed) st = cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
    for (const cJSON *e = wm->child; e && st == CVENE_OK; e = e->next) {
        const st_tensor *t = st_archive_find(a, e->string);
        snprintf(path, sizeof path, "%s/%s", dir, e->valuestring);
        if (!t || strcmp(a->files[t->file].path, path) != 0)
            st = cvene_fail(ctx, CVENE_ERR_FORMAT, "%s: index says tensor '%s' is in %s, but it is not there",
                            ipath, e->string, e->valuestring);
        else
            listed[t - a->tensors] = 1;
    }
    /* the index is the list of the checkpoint's tensors: a shard may hold no others */
    for (int i = 0; st == CVENE_OK && i < a->n_tensors; i++)
        if (!listed[i])
            st = cvene_fail(ctx, CVENE_ERR_FORMAT,
                            "%s: shard %s holds tensor '%s', which the index's weight_map does not list", ipath,
                            a->files[a->tensors[i].file].path, a->tensors[i].name);
    free(listed);
    cJSON_Delete(root);
    return st;
}

cvene_status st_archive_open_dir(cvene_ctx *ctx, st_archive *a, const char *dir) {
    char path[4096];
    memset(a, 0, sizeof *a);
    cvene_status st;
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    if (file_exists(path)) {
        st = open_index(ctx, a, dir, path);
    } else {
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        if (!file_exists(path))
            return cvene_fail(ctx, CVENE_ERR_IO,
                              "%s: no model.safetensors or model.safetensors.index.json", dir);
        st = st_archive_add_file(ctx, a, path);
    }
    if (st != CVENE_OK) st_archive_close(a);
    return st;
}

const st_tensor *st_archive_find(const st_archive *a, const char *name) {
    if (!a->hash_cap) return NULL;
    size_t m = a->hash_cap - 1;
    for (size_t k = (size_t)name_hash(name) & m; a->hash[k] >= 0; k = (k + 1) & m)
        if (strcmp(a->tensors[a->hash[k]].name, name) == 0) return &a->tensors[a->hash[k]];
    return NULL;
}

void st_archive_close(st_archive *a) {
    free_tensors(a->tensors, 0, a->n_tensors);
    free(a->tensors);
    free(a->hash);
    for (int i = 0; i < a->n_files; i++) {
        munmap(a->files[i].map, a->files[i].size);
        free(a->files[i].path);
    }
    free(a->files);
    memset(a, 0, sizeof *a);
}

cvene_status st_tensor_to_f32(cvene_ctx *ctx, const st_tensor *t, float *dst) {
    size_t n = t->nbytes / (st_dtype_size(t->dtype) ? st_dtype_size(t->dtype) : 1);
    const unsigned char *src = t->data;
    switch (t->dtype) {
    case ST_F32: memcpy(dst, src, t->nbytes); break;
    case ST_F16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, src + 2 * i, 2);
            dst[i] = cvene_f16_to_f32(h);
        }
        break;
    case ST_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, src + 2 * i, 2);
            dst[i] = cvene_bf16_to_f32(h);
        }
        break;
    default:
        return cvene_fail(ctx, CVENE_ERR_FORMAT, "tensor '%s' has dtype %s; expected F32, F16 or BF16",
                          t->name, st_dtype_name(t->dtype));
    }
    return CVENE_OK;
}
