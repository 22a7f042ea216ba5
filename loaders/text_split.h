// loaders/text_split.h: forget/retain/test splits of QA data (--split, --test) and semantic or exact
// duplicates of the forget pairs added to retain (--duplicates), seeded and reproducible.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "loaders/qa.h"

namespace hamu {

enum class DuplicateMode { none, exact, semantic };

struct DuplicateSpec {
  DuplicateMode mode = DuplicateMode::none;
  std::string file;       // dup:FILE: the duplicates come from this file instead of the data's paraphrases
  std::string canonical;  // "none", "exact", "semantic" or "dup:FILE"
};
// --duplicates none|exact|semantic|dup:FILE.jsonl ("" = none). InputError naming --duplicates.
DuplicateSpec parse_duplicates(const std::string& text);

struct TextSplit {
  std::vector<QaPair> forget;     // the pairs to unlearn
  std::vector<QaPair> retain;     // the pairs to keep, with `duplicate` appended at the end (as add_duplicate)
  std::vector<QaPair> test;       // never trained on: the holdout, or the --test file
  std::vector<QaPair> duplicate;  // the added duplicates of forget pairs (also inside retain), reported apart
  std::string spec;               // canonical; make_text_split(spec, same data, {}) rebuilds the same split
  uint64_t seed = 0;              // the seed actually used
  int64_t removed_from_data = 0;  // forget=FILE: data pairs left out of retain (and holdout) as forget pairs
  int64_t forget_without_duplicate = 0;  // semantic: forget pairs with no paraphrase to add
  std::vector<std::string> notes;        // what the caller should print (overlaps, skipped duplicates)
};

struct TextSplitOptions {
  uint64_t default_seed = 0;   // the CLI's --seed; a ",seed=N" in the spec wins
  std::string test_file;       // --test FILE.jsonl ("" none); same as test=FILE in the spec
  std::string duplicates;      // --duplicates MODE ("" none); same as duplicates=MODE in the spec
  QaFields fields;             // field names for the forget=, test= and dup: files (the data spec's q=/a=)
};

// Spec: exactly one of
//   fraction=X        a seeded random fraction X in (0, 1) of the pairs (round(X*n), at least 1)
//   group=NAME        every pair whose group field is NAME
//   forget=FILE       the pairs of FILE (read like the data, same fields); data pairs equal to one of
//                     them (same question and answer) are removed from retain
// followed by any of
//   holdout=X         a seeded random fraction X in (0, 1) of the data carved off as the test set
//                     BEFORE the forget/retain split (for forget=FILE: after removing the forget pairs)
//   test=FILE         the test set is FILE (what --test FILE sets); not with holdout
//   duplicates=MODE   as --duplicates
//   seed=N            the seed of fraction and holdout (wins over default_seed)
// Order in the data is kept in every list. Duplicates (one per forget pair, appended to retain):
//   exact    each forget pair copied;
//   semantic each forget pair's first paraphrase (same group), from the data's `paraphrases` field;
//   dup:FILE rows of FILE: a row with `paraphrases` whose question is a forget question gives its
//            first paraphrase, a row without them is a duplicate itself (WaterDrum-TOFU's
//            exact_duplicate / semantic_duplicate splits are such rows).
// InputError naming --split (or the file and line) for: an unknown or repeated key, a number out of
// range, a group that matches nothing (the message lists groups that exist), an empty forget, retain
// or (holdout) test set, semantic duplicates when no forget pair has a paraphrase.
TextSplit make_text_split(const std::string& spec, const QaDataset& data, const TextSplitOptions& options = {});

}  // namespace hamu
