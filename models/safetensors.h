/* Memory-mapped safetensors reader with full validation.
 * Format: u64 little-endian header length N, N bytes of JSON
 *   {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
 *    "__metadata__": {str: str}}
 * then the data region; offsets are relative to its start. */
#ifndef CVENE_SAFETENSORS_H
#define CVENE_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>
#include "kernels/ctx.h"

#define ST_MAX_DIMS 8
#define ST_MAX_HEADER (100u * 1024u * 1024u) /* 100 MB, as the reference implementation */

typedef enum {
    ST_BOOL, ST_U8, ST_I8, ST_I16, ST_U16, ST_F16, ST_BF16, ST_I32, ST_U32, ST_F32,
    ST_F64, ST_I64, ST_U64, ST_F8_E4M3, ST_F8_E5M2, ST_N_DTYPES
} st_dtype;

typedef struct {
    char *name;
    st_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    const void *data; /* inside the mapping */
    size_t nbytes;
    int file;         /* index into st_archive.files */
} st_tensor;

typedef struct {
    char *path;
    void *map;
    size_t size;
} st_file;

typedef struct {
    st_file *files;
    int n_files;
    st_tensor *tensors;
    int n_tensors;
    /* name -> tensor index, open addressing (-1 = empty slot): headers with many tensors
     * load in linear time */
    int *hash;
    size_t hash_cap; /* a power of two, > 2 n_tensors; 0 before the first tensor */
} st_archive;

const char *st_dtype_name(st_dtype d);
size_t st_dtype_size(st_dtype d);

/* Map one .safetensors file and append its tensors to *a (which starts zeroed).
 * On failure *a is left as it was before the call. */
cvene_status st_archive_add_file(cvene_ctx *ctx, st_archive *a, const char *path);
/* Open a model directory: model.safetensors, or model.safetensors.index.json and
 * every shard it names (each shard must hold exactly the tensors the index says). */
cvene_status st_archive_open_dir(cvene_ctx *ctx, st_archive *a, const char *dir);
const st_tensor *st_archive_find(const st_archive *a, const char *name);
void st_archive_close(st_archive *a);

/* Copy t into dst as f32 (F32/F16/BF16 accepted; other dtypes are a format error). */
cvene_status st_tensor_to_f32(cvene_ctx *ctx, const st_tensor *t, float *dst);


/* ---- writing ------------------------------------------------------------ */
typedef struct {
    const char *name;
    st_dtype dtype;   /* F32 or I32 */
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    const void *data;
} st_out_tensor;

/* Write tensors (in the given order) and string metadata pairs to path,
 * atomically: a temporary file in the same directory is renamed over path, so
 * a reader never sees a half-written file. */
cvene_status st_write(cvene_ctx *ctx, const char *path, const st_out_tensor *t, int n,
                      const char *const *meta_kv, int n_meta);

#endif
