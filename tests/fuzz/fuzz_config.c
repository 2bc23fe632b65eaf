/* libFuzzer harness: the intervention config (engine/config.c, cvene_config_parse) and its
 * JSON writer (cvene_config_to_json).
 *
 * The input is the config JSON (pyvene's saved form or the dict form). For an accepted
 * config the writer must produce JSON the parser accepts (a refusal is only allowed where
 * the writer documents one: CVENE_ERR_UNSUPPORTED for a subspace_partition entry with no
 * pyvene form), describing the same config: parse(to_json(c)) has as many representations
 * and writes the same JSON again. */
#include <stdlib.h>
#include <string.h>

#include "kernels/ctx.h"
#include "tests/fuzz/fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 65536) return 0;
    cvene_ctx *ctx = fuzz_ctx();
    char *text = fuzz_cstr(data, size);
    ctx->err[0] = '\0'; /* so a refusal that sets no message is seen */
    cvene_config *c = NULL;
    cvene_status st = cvene_config_parse(ctx, text, &c);
    free(text);
    fuzz_note("cvene_config_parse", st);
    if (st != CVENE_OK) {
        if (c) fuzz_fail("a refused config was returned");
        if (!cvene_ctx_error(ctx)[0]) fuzz_fail("a refused config left no message");
        return 0;
    }
    char *json = NULL;
    st = cvene_config_to_json(c, &json);
    if (st == CVENE_ERR_UNSUPPORTED) { /* documented: a 2-element partition entry that is not a range */
        cvene_config_free(c);
        return 0;
    }
    fuzz_ok(st, "cvene_config_to_json of an accepted config");
    cvene_config *c2 = NULL;
    st = cvene_config_parse(ctx, json, &c2);
    if (st != CVENE_OK)
        fuzz_fail("the config's own JSON is refused (%s: %s):\n%s", cvene_status_name(st), cvene_ctx_error(ctx), json);
    if (cvene_config_count(c2) != cvene_config_count(c))
        fuzz_fail("round trip changed the number of representations: %d -> %d", cvene_config_count(c),
                  cvene_config_count(c2));
    char *json2 = NULL;
    fuzz_ok(cvene_config_to_json(c2, &json2), "cvene_config_to_json of a re-parsed config");
    if (strcmp(json, json2) != 0) fuzz_fail("round trip changed the config:\n%s\n-- became --\n%s", json, json2);
    cvene_free(json);
    cvene_free(json2);
    cvene_config_free(c);
    cvene_config_free(c2);
    return 0;
}
