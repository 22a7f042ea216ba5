// models/zoo.cpp: mlp, cnn and resnet20 (HAMU.md §9), their initialisation and the spec round trip.
#include <cmath>
#include <functional>

#include "engine/error.h"
#include "models/models.h"

namespace hamu::models {
namespace {

using nn::BatchNorm2d;
using nn::Conv2d;
using nn::Linear;

// Kaiming normal, fan_out mode, ReLU gain: std = sqrt(2 / (out * kh * kw)) (the ResNet init).
void kaiming_normal_fan_out(Tensor& w, Rng& rng) {
  const double fan_out = double(w.shape()[0]) * double(w.numel() / (w.shape()[0] * w.shape()[1]));
  rng.fill_normal(w, 0.0, std::sqrt(2.0 / fan_out));
}

// mlp: flatten -> 256 -> 128 -> classes with ReLU.
std::shared_ptr<nn::Module> build_mlp(const ModelSpec& s, Rng& rng) {
  auto m = std::make_shared<nn::Sequential>();
  m->add(std::make_shared<nn::Flatten>());
  m->add(std::make_shared<Linear>(s.in_channels * s.height * s.width, 256, true, rng));
  m->add(std::make_shared<nn::ReLU>());
  m->add(std::make_shared<Linear>(256, 128, true, rng));
  m->add(std::make_shared<nn::ReLU>());
  m->add(std::make_shared<Linear>(128, s.num_classes, true, rng));
  return m;
}

// cnn: two conv-BN-ReLU-maxpool stages (32, 64 channels) and a 128-unit classifier head.
class Cnn : public nn::Module {
 public:
  Cnn(const ModelSpec& s, Rng& rng) {
    if (s.height < 4 || s.width < 4) throw InputError("cnn: input " + s.describe() + " is smaller than 4x4");
    conv1 = register_module("conv1", std::make_shared<Conv2d>(s.in_channels, 32, 3, 1, 1, false, rng));
    bn1 = register_module("bn1", std::make_shared<BatchNorm2d>(32));
    conv2 = register_module("conv2", std::make_shared<Conv2d>(32, 64, 3, 1, 1, false, rng));
    bn2 = register_module("bn2", std::make_shared<BatchNorm2d>(64));
    const int64_t flat = 64 * (s.height / 4) * (s.width / 4);
    fc1 = register_module("fc1", std::make_shared<Linear>(flat, 128, true, rng));
    fc2 = register_module("fc2", std::make_shared<Linear>(128, s.num_classes, true, rng));
    kaiming_normal_fan_out(conv1->weight, rng);
    kaiming_normal_fan_out(conv2->weight, rng);
  }
  Tensor forward(const Tensor& x) override {
    const Pool2dOptions pool{2, 2, 2, 2, 0, 0};
    Tensor h = max_pool2d(conv_bn_act(*conv1, *bn1, x, Tensor(), true), pool);
    h = max_pool2d(conv_bn_act(*conv2, *bn2, h, Tensor(), true), pool);
    return (*fc2)(relu((*fc1)(h.flatten(1))));
  }
  std::shared_ptr<Conv2d> conv1, conv2;
  std::shared_ptr<BatchNorm2d> bn1, bn2;
  std::shared_ptr<Linear> fc1, fc2;
};

// ResNet basic block: relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)), projection shortcut
// (1x1 conv + BN) when the shape changes, no conv bias.
class BasicBlock : public nn::Module {
 public:
  BasicBlock(int64_t in, int64_t out, int stride, Rng& rng) {
    conv1 = register_module("conv1", std::make_shared<Conv2d>(in, out, 3, stride, 1, false, rng));
    bn1 = register_module("bn1", std::make_shared<BatchNorm2d>(out));
    conv2 = register_module("conv2", std::make_shared<Conv2d>(out, out, 3, 1, 1, false, rng));
    bn2 = register_module("bn2", std::make_shared<BatchNorm2d>(out));
    kaiming_normal_fan_out(conv1->weight, rng);
    kaiming_normal_fan_out(conv2->weight, rng);
    if (in != out || stride != 1) {
      shortcut = register_module("shortcut", std::make_shared<nn::Sequential>());
      shortcut_conv = shortcut->add(std::make_shared<Conv2d>(in, out, 1, stride, 0, false, rng));
      shortcut_bn = shortcut->add(std::make_shared<BatchNorm2d>(out));
      kaiming_normal_fan_out(shortcut_conv->weight, rng);
    }
  }
  Tensor forward(const Tensor& x) override {
    // BatchNorm + ReLU (+ the residual add) are one fused pass when BatchNorm is frozen or in eval mode, and
    // without gradients part of the convolution's kernel (nn::conv_bn_act).
    Tensor h = conv_bn_act(*conv1, *bn1, x, Tensor(), true);
    if (!shortcut) return conv_bn_act(*conv2, *bn2, h, x, true);
    if (grad_enabled()) {
      // The block's order of ops as it always was (conv2 before the shortcut): what per-sample captures
      // record and autograd replays follows it.
      Tensor c = (*conv2)(h);
      return bn2->forward_act(c, (*shortcut)(x), true);
    }
    return conv_bn_act(*conv2, *bn2, h, conv_bn_act(*shortcut_conv, *shortcut_bn, x, Tensor(), false), true);
  }
  std::shared_ptr<Conv2d> conv1, conv2;
  std::shared_ptr<BatchNorm2d> bn1, bn2;
  std::shared_ptr<nn::Sequential> shortcut;  // "shortcut.0" (1x1 conv) and "shortcut.1" (BatchNorm), as torchvision
  std::shared_ptr<Conv2d> shortcut_conv;     // its two children
  std::shared_ptr<BatchNorm2d> shortcut_bn;
};

// ResNet-20 for small images: 3x3 stem (16), stages of 3 blocks at widths 16/32/64 (stride 2 into
// stages 2 and 3), global average pool, linear head.
class ResNet20 : public nn::Module {
 public:
  ResNet20(const ModelSpec& s, Rng& rng) {
    if (s.height < 4 || s.width < 4) throw InputError("resnet20: input " + s.describe() + " is smaller than 4x4");
    conv1 = register_module("conv1", std::make_shared<Conv2d>(s.in_channels, 16, 3, 1, 1, false, rng));
    bn1 = register_module("bn1", std::make_shared<BatchNorm2d>(16));
    kaiming_normal_fan_out(conv1->weight, rng);
    const int64_t widths[3] = {16, 32, 64};
    int64_t in = 16;
    for (int stage = 0; stage < 3; ++stage) {
      auto layer = register_module("layer" + std::to_string(stage + 1), std::make_shared<nn::Sequential>());
      for (int b = 0; b < 3; ++b) {
        const int stride = (stage > 0 && b == 0) ? 2 : 1;
        layer->add(std::make_shared<BasicBlock>(in, widths[stage], stride, rng));
        in = widths[stage];
      }
      layers.push_back(layer);
    }
    fc = register_module("fc", std::make_shared<Linear>(64, s.num_classes, true, rng));
  }
  Tensor forward(const Tensor& x) override {
    Tensor h = conv_bn_act(*conv1, *bn1, x, Tensor(), true);
    for (auto& layer : layers) h = (*layer)(h);
    return (*fc)(global_avg_pool2d(h));
  }
  std::shared_ptr<Conv2d> conv1;
  std::shared_ptr<BatchNorm2d> bn1;
  std::vector<std::shared_ptr<nn::Sequential>> layers;
  std::shared_ptr<Linear> fc;
};

int64_t parse_positive(const std::map<std::string, std::string>& meta, const std::string& key,
                       const std::string& source) {
  auto it = meta.find(key);
  if (it == meta.end()) throw InputError(source + ": checkpoint metadata has no '" + key + "'");
  try {
    size_t used = 0;
    const long long v = std::stoll(it->second, &used);
    if (used != it->second.size() || v < 1 || v > 1000000) throw std::invalid_argument("range");
    return v;
  } catch (const std::exception&) {
    throw InputError(source + ": checkpoint metadata '" + key + "' = '" + it->second + "' is not a positive integer");
  }
}

void for_each_batchnorm(nn::Module& m, const std::function<void(BatchNorm2d&)>& f) {
  if (auto* bn = dynamic_cast<BatchNorm2d*>(&m)) f(*bn);
  for (auto& [name, child] : m.children()) for_each_batchnorm(*child, f);
}

}  // namespace

std::map<std::string, std::string> ModelSpec::to_metadata() const {
  return {{"arch", arch},
          {"in_channels", std::to_string(in_channels)},
          {"height", std::to_string(height)},
          {"width", std::to_string(width)},
          {"num_classes", std::to_string(num_classes)}};
}

ModelSpec ModelSpec::from_metadata(const std::map<std::string, std::string>& meta, const std::string& source) {
  ModelSpec s;
  auto it = meta.find("arch");
  if (it == meta.end()) throw InputError(source + ": checkpoint metadata has no 'arch' (not a hamu checkpoint?)");
  s.arch = it->second;
  s.in_channels = parse_positive(meta, "in_channels", source);
  s.height = parse_positive(meta, "height", source);
  s.width = parse_positive(meta, "width", source);
  s.num_classes = parse_positive(meta, "num_classes", source);
  return s;
}

std::string ModelSpec::describe() const {
  return arch + " (" + std::to_string(in_channels) + "x" + std::to_string(height) + "x" + std::to_string(width) +
         " -> " + std::to_string(num_classes) + ")";
}

int64_t model_value_count(const ModelSpec& s) {
  // Mirrors the builders above (the models test checks the two agree for every architecture);
  // 128-bit so metadata fields up to 1e6 each cannot overflow before the final check.
  using Wide = __int128;
  auto linear = [](Wide in, Wide out) { return in * out + out; };
  auto conv = [](Wide in, Wide out, Wide k) { return in * out * k * k; };
  auto bn = [](Wide c) { return 4 * c; };  // weight, bias, running mean, running variance
  const Wide c = s.in_channels, k = s.num_classes;
  Wide n = 0;
  if (s.arch == "mlp") {
    n = linear(c * s.height * s.width, 256) + linear(256, 128) + linear(128, k);
  } else if (s.arch == "cnn") {
    n = conv(c, 32, 3) + bn(32) + conv(32, 64, 3) + bn(64) + linear(Wide(64) * (s.height / 4) * (s.width / 4), 128) +
        linear(128, k);
  } else if (s.arch == "resnet20") {
    n = conv(c, 16, 3) + bn(16) + linear(64, k);
    const int64_t widths[3] = {16, 32, 64};
    int64_t in = 16;
    for (int stage = 0; stage < 3; ++stage)
      for (int b = 0; b < 3; ++b) {
        const int64_t out = widths[stage];
        const bool projection = in != out || (stage > 0 && b == 0);
        n += conv(in, out, 3) + bn(out) + conv(out, out, 3) + bn(out) + (projection ? conv(in, out, 1) + bn(out) : 0);
        in = out;
      }
  } else {
    throw InputError("--model: unknown architecture '" + s.arch + "' (choose mlp, cnn or resnet20)");
  }
  if (n > Wide(INT64_MAX)) throw InputError(s.describe() + " would have more values than an int64 can count");
  return int64_t(n);
}

const std::vector<std::string>& model_names() {
  static const std::vector<std::string> names = {"mlp", "cnn", "resnet20"};
  return names;
}

std::shared_ptr<nn::Module> build_model(const ModelSpec& spec, Rng& rng) {
  if (spec.in_channels < 1 || spec.height < 1 || spec.width < 1 || spec.num_classes < 2)
    throw InputError("--model: invalid input or class count for " + spec.describe());
  std::shared_ptr<nn::Module> m;
  if (spec.arch == "mlp") m = build_mlp(spec, rng);
  else if (spec.arch == "cnn") m = std::make_shared<Cnn>(spec, rng);
  else if (spec.arch == "resnet20") m = std::make_shared<ResNet20>(spec, rng);
  else throw InputError("--model: unknown architecture '" + spec.arch + "' (choose mlp, cnn or resnet20)");
  m->assign_names();
  return m;
}

void set_batchnorm_frozen(nn::Module& model, bool frozen) {
  for_each_batchnorm(model, [frozen](BatchNorm2d& bn) { bn.frozen = frozen; });
}

bool has_batchnorm(nn::Module& model) {
  bool any = false;
  for_each_batchnorm(model, [&any](BatchNorm2d&) { any = true; });
  return any;
}

}  // namespace hamu::models
