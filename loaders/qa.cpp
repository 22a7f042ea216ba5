// loaders/qa.cpp: the QA file reader: JSON lines or a JSON array, one validated row at a time.
#include "loaders/qa.h"

#include "engine/error.h"
#include "engine/json.h"
#include "loaders/dataset.h"

namespace hamu {
namespace {

// One row is small (a TOFU row is under 2 KB); these bound what a hostile row can make the parser
// build (~100 bytes per JSON value) independently of the file's size.
constexpr size_t kMaxRowValues = size_t(1) << 18;
constexpr int kMaxRowDepth = 32;
// What a stored pair costs beyond its text (strings, vector, bookkeeping), for the memory budget.
constexpr int64_t kPairOverheadBytes = int64_t(sizeof(QaPair)) + 64;

bool is_blank(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

std::string trim(std::string_view s) {
  size_t a = 0, b = s.size();
  while (a < b && is_blank(s[a])) ++a;
  while (b > a && is_blank(s[b - 1])) --b;
  return std::string(s.substr(a, b - a));
}

class RowReader {
 public:
  RowReader(const std::string& source, const QaFields& fields, int64_t budget)
      : source_(source), fields_(fields), budget_(budget) {}

  // Parses one row's JSON text that starts on line `line`.
  void add(std::string_view text, int64_t line, QaDataset& out) {
    const std::string where = source_ + ":" + std::to_string(line);
    if (int64_t(text.size()) > kMaxQaRowBytes)
      throw InputError(where + ": the row is " + byte_size_str(int64_t(text.size())) + ", above the " +
                       byte_size_str(kMaxQaRowBytes) + " a QA row may have");
    JsonParseOptions opt;
    opt.max_depth = kMaxRowDepth;
    opt.max_values = kMaxRowValues;
    opt.source = where;
    const Json row = Json::parse(text, opt);
    QaPair p = parse_row(row, where);
    p.line = line;
    used_ += cost(p);
    if (used_ > budget_)
      throw InputError(where + ": the pairs read so far need more than the readers' memory limit of " +
                       byte_size_str(data_memory_limit()) + " (HAMU_MAX_MEMORY sets it)");
    out.pairs.push_back(std::move(p));
  }

 private:
  const std::string& source_;
  const QaFields& fields_;
  int64_t budget_, used_ = 0;

  static int64_t cost(const QaPair& p) {
    int64_t c = kPairOverheadBytes + int64_t(p.question.size() + p.answer.size() + p.group.size());
    for (const auto& para : p.paraphrases)
      c += int64_t(sizeof(QaParaphrase)) + int64_t(para.question.size() + para.answer.size());
    return c;
  }

  // A required text field: a non-empty string, or a list whose first element is one.
  static std::string text_field(const Json& obj, const std::string& name, const std::string& where,
                                const char* what = "field") {
    const Json* v = obj.find(name);
    if (!v || v->is_null()) throw InputError(where + ": missing " + what + " '" + name + "'");
    const Json* s = v;
    if (v->is_array()) {
      if (v->size() == 0) throw InputError(where + ": " + what + " '" + name + "' is an empty list");
      s = &v->at(size_t(0));
    }
    if (!s->is_string())
      throw InputError(where + ": " + what + " '" + name + "' is " + (v->is_array() ? "a list of " : "a ") +
                       Json::type_name(s->type()) + ", expected a string");
    // Kept verbatim: the published code and transformers tokenise the text as it is, so surrounding whitespace
    // is part of the prompt or answer tokens; a field of whitespace alone is refused as empty.
    if (trim(s->as_string()).empty()) throw InputError(where + ": " + what + " '" + name + "' is empty");
    return s->as_string();
  }

  QaPair parse_row(const Json& row, const std::string& where) const {
    if (!row.is_object())
      throw InputError(where + ": a row must be a JSON object, found " + std::string(Json::type_name(row.type())));
    QaPair p;
    p.question = text_field(row, fields_.question, where);
    p.answer = text_field(row, fields_.answer, where);
    if (const Json* g = row.find("group"); g && !g->is_null()) {
      if (g->is_string()) p.group = trim(g->as_string());
      else if (g->is_integer()) p.group = std::to_string(g->as_int());
      else throw InputError(where + ": field 'group' is a " + std::string(Json::type_name(g->type())) +
                            ", expected a string or an integer");
      if (p.group.empty()) throw InputError(where + ": field 'group' is empty");
    }
    if (const Json* ps = row.find("paraphrases"); ps && !ps->is_null()) {
      if (!ps->is_array())
        throw InputError(where + ": field 'paraphrases' is a " + std::string(Json::type_name(ps->type())) +
                         ", expected an array");
      for (size_t i = 0; i < ps->size(); ++i) {
        const Json& item = ps->at(i);
        const std::string at = where + ": paraphrases[" + std::to_string(i) + "]";
        QaParaphrase para;
        if (item.is_string()) {
          para.question = item.as_string();
          if (trim(para.question).empty()) throw InputError(at + " is empty");
          para.answer = p.answer;
        } else if (item.is_object()) {
          para.question = text_field(item, fields_.question, at, "key");
          const Json* a = item.find(fields_.answer);
          para.answer = a && !a->is_null() ? text_field(item, fields_.answer, at, "key") : p.answer;
        } else {
          throw InputError(at + " is a " + std::string(Json::type_name(item.type())) +
                           ", expected a string or an object with '" + fields_.question + "'");
        }
        p.paraphrases.push_back(std::move(para));
      }
    }
    return p;
  }
};

// 1-based line of byte `pos`, counting forward from (from_pos, from_line).
int64_t advance_line(std::string_view text, size_t from_pos, size_t pos, int64_t from_line) {
  for (size_t i = from_pos; i < pos; ++i)
    if (text[i] == '\n') ++from_line;
  return from_line;
}

void parse_jsonl(std::string_view text, size_t start, RowReader& reader, QaDataset& out) {
  int64_t line = advance_line(text, 0, start, 1);
  size_t pos = start;
  while (pos < text.size()) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string_view::npos) eol = text.size();
    const std::string_view row = text.substr(pos, eol - pos);
    bool blank = true;
    for (char c : row) blank = blank && is_blank(c);
    if (!blank) reader.add(row, line, out);
    pos = eol + 1;
    ++line;
  }
}

// Cuts one JSON array into its top-level elements without building the whole document, so each row
// is parsed (and its error placed) on its own, with the line where it starts.
void parse_array(std::string_view text, size_t start, const std::string& source, RowReader& reader,
                 QaDataset& out) {
  size_t pos = start + 1;  // past '['
  int64_t line = advance_line(text, 0, start, 1);
  size_t line_pos = start;
  auto where = [&](size_t p) {
    line = advance_line(text, line_pos, p, line);
    line_pos = p;
    return source + ":" + std::to_string(line);
  };
  auto skip_blank = [&] {
    while (pos < text.size() && is_blank(text[pos])) ++pos;
  };
  skip_blank();
  if (pos < text.size() && text[pos] == ']') {
    ++pos;
  } else {
    while (true) {
      skip_blank();
      const size_t elem = pos;
      int64_t depth = 0;
      bool in_string = false;
      for (; pos < text.size(); ++pos) {
        const char c = text[pos];
        if (in_string) {
          if (c == '\\') ++pos;
          else if (c == '"') in_string = false;
        } else if (c == '"') {
          in_string = true;
        } else if (c == '{' || c == '[') {
          ++depth;
        } else if (c == '}' || c == ']') {
          if (depth == 0) break;
          --depth;
        } else if (c == ',' && depth == 0) {
          break;
        }
      }
      if (pos >= text.size()) throw InputError(where(elem) + ": the JSON array is not closed (truncated file?)");
      const std::string_view row = text.substr(elem, pos - elem);
      if (trim(row).empty()) throw InputError(where(elem) + ": empty array element (a stray comma?)");
      const std::string at = where(elem);
      reader.add(row, line, out);
      if (text[pos] == '}') throw InputError(at + ": unexpected '}' in the JSON array");
      if (text[pos++] == ']') break;
    }
  }
  skip_blank();
  if (pos < text.size()) throw InputError(where(pos) + ": unexpected data after the JSON array");
}

QaDataset parse_text(std::string_view text, const std::string& source, const QaFields& fields, int64_t budget) {
  QaDataset out;
  out.source = source;
  RowReader reader(out.source, fields, budget);
  size_t start = 0;
  if (text.substr(0, 3) == "\xEF\xBB\xBF") start = 3;  // UTF-8 byte order mark
  size_t first = start;
  while (first < text.size() && is_blank(text[first])) ++first;
  if (first < text.size() && text[first] == '[') parse_array(text, first, out.source, reader, out);
  else parse_jsonl(text, start, reader, out);
  if (out.pairs.empty())
    throw InputError(source + ": no QA pairs in it (expected one JSON object per line, or a JSON array of objects)");
  return out;
}

}  // namespace

QaDataset parse_qa_text(std::string_view text, const std::string& source, const QaFields& fields) {
  return with_memory_guard(source, [&] { return parse_text(text, source, fields, data_memory_limit()); });
}

QaDataset read_qa_file(const std::string& path, const QaFields& fields) {
  return with_memory_guard(path, [&] {
    const std::vector<uint8_t> bytes = read_file_bytes(path, kMaxQaFileBytes);
    const std::string_view text(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    return parse_text(text, path, fields, data_memory_limit() - int64_t(bytes.size()));
  });
}

std::string qa_key(std::string_view question, std::string_view answer) {
  // Length-prefixed, so no choice of separator can make two different pairs collide.
  std::string k = std::to_string(question.size());
  k.push_back(':');
  k.append(question).append(answer);
  return k;
}

std::string qa_key(const QaPair& p) { return qa_key(p.question, p.answer); }

std::vector<std::pair<std::string, std::string>> qa_text_pairs(const std::vector<QaPair>& pairs) {
  std::vector<std::pair<std::string, std::string>> out;
  out.reserve(pairs.size());
  for (const auto& p : pairs) out.emplace_back(p.question, p.answer);
  return out;
}

}  // namespace hamu
