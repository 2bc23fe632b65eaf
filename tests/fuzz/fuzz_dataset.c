/* libFuzzer harness: a training dataset in JSONL (engine/dataset.c, cvene_dataset_load_jsonl)
 * and its split (cvene_dataset_split).
 *
 * The input is the file. Text fields go through the demo model's tokenizer (assets/demo-gpt2).
 * An accepted dataset has one example per non-blank line, each line exactly one JSON object
 * (include/cvene.h: "one JSON object per line"; nothing may follow it), every example's
 * positions inside its prompts; a split keeps every example once. */
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>

#include "engine/dataset.h"
#include "tests/fuzz/fuzz_util.h"

static cvene_tokenizer *tok;

static void free_tok(void) { cvene_tokenizer_free(tok); }

/* Non-blank lines (blank: spaces, tabs and CRs only), each of which must be one JSON value
 * with nothing but white space after it. */
static int count_lines(const uint8_t *data, size_t size) {
    int n = 0;
    for (size_t i = 0; i < size;) {
        size_t j = i;
        while (j < size && data[j] != '\n') j++;
        size_t a = i;
        while (a < j && (data[a] == ' ' || data[a] == '\t' || data[a] == '\r')) a++;
        if (a < j) { /* by length: cJSON reads control bytes, NUL included, as white space */
            const char *line = (const char *)data + a, *end = NULL;
            cJSON *v = cJSON_ParseWithLengthOpts(line, j - a, &end, 0);
            while (v && end < line + (j - a) && (*end == ' ' || *end == '\t' || *end == '\r')) end++;
            if (!v || end != line + (j - a))
                fuzz_fail("line %d was accepted but is not exactly one JSON value: \"%.*s\"", n + 1,
                          (int)(j - a > 80 ? 80 : j - a), line);
            cJSON_Delete(v);
            n++;
        }
        i = j + 1;
    }
    return n;
}

static void check_examples(const cvene_dataset *d) {
    for (int i = 0; i < d->n; i++) {
        const ds_example *x = &d->ex[i];
        if (x->base_len <= 0 || x->source_len < 0 || x->n_pos < 0 || x->n_pos > 64)
            fuzz_fail("example %d: lengths %d / %d, %d positions", i, x->base_len, x->source_len, x->n_pos);
        if (x->label_pos < 0 || x->label_pos >= x->base_len)
            fuzz_fail("example %d: label_pos %d outside %d tokens", i, x->label_pos, x->base_len);
        for (int u = 0; u < x->n_pos; u++) {
            int b = ds_base_pos(d, i)[u], s = ds_source_pos(d, i)[u];
            if (b < 0 || b >= x->base_len || s < 0 || s >= (x->source_len ? x->source_len : x->base_len))
                fuzz_fail("example %d: position %d is (%d, %d), outside the prompts", i, u, b, s);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 16384) return 0;
    if (!tok) {
        char path[FUZZ_PATH_MAX];
        fuzz_asset(path, "demo-gpt2/tokenizer.json");
        fuzz_ok(cvene_tokenizer_load(fuzz_ctx(), path, &tok), path);
        atexit(free_tok);
    }
    char path[FUZZ_PATH_MAX];
    fuzz_path(path, "dataset.jsonl");
    fuzz_write(path, data, size);
    cvene_dataset *d = NULL;
    cvene_status st = cvene_dataset_load_jsonl(fuzz_ctx(), path, tok, &d);
    fuzz_note("cvene_dataset_load_jsonl", st);
    if (st != CVENE_OK) {
        if (d) fuzz_fail("a refused dataset was returned");
        return 0;
    }
    int lines = count_lines(data, size);
    if (cvene_dataset_count(d) != lines) fuzz_fail("%d non-blank lines gave %d examples", lines, cvene_dataset_count(d));
    check_examples(d);
    cvene_dataset *a = NULL, *b = NULL;
    if (cvene_dataset_split(d, 0.25, 7, &a, &b) == CVENE_OK) {
        if (cvene_dataset_count(a) + cvene_dataset_count(b) != cvene_dataset_count(d) || a->n_ids + b->n_ids != d->n_ids)
            fuzz_fail("split %d examples (%zu ids) into %d + %d (%zu + %zu ids)", d->n, d->n_ids, a->n, b->n, a->n_ids,
                      b->n_ids);
        check_examples(a);
        check_examples(b);
    } else if (d->n >= 2) { /* a quarter of 2 or more examples, rounded, leaves one on each side */
        fuzz_fail("split of %d examples refused: %s", d->n, cvene_ctx_error(fuzz_ctx()));
    }
    cvene_dataset_free(a);
    cvene_dataset_free(b);
    cvene_dataset_free(d);
    return 0;
}
