/* libFuzzer harness: a sweep's results file read back for --resume
 * (bindings/cli/sweep_resume.c, cli_resume_read).
 *
 * The input is the file's text. The sweep it is checked against is fixed and built with
 * the calls cmd_sweep.c uses: the one tests/cli/sweep_resume.sh runs (2 layers x 7
 * positions, KL metric), whose results files are the seed corpus. Invariants (bindings/cli/
 * cli.h): 0 or -1; on -1 a message naming the path, and from cmd_sweep's starting state
 * (nothing done, zero scores) no row marked done and zero base / source scores; on 0 every
 * done row's scores and the base / source scores finite f32. */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bindings/cli/cli.h"
#include "tests/fuzz/fuzz_util.h"

enum { NL = 2, NP = 7 };
static cJSON *spec;

static cJSON *int_array(const int32_t *v, int n) { /* as cmd_sweep.c's */
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(v[i]));
    return a;
}

static void free_spec(void) { cJSON_Delete(spec); }

static void setup(void) {
    static const int32_t src[NP] = {4, 4, 6, 1, 9, 2, 8}, base[NP] = {5, 9, 2, 7, 1, 3, 8};
    static const int layers[NL] = {0, 1}, positions[NP] = {0, 1, 2, 3, 4, 5, 6};
    spec = cJSON_CreateObject();
    cJSON_AddStringToObject(spec, "model", "tests/fixtures/gpt2/small/model");
    cJSON_AddItemToObject(spec, "source_ids", int_array(src, NP));
    cJSON_AddItemToObject(spec, "base_ids", int_array(base, NP));
    cJSON_AddStringToObject(spec, "component", "block_output");
    cJSON_AddNumberToObject(spec, "head", 0);
    cJSON_AddStringToObject(spec, "metric", "kl");
    cJSON_AddNumberToObject(spec, "token", 90);
    cJSON_AddNumberToObject(spec, "token_b", -1);
    cJSON_AddNumberToObject(spec, "window", 1);
    cJSON_AddBoolToObject(spec, "trace", 0);
    cJSON_AddItemToObject(spec, "layers", cJSON_CreateIntArray(layers, NL));
    cJSON_AddItemToObject(spec, "positions", cJSON_CreateIntArray(positions, NP));
    atexit(free_spec);
}

static int finite_f32(double v) { return isfinite(v) && fabs(v) <= FLT_MAX; }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 65536) return 0;
    if (!spec) setup();
    char *text = fuzz_cstr(data, size);
    float scores[NL * NP];
    int done[NL];
    double base_score = 0, source_score = 0;
    char err[512] = "";
    for (int i = 0; i < NL; i++) done[i] = 0; /* cmd_sweep's starting state (calloc) */
    int rc = cli_resume_read(text, "sweep.json", spec, NL, NP, scores, done, &base_score, &source_score, err,
                             sizeof err);
    free(text);
    if (rc != 0 && rc != -1) fuzz_fail("cli_resume_read returned %d", rc);
    if (rc == -1) {
        if (strncmp(err, "sweep.json: ", 12) != 0) fuzz_fail("refusal message \"%s\" does not name the file", err);
        for (int l = 0; l < NL; l++)
            if (done[l] != 0) fuzz_fail("a refused file (%s) left row %d marked %d", err, l, done[l]);
        if (base_score != 0 || source_score != 0) fuzz_fail("a refused file (%s) left base/source scores set", err);
        return 0;
    }
    for (int l = 0; l < NL; l++) {
        if (done[l] != 0 && done[l] != 1) fuzz_fail("row %d is marked %d", l, done[l]);
        for (int p = 0; done[l] && p < NP; p++)
            if (!finite_f32(scores[l * NP + p])) fuzz_fail("scores[%d][%d] = %g was accepted", l, p, scores[l * NP + p]);
    }
    if (!finite_f32(base_score) || !finite_f32(source_score))
        fuzz_fail("base/source scores %g / %g were accepted", base_score, source_score);
    return 0;
}
