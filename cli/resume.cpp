// cli/resume.cpp: --checkpoint-every, --state and --resume for hamu train and hamu unlearn.
#include "cli/resume.h"

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <set>
#include <unistd.h>

#include "cli/common.h"

namespace hamu::cli {
namespace {

// Flags that say where results go or how they are shown, not what is computed: a resumed run may change them.
const std::set<std::string>& free_flags() {
  static const std::set<std::string> names = {"--checkpoint-every", "--state", "--resume", "--out", "--json", "--log",
                                              "--svg", "--quiet", "--config", "--show", "--help"};
  return names;
}

// "0.01" and "1e-2" are the same learning rate: flag values that both read as numbers compare as numbers.
bool same_value(const Json& a, const Json& b) {
  if (a == b) return true;
  if (!a.is_string() || !b.is_string()) return false;
  auto number = [](const std::string& s, double& x) {
    char* end = nullptr;
    errno = 0;
    x = std::strtod(s.c_str(), &end);
    return !s.empty() && end == s.c_str() + s.size() && errno == 0;
  };
  double x = 0, y = 0;
  return number(a.as_string(), x) && number(b.as_string(), y) && x == y;
}

std::string shown(const Json& v) {
  if (v.is_null()) return "(unset)";
  if (v.is_string()) return "'" + v.as_string() + "'";
  return v.dump();
}

Json fingerprint_of(const Args& args, const Json& identity) {
  Json options = Json::object();
  const Json config = args.resolved_config();
  const JsonObject& o = config.as_object();
  for (size_t i = 0; i < o.keys.size(); ++i)
    if (!free_flags().count(o.keys[i])) options.set(o.keys[i], o.values[i]);
  return Json::object({{"options", options}, {"identity", identity}});
}

// InputError naming the first entry of `what` ("option" or "content") that differs.
void compare_section(const std::string& path, const Json& saved, const Json& now, const std::string& what) {
  if (!saved.is_object()) throw InputError(path + ": the state's configuration fingerprint is malformed");
  std::set<std::string> keys;
  for (const std::string& k : saved.as_object().keys) keys.insert(k);
  for (const std::string& k : now.as_object().keys) keys.insert(k);
  for (const std::string& k : keys) {
    const Json* a = saved.find(k);
    const Json* b = now.find(k);
    const Json null;
    if (!same_value(a ? *a : null, b ? *b : null))
      throw InputError("--resume: " + path + " was written by a run with " + what + " " + k + " " + shown(a ? *a : null) +
                       ", this run has " + shown(b ? *b : null) +
                       " (a run resumes only with the options and inputs it started with)");
  }
}

}  // namespace

std::vector<Flag> resume_flags(const std::string& unit) {
  return {{"--checkpoint-every", "N",
           "write the run's state (model, optimizer, data position, RNG, log so far) every N " + unit +
               " to --state, so that --resume can continue a killed run to the same result",
           "0"},
          {"--state", "FILE", "the state file of --checkpoint-every and --resume (default: <--out>.state)", ""},
          {"--resume", "", "continue from --state (same options and inputs required; removed when the run completes)", ""}};
}

ResumableRun::ResumableRun(const Args& args, const std::string& kind, const std::string& out,
                           const std::function<Json()>& identity)
    : kind_(kind) {
  every_ = args.integer("--checkpoint-every");
  if (every_ < 0) throw InputError("--checkpoint-every: must be >= 0, got " + std::to_string(every_));
  const bool resume = args.on("--resume");
  path_ = args.str_or("--state", "");
  if (path_.empty() && (every_ > 0 || resume)) {
    if (out.empty()) throw InputError("--checkpoint-every/--resume: give --state FILE (there is no --out to put it next to)");
    path_ = out + ".state";
  }
  if (!path_.empty() && !(every_ > 0 || resume))
    throw InputError("--state: only used with --checkpoint-every N or --resume");
  if (!path_.empty() && path_ == out) throw InputError("--state: must not be the --out file " + out);
  if (every_ > 0) check_output_path("--state", path_);
  if (path_.empty()) return;
  fingerprint_ = fingerprint_of(args, identity());
  if (!resume) return;
  state_ = load_run_state(path_, kind_);
  const Json& saved = state_->meta_at("fingerprint");
  if (!saved.is_object() || !saved.find("options") || !saved.find("identity"))
    throw InputError(path_ + ": the state's configuration fingerprint is malformed");
  compare_section(path_, saved["options"], fingerprint_["options"], "option");
  compare_section(path_, saved["identity"], fingerprint_["identity"], "input");
}

void ResumableRun::write(RunState& state, int64_t step, const Json& records) const {
  state.kind = kind_;
  state.meta.set("fingerprint", fingerprint_);
  state.meta.set("records", records);
  save_run_state(path_, state);
  if (const char* k = std::getenv("HAMU_TEST_KILL_AT_STEP"); k && *k && std::strtoll(k, nullptr, 10) == step) {
    std::fprintf(stderr, "\nhamu: HAMU_TEST_KILL_AT_STEP=%lld: killing this process after the state write\n",
                 (long long)step);
    std::fflush(stderr);
    ::kill(::getpid(), SIGKILL);
  }
}

Json ResumableRun::records() const {
  if (!state_) return Json();
  const Json* r = state_->meta.find("records");
  return r ? *r : Json();
}

void ResumableRun::resume_training_records(Json& epochs, double& seconds) const {
  if (!state_) return;
  const Json rec = records();
  if (!rec.is_object() || !rec.find("epochs") || !rec["epochs"].is_array() || !rec.find("train_seconds") ||
      !rec["train_seconds"].is_number())
    throw InputError(path_ + ": the state's training records are malformed");
  epochs = rec["epochs"];
  seconds = rec["train_seconds"].as_number();
  std::fprintf(stderr, "hamu train: resuming from %s (epoch %lld, step %lld)\n", path_.c_str(),
               (long long)state_->counter("loop.epoch"), (long long)state_->counter("loop.step"));
}

void ResumableRun::finish() const {
  if (path_.empty()) return;
  std::error_code ec;
  std::filesystem::remove(path_, ec);  // a state that cannot be removed resumes to the same result: harmless
}

}  // namespace hamu::cli
