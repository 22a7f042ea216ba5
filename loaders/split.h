// loaders/split.h: forget/retain splits of a training set (--split), seeded and reproducible.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace hamu {

struct ImageDataset;

struct Split {
  std::vector<int64_t> forget;  // training indices to unlearn, in the order the spec defines
  std::vector<int64_t> retain;  // every other training index, ascending
  std::string spec;             // canonical form; make_split(spec, ...) rebuilds the same split
  uint64_t seed = 0;            // the seed actually used
};

// Spec forms (InputError naming --split on any problem):
//   class=C            forget = all images of class C (ascending); C is an index or a class name
//   class=C,rho=X      a fraction X of the class swapped for random other images (HAMU.md §9)
//   random=X           a uniformly random fraction X of the training set (round(X*N), at least 1)
//   indices=FILE       one training index per line; blank lines and # comments allowed
// Any form may carry ",seed=N", which wins over `default_seed` (the CLI's --seed), so the canonical
// spec stored in a checkpoint reproduces the split exactly.
Split make_split(const std::string& spec, const std::vector<int32_t>& labels, int32_t num_classes,
                 uint64_t default_seed, const std::vector<std::string>& class_names = {});
Split make_split(const std::string& spec, const ImageDataset& train, uint64_t default_seed);

// The ρ algorithm on its own: M = class indices ascending, k = floor(rho*|M|), P = perm(M),
// keep = P[k:], pool = non-class ascending ++ P[:k], Q = perm(pool), forget = keep ++ Q[:k]
// (both permutations from one Rng(seed)). rho = 1 is the reference's random 10%: see split.cpp.
std::vector<int64_t> class_rho_forget(const std::vector<int32_t>& labels, int32_t cls, double rho, uint64_t seed);

// Ascending complement of `forget` in 0..n-1.
std::vector<int64_t> complement_indices(const std::vector<int64_t>& forget, int64_t n);

}  // namespace hamu
