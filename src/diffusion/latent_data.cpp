#include "concord/diffusion/latent_data.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <set>
#include <sstream>

#include "concord/core/error.h"

namespace fs = std::filesystem;

namespace concord::diffusion {

namespace {

constexpr const char* kLatents = "latents";
constexpr const char* kTextStates = "encoder_hidden_states";
constexpr const char* kTextEmbeds = "text_embeds";
constexpr const char* kTimeIds = "time_ids";
constexpr int kNumFields = 4;
constexpr int kTimeIdCount = 6;  // SDXL: original size, crop corner, target size

// The four tensors of a shard: name, rank, layout (for messages), required.
struct FieldDesc {
  const char* name;
  int64_t rank;
  const char* layout;
  bool required;
};
constexpr FieldDesc kFields[kNumFields] = {
    {kLatents, 4, "[N, C, H, W]", true},
    {kTextStates, 3, "[N, L, D]", true},
    {kTextEmbeds, 2, "[N, E]", false},
    {kTimeIds, 2, "[N, 6]", false},
};

// Each dimension a spec records: where it sits, its letter, its field.
struct DimDesc {
  int field;
  int64_t dim;
  const char* letter;
  int64_t LatentSpec::*member;
};
constexpr DimDesc kDims[] = {
    {0, 1, "C", &LatentSpec::channels},   {0, 2, "H", &LatentSpec::height},
    {0, 3, "W", &LatentSpec::width},      {1, 1, "L", &LatentSpec::text_length},
    {1, 2, "D", &LatentSpec::text_dim},   {2, 1, "E", &LatentSpec::text_embed_dim},
};

std::string quoted(const std::string& s) { return "\"" + s + "\""; }

std::string shape_text(const std::vector<int64_t>& shape) {
  std::ostringstream out;
  out << "[";
  for (size_t i = 0; i < shape.size(); ++i) out << (i ? ", " : "") << shape[i];
  out << "]";
  return out.str();
}

bool is_accepted_float(io::SafetensorsDtype dtype) {
  using D = io::SafetensorsDtype;
  return dtype == D::F32 || dtype == D::F16 || dtype == D::BF16 || dtype == D::F64;
}

std::vector<fs::path> shard_files_of(const fs::path& folder_or_file) {
  std::error_code ec;
  const auto status = fs::status(folder_or_file, ec);
  if (ec || !fs::exists(status)) fail_io(folder_or_file.string(), "no such file or folder");
  if (!fs::is_directory(status)) return {folder_or_file};
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(folder_or_file, ec)) {
    const std::string name = entry.path().filename().string();
    // Hidden files are editors' and write_file_atomic's temporaries, never shards.
    if (name.empty() || name[0] == '.' || entry.path().extension() != ".safetensors") continue;
    if (entry.is_regular_file()) files.push_back(entry.path());
  }
  if (ec) fail_io(folder_or_file.string(), "cannot list the folder: ", ec.message());
  if (files.empty()) {
    fail_io(folder_or_file.string(), "no *.safetensors latent shards in this folder");
  }
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace

LatentSpec latent_spec_for(const UNetConfig& config) {
  LatentSpec spec;
  spec.channels = config.in_channels;
  spec.text_dim = config.cross_attention_dim;
  if (config.addition_embed_type == "text_time") {
    spec.text_embed_dim = config.projection_class_embeddings_input_dim -
                          kTimeIdCount * config.addition_time_embed_dim;
    CONCORD_CHECK(spec.text_embed_dim > 0,
                  "latent_spec_for: projection_class_embeddings_input_dim ",
                  config.projection_class_embeddings_input_dim,
                  " leaves no room for a pooled text embedding beside 6 x "
                  "addition_time_embed_dim = ",
                  kTimeIdCount * config.addition_time_embed_dim);
  }
  return spec;
}

LatentShards::LatentShards(const fs::path& folder_or_file, const LatentSpec& expected) {
  open(shard_files_of(folder_or_file), expected);
}

LatentShards::LatentShards(const std::vector<fs::path>& files, const LatentSpec& expected) {
  CONCORD_CHECK(!files.empty(), "LatentShards: no shard files given");
  open(files, expected);
}

void LatentShards::open(const std::vector<fs::path>& files, const LatentSpec& expected) {
  for (const auto& path : files) {
    const std::string name = path.string();
    Shard shard{io::SafetensorsFile(path), 0, total_, {}};
    const io::SafetensorsFile& st = shard.file;
    std::vector<int64_t> shapes[kNumFields];
    for (int f = 0; f < kNumFields; ++f) {
      const FieldDesc& desc = kFields[f];
      if (!st.contains(desc.name)) {
        if (desc.required) {
          fail_format(name, "missing tensor ", quoted(desc.name), ": a latent shard holds ",
                      kLatents, " [N, C, H, W] and ", kTextStates,
                      " [N, L, D], optionally text_embeds [N, E] and time_ids [N, 6]");
        }
        continue;
      }
      const io::SafetensorsTensorInfo& info = st.info(desc.name);
      const auto& shape = info.shape;
      if (static_cast<int64_t>(shape.size()) != desc.rank) {
        fail_format(name, "tensor ", quoted(desc.name), " has shape ", shape_text(shape),
                    " (rank ", shape.size(), "); expected rank ", desc.rank, ": ", desc.layout);
      }
      if (!is_accepted_float(info.dtype)) {
        fail_format(name, "tensor ", quoted(desc.name), " has dtype ",
                    io::safetensors_dtype_name(info.dtype),
                    "; expected a floating type (F32, F16, BF16 or F64)");
      }
      for (size_t d = 1; d < shape.size(); ++d) {
        if (shape[d] <= 0) {
          fail_format(name, "tensor ", quoted(desc.name), " has shape ", shape_text(shape),
                      ": every dimension of ", desc.layout, " but N must be positive");
        }
      }
      if (f == 3 && shape[1] != kTimeIdCount) {
        fail_format(name, "tensor ", quoted(desc.name), " has shape ", shape_text(shape),
                    "; expected [N, 6] (SDXL's original size, crop corner and target size)");
      }
      const int64_t rows = shape[0];
      const int64_t latent_rows = st.info(kLatents).shape.at(0);
      if (f > 0 && rows != latent_rows) {
        fail_format(name, "tensor ", quoted(desc.name), " has ", rows, " rows (dim 0) but ",
                    quoted(kLatents), " has ", latent_rows,
                    ": every tensor of a shard holds one row per sample");
      }
      // The byte range of every row, checked here so that get_batch's arithmetic cannot leave
      // the tensor (the header parser has already checked numel * size == bytes, but the
      // reader relies on this file's own arithmetic, not the parser's).
      uint64_t row_bytes = static_cast<uint64_t>(io::safetensors_dtype_bits(info.dtype) / 8);
      for (size_t d = 1; d < shape.size(); ++d) {
        if (__builtin_mul_overflow(row_bytes, static_cast<uint64_t>(shape[d]), &row_bytes)) {
          fail_format(name, "tensor ", quoted(desc.name), " has shape ", shape_text(shape),
                      " whose rows overflow a 64-bit byte count");
        }
      }
      uint64_t total_bytes = 0;
      if (rows < 0 ||
          __builtin_mul_overflow(row_bytes, static_cast<uint64_t>(rows), &total_bytes) ||
          total_bytes != info.nbytes() || info.file_end > st.mapped_size() ||
          info.file_begin > info.file_end) {
        fail_format(name, "tensor ", quoted(desc.name), " of shape ", shape_text(shape),
                    " does not fit its byte range [", info.file_begin, ", ", info.file_end,
                    ") of a ", st.mapped_size(), "-byte file");
      }
      shard.rows = rows;
      shard.fields[f] = Field{true, info.dtype, info.file_begin, row_bytes};
      shapes[f] = shape;
    }

    LatentSpec got;
    for (const DimDesc& d : kDims) {
      if (shard.fields[d.field].present) got.*d.member = shapes[d.field][d.dim];
    }

    if (shards_.empty()) {
      spec_ = got;
      has_text_embeds_ = shard.fields[2].present;
      has_time_ids_ = shard.fields[3].present;
      for (const DimDesc& d : kDims) {
        const int64_t want = expected.*d.member;
        if (want > 0 && shard.fields[d.field].present && got.*d.member != want) {
          fail_format(name, "tensor ", quoted(kFields[d.field].name), " has ", d.letter, " = ",
                      got.*d.member, " (dim ", d.dim, " of ", kFields[d.field].layout,
                      ") but the model expects ", want);
        }
      }
      if (expected.text_embed_dim > 0) {
        for (int f : {2, 3}) {
          if (!shard.fields[f].present) {
            fail_format(name, "missing tensor ", quoted(kFields[f].name), " ",
                        kFields[f].layout, ": the model's text_time conditioning (pooled text "
                        "embedding of E = ", expected.text_embed_dim, " and SDXL's time ids) "
                        "needs text_embeds and time_ids");
          }
        }
      }
    } else {
      const std::string first = shards_.front().file.path().string();
      for (int f : {2, 3}) {
        const bool want = f == 2 ? has_text_embeds_ : has_time_ids_;
        if (shard.fields[f].present != want) {
          fail_format(name, want ? "missing tensor " : "has tensor ", quoted(kFields[f].name),
                      ", which ", first, want ? " has" : " lacks",
                      ": an optional tensor must be in every shard or in none");
        }
      }
      for (const DimDesc& d : kDims) {
        if (shard.fields[d.field].present && got.*d.member != spec_.*d.member) {
          fail_format(name, "tensor ", quoted(kFields[d.field].name), " has ", d.letter, " = ",
                      got.*d.member, " (dim ", d.dim, " of ", kFields[d.field].layout,
                      ") but ", first, " has ", spec_.*d.member,
                      ": every shard must have the same shapes");
        }
      }
    }
    total_ += shard.rows;
    shards_.push_back(std::move(shard));
  }
  if (total_ == 0) {
    fail_format(files.front().string(), "the latent shards hold no samples (N = 0 in every ",
                "shard)");
  }
}

std::vector<fs::path> LatentShards::files() const {
  std::vector<fs::path> out;
  for (const auto& s : shards_) out.push_back(s.file.path());
  return out;
}

std::vector<int64_t> LatentShards::shard_sizes() const {
  std::vector<int64_t> out;
  for (const auto& s : shards_) out.push_back(s.rows);
  return out;
}

LatentBatch LatentShards::get_batch(const std::vector<int64_t>& indices) const {
  return translate_torch_errors("diffusion::LatentShards::get_batch", [&] {
    const int64_t batch = static_cast<int64_t>(indices.size());
    std::vector<int64_t> row_shape[kNumFields] = {
        {spec_.channels, spec_.height, spec_.width},
        {spec_.text_length, spec_.text_dim},
        {spec_.text_embed_dim},
        {kTimeIdCount},
    };
    const bool present[kNumFields] = {true, true, has_text_embeds_, has_time_ids_};

    // (shard, row in shard, position in the batch), grouped by shard so each shard's rows are
    // copied and converted together.
    struct Pick {
      size_t shard;
      int64_t row;
      int64_t pos;
    };
    std::vector<Pick> picks;
    picks.reserve(indices.size());
    for (int64_t pos = 0; pos < batch; ++pos) {
      const int64_t i = indices[pos];
      CONCORD_CHECK(i >= 0 && i < total_, "LatentShards::get_batch: index ", i,
                    " is outside [0, ", total_, ")");
      // The last shard starting at or before i; empty shards share their begin with the next
      // one, so this is always the shard that holds row i.
      auto it = std::upper_bound(shards_.begin(), shards_.end(), i,
                                 [](int64_t v, const Shard& s) { return v < s.begin; });
      const size_t s = static_cast<size_t>(std::distance(shards_.begin(), it)) - 1;
      const int64_t row = i - shards_[s].begin;
      TORCH_INTERNAL_ASSERT(row >= 0 && row < shards_[s].rows);
      picks.push_back({s, row, pos});
    }
    std::stable_sort(picks.begin(), picks.end(),
                     [](const Pick& a, const Pick& b) { return a.shard < b.shard; });

    at::Tensor out[kNumFields];
    for (int f = 0; f < kNumFields; ++f) {
      if (!present[f]) continue;
      std::vector<int64_t> shape{batch};
      shape.insert(shape.end(), row_shape[f].begin(), row_shape[f].end());
      out[f] = at::empty(shape, at::kFloat);
    }

    for (size_t g = 0; g < picks.size();) {
      size_t end = g;
      while (end < picks.size() && picks[end].shard == picks[g].shard) ++end;
      const Shard& shard = shards_[picks[g].shard];
      const uint8_t* base = shard.file.mapped_data();
      const int64_t n = static_cast<int64_t>(end - g);
      std::vector<int64_t> positions(n);
      for (int64_t j = 0; j < n; ++j) positions[j] = picks[g + j].pos;
      const at::Tensor where = at::tensor(positions, at::kLong);
      for (int f = 0; f < kNumFields; ++f) {
        if (!present[f]) continue;
        const Field& field = shard.fields[f];
        const auto type = io::safetensors_to_scalar_type(field.dtype);
        TORCH_INTERNAL_ASSERT(type.has_value());
        std::vector<int64_t> shape{n};
        shape.insert(shape.end(), row_shape[f].begin(), row_shape[f].end());
        at::Tensor stored = at::empty(shape, at::TensorOptions().dtype(*type));
        TORCH_INTERNAL_ASSERT(static_cast<uint64_t>(stored.nbytes()) == n * field.row_bytes);
        auto* dest = static_cast<uint8_t*>(stored.data_ptr());
        for (int64_t j = 0; j < n; ++j) {
          // Row bounds were checked at open: begin + rows * row_bytes == end <= file size.
          std::memcpy(dest + j * field.row_bytes,
                      base + field.file_begin + picks[g + j].row * field.row_bytes,
                      field.row_bytes);
        }
        at::Tensor values = stored.to(at::kFloat);
        const at::Tensor bad = at::logical_not(at::isfinite(values)).reshape({n, -1}).any(1);
        if (bad.any().item<bool>()) {
          const int64_t j = bad.nonzero().view(-1)[0].item<int64_t>();
          fail_format(shard.file.path().string(), "tensor ", quoted(kFields[f].name), " row ",
                      picks[g + j].row, " holds a non-finite value (NaN or infinity)");
        }
        out[f].index_copy_(0, where, values);
      }
      g = end;
    }
    return LatentBatch{out[0], out[1], out[2], out[3]};
  });
}

void write_latent_shard(const fs::path& path, const LatentBatch& batch,
                        const std::map<std::string, at::Tensor>& extra) {
  const std::string where = "write_latent_shard(" + path.string() + "): ";
  const at::Tensor tensors[kNumFields] = {batch.latents, batch.encoder_hidden_states,
                                          batch.text_embeds, batch.time_ids};
  CONCORD_CHECK(batch.latents.defined() && batch.encoder_hidden_states.defined(), where,
                "latents and encoder_hidden_states are required");
  const int64_t rows = batch.latents.dim() > 0 ? batch.latents.size(0) : -1;
  std::map<std::string, at::Tensor> out;
  for (int f = 0; f < kNumFields; ++f) {
    const at::Tensor& t = tensors[f];
    if (!t.defined()) continue;
    const FieldDesc& desc = kFields[f];
    CONCORD_CHECK(t.dim() == desc.rank, where, desc.name, " must be ", desc.layout, ", got ",
                  t.sizes());
    CONCORD_CHECK(t.is_floating_point(), where, desc.name, " must be floating point, got ",
                  t.scalar_type());
    for (int64_t d = 1; d < t.dim(); ++d) {
      CONCORD_CHECK(t.size(d) > 0, where, desc.name, " ", t.sizes(),
                    ": every dimension but N must be positive");
    }
    CONCORD_CHECK(f != 3 || t.size(1) == kTimeIdCount, where, "time_ids must be [N, 6], got ",
                  t.sizes());
    CONCORD_CHECK(t.size(0) == rows, where, desc.name, " has ", t.size(0), " rows, latents ",
                  rows);
    out[desc.name] = t;
  }
  for (const auto& [name, t] : extra) {
    CONCORD_CHECK(out.count(name) == 0 && name != kTextEmbeds && name != kTimeIds, where,
                  "extra tensor ", quoted(name), " has the name of a latent shard's own tensor");
    out[name] = t;
  }
  io::save_safetensors(path, out, {{"format", "concord-latents"}});
}

std::vector<fs::path> write_synthetic_latents(const fs::path& dir,
                                              const SyntheticLatentOptions& o) {
  CONCORD_CHECK(o.samples > 0 && o.samples_per_shard > 0 && o.classes > 0,
                "write_synthetic_latents: samples, samples_per_shard and classes must be "
                "positive, got ", o.samples, ", ", o.samples_per_shard, ", ", o.classes);
  CONCORD_CHECK(o.channels > 0 && o.height > 0 && o.width > 0 && o.text_length > 0 &&
                    o.text_dim > 0 && (!o.sdxl_conditioning || o.text_embed_dim > 0),
                "write_synthetic_latents: every shape must be positive");
  const int64_t num_shards = (o.samples + o.samples_per_shard - 1) / o.samples_per_shard;
  std::vector<fs::path> paths;
  for (int64_t s = 0; s < num_shards; ++s) {
    char name[64];
    std::snprintf(name, sizeof(name), "latents-%05lld.safetensors", static_cast<long long>(s));
    paths.push_back(dir / name);
  }
  std::error_code ec;
  if (fs::is_directory(dir, ec)) {
    std::set<std::string> ours;
    for (const auto& p : paths) ours.insert(p.filename().string());
    for (const auto& entry : fs::directory_iterator(dir, ec)) {
      const std::string name = entry.path().filename().string();
      CONCORD_CHECK(name.empty() || name[0] == '.' ||
                        entry.path().extension() != ".safetensors" || ours.count(name),
                    "write_synthetic_latents: ", dir.string(), " already holds ", name,
                    ", which LatentShards would read with the new shards: use an empty folder");
    }
  }

  return translate_torch_errors("diffusion::write_synthetic_latents", [&] {
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(o.seed);
    const int64_t K = o.classes, C = o.channels, H = o.height, W = o.width;

    // Per class: the prompt.
    const at::Tensor prompt_states = at::randn({K, o.text_length, o.text_dim}, gen);
    const at::Tensor prompt_pooled =
        o.sdxl_conditioning ? at::randn({K, o.text_embed_dim}, gen) : at::Tensor();

    // Per class and channel: three Gaussian blobs and a plane wave, on pixel centres in [0, 1].
    constexpr int64_t kBlobs = 3;
    constexpr double two_pi = 6.283185307179586;
    auto uniform = [&](at::IntArrayRef shape, double lo, double hi) {
      return at::rand(shape, gen) * (hi - lo) + lo;
    };
    const at::Tensor y = ((at::arange(H, at::kFloat) + 0.5) / H).view({1, 1, 1, H, 1});
    const at::Tensor x = ((at::arange(W, at::kFloat) + 0.5) / W).view({1, 1, 1, 1, W});
    const at::Tensor cy = uniform({K, C, kBlobs, 1, 1}, 0.15, 0.85);
    const at::Tensor cx = uniform({K, C, kBlobs, 1, 1}, 0.15, 0.85);
    const at::Tensor width = uniform({K, C, kBlobs, 1, 1}, 1.0 / 12, 1.0 / 5);
    const at::Tensor sign = at::randint(0, 2, {K, C, kBlobs, 1, 1}, gen).to(at::kFloat) * 2 - 1;
    const at::Tensor amplitude = sign * uniform({K, C, kBlobs, 1, 1}, 0.5, 1.5);
    const at::Tensor blobs =
        (amplitude * at::exp(-((y - cy).pow(2) + (x - cx).pow(2)) / (2 * width.pow(2))))
            .sum(2);  // [K, C, H, W]
    const at::Tensor fy = at::randint(1, 4, {K, C, 1, 1}, gen).to(at::kFloat);
    const at::Tensor fx = at::randint(1, 4, {K, C, 1, 1}, gen).to(at::kFloat);
    const at::Tensor phase = uniform({K, C, 1, 1}, 0.0, two_pi);
    const at::Tensor wave_amplitude = uniform({K, C, 1, 1}, 0.3, 0.7);
    const at::Tensor wave =
        wave_amplitude *
        at::sin(two_pi * (fy * y.view({1, 1, H, 1}) + fx * x.view({1, 1, 1, W})) + phase);
    at::Tensor patterns = blobs + wave;
    const at::Tensor flat = patterns.reshape({K, -1});
    const at::Tensor mean = flat.mean(1, true);
    // A 1x1x1 latent has no variance to standardise: its pattern is 0 and samples are noise.
    const at::Tensor centred = flat - mean;
    const at::Tensor stdev = centred.pow(2).mean(1, true).sqrt().clamp_min(1e-6);
    patterns = (centred / stdev).view({K, C, H, W});

    constexpr double kTextNoise = 0.1, kLatentNoise = 0.2;
    const double signal = std::sqrt(1.0 - kLatentNoise * kLatentNoise);
    const std::vector<float> sdxl_time_ids{static_cast<float>(8 * H), static_cast<float>(8 * W),
                                           0.0f, 0.0f, static_cast<float>(8 * H),
                                           static_cast<float>(8 * W)};
    const at::Tensor time_row = at::tensor(sdxl_time_ids, at::kFloat).view({1, kTimeIdCount});

    for (int64_t s = 0; s < num_shards; ++s) {
      const int64_t n = std::min(o.samples_per_shard, o.samples - s * o.samples_per_shard);
      const at::Tensor k = at::randint(0, K, {n}, gen);
      LatentBatch b;
      b.encoder_hidden_states = prompt_states.index_select(0, k) +
                                kTextNoise * at::randn({n, o.text_length, o.text_dim}, gen);
      if (o.sdxl_conditioning) {
        b.text_embeds = prompt_pooled.index_select(0, k) +
                        kTextNoise * at::randn({n, o.text_embed_dim}, gen);
        b.time_ids = time_row.expand({n, kTimeIdCount}).contiguous();
      }
      b.latents = signal * patterns.index_select(0, k) +
                  kLatentNoise * at::randn({n, C, H, W}, gen);
      write_latent_shard(paths[s], b, {{"class_ids", k}});
    }
    return paths;
  });
}

}  // namespace concord::diffusion
