// SDXL's text conditioning (Podell et al. 2023, "SDXL", Sec. 2.1), as diffusers'
// StableDiffusionXLPipeline.encode_prompt computes it:
//
//   ids_k   = tokenizer_k(prompt): <bos> ids[:75] <eos> padded to 77 with tokenizer_k's pad token
//   c       = concat(text_encoder(ids_1).hidden_states[-2 - clip_skip],
//                    text_encoder_2(ids_2).hidden_states[-2 - clip_skip])     [B, 77, 768 + 1280]
//   pooled  = text_encoder_2(ids_2).text_embeds                               [B, 1280]
//
// The refiner's layout (no `text_encoder`) conditions on the second encoder alone. The negative
// branch of classifier-free guidance is either zeros (force_zeros_for_empty_prompt with no
// negative prompt) or the encoding of the negative prompt, whose states diffusers always takes
// at hidden_states[-2], whatever clip_skip says: so does this.
#pragma once
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "concord/diffusion/clip_text_encoder.h"
#include "concord/diffusion/component_checkpoint.h"
#include "concord/text/tokenizer.h"

namespace concord::diffusion {

/// CLIP ids as transformers' tokenizer(..., padding="max_length", max_length, truncation=True)
/// returns them: the text's ids cut so that they and the special tokens fit, the special tokens
/// added, padded on the right with the pad token. [B, max_length] int64.
at::Tensor clip_token_ids(const text::Tokenizer& tokenizer, const std::vector<std::string>& texts,
                          int64_t max_length = 77);

/// The text embeddings of a batch of prompts.
struct SdxlPromptEmbeds {
  at::Tensor embeds;  ///< [B, 77, D] token states (cross-attention context)
  at::Tensor pooled;  ///< [B, P] the second encoder's text_embeds
};

/// SDXL's tokenizers and text encoders.
class SdxlTextEncoders {
 public:
  /// `tokenizer` and `text_encoder` may be null (the refiner's layout); the second pair may not.
  SdxlTextEncoders(std::shared_ptr<text::Tokenizer> tokenizer, ClipTextModel text_encoder,
                   std::shared_ptr<text::Tokenizer> tokenizer_2, ClipTextModel text_encoder_2);

  /// The pipeline folder's tokenizer/, text_encoder/, tokenizer_2/, text_encoder_2/ (the first
  /// two optional).
  static SdxlTextEncoders load(const std::filesystem::path& pipeline_folder,
                               const ComponentLoadOptions& options = {});

  /// encode_prompt without guidance: `prompts` through both encoders.
  SdxlPromptEmbeds encode(const std::vector<std::string>& prompts, int64_t clip_skip = 0) const;
  /// The negative branch: zeros shaped like `positive` when `zeros`, else the encoding of
  /// `negative` (one prompt for all, or one per prompt) at hidden_states[-2].
  SdxlPromptEmbeds encode_negative(const std::vector<std::string>& negative,
                                   const SdxlPromptEmbeds& positive, bool zeros) const;

  /// text_encoder_2's projection_dim: the pooled width the U-Net's add_embedding expects.
  int64_t projection_dim() const { return text_encoder_2_->config.projection_dim; }
  /// Width of the token states: the hidden sizes of the encoders present, summed.
  int64_t embed_dim() const;
  bool has_first_encoder() const { return static_cast<bool>(text_encoder_); }
  ClipTextModel text_encoder() const { return text_encoder_; }
  ClipTextModel text_encoder_2() const { return text_encoder_2_; }
  const text::Tokenizer* tokenizer() const { return tokenizer_.get(); }
  const text::Tokenizer& tokenizer_2() const { return *tokenizer_2_; }

 private:
  std::shared_ptr<text::Tokenizer> tokenizer_, tokenizer_2_;
  ClipTextModel text_encoder_{nullptr}, text_encoder_2_{nullptr};
};

}  // namespace concord::diffusion
