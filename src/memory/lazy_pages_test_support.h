// What the LazyPages tests share (lazy_pages_test.cc, lazy_pages_push_test.cc): a fake
// image source, fake pushes, and a fixture with 8 MiB of guest RAM on demand.
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "arch/x86_64/layout.h"
#include "memory/guest_memory.h"
#include "memory/lazy_pages.h"

namespace flurry::lazy_pages_test {

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

inline uint8_t Expected(uint64_t page) { return static_cast<uint8_t>((page & 0xff) | 1); }

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

// Anonymous memory of this process as transparent huge pages, in kB (/proc/self/smaps_rollup).
inline uint64_t AnonHugeKb() {
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

}  // namespace flurry::lazy_pages_test
