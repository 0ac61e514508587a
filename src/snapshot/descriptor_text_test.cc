// The text dump (`flurry descriptor show`).
#include "snapshot/descriptor_text.h"

#include <gtest/gtest.h>

#include <string>

#include "snapshot/descriptor_test_support.h"

namespace flurry {
namespace {

using namespace descriptor_test;

void ExpectContains(const std::string& text, const std::string& needle) {
  EXPECT_NE(text.find(needle), std::string::npos) << "missing: " << needle << "\n" << text;
}

TEST(DescriptorTextTest, DescribesTheDescriptor) {
  const VmDescriptor d = FullDescriptor();
  const std::string text = DescribeDescriptor(d, 12345);
  const std::string expected[] = {
      "flurry VM descriptor, format version 2, 12345 bytes encoded\n",
      "cpu         GenuineIntel family 0x6 model 0x8f stepping 8",
      "clone       family feedfacecafebeef, clone 3\n",
      "started     CLOCK_MONOTONIC 987654.321012345 s\n",
      "captured    CLOCK_MONOTONIC 1987654.321012345 s at host CLOCK_REALTIME 2026-12-05 "
      "00:00:00.123456789 UTC\n",
      "backend     seccomp\n",
      "registers   rip 0x0000000000401abc  rsp 0x000000003fffe8c0  rflags 0x246\n",
      fmt::format("rax {:#018x}  rbx {:#018x}  rcx {:#018x}  rdx {:#018x}\n", d.vcpu.regs.rax,
                  d.vcpu.regs.rbx, d.vcpu.regs.rcx, d.vcpu.regs.rdx),
      fmt::format("rsi {:#018x}  rdi {:#018x}  rbp {:#018x}  r8  {:#018x}\n", d.vcpu.regs.rsi,
                  d.vcpu.regs.rdi, d.vcpu.regs.rbp, d.vcpu.regs.r8),
      fmt::format("r9  {:#018x}  r10 {:#018x}  r11 {:#018x}  r12 {:#018x}\n", d.vcpu.regs.r9,
                  d.vcpu.regs.r10, d.vcpu.regs.r11, d.vcpu.regs.r12),
      fmt::format("r13 {:#018x}  r14 {:#018x}  r15 {:#018x}\n", d.vcpu.regs.r13, d.vcpu.regs.r14,
                  d.vcpu.regs.r15),
      "fs base 0x7f0012345680  gs base 0xffff800000001000\n",
      "extended    xcr0 0xe7, xsave 2688 bytes, XSTATE_BV 0xe7\n",
      "memory      ram 1 GiB\n",
      "mmap   4 regions, 2.1 MiB, in [0x30000000, 0x3f600000)\n",
      "stack  [0x3f800000, 0x40000000)  8 MiB\n",
      "pages       5 runs, 2564 pages present (10.0 MiB)\n",
      "root /srv/guest root (read-write), cwd /data, 12 fds\n",
      "fd 0    stdio     host fd 0  O_RDONLY  offset 0\n",
      "fd 3    file      /data/in.txt  O_RDWR|O_APPEND  offset 123456789012  cloexec\n",
      "fd 9    pipe      pipe 77  O_WRONLY|O_NONBLOCK  offset 0  cloexec\n",
      "pipe 77: 6 bytes unread, capacity 65536\n",
      "fd 1023 other     /link  O_RDONLY|O_PATH|O_NOFOLLOW  offset 0  cloexec\n",
      "fd 10   eventfd   count 18446744073709551614 (semaphore)  O_RDWR|O_NONBLOCK  offset 0  "
      "cloexec\n",
      "fd 11   timerfd   clock 7, next at 1500 ns, every 2000000 ns, 3 unread  O_RDWR  offset 0\n",
      "fd 12   epoll     2 watched: fd 9 (0x80000004, data 0xfeedface12345678) fd 10 (0x1, data "
      "0x0)  O_RDWR  offset 0  cloexec\n",
      "fd 13   eventfd   count 0 (fd 10's open file)  O_RDWR|O_NONBLOCK  offset 0\n",
      "fd 14   signalfd  mask 0x10200  O_RDWR  offset 0  cloexec\n",
      "signals     blocked 0x8000000000000001, altstack [0x7000000, +0x8000), 4 non-default "
      "actions\n",
      "SIGINT     0x401000  flags 0x4000000  restorer 0x402000  mask 0x2\n",
      "SIGPIPE    SIG_IGN  flags 0x0",
      "signal 64  0x404000",
      "timers      3 POSIX timers\n",
      "timer 0   CLOCK_MONOTONIC  signal 34  at 1987654.000000000 s, every 0.010000000 s  value "
      "0x7f0000005000  signal pending\n",
      "timer 2   CLOCK_REALTIME  SIGUSR2 to thread 4243  at 1796428801.000000000 s  value 0x2  "
      "signal pending\n",
      "timer 3   CLOCK_BOOTTIME  no signal  disarmed  value 0x3\n",
      "identity    pid 4242, ppid 17, tid 4243, exe /bin/app, hostname clone-host\n",
  };
  for (const std::string& needle : expected) ExpectContains(text, needle);
  // The default handler of an untouched signal is not listed; KVM state is gone.
  EXPECT_EQ(text.find("SIGTERM"), std::string::npos);
  EXPECT_EQ(text.find("cr3"), std::string::npos);
  EXPECT_EQ(text.find("MSR"), std::string::npos);
}

TEST(DescriptorTextTest, DescribesAnEmptyXsaveAndAnUnknownBackend) {
  VmDescriptor d = FullDescriptor();
  d.vcpu.xsave.clear();
  d.vcpu.xcr0 = 0;
  d.backend.clear();
  const std::string text = DescribeDescriptor(d, 1);
  ExpectContains(text, "backend     unknown\n");
  ExpectContains(text, "extended    xcr0 0x0, xsave empty (initial FPU state)\n");
}

TEST(DescriptorTextTest, SaysWhenTheClockWasNotRecorded) {
  VmDescriptor d = FullDescriptor();
  d.clock.reset();
  ExpectContains(DescribeDescriptor(d, 1),
                 "captured    not recorded (older writer): a restore reads the host's monotonic "
                 "clock\n");
}

TEST(DescriptorTextTest, SummarisesProtectionsOrSaysTheyWereNotRecorded) {
  VmDescriptor d = FullDescriptor();
  ExpectContains(DescribeDescriptor(d, 1),
                 "prot   7 spans: r-- 4 KiB, rw- 9.4 MiB, r-x 764 KiB, rwx 2 MiB, --- 16 KiB\n");
  d.memory.protections.reset();
  ExpectContains(DescribeDescriptor(d, 1),
                 "prot   not recorded (every mapped page read/write/execute)\n");
}

TEST(DescriptorTextTest, SaysWhenItShowsAConvertedVersion1Descriptor) {
  const std::string text = DescribeDescriptor(FullDescriptor(), 4621, 1);
  ExpectContains(text,
                 "flurry VM descriptor, format version 1 (shown converted to version 2), 4621 "
                 "bytes encoded\n");
}

TEST(DescriptorTextTest, EscapesControlBytesInPathsAndTheBackend) {
  VmDescriptor d = FullDescriptor();
  d.files.fds[3].path = "/evil\nfd 9 file /etc/shadow";
  d.backend = "kvm\nregisters   rip 0x0";
  const std::string text = DescribeDescriptor(d, 1);
  ExpectContains(text, "/evil\\x0afd 9 file");
  ExpectContains(text, "backend     kvm\\x0aregisters   rip 0x0\n");
}

}  // namespace
}  // namespace flurry
