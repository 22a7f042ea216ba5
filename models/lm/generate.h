// models/lm/generate.h: inference with a causal language model: batched greedy generation with a KV cache (and
// the end-of-sequence ids a model directory's generation config gives it), and teacher-forced scoring of labelled
// token sequences (loss and next-token accuracy).
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "models/lm/lm.h"

namespace hamu::models {

struct GenerateOptions {
  int64_t max_new_tokens = 64;
  // A sequence stops after emitting any of these (kept as its last token), as transformers' generate() stops at
  // every id of its eos_token_id list; empty: never.
  std::vector<int32_t> stop_ids;
  bool use_cache = true;   // false: recompute the whole sequence at every step (the reference the cache must equal)
  bool is_stop(int32_t id) const;
};

// Why a sequence stopped: it emitted a stop id, reached max_new_tokens, or reached the model's context.
enum class GenerateStop { end, length, context };

struct GenerateResult {
  // Per prompt, the new tokens in order; ends with a stop id when the sequence stopped there.
  std::vector<std::vector<int32_t>> tokens;
  std::vector<GenerateStop> stops;  // per prompt
  int64_t steps = 0;  // forward passes after the prefill (at most max_new_tokens - 1)
};

// Greedy decoding (argmax of the last logits; ties to the lowest id, NaN wins, as torch.argmax) of a batch of
// prompts (token ids, at least one each). The batch is left-padded to its longest prompt, the padding masked,
// and positions count from each sequence's first real token, as transformers' generate() does for left
// padding, so the ids equal generate(do_sample=False). The prompt is prefilled once; every later step feeds
// the B newest tokens against the cached keys and values (only the key/value heads of grouped-query models).
// A sequence stops when it emits a stop id, after max_new_tokens, or when its next token would sit beyond the
// model's context (lm_context_length: a row of n prompt tokens gets at most context - n + 1 new ones).
// Runs under NoGradGuard. InputError for an empty prompt, a prompt longer than the context, or a token outside
// the vocabulary.
GenerateResult generate_greedy(CausalLM& model, const std::vector<std::vector<int32_t>>& prompts,
                               const GenerateOptions& options = {});

// What transformers' generate() takes from a model directory for greedy decoding.
struct GenerationDefaults {
  // eos_token_id (an integer or a list) of DIR/generation_config.json when that file exists (from_pretrained
  // then ignores config.json's, even when the file names none), else of DIR/config.json; duplicates dropped.
  std::vector<int32_t> eos_ids;
  std::string eos_from;  // the file they were read from ("" when DIR has neither)
  // Fields of generation_config.json, "name=value", that change transformers' greedy ids (beam search, repetition
  // penalties, minimum lengths, suppressed or forced tokens, ...) and that hamu's plain argmax does not apply.
  // Sampling fields (do_sample, temperature, top_p, ...) are not listed: hamu's greedy decoding is
  // generate(do_sample=False), which ignores them. So are max_length / max_new_tokens / pad_token_id: hamu always
  // passes its own length (as generate(max_new_tokens=N), which overrides both), and pads nothing it returns.
  std::vector<std::string> unapplied;
};
// InputError naming the file and the field for a file that is not a JSON object, or an eos_token_id that is not
// null, an integer or a non-empty list (at most 1024) of integers, or holds an id outside [0, vocab_size).
GenerationDefaults load_generation_defaults(const std::string& dir, int64_t vocab_size);

// ---- teacher-forced scoring

// Totals of next-token scoring over labelled sequences (labels as Hugging Face's: unshifted, -100 = no loss;
// label t is predicted from position t-1).
struct TokenScore {
  double nll = 0;       // summed negative log-likelihood of the scored tokens
  int64_t tokens = 0;   // scored tokens
  int64_t correct = 0;  // scored tokens whose label is the argmax of the logits at the position before
  std::vector<float> token_nll;  // per sequence (not in the total): each scored token's NLL, in order
  double loss() const { return tokens ? nll / double(tokens) : 0.0; }
  double accuracy() const { return tokens ? double(correct) / double(tokens) : 0.0; }
};

struct ScoreResult {
  TokenScore total;  // summed over the sequences in the order they were batched
  std::vector<TokenScore> sequences;  // one per input sequence, in input order
};

struct ScoreOptions {
  int64_t batch = 16;  // sequences per forward pass (at least 1)
  int32_t pad_id = 0;  // the id in padded slots (masked, so it changes no score)
  // The order in which sequences are batched (a permutation of their indices; empty: as given), e.g. longest
  // first so each batch pads to about its own length.
  std::vector<int64_t> order;
  std::function<void(int64_t, int64_t)> on_batch;  // (batches done, batches) after each batch (progress)
};

// Scores `ids` (non-empty, at most the model's positions) against `labels` (same lengths) in batches,
// right-padded with the attention mask (padding labelled -100), under NoGradGuard. InputError for
// mismatched lengths, bad ids or labels, a bad batch or order.
ScoreResult score_sequences(CausalLM& model, const std::vector<std::vector<int32_t>>& ids,
                            const std::vector<std::vector<int32_t>>& labels, const ScoreOptions& options);
// The same with `batch` sequences a batch, in input order.
ScoreResult score_sequences(CausalLM& model, const std::vector<std::vector<int32_t>>& ids,
                            const std::vector<std::vector<int32_t>>& labels, int64_t batch,
                            const std::function<void(int64_t, int64_t)>& on_batch = {});

// The longest sequence the model takes: gpt2's n_positions; llama's max_position_embeddings (also capped by
// a Mistral-style sliding_window, which is not implemented).
int64_t lm_context_length(const LmConfig& cfg);

}  // namespace hamu::models
