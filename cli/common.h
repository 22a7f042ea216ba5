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
#include "train/train.h"

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

// models::load_model for an image command's --model or --reference (`flag`): a directory is refused naming the
// flag and what it holds (a language model's config.json, else nothing hamu reads) instead of the reader's bare
// "not a regular file".
models::LoadedModel load_image_model(const std::string& flag, const std::string& path, Device device);

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
// What check_reference and the text path's check do with the differences found: nothing when there are none,
// else InputError "--reference: PATH was not retrained for this forget set: D1; D2 (...)", or with `force` the
// same as a warning line on stderr.
void refuse_reference(const std::string& path, const std::vector<std::string>& diff, bool force);

// Every output path is checked before any work (InputError naming the flag): its folder exists and is
// writable (a probe file is created and removed there: permission bits say nothing to root, a read-only
// mount or /proc only answer an actual create) and the path is no folder. Outputs written through a
// temporary renamed over the path (checkpoints, JSON, SVG: `replaced`) must not name a device or pipe,
// which the rename would replace; a `streamed` output (a CSV log written row by row) may (/dev/stdout).
enum class OutputKind { replaced, streamed };
void check_output_path(const std::string& flag, const std::string& path, OutputKind kind = OutputKind::replaced);
// The folder exists, is a folder and takes a new file (the probe above); InputError naming the flag.
void check_folder_writable(const std::string& flag, const std::string& dir);
// An output folder (a Hugging Face model or adapter directory) written at the end of a run: an existing folder
// takes a new file, or the nearest existing folder above it does (the run creates what is missing then);
// nothing is created here. InputError naming the flag.
void check_output_dir(const std::string& flag, const std::string& dir);

// `hamu train`'s --subset (full | retain) and --split, images and text alike: retain needs a split (what to leave
// out); InputError naming the flag otherwise.
struct TrainSubset {
  std::string subset, split;
};
TrainSubset read_train_subset(const Args& args);

// The training loop's flags shared by image and text training (--lr, --weight-decay, --clip, --schedule,
// --epochs, --batch) into `opt`, with the seed and device; InputError naming the flag on a bad value.
void read_loop_options(const Args& args, LoopOptions& opt, uint64_t seed, Device device);

std::string fmt(const char* f, double v);

}  // namespace hamu::cli
