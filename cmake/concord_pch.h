// The one precompiled header every Concord target reuses (see cmake/ConcordTargets.cmake).
// It holds the heavy, stable headers: LibTorch and the foundation's third-party libraries.
#pragma once
#include <torch/torch.h>
#include <nlohmann/json.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>
