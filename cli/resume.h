// cli/resume.h: resumable runs at the command line (`hamu train` and `hamu unlearn`): the flags
// --checkpoint-every N, --state FILE and --resume, the configuration fingerprint a state must match to be
// resumed, writing the state (with the test hook HAMU_TEST_KILL_AT_STEP) and removing it when the run ends.
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "cli/args.h"
#include "engine/json.h"
#include "engine/run_state.h"

namespace hamu::cli {

// --checkpoint-every N (`unit`: what N counts, e.g. "training steps"), --state FILE, --resume.
std::vector<Flag> resume_flags(const std::string& unit);

class ResumableRun {
 public:
  ResumableRun() = default;
  // Reads the flags (after apply_common, so the thread count is resolved). The state file defaults to
  // "<out>.state" (out: the run's --out; empty when the command has none, then --state is required).
  // `identity`: contents the options only name ({"data": hash, "--model": hash, ...}); they join the
  // fingerprint (computed only when a state is written or resumed). With --resume the state is loaded and its fingerprint checked here: InputError (exit 2)
  // naming the first option that differs, the missing or corrupt file.
  ResumableRun(const Args& args, const std::string& kind, const std::string& out, const std::function<Json()>& identity);

  bool writing() const { return every_ > 0; }
  int64_t every() const { return every_; }
  const std::string& path() const { return path_; }
  // The loaded state with --resume, else null.
  const RunState* resumed() const { return state_ ? &*state_ : nullptr; }

  // Adds the fingerprint and the caller's `records` (JSON, e.g. the per-epoch evaluations) and writes the
  // state atomically. `step`: the step it follows; HAMU_TEST_KILL_AT_STEP=k (tests) then SIGKILLs the
  // process after the state of step k is on disk.
  void write(RunState& state, int64_t step, const Json& records) const;
  // The caller's records of the resumed state (null without --resume).
  Json records() const;
  // Training runs (image and text) carry their per-epoch JSON records and the training time: with --resume they
  // are read back into `epochs` and `seconds` (InputError when malformed; a notice on stderr); otherwise
  // nothing changes.
  void resume_training_records(Json& epochs, double& seconds) const;
  void write_training_state(RunState& state, const Json& epochs, double seconds) const {
    write(state, state.counter("loop.global_step"), Json::object({{"epochs", epochs}, {"train_seconds", Json(seconds)}}));
  }
  // After a completed run whose outputs are written: the state file is removed (it would resume nothing).
  void finish() const;

 private:
  std::string kind_, path_;
  int64_t every_ = 0;
  Json fingerprint_;
  std::optional<RunState> state_;
};

}  // namespace hamu::cli
