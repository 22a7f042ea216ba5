// unlearn/methods/baseline.cpp: clipping, statistics and the report shared by every baseline.
#include "unlearn/methods/baseline.h"

#include <algorithm>
#include <cmath>

#include "engine/ops.h"

namespace hamu {
namespace {

double clip_scale(double norm2, double clip) {
  if (clip <= 0) return 1.0;
  const double s = clip / (std::sqrt(norm2) + 1e-6);
  return s < 1.0 ? s : 1.0;
}

}  // namespace

BaselineStep BaselineMethod::step(const MethodParams& p, double rr, double ff, double rf) const {
  BaselineStep s;
  const double sr = clip_scale(rr, p.clip), sf = clip_scale(ff, p.clip);
  s.retain_scale = sr;
  s.forget_scale = sf;
  const double crr = rr * sr * sr, cff = ff * sf * sf, d = rf * sr * sf;  // clipped statistics
  s.kappa = d;
  const BaselineRule r = rule(p, crr, cff, d);
  s.projected = r.projected;
  s.coef_r = r.a * sr;
  s.coef_f = r.b * sf;
  return s;
}

StepDecision BaselineMethod::coefficients(const UnlearnOptions& opt, int count, const std::vector<double>& stats) const {
  StepDecision out;
  double rr = 0, ff = 0, rf = 0;
  for (int i = 0; i < count; ++i) {
    rr += stats[size_t(3 * i)];
    ff += stats[size_t(3 * i + 1)];
    rf += stats[size_t(3 * i + 2)];
  }
  HamuReport& rep = out.report;
  rep.retain_norm = std::sqrt(rr);
  rep.forget_norm = std::sqrt(ff);
  rep.n_blocks = count;
  if (!std::isfinite(rr) || !std::isfinite(ff) || !std::isfinite(rf)) {
    rep.nonfinite = 1;
    return out;
  }
  const BaselineStep bs = step(opt.params, rr, ff, rf);
  out.projected = bs.projected;
  rep.kappa = bs.kappa;
  rep.retain_scale = bs.retain_scale;
  rep.forget_scale = bs.forget_scale;
  const double denom = std::sqrt(rr) * std::sqrt(ff);
  rep.angle_deg = denom > 0 ? std::acos(std::max(-1.0, std::min(1.0, rf / denom))) * 57.29577951308232 : 90.0;
  for (int i = 0; i < count; ++i) {
    out.coef.push_back(bs.coef_r);
    out.coef.push_back(bs.coef_f);
  }
  rep.applied = 1;
  return out;
}

BaselineStep baseline_step(const Method& m, const MethodParams& p, double rr, double ff, double rf) {
  const auto* b = dynamic_cast<const BaselineMethod*>(&m);
  if (!b) throw Error("baseline_step: " + m.name() + " is not a baseline (HAMU steps go through the fused solver)");
  return b->step(p, rr, ff, rf);
}

}  // namespace hamu
