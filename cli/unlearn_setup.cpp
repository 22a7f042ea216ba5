// cli/unlearn_setup.cpp: shared setup of `hamu unlearn` and `hamu compare`.
#include "cli/unlearn_setup.h"

#include <algorithm>
#include <map>

#include "engine/rng.h"
#include "unlearn/parallel.h"

namespace hamu::cli {

std::vector<Flag> unlearn_option_flags(bool text) {
  std::vector<Flag> flags = {
      {"--lr", "X", "learning rate eta (HAMU radius R = eta*||a|| per block; baselines' SGD step)", "0.01"},
      {"--ratio", "X", "HAMU constraint B = ratio * lr: guaranteed first-order forget gain per step", "0.1"},
      {"--radius", "X", "HAMU: fixed radius R per block instead of lr*||a||", ""},
      {"--steps", "N", "unlearning steps (one retain batch + one forget batch each)", "100"},
      {"--force-reference", "", "use a --reference made for another data set, split or seed", ""},
      {"--batch", "N", "retain batch size", "128"},
      {"--forget-batch", "N", "forget batch size (the forget set cycles)", "128"},
      {"--scope", "S", "HAMU: layer (per parameter tensor) or global (exact global solution)", "layer"},
      {"--constraint-split", "S", "HAMU layer scope: grad-norm, uniform or softmax-dp", "grad-norm"},
      {"--stop", "RULE", "when to stop before --steps: none (fixed budget), criterion (HAMU's: no retain-neutral "
                         "forget progress of size B left), mia (forget looks like held-out test data of its classes), "
                         "loss-rise (forget loss reached held-out same-class loss), kappa (kappa > kappa2 in most blocks, "
                         "sustained), retain-rise (retain loss rose more than --stop-retain-tol above the original's), "
                         "auto (loss-rise or retain-rise; none on text)", "auto"},
      {"--stop-on-criterion", "", "the same as --stop criterion", ""},
      {"--stop-check-every", "K", "--stop: probe (mia, loss-rise, retain-rise, auto) or judge the kappa window every K steps", "10"},
      {"--stop-samples", "N", "--stop probes: forget and held-out test samples per probe (retain: 4N)", "500"},
      {"--stop-retain-tol", "X", "--stop retain-rise/auto: stop once the retain loss exceeds the original's by this fraction", "0.05"},
      {"--stop-band", "X", "--stop mia: stop at forget-vs-held-out loss AUC <= 0.5 + X", "0.05"},
      {"--continue-on-infeasible", "", "HAMU: on an infeasible step take the pure ascent step and go on", ""},
      {"--clip", "X", "clip each objective gradient to this total norm (0 = off)", "1"},
      {"--optimizer", "NAME", "sgd (theta moves by exactly the step) or adamw (step as pseudo-gradient)", "sgd"},
      {"--paper-compat", "", "gru/pcgrad: the published code's (inverted) conflict test", ""},
      {"--no-paired", "", "compute the two gradients with two passes even where one paired pass is valid", ""},
      {"--cuda-graph", "", "GPU, hamu-q/hamu-u on images: capture the whole step once per batch shape as a CUDA graph and "
                           "replay it (one launch and one wait per step; falls back to ordinary steps, saying why); "
                           "the evaluations' full batches are replayed too (any method)", ""},
      {"--pairing", "P", "under mpirun: data (each rank a share of both batches) or split (retain on even ranks, forget on odd)", "data"},
      {"--eval-every", "N", "evaluate every N steps (0: before and after only)", "0"},
      {"--eval-samples", "N", "intermediate evaluations use at most N images per split (0: all)", "2000"},
      {"--eval-batch", "N", "evaluation batch size", "1000"},
  };
  if (!text) return flags;
  // A language model's defaults (README "Text unlearning", from a sweep of HAMU-Q on the demo's memorised
  // gpt-small): pushing the forget answers' loss up to that of unseen questions takes a larger step than the
  // image defaults, and a retain batch of 64 keeps the retain answers where a batch of 32 lost 2-3 points.
  const std::pair<const char*, const char*> text_defaults[] = {
      {"--lr", "0.1"}, {"--ratio", "0.5"}, {"--steps", "240"},
      {"--batch", "64"}, {"--forget-batch", "16"}, {"--eval-batch", "128"}};
  for (Flag& f : flags)
    for (const auto& [name, value] : text_defaults)
      if (f.name == name) f.default_value = value;
  return flags;
}

std::string unlearn_default(const std::string& flag, bool text) {
  for (const Flag& f : unlearn_option_flags(text))
    if (f.name == flag) return f.default_value;
  throw Error("internal: " + flag + " is not an unlearning option");
}

std::vector<std::pair<std::string, std::string>> method_help() {
  std::vector<std::pair<std::string, std::string>> items;
  for (const Method* m : registered_methods()) items.push_back({m->name(), m->help()});
  return items;
}

UnlearnOptions read_unlearn_options(const Args& args, Device device) {
  UnlearnOptions o;
  o.params.lr = args.number("--lr");
  o.ratio = args.number("--ratio");
  if (args.has("--radius")) {
    o.fixed_radius = true;
    o.radius = args.number("--radius");
  }
  o.steps = args.integer("--steps");
  o.batch = args.integer("--batch");
  o.forget_batch = args.integer("--forget-batch");
  o.scope = parse_scope(args.str("--scope"));
  o.split = parse_constraint_split(args.str("--constraint-split"));
  o.stop.rule = parse_stop_rule(args.str("--stop"));
  if (args.on("--stop-on-criterion")) {
    if (args.has("--stop") && o.stop.rule != StopRule::criterion)
      throw InputError("--stop-on-criterion: conflicts with --stop " + args.str("--stop"));
    o.stop.rule = StopRule::criterion;
  }
  o.stop.check_every = args.integer("--stop-check-every");
  o.stop.samples = args.integer("--stop-samples");
  o.stop.mia_band = args.number("--stop-band");
  o.stop.retain_tol = args.number("--stop-retain-tol");
  if (!(o.stop.retain_tol >= 0 && o.stop.retain_tol < 100)) throw InputError("--stop-retain-tol: must be in [0, 100)");
  if (o.stop.check_every < 1) throw InputError("--stop-check-every: must be at least 1");
  if (o.stop.samples < 1) throw InputError("--stop-samples: must be at least 1");
  if (!(o.stop.mia_band >= 0 && o.stop.mia_band < 0.5)) throw InputError("--stop-band: must be in [0, 0.5)");
  o.stop_on_criterion = resolve_stop_rule(o.stop.rule, true) == StopRule::criterion;
  o.continue_on_infeasible = args.on("--continue-on-infeasible");
  o.params.clip = args.number("--clip");
  o.optimizer = parse_optimizer(args.str("--optimizer"));
  o.params.paper_compat = args.on("--paper-compat");
  o.paired = !args.on("--no-paired");
  o.graph = args.on("--cuda-graph");
  if (o.graph && !device.is_cuda())
    throw InputError("--cuda-graph: CUDA graphs need --device cuda (this run is on " + device.str() + ")");
  o.pairing = parse_pairing(args.str("--pairing"));
  o.eval_every = args.integer("--eval-every");
  o.seed = uint64_t(args.integer("--seed"));
  o.device = device;
  return o;
}

UnlearnContext load_unlearn_context(const std::string& model_path, const std::string& data_spec,
                                    const std::string& split_spec, const std::string& reference_path, Device device,
                                    uint64_t seed, int64_t eval_batch, int64_t eval_samples, bool force_reference) {
  if (eval_batch < 1) throw InputError("--eval-batch: must be at least 1");
  if (eval_samples < 0) throw InputError("--eval-samples: must be >= 0");
  UnlearnContext ctx{load_image_model("--model", model_path, device), {}, {}, {}, {}, device, eval_batch, eval_samples, seed, nullptr};
  const std::string data = data_spec.empty() ? ctx.original.meta_or("data", "fashion-mnist") : data_spec;
  const std::string split = split_spec.empty() ? ctx.original.meta_or("split", "") : split_spec;
  if (split.empty() || split == "none") throw InputError("--split: no forget set given and the checkpoint records none");
  ctx.data = load_data_split(data, split, seed);
  check_model_fits_data(ctx.original, ctx.data.data.train);
  ctx.norm = model_normalizer(ctx.original, ctx.data.data.train);
  if (!reference_path.empty()) {
    ctx.reference = load_image_model("--reference", reference_path, device);
    check_model_fits_data(*ctx.reference, ctx.data.data.train);
    if (ctx.reference->spec.arch != ctx.original.spec.arch)
      throw InputError("--reference: " + reference_path + " is a " + ctx.reference->spec.arch + ", the model is a " +
                       ctx.original.spec.arch);
    check_reference(*ctx.reference, ctx.data.data.spec, ctx.data.split.spec, force_reference);
    EvalOptions eo;
    eo.batch = eval_batch;
    eo.device = device;
    eo.keep_probs = true;
    eo.progress = "evaluate reference";
    ctx.reference_report = evaluate_model(*ctx.reference->model, ctx.data.data,
                                          {&ctx.data.split.forget, &ctx.data.split.retain, &ctx.data.test},
                                          model_normalizer(*ctx.reference, ctx.data.data.train), eo);
  }
  return ctx;
}

models::LoadedModel fresh_copy(const UnlearnContext& ctx) { return models::load_model(ctx.original.path, ctx.device); }

namespace {

EvalReport evaluate_on(nn::Module& model, const UnlearnContext& ctx, const std::string& name,
                       const std::vector<int64_t>& forget, const std::vector<int64_t>& retain,
                       const std::vector<int64_t>& test, bool with_reference) {
  EvalOptions eo;
  eo.batch = ctx.eval_batch;
  eo.device = ctx.device;
  eo.keep_probs = with_reference && ctx.reference_report.has_value();
  eo.graph = ctx.eval_graphs != nullptr;
  eo.graphs = ctx.eval_graphs;
  // Full evaluations get a progress line; sampled ones run inside the unlearning loop's own bar.
  if (with_reference) eo.progress = "evaluate " + name.substr(name.find_last_of('/') + 1);
  EvalReport r = evaluate_model(model, ctx.data.data, {&forget, &retain, &test}, ctx.norm, eo);
  r.model = name;
  r.data = ctx.data.data.spec;
  r.split = ctx.data.split.spec;
  if (eo.keep_probs) compare_to_reference(r, *ctx.reference_report);
  return r;
}

std::vector<int64_t> sample(const std::vector<int64_t>& v, int64_t n, uint64_t seed) {
  if (n <= 0 || int64_t(v.size()) <= n) return v;
  Rng rng(seed);
  std::vector<int64_t> c = v;
  rng.shuffle(c);
  c.resize(size_t(n));
  std::sort(c.begin(), c.end());
  return c;
}

}  // namespace

std::function<StopProbe()> make_stop_probe(nn::Module& model, const UnlearnContext& ctx, int64_t samples) {
  // A fixed forget subsample, and test samples drawn class by class in the forget subsample's class mix
  // (every run of the same split and seed probes the same samples).
  const std::vector<int64_t> forget = sample(ctx.data.split.forget, samples, 0x570F);
  const std::vector<int32_t>& train_labels = ctx.data.data.train.labels;
  const std::vector<int32_t>& test_labels = ctx.data.data.test.labels;
  std::map<int32_t, int64_t> want;
  for (int64_t i : forget) ++want[train_labels[size_t(i)]];
  std::map<int32_t, std::vector<int64_t>> by_class;
  for (int64_t i : ctx.data.test)
    if (want.count(test_labels[size_t(i)])) by_class[test_labels[size_t(i)]].push_back(i);
  std::vector<int64_t> heldout;
  for (const auto& [label, n] : want) {
    const std::vector<int64_t> picked = sample(by_class[label], n, 0x570F + uint64_t(label) + 1);
    heldout.insert(heldout.end(), picked.begin(), picked.end());
  }
  std::sort(heldout.begin(), heldout.end());
  if (heldout.empty()) return {};  // no held-out sample of those classes: the probe rules refuse to run
  const std::vector<int64_t> retain = sample(ctx.data.split.retain, 4 * samples, 0x570F + 0x1000);
  return [&model, &ctx, forget, heldout, retain]() {
    EvalOptions eo;
    eo.batch = ctx.eval_batch;
    eo.device = ctx.device;
    eo.graph = ctx.eval_graphs != nullptr;
    eo.graphs = ctx.eval_graphs;
    StopProbe p;
    p.forget = evaluate_indices(model, ctx.data.data.train, forget, ctx.norm, eo).losses;
    p.heldout = evaluate_indices(model, ctx.data.data.test, heldout, ctx.norm, eo).losses;
    p.retain = evaluate_indices(model, ctx.data.data.train, retain, ctx.norm, eo).losses;
    return p;
  };
}

EvalReport evaluate_full(nn::Module& model, const UnlearnContext& ctx, const std::string& name) {
  return evaluate_on(model, ctx, name, ctx.data.split.forget, ctx.data.split.retain, ctx.data.test, true);
}

EvalReport evaluate_sampled(nn::Module& model, const UnlearnContext& ctx, const std::string& name) {
  if (ctx.eval_samples == 0) return evaluate_on(model, ctx, name, ctx.data.split.forget, ctx.data.split.retain, ctx.data.test, false);
  static const uint64_t kSeed = 0x5EED;
  return evaluate_on(model, ctx, name, sample(ctx.data.split.forget, ctx.eval_samples, kSeed),
                     sample(ctx.data.split.retain, ctx.eval_samples, kSeed + 1), sample(ctx.data.test, ctx.eval_samples, kSeed + 2),
                     false);
}

}  // namespace hamu::cli
