// concord_sentencepiece_shim: the C ABI of include/concord/text/sentencepiece_shim.h over
// libsentencepiece. Built as its own shared library that links libsentencepiece and never torch;
// SentencePieceTokenizer dlopen()s it (see the header for why).
#include "concord/text/sentencepiece_shim.h"

#include <sentencepiece_processor.h>

#include <algorithm>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

struct concord_spm {
  sentencepiece::SentencePieceProcessor processor;
};

namespace {
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
    auto* spm = new concord_spm();
    const auto status = spm->processor.Load(path);
    if (!status.ok()) {
      copy_message(status.ToString(), err, err_cap);
      delete spm;
      return nullptr;
    }
    return spm;
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
