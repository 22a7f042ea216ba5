// loaders/template.cpp: prompt templates and completion-only QA tokenisation.
#include "loaders/template.h"

#include <algorithm>

#include "engine/error.h"

namespace hamu {

PromptTemplate parse_template(std::string_view name) {
  if (name == "plain") return PromptTemplate::plain;
  if (name == "llama2-chat") return PromptTemplate::llama2_chat;
  if (name == "chatml") return PromptTemplate::chatml;
  throw InputError("unknown template '" + std::string(name) + "' (known: plain, llama2-chat, chatml)");
}

const char* template_name(PromptTemplate t) {
  switch (t) {
    case PromptTemplate::plain: return "plain";
    case PromptTemplate::llama2_chat: return "llama2-chat";
    case PromptTemplate::chatml: return "chatml";
  }
  return "?";
}

std::string template_prompt(PromptTemplate t, std::string_view q) {
  switch (t) {
    case PromptTemplate::plain: return "Question: " + std::string(q) + "\nAnswer: ";
    case PromptTemplate::llama2_chat: return "[INST] " + std::string(q) + " [/INST] ";
    case PromptTemplate::chatml: return "<|im_start|>user\n" + std::string(q) + "<|im_end|>\n<|im_start|>assistant\n";
  }
  return "";
}

int32_t template_end_id(PromptTemplate t, const Tokenizer& tok) {
  if (t == PromptTemplate::chatml) {
    const int32_t id = tok.token_to_id("<|im_end|>");
    if (id < 0) throw InputError("template chatml needs token <|im_end|> (tokenizer " + tok.source() + " has none)");
    return id;
  }
  if (tok.eos_id() < 0)
    throw InputError(std::string("template ") + template_name(t) + " needs an EOS token (tokenizer " + tok.source() + " has none)");
  return tok.eos_id();
}

QaTokens tokenize_qa(const Tokenizer& tok, PromptTemplate t, std::string_view question, std::string_view answer,
                     const QaTemplateOptions& options) {
  if (options.max_length < 0) throw InputError("max_length must be 0 (no limit) or positive");
  const int32_t end = template_end_id(t, tok);
  const std::string prompt = template_prompt(t, question);
  QaTokens out;
  out.n_prompt = int64_t(tok.encode(prompt, true).size());
  out.ids = tok.encode(prompt + std::string(answer), true);
  out.ids.push_back(end);
  if (options.max_length > 0 && out.length() > options.max_length) {
    if (options.overlong == Overlong::refuse)
      throw InputError("QA pair is " + std::to_string(out.length()) + " tokens, more than max_length " + std::to_string(options.max_length) +
                       " (question starts '" + std::string(question.substr(0, 40)) + "')");
    out.ids.resize(size_t(options.max_length));
    out.truncated = true;
  }
  out.n_prompt = std::min(out.n_prompt, out.length());
  out.labels.resize(out.ids.size());
  for (size_t i = 0; i < out.ids.size(); ++i) out.labels[i] = int64_t(i) < out.n_prompt ? kIgnoreLabel : out.ids[i];
  return out;
}

QaBatchTokens tokenize_qa_pairs(const Tokenizer& tok, PromptTemplate t,
                                const std::vector<std::pair<std::string, std::string>>& pairs,
                                const QaTemplateOptions& options) {
  QaBatchTokens out;
  out.pairs.reserve(pairs.size());
  int64_t no_answer = 0;
  for (const auto& [q, a] : pairs) {
    out.pairs.push_back(tokenize_qa(tok, t, q, a, options));
    out.truncated += out.pairs.back().truncated;
    no_answer += out.pairs.back().n_prompt == out.pairs.back().length();
  }
  if (out.truncated)
    out.warning = "warning: " + std::to_string(out.truncated) + " of " + std::to_string(pairs.size()) + " QA pairs truncated to " +
                  std::to_string(options.max_length) + " tokens" +
                  (no_answer ? " (" + std::to_string(no_answer) + " keep no answer token and add no loss)" : "");
  return out;
}

std::string qa_answer_text(const Tokenizer& tok, const std::string& prompt, const std::vector<int32_t>& prompt_ids,
                           const std::vector<int32_t>& generated) {
  std::vector<int32_t> all = prompt_ids;
  all.insert(all.end(), generated.begin(), generated.end());
  const std::string full = tok.decode(all, true), head = tok.decode(tok.encode(prompt, true), true);
  std::string answer = full.compare(0, head.size(), head) == 0 ? full.substr(head.size()) : tok.decode(generated, true);
  const size_t a = answer.find_first_not_of(" \t\n"), b = answer.find_last_not_of(" \t\n");
  return a == std::string::npos ? "" : answer.substr(a, b - a + 1);
}

}  // namespace hamu
