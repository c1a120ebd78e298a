#include "concord/text/sentencepiece_tokenizer.h"

#include <dlfcn.h>

#include <cstdlib>
#include <mutex>
#include <vector>

#include "concord/core/error.h"
#include "concord/text/sentencepiece_shim.h"
#include "concord/text/utf8.h"

// AddressSanitizer's runtime refuses dlopen(RTLD_DEEPBIND) (it aborts the process, see
// https://github.com/google/sanitizers/issues/611), and without RTLD_DEEPBIND the plug-in's
// protobuf clashes with LibTorch's: an ASan build has no SentencePiece.
#if defined(__SANITIZE_ADDRESS__)
#define CONCORD_SPM_UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CONCORD_SPM_UNDER_ASAN 1
#endif
#endif

namespace concord::text {

namespace {

constexpr const char* kShimName = "libconcord_sentencepiece_shim.so";

// The shim's entry points, resolved once per process; the library is never unloaded (its
// protobuf registers global state that must outlive every handle).
struct ShimApi {
  void* handle = nullptr;
  std::filesystem::path path;
  decltype(&concord_spm_abi_version) abi_version = nullptr;
  decltype(&concord_spm_load) load = nullptr;
  decltype(&concord_spm_free) free = nullptr;
  decltype(&concord_spm_encode) encode = nullptr;
  decltype(&concord_spm_decode) decode = nullptr;
  decltype(&concord_spm_piece_to_id) piece_to_id = nullptr;
  decltype(&concord_spm_id_to_piece) id_to_piece = nullptr;
  decltype(&concord_spm_vocab_size) vocab_size = nullptr;
  decltype(&concord_spm_bos_id) bos_id = nullptr;
  decltype(&concord_spm_eos_id) eos_id = nullptr;
  decltype(&concord_spm_pad_id) pad_id = nullptr;
  decltype(&concord_spm_unk_id) unk_id = nullptr;
  decltype(&concord_spm_is_control) is_control = nullptr;
};

std::vector<std::filesystem::path> shim_candidates() {
  std::vector<std::filesystem::path> out;
  if (const char* env = std::getenv("CONCORD_SPM_SHIM"); env && *env) out.emplace_back(env);
#ifdef CONCORD_SPM_SHIM_INSTALL_PATH
  out.emplace_back(CONCORD_SPM_SHIM_INSTALL_PATH);
#endif
#ifdef CONCORD_SPM_SHIM_BUILD_PATH
  out.emplace_back(CONCORD_SPM_SHIM_BUILD_PATH);
#endif
  return out;
}

const ShimApi& shim() {
  static std::once_flag once;
  static ShimApi api;
  static std::string error;
  std::call_once(once, [] {
#ifdef CONCORD_SPM_UNDER_ASAN
    error = "SentencePiece is not available in an AddressSanitizer build: its plug-in needs "
            "dlopen(RTLD_DEEPBIND), which the sanitizer runtime refuses";
    return;
#endif
    std::string tried;
    auto candidates = shim_candidates();
    candidates.emplace_back(kShimName);  // the loader's own search path (LD_LIBRARY_PATH, ...)
    for (const auto& c : candidates) {
      if (c.has_parent_path() && !std::filesystem::exists(c)) {
        tried += " " + c.string() + " (absent);";
        continue;
      }
      // RTLD_DEEPBIND: the shim and libsentencepiece resolve their symbols (protobuf's among
      // them) in their own scope first, never against the copy LibTorch brought in.
      void* h = dlopen(c.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
      if (!h) {
        const char* why = dlerror();
        tried += " " + c.string() + " (" + (why ? why : "dlopen failed") + ");";
        continue;
      }
      api.handle = h;
      api.path = c;
      break;
    }
    if (!api.handle) {
      error = "SentencePiece plug-in " + std::string(kShimName) + " not found; tried:" + tried +
              " set CONCORD_SPM_SHIM to its path";
      return;
    }
    bool ok = true;
    auto sym = [&](auto& fn, const char* name) {
      fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(api.handle, name));
      ok = ok && fn != nullptr;
    };
    sym(api.abi_version, "concord_spm_abi_version");
    sym(api.load, "concord_spm_load");
    sym(api.free, "concord_spm_free");
    sym(api.encode, "concord_spm_encode");
    sym(api.decode, "concord_spm_decode");
    sym(api.piece_to_id, "concord_spm_piece_to_id");
    sym(api.id_to_piece, "concord_spm_id_to_piece");
    sym(api.vocab_size, "concord_spm_vocab_size");
    sym(api.bos_id, "concord_spm_bos_id");
    sym(api.eos_id, "concord_spm_eos_id");
    sym(api.pad_id, "concord_spm_pad_id");
    sym(api.unk_id, "concord_spm_unk_id");
    sym(api.is_control, "concord_spm_is_control");
    if (!ok || api.abi_version() != CONCORD_SPM_SHIM_ABI) {
      error = api.path.string() + ": not a concord_sentencepiece_shim of ABI " +
              std::to_string(CONCORD_SPM_SHIM_ABI);
      api.handle = nullptr;
    }
  });
  if (!api.handle) fail(error);
  return api;
}

std::optional<TokenId> optional_id(int32_t id) {
  if (id < 0) return std::nullopt;
  return id;
}

}  // namespace

struct SentencePieceTokenizer::Impl {
  const ShimApi* api = nullptr;
  concord_spm* spm = nullptr;
  std::string path;
  int32_t size = 0;
};

std::filesystem::path SentencePieceTokenizer::find_shim() {
#ifdef CONCORD_SPM_UNDER_ASAN
  return {};  // there may be one, but this process cannot load it (see above)
#endif
  for (const auto& c : shim_candidates()) {
    if (std::filesystem::exists(c)) return c;
  }
  return {};
}

SentencePieceTokenizer::SentencePieceTokenizer(const std::filesystem::path& model_path)
    : impl_(std::make_unique<Impl>()) {
  impl_->api = &shim();
  impl_->path = model_path.string();
  if (!std::filesystem::is_regular_file(model_path)) fail_io(impl_->path, "cannot open");
  char err[512] = {0};
  impl_->spm = impl_->api->load(impl_->path.c_str(), err, sizeof(err));
  if (!impl_->spm) fail_format(impl_->path, "not a SentencePiece model: ", err);
  impl_->size = impl_->api->vocab_size(impl_->spm);
}

SentencePieceTokenizer::~SentencePieceTokenizer() {
  if (impl_ && impl_->spm) impl_->api->free(impl_->spm);
}

std::vector<TokenId> SentencePieceTokenizer::encode(std::string_view text,
                                                    bool add_special_tokens) const {
  std::string repaired;
  if (!utf8::is_valid(text)) {
    repaired = utf8::replace_invalid(text);
    text = repaired;
  }
  std::vector<TokenId> ids(text.size() + 8);
  int64_t n = impl_->api->encode(impl_->spm, text.data(), text.size(), ids.data(), ids.size());
  if (n > static_cast<int64_t>(ids.size())) {
    ids.resize(static_cast<size_t>(n));
    n = impl_->api->encode(impl_->spm, text.data(), text.size(), ids.data(), ids.size());
  }
  CONCORD_CHECK(n >= 0, impl_->path, ": SentencePiece failed to encode");
  ids.resize(static_cast<size_t>(n));
  return add_special_tokens ? this->add_special_tokens(std::move(ids)) : ids;
}

std::vector<TokenId> SentencePieceTokenizer::add_special_tokens(std::vector<TokenId> ids) const {
  if (auto bos = bos_id()) ids.insert(ids.begin(), *bos);
  return ids;
}

std::string SentencePieceTokenizer::decode(const std::vector<TokenId>& ids,
                                           bool skip_special_tokens) const {
  const ShimApi& api = *impl_->api;
  auto decode_span = [&](const TokenId* p, size_t n, std::string& out) {
    if (n == 0) return;
    std::string buffer(n * 8 + 16, '\0');
    int64_t len = api.decode(impl_->spm, p, n, buffer.data(), buffer.size());
    if (len > static_cast<int64_t>(buffer.size())) {
      buffer.resize(static_cast<size_t>(len));
      len = api.decode(impl_->spm, p, n, buffer.data(), buffer.size());
    }
    CONCORD_CHECK(len >= 0, impl_->path, ": a token id is out of range [0, ", impl_->size, ")");
    out.append(buffer.data(), static_cast<size_t>(len));
  };
  for (TokenId id : ids) {
    CONCORD_CHECK(id >= 0 && id < impl_->size, impl_->path, ": token id ", id,
                  " out of range [0, ", impl_->size, ")");
  }
  std::string out;
  if (skip_special_tokens) {
    decode_span(ids.data(), ids.size(), out);
    return out;
  }
  // SentencePiece always drops control tokens; to keep them, decode the runs between them and
  // write each control token's piece in its place.
  size_t start = 0;
  for (size_t i = 0; i <= ids.size(); ++i) {
    if (i < ids.size() && !api.is_control(impl_->spm, ids[i])) continue;
    decode_span(ids.data() + start, i - start, out);
    if (i < ids.size()) out += id_to_token(ids[i]);
    start = i + 1;
  }
  return out;
}

int64_t SentencePieceTokenizer::vocab_size() const { return impl_->size; }

std::optional<TokenId> SentencePieceTokenizer::token_to_id(std::string_view token) const {
  const int32_t id = impl_->api->piece_to_id(impl_->spm, token.data(), token.size());
  // SentencePiece answers unknown pieces with the unk id; only "<unk>" itself maps to it.
  if (id == impl_->api->unk_id(impl_->spm) && id_to_token(id) != token) return std::nullopt;
  return optional_id(id);
}

std::string SentencePieceTokenizer::id_to_token(TokenId id) const {
  CONCORD_CHECK(id >= 0 && id < impl_->size, impl_->path, ": token id ", id, " out of range [0, ",
                impl_->size, ")");
  std::string piece(64, '\0');
  int64_t n = impl_->api->id_to_piece(impl_->spm, id, piece.data(), piece.size());
  if (n > static_cast<int64_t>(piece.size())) {
    piece.resize(static_cast<size_t>(n));
    n = impl_->api->id_to_piece(impl_->spm, id, piece.data(), piece.size());
  }
  piece.resize(static_cast<size_t>(std::max<int64_t>(n, 0)));
  return piece;
}

std::optional<TokenId> SentencePieceTokenizer::bos_id() const {
  return optional_id(impl_->api->bos_id(impl_->spm));
}
std::optional<TokenId> SentencePieceTokenizer::eos_id() const {
  return optional_id(impl_->api->eos_id(impl_->spm));
}
std::optional<TokenId> SentencePieceTokenizer::pad_id() const {
  return optional_id(impl_->api->pad_id(impl_->spm));
}

}  // namespace concord::text
