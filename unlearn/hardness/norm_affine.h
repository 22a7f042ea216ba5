// unlearn/hardness/norm_affine.h: the per-sample gradients of a normalisation's affine parameters,
// shared by the normalisation rules (batch_norm, layer_norm, ...): for y = gamma x_hat + beta with
// x_hat = (x - stat_a) * stat_b (x * stat_b where the record has no stat_a: RMSNorm), gamma's per-sample
// gradient sums x_hat * g and beta's sums g over the elements of a sample that share a channel.
#pragma once
#include <cstdint>

#include "unlearn/hardness_rule.h"

namespace hamu {

// How one layer lays out n samples (from sample s0) of its records.
struct NormLayout {
  int64_t per = 0;            // elements of x and G per sample
  int ndim = 0;               // statistics broadcast onto x: kernels::binary_bcast over n samples
  int64_t shape[3] = {}, x_strides[3] = {}, stat_strides[3] = {};
  int64_t stat_offset = 0;    // elements of stat_a/stat_b before sample s0
  int64_t outer = 0, len = 0, inner = 0;  // kernels::reduce_axis from [n * per] to [n, channels]
};

// p [n, channels]: the materialised per-sample gradients of b (role weight: gamma, bias: beta).
BlockRep norm_affine_rep(const CaptureRecord& rec, const HardnessBlock& b, int64_t s0, int64_t n, const NormLayout& l);
// The same for a normalisation over the last dimension of [N*T, d] rows with statistics per row
// (layer_norm, rms_norm): sums over each sample's T rows.
BlockRep row_norm_rep(const CaptureRecord& rec, const HardnessBlock& b, int64_t s0, int64_t n);

}  // namespace hamu
