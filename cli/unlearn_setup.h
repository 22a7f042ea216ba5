// cli/unlearn_setup.h: what `hamu unlearn` and `hamu compare` share: flags for the unlearning
// options, loading the original model, data, split and reference, and the evaluation hooks.
#pragma once
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cli/args.h"
#include "cli/common.h"
#include "unlearn/runner.h"

namespace hamu::cli {

// Flags of the unlearning options (method excluded) with the README's defaults: the image ones, or with
// `text` a language model's (README "Text unlearning": its own sweep on the demo's gpt-small).
std::vector<Flag> unlearn_option_flags(bool text = false);
// The default of one of those flags, image or text: the one source for commands that show what hamu
// unlearn would see (hamu hardness's --ratio, --lr and --clip).
std::string unlearn_default(const std::string& flag, bool text);
// Reads them (InputError naming the flag on bad values).
UnlearnOptions read_unlearn_options(const Args& args, Device device);
// The registered methods with their help lines (the "methods:" section of --help).
std::vector<std::pair<std::string, std::string>> method_help();

struct UnlearnContext {
  models::LoadedModel original;        // as loaded (never modified)
  std::optional<models::LoadedModel> reference;
  std::optional<EvalReport> reference_report;
  DataAndSplit data;
  Normalizer norm;
  Device device;
  int64_t eval_batch = 1000;
  int64_t eval_samples = 0;            // intermediate evaluations use at most this many per split (0 = all)
  uint64_t seed = 0;
  EvalGraphs* eval_graphs = nullptr;   // --cuda-graph: the evaluations' full batches replayed (unlearn/graph_eval.h)
};

// Loads and checks everything before any output is written.
UnlearnContext load_unlearn_context(const std::string& model_path, const std::string& data_spec,
                                    const std::string& split_spec, const std::string& reference_path, Device device,
                                    uint64_t seed, int64_t eval_batch, int64_t eval_samples,
                                    bool force_reference = false);

// The --stop mia/loss-rise probe of `model` (unlearn/stopping.h): per-sample losses on at most `samples` forget
// samples and on as many test samples drawn in the forget samples' class mix. Empty when the test set has
// none of those classes. `model` and `ctx` must outlive it.
std::function<StopProbe()> make_stop_probe(nn::Module& model, const UnlearnContext& ctx, int64_t samples);

// A fresh copy of the original model to unlearn (reloaded from its checkpoint).
models::LoadedModel fresh_copy(const UnlearnContext& ctx);

// Full evaluation (with gaps when a reference is loaded).
EvalReport evaluate_full(nn::Module& model, const UnlearnContext& ctx, const std::string& name);
// Evaluation on a seeded subsample (at most ctx.eval_samples per split) for intermediate points.
EvalReport evaluate_sampled(nn::Module& model, const UnlearnContext& ctx, const std::string& name);

}  // namespace hamu::cli
