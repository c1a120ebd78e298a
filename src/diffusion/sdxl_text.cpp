#include "concord/diffusion/sdxl_text.h"

#include <torch/csrc/autograd/grad_mode.h>

#include "concord/core/error.h"

namespace concord::diffusion {

at::Tensor clip_token_ids(const text::Tokenizer& tokenizer, const std::vector<std::string>& texts,
                          int64_t max_length) {
  // The post-processor's specials (<bos> ... <eos> for CLIP) count against max_length.
  const int64_t specials = static_cast<int64_t>(tokenizer.add_special_tokens({}).size());
  CONCORD_CHECK(max_length > specials, "clip_token_ids: max_length ", max_length,
                " leaves no room for text next to ", specials, " special tokens");
  const auto pad = tokenizer.pad_id();
  CONCORD_CHECK(pad.has_value(), "clip_token_ids: the tokenizer has no pad token");
  at::Tensor out = at::full({static_cast<int64_t>(texts.size()), max_length}, int64_t{*pad},
                            at::kLong);
  auto acc = out.accessor<int64_t, 2>();
  for (size_t b = 0; b < texts.size(); ++b) {
    std::vector<text::TokenId> body = tokenizer.encode(texts[b], false);
    if (static_cast<int64_t>(body.size()) > max_length - specials) {
      body.resize(static_cast<size_t>(max_length - specials));
    }
    const std::vector<text::TokenId> ids = tokenizer.add_special_tokens(std::move(body));
    for (size_t i = 0; i < ids.size(); ++i) acc[static_cast<int64_t>(b)][static_cast<int64_t>(i)] = ids[i];
  }
  return out;
}

SdxlTextEncoders::SdxlTextEncoders(std::shared_ptr<text::Tokenizer> tokenizer,
                                   ClipTextModel text_encoder,
                                   std::shared_ptr<text::Tokenizer> tokenizer_2,
                                   ClipTextModel text_encoder_2)
    : tokenizer_(std::move(tokenizer)),
      tokenizer_2_(std::move(tokenizer_2)),
      text_encoder_(std::move(text_encoder)),
      text_encoder_2_(std::move(text_encoder_2)) {
  CONCORD_CHECK(tokenizer_2_ && text_encoder_2_, "SDXL text encoders: text_encoder_2 and "
                                                 "tokenizer_2 are required");
  CONCORD_CHECK(static_cast<bool>(tokenizer_) == static_cast<bool>(text_encoder_),
                "SDXL text encoders: tokenizer and text_encoder come together");
  CONCORD_CHECK(text_encoder_2_->config.projection_dim > 0,
                "SDXL text encoders: text_encoder_2 must be a CLIPTextModelWithProjection");
}

SdxlTextEncoders SdxlTextEncoders::load(const std::filesystem::path& folder,
                                        const ComponentLoadOptions& options) {
  namespace fs = std::filesystem;
  std::shared_ptr<text::Tokenizer> tokenizer;
  ClipTextModel encoder{nullptr};
  if (fs::is_directory(folder / "text_encoder")) {
    if (!fs::is_directory(folder / "tokenizer")) {
      fail_io((folder / "tokenizer").string(), "missing (text_encoder/ needs its tokenizer)");
    }
    tokenizer = text::load_tokenizer(folder / "tokenizer");
    encoder = load_clip_text_encoder(folder / "text_encoder", options);
  }
  for (const char* sub : {"tokenizer_2", "text_encoder_2"}) {
    if (!fs::is_directory(folder / sub)) fail_io((folder / sub).string(), "missing");
  }
  return SdxlTextEncoders(std::move(tokenizer), std::move(encoder),
                          text::load_tokenizer(folder / "tokenizer_2"),
                          load_clip_text_encoder(folder / "text_encoder_2", options));
}

int64_t SdxlTextEncoders::embed_dim() const {
  return (text_encoder_ ? text_encoder_->config.hidden_size : 0) +
         text_encoder_2_->config.hidden_size;
}

SdxlPromptEmbeds SdxlTextEncoders::encode(const std::vector<std::string>& prompts,
                                          int64_t clip_skip) const {
  CONCORD_CHECK(!prompts.empty(), "SDXL text encoders: no prompts");
  torch::NoGradGuard no_grad;
  std::vector<at::Tensor> states;
  SdxlPromptEmbeds out;
  auto device_of = [](const ClipTextModel& m) { return m->parameters().front().device(); };
  ClipTextModel first = text_encoder_, encoder_2 = text_encoder_2_;  // forward() is non-const
  if (first) {
    const auto ids = clip_token_ids(*tokenizer_, prompts, first->config.max_position_embeddings);
    states.push_back(first->forward(ids.to(device_of(first))).penultimate(clip_skip));
  }
  const auto ids2 = clip_token_ids(*tokenizer_2_, prompts, encoder_2->config.max_position_embeddings);
  const ClipTextOutput second = encoder_2->forward(ids2.to(device_of(encoder_2)));
  states.push_back(second.penultimate(clip_skip));
  out.pooled = second.text_embeds;
  if (states.size() == 2) states[0] = states[0].to(states[1].dtype());
  out.embeds = at::cat(states, -1);
  return out;
}

SdxlPromptEmbeds SdxlTextEncoders::encode_negative(const std::vector<std::string>& negative,
                                                   const SdxlPromptEmbeds& positive,
                                                   bool zeros) const {
  if (zeros) return {at::zeros_like(positive.embeds), at::zeros_like(positive.pooled)};
  const int64_t batch = positive.embeds.size(0);
  std::vector<std::string> prompts = negative.empty() ? std::vector<std::string>{""} : negative;
  if (prompts.size() == 1) prompts.assign(static_cast<size_t>(batch), prompts[0]);
  CONCORD_CHECK(static_cast<int64_t>(prompts.size()) == batch, "SDXL text encoders: ",
                prompts.size(), " negative prompts for ", batch, " prompts");
  return encode(prompts, 0);
}

}  // namespace concord::diffusion
