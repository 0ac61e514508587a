#include "snapshot/descriptor_test_support.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <xxhash.h>

#include <atomic>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <new>

// ---------------------------------------------------------------------------------------------
// Allocation tracking: the largest single operator-new request while tracking is on.

namespace {
std::atomic<bool> g_track_allocations{false};
std::atomic<size_t> g_largest_allocation{0};

void* TrackedAllocate(size_t size) {
  if (g_track_allocations.load(std::memory_order_relaxed)) {
    size_t largest = g_largest_allocation.load(std::memory_order_relaxed);
    while (size > largest &&
           !g_largest_allocation.compare_exchange_weak(largest, size, std::memory_order_relaxed)) {
    }
  }
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
}  // namespace

void* operator new(size_t size) { return TrackedAllocate(size); }
void* operator new[](size_t size) { return TrackedAllocate(size); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }
void operator delete[](void* p, size_t) noexcept { std::free(p); }

namespace flurry::descriptor_test {

AllocationTracker::AllocationTracker() {
  g_largest_allocation = 0;
  g_track_allocations = true;
}
AllocationTracker::~AllocationTracker() { g_track_allocations = false; }
size_t AllocationTracker::largest() const { return g_largest_allocation.load(); }

TempDir::TempDir() {
  std::string pattern = (std::filesystem::temp_directory_path() / "flurry-desc-XXXXXX").string();
  EXPECT_NE(mkdtemp(pattern.data()), nullptr);
  path_ = pattern;
}
TempDir::~TempDir() { std::filesystem::remove_all(path_); }

const UserRegField kUserRegFields[20] = {
    {"rax", &x86::UserRegs::rax},         {"rbx", &x86::UserRegs::rbx},
    {"rcx", &x86::UserRegs::rcx},         {"rdx", &x86::UserRegs::rdx},
    {"rsi", &x86::UserRegs::rsi},         {"rdi", &x86::UserRegs::rdi},
    {"rsp", &x86::UserRegs::rsp},         {"rbp", &x86::UserRegs::rbp},
    {"r8", &x86::UserRegs::r8},           {"r9", &x86::UserRegs::r9},
    {"r10", &x86::UserRegs::r10},         {"r11", &x86::UserRegs::r11},
    {"r12", &x86::UserRegs::r12},         {"r13", &x86::UserRegs::r13},
    {"r14", &x86::UserRegs::r14},         {"r15", &x86::UserRegs::r15},
    {"rip", &x86::UserRegs::rip},         {"rflags", &x86::UserRegs::rflags},
    {"fs_base", &x86::UserRegs::fs_base}, {"gs_base", &x86::UserRegs::gs_base},
};
static_assert(sizeof(x86::UserRegs) == 20 * sizeof(uint64_t), "a register is missing above");

std::vector<uint8_t> XsaveImage(size_t size, uint64_t xstate_bv) {
  std::vector<uint8_t> x(size);
  for (size_t i = 0; i < size; ++i) x[i] = static_cast<uint8_t>((i * 131 + 7) % 251 + 1);
  const uint32_t mxcsr = 0x1f80;
  std::memcpy(x.data() + 24, &mxcsr, sizeof(mxcsr));
  std::memset(x.data() + 464, 0, 576 - 464);  // software-reserved bytes and the header
  std::memcpy(x.data() + 512, &xstate_bv, sizeof(xstate_bv));
  return x;
}

VmDescriptor FullDescriptor() {
  VmDescriptor d;
  d.cpu.vendor = "GenuineIntel";
  d.cpu.family = 6;
  d.cpu.model = 0x8f;
  d.cpu.stepping = 8;
  d.cpu.features_hash = 0x0123456789abcdefULL;
  d.cpu.xcr0 = 0x2e7;

  d.backend = "seccomp";
  x86::UserRegs& r = d.vcpu.regs;
  for (size_t i = 0; i < std::size(kUserRegFields); ++i) {
    r.*kUserRegFields[i].field = 0x1111111111111111ULL * (i % 15 + 1) + i;
  }
  // The registers with rules: rip and rsp inside the 1 GiB of RAM below, canonical bases (one
  // in the upper half).
  r.rip = 0x401abc;
  r.rsp = 0x3fffe8c0;
  r.rflags = 0x246;
  r.fs_base = 0x7f0012345680;
  r.gs_base = 0xffff800000001000;
  d.vcpu.xcr0 = 0xe7;
  d.vcpu.xsave = XsaveImage(2688, 0xe7);  // AVX-512 size

  d.identity.pid = 4242;
  d.identity.ppid = 17;
  d.identity.tid = 4243;
  d.identity.clear_child_tid = 0x7f00001000;
  d.identity.robust_list = 0x7f00002000;
  d.identity.robust_list_len = 24;
  d.identity.exe_path = "/bin/app";
  d.identity.hostname = "clone-host";

  d.memory.ram_size = 1 * kGiB;
  d.memory.image_start = 0x401234;
  d.memory.image_end = 0x600000;
  d.memory.brk_start = 0x600000;
  d.memory.brk = 0x612345;
  d.memory.stack_bottom = 1 * kGiB - 8 * kMiB;
  d.memory.mmap_top = d.memory.stack_bottom - 2 * kMiB;
  d.memory.regions = {{0x30000000, 0x10000},
                      {0x30010000, 0x4000},  // touching its neighbour is fine
                      {0x38000000, 0x200000},
                      {d.memory.mmap_top - 0x1000, 0x1000}};
  d.memory.protections = std::map<uint64_t, ProtectionMap::Span>{
      {0x401000, {0x4c0000, kProtRead | kProtExec}},
      {0x4c0000, {0x613000, kProtReadWrite}},
      {0x30000000, {0x30010000, kProtReadWrite}},
      {0x30010000, {0x30014000, 0}},
      {0x38000000, {0x38200000, kProtAll}},
      {d.memory.mmap_top - 0x1000, {d.memory.mmap_top, kProtRead}},
      {d.memory.stack_bottom, {1 * kGiB, kProtReadWrite}}};

  d.files.root_host_path = "/srv/guest root";
  d.files.root_writable = true;
  d.files.cwd = "/data";
  d.files.fds = {
      {.fd = 0,
       .kind = FileKind::kStdio,
       .stdio_fd = 0,
       .path = "",
       .flags = O_RDONLY,
       .cloexec = false,
       .offset = 0,
       .event = {}},
      {.fd = 1,
       .kind = FileKind::kStdio,
       .stdio_fd = 1,
       .path = "",
       .flags = O_WRONLY,
       .cloexec = false,
       .offset = 0,
       .event = {}},
      {.fd = 2,
       .kind = FileKind::kStdio,
       .stdio_fd = 2,
       .path = "",
       .flags = O_RDWR,
       .cloexec = true,
       .offset = 0,
       .event = {}},
      {.fd = 3,
       .kind = FileKind::kRegular,
       .stdio_fd = -1,
       .path = "/data/in.txt",
       .flags = O_RDWR | O_APPEND,
       .cloexec = true,
       .offset = 123456789012,
       .event = {}},
      {.fd = 7,
       .kind = FileKind::kDirectory,
       .stdio_fd = -1,
       .path = "/data",
       .flags = O_RDONLY | O_DIRECTORY,
       .cloexec = false,
       .offset = 3,
       .event = {}},
      {.fd = 9,
       .kind = FileKind::kPipe,
       .stdio_fd = -1,
       .path = "",
       .flags = O_WRONLY | O_NONBLOCK,
       .cloexec = true,
       .offset = 0,
       .event = {},
       .pipe = 77},
      {.fd = 1023,
       .kind = FileKind::kOther,
       .stdio_fd = -1,
       .path = "/link",
       .flags = O_PATH | O_NOFOLLOW,
       .cloexec = true,
       .offset = 0,
       .event = {}},
      {.fd = 10,
       .kind = FileKind::kEventfd,
       .stdio_fd = -1,
       .path = "",
       .flags = O_RDWR | O_NONBLOCK,
       .cloexec = true,
       .offset = 0,
       .event = {.count = 0xfffffffffffffffe,
                 .semaphore = true,
                 .clock = 0,
                 .deadline_ns = 0,
                 .interval_ns = 0,
                 .interests = {}}},
      {.fd = 11,
       .kind = FileKind::kTimerfd,
       .stdio_fd = -1,
       .path = "",
       .flags = O_RDWR,
       .cloexec = false,
       .offset = 0,
       .event = {.count = 3,
                 .semaphore = false,
                 .clock = CLOCK_BOOTTIME,
                 .deadline_ns = 1500,
                 .interval_ns = 2000000,
                 .interests = {}}},
      {.fd = 12,
       .kind = FileKind::kEpoll,
       .stdio_fd = -1,
       .path = "",
       .flags = O_RDWR,
       .cloexec = true,
       .offset = 0,
       .event = {.interests = {{.fd = 9, .events = 0x80000004, .data = 0xfeedface12345678},
                               {.fd = 10, .events = 1, .data = 0}}}},
      {.fd = 13,
       .kind = FileKind::kEventfd,
       .stdio_fd = -1,
       .path = "",
       .flags = O_RDWR | O_NONBLOCK,
       .cloexec = false,
       .offset = 0,
       .event = {},
       .shares_with = 10},
      {.fd = 14,
       .kind = FileKind::kSignalfd,
       .stdio_fd = -1,
       .path = "",
       .flags = O_RDWR,
       .cloexec = true,
       .offset = 0,
       .event = {.interests = {},
                 .signal_mask = SignalState::Bit(SIGUSR1) | SignalState::Bit(SIGCHLD)}},
  };
  // fd 9's pipe: its read end is closed, its bytes still count (a restore keeps them).
  d.files.pipes = {
      PipeRecord{.id = 77, .capacity = 65536, .contents = {'i', 'n', ' ', 'f', 'l', 'y'}}};

  d.signals.actions[SIGINT] = {
      .handler = 0x401000, .flags = 0x04000000, .restorer = 0x402000, .mask = 0x2};
  d.signals.actions[SIGPIPE] = {.handler = 1, .flags = 0, .restorer = 0, .mask = 0};
  d.signals.actions[SIGSEGV] = {
      .handler = 0x403000, .flags = 0x0c000004, .restorer = 0x402000, .mask = 0x3000000000000000};
  d.signals.actions[64] = {
      .handler = 0x404000, .flags = 0x10000000, .restorer = 0x402000, .mask = 1};
  d.signals.blocked = 0x8000000000000001ULL;
  d.signals.pending = SignalState::Bit(1) | SignalState::Bit(11);
  d.signals.pending_info[1] = {.code = -6, .pid = 42, .uid = 0, .addr = 0};
  d.signals.pending_info[11] = {.code = 1, .pid = 0, .uid = 0, .addr = 0x10};
  d.signals.real_timer = {.deadline_ns = 5'000'000'000, .interval_ns = 250'000'000};
  d.signals.altstack = {.sp = 0x7000000, .flags = 0, .pad = 0, .size = 0x8000};

  d.start_time_ns = 987654321012345;
  d.clock = ClockCapture{.guest_monotonic_ns = 1987654321012345,
                         .host_realtime_ns = 1796428800123456789};  // 2026-12-05 00:00:00 UTC
  d.pages.present = {{0, 1}, {1, 0x1ff}, {0x200, 3}, {0x3f000, 0x800}, {0x3ffff, 1}};
  d.clone.family_id = 0xfeedfacecafebeefULL;
  d.clone.clone_id = 3;

  d.signals.thread_pending = SignalState::Bit(SIGUSR2);
  d.last_tid = 4250;
  for (int32_t tid : {4244, 4250}) {
    ThreadRecord t;
    t.tid = tid;
    t.cpu = d.vcpu;
    t.cpu.regs.rip += static_cast<uint64_t>(tid);
    t.cpu.regs.rsp -= 0x10000 * static_cast<uint64_t>(tid - 4243);
    t.cpu.regs.fs_base = 0x7f0000000000ULL + static_cast<uint64_t>(tid) * 0x1000;
    t.clear_child_tid = 0x7f00003000 + static_cast<uint64_t>(tid);
    t.robust_list = 0x7f00004000;
    t.robust_list_len = 24;
    t.blocked = SignalState::Bit(SIGUSR1) << (tid - 4244);
    t.thread_pending = SignalState::Bit(SIGTERM);
    t.altstack = {.sp = 0x6000000, .flags = tid == 4244 ? 0 : SS_DISABLE, .pad = 0, .size = 0x4000};
    d.threads.push_back(t);
  }
  // POSIX timers: armed periodic with its signal pending for the process, one for the running
  // thread with its signal pending there, one SIGEV_NONE.
  d.signals.pending |= SignalState::Bit(34);
  d.signals.timers = {
      PosixTimer{.id = 0,
                 .clock = CLOCK_MONOTONIC,
                 .notify = 0,
                 .signal = 34,
                 .value = 0x7f0000005000,
                 .deadline_ns = 1987654000000000,
                 .interval_ns = 10'000'000,
                 .queued = true,
                 .behind_plain = true,
                 .overrun = 4},
      PosixTimer{.id = 2,
                 .clock = CLOCK_REALTIME,
                 .notify = 4,
                 .signal = SIGUSR2,
                 .tid = 4243,  // the running thread (version 1 conversions drop the others)
                 .value = 2,
                 .deadline_ns = 1796428801000000000,
                 .queued = true,
                 .queued_overrun = 1},
      PosixTimer{.id = 3, .clock = CLOCK_BOOTTIME, .notify = 1, .value = 3},
  };
  return d;
}

VmDescriptor WithProcesses(VmDescriptor d) {
  ProcessesRecord& r = d.processes.emplace();
  const int32_t init = d.identity.pid;
  r.processes = {
      ProcessRecord{.pid = init, .ppid = 0, .pgid = init, .sid = init, .no_zombies = false},
      ProcessRecord{.pid = 4300,
                    .ppid = init,
                    .pgid = 4300,
                    .sid = init,
                    .signals = 1u << (SIGUSR1 - 1),
                    .sender = init,
                    .exit_signal = SIGCHLD},
      ProcessRecord{.pid = 4301,
                    .ppid = init,
                    .pgid = init,
                    .sid = init,
                    .zombie = true,
                    .wait_status = 7 << 8,
                    .exit_signal = SIGCHLD,
                    .no_zombies = true},
  };
  r.last_id = 4301;
  r.pipes = {PipeRecord{.id = 78, .capacity = 4096, .contents = {'a', 'b', 'c'}}};
  return d;
}

void ExpectSameDescriptor(const VmDescriptor& a, const VmDescriptor& b) {
  EXPECT_EQ(a.processes, b.processes);
  EXPECT_EQ(a.cpu, b.cpu);
  EXPECT_EQ(a.backend, b.backend);

  for (const UserRegField& f : kUserRegFields) {
    EXPECT_EQ(a.vcpu.regs.*f.field, b.vcpu.regs.*f.field) << f.name;
  }
  EXPECT_EQ(a.vcpu.xcr0, b.vcpu.xcr0);
  EXPECT_EQ(a.vcpu.xsave.size(), b.vcpu.xsave.size());
  EXPECT_TRUE(a.vcpu.xsave == b.vcpu.xsave) << "xsave contents differ";
  EXPECT_TRUE(a.vcpu == b.vcpu);

  EXPECT_EQ(a.identity.pid, b.identity.pid);
  EXPECT_EQ(a.identity.ppid, b.identity.ppid);
  EXPECT_EQ(a.identity.tid, b.identity.tid);
  EXPECT_EQ(a.identity.clear_child_tid, b.identity.clear_child_tid);
  EXPECT_EQ(a.identity.robust_list, b.identity.robust_list);
  EXPECT_EQ(a.identity.robust_list_len, b.identity.robust_list_len);
  EXPECT_EQ(a.identity.exe_path, b.identity.exe_path);
  EXPECT_EQ(a.identity.hostname, b.identity.hostname);

  EXPECT_EQ(a.memory.ram_size, b.memory.ram_size);
  EXPECT_EQ(a.memory.image_start, b.memory.image_start);
  EXPECT_EQ(a.memory.image_end, b.memory.image_end);
  EXPECT_EQ(a.memory.brk_start, b.memory.brk_start);
  EXPECT_EQ(a.memory.brk, b.memory.brk);
  EXPECT_EQ(a.memory.mmap_top, b.memory.mmap_top);
  EXPECT_EQ(a.memory.stack_bottom, b.memory.stack_bottom);
  EXPECT_EQ(a.memory.regions, b.memory.regions);
  EXPECT_EQ(a.memory.protections, b.memory.protections);

  EXPECT_EQ(a.files.root_host_path, b.files.root_host_path);
  EXPECT_EQ(a.files.root_writable, b.files.root_writable);
  EXPECT_EQ(a.files.cwd, b.files.cwd);
  ASSERT_EQ(a.files.fds.size(), b.files.fds.size());
  for (size_t i = 0; i < a.files.fds.size(); ++i) {
    SCOPED_TRACE(::testing::Message() << "fd record " << i);
    const FdRecord& fa = a.files.fds[i];
    const FdRecord& fb = b.files.fds[i];
    EXPECT_EQ(fa.fd, fb.fd);
    EXPECT_EQ(fa.kind, fb.kind);
    EXPECT_EQ(fa.stdio_fd, fb.stdio_fd);
    EXPECT_EQ(fa.path, fb.path);
    EXPECT_EQ(fa.flags, fb.flags);
    EXPECT_EQ(fa.cloexec, fb.cloexec);
    EXPECT_EQ(fa.offset, fb.offset);
    EXPECT_EQ(fa.event, fb.event);
    EXPECT_EQ(fa.shares_with, fb.shares_with);
    EXPECT_EQ(fa.pipe, fb.pipe);
  }
  EXPECT_EQ(a.files.pipes, b.files.pipes);

  for (size_t i = 0; i < a.signals.actions.size(); ++i) {
    SCOPED_TRACE(::testing::Message() << "signal " << i);
    EXPECT_EQ(a.signals.actions[i].handler, b.signals.actions[i].handler);
    EXPECT_EQ(a.signals.actions[i].flags, b.signals.actions[i].flags);
    EXPECT_EQ(a.signals.actions[i].restorer, b.signals.actions[i].restorer);
    EXPECT_EQ(a.signals.actions[i].mask, b.signals.actions[i].mask);
  }
  EXPECT_EQ(a.signals.blocked, b.signals.blocked);
  EXPECT_EQ(a.signals.thread_pending, b.signals.thread_pending);
  EXPECT_EQ(a.last_tid, b.last_tid);
  ASSERT_EQ(a.threads.size(), b.threads.size());
  for (size_t i = 0; i < a.threads.size(); ++i) {
    SCOPED_TRACE(::testing::Message() << "thread " << a.threads[i].tid);
    EXPECT_TRUE(a.threads[i] == b.threads[i]);
  }
  EXPECT_EQ(a.signals.altstack.sp, b.signals.altstack.sp);
  EXPECT_EQ(a.signals.altstack.flags, b.signals.altstack.flags);
  EXPECT_EQ(a.signals.altstack.size, b.signals.altstack.size);
  EXPECT_EQ(a.signals.pending, b.signals.pending);
  EXPECT_EQ(a.signals.real_timer.deadline_ns, b.signals.real_timer.deadline_ns);
  EXPECT_EQ(a.signals.real_timer.interval_ns, b.signals.real_timer.interval_ns);
  ASSERT_EQ(a.signals.timers.size(), b.signals.timers.size());
  for (size_t i = 0; i < a.signals.timers.size(); ++i) {
    SCOPED_TRACE(::testing::Message() << "POSIX timer " << a.signals.timers[i].id);
    EXPECT_TRUE(a.signals.timers[i] == b.signals.timers[i]);
  }
  for (int i = 1; i <= SignalState::kSignals; ++i) {
    if ((a.signals.pending & SignalState::Bit(i)) == 0) continue;
    SCOPED_TRACE(::testing::Message() << "pending signal " << i);
    EXPECT_EQ(a.signals.pending_info[i].code, b.signals.pending_info[i].code);
    EXPECT_EQ(a.signals.pending_info[i].pid, b.signals.pending_info[i].pid);
    EXPECT_EQ(a.signals.pending_info[i].uid, b.signals.pending_info[i].uid);
    EXPECT_EQ(a.signals.pending_info[i].addr, b.signals.pending_info[i].addr);
  }

  EXPECT_EQ(a.start_time_ns, b.start_time_ns);
  ASSERT_EQ(a.clock.has_value(), b.clock.has_value());
  if (a.clock) {
    EXPECT_EQ(a.clock->guest_monotonic_ns, b.clock->guest_monotonic_ns);
    EXPECT_EQ(a.clock->host_realtime_ns, b.clock->host_realtime_ns);
  }
  ASSERT_EQ(a.pages.present.size(), b.pages.present.size());
  for (size_t i = 0; i < a.pages.present.size(); ++i) {
    EXPECT_EQ(a.pages.present[i].first_page, b.pages.present[i].first_page) << "run " << i;
    EXPECT_EQ(a.pages.present[i].page_count, b.pages.present[i].page_count) << "run " << i;
  }
  EXPECT_EQ(a.clone.family_id, b.clone.family_id);
  EXPECT_EQ(a.clone.clone_id, b.clone.clone_id);
}

void Reseal(std::vector<uint8_t>& blob) {
  Put<uint64_t>(blob, 24, XXH64(blob.data() + 32, blob.size() - 32, 0));
}

std::vector<uint8_t> Wrap(const std::string& payload, uint32_t version) {
  std::vector<uint8_t> blob(32 + payload.size());
  std::memcpy(blob.data(), "FLYVMDSC", 8);
  Put<uint32_t>(blob, 8, version);
  Put<uint32_t>(blob, 12, 0);
  Put<uint64_t>(blob, 16, payload.size());
  std::memcpy(blob.data() + 32, payload.data(), payload.size());
  Reseal(blob);
  return blob;
}

std::vector<uint8_t> EncodeWithProtoEdit(const VmDescriptor& d,
                                         const std::function<void(pb::VmDescriptor&)>& edit) {
  std::vector<uint8_t> blob = EncodeDescriptor(d);
  pb::VmDescriptor message;
  EXPECT_TRUE(message.ParseFromArray(blob.data() + 32, static_cast<int>(blob.size() - 32)));
  edit(message);
  return Wrap(message.SerializeAsString());
}

std::string DecodeError(std::span<const uint8_t> blob) {
  Result<VmDescriptor> result = DecodeDescriptor(blob);
  if (result) return "(decoded successfully)";
  return result.error().message();
}

std::string ErrorFor(const VmDescriptor& d) { return DecodeError(EncodeDescriptor(d)); }

std::string ValidateError(const VmDescriptor& d) {
  Result<void> result = ValidateDescriptor(d);
  if (result) return "(valid)";
  return result.error().message();
}

}  // namespace flurry::descriptor_test
