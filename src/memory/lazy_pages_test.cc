#include "memory/lazy_pages.h"

#include <gtest/gtest.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "memory/lazy_pages_test_support.h"

namespace flurry {
namespace {

using namespace lazy_pages_test;

TEST_F(LazyPagesTest, GuestTouchFetchesPopulatedPagesAndZeroFillsTheRest) {
  Start({{kFirst, 4}});
  EXPECT_EQ(Touch(kFirst + 1), Expected(kFirst + 1));
  EXPECT_EQ(Touch(kFirst + 10), 0);  // never populated in the image
  EXPECT_EQ(Touch(kFirst + 1), Expected(kFirst + 1));
  for (uint64_t p = kFirst + 11; p < kFirst + 74; ++p) EXPECT_EQ(Touch(p), 0);
  LazyStats s = Stats();
  EXPECT_EQ(s.faults, 2u) << "one fault zero-fills a run of 64 pages";
  EXPECT_EQ(s.fetched_pages, 1u);
  EXPECT_EQ(s.zero_pages, 64u);
  EXPECT_EQ(s.pending_pages, 3u);
  EXPECT_EQ(source_->pages.load(), 1u);
}

TEST_F(LazyPagesTest, PrefetchFetchesNeighboursStillWanted) {
  Start({{kFirst, 16}}, /*prefetch=*/8);
  EXPECT_EQ(Touch(kFirst + 2), Expected(kFirst + 2));
  // kFirst+2 .. +9 came in one request.
  for (uint64_t p = kFirst + 2; p < kFirst + 10; ++p) EXPECT_EQ(Touch(p), Expected(p));
  LazyStats s = Stats();
  EXPECT_EQ(s.fetch_requests, 1u);
  EXPECT_EQ(s.fetched_pages, 8u);
  EXPECT_EQ(s.prefetched_pages, 7u);
  EXPECT_EQ(s.faults, 1u);
}

TEST_F(LazyPagesTest, ASequentialScanDoublesThePrefetchWindow) {
  Start({{kFirst, 256}}, /*prefetch=*/4);
  // Faults at the first page past each fetched run: 4, 8, 16, 32, 64, 64 pages.
  for (uint64_t p = kFirst; p < kFirst + 188; ++p) EXPECT_EQ(Touch(p), Expected(p));
  LazyStats s = Stats();
  EXPECT_EQ(s.fetch_requests, 6u);
  EXPECT_EQ(s.fetched_pages, 188u);
  // A jump elsewhere starts over with the base window.
  EXPECT_EQ(Touch(kFirst + 250), Expected(kFirst + 250));
  EXPECT_EQ(Stats().fetched_pages, 188u + 4u);
}

TEST_F(LazyPagesTest, ReadaheadStreamsAScanAheadOfItsFaults) {
  constexpr uint64_t kScan = 1536;
  Start({{kFirst, kScan}}, /*prefetch=*/8, {}, /*readahead=*/256);
  for (uint64_t p = kFirst; p < kFirst + kScan; ++p) ASSERT_EQ(Touch(p), Expected(p)) << p;
  LazyStats s = Stats();
  EXPECT_TRUE(failure_.empty()) << failure_;
  EXPECT_EQ(s.fetched_pages, kScan) << "no page fetched twice";
  EXPECT_EQ(s.pending_pages, 0u);
  // Windows of 8, 16, 32, 64 pages by faults; from there the stream brings the rest (how
  // much of it depends on how the two threads are scheduled: the guest may catch up and fault
  // on a window in flight, or, on a loaded host, start the stream over with a fault).
  EXPECT_GE(s.readahead_pages, kScan / 2);
  EXPECT_LE(s.faults, kScan / 64 + 4) << "at most one fault per 64-page window";
  EXPECT_GT(source_->most_outstanding.load(), 1u) << "requests were pipelined";
}

TEST_F(LazyPagesTest, ReadaheadMovesWholeRegionsInAsHugePages) {
  auto stage = LocalHugeStage();
  ASSERT_TRUE(stage.has_value()) << stage.error().message();
  constexpr uint64_t kScan = 1536;  // RAM from 2 MiB to 8 MiB: regions 1, 2 and 3
  Start({{kFirst, kScan}}, /*prefetch=*/8, {}, /*readahead=*/1536, std::move(*stage));
  if (reinterpret_cast<uint64_t>(base()) % (2u << 20) != 0) GTEST_SKIP() << "RAM not 2 MiB aligned";
  const uint64_t huge_before = AnonHugeKb();
  for (uint64_t p = kFirst; p < kFirst + kScan; ++p) ASSERT_EQ(Touch(p), Expected(p)) << p;
  LazyStats s = Stats();
  EXPECT_TRUE(failure_.empty()) << failure_;
  EXPECT_EQ(s.fetched_pages, kScan) << "no page fetched twice";
  EXPECT_EQ(s.pending_pages, 0u);
  if (s.huge_regions == 0) {
    // Linux before 6.8 has no UFFDIO_MOVE: every install is of 4 KiB pages (tested above).
    struct utsname u {};
    uname(&u);
    GTEST_SKIP() << "no region was moved in as a huge page on Linux " << u.release;
  }
  // The first region is begun by faults; the stream takes the last two whole.
  EXPECT_EQ(s.huge_regions, 2u);
  EXPECT_GE(AnonHugeKb(), huge_before + 2 * 2048) << "the moved regions are huge pages";
}

TEST_F(LazyPagesTest, ReadaheadRunsAtMostItsDistanceAheadOfTheGuest) {
  Start({{kFirst, 1536}}, /*prefetch=*/8, {}, /*readahead=*/256);
  for (uint64_t p = kFirst; p < kFirst + 300; ++p) ASSERT_EQ(Touch(p), Expected(p)) << p;
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // what the stream would do
  LazyStats s = Stats();
  // The guest was last seen at most at page 300; the stream asks up to 256 pages past that,
  // the last window rounded up to 64 pages.
  EXPECT_GT(s.readahead_pages, 0u);
  EXPECT_LE(s.fetched_pages, 300u + 256u + 64u);
  EXPECT_TRUE(failure_.empty()) << failure_;
}

TEST_F(LazyPagesTest, MaterializeDuringReadaheadTakesTheStreamThenFetchesTheRest) {
  Start({{kFirst, 1200}, {kFirst + 1400, 10}}, /*prefetch=*/8, {}, /*readahead=*/512);
  for (uint64_t p = kFirst; p < kFirst + 200; ++p) ASSERT_EQ(Touch(p), Expected(p)) << p;
  ASSERT_TRUE(memory_->Materialize().has_value());
  LazyStats s = *memory_->lazy_stats();
  EXPECT_EQ(s.fetched_pages, 1210u) << "every page once, none twice";
  EXPECT_EQ(s.pending_pages, 0u);
  for (uint64_t p : {kFirst + 201, kFirst + 1199, kFirst + 1409}) EXPECT_EQ(Touch(p), Expected(p));
  EXPECT_TRUE(failure_.empty()) << failure_;
}

TEST_F(LazyPagesTest, VmmReadsInstallPagesFirst) {
  Start({{kFirst, 4}});
  uint8_t byte = 0;
  ASSERT_TRUE(memory_->Read(x86::kUserBase + 3 * kPage + 7, &byte, 1).has_value());
  EXPECT_EQ(byte, Expected(kFirst + 3));
  EXPECT_EQ(Stats().faults, 0u);
  EXPECT_EQ(Stats().fetched_pages, 1u);
}

TEST_F(LazyPagesTest, WholePageWritesAreNotFetchedPartialOnesAre) {
  Start({{kFirst, 4}});
  std::vector<uint8_t> data(kPage + 100, 0xee);
  // Page kFirst is written whole; only 100 bytes of kFirst+1, so it must be fetched first.
  ASSERT_TRUE(memory_->Write(x86::kUserBase, data.data(), data.size()).has_value());
  EXPECT_EQ(Touch(kFirst), 0xee);
  EXPECT_EQ(base()[(kFirst + 1) * kPage + 99], 0xee);
  EXPECT_EQ(base()[(kFirst + 1) * kPage + 100], Expected(kFirst + 1));
  LazyStats s = Stats();
  EXPECT_EQ(s.overwritten_pages, 1u);
  EXPECT_EQ(s.fetched_pages, 1u);
  // A whole-page Fill with zeros: installed, not fetched.
  ASSERT_TRUE(memory_->Fill(x86::kUserBase + 2 * kPage, 0, kPage).has_value());
  EXPECT_EQ(Touch(kFirst + 2), 0);
  EXPECT_EQ(Stats().overwritten_pages, 2u);
  EXPECT_EQ(Stats().fetched_pages, 1u);
}

TEST_F(LazyPagesTest, FreshAndDiscardedMemoryReadsZeroWithoutAFetch) {
  Start({{kFirst, 8}});
  memory_->MarkFresh(x86::kUserBase, 2 * kPage);
  EXPECT_EQ(Touch(kFirst), 0);
  EXPECT_EQ(Touch(kFirst + 1), 0);
  EXPECT_EQ(Stats().fresh_pages, 2u);
  EXPECT_EQ(Stats().fetched_pages, 0u);
  // An installed page keeps its data when marked fresh without a discard ...
  EXPECT_EQ(Touch(kFirst + 4), Expected(kFirst + 4));
  memory_->MarkFresh(x86::kUserBase + 4 * kPage, kPage);
  EXPECT_EQ(Touch(kFirst + 4), Expected(kFirst + 4));
  // ... and reads zero after a discard (and is never fetched again).
  ASSERT_TRUE(memory_->Discard(x86::kUserBase + 4 * kPage, kPage).has_value());
  EXPECT_EQ(Touch(kFirst + 4), 0);
  EXPECT_EQ(Stats().fetched_pages, 1u);
}

// Each avoidance heuristic switched off (Options::avoid): the pages it saved are fetched from
// the source instead, and every byte the guest reads is the same.

constexpr Avoidance kAll{};

TEST_F(LazyPagesTest, ZeroSwitchedOffFetchesUnpopulatedPagesWhichReadTheSame) {
  std::map<bool, std::vector<std::vector<uint8_t>>> seen;
  for (bool zero : {true, false}) {
    Start({{kFirst, 4}}, /*prefetch=*/1, Avoidance{zero, true, true});
    for (uint64_t p : {kFirst + 1, kFirst + 10, kFirst + 11}) seen[zero].push_back(Page(p));
    const LazyStats s = Stats();
    if (zero) {
      EXPECT_EQ(source_->pages.load(), 1u);
      EXPECT_EQ(s.fetched_pages, 1u);
      EXPECT_EQ(s.zero_pages, 64u) << "one fault zero-fills kFirst+10 and the 63 after it";
    } else {
      EXPECT_EQ(source_->pages.load(), 3u) << "the never-populated pages come from the source";
      EXPECT_EQ(s.fetched_pages, 3u);
      EXPECT_EQ(s.zero_pages, 0u);
    }
    EXPECT_EQ(s.pending_pages, 3u) << "only the page map's pages are pending";
  }
  EXPECT_EQ(seen[true], seen[false]);
  EXPECT_EQ(seen[true][1], std::vector<uint8_t>(kPage, 0));
}

TEST_F(LazyPagesTest, FreshSwitchedOffFetchesNewMemoryWhichReadsTheSame) {
  std::map<bool, std::vector<std::vector<uint8_t>>> seen;
  for (bool fresh : {true, false}) {
    // kFirst..+1 are populated but hold zeros (the rest of a huge page the parent touched);
    // the guest now allocates them, and kFirst+20..+21 which the image never had.
    Start({{kFirst, 8}}, /*prefetch=*/1, Avoidance{true, fresh, true});
    source_->ZeroPages(kFirst, 2);
    memory_->MarkFresh(x86::kUserBase, 2 * kPage);
    memory_->MarkFresh(x86::kUserBase + 20 * kPage, 2 * kPage);
    for (uint64_t p : {kFirst, kFirst + 1, kFirst + 20, kFirst + 21}) {
      seen[fresh].push_back(Page(p));
    }
    // A discard reads zero with the switch off too (that is the guest's munmap, not a saving).
    EXPECT_EQ(Touch(kFirst + 4), Expected(kFirst + 4));
    ASSERT_TRUE(memory_->Discard(x86::kUserBase + 4 * kPage, kPage).has_value());
    seen[fresh].push_back(Page(kFirst + 4));
    const LazyStats s = Stats();
    if (fresh) {
      EXPECT_EQ(source_->pages.load(), 1u) << "kFirst+4 only";
      EXPECT_EQ(s.fresh_pages, 2u + 2u + 1u) << "two runs and the discarded page";
    } else {
      EXPECT_EQ(source_->pages.load(), 3u) << "kFirst, kFirst+1 and kFirst+4";
      EXPECT_EQ(s.fresh_pages, 1u) << "the discarded page";
      EXPECT_GE(s.zero_pages, 2u) << "kFirst+20.. were never populated: `zero` still holds";
    }
  }
  EXPECT_EQ(seen[true], seen[false]);
  for (const auto& page : seen[true]) EXPECT_EQ(page, std::vector<uint8_t>(kPage, 0));
}

TEST_F(LazyPagesTest, OverwrittenSwitchedOffFetchesBeforeTheWriteWhichReadsTheSame) {
  std::map<bool, std::vector<std::vector<uint8_t>>> seen;
  for (bool overwritten : {true, false}) {
    Start({{kFirst, 4}}, /*prefetch=*/1, Avoidance{true, true, overwritten});
    std::vector<uint8_t> data(kPage, 0xee);
    ASSERT_TRUE(memory_->Write(x86::kUserBase, data.data(), data.size()).has_value());
    ASSERT_TRUE(memory_->Fill(x86::kUserBase + 2 * kPage, 0, kPage).has_value());
    for (uint64_t p : {kFirst, kFirst + 1, kFirst + 2}) seen[overwritten].push_back(Page(p));
    const LazyStats s = Stats();
    if (overwritten) {
      EXPECT_EQ(s.overwritten_pages, 2u);
      EXPECT_EQ(source_->pages.load(), 1u) << "kFirst+1, read by the test";
    } else {
      EXPECT_EQ(s.overwritten_pages, 0u);
      EXPECT_EQ(source_->pages.load(), 3u) << "both written pages were fetched first";
    }
  }
  EXPECT_EQ(seen[true], seen[false]);
  EXPECT_EQ(seen[true][0], std::vector<uint8_t>(kPage, 0xee));
  EXPECT_EQ(seen[true][2], std::vector<uint8_t>(kPage, 0));
}

TEST_F(LazyPagesTest, NoHeuristicAtAllStillReadsTheSame) {
  std::map<bool, std::vector<std::vector<uint8_t>>> seen;
  for (bool all : {true, false}) {
    Start({{kFirst, 8}}, /*prefetch=*/8, all ? kAll : Avoidance::None());
    memory_->MarkFresh(x86::kUserBase + 16 * kPage, 4 * kPage);
    std::vector<uint8_t> data(kPage, 0x5a);
    ASSERT_TRUE(memory_->Write(x86::kUserBase + kPage, data.data(), data.size()).has_value());
    for (uint64_t p = kFirst; p < kFirst + 24; ++p) seen[all].push_back(Page(p));
    const LazyStats s = Stats();
    if (all) {
      EXPECT_GT(s.zero_pages + s.fresh_pages + s.overwritten_pages, 0u);
    } else {
      EXPECT_EQ(s.zero_pages + s.fresh_pages + s.overwritten_pages, 0u);
      EXPECT_GE(s.fetched_pages, 24u) << "every page touched came from the source";
      EXPECT_EQ(source_->pages.load(), s.fetched_pages);
    }
  }
  EXPECT_EQ(seen[true], seen[false]);
}

TEST_F(LazyPagesTest, MaterializeFetchesEverythingAndStopsServing) {
  Start({{kFirst, 100}, {kFirst + 300, 3}});
  EXPECT_EQ(Touch(kFirst + 50), Expected(kFirst + 50));
  ASSERT_TRUE(memory_->Materialize().has_value());
  EXPECT_FALSE(memory_->on_demand());
  EXPECT_EQ(memory_->lazy_stats()->fetched_pages, 103u);
  EXPECT_EQ(memory_->lazy_stats()->pending_pages, 0u);
  // Plain memory now: the image's pages are there, the rest is ordinary zero memory.
  for (uint64_t p : {kFirst, kFirst + 99, kFirst + 302}) EXPECT_EQ(Touch(p), Expected(p));
  EXPECT_EQ(Touch(kFirst + 500), 0);
  auto populated = memory_->PopulatedPages();
  ASSERT_TRUE(populated.has_value());
  EXPECT_TRUE((*populated)[kFirst + 302]);
}

TEST_F(LazyPagesTest, AFailedFetchIsReportedAndNeverRetriedForever) {
  Start({{kFirst, 4}});
  source_->fail = true;
  uint8_t byte;
  auto read = memory_->Read(x86::kUserBase, &byte, 1);
  ASSERT_FALSE(read.has_value());
  EXPECT_NE(read.error().message().find("fake source"), std::string::npos);
  // A guest fault that cannot be served: reported through on_failure (which stops the VM),
  // then the faulting access is released with a zero page, never left blocked.
  std::atomic<int> seen{-1};
  std::thread guest([&] { seen = Touch(kFirst + 1); });
  {
    std::unique_lock lock(mutex_);
    ASSERT_TRUE(cv_.wait_for(lock, std::chrono::seconds(20), [&] { return !failure_.empty(); }));
  }
  EXPECT_NE(failure_.find("Connection refused"), std::string::npos) << failure_;
  guest.join();
  EXPECT_EQ(seen.load(), 0);
  EXPECT_EQ(Stats().fetched_pages, 0u);
}

}  // namespace
}  // namespace flurry