// cli/hardness_report.h: what `hamu hardness` prints and writes for images and text alike (the summary,
// the blocks, the histogram of kappa_j, the verdict and the --json document); the sample tables differ
// (image indices and classes, or questions and answers) and stay with their commands.
#pragma once
#include <functional>
#include <string>

#include "cli/args.h"
#include "engine/json.h"
#include "unlearn/hardness.h"

namespace hamu::cli {

// The flags both forms of `hamu hardness` take after --model/--data/--split: sample counts, budget, solver
// view, path, --top, --json, --svg. `what` names a sample ("images", "pairs"); the defaults differ.
struct HardnessFlagDefaults {
  const char* what = "images";
  const char* memory_mb = "512";
  const char* batch = "128";
  const char* top = "10";
  bool text = false;  // --ratio, --lr and --clip default to hamu unlearn's for a language model
};
std::vector<Flag> hardness_option_flags(const HardnessFlagDefaults& d);
// Those flags read and checked (--seed too); InputError naming the flag. top: --top.
HardnessOptions hardness_options(const Args& args, int64_t* top);
// --json and --svg checked as outputs (neither may be `input`, nor the same file).
void check_hardness_outputs(const Args& args, const std::string& input);

// The lines before the sample table: kappa and the solver's view, the share of hard samples, the share
// whose most similar retain sample shares their label (`same_label` says what that means: "of the same
// class", "with the same answer (a paraphrase or duplicate)"), and the blocks where forgetting conflicts most.
void print_hardness_overview(const HardnessReport& r, const std::string& split, const std::string& model,
                             const HardnessOptions& opt, const std::string& same_label);
// The lines after it: the histogram of kappa_j, the notices and the verdict.
void print_hardness_closing(const HardnessReport& r);
// Positions in r.samples from the hardest (largest kappa_j) down.
std::vector<size_t> hardest_first(const HardnessReport& r);

// The --json document. sample_extra adds fields to each sample's object (class names, texts); class_names
// is written when not null.
Json hardness_report_json(const HardnessReport& r, const std::string& split, const std::string& model,
                          const HardnessOptions& opt, const std::function<void(const SampleHardness&, Json&)>& sample_extra,
                          const Json& class_names);

}  // namespace hamu::cli
