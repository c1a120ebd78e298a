// concord_sentencepiece_shim: the C ABI of include/concord/text/sentencepiece_shim.h over
// libsentencepiece. Built as its own shared library that links libsentencepiece and never torch;
// SentencePieceTokenizer dlopen()s it (see the header for why).
#include "concord/text/sentencepiece_shim.h"

#include <sentencepiece_processor.h>

#include <algorithm>
#include <cstring>
#include <cstdint>
#include <exception>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

struct concord_spm {
  sentencepiece::SentencePieceProcessor processor;
};

namespace {

// ---- what libsentencepiece trusts in a .model file -------------------------------------------
// A normalizer's precompiled_charsmap (sentencepiece's normalizer.cc) is a uint32 size, a
// Darts-clone double-array trie of that many bytes, then the NUL-terminated replacement strings
// the trie's leaves point into. libsentencepiece follows the trie's offsets and leaf values
// without bounds checks, so a crafted charsmap made Normalizer::NormalizePrefix read outside the
// model (fuzz_sentencepiece found it in its first seconds). The shim reads the model's protobuf
// far enough to find both normalizer specs and walks every trie node an input could reach before
// libsentencepiece sees the file.

bool read_varint(const uint8_t*& p, const uint8_t* end, uint64_t& value) {
  value = 0;
  for (int shift = 0; shift < 64 && p < end; shift += 7) {
    const uint8_t byte = *p++;
    value |= static_cast<uint64_t>(byte & 0x7f) << shift;
    if (!(byte & 0x80)) return true;
  }
  return false;
}

// Calls fn(field number, bytes) for each length-delimited field of `message`; false when the
// wire format is broken (or uses groups, which no SentencePiece model does).
template <typename Fn>
bool for_each_bytes_field(std::string_view message, Fn&& fn) {
  auto p = reinterpret_cast<const uint8_t*>(message.data());
  const uint8_t* end = p + message.size();
  while (p < end) {
    uint64_t key = 0, n = 0;
    if (!read_varint(p, end, key)) return false;
    switch (key & 7) {
      case 0:
        if (!read_varint(p, end, n)) return false;
        break;
      case 1:
        if (end - p < 8) return false;
        p += 8;
        break;
      case 5:
        if (end - p < 4) return false;
        p += 4;
        break;
      case 2:
        if (!read_varint(p, end, n) || n > static_cast<uint64_t>(end - p)) return false;
        fn(key >> 3, std::string_view(reinterpret_cast<const char*>(p), static_cast<size_t>(n)));
        p += n;
        break;
      default:
        return false;
    }
  }
  return true;
}

// Checks a precompiled_charsmap as sentencepiece will read it; returns what is wrong, or "".
std::string check_charsmap(std::string_view blob) {
  if (blob.empty()) return "";  // no trie: the rules are off (identity)
  uint32_t trie_bytes = 0;
  if (blob.size() <= sizeof(trie_bytes)) return "shorter than its size field";
  std::memcpy(&trie_bytes, blob.data(), sizeof(trie_bytes));  // little-endian, as sentencepiece
  if (trie_bytes > blob.size() - sizeof(trie_bytes)) return "trie size past the end";
  const char* trie = blob.data() + sizeof(trie_bytes);
  const uint64_t units = trie_bytes / 4;
  const uint64_t strings = blob.size() - sizeof(trie_bytes) - trie_bytes;
  auto unit = [&](uint64_t i) {
    uint32_t u;
    std::memcpy(&u, trie + 4 * i, 4);
    return u;
  };
  // Darts-clone's unit layout (darts.h, DoubleArrayUnit).
  auto has_leaf = [](uint32_t u) { return ((u >> 8) & 1) != 0; };
  auto value = [](uint32_t u) { return u & 0x7fffffffu; };
  auto label = [](uint32_t u) { return u & (0x80000000u | 0xffu); };
  auto offset = [](uint32_t u) { return (u >> 10) << ((u & (1u << 9)) >> 6); };
  if (units == 0) return "empty trie";
  // A node at base b reads units b ^ c for every input byte c, so b | 0xff must lie in the
  // array, and a leaf's value must point into the strings. Darts-clone shares common suffixes
  // (the trie is a DAG), so nodes are visited once each, depth first; a node met again while it
  // is still open is a cycle, which no built trie has. sentencepiece keeps the prefix matches of
  // one input in a fixed array of 32, so no path may pass more leaves than that.
  constexpr int kMaxMatches = 32;
  struct Frame {
    uint64_t base;
    uint32_t next_byte;
    int most_leaves;   // the most leaves on a path from this node, over the children done
    int pending_leaf;  // whether the edge to the child being visited has a leaf
  };
  std::vector<uint8_t> state(units, 0);        // 0 unvisited, 1 open, 2 done
  std::vector<uint8_t> most_leaves(units, 0);  // of done nodes, capped at kMaxMatches + 1
  std::vector<Frame> stack;
  const uint64_t root = offset(unit(0));
  if ((root | 0xff) >= units) return "a trie offset points outside the trie";
  state[root] = 1;
  stack.push_back({root, 0, 0, 0});
  while (!stack.empty()) {
    Frame& f = stack.back();
    bool descended = false;
    while (f.next_byte < 256) {
      const uint32_t c = f.next_byte++;
      const uint32_t u = unit(f.base ^ c);
      if (label(u) != c) continue;
      const uint64_t child = (f.base ^ c) ^ offset(u);
      const int leaf = has_leaf(u) ? 1 : 0;
      if (leaf && (child >= units || value(unit(child)) >= strings)) {
        return "a trie leaf points outside the normalized strings";
      }
      if ((child | 0xff) >= units) return "a trie offset points outside the trie";
      if (state[child] == 1) return "the trie has a cycle";
      if (state[child] == 2) {
        f.most_leaves = std::max(f.most_leaves, leaf + most_leaves[child]);
        continue;
      }
      f.pending_leaf = leaf;
      state[child] = 1;
      stack.push_back({child, 0, 0, 0});  // invalidates f
      descended = true;
      break;
    }
    if (descended) continue;
    const Frame done = stack.back();
    stack.pop_back();
    state[done.base] = 2;
    most_leaves[done.base] = static_cast<uint8_t>(std::min(done.most_leaves, kMaxMatches + 1));
    if (!stack.empty()) {
      Frame& parent = stack.back();
      parent.most_leaves =
          std::max(parent.most_leaves, parent.pending_leaf + most_leaves[done.base]);
    }
  }
  if (most_leaves[root] > kMaxMatches) return "more than 32 rules match prefixes of one input";
  return "";
}

// What is wrong with the normalizer specs of a serialized ModelProto, or "". Protobuf merges a
// message field given twice and keeps the last value of a bytes field, so the charsmap checked
// is the last one given, as the parser will see it.
std::string check_model(std::string_view model) {
  // ModelProto: 3 = normalizer_spec, 5 = denormalizer_spec; NormalizerSpec: 2 = charsmap.
  std::string_view charsmap[2];
  bool specs_ok = true;
  const bool wire_ok = for_each_bytes_field(model, [&](uint64_t field, std::string_view bytes) {
    if (field != 3 && field != 5) return;
    std::string_view& slot = charsmap[field == 3 ? 0 : 1];
    specs_ok = specs_ok && for_each_bytes_field(bytes, [&](uint64_t f, std::string_view b) {
      if (f == 2) slot = b;
    });
  });
  if (!wire_ok || !specs_ok) return "not a SentencePiece model (broken protobuf)";
  for (int i = 0; i < 2; ++i) {
    const std::string why = check_charsmap(charsmap[i]);
    if (!why.empty()) {
      return std::string(i == 0 ? "normalizer" : "denormalizer") + " precompiled_charsmap: " + why;
    }
  }
  return "";
}

void copy_message(const std::string& message, char* err, size_t cap) {
  if (!err || cap == 0) return;
  const size_t n = std::min(message.size(), cap - 1);
  std::memcpy(err, message.data(), n);
  err[n] = '\0';
}
bool in_range(const concord_spm* spm, int32_t id) {
  return id >= 0 && id < spm->processor.GetPieceSize();
}
}  // namespace

extern "C" {

int32_t concord_spm_abi_version(void) { return CONCORD_SPM_SHIM_ABI; }

concord_spm* concord_spm_load(const char* path, char* err, size_t err_cap) {
  try {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
      copy_message("cannot open", err, err_cap);
      return nullptr;
    }
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (!in.good() && !in.eof()) {
      copy_message("cannot read", err, err_cap);
      return nullptr;
    }
    if (const std::string why = check_model(bytes); !why.empty()) {
      copy_message(why, err, err_cap);
      return nullptr;
    }
    // Owned until it loads: libsentencepiece throws on some models (std::exception below), and
    // the processor must not leak then (fuzz_sentencepiece's LeakSanitizer found it did).
    auto spm = std::make_unique<concord_spm>();
    const auto status = spm->processor.LoadFromSerializedProto(bytes);
    if (!status.ok()) {
      copy_message(status.ToString(), err, err_cap);
      return nullptr;
    }
    return spm.release();
  } catch (const std::exception& e) {
    copy_message(e.what(), err, err_cap);
    return nullptr;
  }
}

void concord_spm_free(concord_spm* spm) { delete spm; }

int64_t concord_spm_encode(const concord_spm* spm, const char* text, size_t len, int32_t* ids,
                           size_t cap) {
  try {
    std::vector<int> out;
    if (!spm->processor.Encode(std::string(text, len), &out).ok()) return -1;
    const size_t n = std::min(out.size(), cap);
    for (size_t i = 0; i < n; ++i) ids[i] = out[i];
    return static_cast<int64_t>(out.size());
  } catch (...) {
    return -1;
  }
}

int64_t concord_spm_decode(const concord_spm* spm, const int32_t* ids, size_t n, char* out,
                           size_t cap) {
  try {
    std::vector<int> in(ids, ids + n);
    for (int id : in) {
      if (!in_range(spm, id)) return -1;
    }
    std::string text;
    if (!spm->processor.Decode(in, &text).ok()) return -1;
    std::memcpy(out, text.data(), std::min(text.size(), cap));
    return static_cast<int64_t>(text.size());
  } catch (...) {
    return -1;
  }
}

int32_t concord_spm_piece_to_id(const concord_spm* spm, const char* piece, size_t len) {
  return spm->processor.PieceToId(std::string(piece, len));
}

int64_t concord_spm_id_to_piece(const concord_spm* spm, int32_t id, char* out, size_t cap) {
  if (!in_range(spm, id)) return -1;
  const std::string& piece = spm->processor.IdToPiece(id);
  std::memcpy(out, piece.data(), std::min(piece.size(), cap));
  return static_cast<int64_t>(piece.size());
}

int32_t concord_spm_vocab_size(const concord_spm* spm) { return spm->processor.GetPieceSize(); }
int32_t concord_spm_bos_id(const concord_spm* spm) { return spm->processor.bos_id(); }
int32_t concord_spm_eos_id(const concord_spm* spm) { return spm->processor.eos_id(); }
int32_t concord_spm_pad_id(const concord_spm* spm) { return spm->processor.pad_id(); }
int32_t concord_spm_unk_id(const concord_spm* spm) { return spm->processor.unk_id(); }
int32_t concord_spm_is_control(const concord_spm* spm, int32_t id) {
  return in_range(spm, id) && spm->processor.IsControl(id) ? 1 : 0;
}

}  // extern "C"
