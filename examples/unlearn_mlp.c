/* examples/unlearn_mlp.c: a full HAMU-Q unlearning loop through libhamu on a model that is not hamu's: a
 * 2-layer MLP (2 -> 16 tanh -> 3 softmax) written here in plain C99 with its own gradients, trained on three
 * Gaussian blobs; then class 2 is forgotten. Each unlearning step computes the mean cross-entropy gradient
 * on the retain set (r) and on the forget set (f) into the model's own buffers and hands the four parameter
 * tensors to hamu_step, which moves them in place. Exits 1 unless the forget class is forgotten while the
 * retain classes stay learnt.
 *
 * Build: cc -std=c99 -I build/include examples/unlearn_mlp.c -L build -lhamu -lm */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "hamu.h"

#define IN 2
#define HID 16
#define OUT 3
#define N 300
#define FORGET_CLASS 2

/* The model: four parameter tensors and, for each, a retain and a forget gradient buffer. */
typedef struct {
  float w1[HID * IN], b1[HID], w2[OUT * HID], b2[OUT];
} Params;

static float* tensor(Params* p, int i) {
  float* t[4] = {p->w1, p->b1, p->w2, p->b2};
  return t[i];
}
static const int64_t kSizes[4] = {HID * IN, HID, OUT * HID, OUT};

static double uniform(unsigned* s) {
  *s = *s * 1664525u + 1013904223u;
  return ((*s >> 8) + 0.5) / 16777216.0;
}
static double normal(unsigned* s) { return sqrt(-2 * log(uniform(s))) * cos(6.283185307179586 * uniform(s)); }

/* Forward one sample; returns the predicted class, fills hidden activations and softmax probabilities. */
static int forward(const Params* p, const float* x, float* h, float* prob) {
  float z[OUT], mx = -1e30f, sum = 0;
  int best = 0;
  for (int j = 0; j < HID; ++j) {
    float a = p->b1[j];
    for (int k = 0; k < IN; ++k) a += p->w1[j * IN + k] * x[k];
    h[j] = tanhf(a);
  }
  for (int c = 0; c < OUT; ++c) {
    z[c] = p->b2[c];
    for (int j = 0; j < HID; ++j) z[c] += p->w2[c * HID + j] * h[j];
    if (z[c] > mx) mx = z[c];
  }
  for (int c = 0; c < OUT; ++c) sum += (prob[c] = expf(z[c] - mx));
  for (int c = 0; c < OUT; ++c) {
    prob[c] /= sum;
    if (prob[c] > prob[best]) best = c;
  }
  return best;
}

/* Mean cross-entropy gradient over the samples with (y == cls) == want into g (overwritten); returns the loss. */
static double gradient(const Params* p, const float* x, const int* y, int cls, int want, Params* g) {
  float h[HID], prob[OUT];
  double loss = 0;
  int n = 0;
  for (int i = 0; i < 4; ++i)
    for (int64_t k = 0; k < kSizes[i]; ++k) tensor(g, i)[k] = 0;
  for (int i = 0; i < N; ++i) {
    if ((y[i] == cls) != want) continue;
    forward(p, x + IN * i, h, prob);
    loss -= log(prob[y[i]] + 1e-12);
    ++n;
    float dh[HID] = {0};
    for (int c = 0; c < OUT; ++c) {
      const float dz = prob[c] - (c == y[i]);
      g->b2[c] += dz;
      for (int j = 0; j < HID; ++j) {
        g->w2[c * HID + j] += dz * h[j];
        dh[j] += dz * p->w2[c * HID + j];
      }
    }
    for (int j = 0; j < HID; ++j) {
      const float da = dh[j] * (1 - h[j] * h[j]);
      g->b1[j] += da;
      for (int k = 0; k < IN; ++k) g->w1[j * IN + k] += da * x[IN * i + k];
    }
  }
  for (int i = 0; i < 4; ++i)
    for (int64_t k = 0; k < kSizes[i]; ++k) tensor(g, i)[k] /= (float)n;
  return loss / n;
}

static double accuracy(const Params* p, const float* x, const int* y, int cls, int want) {
  float h[HID], prob[OUT];
  int right = 0, n = 0;
  for (int i = 0; i < N; ++i) {
    if ((y[i] == cls) != want) continue;
    right += forward(p, x + IN * i, h, prob) == y[i];
    ++n;
  }
  return (double)right / n;
}

static int check(hamu_context* ctx, int status, const char* what) {
  if (status < 0) {
    fprintf(stderr, "unlearn_mlp: %s: %s (%s)\n", what, hamu_last_error(ctx), hamu_status_name(status));
    exit(1);
  }
  return status;
}

int main(void) {
  static float x[N * IN];
  static int y[N];
  static Params p, r, f;
  unsigned seed = 7;
  for (int i = 0; i < N; ++i) {
    y[i] = i % OUT;
    x[IN * i] = (float)(2 * cos(2.1 * y[i]) + 0.9 * normal(&seed));
    x[IN * i + 1] = (float)(2 * sin(2.1 * y[i]) + 0.9 * normal(&seed));
  }
  for (int i = 0; i < 4; ++i)
    for (int64_t k = 0; k < kSizes[i]; ++k) tensor(&p, i)[k] = (float)(0.5 * normal(&seed));
  /* Train on everything: plain gradient descent on the full batch (r holds the gradient here). */
  for (int step = 0; step < 300; ++step) {
    gradient(&p, x, y, -1, 0, &r);
    for (int i = 0; i < 4; ++i)
      for (int64_t k = 0; k < kSizes[i]; ++k) tensor(&p, i)[k] -= 0.5f * tensor(&r, i)[k];
  }
  const double retain0 = accuracy(&p, x, y, FORGET_CLASS, 0), forget0 = accuracy(&p, x, y, FORGET_CLASS, 1);
  printf("unlearn_mlp: libhamu %d, trained: retain accuracy %.3f, forget accuracy %.3f\n", hamu_version(), retain0,
         forget0);

  /* Unlearn class 2 with HAMU-Q: the four tensors are the blocks; r and f are the model's own buffers. */
  hamu_context* ctx = NULL;
  check(NULL, hamu_context_create("cpu", &ctx), "hamu_context_create");
  hamu_block blocks[4];
  for (int i = 0; i < 4; ++i) {
    blocks[i].param = tensor(&p, i);
    blocks[i].retain_grad = tensor(&r, i);
    blocks[i].forget_grad = tensor(&f, i);
    blocks[i].count = kSizes[i];
  }
  hamu_step_config cfg;
  hamu_step_config_init(&cfg);
  cfg.method = "hamu-q";
  cfg.lr = 0.5;
  cfg.ratio = 0.1;                /* B = ratio * lr: the forget loss rises by at least 0.05 a step (first order) */
  cfg.fixed_radius = 1;           /* steps of length 0.1 ... */
  cfg.radius = 0.1;
  cfg.continue_on_infeasible = 1; /* ... and while the forget class is still fitted so well that no step of that
                                     length gains B, ascend the forget loss only */
  hamu_report rep;
  int steps = 0;
  for (int step = 1; step <= 40; ++step) {
    const double lr_loss = gradient(&p, x, y, FORGET_CLASS, 0, &r);
    const double lf_loss = gradient(&p, x, y, FORGET_CLASS, 1, &f);
    const int st = check(ctx, hamu_step(ctx, blocks, 4, &cfg, &rep, NULL), "hamu_step");
    if (step % 10 == 1)
      printf("  step %2d  retain loss %.4f  forget loss %.4f  kappa %+.4f  branches d%d/r%d/c%d/i%d\n", step, lr_loss,
             lf_loss, rep.kappa, rep.n_direct, rep.n_rectified, rep.n_colinear, rep.n_infeasible);
    if (st == HAMU_SKIPPED) {
      printf("  step %d not applied (%s): stopping\n", step, rep.nonfinite ? "non-finite gradients" : "infeasible or criterion met");
      break;
    }
    ++steps;
  }
  hamu_context_destroy(ctx);
  const double retain1 = accuracy(&p, x, y, FORGET_CLASS, 0), forget1 = accuracy(&p, x, y, FORGET_CLASS, 1);
  printf("unlearn_mlp: after %d HAMU-Q steps: retain accuracy %.3f, forget accuracy %.3f\n", steps, retain1, forget1);
  if (!(forget1 < 0.2 && retain1 > retain0 - 0.1)) {
    fprintf(stderr, "unlearn_mlp: FAILED: class %d not forgotten, or the retain classes lost\n", FORGET_CLASS);
    return 1;
  }
  printf("unlearn_mlp: ok\n");
  return 0;
}
