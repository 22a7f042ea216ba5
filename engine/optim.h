// engine/optim.h: SGD and AdamW over a parameter list, and total-norm gradient clipping.
// Optimizers hold the parameter tensors themselves: build them after moving a model to its device.
#pragma once
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace hamu {

struct RunState;

class Optimizer {
 public:
  explicit Optimizer(std::vector<Tensor> params);
  virtual ~Optimizer() = default;
  virtual void step() = 0;  // parameters without a gradient are skipped
  void zero_grad();
  double lr = 1e-3;
  const std::vector<Tensor>& params() const { return params_; }
  // Resumable runs (engine/run_state.h): the moments and counters under `prefix`, and their restoration
  // (InputError naming the state file when an entry is missing or of another shape).
  virtual void save_state(RunState& state, const std::string& prefix) const = 0;
  virtual void load_state(const RunState& state, const std::string& prefix) = 0;

  // A step a CUDA graph can replay (train/graph_train.h): step() reads the learning rate and the step count
  // on the host, which a graph would repeat as captured. Here they come from memory instead:
  // write_next_scalars puts the next step's graph_scalars() scalars (in `dtype`) at `host`; the caller copies
  // them to `scalars` (that many elements of the parameters' dtype and device) before step_from(scalars,
  // skip) runs, which moves nothing where skip[0] != 0; count_step() then records the step when it was taken.
  // prepare_graph() runs once before the capture (outside it): what step() would allocate on the way.
  // The same bits as step().
  virtual int64_t graph_scalars() const = 0;
  virtual void write_next_scalars(void* host, DType dtype) const = 0;
  virtual void step_from(const Tensor& scalars, const Tensor& skip) = 0;
  virtual void count_step() = 0;
  virtual void prepare_graph() {}

 protected:
  // Throws unless scalars (n elements) and skip (1) are of p's dtype and device.
  static void check_step_from(const char* who, const Tensor& p, const Tensor& scalars, int64_t n, const Tensor& skip);
  std::vector<Tensor> params_;
};

struct SgdOptions {
  double lr = 1e-2, momentum = 0.0, dampening = 0.0, weight_decay = 0.0;
  bool nesterov = false;
};

class Sgd : public Optimizer {
 public:
  Sgd(std::vector<Tensor> params, const SgdOptions& opt);
  void step() override;
  void save_state(RunState& state, const std::string& prefix) const override;
  void load_state(const RunState& state, const std::string& prefix) override;
  SgdOptions opt;

  // The graph's scalars: {lr, then per parameter 1 where its next step is its first (the momentum buffer
  // seeded with the gradient), else 0}. prepare_graph allocates the momentum buffers (zeros, overwritten by
  // a first step); count_step marks the parameters step_from stepped as started.
  int64_t graph_scalars() const override { return 1 + int64_t(params_.size()); }
  void write_next_scalars(void* host, DType dtype) const override;
  void step_from(const Tensor& scalars, const Tensor& skip) override;
  void count_step() override;
  void prepare_graph() override;

 private:
  std::vector<Tensor> buf_;
  std::vector<bool> started_;
  std::vector<bool> stepped_;  // which parameters step_from steps (those with a gradient)
};

struct AdamWOptions {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.01;
};

class AdamW : public Optimizer {
 public:
  AdamW(std::vector<Tensor> params, const AdamWOptions& opt);
  void step() override;
  void save_state(RunState& state, const std::string& prefix) const override;
  void load_state(const RunState& state, const std::string& prefix) override;
  AdamWOptions opt;
  int64_t steps() const { return step_; }

  // The graph's scalars: kernels::adamw_scalars at lr and steps()+1; count_step counts the step.
  int64_t graph_scalars() const override { return 3; }
  void write_next_scalars(void* host, DType dtype) const override;
  void step_from(const Tensor& scalars, const Tensor& skip) override;
  void count_step() override { ++step_; }

 private:
  std::vector<Tensor> m_, v_;
  int64_t step_ = 0;
};

// Scales the gradients of `params` so their total L2 norm is at most max_norm, with the coefficient
// max_norm / (norm + 1e-6) as in PyTorch. Returns the norm before clipping (in the gradients' precision;
// NaN/Inf when a gradient is not finite: nothing is scaled then). The gradients must share one dtype and
// device. Runs clip_grad_norm_dev and reads its norm back once.
double clip_grad_norm(const std::vector<Tensor>& params, double max_norm);
// The same without reading anything back (a graphed step: train/graph_train.h): the norm and coefficient
// computed by kernels (kernels::clip_coef, double), the gradients scaled on the device where the coefficient
// is below 1, and skip[0] (when given: 1 element of the gradients' dtype and device) set to 1 where the norm
// is not finite, else left as it is. Returns {coef, norm} on the gradients' device (undefined when no
// parameter has a gradient).
Tensor clip_grad_norm_dev(const std::vector<Tensor>& params, double max_norm, const Tensor* skip = nullptr);
// Total L2 norm of the gradients of `params` (0 for parameters without a gradient).
double grad_norm(const std::vector<Tensor>& params);

}  // namespace hamu
