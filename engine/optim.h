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

 protected:
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

 private:
  std::vector<Tensor> buf_;
  std::vector<bool> started_;
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

  // A step a CUDA graph can replay (train/graph_train.h): step() reads the learning rate and the step count
  // on the host, which a graph would repeat as captured. Here they come from memory instead:
  // write_next_scalars puts the next step's three scalars (kernels::adamw_scalars at lr and steps()+1, in
  // `dtype`) at `host`; the caller copies them to `scalars` (3 elements of the parameters' dtype and
  // device) before step_from(scalars, skip) runs, which moves nothing where skip[0] != 0 and changes no host
  // state; count_step() then counts the step when it was taken. The same bits as step().
  void write_next_scalars(void* host, DType dtype) const;
  void step_from(const Tensor& scalars, const Tensor& skip);
  void count_step() { ++step_; }

 private:
  std::vector<Tensor> m_, v_;
  int64_t step_ = 0;
};

// Scales the gradients of `params` so their total L2 norm is at most max_norm, with the coefficient
// max_norm / (norm + 1e-6) as in PyTorch. Returns the norm before clipping (NaN/Inf when a gradient
// is not finite; nothing is scaled then).
double clip_grad_norm(const std::vector<Tensor>& params, double max_norm);
// Total L2 norm of the gradients of `params` (0 for parameters without a gradient).
double grad_norm(const std::vector<Tensor>& params);

}  // namespace hamu
