// cli/text_setup.h: what the text paths of `hamu train`, `unlearn` and `compare` share: the text data,
// split and tokenisation of a run, a text model directory's hamu.json (data, split, template, seed), and
// the evaluation of a language model on the split.
#pragma once
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cli/args.h"
#include "cli/lm_setup.h"
#include "engine/json.h"
#include "loaders/qa.h"
#include "loaders/template.h"
#include "loaders/text_spec.h"
#include "loaders/text_split.h"
#include "loaders/tokenizer.h"
#include "models/lm/lm.h"
#include "unlearn/text_metrics.h"

namespace hamu::cli {

// The value of `flag` among the subcommand's arguments (argv[0] is the first flag), else in the --config file
// given ("" when absent), read before the subcommand parses its flags: it decides whether the text path handles
// the command.
std::string raw_flag(int argc, char** argv, const std::string& flag);
// True when a command line is a text run: --data names text (qa:FILE, wordnet-qa), --model is a Hugging Face
// or LoRA adapter directory, or --lora is given (the text path then refuses an image model clearly).
bool is_text_command(int argc, char** argv);
// The text forms of train, eval and generate refuse --cuda-graph with the reason (the image forms take it).
void refuse_cuda_graph(Args& args);

// DIR/hamu.json: what hamu knows about a text model it trained or unlearned (data, split, template, seed,
// kind, ...). Empty object when absent.
Json read_hamu_json(const std::string& dir);
std::string hamu_json_str(const Json& meta, const std::string& key, const std::string& fallback);
// The prompt template of `hamu eval` and `hamu generate`: --template's value when given, else the template the
// model's hamu.json records (the adapter's, else the model directory's: what it was trained or unlearned with),
// else plain. A model trained under llama2-chat scored or prompted in plain would answer another prompt.
PromptTemplate template_for_model(const std::string& flag_value, const LmSource& src);
// The same rule on a hamu.json already read (`meta`: the adapter's, else the model directory's).
PromptTemplate template_from_meta(const std::string& flag_value, const Json& meta);

// The tokenised splits of one text run.
struct TextRun {
  TextDataSpec spec;
  QaDataset data;
  TextSplit split;
  PromptTemplate tmpl = PromptTemplate::plain;
  std::vector<QaTokens> forget, retain, test, duplicate;
  int32_t pad_id = 0;
  int64_t truncated = 0;
};

// Loads the data, makes the split (empty split_spec: everything is retain, no test) and tokenises every
// split with `tok` and the template, truncating at max_length (counted, warned on stderr).
TextRun load_text_run(const std::string& data_spec, const std::string& split_spec, const std::string& duplicates,
                      const std::string& test_file, const Tokenizer& tok, PromptTemplate tmpl, int64_t max_length,
                      uint64_t seed);

// A causal LM directory (config.json + model.safetensors + tokenizer.json [+ hamu.json]), loaded; or a LoRA
// adapter on one (--model ADAPTER_DIR, --model DIR --lora ADAPTER_DIR, or --lora SPEC for fresh adapters).
struct TextModel {
  std::string dir;  // what --model named
  LmSource source;  // the base directory (its tokenizer.json) and the adapter
  std::shared_ptr<models::CausalLM> lm;
  Tokenizer tok;
  Json meta;  // hamu.json of the adapter directory, else of the model directory (empty object when absent)
};
// lora: --lora's value ("" = none); a spec is accepted (fresh adapters seeded by `seed`). base_dtype: --base-dtype's
// (base_dtype_flag). load_lm_with_tokenizer's checks and errors, plus hamu.json.
TextModel load_text_model(const std::string& dir, Device device, const std::string& lora = "", uint64_t seed = 0,
                          DType base_dtype = DType::f32);
// Another copy of the same model (base + the same adapter): the unlearning run's working copy and the frozen
// original of kl / scrub / npo.
std::shared_ptr<models::CausalLM> fresh_text_lm(const TextModel& m, Device device);

// The run's data, split and tokens from --data, --split, --duplicates, --template, --test, --max-length, each
// defaulting to what the model's hamu.json records (InputError when data or split is known from neither).
TextRun text_run_for_model(const TextModel& m, const Args& args, uint64_t seed);

// A --reference (the retrained model) must have been trained on this run's retain set: its hamu.json must record
// subset retain (kind retrained), the run's data spec, split (a random fraction's or holdout's seed included),
// duplicates added to retain and template; when all of these agree, the data hash it recorded (of the forget,
// retain and test pairs read, cli/provenance.h) must be the run's, else a file changed. Differences: InputError
// (exit 2) naming them, unless `force` (--force-reference): then a warning. A reference that records none of
// these (a Hugging Face directory without hamu.json) cannot be checked: a warning on stderr.
void check_text_reference(const TextModel& ref, const TextRun& run, bool force);

// Everything `hamu unlearn` and `hamu compare` need on text, read and checked before anything runs.
struct TextContext {
  explicit TextContext(TextModel m) : original(std::move(m)) {}
  TextModel original;
  std::optional<TextModel> reference;
  std::optional<EvalReport> reference_report;
  TextRun run;
  TextEvalOptions eval;
  int64_t eval_samples = 0;  // intermediate evaluations use at most this many sequences per split (0 = all)
  int64_t gen_samples = 0;   // greedy answers scored per split in full evaluations (0 = none)
  // Where greedy answers stop (generation_stop_ids of the original: its eos ids and the template's end). The
  // reference's answers stop at the same ids (its tokenizer is the original's).
  std::vector<int32_t> stop_ids;
  Device device;
  uint64_t seed = 0;
};
TextContext load_text_context(const std::string& model_dir, const Args& args, Device device, uint64_t seed);
// Flags of the text context beyond the unlearning options: --lora, --template, --duplicates, --test,
// --max-length, --gen-samples, --base-dtype.
std::vector<Flag> text_context_flags();

// Greedy answers (prompt tokens of seqs, stopping at ctx.stop_ids) of the first n sequences, decoded
// and trimmed; pairs[i] is the pair seqs[i] was tokenised from.
std::vector<std::string> greedy_answers(models::CausalLM& lm, const TextContext& ctx, const std::vector<QaPair>& pairs,
                                        const std::vector<QaTokens>& seqs, size_t n);


// Full evaluation (with gaps and the KS test against the reference when one is loaded, and generation
// metrics on up to ctx.gen_samples pairs per split when `generate`).
EvalReport evaluate_text_full(models::CausalLM& lm, const TextContext& ctx, const std::string& name, bool generate);
// On a seeded subsample of at most ctx.eval_samples sequences per split (intermediate points).
EvalReport evaluate_text_sampled(models::CausalLM& lm, const TextContext& ctx, const std::string& name);

// Writes DIR (config.json, model.safetensors, tokenizer.json = tokenizer_json, tokenizer_config.json naming
// <|endoftext|> as BOS/EOS, hamu.json = meta), each file atomically. base_dir: the directory the model was made
// from ("" = none); its generation_config.json goes along unchanged, as transformers' save_pretrained keeps a
// model's generation config (its eos_token_id list decides where generation stops, models/lm/generate.h).
void save_text_model(const std::string& dir, models::CausalLM& lm, const std::string& tokenizer_json, const Json& meta,
                     const std::string& base_dir = "");
// The tokenizer.json text of a model directory (copied when a fine-tuned or unlearned model is saved).
std::string tokenizer_json_of(const std::string& dir);
// Writes a LoRA run's result: the adapter in PEFT's layout (DIR/adapter_config.json naming `base` as
// base_model_name_or_path, DIR/adapter_model.safetensors) and DIR/hamu.json = meta (none for DIR ""); with merge_dir, also the
// adapter folded into the base (models::merge_lora; the model keeps no adapter afterwards) as a plain Hugging
// Face directory (save_text_model, hamu.json = meta plus "merged_from": DIR). A bfloat16 base (--base-dtype) is
// not merged into: the adapter goes into the float32 base read again from `base` (models::merge_lora_into).
void save_text_adapter(const std::string& dir, models::CausalLM& lm, const std::string& base, const Json& meta,
                       const std::string& merge_dir, const std::string& tokenizer_json);

}  // namespace hamu::cli
