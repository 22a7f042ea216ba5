// examples/engine_step.cpp: the engine's own step on saved gradients, the reference the Python examples
// check libhamu against. Reads IN.safetensors with tensors theta.<i>, r.<i>, f.<i> (float32, i = 0..n-1),
// builds the parameters as engine tensors, copies r and f into FusedUpdate's own gradient buffers (where
// `hamu unlearn`'s backward passes put them) and takes the runner's sgd step: the method's own step where it
// has one, else its coefficients from the host statistics and the apply pass. Writes theta.<i> after the
// step to OUT.safetensors and prints the report as one JSON line.
//
// Usage: engine_step IN OUT METHOD LR RATIO CLIP SCOPE SPLIT [radius=R] [continue=1]
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "engine/safetensors.h"
#include "unlearn/method_registry.h"
#include "unlearn/runner.h"
#include "unlearn/update.h"

using namespace hamu;

int main(int argc, char** argv) {
  if (argc < 9) {
    std::fprintf(stderr, "usage: engine_step IN OUT METHOD LR RATIO CLIP SCOPE SPLIT [radius=R] [continue=1]\n");
    return 2;
  }
  try {
    const Checkpoint in = load_safetensors(argv[1]);
    UnlearnOptions opt;
    opt.method = &parse_method(argv[3]);
    opt.params.lr = std::atof(argv[4]);
    opt.ratio = std::atof(argv[5]);
    opt.params.clip = std::atof(argv[6]);
    opt.scope = parse_scope(argv[7]);
    opt.split = parse_constraint_split(argv[8]);
    for (int i = 9; i < argc; ++i) {
      const std::string a = argv[i];
      if (a.rfind("radius=", 0) == 0) {
        opt.fixed_radius = true;
        opt.radius = std::atof(a.c_str() + 7);
      } else if (a == "continue=1") {
        opt.continue_on_infeasible = true;
      } else {
        throw InputError("unknown option '" + a + "'");
      }
    }
    validate_unlearn_options(opt, 1, 1);
    std::vector<Tensor> params;
    for (size_t i = 0; in.has("theta." + std::to_string(i)); ++i) params.push_back(in.get("theta." + std::to_string(i)).clone());
    FusedUpdate update(params);
    for (size_t i = 0; i < params.size(); ++i) {
      update.retain_grads()[i].copy_(in.get("r." + std::to_string(i)));
      update.forget_grads()[i].copy_(in.get("f." + std::to_string(i)));
    }
    update.compute_stats();
    StepDecision d;
    if (std::optional<StepDecision> own = opt.method->own_step(opt, update)) {
      d = *own;
    } else {
      d = opt.method->coefficients(opt, update.count(), update.stats_host());
      if (d.report.applied && !d.report.nonfinite) update.apply(d.coef);
    }
    std::vector<NamedTensor> out;
    for (size_t i = 0; i < params.size(); ++i) out.push_back({"theta." + std::to_string(i), params[i]});
    save_safetensors(argv[2], out);
    const HamuReport& r = d.report;
    std::printf("{\"kappa\": %.17g, \"kappa1\": %.17g, \"kappa2\": %.17g, \"n_direct\": %d, \"n_rectified\": %d, "
                "\"n_colinear\": %d, \"n_infeasible\": %d, \"applied\": %d, \"nonfinite\": %d}\n",
                r.kappa, r.kappa1, r.kappa2, r.n_direct, r.n_rectified, r.n_colinear, r.n_infeasible, r.applied,
                r.nonfinite);
    return 0;
  } catch (const InputError& e) {
    std::fprintf(stderr, "engine_step: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "engine_step: %s\n", e.what());
    return 1;
  }
}
