/* CPU ops on 16-bit activations (kernels/backend.h: cvene_ops16) - the oracle the CUDA
 * kernels are tested against.
 *
 * Each op is the rule written in backend.h, literally: widen every 16-bit input to f32 copies
 * (exact), run the f32 CPU op of the same name on them, round each output back to dt (nearest
 * even, kernels/dtype.h), rounding again wherever the f32 ops would store an intermediate
 * (residual_layernorm's updated x, matmul_act's GEMM output before its activation).
 * Clarity over speed: every call allocates its f32 copies. Strided inputs (attention's batch
 * strides, rotary's row stride) are widened over their whole extent; elements the op does not
 * touch go back unchanged (widening and rounding a 16-bit value is the identity). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "kernels/dtype.h"
#include "kernels/backend.h"

/* Up to 4 f32 copies per op, freed together; oom is set (and the error written) when one
 * could not be allocated. */
typedef struct {
    cvene_backend *be;
    const char *op;
    float *buf[5];
    int n, oom;
} scratch;

static cvene_status o16_fail(cvene_backend *be, cvene_status st, const char *op, const char *msg) {
    if (be->err && be->err_len) snprintf(be->err, be->err_len, "ops16.%s: %s", op, msg);
    return st;
}

static cvene_status dt_ok(cvene_backend *be, const char *op, cvene_dtype dt) {
    if (dt == CVENE_F32 || cvene_dtype_is_half(dt)) return CVENE_OK;
    char m[64];
    snprintf(m, sizeof m, "dt = %d is not F32, F16 or BF16", (int)dt);
    return o16_fail(be, CVENE_ERR_INVALID_ARG, op, m);
}

/* n floats (uninitialised), or NULL after writing the error and setting s->oom. */
static float *take(scratch *s, size_t n) {
    float *p = malloc(sizeof(float) * (n ? n : 1));
    if (!p) {
        o16_fail(s->be, CVENE_ERR_OOM, s->op, "out of memory for the f32 copies");
        s->oom = 1;
        return NULL;
    }
    s->buf[s->n++] = p;
    return p;
}

/* An f32 copy of n dt elements at src (NULL src stays NULL). */
static float *widen(scratch *s, const void *src, size_t n, cvene_dtype dt) {
    if (!src) return NULL;
    float *p = take(s, n);
    if (!p) return NULL;
    cvene_half_to_f32_array(p, (const uint16_t *)src, n, dt);
    return p;
}

static void narrow(void *dst, const float *src, size_t n, cvene_dtype dt) {
    cvene_f32_to_half_array((uint16_t *)dst, src, n, dt);
}

/* x (n) <- x rounded to dt, as f32 values */
static void round_f32(float *x, size_t n, cvene_dtype dt) {
    for (size_t i = 0; i < n; i++) x[i] = cvene_round_to_half(x[i], dt);
}

static cvene_status done(scratch *s, cvene_status st) {
    for (int i = 0; i < s->n; i++) free(s->buf[i]);
    return st;
}

#define TRY16(expr)                                                                                       \
    do {                                                                                                  \
        const cvene_status t16_ = (expr);                                                                 \
        if (t16_ != CVENE_OK) return t16_;                                                                \
    } while (0)
#define BEGIN(name)                                                                                       \
    scratch s = {be, name, {0}, 0, 0};                                                                    \
    TRY16(dt_ok(be, name, dt))
#define F32 (be->ops)
#define OOM_CHECK()                                                                                       \
    do {                                                                                                  \
        if (s.oom) return done(&s, CVENE_ERR_OOM);                                                        \
    } while (0)

static cvene_status o16_embedding(cvene_backend *be, cvene_dtype dt, void *out, const int32_t *ids,
                                  const int32_t *pos, const float *wte, const float *wpe, int B, int T, int C) {
    BEGIN("embedding");
    if (dt == CVENE_F32) return F32->embedding(be, out, ids, pos, wte, wpe, B, T, C);
    if (B <= 0 || T <= 0 || C <= 0) return CVENE_OK;
    const size_t n = (size_t)B * T * C;
    float *o = take(&s, n);
    OOM_CHECK();
    cvene_status st = F32->embedding(be, o, ids, pos, wte, wpe, B, T, C);
    if (st == CVENE_OK) narrow(out, o, n, dt);
    return done(&s, st);
}

static cvene_status o16_layernorm(cvene_backend *be, cvene_dtype dt, void *out, const void *in, const float *w,
                                  const float *b, int N, int C, float eps) {
    BEGIN("layernorm");
    if (dt == CVENE_F32) return F32->layernorm(be, out, in, w, b, N, C, eps);
    if (N <= 0 || C <= 0) return CVENE_OK;
    const size_t n = (size_t)N * C;
    float *x = widen(&s, in, n, dt), *o = take(&s, n);
    OOM_CHECK();
    cvene_status st = F32->layernorm(be, o, x, w, b, N, C, eps);
    if (st == CVENE_OK) narrow(out, o, n, dt);
    return done(&s, st);
}

static cvene_status o16_residual_add(cvene_backend *be, cvene_dtype dt, void *x, const void *y, size_t n) {
    BEGIN("residual_add");
    if (dt == CVENE_F32) return F32->residual_add(be, x, y, n);
    if (!n) return CVENE_OK;
    float *xf = widen(&s, x, n, dt), *yf = widen(&s, y, n, dt);
    OOM_CHECK();
    cvene_status st = F32->residual_add(be, xf, yf, n);
    if (st == CVENE_OK) narrow(x, xf, n, dt);
    return done(&s, st);
}

static cvene_status o16_residual_layernorm(cvene_backend *be, cvene_dtype dt, void *x, const void *y, void *out,
                                           const float *w, const float *b, int N, int C, float eps) {
    BEGIN("residual_layernorm");
    if (dt == CVENE_F32) return F32->residual_layernorm(be, x, y, out, w, b, N, C, eps);
    if (N <= 0 || C <= 0) return CVENE_OK;
    const size_t n = (size_t)N * C;
    float *xf = widen(&s, x, n, dt), *yf = widen(&s, y, n, dt), *o = take(&s, n);
    OOM_CHECK();
    cvene_status st = F32->residual_add(be, xf, yf, n);
    if (st == CVENE_OK) {
        round_f32(xf, n, dt); /* the stored residual, which the layer norm reads */
        narrow(x, xf, n, dt);
        st = F32->layernorm(be, o, xf, w, b, N, C, eps);
    }
    if (st == CVENE_OK) narrow(out, o, n, dt);
    return done(&s, st);
}

static cvene_status o16_matmul_act(cvene_backend *be, cvene_dtype dt, void *out, const void *in, const void *w,
                                   int ldw, int trans_w, const float *bias, int M, int K, int N, cvene_act act) {
    BEGIN("matmul_act");
    if (dt == CVENE_F32) return F32->matmul_act(be, out, in, w, CVENE_F32, ldw, trans_w, bias, M, K, N, act);
    if (M <= 0 || N <= 0) return CVENE_OK;
    const size_t n = (size_t)M * N;
    float *xf = widen(&s, in, (size_t)M * (K > 0 ? K : 0), dt), *o = take(&s, n);
    OOM_CHECK();
    /* matmul_lp widens W (dt) and rounds the already-representable inputs (a no-op) */
    cvene_status st = F32->matmul_lp(be, o, xf, w, dt, ldw, trans_w, bias, M, K, N);
    if (st == CVENE_OK && act != CVENE_ACT_NONE) {
        round_f32(o, n, dt); /* the GEMM's stored output, which the activation reads */
        st = F32->activation(be, o, n, act);
    }
    if (st == CVENE_OK) narrow(out, o, n, dt);
    return done(&s, st);
}

static cvene_status o16_attn_probs(cvene_backend *be, cvene_dtype dt, void *probs, const void *q, size_t q_bs,
                                   const void *k, size_t k_bs, const int32_t *key_mask, int B, int Tq, int Tk, int H,
                                   int D, float scale) {
    BEGIN("attn_probs");
    if (dt == CVENE_F32) return F32->attn_probs(be, probs, q, q_bs, k, k_bs, key_mask, B, Tq, Tk, H, D, scale);
    if (B <= 0 || Tq <= 0 || Tk <= 0 || H <= 0) return CVENE_OK;
    const size_t C = (size_t)H * (D > 0 ? D : 0), n = (size_t)B * H * Tq * Tk;
    float *qf = widen(&s, q, (size_t)(B - 1) * q_bs + (size_t)Tq * C, dt);
    float *kf = widen(&s, k, (size_t)(B - 1) * k_bs + (size_t)Tk * C, dt);
    float *o = take(&s, n);
    OOM_CHECK();
    cvene_status st = F32->attn_probs(be, o, qf, q_bs, kf, k_bs, key_mask, B, Tq, Tk, H, D, scale);
    if (st == CVENE_OK) narrow(probs, o, n, dt);
    return done(&s, st);
}

static cvene_status o16_attn_apply(cvene_backend *be, cvene_dtype dt, void *out, const void *probs, const void *v,
                                   size_t v_bs, int B, int Tq, int Tk, int H, int D) {
    BEGIN("attn_apply");
    if (dt == CVENE_F32) return F32->attn_apply(be, out, probs, v, v_bs, B, Tq, Tk, H, D);
    if (B <= 0 || Tq <= 0 || H <= 0 || D <= 0) return CVENE_OK;
    if (Tk < 0) Tk = 0;
    const size_t C = (size_t)H * D, n = (size_t)B * Tq * C;
    float *pf = widen(&s, probs, (size_t)B * H * Tq * Tk, dt);
    float *vf = widen(&s, v, (size_t)(B - 1) * v_bs + (size_t)Tk * C, dt);
    float *o = take(&s, n);
    OOM_CHECK();
    cvene_status st = F32->attn_apply(be, o, pf, vf, v_bs, B, Tq, Tk, H, D);
    if (st == CVENE_OK) narrow(out, o, n, dt);
    return done(&s, st);
}

static cvene_status o16_activation(cvene_backend *be, cvene_dtype dt, void *x, size_t n, cvene_act act) {
    BEGIN("activation");
    if (dt == CVENE_F32) return F32->activation(be, x, n, act);
    if (!n || act == CVENE_ACT_NONE) return CVENE_OK;
    float *xf = widen(&s, x, n, dt);
    OOM_CHECK();
    cvene_status st = F32->activation(be, xf, n, act);
    if (st == CVENE_OK) narrow(x, xf, n, dt);
    return done(&s, st);
}

static cvene_status o16_softmax(cvene_backend *be, cvene_dtype dt, void *x, int N, int C) {
    BEGIN("softmax");
    if (dt == CVENE_F32) return F32->softmax(be, x, N, C);
    if (N <= 0 || C <= 0) return CVENE_OK;
    const size_t n = (size_t)N * C;
    float *xf = widen(&s, x, n, dt);
    OOM_CHECK();
    cvene_status st = F32->softmax(be, xf, N, C);
    if (st == CVENE_OK) narrow(x, xf, n, dt);
    return done(&s, st);
}

static cvene_status o16_rotary(cvene_backend *be, cvene_dtype dt, void *x, int ld, const int32_t *pos, int B, int T,
                               int H, int D, int rot_dims, float base) {
    BEGIN("rotary");
    if (dt == CVENE_F32) return F32->rotary(be, x, ld, pos, B, T, H, D, rot_dims, base);
    if (B <= 0 || T <= 0 || H <= 0 || rot_dims / 2 <= 0) return CVENE_OK;
    const size_t n = ((size_t)B * T - 1) * (size_t)ld + (size_t)H * D; /* rows of stride ld */
    float *xf = widen(&s, x, n, dt);
    OOM_CHECK();
    cvene_status st = F32->rotary(be, xf, ld, pos, B, T, H, D, rot_dims, base);
    if (st == CVENE_OK) narrow(x, xf, n, dt);
    return done(&s, st);
}

static cvene_status o16_permute_heads(cvene_backend *be, cvene_dtype dt, void *dst, const void *src, int B, int T,
                                      int H, int D, int to_heads) {
    BEGIN("permute_heads");
    if (dt == CVENE_F32) return F32->permute_heads(be, dst, src, B, T, H, D, to_heads);
    if (B <= 0 || T <= 0 || H <= 0 || D <= 0) return CVENE_OK;
    const size_t n = (size_t)B * T * H * D;
    float *sf = widen(&s, src, n, dt), *o = take(&s, n);
    OOM_CHECK();
    cvene_status st = F32->permute_heads(be, o, sf, B, T, H, D, to_heads);
    if (st == CVENE_OK) narrow(dst, o, n, dt);
    return done(&s, st);
}

static cvene_status o16_gru_pointwise(cvene_backend *be, cvene_dtype dt, void *out, const void *a, const void *b,
                                      const void *c, size_t n, cvene_gru_step step) {
    BEGIN("gru_pointwise");
    if (dt == CVENE_F32) return F32->gru_pointwise(be, out, a, b, c, n, step);
    if (!n) return F32->gru_pointwise(be, NULL, NULL, NULL, NULL, 0, step); /* validates step */
    float *af = widen(&s, a, n, dt), *bf = widen(&s, b, n, dt), *cf = widen(&s, c, n, dt);
    float *o = take(&s, n);
    OOM_CHECK();
    cvene_status st = F32->gru_pointwise(be, o, af, bf, cf, n, step);
    if (st == CVENE_OK) narrow(out, o, n, dt);
    return done(&s, st);
}

static cvene_status o16_convert(cvene_backend *be, void *dst, cvene_dtype dst_dt, const void *src, cvene_dtype src_dt,
                                size_t n) {
    TRY16(dt_ok(be, "convert (dst_dt)", dst_dt));
    TRY16(dt_ok(be, "convert (src_dt)", src_dt));
    if (!n) return CVENE_OK;
    if (dst_dt == src_dt) return F32->copy(be, dst, src, n * (dst_dt == CVENE_F32 ? 4 : 2));
    if (src_dt == CVENE_F32) {
        narrow(dst, src, n, dst_dt);
    } else if (dst_dt == CVENE_F32) {
        cvene_half_to_f32_array(dst, src, n, src_dt);
    } else { /* f16 <-> bf16 through f32 (exact widening, one rounding) */
        const uint16_t *sp = src;
        uint16_t *dp = dst;
        for (size_t i = 0; i < n; i++) {
            float f;
            cvene_half_to_f32_array(&f, sp + i, 1, src_dt);
            cvene_f32_to_half_array(dp + i, &f, 1, dst_dt);
        }
    }
    return CVENE_OK;
}

static cvene_status o16_round(cvene_backend *be, cvene_dtype dt, float *x, size_t n) {
    TRY16(dt_ok(be, "round", dt));
    if (dt != CVENE_F32) round_f32(x, n, dt);
    return CVENE_OK;
}

const cvene_ops16 cvene_cpu_ops16 = {
    .embedding = o16_embedding,
    .layernorm = o16_layernorm,
    .residual_layernorm = o16_residual_layernorm,
    .residual_add = o16_residual_add,
    .matmul_act = o16_matmul_act,
    .attn_probs = o16_attn_probs,
    .attn_apply = o16_attn_apply,
    .activation = o16_activation,
    .softmax = o16_softmax,
    .rotary = o16_rotary,
    .permute_heads = o16_permute_heads,
    .gru_pointwise = o16_gru_pointwise,
    .convert = o16_convert,
    .round = o16_round,
};
