// loaders/qa.h: question-answer data (TOFU-style JSON lines or a JSON array file), validated row by row.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace hamu {

// A rewording of a pair: another question with (usually) the same answer.
struct QaParaphrase {
  std::string question, answer;
};

struct QaPair {
  std::string question, answer;            // verbatim (surrounding whitespace kept), never blank
  std::string group;                       // the row's `group` field ("" when absent): an author, a topic
  std::vector<QaParaphrase> paraphrases;   // the row's `paraphrases` field, in file order
  int64_t line = 0;                        // 1-based line of the row in its file (0: built in memory)
};

struct QaDataset {
  std::vector<QaPair> pairs;
  std::string source;  // the file (or "wordnet-qa:...") the pairs came from, for messages and reports
};

// Names of the question and answer fields (TOFU's by default); `q=FIELD,a=FIELD` in the data spec.
struct QaFields {
  std::string question = "question";
  std::string answer = "answer";
};

// Limits that keep a hostile or mistaken file from exhausting memory.
inline constexpr int64_t kMaxQaFileBytes = int64_t(1) << 30;  // the whole file
inline constexpr int64_t kMaxQaRowBytes = int64_t(4) << 20;   // one row (one line, or one array element)

// Reads FILE. The first non-blank byte picks the layout: '[' = one JSON array of row objects, anything
// else = JSON lines (one object per line; blank lines skipped; a UTF-8 byte order mark allowed).
// Per row: the question and answer fields are required strings, not blank, kept verbatim (a list uses its first
// element, as the published code does); `group` is an optional string or integer; `paraphrases` is an
// optional array whose items are strings (another question, same answer) or objects with the question
// field and an optional answer field. Other fields are ignored. Every problem is an InputError
// "FILE:LINE: what" (LINE is where the row starts); a file without rows is one too.
QaDataset read_qa_file(const std::string& path, const QaFields& fields = {});
// The same over text already in memory; `source` names it in errors (the fuzz target's entry point).
QaDataset parse_qa_text(std::string_view text, const std::string& source, const QaFields& fields = {});

// Identity of a pair for matching across files: question and answer, exactly (both verbatim).
std::string qa_key(const QaPair& p);
std::string qa_key(std::string_view question, std::string_view answer);

// (question, answer) pairs in order, the form tokenize_qa_pairs takes.
std::vector<std::pair<std::string, std::string>> qa_text_pairs(const std::vector<QaPair>& pairs);

}  // namespace hamu
