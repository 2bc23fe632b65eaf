/* libFuzzer harness: one .safetensors file (models/safetensors.c, st_archive_add_file).
 *
 * The input is the whole file. Beyond "no crash, no leak, no undefined behaviour":
 *  - an accepted file's tensors are findable by name, lie inside the data region without
 *    overlapping, and convert to f32 (F32/F16/BF16) without reading past them;
 *  - adding the same file again fails (every name repeats) and leaves the archive as it was
 *    (the header's promise for a failed st_archive_add_file);
 *  - its F32/I32 tensors written back with st_write read back with the same names, shapes
 *    and bytes (names come from the fuzzer: escaping, invalid UTF-8). */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <string.h>

#include "models/safetensors.h"
#include "tests/fuzz/fuzz_util.h"

static void check_tensor(const st_archive *a, const st_tensor *t, const unsigned char *data, size_t data_size) {
    if (st_archive_find(a, t->name) != t) fuzz_fail("tensor '%s' is not found by its name", t->name);
    const unsigned char *p = t->data;
    if (p < data || p + t->nbytes > data + data_size)
        fuzz_fail("tensor '%s' (%zu bytes) lies outside the data region", t->name, t->nbytes);
    uint64_t numel = 1;
    for (int d = 0; d < t->ndim; d++) numel *= (uint64_t)t->shape[d];
    if (numel * st_dtype_size(t->dtype) != t->nbytes) fuzz_fail("tensor '%s': shape and byte count disagree", t->name);
    if (t->dtype != ST_F32 && t->dtype != ST_F16 && t->dtype != ST_BF16) return;
    /* exactly numel floats: ASan flags a conversion that writes past them */
    float *f = malloc(numel ? numel * sizeof(float) : 1);
    if (!f) fuzz_fail("out of memory");
    fuzz_ok(st_tensor_to_f32(fuzz_ctx(), t, f), "st_tensor_to_f32");
    free(f);
}

/* Write a's F32/I32 tensors with st_write and read them back. */
static void check_rewrite(const st_archive *a) {
    st_out_tensor *out = calloc((size_t)a->n_tensors + 1, sizeof *out);
    if (!out) fuzz_fail("out of memory");
    int n = 0;
    for (int i = 0; i < a->n_tensors; i++) {
        const st_tensor *t = &a->tensors[i];
        if (t->dtype != ST_F32 && t->dtype != ST_I32) continue;
        out[n] = (st_out_tensor){t->name, t->dtype, t->ndim, {0}, t->data};
        memcpy(out[n].shape, t->shape, sizeof t->shape);
        n++;
    }
    char path[FUZZ_PATH_MAX];
    fuzz_path(path, "rewritten.safetensors");
    fuzz_ok(st_write(fuzz_ctx(), path, out, n, NULL, 0), "st_write of an accepted file's tensors");
    st_archive b;
    memset(&b, 0, sizeof b);
    fuzz_ok(st_archive_add_file(fuzz_ctx(), &b, path), "reading back what st_write wrote");
    if (b.n_tensors != n) fuzz_fail("wrote %d tensors, read back %d", n, b.n_tensors);
    for (int i = 0; i < n; i++) {
        const st_tensor *t = st_archive_find(&b, out[i].name);
        if (!t) fuzz_fail("tensor '%s' is missing after st_write", out[i].name);
        if (t->dtype != out[i].dtype || t->ndim != out[i].ndim ||
            memcmp(t->shape, out[i].shape, sizeof t->shape) != 0)
            fuzz_fail("tensor '%s' changed dtype or shape through st_write", out[i].name);
        if (t->nbytes && memcmp(t->data, out[i].data, t->nbytes) != 0)
            fuzz_fail("tensor '%s' changed bytes through st_write", out[i].name);
    }
    st_archive_close(&b);
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[FUZZ_PATH_MAX];
    fuzz_path(path, "model.safetensors");
    fuzz_write(path, data, size);
    st_archive a;
    memset(&a, 0, sizeof a);
    cvene_status st = st_archive_add_file(fuzz_ctx(), &a, path);
    fuzz_note("st_archive_add_file", st);
    if (st != CVENE_OK) {
        if (a.n_files || a.n_tensors) fuzz_fail("a refused file left %d files, %d tensors", a.n_files, a.n_tensors);
        st_archive_close(&a);
        return 0;
    }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | data[i];
    const unsigned char *map = a.files[0].map;
    for (int i = 0; i < a.n_tensors; i++) check_tensor(&a, &a.tensors[i], map + 8 + hlen, size - 8 - hlen);
    /* the same file again: refused when it has a tensor, and the archive unchanged */
    const int n_before = a.n_tensors;
    cvene_status again = st_archive_add_file(fuzz_ctx(), &a, path);
    if (n_before > 0 && again == CVENE_OK) fuzz_fail("the same %d tensors were accepted twice", n_before);
    if (again != CVENE_OK && (a.n_tensors != n_before || a.n_files != 1))
        fuzz_fail("a refused second file changed the archive (%d -> %d tensors)", n_before, a.n_tensors);
    for (int i = 0; i < a.n_tensors; i++)
        if (st_archive_find(&a, a.tensors[i].name) != &a.tensors[i])
            fuzz_fail("tensor '%s' lost from the name index after a refused file", a.tensors[i].name);
    if (again != CVENE_OK) check_rewrite(&a);
    st_archive_close(&a);
    return 0;
}
