// cli/cmd_eval.cpp: `hamu eval` — image classifiers: accuracy, loss, entropy and membership AUCs on
// forget/retain/test; language models (a Hugging Face directory, or QA data): completion-only answer-token
// loss, accuracy and token count per split.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <optional>

#include "cli/commands.h"
#include "cli/provenance.h"
#include "cli/text_setup.h"
#include "cli/common.h"
#include "cli/lm_setup.h"
#include "engine/progress.h"
#include "engine/safetensors.h"
#include "loaders/batch.h"
#include "loaders/text_spec.h"
#include "loaders/text_split.h"
#include "models/checkpoint.h"
#include "models/lm/generate.h"
#include "unlearn/metrics.h"
#include "unlearn/text_metrics.h"

namespace hamu::cli {
namespace {

// True when the command line evaluates a language model: --model is a Hugging Face or LoRA adapter directory,
// --data is text, or --lora is given (the text path then refuses an image model clearly).
bool is_text_eval(int argc, char** argv) {
  for (int i = 0; i < argc; ++i)
    if (!std::strcmp(argv[i], "--lora")) return true;  // even without a value: the text path says what is missing
  return is_text_command(argc, argv);
}

// `hamu eval --model DIR --data qa:FILE`: every split's answer tokens scored teacher-forced, with the pairs
// tokenised by the training rule (loaders/template.h). Loss = summed NLL / scored tokens of the split.
int cmd_eval_text(int argc, char** argv) {
  std::vector<Flag> flags = {
      {"--model", "DIR", "a Hugging Face model directory with its tokenizer.json, or a LoRA adapter directory (on its base)", ""},
      {"--lora", "DIR", "a LoRA adapter directory (PEFT layout) applied to --model", ""},
      base_dtype_help(),
      {"--data", "SPEC", "qa:FILE.jsonl[,q=FIELD,a=FIELD] or wordnet-qa[:N]", ""},
      {"--split", "SPEC", "fraction=X | group=NAME | forget=FILE [,holdout=X | test=FILE] (default: one split, all)", ""},
      {"--template", "T", "plain, llama2-chat or chatml (default: the model's hamu.json, as in training, else plain)", ""},
      {"--reference", "DIR", "a retrained model (same tokenizer): answer-token accuracy gaps and the KS test of the "
                             "forget losses against it", ""},
      {"--batch", "N", "sequences per forward pass (right-padded)", "16"},
      {"--json", "FILE", "write the evaluation as JSON", ""},
  };
  for (Flag f : common_flags()) flags.push_back(f);
  Args args("eval", "--model DIR [--lora ADAPTER_DIR] --data qa:FILE.jsonl [--split SPEC] [--template T] [--reference DIR] [--json FILE]",
            flags);
  refuse_cuda_graph(args);
  if (!args.parse(argc, argv)) return 0;
  const std::string dir = args.required("--model");
  const std::string lora = args.str_or("--lora", "");
  if (!lora.empty()) resolve_lm_source(dir, lora, false);  // --lora on an image model: refused before anything else
  const std::string data_spec = args.required("--data");
  const std::string json_path = args.str_or("--json", "");
  if (!json_path.empty()) check_output_path("--json", json_path);
  const std::string template_arg = args.str_or("--template", "");
  if (!template_arg.empty()) template_flag(template_arg);  // a bad value is refused before the model is read
  const int64_t batch = args.integer("--batch");
  if (batch < 1) throw InputError("--batch: must be at least 1");
  const Device device = apply_common(args);
  const DType base_dtype = base_dtype_flag(args.str("--base-dtype"));
  if (!is_text_data_spec(data_spec))
    throw InputError("--data: a language model is evaluated on text (qa:FILE or wordnet-qa), not '" + data_spec + "'");
  const LmWithTokenizer m = load_lm_with_tokenizer(dir, device, lora, false, 0, base_dtype);
  const PromptTemplate tmpl = template_for_model(template_arg, m.source);
  template_stop_id(tmpl, m.tok);
  std::optional<LmWithTokenizer> ref;  // loaded and checked before anything is evaluated
  const std::string ref_dir = args.str_or("--reference", "");
  if (!ref_dir.empty()) {
    ref.emplace(load_lm_with_tokenizer(ref_dir, device));
    template_stop_id(tmpl, ref->tok);
  }
  const TextDataSpec spec = parse_text_data_spec(data_spec);
  const QaDataset data = load_text_data(spec);

  std::vector<std::pair<std::string, std::vector<QaPair>>> splits;
  std::string split_name = "all";
  if (args.has("--split")) {
    TextSplitOptions so;
    so.default_seed = uint64_t(args.integer("--seed"));
    so.fields = spec.fields;
    const TextSplit ts = make_text_split(args.str("--split"), data, so);
    for (const std::string& note : ts.notes) std::fprintf(stderr, "note: %s\n", note.c_str());
    splits = {{"forget", ts.forget}, {"retain", ts.retain}};
    if (!ts.test.empty()) splits.push_back({"test", ts.test});
    split_name = ts.spec;
  } else {
    splits = {{"all", data.pairs}};
  }

  // Pairs longer than the model's context are cut to it (the answer's end goes first), counted and warned.
  QaTemplateOptions topt;
  topt.max_length = models::lm_context_length(m.lm->config());
  Json splits_json = Json::object();
  std::printf("%s: %s on %s, template %s, split %s\n", m.source.describe().c_str(), m.lm->config().describe().c_str(),
              data.source.c_str(), template_name(tmpl), split_name.c_str());
  if (ref) topt.max_length = std::min(topt.max_length, models::lm_context_length(ref->lm->config()));
  std::vector<QaBatchTokens> split_tokens;
  for (const auto& [name, pairs] : splits) {
    split_tokens.push_back(tokenize_qa_pairs(m.tok, tmpl, qa_text_pairs(pairs), topt));
    if (!ref) continue;
    // The reference scores the same token ids: a different tokenizer would make the gaps meaningless.
    const QaBatchTokens ref_toks = tokenize_qa_pairs(ref->tok, tmpl, qa_text_pairs(pairs), topt);
    const QaBatchTokens& toks = split_tokens.back();
    for (size_t i = 0; i < toks.pairs.size(); ++i)
      if (ref_toks.pairs[i].ids != toks.pairs[i].ids || ref_toks.pairs[i].labels != toks.pairs[i].labels)
        throw InputError("--reference: " + ref_dir + " tokenizes the " + name + " split differently from --model (pair " +
                         std::to_string(i + 1) + "); gaps need the same tokenizer and template");
  }
  if (ref) std::printf("%-8s %8s %9s %9s %9s %9s %9s %7s\n", "split", "n", "tokens", "loss", "accuracy", "ref loss", "ref acc", "gap");
  else std::printf("%-8s %8s %9s %9s %9s\n", "split", "n", "tokens", "loss", "accuracy");
  int64_t truncated = 0;
  Json ref_json = Json::object();
  double gap_sum = 0;
  std::vector<double> forget_losses, ref_forget_losses;
  for (size_t si = 0; si < splits.size(); ++si) {
    const auto& [name, pairs] = splits[si];
    const QaBatchTokens& toks = split_tokens[si];
    if (!toks.warning.empty()) std::fprintf(stderr, "%s (split %s)\n", toks.warning.c_str(), name.c_str());
    truncated += toks.truncated;
    std::vector<std::vector<int32_t>> ids, labels;
    for (const QaTokens& t : toks.pairs) {
      ids.push_back(t.ids);
      labels.push_back(t.labels);
    }
    Progress bar((int64_t(ids.size()) + batch - 1) / batch, "eval " + name, "batch/s");
    const models::ScoreResult r =
        models::score_sequences(*m.lm, ids, labels, batch, [&](int64_t done, int64_t) { bar.update(done); });
    bar.finish();
    splits_json.set(name, Json::object({{"n", int64_t(pairs.size())},
                                        {"loss", r.total.loss()},
                                        {"acc", r.total.accuracy()},
                                        {"tokens", r.total.tokens}}));
    if (!ref) {
      std::printf("%-8s %8zu %9lld %9.4f %8.2f%%\n", name.c_str(), pairs.size(), (long long)r.total.tokens, r.total.loss(),
                  100.0 * r.total.accuracy());
      continue;
    }
    Progress ref_bar((int64_t(ids.size()) + batch - 1) / batch, "eval " + name + " (reference)", "batch/s");
    const models::ScoreResult rr =
        models::score_sequences(*ref->lm, ids, labels, batch, [&](int64_t done, int64_t) { ref_bar.update(done); });
    ref_bar.finish();
    const double gap = std::abs(r.total.accuracy() - rr.total.accuracy());
    gap_sum += gap;
    std::printf("%-8s %8zu %9lld %9.4f %8.2f%% %9.4f %8.2f%% %7.2f\n", name.c_str(), pairs.size(),
                (long long)r.total.tokens, r.total.loss(), 100.0 * r.total.accuracy(), rr.total.loss(),
                100.0 * rr.total.accuracy(), 100.0 * gap);
    ref_json.set(name, Json::object({{"loss", rr.total.loss()}, {"acc", rr.total.accuracy()}, {"gap", gap}}));
    if (name == "forget" || splits.size() == 1) {
      for (const auto& sq : r.sequences) forget_losses.push_back(sq.loss());
      for (const auto& sq : rr.sequences) ref_forget_losses.push_back(sq.loss());
    }
  }
  Json reference;
  if (ref) {
    const double avg = gap_sum / double(splits.size());
    const KsResult ks = ks_2samp(forget_losses, ref_forget_losses);
    const char* ks_split = splits.size() == 1 ? "all" : "forget";
    std::printf("gap to reference: avg %.2f points over %zu splits; KS test of the %s losses: D %.4f, p %.4g\n", 100 * avg,
                splits.size(), ks_split, ks.statistic, ks.p_value);
    reference = Json::object({{"model", ref_dir},
                              {"splits", ref_json},
                              {"avg_gap", avg},
                              {"ks", Json::object({{"split", ks_split}, {"statistic", ks.statistic}, {"p_value", ks.p_value}})}});
  }
  if (!json_path.empty()) {
    Json prov = provenance_json(args, device);
    std::vector<std::vector<QaPair>> read;  // the pairs of every split, in the order evaluated
    for (const auto& split : splits) read.push_back(split.second);
    if (read.size() < 3) read.resize(3);
    prov.set("data", text_data_identity_json(spec.canonical, {&read[0], &read[1], &read[2]}));
    set_lm_parents(prov, m.source);
    if (ref) prov.set("reference", parent_json(ref_dir));
    Json out = Json::object({{"model", dir},
                             {"base_model", m.source.base},
                             {"adapter", m.source.adapter.empty() ? Json() : Json(m.source.adapter)},
                             {"data", data.source},
                             {"split", split_name},
                             {"template", template_name(tmpl)},
                             {"truncated", truncated},
                             {"splits", splits_json},
                             {"provenance", prov}});
    if (ref) out.set("reference", reference);
    save_json(json_path, out);
  }
  return 0;
}

}  // namespace

int cmd_eval(int argc, char** argv) {
  if (is_text_eval(argc, argv)) return cmd_eval_text(argc, argv);
  std::vector<Flag> flags = {
      {"--model", "CKPT", "the checkpoint to evaluate", ""},
      {"--data", "SPEC", "data set (default: the one the checkpoint was trained on)", ""},
      {"--split", "SPEC", "forget/retain split (default: the checkpoint's)", ""},
      {"--reference", "CKPT", "a retrained model: report accuracy gaps and forget KL against it", ""},
      {"--force-reference", "", "use a --reference made for another data set, split or seed", ""},
      {"--batch", "N", "evaluation batch size", "1000"},
      {"--cuda-graph", "", "GPU: capture a full evaluation batch once as a CUDA graph and replay it for every full batch, "
                           "the next batch prepared on the host meanwhile (same results; says why when not used). Image "
                           "models only: language-model evaluation is not graphed", ""},
      {"--json", "FILE", "write the evaluation as JSON", ""},
      {"--logits", "FILE", "safetensors of the first 16 test images as the model sees them (inputs, normalised) and "
                           "its logits (logits), for checking the checkpoint in another framework", ""},
  };
  for (Flag f : common_flags()) flags.push_back(f);
  Args args("eval", "--model CKPT [--data SPEC] [--split SPEC] [--reference CKPT] [--json FILE]", flags);
  args.add_help_section("language models", {{"--model DIR", "a Hugging Face or LoRA adapter directory scores QA pairs "
                                                            "(hamu eval --model DIR --help for its flags)"}});
  if (!args.parse(argc, argv)) return 0;
  const std::string ckpt = args.required("--model");
  const std::string json_path = args.str_or("--json", "");
  if (!json_path.empty()) check_output_path("--json", json_path);
  const std::string logits_path = args.str_or("--logits", "");
  if (!logits_path.empty()) check_output_path("--logits", logits_path);
  const Device device = apply_common(args);
  const int64_t batch = args.integer("--batch");
  if (batch < 1) throw InputError("--batch: must be at least 1");
  const bool graph = args.on("--cuda-graph");
  if (graph && !device.is_cuda())
    throw InputError("--cuda-graph: CUDA graphs need --device cuda (this run is on " + device.str() + ")");
  models::LoadedModel m = load_image_model("--model", ckpt, device);
  const std::string data_spec = args.str_or("--data", m.meta_or("data", "fashion-mnist"));
  std::string split_spec = args.str_or("--split", m.meta_or("split", "none"));
  DataAndSplit ds = load_data_split(data_spec, split_spec, uint64_t(args.integer("--seed")));
  check_model_fits_data(m, ds.data.train);
  const Normalizer norm = model_normalizer(m, ds.data.train);
  std::optional<models::LoadedModel> ref;
  if (args.has("--reference")) {  // checked before anything is evaluated
    ref.emplace(load_image_model("--reference", args.str("--reference"), device));
    check_model_fits_data(*ref, ds.data.train);
    if (ref->spec.arch != m.spec.arch)
      throw InputError("--reference: " + ref->path + " is a " + ref->spec.arch + ", the model is a " + m.spec.arch);
    check_reference(*ref, ds.data.spec, ds.split.spec, args.on("--force-reference"));
  }
  EvalOptions eo;
  eo.batch = batch;
  eo.device = device;
  eo.keep_probs = args.has("--reference");
  eo.progress = "evaluate";
  EvalGraphs graphs;
  eo.graph = graph;
  eo.graphs = &graphs;
  EvalReport report = evaluate_model(*m.model, ds.data, {&ds.split.forget, &ds.split.retain, &ds.test}, norm, eo);
  report.model = ckpt;
  report.data = ds.data.spec;
  report.split = ds.split.spec;
  EvalReport ref_report;
  if (ref) {
    eo.progress = "evaluate reference";
    ref_report = evaluate_model(*ref->model, ds.data, {&ds.split.forget, &ds.split.retain, &ds.test},
                                model_normalizer(*ref, ds.data.train), eo);
    compare_to_reference(report, ref_report);
  }
  if (graph) std::fprintf(stderr, "hamu eval: --cuda-graph: %s\n", graphs.summary().c_str());
  std::printf("%s: %s on %s, split %s\n", ckpt.c_str(), m.spec.describe().c_str(), ds.data.spec.c_str(),
              ds.split.spec.c_str());
  if (args.has("--reference")) {
    std::printf("%s", eval_side_by_side({{"model", &report}, {"reference", &ref_report}}).c_str());
    std::printf("gap to reference: forget %.2f, retain %.2f, test %.2f points (avg %.2f); forget KL %.4f\n",
                100 * report.gap_forget, 100 * report.gap_retain, 100 * report.gap_test, 100 * report.avg_gap,
                report.forget_kl);
  } else {
    std::printf("%s", eval_table(report).c_str());
  }
  if (!json_path.empty()) {
    Json j = eval_to_json(report);
    Json prov = provenance_json(args, device);
    prov.set("data", data_identity_json(ds.data));
    prov.set("parent", parent_json(ckpt));
    if (ref) prov.set("reference", parent_json(ref->path));
    j.set("provenance", prov);
    if (graph) j.set("cuda_graph", eval_graphs_json(graphs));
    save_json(json_path, j);
  }
  if (!logits_path.empty()) {
    const std::vector<int64_t> first(ds.test.begin(), ds.test.begin() + std::min<size_t>(16, ds.test.size()));
    const Batch b = gather_batch(ds.data.test, first, norm, device);
    NoGradGuard no_grad;
    m.model->eval();
    save_safetensors(logits_path, {{"inputs", b.images}, {"logits", (*m.model)(b.images)}});
    std::printf("saved %s\n", logits_path.c_str());
  }
  return 0;
}

}  // namespace hamu::cli
