// Semantic validation (ValidateDescriptor, applied by DecodeDescriptor): one test per refusal.
#include "snapshot/descriptor_codec.h"
// The descriptor headers are backend-neutral: they must not pull in KVM's.
#ifdef KVMIO
#error "snapshot/descriptor_codec.h includes <linux/kvm.h>"
#endif

#include <fcntl.h>
#include <gtest/gtest.h>

#include <cctype>
#include <csignal>
#include <functional>
#include <ostream>

#include "arch/x86_64/layout.h"
#include "snapshot/descriptor_test_support.h"

namespace flurry {
namespace {

using namespace descriptor_test;

// A bad VmDescriptor encodes (with a correct checksum), fails to decode with `error` and fails
// ValidateDescriptor with `validate_error` (default: the same).
struct RefusalCase {
  const char* name;
  std::function<void(VmDescriptor&)> edit;
  const char* error;
  const char* validate_error = nullptr;
};

void PrintTo(const RefusalCase& c, std::ostream* os) { *os << c.name; }

std::string TestName(const ::testing::TestParamInfo<RefusalCase>& info) {
  std::string name;
  bool upper = true;
  for (const char* p = info.param.name; *p != '\0'; ++p) {
    if (std::isalnum(static_cast<unsigned char>(*p))) {
      name += upper ? static_cast<char>(std::toupper(static_cast<unsigned char>(*p))) : *p;
      upper = false;
    } else {
      upper = true;
    }
  }
  return name;
}

class DescriptorRefusalTest : public ::testing::TestWithParam<RefusalCase> {};

TEST_P(DescriptorRefusalTest, IsRefused) {
  const RefusalCase& c = GetParam();
  VmDescriptor d = FullDescriptor();
  c.edit(d);
  EXPECT_EQ(ValidateError(d), c.validate_error ? c.validate_error : c.error);
  EXPECT_EQ(ErrorFor(d), c.error);
}

// ---------------------------------------------------------------------------------------------
// Guest state: memory layout, page map, files, identity, signals, clone identity, CPU vendor.

const RefusalCase kGuestStateCases[] = {
    {"regions overlap", [](VmDescriptor& d) { d.memory.regions[0x30008000] = 0x10000; },
     "invalid descriptor: memory region at 0x30008000 overlaps the region ending at "
     "0x30010000"},
    {"region outside mmap area",
     [](VmDescriptor& d) { d.memory.regions[d.memory.mmap_top] = 0x1000; },
     "invalid descriptor: memory region [0x3f600000, 0x3f601000) is outside the mmap area "
     "[0x613000, 0x3f600000)"},
    {"region below brk", [](VmDescriptor& d) { d.memory.regions[0x610000] = 0x1000; },
     "invalid descriptor: memory region [0x610000, 0x611000) is outside the mmap area "
     "[0x613000, 0x3f600000)"},
    {"region wraps", [](VmDescriptor& d) { d.memory.regions[0x3e000000] = ~uint64_t{0xfff}; },
     "invalid descriptor: memory region [0x3e000000, 0x3dfff000) is outside the mmap area "
     "[0x613000, 0x3f600000)"},
    {"region unaligned", [](VmDescriptor& d) { d.memory.regions[0x3e000000] = 0x1001; },
     "invalid descriptor: memory region [0x3e000000, +0x1001) is not a non-empty page-aligned "
     "range"},
    {"page run outside RAM",
     [](VmDescriptor& d) {
       d.pages.present.push_back({0x3ffff + 1, 1});
     },
     "invalid descriptor: page run 5 [0x40000, +0x1) is outside RAM (0x40000 pages)"},
    {"page run overflows",
     [](VmDescriptor& d) {
       d.pages.present.push_back({0x40000, ~uint64_t{0}});
     },
     "invalid descriptor: page run 5 [0x40000, +0xffffffffffffffff) is outside RAM (0x40000 "
     "pages)"},
    {"page runs overlap",
     [](VmDescriptor& d) {
       d.pages.present[2] = {0x1ff, 2};
     },
     "invalid descriptor: page run 2 at page 0x1ff overlaps or precedes the run ending at "
     "0x200"},
    {"page runs unsorted",
     [](VmDescriptor& d) { std::swap(d.pages.present[3], d.pages.present[4]); },
     "invalid descriptor: page run 4 at page 0x3f000 overlaps or precedes the run ending at "
     "0x40000"},
    {"empty page run", [](VmDescriptor& d) { d.pages.present[2].page_count = 0; },
     "invalid descriptor: page run 2 at page 0x200 is empty"},
    {"fd 5000", [](VmDescriptor& d) { d.files.fds[3].fd = 5000; },
     "invalid descriptor: fd 5000 is outside 0..1023"},
    {"negative fd", [](VmDescriptor& d) { d.files.fds[3].fd = -1; },
     "invalid descriptor: fd -1 is outside 0..1023"},
    {"duplicate fd", [](VmDescriptor& d) { d.files.fds[4].fd = 3; },
     "invalid descriptor: fd 3 appears twice"},
    {"bad stdio fd", [](VmDescriptor& d) { d.files.fds[0].stdio_fd = 3; },
     "invalid descriptor: fd 0 is host stdio fd 3, not 0, 1 or 2"},
    {"file fd with stdio number", [](VmDescriptor& d) { d.files.fds[3].stdio_fd = 1; },
     "invalid descriptor: fd 3 is not host stdio but has stdio fd 1"},
    {"file without root",
     [](VmDescriptor& d) {
       d.files.root_host_path.reset();
       d.files.root_writable = false;
       d.files.cwd = "/";
     },
     "invalid descriptor: fd 3 is a file but there is no root directory"},
    {"relative fd path", [](VmDescriptor& d) { d.files.fds[3].path = "data/in.txt"; },
     "invalid descriptor: fd 3 path \"data/in.txt\" is not an absolute path"},
    {"path too long", [](VmDescriptor& d) { d.files.fds[3].path = "/" + std::string(4096, 'a'); },
     "invalid descriptor: fd 3 path is 4097 bytes, at most 4096 allowed"},
    {"negative offset", [](VmDescriptor& d) { d.files.fds[3].offset = -5; },
     "invalid descriptor: fd 3 has negative offset -5"},
    {"unknown file kind", [](VmDescriptor& d) { d.files.fds[3].kind = static_cast<FileKind>(10); },
     "invalid descriptor: fd 3 has unknown kind 0",  // encoded as FILE_KIND_UNSPECIFIED
     "invalid descriptor: fd 3 has unknown kind 10"},
    {"pipe with a path", [](VmDescriptor& d) { d.files.fds[3].kind = FileKind::kPipe; },
     "invalid descriptor: fd 3 is a pipe but has a path"},
    {"pipe with a stdio fd", [](VmDescriptor& d) { d.files.fds[1].kind = FileKind::kPipe; },
     "invalid descriptor: fd 1 is a pipe but has stdio fd 1"},
    {"pipe end read-write", [](VmDescriptor& d) { d.files.fds[5].flags = O_RDWR; },
     "invalid descriptor: fd 9 is a pipe end neither read-only nor write-only"},
    {"pipe with an offset", [](VmDescriptor& d) { d.files.fds[5].offset = 10; },
     "invalid descriptor: fd 9 is a pipe but has offset 10"},
    {"end of an unrecorded pipe", [](VmDescriptor& d) { d.files.fds[5].pipe = 78; },
     "invalid descriptor: fd 9 is an end of pipe 78, which is not recorded"},
    {"pipe named by a file", [](VmDescriptor& d) { d.files.fds[3].pipe = 77; },
     "invalid descriptor: fd 3 is no pipe but names pipe 77"},
    {"pipe id 0",
     [](VmDescriptor& d) {
       d.files.pipes[0].id = 0;
       d.files.fds[5].pipe = 0;
     },
     "invalid descriptor: pipe id 0 is 0 or appears twice"},
    {"pipe recorded twice", [](VmDescriptor& d) { d.files.pipes.push_back(d.files.pipes[0]); },
     "invalid descriptor: pipe id 77 is 0 or appears twice"},
    {"pipe of no fd",
     [](VmDescriptor& d) {
       d.files.pipes.push_back(PipeRecord{.id = 5, .capacity = 4096, .contents = {}});
     },
     "invalid descriptor: pipe 5 is recorded but no fd is an end of it"},
    {"pipe too small", [](VmDescriptor& d) { d.files.pipes[0].capacity = 100; },
     "invalid descriptor: pipe 77 has capacity 100, not 4096..1048576"},
    {"pipe over its capacity", [](VmDescriptor& d) { d.files.pipes[0].contents.resize(65537); },
     "invalid descriptor: pipe 77 holds 65537 bytes, more than its capacity 65536"},
    {"eventfd at its overflow", [](VmDescriptor& d) { d.files.fds[7].event.count = ~0ULL; },
     "invalid descriptor: fd 10: eventfd count 0xffffffffffffffff is past its maximum"},
    {"eventfd with a signal mask", [](VmDescriptor& d) { d.files.fds[7].event.signal_mask = 1; },
     "invalid descriptor: fd 10 is no signalfd but has a mask"},
    {"signalfd reading SIGKILL",
     [](VmDescriptor& d) {
       d.files.fds[7].kind = FileKind::kSignalfd;
       d.files.fds[7].event =
           EventRecord{.interests = {}, .signal_mask = SignalState::Bit(SIGKILL)};
     },
     "invalid descriptor: fd 10: a signalfd mask 0x100 with SIGKILL or SIGSTOP"},
    {"signalfd with a count",
     [](VmDescriptor& d) {
       d.files.fds[7].kind = FileKind::kSignalfd;
       d.files.fds[7].event = EventRecord{.count = 2,
                                          .semaphore = false,
                                          .clock = 0,
                                          .deadline_ns = 0,
                                          .interval_ns = 0,
                                          .interests = {},
                                          .signal_mask = 1};
     },
     "invalid descriptor: fd 10 is a signalfd with a count"},
    {"eventfd with a timer", [](VmDescriptor& d) { d.files.fds[7].event.deadline_ns = 1; },
     "invalid descriptor: fd 10 is no timerfd but has a timer setting"},
    {"eventfd write-only", [](VmDescriptor& d) { d.files.fds[7].flags = O_WRONLY; },
     "invalid descriptor: fd 10 has flags 0x1 (only O_RDWR and the F_SETFL flags)"},
    {"timerfd on a CPU clock",
     [](VmDescriptor& d) { d.files.fds[8].event.clock = CLOCK_PROCESS_CPUTIME_ID; },
     "invalid descriptor: fd 11: timerfd clock 2"},
    {"timerfd negative time", [](VmDescriptor& d) { d.files.fds[8].event.interval_ns = -1; },
     "invalid descriptor: fd 11: timerfd time outside [0, 2^62) ns"},
    {"timerfd far time", [](VmDescriptor& d) { d.files.fds[8].event.deadline_ns = INT64_MAX; },
     "invalid descriptor: fd 11: timerfd time outside [0, 2^62) ns"},
    {"interval timer far deadline",
     [](VmDescriptor& d) { d.signals.real_timer.deadline_ns = INT64_MAX - 5; },
     "invalid descriptor: interval timer deadline 9223372036854775802 ns, interval 250000000 ns "
     "past 2^62"},
    {"epoll watching itself", [](VmDescriptor& d) { d.files.fds[9].event.interests[0].fd = 12; },
     "invalid descriptor: epoll fd 12 watches fd 12"},
    {"epoll watching an fd twice",
     [](VmDescriptor& d) { d.files.fds[9].event.interests[1].fd = 9; },
     "invalid descriptor: epoll fd 12 watches fd 9 twice"},
    {"epoll watching a closed fd",
     [](VmDescriptor& d) { d.files.fds[9].event.interests[1].fd = 100; },
     "invalid descriptor: epoll fd 12 watches fd 100, which is not open"},
    {"a file with epoll interests",
     [](VmDescriptor& d) { d.files.fds[3].event.interests = {{.fd = 0, .events = 1, .data = 0}}; },
     "invalid descriptor: fd 3 is no eventfd, timerfd, epoll instance or signalfd but has their "
     "state"},
    {"device of another path",
     [](VmDescriptor& d) {
       d.files.fds[3].kind = FileKind::kDevice;
       d.files.fds[3].path = "/dev/sda";
     },
     "invalid descriptor: fd 3 is a device but its path is none of /dev/null, /dev/zero, "
     "/dev/full, /dev/random, /dev/urandom"},
    {"sharing a later fd", [](VmDescriptor& d) { d.files.fds[7].shares_with = 13; },
     "invalid descriptor: fd 10 shares fd 13, which is no earlier record of the same file"},
    {"sharing another kind's file", [](VmDescriptor& d) { d.files.fds[10].shares_with = 9; },
     "invalid descriptor: fd 13 shares fd 9, which is no earlier record of the same file"},
    {"sharing a closed fd", [](VmDescriptor& d) { d.files.fds[10].shares_with = 5; },
     "invalid descriptor: fd 13 shares fd 5, which is no earlier record of the same file"},
    {"writable without root",
     [](VmDescriptor& d) {
       d.files.root_host_path.reset();
       d.files.fds.resize(3);
       d.files.cwd = "/";
     },
     "invalid descriptor: root is writable but there is no root directory"},
    {"ram not a 2 MiB multiple", [](VmDescriptor& d) { d.memory.ram_size += 4096; },
     "invalid descriptor: ram size 0x40001000 is not a multiple of 2 MiB in [16 MiB, 64 GiB]"},
    {"ram too small", [](VmDescriptor& d) { d.memory.ram_size = 8 * kMiB; },
     "invalid descriptor: ram size 0x800000 is not a multiple of 2 MiB in [16 MiB, 64 GiB]"},
    {"ram too large", [](VmDescriptor& d) { d.memory.ram_size = 128 * kGiB; },
     "invalid descriptor: ram size 0x2000000000 is not a multiple of 2 MiB in [16 MiB, 64 "
     "GiB]"},
    {"image below user base", [](VmDescriptor& d) { d.memory.image_start = 0x1000; },
     "invalid descriptor: memory layout out of order: image start 0x1000 is below user base "
     "0x200000"},
    {"brk below brk start", [](VmDescriptor& d) { d.memory.brk = 0x5ff000; },
     "invalid descriptor: memory layout out of order: brk 0x5ff000 is below brk start "
     "0x600000"},
    {"stack outside RAM", [](VmDescriptor& d) { d.memory.stack_bottom = d.memory.ram_size; },
     "invalid descriptor: stack bottom 0x40000000 is not below the end of RAM 0x40000000"},
    {"mmap top unaligned", [](VmDescriptor& d) { d.memory.mmap_top += 1; },
     "invalid descriptor: mmap top 0x3f600001 is not page-aligned"},
    {"exe path relative", [](VmDescriptor& d) { d.identity.exe_path = "app"; },
     "invalid descriptor: exe path \"app\" is not an absolute path"},
    {"exe path with NUL",
     [](VmDescriptor& d) { d.identity.exe_path = std::string("/bin/a\0b", 8); },
     "invalid descriptor: exe path contains a NUL byte"},
    {"hostname too long", [](VmDescriptor& d) { d.identity.hostname = std::string(65, 'h'); },
     "invalid descriptor: hostname is 65 bytes, at most 64 allowed"},
    {"pid zero", [](VmDescriptor& d) { d.identity.pid = 0; },
     "invalid descriptor: pid 0 is not positive"},
    {"SIGKILL handler", [](VmDescriptor& d) { d.signals.actions[SIGKILL].handler = 0x401000; },
     "invalid descriptor: signal 9 cannot have a handler"},
    {"SIGSTOP blocked", [](VmDescriptor& d) { d.signals.blocked |= 1ULL << (SIGSTOP - 1); },
     "invalid descriptor: blocked mask 0x8000000000040001 blocks SIGKILL or SIGSTOP"},
    {"altstack flags", [](VmDescriptor& d) { d.signals.altstack.flags = 4; },
     "invalid descriptor: alternate signal stack flags 0x4 (valid: 0, SS_DISABLE)"},
    {"negative clone id", [](VmDescriptor& d) { d.clone.clone_id = -1; },
     "invalid descriptor: clone id -1 is negative"},
    {"captured guest time too large",
     [](VmDescriptor& d) { d.clock->guest_monotonic_ns = int64_t{1} << 62; },
     "invalid descriptor: guest monotonic time 4611686018427387904 ns at capture is outside [0, "
     "2^62)"},
    {"captured guest time negative", [](VmDescriptor& d) { d.clock->guest_monotonic_ns = -1; },
     "invalid descriptor: guest monotonic time 18446744073709551615 ns at capture is outside [0, "
     "2^62)"},
    {"captured realtime negative", [](VmDescriptor& d) { d.clock->host_realtime_ns = -1; },
     "invalid descriptor: host realtime -1 ns at capture is outside [0, 2^62)"},
    {"one process only",
     [](VmDescriptor& d) {
       d = WithProcesses(d);
       d.processes->processes.resize(1);
     },
     "invalid descriptor: 1 processes recorded, not 2..512"},
    {"init not first",
     [](VmDescriptor& d) {
       d = WithProcesses(d);
       std::swap(d.processes->processes[0], d.processes->processes[1]);
     },
     "invalid descriptor: the first process recorded is 4300, not the descriptor's 4242"},
    {"process id twice",
     [](VmDescriptor& d) {
       d = WithProcesses(d);
       d.processes->processes[2].pid = 4300;
     },
     "invalid descriptor: process id 4300 is outside [1, 4194303] or appears twice"},
    {"parent not a process",
     [](VmDescriptor& d) {
       d = WithProcesses(d);
       d.processes->processes[1].ppid = 9;
     },
     "invalid descriptor: process 4300 has parent 9"},
    {"process its own parent",
     [](VmDescriptor& d) {
       d = WithProcesses(d);
       d.processes->processes[1].ppid = 4300;
     },
     "invalid descriptor: process 4300 has parent 4300"},
    {"init with a parent",
     [](VmDescriptor& d) {
       d = WithProcesses(d);
       d.processes->processes[0].ppid = 4300;
     },
     "invalid descriptor: process 4242 has parent 4300"},
    {"init ended",
     [](VmDescriptor& d) {
       d = WithProcesses(d);
       d.processes->processes[0].zombie = true;
     },
     "invalid descriptor: init (process 4242) is recorded ended"},
    {"running with a wait status",
     [](VmDescriptor& d) {
       d = WithProcesses(d);
       d.processes->processes[1].wait_status = 9;
     },
     "invalid descriptor: process 4300 runs but has a wait status"},
    {"process group 0",
     [](VmDescriptor& d) {
       d = WithProcesses(d);
       d.processes->processes[1].pgid = 0;
     },
     "invalid descriptor: process 4300 is in group 0 of session 4242"},
    {"exit signal 65",
     [](VmDescriptor& d) {
       d = WithProcesses(d);
       d.processes->processes[1].exit_signal = 65;
     },
     "invalid descriptor: process 4300 has exit signal 65"},
    {"newest process id 0",
     [](VmDescriptor& d) {
       d = WithProcesses(d);
       d.processes->last_id = 0;
     },
     "invalid descriptor: the newest process id 0 is outside [1, 4194303]"},
    {"processes' pipe twice",
     [](VmDescriptor& d) {
       d = WithProcesses(d);
       d.processes->pipes.push_back(d.processes->pipes[0]);
     },
     "invalid descriptor: pipe id 78 is 0 or appears twice"},
    {"processes' pipe over its capacity",
     [](VmDescriptor& d) {
       d = WithProcesses(d);
       d.processes->pipes[0].contents.resize(4097);
     },
     "invalid descriptor: pipe 78 holds 4097 bytes, more than its capacity 4096"},
    {"thread id above the largest pid", [](VmDescriptor& d) { d.threads[1].tid = 4194304; },
     "invalid descriptor: thread id 4194304 is outside [1, 4194303]"},
    {"thread id of the running thread", [](VmDescriptor& d) { d.threads[0].tid = 4243; },
     "invalid descriptor: thread id 4243 appears twice"},
    {"thread id twice", [](VmDescriptor& d) { d.threads[1].tid = 4244; },
     "invalid descriptor: thread id 4244 appears twice"},
    {"thread rip outside memory", [](VmDescriptor& d) { d.threads[1].cpu.regs.rip = 0; },
     "invalid descriptor: thread 4250: rip 0x0 is neither in user memory [0x200000, 0x40000000) "
     "nor in the vDSO [0xb000, 0xf000)"},
    {"thread blocks SIGKILL",
     [](VmDescriptor& d) { d.threads[0].blocked |= SignalState::Bit(SIGKILL); },
     "invalid descriptor: thread 4244 blocks, or has pending, SIGKILL or SIGSTOP"},
    {"thread altstack flags", [](VmDescriptor& d) { d.threads[0].altstack.flags = 5; },
     "invalid descriptor: thread 4244: alternate signal stack flags 0x5 (valid: 0, SS_DISABLE)"},
    {"SIGSTOP pending for the thread",
     [](VmDescriptor& d) { d.signals.thread_pending |= SignalState::Bit(SIGSTOP); },
     "invalid descriptor: SIGKILL or SIGSTOP pending for one thread"},
    {"too many threads", [](VmDescriptor& d) { d.threads.resize(1025, d.threads[0]); },
     "invalid descriptor: 1025 threads, at most 1024 allowed"},
    {"POSIX timer ids out of order", [](VmDescriptor& d) { d.signals.timers[1].id = 0; },
     "invalid descriptor: POSIX timer id 0 is not ascending in [0, 256)"},
    {"POSIX timer id too large", [](VmDescriptor& d) { d.signals.timers[2].id = 256; },
     "invalid descriptor: POSIX timer id 256 is not ascending in [0, 256)"},
    {"POSIX timer on a CPU-time clock",
     [](VmDescriptor& d) { d.signals.timers[0].clock = CLOCK_PROCESS_CPUTIME_ID; },
     "invalid descriptor: POSIX timer 0: clock 2"},
    {"POSIX timer notify", [](VmDescriptor& d) { d.signals.timers[0].notify = 2; },
     "invalid descriptor: POSIX timer 0: notify 2 (valid: 0, 1, 4)"},
    {"POSIX timer signal", [](VmDescriptor& d) { d.signals.timers[0].signal = 65; },
     "invalid descriptor: POSIX timer 0: signal 65"},
    {"POSIX timer SIGKILL for a thread",
     [](VmDescriptor& d) { d.signals.timers[1].signal = SIGKILL; },
     "invalid descriptor: POSIX timer 2: thread 4243 for signal 9"},
    {"POSIX timer thread without SIGEV_THREAD_ID",
     [](VmDescriptor& d) { d.signals.timers[0].tid = 5; },
     "invalid descriptor: POSIX timer 0: thread 5 for signal 34"},
    {"POSIX timer interval while disarmed",
     [](VmDescriptor& d) { d.signals.timers[2].interval_ns = 5; },
     "invalid descriptor: POSIX timer 3: deadline 0 ns, interval 5 ns"},
    {"POSIX timer SIGEV_NONE queued", [](VmDescriptor& d) { d.signals.timers[2].queued = true; },
     "invalid descriptor: POSIX timer 3: queued true, overruns 0 and 0"},
    {"POSIX timer queued without its signal pending",
     [](VmDescriptor& d) { d.signals.pending &= ~SignalState::Bit(34); },
     "invalid descriptor: POSIX timer 0: its signal 34 is queued but not pending"},
    {"POSIX timer queued without its signal pending for its thread",
     [](VmDescriptor& d) { d.signals.thread_pending = 0; },
     "invalid descriptor: POSIX timer 2: its signal 12 is queued but not pending"},
    {"POSIX timer queued for a thread that has ended",
     [](VmDescriptor& d) { d.signals.timers[1].tid = 4251; },
     "invalid descriptor: POSIX timer 2: its signal 12 is queued but not pending"},
    {"too many POSIX timers",
     [](VmDescriptor& d) {
       d.signals.timers.resize(257, d.signals.timers[2]);
       for (size_t i = 0; i < d.signals.timers.size(); ++i) {
         d.signals.timers[i].id = static_cast<int32_t>(i);
       }
     },
     "invalid descriptor: 257 POSIX timers, at most 256 allowed"},
};
INSTANTIATE_TEST_SUITE_P(GuestState, DescriptorRefusalTest, ::testing::ValuesIn(kGuestStateCases),
                         TestName);

// ---------------------------------------------------------------------------------------------
// The CPU state (x86::UserCpuState) and the backend name.

// Sets the XSAVE image's little-endian u64 at `offset`.
void PutXsave64(VmDescriptor& d, size_t offset, uint64_t value) {
  std::memcpy(d.vcpu.xsave.data() + offset, &value, sizeof(value));
}

const RefusalCase kCpuStateCases[] = {
    {"rip below user memory", [](VmDescriptor& d) { d.vcpu.regs.rip = x86::kUserBase - 1; },
     "invalid descriptor: rip 0x1fffff is neither in user memory [0x200000, 0x40000000) nor in "
     "the vDSO [0xb000, 0xf000)"},
    {"rip in the syscall gate",  // a KVM-only state capture code must not write
     [](VmDescriptor& d) { d.vcpu.regs.rip = x86::kSyscallGateAddr + 7; },
     "invalid descriptor: rip 0x5007 is neither in user memory [0x200000, 0x40000000) nor in "
     "the vDSO [0xb000, 0xf000)"},
    {"rip after the vDSO",
     [](VmDescriptor& d) { d.vcpu.regs.rip = x86::kVdsoAddr + x86::kVdsoMaxSize; },
     "invalid descriptor: rip 0xf000 is neither in user memory [0x200000, 0x40000000) nor in "
     "the vDSO [0xb000, 0xf000)"},
    {"rip at the end of RAM", [](VmDescriptor& d) { d.vcpu.regs.rip = d.memory.ram_size; },
     "invalid descriptor: rip 0x40000000 is neither in user memory [0x200000, 0x40000000) nor "
     "in the vDSO [0xb000, 0xf000)"},
    {"rip zero", [](VmDescriptor& d) { d.vcpu.regs.rip = 0; },
     "invalid descriptor: rip 0x0 is neither in user memory [0x200000, 0x40000000) nor in the "
     "vDSO [0xb000, 0xf000)"},
    {"rsp below user memory", [](VmDescriptor& d) { d.vcpu.regs.rsp = 0x8000; },
     "invalid descriptor: rsp 0x8000 is outside user memory [0x200000, 0x40000000]"},
    {"rsp above RAM", [](VmDescriptor& d) { d.vcpu.regs.rsp = d.memory.ram_size + 8; },
     "invalid descriptor: rsp 0x40000008 is outside user memory [0x200000, 0x40000000]"},
    {"fs base not canonical", [](VmDescriptor& d) { d.vcpu.regs.fs_base = 0x0000800000000000; },
     "invalid descriptor: fs base 0x800000000000 is not canonical"},
    {"gs base not canonical", [](VmDescriptor& d) { d.vcpu.regs.gs_base = 0x7fff800000000000; },
     "invalid descriptor: gs base 0x7fff800000000000 is not canonical"},
    {"xcr0 without SSE", [](VmDescriptor& d) { d.vcpu.xcr0 = 0x5; },
     "invalid descriptor: xcr0 0x5 lacks x87 or SSE (bits 0 and 1)"},
    {"xcr0 without x87", [](VmDescriptor& d) { d.vcpu.xcr0 = 0x6; },
     "invalid descriptor: xcr0 0x6 lacks x87 or SSE (bits 0 and 1)"},
    {"xsave shorter than its header", [](VmDescriptor& d) { d.vcpu.xsave.resize(512); },
     "invalid descriptor: xsave area is 512 bytes (valid: 0, or 576..16384 in multiples of 8)"},
    {"xsave not a multiple of 8 bytes", [](VmDescriptor& d) { d.vcpu.xsave.resize(2444); },
     "invalid descriptor: xsave area is 2444 bytes (valid: 0, or 576..16384 in multiples of 8)"},
    {"xsave larger than 16 KiB", [](VmDescriptor& d) { d.vcpu.xsave.resize(16384 + 64); },
     "invalid descriptor: xsave area is 16448 bytes (valid: 0, or 576..16384 in multiples of "
     "8)"},
    {"xsave MXCSR reserved bits", [](VmDescriptor& d) { d.vcpu.xsave[26] = 1; },
     "invalid descriptor: xsave MXCSR 0x11f80 sets reserved bits 31..16"},
    {"xsave software-reserved bytes", [](VmDescriptor& d) { d.vcpu.xsave[511] = 1; },
     "invalid descriptor: xsave bytes 464..511 (software-reserved) are not zero"},
    {"xsave XSTATE_BV outside xcr0", [](VmDescriptor& d) { PutXsave64(d, 512, 0x2e7); },
     "invalid descriptor: xsave XSTATE_BV 0x2e7 has components outside xcr0 0xe7"},
    {"xsave XSTATE_BV with xcr0 zero",
     [](VmDescriptor& d) {
       d.vcpu.xcr0 = 0;
       PutXsave64(d, 512, 0x1);
     },
     "invalid descriptor: xsave XSTATE_BV 0x1 has components outside xcr0 0x0"},
    {"xsave compacted format", [](VmDescriptor& d) { PutXsave64(d, 520, 0x80000000000000e7); },
     "invalid descriptor: xsave XCOMP_BV is 0x80000000000000e7, not 0: only the standard format "
     "is accepted"},
    {"xsave XCOMP_BV without the compaction bit", [](VmDescriptor& d) { PutXsave64(d, 520, 1); },
     "invalid descriptor: xsave XCOMP_BV is 0x1, not 0: only the standard format is accepted"},
    {"xsave header reserved bytes", [](VmDescriptor& d) { d.vcpu.xsave[575] = 0x80; },
     "invalid descriptor: xsave header bytes 528..575 (reserved) are not zero"},
    {"backend too long", [](VmDescriptor& d) { d.backend = std::string(33, 'b'); },
     "invalid descriptor: backend is 33 bytes, at most 32 allowed"},
    {"backend with NUL", [](VmDescriptor& d) { d.backend = std::string("kvm\0", 4); },
     "invalid descriptor: backend contains a NUL byte"},
};
INSTANTIATE_TEST_SUITE_P(CpuState, DescriptorRefusalTest, ::testing::ValuesIn(kCpuStateCases),
                         TestName);

// ---------------------------------------------------------------------------------------------
// The edges of the CPU state rules are accepted.

void ExpectValid(const VmDescriptor& d) {
  EXPECT_EQ(ValidateError(d), "(valid)");
  Result<VmDescriptor> decoded = DecodeDescriptor(EncodeDescriptor(d));
  ASSERT_TRUE(decoded) << decoded.error().message();
  EXPECT_TRUE(decoded->vcpu == d.vcpu);
}

TEST(DescriptorValidateTest, AcceptsRipAnywhereInUserMemoryAndTheVdso) {
  for (uint64_t rip : {x86::kUserBase, uint64_t{1 * kGiB - 1}, x86::kVdsoAddr,
                       x86::kVdsoAddr + x86::kVdsoMaxSize - 1}) {
    SCOPED_TRACE(rip);
    VmDescriptor d = FullDescriptor();
    d.vcpu.regs.rip = rip;
    ExpectValid(d);
  }
}

TEST(DescriptorValidateTest, AcceptsRspFromUserBaseToTheTopOfRam) {
  for (uint64_t rsp : {x86::kUserBase, uint64_t{1 * kGiB}}) {  // top: an empty stack
    SCOPED_TRACE(rsp);
    VmDescriptor d = FullDescriptor();
    d.vcpu.regs.rsp = rsp;
    ExpectValid(d);
  }
}

TEST(DescriptorValidateTest, AcceptsCanonicalBasesInBothHalves) {
  for (uint64_t base :
       {uint64_t{0}, uint64_t{0x00007fffffffffff}, uint64_t{0xffff800000000000}, ~uint64_t{0}}) {
    SCOPED_TRACE(base);
    VmDescriptor d = FullDescriptor();
    d.vcpu.regs.fs_base = base;
    d.vcpu.regs.gs_base = base;
    ExpectValid(d);
  }
}

TEST(DescriptorValidateTest, AcceptsAnEmptyXsaveWithAnyValidXcr0) {
  for (uint64_t xcr0 : {uint64_t{0}, uint64_t{0x3}, uint64_t{0x602e7}}) {
    SCOPED_TRACE(xcr0);
    VmDescriptor d = FullDescriptor();
    d.vcpu.xsave.clear();
    d.vcpu.xcr0 = xcr0;
    ExpectValid(d);
  }
}

TEST(DescriptorValidateTest, AcceptsXsaveSizesFromTheHeaderToTheCap) {
  // 2440: an AMD CPU with PKRU (8 bytes at offset 2432); 2696: Intel's PKRU at 2688.
  for (size_t size : {size_t{576}, size_t{832}, size_t{2440}, size_t{2696}, size_t{4096},
                      size_t{11008}, size_t{16384}}) {
    SCOPED_TRACE(size);
    VmDescriptor d = FullDescriptor();
    d.vcpu.xsave = XsaveImage(size, 0x3);
    ExpectValid(d);
  }
}

TEST(DescriptorValidateTest, AcceptsAnXstateBvThatIsAStrictSubsetOfXcr0) {
  VmDescriptor d = FullDescriptor();
  d.vcpu.xsave = XsaveImage(2688, 0x0);  // every component in its initial state
  ExpectValid(d);
  d.vcpu.xsave = XsaveImage(2688, 0x7);
  ExpectValid(d);
}

TEST(DescriptorValidateTest, AcceptsAnyBackendName) {
  // Informational only: a name this flurry does not know is not a reason to refuse.
  for (const char* backend : {"", "kvm", "seccomp", "some-future-backend", "\x01\xff"}) {
    SCOPED_TRACE(backend);
    VmDescriptor d = FullDescriptor();
    d.backend = backend;
    ExpectValid(d);
  }
}

TEST(DescriptorValidateTest, ChecksTheMemoryLayoutBeforeTheRegisters) {
  // A descriptor with both a bad RAM size and a rip outside it names the RAM size.
  VmDescriptor d = FullDescriptor();
  d.memory.ram_size = 8 * kMiB;
  d.vcpu.regs.rip = 0x30000000;
  EXPECT_EQ(ValidateError(d),
            "invalid descriptor: ram size 0x800000 is not a multiple of 2 MiB in [16 MiB, 64 GiB]");
}

TEST(DescriptorValidateTest, CatchesWhatTheEncodingWouldHide) {
  // A value the proto representation cannot carry (slot 0 of the signal array is not encoded)
  // is caught on the capture side.
  VmDescriptor d = FullDescriptor();
  d.signals.actions[0].handler = 5;
  EXPECT_EQ(ValidateError(d), "invalid descriptor: action for signal 0");
}

}  // namespace
}  // namespace flurry
