// The synthetic pool: every response is correct by its own verifier, seeds reproduce, held-out
// instructions stay unseen.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <set>

#include "concord/core/error.h"
#include "concord/data/grape_pool.h"
#include "concord/grape/synthetic_pool.h"

namespace concord::grape {
namespace {

SyntheticPoolOptions small() {
  SyntheticPoolOptions o;
  o.train_instructions = 300;
  o.heldout_instructions = 60;
  o.pretraining_documents = 40;
  o.seed = 99;
  return o;
}

TEST(SyntheticPool, EveryResponseVerifiesAsCorrect) {
  const auto pool = make_synthetic_pool(small());
  ASSERT_EQ(pool.train.size(), 300u);
  ASSERT_EQ(pool.train_items.size(), 300u);
  ASSERT_EQ(pool.heldout.size(), 60u);
  std::set<std::string> tasks;
  for (size_t i = 0; i < pool.train.size(); ++i) {
    const auto& p = pool.train[i];
    const auto& item = pool.train_items[i];
    EXPECT_EQ(p.id, item.id);
    EXPECT_EQ(p.instruction, item.instruction);
    tasks.insert(item.task);
    std::set<std::string> sources;
    for (const auto& r : p.responses) {
      sources.insert(r.source);
      EXPECT_TRUE(verify_synthetic_answer(item, r.text))
          << item.instruction << " / " << r.source << ": " << r.text;
    }
    EXPECT_EQ(sources, (std::set<std::string>{"terse", "sentence", "steps", "base_style"}));
  }
  EXPECT_EQ(tasks.size(), 7u);  // every family drawn
  for (const auto& item : pool.heldout) {
    for (const auto& s : synthetic_sources()) {
      EXPECT_TRUE(verify_synthetic_answer(item, synthetic_response(item, s))) << item.instruction;
    }
  }
}

TEST(SyntheticPool, AnswersAreRight) {
  SyntheticItem add{"x", "add", "What is 37 plus 45?", "82"};
  EXPECT_EQ(synthetic_response(add, "terse"), "82");
  EXPECT_EQ(synthetic_response(add, "sentence"), "The answer is 82.");
  EXPECT_EQ(synthetic_response(add, "base_style"), "So the result is 82.");
  EXPECT_EQ(synthetic_response(add, "steps"), "We add 37 and 45.\n37 + 45 = 82.\nThe answer is 82.");
  // The generator's answers, recomputed here from the instruction text.
  const auto pool = make_synthetic_pool(small());
  int checked = 0;
  for (const auto& it : pool.train_items) {
    int a = 0, b = 0;
    char word[64];
    if (std::sscanf(it.instruction.c_str(), "What is %d plus %d?", &a, &b) == 2) {
      EXPECT_EQ(it.answer, std::to_string(a + b));
      ++checked;
    } else if (std::sscanf(it.instruction.c_str(), "What is %d minus %d?", &a, &b) == 2) {
      EXPECT_EQ(it.answer, std::to_string(a - b));
      EXPECT_GE(a - b, 0);
      ++checked;
    } else if (std::sscanf(it.instruction.c_str(), "What is %d times %d?", &a, &b) == 2) {
      EXPECT_EQ(it.answer, std::to_string(a * b));
      ++checked;
    } else if (std::sscanf(it.instruction.c_str(), "Reverse the word '%63[a-z]'.", word) == 1) {
      const std::string w(word);
      EXPECT_EQ(it.answer, std::string(w.rbegin(), w.rend()));
      ++checked;
    } else if (it.task == "count") {
      char letter = 0;
      ASSERT_EQ(std::sscanf(it.instruction.c_str(),
                            "How many times does the letter '%c' appear in '%63[a-z]'?", &letter,
                            word), 2) << it.instruction;
      const std::string w(word);
      EXPECT_EQ(it.answer, std::to_string(std::count(w.begin(), w.end(), letter)));
      ++checked;
    } else if (std::sscanf(it.instruction.c_str(), "Write '%63[A-Z]' in small letters.", word) == 1) {
      std::string low(word);
      for (char& c : low) c = static_cast<char>(c - 'A' + 'a');
      EXPECT_EQ(it.answer, low);
      ++checked;
    } else {
      ASSERT_EQ(std::sscanf(it.instruction.c_str(), "Write '%63[a-z]' in capital letters.", word), 1)
          << it.instruction;
      std::string up(word);
      for (char& c : up) c = static_cast<char>(c - 'a' + 'A');
      EXPECT_EQ(it.answer, up);
      ++checked;
    }
  }
  EXPECT_EQ(checked, 300);
}

TEST(SyntheticPool, VerifierRejectsWrongAnswersAndReadsRamblingOutputs) {
  SyntheticItem add{"x", "add", "What is 37 plus 45?", "82"};
  EXPECT_FALSE(verify_synthetic_answer(add, "83"));
  EXPECT_FALSE(verify_synthetic_answer(add, "The answer is 83."));
  EXPECT_FALSE(verify_synthetic_answer(add, ""));
  EXPECT_FALSE(verify_synthetic_answer(add, "eighty-two"));
  EXPECT_TRUE(verify_synthetic_answer(add, " 82\nQuestion: What is 1 plus 1?\nAnswer: 2"));
  EXPECT_TRUE(verify_synthetic_answer(add, "So the result is 82. And then the answer is 5."));
  EXPECT_TRUE(verify_synthetic_answer(add, "\n\n082"));  // numbers compare as integers
  SyntheticItem up{"y", "upper", "Write 'stone' in capital letters.", "STONE"};
  EXPECT_FALSE(verify_synthetic_answer(up, "stone"));  // case is the task
  EXPECT_TRUE(verify_synthetic_answer(up, "The answer is STONE."));
  EXPECT_EQ(extract_synthetic_answer("We add 1 and 2.\n1 + 2 = 3.\nThe answer is 3."), "3");
}

TEST(SyntheticPool, SeedsReproduceAndHeldOutStaysUnseen) {
  const auto a = make_synthetic_pool(small());
  const auto b = make_synthetic_pool(small());
  auto dump = [](const SyntheticPool& p) {
    std::string s;
    for (const auto& x : p.train) s += data::grape_pool_to_json(x).dump() + "\n";
    for (const auto& x : p.heldout) s += x.to_json().dump() + "\n";
    for (const auto& x : p.pretraining) s += x + "\n";
    return s;
  };
  EXPECT_EQ(dump(a), dump(b));
  auto other = small();
  other.seed = 100;
  EXPECT_NE(dump(make_synthetic_pool(other)), dump(a));

  // The draws use no std distribution, so a seed gives these instructions on every platform.
  EXPECT_EQ(a.heldout[0].id, "heldout-00001");
  EXPECT_EQ(a.heldout[0].instruction, "Write 'OTOCDRT' in small letters.");
  EXPECT_EQ(a.train[0].instruction, "Write 'msot' in capital letters.");

  // Disjoint splits; no pretraining fact states a held-out instruction.
  std::set<std::string> train;
  for (const auto& p : a.train) train.insert(p.instruction);
  EXPECT_EQ(train.size(), a.train.size());
  for (const auto& h : a.heldout) {
    EXPECT_EQ(train.count(h.instruction), 0u) << h.instruction;
    for (const auto& doc : a.pretraining) {
      EXPECT_EQ(doc.find(h.instruction + " "), std::string::npos) << h.instruction;
    }
  }
  // Pretraining facts are in the base style.
  ASSERT_EQ(a.pretraining.size(), 40u);
  EXPECT_NE(a.pretraining[0].find("So the result is "), std::string::npos);
  EXPECT_EQ(std::count(a.pretraining[0].begin(), a.pretraining[0].end(), '\n'), 7);  // 8 facts

  // The held-out split does not move when the training set grows.
  auto more = small();
  more.train_instructions = 500;
  const auto c = make_synthetic_pool(more);
  for (size_t i = 0; i < a.heldout.size(); ++i) EXPECT_EQ(c.heldout[i].instruction, a.heldout[i].instruction);
}

TEST(SyntheticPool, PretrainingStylesAreChosenPerFamily) {
  auto o = small();
  o.tasks = {"upper", "count"};
  o.pretraining_styles = {{"count", "sentence"}};
  const auto pool = make_synthetic_pool(o);
  int upper = 0, count = 0;
  for (const auto& doc : pool.pretraining) {
    size_t from = 0;
    while (from < doc.size()) {
      const size_t end = std::min(doc.find('\n', from), doc.size());
      const std::string fact = doc.substr(from, end - from);
      if (fact.rfind("Write '", 0) == 0) {
        EXPECT_NE(fact.find(" in capital letters. So the result is "), std::string::npos) << fact;
        ++upper;
      } else {
        EXPECT_NE(fact.find("? The answer is "), std::string::npos) << fact;
        EXPECT_EQ(fact.find("result is"), std::string::npos) << fact;
        ++count;
      }
      from = end + 1;
    }
  }
  EXPECT_GT(upper, 100);
  EXPECT_GT(count, 100);
  o.pretraining_styles = {{"count", "steps"}};
  EXPECT_THROW(make_synthetic_pool(o), Error);  // a multi-line style is no one-line fact
  o.pretraining_styles = {{"divide", "terse"}};
  EXPECT_THROW(make_synthetic_pool(o), Error);
}

TEST(SyntheticPool, PretrainingLineBreaksMoveTheResponseToItsOwnLine) {
  auto o = small();
  o.tasks = {"upper"};
  const auto spaced = make_synthetic_pool(o);
  o.pretraining_line_breaks = 0.5;
  const auto broken = make_synthetic_pool(o);
  // The same facts, in the same order, only the gap changes: the layout draws from a stream of
  // its own, so the instructions and the training pool stay where they were.
  ASSERT_EQ(broken.pretraining.size(), spaced.pretraining.size());
  EXPECT_EQ(broken.train_items.front().instruction, spaced.train_items.front().instruction);
  int own_line = 0, same_line = 0;
  for (size_t d = 0; d < spaced.pretraining.size(); ++d) {
    std::string respaced = broken.pretraining[d];
    size_t at = 0;
    while ((at = respaced.find("letters.\nSo the result is ", at)) != std::string::npos) {
      respaced[at + 8] = ' ';
      ++own_line;
    }
    EXPECT_EQ(respaced, spaced.pretraining[d]);
    for (size_t f = 0; (f = broken.pretraining[d].find("letters. So the result is ", f)) != std::string::npos; ++f) {
      ++same_line;
    }
  }
  // 40 documents of 8 facts: about half of 320 on each layout.
  EXPECT_EQ(own_line + same_line, 320);
  EXPECT_GT(own_line, 120);
  EXPECT_GT(same_line, 120);
  o.pretraining_line_breaks = 1.0;
  for (const auto& doc : make_synthetic_pool(o).pretraining) {
    EXPECT_EQ(doc.find("letters. So"), std::string::npos) << doc;
  }
  o.pretraining_line_breaks = 1.5;
  EXPECT_THROW(make_synthetic_pool(o), Error);
}

TEST(SyntheticPool, ConstantAnswerLevelIsTheCommonestAnswersShare) {
  std::vector<SyntheticItem> items(5);
  for (size_t i = 0; i < items.size(); ++i) items[i].answer = i < 3 ? "1" : std::to_string(i);
  EXPECT_DOUBLE_EQ(constant_answer_accuracy(items), 60.0);
  EXPECT_DOUBLE_EQ(constant_answer_accuracy({}), 0.0);
}

TEST(SyntheticPool, OptionsAreChecked) {
  auto o = small();
  o.tasks = {"add", "divide"};
  try {
    make_synthetic_pool(o);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("multiply"), std::string::npos) << e.what();
  }
  // 121 possible products cannot give 300 distinct instructions.
  o.tasks = {"multiply"};
  EXPECT_THROW(make_synthetic_pool(o), Error);
  o = small();
  o.sources = {"terse", "base_style"};
  o.shuffle_responses = false;
  const auto p = make_synthetic_pool(o);
  ASSERT_EQ(p.train[0].responses.size(), 2u);
  EXPECT_EQ(p.train[0].responses[0].source, "terse");
  EXPECT_EQ(p.train[0].responses[1].source, "base_style");
}

}  // namespace
}  // namespace concord::grape
