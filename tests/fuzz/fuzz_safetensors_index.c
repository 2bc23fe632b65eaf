/* libFuzzer harness: a sharded checkpoint directory (models/safetensors.c,
 * st_archive_open_dir with model.safetensors.index.json).
 *
 * Input: the index JSON, optionally followed by a NUL byte and the bytes of one more shard,
 * "fuzz.safetensors" (JSON cannot hold a raw NUL, so the split is unambiguous). The
 * directory also holds the six real shards of tests/fixtures/gpt2/sharded (symlinks), so
 * the index can name good shards, the fuzzed one, missing ones, or the index itself.
 * An accepted directory must hold exactly what weight_map lists: every named tensor
 * findable, in the shard the index names. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cjson/cJSON.h>

#include "models/safetensors.h"
#include "tests/fuzz/fuzz_util.h"

static char dir[FUZZ_PATH_MAX];

static void setup(void) {
    fuzz_subdir(dir, "sharded");
    for (int i = 1; i <= 6; i++) {
        char name[64], target[FUZZ_PATH_MAX], link[FUZZ_PATH_MAX + 64];
        snprintf(name, sizeof name, "model-%05d-of-00006.safetensors", i);
        char rel[128];
        snprintf(rel, sizeof rel, "gpt2/sharded/model/%s", name);
        fuzz_fixture(target, rel);
        if (access(target, R_OK) != 0) fuzz_fail("fixture %s is missing", target);
        snprintf(link, sizeof link, "%s/%s", dir, name);
        fuzz_link(target, link);
    }
}

/* Every weight_map entry of an accepted index: its tensor exists, in the shard named. */
static void check_accepted(const st_archive *a, const char *index) {
    cJSON *root = cJSON_Parse(index);
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (!cJSON_IsObject(wm)) fuzz_fail("an index without a weight_map object was accepted");
    int listed = 0;
    for (const cJSON *e = wm->child; e; e = e->next, listed++) {
        const st_tensor *t = st_archive_find(a, e->string);
        if (!t) fuzz_fail("accepted index lists '%s', which the archive lacks", e->string);
        char want[2 * FUZZ_PATH_MAX];
        snprintf(want, sizeof want, "%s/%s", dir, e->valuestring);
        if (strcmp(a->files[t->file].path, want) != 0)
            fuzz_fail("tensor '%s' came from %s, the index says %s", e->string, a->files[t->file].path, want);
    }
    if (a->n_tensors > listed) fuzz_fail("the archive holds %d tensors, the index lists %d", a->n_tensors, listed);
    cJSON_Delete(root);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!dir[0]) setup();
    const uint8_t *nul = memchr(data, 0, size);
    size_t ilen = nul ? (size_t)(nul - data) : size;
    char path[2 * FUZZ_PATH_MAX];
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    fuzz_write(path, data, ilen);
    snprintf(path, sizeof path, "%s/fuzz.safetensors", dir);
    if (nul) fuzz_write(path, nul + 1, size - ilen - 1);
    else unlink(path);
    st_archive a;
    cvene_status st = st_archive_open_dir(fuzz_ctx(), &a, dir);
    fuzz_note("st_archive_open_dir", st);
    if (st == CVENE_OK) {
        char *index = fuzz_cstr(data, ilen);
        check_accepted(&a, index);
        free(index);
    } else if (a.n_files || a.n_tensors) {
        fuzz_fail("a refused directory left %d files, %d tensors open", a.n_files, a.n_tensors);
    }
    st_archive_close(&a);
    return 0;
}
