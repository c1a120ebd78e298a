// The C ABI between SentencePieceTokenizer and the concord_sentencepiece_shim plug-in.
//
// Why a plug-in: libsentencepiece.so.0 carries its own copy of protobuf's symbols, and linking it
// into a process that also loads LibTorch (which pulls in libprotobuf.so.32) crashes during static
// initialisation. The shim links libsentencepiece and nothing of torch, and Concord loads it with
// dlopen(RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND), so its protobuf stays private to it. Only plain C
// types cross this boundary. Bump CONCORD_SPM_SHIM_ABI when any signature changes.
#pragma once
#include <stddef.h>
#include <stdint.h>

#define CONCORD_SPM_SHIM_ABI 1

#ifdef __cplusplus
extern "C" {
#endif

typedef struct concord_spm concord_spm;

/// CONCORD_SPM_SHIM_ABI of the shim that was loaded.
int32_t concord_spm_abi_version(void);

/// Loads a .model file; on failure returns NULL and writes a message into err[0..err_cap).
concord_spm* concord_spm_load(const char* path, char* err, size_t err_cap);
void concord_spm_free(concord_spm* spm);

/// Encodes `len` bytes of UTF-8; writes up to `cap` ids and returns how many there are
/// (call again with a larger buffer when that is more than `cap`), or -1 on error.
int64_t concord_spm_encode(const concord_spm* spm, const char* text, size_t len, int32_t* ids,
                           size_t cap);

/// Decodes `n` ids; writes up to `cap` bytes (no terminator) and returns the full length, or -1
/// when an id is out of range.
int64_t concord_spm_decode(const concord_spm* spm, const int32_t* ids, size_t n, char* out,
                           size_t cap);

/// Id of a piece (the unk id when it is not in the vocabulary).
int32_t concord_spm_piece_to_id(const concord_spm* spm, const char* piece, size_t len);

/// Writes up to `cap` bytes of the piece of `id`; returns its length, or -1 when out of range.
int64_t concord_spm_id_to_piece(const concord_spm* spm, int32_t id, char* out, size_t cap);

int32_t concord_spm_vocab_size(const concord_spm* spm);
/// -1 when the model has no such token.
int32_t concord_spm_bos_id(const concord_spm* spm);
int32_t concord_spm_eos_id(const concord_spm* spm);
int32_t concord_spm_pad_id(const concord_spm* spm);
int32_t concord_spm_unk_id(const concord_spm* spm);
/// 1 for control tokens (<s>, </s>, ...), which decoding drops; 0 otherwise.
int32_t concord_spm_is_control(const concord_spm* spm, int32_t id);

#ifdef __cplusplus
}
#endif
