#include "memory/lazy_pages.h"

#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <thread>

#include "arch/x86_64/layout.h"
#include "memory/guest_memory.h"

namespace flurry {
namespace {

constexpr uint64_t kPage = 4096;
constexpr uint64_t kRam = 8ULL << 20;

// An image in memory; every page's first byte is (page number & 0xff) | 1.
class FakeSource : public PageSource {
 public:
  FakeSource() : image_(kRam, 0) {
    for (uint64_t p = 0; p < kRam / kPage; ++p) {
      std::memset(image_.data() + p * kPage, static_cast<int>((p & 0xff) | 1), kPage);
    }
  }
  Result<void> Fetch(uint64_t first_page, uint32_t count, uint8_t* out) override {
    requests.fetch_add(1);
    pages.fetch_add(count);
    if (fail.load()) return FailErrno(ECONNREFUSED, "fake source");
    std::memcpy(out, image_.data() + first_page * kPage, count * kPage);
    return {};
  }
  std::string Describe() const override { return "fake source"; }

  std::atomic<uint64_t> requests{0}, pages{0};
  std::atomic<bool> fail{false};

 private:
  std::vector<uint8_t> image_;
};

uint8_t Expected(uint64_t page) { return static_cast<uint8_t>((page & 0xff) | 1); }

class LazyPagesTest : public ::testing::Test {
 protected:
  void Start(std::vector<LazyPages::Run> populated, uint32_t prefetch = 1) {
    auto uffd = OpenUserfault();
    ASSERT_TRUE(uffd.has_value()) << uffd.error().message();
    auto memory = GuestMemory::Create(kRam);
    ASSERT_TRUE(memory.has_value());
    memory_.emplace(std::move(*memory));
    auto source = std::make_unique<FakeSource>();
    source_ = source.get();
    LazyPages::Options options;
    options.prefetch_pages = prefetch;
    options.on_failure = [this](const Error& e) {
      std::lock_guard lock(mutex_);
      failure_ = e.message();
      cv_.notify_all();
    };
    auto lazy = LazyPages::Start(std::move(*uffd), reinterpret_cast<uint64_t>(base()), kRam,
                                 {{x86::kUserBase, kRam}}, populated, std::move(source), options);
    ASSERT_TRUE(lazy.has_value()) << lazy.error().message();
    lazy_ = lazy->get();
    memory_->AttachLazy(std::move(*lazy));
  }
  uint8_t* base() { return memory_->host_base(); }
  uint8_t Touch(uint64_t page) {
    return *reinterpret_cast<volatile uint8_t*>(base() + page * kPage);
  }
  LazyStats Stats() { return *memory_->lazy_stats(); }

  std::optional<GuestMemory> memory_;
  LazyPages* lazy_ = nullptr;
  FakeSource* source_ = nullptr;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::string failure_;
};

constexpr uint64_t kFirst = x86::kUserBase / kPage;

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
