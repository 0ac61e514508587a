// LazyPages and pushes (pages another clone asked for, sent to every clone): installed,
// kept for huge regions, and taken after a "pushed" reply.
#include <gtest/gtest.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "memory/lazy_pages.h"
#include "memory/lazy_pages_test_support.h"
#include "memory/uffd_compat.h"

namespace flurry {
namespace {

using namespace lazy_pages_test;

// Waits until the handler has taken `n` pushes.
bool TakenWithin(const FakePushes& pushes, uint64_t n) {
  for (int i = 0; i < 2000 && pushes.taken.load() < n; ++i) usleep(1000);
  return pushes.taken.load() >= n;
}

TEST_F(LazyPagesTest, PushedPagesStillWantedAreInstalledWithoutAFetch) {
  auto pushes = std::make_shared<FakePushes>();
  Start({{kFirst, 32}}, 1, {}, 0, {}, pushes);
  source_->ZeroPages(kFirst + 5, 1);
  // Pages 0..4 as the image holds them, page 5 a zero page of the image.
  for (uint64_t p = kFirst; p < kFirst + 5; ++p) pushes->Push(p, 1, Expected(p));
  pushes->Push(kFirst + 5, 1, 0);
  ASSERT_TRUE(TakenWithin(*pushes, 6));
  for (int i = 0; i < 2000 && Stats().pushed_pages < 6; ++i) usleep(1000);
  for (uint64_t p = kFirst; p < kFirst + 5; ++p) {
    EXPECT_EQ(Page(p), std::vector<uint8_t>(kPage, Expected(p)));
  }
  EXPECT_EQ(Page(kFirst + 5), std::vector<uint8_t>(kPage, 0));
  LazyStats s = Stats();
  EXPECT_EQ(s.pushed_pages, 6u);
  EXPECT_EQ(s.fetched_pages, 0u);
  EXPECT_EQ(s.faults, 0u) << "installed before the guest came";
  EXPECT_EQ(s.pending_pages, 26u);
  EXPECT_EQ(source_->requests.load(), 0u);
}

TEST_F(LazyPagesTest, PushesNeverOverwriteInstalledFreshOrUntouchedPages) {
  auto pushes = std::make_shared<FakePushes>();
  Start({{kFirst, 32}}, 1, {}, 0, {}, pushes);
  EXPECT_EQ(Touch(kFirst + 1), Expected(kFirst + 1));  // fetched
  memory_->MarkFresh(x86::kUserBase + 2 * kPage, kPage);
  // Pushes with other bytes than the pages have: for an installed page, a fresh one and one
  // the image never populated; then a wanted one, whose install shows the others were seen.
  pushes->Push(kFirst + 1, 2, 0xee);
  pushes->Push(kFirst + 40, 1, 0xee);
  pushes->Push(kFirst + 3, 1, Expected(kFirst + 3));
  ASSERT_TRUE(TakenWithin(*pushes, 3));
  for (int i = 0; i < 2000 && Stats().pushed_pages < 1; ++i) usleep(1000);
  EXPECT_EQ(Page(kFirst + 1), std::vector<uint8_t>(kPage, Expected(kFirst + 1)));
  EXPECT_EQ(Page(kFirst + 2), std::vector<uint8_t>(kPage, 0));
  EXPECT_EQ(Page(kFirst + 40), std::vector<uint8_t>(kPage, 0));
  EXPECT_EQ(Page(kFirst + 3), std::vector<uint8_t>(kPage, Expected(kFirst + 3)));
  EXPECT_EQ(Stats().pushed_pages, 1u);
}

// Whether this kernel moves pages into a userfaultfd range (UFFD_FEATURE_MOVE, Linux 6.8):
// huge regions need it.
bool KernelMovesPages() {
  auto uffd = OpenUserfault();
  if (!uffd) return false;
  uffdio_api api{};
  api.api = UFFD_API;
  api.features = kUffdFeatureMove;
  return ioctl(uffd->get(), UFFDIO_API, &api) == 0;
}

// Starts with a huge stage and `pushes`, RAM from 2 MiB to 8 MiB (regions 1..3); false where
// regions cannot be moved in here.
#define START_WITH_HUGE_REGIONS(populated, pushes)                                       \
  do {                                                                                   \
    if (!KernelMovesPages()) GTEST_SKIP() << "no UFFD_FEATURE_MOVE (huge regions) here"; \
    auto stage = LocalHugeStage();                                                       \
    ASSERT_TRUE(stage.has_value()) << stage.error().message();                           \
    Start(populated, 8, {}, 1536, std::move(*stage), pushes);                            \
    if (reinterpret_cast<uint64_t>(base()) % (2u << 20) != 0) {                          \
      GTEST_SKIP() << "RAM not 2 MiB aligned";                                           \
    }                                                                                    \
  } while (0)

constexpr uint64_t kRegion2 = kFirst + 512;

// Waits until `done()` holds (2 s at most).
template <typename F>
bool Within(F done) {
  for (int i = 0; i < 2000 && !done(); ++i) usleep(1000);
  return done();
}

// Where 2 MiB regions can be moved in as huge pages, a push into a region wanted whole is kept
// for the region rather than installed; a page elsewhere it installs. A fault in a region
// little pushed installs the pushed pages in 4 KiB pages (no request for them).
TEST_F(LazyPagesTest, PushesIntoARegionWantedWholeAreKeptForTheRegion) {
  auto pushes = std::make_shared<FakePushes>();
  START_WITH_HUGE_REGIONS((std::vector<LazyPages::Run>{{kFirst, 1024 + 100}}), pushes);
  pushes->Push(kRegion2 + 7, 1, Expected(kRegion2 + 7));            // region 2: wanted whole
  pushes->Push(kFirst + 1024 + 3, 1, Expected(kFirst + 1024 + 3));  // region 3: never whole
  ASSERT_TRUE(TakenWithin(*pushes, 2));
  ASSERT_TRUE(Within([&] { return Stats().pushed_pages >= 1; }));
  EXPECT_EQ(Stats().pushed_pages, 1u) << "only the page outside a region wanted whole";
  EXPECT_EQ(Page(kFirst + 1024 + 3), std::vector<uint8_t>(kPage, Expected(kFirst + 1024 + 3)));
  EXPECT_EQ(Page(kRegion2 + 7), std::vector<uint8_t>(kPage, Expected(kRegion2 + 7)));
  LazyStats s = Stats();
  EXPECT_EQ(s.pushed_pages, 2u);
  EXPECT_EQ(s.huge_regions, 0u);
  EXPECT_EQ(source_->requests.load(), 0u) << "the fault was served from the push";
  EXPECT_EQ(Touch(kRegion2 + 8), Expected(kRegion2 + 8));  // fetched as usual
  EXPECT_TRUE(failure_.empty()) << failure_;
}

// A region pushes bring whole is moved in as one huge page without a request.
TEST_F(LazyPagesTest, ARegionPushedWholeIsMovedInWithoutARequest) {
  auto pushes = std::make_shared<FakePushes>();
  START_WITH_HUGE_REGIONS((std::vector<LazyPages::Run>{{kFirst, 1536}}), pushes);
  const uint64_t huge_before = AnonHugeKb();
  // Every page of a push has its first page's byte, unlike the image's pages: what the guest
  // reads shows where it came from.
  for (uint64_t p = kRegion2; p < kRegion2 + 512; p += 64) pushes->Push(p, 64, Expected(p));
  ASSERT_TRUE(TakenWithin(*pushes, 8));
  ASSERT_TRUE(Within([&] { return Stats().huge_regions >= 1; })) << FormatLazyStats(Stats());
  LazyStats s = Stats();
  EXPECT_EQ(s.huge_regions, 1u);
  EXPECT_EQ(s.pushed_pages, 512u);
  EXPECT_EQ(s.fetched_pages, 0u);
  EXPECT_EQ(s.pending_pages, 1536u - 512u);
  EXPECT_EQ(s.faults, 0u);
  EXPECT_EQ(source_->requests.load(), 0u);
  for (uint64_t p = kRegion2; p < kRegion2 + 512; p += 64) {
    EXPECT_EQ(Page(p + 63), std::vector<uint8_t>(kPage, Expected(p))) << p;
  }
  EXPECT_EQ(Stats().faults, 0u) << "the region was in before the guest came";
  EXPECT_GE(AnonHugeKb(), huge_before + 2048) << "the moved region is a huge page";
  EXPECT_TRUE(failure_.empty()) << failure_;
}

// A scan's stream asks only for the pages of a region that pushes did not bring, and moves the
// region in whole once they are there; so does a fault in a region mostly pushed.
TEST_F(LazyPagesTest, TheStreamAndFaultsAskOnlyForWhatPushesDidNotBring) {
  auto pushes = std::make_shared<FakePushes>();
  START_WITH_HUGE_REGIONS((std::vector<LazyPages::Run>{{kFirst, 1536}}), pushes);
  // Pages as the image has them, one push each. Region 2: 3 windows and a few pages of a
  // fourth (the stream's way); region 3: 5 windows (a fault's way).
  uint64_t count = 0;
  const auto push = [&](uint64_t first, uint64_t n) {
    for (uint64_t p = first; p < first + n; ++p, ++count) pushes->Push(p, 1, Expected(p));
  };
  for (uint64_t p : {kRegion2, kRegion2 + 128, kRegion2 + 448}) push(p, 64);
  push(kRegion2 + 200, 10);
  push(kFirst + 1024, 320);
  ASSERT_TRUE(TakenWithin(*pushes, count));
  // Region 3 first: a fault in its missing part.
  EXPECT_EQ(Touch(kFirst + 1024 + 400), Expected(kFirst + 1024 + 400));
  LazyStats s = Stats();
  EXPECT_EQ(s.huge_regions, 1u) << FormatLazyStats(s);
  EXPECT_EQ(source_->pages.load(), 192u) << "only the 3 windows pushes had not brought";
  // Then a scan of regions 1 and 2.
  for (uint64_t p = kFirst; p < kFirst + 1024; ++p) ASSERT_EQ(Touch(p), Expected(p)) << p;
  s = Stats();
  EXPECT_TRUE(failure_.empty()) << failure_;
  EXPECT_EQ(s.huge_regions, 2u) << "regions 2 and 3 (faults began region 1)";
  EXPECT_EQ(s.pushed_pages, 320u + 3 * 64 + 10);
  EXPECT_EQ(s.fetched_pages + s.pushed_pages, 1536u) << FormatLazyStats(s);
  EXPECT_EQ(source_->pages.load(), 1536u - s.pushed_pages) << "no page asked for twice";
  EXPECT_EQ(s.pending_pages, 0u);
}

// A stream request answered "pushed" (the server pushed those pages a moment ago): the pages
// come from the pushes; those the pushes did not bring (lost) are asked for again.
TEST_F(LazyPagesTest, PushedRepliesTakeThePagesFromThePushesAndAskAgainForTheLost) {
  auto pushes = std::make_shared<FakePushes>();
  // Each page one push, every 7th lost.
  push_instead_ = [pushes](uint64_t first, uint32_t count) {
    for (uint64_t p = first; p < first + count; ++p) {
      if (p % 7 != 0) pushes->Push(p, 1, Expected(p));
    }
  };
  constexpr uint64_t kScan = 1536;
  Start({{kFirst, kScan}}, /*prefetch=*/8, {}, /*readahead=*/512, {}, pushes);
  for (uint64_t p = kFirst; p < kFirst + kScan; ++p) ASSERT_EQ(Touch(p), Expected(p)) << p;
  LazyStats s = Stats();
  EXPECT_TRUE(failure_.empty()) << failure_;
  EXPECT_GT(s.push_replies, 0u) << FormatLazyStats(s);
  EXPECT_EQ(s.push_replies, source_->push_replies.load());
  EXPECT_GT(s.pushed_pages, 0u);
  EXPECT_EQ(s.fetched_pages + s.pushed_pages, kScan) << FormatLazyStats(s);
  EXPECT_EQ(s.pending_pages, 0u);
  // The lost pages (every 7th, 219) were asked for again in the stream, not left to faults
  // that fetch them one by one (the first faults fetch before the stream starts).
  EXPECT_GT(source_->plain_sends.load(), 0u);
  EXPECT_LE(source_->fetches.load(), 20u) << FormatLazyStats(s);
}

TEST_F(LazyPagesTest, PushedRepliesFillHugeRegionsFromThePushes) {
  auto pushes = std::make_shared<FakePushes>();
  push_instead_ = [pushes](uint64_t first, uint32_t count) {
    for (uint64_t p = first; p < first + count; ++p) {
      if (p % 7 != 0) pushes->Push(p, 1, Expected(p));
    }
  };
  START_WITH_HUGE_REGIONS((std::vector<LazyPages::Run>{{kFirst, 1536}}), pushes);
  for (uint64_t p = kFirst; p < kFirst + 1536; ++p) ASSERT_EQ(Touch(p), Expected(p)) << p;
  LazyStats s = Stats();
  EXPECT_TRUE(failure_.empty()) << failure_;
  EXPECT_EQ(s.huge_regions, 2u) << FormatLazyStats(s);
  EXPECT_GT(s.push_replies, 0u);
  EXPECT_GT(s.pushed_pages, 512u) << "most of two regions came from pushes";
  EXPECT_EQ(s.fetched_pages + s.pushed_pages, 1536u) << FormatLazyStats(s);
  EXPECT_EQ(source_->pages.load(), s.fetched_pages) << "no page asked for twice";
  EXPECT_EQ(s.pending_pages, 0u);
  EXPECT_GT(source_->plain_sends.load(), 0u) << "the lost pages were asked for again";
  EXPECT_LE(source_->fetches.load(), 20u) << FormatLazyStats(s);
}

}  // namespace
}  // namespace flurry
