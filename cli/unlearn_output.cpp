// cli/unlearn_output.cpp: the --log CSV and the unlearned checkpoint (see unlearn_output.h).
#include "cli/unlearn_output.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <vector>

#include "cli/provenance.h"
#include "engine/interrupt.h"
#include "models/checkpoint.h"
#include "models/lm/lora.h"

namespace hamu::cli {

UnlearnLog::UnlearnLog(const std::string& path, const std::string& flag) : path_(path), flag_(flag) {
  csv_.open(path, std::ios::trunc);
  if (!csv_) throw InputError(flag + ": cannot write " + path);
  write(unlearn_csv_header());
}

UnlearnLog::UnlearnLog(const std::string& path, const std::string& flag, int64_t bytes, uint64_t hash)
    : path_(path), flag_(flag) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode) || int64_t(st.st_size) < bytes)
    throw InputError(flag + ": cannot continue " + path + ": the resumed state recorded " + std::to_string(bytes) +
                     " bytes of it, the file " + (stat(path.c_str(), &st) != 0 ? "is missing" : "is shorter or not a regular file"));
  {
    std::ifstream in(path, std::ios::binary);
    std::vector<char> buf(1 << 16);
    for (int64_t left = bytes; left > 0;) {
      const int64_t n = std::min<int64_t>(left, int64_t(buf.size()));
      if (!in.read(buf.data(), n)) throw InputError(flag + ": cannot read " + path);
      hash_ = fnv1a64(buf.data(), size_t(n), hash_);
      left -= n;
    }
  }
  if (hash_ != hash)
    throw InputError(flag + ": cannot continue " + path + ": its first " + std::to_string(bytes) +
                     " bytes are not the log the resumed state recorded (the file was changed or belongs to another run)");
  if (::truncate(path.c_str(), off_t(bytes)) != 0)
    throw InputError(flag + ": cannot cut " + path + " back to the resumed state: " + std::strerror(errno));
  bytes_ = bytes;
  csv_.open(path, std::ios::app);
  if (!csv_) throw InputError(flag + ": cannot write " + path);
}

// Every row is flushed and checked: a failed write (a full disk) stops the run with an error naming the
// file, and the partial log is removed (a regular file only: never /dev/...), so no truncated log is left
// looking complete.
void UnlearnLog::write(const std::string& text) {
  if (!csv_.is_open()) return;
  errno = 0;
  csv_ << text << std::flush;
  bytes_ += int64_t(text.size());
  hash_ = fnv1a64(text.data(), text.size(), hash_);
  if (csv_) return;
  const int err = errno;
  csv_.close();
  struct stat st {};
  const bool removed = stat(path_.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::unlink(path_.c_str()) == 0;
  throw Error(flag_ + ": writing " + path_ + " failed" + (err ? std::string(" (") + std::strerror(err) + ")" : "") +
              (removed ? "; the partial log was removed" : ""));
}

void UnlearnLog::attach(UnlearnHooks& hooks) {
  hooks.on_step = [this](const StepLog& s) {
    write(unlearn_csv_step_row(s));
    last_step_ = s.step;
  };
  hooks.on_eval = [this](const EvalPoint& p) { write(unlearn_csv_eval_row(p)); };
}

UnlearnResult UnlearnLog::run(const std::function<UnlearnResult()>& body) {
  try {
    return body();
  } catch (const Interrupted&) {
    if (!csv_.is_open()) throw;
    csv_ << "# interrupted at step " << last_step_ << "\n" << std::flush;
    throw Interrupted(path_ + " kept up to step " + std::to_string(last_step_) + " and marked '# interrupted', no model written");
  }
}

UnlearnLog open_unlearn_log(const std::string& path, const ResumableRun& run) {
  if (path.empty()) return UnlearnLog();
  const RunState* st = run.resumed();
  if (!st) return UnlearnLog(path, "--log");
  const Json rec = run.records();
  const Json* bytes = rec.is_object() ? rec.find("log_bytes") : nullptr;
  const Json* hash = rec.is_object() ? rec.find("log_hash") : nullptr;
  if (!bytes || !hash || !bytes->is_integer() || !hash->is_string())
    throw InputError(st->path() + ": the state's log records are malformed");
  if (bytes->as_int() < 0) throw InputError("--log: the resumed run wrote no --log, so there is no log to continue (drop --log)");
  char* end = nullptr;
  const uint64_t h = std::strtoull(hash->as_string().c_str(), &end, 16);
  if (hash->as_string().size() != 16 || *end) throw InputError(st->path() + ": the state's log hash is malformed");
  return UnlearnLog(path, "--log", bytes->as_int(), h);
}

void attach_resumable(UnlearnHooks& hooks, const ResumableRun& run, const UnlearnLog& log) {
  hooks.resume = run.resumed();
  hooks.checkpoint_every = run.every();
  if (const RunState* st = run.resumed())
    std::fprintf(stderr, "hamu unlearn: resuming from %s (after step %lld)\n", st->path().c_str(),
                 (long long)st->counter("loop.step"));
  hooks.write_state = [&run, &log](RunState& st) {
    char hash[24];
    std::snprintf(hash, sizeof hash, "%016llx", (unsigned long long)log.hash());
    run.write(st, st.counter("loop.step"),
              Json::object({{"log_bytes", Json(log.open() ? log.bytes() : int64_t(-1))}, {"log_hash", Json(hash)}}));
  };
}

void create_save_dir(const std::string& flag, const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (!std::filesystem::is_directory(dir))
    throw Error(flag + ": cannot create folder '" + dir + "'" + (ec ? ": " + ec.message() : std::string()));
}

Json unlearning_json(const UnlearnOptions& opt, const UnlearnResult& res, uint64_t seed) {
  return Json::object({{"method", Json(method_name(*opt.method))},
                       {"lr", Json(opt.params.lr)},
                       {"ratio", Json(opt.ratio)},
                       {"batch", Json(opt.batch)},
                       {"forget_batch", Json(opt.forget_batch)},
                       {"clip", Json(opt.params.clip)},
                       {"scope", Json(scope_name(opt.scope))},
                       {"optimizer", Json(optimizer_name(opt.optimizer))},
                       {"max_steps", Json(opt.steps)},
                       {"steps", Json(res.steps_done)},
                       {"stop_reason", Json(stop_reason_name(res.stop_reason))},
                       {"seed", Json(int64_t(seed))}});
}

Json unlearn_summary_json(const UnlearnOptions& opt, const UnlearnResult& res, uint64_t seed) {
  Json j = Json::object({{"method", Json(method_name(*opt.method))},
                         {"steps", Json(res.steps_done)},
                         {"stop_reason", Json(stop_reason_name(res.stop_reason))},
                         {"seconds", Json(res.seconds)},
                         {"eval_seconds", Json(res.eval_seconds)},
                         {"skipped_steps", Json(res.skipped)},
                         {"no_step_applied", Json(res.steps_done == 0)},
                         {"collateral_warning", Json(res.collateral_warned)},
                         {"paired_gradients", Json(res.paired_fallback.empty())}});
  if (opt.graph)
    j.set("cuda_graph", Json::object({{"replays", Json(res.graph_replays)},
                                      {"captures", Json(res.graph_captures)},
                                      {"not_used", Json(res.graph_fallback)}}));
  j.set("options", Json::object({{"lr", Json(opt.params.lr)},
                                 {"ratio", Json(opt.ratio)},
                                 {"batch", Json(opt.batch)},
                                 {"forget_batch", Json(opt.forget_batch)},
                                 {"max_steps", Json(opt.steps)},
                                 {"clip", Json(opt.params.clip)},
                                 {"optimizer", Json(optimizer_name(opt.optimizer))},
                                 {"seed", Json(int64_t(seed))},
                                 {"stop", Json(stop_rule_name(opt.stop.rule))},
                                 {"stop_resolved", Json(resolve_stop_rule(opt.stop.rule, true) == StopRule::automatic
                                                            ? "loss-rise+retain-rise"
                                                            : stop_rule_name(resolve_stop_rule(opt.stop.rule, true)))},
                                 {"stop_check_every", Json(opt.stop.check_every)},
                                 {"stop_retain_tol", Json(opt.stop.retain_tol)}}));
  return j;
}

void print_stop_reason(const UnlearnResult& res, const UnlearnOptions& opt) {
  if (res.stop_reason == StopReason::infeasible)
    std::printf("stopped: the forget gain B = %g per step is no longer reachable within the step radius "
                "(retain and forget gradients too aligned or too small); lower --ratio or raise --lr\n",
                opt.ratio * opt.params.lr);
  else if (res.stop_reason == StopReason::criterion)
    std::printf("stopped: no retain-neutral forget progress of size B is left (stopping criterion)\n");
  else if (res.stop_reason == StopReason::mia)
    std::printf("stopped (--stop mia): the forget set's losses no longer tell it apart from held-out test samples of "
                "its classes\n");
  else if (res.stop_reason == StopReason::loss_rise)
    std::printf("stopped (--stop %s): the forget loss reached the held-out same-class loss\n", stop_rule_name(opt.stop.rule));
  else if (res.stop_reason == StopReason::retain_rise)
    std::printf("stopped (--stop %s): the retain loss rose more than %g%% above the original model's: further "
                "forgetting costs the retained data\n", stop_rule_name(opt.stop.rule), 100 * opt.stop.retain_tol);
  else if (res.stop_reason == StopReason::kappa)
    std::printf("stopped (--stop kappa): kappa > kappa2 in most blocks throughout the last %lld steps: further "
                "forgetting costs retain utility\n", (long long)opt.stop.check_every);
  else if (res.stop_reason == StopReason::nan)
    std::printf("stopped: %lld consecutive steps had non-finite losses or gradients\n", (long long)opt.max_nan_steps);
}

bool unlearned_output_wanted(const std::string& command, const std::string& flag, const std::string& path,
                             const UnlearnResult& res) {
  if (path.empty()) return false;
  if (res.steps_done > 0) return true;
  std::fprintf(stderr, "%s: no step was applied (stop reason %s): not writing %s %s\n", command.c_str(),
               stop_reason_name(res.stop_reason), flag.c_str(), path.c_str());
  return false;
}

Json text_provenance_json(const Args& args, Device device, const TextContext& ctx) {
  Json prov = provenance_json(args, device);
  const TextSplit& s = ctx.run.split;
  prov.set("data", text_data_identity_json(ctx.run.spec.canonical, {&s.forget, &s.retain, &s.test}));
  set_lm_parents(prov, ctx.original.source);
  if (ctx.reference) prov.set("reference", parent_json(ctx.reference->dir));
  return prov;
}

void save_unlearned_text_model(const std::string& out_dir, const std::string& merge_dir, models::CausalLM& work,
                               const TextContext& ctx, const UnlearnOptions& opt, const UnlearnResult& res,
                               const EvalReport& after, uint64_t seed, const Args& args, Device device) {
  const LmSource& source = ctx.original.source;
  // As for checkpoints: the original's training facts move under "parent", so they never read as this model's.
  Json training = Json::object();
  if (ctx.original.meta.is_object())
    for (const auto& [key, value] : ctx.original.meta.members()) training.set(key, value);
  Json parent = parent_json(source.adapter.empty() ? source.base : source.adapter);
  parent.set("training", training);
  Json meta = Json::object({{"kind", Json("unlearned")},
                            {"data", Json(ctx.run.spec.canonical)},
                            {"split", Json(ctx.run.split.spec)},
                            {"duplicates", Json(parse_duplicates(args.str_or("--duplicates", hamu_json_str(ctx.original.meta, "duplicates", "none"))).canonical)},
                            {"template", Json(template_name(ctx.run.tmpl))},
                            {"original", Json(source.describe())}});
  meta.set("parent", parent);
  meta.set("unlearning", unlearning_json(opt, res, seed));
  meta.set("metrics", eval_to_json(after)["splits"]);
  meta.set("provenance", text_provenance_json(args, device, ctx));
  if (source.has_lora()) {
    meta.set("base_model", Json(source.base));
    meta.set("lora", Json(models::lora_summary(work)));
    save_text_adapter(out_dir, work, source.base, meta, merge_dir, tokenizer_json_of(source.base));
  } else {
    save_text_model(out_dir, work, tokenizer_json_of(source.base), meta, source.base);
  }
}

void save_unlearned_checkpoint(const std::string& out_path, models::LoadedModel& work, const std::string& model_path,
                               const UnlearnContext& ctx, const UnlearnOptions& opt, const UnlearnResult& res,
                               const EvalReport& after, uint64_t seed, const Args& args, Device device) {
  // The original's training facts move under "parent" (with its path and hash), so they never read
  // as this model's own; what stays is what rebuilds the model (architecture, sizes, normaliser, data).
  std::map<std::string, std::string> facts = work.metadata;
  Json training = Json::object();
  for (const char* k : {"kind", "subset", "split", "seed", "epochs", "optimizer", "schedule", "lr", "batch",
                        "train_seconds", "metrics", "provenance", "unlearning", "parent"})
    if (auto it = facts.find(k); it != facts.end()) {
      training.set(k, Json(it->second));
      facts.erase(it);
    }
  Json parent = parent_json(model_path);
  parent.set("training", training);
  facts["parent"] = parent.dump();
  facts["kind"] = "unlearned";
  facts["split"] = ctx.data.split.spec;
  facts["unlearning"] = unlearning_json(opt, res, seed).dump();
  facts["metrics"] = eval_to_json(after)["splits"].dump();
  Json prov = provenance_json(args, device);
  prov.set("data", data_identity_json(ctx.data.data));
  prov.set("parent", parent_json(model_path));
  facts["provenance"] = prov.dump();
  models::save_model(out_path, *work.model, work.spec, facts);
}

}  // namespace hamu::cli
