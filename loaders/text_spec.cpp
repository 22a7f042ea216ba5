// loaders/text_spec.cpp: --data SPEC parsing for the text data sets (qa:FILE, wordnet-qa) and their loading.
#include "loaders/text_spec.h"

#include <charconv>

#include "engine/error.h"

namespace hamu {
namespace {

[[noreturn]] void bad(const std::string& spec, const std::string& why) {
  throw InputError("--data " + spec + ": " + why);
}

template <class Int>
Int parse_count(const std::string& spec, const std::string& text, const char* what, Int lo) {
  Int v = 0;
  const auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || ec != std::errc() || p != text.data() + text.size() || v < lo)
    bad(spec, std::string(what) + " '" + text + "' is not an integer >= " + std::to_string(lo));
  return v;
}

}  // namespace

std::vector<std::string> split_text_commas(std::string_view s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (true) {
    const size_t comma = s.find(',', start);
    out.emplace_back(s.substr(start, comma == std::string_view::npos ? std::string_view::npos : comma - start));
    if (comma == std::string_view::npos) return out;
    start = comma + 1;
  }
}

std::vector<std::pair<std::string, std::string>> parse_text_options(const std::string& flag, const std::string& spec,
                                                                    const std::vector<std::string>& items) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& item : items) {
    const size_t eq = item.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == item.size())
      throw InputError(flag + " " + spec + ": '" + item + "' is not KEY=VALUE");
    std::string key = item.substr(0, eq);
    for (const auto& [k, v] : out)
      if (k == key) throw InputError(flag + " " + spec + ": '" + key + "' is given twice");
    out.emplace_back(std::move(key), item.substr(eq + 1));
  }
  return out;
}

bool is_text_data_spec(const std::string& spec) {
  const std::string kind = spec.substr(0, spec.find_first_of(":,"));
  return kind == "qa" || kind == "wordnet-qa";
}

TextDataSpec parse_text_data_spec(const std::string& spec) {
  std::vector<std::string> items = split_text_commas(spec);
  std::string head = items.front();
  items.erase(items.begin());
  const size_t colon = head.find(':');
  TextDataSpec out;
  out.kind = head.substr(0, colon);
  const std::string arg = colon == std::string::npos ? "" : head.substr(colon + 1);
  const auto options = parse_text_options("--data", spec, items);
  if (out.kind == "qa") {
    if (arg.empty()) bad(spec, "needs a file: qa:FILE.jsonl[,q=FIELD,a=FIELD]");
    out.path = arg;
    for (const auto& [k, v] : options) {
      if (k == "q") out.fields.question = v;
      else if (k == "a") out.fields.answer = v;
      else bad(spec, "unknown option '" + k + "' (q=FIELD, a=FIELD)");
    }
    if (out.fields.question == out.fields.answer) bad(spec, "the question and answer fields are both '" + out.fields.question + "'");
    out.canonical = "qa:" + out.path;
    if (out.fields.question != QaFields{}.question) out.canonical += ",q=" + out.fields.question;
    if (out.fields.answer != QaFields{}.answer) out.canonical += ",a=" + out.fields.answer;
  } else if (out.kind == "wordnet-qa") {
    if (colon != std::string::npos) out.wordnet.size = parse_count<int64_t>(spec, arg, "size", 1);
    for (const auto& [k, v] : options) {
      if (k == "seed") out.wordnet.seed = parse_count<uint64_t>(spec, v, "seed", 0);
      else if (k == "dir") out.wordnet.dir = v;
      else bad(spec, "unknown option '" + k + "' (seed=S, dir=DIR)");
    }
    out.canonical = wordnet_qa_spec(out.wordnet);
  } else {
    throw InputError("--data: unknown text data set '" + spec + "' (expected qa:FILE.jsonl or wordnet-qa[:N])");
  }
  return out;
}

QaDataset load_text_data(const TextDataSpec& spec) {
  QaDataset d = spec.kind == "qa" ? read_qa_file(spec.path, spec.fields) : build_wordnet_qa(spec.wordnet);
  d.source = spec.canonical;
  return d;
}

QaDataset load_text_data(const std::string& spec) { return load_text_data(parse_text_data_spec(spec)); }

}  // namespace hamu
