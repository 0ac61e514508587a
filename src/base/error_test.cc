#include "base/error.h"

#include <gtest/gtest.h>

namespace flurry {
namespace {

Result<int> Inner(bool ok) {
  if (!ok) return FailErrno(ECONNREFUSED, "fetching page 0x7f000");
  return 7;
}

Result<int> Outer(bool ok) {
  int v = FLURRY_TRY_CTX(Inner(ok), "restoring clone 3");
  return v + 1;
}

TEST(Error, ContextIsPrependedLayerByLayer) {
  auto r = Outer(false);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), ECONNREFUSED);
  EXPECT_EQ(r.error().message(), "restoring clone 3: fetching page 0x7f000: Connection refused");
}

TEST(Error, ValuesPassThrough) { EXPECT_EQ(Outer(true).value(), 8); }

}  // namespace
}  // namespace flurry
