/* torch.optim.Adam / AdamW (engine/optim.h). The f32 operations of torch's single-tensor CPU
 * path (torch/optim/adam.py, _single_tensor_adam; docs/training_semantics.md 5.4), with the
 * fused multiply-adds its lerp_ and addcmul_ kernels use, so each value is bit for bit what
 * torch computes from the same inputs:
 *   AdamW: p *= f32(1 - lr wd) first;  Adam with wd: g = g + wd p
 *   m = fma(f32(1 - b1), g - m, m);  v = fma(f32(1 - b2) g, g, v f32(b2))
 *   denom = sqrt(v) / f32(sqrt(1 - b2^t)) + f32(eps);  p = p + (f32(-lr / (1 - b1^t)) m) / denom
 * with the bias corrections and step size computed in double, as the Python floats are. */
#include <math.h>

#include "engine/optim.h"

optim_adam optim_adam_default(void) {
    optim_adam o = {1e-3, 0.9, 0.999, 1e-8, 0.0, 0};
    return o;
}

/* torch's lerp kernel: start + w (end - start) for |w| < 0.5, else end - (end - start)(1 - w),
 * each as one fused multiply-add */
static float lerp(float start, float end, float w) {
    return fabsf(w) < 0.5f ? fmaf(w, end - start, start) : fmaf(-(end - start), 1.0f - w, end);
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
        v[i] = fmaf(w2 * g, g, v[i] * b2);
        const float denom = sqrtf(v[i]) / bc2_sqrt + eps;
        param[i] = param[i] + ((-step_size) * m[i]) / denom;
    }
}

double optim_linear_warmup(int64_t k, int64_t warmup, int64_t total) {
    if (k < warmup) return (double)k / (double)(warmup > 1 ? warmup : 1);
    const double rest = (double)(total - k) / (double)(total - warmup > 1 ? total - warmup : 1);
    return rest > 0 ? rest : 0.0;
}

void optim_linspace_f32(float start, float end, int64_t n, float *out) {
    if (n == 1) {
        out[0] = start;
        return;
    }
    const float step = (end - start) / (float)(n - 1);
    const int64_t half = n / 2;
    for (int64_t i = 0; i < n; i++) out[i] = i < half ? start + step * (float)i : end - step * (float)(n - i - 1);
}
