/* The sizes of the public structs, so bindings that mirror them (the Python package's ctypes
 * declarations) can check their layout against the library they load. */
#include <string.h>

#include "cvene.h"

size_t cvene_abi_sizeof(const char *type_name) {
    static const struct {
        const char *name;
        size_t size;
    } types[] = {
        {"cvene_ctx_params", sizeof(cvene_ctx_params)},     {"cvene_tensor_view", sizeof(cvene_tensor_view)},
        {"cvene_model_info", sizeof(cvene_model_info)},     {"cvene_run_opts", sizeof(cvene_run_opts)},
        {"cvene_input", sizeof(cvene_input)},               {"cvene_gen_params", sizeof(cvene_gen_params)},
        {"cvene_sweep_params", sizeof(cvene_sweep_params)}, {"cvene_sweep_summary", sizeof(cvene_sweep_summary)}, {"cvene_sweep_example", sizeof(cvene_sweep_example)},
        {"cvene_kernel_timing", sizeof(cvene_kernel_timing)}, {"cvene_train_params", sizeof(cvene_train_params)},
        {"cvene_example", sizeof(cvene_example)},           {"cvene_probe_params", sizeof(cvene_probe_params)},
    };
    for (size_t i = 0; type_name && i < sizeof types / sizeof types[0]; i++)
        if (!strcmp(types[i].name, type_name)) return types[i].size;
    return 0;
}

const char *cvene_version(void) { return CVENE_VERSION_STRING; }
