// Seeded shuffling, resumable cursor, rank sharding.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <set>

#include "concord/core/error.h"
#include "concord/data/pretrain.h"
#include "concord/data/sampler.h"
#include "concord/text/byte_tokenizer.h"

using namespace concord;
using namespace concord::data;

TEST(Sampler, ResumedRunContinuesIdentically) {
  SamplerOptions opt;
  opt.batch_size = 4;
  opt.seed = 1234;
  // 37 items: 10 batches per epoch (the last one has 1 item), so the run crosses epochs.
  BatchSampler full(37, opt);
  std::vector<std::vector<int64_t>> uninterrupted;
  for (int i = 0; i < 35; ++i) uninterrupted.push_back(full.next());

  BatchSampler first(37, opt);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(first.next(), uninterrupted[static_cast<size_t>(i)]);
  // Save through text, as a checkpoint would, and continue in a new object.
  std::string saved = first.state().dump();
  SamplerOptions other = opt;
  other.seed = 99;  // the saved seed wins
  BatchSampler resumed(37, other);
  resumed.load_state(nlohmann::json::parse(saved));
  EXPECT_EQ(resumed.epoch(), 0);
  EXPECT_EQ(resumed.position(), 10);
  for (int i = 10; i < 35; ++i) {
    EXPECT_EQ(resumed.next(), uninterrupted[static_cast<size_t>(i)]) << "batch " << i;
  }
  EXPECT_EQ(resumed.epoch(), 3);
  EXPECT_EQ(resumed.state(), full.state());
}

TEST(Sampler, EpochsArePermutationsThatReshuffleDeterministically) {
  SamplerOptions opt;
  opt.batch_size = 5;
  opt.seed = 7;
  BatchSampler s(20, opt);
  std::vector<int64_t> e0, e1;
  for (int i = 0; i < 4; ++i) for (int64_t x : s.next()) e0.push_back(x);
  for (int i = 0; i < 4; ++i) for (int64_t x : s.next()) e1.push_back(x);
  std::vector<int64_t> sorted0 = e0, sorted1 = e1, all(20);
  std::sort(sorted0.begin(), sorted0.end());
  std::sort(sorted1.begin(), sorted1.end());
  std::iota(all.begin(), all.end(), 0);
  EXPECT_EQ(sorted0, all);
  EXPECT_EQ(sorted1, all);
  EXPECT_NE(e0, e1);
  EXPECT_EQ(e0, BatchSampler::permutation(20, 7, 0));
  EXPECT_EQ(e1, BatchSampler::permutation(20, 7, 1));
  EXPECT_NE(BatchSampler::permutation(20, 8, 0), e0);
  // seed 0 / epoch 1 and seed 1 / epoch 0 are different orders (the pair is hashed, not summed).
  EXPECT_NE(BatchSampler::permutation(50, 0, 1), BatchSampler::permutation(50, 1, 0));
  // Pinned values: the order is fixed by the standard's mt19937_64, on every platform. A change
  // here silently changes every resumed run, so it must be deliberate.
  EXPECT_EQ(BatchSampler::permutation(8, 0, 0), (std::vector<int64_t>{7, 4, 0, 1, 5, 2, 3, 6}));
  EXPECT_EQ(BatchSampler::permutation(8, 42, 3), (std::vector<int64_t>{5, 7, 3, 0, 6, 4, 1, 2}));
}

TEST(Sampler, RanksSeeDisjointNearEqualSlicesWhoseUnionIsAll) {
  const int64_t n = 103, world = 4;
  for (bool shuffle : {true, false}) {
    std::vector<int64_t> seen;
    std::vector<size_t> sizes;
    for (int64_t r = 0; r < world; ++r) {
      SamplerOptions opt;
      opt.batch_size = 8;
      opt.seed = 5;
      opt.shuffle = shuffle;
      opt.rank = r;
      opt.world_size = world;
      BatchSampler s(n, opt);
      auto items = s.epoch_items(0);
      EXPECT_EQ(items, BatchSampler(n, opt).epoch_items(0));  // deterministic
      size_t got = 0;
      for (int64_t b = 0; b < s.batches_per_epoch(); ++b) {
        auto batch = s.next();
        seen.insert(seen.end(), batch.begin(), batch.end());
        got += batch.size();
      }
      EXPECT_EQ(got, items.size());
      sizes.push_back(items.size());
    }
    EXPECT_EQ(sizes, (std::vector<size_t>{26, 26, 26, 25}));
    std::sort(seen.begin(), seen.end());
    std::vector<int64_t> all(n);
    std::iota(all.begin(), all.end(), 0);
    EXPECT_EQ(seen, all);  // disjoint (no repeats) and complete
  }
  SamplerOptions even;
  even.rank = 3;
  even.world_size = world;
  even.even_shards = true;
  EXPECT_EQ(BatchSampler(n, even).epoch_items(0).size(), 25u);
}

TEST(Sampler, RejectsAStateFromOtherData) {
  SamplerOptions opt;
  opt.batch_size = 2;
  BatchSampler a(10, opt);
  a.next();
  BatchSampler b(11, opt);
  try {
    b.load_state(a.state());
    FAIL();
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "sampler state: key 'num_items' is 10 in the saved state but 11 here "
                           "(resuming on different data or settings)");
  }
  nlohmann::json bad = a.state();
  bad["position"] = 99;
  EXPECT_THROW(BatchSampler(10, opt).load_state(bad), Error);
  bad.erase("position");
  EXPECT_THROW(BatchSampler(10, opt).load_state(bad), Error);
}

TEST(Sampler, DataLoaderDrivesADataset) {
  text::ByteTokenizer tok;
  auto ds = PretrainDataset::from_texts({"abcdefgh", "ijklmnop"}, tok, 3);  // 18 tokens, 5 blocks
  SamplerOptions opt;
  opt.batch_size = 2;
  opt.shuffle = false;
  opt.drop_last = true;
  DataLoader<PretrainDataset> loader(ds, opt);
  EXPECT_EQ(loader.sampler().batches_per_epoch(), 2);
  LmBatch b0 = loader.next();
  LmBatch b1 = loader.next();
  LmBatch b2 = loader.next();  // epoch 1 starts again at block 0 (no shuffle)
  EXPECT_TRUE(at::equal(b0.input_ids, ds.get_batch({0, 1}).input_ids));
  EXPECT_TRUE(at::equal(b1.targets, ds.get_batch({2, 3}).targets));
  EXPECT_TRUE(at::equal(b2.input_ids, b0.input_ids));
  EXPECT_EQ(loader.sampler().epoch(), 1);
}
