#include "daemon/warm_vmms.h"

#include <linux/capability.h>
#include <pthread.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <system_error>
#include <vector>

namespace flurry {

WarmVmms::WarmVmms(CloneVmmSpec vmm, int count, std::string work_dirs)
    : vmm_(std::move(vmm)), count_(count), work_dirs_(std::move(work_dirs)) {
  if (count_ > 0) keeper_ = std::thread([this] { Keep(); });
}

WarmVmms::~WarmVmms() { Stop(); }

std::optional<WaitingVmm> WarmVmms::Take() {
  std::list<WaitingVmm> dead;  // ended while waiting (killed, out of memory): reaped here
  std::optional<WaitingVmm> vmm;
  {
    std::lock_guard lock(mutex_);
    while (!ready_.empty() && ready_.front().runner.Exited()) {
      dead.splice(dead.end(), ready_, ready_.begin());
    }
    if (!ready_.empty()) {
      vmm.emplace(std::move(ready_.front()));
      ready_.pop_front();
      last_take_ = std::chrono::steady_clock::now();
    }
    if (vmm || !dead.empty()) changed_.notify_all();
  }
  End(std::move(dead));
  return vmm;
}

void WarmVmms::ExpectRam(uint64_t bytes) {
  std::lock_guard lock(mutex_);
  last_take_ = std::chrono::steady_clock::now();  // a call's clones are about to be taken
  if (bytes == ram_bytes_) return;
  ram_bytes_ = bytes;
  changed_.notify_all();
}

int WarmVmms::ready() const {
  std::lock_guard lock(mutex_);
  return static_cast<int>(ready_.size());
}

void WarmVmms::Stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    changed_.notify_all();
  }
  if (keeper_.joinable()) keeper_.join();
  std::list<WaitingVmm> waiting;
  {
    std::lock_guard lock(mutex_);
    waiting.swap(ready_);
  }
  End(std::move(waiting));
}

void WarmVmms::End(std::list<WaitingVmm> vmms) {
  std::vector<std::string> dirs;
  for (const WaitingVmm& vmm : vmms) {
    if (!vmm.work_dir.empty()) dirs.push_back(vmm.work_dir);
  }
  vmms.clear();  // each runner kills and reaps its VMM
  for (const std::string& dir : dirs) {
    std::error_code ignored;
    std::filesystem::remove_all(dir, ignored);
  }
}

Result<WaitingVmm> WarmVmms::StartOne(uint64_t ram_bytes, bool idle) {
  std::string work_dir = MakeWorkDir();
  CloneVmmSpec spec = vmm_;
  spec.ram_bytes = ram_bytes;
  spec.work_dir = work_dir;
  spec.idle = idle;
  Result<CloneRunner> started = CloneRunner::StartWaiting(spec);
  if (!started) {
    std::error_code ignored;
    if (!work_dir.empty()) std::filesystem::remove_all(work_dir, ignored);
    return std::unexpected(started.error());
  }
  return WaitingVmm{std::move(*started), std::move(work_dir), ram_bytes};
}

std::string WarmVmms::MakeWorkDir() {
  if (work_dirs_.empty()) return "";
  const std::string dir = fmt::format("{}/vmm-{}", work_dirs_, ++made_);
  std::error_code error;
  std::filesystem::create_directories(dir + "/root", error);
  return error ? "" : dir;
}

namespace {

// Whether a process of ours at SCHED_IDLE may go back to SCHED_OTHER at nice 0: with
// CAP_SYS_NICE, or an RLIMIT_NICE that allows nice 0 (sched(7)).
bool MayLeaveIdlePriority() {
  rlimit nice_limit{};
  if (getrlimit(RLIMIT_NICE, &nice_limit) == 0 && nice_limit.rlim_cur >= 20) return true;
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2]{};
  if (syscall(SYS_capget, &header, data) != 0) return false;
  return (data[CAP_SYS_NICE / 32].effective & (1U << (CAP_SYS_NICE % 32))) != 0;
}

}  // namespace

void WarmVmms::Keep() {
  pthread_setname_np(pthread_self(), "flurryd-warm");
  // VMMs are made ahead with CPU nobody else wants: from its start until it has a clone, a VMM
  // runs at SCHED_IDLE (CloneVmmSpec::idle), so that making it never slows the clones
  // starting meanwhile. CloneRunner::Begin gives it normal priority when its clone comes;
  // where that is not allowed, they run at normal priority all along. (This thread does not:
  // starved on a busy host, it would hold up flurryd's stop.)
  const bool idle = MayLeaveIdlePriority();
  std::unique_lock lock(mutex_);
  bool said_why = false;
  while (!stopping_) {
    auto stale = std::find_if(ready_.begin(), ready_.end(),
                              [&](const WaitingVmm& v) { return v.ram_bytes != ram_bytes_; });
    if (stale == ready_.end() && static_cast<int>(ready_.size()) >= count_) {
      changed_.wait(lock);
      continue;
    }
    // Nothing while clones are being started: a VMM taken is one of a burst (an sf_clone of
    // N), and making others then, even at SCHED_IDLE, slowed that burst's start by a third
    // (docs/perf.md). So a quiet while after the last one taken (or asked for) first.
    if (std::chrono::steady_clock::now() - last_take_ < kQuietBeforeMaking) {
      changed_.wait_until(lock, last_take_ + kQuietBeforeMaking);
      continue;
    }
    // VMMs made for another memory size go (one at a time: another is made in its place).
    if (stale != ready_.end()) {
      std::list<WaitingVmm> gone;
      gone.splice(gone.end(), ready_, stale);
      lock.unlock();
      End(std::move(gone));
      lock.lock();
      continue;
    }
    const uint64_t ram_bytes = ram_bytes_;
    lock.unlock();
    Result<WaitingVmm> started = StartOne(ram_bytes, idle);
    lock.lock();
    if (started) {
      ready_.push_back(std::move(*started));
      said_why = false;
      continue;
    }
    // Clones start their VMMs themselves meanwhile; try again in a while.
    if (!said_why) {
      std::fprintf(stderr, "flurryd: starting a clone VMM ahead: %s\n",
                   started.error().message().c_str());
      said_why = true;
    }
    changed_.wait_for(lock, std::chrono::seconds(1));
  }
}

}  // namespace flurry
