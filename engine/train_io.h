/* Trained interventions on disk: pyvene's IntervenableConfig (config.json, the form
 * IntervenableModel.save writes) and one safetensors file per intervention holding its state
 * dict under pyvene's names (intkey_<key>.safetensors, where pyvene writes intkey_<key>.bin;
 * tools/convert_pyvene_weights.py converts between the two). */
#ifndef CVENE_TRAIN_IO_H
#define CVENE_TRAIN_IO_H

#include "engine/intervene.h"
#include "engine/trainable.h"

/* pyvene's key of representation i of c ("layer_3_comp_block_output_unit_pos_nunit_1#0"). */
void train_io_key(const cvene_config *c, int i, char *out, size_t n);
/* Write dir/config.json and dir/intkey_<key>.safetensors for every representation (w[i] its
 * tensors), each atomically; dir is created when missing. The files hold what pyvene's save
 * writes (its state dict, I64 buffers included; pyreft's for LoReFT), so
 * tools/convert_pyvene_weights.py --to-pyvene makes a directory IntervenableModel.load reads. */
cvene_status train_io_save(cvene_ctx *ctx, const cvene_config *c, const tr_weights *w, const char *dir);
/* Set w's tensors from the safetensors file at path: pyvene's state dict (F32, F16 or BF16
 * parameters; embed_dim must match; interchange_dim and intervention_population are pyvene's
 * bookkeeping and skipped), or pyreft's for LoReFT (weight, bias, rotate_layer: loaded as pyreft
 * does, base[:, :r] = rotate_layer with original reset to -I). A tensor the type does not have, or
 * a wrong shape, is an error naming both; on any error w is left as it was. */
cvene_status train_io_load_tensors(cvene_ctx *ctx, tr_weights *w, const char *path);

#endif
