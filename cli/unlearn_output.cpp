// cli/unlearn_output.cpp: the --log CSV and the unlearned checkpoint (see unlearn_output.h).
#include "cli/unlearn_output.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "cli/provenance.h"
#include "engine/interrupt.h"
#include "models/checkpoint.h"

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

void check_save_dir(const std::string& flag, const std::string& dir) {
  if (dir.empty()) throw InputError(flag + ": empty path");
  struct stat st {};
  if (stat(dir.c_str(), &st) != 0 && mkdir(dir.c_str(), 0777) != 0)
    throw InputError(flag + ": cannot create folder '" + dir + "': " + std::strerror(errno));
  check_folder_writable(flag, dir);
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
  facts["unlearning"] = Json::object({{"method", Json(method_name(*opt.method))},
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
                                      {"seed", Json(int64_t(seed))}}).dump();
  facts["metrics"] = eval_to_json(after)["splits"].dump();
  Json prov = provenance_json(args, device);
  prov.set("data", data_identity_json(ctx.data.data));
  prov.set("parent", parent_json(model_path));
  facts["provenance"] = prov.dump();
  models::save_model(out_path, *work.model, work.spec, facts);
}

}  // namespace hamu::cli
