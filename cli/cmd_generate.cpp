// cli/cmd_generate.cpp: `hamu generate` — greedy answers of a language model directory to questions, each
// rendered by the same prompt template as training, so a person can read what the model says.
#include <algorithm>
#include <cstdio>

#include "cli/commands.h"
#include "cli/common.h"
#include "cli/lm_setup.h"
#include "cli/provenance.h"
#include "cli/text_setup.h"
#include "engine/progress.h"
#include "loaders/qa.h"
#include "models/lm/generate.h"

namespace hamu::cli {

namespace {

struct Prompt {
  std::string question, reference;  // reference: the file's answer ("" when it has none)
  int64_t line = 0;                 // the row's line in --prompts (0: --prompt)
};

// QA JSON lines (loaders/qa.h). Rows need a question; when every row also has an answer it is shown as the
// reference, otherwise the file is read as questions only.
std::vector<Prompt> read_prompts(const std::string& path) {
  QaDataset data;
  bool with_answers = true;
  try {
    data = read_qa_file(path);
  } catch (const InputError& first) {
    QaFields questions_only;
    questions_only.answer = questions_only.question;
    try {
      data = read_qa_file(path, questions_only);
    } catch (const InputError&) {
      throw InputError(std::string("--prompts: ") + first.what());
    }
    with_answers = false;
  }
  std::vector<Prompt> out;
  for (const QaPair& p : data.pairs) out.push_back({p.question, with_answers ? p.answer : "", p.line});
  return out;
}

}  // namespace

int cmd_generate(int argc, char** argv) {
  std::vector<Flag> flags = {
      {"--model", "DIR", "a Hugging Face model directory with its tokenizer.json (gpt2 or llama family), or a LoRA adapter directory", ""},
      {"--lora", "DIR", "a LoRA adapter directory (PEFT layout) applied to --model", ""},
      base_dtype_help(),
      {"--prompt", "TEXT", "one question", ""},
      {"--prompts", "FILE", "QA JSON lines: the question field of every row (the answer, if any, is shown as the reference)", ""},
      {"--template", "T", "how a question becomes a prompt: plain, llama2-chat or chatml (default: the model's hamu.json, "
                          "as in training, else plain)", ""},
      {"--max-new-tokens", "N", "longest answer in tokens (a sequence also stops at the model's end-of-sequence ids and the template's end token)", "64"},
      {"--batch", "N", "questions generated together (left-padded)", "8"},
      {"--json", "FILE", "write questions and answers as JSON", ""},
  };
  for (Flag f : common_flags()) flags.push_back(f);
  Args args("generate", "--model DIR [--lora ADAPTER_DIR] --prompt TEXT | --prompts FILE.jsonl [--template T] [--max-new-tokens N] [--json FILE]",
            flags);
  refuse_cuda_graph(args);
  if (!args.parse(argc, argv)) return 0;
  const std::string dir = args.required("--model");
  const std::string lora = args.str_or("--lora", "");
  if (!lora.empty()) resolve_lm_source(dir, lora, false);  // --lora on an image model: refused before anything else
  if (args.has("--prompt") == args.has("--prompts")) throw InputError("give exactly one of --prompt TEXT and --prompts FILE");
  const std::string json_path = args.str_or("--json", "");
  if (!json_path.empty()) check_output_path("--json", json_path);
  const std::string template_arg = args.str_or("--template", "");
  if (!template_arg.empty()) template_flag(template_arg);  // a bad value is refused before the model is read
  const int64_t max_new = args.integer("--max-new-tokens"), batch = args.integer("--batch");
  if (max_new < 1) throw InputError("--max-new-tokens: must be at least 1");
  if (batch < 1) throw InputError("--batch: must be at least 1");
  const Device device = apply_common(args);
  const DType base_dtype = base_dtype_flag(args.str("--base-dtype"));
  const std::vector<Prompt> prompts =
      args.has("--prompt") ? std::vector<Prompt>{{args.str("--prompt"), ""}} : read_prompts(args.str("--prompts"));
  if (prompts.empty()) throw InputError("--prompts: no questions in " + args.str("--prompts"));
  const LmWithTokenizer m = load_lm_with_tokenizer(dir, device, lora, false, 0, base_dtype);
  const PromptTemplate tmpl = template_for_model(template_arg, m.source);
  models::GenerateOptions opt;
  opt.max_new_tokens = max_new;
  opt.stop_ids = generation_stop_ids(m.source, *m.lm, tmpl, m.tok);

  // Every prompt rendered and checked against the context before any work.
  const int64_t context = models::lm_context_length(m.lm->config());
  std::vector<std::vector<int32_t>> prompt_ids;
  for (size_t i = 0; i < prompts.size(); ++i) {
    prompt_ids.push_back(m.tok.encode(template_prompt(tmpl, prompts[i].question), true));
    if (int64_t(prompt_ids.back().size()) > context)
      throw InputError((args.has("--prompt") ? std::string("--prompt")
                                             : "--prompts: " + args.str("--prompts") + ":" + std::to_string(prompts[i].line) +
                                                   ": the question") +
                       " is " + std::to_string(prompt_ids.back().size()) + " tokens in template " + template_name(tmpl) +
                       ", more than the model's context of " + std::to_string(context));
  }
  std::vector<std::vector<int32_t>> answers;
  std::vector<models::GenerateStop> stops;
  int64_t generated = 0;
  const double t0 = now_s();
  Progress bar(int64_t(prompts.size()), "generate", "q/s");
  for (size_t first = 0; first < prompts.size(); first += size_t(batch)) {
    const std::vector<std::vector<int32_t>> ids(prompt_ids.begin() + long(first),
                                                prompt_ids.begin() + long(std::min(prompts.size(), first + size_t(batch))));
    models::GenerateResult r = models::generate_greedy(*m.lm, ids, opt);
    for (size_t i = 0; i < r.tokens.size(); ++i) {
      generated += int64_t(r.tokens[i].size());
      answers.push_back(std::move(r.tokens[i]));
      stops.push_back(r.stops[i]);
    }
    bar.update(int64_t(answers.size()));
  }
  bar.finish();
  const double seconds = now_s() - t0;

  Json stop_ids_json = Json::array();
  for (const int32_t id : opt.stop_ids) stop_ids_json.push_back(Json(int64_t(id)));
  Json results = Json::array();
  for (size_t i = 0; i < prompts.size(); ++i) {
    const std::vector<int32_t>& a = answers[i];
    const char* stopped = stops[i] == models::GenerateStop::end      ? "end"
                          : stops[i] == models::GenerateStop::length ? "length"
                                                                     : "context";
    const std::string text = m.tok.decode(a, true);
    std::printf("Q: %s\nA: %s\n", prompts[i].question.c_str(), text.c_str());
    if (!prompts[i].reference.empty()) std::printf("   (reference: %s)\n", prompts[i].reference.c_str());
    std::printf("\n");
    Json r = Json::object({{"question", prompts[i].question}, {"answer", text}, {"tokens", int64_t(a.size())},
                           {"stopped", stopped}});
    if (!prompts[i].reference.empty()) r.set("reference", prompts[i].reference);
    results.push_back(r);
  }
  std::fprintf(stderr, "generated %lld token%s for %zu question%s in %.2f s (%.1f tokens/s)\n", (long long)generated,
               generated == 1 ? "" : "s", prompts.size(), prompts.size() == 1 ? "" : "s", seconds,
               seconds > 0 ? double(generated) / seconds : 0.0);
  if (!json_path.empty()) {
    Json prov = provenance_json(args, device);
    std::vector<QaPair> asked;  // the questions (and references) read: the data's identity
    for (const Prompt& p : prompts) asked.push_back(QaPair{p.question, p.reference, "", {}, 0});
    prov.set("data", text_data_identity_json(args.has("--prompt") ? "--prompt" : args.str("--prompts"), {&asked}));
    set_lm_parents(prov, m.source);
    save_json(json_path, Json::object({{"model", dir},
                                       {"base_model", m.source.base},
                                       {"adapter", m.source.adapter.empty() ? Json() : Json(m.source.adapter)},
                                       {"template", template_name(tmpl)},
                                       {"max_new_tokens", max_new},
                                       {"stop_ids", stop_ids_json},
                                       {"results", results},
                                       {"tokens", generated},
                                       {"seconds", seconds},
                                       {"provenance", prov}}));
  }
  return 0;
}

}  // namespace hamu::cli
