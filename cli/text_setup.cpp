// cli/text_setup.cpp: text runs for the CLI: data, split, tokenisation, model directories and evaluation.
#include "cli/text_setup.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <sys/stat.h>

#include "cli/common.h"
#include "cli/provenance.h"
#include "engine/atomic_file.h"
#include "engine/rng.h"
#include "models/lm/generate.h"
#include "models/lm/lora.h"

namespace hamu::cli {

std::string raw_flag(int argc, char** argv, const std::string& flag) {
  for (int i = 0; i + 1 < argc; ++i)
    if (argv[i] == flag) return argv[i + 1];
  const std::string eq = flag + "=";
  for (int i = 0; i < argc; ++i)
    if (std::strncmp(argv[i], eq.c_str(), eq.size()) == 0) return argv[i] + eq.size();
  // A run replayed from a report (--config FILE) takes the path its recorded flags name.
  if (flag != "--config")
    if (const std::string config = raw_flag(argc, argv, "--config"); !config.empty()) return config_file_value(config, flag);
  return "";
}

bool is_text_command(int argc, char** argv) {
  const std::string data = raw_flag(argc, argv, "--data"), model = raw_flag(argc, argv, "--model");
  // gpt-small names a language model even without --data (hamu train then takes wordnet-qa, its default).
  return (!data.empty() && is_text_data_spec(data)) || (!model.empty() && (model == "gpt-small" || is_lm_path(model))) ||
         !raw_flag(argc, argv, "--lora").empty();
}

void refuse_cuda_graph(Args& args) {
  args.refuse("--cuda-graph", "language models are not graphed (their batch shapes change from batch to batch); "
                              "leave the flag out (it graphs image models)");
}

namespace {

std::string read_small_file(const std::string& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(what + ": cannot read " + path);
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  if (size < 0 || size > (std::streamoff(256) << 20)) throw InputError(what + ": " + path + " is unreadable or too large");
  in.seekg(0);
  std::string s(size_t(size), '\0');
  in.read(s.data(), size);
  return s;
}

bool file_exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

void write_atomic(const std::string& path, const std::string& text) {
  AtomicFile f(path);
  f.write(text);
  f.commit();
}

std::vector<QaTokens> tokenize_split(const std::vector<QaPair>& pairs, const Tokenizer& tok, PromptTemplate tmpl,
                                     int64_t max_length, int64_t* truncated, const char* name) {
  QaTemplateOptions o;
  o.max_length = max_length;
  QaBatchTokens t = tokenize_qa_pairs(tok, tmpl, qa_text_pairs(pairs), o);
  if (t.truncated) std::fprintf(stderr, "hamu: %s: %s\n", name, t.warning.c_str());
  *truncated += t.truncated;
  return std::move(t.pairs);
}

}  // namespace

Json read_hamu_json(const std::string& dir) {
  const std::string path = dir + "/hamu.json";
  if (!file_exists(path)) return Json::object({});
  return Json::parse(read_small_file(path, "--model"));
}

std::string hamu_json_str(const Json& meta, const std::string& key, const std::string& fallback) {
  const Json* v = meta.is_object() ? meta.find(key) : nullptr;
  return v && v->is_string() ? v->as_string() : fallback;
}

PromptTemplate template_from_meta(const std::string& flag_value, const Json& meta) {
  return template_flag(flag_value.empty() ? hamu_json_str(meta, "template", "plain") : flag_value);
}

PromptTemplate template_for_model(const std::string& flag_value, const LmSource& src) {
  if (!flag_value.empty()) return template_flag(flag_value);
  return template_from_meta("", read_hamu_json(src.adapter.empty() ? src.base : src.adapter));
}

TextRun load_text_run(const std::string& data_spec, const std::string& split_spec, const std::string& duplicates,
                      const std::string& test_file, const Tokenizer& tok, PromptTemplate tmpl, int64_t max_length,
                      uint64_t seed) {
  TextRun r;
  r.spec = parse_text_data_spec(data_spec);
  r.data = load_text_data(r.spec);
  r.tmpl = tmpl;
  if (!split_spec.empty() && split_spec != "none") {
    TextSplitOptions so;
    so.default_seed = seed;
    so.test_file = test_file;
    so.duplicates = duplicates;
    so.fields = r.spec.fields;
    r.split = make_text_split(split_spec, r.data, so);
    for (const std::string& note : r.split.notes) std::fprintf(stderr, "hamu: %s\n", note.c_str());
  } else {
    if (!duplicates.empty() && duplicates != "none") throw InputError("--duplicates needs --split (duplicates of which forget pairs?)");
    r.split.retain = r.data.pairs;
    r.split.spec = "none";
  }
  const int32_t end = template_end_id(tmpl, tok);
  r.pad_id = end;
  r.forget = tokenize_split(r.split.forget, tok, tmpl, max_length, &r.truncated, "forget");
  r.retain = tokenize_split(r.split.retain, tok, tmpl, max_length, &r.truncated, "retain");
  r.test = tokenize_split(r.split.test, tok, tmpl, max_length, &r.truncated, "test");
  r.duplicate = tokenize_split(r.split.duplicate, tok, tmpl, max_length, &r.truncated, "duplicate");
  return r;
}

TextModel load_text_model(const std::string& dir, Device device, const std::string& lora, uint64_t seed,
                          DType base_dtype) {
  LmWithTokenizer m = load_lm_with_tokenizer(dir, device, lora, true, seed, base_dtype);
  Json meta = read_hamu_json(m.source.adapter.empty() ? m.source.base : m.source.adapter);
  return TextModel{dir, std::move(m.source), std::move(m.lm), std::move(m.tok), std::move(meta)};
}

std::shared_ptr<models::CausalLM> fresh_text_lm(const TextModel& m, Device device) { return load_lm_source(m.source, device); }

void save_text_model(const std::string& dir, models::CausalLM& lm, const std::string& tokenizer_json, const Json& meta,
                     const std::string& base_dir) {
  models::save_hf_dir(dir, lm);
  write_atomic(dir + "/tokenizer.json", tokenizer_json);
  const std::string generation_config = base_dir + "/generation_config.json";
  if (!base_dir.empty() && file_exists(generation_config))
    write_atomic(dir + "/generation_config.json", read_small_file(generation_config, "--model"));
  // The tokenizer's own special tokens (a Llama tokenizer's are <s> / </s>; gpt-small's BPE has <|endoftext|>
  // for all three): tokenizer_config.json is read back with the tokenizer and must name tokens it has.
  const Tokenizer tok = Tokenizer::from_json_text(tokenizer_json, dir + "/tokenizer.json");
  const std::string eos = tok.eos_id() >= 0 ? tok.id_to_token(tok.eos_id()) : "<|endoftext|>";
  const std::string bos = tok.bos_id() >= 0 ? tok.id_to_token(tok.bos_id()) : eos;
  const std::string unk = tok.token_to_id("<unk>") >= 0 ? "<unk>" : eos;
  Json cfg = Json::object({{"bos_token", Json(bos)},
                           {"eos_token", Json(eos)},
                           {"unk_token", Json(unk)},
                           {"model_max_length", Json(models::lm_context_length(lm.config()))},
                           {"tokenizer_class", Json("PreTrainedTokenizerFast")}});
  write_atomic(dir + "/tokenizer_config.json", cfg.dump(2) + "\n");
  write_atomic(dir + "/hamu.json", meta.dump(2) + "\n");
}

std::string tokenizer_json_of(const std::string& dir) { return read_small_file(dir + "/tokenizer.json", "--model"); }

void save_text_adapter(const std::string& dir, models::CausalLM& lm, const std::string& base, const Json& meta,
                       const std::string& merge_dir, const std::string& tokenizer_json) {
  if (!dir.empty()) {
    models::save_lora(dir, lm, base);
    write_atomic(dir + "/hamu.json", meta.dump(2) + "\n");
  }
  if (merge_dir.empty()) return;
  Json merged = meta;
  if (!dir.empty()) merged.set("merged_from", Json(dir));
  bool bf16_base = false;
  for (const auto& [name, w] : lm.named_weights()) bf16_base = bf16_base || w.dtype() == DType::bf16;
  if (!bf16_base) {
    models::merge_lora(lm);
    save_text_model(merge_dir, lm, tokenizer_json, merged, base);
    return;
  }
  // --base-dtype bfloat16: the adapter goes into the float32 base read again from disk (on the CPU), not into
  // the bfloat16 copy, so the merged model is what a float32 run would write for the same adapter.
  std::shared_ptr<models::CausalLM> base_f32 = models::load_hf_dir(base).model;
  models::merge_lora_into(lm, *base_f32);
  save_text_model(merge_dir, *base_f32, tokenizer_json, merged, base);
}
std::vector<Flag> text_context_flags() {
  return {
      {"--lora", "DIR|SPEC", "text: a LoRA adapter directory on --model (or a spec such as r=8,alpha=16 for new adapters): "
                             "only the adapter's A and B are updated", ""},
      {"--template", "T", "text: prompt template plain, llama2-chat or chatml (default: the model's hamu.json, else plain)", ""},
      {"--duplicates", "MODE", "text: none, exact, semantic or dup:FILE.jsonl added to retain (default: the model's)", ""},
      {"--test", "FILE", "text: a QA file as the test set (instead of holdout=X in --split)", ""},
      {"--max-length", "N", "text: truncate longer sequences to N tokens (0: the model's context)", "0"},
      {"--gen-samples", "N", "text: greedy answers scored per split for exact match and ROUGE-L (0: none)", "50"},
      base_dtype_help(),
  };
}

TextRun text_run_for_model(const TextModel& m, const Args& args, uint64_t seed) {
  const std::string data = args.str_or("--data", hamu_json_str(m.meta, "data", ""));
  if (data.empty()) throw InputError("--data: no data given and " + m.dir + "/hamu.json records none");
  // Before the split: an image data set named for a language model is the mistake, not the missing split.
  if (!is_text_data_spec(data))
    throw InputError("--data: " + m.dir + " is a language model, which takes text data (qa:FILE.jsonl or wordnet-qa[:N]), not '" +
                     data + "'");
  const std::string split = args.str_or("--split", hamu_json_str(m.meta, "split", ""));
  if (split.empty() || split == "none") throw InputError("--split: no forget set given and " + m.dir + " records none");
  const std::string dup = args.str_or("--duplicates", hamu_json_str(m.meta, "duplicates", "none"));
  const PromptTemplate tmpl = template_from_meta(args.str_or("--template", ""), m.meta);
  int64_t max_length = args.integer("--max-length");
  const int64_t ctx = models::lm_context_length(m.lm->config());
  if (max_length <= 0 || max_length > ctx) max_length = ctx;
  return load_text_run(data, split, dup, args.str_or("--test", ""), m.tok, tmpl, max_length, seed);
}

namespace {

// A canonical text split (loaders/text_split.h) in the two parts a reference is checked on: what picks the
// forget, retain and test pairs (kind, holdout, test file, and the seed only where something is drawn at random:
// fraction= or holdout=), and the duplicates added to retain ("none" when the spec names none: then
// `recorded_duplicates`, hamu.json's own field, else "none").
struct SplitParts {
  std::string pairs, duplicates;
};
SplitParts split_parts(const std::string& spec, const std::string& recorded_duplicates) {
  SplitParts out;
  out.duplicates = recorded_duplicates.empty() ? "none" : recorded_duplicates;
  std::string seed;
  bool drawn = false;
  for (size_t start = 0; start <= spec.size();) {
    const size_t comma = std::min(spec.find(',', start), spec.size());
    const std::string item = spec.substr(start, comma - start);
    start = comma + 1;
    if (item.rfind("duplicates=", 0) == 0) {
      out.duplicates = item.substr(11);
    } else if (item.rfind("seed=", 0) == 0) {
      seed = item;
    } else {
      drawn = drawn || item.rfind("fraction=", 0) == 0 || item.rfind("holdout=", 0) == 0;
      out.pairs += (out.pairs.empty() ? "" : ",") + item;
    }
  }
  if (drawn && !seed.empty()) out.pairs += "," + seed;
  return out;
}

const Json* json_path(const Json& j, std::initializer_list<const char*> keys) {
  const Json* at = &j;
  for (const char* k : keys) {
    if (!at->is_object() || !(at = at->find(k))) return nullptr;
  }
  return at;
}

}  // namespace

void check_text_reference(const TextModel& ref, const TextRun& run, bool force) {
  const Json& meta = ref.meta;
  const std::string& path = ref.dir;
  const std::string kind = hamu_json_str(meta, "kind", ""), subset = hamu_json_str(meta, "subset", ""),
                    data = hamu_json_str(meta, "data", ""), split = hamu_json_str(meta, "split", ""),
                    tmpl = hamu_json_str(meta, "template", "");
  if (kind.empty() && subset.empty() && data.empty() && split.empty()) {
    std::fprintf(stderr, "hamu: warning: --reference: %s records no training data, split or subset (no hamu.json from hamu "
                 "train): cannot check it was retrained on this run's retain set\n", path.c_str());
    return;
  }
  std::vector<std::string> diff;
  if (!subset.empty() && subset != "retain") diff.push_back("subset '" + subset + "' (not the retain set)");
  else if (subset.empty() && kind != "retrained")
    diff.push_back((kind.empty() ? std::string("no subset recorded") : "kind '" + kind + "'") + " (not a model retrained on the retain set)");
  if (!data.empty() && data != run.spec.canonical) diff.push_back("data '" + data + "', this run '" + run.spec.canonical + "'");
  const SplitParts mine = split_parts(run.split.spec, "none");
  if (split.empty() || split == "none") {
    diff.push_back("no split (trained on everything), this run's forget set is '" + mine.pairs + "'");
  } else {
    const SplitParts theirs = split_parts(split, hamu_json_str(meta, "duplicates", ""));
    if (theirs.pairs != mine.pairs) diff.push_back("split '" + theirs.pairs + "', this run '" + mine.pairs + "'");
    if (theirs.duplicates != mine.duplicates)
      diff.push_back("duplicates '" + theirs.duplicates + "' added to retain, this run '" + mine.duplicates + "'");
  }
  if (!tmpl.empty() && tmpl != template_name(run.tmpl))
    diff.push_back("template '" + tmpl + "', this run '" + template_name(run.tmpl) + "'");
  // The same specs read other pairs when a file changed since the reference was trained: its recorded hash of
  // the forget, retain (duplicates included) and test pairs is the run's.
  const Json* hash = json_path(meta, {"provenance", "data", "hash"});
  if (diff.empty() && hash && hash->is_string()) {
    const std::string now = qa_pairs_hash({&run.split.forget, &run.split.retain, &run.split.test});
    if (hash->as_string() != now)
      diff.push_back("the forget, retain and test pairs it recorded differ from this run's (data hash " + hash->as_string() +
                     ", this run " + now + "): a data, forget= or test= file changed since it was trained");
  }
  refuse_reference(path, diff, force);
}

TextContext load_text_context(const std::string& model_dir, const Args& args, Device device, uint64_t seed) {
  TextContext ctx(load_text_model(model_dir, device, args.str_or("--lora", ""), seed,
                                  base_dtype_flag(args.str("--base-dtype"))));
  ctx.device = device;
  ctx.seed = seed;
  ctx.run = text_run_for_model(ctx.original, args, seed);
  ctx.stop_ids = generation_stop_ids(ctx.original.source, *ctx.original.lm, ctx.run.tmpl, ctx.original.tok);
  ctx.eval.batch = args.integer("--eval-batch");
  if (ctx.eval.batch < 1) throw InputError("--eval-batch: must be at least 1");
  ctx.eval.batch = std::min<int64_t>(ctx.eval.batch, 256);  // sequences per pass: bounds the [B,T,V] logits
  ctx.eval.pad_id = ctx.run.pad_id;
  ctx.eval_samples = args.integer("--eval-samples");
  if (ctx.eval_samples < 0) throw InputError("--eval-samples: must be >= 0");
  ctx.gen_samples = args.integer("--gen-samples");
  if (ctx.gen_samples < 0) throw InputError("--gen-samples: must be >= 0");
  const std::string ref = args.str_or("--reference", "");
  if (!ref.empty()) {
    ctx.reference = load_text_model(ref, device);
    check_text_reference(*ctx.reference, ctx.run, args.on("--force-reference"));
    if (tokenizer_json_of(ctx.reference->source.base) != tokenizer_json_of(ctx.original.source.base))
      throw InputError("--reference: " + ref + " has another tokenizer than " + model_dir +
                       " (token-level metrics would not compare)");
    ctx.reference_report = evaluate_text_full(*ctx.reference->lm, ctx, ref, true);
  }
  return ctx;
}

std::vector<std::string> greedy_answers(models::CausalLM& lm, const TextContext& ctx, const std::vector<QaPair>& pairs,
                                        const std::vector<QaTokens>& seqs, size_t n) {
  n = std::min(n, std::min(seqs.size(), pairs.size()));
  std::vector<std::string> out;
  if (n == 0) return out;
  std::vector<std::vector<int32_t>> prompts;
  int64_t longest = 0, longest_prompt = 0;
  for (size_t i = 0; i < n; ++i) {
    prompts.emplace_back(seqs[i].ids.begin(), seqs[i].ids.begin() + seqs[i].n_prompt);
    longest = std::max<int64_t>(longest, seqs[i].length() - seqs[i].n_prompt);
    longest_prompt = std::max<int64_t>(longest_prompt, seqs[i].n_prompt);
  }
  models::GenerateOptions go;
  go.stop_ids = ctx.stop_ids;
  go.max_new_tokens =
      std::max<int64_t>(1, std::min<int64_t>(longest + 8, models::lm_context_length(lm.config()) - longest_prompt));
  // Inference mode: the unlearning loop leaves the model in training mode, where LoRA dropout would change the
  // answers (and so exact match and ROUGE-L) of a model whose weights did not change.
  nn::EvalModeScope eval_mode(lm);
  const size_t chunk = 64;
  for (size_t start = 0; start < n; start += chunk) {
    std::vector<std::vector<int32_t>> part(prompts.begin() + int64_t(start),
                                           prompts.begin() + int64_t(std::min(n, start + chunk)));
    models::GenerateResult g = models::generate_greedy(lm, part, go);
    for (size_t k = 0; k < g.tokens.size(); ++k) {
      std::vector<int32_t> ids = g.tokens[k];
      if (!ids.empty() && go.is_stop(ids.back())) ids.pop_back();
      out.push_back(qa_answer_text(ctx.original.tok, template_prompt(ctx.run.tmpl, pairs[start + k].question),
                                   prompts[start + k], ids));
    }
  }
  return out;
}

namespace {

// Greedy answers to up to n pairs (the first n, in split order): exact match of the trimmed answer, and
// ROUGE-L recall against the reference answer.
void add_generation(SplitEval& s, models::CausalLM& lm, const TextContext& ctx, const std::vector<QaPair>& pairs,
                    const std::vector<QaTokens>& seqs) {
  const std::vector<std::string> answers = greedy_answers(lm, ctx, pairs, seqs, size_t(ctx.gen_samples));
  if (answers.empty()) return;
  double em = 0, rouge = 0;
  for (size_t i = 0; i < answers.size(); ++i) {
    em += answers[i] == pairs[i].answer;
    rouge += rouge_l_recall(pairs[i].answer, answers[i]);
  }
  s.gen_n = int64_t(answers.size());
  s.exact_match = em / double(answers.size());
  s.rouge_l = rouge / double(answers.size());
}

std::vector<QaTokens> sample_seqs(const std::vector<QaTokens>& v, int64_t n, uint64_t seed) {
  if (n <= 0 || int64_t(v.size()) <= n) return v;
  std::vector<int64_t> idx = Rng(seed).permutation(int64_t(v.size()));
  idx.resize(size_t(n));
  std::sort(idx.begin(), idx.end());
  std::vector<QaTokens> out;
  for (int64_t i : idx) out.push_back(v[size_t(i)]);
  return out;
}

EvalReport finish_report(EvalReport r, const TextContext& ctx, const std::string& name, bool with_reference) {
  r.model = name;
  r.data = ctx.run.spec.canonical;
  r.split = ctx.run.split.spec;
  if (with_reference && ctx.reference_report) compare_text_to_reference(r, *ctx.reference_report);
  return r;
}

}  // namespace

EvalReport evaluate_text_full(models::CausalLM& lm, const TextContext& ctx, const std::string& name, bool generate) {
  const TextRun& run = ctx.run;
  EvalReport r = evaluate_text_model(lm, {&run.forget, &run.retain, &run.test, &run.duplicate}, ctx.eval);
  if (generate && ctx.gen_samples > 0) {
    add_generation(r.forget, lm, ctx, run.split.forget, run.forget);
    add_generation(r.retain, lm, ctx, run.split.retain, run.retain);
    add_generation(r.test, lm, ctx, run.split.test, run.test);
  }
  return finish_report(std::move(r), ctx, name, true);
}

EvalReport evaluate_text_sampled(models::CausalLM& lm, const TextContext& ctx, const std::string& name) {
  const TextRun& run = ctx.run;
  if (ctx.eval_samples == 0) return finish_report(evaluate_text_model(lm, {&run.forget, &run.retain, &run.test}, ctx.eval), ctx, name, false);
  static const uint64_t kSeed = 0x5EED;
  const std::vector<QaTokens> f = sample_seqs(run.forget, ctx.eval_samples, kSeed),
                              r = sample_seqs(run.retain, ctx.eval_samples, kSeed + 1),
                              t = sample_seqs(run.test, ctx.eval_samples, kSeed + 2);
  return finish_report(evaluate_text_model(lm, {&f, &r, &t}, ctx.eval), ctx, name, false);
}

}  // namespace hamu::cli
