/* Optimizers and learning-rate schedules of intervention training, as torch computes them
 * (torch.optim.Adam / AdamW, single-tensor path; transformers' linear schedule with warm-up),
 * so that the same parameters, gradients and settings give the same trajectory. */
#ifndef CVENE_OPTIM_H
#define CVENE_OPTIM_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    double lr;           /* the base learning rate (torch's default 1e-3) */
    double beta1, beta2; /* 0.9, 0.999 */
    double eps;          /* 1e-8 */
    double weight_decay; /* Adam: L2 added to the gradient; AdamW: decoupled (param *= 1 - lr wd) */
    int decoupled;       /* 1: AdamW */
} optim_adam;

optim_adam optim_adam_default(void);

/* One Adam(W) step on n f32 parameters with their gradient, first and second moments (zero
 * before the first step) at step t (1 for the first) and learning rate lr (the schedule's value
 * for this step), exactly in torch's order of f32 operations. */
void optim_adam_step(const optim_adam *o, float *param, const float *grad, float *m, float *v, size_t n, int64_t t,
                     double lr);

/* transformers.get_linear_schedule_with_warmup: the factor of the base learning rate at step
 * index k (0 for the first optimizer step): k / warmup during the warm-up, then falling linearly
 * to 0 at total. */
double optim_linear_warmup(int64_t k, int64_t warmup, int64_t total);

/* torch.linspace(start, end, n) in float32, as torch's CPU kernel computes it: the step
 * (end - start) / (n - 1) in f32, then start + step i for the first half, end - step (n - 1 - i)
 * for the rest. */
void optim_linspace_f32(float start, float end, int64_t n, float *out);

#endif
