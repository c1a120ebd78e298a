// The training data of KOALA's distillation (arXiv 2312.04005): SDXL's U-Net is distilled in
// latent space, so a sample is what the U-Net reads, not an image and a caption.
// A user encodes the image–text pairs once (the VAE for the latents, SDXL's two text encoders
// for the token states and the pooled embedding) into safetensors shards; training then noises
// the stored latents and never runs the VAE or the text encoders.
//
// A shard is one safetensors file holding, for N samples (row i of every tensor is sample i):
//
//   latents                [N, C, H, W]  the VAE latent already multiplied by the VAE's
//                                        scaling_factor (0.13025 for SDXL), as the U-Net sees it
//   encoder_hidden_states  [N, L, D]     the text encoders' token states (SDXL: L = 77, D = 2048)
//   text_embeds            [N, E]        optional: the pooled text embedding (SDXL: E = 1280)
//   time_ids               [N, 6]        optional: SDXL's micro-conditioning (original height,
//                                        width, crop top, left, target height, width), in pixels
//
// F32, F16 and BF16 (and F64) are accepted and come back as fp32; other tensors in a file are
// ignored. LatentShards opens a folder (every *.safetensors in it, in name order) or a list of
// files and checks everything before training starts: the headers only, so opening a 100-GB set
// reads kilobytes. Every mismatch is a concord::FormatError naming the file and the tensor.
// Sample values are read where a batch needs them; a non-finite value there is a FormatError
// naming the file, the tensor and the row.
#pragma once
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "concord/diffusion/unet_config.h"
#include "concord/io/safetensors.h"

namespace concord::diffusion {

/// One batch of conditioned latents, fp32 on the CPU.
struct LatentBatch {
  at::Tensor latents;                ///< [B, C, H, W]
  at::Tensor encoder_hidden_states;  ///< [B, L, D]
  at::Tensor text_embeds;            ///< [B, E], undefined when the data has none
  at::Tensor time_ids;               ///< [B, 6], undefined when the data has none
};

/// The shapes of one sample. As an expectation (LatentShards' `expected`), 0 means "any".
struct LatentSpec {
  int64_t channels = 0;        ///< C of latents [N, C, H, W]
  int64_t height = 0;          ///< H
  int64_t width = 0;           ///< W
  int64_t text_length = 0;     ///< L of encoder_hidden_states [N, L, D]
  int64_t text_dim = 0;        ///< D
  /// E of text_embeds [N, E]. As an expectation, E > 0 also requires time_ids; in the spec of
  /// open data, 0 means the data has no text_embeds.
  int64_t text_embed_dim = 0;
};

/// What a U-Net reads: channels = in_channels, text_dim = cross_attention_dim and, for SDXL's
/// "text_time" conditioning, text_embed_dim = projection_class_embeddings_input_dim
/// - 6 * addition_time_embed_dim (the pooled embedding is concatenated with six sinusoidal
/// embeddings of time_ids). Height, width and text length stay 0: the U-Net takes any.
LatentSpec latent_spec_for(const UNetConfig& config);

/// A data set of conditioned latents over safetensors shards (see the file comment). A global
/// index runs through the shards in order: shard 0's rows, then shard 1's, ... Usable as it is
/// by train::SampledBatches<LatentShards, LatentBatch>. get_batch() is const and keeps no
/// state, so several threads may call it.
class LatentShards {
 public:
  /// A folder (every *.safetensors directly in it, in name order) or a single shard file.
  /// Throws concord::IoError when it is missing or the folder holds no shard, and
  /// concord::FormatError naming the file and tensor for anything the header shows wrong:
  /// a missing tensor, a wrong rank, a non-floating dtype, a dimension of 0, row counts that
  /// differ within a shard, a C/H/W/L/D/E that differs from the first shard's, an optional
  /// tensor in some shards but not others, time_ids not [N, 6], a shape against `expected`,
  /// or no samples at all.
  explicit LatentShards(const std::filesystem::path& folder_or_file,
                        const LatentSpec& expected = {});
  /// These files, in this order, checked as above.
  explicit LatentShards(const std::vector<std::filesystem::path>& files,
                        const LatentSpec& expected = {});

  /// Samples in all shards.
  int64_t size() const { return total_; }
  /// The shapes of a sample (every field filled; text_embed_dim 0 when there are no text_embeds).
  const LatentSpec& spec() const { return spec_; }
  bool has_text_embeds() const { return has_text_embeds_; }
  bool has_time_ids() const { return has_time_ids_; }
  /// The shard files, in index order, and the number of samples in each.
  std::vector<std::filesystem::path> files() const;
  std::vector<int64_t> shard_sizes() const;

  /// The samples `indices` (each in [0, size()), repeats allowed), in that order, as fp32.
  /// Reads only those rows from the mapped files. Throws concord::Error for an index out of
  /// range, concord::FormatError for a non-finite value (naming file, tensor and row).
  LatentBatch get_batch(const std::vector<int64_t>& indices) const;

 private:
  struct Field {
    bool present = false;
    io::SafetensorsDtype dtype = io::SafetensorsDtype::F32;
    uint64_t file_begin = 0;  ///< byte offset of row 0 in the file
    uint64_t row_bytes = 0;
  };
  struct Shard {
    io::SafetensorsFile file;
    int64_t rows = 0;
    int64_t begin = 0;  ///< global index of row 0
    Field fields[4];    ///< latents, encoder_hidden_states, text_embeds, time_ids
  };

  void open(const std::vector<std::filesystem::path>& files, const LatentSpec& expected);

  std::vector<Shard> shards_;
  LatentSpec spec_;
  bool has_text_embeds_ = false;
  bool has_time_ids_ = false;
  int64_t total_ = 0;
};

/// Writes `batch` as one shard through concord::write_file_atomic (a crash leaves the old file
/// or the new one), in the dtypes the tensors have (fp16 or bf16 halve the size of a set).
/// `extra` tensors (labels, ids) are written beside them; LatentShards ignores them. Throws
/// concord::Error when the batch does not have the shapes of the file comment.
void write_latent_shard(const std::filesystem::path& path, const LatentBatch& batch,
                        const std::map<std::string, at::Tensor>& extra = {});

/// A synthetic data set that is conditional and learnable, for the tests and the quickstart:
/// a teacher trained on it learns a different latent for each prompt class, so a student that
/// imitates the teacher has something to imitate. From `seed` it draws, per class k:
///
///   - a prompt: token states T_k [L, D] and pooled embedding p_k [E], entries N(0, 1);
///   - a pattern P_k [C, H, W]: per channel, three Gaussian blobs (centres uniform in the
///     middle 70% of each axis, widths 1/12..1/5 of it, amplitudes ±(0.5..1.5)) plus a plane
///     wave a sin(2π(f_y y / H + f_x x / W) + φ) with a in 0.3..0.7 and integer frequencies
///     1..3; then standardised (zero mean, unit variance over C × H × W).
///
/// Sample i draws its class k uniformly, then
///
///   encoder_hidden_states = T_k + 0.1 ε,    text_embeds = p_k + 0.1 ε',
///   latents = sqrt(1 - 0.2²) P_k + 0.2 ε''  (unit variance, as SDXL's scaled latents roughly are)
///   time_ids = (8H, 8W, 0, 0, 8H, 8W)       (SDXL at its native size: the VAE downsamples 8x)
///
/// with ε, ε', ε'' standard normal. The class of each sample is stored as the extra tensor
/// "class_ids" [N] int64.
struct SyntheticLatentOptions {
  int64_t samples = 256;
  int64_t channels = 4, height = 16, width = 16;
  int64_t text_length = 8, text_dim = 32, text_embed_dim = 16;
  /// Shards hold this many samples (the last one the rest).
  int64_t samples_per_shard = 128;
  /// Prompt classes (distinct conditional modes).
  int64_t classes = 4;
  uint64_t seed = 0;
  /// Write text_embeds and time_ids (SDXL's added conditioning); false writes neither.
  bool sdxl_conditioning = true;
};

/// Writes the synthetic set (see SyntheticLatentOptions) into `dir` as latents-00000.safetensors,
/// latents-00001.safetensors, ... and returns their paths. The same options give the same
/// bytes. Throws concord::Error if `dir` already holds other *.safetensors files (LatentShards
/// would read them too).
std::vector<std::filesystem::path> write_synthetic_latents(const std::filesystem::path& dir,
                                                           const SyntheticLatentOptions& options);

}  // namespace concord::diffusion
