#include "concord/tasks/text_input.h"

#include "concord/data/jsonl.h"

namespace concord::tasks {

std::vector<std::string> read_jsonl_texts(const std::string& path, int64_t limit) {
  std::vector<std::string> texts;
  data::JsonlReader reader(path);
  nlohmann::json record;
  while ((limit == 0 || static_cast<int64_t>(texts.size()) < limit) && reader.next(record)) {
    auto it = record.find("text");
    if (it == record.end() || !it->is_string()) {
      reader.location().fail("expected a string field \"text\"");
    }
    texts.push_back(it->get<std::string>());
  }
  return texts;
}

}  // namespace concord::tasks
