// cli/unlearn_output.h: what an unlearning run (images or text) leaves behind, shared by `hamu unlearn
// --out/--log/--json` and `hamu compare --save-dir`: the per-step CSV (marked when Ctrl-C stops the run), the
// unlearned checkpoint or model directory with its parent, unlearning settings and provenance, the JSON summary
// and the stop message.
#pragma once
#include <cstdint>
#include <fstream>
#include <functional>
#include <string>

#include "cli/args.h"
#include "cli/resume.h"
#include "cli/text_setup.h"
#include "cli/unlearn_setup.h"

namespace hamu::cli {

// The --log CSV's header and rows (defined in cli/cmd_unlearn.cpp next to its column table).
std::string unlearn_csv_header();
std::string unlearn_csv_step_row(const StepLog& s);
std::string unlearn_csv_eval_row(const EvalPoint& p);

// The --log CSV: header at open, one row per step and per evaluation through attach()'s hooks, flushed
// as written. run() turns a Ctrl-C into a final "# interrupted at step N" line and an Interrupted naming
// the file, so a partial log never looks complete. A default-constructed log (no path) writes nothing.
class UnlearnLog {
 public:
  UnlearnLog() = default;
  UnlearnLog(const std::string& path, const std::string& flag);
  // Continues the log of a resumed run: the file's first `bytes` bytes must be those a state recorded
  // (their FNV-1a hash `hash`); what follows them (rows of steps after the state) is cut off.
  UnlearnLog(const std::string& path, const std::string& flag, int64_t bytes, uint64_t hash);
  void attach(UnlearnHooks& hooks);
  bool open() const { return csv_.is_open(); }
  int64_t bytes() const { return bytes_; }  // written so far, and their hash (what a run state records)
  uint64_t hash() const { return hash_; }
  UnlearnResult run(const std::function<UnlearnResult()>& body);

 private:
  void write(const std::string& text);  // flushed and checked; Error naming the file on failure

  std::string path_, flag_;
  std::ofstream csv_;
  int64_t last_step_ = 0;
  int64_t bytes_ = 0;
  uint64_t hash_ = 0xcbf29ce484222325ULL;  // FNV-1a offset basis: the hash of nothing
};

// The --log of `hamu unlearn` (images and text): a new log, or with --resume the one the state recorded,
// cut back to the state's rows (InputError when it was changed since). No path: a log that writes nothing.
UnlearnLog open_unlearn_log(const std::string& path, const ResumableRun& run);
// Wires --checkpoint-every/--resume into the runner's hooks (saying on stderr where a resumed run continues);
// each state records the log's length and hash.
void attach_resumable(UnlearnHooks& hooks, const ResumableRun& run, const UnlearnLog& log);

// --save-dir is checked before any work with check_output_dir (nothing created) and created here, once every
// input is read and checked (Error naming the flag when that fails).
void create_save_dir(const std::string& flag, const std::string& dir);

// Writes the unlearned model `work` (loaded from `model_path`) to `out_path`: the original's training
// facts under "parent" with its hash, this run's unlearning settings, final metrics and provenance.
void save_unlearned_checkpoint(const std::string& out_path, models::LoadedModel& work, const std::string& model_path,
                               const UnlearnContext& ctx, const UnlearnOptions& opt, const UnlearnResult& res,
                               const EvalReport& after, uint64_t seed, const Args& args, Device device);

// The unlearning settings and outcome a saved unlearned model records under "unlearning" (images and text).
Json unlearning_json(const UnlearnOptions& opt, const UnlearnResult& res, uint64_t seed);
// The head of `hamu unlearn --json` (images and text): method, steps, stop reason, times, no_step_applied and the
// options; callers add the evaluations and the provenance.
Json unlearn_summary_json(const UnlearnOptions& opt, const UnlearnResult& res, uint64_t seed);
// Prints (stdout) why the run stopped before its last step, for each reason that needs words.
void print_stop_reason(const UnlearnResult& res, const UnlearnOptions& opt);
// `hamu unlearn` writes --out only when a step was applied (a run without one left the original as it was: no
// model may claim it is unlearned); otherwise it says so on stderr. True when `path` (given as `flag`) is written.
bool unlearned_output_wanted(const std::string& command, const std::string& flag, const std::string& path,
                             const UnlearnResult& res);

// The provenance of a text run: the common block, the data's identity, the model it started from ("parent":
// the adapter directory with LoRA, "base" its base then) and the reference.
Json text_provenance_json(const Args& args, Device device, const TextContext& ctx);
// Writes the unlearned language model of a text run: with LoRA the adapter directory (PEFT layout; with merge_dir
// also folded into the base), otherwise a Hugging Face directory. hamu.json keeps what rebuilds the run's data
// (data, split, duplicates, template) at the top, moves the original's training facts under "parent" (with its
// files' hashes), and adds "unlearning", the final metrics and the provenance.
void save_unlearned_text_model(const std::string& out_dir, const std::string& merge_dir, models::CausalLM& work,
                               const TextContext& ctx, const UnlearnOptions& opt, const UnlearnResult& res,
                               const EvalReport& after, uint64_t seed, const Args& args, Device device);

}  // namespace hamu::cli
