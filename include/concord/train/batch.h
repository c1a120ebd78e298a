// Batches for the Trainer: the token batches of language-model objectives (TokenBatch), and the
// adapter that puts any concord::data data set behind a seeded, resumable sampler
// (SampledBatches). Any other kind of batch (preference pairs, latents) flows through the same
// loop: implement BatchSource<YourBatch> (objective.h), or give SampledBatches a data set whose
// get_batch() returns your batch type.
#pragma once
#include <cstdint>
#include <type_traits>
#include <vector>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "concord/core/error.h"
#include "concord/data/pretrain.h"
#include "concord/data/sampler.h"
#include "concord/data/sft.h"
#include "concord/train/objective.h"

namespace concord::train {

/// One micro-batch of next-token targets. targets[b, t] is the token that follows
/// input_ids[b, t], -100 where no loss is taken. The optional tensors are given only when they
/// change the forward pass: a left-padded batch needs attention_mask; packed rows need
/// segment_ids and position_ids.
struct TokenBatch {
  at::Tensor input_ids;       ///< [B, T] int64
  at::Tensor targets;         ///< [B, T] int64
  at::Tensor attention_mask;  ///< [B, T], optional
  at::Tensor position_ids;    ///< [B, T], optional
  at::Tensor segment_ids;     ///< [B, T], optional (packed rows)

  /// Positions with a target.
  int64_t target_tokens() const;
};

/// Pretraining blocks: no padding, so nothing but ids and targets.
TokenBatch to_token_batch(const data::LmBatch& batch);
/// SFT rows. Right padding needs no mask under causal attention (real tokens never see the
/// padding after them, and padding carries no target), so unpacked rows keep the fused
/// plain-causal attention path; packed rows (any row with a second sample) bring their
/// segment and position ids.
TokenBatch to_token_batch(const data::SftBatch& batch);

/// Items [begin, end) of a data set, as a data set (a held-out tail for evaluation).
template <typename Dataset>
class DatasetSlice {
 public:
  /// `dataset` must outlive this object.
  DatasetSlice(const Dataset& dataset, int64_t begin, int64_t end)
      : dataset_(dataset), begin_(begin), end_(end) {
    CONCORD_CHECK(0 <= begin && begin <= end && end <= dataset.size(), "DatasetSlice: [", begin,
                  ", ", end, ") is not inside [0, ", dataset.size(), ")");
  }
  int64_t size() const { return end_ - begin_; }
  auto get_batch(std::vector<int64_t> indices) const {
    for (auto& i : indices) i += begin_;
    return dataset_.get_batch(indices);
  }

 private:
  const Dataset& dataset_;
  int64_t begin_, end_;
};

/// A data set (size(), get_batch(indices)) behind a data::BatchSampler, as a BatchSource<Batch>.
/// Batches of LmBatch/SftBatch data sets become TokenBatch; a data set whose get_batch()
/// already returns Batch is used as it is.
template <typename Dataset, typename Batch = TokenBatch>
class SampledBatches : public BatchSource<Batch> {
 public:
  /// `dataset` must outlive this object.
  SampledBatches(const Dataset& dataset, data::SamplerOptions options)
      : dataset_(dataset), sampler_(dataset.size(), options) {}

  Batch next() override {
    auto batch = dataset_.get_batch(sampler_.next());
    if constexpr (std::is_same_v<decltype(batch), Batch>) {
      return batch;
    } else {
      return to_token_batch(batch);
    }
  }
  int64_t batches_per_epoch() const override { return sampler_.batches_per_epoch(); }
  nlohmann::json state() const override { return sampler_.state(); }
  void load_state(const nlohmann::json& state) override { sampler_.load_state(state); }

 private:
  const Dataset& dataset_;
  data::BatchSampler sampler_;
};

}  // namespace concord::train
