#include "memory/lazy_pages.h"

#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "base/clock.h"
#include "memory/uffd_compat.h"

namespace flurry {
namespace {

constexpr uint64_t kPage = 4096;
constexpr uint32_t kMaxPrefetch = 64;
constexpr uint64_t kRegionPages = 512;  // 2 MiB
// Refused pushes (malformed, forged, another server's) after which a VM stops taking pushes.
constexpr uint64_t kMaxRefusedPushes = 256;

}  // namespace

std::string FormatLazyStats(const LazyStats& m) {
  return fmt::format(
      "faults={} fetched={} prefetched={} requests={} fetch_us={:.1f} zero={} fresh={} "
      "overwritten={} bytes_received={} zero_elided={} pending={} readahead={} huge={} "
      "pushed={} push_bytes={} push_rejected={} push_lost={} push_replies={}",
      m.faults, m.fetched_pages, m.prefetched_pages, m.fetch_requests, m.mean_fetch_us(),
      m.zero_pages, m.fresh_pages, m.overwritten_pages, m.bytes_received, m.zero_elided,
      m.pending_pages, m.readahead_pages, m.huge_regions, m.pushed_pages, m.push_bytes,
      m.push_rejected, m.push_lost, m.push_replies);
}

Result<UniqueFd> OpenUserfault() {
  const int fd = static_cast<int>(syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK));
  if (fd >= 0) return UniqueFd(fd);
  const int first_error = errno;
  UniqueFd device(open("/dev/userfaultfd", O_RDWR | O_CLOEXEC));
  if (device.valid()) {
    const int made = ioctl(device.get(), USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
    if (made >= 0) return UniqueFd(made);
  }
  return FailErrno(first_error, "creating a userfaultfd");
}

Result<std::unique_ptr<LazyPages>> LazyPages::Start(UniqueFd uffd, uint64_t host_base,
                                                    uint64_t ram_size, std::vector<Range> ranges,
                                                    const std::vector<Run>& populated,
                                                    std::unique_ptr<PageSource> source,
                                                    Options options) {
  auto lazy = std::unique_ptr<LazyPages>(new LazyPages());
  lazy->host_base_ = host_base;
  lazy->pages_ = ram_size / kPage;
  lazy->source_ = std::move(source);
  lazy->options_ = std::move(options);
  lazy->options_.prefetch_pages =
      std::clamp<uint32_t>(lazy->options_.prefetch_pages, 1, kMaxPrefetch);
  lazy->buffer_ = std::make_unique_for_overwrite<uint8_t[]>(kMaxPrefetch * kPage);
  if (lazy->options_.pushes) {
    lazy->push_buffer_ = std::make_unique_for_overwrite<uint8_t[]>(kMaxPrefetch * kPage);
  }
  if (lazy->options_.readahead_pages > 0) {
    lazy->stream_buffer_ = std::make_unique_for_overwrite<uint8_t[]>(kMaxPrefetch * kPage);
    lazy->marker_data_.resize(kPage);
  }
  // Filled plainly (the handler thread, started below, reads them through State(); starting it
  // orders these writes before its reads). Per-page atomic stores cost a clone of a 1 GiB VM
  // half a millisecond.
  lazy->state_ = std::make_unique_for_overwrite<uint8_t[]>(lazy->pages_);
  uint8_t* state = lazy->state_.get();
  std::memset(state, kUnmanaged, lazy->pages_);
  for (const Range& r : ranges) {
    if (r.start % kPage != 0 || r.end % kPage != 0 || r.start >= r.end || r.end > ram_size) {
      return Fail("bad on-demand range {:#x}..{:#x}", r.start, r.end);
    }
    std::memset(state + r.start / kPage, kUntouched, (r.end - r.start) / kPage);
  }
  uint64_t pending = 0;
  for (const Run& run : populated) {
    if (run.first_page > lazy->pages_ || run.page_count > lazy->pages_ - run.first_page) {
      return Fail("page map run {}+{} lies outside guest memory", run.first_page, run.page_count);
    }
    for (uint64_t p = run.first_page; p < run.first_page + run.page_count; ++p) {
      if (state[p] == kUntouched) {
        state[p] = kFetch;
        ++pending;
      }
    }
  }
  lazy->pending_.store(pending);
  lazy->ranges_ = std::move(ranges);

  // Moving huge pages in needs UFFD_FEATURE_MOVE (Linux 6.8); without it, 4 KiB installs.
  const HugeStage& stage = lazy->options_.stage;
  bool moves = stage.host_address != 0 && stage.host_address % (512 * kPage) == 0 && stage.fill &&
               lazy->options_.readahead_pages > 0;
  uffdio_api api{};
  api.api = UFFD_API;
  api.features = moves ? kUffdFeatureMove : 0;
  if (ioctl(uffd.get(), UFFDIO_API, &api) != 0) {
    if (!moves) return FailErrno("UFFDIO_API");
    moves = false;  // an older kernel (a refused UFFDIO_API can be asked again)
    api = uffdio_api{};
    api.api = UFFD_API;
    if (ioctl(uffd.get(), UFFDIO_API, &api) != 0) return FailErrno("UFFDIO_API");
  }
  lazy->huge_ok_ = moves;
  lazy->uffd_ = std::move(uffd);
  for (const Range& r : lazy->ranges_) {
    uffdio_register reg{};
    reg.range.start = host_base + r.start;
    reg.range.len = r.end - r.start;
    reg.mode = UFFDIO_REGISTER_MODE_MISSING;
    if (ioctl(lazy->uffd_.get(), UFFDIO_REGISTER, &reg) != 0) {
      return FailErrno(
          fmt::format("registering guest memory {:#x}..{:#x} with userfaultfd", r.start, r.end));
    }
  }
  lazy->stop_.Reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!lazy->stop_.valid()) return FailErrno("eventfd");
  LazyPages* self = lazy.get();
  lazy->handler_ = std::thread([self] {
    pthread_setname_np(pthread_self(), "flurry-uffd");
    self->HandlerLoop();
  });
  return lazy;
}

LazyPages::~LazyPages() {
  if (handler_.joinable()) {
    uint64_t one = 1;
    (void)!write(stop_.get(), &one, sizeof one);
    handler_.join();
  }
  if (uffd_.valid()) {
    for (const Range& r : ranges_) {
      uffdio_range range{host_base_ + r.start, r.end - r.start};
      (void)ioctl(uffd_.get(), UFFDIO_UNREGISTER, &range);
    }
  }
}

void LazyPages::HandlerLoop() {
  uffd_msg messages[16];
  while (true) {
    const int pushes_fd = options_.pushes && !pushes_off_ ? options_.pushes->fd() : -1;
    pollfd fds[3] = {{uffd_.get(), POLLIN, 0}, {stop_.get(), POLLIN, 0}, {pushes_fd, POLLIN, 0}};
    // With readahead requests in flight, take their replies whenever no fault is waiting.
    const int ready = poll(fds, 3, stream_active() ? 0 : -1);
    if (ready < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (fds[1].revents != 0) return;
    if (fds[0].revents == 0) {
      std::lock_guard lock(resolve_mutex_);
      // Pushes a few at a time (faults come first), then the stream's next reply.
      if (fds[2].revents != 0) TakePushesLocked(8);
      if (!stream_active() || failed_.load()) continue;
      auto done = ReceiveOneLocked();
      if (done) done = SendMoreLocked();
      if (!done) ReportFailure(done.error().WithContext("reading ahead of a scan"));
      continue;
    }
    ssize_t n = read(uffd_.get(), messages, sizeof messages);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      ReportFailure(Error(errno, fmt::format("reading userfaultfd events: {}", strerror(errno))));
      continue;
    }
    for (ssize_t i = 0; i < n / static_cast<ssize_t>(sizeof(uffd_msg)); ++i) {
      if (messages[i].event != UFFD_EVENT_PAGEFAULT) continue;
      const uint64_t address = messages[i].arg.pagefault.address;
      const uint64_t gpa = address - host_base_;
      if (address < host_base_ || gpa / kPage >= pages_) {
        ReportFailure(Error(0, fmt::format("a fault at {:#x} outside guest memory", address)));
        continue;
      }
      faults_.fetch_add(1, std::memory_order_relaxed);
      std::lock_guard lock(resolve_mutex_);
      // The page may be in a push waiting already: cheaper than asking for it (a few only: the
      // fault waits meanwhile).
      if (options_.pushes) TakePushesLocked(4);
      if (!failed_.load()) {
        auto done = ResolveLocked(gpa / kPage, Cause::kFault);
        if (done) continue;
        ReportFailure(
            done.error().WithContext(fmt::format("serving a guest page fault at {:#x}", gpa)));
      }
      // Failed: the VM is being stopped (on_failure asked for it and interrupted the guest,
      // which a pending signal now stops before it runs on). Release the faulting access with
      // a zero page rather than leave it blocked: a vCPU thread in KVM may not be interruptible
      // while it waits here.
      (void)ZeroLocked(gpa / kPage);
      Wake(gpa / kPage, 1);
    }
  }
}

LazyPages::PushUse LazyPages::PushUseLocked(uint64_t p) const {
  if (!FetchOnTouch(State(p).load()) || (p == marker_page_ && MarkerSetLocked())) {
    return PushUse::kNone;
  }
  if (!huge_ok_) return PushUse::kInstall;
  // A huge region still wanted whole keeps its pushed pages until it is whole: one huge page
  // beats 512 small ones. (A page its buffer has already is not wanted again.)
  const uint64_t region = p - p % kRegionPages;
  if (!RegionWantedWholeLocked(region)) return PushUse::kInstall;
  const Assembly* a = AssemblyOf(region);
  return a != nullptr && a->have[p - region] ? PushUse::kNone : PushUse::kCollect;
}

int LazyPages::TakePushesLocked(int limit) {
  if (pushes_off_) return 0;
  const auto wanted = [this](uint64_t first, uint32_t count) {
    if (failed_.load() || first >= pages_ || count > pages_ - first) return false;
    for (uint64_t p = first; p < first + count; ++p) {
      if (PushUseLocked(p) != PushUse::kNone) return true;
    }
    return false;
  };
  int taken = 0;
  for (; taken < limit; ++taken) {
    std::optional<PushedPages> pushed;
    if (!options_.pushes->TakeNext(wanted, &pushed)) break;
    if (!pushed || pushed->count == 0 || pushed->count > kMaxPrefetch ||
        pushed->first_page >= pages_ || pushed->count > pages_ - pushed->first_page) {
      continue;
    }
    // Spread out: the pages sent in order, zeros where the mask says.
    const uint8_t* next = pushed->payload;
    for (uint32_t i = 0; i < pushed->count; ++i) {
      uint8_t* page = push_buffer_.get() + uint64_t{i} * kPage;
      if (pushed->zero_mask & (1ULL << i)) {
        std::memset(page, 0, kPage);
      } else {
        std::memcpy(page, next, kPage);
        next += kPage;
      }
    }
    // Runs of the pages a push should install (InstallWantedLocked skips the rest); pages of a
    // region wanted whole go to its assembly.
    const uint64_t end = pushed->first_page + pushed->count;
    for (uint64_t p = pushed->first_page; p < end;) {
      const uint8_t* data = push_buffer_.get() + (p - pushed->first_page) * kPage;
      const PushUse use = PushUseLocked(p);
      Result<void> done;
      uint64_t run_end = p + 1;
      if (use == PushUse::kCollect) {
        done = CollectPushedLocked(p, data);
      } else if (use == PushUse::kInstall) {
        // A region no longer wanted whole gives up its assembly first (its pages are good).
        // (One with replies in flight is installed when they are in.)
        Assembly* a = AssemblyOf(p - p % kRegionPages);
        if (a != nullptr && a->parts_in_flight == 0) done = InstallAssembledPagesLocked(*a);
        while (run_end < end && PushUseLocked(run_end) == PushUse::kInstall &&
               run_end % kRegionPages != 0) {
          ++run_end;
        }
        if (done && PushUseLocked(p) == PushUse::kInstall) {
          auto installed = InstallWantedLocked(p, run_end - p, data, kNoPage, Brought::kByPush);
          if (!installed) done = std::unexpected(installed.error());
        }
      }
      if (!done) {
        ReportFailure(done.error().WithContext("installing pushed pages"));
        return taken + 1;
      }
      p = run_end;
    }
  }
  push_bytes_.store(options_.pushes->bytes_received(), std::memory_order_relaxed);
  push_rejected_.store(options_.pushes->rejected(), std::memory_order_relaxed);
  push_lost_.store(options_.pushes->lost(), std::memory_order_relaxed);
  if (options_.pushes->rejected() > kMaxRefusedPushes) pushes_off_ = true;
  return taken;
}

void LazyPages::ReportFailure(const Error& error) {
  if (failed_.exchange(true)) return;
  if (options_.on_failure) options_.on_failure(error);
}

uint64_t LazyPages::RangeEnd(uint64_t page) const {
  for (const Range& r : ranges_) {
    if (page >= r.start / kPage && page < r.end / kPage) return r.end / kPage;
  }
  return page + 1;
}

void LazyPages::Wake(uint64_t page, uint64_t count) {
  uffdio_range range{host_base_ + page * kPage, count * kPage};
  (void)ioctl(uffd_.get(), UFFDIO_WAKE, &range);
}

Result<bool> LazyPages::CopyLocked(uint64_t first, uint64_t count, const uint8_t* data) {
  uint64_t done = 0;
  while (done < count * kPage) {
    uffdio_copy copy{};
    copy.dst = host_base_ + first * kPage + done;
    copy.src = reinterpret_cast<uint64_t>(data + done);
    copy.len = count * kPage - done;
    copy.mode = UFFDIO_COPY_MODE_DONTWAKE;  // the caller wakes after its bookkeeping
    if (ioctl(uffd_.get(), UFFDIO_COPY, &copy) == 0) return true;
    if (copy.copy > 0) done += static_cast<uint64_t>(copy.copy);
    if (errno == EAGAIN) continue;
    if (errno == EEXIST || errno == ENOENT) {
      // Some page of the run is there already (installed by the kernel on a path that does not
      // fault, e.g. a discarded page refaulted by a racing access), or the run crosses from one
      // host mapping into the next (ENOENT: a copy stays inside one VMA, and the seccomp
      // backend's mprotect splits guest RAM into several): go page by page.
      for (uint64_t off = done; off < count * kPage; off += kPage) {
        uffdio_copy one{};
        one.dst = host_base_ + first * kPage + off;
        one.src = reinterpret_cast<uint64_t>(data + off);
        one.len = kPage;
        one.mode = UFFDIO_COPY_MODE_DONTWAKE;
        while (ioctl(uffd_.get(), UFFDIO_COPY, &one) != 0 && errno == EAGAIN) {
        }
        if (one.copy < 0 && errno != EEXIST) {
          return FailErrno(fmt::format("installing guest page {:#x}", one.dst - host_base_));
        }
      }
      return true;
    }
    return FailErrno(
        fmt::format("installing guest pages {:#x}+{:#x}", first * kPage, count * kPage));
  }
  return true;
}

Result<bool> LazyPages::ZeroLocked(uint64_t page) {
  while (true) {
    uffdio_zeropage zero{};
    zero.range.start = host_base_ + page * kPage;
    zero.range.len = kPage;
    zero.mode = UFFDIO_ZEROPAGE_MODE_DONTWAKE;  // the caller wakes after its bookkeeping
    if (ioctl(uffd_.get(), UFFDIO_ZEROPAGE, &zero) == 0) return true;
    if (errno == EAGAIN) continue;
    if (errno == EEXIST) return false;
    return FailErrno(fmt::format("zero-filling guest page {:#x}", page * kPage));
  }
}

Result<uint64_t> LazyPages::ZeroRunLocked(uint64_t first, uint64_t count) {
  uffdio_zeropage zero{};
  zero.range.start = host_base_ + first * kPage;
  zero.range.len = count * kPage;
  zero.mode = UFFDIO_ZEROPAGE_MODE_DONTWAKE;
  if (ioctl(uffd_.get(), UFFDIO_ZEROPAGE, &zero) == 0) return count;
  if (errno != EEXIST && errno != EAGAIN && errno != ENOENT) {
    return FailErrno(fmt::format("zero-filling guest pages {:#x}+{}", first * kPage, count));
  }
  // Part of the run is there already, or it crosses host mappings (see CopyLocked): page by
  // page.
  uint64_t installed = 0;
  for (uint64_t p = first; p < first + count; ++p) installed += FLURRY_TRY(ZeroLocked(p));
  return installed;
}

Result<void> LazyPages::FetchRunLocked(uint64_t first, uint64_t count, Cause cause) {
  const int64_t start = MonotonicNs();
  FLURRY_TRY_CTX(source_->Fetch(first, static_cast<uint32_t>(count), buffer_.get()),
                 fmt::format("fetching page {:#x} from {}", first * kPage, source_->Describe()));
  fetch_ns_.fetch_add(static_cast<uint64_t>(MonotonicNs() - start), std::memory_order_relaxed);
  requests_.fetch_add(1, std::memory_order_relaxed);
  // Every page of the run is still wanted (resolving is serialized and nothing is in flight):
  // all are installed, and whoever faulted on them goes on, seeing them resident.
  FLURRY_TRY(InstallWantedLocked(first, count, buffer_.get(), kNoPage,
                                 cause == Cause::kFault ? Brought::kByFault : Brought::kOther));
  return {};
}

Result<void> LazyPages::ResolveLocked(uint64_t page, Cause cause) {
  const uint8_t state = State(page).load();
  if (state == kResident || state == kUnmanaged) {
    if (cause == Cause::kFault) Wake(page, 1);
    return {};
  }
  if (ZeroOnTouch(state)) {
    // A fault in zero memory maps the shared zero page for it and for the zero pages after it
    // (up to 64): a guest writing a fresh buffer then takes ordinary copy-on-write faults
    // there, not one round trip through this thread per page. Zero pages cost no memory.
    const uint64_t limit = std::min<uint64_t>(
        RangeEnd(page), page + (cause == Cause::kFault ? kMaxPrefetch : uint64_t{1}));
    uint64_t end = page + 1;
    while (end < limit && ZeroOnTouch(State(end).load())) ++end;
    uint64_t fresh = 0;
    for (uint64_t p = page; p < end; ++p) fresh += State(p).load() == kFresh;
    const uint64_t installed = FLURRY_TRY(ZeroRunLocked(page, end - page));
    for (uint64_t p = page; p < end; ++p) State(p).store(kResident);
    // (Pages that were somehow present already are few: count the run by its kinds.)
    fresh_.fetch_add(std::min(fresh, installed), std::memory_order_relaxed);
    zero_.fetch_add(installed - std::min(fresh, installed), std::memory_order_relaxed);
    Wake(page, end - page);
    return {};
  }
  // The readahead stream may hold the page already, or pushes part of its huge region;
  // otherwise nothing may be in flight when the source is asked (it answers in order).
  if (FLURRY_TRY(ResolveFromStreamLocked(page)) || FLURRY_TRY(ResolveFromAssemblyLocked(page))) {
    if (cause == Cause::kFault) Wake(page, 1);
    return {};
  }
  FLURRY_TRY(DrainLocked());
  if (!FetchOnTouch(State(page).load())) {
    // Taking the replies installed it (a part of a huge region received before the fault).
    if (cause == Cause::kFault) Wake(page, 1);
    return {};
  }
  // To fetch: the faulting page and the neighbours after it that are still wanted, in one
  // request. A fault right where the previous fetch ended (or where the paused stream stands)
  // is a sequential scan: the window doubles (up to 64 pages) while the scan goes on, and falls
  // back to prefetch_pages otherwise.
  uint64_t window = options_.prefetch_pages;
  const bool sequential = page == sequential_next_ || (stream_on_ && page == stream_next_);
  if (cause == Cause::kAll) {
    window = kMaxPrefetch;
  } else if (cause == Cause::kFault && window > 1 && sequential) {
    window = std::min<uint64_t>(kMaxPrefetch, sequential_window_ * 2);
  }
  const uint64_t limit = std::min<uint64_t>(RangeEnd(page), page + window);
  uint64_t end = page + 1;
  while (end < limit && FetchOnTouch(State(end).load())) ++end;
  FLURRY_TRY(FetchRunLocked(page, end - page, cause));
  if (cause == Cause::kFault) {
    sequential_next_ = end;
    sequential_window_ = window;
    if (window == kMaxPrefetch && options_.readahead_pages > 0) {
      FLURRY_TRY(StartStreamLocked(page, end));
    }
  }
  return {};
}

Result<void> LazyPages::EnsureResident(uint64_t gpa, uint64_t len) {
  if (len == 0) return {};
  const uint64_t first = gpa / kPage;
  const uint64_t last = std::min(pages_, (gpa + len + kPage - 1) / kPage);
  if (Resident(gpa, len)) return {};  // the common case: no lock
  std::lock_guard lock(resolve_mutex_);
  for (uint64_t p = first; p < last; ++p) {
    const uint8_t s = State(p).load();
    if (s == kResident || s == kUnmanaged) continue;
    if (failed_.load()) return Fail("guest memory at {:#x} is not available", p * kPage);
    auto done = ResolveLocked(p, Cause::kVmm);
    if (!done) {
      Error error =
          done.error().WithContext(fmt::format("reading guest memory at {:#x}", p * kPage));
      ReportFailure(error);
      return std::unexpected(std::move(error));
    }
  }
  return {};
}

bool LazyPages::Resident(uint64_t gpa, uint64_t len) const {
  const uint64_t first = gpa / kPage;
  const uint64_t last = std::min(pages_, (gpa + len + kPage - 1) / kPage);
  for (uint64_t p = first; p < last; ++p) {
    const uint8_t s = State(p).load();
    if (s != kResident && s != kUnmanaged) return false;
  }
  return true;
}

Result<bool> LazyPages::InstallPage(uint64_t page, const uint8_t* data) {
  if (page >= pages_) return false;
  if (!options_.avoid.overwritten) {
    // Switched off: the page comes from the source as for any access, then the caller writes.
    FLURRY_TRY(EnsureResident(page * kPage, kPage));
    return false;
  }
  std::lock_guard lock(resolve_mutex_);
  const uint8_t s = State(page).load();
  if (s == kResident || s == kUnmanaged) return false;
  const bool installed =
      data != nullptr ? FLURRY_TRY(CopyLocked(page, 1, data)) : FLURRY_TRY(ZeroLocked(page));
  State(page).store(kResident);
  if (s == kFetch) pending_.fetch_sub(1, std::memory_order_relaxed);
  if (installed) overwritten_.fetch_add(1, std::memory_order_relaxed);
  Wake(page, 1);
  return installed;
}

void LazyPages::MarkFresh(uint64_t gpa, uint64_t len, bool discarded) {
  if (!discarded && !options_.avoid.fresh) return;  // switched off: the image says what it is
  const uint64_t first = (gpa + kPage - 1) / kPage;
  const uint64_t last = std::min(pages_, (gpa + len) / kPage);
  std::lock_guard lock(resolve_mutex_);
  for (uint64_t p = first; p < last; ++p) {
    const uint8_t s = State(p).load();
    if (s == kUnmanaged || s == kFresh) continue;
    // A resident page holds the guest's data unless the caller has just discarded it.
    if (s == kResident && !discarded) continue;
    if (s == kFetch) pending_.fetch_sub(1, std::memory_order_relaxed);
    State(p).store(kFresh);
  }
}

Result<void> LazyPages::ResolveAll() {
  std::lock_guard lock(resolve_mutex_);
  for (uint64_t p = 0; p < pages_; ++p) {
    if (State(p).load() != kFetch) continue;
    if (failed_.load()) return Fail("guest memory at {:#x} is not available", p * kPage);
    FLURRY_TRY(ResolveLocked(p, Cause::kAll));
  }
  return {};
}

LazyStats LazyPages::stats() const {
  LazyStats s;
  s.faults = faults_.load(std::memory_order_relaxed);
  s.fetched_pages = fetched_.load(std::memory_order_relaxed);
  s.prefetched_pages = prefetched_.load(std::memory_order_relaxed);
  s.fetch_requests = requests_.load(std::memory_order_relaxed);
  s.fetch_ns = fetch_ns_.load(std::memory_order_relaxed);
  s.zero_pages = zero_.load(std::memory_order_relaxed);
  s.fresh_pages = fresh_.load(std::memory_order_relaxed);
  s.overwritten_pages = overwritten_.load(std::memory_order_relaxed);
  s.bytes_received = source_->bytes_received();
  s.zero_elided = source_->zero_pages_elided();
  s.pending_pages = pending_.load(std::memory_order_relaxed);
  s.readahead_pages = readahead_.load(std::memory_order_relaxed);
  s.huge_regions = huge_.load(std::memory_order_relaxed);
  s.pushed_pages = pushed_.load(std::memory_order_relaxed);
  s.push_bytes = push_bytes_.load(std::memory_order_relaxed);
  s.push_rejected = push_rejected_.load(std::memory_order_relaxed);
  s.push_lost = push_lost_.load(std::memory_order_relaxed);
  s.push_replies = push_replies_.load(std::memory_order_relaxed);
  return s;
}

}  // namespace flurry
