// LazyPages: guest RAM filled on demand. The RAM starts empty and is registered with
// userfaultfd; the first touch of a page — by the guest, or by the VMM through GuestMemory —
// installs it: fetched from a PageSource (the parent's memory image, local or across the
// network), or zero-filled without a fetch where nothing is to be fetched. The avoidance
// heuristics (docs/design.md, "Memory on demand"):
//   * pages the image's page map says were never populated are zero-filled locally (`zero`);
//   * memory the guest allocates after the image was taken (fresh brk/mmap) is never fetched
//     (`fresh`: the syscall layer calls MarkFresh);
//   * a page the VMM overwrites whole (read(2) into a page-aligned buffer) is installed from
//     the written bytes (`overwritten`: GuestMemory calls InstallPage).
// Each can be switched off (Options::avoid, memory/avoidance.h) to measure what it saves; the
// page is then fetched from the source instead (`zero` off: fetched as if populated; `fresh`
// off: MarkFresh of a new allocation does nothing; `overwritten` off: InstallPage fetches the
// page and lets the caller write it as usual). What the guest reads is the same either way.
// A discard (munmap, MADV_DONTNEED) always makes its range read as zero: that is what the guest
// asked for, not an avoidance.
// A fault in zero memory (untouched or fresh) maps the zero page over the zero pages after it
// too (up to 64). A fault that fetches also fetches the pages after it that are still wanted: up to
// Options::prefetch_pages in all, and, while faults follow each other sequentially, twice the
// previous window each time (up to 64 pages; bench/remote_restore_netns.sh measured that it
// pays for scans).
// Readahead (lazy_pages_readahead.cc): once a scan has reached the 64-page window, the handler
// streams the wanted pages ahead of it — up to 4 pipelined requests in flight, at most
// Options::readahead_pages ahead of where the guest was last seen — while the guest works on
// the pages already installed. The guest is seen where it faults: on a page still in flight,
// at the stream's head, or on a marker, the first page of a window received well ahead of the
// guest that is kept back (its data stashed) so that the guest's arrival there is a fault,
// served from the stash, that moves the stream on (Linux's async readahead mark).
// Pushes (Options::pushes): pages another clone of the same image asked for, which the server
// also sent to every clone (multicast, net/page_push.h). The handler installs those still
// wanted (not the readahead marker), between faults; a page in flight or pushed twice is
// installed once. Pushes only ever save fetches: what is not pushed is fetched as usual.
// Huge regions: where the owner gives a staging area (Options::stage) and the kernel can move
// pages (UFFDIO_MOVE), the stream takes a 2 MiB region whose pages are all wanted in one go (8
// requests), writes it to the staging area — which the kernel backs with a transparent huge
// page — and moves that huge page into guest RAM. Memory installed in 4 KiB pages costs the
// guest a TLB fill per page on first touch, which dominates a scan (bench/uffd_install_bench.c);
// a moved huge page costs one per 2 MiB. Pushed pages of a region wanted whole are collected
// (lazy_pages_regions.cc: up to 4 regions at a time, 2 MiB of buffer each) rather than
// installed: a region that pushes bring whole is moved in without a request; where the stream
// (or a fault) meets a region partly pushed, it asks only for the pages still missing, and
// moves the region in once they are there. A fault in a region less than half pushed installs
// the pushed pages in 4 KiB pages instead (a random access does not pay for 2 MiB).
//
// The uffd may belong to another process (the seccomp backend's stub): every ioctl addresses
// the mm that created it, at `host_base` + guest address.
//
// Threads: a handler thread ("flurry-uffd") serves faults and runs the readahead stream;
// EnsureResident/InstallPage/MarkFresh/ResolveAll on the VM's run thread. Resolving is
// serialized by resolve_mutex_, which guards the source and the stream; the page states are
// atomics. If a page cannot be fetched (source unreachable), the handler stops
// serving and calls Options::on_failure once (also when a VMM access failed to fetch): the
// guest cannot go on, and the VM must end (it never waits forever: sources time out).
// on_failure must interrupt the guest; afterwards faulting accesses are released with zero
// pages (so that no thread stays blocked in a fault), which the stopped guest never uses.
#pragma once

#include <atomic>
#include <bitset>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "base/error.h"
#include "base/unique_fd.h"
#include "memory/avoidance.h"
#include "memory/huge_stage.h"
#include "memory/page_source.h"

namespace flurry {

struct LazyStats {
  uint64_t faults = 0;             // page faults the handler thread served
  uint64_t fetched_pages = 0;      // pages fetched from the source (prefetched included)
  uint64_t prefetched_pages = 0;   // of those, fetched as a fault's neighbours
  uint64_t fetch_requests = 0;     // calls to the source
  uint64_t fetch_ns = 0;           // time spent in the source
  uint64_t zero_pages = 0;         // not populated in the image: zero-filled, not fetched
  uint64_t fresh_pages = 0;        // allocated after the image: zero-filled, not fetched
  uint64_t overwritten_pages = 0;  // written whole by the VMM: installed, not fetched
  uint64_t bytes_received = 0;     // from the source (PageSource::bytes_received)
  uint64_t zero_elided = 0;        // fetched pages the source sent as "all zero" (no data)
  uint64_t pending_pages = 0;      // still to fetch if touched
  uint64_t readahead_pages = 0;    // fetched pages the readahead stream installed
  uint64_t huge_regions = 0;       // 2 MiB regions moved in as one huge page (their fetched
                                   //   pages count as readahead, their pushed ones as pushed)
  uint64_t pushed_pages = 0;       // installed from pushes (asked for by another clone)
  uint64_t push_bytes = 0;         // pushes received (datagrams, installed or not)
  uint64_t push_rejected = 0;      // pushes dropped as malformed, forged or another server's
  uint64_t push_lost = 0;          // pushes dropped by the socket: no room (PagePushes::lost)
  uint64_t push_replies = 0;       // requests the source answered "pushed" (pages from pushes)

  double mean_fetch_us() const {
    return fetch_requests ? static_cast<double>(fetch_ns) / 1000.0 / fetch_requests : 0.0;
  }
};

// The counters as one line: "faults=F fetched=N ... pending=P" (flurry restore --stats, a
// remote clone's report).
std::string FormatLazyStats(const LazyStats& stats);

// A new userfaultfd of this process (close-on-exec, non-blocking): the userfaultfd syscall, or
// /dev/userfaultfd where the syscall is refused to this process.
Result<UniqueFd> OpenUserfault();

class LazyPages {
 public:
  struct Options {
    uint32_t prefetch_pages = 8;      // pages per fetch at most (the faulting one included)
    uint32_t readahead_pages = 1024;  // how far the stream runs ahead of a scan (0: off)
    HugeStage stage;                  // none: every install is of 4 KiB pages
    uint64_t huge_start = 0;          // [huge_start, huge_end): guest addresses where 2 MiB
    uint64_t huge_end = 0;            //   regions may be moved in as huge pages
    Avoidance avoid;                  // the avoidance heuristics in use (all by default)
    // Pages pushed without being asked for (page_source.h); the handler installs those still
    // wanted. None: every page is fetched.
    std::shared_ptr<PagePushes> pushes;
    std::function<void(const Error&)> on_failure;
  };
  // A registered guest range [start, end), page aligned (RAM minus holes).
  struct Range {
    uint64_t start = 0;
    uint64_t end = 0;
  };
  // A run of pages the image holds data for.
  struct Run {
    uint64_t first_page = 0;
    uint64_t page_count = 0;
  };

  // Takes a fresh userfaultfd (UFFDIO_API not yet done) of the mm holding the RAM, registers
  // `ranges` for missing-page faults and starts the handler thread.
  static Result<std::unique_ptr<LazyPages>> Start(UniqueFd uffd, uint64_t host_base,
                                                  uint64_t ram_size, std::vector<Range> ranges,
                                                  const std::vector<Run>& populated,
                                                  std::unique_ptr<PageSource> source,
                                                  Options options);
  // Stops the handler, unregisters the ranges (later faults are plain anonymous memory).
  ~LazyPages();
  LazyPages(const LazyPages&) = delete;
  LazyPages& operator=(const LazyPages&) = delete;

  // Installs every page of [gpa, gpa+len) not yet installed (before the VMM reads it).
  Result<void> EnsureResident(uint64_t gpa, uint64_t len);
  // The VMM is about to write all of page `page`: install `data` (or zeros when data is null)
  // as its content without a fetch. Returns false if the page was already installed (or is not
  // managed), or — with `overwritten` off — after installing it as a read would: the caller
  // then writes it as usual.
  Result<bool> InstallPage(uint64_t page, const uint8_t* data);
  // Whether every page of [gpa, gpa+len) is installed (or not managed).
  bool Resident(uint64_t gpa, uint64_t len) const;
  // [gpa, gpa+len) is fresh memory: it reads as zero from now on, never fetched. `discarded`:
  // the caller has just dropped the range's pages (resident ones too); otherwise the range was
  // just allocated and pages already installed keep their content (and with `fresh` off,
  // nothing changes).
  void MarkFresh(uint64_t gpa, uint64_t len, bool discarded);
  // Fetches every page still to fetch (before a fork or snapshot of the VM).
  Result<void> ResolveAll();

  LazyStats stats() const;
  std::string source_description() const { return source_->Describe(); }

 private:
  enum State : uint8_t {
    kFetch = 0,      // populated in the image, not installed
    kResident = 1,   // installed
    kFresh = 2,      // allocated after the image: zero when touched
    kUntouched = 3,  // not populated in the image: zero when touched
    kUnmanaged = 4,  // not in a registered range
  };
  enum class Cause { kFault, kVmm, kAll };

  LazyPages() = default;
  // What touching a page in state `s` does: zero-fill it here, or fetch it (with the
  // heuristics switched off, untouched pages are fetched too).
  bool ZeroOnTouch(uint8_t s) const {
    return s == kFresh || (s == kUntouched && options_.avoid.zero);
  }
  bool FetchOnTouch(uint8_t s) const {
    return s == kFetch || (s == kUntouched && !options_.avoid.zero);
  }
  void HandlerLoop();
  // Marks the memory failed and calls Options::on_failure (once).
  void ReportFailure(const Error& error);
  // Installs page `page` (and prefetched neighbours). Call with resolve_mutex_ held.
  Result<void> ResolveLocked(uint64_t page, Cause cause);
  Result<void> FetchRunLocked(uint64_t first, uint64_t count, Cause cause);
  Result<bool> CopyLocked(uint64_t first, uint64_t count, const uint8_t* data);
  Result<bool> ZeroLocked(uint64_t page);
  // Maps the zero page over [first, first+count); returns how many pages it installed.
  Result<uint64_t> ZeroRunLocked(uint64_t first, uint64_t count);
  // Wakes accesses waiting on [page, page+count): installs are made without waking, so that
  // states and counters are up to date when the faulting thread goes on.
  void Wake(uint64_t page, uint64_t count);
  uint64_t RangeEnd(uint64_t page) const;  // first page past the registered range of `page`
  // What brought pages in, for the counters: a fault (pages past the faulting one count as
  // prefetched), the readahead stream, or anything else (a VMM access, fetching all).
  enum class Brought { kByFault, kByReadahead, kByPush, kOther };
  // Installs the pages of [first, first+count) still wanted from `data` (count <= 512), except
  // `skip` (~0: none), counts them as fetched (and as `by` says), then wakes accesses waiting
  // there, so a woken guest sees the counters up to date; returns how many it installed.
  Result<uint64_t> InstallWantedLocked(uint64_t first, uint64_t count, const uint8_t* data,
                                       uint64_t skip, Brought by);

  // The readahead stream (lazy_pages_readahead.cc); all with resolve_mutex_ held.
  struct StreamRequest {
    uint64_t first = 0;
    uint64_t count = 0;
    uint64_t region = ~0ULL;     // a part of this huge region (first page), or ~0
    bool unless_pushed = false;  // asked with SendUnlessPushed: the reply may be "pushed"
  };
  // Asks for [first, first+count) (part of `region`, or ~0) and notes it in flight: unless
  // pushed where pushes come (in step with another clone, the pages are on their way).
  Result<void> SendStreamLocked(uint64_t first, uint64_t count, uint64_t region,
                                bool allow_pushed = true);
  // The reply to `request` was "pushed": takes the pushes waiting, asks again (for the pages)
  // for what they did not bring.
  Result<void> TakeFromPushesLocked(const StreamRequest& request);
  // Whether the stream may take the 2 MiB region starting at `first` as one huge page.
  bool HugeRegionAt(uint64_t first) const;
  // A scan fault at `page` whose fetch ended at `end`: the stream runs (on) from `end`.
  Result<void> StartStreamLocked(uint64_t page, uint64_t end);
  // Whether the stream held `page` (the marker, or a request in flight) and has installed it.
  Result<bool> ResolveFromStreamLocked(uint64_t page);
  // Asks for more windows while the stream may run further ahead.
  Result<void> SendMoreLocked();
  // Takes the reply to the oldest request in flight and installs it.
  Result<void> ReceiveOneLocked();
  // Takes every reply in flight (before a fetch: the source answers in order).
  Result<void> DrainLocked();
  bool MarkerSetLocked() const;
  bool stream_active() const { return stream_busy_.load(std::memory_order_relaxed); }
  // Installs the wanted pages of up to `limit` pushes waiting (handler thread, resolve_mutex_
  // held), or collects them for their huge region. After too many refused pushes (a peer
  // sending junk to the group) it stops taking them: faults are then served as without pushes.
  // Returns how many it took (datagrams, wanted or not).
  int TakePushesLocked(int limit);
  // What a push does with page `p`: nothing (installed, zero, fresh, or the readahead marker),
  // install it, or keep it for its 2 MiB region, which can still be moved in whole.
  enum class PushUse { kNone, kInstall, kCollect };
  PushUse PushUseLocked(uint64_t p) const;
  // Set once with resolve_mutex_ held; read by the handler's poll without it.
  std::atomic<bool> pushes_off_{false};
  // "Pushed" replies in a row whose pushes brought none of the pages asked for (the group does
  // not reach this host, say); after a few the stream asks for the pages in its next requests
  // (plain_requests_left_), then tries again (both resolve_mutex_).
  uint32_t fruitless_pushed_replies_ = 0;
  uint32_t plain_requests_left_ = 0;
  // Staging buffers, allocated without zero-filling (a clone starts faster: the kernel maps
  // only the pages a fetch writes into).
  using Bytes = std::unique_ptr<uint8_t[]>;

  // Huge regions being put together (lazy_pages_regions.cc), all with resolve_mutex_ held. A
  // region's pages come from pushes and from the stream's requests for the rest ("parts").
  static constexpr size_t kRegionSlots = 4;
  struct Assembly {
    uint64_t region = ~0ULL;  // first page; ~0: a free slot
    Bytes data;               // 2 MiB (allocated at the slot's first use, kept for the next)
    std::bitset<512> have;    // pages in `data`
    std::bitset<512> pushed;  // of those, brought by a push (not received from a request)
    uint32_t parts_in_flight = 0;
    uint64_t serial = 0;  // when it was started (the oldest is given up first)
  };
  // Whether the 2 MiB region starting at `first` lies where huge pages may go and all its pages
  // are still to fetch.
  bool RegionWantedWholeLocked(uint64_t first) const;
  Assembly* AssemblyOf(uint64_t region);
  const Assembly* AssemblyOf(uint64_t region) const;
  // A slot for `region`: a free one, or the oldest one no request is in flight for, whose
  // pages are dropped (pushes only save fetches). Null when every slot waits for replies.
  Assembly* NewAssemblyLocked(uint64_t region);
  // Asks for the pages of `a` still missing (up to a window per request); moves the region in
  // now if none is. `unless_pushed`: the stream's way (a fault waiting asks for the pages).
  Result<void> RequestMissingLocked(Assembly& a, bool unless_pushed);
  // Stores pushed page `p` (data at `page`) in its region's assembly; moves the region in once
  // it is whole. A region no slot can be found for drops the page.
  Result<void> CollectPushedLocked(uint64_t p, const uint8_t* page);
  // A request's reply for a region has been received into its assembly.
  Result<void> PartReceivedLocked(Assembly& a, uint64_t first, uint64_t count);
  // A fault (or VMM access) at `page` in a region being put together: completes the region and
  // moves it in (at least half there), or installs what it has in 4 KiB pages and frees the
  // slot. Returns whether `page` is installed now.
  Result<bool> ResolveFromAssemblyLocked(uint64_t page);
  // Moves the region in as one huge page, or, if it is no longer wanted whole or the move fails,
  // installs its wanted pages in 4 KiB pages; frees the slot.
  Result<void> InstallRegionLocked(Assembly& a);
  // Installs the pages `a` has that are still wanted, in 4 KiB pages, and frees the slot.
  Result<void> InstallAssembledPagesLocked(Assembly& a);
  Assembly slots_[kRegionSlots];
  uint64_t assembly_serial_ = 0;

  UniqueFd uffd_;
  UniqueFd stop_;  // eventfd: ends the handler thread
  uint64_t host_base_ = 0;
  uint64_t pages_ = 0;
  std::vector<Range> ranges_;
  // A State per page, accessed through State() only once the handler thread runs (Start fills
  // it plainly before).
  std::unique_ptr<uint8_t[]> state_;
  std::atomic_ref<uint8_t> State(uint64_t page) const {
    return std::atomic_ref<uint8_t>(state_[page]);
  }
  std::unique_ptr<PageSource> source_;
  Options options_;
  std::mutex resolve_mutex_;
  Bytes buffer_;  // guarded by resolve_mutex_
  // Sequential scans (guarded by resolve_mutex_): where the last fault's fetch ended, and its
  // window.
  uint64_t sequential_next_ = ~0ULL;
  uint64_t sequential_window_ = 1;
  std::atomic<bool> failed_{false};
  std::thread handler_;

  // The readahead stream (guarded by resolve_mutex_; stream_busy_ mirrors "requests in flight"
  // for the handler's poll).
  static constexpr uint64_t kNoPage = ~0ULL;
  bool stream_on_ = false;
  uint64_t stream_next_ = 0;   // the next page the stream would ask for
  uint64_t stream_guest_ = 0;  // where the guest was last seen in the stream
  uint64_t stream_end_ = 0;    // the end of the registered range the stream runs in
  std::deque<StreamRequest> in_flight_;
  Bytes stream_buffer_;
  uint64_t marker_page_ = kNoPage;
  std::vector<uint8_t> marker_data_;
  bool huge_ok_ = false;  // a stage is there and the kernel moves pages
  std::atomic<bool> stream_busy_{false};

  // Counters (relaxed atomics: read by stats() from any thread).
  std::atomic<uint64_t> faults_{0}, fetched_{0}, prefetched_{0}, requests_{0}, fetch_ns_{0},
      zero_{0}, fresh_{0}, overwritten_{0}, pending_{0}, readahead_{0}, huge_{0}, pushed_{0},
      push_bytes_{0}, push_rejected_{0}, push_lost_{0}, push_replies_{0};
  Bytes push_buffer_;  // a push's pages spread out (resolve_mutex_)
};

}  // namespace flurry
