// tests/test_hardness_torch.cpp: an outside check of `hamu hardness` against PyTorch. The expected numbers in
// tests/fixtures/hardness/expected.json come from per-sample gradients computed in float64 by torch (one backward
// per sample; tests/fixtures/hardness/make_fixture.py and text_case.py) on the committed checkpoints and data: an
// mlp and a cnn with BatchNorm in eval mode on 4x4 IDX images, the gpt2 text fixture with a PEFT LoRA adapter on
// QA pairs, and the same gpt2 whole (its tied embedding one block). The driver `hamu hardness` runs
// (compute_hardness, set up as cli/cmd_hardness*.cpp sets it up) must reproduce every reported quantity, by the
// ghost, the materialised and the automatic path, at three --ratio/--lr/--clip settings (feasible; collateral
// forgetting in most blocks; infeasible): K, kappa, cosine and norms, per block kappa_l / cosine / norms / kappa1 /
// kappa2 / collateral, per forget sample loss / kappa_j / row mean of K / norm / cosine / nearest retain sample
// (index and label exactly) / its K and cosine, the retain norms, the solver's clipped kappa, kappa1, kappa2,
// feasibility and stopping margins and collateral count, the shares and means, and the verdict; and with
// --retain-samples/--forget-samples, the numbers on the seeded subset hamu names. The model runs in float32:
// relative errors (against the largest value of a quantity) up to kTol; indices, labels, counts and the verdict
// exactly.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>

#include "engine/json.h"
#include "loaders/data.h"
#include "loaders/split.h"
#include "loaders/template.h"
#include "loaders/text_spec.h"
#include "loaders/text_split.h"
#include "loaders/tokenizer.h"
#include "models/checkpoint.h"
#include "models/lm/lm.h"
#include "models/lm/lora.h"
#include "unlearn/hardness.h"
#include "unlearn/hardness_text.h"

namespace hamu {
namespace {

namespace fs = std::filesystem;
const fs::path kDir = fs::path(__FILE__).parent_path() / "fixtures" / "hardness";
constexpr double kTol = 2e-5;

const Json& expected() {
  static const Json j = [] {
    std::ifstream f(kDir / "expected.json");
    std::stringstream s;
    s << f.rdbuf();
    return Json::parse(s.str());
  }();
  return j;
}

// Largest |x| over a quantity, so values near zero are judged against the quantity's scale.
struct Scale {
  double s = 0;
  void add(double x) { s = std::max(s, std::abs(x)); }
};

// Worst relative error per quantity over every case, printed once at the end of each test case.
struct Errors {
  std::map<std::string, double> worst;
  void check(const std::string& what, double got, double want, double scale) {
    const double e = std::abs(got - want) / std::max(scale, 1e-30);
    worst[what] = std::max(worst[what], e);
    if (e > kTol) FAIL_CHECK(what << ": hamu " << got << ", torch " << want << " (relative error " << e << ")");
  }
  void report(const std::string& name) const {
    std::string s;
    char buf[32];
    for (const auto& [k, v] : worst) {
      std::snprintf(buf, sizeof buf, " %.1e\n", v);
      s += "  " + k + buf;
    }
    MESSAGE(name << " worst relative errors:\n" << s);
  }
};

void check_report(const HardnessReport& r, const Json& want, const Json& solver, Errors& err) {
  REQUIRE(r.n_forget == want["n_forget"].as_int());
  REQUIRE(r.n_retain == want["n_retain"].as_int());
  const double kscale = std::abs(want["kappa"].as_number());
  err.check("kappa", r.kappa, want["kappa"].as_number(), kscale);
  err.check("cosine", r.cosine, want["cosine"].as_number(), 1.0);
  err.check("retain_grad_norm", r.retain_norm, want["retain_grad_norm"].as_number(), want["retain_grad_norm"].as_number());
  err.check("forget_grad_norm", r.forget_norm, want["forget_grad_norm"].as_number(), want["forget_grad_norm"].as_number());

  // Blocks: one per trainable parameter, in model order, named as in the PyTorch state dict.
  const Json& wb = want["blocks"];
  REQUIRE(r.blocks.size() == wb.size());
  Scale bk, bn;
  for (size_t b = 0; b < wb.size(); ++b) {
    bk.add(wb[b]["kappa"].as_number());
    bn.add(wb[b]["retain_norm"].as_number());
    bn.add(wb[b]["forget_norm"].as_number());
  }
  for (size_t b = 0; b < wb.size(); ++b) {
    const BlockHardness& h = r.blocks[b];
    CHECK(h.name == wb[b]["name"].as_string());
    err.check("block kappa_l", h.kappa, wb[b]["kappa"].as_number(), bk.s);
    err.check("block cosine", h.cosine, wb[b]["cosine"].as_number(), 1.0);
    err.check("block norms", h.retain_norm, wb[b]["retain_norm"].as_number(), bn.s);
    err.check("block norms", h.forget_norm, wb[b]["forget_norm"].as_number(), bn.s);
  }

  // Samples: forget order; the nearest retain sample exactly.
  const Json& ws = want["samples"];
  REQUIRE(r.samples.size() == ws.size());
  Scale sk, sn, sl, ssk;
  for (size_t j = 0; j < ws.size(); ++j) {
    sk.add(ws[j]["kappa"].as_number());
    sn.add(ws[j]["norm"].as_number());
    sl.add(ws[j]["loss"].as_number());
    ssk.add(ws[j]["similar_k"].as_number());
  }
  for (size_t j = 0; j < ws.size(); ++j) {
    const SampleHardness& s = r.samples[j];
    CAPTURE(j);
    CHECK(s.index == ws[j]["index"].as_int());
    CHECK(s.label == ws[j]["label"].as_int());
    CHECK(s.similar_index == ws[j]["similar_index"].as_int());
    CHECK(s.similar_label == ws[j]["similar_label"].as_int());
    err.check("sample loss", s.loss, ws[j]["loss"].as_number(), sl.s);
    err.check("kappa_j (row form)", s.kappa, ws[j]["kappa"].as_number(), sk.s);
    err.check("kappa_j (row mean of K)", s.kappa_k, ws[j]["kappa_rowmean"].as_number(), sk.s);
    err.check("sample norm", s.norm, ws[j]["norm"].as_number(), sn.s);
    err.check("sample cosine", s.cosine, ws[j]["cosine"].as_number(), 1.0);
    err.check("nearest K", s.similar_k, ws[j]["similar_k"].as_number(), ssk.s);
    err.check("nearest cosine", s.similar_cosine, ws[j]["similar_cosine"].as_number(), 1.0);
  }

  // K in full: the heat map holds every pair when both sides have at most heat_size samples.
  const Json& wk = want["k"];
  const Json& wri = want["retain_index"];
  REQUIRE(r.heat_rows.size() == wk.size());
  REQUIRE(r.heat_cols.size() == wri.size());
  Scale ks, rn;
  for (size_t j = 0; j < wk.size(); ++j)
    for (size_t i = 0; i < wri.size(); ++i) ks.add(wk[j][i].as_number());
  for (size_t i = 0; i < wri.size(); ++i) rn.add(want["retain_norms"][i].as_number());
  for (size_t c = 0; c < r.heat_cols.size(); ++c) {
    CHECK(r.heat_cols[c] == wri[c].as_int());
    err.check("retain sample norm", r.heat_col_norms[c], want["retain_norms"][c].as_number(), rn.s);
  }
  for (size_t row = 0; row < r.heat_rows.size(); ++row) {
    const size_t j = size_t(r.heat_rows[row]);
    for (size_t c = 0; c < r.heat_cols.size(); ++c) err.check("K", r.heat[row][c], wk[j][c].as_number(), ks.s);
  }

  err.check("share_hard", r.share_hard, want["share_hard"].as_number(), 1.0);
  err.check("mean_sample_cosine", r.mean_sample_cosine, want["mean_sample_cosine"].as_number(), 1.0);
  err.check("share_same_class", r.share_same_class, want["share_same_class"].as_number(), 1.0);
  err.check("mean_similar_cosine", r.mean_similar_cosine, want["mean_similar_cosine"].as_number(), 1.0);

  // The solver's view at this option set.
  const kernels::HamuReport& s = r.solver;
  const double cs = std::abs(solver["kappa_clipped"].as_number());
  err.check("clipped kappa", s.kappa, solver["kappa_clipped"].as_number(), cs);
  const double ts = std::max(std::abs(solver["kappa1"].as_number()), std::abs(solver["kappa2"].as_number()));
  err.check("kappa1", s.kappa1, solver["kappa1"].as_number(), ts);
  err.check("kappa2", s.kappa2, solver["kappa2"].as_number(), ts);
  err.check("feasibility margin", s.feasibility_margin, solver["feasibility_margin"].as_number(), 1.0);
  // The stopping margin is a difference of sums of R_l ||c_l|| ~ lr * clip: judged on that scale.
  const double lr = solver["options"]["lr"].as_number();
  err.check("stopping margin", s.stopping_margin, solver["stopping_margin"].as_number(),
            lr * std::max(1.0, r.retain_norm) * std::max(1.0, r.forget_norm));
  CHECK(s.n_collateral == solver["collateral_blocks"].as_int());
  CHECK(s.n_blocks == solver["n_blocks"].as_int());
  const Json& sb = solver["blocks"];
  int collateral = 0;
  for (size_t b = 0; b < sb.size(); ++b) {
    CAPTURE(r.blocks[b].name);
    err.check("block kappa1/kappa2", r.blocks[b].kappa1, sb[b]["kappa1"].as_number(), ts);
    err.check("block kappa1/kappa2", r.blocks[b].kappa2, sb[b]["kappa2"].as_number(), ts);
    CHECK(r.blocks[b].collateral == sb[b]["collateral"].as_bool());
    collateral += r.blocks[b].collateral;
  }
  CHECK(collateral == s.n_collateral);  // the table's "yes" rows are the count the verdict uses
  CHECK(r.verdict == solver["verdict"].as_string());
}

struct Variant {
  GhostPath path;
  int64_t chunk, forget_tile, retain_tile;
};
// Every path, and tiles and capture chunks that do not divide the sample counts.
const Variant kVariants[] = {{GhostPath::automatic, 128, 0, 0},
                             {GhostPath::ghost, 128, 0, 0},
                             {GhostPath::materialise, 128, 0, 0},
                             {GhostPath::ghost, 4, 4, 5},
                             {GhostPath::materialise, 5, 2, 3}};

HardnessOptions options_for(const Json& o, const Variant& v) {
  HardnessOptions opt;
  opt.ratio = o["ratio"].as_number();
  opt.lr = o["lr"].as_number();
  opt.clip = o["clip"].as_number();
  opt.path = v.path;
  opt.chunk = v.chunk;
  opt.forget_tile = v.forget_tile;
  opt.retain_tile = v.retain_tile;
  return opt;
}

void check_paths(const std::string& what, const Json& want,
                 const std::function<HardnessReport(const HardnessOptions&)>& run) {
  Errors err;
  std::map<std::string, int> paths;
  for (const Variant& v : kVariants)
    for (size_t o = 0; o < want["solver"].size(); ++o) {
      const Json& solver = want["solver"][o];
      CAPTURE(what);
      CAPTURE(int(v.path));
      CAPTURE(v.chunk);
      CAPTURE(o);
      const HardnessReport r = run(options_for(solver["options"], v));
      for (const BlockHardness& b : r.blocks) ++paths[b.path];
      check_report(r, want, solver, err);
    }
  // Both per-block paths really ran.
  CHECK(paths["ghost"] > 0);
  CHECK(paths["materialise"] > 0);
  err.report(what);
}

}  // namespace

// --retain-samples / --forget-samples: hamu scores a seeded subset; whatever it picks, every number it derives
// from K must be PyTorch's K restricted to the samples it names (the mean over the picked pairs, row means,
// the nearest retain sample among the picked ones, norms).
void check_subset(const HardnessReport& r, const Json& want, int64_t nf, int64_t nr, Errors& err) {
  REQUIRE(r.n_forget == nf);
  REQUIRE(r.n_retain == nr);
  REQUIRE(int64_t(r.heat_cols.size()) == nr);
  std::map<int64_t, size_t> row_of, col_of;
  for (size_t j = 0; j < want["samples"].size(); ++j) row_of[want["samples"][j]["index"].as_int()] = j;
  for (size_t i = 0; i < want["retain_index"].size(); ++i) col_of[want["retain_index"][i].as_int()] = i;
  Scale ks;
  for (size_t j = 0; j < want["k"].size(); ++j)
    for (size_t i = 0; i < want["k"][j].size(); ++i) ks.add(want["k"][j][i].as_number());
  double total = 0;
  int hard = 0;
  for (const SampleHardness& s : r.samples) {
    CAPTURE(s.index);
    REQUIRE(row_of.count(s.index));
    const Json& w = want["samples"][row_of[s.index]];
    const Json& krow = want["k"][row_of[s.index]];
    double row = 0, best = -2, best_k = 0;
    int64_t best_i = -1;
    for (size_t c = 0; c < r.heat_cols.size(); ++c) {
      REQUIRE(col_of.count(r.heat_cols[c]));
      const size_t i = col_of[r.heat_cols[c]];
      const double k = krow[i].as_number();
      row += k;
      const double cosv = k / (w["norm"].as_number() * want["retain_norms"][i].as_number());
      if (cosv > best) best = cosv, best_k = k, best_i = r.heat_cols[c];
    }
    row /= double(nr);
    total += row;
    hard += row > 0;
    err.check("subset kappa_j", s.kappa, row, ks.s);
    err.check("subset kappa_j", s.kappa_k, row, ks.s);
    err.check("subset sample norm", s.norm, w["norm"].as_number(), w["norm"].as_number());
    CHECK(s.similar_index == best_i);
    err.check("subset nearest", s.similar_k, best_k, ks.s);
    err.check("subset nearest", s.similar_cosine, best, 1.0);
  }
  err.check("subset kappa", r.kappa, total / double(nf), ks.s);
  err.check("subset share_hard", r.share_hard, double(hard) / double(nf), 1.0);
}

TEST_CASE("hardness vs PyTorch: mlp and cnn (BatchNorm in eval mode) on images, every path") {
  const DataBundle data = load_data("idx:" + kDir.string());
  const Split split = make_split("indices=" + (kDir / "forget.txt").string(), data.train, 0);
  for (const char* arch : {"mlp", "cnn"}) {
    models::LoadedModel m = models::load_model((kDir / (std::string(arch) + ".safetensors")).string());
    const Normalizer norm = Normalizer::parse(m.meta("normalizer"));
    const Json& want = expected()["images"][arch];
    check_paths(arch, want, [&](const HardnessOptions& opt) {
      return compute_hardness(*m.model, data.train, norm, split.forget, split.retain, opt);
    });
    Errors err;
    for (uint64_t seed : {1, 2, 3}) {
      HardnessOptions opt;
      opt.retain_samples = 7;
      opt.forget_samples = 4;
      opt.seed = seed;
      check_subset(compute_hardness(*m.model, data.train, norm, split.forget, split.retain, opt), want, 4, 7, err);
    }
    err.report(std::string(arch) + " (subsets)");
  }
}

// As cli/text_setup.cpp and cli/cmd_hardness_text.cpp set it up: forget pairs, then retain pairs, one index
// space; pairs with the same answer share a label; padding with the template's end id.
void check_text(const std::string& what, const std::string& lora, const Json& want) {
  const std::string base = (kDir.parent_path() / "lm_text" / "gpt2").string();
  models::LoadedLm lm = models::load_hf_dir(base);
  if (!lora.empty()) models::load_lora(lora, *lm.model);
  const Tokenizer tok = Tokenizer::load(base + "/tokenizer.json");
  const QaDataset data = load_text_data("qa:" + (kDir / "qa.jsonl").string());
  const TextSplit split = make_text_split("forget=" + (kDir / "qa_forget.jsonl").string(), data);
  const PromptTemplate tmpl = PromptTemplate::plain;
  std::vector<QaTokens> seqs = tokenize_qa_pairs(tok, tmpl, qa_text_pairs(split.forget)).pairs;
  const std::vector<QaTokens> retain_seqs = tokenize_qa_pairs(tok, tmpl, qa_text_pairs(split.retain)).pairs;
  seqs.insert(seqs.end(), retain_seqs.begin(), retain_seqs.end());
  const int64_t nf = int64_t(split.forget.size()), n = int64_t(seqs.size());
  std::map<std::string, int32_t> answer_id;
  std::vector<int32_t> labels;
  for (int64_t i = 0; i < n; ++i) {
    const QaPair& p = i < nf ? split.forget[size_t(i)] : split.retain[size_t(i - nf)];
    labels.push_back(answer_id.emplace(p.answer, int32_t(answer_id.size())).first->second);
  }
  const TextHardnessSource source(seqs, labels, template_end_id(tmpl, tok));
  CHECK(source.length() == want["tokens_per_pair"].as_int());
  std::vector<int64_t> forget, retain;
  for (int64_t i = 0; i < n; ++i) (i < nf ? forget : retain).push_back(i);
  check_paths(what, want, [&](const HardnessOptions& opt) { return compute_hardness(*lm.model, source, forget, retain, opt); });
}

TEST_CASE("hardness vs PyTorch: gpt2 with a PEFT LoRA adapter on QA pairs, every path") {
  check_text("gpt2 + LoRA", (kDir / "lora").string(), expected()["text"]["lora"]);
}

TEST_CASE("hardness vs PyTorch: gpt2 (tied embedding, LayerNorm) on QA pairs, every path") {
  check_text("gpt2", "", expected()["text"]["full"]);
}

}  // namespace hamu
