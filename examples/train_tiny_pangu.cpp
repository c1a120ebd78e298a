// Train a tiny PanGu-π language model from C++ and save it as a Hugging Face folder.
//
//   build/examples/example_train_tiny_pangu OUT_DIR [STEPS]
//
// What it shows: a model built from a config (PanGu-π: series informed activation in the FFN,
// augmented shortcuts beside attention), byte-level pretraining data from the built-in corpus,
// the generic Trainer with the next-token objective, a run folder with metrics.jsonl and
// checkpoints, then lm::save_pretrained (config.json + model.safetensors under transformers'
// names) and lm::load_pretrained of that folder giving back the same logits.
// ci: @OUT@ 40
// ci-expect: reloaded logits differ by 0
#include <ATen/ATen.h>

#include <cstdlib>
#include <iostream>
#include <string>

#include "concord/core/error.h"
#include "concord/core/report.h"
#include "concord/core/runtime.h"
#include "concord/data/builtin_corpus.h"
#include "concord/data/pretrain.h"
#include "concord/lm/causal_lm.h"
#include "concord/lm/hf_checkpoint.h"
#include "concord/lm/model_config.h"
#include "concord/text/byte_tokenizer.h"
#include "concord/train/batch.h"
#include "concord/train/next_token.h"
#include "concord/train/trainer.h"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: example_train_tiny_pangu OUT_DIR [STEPS]\n";
    return 2;
  }
  try {
    concord::init_runtime();
    concord::seed_everything(1234);
    const std::string out = argv[1];
    const int64_t steps = argc > 2 ? std::stoll(argv[2]) : 60;

    // The model: configs/models/tiny-pangu-pi.json, written inline so the example runs anywhere.
    const auto config = concord::lm::model_config_from_json(concord::parse_json(R"({
        "family": "pangu_pi", "vocab_size": 257, "hidden_size": 64, "num_layers": 2,
        "num_heads": 4, "intermediate_size": 160, "max_position_embeddings": 256,
        "bos_token_id": 256, "eos_token_id": 256, "pad_token_id": 256,
        "siaf": {"terms": 2, "activation": "silu", "neighbour_kernel": 3},
        "augmented_shortcut": {"paths": 2, "reduction": 8}})", "inline config"), "inline config");
    concord::lm::CausalLM model(config);
    std::cout << "PanGu-pi model: " << model->num_parameters() << " parameters\n";

    // Data: 64-byte blocks of the built-in corpus, the last eighth held out.
    const concord::text::ByteTokenizer tokenizer;
    const auto blocks = concord::data::PretrainDataset::from_texts(
        concord::data::builtin_corpus(200), tokenizer, 64);
    using Slice = concord::train::DatasetSlice<concord::data::PretrainDataset>;
    const int64_t held_out = blocks.size() / 8;
    const Slice train_part(blocks, 0, blocks.size() - held_out);
    const Slice eval_part(blocks, blocks.size() - held_out, blocks.size());
    concord::train::SampledBatches<Slice> train(train_part, {16, true, 1});
    concord::train::SampledBatches<Slice> eval(eval_part, {16, false});

    // Training: AdamW with warm-up and cosine decay, every parameter in one group.
    concord::train::TrainerOptions options;
    options.max_steps = steps;
    options.optimizer.lr = 3e-3;
    options.warmup_steps = steps / 10;
    options.eval_every = steps / 2 > 0 ? steps / 2 : 1;
    concord::train::Trainer trainer({{"model", model.ptr()}}, options);
    concord::train::NextTokenObjective objective(model);
    const double before = trainer.evaluate(objective, eval).loss;
    concord::RunDirectory run(out + "/run");
    const auto result = trainer.fit(objective, train, &eval, &run);
    std::cout << "held-out loss " << before << " -> " << *result.final_eval_loss
              << " nats/byte after " << result.steps << " steps\n";

    // Export as a Hugging Face folder and read it back.
    concord::lm::save_pretrained(model, out + "/model");
    auto reloaded = concord::lm::load_pretrained(out + "/model");
    model->eval();
    const at::Tensor ids = eval.next().input_ids;
    const double diff = (model->forward(ids) - reloaded->forward(ids)).abs().max().item<double>();
    std::cout << "saved " << out << "/model (config.json + model.safetensors); reloaded logits "
              << "differ by " << diff << "\n";
    return diff == 0.0 && *result.final_eval_loss < before ? 0 : 1;
  } catch (const std::exception& e) {
    std::cerr << "example_train_tiny_pangu: " << concord::one_line_message(e) << "\n";
    return 1;
  }
}
