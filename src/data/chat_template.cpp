#include "concord/data/chat_template.h"

#include <functional>
#include <map>

#include "concord/core/error.h"

namespace concord::data {

namespace {

using Kind = TemplatePiece::Kind;

TemplatePiece text_piece(std::string text, bool train = false) {
  return {Kind::text, std::move(text), train};
}
TemplatePiece special(Kind kind, bool train = false) { return {kind, "", train}; }

void check_generation_prompt(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                             const std::string& name) {
  CONCORD_CHECK(!messages.empty(), "chat template '", name, "': empty conversation");
  CONCORD_CHECK(!add_generation_prompt || messages.back().role != "assistant",
                "chat template '", name,
                "': add_generation_prompt needs a conversation that does not end with an "
                "assistant turn");
}

std::string strip(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

class PlainTemplate final : public ChatTemplate {
 public:
  std::string name() const override { return "plain"; }
  std::vector<TemplatePiece> render(const std::vector<ChatMessage>& messages,
                                    bool add_generation_prompt) const override {
    check_generation_prompt(messages, add_generation_prompt, name());
    std::vector<TemplatePiece> out;
    bool after_answer = false;
    for (const auto& m : messages) {
      if (m.role == "system") {
        out.push_back(text_piece(m.content + "\n\n"));
      } else if (m.role == "user") {
        // "Answer:" closes the question, so the prompt of a generation request is complete
        // without a separate generation prompt.
        out.push_back(text_piece((after_answer ? "\n\n" : "") + std::string("Question: ") +
                                 m.content + "\nAnswer:"));
      } else {
        // The space belongs to the answer: BPE tokenizers attach it to the first word.
        out.push_back(text_piece(" " + m.content, true));
        out.push_back(special(Kind::eos, true));
        after_answer = true;
      }
    }
    return out;
  }
};

class ChatmlTemplate final : public ChatTemplate {
 public:
  std::string name() const override { return "chatml"; }
  std::vector<TemplatePiece> render(const std::vector<ChatMessage>& messages,
                                    bool add_generation_prompt) const override {
    check_generation_prompt(messages, add_generation_prompt, name());
    std::vector<TemplatePiece> out;
    for (const auto& m : messages) {
      out.push_back(text_piece("<|im_start|>" + m.role + "\n"));
      if (m.role == "assistant") {
        // The model must learn to close its turn, so <|im_end|> is a target; the newline
        // after it is formatting between turns.
        out.push_back(text_piece(m.content + "<|im_end|>", true));
        out.push_back(text_piece("\n"));
      } else {
        out.push_back(text_piece(m.content + "<|im_end|>\n"));
      }
    }
    if (add_generation_prompt) out.push_back(text_piece("<|im_start|>assistant\n"));
    return out;
  }
};

class Llama2Template final : public ChatTemplate {
 public:
  std::string name() const override { return "llama2"; }
  std::vector<TemplatePiece> render(const std::vector<ChatMessage>& messages,
                                    bool add_generation_prompt) const override {
    check_generation_prompt(messages, add_generation_prompt, name());
    std::vector<TemplatePiece> out;
    size_t first = 0;
    std::string system;
    if (messages[0].role == "system") {
      system = messages[0].content;
      first = 1;
    }
    for (size_t i = first; i < messages.size(); ++i) {
      const auto& m = messages[i];
      std::string content = m.content;
      // As Meta's reference: the system prompt goes inside the first user instruction.
      if (i == first && first == 1) content = "<<SYS>>\n" + system + "\n<</SYS>>\n\n" + content;
      if (m.role == "user") {
        out.push_back(special(Kind::bos));
        out.push_back(text_piece("[INST] " + strip(content) + " [/INST]"));
      } else {
        CONCORD_CHECK(m.role == "assistant", "chat template 'llama2': unexpected role '", m.role,
                      "'");
        out.push_back(text_piece(" " + strip(content) + " ", true));
        out.push_back(special(Kind::eos, true));
      }
    }
    return out;
  }
};

const std::map<std::string, std::function<std::unique_ptr<ChatTemplate>()>>& registry() {
  static const std::map<std::string, std::function<std::unique_ptr<ChatTemplate>()>> r = {
      {"chatml", [] { return std::make_unique<ChatmlTemplate>(); }},
      {"llama2", [] { return std::make_unique<Llama2Template>(); }},
      {"plain", [] { return std::make_unique<PlainTemplate>(); }},
  };
  return r;
}

}  // namespace

int64_t TokenizedSample::prompt_length() const {
  for (size_t i = 0; i < train.size(); ++i) {
    if (train[i]) return static_cast<int64_t>(i);
  }
  return static_cast<int64_t>(train.size());
}

std::string ChatTemplate::render_text(const std::vector<ChatMessage>& messages,
                                      bool add_generation_prompt, const std::string& bos,
                                      const std::string& eos) const {
  std::string out;
  for (const auto& p : render(messages, add_generation_prompt)) {
    out += p.kind == Kind::text ? p.text : p.kind == Kind::bos ? bos : eos;
  }
  return out;
}

TokenizedSample ChatTemplate::tokenize(const text::Tokenizer& tokenizer,
                                       const std::vector<ChatMessage>& messages,
                                       bool add_generation_prompt) const {
  TokenizedSample s;
  // Adjacent text pieces with the same mask are tokenised together, so the only tokenisation
  // boundaries are where the mask changes (at a word start in every template above).
  std::string pending;
  bool pending_train = false;
  auto flush = [&] {
    if (pending.empty()) return;
    for (text::TokenId id : tokenizer.encode(pending, false)) {
      s.ids.push_back(id);
      s.train.push_back(pending_train ? 1 : 0);
    }
    pending.clear();
  };
  for (const auto& p : render(messages, add_generation_prompt)) {
    if (p.kind == Kind::text) {
      if (p.train != pending_train) flush();
      pending_train = p.train;
      pending += p.text;
      continue;
    }
    flush();
    auto id = p.kind == Kind::bos ? tokenizer.bos_id() : tokenizer.eos_id();
    CONCORD_CHECK(id.has_value(), "chat template '", name(), "' needs a tokenizer with a ",
                  p.kind == Kind::bos ? "BOS" : "EOS", " token");
    s.ids.push_back(*id);
    s.train.push_back(p.train ? 1 : 0);
  }
  flush();
  return s;
}

std::unique_ptr<ChatTemplate> make_chat_template(const std::string& name) {
  auto it = registry().find(name);
  if (it == registry().end()) {
    std::string valid;
    for (const auto& n : chat_template_names()) valid += (valid.empty() ? "" : ", ") + n;
    fail("unknown chat template '", name, "' (valid: ", valid, ")");
  }
  return it->second();
}

std::vector<std::string> chat_template_names() {
  std::vector<std::string> names;
  for (const auto& [n, make] : registry()) names.push_back(n);
  return names;
}

}  // namespace concord::data
