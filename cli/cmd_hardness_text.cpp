// cli/cmd_hardness_text.cpp: `hamu hardness` on QA pairs with a causal language model (issue #11 item 6):
// per-pair gradient similarity over token sequences (unlearn/hardness_text.h), the same report as for
// images, and the hardest forget pairs shown as text beside their most similar retain pair.
#include <cstdio>
#include <map>

#include "cli/commands.h"
#include "cli/common.h"
#include "cli/hardness_report.h"
#include "cli/plots.h"
#include "cli/provenance.h"
#include "cli/text_setup.h"
#include "models/lm/generate.h"
#include "unlearn/hardness_text.h"

namespace hamu::cli {
namespace {

const char* kAboutText =
    "\nText (--model is a Hugging Face directory, or --data names QA data): a sample is one QA pair and its loss\n"
    "the completion-only mean answer-token loss (the loss text unlearning descends, per pair). Layers are\n"
    "captured with T = the tokens of the pair (padded to the longest pair; padding carries no gradient), so\n"
    "Linear and Embedding blocks take the ghost or materialised path; a model with LoRA adapters is scored\n"
    "over the adapters' blocks only. The most similar retain pair with the same answer is a paraphrase or\n"
    "duplicate of the forget pair (--duplicates semantic|exact adds them to the retain set): the share of\n"
    "forget pairs whose nearest retain pair is one measures how much the two sets overlap.\n"
    "kappa, kappa_j, kappa1, kappa2 and the verdict mean what `hamu hardness --help` says for images; --ratio\n"
    "and --lr default to text unlearning's (hamu unlearn on a language model), so kappa1, kappa2, the margins\n"
    "and the collateral count are what that run would see.\n";

std::string one_line(std::string s, size_t width) {
  for (char& c : s)
    if (c == '\n' || c == '\r' || c == '\t') c = ' ';
  if (s.size() > width) s = s.substr(0, width - 3) + "...";
  return s;
}

// Index space of the source: forget pairs 0..nf-1, then the retain pairs (duplicates last, as the split
// appends them).
struct TextSides {
  const TextRun& run;
  int64_t nf() const { return int64_t(run.split.forget.size()); }
  const QaPair& pair(int64_t i) const {
    return i < nf() ? run.split.forget[size_t(i)] : run.split.retain[size_t(i - nf())];
  }
  bool is_duplicate(int64_t i) const {
    return i >= nf() + int64_t(run.split.retain.size() - run.split.duplicate.size());
  }
};

void print_pairs(const HardnessReport& r, const TextSides& sides, int64_t top) {
  const std::vector<size_t> hard = hardest_first(r);
  std::printf("\nhardest forget pairs (largest kappa_j = <grad l(f_j), g_r>) with their most similar retain pair:\n");
  for (size_t k = 0; k < hard.size() && int64_t(k) < top; ++k) {
    const SampleHardness& x = r.samples[hard[k]];
    const QaPair& f = sides.pair(x.index);
    std::printf("  %2zu. kappa_j %10.3e  cosine %7.4f  loss %.4f\n", k + 1, x.kappa, x.cosine, x.loss);
    std::printf("      forget   Q: %s\n               A: %s\n", one_line(f.question, 100).c_str(),
                one_line(f.answer, 100).c_str());
    if (x.similar_index < 0) {
      std::printf("      nearest  none (a zero gradient: no answer token left, or a perfect fit)\n");
      continue;
    }
    const QaPair& s = sides.pair(x.similar_index);
    const char* what = x.similar_label != x.label ? ""
                       : sides.is_duplicate(x.similar_index) ? "  [an added duplicate: same answer]"
                                                             : "  [same answer]";
    std::printf("      nearest  Q: %s%s\n               A: %s\n               K %.3e, cosine %.4f\n",
                one_line(s.question, 100).c_str(), what, one_line(s.answer, 100).c_str(), x.similar_k,
                x.similar_cosine);
  }
}

}  // namespace

int cmd_hardness_text(int argc, char** argv) {
  std::vector<Flag> flags = {
      {"--model", "DIR", "the original language model: a Hugging Face directory or a LoRA adapter directory", ""},
      {"--lora", "DIR", "a PEFT adapter directory on top of --model: hardness over the adapter's blocks only", ""},
      base_dtype_help(),
      {"--data", "SPEC", "QA data: qa:FILE.jsonl or wordnet-qa[:N] (default: the model's hamu.json)", ""},
      {"--split", "SPEC", "the forget set: fraction=X, group=NAME or forget=FILE [,holdout=X] (default: the model's)", ""},
      {"--duplicates", "MODE", "none, exact, semantic or dup:FILE.jsonl added to retain (default: the model's)", ""},
      {"--template", "T", "prompt template plain, llama2-chat or chatml (default: the model's hamu.json, else plain)", ""},
      {"--test", "FILE", "a QA file as the test set (not scored; only so the split matches training)", ""},
      {"--max-length", "N", "truncate longer sequences to N tokens (0: the model's context)", "0"},
  };
  for (Flag f : hardness_option_flags({"pairs", "1024", "32", "5", /*text=*/true})) flags.push_back(f);
  for (Flag f : common_flags()) flags.push_back(f);
  Args args("hardness",
            "--model DIR [--data SPEC] [--split SPEC] [--duplicates MODE] [--memory-mb N] [--ratio X] [--lr X] [--top K] "
            "[--json FILE] [--svg FILE]",
            flags);
  if (args.parse(argc, argv) == false) {
    std::fputs(kAboutText, stdout);
    return 0;
  }
  const std::string model_dir = args.required("--model");
  const std::string json_path = args.str_or("--json", ""), svg_path = args.str_or("--svg", "");
  check_hardness_outputs(args, model_dir);
  if (args.has("--lora")) check_hardness_outputs(args, args.str("--lora"));
  const Device device = apply_common(args);
  int64_t top = 0;
  HardnessOptions opt = hardness_options(args, &top);

  TextModel m = load_text_model(model_dir, device, args.str_or("--lora", ""), opt.seed,
                                base_dtype_flag(args.str("--base-dtype")));
  const TextRun run = text_run_for_model(m, args, opt.seed);
  const int64_t nf = int64_t(run.forget.size()), nr = int64_t(run.retain.size());
  if (opt.forget_samples > nf)
    throw InputError("--forget-samples " + std::to_string(opt.forget_samples) + ": the forget set " + run.split.spec +
                     " has only " + std::to_string(nf) + " pairs");
  if (opt.retain_samples > nr)
    throw InputError("--retain-samples " + std::to_string(opt.retain_samples) + ": the retain set has only " +
                     std::to_string(nr) + " pairs");
  // One index space: forget pairs, then retain pairs; pairs with the same answer share a label.
  std::vector<QaTokens> seqs = run.forget;
  seqs.insert(seqs.end(), run.retain.begin(), run.retain.end());
  std::map<std::string, int32_t> answer_id;
  std::vector<int32_t> labels;
  const TextSides sides{run};
  for (int64_t i = 0; i < nf + nr; ++i)
    labels.push_back(answer_id.emplace(sides.pair(i).answer, int32_t(answer_id.size())).first->second);
  const TextHardnessSource source(std::move(seqs), std::move(labels), run.pad_id);
  std::vector<int64_t> forget(static_cast<size_t>(nf)), retain(static_cast<size_t>(nr));
  for (int64_t i = 0; i < nf; ++i) forget[size_t(i)] = i;
  for (int64_t i = 0; i < nr; ++i) retain[size_t(i)] = nf + i;
  for (int64_t i = nf; i < nf + nr; ++i)
    if (sides.is_duplicate(i)) opt.retain_priority.push_back(i);
  std::fprintf(stderr, "hamu hardness: %s (%s), forget %lld / retain %lld pairs (%s; %zu added duplicates), %lld tokens per pair, %s\n",
               m.source.describe().c_str(), m.lm->config().describe().c_str(), (long long)nf, (long long)nr, run.split.spec.c_str(),
               run.split.duplicate.size(), (long long)source.length(), device.str().c_str());

  HardnessReport r = compute_hardness(*m.lm, source, forget, retain, opt);
  if (!opt.retain_priority.empty() && r.n_retain < nr)
    r.notices.push_back("the " + std::to_string(opt.retain_priority.size()) +
                        " added duplicates are in the retain sample before the random rest");
  const std::string model_desc = m.lm->config().describe() + ", " + device.str() + ", " + fmt("%.1f s", r.seconds);
  print_hardness_overview(r, run.split.spec, model_desc, opt,
                          "with the same answer (a paraphrase or duplicate of the pair)");
  print_pairs(r, sides, top);
  print_hardness_closing(r);
  Json report = hardness_report_json(
      r, run.split.spec, model_dir, opt,
      [&](const SampleHardness& x, Json& o) {
        o.set("question", Json(sides.pair(x.index).question));
        o.set("answer", Json(sides.pair(x.index).answer));
        if (x.similar_index >= 0) {
          o.set("similar_question", Json(sides.pair(x.similar_index).question));
          o.set("similar_answer", Json(sides.pair(x.similar_index).answer));
          o.set("similar_is_duplicate", Json(sides.is_duplicate(x.similar_index)));
        }
      },
      Json());
  report.set("data", Json(run.spec.canonical));
  report.set("duplicates", Json(int64_t(run.split.duplicate.size())));
  report.set("tokens_per_pair", Json(source.length()));
  Json prov = provenance_json(args, device);
  prov.set("data", text_data_identity_json(run.spec.canonical, {&run.split.forget, &run.split.retain, &run.split.test}));
  prov.set("parent", parent_json(model_dir));
  report.set("provenance", prov);
  // Under mpirun every rank holds the whole report; rank 0 alone writes it.
  if (!json_path.empty() && is_output_rank()) save_json(json_path, report);
  if (!svg_path.empty() && is_output_rank()) hardness_svg(hardness_from_json(report)).save(svg_path);
  return 0;
}

}  // namespace hamu::cli
