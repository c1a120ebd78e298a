#include "concord/data/records.h"

#include <cmath>

#include "concord/core/error.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace concord::data {

namespace {

const json& require(const json& object, const char* key, const RecordLocation& loc,
                    const std::string& where = "") {
  auto it = object.find(key);
  if (it == object.end()) loc.fail("missing key '" + where + key + "'");
  return *it;
}

std::string require_string(const json& object, const char* key, const RecordLocation& loc,
                           const std::string& where = "") {
  const json& v = require(object, key, loc, where);
  if (!v.is_string()) {
    loc.fail("key '" + where + key + "' must be a string, got " + v.type_name());
  }
  return v.get<std::string>();
}

std::string optional_string(const json& object, const char* key, const RecordLocation& loc,
                            const std::string& where = "") {
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) return "";
  if (!it->is_string()) {
    loc.fail("key '" + where + key + "' must be a string, got " + it->type_name());
  }
  return it->get<std::string>();
}

template <typename Record, typename Parse>
std::vector<Record> read_all(JsonlReader& reader, Parse parse, BadRecords* bad) {
  std::vector<Record> out;
  reader.for_each([&](const json& object, const RecordLocation& loc) {
    out.push_back(parse(object, loc));
  });
  if (bad) *bad = reader.bad_records();
  return out;
}

}  // namespace

std::vector<ChatMessage> SftRecord::conversation() const {
  if (is_chat()) return messages;
  return {{"user", prompt}, {"assistant", completion}};
}

TextRecord parse_text_record(const json& object, const RecordLocation& loc) {
  return {require_string(object, "text", loc)};
}

SftRecord parse_sft_record(const json& object, const RecordLocation& loc) {
  SftRecord r;
  bool has_messages = object.contains("messages");
  bool has_prompt = object.contains("prompt") || object.contains("completion");
  if (has_messages && has_prompt) {
    loc.fail("has both 'messages' and 'prompt'/'completion'; an SFT record holds one of them");
  }
  if (!has_messages) {
    if (!has_prompt) loc.fail("missing key 'prompt' (or 'messages')");
    r.prompt = require_string(object, "prompt", loc);
    r.completion = require_string(object, "completion", loc);
    return r;
  }
  const json& messages = object["messages"];
  if (!messages.is_array()) {
    loc.fail(std::string("key 'messages' must be an array, got ") + messages.type_name());
  }
  if (messages.empty()) loc.fail("key 'messages' is an empty array");
  bool has_assistant = false;
  for (size_t i = 0; i < messages.size(); ++i) {
    const json& m = messages[i];
    std::string where = "messages[" + std::to_string(i) + "].";
    if (!m.is_object()) {
      loc.fail("'messages[" + std::to_string(i) + "]' must be an object, got " + m.type_name());
    }
    ChatMessage msg{require_string(m, "role", loc, where), require_string(m, "content", loc, where)};
    if (msg.role != "system" && msg.role != "user" && msg.role != "assistant") {
      loc.fail("'" + where + "role' is '" + msg.role + "' (valid: system, user, assistant)");
    }
    if (msg.role == "system" && i != 0) loc.fail("'" + where + "role' system is only allowed first");
    has_assistant = has_assistant || msg.role == "assistant";
    r.messages.push_back(std::move(msg));
  }
  // With no assistant turn there is nothing to learn: the sample would only waste compute.
  if (!has_assistant) loc.fail("'messages' has no assistant turn (nothing to train on)");
  return r;
}

PreferenceRecord parse_preference_record(const json& object, const RecordLocation& loc) {
  PreferenceRecord r;
  r.prompt = require_string(object, "prompt", loc);
  r.chosen = require_string(object, "chosen", loc);
  r.rejected = require_string(object, "rejected", loc);
  r.user = optional_string(object, "user", loc);
  r.group = optional_string(object, "group", loc);
  if (auto it = object.find("margin"); it != object.end() && !it->is_null()) {
    if (!it->is_number()) loc.fail(std::string("key 'margin' must be a number, got ") + it->type_name());
    r.margin = it->get<double>();
    if (!std::isfinite(r.margin)) loc.fail("key 'margin' is not finite");
  }
  // An empty prompt is allowed: some data sets (Anthropic HH) keep the whole dialogue in the
  // responses.
  if (r.chosen.empty()) loc.fail("key 'chosen' is empty");
  if (r.rejected.empty()) loc.fail("key 'rejected' is empty");
  if (r.chosen == r.rejected) loc.fail("'chosen' and 'rejected' are identical (no preference)");
  return r;
}

GrapePool parse_grape_pool(const json& object, const RecordLocation& loc) {
  GrapePool pool;
  const json& id = require(object, "id", loc);
  if (id.is_string()) {
    pool.id = id.get<std::string>();
  } else if (id.is_number_integer()) {
    pool.id = id.dump();
  } else {
    loc.fail(std::string("key 'id' must be a string or an integer, got ") + id.type_name());
  }
  pool.instruction = require_string(object, "instruction", loc);
  const json& responses = require(object, "responses", loc);
  if (!responses.is_array()) {
    loc.fail(std::string("key 'responses' must be an array, got ") + responses.type_name());
  }
  if (responses.empty()) loc.fail("pool '" + pool.id + "' has no responses");
  for (size_t i = 0; i < responses.size(); ++i) {
    const json& r = responses[i];
    std::string where = "responses[" + std::to_string(i) + "].";
    if (!r.is_object()) {
      loc.fail("'responses[" + std::to_string(i) + "]' must be an object, got " + r.type_name());
    }
    GrapeResponse resp;
    resp.text = require_string(r, "text", loc, where);
    resp.source = optional_string(r, "source", loc, where);
    pool.responses.push_back(std::move(resp));
  }
  return pool;
}

// ---- UserIndex ------------------------------------------------------------------------------

int64_t UserIndex::add(const std::string& user) {
  auto [it, inserted] = index_.emplace(user, static_cast<int64_t>(names_.size()));
  if (inserted) names_.push_back(user);
  return it->second;
}

int64_t UserIndex::find(const std::string& user) const {
  auto it = index_.find(user);
  return it == index_.end() ? -1 : it->second;
}

json UserIndex::to_json() const { return names_; }

UserIndex UserIndex::from_json(const json& names) {
  CONCORD_CHECK(names.is_array(), "user index: expected an array of names, got ",
                names.type_name());
  UserIndex index;
  for (const auto& n : names) {
    CONCORD_CHECK(n.is_string(), "user index: expected string names, got ", n.type_name());
    int64_t before = index.size();
    index.add(n.get<std::string>());
    CONCORD_CHECK(index.size() == before + 1, "user index: name '", n.get<std::string>(),
                  "' appears twice");
  }
  return index;
}

// ---- readers --------------------------------------------------------------------------------

std::vector<TextRecord> read_text_records(const fs::path& path, const JsonlOptions& options,
                                          BadRecords* bad) {
  JsonlReader reader(path, options);
  return read_all<TextRecord>(reader, parse_text_record, bad);
}

std::vector<SftRecord> read_sft_records(const fs::path& path, const JsonlOptions& options,
                                        BadRecords* bad) {
  JsonlReader reader(path, options);
  return read_all<SftRecord>(reader, parse_sft_record, bad);
}

std::vector<SftRecord> read_sft_records(std::istream& in, const std::string& name,
                                        const JsonlOptions& options, BadRecords* bad) {
  JsonlReader reader(in, name, options);
  return read_all<SftRecord>(reader, parse_sft_record, bad);
}

std::vector<PreferenceRecord> read_preference_records(const fs::path& path,
                                                      const JsonlOptions& options, BadRecords* bad,
                                                      UserIndex* users, bool add_users,
                                                      bool require_user) {
  JsonlReader reader(path, options);
  UserIndex local;
  UserIndex& index = users ? *users : local;
  // Users are numbered only once their record is valid, so a skipped line never takes an id.
  return read_all<PreferenceRecord>(
      reader,
      [&](const json& object, const RecordLocation& loc) {
        PreferenceRecord r = parse_preference_record(object, loc);
        if (require_user && (!object.contains("user") || object["user"].is_null())) {
          loc.fail("no 'user' key (a mixture over users needs every pair's user)");
        }
        if (!add_users && index.find(r.user) < 0) {
          loc.fail("unknown user '" + r.user + "' (not among the " + std::to_string(index.size()) +
                   " known users)");
        }
        r.user_index = index.add(r.user);
        return r;
      },
      bad);
}

RecordKind record_kind_from_string(const std::string& name) {
  if (name == "text") return RecordKind::text;
  if (name == "sft") return RecordKind::sft;
  if (name == "preference") return RecordKind::preference;
  if (name == "grape_pool") return RecordKind::grape_pool;
  fail("unknown record kind '", name, "' (valid: text, sft, preference, grape_pool)");
}

int64_t validate_records(std::istream& in, const std::string& name, RecordKind kind,
                         const JsonlOptions& options, BadRecords* bad) {
  JsonlReader reader(in, name, options);
  int64_t good = reader.for_each([&](const json& object, const RecordLocation& loc) {
    switch (kind) {
      case RecordKind::text: parse_text_record(object, loc); break;
      case RecordKind::sft: parse_sft_record(object, loc); break;
      case RecordKind::preference: parse_preference_record(object, loc); break;
      case RecordKind::grape_pool: parse_grape_pool(object, loc); break;
    }
  });
  if (bad) *bad = reader.bad_records();
  return good;
}

}  // namespace concord::data
