// The distillation's training data (concord/diffusion/latent_data.h): shards written and read
// back row for row across shard boundaries, every open-time check with the file and tensor it
// names, half-precision shards, the sampler adapter, the synthetic set's conditional structure,
// and corrupt files (every truncation, header bytes overwritten) failing with an error.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <string>

#include "concord/core/error.h"
#include "concord/core/files.h"
#include "concord/data/sampler.h"
#include "concord/diffusion/latent_data.h"
#include "concord/diffusion/unet_config.h"
#include "concord/io/safetensors.h"
#include "concord/train/batch.h"
#include "test_support.h"

using namespace concord;
using concord::diffusion::LatentBatch;
using concord::diffusion::LatentShards;
using concord::diffusion::LatentSpec;
using concord::testing::max_abs_diff;
using concord::testing::TempDir;
namespace fs = std::filesystem;

namespace {

// A shard's tensors with distinct, recognisable values (row r of latents starts at 1000 * r).
std::map<std::string, at::Tensor> shard_tensors(int64_t n, bool sdxl = true, int64_t C = 2,
                                                int64_t H = 3, int64_t W = 3, int64_t L = 2,
                                                int64_t D = 5, int64_t E = 4) {
  std::map<std::string, at::Tensor> t;
  auto values = [](std::vector<int64_t> shape, double offset) {
    int64_t per_row = 1;
    for (size_t i = 1; i < shape.size(); ++i) per_row *= shape[i];
    at::Tensor rows = at::arange(shape[0], at::kFloat).view({-1, 1}) * 1000.0;
    return (rows + at::arange(per_row, at::kFloat).view({1, -1}) * 0.25 + offset).view(shape);
  };
  t["latents"] = values({n, C, H, W}, 0.5);
  t["encoder_hidden_states"] = values({n, L, D}, -7.0);
  if (sdxl) {
    t["text_embeds"] = values({n, E}, 3.0);
    t["time_ids"] = values({n, 6}, 11.0);
  }
  return t;
}

// The message of the E that `f` throws; a test failure (and "") if it throws nothing.
template <typename E>
std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected an exception";
  return "";
}

void expect_mentions(const std::string& message, std::initializer_list<std::string> parts) {
  for (const auto& part : parts) {
    EXPECT_NE(message.find(part), std::string::npos)
        << "\"" << part << "\" missing from: " << message;
  }
}

// Opening `files` throws a FormatError that names each of `parts`.
void expect_open_fails(const std::vector<fs::path>& files,
                       std::initializer_list<std::string> parts, const LatentSpec& expected = {}) {
  expect_mentions(message_of<FormatError>([&] { LatentShards data(files, expected); }), parts);
}

}  // namespace

TEST(LatentShards, RoundTripAcrossShardBoundaries) {
  TempDir dir;
  diffusion::SyntheticLatentOptions options;
  options.samples = 10;
  options.samples_per_shard = 4;
  const auto paths = diffusion::write_synthetic_latents(dir.path(), options);
  ASSERT_EQ(paths.size(), 3u);

  LatentShards data(dir.path());
  EXPECT_EQ(data.size(), 10);
  EXPECT_EQ(data.shard_sizes(), (std::vector<int64_t>{4, 4, 2}));
  EXPECT_EQ(data.files(), paths);
  EXPECT_TRUE(data.has_text_embeds());
  EXPECT_TRUE(data.has_time_ids());
  const LatentSpec spec = data.spec();
  EXPECT_EQ(spec.channels, 4);
  EXPECT_EQ(spec.height, 16);
  EXPECT_EQ(spec.width, 16);
  EXPECT_EQ(spec.text_length, 8);
  EXPECT_EQ(spec.text_dim, 32);
  EXPECT_EQ(spec.text_embed_dim, 16);

  // What was written, concatenated in shard order.
  std::map<std::string, std::vector<at::Tensor>> parts;
  for (const auto& p : paths) {
    for (const auto& [name, t] : io::load_safetensors(p)) parts[name].push_back(t);
  }
  std::map<std::string, at::Tensor> all;
  for (const auto& [name, ts] : parts) all[name] = at::cat(ts);

  const std::vector<int64_t> indices{3, 4, 9, 0, 3, 8, 7};  // 3|4 and 7|8 straddle boundaries
  const LatentBatch b = data.get_batch(indices);
  const at::Tensor idx = at::tensor(indices, at::kLong);
  ASSERT_EQ(b.latents.sizes(), (std::vector<int64_t>{7, 4, 16, 16}));
  EXPECT_EQ(b.latents.scalar_type(), at::kFloat);
  EXPECT_TRUE(b.latents.equal(all["latents"].index_select(0, idx)));
  EXPECT_TRUE(b.encoder_hidden_states.equal(all["encoder_hidden_states"].index_select(0, idx)));
  EXPECT_TRUE(b.text_embeds.equal(all["text_embeds"].index_select(0, idx)));
  EXPECT_TRUE(b.time_ids.equal(all["time_ids"].index_select(0, idx)));
  // SDXL's micro-conditioning at native size: 8x the latent size.
  EXPECT_TRUE(b.time_ids[0].equal(at::tensor({128.f, 128.f, 0.f, 0.f, 128.f, 128.f})));

  EXPECT_EQ(data.get_batch({}).latents.size(0), 0);
  expect_mentions(message_of<Error>([&] { data.get_batch({10}); }), {"index 10", "[0, 10)"});
  expect_mentions(message_of<Error>([&] { data.get_batch({-1}); }), {"index -1"});
}

TEST(LatentShards, FileListOrderAndEmptyShardsDecideTheIndex) {
  TempDir dir;
  io::save_safetensors(dir / "a.safetensors", shard_tensors(2));
  io::save_safetensors(dir / "b.safetensors", shard_tensors(0));
  auto c = shard_tensors(3);
  for (auto& [name, t] : c) t = t + 0.125;  // tell c's rows from a's
  io::save_safetensors(dir / "c.safetensors", c);

  LatentShards data({dir / "c.safetensors", dir / "b.safetensors", dir / "a.safetensors"});
  EXPECT_EQ(data.size(), 5);
  EXPECT_EQ(data.shard_sizes(), (std::vector<int64_t>{3, 0, 2}));
  const LatentBatch b = data.get_batch({2, 3, 4});
  EXPECT_TRUE(b.latents[0].equal(c["latents"][2]));
  // Index 3 is past the empty shard: row 0 of a.
  EXPECT_TRUE(b.latents[1].equal(shard_tensors(2)["latents"][0]));
  EXPECT_TRUE(b.latents[2].equal(shard_tensors(2)["latents"][1]));

  // A folder opens in name order; a file alone opens as it is.
  EXPECT_EQ(LatentShards(dir.path()).shard_sizes(), (std::vector<int64_t>{2, 0, 3}));
  EXPECT_EQ(LatentShards(dir / "c.safetensors").size(), 3);
}

TEST(LatentShards, WriteLatentShardRoundTripsAndChecksTheBatch) {
  TempDir dir;
  auto t = shard_tensors(3, /*sdxl=*/false);
  LatentBatch in{t["latents"], t["encoder_hidden_states"], {}, {}};
  diffusion::write_latent_shard(dir / "s.safetensors", in, {{"ids", at::arange(3)}});
  LatentShards data(dir / "s.safetensors");
  EXPECT_FALSE(data.has_text_embeds());
  EXPECT_FALSE(data.has_time_ids());
  EXPECT_EQ(data.spec().text_embed_dim, 0);
  const LatentBatch out = data.get_batch({2, 0});
  const at::Tensor idx = at::tensor(std::vector<int64_t>{2, 0});
  EXPECT_TRUE(out.latents.equal(in.latents.index_select(0, idx)));
  EXPECT_FALSE(out.text_embeds.defined());
  EXPECT_FALSE(out.time_ids.defined());
  EXPECT_TRUE(io::load_safetensors(dir / "s.safetensors")["ids"].equal(at::arange(3)));

  LatentBatch bad = in;
  bad.encoder_hidden_states = in.encoder_hidden_states.narrow(0, 0, 2);
  expect_mentions(message_of<Error>([&] { diffusion::write_latent_shard(dir / "x", bad); }),
                  {"encoder_hidden_states", "2 rows"});
  bad = in;
  bad.time_ids = at::zeros({3, 5});
  expect_mentions(message_of<Error>([&] { diffusion::write_latent_shard(dir / "x", bad); }),
                  {"time_ids", "[N, 6]"});
  bad = in;
  bad.latents = in.latents.to(at::kLong);
  expect_mentions(message_of<Error>([&] { diffusion::write_latent_shard(dir / "x", bad); }),
                  {"latents", "floating point"});
  EXPECT_FALSE(fs::exists(dir / "x"));
}

TEST(LatentShards, MalformedShardsNameTheFileAndTheTensor) {
  TempDir dir;
  const fs::path good = dir / "0-good.safetensors";
  io::save_safetensors(good, shard_tensors(2));
  int serial = 0;
  // A second shard: shard_tensors(2) with `edit` applied.
  auto bad_shard = [&](const std::function<void(std::map<std::string, at::Tensor>&)>& edit) {
    auto t = shard_tensors(2);
    edit(t);
    const fs::path p = dir / ("bad-" + std::to_string(serial++) + ".safetensors");
    io::save_safetensors(p, t);
    return p;
  };

  for (const std::string name : {"latents", "encoder_hidden_states"}) {
    SCOPED_TRACE(name);
    const fs::path p = bad_shard([&](auto& t) { t.erase(name); });
    expect_open_fails({p}, {p.string(), "missing tensor \"" + name + "\""});
    expect_open_fails({good, p}, {p.string(), "missing tensor \"" + name + "\""});
  }
  {
    const fs::path p = bad_shard([](auto& t) { t["latents"] = t["latents"].flatten(2); });
    expect_open_fails({p}, {p.string(), "\"latents\"", "rank 3", "[N, C, H, W]"});
  }
  {
    const fs::path p =
        bad_shard([](auto& t) { t["text_embeds"] = t["text_embeds"].view({2, 2, 2}); });
    expect_open_fails({p}, {p.string(), "\"text_embeds\"", "rank 3", "[N, E]"});
  }
  for (const std::string name : {"latents", "encoder_hidden_states", "text_embeds", "time_ids"}) {
    SCOPED_TRACE(name);
    const fs::path p = bad_shard([&](auto& t) { t[name] = t[name].to(at::kInt); });
    expect_open_fails({p}, {p.string(), "\"" + name + "\"", "dtype I32", "floating"});
  }
  for (const std::string name : {"encoder_hidden_states", "text_embeds", "time_ids"}) {
    SCOPED_TRACE(name);
    const fs::path p = bad_shard([&](auto& t) { t[name] = at::cat({t[name], t[name]}); });
    expect_open_fails({p}, {p.string(), "\"" + name + "\" has 4 rows", "\"latents\" has 2"});
  }
  {
    const fs::path p = bad_shard([](auto& t) { t["time_ids"] = t["time_ids"].narrow(1, 0, 5); });
    expect_open_fails({p}, {p.string(), "\"time_ids\"", "[2, 5]", "[N, 6]"});
  }
  {
    const fs::path p = bad_shard([](auto& t) { t["latents"] = at::zeros({2, 0, 3, 3}); });
    expect_open_fails({p}, {p.string(), "\"latents\"", "[2, 0, 3, 3]", "positive"});
  }

  // Shapes that differ from the first shard's, one dimension at a time.
  struct Case {
    const char* tensor;
    const char* letter;
    std::map<std::string, at::Tensor> tensors;
  };
  const std::vector<Case> cases{
      {"latents", "C = 3", shard_tensors(2, true, 3)},
      {"latents", "H = 4", shard_tensors(2, true, 2, 4)},
      {"latents", "W = 5", shard_tensors(2, true, 2, 3, 5)},
      {"encoder_hidden_states", "L = 6", shard_tensors(2, true, 2, 3, 3, 6)},
      {"encoder_hidden_states", "D = 7", shard_tensors(2, true, 2, 3, 3, 2, 7)},
      {"text_embeds", "E = 8", shard_tensors(2, true, 2, 3, 3, 2, 5, 8)},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.letter);
    const fs::path p = dir / ("shape-" + std::to_string(serial++) + ".safetensors");
    io::save_safetensors(p, c.tensors);
    expect_open_fails({good, p}, {p.string(), std::string("\"") + c.tensor + "\"", c.letter,
                                  good.string(), "same shapes"});
  }

  // Optional tensors in some shards but not others, both ways round.
  const fs::path plain = dir / "plain.safetensors";
  io::save_safetensors(plain, shard_tensors(2, /*sdxl=*/false));
  expect_open_fails({good, plain}, {plain.string(), "missing tensor \"text_embeds\"",
                                    good.string(), "every shard"});
  expect_open_fails({plain, good},
                    {good.string(), "has tensor \"text_embeds\"", plain.string(), "lacks"});
  const fs::path no_time = bad_shard([](auto& t) { t.erase("time_ids"); });
  expect_open_fails({good, no_time}, {no_time.string(), "missing tensor \"time_ids\""});

  // No samples at all; a missing path; a folder without shards.
  const fs::path empty = dir / "empty.safetensors";
  io::save_safetensors(empty, shard_tensors(0));
  expect_open_fails({empty, empty}, {empty.string(), "no samples"});
  expect_mentions(message_of<IoError>([&] { LatentShards d(dir / "nope"); }), {"nope"});
  TempDir none;
  concord::testing::write_file(none / "notes.txt", "not a shard");
  expect_mentions(message_of<IoError>([&] { LatentShards d(none.path()); }),
                  {none.path().string(), "no *.safetensors"});

  // A non-finite value is reported where a batch reads it.
  const fs::path nan = bad_shard([](auto& t) { t["encoder_hidden_states"][1][0][3] = NAN; });
  LatentShards data(nan);
  EXPECT_NO_THROW(data.get_batch({0}));
  expect_mentions(message_of<FormatError>([&] { data.get_batch({0, 1}); }),
                  {nan.string(), "\"encoder_hidden_states\" row 1", "non-finite"});
}

TEST(LatentShards, ChecksTheShapesTheUNetExpects) {
  // SDXL base: 2816 = 1280 (pooled OpenCLIP-bigG embedding) + 6 x 256 (time ids).
  diffusion::UNetConfig sdxl;
  sdxl.in_channels = 4;
  sdxl.cross_attention_dim = 2048;
  sdxl.addition_embed_type = "text_time";
  sdxl.addition_time_embed_dim = 256;
  sdxl.projection_class_embeddings_input_dim = 2816;
  const LatentSpec want = diffusion::latent_spec_for(sdxl);
  EXPECT_EQ(want.channels, 4);
  EXPECT_EQ(want.text_dim, 2048);
  EXPECT_EQ(want.text_embed_dim, 1280);
  EXPECT_EQ(want.height, 0);
  EXPECT_EQ(want.text_length, 0);
  sdxl.addition_embed_type = "";
  EXPECT_EQ(diffusion::latent_spec_for(sdxl).text_embed_dim, 0);

  TempDir dir;
  const fs::path p = dir / "s.safetensors";
  io::save_safetensors(p, shard_tensors(2));  // C 2, H 3, W 3, L 2, D 5, E 4
  EXPECT_EQ(LatentShards(p, LatentSpec{2, 3, 3, 2, 5, 4}).size(), 2);
  EXPECT_EQ(LatentShards(p, LatentSpec{2, 0, 0, 0, 5, 0}).size(), 2);

  expect_open_fails({p}, {p.string(), "\"latents\"", "C = 2", "expects 4"}, LatentSpec{4});
  expect_open_fails({p}, {p.string(), "\"latents\"", "W = 3", "expects 8"},
                    LatentSpec{0, 0, 8});
  expect_open_fails({p}, {p.string(), "\"encoder_hidden_states\"", "D = 5", "expects 2048"},
                    LatentSpec{0, 0, 0, 0, 2048});
  expect_open_fails({p}, {p.string(), "\"text_embeds\"", "E = 4", "expects 1280"},
                    LatentSpec{0, 0, 0, 0, 0, 1280});
  // A U-Net with text_time conditioning cannot train on data without it.
  const fs::path plain = dir / "plain.safetensors";
  io::save_safetensors(plain, shard_tensors(2, /*sdxl=*/false));
  expect_open_fails({plain}, {plain.string(), "missing tensor \"text_embeds\"", "text_time"},
                    LatentSpec{0, 0, 0, 0, 0, 4});
  const fs::path no_time = dir / "no_time.safetensors";
  auto t = shard_tensors(2);
  t.erase("time_ids");
  io::save_safetensors(no_time, t);
  EXPECT_EQ(LatentShards(no_time).size(), 2);  // fine for a U-Net without text_time
  expect_open_fails({no_time}, {no_time.string(), "missing tensor \"time_ids\""},
                    LatentSpec{0, 0, 0, 0, 0, 4});
}

TEST(LatentShards, HalfPrecisionShardsComeBackAsRoundedFloat32) {
  TempDir dir;
  auto t = shard_tensors(3);
  // Values that fp16 and bf16 cannot hold exactly.
  for (auto& [name, v] : t) v = (v * 0.0137).sin() * 3.3;
  const std::map<std::string, at::ScalarType> types{{"latents", at::kHalf},
                                                    {"encoder_hidden_states", at::kBFloat16},
                                                    {"text_embeds", at::kDouble},
                                                    {"time_ids", at::kHalf}};
  std::map<std::string, at::Tensor> stored;
  for (const auto& [name, type] : types) stored[name] = t[name].to(type);
  io::save_safetensors(dir / "h.safetensors", stored);

  LatentShards data(dir / "h.safetensors");
  const LatentBatch b = data.get_batch({2, 0, 1});
  const at::Tensor idx = at::tensor(std::vector<int64_t>{2, 0, 1});
  const std::map<std::string, at::Tensor> got{{"latents", b.latents},
                                              {"encoder_hidden_states", b.encoder_hidden_states},
                                              {"text_embeds", b.text_embeds},
                                              {"time_ids", b.time_ids}};
  for (const auto& [name, type] : types) {
    SCOPED_TRACE(name);
    EXPECT_EQ(got.at(name).scalar_type(), at::kFloat);
    const at::Tensor want = stored[name].index_select(0, idx).to(at::kFloat);
    EXPECT_TRUE(got.at(name).equal(want));
    if (type != at::kDouble) {
      // Rounded, so not the fp32 values: the test would pass vacuously otherwise.
      EXPECT_GT(max_abs_diff(got.at(name), t[name].index_select(0, idx)), 1e-5);
    }
  }
}

TEST(LatentShards, SampledBatchesYieldsLatentBatches) {
  TempDir dir;
  diffusion::SyntheticLatentOptions options;
  options.samples = 10;
  options.samples_per_shard = 4;
  options.channels = 3;
  options.height = 8;
  options.width = 6;
  diffusion::write_synthetic_latents(dir.path(), options);
  LatentShards data(dir.path());

  data::SamplerOptions sampling;
  sampling.batch_size = 4;
  sampling.seed = 7;
  train::SampledBatches<LatentShards, LatentBatch> batches(data, sampling);
  data::BatchSampler sampler(data.size(), sampling);
  EXPECT_EQ(batches.batches_per_epoch(), 3);
  std::vector<int> seen(10, 0);
  for (int i = 0; i < 3; ++i) {
    const std::vector<int64_t> indices = sampler.next();
    const LatentBatch b = batches.next();
    const int64_t n = static_cast<int64_t>(indices.size());
    EXPECT_EQ(b.latents.sizes(), (std::vector<int64_t>{n, 3, 8, 6}));
    EXPECT_EQ(b.encoder_hidden_states.sizes(), (std::vector<int64_t>{n, 8, 32}));
    EXPECT_EQ(b.text_embeds.sizes(), (std::vector<int64_t>{n, 16}));
    EXPECT_EQ(b.time_ids.sizes(), (std::vector<int64_t>{n, 6}));
    EXPECT_TRUE(b.latents.equal(data.get_batch(indices).latents));
    for (int64_t j : indices) ++seen[j];
  }
  EXPECT_EQ(seen, std::vector<int>(10, 1));  // one epoch visits every sample once
}

TEST(LatentShards, SyntheticLatentsAreConditionalAndDeterministic) {
  TempDir dir;
  diffusion::SyntheticLatentOptions options;  // 256 samples, 4 classes, 4 x 16 x 16
  const auto paths = diffusion::write_synthetic_latents(dir.path(), options);
  ASSERT_EQ(paths.size(), 2u);
  LatentShards data(dir.path());
  std::vector<int64_t> all(256);
  for (int64_t i = 0; i < 256; ++i) all[i] = i;
  const LatentBatch b = data.get_batch(all);
  const at::Tensor k = at::cat({io::load_safetensors(paths[0])["class_ids"],
                                io::load_safetensors(paths[1])["class_ids"]});
  ASSERT_EQ(k.size(0), 256);

  // Unit variance overall, as the header promises.
  const double var = b.latents.to(at::kDouble).var().item<double>();
  EXPECT_NEAR(var, 1.0, 0.1);

  // Per class: the mean latent and prompt, and the spread around them.
  const at::Tensor x = b.latents.reshape({256, -1}).to(at::kDouble);
  const at::Tensor s = b.encoder_hidden_states.reshape({256, -1}).to(at::kDouble);
  std::vector<at::Tensor> mean_x, mean_s;
  double within_x = 0, within_s = 0;
  for (int64_t c = 0; c < 4; ++c) {
    const at::Tensor rows = (k == c).nonzero().view(-1);
    ASSERT_GT(rows.size(0), 20) << "class " << c;
    const at::Tensor xc = x.index_select(0, rows), sc = s.index_select(0, rows);
    mean_x.push_back(xc.mean(0));
    mean_s.push_back(sc.mean(0));
    within_x += (xc - mean_x.back()).pow(2).sum().item<double>();
    within_s += (sc - mean_s.back()).pow(2).sum().item<double>();
  }
  // RMS distance of a sample to its class mean.
  within_x = std::sqrt(within_x / 256);
  within_s = std::sqrt(within_s / 256);
  for (int a = 0; a < 4; ++a) {
    for (int c = a + 1; c < 4; ++c) {
      const double between_x = (mean_x[a] - mean_x[c]).norm().item<double>();
      const double between_s = (mean_s[a] - mean_s[c]).norm().item<double>();
      EXPECT_GT(between_x, 4 * within_x) << a << " vs " << c;
      EXPECT_GT(between_s, 5 * within_s) << a << " vs " << c;
    }
  }
  // The class explains nearly all of the latents' variance (1 - 0.2^2 of it by construction),
  // so a model conditioned on the prompt can predict them and one that ignores it cannot.
  const double total = (x - x.mean(0)).pow(2).sum().item<double>() / 256;
  EXPECT_GT(1.0 - within_x * within_x / total, 0.9);
  // The pooled embedding is conditional too: same class, nearly the same embedding.
  const at::Tensor p = b.text_embeds.to(at::kDouble);
  const at::Tensor same = (k == k[0]).nonzero().view(-1);
  const at::Tensor other = (k != k[0]).nonzero().view(-1);
  EXPECT_LT((p[same[1]] - p[0]).norm().item<double>() * 3,
            (p[other[0]] - p[0]).norm().item<double>());

  // Same options, same bytes; another seed, other data.
  TempDir again, reseeded;
  diffusion::write_synthetic_latents(again.path(), options);
  EXPECT_EQ(read_file(again / "latents-00001.safetensors"), read_file(paths[1]));
  options.seed = 1;
  diffusion::write_synthetic_latents(reseeded.path(), options);
  EXPECT_NE(read_file(reseeded / "latents-00001.safetensors"), read_file(paths[1]));

  // It will not mix its shards with others already in the folder.
  io::save_safetensors(reseeded / "other.safetensors", shard_tensors(1));
  expect_mentions(
      message_of<Error>([&] { diffusion::write_synthetic_latents(reseeded.path(), options); }),
      {"other.safetensors", "empty folder"});
  // Without SDXL conditioning: no text_embeds, no time_ids.
  TempDir plain;
  options.sdxl_conditioning = false;
  diffusion::write_synthetic_latents(plain.path(), options);
  LatentShards plain_data(plain.path());
  EXPECT_FALSE(plain_data.has_text_embeds());
  EXPECT_FALSE(plain_data.has_time_ids());
}

TEST(LatentShards, CorruptFilesFailWithAnErrorNeverACrash) {
  TempDir dir;
  const fs::path good = dir / "good.safetensors";
  io::save_safetensors(good, shard_tensors(3, true, 2, 2, 2, 2, 3, 2));
  const std::string bytes = read_file(good);
  uint64_t header = 0;
  std::memcpy(&header, bytes.data(), 8);
  ASSERT_LT(8 + header, bytes.size());

  int opened = 0, refused = 0;
  auto attempt = [&](const std::string& contents) {
    const fs::path p = dir / "fuzz.safetensors";
    {
      std::ofstream out(p, std::ios::binary | std::ios::trunc);
      out.write(contents.data(), static_cast<std::streamsize>(contents.size()));
    }
    try {
      LatentShards data(p);
      std::vector<int64_t> every(data.size());
      for (int64_t i = 0; i < data.size(); ++i) every[i] = i;
      data.get_batch(every);
      ++opened;
    } catch (const Error&) {
      ++refused;  // any concord::Error: a FormatError, or one from the header parser
    }
  };
  // Every truncation.
  for (size_t n = 0; n < bytes.size(); ++n) attempt(bytes.substr(0, n));
  EXPECT_EQ(refused, static_cast<int>(bytes.size()));
  // Every header byte overwritten with characters that change numbers, nesting and strings.
  for (size_t i = 0; i < 8 + header; ++i) {
    for (char c : {'9', ']', '"', '\xff'}) {
      std::string mutated = bytes;
      mutated[i] = c;
      attempt(mutated);
    }
  }
  // Data bytes overwritten with 0xff (NaN in F32): found when a batch reads them.
  for (size_t i = 8 + header; i < bytes.size(); i += 3) {
    std::string mutated = bytes;
    mutated[i] = '\xff';
    if (i % 4 == 3) mutated[i - 1] = '\xff';  // F32's top bytes: exponent all ones
    attempt(mutated);
  }
  EXPECT_GT(opened, 0);   // some mutations are harmless (a space in the padding, a digit)
  EXPECT_GT(refused, 0);
}
