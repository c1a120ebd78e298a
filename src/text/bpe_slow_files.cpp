// BpeTokenizer::from_slow_files: the tokenizer.json that transformers' converters
// (convert_slow_tokenizer.py; CLIPTokenizer's own constructor in transformers 5) build from a
// slow tokenizer's vocab.json and merges.txt, assembled here and parsed by the one BPE reader.
#include <cstdint>
#include <fstream>
#include <set>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "concord/core/config.h"
#include "concord/core/error.h"
#include "concord/text/bpe_tokenizer.h"
#include "concord/text/utf8.h"

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

// A boolean member of tokenizer_config.json (absent or null: `fallback`); `key` names it in errors.
bool flag(const json& object, const char* member, bool fallback, const std::string& key,
          const std::string& source) {
  auto it = object.find(member);
  if (it == object.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) fail_format(source, "key '", key, "' must be true or false");
  return it->get<bool>();
}

// merges.txt: an optional "#version" line, then one "a b" pair a line (blank lines skipped). Each
// pair and its merge must be tokens of vocab.json; errors name merges.txt and the line (the
// tokenizer.json reader would name vocab.json and an index that counts no blank lines).
json read_merges(const std::filesystem::path& path, const json& vocab) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail_io(path.string(), "cannot open");
  json merges = json::array();
  std::string line;
  int64_t number = 0;
  while (std::getline(in, line)) {
    ++number;
    const std::string where = path.string() + ":" + std::to_string(number);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || (number == 1 && line.rfind("#version", 0) == 0)) continue;
    if (!utf8::is_valid(line)) fail_format(where, "not valid UTF-8");
    const size_t sp = line.find(' ');
    if (sp == std::string::npos || sp == 0 || sp + 1 == line.size() ||
        line.find(' ', sp + 1) != std::string::npos) {
      fail_format(where, "expected \"a b\" (two tokens and one space)");
    }
    for (const std::string& token : {line.substr(0, sp), line.substr(sp + 1),
                                     line.substr(0, sp) + line.substr(sp + 1)}) {
      if (!vocab.contains(token)) fail_format(where, "token ", json_quoted(token), " is not in vocab.json");
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
    for (const auto& [key, content] : {std::pair<const char*, const std::string&>{"bos_token", bos},
                                       {"eos_token", eos}}) {
      if (content.empty()) fail_format(where, "key '", key, "' is empty (CLIP's template needs it)");
    }
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
    const bool prefix = flag(config, "add_prefix_space", false, "add_prefix_space", where);
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
    fail_format(where, "key 'tokenizer_class': ", json_quoted(cls),
                " has no slow-file reader (CLIPTokenizer, GPT2Tokenizer); save the tokenizer "
                "with a tokenizer.json");
  }

  // Special tokens: their vocabulary id, or the next free id when the vocabulary lacks them.
  int64_t next_id = 0;
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0 ||
        it.value().get<int64_t>() > INT32_MAX) {
      fail_format(vocab_path.string(), "token ", json_quoted(it.key()), ": expected an integer id >= 0");
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
        normalized = flag(*it, "normalized", false, std::string(key) + ".normalized", where);
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
  model["merges"] = read_merges(merges_path, vocab);
  model["vocab"] = std::move(vocab);
  root["added_tokens"] = std::move(added);
  root["model"] = std::move(model);
  return from_json(root.dump(), (folder / "vocab.json").string(), config.dump());
}

}  // namespace concord::text
