// cli/common.h: what every subcommand shares: threads, device, data + split loading, checkpoint
// compatibility checks and writing outputs.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "cli/args.h"
#include "engine/json.h"
#include "loaders/data.h"
#include "models/checkpoint.h"

namespace hamu::cli {

constexpr const char* kVersion = "0.1.0";

// Common flags: --threads, --device, --seed.
std::vector<Flag> common_flags();
// Applies --threads (all cores by default) and returns the --device.
Device apply_common(const Args& args);

struct DataAndSplit {
  DataBundle data;
  Split split;                    // empty forget set when no split was given
  std::vector<int64_t> test;      // every test index
  bool has_split = false;
};
DataAndSplit load_data_split(const std::string& data_spec, const std::string& split_spec, uint64_t seed);

// InputError naming the checkpoint when its architecture cannot take this data.
void check_model_fits_data(const models::LoadedModel& m, const ImageDataset& train);
// The normaliser stored at training time (or computed from the training set for foreign files).
Normalizer model_normalizer(const models::LoadedModel& m, const ImageDataset& train);

// A --reference (the retrained model) must have been made for this run's forget set: trained on the same
// data set, for the same split (canonical specs: a random split's seed included), on the retain subset.
// InputError (exit 2) naming what differs, unless `force` (--force-reference): then a warning on stderr.
// Checkpoints that record none of these (foreign files) are taken as they are.
void check_reference(const models::LoadedModel& ref, const std::string& data_spec, const std::string& split_spec,
                     bool force);

// Refuses to overwrite an input (checkpoint paths) and checks the folder exists, before any work.
void check_output_path(const std::string& flag, const std::string& path);

std::string fmt(const char* f, double v);

}  // namespace hamu::cli
