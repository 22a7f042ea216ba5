// loaders/data.h: the public data API: --data SPEC parsing and loading, plus splits and batching.
#pragma once
#include <cstdint>
#include <string>

#include "loaders/batch.h"
#include "loaders/dataset.h"
#include "loaders/split.h"

namespace hamu {

// Where the default data set lives when $HAMU_DATA is unset (Debian package dataset-fashion-mnist).
inline constexpr const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";

struct DataSpec {
  std::string kind;  // "fashion-mnist", "mnist", "idx", "cifar10", "images"
  std::string dir;   // resolved folder
  ImageFolderOptions images;  // images: only
  std::string canonical;      // what a checkpoint or report records
};

// Forms: fashion-mnist[:DIR], mnist[:DIR], idx:DIR, cifar10[:DIR],
// images:DIR[,size=HxW][,channels=C][,holdout=X] (that DIR may not contain commas). A kind without
// DIR uses $HAMU_DATA (fashion-mnist then falls back to kFashionMnistDir). Empty spec = fashion-mnist.
// InputError names --data.
DataSpec parse_data_spec(const std::string& spec);
// True when the spec names one of the image data sets above (others, e.g. qa:, are text loaders').
bool is_image_data_spec(const std::string& spec);

DataBundle load_data(const DataSpec& spec);
DataBundle load_data(const std::string& spec);

}  // namespace hamu
