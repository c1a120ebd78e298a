#include "concord/grape/select.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "concord/core/error.h"
#include "concord/core/plot.h"
#include "concord/core/report.h"
#include "concord/data/jsonl.h"
#include "random.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace concord::grape {

json SelectOptions::to_json() const { return select_options_schema().to_json(*this); }

const OptionsSchema<SelectOptions>& select_options_schema() {
  static const OptionsSchema<SelectOptions> schema = [] {
    OptionsSchema<SelectOptions> s("GRAPE selection");
    s.field("mode", &SelectOptions::mode, "selection: " + selection_modes().joined_names(),
            opt::one_of(selection_modes().names()))
        .field("top_k", &SelectOptions::top_k,
               "responses kept per instruction (grape, reverse, random, longest)", opt::at_least(1))
        .field("source", &SelectOptions::source, "the source kept by mode 'source'")
        .field("seed", &SelectOptions::seed, "seed of mode 'random'");
    return s;
  }();
  return schema;
}

namespace {

size_t keep_count(const SelectOptions& o, size_t available) {
  return std::min(available, static_cast<size_t>(o.top_k));
}

// Eligible candidates ordered by score, best first when `descending`; ties keep pool order.
std::vector<size_t> by_score(const PoolScores& scores, std::vector<size_t> eligible,
                             bool descending) {
  std::stable_sort(eligible.begin(), eligible.end(), [&](size_t a, size_t b) {
    const double sa = scores.candidates[a].score, sb = scores.candidates[b].score;
    return descending ? sa > sb : sa < sb;
  });
  return eligible;
}

using detail::below;
using detail::fnv1a;
using detail::mix;

Registry<SelectionMode> build_modes() {
  Registry<SelectionMode> r("GRAPE selection mode");
  r.add("grape", [](const data::GrapePool&, const PoolScores& s, const std::vector<size_t>& e,
                    const SelectOptions& o) {
    auto order = by_score(s, e, /*descending=*/true);
    order.resize(keep_count(o, order.size()));
    return order;
  });
  r.add("reverse", [](const data::GrapePool&, const PoolScores& s, const std::vector<size_t>& e,
                      const SelectOptions& o) {
    auto order = by_score(s, e, /*descending=*/false);
    order.resize(keep_count(o, order.size()));
    return order;
  });
  r.add("random", [](const data::GrapePool& pool, const PoolScores&, const std::vector<size_t>& e,
                     const SelectOptions& o) {
    std::mt19937_64 rng(mix(o.seed ^ mix(fnv1a(pool.id))));
    std::vector<size_t> order = e;
    const size_t k = keep_count(o, order.size());
    // Partial Fisher-Yates: the first k places get a uniform sample without replacement.
    for (size_t i = 0; i < k; ++i) {
      const size_t j = i + static_cast<size_t>(below(rng, order.size() - i));
      std::swap(order[i], order[j]);
    }
    order.resize(k);
    return order;
  });
  r.add("longest", [](const data::GrapePool&, const PoolScores& s, const std::vector<size_t>& e,
                      const SelectOptions& o) {
    std::vector<size_t> order = e;
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      return s.candidates[a].response_tokens > s.candidates[b].response_tokens;
    });
    order.resize(keep_count(o, order.size()));
    return order;
  });
  r.add("source", [](const data::GrapePool& pool, const PoolScores&, const std::vector<size_t>& e,
                     const SelectOptions& o) {
    std::vector<size_t> out;
    for (size_t i : e) {
      if (pool.responses[i].source == o.source) out.push_back(i);
    }
    return out;
  });
  r.add("all", [](const data::GrapePool&, const PoolScores&, const std::vector<size_t>& e,
                  const SelectOptions&) { return e; });
  return r;
}

}  // namespace

const Registry<SelectionMode>& selection_modes() {
  static const Registry<SelectionMode> modes = build_modes();
  return modes;
}

namespace {

void check_matching(const std::vector<data::GrapePool>& pools,
                    const std::vector<PoolScores>& scores) {
  CONCORD_CHECK(pools.size() == scores.size(), "grape selection: ", pools.size(),
                " pools but scores for ", scores.size(),
                " (merge every rank's part before selecting)");
  for (size_t i = 0; i < pools.size(); ++i) {
    CONCORD_CHECK(scores[i].id == pools[i].id && scores[i].candidates.size() == pools[i].responses.size(),
                  "grape selection: the scores of pool ", i, " ('", scores[i].id, "', ",
                  scores[i].candidates.size(), " candidates) do not match the pool ('",
                  pools[i].id, "', ", pools[i].responses.size(), " responses)");
  }
}

std::vector<size_t> eligible_of(const PoolScores& s) {
  std::vector<size_t> out;
  for (size_t j = 0; j < s.candidates.size(); ++j) {
    if (s.candidates[j].has_score()) out.push_back(j);
  }
  return out;
}

}  // namespace

std::vector<Selection> select_responses(const std::vector<data::GrapePool>& pools,
                                        const std::vector<PoolScores>& scores,
                                        const SelectOptions& options) {
  const SelectionMode& mode = selection_modes().get(options.mode);
  CONCORD_CHECK(options.top_k >= 1, "grape selection: top_k must be >= 1, got ", options.top_k);
  CONCORD_CHECK(options.mode != "source" || !options.source.empty(),
                "grape selection: mode 'source' needs the name of a source");
  check_matching(pools, scores);
  std::vector<Selection> out;
  for (size_t i = 0; i < pools.size(); ++i) {
    const auto eligible = eligible_of(scores[i]);
    if (eligible.empty()) continue;
    const auto chosen = mode(pools[i], scores[i], eligible, options);
    for (size_t r = 0; r < chosen.size(); ++r) {
      CONCORD_CHECK(chosen[r] < pools[i].responses.size() && scores[i].candidates[chosen[r]].has_score(),
                    "grape selection mode '", options.mode, "' chose candidate ", chosen[r],
                    " of pool '", pools[i].id, "', which is not eligible");
      out.push_back({i, chosen[r], static_cast<int64_t>(r)});
    }
  }
  return out;
}

json selection_to_json(const data::GrapePool& pool, const PoolScores& scores,
                       const Selection& selection) {
  const auto& response = pool.responses[selection.candidate];
  const auto& c = scores.candidates[selection.candidate];
  return {{"prompt", pool.instruction},
          {"completion", response.text},
          {"id", pool.id},
          {"instruction", pool.instruction},
          {"response", response.text},
          {"source", response.source},
          {"score", c.has_score() ? json(c.score) : json(nullptr)},
          {"response_tokens", c.response_tokens},
          {"rank", selection.rank}};
}

void write_selected_jsonl(const fs::path& path, const std::vector<data::GrapePool>& pools,
                          const std::vector<PoolScores>& scores,
                          const std::vector<Selection>& selections) {
  check_matching(pools, scores);
  std::vector<json> lines;
  lines.reserve(selections.size());
  for (const auto& s : selections) {
    lines.push_back(selection_to_json(pools[s.pool], scores[s.pool], s));
  }
  data::write_jsonl(path, lines);
}

// ---- report ------------------------------------------------------------------------------------

namespace {

// Linear interpolation between order statistics (numpy's default "linear" quantile).
double quantile(const std::vector<double>& sorted, double q) {
  const double pos = q * static_cast<double>(sorted.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(pos));
  const size_t hi = std::min(sorted.size() - 1, lo + 1);
  return sorted[lo] + (pos - static_cast<double>(lo)) * (sorted[hi] - sorted[lo]);
}

}  // namespace

ScoreSummary ScoreSummary::of(std::vector<double> values) {
  ScoreSummary s;
  s.count = static_cast<int64_t>(values.size());
  if (values.empty()) return s;
  std::sort(values.begin(), values.end());
  const double n = static_cast<double>(values.size());
  s.mean = std::accumulate(values.begin(), values.end(), 0.0) / n;
  double ss = 0.0;
  for (double v : values) ss += (v - s.mean) * (v - s.mean);
  s.stddev = values.size() > 1 ? std::sqrt(ss / (n - 1.0)) : 0.0;
  s.min = values.front();
  s.max = values.back();
  s.q25 = quantile(values, 0.25);
  s.median = quantile(values, 0.5);
  s.q75 = quantile(values, 0.75);
  return s;
}

json ScoreSummary::to_json() const {
  return {{"count", count}, {"mean", mean}, {"stddev", stddev}, {"min", min},
          {"q25", q25},     {"median", median}, {"q75", q75},   {"max", max}};
}

SelectionReport make_selection_report(const std::vector<data::GrapePool>& pools,
                                      const std::vector<PoolScores>& scores,
                                      const std::vector<Selection>& selections,
                                      const SelectOptions& options, int bins) {
  check_matching(pools, scores);
  CONCORD_CHECK(bins >= 1, "make_selection_report: bins must be >= 1, got ", bins);
  SelectionReport r;
  r.mode = options.mode;
  r.top_k = options.top_k;
  r.pools = static_cast<int64_t>(pools.size());
  r.selected = static_cast<int64_t>(selections.size());
  r.stats = summarize(scores);

  std::vector<double> all, chosen;
  std::map<std::string, std::vector<double>> per_source;
  for (size_t i = 0; i < pools.size(); ++i) {
    int64_t best = -1;
    for (size_t j = 0; j < pools[i].responses.size(); ++j) {
      const auto& c = scores[i].candidates[j];
      auto& row = r.sources[pools[i].responses[j].source];
      ++row.candidates;
      if (!c.has_score()) continue;
      ++row.scored;
      all.push_back(c.score);
      per_source[pools[i].responses[j].source].push_back(c.score);
      if (best < 0 || c.score > scores[i].candidates[static_cast<size_t>(best)].score) {
        best = static_cast<int64_t>(j);
      }
    }
    if (best >= 0) ++r.sources[pools[i].responses[static_cast<size_t>(best)].source].best;
  }
  std::vector<bool> pool_selected(pools.size(), false);
  for (const auto& s : selections) {
    ++r.sources[pools[s.pool].responses[s.candidate].source].wins;
    chosen.push_back(scores[s.pool].candidates[s.candidate].score);
    pool_selected[s.pool] = true;
  }
  r.pools_selected = std::count(pool_selected.begin(), pool_selected.end(), true);
  r.pools_without = r.pools - r.pools_selected;
  for (auto& [name, values] : per_source) r.sources[name].scores = ScoreSummary::of(values);
  r.all_scores = ScoreSummary::of(all);
  r.selected_scores = ScoreSummary::of(chosen);

  if (!all.empty()) {
    double lo = r.all_scores.min, hi = r.all_scores.max;
    if (hi <= lo) hi = lo + 1.0;  // one distinct value: a single non-empty bin
    r.edges.resize(static_cast<size_t>(bins) + 1);
    for (int b = 0; b <= bins; ++b) r.edges[static_cast<size_t>(b)] = lo + (hi - lo) * b / bins;
    auto bin_of = [&](double v) {
      const int b = static_cast<int>(std::floor((v - lo) / (hi - lo) * bins));
      return static_cast<size_t>(std::clamp(b, 0, bins - 1));
    };
    r.all_hist.assign(static_cast<size_t>(bins), 0);
    r.selected_hist.assign(static_cast<size_t>(bins), 0);
    for (double v : all) ++r.all_hist[bin_of(v)];
    for (double v : chosen) ++r.selected_hist[bin_of(v)];
  }
  return r;
}

json SelectionReport::to_json() const {
  json src = json::object();
  for (const auto& [name, row] : sources) {
    src[name] = {{"candidates", row.candidates}, {"scored", row.scored}, {"wins", row.wins},
                 {"best", row.best}, {"scores", row.scores.to_json()}};
  }
  return {{"mode", mode},
          {"top_k", top_k},
          {"pools", pools},
          {"pools_selected", pools_selected},
          {"pools_without", pools_without},
          {"selected", selected},
          {"scoring", stats.to_json()},
          {"sources", src},
          {"all_scores", all_scores.to_json()},
          {"selected_scores", selected_scores.to_json()},
          {"histogram", {{"edges", edges}, {"all", all_hist}, {"selected", selected_hist}}}};
}

namespace {

std::string percent(int64_t part, int64_t whole) {
  return whole > 0 ? fixed(100.0 * static_cast<double>(part) / static_cast<double>(whole), 1) + "%"
                   : "-";
}

std::vector<std::string> summary_cells(const std::string& label, const ScoreSummary& s) {
  if (s.count == 0) return {label, "0", "-", "-", "-", "-", "-", "-"};
  return {label,           std::to_string(s.count), fixed(s.mean, 4), fixed(s.stddev, 4),
          fixed(s.min, 4), fixed(s.q25, 4),         fixed(s.median, 4), fixed(s.max, 4)};
}

}  // namespace

void SelectionReport::add_to(Report& report) const {
  std::string intro = "Mode `" + mode + "`" +
                      (top_k > 1 ? " (top " + std::to_string(top_k) + ")" : "") + ": " +
                      std::to_string(selected) + " responses kept from " +
                      std::to_string(pools_selected) + " of " + std::to_string(pools) + " pools";
  if (pools_without > 0) intro += "; " + std::to_string(pools_without) + " pools had nothing to keep";
  report.paragraph(intro + ".");
  int64_t scored_pools = 0;
  for (const auto& [name, row] : sources) scored_pools += row.best;
  std::vector<std::vector<std::string>> rows;
  for (const auto& [name, row] : sources) {
    rows.push_back({name.empty() ? "(none)" : name, std::to_string(row.candidates),
                    std::to_string(row.scored), std::to_string(row.wins),
                    percent(row.wins, selected), std::to_string(row.best),
                    percent(row.best, scored_pools),
                    row.scores.count ? fixed(row.scores.mean, 4) : "-",
                    row.scores.count ? fixed(row.scores.median, 4) : "-"});
  }
  report.paragraph("Sources (kept: chosen by this mode; best: the highest-scored candidate of "
                   "its pool, what mode `grape` keeps):")
      .table({"source", "candidates", "scored", "kept", "kept %", "best", "best %", "mean score",
              "median score"},
             rows)
      .paragraph("Scores s(x, y), the mean log-probability per response token:")
      .table({"set", "count", "mean", "std", "min", "q25", "median", "max"},
             {summary_cells("all scored candidates", all_scores),
              summary_cells("kept", selected_scores)})
      .paragraph("Candidates:")
      .table({"candidates", "scored", "deduplicated (scored once)", "skipped: too long",
              "skipped: empty", "response tokens run", "prompt tokens run"},
             {{std::to_string(stats.candidates), std::to_string(stats.scored),
               std::to_string(stats.deduplicated), std::to_string(stats.skipped_too_long),
               std::to_string(stats.skipped_empty), std::to_string(stats.response_tokens),
               std::to_string(stats.prompt_tokens)}});
}

std::vector<std::pair<std::string, std::string>> SelectionReport::write_charts(
    const fs::path& run_dir) const {
  std::vector<std::pair<std::string, std::string>> out;
  std::vector<std::string> labels;
  std::vector<double> kept, best;
  for (const auto& [name, row] : sources) {
    labels.push_back(name.empty() ? "(none)" : name);
    kept.push_back(static_cast<double>(row.wins));
    best.push_back(static_cast<double>(row.best));
  }
  if (!labels.empty()) {
    plot_bars(run_dir / "charts" / "grape_kept_by_source.png",
              {"responses kept per source (mode " + mode + ")", "source", "responses"}, labels,
              kept);
    out.emplace_back("responses kept per source", "charts/grape_kept_by_source.png");
    plot_bars(run_dir / "charts" / "grape_best_by_source.png",
              {"highest-scored candidate per pool, by source", "source", "pools"}, labels, best);
    out.emplace_back("highest-scored candidate by source", "charts/grape_best_by_source.png");
  }
  if (!edges.empty()) {
    Series a{"all scored", {}, {}}, s{"kept", {}, {}};
    for (size_t b = 0; b + 1 < edges.size(); ++b) {
      const double centre = 0.5 * (edges[b] + edges[b + 1]);
      a.x.push_back(centre);
      a.y.push_back(static_cast<double>(all_hist[b]));
      s.x.push_back(centre);
      s.y.push_back(static_cast<double>(selected_hist[b]));
    }
    plot_lines(run_dir / "charts" / "grape_score_histogram.png",
               {"scores s(x, y)", "mean log-prob per response token", "candidates"}, {a, s});
    out.emplace_back("score histogram", "charts/grape_score_histogram.png");
  }
  return out;
}

}  // namespace concord::grape
