// Load a Hugging Face checkpoint folder, continue a prompt greedily and score continuations: the
// two things most research code does with a language model (lm/hf_checkpoint.h, lm/generate.h,
// lm/score.h, text/tokenizer.h).
//
//   build/examples/example_hf_generate_score MODEL_DIR [--prompt TEXT] [--max-new-tokens N]
//       [--score-prompt TEXT] [--continuation TEXT]... [--device cpu|cuda|auto]
//
// MODEL_DIR holds config.json (gpt2, llama, mistral, qwen2 or pangu_pi), model.safetensors (or
// shards with model.safetensors.index.json) and tokenizer.json (or a SentencePiece .model): a
// folder from the Hugging Face hub or one Concord saved with lm::save_pretrained. With no options
// it runs the inputs of tests/fixtures/examples/tiny-llama/expected.json (a random-weight 2-layer
// Llama with a 1.5k-token BPE, so the text is gibberish but the ids and log-probs are exactly
// what transformers computes for the same folder):
//
//   build/examples/example_hf_generate_score tests/fixtures/examples/tiny-llama
//
// prints the greedy continuation of "Azərbaycanın paytaxtı" (8 tokens) and log p(c | prompt),
// summed and per token, of " Bakı", " Gəncə" and " Şəki" after a TUMLU-style question.
// ci: @FIXTURES@/examples/tiny-llama
// ci-expect: greedy ids: 1278 518 1066 518 1311 702 702 632 [(]length[)]
#include <cstdint>
#include <iomanip>
#include <iostream>
#include <string>
#include <vector>

#include "concord/core/error.h"
#include "concord/core/runtime.h"
#include "concord/lm/generate.h"
#include "concord/lm/hf_checkpoint.h"
#include "concord/lm/score.h"
#include "concord/text/tokenizer.h"

namespace {

struct Args {
  std::string model_dir;
  std::string prompt = "Azərbaycanın paytaxtı";
  int64_t max_new_tokens = 8;
  std::string score_prompt = "Sual: Azərbaycanın paytaxtı hansı şəhərdir?\nCavab:";
  std::vector<std::string> continuations;
  std::string device = "cpu";
};

// Newlines shown as \n, so a prompt prints on one line.
std::string shown(const std::string& text) {
  std::string out;
  for (char c : text) out += c == '\n' ? std::string("\\n") : std::string(1, c);
  return out;
}

// `text` padded with spaces to `width` characters (UTF-8 code points, not bytes).
std::string padded(const std::string& text, size_t width) {
  size_t chars = 0;
  for (unsigned char c : text) chars += (c & 0xC0) != 0x80;
  return text + std::string(chars < width ? width - chars : 0, ' ');
}

int64_t count(const std::string& option, const std::string& text) {
  size_t used = 0;
  int64_t n = -1;
  try {
    n = std::stoll(text, &used);
  } catch (const std::exception&) {
  }
  CONCORD_CHECK(used == text.size() && n > 0, option, " takes a positive integer, got '", text, "'");
  return n;
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      CONCORD_CHECK(i + 1 < argc, "option ", arg, " needs a value");
      return argv[++i];
    };
    if (arg == "--prompt") a.prompt = value();
    else if (arg == "--max-new-tokens") a.max_new_tokens = count(arg, value());
    else if (arg == "--score-prompt") a.score_prompt = value();
    else if (arg == "--continuation") a.continuations.push_back(value());
    else if (arg == "--device") a.device = value();
    else if (!arg.empty() && arg[0] == '-') concord::fail("unknown option ", arg);
    else a.model_dir = arg;
  }
  CONCORD_CHECK(!a.model_dir.empty(), "usage: example_hf_generate_score MODEL_DIR [options]");
  if (a.continuations.empty()) a.continuations = {" Bakı", " Gəncə", " Şəki"};
  return a;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    concord::init_runtime();  // thread count, allocator and logging, as the CLI sets them
    const Args args = parse(argc, argv);

    // The model: config.json picks the family, the safetensors carry transformers' names.
    concord::lm::LoadOptions load;
    load.device = concord::select_device(args.device);
    concord::lm::CausalLM model = concord::lm::load_pretrained(args.model_dir, load);
    // The tokenizer: tokenizer.json (byte-level BPE or BPE with byte fallback) or a .model.
    const auto tokenizer = concord::text::load_tokenizer(args.model_dir);
    const auto& config = model->config;
    std::cout << "model: " << concord::lm::model_family_name(config.family) << ", "
              << config.num_layers << " layers, d " << config.hidden_size << ", vocab "
              << config.vocab_size << ", " << model->num_parameters() << " parameters\n";

    // Greedy decoding (do_sample = false), as transformers' generate() with its defaults: the
    // prompt is encoded with the tokenizer's special tokens (a BOS for Llama-style tokenizers),
    // runs once, and each new token runs alone against the KV cache.
    concord::lm::GenerationOptions gen;
    gen.max_new_tokens = args.max_new_tokens;
    const auto out = concord::lm::generate_text(model, *tokenizer, {args.prompt}, gen);
    std::cout << "greedy continuation of \"" << shown(args.prompt) << "\"\n";
    std::cout << "greedy ids:";
    for (int64_t id : out[0].tokens) std::cout << ' ' << id;
    std::cout << " (" << out[0].finish_reason << ")\ngreedy text: \"" << out[0].text << "\"\n";

    // Scoring: log p(c | prompt) = sum_t log softmax(f(prompt, c_<t))[c_t], the quantity
    // GRAPE ranks responses by and TUMLU's log-likelihood protocol compares options with.
    const std::vector<std::string> prompts(args.continuations.size(), args.score_prompt);
    const auto scores = concord::lm::score_texts(model, *tokenizer, prompts, args.continuations);
    std::cout << "log p(continuation | \"" << shown(args.score_prompt) << "\"):\n";
    size_t best = 0;
    for (size_t i = 0; i < scores.size(); ++i) {
      std::cout << "  " << padded("\"" + shown(args.continuations[i]) + "\"", 14) << std::fixed
                << std::setprecision(4) << " sum " << scores[i].sum
                << "  mean " << scores[i].mean << "  tokens " << scores[i].token_logprobs.size()
                << (scores[i].greedy ? "  (greedy)" : "") << "\n";
      if (scores[i].sum > scores[best].sum) best = i;
    }
    std::cout << "most likely: \"" << args.continuations[best] << "\"\n";
  } catch (const std::exception& e) {
    std::cerr << "example_hf_generate_score: error: " << concord::one_line_message(e) << "\n";
    return 1;
  }
  return 0;
}
