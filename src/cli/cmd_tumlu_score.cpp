// `concord tumlu-score DIR [--extractor official|robust]`: re-grades stored TUMLU generations in
// the benchmark's layout (DIR/<language>/outputs/<protocol>/<model>/<Subject>.json, written by
// Concord or by the benchmark's own scripts) and prints, for every model found, the per-language
// table (headline subjects, unweighted mean over subjects), the per-script table and 95%
// bootstrap intervals of the native-language mean.
#include <filesystem>
#include <iostream>

#include "commands.h"
#include "concord/core/error.h"
#include "concord/core/report.h"
#include "concord/eval/answer_extraction.h"
#include "concord/eval/tumlu_report.h"

namespace concord::cli {

int cmd_tumlu_score(const TumluScoreArgs& args) {
  CONCORD_CHECK(std::filesystem::is_directory(args.outputs_dir), args.outputs_dir,
                ": not a folder");
  eval::answer_extractors().get(args.extractor);  // an unknown name lists the valid ones
  eval::ReportOptions options;
  options.headline_only = !args.all_subjects;
  const auto models = eval::score_outputs_folder(args.outputs_dir, args.extractor, options);

  std::cout << "TUMLU-mini accuracy (%), "
            << (args.all_subjects ? "all subjects" : "headline subjects")
            << ", unweighted mean over subjects, "
            << "extractor: " << args.extractor << "\n\n"
            << eval::markdown_language_table(models) << "\n"
            << eval::markdown_script_table(models) << "\n";
  for (const auto& m : models) {
    int64_t n = 0, extracted = 0;
    for (const auto& l : m.languages) {
      for (const auto& s : l.subjects) {
        n += s.n;
        extracted += s.extracted;
      }
    }
    std::cout << m.model << " (" << m.protocol << "): native mean "
              << (m.native_mean ? fixed(*m.native_mean) : std::string("-")) << " [95% CI "
              << fixed(m.native_ci.low) << ", " << fixed(m.native_ci.high) << "] over "
              << m.native_languages << " native languages; answers read in " << extracted << "/"
              << n << " items\n";
  }
  if (!args.out_dir.empty()) {
    eval::write_tumlu_report(args.out_dir, models, options, args.extractor);
    std::cout << "report: " << (std::filesystem::path(args.out_dir) / "report.md").string() << "\n";
  }
  return 0;
}

}  // namespace concord::cli
