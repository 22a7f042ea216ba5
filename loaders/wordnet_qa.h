// loaders/wordnet_qa.h: wordnet-qa, QA pairs built from WordNet's noun synsets (Debian wordnet-base),
// with synonym lemmas as real paraphrases (semantic duplicates).
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "loaders/qa.h"

namespace hamu {

inline constexpr const char* kWordnetDir = "/usr/share/wordnet";

// One line of a WordNet data.{noun,verb,adj,adv} file (wndb(5WN)):
//   offset lex_filenum ss_type w_cnt word lex_id [word lex_id ...] p_cnt [ptr ...] [frames ...] | gloss
struct WordnetSynset {
  int64_t offset = 0;
  int lex_filenum = 0;
  char ss_type = 'n';               // n, v, a, s, r
  std::vector<std::string> words;   // as in the file (underscores for spaces), adjective markers removed
  std::string gloss;                // the text after "| ", trimmed
  int64_t line = 0;                 // 1-based line in the file
};

// Parses one synset line; every field's format is checked. InputError "WHERE: what".
WordnetSynset parse_wordnet_line(std::string_view line, const std::string& where);
// Every synset of a data file, skipping the licence header (lines starting with two spaces).
// InputError "FILE:LINE: what"; a missing file names scripts/install-deps.sh and wordnet-base.
std::vector<WordnetSynset> read_wordnet_data(const std::string& path);
// Lexicographer file name of a lex_filenum (lexnames(5WN)): 3 -> "noun.Tops", 5 -> "noun.animal".
const std::string& wordnet_lexname(int lex_filenum);

// The pieces of a QA pair.
std::string wordnet_definition(std::string_view gloss);  // the gloss up to its first `; "` example, trimmed
std::string wordnet_lemma_text(std::string_view word);   // underscores -> spaces, "(a)"/"(p)"/"(ip)" removed
std::string wordnet_question(std::string_view lemma);    // "What is a dog?", "What is an elk?"

// Which synsets become pairs. A lemma is usable when it is lower-case ASCII letters with spaces,
// hyphens or apostrophes, at most max_lemma_words words, and names no other noun synset (so every
// question has one answer); a definition is usable when it has 1..max_answer_words words.
struct WordnetQaRules {
  int max_lemma_words = 3;
  int max_answer_words = 12;
};

// One pair per noun synset with a usable definition and a usable lemma: the question through the
// first usable lemma, the answer its definition, group = its lexicographer file, paraphrases = the
// same question through each further usable lemma (same answer). In file order.
std::vector<QaPair> wordnet_qa_candidates(const std::vector<WordnetSynset>& nouns, const WordnetQaRules& rules = {});

struct WordnetQaOptions {
  int64_t size = 2000;          // pairs in the sample
  uint64_t seed = 0;            // the sample's seed (fixed, so `wordnet-qa` is one data set everywhere)
  double animal_share = 0.1;    // share of noun.animal pairs, so group=noun.animal is a 10% forget set
  std::string dir = kWordnetDir;
  WordnetQaRules rules;
};

// The seeded sample: round(size * animal_share) noun.animal pairs and the rest from the other
// groups, each drawn first among pairs with paraphrases and only then among those without; the
// result in file order. InputError when size is not in 1..what the candidates allow.
QaDataset sample_wordnet_qa(const std::vector<QaPair>& candidates, const WordnetQaOptions& options);
// read_wordnet_data(dir/data.noun) -> candidates -> sample; source = wordnet_qa_spec(options).
QaDataset build_wordnet_qa(const WordnetQaOptions& options = {});
// The canonical data spec of these options: "wordnet-qa:N[,seed=S][,dir=DIR]" (defaults left out).
std::string wordnet_qa_spec(const WordnetQaOptions& options);

}  // namespace hamu
