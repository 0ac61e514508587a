#include "base/parse.h"

#include <gtest/gtest.h>

namespace flurry {
namespace {

TEST(ParseSize, AcceptsUnits) {
  EXPECT_EQ(ParseSize("4096").value(), 4096u);
  EXPECT_EQ(ParseSize("64K").value(), 64u << 10);
  EXPECT_EQ(ParseSize("256M").value(), 256u << 20);
  EXPECT_EQ(ParseSize("256MiB").value(), 256u << 20);
  EXPECT_EQ(ParseSize("1G").value(), 1ULL << 30);
  EXPECT_EQ(ParseSize("1.5G").value(), 3ULL << 29);
}

TEST(ParseSize, RejectsGarbage) {
  EXPECT_FALSE(ParseSize("").has_value());
  EXPECT_FALSE(ParseSize("M").has_value());
  EXPECT_FALSE(ParseSize("12Q").has_value());
  EXPECT_FALSE(ParseSize("-5M").has_value());
  EXPECT_FALSE(ParseSize("99999999999T").has_value());
  EXPECT_NE(ParseSize("12Q").error().message().find("unknown unit"), std::string::npos);
}

TEST(ParseDuration, AcceptsUnits) {
  EXPECT_EQ(ParseDuration("10").value().count(), 10000);
  EXPECT_EQ(ParseDuration("10s").value().count(), 10000);
  EXPECT_EQ(ParseDuration("250ms").value().count(), 250);
  EXPECT_EQ(ParseDuration("2m").value().count(), 120000);
  EXPECT_EQ(ParseDuration("1.5s").value().count(), 1500);
}

TEST(ParseDuration, RejectsGarbage) {
  EXPECT_FALSE(ParseDuration("soon").has_value());
  EXPECT_FALSE(ParseDuration("5 years").has_value());
  EXPECT_FALSE(ParseDuration("").has_value());
}

}  // namespace
}  // namespace flurry
