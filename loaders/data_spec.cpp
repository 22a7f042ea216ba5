// loaders/data_spec.cpp: --data SPEC parsing and dispatch to the image readers.
#include <charconv>
#include <cstdlib>

#include "engine/error.h"
#include "loaders/data.h"
#include "loaders/number_text.h"

namespace hamu {
namespace {

const char* const kKinds[] = {"fashion-mnist", "mnist", "idx", "cifar10", "images"};

std::vector<std::string> split_commas(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (true) {
    const size_t comma = s.find(',', start);
    out.push_back(s.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

[[noreturn]] void bad(const std::string& spec, const std::string& why) {
  throw InputError("--data " + spec + ": " + why);
}

int64_t parse_positive(const std::string& spec, const std::string& text, const char* what) {
  int64_t v = 0;
  const auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || p != text.data() + text.size() || v <= 0)
    bad(spec, std::string(what) + " '" + text + "' is not a positive integer");
  return v;
}

void parse_image_options(const std::string& spec, const std::vector<std::string>& opts, DataSpec& out) {
  for (const auto& o : opts) {
    const size_t eq = o.find('=');
    const std::string key = o.substr(0, eq), value = eq == std::string::npos ? "" : o.substr(eq + 1);
    if (eq == std::string::npos || value.empty())
      bad(spec, "option '" + o + "' is not KEY=VALUE (size=HxW, channels=C, holdout=X)");
    if (key == "size") {
      const size_t x = value.find_first_of("xX");
      if (x == std::string::npos) bad(spec, "size '" + value + "' is not HxW");
      out.images.h = parse_positive(spec, value.substr(0, x), "height");
      out.images.w = parse_positive(spec, value.substr(x + 1), "width");
      if (out.images.h > 4096 || out.images.w > 4096) bad(spec, "size " + value + " is above 4096x4096");
    } else if (key == "channels") {
      out.images.channels = parse_positive(spec, value, "channels");
      if (out.images.channels != 1 && out.images.channels != 3) bad(spec, "channels must be 1 or 3");
    } else if (key == "holdout") {
      char* end = nullptr;
      const double v = std::strtod(value.c_str(), &end);
      if (end != value.c_str() + value.size() || !(v >= 0.0 && v < 1.0))
        bad(spec, "holdout '" + value + "' is not a fraction in [0, 1)");
      out.images.holdout = v;
    } else {
      bad(spec, "unknown option '" + key + "' (size=HxW, channels=C, holdout=X)");
    }
  }
}

}  // namespace

bool is_image_data_spec(const std::string& spec) {
  if (spec.empty()) return true;
  const std::string kind = spec.substr(0, spec.find(':'));
  for (const char* k : kKinds)
    if (kind == k) return true;
  return false;
}

DataSpec parse_data_spec(const std::string& spec_in) {
  const std::string spec = spec_in.empty() ? "fashion-mnist" : spec_in;
  const size_t colon = spec.find(':');
  DataSpec out;
  out.kind = spec.substr(0, colon);
  if (!is_image_data_spec(out.kind))
    throw InputError("--data: unknown data set '" + spec +
                     "' (expected fashion-mnist, mnist:DIR, idx:DIR, cifar10:DIR or images:DIR[,size=HxW,channels=C])");
  std::string rest = colon == std::string::npos ? "" : spec.substr(colon + 1);
  std::vector<std::string> opts;
  if (out.kind == "images") {
    opts = split_commas(rest);
    rest = opts.front();
    opts.erase(opts.begin());
    parse_image_options(spec, opts, out);
  }
  if (colon != std::string::npos && rest.empty()) bad(spec, "the folder after ':' is empty");
  out.dir = rest;
  if (out.dir.empty()) {
    const char* env = std::getenv("HAMU_DATA");
    if (env && *env) out.dir = env;
    else if (out.kind == "fashion-mnist") out.dir = kFashionMnistDir;
    else bad(spec, "needs a folder: " + out.kind + ":DIR (or set HAMU_DATA=DIR)");
  }
  // A spec without a folder stays without one, so a checkpoint made here still loads on a machine
  // whose data lives elsewhere.
  out.canonical = colon == std::string::npos ? out.kind : out.kind + ":" + out.dir;
  if (out.kind == "images") {
    if (out.images.h) out.canonical += ",size=" + std::to_string(out.images.h) + "x" + std::to_string(out.images.w);
    if (out.images.channels) out.canonical += ",channels=" + std::to_string(out.images.channels);
    if (out.images.holdout != ImageFolderOptions{}.holdout)
      out.canonical += ",holdout=" + exact_number_text(out.images.holdout);
  }
  return out;
}

DataBundle load_data(const DataSpec& spec) {
  DataBundle b;
  if (spec.kind == "fashion-mnist" || spec.kind == "mnist" || spec.kind == "idx") b = load_idx_dir(spec.dir, spec.kind);
  else if (spec.kind == "cifar10") b = load_cifar10_dir(spec.dir);
  else if (spec.kind == "images") b = load_image_folder(spec.dir, spec.images);
  else throw InputError("--data: unknown data set kind '" + spec.kind + "'");
  b.spec = spec.canonical;
  b.train.check_consistent();
  b.test.check_consistent();
  return b;
}

DataBundle load_data(const std::string& spec) { return load_data(parse_data_spec(spec)); }

}  // namespace hamu
