/* Reading Hugging Face config.json files with errors that name the field. */
#ifndef CVENE_HF_CONFIG_H
#define CVENE_HF_CONFIG_H

#include <cjson/cJSON.h>
#include "kernels/ctx.h"

/* Parse DIR/config.json; *out must be freed with cJSON_Delete. */
cvene_status hf_config_read(cvene_ctx *ctx, const char *dir, cJSON **out);

/* Required positive integer in [lo, hi]. */
cvene_status hf_config_int(cvene_ctx *ctx, const cJSON *cfg, const char *dir, const char *field,
                           int lo, int hi, int *out);
/* Optional integer (absent or null -> def). */
cvene_status hf_config_int_opt(cvene_ctx *ctx, const cJSON *cfg, const char *dir,
                               const char *field, int lo, int hi, int def, int *out);
cvene_status hf_config_float_opt(cvene_ctx *ctx, const cJSON *cfg, const char *dir,
                                 const char *field, double def, double *out);
cvene_status hf_config_bool_opt(cvene_ctx *ctx, const cJSON *cfg, const char *dir,
                                const char *field, int def, int *out);
/* Optional string; *out points into cfg (or def). */
cvene_status hf_config_str_opt(cvene_ctx *ctx, const cJSON *cfg, const char *dir,
                               const char *field, const char *def, const char **out);

#endif
