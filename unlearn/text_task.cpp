// unlearn/text_task.cpp: retain/forget batches of tokenised QA pairs for the unlearning runner.
#include "unlearn/text_task.h"

#include <algorithm>

#include "engine/rng.h"
#include "loaders/text_batch.h"
#include "models/lm/lm.h"

namespace hamu {
namespace {

// Index batches over a set that cycles forever, reshuffled each pass.
class CyclicIndices {
 public:
  CyclicIndices(int64_t n, int64_t batch, uint64_t seed) : n_(n), batch_(std::min(batch, n)), seed_(seed) { reshuffle(); }
  std::vector<int64_t> next() {
    if (cursor_ + batch_ > n_) {
      ++pass_;
      reshuffle();
    }
    std::vector<int64_t> out(order_.begin() + cursor_, order_.begin() + cursor_ + batch_);
    cursor_ += batch_;
    return out;
  }
  int64_t pass() const { return pass_; }
  int64_t cursor() const { return cursor_; }
  void seek(int64_t pass, int64_t cursor) {
    if (pass < 0 || cursor < 0 || cursor > n_)
      throw InputError("resume: batch position (pass " + std::to_string(pass) + ", row " + std::to_string(cursor) +
                       ") is outside a set of " + std::to_string(n_));
    pass_ = pass;
    reshuffle();
    cursor_ = cursor;
  }

 private:
  void reshuffle() {
    Rng rng = Rng(seed_).fork(uint64_t(pass_));
    order_ = rng.permutation(n_);
    cursor_ = 0;
  }
  int64_t n_, batch_;
  uint64_t seed_;
  int64_t pass_ = 0, cursor_ = 0;
  std::vector<int64_t> order_;
};

class TextTask final : public UnlearnTask {
 public:
  TextTask(const std::vector<QaTokens>& retain, const std::vector<QaTokens>& forget, int32_t pad_id,
           const UnlearnOptions& opt)
      : retain_(retain),
        forget_(forget),
        pad_id_(pad_id),
        device_(opt.device),
        retain_order_(int64_t(retain.size()), opt.batch, opt.seed * 2 + 1),
        forget_order_(int64_t(forget.size()), opt.forget_batch, opt.seed * 2 + 2) {}
  size_t retain_size() const override { return retain_.size(); }
  size_t forget_size() const override { return forget_.size(); }
  void next_pair(Batch& retain, Batch& forget) override {
    const std::vector<int64_t> ri = retain_order_.next(), fi = forget_order_.next();
    const int64_t t = std::max(longest_sequence(retain_, ri), longest_sequence(forget_, fi));
    retain = make_text_batch(retain_, ri, pad_id_, t, device_);
    forget = make_text_batch(forget_, fi, pad_id_, t, device_);
  }
  std::vector<int64_t> position() const override {
    return {retain_order_.pass(), retain_order_.cursor(), forget_order_.pass(), forget_order_.cursor()};
  }
  void seek(const std::vector<int64_t>& p) override {
    if (p.size() != 4) throw InputError("resume: a text task's batch position has 4 entries");
    retain_order_.seek(p[0], p[1]);
    forget_order_.seek(p[2], p[3]);
  }
  Tensor logits(nn::Module& model, const Tensor& inputs) const override { return text_logits(model, inputs); }
  // Token ids are int32 (concat is for floating tensors): joined on the host, they are small.
  Tensor concat_inputs(const Tensor& retain, const Tensor& forget) const override {
    std::vector<int32_t> ids = retain.to(Device{}).to_vector<int32_t>();
    const std::vector<int32_t> f = forget.to(Device{}).to_vector<int32_t>();
    ids.insert(ids.end(), f.begin(), f.end());
    return Tensor::from_vector<int32_t>(ids, {retain.shape()[0] + forget.shape()[0], retain.shape()[1]}, retain.device());
  }

 private:
  const std::vector<QaTokens>& retain_;
  const std::vector<QaTokens>& forget_;
  int32_t pad_id_;
  Device device_;
  CyclicIndices retain_order_, forget_order_;
};

}  // namespace

std::unique_ptr<UnlearnTask> make_text_task(const std::vector<QaTokens>& retain, const std::vector<QaTokens>& forget,
                                            int32_t pad_id, const UnlearnOptions& opt) {
  return std::make_unique<TextTask>(retain, forget, pad_id, opt);
}

Tensor text_logits(nn::Module& model, const Tensor& ids) {
  auto* lm = dynamic_cast<models::CausalLM*>(&model);
  if (!lm) throw Error("text unlearning: the model is not a causal language model");
  return lm->logits(ids, {}, row_positions(ids));
}

}  // namespace hamu
