#include "memory/avoidance.h"

#include <gtest/gtest.h>

namespace flurry {
namespace {

TEST(Avoidance, AllByDefault) {
  EXPECT_TRUE(Avoidance{}.all());
  EXPECT_EQ(FormatAvoidance(Avoidance{}), "all");
  EXPECT_EQ(FormatAvoidance(Avoidance::None()), "none");
}

TEST(Avoidance, ParsesAllNoneAndLists) {
  EXPECT_EQ(ParseAvoidance("all").value(), Avoidance{});
  EXPECT_EQ(ParseAvoidance("none").value(), Avoidance::None());
  EXPECT_EQ(ParseAvoidance("zero").value(), (Avoidance{true, false, false}));
  EXPECT_EQ(ParseAvoidance("overwritten,zero").value(), (Avoidance{true, false, true}));
  EXPECT_EQ(ParseAvoidance("fresh,overwritten,zero").value(), Avoidance{});
}

TEST(Avoidance, FormatReadsBackEverySetting) {
  for (int bits = 0; bits < 8; ++bits) {
    const Avoidance avoid{(bits & 1) != 0, (bits & 2) != 0, (bits & 4) != 0};
    auto parsed = ParseAvoidance(FormatAvoidance(avoid));
    ASSERT_TRUE(parsed.has_value()) << FormatAvoidance(avoid);
    EXPECT_EQ(*parsed, avoid) << FormatAvoidance(avoid);
  }
  EXPECT_EQ(FormatAvoidance({false, true, true}), "fresh,overwritten");
}

TEST(Avoidance, RefusesAnythingElse) {
  for (const char* text : {"", ",", "zero,", ",zero", "zero,,fresh", "Zero", "zero fresh",
                           "zero,zero", "all,zero", "none,fresh", "prefetch", "zero;rm -rf"}) {
    auto parsed = ParseAvoidance(text);
    EXPECT_FALSE(parsed.has_value()) << "'" << text << "'";
  }
  EXPECT_NE(ParseAvoidance("zero,zero").error().message().find("twice"), std::string::npos);
  EXPECT_NE(ParseAvoidance("bogus").error().message().find("zero, fresh, overwritten"),
            std::string::npos);
}

}  // namespace
}  // namespace flurry
