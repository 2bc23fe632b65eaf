/* Trained interventions in cvene_run (engine/trained.h): the weights a config's trainable
 * representations load from a directory (cvene train's --out, or pyvene's save converted by
 * tools/convert_pyvene_weights.py), and their compute state, built on the first run and kept
 * with the config while the model's widths and the context stay the same. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/intervene.h"
#include "engine/iv_type.h"
#include "engine/train_io.h"
#include "engine/trained.h"
#include "models/safetensors.h"

struct iv_trained {
    char *path;         /* intkey_<key>.safetensors */
    tr_weights w;
    int have_w;
    tr_state *st;
    cvene_ctx *ctx;     /* the context the state's device buffers belong to */
    int width, n_max;
};

void iv_trained_free(iv_trained *t) {
    if (!t) return;
    tr_state_free(t->st);
    if (t->have_w) tr_weights_free(&t->w);
    free(t->path);
    free(t);
}

cvene_status tr_weights_for_rep(cvene_ctx *ctx, const cvene_representation *r, int index, int width, uint64_t seed,
                                tr_weights *w) {
    const char *tn = cvene_intervention_type_name(r->type);
    /* rank: low_rank_dimension (the autoencoders' latent width); RotatedSpace's / PCA's swapped
     * dims: interchange_dim (pyvene's set_interchange_dim), else low_rank_dimension, else all
     * (pyvene's default: the source) */
    const tr_r_kind rk = tr_type_r_kind(r->type);
    int rank = r->low_rank_dimension;
    if (rk == TR_R_INTERCHANGE) rank = r->interchange_dim ? r->interchange_dim : rank ? rank : width;
    if ((rk == TR_R_RANK || rk == TR_R_LATENT) && rank == 0)
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "representations[%d]: %s needs low_rank_dimension%s", index, tn,
                          rk == TR_R_LATENT ? " (its latent width; cvene reads it there, not from latent_dim)" : "");
    CVENE_TRY(tr_weights_init(ctx, w, r->type, width, rank, seed));
    /* the autoencoders' interchange_dim: the Autoencoder's latent index, JumpReLU's prefix */
    if (rk == TR_R_LATENT && r->interchange_dim) {
        const cvene_status st = tr_weights_set_interchange(ctx, w, &r->interchange_dim, 1, 0);
        if (st != CVENE_OK) tr_weights_free(w);
        return st;
    }
    return CVENE_OK;
}

cvene_status cvene_config_load_weights(cvene_config *c, const char *dir) {
    if (!c || !dir) return cvene_fail(c ? c->ctx : NULL, CVENE_ERR_INVALID_ARG, "config_load_weights: NULL argument");
    char key[300];
    int n = 0;
    iv_trained **loaded = calloc((size_t)(c->n ? c->n : 1), sizeof *loaded);
    if (!loaded) return cvene_fail(c->ctx, CVENE_ERR_OOM, "out of memory");
    cvene_status st = CVENE_OK;
    for (int i = 0; i < c->n && st == CVENE_OK; i++) {
        if (!(iv_type_get(c->reps[i].r.type)->flags & IV_TRAINABLE)) continue;
        train_io_key(c, i, key, sizeof key);
        const size_t len = strlen(dir) + strlen(key) + 32;
        iv_trained *t = calloc(1, sizeof *t);
        char *path = malloc(len);
        if (!t || !path) {
            free(t), free(path);
            st = cvene_fail(c->ctx, CVENE_ERR_OOM, "out of memory");
            break;
        }
        snprintf(path, len, "%s/intkey_%s.safetensors", dir, key);
        t->path = path;
        loaded[i] = t;
        st_archive ar; /* readable and well-formed now; its tensors are checked when a run knows the widths */
        memset(&ar, 0, sizeof ar);
        st = st_archive_add_file(c->ctx, &ar, path);
        if (st != CVENE_OK) {
            char why[1024]; /* the reader's message, copied: cvene_fail rewrites the buffer it lives in */
            snprintf(why, sizeof why, "%s", cvene_ctx_error(c->ctx));
            st = cvene_fail(c->ctx, st, "representations[%d] (%s): %s (cvene train --out writes intkey_<key>."
                            "safetensors; tools/convert_pyvene_weights.py makes it from pyvene's .bin)", i,
                            cvene_intervention_type_name(c->reps[i].r.type), why);
        }
        st_archive_close(&ar);
        n++;
    }
    if (st == CVENE_OK && n == 0)
        st = cvene_fail(c->ctx, CVENE_ERR_INVALID_ARG, "config_load_weights: the config has no trainable "
                        "interventions to load weights for");
    for (int i = 0; i < c->n; i++) { /* all or nothing */
        if (st != CVENE_OK) {
            iv_trained_free(loaded[i]);
        } else if (loaded[i]) {
            iv_trained_free(c->reps[i].trained);
            c->reps[i].trained = loaded[i];
        }
    }
    free(loaded);
    return st;
}

int cvene_config_count_trainable(const cvene_config *c) {
    int n = 0;
    for (int i = 0; c && i < c->n; i++) n += (iv_type_get(c->reps[i].r.type)->flags & IV_TRAINABLE) != 0;
    return n;
}

int iv_trained_loaded(const cvene_config *c, int i) { return c->reps[i].trained != NULL; }

cvene_status iv_trained_state(const cvene_config *c, int i, cvene_ctx *ctx, int width, int rows, tr_state **out) {
    iv_trained *t = c->reps[i].trained;
    const cvene_representation *r = &c->reps[i].r;
    if (!t)
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "representations[%d]: %s is trainable and has no weights: load "
                          "them with cvene_config_load_weights (cvene run --weights DIR)", i,
                          cvene_intervention_type_name(r->type));
    if (t->st && t->ctx == ctx && t->width == width && rows <= t->n_max) {
        *out = t->st;
        return CVENE_OK;
    }
    tr_state_free(t->st), t->st = NULL;
    if (!t->have_w || t->width != width) { /* the weights for this width, from the file */
        if (t->have_w) tr_weights_free(&t->w), t->have_w = 0;
        CVENE_TRY(tr_weights_for_rep(ctx, r, i, width, 0, &t->w));
        const cvene_status st = train_io_load_tensors(ctx, &t->w, t->path);
        if (st != CVENE_OK) {
            tr_weights_free(&t->w);
            return st;
        }
        t->have_w = 1, t->width = width;
    }
    const int n_max = rows > 2 * t->n_max ? rows : 2 * t->n_max; /* room to grow without rebuilding */
    CVENE_TRY(tr_state_new(ctx, &t->w, n_max, &t->st));
    const cvene_status st = tr_prepare(t->st);
    if (st != CVENE_OK) {
        tr_state_free(t->st), t->st = NULL;
        return st;
    }
    t->ctx = ctx, t->n_max = n_max;
    *out = t->st;
    return CVENE_OK;
}
