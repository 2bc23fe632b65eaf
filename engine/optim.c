/* torch.optim.Adam / AdamW (engine/optim.h). The order of operations follows torch's
 * single-tensor implementation (torch/optim/adam.py, _single_tensor_adam) so each value is the
 * f32 torch computes from the same inputs:
 *   g = grad (+ wd * param for Adam's L2);  param *= 1 - lr * wd first for AdamW
 *   m.lerp_(g, 1 - beta1);  v = v * beta2 + (1 - beta2) * g * g
 *   denom = sqrt(v) / sqrt(1 - beta2^t) + eps;  param += -(lr / (1 - beta1^t)) * m / denom
 * with the Python-float scalars (bias corrections, step size) computed in double and used as
 * f32 by the tensor ops. */
#include <math.h>

#include "engine/optim.h"

optim_adam optim_adam_default(void) {
    optim_adam o = {1e-3, 0.9, 0.999, 1e-8, 0.0, 0};
    return o;
}

/* torch's lerp: start + w (end - start) for |w| < 0.5, else end - (end - start)(1 - w) */
static float lerp(float start, float end, float w) {
    return fabsf(w) < 0.5f ? start + w * (end - start) : end - (end - start) * (1.0f - w);
}

void optim_adam_step(const optim_adam *o, float *param, const float *grad, float *m, float *v, size_t n, int64_t t,
                     double lr) {
    const double bc1 = 1.0 - pow(o->beta1, (double)t), bc2 = 1.0 - pow(o->beta2, (double)t);
    const float step_size = (float)(lr / bc1), bc2_sqrt = (float)sqrt(bc2), eps = (float)o->eps;
    const float w1 = (float)(1.0 - o->beta1), b2 = (float)o->beta2, w2 = (float)(1.0 - o->beta2);
    const float wd = (float)o->weight_decay, decay = (float)(1.0 - lr * o->weight_decay);
    for (size_t i = 0; i < n; i++) {
        float g = grad[i];
        if (o->weight_decay != 0.0) {
            if (o->decoupled) param[i] *= decay;
            else g = g + wd * param[i];
        }
        m[i] = lerp(m[i], g, w1);
        v[i] = v[i] * b2 + w2 * g * g;
        const float denom = sqrtf(v[i]) / bc2_sqrt + eps;
        param[i] = param[i] + (-step_size) * (m[i] / denom);
    }
}

double optim_linear_warmup(int64_t k, int64_t warmup, int64_t total) {
    if (k < warmup) return (double)k / (double)(warmup > 1 ? warmup : 1);
    const double rest = (double)(total - k) / (double)(total - warmup > 1 ? total - warmup : 1);
    return rest > 0 ? rest : 0.0;
}
