// Text from fortune(6) files (Debian package `fortunes`: /usr/share/games/fortunes), an English
// corpus that any Debian machine can install offline-friendly from its mirror: each file holds
// entries separated by lines that are a single '%'. Concord's PanGu-π ablation trains on it.
#pragma once
#include <filesystem>
#include <string>
#include <vector>

namespace concord::data {

/// The entries of a fortune file, or of every fortune file in a folder (plain files without an
/// extension, in name order; the .dat indexes and .u8 links are skipped). Entries are trimmed
/// of surrounding blank lines; empty ones are dropped. A path that does not exist, or a folder
/// without fortune files, throws naming it.
std::vector<std::string> read_fortunes(const std::filesystem::path& path);

}  // namespace concord::data
