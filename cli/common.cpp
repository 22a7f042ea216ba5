// cli/common.cpp: shared subcommand plumbing.
#include "cli/common.h"

#include <fcntl.h>
#include <omp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "kernels/perf.h"

namespace hamu::cli {

models::LoadedModel load_image_model(const std::string& flag, const std::string& path, Device device) {
  struct stat st;
  if (::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
    struct stat cfg;
    const bool lm = ::stat((path + "/config.json").c_str(), &cfg) == 0 || ::stat((path + "/adapter_config.json").c_str(), &cfg) == 0;
    throw InputError(flag + ": " + path +
                     (lm ? " is a language model directory; an image model's " + flag.substr(2) +
                               " is a checkpoint file (.safetensors from hamu train or unlearn)"
                         : " is a directory, not a checkpoint file (.safetensors from hamu train or unlearn)"));
  }
  return models::load_model(path, device);
}

std::vector<Flag> common_flags() {
  return {{"--threads", "N", "CPU threads", "all cores"},
          {"--device", "DEV", "cpu, cuda or cuda:N", "cpu"},
          {"--seed", "N", "seed for splits, shuffling and initialisation", "0"},
          {"--quiet", "", "no progress lines on stderr: progress bars, train's epoch lines, compare's per-method lines "
                          "(as HAMU_NO_PROGRESS=1); results, warnings and errors still print", ""},
          {"--config", "FILE", "replay the configuration a report recorded (provenance.config); flags given here win", ""},
          {"--tf32", "", "GPU: allow TF32 tensor-core math in GEMMs and convolutions (faster, ~3e-4 relative error; "
                         "float32 is the default)", ""},
          {"--deterministic", "", "GPU: only deterministic cuDNN convolution algorithms (bitwise-repeatable runs)", ""}};
}

Device apply_common(const Args& args) {
  if (args.on("--quiet")) ::setenv("HAMU_NO_PROGRESS", "1", 1);  // every Progress bar reads it
  if (args.has("--threads")) {
    const int64_t n = args.integer("--threads");
    if (n < 1 || n > 1024) throw InputError("--threads: " + std::to_string(n) + " is not between 1 and 1024");
    omp_set_num_threads(int(n));
  }
  args.set_resolved("--threads", std::to_string(omp_get_max_threads()));  // "all cores" made explicit
  kernels::PerfOptions perf = kernels::perf_options();
  if (args.on("--tf32")) perf.tf32 = true;
  if (args.on("--deterministic")) perf.deterministic = true;
  kernels::set_perf_options(perf);
  return Device::parse(args.str("--device"));
}

DataAndSplit load_data_split(const std::string& data_spec, const std::string& split_spec, uint64_t seed) {
  DataAndSplit out;
  out.data = load_data(data_spec);
  if (!split_spec.empty() && split_spec != "none") {
    out.split = make_split(split_spec, out.data.train, seed);
    out.has_split = true;
  } else {
    out.split.spec = "none";
    out.split.retain.resize(size_t(out.data.train.n));
    for (int64_t i = 0; i < out.data.train.n; ++i) out.split.retain[size_t(i)] = i;
  }
  out.test.resize(size_t(out.data.test.n));
  for (int64_t i = 0; i < out.data.test.n; ++i) out.test[size_t(i)] = i;
  return out;
}

void check_model_fits_data(const models::LoadedModel& m, const ImageDataset& train) {
  const models::ModelSpec& s = m.spec;
  if (s.in_channels != train.c || s.height != train.h || s.width != train.w || s.num_classes != train.num_classes)
    throw InputError(m.path + ": model " + s.describe() + " does not match the data (" + std::to_string(train.c) + "x" +
                     std::to_string(train.h) + "x" + std::to_string(train.w) + ", " + std::to_string(train.num_classes) +
                     " classes)");
}

Normalizer model_normalizer(const models::LoadedModel& m, const ImageDataset& train) {
  auto it = m.metadata.find("normalizer");
  if (it == m.metadata.end()) return compute_normalizer(train);
  Normalizer n = Normalizer::parse(it->second);
  if (n.channels() != train.c)
    throw InputError(m.path + ": stored normaliser has " + std::to_string(n.channels()) + " channels, the data has " +
                     std::to_string(train.c));
  return n;
}

void check_reference(const models::LoadedModel& ref, const std::string& data_spec, const std::string& split_spec,
                     bool force) {
  std::vector<std::string> diff;
  const std::string data = ref.meta_or("data", ""), split = ref.meta_or("split", ""), subset = ref.meta_or("subset", "");
  if (!data.empty() && data != data_spec) diff.push_back("data '" + data + "', this run '" + data_spec + "'");
  if (!data.empty() && (split.empty() || split == "none"))
    diff.push_back("no split (trained on everything), this run's forget set is '" + split_spec + "'");
  else if (!split.empty() && split != split_spec)  // canonical specs: random splits carry their seed
    diff.push_back("split '" + split + "', this run '" + split_spec + "'");
  if (!subset.empty() && subset != "retain") diff.push_back("subset '" + subset + "' (not the retain set)");
  refuse_reference(ref.path, diff, force);
}

void refuse_reference(const std::string& path, const std::vector<std::string>& diff, bool force) {
  if (diff.empty()) return;
  std::string what;
  for (const std::string& d : diff) what += (what.empty() ? "" : "; ") + d;
  if (!force)
    throw InputError("--reference: " + path + " was not retrained for this forget set: " + what +
                     " (--force-reference uses it anyway)");
  std::fprintf(stderr, "hamu: warning: --force-reference: %s was not retrained for this forget set: %s\n", path.c_str(),
               what.c_str());
}

void check_folder_writable(const std::string& flag, const std::string& dir) {
  struct stat st {};
  if (stat(dir.c_str(), &st) != 0) {
    if (errno == ENOTDIR) throw InputError(flag + ": '" + dir + "' is not a folder (a file is in its path)");
    throw InputError(flag + ": folder '" + dir + "' does not exist");
  }
  if (!S_ISDIR(st.st_mode)) throw InputError(flag + ": '" + dir + "' is not a folder");
  // A probe file, created exclusively and removed at once: only a real create answers for root, read-only
  // mounts, full inode tables and pseudo file systems.
  static int probes = 0;
  const std::string probe = dir + "/.hamu-write-probe." + std::to_string(::getpid()) + "." + std::to_string(probes++);
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) throw InputError(flag + ": folder '" + dir + "' is not writable (" + std::strerror(errno) + ")");
  ::close(fd);
  ::unlink(probe.c_str());
}

void check_output_dir(const std::string& flag, const std::string& dir) {
  if (dir.empty()) throw InputError(flag + ": empty path");
  std::string probe = dir;
  while (probe.size() > 1 && probe.back() == '/') probe.pop_back();
  struct stat st {};
  while (stat(probe.c_str(), &st) != 0 && errno == ENOENT) {  // climb to the first folder that exists
    const size_t slash = probe.find_last_of('/');
    probe = slash == std::string::npos ? "." : (slash == 0 ? "/" : probe.substr(0, slash));
  }
  check_folder_writable(flag, probe);
}

void check_output_path(const std::string& flag, const std::string& path, OutputKind kind) {
  if (path.empty()) throw InputError(flag + ": empty path");
  const size_t slash = path.find_last_of('/');
  const std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  struct stat st {};
  if (stat(path.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) throw InputError(flag + ": '" + path + "' is a folder");
    if (!S_ISREG(st.st_mode)) {
      if (kind == OutputKind::replaced)
        throw InputError(flag + ": '" + path + "' is not a regular file (it would be replaced, not written to)");
      return;  // a device or pipe written in place (/dev/stdout): its folder is not ours to probe
    }
  }
  check_folder_writable(flag, dir);
}

TrainSubset read_train_subset(const Args& args) {
  TrainSubset t{args.str("--subset"), args.str_or("--split", "")};
  if (t.subset != "full" && t.subset != "retain") throw InputError("--subset: '" + t.subset + "' is not full or retain");
  if (t.subset == "retain" && t.split.empty()) throw InputError("--subset retain needs --split (what to leave out)");
  return t;
}

void read_loop_options(const Args& args, LoopOptions& opt, uint64_t seed, Device device) {
  opt.lr = args.number("--lr");
  opt.weight_decay = args.number("--weight-decay");
  opt.clip = args.number("--clip");
  opt.schedule = args.str("--schedule");
  opt.epochs = args.integer("--epochs");
  opt.batch = args.integer("--batch");
  opt.seed = seed;
  opt.device = device;
  if (opt.epochs < 1 || opt.epochs > 100000) throw InputError("--epochs: must be between 1 and 100000");
  if (opt.batch < 1 || opt.batch > 1000000) throw InputError("--batch: must be between 1 and 1000000");
  if (!(opt.lr > 0) || !std::isfinite(opt.lr)) throw InputError("--lr: must be positive");
  if (opt.weight_decay < 0) throw InputError("--weight-decay: must be >= 0");
  if (opt.clip < 0) throw InputError("--clip: must be >= 0");
  if (opt.schedule != "constant" && opt.schedule != "cosine")
    throw InputError("--schedule: '" + opt.schedule + "' is not constant or cosine");
}

std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

}  // namespace hamu::cli
