// BpeTokenizer::from_slow_files: the tokenizer.json that transformers' converters
// (convert_slow_tokenizer.py; CLIPTokenizer's own constructor in transformers 5) build from a
// slow tokenizer's vocab.json and merges.txt, assembled here and parsed by the one BPE reader.
#include <fstream>
#include <set>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "concord/core/config.h"
#include "concord/core/error.h"
#include "concord/text/bpe_tokenizer.h"

namespace concord::text {

namespace {

using json = nlohmann::json;

// A special token in tokenizer_config.json: a string, or an AddedToken object {"content": ...}.
std::string token_content(const json& config, const char* key, const std::string& fallback,
                          const std::string& source) {
  auto it = config.find(key);
  if (it == config.end() || it->is_null()) return fallback;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
    return (*it)["content"].get<std::string>();
  }
  fail_format(source, "key '", key, "' must be a string or an object with a \"content\" string");
}

// merges.txt: an optional "#version" line, then one "a b" pair a line (blank lines skipped).
json read_merges(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail_io(path.string(), "cannot open");
  json merges = json::array();
  std::string line;
  int64_t number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || (number == 1 && line.rfind("#version", 0) == 0)) continue;
    const size_t sp = line.find(' ');
    if (sp == std::string::npos || sp == 0 || sp + 1 == line.size() ||
        line.find(' ', sp + 1) != std::string::npos) {
      fail_format(path.string(), ":", number, ": expected \"a b\" (two tokens and one space)");
    }
    merges.push_back(line);
  }
  return merges;
}

}  // namespace

std::unique_ptr<BpeTokenizer> BpeTokenizer::from_slow_files(const std::filesystem::path& folder) {
  const auto vocab_path = folder / "vocab.json";
  const auto merges_path = folder / "merges.txt";
  const auto config_path = folder / "tokenizer_config.json";
  for (const auto& p : {vocab_path, merges_path, config_path}) {
    if (!std::filesystem::is_regular_file(p)) fail_io(p.string(), "no such file");
  }
  const json config = load_json_file(config_path);
  if (!config.is_object()) fail_format(config_path.string(), "expected a JSON object");
  const std::string where = config_path.string();
  std::string cls = token_content(config, "tokenizer_class", "", where);
  if (cls.size() > 4 && cls.compare(cls.size() - 4, 4, "Fast") == 0) cls.resize(cls.size() - 4);

  json vocab = load_json_file(vocab_path);
  if (!vocab.is_object()) fail_format(vocab_path.string(), "expected an object of token: id");
  json root;
  root["version"] = "1.0";
  root["truncation"] = nullptr;
  root["padding"] = nullptr;
  json model = {{"type", "BPE"},     {"dropout", nullptr},     {"fuse_unk", false},
                {"byte_fallback", false}, {"ignore_merges", false}};
  std::vector<std::string> specials;  // contents, in transformers' registration order
  if (cls == "CLIPTokenizer") {
    const std::string bos = token_content(config, "bos_token", "<|startoftext|>", where);
    const std::string eos = token_content(config, "eos_token", "<|endoftext|>", where);
    const std::string unk = token_content(config, "unk_token", "<|endoftext|>", where);
    const std::string pad = token_content(config, "pad_token", "<|endoftext|>", where);
    specials = {bos, eos, unk, pad};
    model["unk_token"] = unk;
    model["continuing_subword_prefix"] = "";
    model["end_of_word_suffix"] = "</w>";
    root["normalizer"] = {{"type", "Sequence"},
                          {"normalizers",
                           {{{"type", "NFC"}},
                            {{"type", "Replace"}, {"pattern", {{"Regex", "\\s+"}}}, {"content", " "}},
                            {{"type", "Lowercase"}}}}};
    root["pre_tokenizer"] = {
        {"type", "Sequence"},
        {"pretokenizers",
         {{{"type", "Split"},
           {"pattern",
            {{"Regex", "<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|"
                       "[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+"}}},
           {"behavior", "Removed"},
           {"invert", true}},
          {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true},
           {"use_regex", true}}}}};
    root["decoder"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true},
                       {"use_regex", true}};
  } else if (cls == "GPT2Tokenizer") {
    const bool prefix = config.value("add_prefix_space", false);
    specials = {token_content(config, "bos_token", "<|endoftext|>", where),
                token_content(config, "eos_token", "<|endoftext|>", where),
                token_content(config, "unk_token", "<|endoftext|>", where)};
    if (config.contains("pad_token") && !config["pad_token"].is_null()) {
      specials.push_back(token_content(config, "pad_token", "", where));
    }
    model["unk_token"] = nullptr;
    root["normalizer"] = nullptr;
    root["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", prefix},
                             {"trim_offsets", true}, {"use_regex", true}};
    root["decoder"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true},
                       {"use_regex", true}};
    root["post_processor"] = {{"type", "ByteLevel"}, {"add_prefix_space", true},
                              {"trim_offsets", false}, {"use_regex", true}};
  } else {
    fail_format(where, "key 'tokenizer_class': '", cls,
                "' has no slow-file reader (CLIPTokenizer, GPT2Tokenizer); save the tokenizer "
                "with a tokenizer.json");
  }

  // Special tokens: their vocabulary id, or the next free id when the vocabulary lacks them.
  int64_t next_id = 0;
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    if (!it.value().is_number_integer()) {
      fail_format(vocab_path.string(), "token '", it.key(), "': expected an integer id");
    }
    next_id = std::max(next_id, it.value().get<int64_t>() + 1);
  }
  // An AddedToken object in the config says whether the token is matched in normalized text
  // (SDXL's tokenizer_2 says so: "<|ENDOFTEXT|>" lower-cases into its eos); a plain string is
  // not. Registered in the order bos, eos, unk, pad, the last registration of a token decides,
  // as in transformers 5: SDXL's tokenizer/ names "<|endoftext|>" as a plain pad_token, so there
  // the capitals stay text.
  auto normalized_flag = [&](const std::string& content) {
    bool normalized = false;
    for (const char* key : {"bos_token", "eos_token", "unk_token", "pad_token"}) {
      auto it = config.find(key);
      if (it == config.end()) continue;
      if (it->is_object() && it->value("content", std::string()) == content) {
        normalized = it->value("normalized", false);
      } else if (it->is_string() && it->get<std::string>() == content) {
        normalized = false;
      }
    }
    return normalized;
  };
  json added = json::array();
  std::set<std::string> seen;
  for (const auto& content : specials) {
    if (content.empty() || !seen.insert(content).second) continue;
    int64_t id;
    if (auto it = vocab.find(content); it != vocab.end()) {
      id = it->get<int64_t>();
    } else {
      id = next_id++;
    }
    added.push_back({{"id", id},           {"content", content}, {"single_word", false},
                     {"lstrip", false},    {"rstrip", false},    {"normalized", normalized_flag(content)},
                     {"special", true}});
  }
  if (cls == "CLIPTokenizer") {
    auto id_of = [&](const std::string& content) {
      for (const auto& a : added) {
        if (a["content"] == content) return a["id"].get<int64_t>();
      }
      return int64_t{-1};
    };
    const std::string bos = specials[0], eos = specials[1];
    root["post_processor"] = {{"type", "RobertaProcessing"},
                              {"sep", {eos, id_of(eos)}},
                              {"cls", {bos, id_of(bos)}},
                              {"trim_offsets", false},
                              {"add_prefix_space", false}};
  }
  model["vocab"] = std::move(vocab);
  model["merges"] = read_merges(merges_path);
  root["added_tokens"] = std::move(added);
  root["model"] = std::move(model);
  return from_json(root.dump(), (folder / "vocab.json").string(), config.dump());
}

}  // namespace concord::text
