// loaders/text_spec.h: --data SPEC for text (qa:FILE, wordnet-qa) parsing and loading.
#pragma once
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "loaders/number_text.h"
#include "loaders/qa.h"
#include "loaders/wordnet_qa.h"

namespace hamu {

struct TextDataSpec {
  std::string kind;            // "qa" or "wordnet-qa"
  std::string path;            // qa: the file
  QaFields fields;             // qa: the field names (also used for --split forget=, --test and dup: files)
  WordnetQaOptions wordnet;    // wordnet-qa: size, seed, folder
  std::string canonical;       // what a checkpoint or report records; parse_text_data_spec(canonical) is the same spec
};

// Forms (a FILE or DIR may not contain commas):
//   qa:FILE[,q=FIELD][,a=FIELD]        JSON lines or a JSON array (read_qa_file), fields default question/answer
//   wordnet-qa[:N][,seed=S][,dir=DIR]  N pairs (default 2000) sampled with seed S (default 0) from DIR/data.noun
//                                      (default /usr/share/wordnet)
// InputError naming --data on any problem.
TextDataSpec parse_text_data_spec(const std::string& spec);
// True when the spec's kind is qa or wordnet-qa (what the CLI routes here instead of the image loaders).
bool is_text_data_spec(const std::string& spec);

// The pairs of the spec; source = the canonical spec.
QaDataset load_text_data(const TextDataSpec& spec);
QaDataset load_text_data(const std::string& spec);

// "k=v,k=v" options of a text spec: InputError "FLAG SPEC: ..." for an item that is not KEY=VALUE with
// a non-empty value, or a key given twice. Shared by the --data and --split parsers.
std::vector<std::pair<std::string, std::string>> parse_text_options(const std::string& flag, const std::string& spec,
                                                                    const std::vector<std::string>& items);
std::vector<std::string> split_text_commas(std::string_view s);

}  // namespace hamu
