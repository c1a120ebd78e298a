#include "concord/grape/synthetic_pool.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <map>
#include <unordered_set>

#include "concord/core/error.h"
#include "random.h"

using nlohmann::json;

namespace concord::grape {

using detail::below;

json SyntheticItem::to_json() const {
  return {{"id", id}, {"task", task}, {"instruction", instruction}, {"answer", answer}};
}

json SyntheticPoolOptions::to_json() const {
  return {{"train_instructions", train_instructions},
          {"heldout_instructions", heldout_instructions},
          {"tasks", tasks.empty() ? synthetic_tasks() : tasks},
          {"sources", sources.empty() ? synthetic_sources() : sources},
          {"shuffle_responses", shuffle_responses},
          {"pretraining_documents", pretraining_documents},
          {"facts_per_document", facts_per_document},
          {"pretraining_styles", pretraining_styles},
          {"pretraining_line_breaks", pretraining_line_breaks},
          {"seed", seed}};
}

const std::vector<std::string>& synthetic_tasks() {
  static const std::vector<std::string> t = {"add", "subtract", "multiply", "reverse", "upper", "lower", "count"};
  return t;
}

const std::vector<std::string>& synthetic_sources() {
  static const std::vector<std::string> s = {"terse", "sentence", "steps", "base_style"};
  return s;
}

namespace {

// Letters of the words: few enough that "count" often finds repeats.
constexpr const char kLetters[] = "abcdeilmnorstu";

std::string join_list(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

void check_known(const std::string& what, const std::string& name,
                 const std::vector<std::string>& valid) {
  if (std::find(valid.begin(), valid.end(), name) == valid.end()) {
    fail("unknown synthetic ", what, " '", name, "' (valid: ", join_list(valid), ")");
  }
}

int64_t between(std::mt19937_64& rng, int64_t lo, int64_t hi) {  // inclusive
  return lo + static_cast<int64_t>(below(rng, static_cast<uint64_t>(hi - lo + 1)));
}

std::string word(std::mt19937_64& rng, int64_t min_len, int64_t max_len) {
  const int64_t n = between(rng, min_len, max_len);
  std::string w;
  for (int64_t i = 0; i < n; ++i) w.push_back(kLetters[below(rng, sizeof(kLetters) - 1)]);
  return w;
}

std::string upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

SyntheticItem draw_item(std::mt19937_64& rng, const std::string& task) {
  SyntheticItem it;
  it.task = task;
  if (task == "add" || task == "subtract" || task == "multiply") {
    int64_t a, b, ans;
    if (task == "multiply") {
      a = between(rng, 2, 12);
      b = between(rng, 2, 12);
      ans = a * b;
    } else {
      a = between(rng, 0, 99);
      b = between(rng, 0, 99);
      if (task == "subtract" && b > a) std::swap(a, b);  // answers stay non-negative
      ans = task == "add" ? a + b : a - b;
    }
    const char* op = task == "add" ? "plus" : task == "subtract" ? "minus" : "times";
    it.instruction = "What is " + std::to_string(a) + " " + op + " " + std::to_string(b) + "?";
    it.answer = std::to_string(ans);
  } else if (task == "reverse") {
    const std::string w = word(rng, 3, 7);
    it.instruction = "Reverse the word '" + w + "'.";
    it.answer = std::string(w.rbegin(), w.rend());
  } else if (task == "upper") {
    const std::string w = word(rng, 3, 7);
    it.instruction = "Write '" + w + "' in capital letters.";
    it.answer = upper(w);
  } else if (task == "lower") {
    const std::string w = upper(word(rng, 3, 7));
    it.instruction = "Write '" + w + "' in small letters.";
    it.answer = lower(w);
  } else {
    const std::string w = word(rng, 5, 9);
    // Mostly a letter of the word (counts of 1, 2, 3...), sometimes any letter (often 0).
    const char c = below(rng, 4) != 0 ? w[below(rng, w.size())] : kLetters[below(rng, sizeof(kLetters) - 1)];
    it.instruction = std::string("How many times does the letter '") + c + "' appear in '" + w + "'?";
    it.answer = std::to_string(std::count(w.begin(), w.end(), c));
  }
  return it;
}

// The quoted word and letter of an instruction ("... 'plant' ..."), for the worked solutions.
std::vector<std::string> quoted(const std::string& s) {
  std::vector<std::string> out;
  size_t at = 0;
  while ((at = s.find('\'', at)) != std::string::npos) {
    const size_t end = s.find('\'', at + 1);
    if (end == std::string::npos) break;
    out.push_back(s.substr(at + 1, end - at - 1));
    at = end + 1;
  }
  return out;
}

std::vector<int64_t> numbers(const std::string& s) {
  std::vector<int64_t> out;
  for (size_t i = 0; i < s.size();) {
    if (std::isdigit(static_cast<unsigned char>(s[i]))) {
      size_t j = i;
      while (j < s.size() && std::isdigit(static_cast<unsigned char>(s[j]))) ++j;
      out.push_back(std::stoll(s.substr(i, j - i)));
      i = j;
    } else {
      ++i;
    }
  }
  return out;
}

std::string spelled(const std::string& w) {
  std::string out;
  for (char c : w) out += std::string(out.empty() ? "" : ", ") + c;
  return out;
}

std::string worked_solution(const SyntheticItem& item) {
  const std::string end = "The answer is " + item.answer + ".";
  if (item.task == "add" || item.task == "subtract" || item.task == "multiply") {
    const auto n = numbers(item.instruction);
    const std::string a = std::to_string(n.at(0)), b = std::to_string(n.at(1));
    if (item.task == "add") return "We add " + a + " and " + b + ".\n" + a + " + " + b + " = " + item.answer + ".\n" + end;
    if (item.task == "subtract") return "We take " + b + " away from " + a + ".\n" + a + " - " + b + " = " + item.answer + ".\n" + end;
    return "We multiply " + a + " by " + b + ".\n" + a + " x " + b + " = " + item.answer + ".\n" + end;
  }
  const auto q = quoted(item.instruction);
  if (item.task == "reverse") {
    return "The letters of " + q.at(0) + " are " + spelled(q.at(0)) + ".\nFrom the last to the first they are " +
           spelled(item.answer) + ".\n" + end;
  }
  if (item.task == "upper" || item.task == "lower") {
    return "The letters of " + q.at(0) + " are " + spelled(q.at(0)) + ".\nAs " +
           (item.task == "upper" ? "capitals" : "small letters") + " they are " + spelled(item.answer) +
           ".\n" + end;
  }
  // count: q = {letter, word}
  return "The letters of " + q.at(1) + " are " + spelled(q.at(1)) + ".\nThe letter " + q.at(0) +
         " is there " + item.answer + (item.answer == "1" ? " time" : " times") + ".\n" + end;
}

std::string base_style(const SyntheticItem& item) { return "So the result is " + item.answer + "."; }

}  // namespace

std::string synthetic_response(const SyntheticItem& item, const std::string& source) {
  check_known("source", source, synthetic_sources());
  check_known("task", item.task, synthetic_tasks());
  if (source == "terse") return item.answer;
  if (source == "sentence") return "The answer is " + item.answer + ".";
  if (source == "steps") return worked_solution(item);
  return base_style(item);
}

SyntheticPool make_synthetic_pool(const SyntheticPoolOptions& options) {
  CONCORD_CHECK(options.train_instructions >= 0 && options.heldout_instructions >= 0,
                "synthetic pool: instruction counts must be >= 0, got ", options.train_instructions,
                " and ", options.heldout_instructions);
  CONCORD_CHECK(options.pretraining_documents >= 0 && options.facts_per_document >= 1,
                "synthetic pool: pretraining_documents must be >= 0 and facts_per_document >= 1");
  CONCORD_CHECK(options.pretraining_line_breaks >= 0.0 && options.pretraining_line_breaks <= 1.0,
                "synthetic pool: pretraining_line_breaks must lie in [0, 1], got ",
                options.pretraining_line_breaks);
  const auto tasks = options.tasks.empty() ? synthetic_tasks() : options.tasks;
  const auto sources = options.sources.empty() ? synthetic_sources() : options.sources;
  for (const auto& t : tasks) check_known("task", t, synthetic_tasks());
  for (const auto& s : sources) check_known("source", s, synthetic_sources());
  for (const auto& [task, style] : options.pretraining_styles) {
    check_known("task", task, synthetic_tasks());
    CONCORD_CHECK(style != "steps", "synthetic pool: pretraining_styles.", task,
                  ": 'steps' spans several lines; a pretraining fact is one line (terse, sentence "
                  "or base_style)");
    check_known("source", style, synthetic_sources());
  }
  const auto style_of = [&](const std::string& task) {
    const auto it = options.pretraining_styles.find(task);
    return it == options.pretraining_styles.end() ? std::string("base_style") : it->second;
  };

  // Separate streams, so changing one count leaves the other parts as they were: held-out
  // instructions do not move when the training set grows.
  std::mt19937_64 heldout_rng(detail::mix(options.seed ^ 0x1)),
      train_rng(detail::mix(options.seed ^ 0x2)), shuffle_rng(detail::mix(options.seed ^ 0x3)),
      pretrain_rng(detail::mix(options.seed ^ 0x4)), layout_rng(detail::mix(options.seed ^ 0x5));
  std::unordered_set<std::string> seen, heldout_set;
  auto draw_unique = [&](std::mt19937_64& rng, int64_t count, const std::string& prefix,
                         std::vector<SyntheticItem>& out) {
    const int64_t max_attempts = 100 * count + 1000;
    int64_t attempts = 0;
    while (static_cast<int64_t>(out.size()) < count) {
      CONCORD_CHECK(++attempts <= max_attempts, "synthetic pool: could not draw ", count, " distinct ",
                    prefix, " instructions from the tasks ", join_list(tasks),
                    " (too few possible instructions; add tasks or ask for fewer)");
      SyntheticItem it = draw_item(rng, tasks[below(rng, tasks.size())]);
      if (!seen.insert(it.instruction).second) continue;
      char id[32];
      std::snprintf(id, sizeof(id), "%s-%05lld", prefix.c_str(), static_cast<long long>(out.size() + 1));
      it.id = id;
      out.push_back(std::move(it));
    }
  };
  SyntheticPool pool;
  draw_unique(heldout_rng, options.heldout_instructions, "heldout", pool.heldout);
  for (const auto& it : pool.heldout) heldout_set.insert(it.instruction);
  draw_unique(train_rng, options.train_instructions, "train", pool.train_items);

  for (const auto& it : pool.train_items) {
    data::GrapePool p;
    p.id = it.id;
    p.instruction = it.instruction;
    for (const auto& s : sources) p.responses.push_back({synthetic_response(it, s), s, {}});
    if (options.shuffle_responses) {
      for (size_t i = p.responses.size(); i > 1; --i) {
        std::swap(p.responses[i - 1], p.responses[below(shuffle_rng, i)]);
      }
    }
    pool.train.push_back(std::move(p));
  }

  for (int64_t d = 0; d < options.pretraining_documents; ++d) {
    std::string doc;
    for (int64_t f = 0; f < options.facts_per_document;) {
      const SyntheticItem it = draw_item(pretrain_rng, tasks[below(pretrain_rng, tasks.size())]);
      if (heldout_set.count(it.instruction)) continue;  // the evaluation stays unseen
      const char* gap = detail::unit_interval(layout_rng) < options.pretraining_line_breaks ? "\n" : " ";
      doc += (doc.empty() ? "" : "\n") + it.instruction + gap + synthetic_response(it, style_of(it.task));
      ++f;
    }
    pool.pretraining.push_back(std::move(doc));
  }
  return pool;
}

namespace {

std::string trim(const std::string& s) {
  const size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t\r\n") - b + 1);
}

bool parse_integer(const std::string& s, int64_t& out) {
  if (s.empty() || s.size() > 18) return false;
  size_t i = s[0] == '-' ? 1 : 0;
  if (i == s.size()) return false;
  for (size_t j = i; j < s.size(); ++j) {
    if (!std::isdigit(static_cast<unsigned char>(s[j]))) return false;
  }
  out = std::stoll(s);
  return true;
}

}  // namespace

std::string extract_synthetic_answer(const std::string& output) {
  std::string found;
  size_t best = std::string::npos, marker_len = 0;
  for (const char* marker : {"answer is ", "result is "}) {
    const size_t at = output.find(marker);
    if (at != std::string::npos && (best == std::string::npos || at < best)) {
      best = at;
      marker_len = std::char_traits<char>::length(marker);
    }
  }
  if (best != std::string::npos) {
    const size_t from = best + marker_len;
    const size_t to = output.find_first_of(".,\n", from);
    found = output.substr(from, to == std::string::npos ? std::string::npos : to - from);
  } else {
    size_t from = 0;
    while (from <= output.size()) {
      const size_t to = output.find('\n', from);
      const std::string line = trim(output.substr(from, to == std::string::npos ? std::string::npos : to - from));
      if (!line.empty()) {
        found = line;
        break;
      }
      if (to == std::string::npos) break;
      from = to + 1;
    }
  }
  found = trim(found);
  if (!found.empty() && found.back() == '.') found.pop_back();
  return trim(found);
}

double constant_answer_accuracy(const std::vector<SyntheticItem>& items) {
  if (items.empty()) return 0;
  std::map<std::string, int64_t> counts;
  int64_t best = 0;
  for (const auto& it : items) best = std::max(best, ++counts[it.answer]);
  return 100.0 * static_cast<double>(best) / static_cast<double>(items.size());
}

bool verify_synthetic_answer(const SyntheticItem& item, const std::string& output) {
  const std::string got = extract_synthetic_answer(output);
  int64_t expected = 0, value = 0;
  if (parse_integer(item.answer, expected)) return parse_integer(got, value) && value == expected;
  return got == item.answer;
}

}  // namespace concord::grape
