// Chat templates: how a conversation becomes the token sequence a model trains on, and which
// tokens carry the loss. A small registry keyed by name (an unknown name throws and lists the
// valid ones):
//
//   plain   "Question: {user}\nAnswer: {assistant}<eos>", turns joined by "\n\n", a system
//           message as a first paragraph. The prompt format GRAPE's instruction-tuning
//           experiments use for base models.
//   chatml  "<|im_start|>{role}\n{content}<|im_end|>\n" per turn (Qwen, OpenHermes); the model
//           learns "{content}<|im_end|>" of each assistant turn.
//   llama2  "<s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST] {assistant} </s>" (Llama-2
//           chat); <s> and </s> are the tokenizer's BOS/EOS ids, not text.
//
// A template renders to pieces (text, or the BOS/EOS id) each marked trainable or not; pieces
// are tokenised one by one, so the label mask is exact at the token level with any tokenizer.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "concord/data/records.h"
#include "concord/text/tokenizer.h"

namespace concord::data {

struct TemplatePiece {
  enum class Kind { text, bos, eos };
  Kind kind = Kind::text;
  std::string text;    ///< for Kind::text
  bool train = false;  ///< tokens of this piece carry the loss
};

/// Tokens of a rendered conversation with a per-token loss mask.
struct TokenizedSample {
  std::vector<text::TokenId> ids;
  std::vector<uint8_t> train;  ///< 1 where the token is a training target
  /// Number of leading tokens before the first trainable one (the prompt).
  int64_t prompt_length() const;
};

class ChatTemplate {
 public:
  virtual ~ChatTemplate() = default;
  virtual std::string name() const = 0;

  /// The pieces of `messages`. Assistant turns are trainable. With `add_generation_prompt`
  /// the text that opens an assistant turn is appended (for generation and scoring), and the
  /// conversation must not end with an assistant turn.
  virtual std::vector<TemplatePiece> render(const std::vector<ChatMessage>& messages,
                                            bool add_generation_prompt = false) const = 0;

  /// The pieces joined as text, with BOS/EOS written as `bos`/`eos` (for logs and tests).
  std::string render_text(const std::vector<ChatMessage>& messages,
                          bool add_generation_prompt = false, const std::string& bos = "<s>",
                          const std::string& eos = "</s>") const;

  /// Tokenises render(messages). A BOS/EOS piece needs the tokenizer to have that id
  /// (concord::Error otherwise). No special tokens are added beyond the template's own.
  TokenizedSample tokenize(const text::Tokenizer& tokenizer,
                           const std::vector<ChatMessage>& messages,
                           bool add_generation_prompt = false) const;

  nlohmann::json to_json() const { return {{"name", name()}}; }
};

/// The template registered under `name`; unknown names throw concord::Error listing the valid.
std::unique_ptr<ChatTemplate> make_chat_template(const std::string& name);
/// The registered names, sorted.
std::vector<std::string> chat_template_names();

}  // namespace concord::data
