#include "concord/rlhf/reward_model.h"

#include <torch/torch.h>

#include "concord/core/config.h"
#include "concord/core/error.h"
#include "concord/core/files.h"
#include "concord/lm/model_config.h"
#include "concord/lm/repeated_prefix.h"

namespace fs = std::filesystem;

namespace concord::rlhf {

namespace {

// The backbone is built in the tied layout, which has no lm_head parameter: a reward model
// never runs the LM head, and its checkpoint has none.
lm::ModelConfig headless(lm::ModelConfig config) {
  config.tie_word_embeddings = true;
  return config;
}

// transformers' initializer_range default (every supported family uses 0.02).
constexpr double kInitializerRange = 0.02;

std::string classifier_architecture(const lm::ModelConfig& c) {
  switch (c.family) {
    case lm::ModelFamily::GPT2: return "GPT2ForSequenceClassification";
    case lm::ModelFamily::Llama: return "LlamaForSequenceClassification";
    case lm::ModelFamily::Mistral: return "MistralForSequenceClassification";
    case lm::ModelFamily::Qwen2: return "Qwen2ForSequenceClassification";
    case lm::ModelFamily::PanGuPi: return "PanGuPiForSequenceClassification";
    case lm::ModelFamily::Olmo2: return "Olmo2ForSequenceClassification";
  }
  return "ForSequenceClassification";
}

}  // namespace

RewardModelImpl::RewardModelImpl(lm::ModelConfig config, int64_t num_heads)
    : config_(headless(std::move(config))), initial_heads_(num_heads) {
  CONCORD_CHECK(num_heads >= 1, "RewardModel: num_heads must be >= 1, got ", num_heads);
  reset();
}

RewardModelImpl::RewardModelImpl(lm::CausalLM backbone_in, at::Tensor score_weight)
    : config_(backbone_in->config), initial_heads_(score_weight.size(0)) {
  CONCORD_CHECK(score_weight.dim() == 2 && score_weight.size(1) == config_.hidden_size,
                "RewardModel: score weight must be [K, ", config_.hidden_size, "], got ",
                score_weight.sizes());
  backbone = register_module("backbone", std::move(backbone_in));
  score = register_parameter("score", score_weight.to(backbone->embed->weight.options()));
}

void RewardModelImpl::reset() {
  backbone = register_module("backbone", lm::CausalLM(config_));
  torch::NoGradGuard no_grad;
  score = register_parameter(
      "score", at::randn({initial_heads_, config_.hidden_size}) * kInitializerRange);
}

at::Tensor last_token_index(const at::Tensor& attention_mask, int64_t length) {
  if (!attention_mask.defined()) return {};
  // The rightmost position with mask 1 (transformers' rule on pad ids, applied to the mask).
  const at::Tensor positions = at::arange(length, attention_mask.options().dtype(at::kLong));
  return (positions * (attention_mask != 0).to(at::kLong)).argmax(-1);
}

at::Tensor RewardModelImpl::last_hidden(const at::Tensor& input_ids,
                                        const at::Tensor& attention_mask, int64_t shared_columns) {
  TORCH_CHECK(input_ids.dim() == 2, "RewardModel: input_ids must be [B, T], got ",
              input_ids.sizes());
  const int64_t length = input_ids.size(1);
  CONCORD_CHECK(shared_columns >= 0 && shared_columns < length, "RewardModel: shared_columns ",
                shared_columns, " outside [0, ", length, ")");
  // Trailing padding needs no mask under causal attention; padding before a real token does.
  at::Tensor mask = attention_mask;
  if (mask.defined() && mask.select(1, 0).all().item<bool>()) mask = at::Tensor();
  // [B, T - shared_columns, d]: the columns from shared_columns on.
  const at::Tensor hidden =
      shared_columns > 0 ? lm::hidden_states_after_prefix(backbone, input_ids, mask, shared_columns)
                         : backbone->hidden_states(input_ids, mask);
  if (!attention_mask.defined()) return hidden.select(1, hidden.size(1) - 1);
  const at::Tensor index =
      last_token_index(attention_mask.to(hidden.device()), length) - shared_columns;
  if (shared_columns > 0) {
    CONCORD_CHECK(index.min().item<int64_t>() >= 0,
                  "RewardModel: a row's last real token lies within its first ", shared_columns,
                  " (shared) columns");
  }
  return hidden.gather(1, index.view({-1, 1, 1}).expand({-1, 1, hidden.size(2)})).squeeze(1);
}

at::Tensor RewardModelImpl::pair_last_hidden(const SharedPrefixPairs& pairs) {
  const at::Tensor hidden = continuation_hidden_states(backbone, pairs);  // [2B, R, d]
  const c10::Device device = hidden.device();
  const at::Tensor index = pairs.last_index.to(device);
  return hidden.gather(1, index.view({-1, 1, 1}).expand({-1, 1, hidden.size(2)})).squeeze(1);
}

namespace {

// r = h w^T: fp32 out of a half-precision model; a double model keeps double (finite-difference
// tests).
at::Tensor heads(const at::Tensor& h, const at::Tensor& score) {
  return at::matmul(h, score.to(h.scalar_type()).t()).to(at::promote_types(h.scalar_type(), at::kFloat));
}

}  // namespace

at::Tensor RewardModelImpl::forward(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                                    int64_t shared_columns) {
  return heads(last_hidden(input_ids, attention_mask, shared_columns), score);
}

at::Tensor RewardModelImpl::pair_rewards(const SharedPrefixPairs& pairs) {
  return heads(pair_last_hidden(pairs), score);
}

int64_t RewardModelImpl::num_parameters() const {
  int64_t n = 0;
  for (const auto& p : parameters()) n += p.numel();
  return n;
}

RewardModel load_reward_model(const fs::path& folder, const lm::LoadOptions& options,
                              int64_t new_heads) {
  const auto config_path = folder / "config.json";
  const Json hf = load_json_file(config_path);
  const lm::ModelConfig original = lm::model_config_from_hf(hf, config_path.string());
  lm::LoadOptions load = options;
  load.headless = true;
  load.extra_tensors = {"score.weight"};
  std::map<std::string, at::Tensor> extras;
  lm::CausalLM backbone = lm::load_pretrained(folder, load, &extras);
  at::Tensor score;
  if (auto it = extras.find("score.weight"); it != extras.end()) {
    score = it->second;
    if (score.dim() != 2 || score.size(1) != original.hidden_size) {
      fail_format(folder.string(), "tensor 'score.weight' has shape ", score.sizes(),
                  ", expected [num_labels, ", original.hidden_size, "]");
    }
    if (hf.contains("id2label") && hf["id2label"].is_object() &&
        static_cast<int64_t>(hf["id2label"].size()) != score.size(0)) {
      fail_format(config_path.string(), "id2label has ", hf["id2label"].size(),
                  " labels but score.weight has ", score.size(0), " rows");
    }
  } else {
    CONCORD_CHECK(new_heads >= 1, "load_reward_model: new_heads must be >= 1");
    torch::NoGradGuard no_grad;
    score = at::randn({new_heads, original.hidden_size}) * kInitializerRange;
  }
  RewardModel model(backbone, score.to(options.device, options.dtype));
  model->eval();
  return model;
}

void save_reward_model(RewardModel model, const fs::path& folder) {
  const lm::ModelConfig& c = model->backbone->config;
  Json patch;
  patch["architectures"] = Json::array({classifier_architecture(c)});
  Json id2label = Json::object(), label2id = Json::object();
  for (int64_t k = 0; k < model->num_heads(); ++k) {
    id2label[std::to_string(k)] = "LABEL_" + std::to_string(k);
    label2id["LABEL_" + std::to_string(k)] = k;
  }
  patch["id2label"] = id2label;
  patch["label2id"] = label2id;
  // transformers refuses to pool a batch of more than one row without a pad id.
  if (!c.pad_token_id) {
    patch["pad_token_id"] = c.eos_token_id ? Json(*c.eos_token_id) : Json(0);
  }
  lm::save_pretrained(model->backbone, folder, uint64_t{5} << 30,
                      {{"score.weight", model->score.detach()}}, patch);
}

// ---- RewardSet ------------------------------------------------------------------------------

RewardSet RewardSet::shared(RewardModel model) {
  RewardSet s;
  s.heads_ = model->num_heads();
  s.models_.push_back(std::move(model));
  return s;
}

RewardSet RewardSet::separate(std::vector<RewardModel> models) {
  CONCORD_CHECK(!models.empty(), "RewardSet: no reward models");
  RewardSet s;
  for (auto& m : models) {
    CONCORD_CHECK(m->num_heads() == 1, "RewardSet::separate: each model must have one head, got ",
                  m->num_heads());
  }
  s.heads_ = static_cast<int64_t>(models.size());
  s.models_ = std::move(models);
  return s;
}

at::Tensor RewardSet::all(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                          int64_t shared_columns) {
  CONCORD_CHECK(!models_.empty(), "RewardSet: empty");
  if (models_.size() == 1) return models_[0]->forward(input_ids, attention_mask, shared_columns);
  std::vector<at::Tensor> columns;
  for (auto& m : models_) columns.push_back(m->forward(input_ids, attention_mask, shared_columns));
  return at::cat(columns, 1);
}

at::Tensor RewardSet::selected(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                               const at::Tensor& head) {
  CONCORD_CHECK(!models_.empty(), "RewardSet: empty");
  if (models_.size() == 1) {
    const at::Tensor r = models_[0]->forward(input_ids, attention_mask);  // [B, K]
    return r.gather(1, head.to(r.device()).view({-1, 1})).squeeze(1);
  }
  // Each separate model runs on its own rows only.
  const at::Tensor head_cpu = head.to(at::kCPU);
  at::Tensor out;
  for (int64_t k = 0; k < heads_; ++k) {
    const at::Tensor rows = (head_cpu == k).nonzero().squeeze(1);
    if (rows.numel() == 0) continue;
    const at::Tensor dev_rows = rows.to(input_ids.device());
    const at::Tensor ids = input_ids.index_select(0, dev_rows);
    const at::Tensor mask =
        attention_mask.defined() ? attention_mask.index_select(0, dev_rows) : at::Tensor();
    const at::Tensor r = models_[static_cast<size_t>(k)]->forward(ids, mask).squeeze(1);
    if (!out.defined()) out = at::zeros({input_ids.size(0)}, r.options());
    out = out.index_put({dev_rows.to(r.device())}, r);
  }
  return out;
}

at::Tensor RewardSet::all(const SharedPrefixPairs& pairs) {
  CONCORD_CHECK(!models_.empty(), "RewardSet: empty");
  if (models_.size() == 1) return models_[0]->pair_rewards(pairs);
  std::vector<at::Tensor> columns;
  for (auto& m : models_) columns.push_back(m->pair_rewards(pairs));
  return at::cat(columns, 1);
}

at::Tensor RewardSet::selected(const SharedPrefixPairs& pairs, const at::Tensor& pair_head) {
  CONCORD_CHECK(!models_.empty(), "RewardSet: empty");
  const int64_t B = pairs.pairs();
  CONCORD_CHECK(pair_head.dim() == 1 && pair_head.size(0) == B, "RewardSet: pair_head must be [",
                B, "], got ", pair_head.sizes());
  if (models_.size() == 1) {
    const at::Tensor r = models_[0]->pair_rewards(pairs);  // [2B, K]
    const at::Tensor head = pair_head.to(r.device()).to(at::kLong).repeat({2});
    return r.gather(1, head.view({-1, 1})).squeeze(1);
  }
  // Each separate model runs on its own pairs only, both rows of each.
  const at::Tensor head_cpu = pair_head.to(at::kCPU);
  at::Tensor out;
  for (int64_t k = 0; k < heads_; ++k) {
    const at::Tensor rows = (head_cpu == k).nonzero().squeeze(1);
    if (rows.numel() == 0) continue;
    const at::Tensor r = models_[static_cast<size_t>(k)]->pair_rewards(pairs.subset(rows)).squeeze(1);
    if (!out.defined()) out = at::zeros({2 * B}, r.options());
    out = out.index_put({at::cat({rows, rows + B}).to(r.device())}, r);
  }
  return out;
}

std::vector<std::pair<std::string, std::shared_ptr<torch::nn::Module>>> RewardSet::named_modules()
    const {
  std::vector<std::pair<std::string, std::shared_ptr<torch::nn::Module>>> out;
  if (models_.size() == 1) {
    out.emplace_back("reward", models_[0].ptr());
  } else {
    for (size_t k = 0; k < models_.size(); ++k) {
      out.emplace_back("reward_" + std::to_string(k), models_[k].ptr());
    }
  }
  return out;
}

void RewardSet::train(bool on) {
  for (auto& m : models_) m->train(on);
}

RewardSet RewardSet::clone() const {
  RewardSet s;
  s.heads_ = heads_;
  for (const auto& m : models_) {
    s.models_.push_back(RewardModel(std::dynamic_pointer_cast<RewardModelImpl>(m->clone())));
  }
  return s;
}

void RewardSet::copy_weights_from(const RewardSet& other) {
  CONCORD_CHECK(other.models_.size() == models_.size() && other.heads_ == heads_,
                "RewardSet::copy_weights_from: different layouts");
  torch::NoGradGuard no_grad;
  for (size_t k = 0; k < models_.size(); ++k) {
    auto to = models_[k]->parameters();
    auto from = other.models_[k]->parameters();
    CONCORD_CHECK(to.size() == from.size(), "RewardSet::copy_weights_from: parameter lists differ");
    for (size_t i = 0; i < to.size(); ++i) to[i].copy_(from[i]);
  }
}

void RewardSet::to(c10::Device device) {
  for (auto& m : models_) m->to(device);
}

void RewardSet::save(const fs::path& dir) const {
  const auto named = named_modules();
  for (size_t k = 0; k < models_.size(); ++k) {
    save_reward_model(models_[k], dir / named[k].first);
  }
}

RewardSet RewardSet::load(const fs::path& dir, const lm::LoadOptions& options) {
  if (fs::exists(dir / "reward" / "config.json")) {
    return shared(load_reward_model(dir / "reward", options));
  }
  std::vector<RewardModel> models;
  for (int64_t k = 0; fs::exists(dir / ("reward_" + std::to_string(k)) / "config.json"); ++k) {
    models.push_back(load_reward_model(dir / ("reward_" + std::to_string(k)), options));
  }
  if (models.empty()) fail_io(dir.string(), "no reward/ or reward_0/ model folder");
  return separate(std::move(models));
}

}  // namespace concord::rlhf
