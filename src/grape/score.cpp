#include "concord/grape/score.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>
#include <unordered_map>

#include "concord/core/error.h"
#include "concord/core/files.h"
#include "concord/core/shard.h"
#include "concord/data/jsonl.h"
#include "concord/lm/score.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace concord::grape {

// ---- statuses, JSON ----------------------------------------------------------------------------

const char* to_string(CandidateStatus status) {
  switch (status) {
    case CandidateStatus::scored: return "scored";
    case CandidateStatus::too_long: return "too_long";
    case CandidateStatus::empty: return "empty";
  }
  return "?";
}

CandidateStatus candidate_status_from_string(const std::string& name) {
  if (name == "scored") return CandidateStatus::scored;
  if (name == "too_long") return CandidateStatus::too_long;
  if (name == "empty") return CandidateStatus::empty;
  fail("unknown candidate status '", name, "' (valid: empty, scored, too_long)");
}

json PoolScores::to_json() const {
  json candidates_json = json::array();
  for (const auto& c : candidates) {
    json o = {{"source", c.source}, {"status", to_string(c.status)}};
    // JSON has no NaN: a candidate without a score says so with null.
    o["score"] = c.has_score() ? json(c.score) : json(nullptr);
    o["logprob_sum"] = c.logprob_sum;
    o["response_tokens"] = c.response_tokens;
    if (c.duplicate_of >= 0) o["duplicate_of"] = c.duplicate_of;
    candidates_json.push_back(std::move(o));
  }
  return {{"id", id}, {"pool_index", pool_index}, {"prompt_tokens", prompt_tokens},
          {"candidates", std::move(candidates_json)}};
}

namespace {

const json& require(const json& object, const std::string& key, const data::RecordLocation& loc) {
  auto it = object.find(key);
  if (it == object.end()) loc.fail("missing key '" + key + "'");
  return *it;
}

int64_t require_int(const json& object, const std::string& key, const data::RecordLocation& loc) {
  const json& v = require(object, key, loc);
  if (!v.is_number_integer()) loc.fail("key '" + key + "' must be an integer, got " + v.type_name());
  return v.get<int64_t>();
}

std::string require_string(const json& object, const std::string& key,
                           const data::RecordLocation& loc) {
  const json& v = require(object, key, loc);
  if (!v.is_string()) loc.fail("key '" + key + "' must be a string, got " + v.type_name());
  return v.get<std::string>();
}

}  // namespace

PoolScores PoolScores::from_json(const json& object, const data::RecordLocation& loc) {
  PoolScores p;
  p.id = require_string(object, "id", loc);
  p.pool_index = require_int(object, "pool_index", loc);
  p.prompt_tokens = require_int(object, "prompt_tokens", loc);
  const json& candidates = require(object, "candidates", loc);
  if (!candidates.is_array()) loc.fail("key 'candidates' must be an array");
  for (size_t i = 0; i < candidates.size(); ++i) {
    const json& c = candidates[i];
    if (!c.is_object()) loc.fail("candidates[" + std::to_string(i) + "] must be an object");
    CandidateScore s;
    s.source = require_string(c, "source", loc);
    try {
      s.status = candidate_status_from_string(require_string(c, "status", loc));
    } catch (const FormatError&) {
      throw;
    } catch (const Error& e) {
      loc.fail(e.what());
    }
    const json& score = require(c, "score", loc);
    if (s.has_score()) {
      if (!score.is_number()) loc.fail("candidates[" + std::to_string(i) + "]: a scored candidate needs a number 'score'");
      s.score = score.get<double>();
    }
    const json& sum = require(c, "logprob_sum", loc);
    if (!sum.is_number()) loc.fail("key 'logprob_sum' must be a number");
    s.logprob_sum = sum.get<double>();
    s.response_tokens = require_int(c, "response_tokens", loc);
    if (c.contains("duplicate_of")) s.duplicate_of = require_int(c, "duplicate_of", loc);
    p.candidates.push_back(std::move(s));
  }
  return p;
}

json ScoreStats::to_json() const {
  return {{"pools", pools},
          {"candidates", candidates},
          {"scored", scored},
          {"skipped_too_long", skipped_too_long},
          {"skipped_empty", skipped_empty},
          {"deduplicated", deduplicated},
          {"response_tokens", response_tokens},
          {"prompt_tokens", prompt_tokens},
          {"seconds", seconds}};
}

ScoreStats summarize(const std::vector<PoolScores>& scores) {
  ScoreStats s;
  for (const auto& p : scores) {
    ++s.pools;
    bool any_run = false;
    for (const auto& c : p.candidates) {
      ++s.candidates;
      switch (c.status) {
        case CandidateStatus::scored:
          ++s.scored;
          if (c.duplicate_of >= 0) {
            ++s.deduplicated;
          } else {
            s.response_tokens += c.response_tokens;
            any_run = true;
          }
          break;
        case CandidateStatus::too_long: ++s.skipped_too_long; break;
        case CandidateStatus::empty: ++s.skipped_empty; break;
      }
    }
    if (any_run) s.prompt_tokens += p.prompt_tokens;
  }
  return s;
}

json GrapeScoreOptions::to_json() const {
  json out = score_options_schema().to_json(*this);
  out["rank"] = rank;
  out["world_size"] = world_size;
  return out;
}

const OptionsSchema<GrapeScoreOptions>& score_options_schema() {
  static const OptionsSchema<GrapeScoreOptions> schema = [] {
    OptionsSchema<GrapeScoreOptions> s("GRAPE scoring");
    s.field("template", &GrapeScoreOptions::prompt_template,
            "prompt format with {instruction}, or a chat template name (plain, chatml, llama2: "
            "scores exactly the tokens sft trains on)")
        .field("max_length", &GrapeScoreOptions::max_length,
               "longest prompt + response scored, in tokens; longer candidates are skipped and "
               "counted (0: the model's context)",
               opt::at_least(0))
        .field("batch_size", &GrapeScoreOptions::batch_size, "responses per forward pass",
               opt::at_least(1))
        .field("share_prompt", &GrapeScoreOptions::share_prompt,
               "run each instruction's prompt once into a KV cache for all of its responses "
               "(false: every pair on its own, faster when the LM head dominates)")
        .field("dedup", &GrapeScoreOptions::dedup, "score identical responses of a pool once");
    return s;
  }();
  return schema;
}

// ---- templates ---------------------------------------------------------------------------------

namespace {

constexpr const char* kPlaceholder = "{instruction}";

std::string fill(const std::string& format, const std::string& instruction) {
  std::string out;
  size_t from = 0;
  const std::string key = kPlaceholder;
  for (size_t at = format.find(key); at != std::string::npos; at = format.find(key, from)) {
    out.append(format, from, at - from);
    out += instruction;
    from = at + key.size();
  }
  out.append(format, from, std::string::npos);
  return out;
}

std::vector<int64_t> widen(const std::vector<text::TokenId>& ids) {
  return {ids.begin(), ids.end()};
}

}  // namespace

PromptRenderer::PromptRenderer(const std::string& prompt_template, const text::Tokenizer& tokenizer)
    : template_(prompt_template), tokenizer_(&tokenizer) {
  if (prompt_template.find(kPlaceholder) != std::string::npos) return;
  const auto names = data::chat_template_names();
  if (std::find(names.begin(), names.end(), prompt_template) == names.end()) {
    std::string valid;
    for (const auto& n : names) valid += ", " + n;
    fail("grape: template '", prompt_template, "' is neither a format string with ", kPlaceholder,
         " nor a chat template name (valid chat templates: ", valid.substr(2), ")");
  }
  chat_ = data::make_chat_template(prompt_template);
}

ScoringTokens PromptRenderer::render(const std::string& instruction,
                                     const std::string& response) const {
  ScoringTokens t;
  if (!chat_) {
    // As lm::score_texts: the prompt with the tokenizer's special tokens (a BOS where the model
    // expects one), the response on its own, so its tokens do not depend on the prompt.
    t.prompt = widen(tokenizer_->encode(fill(template_, instruction), /*add_special_tokens=*/true));
    t.response = widen(tokenizer_->encode(response, /*add_special_tokens=*/false));
    return t;
  }
  // The SFT rendering of the pair: the scored tokens are the trainable run (the assistant turn).
  const data::TokenizedSample s =
      chat_->tokenize(*tokenizer_, {{"user", instruction}, {"assistant", response}});
  const size_t start = static_cast<size_t>(s.prompt_length());
  size_t end = start;
  while (end < s.ids.size() && s.train[end]) ++end;
  t.prompt.assign(s.ids.begin(), s.ids.begin() + static_cast<std::ptrdiff_t>(start));
  t.response.assign(s.ids.begin() + static_cast<std::ptrdiff_t>(start),
                    s.ids.begin() + static_cast<std::ptrdiff_t>(end));
  return t;
}

std::string PromptRenderer::prompt_text(const std::string& instruction) const {
  if (!chat_) return fill(template_, instruction);
  return chat_->render_text({{"user", instruction}}, /*add_generation_prompt=*/true);
}

// ---- scoring -----------------------------------------------------------------------------------

namespace {

// One (prompt, response) pair the model must run.
struct Job {
  size_t pool = 0;       // index into the result
  size_t candidate = 0;  // index in the pool
  std::vector<int64_t> response;
};

void record(CandidateScore& c, const std::vector<double>& logprobs) {
  c.status = CandidateStatus::scored;
  c.logprob_sum = 0.0;
  for (double v : logprobs) c.logprob_sum += v;
  c.score = c.logprob_sum / static_cast<double>(logprobs.size());
}

}  // namespace

namespace {

std::vector<PoolScores> grape_score_impl(lm::CausalLM model, const text::Tokenizer& tokenizer,
                                         const std::vector<data::GrapePool>& pools,
                                         const GrapeScoreOptions& options, ScoreStats* stats) {
  CONCORD_CHECK(options.world_size >= 1, "grape_score: world_size must be >= 1, got ",
                options.world_size);
  CONCORD_CHECK(options.rank >= 0 && options.rank < options.world_size,
                "grape_score: rank must be in [0, world_size = ", options.world_size, "), got ",
                options.rank);
  score_options_schema().validate(options, "grape_score options");
  const int64_t max_length =
      options.max_length > 0 ? options.max_length : model->config.max_position_embeddings;
  // Learned position tables end at max_position_embeddings; rotary models could run past it,
  // but their scores there would not be the model's.
  CONCORD_CHECK(max_length <= model->config.max_position_embeddings, "grape_score: max_length ",
                max_length, " is past the model's context (max_position_embeddings ",
                model->config.max_position_embeddings, ")");
  const auto start_time = std::chrono::steady_clock::now();
  const PromptRenderer renderer(options.prompt_template, tokenizer);
  int64_t pad_id = 0;
  if (auto pad = tokenizer.pad_id(); pad && *pad >= 0 && *pad < model->config.vocab_size) pad_id = *pad;

  // Tokenise this rank's pools; decide which candidates run.
  std::vector<PoolScores> result;
  std::vector<std::vector<int64_t>> prompts;
  std::vector<Job> jobs;
  std::vector<std::pair<size_t, size_t>> duplicates;  // (pool in result, candidate)
  for (size_t i = static_cast<size_t>(options.rank); i < pools.size();
       i += static_cast<size_t>(options.world_size)) {
    const data::GrapePool& pool = pools[i];
    PoolScores ps;
    ps.id = pool.id;
    ps.pool_index = static_cast<int64_t>(i);
    ps.candidates.resize(pool.responses.size());
    std::vector<int64_t> prompt;
    bool have_prompt = false;
    std::unordered_map<std::string, size_t> first_with_text;
    for (size_t j = 0; j < pool.responses.size(); ++j) {
      const auto& response = pool.responses[j];
      CandidateScore& c = ps.candidates[j];
      c.source = response.source;
      if (options.dedup) {
        auto [it, inserted] = first_with_text.emplace(response.text, j);
        if (!inserted) {
          c.duplicate_of = static_cast<int64_t>(it->second);
          duplicates.emplace_back(result.size(), j);
          continue;
        }
      }
      ScoringTokens t = renderer.render(pool.instruction, response.text);
      if (!have_prompt) {
        prompt = std::move(t.prompt);
        have_prompt = true;
        CONCORD_CHECK(!prompt.empty(), "grape_score: pool '", pool.id,
                      "': the prompt renders to no tokens (the first response token needs a "
                      "context: use a template with text around {instruction}, or a tokenizer "
                      "that adds a BOS token)");
      } else if (t.prompt != prompt) {
        fail("grape_score: pool '", pool.id, "': the prompt tokens depend on the response under "
             "template '", options.prompt_template, "'; prompts cannot be shared");
      }
      c.response_tokens = static_cast<int64_t>(t.response.size());
      if (t.response.empty()) {
        c.status = CandidateStatus::empty;
      } else if (static_cast<int64_t>(prompt.size() + t.response.size()) > max_length) {
        c.status = CandidateStatus::too_long;
      } else {
        jobs.push_back({result.size(), j, std::move(t.response)});
      }
    }
    ps.prompt_tokens = static_cast<int64_t>(prompt.size());
    result.push_back(std::move(ps));
    prompts.push_back(std::move(prompt));
  }

  if (!jobs.empty()) {
    // One request per pool that has responses to run: its prompt and those responses. With
    // share_prompt the prompt runs once per pool into a KV cache its responses reuse (lm/score.h).
    std::vector<lm::ScoreRequest> requests;
    std::vector<std::vector<size_t>> jobs_of_request;
    std::vector<int64_t> request_of_pool(result.size(), -1);
    for (size_t k = 0; k < jobs.size(); ++k) {
      int64_t& r = request_of_pool[jobs[k].pool];
      if (r < 0) {
        r = static_cast<int64_t>(requests.size());
        requests.push_back({prompts[jobs[k].pool], {}});
        jobs_of_request.emplace_back();
      }
      requests[static_cast<size_t>(r)].continuations.push_back(jobs[k].response);
      jobs_of_request[static_cast<size_t>(r)].push_back(k);
    }
    model->eval();
    lm::ScoreOptions so;
    so.batch_size = options.batch_size;
    so.pad_token_id = pad_id;
    so.share_prompt = options.share_prompt;
    const auto scores = lm::score_requests(model, requests, so);
    for (size_t r = 0; r < requests.size(); ++r) {
      for (size_t k = 0; k < jobs_of_request[r].size(); ++k) {
        const Job& job = jobs[jobs_of_request[r][k]];
        record(result[job.pool].candidates[job.candidate], scores[r][k].token_logprobs);
      }
    }
  }

  // Identical candidates take the first one's outcome.
  for (const auto& [p, j] : duplicates) {
    CandidateScore& c = result[p].candidates[j];
    const CandidateScore& first = result[p].candidates[static_cast<size_t>(c.duplicate_of)];
    c.status = first.status;
    c.score = first.score;
    c.logprob_sum = first.logprob_sum;
    c.response_tokens = first.response_tokens;
    if (!first.has_score()) c.duplicate_of = -1;  // skipped for the same reason, not deduplicated
  }
  if (stats) {
    *stats = summarize(result);
    stats->seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_time).count();
  }
  return result;
}

}  // namespace

std::vector<PoolScores> grape_score(lm::CausalLM model, const text::Tokenizer& tokenizer,
                                    const std::vector<data::GrapePool>& pools,
                                    const GrapeScoreOptions& options, ScoreStats* stats) {
  return translate_torch_errors("grape::grape_score", [&] {
    return grape_score_impl(model, tokenizer, pools, options, stats);
  });
}

// ---- files -------------------------------------------------------------------------------------

void write_score_file(const fs::path& path, const std::vector<PoolScores>& scores) {
  std::vector<json> lines;
  lines.reserve(scores.size());
  for (const auto& s : scores) lines.push_back(s.to_json());
  data::write_jsonl(path, lines);
}

std::vector<PoolScores> read_score_file(const fs::path& path) {
  data::JsonlReader reader(path);
  std::vector<PoolScores> out;
  reader.for_each([&](const json& object, const data::RecordLocation& loc) {
    out.push_back(PoolScores::from_json(object, loc));
  });
  return out;
}

std::string score_shard_name(int64_t rank, int64_t world_size) {
  return shard_part_name("scores.jsonl", Shard{rank, world_size});
}

std::vector<PoolScores> merge_scores(std::vector<std::vector<PoolScores>> parts,
                                     int64_t expected_pools) {
  return merge_shard_items<PoolScores>(
      std::move(parts), [](const PoolScores& p) { return p.pool_index; }, expected_pools,
      "merge_scores (pools)");
}

std::vector<PoolScores> merge_score_files(const std::vector<fs::path>& paths,
                                          int64_t expected_pools) {
  std::vector<std::vector<PoolScores>> parts;
  for (const auto& p : paths) parts.push_back(read_score_file(p));
  return merge_scores(std::move(parts), expected_pools);
}

}  // namespace concord::grape
