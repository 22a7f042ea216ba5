// tests/test_qa_data.cpp: QA files (JSON lines and arrays), text data specs, text splits with
// holdout/test and duplicates, WordNet parsing and the wordnet-qa sample.
#include <doctest/doctest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "engine/error.h"
#include "engine/json.h"
#include "loaders/qa.h"
#include "loaders/template.h"
#include "loaders/text_spec.h"
#include "loaders/text_split.h"
#include "loaders/tokenizer.h"
#include "loaders/wordnet_qa.h"
#include "tests/files.h"

using namespace hamu;
using namespace hamu::testing;

namespace {

const std::string kWordnetFixtures = (std::filesystem::path(__FILE__).parent_path() / "fixtures" / "wordnet").string();

void write_text(const std::string& path, const std::string& text) { write_bytes(path, Bytes(text.begin(), text.end())); }

std::set<std::string> keys_of(const std::vector<QaPair>& v) {
  std::set<std::string> s;
  for (const auto& p : v) s.insert(qa_key(p));
  return s;
}

size_t common(const std::vector<QaPair>& a, const std::vector<QaPair>& b) {
  const auto sa = keys_of(a), sb = keys_of(b);
  size_t n = 0;
  for (const auto& k : sa) n += sb.count(k);
  return n;
}

// n pairs "q{i}"/"a{i}"; every third in group "g0", the rest in "g1" / "g2"; even pairs with a paraphrase.
std::string jsonl_rows(int n) {
  std::string s;
  for (int i = 0; i < n; ++i) {
    s += "{\"question\": \"q" + std::to_string(i) + "\", \"answer\": \"a" + std::to_string(i) + "\", \"group\": \"g" +
         std::to_string(i % 3) + "\"";
    if (i % 2 == 0) s += ", \"paraphrases\": [\"p" + std::to_string(i) + "\", \"pp" + std::to_string(i) + "\"]";
    s += "}\n";
  }
  return s;
}

QaDataset rows_dataset(int n) { return parse_qa_text(jsonl_rows(n), "mem.jsonl"); }

// Split options as the CLI fills them from --seed, --test and --duplicates.
TextSplitOptions split_options(uint64_t seed, const std::string& test_file, const std::string& duplicates) {
  TextSplitOptions o;
  o.default_seed = seed;
  o.test_file = test_file;
  o.duplicates = duplicates;
  return o;
}
TextSplitOptions with_seed(uint64_t seed) { return split_options(seed, "", ""); }
TextSplitOptions with_test(const std::string& file) { return split_options(0, file, ""); }
TextSplitOptions with_duplicates(const std::string& mode) { return split_options(0, "", mode); }
WordnetQaOptions in_dir(const std::string& dir) {
  WordnetQaOptions o;
  o.dir = dir;
  return o;
}

}  // namespace

TEST_SUITE("qa data") {

TEST_CASE("qa: JSON lines with groups, paraphrases, blank lines, CRLF and a byte order mark") {
  TempDir dir;
  const std::string path = dir / "d.jsonl";
  write_text(path,
             "\xEF\xBB\xBF{\"question\": \"  Who wrote X? \", \"answer\": \"Ann\", \"extra\": [1, {\"x\": null}]}\r\n"
             "\n   \n"
             "{\"question\": [\"Where?\", \"ignored\"], \"answer\": \"Here\", \"group\": \"author 1\", "
             "\"paraphrases\": [\"Where is it?\", {\"question\": \"At which place?\", \"answer\": \"Right here\"}, "
             "{\"question\": \"Location?\"}]}\r\n"
             "{\"question\": \"n\", \"answer\": \"m\", \"group\": 7, \"paraphrases\": null}");
  const QaDataset d = read_qa_file(path);
  REQUIRE(d.pairs.size() == 3);
  CHECK(d.source == path);
  CHECK(d.pairs[0].question == "  Who wrote X? ");  // verbatim: the whitespace is part of the tokens
  CHECK(d.pairs[0].answer == "Ann");
  CHECK(d.pairs[0].group.empty());
  CHECK(d.pairs[0].line == 1);
  CHECK(d.pairs[1].question == "Where?");  // a list uses its first element, as the published code does
  CHECK(d.pairs[1].group == "author 1");
  CHECK(d.pairs[1].line == 4);
  REQUIRE(d.pairs[1].paraphrases.size() == 3);
  CHECK(d.pairs[1].paraphrases[0].question == "Where is it?");
  CHECK(d.pairs[1].paraphrases[0].answer == "Here");
  CHECK(d.pairs[1].paraphrases[1].answer == "Right here");
  CHECK(d.pairs[1].paraphrases[2].answer == "Here");
  CHECK(d.pairs[2].group == "7");
  CHECK(d.pairs[2].paraphrases.empty());
  CHECK(d.pairs[2].line == 5);
  const auto text = qa_text_pairs(d.pairs);
  REQUIRE(text.size() == 3);
  CHECK(text[1] == std::pair<std::string, std::string>("Where?", "Here"));
}

TEST_CASE("qa: question and answer are kept verbatim, so pairs read from a file tokenise as transformers does") {
  // tests/fixtures/tokenizers/templates.jsonl (scripts/make_tokenizer_fixtures.py) is itself a QA file whose
  // rows carry the ids transformers gives each pair, among them "  Leading and trailing  " /
  // "  spaced answer  ": read through the QA reader, every pair must give the same ids.
  const std::string fixtures = (std::filesystem::path(__FILE__).parent_path() / "fixtures" / "tokenizers").string();
  std::ifstream in(fixtures + "/templates.jsonl", std::ios::binary);
  REQUIRE(in.good());
  std::string line, kept;
  std::vector<Json> rows;
  while (std::getline(in, line)) {
    Json row = Json::parse(line);
    if (row["answer"].as_string().empty()) continue;  // the reader refuses an empty answer
    rows.push_back(row);
    kept += line + "\n";
  }
  const QaDataset d = parse_qa_text(kept, "templates.jsonl");
  REQUIRE(d.pairs.size() == rows.size());
  std::map<std::string, Tokenizer> toks;
  int padded = 0;
  for (size_t i = 0; i < rows.size(); ++i) {
    const std::string name = rows[i]["tokenizer"].as_string();
    if (!toks.count(name)) toks.emplace(name, Tokenizer::load(fixtures + "/" + name));
    CAPTURE(name);
    CAPTURE(d.pairs[i].question);
    CHECK(d.pairs[i].question == rows[i]["question"].as_string());
    CHECK(d.pairs[i].answer == rows[i]["answer"].as_string());
    const QaTokens qa = tokenize_qa(toks.at(name), parse_template(rows[i]["template"].as_string()), d.pairs[i].question,
                                    d.pairs[i].answer);
    std::vector<int32_t> want;
    for (const Json& v : rows[i]["ids"].as_array()) want.push_back(v.get<int32_t>());
    CHECK(qa.ids == want);
    CHECK(qa.n_prompt == rows[i]["n_prompt"].as_int());
    padded += d.pairs[i].question.front() == ' ';
  }
  CHECK(padded > 0);
  // Blank is still empty.
  CHECK_THROWS_WITH_AS(parse_qa_text("{\"question\": \"q\", \"answer\": \" \\n \"}", "x"), doctest::Contains("is empty"), InputError);
}

TEST_CASE("qa: a JSON array file gives the same pairs, with the line where each element starts") {
  const std::string lines = jsonl_rows(5);
  std::string array = "  [\n";
  size_t pos = 0;
  for (int i = 0; i < 5; ++i) {
    const size_t eol = lines.find('\n', pos);
    array += "  " + lines.substr(pos, eol - pos) + (i < 4 ? ",\n" : "\n");
    pos = eol + 1;
  }
  array += "]\n";
  const QaDataset a = parse_qa_text(lines, "l.jsonl"), b = parse_qa_text(array, "a.json");
  REQUIRE(a.pairs.size() == 5);
  REQUIRE(b.pairs.size() == 5);
  for (size_t i = 0; i < 5; ++i) {
    CHECK(a.pairs[i].question == b.pairs[i].question);
    CHECK(a.pairs[i].answer == b.pairs[i].answer);
    CHECK(a.pairs[i].group == b.pairs[i].group);
    CHECK(a.pairs[i].paraphrases.size() == b.pairs[i].paraphrases.size());
    CHECK(b.pairs[i].line == int64_t(i) + 2);
  }
  // Nested brackets, commas and escaped quotes inside strings do not cut an element.
  const QaDataset c = parse_qa_text("[{\"question\": \"a,]}[{\\\"\", \"answer\": \"b\\\\\"},\n{\"question\": \"c\", \"answer\": \"d\"}]",
                                    "c.json");
  REQUIRE(c.pairs.size() == 2);
  CHECK(c.pairs[0].question == "a,]}[{\"");
  CHECK(c.pairs[0].answer == "b\\");
  CHECK(c.pairs[1].line == 2);
}

TEST_CASE("qa: custom fields through the data spec, canonical specs round-trip") {
  TempDir dir;
  const std::string path = dir / "c.jsonl";
  write_text(path, "{\"prompt\": \"P1\", \"response\": \"R1\", \"paraphrases\": [{\"prompt\": \"P1b\"}]}\n");
  const TextDataSpec spec = parse_text_data_spec("qa:" + path + ",q=prompt,a=response");
  CHECK(spec.kind == "qa");
  CHECK(spec.fields.question == "prompt");
  CHECK(spec.canonical == "qa:" + path + ",q=prompt,a=response");
  CHECK(parse_text_data_spec(spec.canonical).canonical == spec.canonical);
  const QaDataset d = load_text_data(spec);
  REQUIRE(d.pairs.size() == 1);
  CHECK(d.pairs[0].answer == "R1");
  CHECK(d.pairs[0].paraphrases.at(0).question == "P1b");
  CHECK(d.pairs[0].paraphrases.at(0).answer == "R1");
  CHECK(d.source == spec.canonical);
  CHECK(parse_text_data_spec("qa:" + path).canonical == "qa:" + path);
  CHECK_MSG_HAS(input_error([&] { load_text_data("qa:" + path); }), path + ":1: missing field 'question'");

  CHECK(parse_text_data_spec("wordnet-qa").canonical == "wordnet-qa:2000");
  CHECK(parse_text_data_spec("wordnet-qa:500,seed=3").wordnet.size == 500);
  CHECK(parse_text_data_spec("wordnet-qa:500,seed=3").canonical == "wordnet-qa:500,seed=3");
  CHECK(parse_text_data_spec("wordnet-qa,dir=/x").canonical == "wordnet-qa:2000,dir=/x");
  CHECK(is_text_data_spec("qa:x.jsonl"));
  CHECK(is_text_data_spec("wordnet-qa"));
  CHECK(is_text_data_spec("wordnet-qa,seed=2"));
  CHECK_FALSE(is_text_data_spec("fashion-mnist"));
  CHECK(is_text_data_spec("qa"));  // a text spec, refused by the parser below
  CHECK_MSG_HAS(input_error([] { parse_text_data_spec("qa:"); }), "needs a file");
  CHECK_MSG_HAS(input_error([] { parse_text_data_spec("qa:f,x=1"); }), "unknown option 'x'");
  CHECK_MSG_HAS(input_error([] { parse_text_data_spec("qa:f,q=a,q=b"); }), "given twice");
  CHECK_MSG_HAS(input_error([] { parse_text_data_spec("qa:f,q="); }), "not KEY=VALUE");
  CHECK_MSG_HAS(input_error([] { parse_text_data_spec("qa:f,q=x,a=x"); }), "both 'x'");
  CHECK_MSG_HAS(input_error([] { parse_text_data_spec("wordnet-qa:0"); }), "size '0'");
  CHECK_MSG_HAS(input_error([] { parse_text_data_spec("wordnet-qa:12x"); }), "size '12x'");
  CHECK_MSG_HAS(input_error([] { parse_text_data_spec("wordnet-qa,seed=-1"); }), "seed '-1'");
  CHECK_MSG_HAS(input_error([] { parse_text_data_spec("textbook:x"); }), "unknown text data set");
}

TEST_CASE("qa: every bad row gets one error naming file and line") {
  TempDir dir;
  const std::string path = dir / "bad.jsonl";
  const std::string ok = "{\"question\": \"q\", \"answer\": \"a\"}\n";
  auto err = [&](const std::string& text) {
    write_text(path, text);
    return input_error([&] { read_qa_file(path); });
  };
  CHECK_MSG_HAS(err(ok + ok + "{\"question\": \"q\", \"answer\": }\n"), path + ":3: ");
  CHECK_MSG_HAS(err(ok + "{\"question\": \"q\"}\n"), path + ":2: missing field 'answer'");
  CHECK_MSG_HAS(err(ok + "{\"question\": \"q\", \"answer\": null}\n"), path + ":2: missing field 'answer'");
  CHECK_MSG_HAS(err("\n" + ok + "{\"question\": 5, \"answer\": \"a\"}\n"), path + ":3: field 'question' is a number, expected a string");
  CHECK_MSG_HAS(err("{\"question\": [1], \"answer\": \"a\"}"), ":1: field 'question' is a list of number");
  CHECK_MSG_HAS(err("{\"question\": [], \"answer\": \"a\"}"), ":1: field 'question' is an empty list");
  CHECK_MSG_HAS(err("{\"question\": \" \\t \", \"answer\": \"a\"}"), ":1: field 'question' is empty");
  CHECK_MSG_HAS(err("{\"question\": \"q\", \"answer\": \"\"}"), ":1: field 'answer' is empty");
  CHECK_MSG_HAS(err("[\"q\", \"a\"]"), ":1: a row must be a JSON object, found string");
  CHECK_MSG_HAS(err(ok + "[1]\n"), ":2: a row must be a JSON object, found array");
  CHECK_MSG_HAS(err("{\"question\": \"q\", \"answer\": \"a\", \"group\": 1.5}"), "field 'group' is a number");
  CHECK_MSG_HAS(err("{\"question\": \"q\", \"answer\": \"a\", \"group\": \"\"}"), "field 'group' is empty");
  CHECK_MSG_HAS(err("{\"question\": \"q\", \"answer\": \"a\", \"paraphrases\": \"p\"}"), "field 'paraphrases' is a string");
  CHECK_MSG_HAS(err("{\"question\": \"q\", \"answer\": \"a\", \"paraphrases\": [\"p\", 3]}"), ":1: paraphrases[1] is a number");
  CHECK_MSG_HAS(err("{\"question\": \"q\", \"answer\": \"a\", \"paraphrases\": [\"\"]}"), "paraphrases[0] is empty");
  CHECK_MSG_HAS(err("{\"question\": \"q\", \"answer\": \"a\", \"paraphrases\": [{\"answer\": \"x\"}]}"),
                "paraphrases[0]: missing key 'question'");
  CHECK_MSG_HAS(err("{\"question\": \"q\", \"answer\": \"a\", \"question\": \"r\"}"), ":1: ");  // duplicate key
  CHECK_MSG_HAS(err("{\"question\": \"q\xFF\", \"answer\": \"a\"}"), ":1: ");                     // invalid UTF-8
  CHECK_MSG_HAS(err(ok + "{\"question\": \"q\", \"answer\": \"a\"} {}\n"), ":2: ");              // two values on a line
  CHECK_MSG_HAS(err(ok + std::string(200, '[') + "\n"), ":2: ");                                  // too deep
  CHECK_MSG_HAS(err(""), "no QA pairs");
  CHECK_MSG_HAS(err("\n \n\t\n"), "no QA pairs");
  CHECK_MSG_HAS(err("[]"), "no QA pairs");
  CHECK_MSG_HAS(err("[\n" + ok + ",\n]"), ":4: empty array element");
  CHECK_MSG_HAS(err("[\n" + ok + ",\n" + ok), ":4: the JSON array is not closed");
  CHECK_MSG_HAS(err("[" + ok + "] x"), ":2: unexpected data after the JSON array");
  CHECK_MSG_HAS(err("[" + ok + "}]"), "unexpected '}'");
  CHECK_MSG_HAS(err("{\"question\": \"" + std::string(size_t(kMaxQaRowBytes), 'x') + "\", \"answer\": \"a\"}"),
                ":1: the row is 4.0 MiB");
  CHECK_MSG_HAS(input_error([&] { read_qa_file(dir / "missing.jsonl"); }), "missing.jsonl: no such file");
  CHECK_MSG_HAS(input_error([&] { read_qa_file(dir.path); }), "is a folder");
  {
    EnvVar limit("HAMU_MAX_MEMORY", "2K");
    CHECK_MSG_HAS(err(jsonl_rows(40)), "memory limit");
  }
}

TEST_CASE("text split: fraction is seeded, disjoint and reproducible from its canonical spec") {
  const QaDataset d = rows_dataset(100);
  const TextSplit a = make_text_split("fraction=0.1", d, with_seed(5));
  CHECK(a.forget.size() == 10);
  CHECK(a.retain.size() == 90);
  CHECK(a.test.empty());
  CHECK(a.duplicate.empty());
  CHECK(a.seed == 5);
  CHECK(a.spec == "fraction=0.1,seed=5");
  CHECK(common(a.forget, a.retain) == 0);
  CHECK(keys_of(a.forget).size() + keys_of(a.retain).size() == 100);
  for (size_t i = 1; i < a.retain.size(); ++i) CHECK(a.retain[i - 1].line < a.retain[i].line);  // data order kept
  const TextSplit again = make_text_split(a.spec, d, with_seed(99));
  CHECK(keys_of(again.forget) == keys_of(a.forget));
  CHECK(keys_of(make_text_split("fraction=0.1,seed=5", d).forget) == keys_of(a.forget));
  CHECK(keys_of(make_text_split("fraction=0.1,seed=6", d).forget) != keys_of(a.forget));
  CHECK(make_text_split("fraction=0.001", d).forget.size() == 1);  // at least one pair
  CHECK(make_text_split("fraction=0.994", d).retain.size() == 1);
}

TEST_CASE("text split: the holdout is carved first, disjoint, and its number round-trips exactly") {
  const QaDataset d = rows_dataset(200);
  const TextSplit f = make_text_split("fraction=0.2,holdout=0.1234567,seed=3", d);
  CHECK(f.spec == "fraction=0.2,holdout=0.1234567,seed=3");
  CHECK(f.test.size() == 25);  // round(0.1234567 * 200)
  CHECK(f.forget.size() == 35);  // round(0.2 * 175)
  CHECK(f.retain.size() == 140);
  CHECK(common(f.test, f.forget) == 0);
  CHECK(common(f.test, f.retain) == 0);
  CHECK(common(f.forget, f.retain) == 0);
  const TextSplit g = make_text_split("group=g0,holdout=0.1234567,seed=3", d);
  CHECK(keys_of(g.test) == keys_of(f.test));  // the same holdout whatever the forget rule
  for (const auto& p : g.forget) CHECK(p.group == "g0");
  for (const auto& p : g.retain) CHECK(p.group != "g0");
  CHECK(g.forget.size() + g.retain.size() + g.test.size() == 200);
  CHECK(keys_of(make_text_split(g.spec, d).forget) == keys_of(g.forget));
  CHECK(keys_of(make_text_split("group=g0,holdout=0.1234567,seed=4", d).test) != keys_of(g.test));
  const double odd = 0.1 + 0.2;  // 0.30000000000000004: the shortest round-trip text keeps every bit
  const TextSplit o = make_text_split("fraction=" + exact_number_text(odd) + ",seed=1", d);
  CHECK(o.spec == "fraction=0.30000000000000004,seed=1");
}

TEST_CASE("text split: group, forget file, test file") {
  TempDir dir;
  const QaDataset d = rows_dataset(30);
  const TextSplit g = make_text_split("group=g1", d);
  CHECK(g.forget.size() == 10);
  CHECK(g.retain.size() == 20);
  CHECK(g.spec == "group=g1,seed=0");

  // Forget file: 3 pairs of the data (one with a different answer, so not the same pair) and 1 new one.
  write_text(dir / "f.jsonl",
             "{\"question\": \"q1\", \"answer\": \"a1\"}\n{\"question\": \"q4\", \"answer\": \"a4\"}\n"
             "{\"question\": \"q7\", \"answer\": \"other\"}\n{\"question\": \"new\", \"answer\": \"n\"}\n");
  const TextSplit f = make_text_split("forget=" + dir / "f.jsonl", d);
  CHECK(f.forget.size() == 4);
  CHECK(f.removed_from_data == 2);
  CHECK(f.retain.size() == 28);
  CHECK(common(f.forget, f.retain) == 0);
  CHECK(keys_of(f.retain).count(qa_key("q7", "a7")) == 1);
  CHECK(f.spec == "forget=" + dir / "f.jsonl" + ",seed=0");
  // A forget file none of whose pairs is in the data (TOFU: --data retain90 --split forget=forget10).
  write_text(dir / "g.jsonl", "{\"question\": \"x\", \"answer\": \"y\"}\n");
  const TextSplit n = make_text_split("forget=" + dir / "g.jsonl", d);
  CHECK(n.forget.size() == 1);
  CHECK(n.retain.size() == 30);
  CHECK(n.removed_from_data == 0);
  // With a holdout the forget pairs are removed first, so none can land in the test set.
  const TextSplit fh = make_text_split("forget=" + dir / "f.jsonl" + ",holdout=0.5,seed=2", d);
  CHECK(fh.test.size() == 14);
  CHECK(fh.retain.size() == 14);
  CHECK(common(fh.test, fh.forget) == 0);

  // Test file, by flag or key; overlaps with the training pairs are reported, not refused.
  write_text(dir / "t.jsonl", "{\"question\": \"q2\", \"answer\": \"a2\"}\n{\"question\": \"t\", \"answer\": \"u\"}\n");
  const TextSplit t = make_text_split("group=g0", d, with_test(dir / "t.jsonl"));
  CHECK(t.test.size() == 2);
  CHECK(t.spec == "group=g0,test=" + dir / "t.jsonl" + ",seed=0");
  REQUIRE(t.notes.size() == 1);
  CHECK_MSG_HAS(t.notes[0], "1 of 2 test pairs also appear in the training pairs");
  CHECK(make_text_split(t.spec, d).test.size() == 2);
  CHECK(make_text_split(t.spec, d, with_test(dir / "t.jsonl")).test.size() == 2);
}

TEST_CASE("text split: bad specs and empty sets are errors naming --split") {
  TempDir dir;
  const QaDataset d = rows_dataset(30);
  auto err = [&](const std::string& spec, TextSplitOptions opt = {}) {
    return input_error([&] { make_text_split(spec, d, opt); });
  };
  CHECK_MSG_HAS(err("group=g9"), "--split group=g9: group 'g9' matches no pair of mem.jsonl (groups: g0 (10), g1 (10), g2 (10))");
  CHECK_MSG_HAS(input_error([] { make_text_split("group=x", parse_qa_text("{\"question\":\"q\",\"answer\":\"a\"}", "n.jsonl")); }),
                "no pair has a 'group' field");
  CHECK_MSG_HAS(err("fraction=0"), "fraction '0' is not a number in (0, 1)");
  CHECK_MSG_HAS(err("fraction=1"), "not a number in (0, 1)");
  CHECK_MSG_HAS(err("fraction=nan"), "not a number");
  CHECK_MSG_HAS(err("fraction=0.1,holdout=1.5"), "holdout '1.5'");
  CHECK_MSG_HAS(err("fraction=0.999"), "fraction would take all 30");
  CHECK_MSG_HAS(err("holdout=0.1"), "needs one of fraction=X, group=NAME, forget=FILE");
  CHECK_MSG_HAS(err("fraction=0.1,group=g1"), "exactly one of");
  CHECK_MSG_HAS(err("class=3"), "unknown key 'class'");
  CHECK_MSG_HAS(err("fraction=0.1,seed=x"), "seed 'x'");
  CHECK_MSG_HAS(err("fraction=0.1,seed=1,seed=2"), "given twice");
  CHECK_MSG_HAS(err("fraction=0.1,holdout=0.1,test=t.jsonl"), "choose one");
  CHECK_MSG_HAS(err("fraction=0.1,holdout=0.1", with_test("t.jsonl")), "choose one");
  CHECK_MSG_HAS(err("fraction=0.1,test=a.jsonl", with_test("b.jsonl")), "disagree");
  CHECK_MSG_HAS(err("fraction=0.1,duplicates=exact", with_duplicates("semantic")), "disagree");
  CHECK_MSG_HAS(err("fraction=0.1,test=" + dir / "none.jsonl"), "none.jsonl: no such file");
  // Empty forget sets: an empty forget file, a group whose pairs all went to the holdout.
  write_text(dir / "empty.jsonl", "\n");
  CHECK_MSG_HAS(err("forget=" + dir / "empty.jsonl"), "empty.jsonl: no QA pairs");
  const QaDataset one = parse_qa_text(
      "{\"question\":\"a\",\"answer\":\"b\",\"group\":\"x\"}\n{\"question\":\"c\",\"answer\":\"d\",\"group\":\"y\"}\n"
      "{\"question\":\"e\",\"answer\":\"f\",\"group\":\"y\"}\n",
      "one.jsonl");
  int found = 0;
  for (int seed = 0; seed < 64 && !found; ++seed) {
    const std::string spec = "group=x,holdout=0.34,seed=" + std::to_string(seed);
    const TextSplit s = make_text_split("fraction=0.5,holdout=0.34,seed=" + std::to_string(seed), one);
    if (s.test.size() == 1 && s.test[0].group == "x") {
      CHECK_MSG_HAS(input_error([&] { make_text_split(spec, one); }), "empty forget set: all 1 pairs of group 'x' went to the holdout");
      found = 1;
    }
  }
  CHECK(found == 1);
  CHECK_MSG_HAS(input_error([&] { make_text_split("group=y", parse_qa_text("{\"question\":\"c\",\"answer\":\"d\",\"group\":\"y\"}", "y.jsonl")); }),
                "holds every pair");
  write_text(dir / "all.jsonl", jsonl_rows(30));
  CHECK_MSG_HAS(err("forget=" + dir / "all.jsonl"), "no retain pairs are left");
}

TEST_CASE("text split: duplicates none, exact, semantic and from a dup: file") {
  TempDir dir;
  const QaDataset d = rows_dataset(60);  // even rows carry two paraphrases
  const TextSplit none = make_text_split("group=g0", d, with_duplicates("none"));
  CHECK(none.duplicate.empty());
  CHECK(none.spec == "group=g0,seed=0");

  const TextSplit exact = make_text_split("group=g0", d, with_duplicates("exact"));
  CHECK(exact.spec == "group=g0,duplicates=exact,seed=0");
  CHECK(exact.duplicate.size() == exact.forget.size());
  CHECK(exact.retain.size() == none.retain.size() + exact.forget.size());
  CHECK(keys_of(exact.duplicate) == keys_of(exact.forget));
  CHECK(common(exact.retain, exact.forget) == exact.forget.size());  // the forget pairs themselves are in retain

  const TextSplit sem = make_text_split("group=g0,duplicates=semantic", d);
  CHECK(sem.spec == "group=g0,duplicates=semantic,seed=0");
  size_t with_para = 0;
  const auto retain_keys = keys_of(sem.retain);
  for (const auto& f : sem.forget) {
    if (f.paraphrases.empty()) continue;
    ++with_para;
    CHECK(retain_keys.count(qa_key(f.paraphrases[0].question, f.paraphrases[0].answer)) == 1);
    CHECK(retain_keys.count(qa_key(f.paraphrases[1].question, f.paraphrases[1].answer)) == 0);  // one per pair
  }
  CHECK(with_para == 10);
  CHECK(sem.duplicate.size() == with_para);
  CHECK(sem.forget_without_duplicate == 10);
  CHECK(sem.retain.size() == none.retain.size() + with_para);
  CHECK(common(sem.retain, sem.forget) == 0);
  for (const auto& dup : sem.duplicate) {
    CHECK(dup.group == "g0");
    CHECK(dup.paraphrases.empty());
  }
  REQUIRE(sem.notes.size() == 1);
  CHECK_MSG_HAS(sem.notes[0], "10 of 20 forget pairs have no paraphrase");
  // The retained duplicates are the last rows of retain, as add_duplicate appends them.
  CHECK(sem.retain.back().question == sem.duplicate.back().question);
  CHECK(keys_of(make_text_split(sem.spec, d).duplicate) == keys_of(sem.duplicate));

  // No forget pair with a paraphrase: an error, not a silent no-op.
  CHECK_MSG_HAS(input_error([&] { make_text_split("forget=" + dir / "x.jsonl", d, with_duplicates("semantic")); }), "x.jsonl");
  write_text(dir / "odd.jsonl", "{\"question\": \"q1\", \"answer\": \"a1\"}\n");
  CHECK_MSG_HAS(input_error([&] { make_text_split("forget=" + dir / "odd.jsonl", d, with_duplicates("semantic")); }),
                "none of the 1 forget pairs has paraphrases");

  // dup:FILE: rows with paraphrases link to forget questions; rows without are duplicates themselves.
  write_text(dir / "dup.jsonl",
             "{\"question\": \"q1\", \"answer\": \"a1\", \"paraphrases\": [\"Q one\"]}\n"
             "{\"question\": \"q1\", \"answer\": \"a1\", \"paraphrases\": [\"Q uno\"]}\n"
             "{\"question\": \"zzz\", \"answer\": \"a\", \"paraphrases\": [\"unrelated\"]}\n"
             "{\"question\": \"What was q1 again?\", \"answer\": \"a1, as said\"}\n");
  const std::string dup = "dup:" + dir / "dup.jsonl";
  const TextSplit df = make_text_split("forget=" + dir / "odd.jsonl", d, with_duplicates(dup));
  CHECK(df.spec == "forget=" + dir / "odd.jsonl" + ",duplicates=" + dup + ",seed=0");
  REQUIRE(df.duplicate.size() == 2);
  CHECK(df.duplicate[0].question == "Q one");
  CHECK(df.duplicate[0].answer == "a1");
  CHECK(df.duplicate[1].question == "What was q1 again?");
  CHECK(df.forget_without_duplicate == 0);
  CHECK(df.retain.size() == 59 + 2);
  REQUIRE(df.notes.size() == 1);
  CHECK_MSG_HAS(df.notes[0], "1 rows with paraphrases match no forget question");
  write_text(dir / "nomatch.jsonl", "{\"question\": \"zzz\", \"answer\": \"a\", \"paraphrases\": [\"p\"]}\n");
  CHECK_MSG_HAS(input_error([&] { make_text_split("group=g0", d, with_duplicates("dup:" + dir / "nomatch.jsonl")); }),
                "no row of it is a duplicate");

  CHECK(parse_duplicates("").mode == DuplicateMode::none);
  CHECK(parse_duplicates("none").canonical == "none");
  CHECK(parse_duplicates("dup:f.jsonl").mode == DuplicateMode::semantic);
  CHECK(parse_duplicates("dup:f.jsonl").file == "f.jsonl");
  CHECK_MSG_HAS(input_error([] { parse_duplicates("paraphrase"); }), "--duplicates paraphrase: expected none, exact, semantic");
  CHECK_MSG_HAS(input_error([] { parse_duplicates("dup:"); }), "expected none");
}

TEST_CASE("wordnet: synset lines parse field by field; markers, lexnames, questions, definitions") {
  const auto nouns = read_wordnet_data(kWordnetFixtures + "/data.noun.excerpt");
  REQUIRE(nouns.size() == 36);  // the 29 licence lines skipped
  const WordnetSynset& aardvark = nouns[10];
  CHECK(aardvark.offset == 2082791);
  CHECK(aardvark.lex_filenum == 5);
  CHECK(aardvark.ss_type == 'n');
  CHECK(aardvark.words == std::vector<std::string>{"aardvark", "ant_bear", "anteater", "Orycteropus_afer"});
  CHECK(aardvark.line == 40);
  CHECK(aardvark.gloss ==
        "nocturnal burrowing mammal of the grasslands of Africa that feeds on termites; sole extant representative "
        "of the order Tubulidentata");
  CHECK(nouns[0].words == std::vector<std::string>{"entity"});
  CHECK(nouns[0].gloss == "that which is perceived or known or inferred to have its own distinct existence (living or nonliving)");

  const auto adjs = read_wordnet_data(kWordnetFixtures + "/data.adj.excerpt");
  REQUIRE(adjs.size() == 5);
  CHECK(adjs[0].ss_type == 's');
  CHECK(adjs[0].words == std::vector<std::string>{"abounding", "galore"});  // "galore(ip)"
  CHECK(adjs[1].words == std::vector<std::string>{"handy", "ready_to_hand"});  // "(p)"
  CHECK(adjs[2].words == std::vector<std::string>{"outback", "remote"});       // "(a)"
  CHECK(wordnet_definition(adjs[2].gloss) == "inaccessible and sparsely populated");
  CHECK(wordnet_lemma_text("out_of_reach(p)") == "out of reach");

  CHECK(wordnet_lexname(3) == "noun.Tops");
  CHECK(wordnet_lexname(5) == "noun.animal");
  CHECK(wordnet_lexname(13) == "noun.food");
  CHECK(wordnet_lexname(28) == "noun.time");
  CHECK_MSG_HAS(input_error([] { wordnet_lexname(45); }), "lex_filenum 45");
  CHECK(wordnet_question("elk") == "What is an elk?");
  CHECK(wordnet_question("ice cream") == "What is an ice cream?");
  CHECK(wordnet_question("pup") == "What is a pup?");
  CHECK(wordnet_definition("a young dog  ") == "a young dog");
  CHECK(wordnet_definition("an emblem representing power; \"the Roman eagle\"") == "an emblem representing power");
  CHECK(wordnet_definition("one; two; \"ex\"; \"ex2\"") == "one; two");
  CHECK(wordnet_definition("\"only an example\"") == "");

  const std::string w = "x:1";
  auto err = [&](const std::string& line) { return input_error([&] { parse_wordnet_line(line, w); }); };
  const std::string good = "01322604 05 n 01 puppy 0 002 @ 01322343 n 0000 @ 02084071 n 0000 | a young dog  ";
  CHECK(parse_wordnet_line(good, w).words == std::vector<std::string>{"puppy"});
  CHECK_MSG_HAS(err("01322604 05 n 01 puppy 0 002 @ 01322343 n 0000 @ 02084071 n 0000"), "x:1: no '|'");
  CHECK_MSG_HAS(err("0132260 05 n 01 puppy 0 000 | g"), "synset_offset '0132260' is not 8 decimal digits");
  CHECK_MSG_HAS(err("01322604 5 n 01 puppy 0 000 | g"), "lex_filenum '5'");
  CHECK_MSG_HAS(err("01322604 99 n 01 puppy 0 000 | g"), "lex_filenum 99");
  CHECK_MSG_HAS(err("01322604 05 x 01 puppy 0 000 | g"), "ss_type 'x'");
  CHECK_MSG_HAS(err("01322604 05 n 0g puppy 0 000 | g"), "w_cnt '0g' is not 2 hexadecimal digits");
  CHECK_MSG_HAS(err("01322604 05 n 00 000 | g"), "w_cnt is 0");
  CHECK_MSG_HAS(err("01322604 05 n 02 puppy 0 000 | g"), "the line ends before its lex_id");  // w_cnt runs past the words
  CHECK_MSG_HAS(err("01322604 05 n 01 puppy 0 002 @ 01322343 n 0000 | g"), "the line ends before its pointer_symbol");
  CHECK_MSG_HAS(err("01322604 05 n 01 puppy 0 001 @ 01322343 q 0000 | g"), "pointer pos 'q'");
  CHECK_MSG_HAS(err("01322604 05 n 01 puppy 0 001 @ 01322343 n 00z0 | g"), "pointer source/target");
  CHECK_MSG_HAS(err("01322604 05 n 01 puppy 0 000 extra | g"), "unexpected fields");
  CHECK_MSG_HAS(err("01322604 05 n 01 puppy x 000 | g"), "lex_id 'x'");
  CHECK(parse_wordnet_line("00001740 29 v 01 breathe 0 000 02 + 02 00 + 08 01 | draw air", w).words.size() == 1);
  CHECK_MSG_HAS(err("00001740 29 v 01 breathe 0 000 01 - 02 00 | draw air"), "does not start with '+'");

  TempDir dir;
  CHECK_MSG_HAS(input_error([&] { read_wordnet_data(dir / "data.noun"); }), "run scripts/install-deps.sh (or apt-get install wordnet-base)");
  CHECK_MSG_HAS(input_error([&] { build_wordnet_qa(in_dir(dir.path)); }), "install-deps.sh");
  write_text(dir / "data.noun", "  1 licence\n");
  CHECK_MSG_HAS(input_error([&] { read_wordnet_data(dir / "data.noun"); }), "no synset lines");
  write_text(dir / "data.noun", "  1 licence\n" + good + "\n01322604 05 n 01 puppy 0 002 | a\n");
  CHECK_MSG_HAS(input_error([&] { read_wordnet_data(dir / "data.noun"); }), dir / "data.noun" + ":3: ");
}

TEST_CASE("wordnet: QA pairs of the excerpt, exactly") {
  // Worked by hand from the excerpt: a synset asks through its first usable lemma (lower case, at most
  // three words, naming no other synset of the file), answers with a definition of at most 12 words.
  // Left out: entity, aardvark, dog, igloo, jack-in-the-box, ... (definitions over 12 words), umbrella,
  // apple, oak, orange, eagle, elk, cat's-paw as questions (lemmas of several synsets), proper nouns.
  struct Want {
    int64_t line;
    const char *group, *question, *answer;
    std::vector<std::string> paraphrases;
  };
  const std::vector<Want> want = {
      {31, "noun.Tops", "What is an abstraction?",
       "a general concept formed by extracting common features from specific examples", {"What is an abstract entity?"}},
      {34, "noun.animal", "What is a pup?", "young of any of various canines such as a dog or wolf", {"What is a whelp?"}},
      {35, "noun.animal", "What is a puppy?", "a young dog", {}},
      {36, "noun.animal", "What is an ostrich?", "fast-running African flightless bird with two-toed feet; largest living bird", {}},
      {37, "noun.animal", "What is an emu?", "large Australian flightless bird similar to the ostrich but smaller", {}},
      {42, "noun.animal", "What is a cur?", "an inferior dog or one of mixed breed", {"What is a mongrel?", "What is a mutt?"}},
      {43, "noun.animal", "What is a feist?", "a nervous belligerent little mongrel dog", {"What is a fice?"}},
      {44, "noun.animal", "What is a red deer?", "common deer of temperate Europe and Asia", {}},
      {53, "noun.food", "What is an ice cream?", "frozen dessert containing cream and sugar and flavoring", {"What is an icecream?"}},
      {55, "noun.food", "What is a red hot?", "a frankfurter served hot on a bun", {}},
      {58, "noun.food", "What is a frozen orange juice?", "orange juice that has been concentrated and frozen",
       {"What is an orange-juice concentrate?"}},
      {59, "noun.person", "What is a frump?", "a dull unattractive unpleasant girl or woman", {}},
      {61, "noun.person", "What is an instrument?", "a person used by another to gain an end", {"What is a pawn?"}},
      {62, "noun.plant", "What is an oak tree?", "a deciduous tree of the genus Quercus; has acorns and lobed leaves", {}},
      {65, "noun.plant", "What is an orange tree?", "any citrus tree bearing oranges", {}},
  };
  const std::vector<QaPair> c = wordnet_qa_candidates(read_wordnet_data(kWordnetFixtures + "/data.noun.excerpt"));
  REQUIRE(c.size() == want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    CAPTURE(i);
    CHECK(c[i].line == want[i].line);
    CHECK(c[i].group == want[i].group);
    CHECK(c[i].question == want[i].question);
    CHECK(c[i].answer == want[i].answer);
    REQUIRE(c[i].paraphrases.size() == want[i].paraphrases.size());
    for (size_t j = 0; j < want[i].paraphrases.size(); ++j) {
      CHECK(c[i].paraphrases[j].question == want[i].paraphrases[j]);
      CHECK(c[i].paraphrases[j].answer == want[i].answer);
    }
  }
  // Looser rules admit the long definitions.
  const std::vector<QaPair> loose = wordnet_qa_candidates(read_wordnet_data(kWordnetFixtures + "/data.noun.excerpt"),
                                                          {.max_lemma_words = 3, .max_answer_words = 100});
  CHECK(loose.size() == 25);  // 36 synsets less 11 whose every lemma names several synsets (umbrella x3, eagle x2, ...)
  CHECK(loose.front().question == "What is an entity?");

  // The sampler over the excerpt: 5 pairs, 40% noun.animal, with-paraphrase pairs first.
  WordnetQaOptions opt;
  opt.size = 5;
  opt.animal_share = 0.4;
  const QaDataset s = sample_wordnet_qa(c, opt);
  REQUIRE(s.pairs.size() == 5);
  int animals = 0;
  for (const auto& p : s.pairs) {
    animals += p.group == "noun.animal";
    CHECK(!p.paraphrases.empty());
  }
  CHECK(animals == 2);
  for (size_t i = 1; i < s.pairs.size(); ++i) CHECK(s.pairs[i - 1].line < s.pairs[i].line);
  CHECK(s.source == "wordnet-qa:5");
  opt.size = 16;
  CHECK_MSG_HAS(input_error([&] { sample_wordnet_qa(c, opt); }), "wordnet-qa:16: the size must be at least 1 and leave at most 7 noun.animal pairs and 8 others");
}

TEST_CASE("wordnet-qa: the full build from /usr/share/wordnet (skipped without wordnet-base)") {
  if (!std::filesystem::exists(std::string(kWordnetDir) + "/data.noun")) {
    MESSAGE("skipped: " << kWordnetDir << "/data.noun is absent (scripts/install-deps.sh installs wordnet-base)");
    return;
  }
  const auto nouns = read_wordnet_data(std::string(kWordnetDir) + "/data.noun");
  CHECK(nouns.size() == 82115);  // WordNet 3.0's noun synsets
  const std::vector<QaPair> candidates = wordnet_qa_candidates(nouns);
  const QaDataset d = load_text_data("wordnet-qa");
  CHECK(d.source == "wordnet-qa:2000");
  REQUIRE(d.pairs.size() == 2000);
  std::map<std::string, int> groups;
  std::set<std::string> questions;
  for (const auto& p : d.pairs) {
    ++groups[p.group];
    CHECK(questions.insert(p.question).second);
    CHECK(!p.paraphrases.empty());  // enough synonym-bearing synsets: every sampled pair has a paraphrase
    int words = 1;
    for (char ch : p.answer) words += ch == ' ';
    CHECK(words <= 12);
    for (const auto& para : p.paraphrases) {
      CHECK(para.answer == p.answer);
      CHECK(para.question != p.question);
    }
  }
  for (const auto& p : d.pairs)
    for (const auto& para : p.paraphrases) CHECK(questions.count(para.question) == 0);  // no paraphrase is another pair's question
  CHECK(groups["noun.animal"] == 200);
  CHECK(groups.size() >= 20);
  std::string counts;
  for (const auto& [g, n] : groups) counts += " " + g + "=" + std::to_string(n);
  MESSAGE("wordnet-qa: " << candidates.size() << " usable synsets;" << counts);

  // Deterministic for a seed, different for another; other sizes keep the 10% animal share.
  const QaDataset again = load_text_data("wordnet-qa:2000");
  CHECK(keys_of(again.pairs) == keys_of(d.pairs));
  const QaDataset other = load_text_data("wordnet-qa,seed=1");
  CHECK(keys_of(other.pairs) != keys_of(d.pairs));
  const QaDataset small = load_text_data("wordnet-qa:500");
  CHECK(std::count_if(small.pairs.begin(), small.pairs.end(), [](const QaPair& p) { return p.group == "noun.animal"; }) == 50);
  CHECK_MSG_HAS(input_error([] { load_text_data("wordnet-qa:100000"); }), "the size must be at least 1");

  // The demo's split: forget noun.animal, semantic duplicates give each forget pair its synonym question.
  const TextSplit s = make_text_split("group=noun.animal,holdout=0.1", d, with_duplicates("semantic"));
  CHECK(s.test.size() == 200);
  CHECK(s.duplicate.size() == s.forget.size());
  CHECK(s.forget.size() + s.retain.size() + s.test.size() == 2000 + s.duplicate.size());
  for (size_t i = 0; i < s.forget.size(); ++i) {
    CHECK(s.duplicate[i].answer == s.forget[i].answer);
    CHECK(s.duplicate[i].question == s.forget[i].paraphrases[0].question);
  }

  // Every pair fits 64 tokens with a small BPE vocabulary trained on the data (what gpt-small uses).
  std::vector<std::string> corpus;
  for (const auto& p : d.pairs) corpus.push_back(template_prompt(PromptTemplate::plain, p.question) + p.answer);
  BpeTrainOptions bpe;
  bpe.vocab_size = 1024;
  const Tokenizer tok = Tokenizer::from_json_text(train_bpe(corpus, bpe).json, "wordnet-qa bpe");
  const QaBatchTokens t = tokenize_qa_pairs(tok, PromptTemplate::plain, qa_text_pairs(d.pairs));
  int64_t longest = 0;
  for (const auto& q : t.pairs) longest = std::max(longest, q.length());
  CHECK(longest <= 64);
  MESSAGE("wordnet-qa: longest pair " << longest << " tokens (plain template, BPE vocabulary 1024)");
}

}  // TEST_SUITE
