// cli/cmd_text.cpp: the text paths of `hamu train` (a causal LM on QA pairs) and `hamu unlearn` (a causal
// LM directory on a text split), entered when --data names text or --model is a Hugging Face directory.
#include <cstdio>
#include <fstream>
#include <memory>
#include <utility>

#include "cli/commands.h"
#include "cli/common.h"
#include "cli/provenance.h"
#include "cli/resume.h"
#include "cli/text_setup.h"
#include "cli/unlearn_output.h"
#include "cli/unlearn_setup.h"
#include "engine/progress.h"
#include "models/lm/generate.h"
#include "models/lm/lora.h"
#include "train/text_train.h"
#include "unlearn/text_task.h"

namespace hamu::cli {
namespace {

// The BPE corpus: every pair of the data set (questions, paraphrases and answers) in its template, so the
// original, the retrained and every unlearned model of one data set share one tokenizer.
std::vector<std::string> bpe_corpus(const QaDataset& data, PromptTemplate tmpl) {
  std::vector<std::string> out;
  for (const QaPair& p : data.pairs) {
    out.push_back(template_prompt(tmpl, p.question) + p.answer);
    for (const QaParaphrase& q : p.paraphrases) out.push_back(template_prompt(tmpl, q.question) + (q.answer.empty() ? p.answer : q.answer));
  }
  return out;
}

std::string pct(double v) { return fmt("%.2f", 100 * v); }

// What a resumed text run must find unchanged besides its options: the token ids it trains on (data, split,
// template, tokenizer and truncation in one) and the model directories it starts from.
Json text_identity(std::initializer_list<const std::vector<QaTokens>*> sets, const LmSource& source) {
  uint64_t h = fnv1a64(nullptr, 0);
  for (const std::vector<QaTokens>* set : sets)
    for (const QaTokens& q : *set) {
      const int64_t sizes[2] = {q.length(), q.n_prompt};
      h = fnv1a64(sizes, sizeof sizes, h);
      h = fnv1a64(q.ids.data(), q.ids.size() * sizeof(int32_t), h);
      h = fnv1a64(q.labels.data(), q.labels.size() * sizeof(int32_t), h);
    }
  char hex[32];
  std::snprintf(hex, sizeof hex, "fnv1a64:%016llx", (unsigned long long)h);
  Json id = Json::object({{"tokens", Json(hex)}});
  if (!source.base.empty()) id.set("--model", parent_json(source.base));
  if (!source.adapter.empty()) id.set("--lora", parent_json(source.adapter));
  return id;
}

}  // namespace

int cmd_train_text(int argc, char** argv) {
  std::vector<Flag> flags = {
      {"--data", "SPEC", "qa:FILE.jsonl[,q=FIELD,a=FIELD] or wordnet-qa[:N]", "wordnet-qa"},
      {"--model", "ARCH|DIR", "gpt-small (trained from scratch with its own BPE tokenizer), a Hugging Face directory (full fine-tune) or a LoRA adapter directory (trained further)", "gpt-small"},
      {"--lora", "SPEC|DIR", "LoRA fine-tuning of the Hugging Face --model: new adapters (r=8,alpha=16,dropout=0.05,targets=q,k,v,o,gate,up,down) "
                             "or an adapter directory; the base stays frozen and --out is a PEFT adapter directory", ""},
      {"--merge", "DIR", "with LoRA: also write the adapter folded into the base as a plain Hugging Face directory", ""},
      base_dtype_help(),
      {"--split", "SPEC", "fraction=X | group=NAME | forget=FILE, with holdout=X or test=FILE (recorded; needed for --subset retain)", ""},
      {"--subset", "WHICH", "full (retain + forget: the original model) or retain (the retrained reference)", "full"},
      {"--duplicates", "MODE", "none, exact, semantic or dup:FILE.jsonl: duplicates of the forget pairs added to retain", "none"},
      {"--test", "FILE", "a QA file as the test set", ""},
      {"--template", "T", "plain, llama2-chat or chatml", "plain"},
      {"--vocab", "N", "gpt-small: BPE vocabulary size", "1024"},
      {"--max-length", "N", "truncate longer sequences (0: the model's context)", "0"},
      {"--epochs", "N", "passes over the training pairs", "30"},
      {"--batch", "N", "sequences per step", "32"},
      {"--lr", "X", "AdamW learning rate", "0.003"},
      {"--weight-decay", "X", "AdamW decoupled weight decay", "0"},
      {"--clip", "X", "clip the gradient to this total norm (0 = off)", "1"},
      {"--schedule", "S", "cosine or constant", "cosine"},
      {"--warmup", "N", "linear warmup steps", "20"},
      {"--eval-batch", "N", "sequences per evaluation pass", "128"},
      {"--eval-epochs", "N", "evaluate forget/retain/test every N epochs (and after the last)", "1"},
      {"--out", "DIR", "the model directory to write (config.json, model.safetensors, tokenizer.json, hamu.json; with LoRA: "
                       "adapter_config.json, adapter_model.safetensors, hamu.json)", ""},
      {"--json", "FILE", "the training log and final evaluation as JSON", ""},
  };
  for (Flag f : resume_flags("training steps")) flags.push_back(f);
  for (Flag f : common_flags()) flags.push_back(f);
  Args args("train", "--data wordnet-qa|qa:FILE --model gpt-small|DIR [--lora SPEC [--merge DIR]] --out DIR [--split SPEC --subset full|retain] [flags]",
            flags);
  refuse_cuda_graph(args);
  if (!args.parse(argc, argv)) return 0;
  const std::string out_dir = args.required("--out");
  const std::string json_path = args.str_or("--json", "");
  check_output_dir("--out", out_dir);
  if (!json_path.empty()) check_output_path("--json", json_path);
  if (!args.str_or("--merge", "").empty()) check_output_dir("--merge", args.str("--merge"));
  const Device device = apply_common(args);
  const uint64_t seed = uint64_t(args.integer("--seed"));
  const auto [subset, split_spec] = read_train_subset(args);
  const std::string model_arg = args.str("--model");
  if (model_arg == out_dir) throw InputError("--out: refusing to overwrite the input model " + out_dir);
  // LoRA: what --model/--lora name, resolved (and an image model or a bad spec refused) before any work.
  const std::string lora_arg = args.str_or("--lora", ""), merge_dir = args.str_or("--merge", "");
  const bool lm_dir = is_lm_path(model_arg);
  const LmSource source = lm_dir || !lora_arg.empty() ? resolve_lm_source(model_arg, lora_arg, true, seed) : LmSource{};
  if (!merge_dir.empty() && !source.has_lora())
    throw InputError("--merge: folds LoRA adapters into the base: give --lora (or an adapter directory as --model)");
  const DType base_dtype = base_dtype_flag(args.str("--base-dtype"));
  check_base_dtype(base_dtype, source.has_lora(), device);
  for (const std::string& p : {source.base, source.adapter})
    if (!p.empty() && (p == out_dir || p == merge_dir))
      throw InputError(std::string(p == out_dir ? "--out" : "--merge") + ": refusing to overwrite the input model " + p);
  if (!merge_dir.empty() && merge_dir == out_dir) throw InputError("--merge: must be another directory than --out");
  TextTrainOptions opt;
  read_loop_options(args, opt, seed, device);
  opt.warmup_steps = args.integer("--warmup");
  if (opt.warmup_steps < 0) throw InputError("--warmup: must be >= 0");
  const int64_t eval_epochs = args.integer("--eval-epochs");
  if (eval_epochs < 1) throw InputError("--eval-epochs: must be at least 1");
  TextEvalOptions eo;
  eo.batch = std::min<int64_t>(256, args.integer("--eval-batch"));
  if (eo.batch < 1) throw InputError("--eval-batch: must be at least 1");
  const PromptTemplate tmpl = parse_template(args.str("--template"));

  // The model and its tokenizer.
  const TextDataSpec spec = parse_text_data_spec(args.str("--data"));
  std::shared_ptr<models::CausalLM> lm;
  std::string tok_json, bpe_note;
  Tokenizer tok = [&] {
    if (lm_dir) {
      TextModel m = load_text_model(model_arg, device, lora_arg, seed, base_dtype);
      lm = m.lm;
      tok_json = tokenizer_json_of(m.source.base);
      return m.tok;
    }
    models::lm_config_by_name(model_arg, 1024);  // an unknown name fails before the BPE is trained
    const int64_t vocab = args.integer("--vocab");
    if (vocab < 260 || vocab > 65536) throw InputError("--vocab: must be between 260 and 65536");
    const QaDataset all = load_text_data(spec);
    BpeTrainOptions bo;
    bo.vocab_size = vocab;
    const double t0 = now_s();
    BpeTrainResult bpe = train_bpe(bpe_corpus(all, tmpl), bo);
    // Said once the split is made too, so a bad split is the only line a refused run prints.
    char note[192];
    std::snprintf(note, sizeof note, "hamu train: BPE tokenizer, %lld merges, %lld tokens for %lld bytes (%.1f s)\n",
                  (long long)bpe.merges, (long long)bpe.corpus_tokens, (long long)bpe.corpus_bytes, now_s() - t0);
    bpe_note = note;
    tok_json = bpe.json;
    Tokenizer t = Tokenizer::from_json_text(bpe.json, "trained BPE");
    models::LmConfig cfg = models::lm_config_by_name(model_arg, t.vocab_size());
    cfg.bos_token_id = cfg.eos_token_id = t.eos_id();
    Rng rng(seed);
    lm = models::build_lm(cfg, rng);
    lm->to(device);
    return t;
  }();
  int64_t max_length = args.integer("--max-length");
  const int64_t ctx_len = models::lm_context_length(lm->config());
  if (max_length <= 0 || max_length > ctx_len) max_length = ctx_len;
  TextRun run = load_text_run(args.str("--data"), split_spec, args.str("--duplicates"), args.str_or("--test", ""), tok, tmpl,
                              max_length, seed);
  std::fprintf(stderr, "%s", bpe_note.c_str());
  opt.pad_id = run.pad_id;
  eo.pad_id = run.pad_id;
  std::vector<QaTokens> train_set = run.retain;
  if (subset == "full") train_set.insert(train_set.end(), run.forget.begin(), run.forget.end());
  int64_t answer_tokens = 0;
  for (const QaTokens& s : train_set) answer_tokens += s.length() - s.n_prompt;
  std::fprintf(stderr, "hamu train: %s, %lld parameters, on %s (%zu pairs, %s, %lld answer tokens), split %s, %s\n",
               lm->config().describe().c_str(), (long long)lm->num_parameters(), run.spec.canonical.c_str(),
               train_set.size(), subset.c_str(), (long long)answer_tokens, run.split.spec.c_str(), device.str().c_str());
  const bool lora = models::has_lora(*lm);
  if (lora) std::fprintf(stderr, "hamu train: %s on %s (base frozen)\n", models::lora_summary(*lm).c_str(), source.describe().c_str());

  Json epochs_json = Json::array();
  double train_seconds = 0;
  EvalReport last;
  auto evaluate = [&] {
    EvalReport r = evaluate_text_model(*lm, {&run.forget, &run.retain, &run.test, &run.duplicate}, eo);
    r.data = run.spec.canonical;
    r.split = run.split.spec;
    return r;
  };
  auto on_epoch = [&](const TextEpochSummary& e) {
    train_seconds += e.seconds;
    Json ej = Json::object({{"epoch", Json(e.epoch)}, {"train_loss", Json(e.train_loss)}, {"train_acc", Json(e.train_acc)},
                            {"seconds", Json(e.seconds)}, {"tokens_per_s", Json(e.tokens_per_s)}});
    std::string line = "epoch " + std::to_string(e.epoch) + "/" + std::to_string(opt.epochs) +
                       fmt(": loss %.4f", e.train_loss) + fmt(", answer-token acc %.2f%%", 100 * e.train_acc) +
                       fmt(" (%.1f s", e.seconds) + fmt(", %.0f tok/s)", e.tokens_per_s);
    if (e.epoch % eval_epochs == 0 || e.epoch == opt.epochs) {
      last = evaluate();
      // Splits with no pairs (no --split: no forget set; no holdout=/test=: no test set) are left out.
      if (last.forget.n > 0) line += "; forget " + pct(last.forget.acc) + fmt("%% (loss %.3f),", last.forget.loss);
      else line += ";";
      line += " retain " + pct(last.retain.acc) + fmt("%% (loss %.3f)", last.retain.loss);
      if (last.test.n > 0) line += ", test " + pct(last.test.acc) + fmt("%% (loss %.3f)", last.test.loss);
      ej.set("eval", eval_to_json(last)["splits"]);
      lm->train();  // the evaluation left the model in eval mode: LoRA dropout trains again
    }
    if (!Progress::disabled_by_env()) std::fprintf(stderr, "%s\n", line.c_str());  // --quiet: a progress line
    epochs_json.push_back(ej);
  };
  // A resumed run must see the options, tokens and model directories it started with.
  const ResumableRun resumable(args, "text-train", out_dir, [&] { return text_identity({&train_set}, source); });
  resumable.resume_training_records(epochs_json, train_seconds);  // the finished epochs' records and time
  opt.resume = resumable.resumed();
  opt.checkpoint_every = resumable.every();
  opt.write_state = [&](RunState& st) { resumable.write_training_state(st, epochs_json, train_seconds); };
  lm->train();
  train_text_model(*lm, train_set, opt, on_epoch);
  last.model = out_dir;
  const Json final_eval = eval_to_json(last);
  Json meta = Json::object({{"kind", Json(subset == "full" ? "original" : "retrained")},
                            {"data", Json(run.spec.canonical)},
                            {"split", Json(run.split.spec)},
                            {"duplicates", Json(parse_duplicates(args.str("--duplicates")).canonical)},
                            {"subset", Json(subset)},
                            {"template", Json(template_name(tmpl))},
                            {"seed", Json(int64_t(seed))},
                            {"base_model", Json(lora ? source.base : model_arg)},
                            {"epochs", Json(opt.epochs)},
                            {"lr", Json(opt.lr)},
                            {"batch", Json(opt.batch)},
                            {"train_seconds", Json(train_seconds)},
                            {"hamu_version", Json(kVersion)}});
  meta.set("metrics", final_eval["splits"]);
  Json prov = provenance_json(args, device);
  prov.set("data", text_data_identity_json(run.spec.canonical, {&run.split.forget, &run.split.retain, &run.split.test}));
  set_lm_parents(prov, source);
  meta.set("provenance", prov);
  if (lora) meta.set("lora", Json(models::lora_summary(*lm)));
  if (lora && !source.adapter.empty()) meta.set("adapter", Json(source.adapter));
  if (is_output_rank()) {  // under mpirun rank 0 alone writes
    if (lora) save_text_adapter(out_dir, *lm, source.base, meta, merge_dir, tok_json);
    else save_text_model(out_dir, *lm, tok_json, meta, source.base);
  }
  std::printf("%s", eval_side_by_side({{subset == "full" ? "original" : "retrained", &last}}).c_str());
  std::printf("saved %s (%s%s, %.1f s of training)\n", out_dir.c_str(), subset == "full" ? "original" : "retrained",
              lora ? ", LoRA adapter" : "", train_seconds);
  if (!merge_dir.empty()) std::printf("saved %s (base + adapter merged)\n", merge_dir.c_str());
  if (!json_path.empty()) {
    Json j = Json::object({{"model", Json(model_arg)}, {"out", Json(out_dir)}, {"data", Json(run.spec.canonical)},
                           {"split", Json(run.split.spec)}, {"subset", Json(subset)}, {"seed", Json(int64_t(seed))},
                           {"train_seconds", Json(train_seconds)}});
    j.set("epochs", epochs_json);
    j.set("final", final_eval);
    j.set("provenance", prov);
    if (is_output_rank()) save_json(json_path, j);
  }
  if (is_output_rank()) resumable.finish();
  return 0;
}

int cmd_unlearn_text(int argc, char** argv) {
  std::vector<Flag> flags = {
      {"--model", "DIR", "the original model directory (trained on retain + forget), or its LoRA adapter directory", ""},
      {"--data", "SPEC", "qa:FILE or wordnet-qa (default: the model's hamu.json)", ""},
      {"--split", "SPEC", "the forget set: fraction=X, group=NAME, forget=FILE [+ holdout=X] (default: the model's)", ""},
      {"--method", "M", method_list(), "hamu-q"},
      {"--reference", "DIR", "the retrained model: gaps and the KS test against it", ""},
      {"--out", "DIR", "write the unlearned model directory here (with LoRA: the unlearned adapter, PEFT layout)", ""},
      {"--merge", "DIR", "with LoRA: also write the unlearned adapter folded into the base as a plain Hugging Face directory", ""},
      {"--log", "CSV", "one row per step (and per evaluation)", ""},
      {"--json", "FILE", "summary with the before and after evaluations", ""},
      {"--show", "N", "print N forget questions with the original's, the unlearned and the retrained model's answers", "5"},
  };
  for (Flag f : text_context_flags()) flags.push_back(f);
  for (Flag f : unlearn_option_flags(/*text=*/true)) flags.push_back(f);
  for (Flag f : resume_flags("unlearning steps")) flags.push_back(f);
  for (Flag f : common_flags()) flags.push_back(f);
  Args args("unlearn", "--model DIR [--lora DIR] [--data SPEC] [--split SPEC] [--method M] [--reference DIR] [--out DIR] [--merge DIR] [--log CSV] [--json FILE]",
            flags);
  args.add_help_section("methods", method_help());
  if (!args.parse(argc, argv)) return 0;
  const std::string model_dir = args.required("--model");
  const std::string out_dir = args.str_or("--out", ""), log_path = args.str_or("--log", ""),
                    json_path = args.str_or("--json", ""), merge_dir = args.str_or("--merge", "");
  if (!out_dir.empty()) check_output_dir("--out", out_dir);
  if (!merge_dir.empty()) check_output_dir("--merge", merge_dir);
  if (!log_path.empty()) check_output_path("--log", log_path, OutputKind::streamed);
  if (!json_path.empty()) check_output_path("--json", json_path);
  for (const auto& [flag, p] : {std::pair{"--out", out_dir}, {"--log", log_path}, {"--json", json_path}, {"--merge", merge_dir}})
    if (!p.empty() && (p == model_dir || p == args.str_or("--reference", "") || p == args.str_or("--lora", "")))
      throw InputError(std::string(flag) + ": refusing to overwrite the input model " + p);
  if (!merge_dir.empty() && merge_dir == out_dir) throw InputError("--merge: must be another directory than --out");
  const Device device = apply_common(args);
  UnlearnOptions opt = read_unlearn_options(args, device);
  opt.method = &parse_method(args.str("--method"));
  const uint64_t seed = uint64_t(args.integer("--seed"));
  TextContext ctx = load_text_context(model_dir, args, device, seed);
  const LmSource& source = ctx.original.source;
  if (!merge_dir.empty() && !source.has_lora())
    throw InputError("--merge: folds LoRA adapters into the base: give an adapter (--model ADAPTER_DIR or --lora)");
  for (const auto& [flag, p] : {std::pair{"--out", out_dir}, {"--merge", merge_dir}})
    if (!p.empty() && (p == source.base || p == source.adapter))
      throw InputError(std::string(flag) + ": refusing to overwrite the input model " + p);
  validate_unlearn_options(opt, ctx.run.forget.size(), ctx.run.retain.size());
  // A resumed run must see the options, tokens and model directories it started with.
  const ResumableRun resumable(args, "text-unlearn", out_dir, [&] {
    Json id = text_identity({&ctx.run.retain, &ctx.run.forget, &ctx.run.test, &ctx.run.duplicate}, source);
    if (ctx.reference) id.set("--reference", parent_json(args.str("--reference")));
    return id;
  });
  // With LoRA the working copy's parameters are the adapters' A and B only; the original of kl / scrub / npo is
  // the base with the original adapter, frozen.
  std::shared_ptr<models::CausalLM> work = fresh_text_lm(ctx.original, device);
  std::shared_ptr<models::CausalLM> original;
  if (opt.method->needs_original()) original = fresh_text_lm(ctx.original, device);
  if (source.has_lora())
    std::fprintf(stderr, "hamu unlearn: %s on %s (base frozen)\n", models::lora_summary(*work).c_str(), source.describe().c_str());
  std::fprintf(stderr, "hamu unlearn: %s on %s, forget %zu / retain %zu (%s), %lld steps, lr %g%s, %s\n",
               method_name(*opt.method), work->config().describe().c_str(), ctx.run.forget.size(), ctx.run.retain.size(),
               ctx.run.split.spec.c_str(), (long long)opt.steps, opt.params.lr,
               opt.method->is_hamu() ? (", ratio " + fmt("%g", opt.ratio)).c_str() : "", device.str().c_str());
  UnlearnLog log;
  if (is_output_rank()) log = open_unlearn_log(log_path, resumable);  // under mpirun rank 0 alone writes
  UnlearnHooks hooks;
  attach_resumable(hooks, resumable, log);
  hooks.evaluate = [&](int64_t step, bool final) {
    return (step == 0 || final) ? evaluate_text_full(*work, ctx, "unlearned", true) : evaluate_text_sampled(*work, ctx, "unlearned");
  };
  log.attach(hooks);
  hooks.notice = [](const std::string& msg) { std::fprintf(stderr, "\nhamu unlearn: %s\n", msg.c_str()); };
  std::unique_ptr<UnlearnTask> task = make_text_task(ctx.run.retain, ctx.run.forget, ctx.run.pad_id, opt);
  UnlearnResult res = log.run([&] { return run_unlearning(*work, original.get(), *task, opt, hooks); });
  EvalReport before = res.evals.front().report, after = res.evals.back().report;
  before.model = model_dir;
  after.model = out_dir.empty() ? "unlearned" : out_dir;
  if (!res.paired_fallback.empty() && opt.paired)
    std::fprintf(stderr, "hamu unlearn: gradients from two passes (%s)\n", res.paired_fallback.c_str());
  std::printf("%s: %lld steps in %.1f s (stopped: %s), evaluation %.1f s\n", method_name(*opt.method),
              (long long)res.steps_done, res.seconds, stop_reason_name(res.stop_reason), res.eval_seconds);
  std::vector<std::pair<std::string, const EvalReport*>> cols = {{"before", &before}, {"after", &after}};
  if (ctx.reference_report) cols.push_back({"retrained", &*ctx.reference_report});
  std::printf("%s", eval_side_by_side(cols).c_str());
  if (after.has_reference)
    std::printf("gap to retrained: forget %.2f, retain %.2f%s points (avg %.2f); forget-loss KS %.4f (p %.3g)\n",
                100 * after.gap_forget, 100 * after.gap_retain,
                after.test.n > 0 ? (", test " + fmt("%.2f", 100 * after.gap_test)).c_str() : "", 100 * after.avg_gap,
                after.ks_stat, after.ks_p);
  print_stop_reason(res, opt);
  const int64_t show = args.integer("--show");
  Json examples = Json::array();
  if (show > 0) {
    const size_t n = size_t(std::min<int64_t>(show, int64_t(ctx.run.forget.size())));
    const std::vector<std::string> orig = greedy_answers(*ctx.original.lm, ctx, ctx.run.split.forget, ctx.run.forget, n);
    const std::vector<std::string> unl = greedy_answers(*work, ctx, ctx.run.split.forget, ctx.run.forget, n);
    const std::vector<std::string> ref = ctx.reference
                                             ? greedy_answers(*ctx.reference->lm, ctx, ctx.run.split.forget, ctx.run.forget, n)
                                             : std::vector<std::string>(n, "-");
    std::printf("forget questions, greedy answers:\n");
    for (size_t i = 0; i < n; ++i) {
      const QaPair& p = ctx.run.split.forget[i];
      std::printf("  Q: %s\n     true:      %s\n     original:  %s\n     unlearned: %s\n     retrained: %s\n",
                  p.question.c_str(), p.answer.c_str(), orig[i].c_str(), unl[i].c_str(), ref[i].c_str());
      examples.push_back(Json::object({{"question", Json(p.question)}, {"answer", Json(p.answer)},
                                       {"original", Json(orig[i])}, {"unlearned", Json(unl[i])},
                                       {"retrained", Json(ref[i])}}));
    }
  }
  // A run that applied no step left the original as it was: no model directory may claim it is unlearned.
  const bool no_step = res.steps_done == 0;
  if (unlearned_output_wanted("hamu unlearn", out_dir.empty() ? "--merge" : "--out", out_dir.empty() ? merge_dir : out_dir, res) &&
      is_output_rank()) {
    save_unlearned_text_model(out_dir, merge_dir, *work, ctx, opt, res, after, seed, args, device);
    if (!out_dir.empty()) std::printf("saved %s%s\n", out_dir.c_str(), source.has_lora() ? " (LoRA adapter)" : "");
    if (!merge_dir.empty()) std::printf("saved %s (base + unlearned adapter merged)\n", merge_dir.c_str());
  }
  if (!json_path.empty()) {
    Json j = unlearn_summary_json(opt, res, seed);
    j.set("before", eval_to_json(before));
    j.set("after", eval_to_json(after));
    j.set("forget_examples", examples);
    j.set("provenance", text_provenance_json(args, device, ctx));
    if (is_output_rank()) save_json(json_path, j);
  }
  if (is_output_rank()) resumable.finish();
  return no_step && (!out_dir.empty() || !merge_dir.empty()) ? 1 : 0;
}

}  // namespace hamu::cli
