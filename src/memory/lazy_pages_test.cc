#include "memory/lazy_pages.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <thread>

#include "arch/x86_64/layout.h"
#include "memory/guest_memory.h"
#include "memory/uffd_compat.h"

namespace flurry {
namespace {

constexpr uint64_t kPage = 4096;
constexpr uint64_t kRam = 8ULL << 20;

// An image in memory, as a parent's would be: every byte of a populated page is
// (page number & 0xff) | 1, the rest of the image is zero.
class FakeSource : public PageSource {
 public:
  explicit FakeSource(const std::vector<LazyPages::Run>& populated) : image_(kRam, 0) {
    for (const LazyPages::Run& run : populated) {
      for (uint64_t p = run.first_page; p < run.first_page + run.page_count; ++p) {
        std::memset(image_.data() + p * kPage, static_cast<int>((p & 0xff) | 1), kPage);
      }
    }
  }
  // Populated pages that hold zeros (the untouched rest of a transparent huge page).
  void ZeroPages(uint64_t first, uint64_t count) {
    std::memset(image_.data() + first * kPage, 0, count * kPage);
  }
  Result<void> Fetch(uint64_t first_page, uint32_t count, uint8_t* out) override {
    if (!outstanding_.empty()) return FailErrno(EBUSY, "fake source: a fetch while pipelined");
    fetches.fetch_add(1);
    return Copy(first_page, count, out);
  }
  Result<void> Copy(uint64_t first_page, uint32_t count, uint8_t* out) {
    requests.fetch_add(1);
    pages.fetch_add(count);
    if (fail.load()) return FailErrno(ECONNREFUSED, "fake source");
    std::memcpy(out, image_.data() + first_page * kPage, count * kPage);
    return {};
  }
  // Pipelined as a page server is: replies in the order asked.
  Result<void> Send(uint64_t first_page, uint32_t count) override {
    plain_sends.fetch_add(1);
    unless_pushed_.push_back(false);
    return Ask(first_page, count);
  }
  // With `push_instead` set, every such request is answered "pushed", after the pages were
  // handed to it (as a page server pushes them before it answers).
  Result<void> SendUnlessPushed(uint64_t first_page, uint32_t count) override {
    unless_pushed_.push_back(true);
    return Ask(first_page, count);
  }
  Result<bool> ReceiveOrPushed(uint64_t first_page, uint32_t count, uint8_t* out) override {
    const bool unless = !unless_pushed_.empty() && unless_pushed_.front();
    if (!unless_pushed_.empty()) unless_pushed_.pop_front();
    if (!unless || !push_instead) {
      FLURRY_TRY(Receive(first_page, count, out));
      return true;
    }
    if (outstanding_.empty() || outstanding_.front() != std::make_pair(first_page, count)) {
      return FailErrno(EINVAL, "fake source: a reply out of order");
    }
    outstanding_.pop_front();
    push_replies.fetch_add(1);
    push_instead(first_page, count);
    return false;
  }
  Result<void> Ask(uint64_t first_page, uint32_t count) {
    if (count == 0 || count > 64) return FailErrno(EINVAL, "fake source: bad request");
    outstanding_.push_back({first_page, count});
    most_outstanding = std::max<uint64_t>(most_outstanding, outstanding_.size());
    return {};
  }
  Result<void> Receive(uint64_t first_page, uint32_t count, uint8_t* out) override {
    if (outstanding_.empty() || outstanding_.front() != std::make_pair(first_page, count)) {
      return FailErrno(EINVAL, "fake source: a reply out of order");
    }
    outstanding_.pop_front();
    return Copy(first_page, count, out);
  }
  std::string Describe() const override { return "fake source"; }

  std::atomic<uint64_t> requests{0}, pages{0}, push_replies{0}, plain_sends{0},
      fetches{0};  // Fetch calls (a fault's, not pipelined)
  std::function<void(uint64_t first, uint32_t count)> push_instead;  // handler thread
  std::atomic<bool> fail{false};
  std::atomic<uint64_t> most_outstanding{0};

 private:
  std::vector<uint8_t> image_;
  std::deque<std::pair<uint64_t, uint32_t>> outstanding_;  // the handler's thread only
  std::deque<bool> unless_pushed_;                         // the same, per request
};

uint8_t Expected(uint64_t page) { return static_cast<uint8_t>((page & 0xff) | 1); }

// Pushes queued by the test (as a multicast group would deliver them); readable while any wait.
class FakePushes : public PagePushes {
 public:
  FakePushes() {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) == 0) {
      read_.Reset(fds[0]);
      write_.Reset(fds[1]);
    }
  }
  // Pages [first, first+count) with every byte `fill` (0: left out as a zero page).
  void Push(uint64_t first, uint32_t count, uint8_t fill) {
    std::lock_guard lock(mutex_);
    Datagram d{first, count, fill == 0 ? (count >= 64 ? ~0ULL : (1ULL << count) - 1) : 0, {}};
    if (fill != 0) d.payload.assign(count * kPage, fill);
    queue_.push_back(std::move(d));
    const char byte = 1;
    (void)!write(write_.get(), &byte, 1);
  }
  int fd() const override { return read_.get(); }
  bool TakeNext(const WantedPages& wanted, std::optional<PushedPages>* pushed) override {
    pushed->reset();
    char byte;
    if (read(read_.get(), &byte, 1) != 1) return false;
    std::lock_guard lock(mutex_);
    current_ = std::move(queue_.front());
    queue_.pop_front();
    taken.fetch_add(1);
    if (wanted(current_.first, current_.count)) {
      *pushed =
          PushedPages{current_.first, current_.count, current_.zero_mask, current_.payload.data()};
    }
    return true;
  }
  uint64_t bytes_received() const override { return 0; }
  uint64_t rejected() const override { return 0; }
  std::string Describe() const override { return "fake pushes"; }

  std::atomic<uint64_t> taken{0};

 private:
  struct Datagram {
    uint64_t first;
    uint32_t count;
    uint64_t zero_mask;
    std::vector<uint8_t> payload;
  };
  UniqueFd read_, write_;
  std::mutex mutex_;
  std::deque<Datagram> queue_;
  Datagram current_;
};

class LazyPagesTest : public ::testing::Test {
 protected:
  void Start(std::vector<LazyPages::Run> populated, uint32_t prefetch = 1, Avoidance avoid = {},
             uint32_t readahead = 0, HugeStage stage = {},
             std::shared_ptr<PagePushes> pushes = nullptr) {
    auto uffd = OpenUserfault();
    ASSERT_TRUE(uffd.has_value()) << uffd.error().message();
    auto memory = GuestMemory::Create(kRam);
    ASSERT_TRUE(memory.has_value());
    memory_.emplace(std::move(*memory));
    // As KVM guest RAM is: a fault there waits without making a page table, so that a huge
    // page can be moved in.
    memory_->AdviseHugePages(x86::kUserBase, kRam - x86::kUserBase);
    auto source = std::make_unique<FakeSource>(populated);
    source_ = source.get();
    source_->push_instead = push_instead_;
    LazyPages::Options options;
    options.prefetch_pages = prefetch;
    options.readahead_pages = readahead;
    options.stage = std::move(stage);
    options.huge_start = x86::kUserBase;
    options.huge_end = kRam;
    options.avoid = avoid;
    options.pushes = std::move(pushes);
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
  // Every byte of `page` (touched by the test thread, as the guest would).
  std::vector<uint8_t> Page(uint64_t page) {
    Touch(page);
    return std::vector<uint8_t>(base() + page * kPage, base() + (page + 1) * kPage);
  }
  LazyStats Stats() { return *memory_->lazy_stats(); }

  std::optional<GuestMemory> memory_;
  LazyPages* lazy_ = nullptr;
  FakeSource* source_ = nullptr;
  // Set before Start: the source answers requests that allow it "pushed" (FakeSource).
  std::function<void(uint64_t, uint32_t)> push_instead_;
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

// Anonymous memory of this process as transparent huge pages, in kB (/proc/self/smaps_rollup).
uint64_t AnonHugeKb() {
  FILE* f = fopen("/proc/self/smaps_rollup", "r");
  if (f == nullptr) return 0;
  char line[256];
  uint64_t kb = 0;
  while (fgets(line, sizeof line, f) != nullptr) {
    if (sscanf(line, "AnonHugePages: %lu kB", &kb) == 1) break;
  }
  fclose(f);
  return kb;
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
