// cli/provenance.h: what every report and checkpoint records about how it was made — hamu version and
// git commit, the command line, the fully resolved configuration (every flag, defaults made explicit;
// `--config FILE` replays it), the machine, the data set's identity and the parent checkpoint's hash.
// Hashes are FNV-1a 64-bit over the bytes ("fnv1a64:<16 hex digits>"): fast, stable, not cryptographic.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <string>

#include "cli/args.h"
#include "cli/lm_setup.h"
#include "engine/json.h"
#include "engine/tensor.h"
#include "loaders/dataset.h"
#include "loaders/qa.h"

namespace hamu::cli {

// The commit the binary was built from (Makefile: git rev-parse --short HEAD, "-dirty" with local
// changes; "unknown" outside git).
const char* git_commit();

uint64_t fnv1a64(const void* data, size_t bytes, uint64_t h = 0xcbf29ce484222325ULL);
// "fnv1a64:..." of a file's bytes (read in chunks: bounded memory for any size; remembered per path, size and
// modification time, so a run reads each input once); InputError naming the file.
std::string file_hash(const std::string& path);
// "fnv1a64:..." of the images and labels read (train, then test): the data set's content identity.
std::string dataset_hash(const DataBundle& data);

// {"cpu": model name, "cores": hardware threads, "threads": OpenMP threads, "device": "cpu"|"cuda:N", "gpu": name}
Json machine_json(Device device);

// {"hamu_version", "git_commit", "command_line", "config", "machine"}; callers add "data" and "parent".
Json provenance_json(const Args& args, Device device);
// {"spec", "hash"} of a data set.
Json data_identity_json(const DataBundle& data);
// "fnv1a64:..." of QA pairs as read (each pair's question, answer, group and paraphrases, set after set, every
// string with its length): a text data set's content identity, forget=/test=/dup: files included.
std::string qa_pairs_hash(std::initializer_list<const std::vector<QaPair>*> sets);
// {"spec", "hash"} of a text run's data: the pairs of its forget, retain (added duplicates included) and test sets.
Json text_data_identity_json(const std::string& spec, std::initializer_list<const std::vector<QaPair>*> sets);
// {"path", "hash"} of an input checkpoint.
Json parent_json(const std::string& path);

// A language model's inputs in `prov`: "parent" the adapter directory with LoRA (and "base" its base), else the
// Hugging Face directory; nothing for a model built from scratch (no base).
void set_lm_parents(Json& prov, const LmSource& source);

}  // namespace hamu::cli
