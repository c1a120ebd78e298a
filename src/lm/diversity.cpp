#include "concord/lm/diversity.h"

#include <algorithm>

#include <c10/core/InferenceMode.h>

#include "concord/core/error.h"
#include "concord/nn/feature_capture.h"

namespace concord::lm {

namespace {

// Features as float64 [B, N, d] with padding rows set to 0, and the mask as float64 [B, N, 1].
// Padding is zeroed with where(), not multiplied by the mask, so a non-finite value in a
// padding row (nothing stops a model from producing one there) cannot leak in as 0 * inf.
std::pair<at::Tensor, at::Tensor> masked_features(const at::Tensor& features,
                                                  const at::Tensor& mask, const char* who) {
  CONCORD_CHECK(features.defined() && features.dim() == 3, who,
                ": features must be [B, N, d] or [N, d], got ",
                features.defined() ? features.sizes() : at::IntArrayRef{});
  at::Tensor h = features.to(at::kDouble);
  at::Tensor m;
  if (mask.defined()) {
    CONCORD_CHECK(mask.dim() == 2 && mask.size(0) == h.size(0) && mask.size(1) == h.size(1), who,
                  ": mask must be [B, N] = [", h.size(0), ", ", h.size(1), "], got ", mask.sizes());
    m = (mask.to(h.device()) != 0).to(at::kDouble).unsqueeze(-1);
    h = at::where(m > 0, h, at::zeros({}, h.options()));
  } else {
    m = at::ones({h.size(0), h.size(1), 1}, h.options());
  }
  return {h, m};
}

// Adds a leading batch dimension to one sequence (and its mask); returns whether it did.
bool batch_view(at::Tensor& features, at::Tensor& mask) {
  if (!features.defined() || features.dim() != 2) return false;
  features = features.unsqueeze(0);
  if (mask.defined()) mask = mask.unsqueeze(0);
  return true;
}

}  // namespace

at::Tensor feature_distance(const at::Tensor& features_in, const at::Tensor& mask_in) {
  at::Tensor features = features_in, mask = mask_in;
  const bool single = batch_view(features, mask);
  auto [h, m] = masked_features(features, mask, "feature_distance");
  // The minimiser of ||H - 1 x^T||_F is the mean of the real rows.
  const at::Tensor count = m.sum(1).clamp_min(1.0);  // [B, 1]
  const at::Tensor mean = h.sum(1) / count;           // [B, d]
  const at::Tensor centred = (h - mean.unsqueeze(1)) * m;
  const at::Tensor d = centred.pow(2).sum({1, 2}).sqrt();
  return single ? d.squeeze(0) : d;
}

at::Tensor feature_norm(const at::Tensor& features_in, const at::Tensor& mask_in) {
  at::Tensor features = features_in, mask = mask_in;
  const bool single = batch_view(features, mask);
  const at::Tensor h = masked_features(features, mask, "feature_norm").first;
  const at::Tensor n = h.pow(2).sum({1, 2}).sqrt();
  return single ? n.squeeze(0) : n;
}

std::string LayerDiversity::layer_name(size_t index) {
  return index == 0 ? std::string("embedding") : "block " + std::to_string(index);
}

nlohmann::json LayerDiversity::to_json() const {
  nlohmann::json layers = nlohmann::json::array();
  for (size_t l = 0; l < num_layers(); ++l) {
    layers.push_back({{"layer", l},
                      {"name", layer_name(l)},
                      {"distance", distance[l]},
                      {"per_token", per_token[l]},
                      {"relative", relative[l]}});
  }
  return {{"layers", layers},
          {"sequences", sequences},
          {"skipped", skipped},
          {"tokens", tokens},
          {"truncated", truncated}};
}

LayerDiversity layer_diversity(CausalLM model, const std::vector<std::vector<int64_t>>& sequences,
                               const DiversityOptions& options) {
  CONCORD_CHECK(options.batch_size > 0, "layer_diversity: batch_size must be positive, got ",
                options.batch_size);
  CONCORD_CHECK(options.max_length >= 0, "layer_diversity: max_length must be >= 0, got ",
                options.max_length);
  CONCORD_CHECK(options.min_length >= 1, "layer_diversity: min_length must be >= 1, got ",
                options.min_length);
  const ModelConfig& config = model->config;
  CONCORD_CHECK(options.pad_token_id >= 0 && options.pad_token_id < config.vocab_size,
                "layer_diversity: pad_token_id must be in [0, ", config.vocab_size, "), got ",
                options.pad_token_id);
  const int64_t max_length =
      options.max_length > 0 ? options.max_length : config.max_position_embeddings;

  LayerDiversity out;
  const size_t layers = static_cast<size_t>(config.num_layers) + 1;
  out.distance.assign(layers, 0.0);
  out.per_token.assign(layers, 0.0);
  out.relative.assign(layers, 0.0);

  std::vector<size_t> kept;
  for (size_t i = 0; i < sequences.size(); ++i) {
    const int64_t n = static_cast<int64_t>(sequences[i].size());
    if (n < options.min_length) {
      ++out.skipped;
      continue;
    }
    if (n > max_length) ++out.truncated;
    kept.push_back(i);
  }
  if (kept.empty()) return out;
  auto length = [&](size_t i) {
    return std::min<int64_t>(static_cast<int64_t>(sequences[i].size()), max_length);
  };
  // Longest first, so each batch pads little.
  std::stable_sort(kept.begin(), kept.end(), [&](size_t a, size_t b) { return length(a) > length(b); });

  c10::InferenceMode inference;
  const c10::Device device = model->embed->weight.device();
  // The residual stream: the embeddings the first block reads, then each block's output.
  std::vector<std::string> paths = {"embed_out"};
  for (int64_t l = 0; l < config.num_layers; ++l) paths.push_back("layers." + std::to_string(l));
  nn::FeatureCapture capture(*model, paths);
  const size_t chunk = static_cast<size_t>(options.batch_size);
  for (size_t start = 0; start < kept.size(); start += chunk) {
    const size_t end = std::min(kept.size(), start + chunk);
    const int64_t batch = static_cast<int64_t>(end - start);
    const int64_t steps = length(kept[start]);
    at::Tensor ids = at::full({batch, steps}, options.pad_token_id, at::kLong);
    at::Tensor mask = at::zeros({batch, steps}, at::kLong);
    auto ids_a = ids.accessor<int64_t, 2>();
    auto mask_a = mask.accessor<int64_t, 2>();
    bool padded = false;
    for (int64_t b = 0; b < batch; ++b) {
      const auto& s = sequences[kept[start + static_cast<size_t>(b)]];
      const int64_t n = length(kept[start + static_cast<size_t>(b)]);
      padded = padded || n < steps;
      for (int64_t t = 0; t < n; ++t) {
        ids_a[b][t] = s[static_cast<size_t>(t)];
        mask_a[b][t] = 1;
      }
      out.tokens += n;
    }
    // Without padding the mask is left out, so attention takes its plain causal (fused) path.
    const at::Tensor attn_mask = padded ? mask.to(device) : at::Tensor();
    model->hidden_states(ids.to(device), attn_mask);  // each pass replaces the captured features
    const at::Tensor count = mask.sum(1).to(at::kDouble);  // [B] real tokens per row
    for (size_t l = 0; l < layers; ++l) {
      const at::Tensor h = capture.get(paths[l]);
      const at::Tensor d = feature_distance(h, attn_mask).cpu();
      const at::Tensor norm = feature_norm(h, attn_mask).cpu();
      // A zero matrix is in M: relative distance 0, not 0/0.
      const at::Tensor rel = at::where(norm > 0, d / norm.clamp_min(1e-300), at::zeros_like(d));
      out.distance[l] += d.sum().item<double>();
      out.per_token[l] += (d / count.sqrt()).sum().item<double>();
      out.relative[l] += rel.sum().item<double>();
    }
    out.sequences += batch;
  }
  const double n = static_cast<double>(out.sequences);
  for (size_t l = 0; l < layers; ++l) {
    out.distance[l] /= n;
    out.per_token[l] /= n;
    out.relative[l] /= n;
  }
  return out;
}

LayerDiversity layer_diversity_texts(CausalLM model, const text::Tokenizer& tokenizer,
                                     const std::vector<std::string>& texts,
                                     const DiversityOptions& options) {
  std::vector<std::vector<int64_t>> sequences;
  sequences.reserve(texts.size());
  for (const auto& t : texts) {
    const auto ids = tokenizer.encode(t, /*add_special_tokens=*/true);
    sequences.emplace_back(ids.begin(), ids.end());
  }
  DiversityOptions o = options;
  if (auto pad = tokenizer.pad_id(); pad && *pad >= 0 && *pad < model->config.vocab_size) {
    o.pad_token_id = *pad;
  }
  return layer_diversity(std::move(model), sequences, o);
}

}  // namespace concord::lm
