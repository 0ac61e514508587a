#include "snapshot/descriptor_codec.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <new>
#include <random>
#include <set>

#include "arch/x86_64/layout.h"
#include "descriptor.pb.h"
#include "snapshot/descriptor_text.h"

// ---------------------------------------------------------------------------------------------
// Allocation tracking: the largest single operator-new request while tracking is on, so a test
// can prove that a huge payload_size claim is refused without allocating it.

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

// Tracks the largest allocation made while alive.
class AllocationTracker {
 public:
  AllocationTracker() {
    g_largest_allocation = 0;
    g_track_allocations = true;
  }
  ~AllocationTracker() { g_track_allocations = false; }
  size_t largest() const { return g_largest_allocation.load(); }
};
}  // namespace

void* operator new(size_t size) { return TrackedAllocate(size); }
void* operator new[](size_t size) { return TrackedAllocate(size); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }
void operator delete[](void* p, size_t) noexcept { std::free(p); }

namespace flurry {
namespace {

namespace pb = ::flurry::descriptor::v1;
using x86::kPageSize;

constexpr uint64_t kMiB = 1ULL << 20;
constexpr uint64_t kGiB = 1ULL << 30;

// ---------------------------------------------------------------------------------------------
// A descriptor with every field set to a valid, non-default, distinct value.

kvm_segment Segment(int i) {
  kvm_segment s{};
  s.base = 0x1000000000ULL * (i + 1) + i;
  s.limit = 0xfffff000u + i;
  s.selector = static_cast<uint16_t>(0x10 * (i + 1) + 3);
  s.type = static_cast<uint8_t>((i + 3) & 15);
  s.present = 1;
  s.dpl = static_cast<uint8_t>(3 - (i & 3));
  // Each flag set in a different subset of segments, so a swapped flag shows up.
  s.db = (i >> 0) & 1;
  s.s = ((i >> 1) & 1) ^ 1;
  s.l = (i >> 2) & 1;
  s.g = ((i >> 0) & 1) ^ 1;
  s.avl = i == 5;
  s.unusable = i == 7;
  return s;
}

VmDescriptor FullDescriptor() {
  VmDescriptor d;
  d.cpu.vendor = "GenuineIntel";
  d.cpu.family = 6;
  d.cpu.model = 0x8f;
  d.cpu.stepping = 8;
  d.cpu.features_hash = 0x0123456789abcdefULL;
  d.cpu.xcr0 = 0x2e7;

  kvm_regs& r = d.vcpu.regs;
  uint64_t* words = reinterpret_cast<uint64_t*>(&r);
  static_assert(sizeof(kvm_regs) == 18 * 8);
  for (int i = 0; i < 18; ++i) words[i] = 0x1111111111111111ULL * (i % 15 + 1) + i;
  kvm_sregs& s = d.vcpu.sregs;
  kvm_segment* segments[] = {&s.cs, &s.ds, &s.es, &s.fs, &s.gs, &s.ss, &s.tr, &s.ldt};
  for (int i = 0; i < 8; ++i) *segments[i] = Segment(i);
  s.gdt = {.base = 0x1000, .limit = 0x37, .padding = {}};
  s.idt = {.base = 0x2000, .limit = 0xfff, .padding = {}};
  s.cr0 = 0x80050033;
  s.cr2 = 0x7fffdeadb000;
  s.cr3 = 0x20000;
  s.cr4 = 0x3506f8;
  s.cr8 = 7;
  s.efer = 0xd01;
  s.apic_base = 0xfee00900;
  s.interrupt_bitmap[0] = 1;
  s.interrupt_bitmap[1] = 2;
  s.interrupt_bitmap[2] = 0x8000000000000000ULL;
  s.interrupt_bitmap[3] = 0x55;
  for (size_t i = 0; i < std::size(d.vcpu.xsave.region); ++i) {
    d.vcpu.xsave.region[i] = static_cast<uint32_t>(i * 2654435761u);
  }
  d.vcpu.xcr0 = 0xe7;
  for (uint32_t i = 0; i < 5; ++i) {
    kvm_msr_entry msr{};
    msr.index = 0xc0000080 + i;
    msr.data = 0xabcdef00ULL + i;
    d.vcpu.msrs.push_back(msr);
  }

  d.identity.pid = 4242;
  d.identity.ppid = 17;
  d.identity.tid = 4243;
  d.identity.clear_child_tid = 0x7f00001000;
  d.identity.robust_list = 0x7f00002000;
  d.identity.robust_list_len = 24;
  d.identity.exe_path = "/bin/app";
  d.identity.hostname = "clone-host";

  d.segment_bases.fs_base = 0x5555000;
  d.segment_bases.gs_base = 0x6666000;
  d.segment_bases.dirty = true;

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
       .offset = 0},
      {.fd = 1,
       .kind = FileKind::kStdio,
       .stdio_fd = 1,
       .path = "",
       .flags = O_WRONLY,
       .cloexec = false,
       .offset = 0},
      {.fd = 2,
       .kind = FileKind::kStdio,
       .stdio_fd = 2,
       .path = "",
       .flags = O_RDWR,
       .cloexec = true,
       .offset = 0},
      {.fd = 3,
       .kind = FileKind::kRegular,
       .stdio_fd = -1,
       .path = "/data/in.txt",
       .flags = O_RDWR | O_APPEND,
       .cloexec = true,
       .offset = 123456789012},
      {.fd = 7,
       .kind = FileKind::kDirectory,
       .stdio_fd = -1,
       .path = "/data",
       .flags = O_RDONLY | O_DIRECTORY,
       .cloexec = false,
       .offset = 3},
      {.fd = 1023,
       .kind = FileKind::kOther,
       .stdio_fd = -1,
       .path = "/link",
       .flags = O_PATH | O_NOFOLLOW,
       .cloexec = true,
       .offset = 0},
  };

  d.signals.actions[SIGINT] = {
      .handler = 0x401000, .flags = 0x04000000, .restorer = 0x402000, .mask = 0x2};
  d.signals.actions[SIGPIPE] = {.handler = 1, .flags = 0, .restorer = 0, .mask = 0};
  d.signals.actions[SIGSEGV] = {
      .handler = 0x403000, .flags = 0x0c000004, .restorer = 0x402000, .mask = 0x3000000000000000};
  d.signals.actions[64] = {
      .handler = 0x404000, .flags = 0x10000000, .restorer = 0x402000, .mask = 1};
  d.signals.blocked = 0x8000000000000001ULL;
  d.signals.altstack = {.sp = 0x7000000, .flags = 0, .pad = 0, .size = 0x8000};

  d.start_time_ns = 987654321012345;
  d.pages.present = {{0, 1}, {1, 0x1ff}, {0x200, 3}, {0x3f000, 0x800}, {0x3ffff, 1}};
  d.clone.family_id = 0xfeedfacecafebeefULL;
  d.clone.clone_id = 3;
  return d;
}

void ExpectSegmentEq(const char* name, const kvm_segment& a, const kvm_segment& b) {
  SCOPED_TRACE(name);
  EXPECT_EQ(a.base, b.base);
  EXPECT_EQ(a.limit, b.limit);
  EXPECT_EQ(a.selector, b.selector);
  EXPECT_EQ(a.type, b.type);
  EXPECT_EQ(a.present, b.present);
  EXPECT_EQ(a.dpl, b.dpl);
  EXPECT_EQ(a.db, b.db);
  EXPECT_EQ(a.s, b.s);
  EXPECT_EQ(a.l, b.l);
  EXPECT_EQ(a.g, b.g);
  EXPECT_EQ(a.avl, b.avl);
  EXPECT_EQ(a.unusable, b.unusable);
}

// Field-by-field comparison (padding and reserved words are not part of the format).
void ExpectSameDescriptor(const VmDescriptor& a, const VmDescriptor& b) {
  EXPECT_EQ(a.cpu, b.cpu);

  const kvm_regs& ra = a.vcpu.regs;
  const kvm_regs& rb = b.vcpu.regs;
#define FLURRY_EXPECT_FIELD(f) EXPECT_EQ(ra.f, rb.f) << #f
  FLURRY_EXPECT_FIELD(rax);
  FLURRY_EXPECT_FIELD(rbx);
  FLURRY_EXPECT_FIELD(rcx);
  FLURRY_EXPECT_FIELD(rdx);
  FLURRY_EXPECT_FIELD(rsi);
  FLURRY_EXPECT_FIELD(rdi);
  FLURRY_EXPECT_FIELD(rsp);
  FLURRY_EXPECT_FIELD(rbp);
  FLURRY_EXPECT_FIELD(r8);
  FLURRY_EXPECT_FIELD(r9);
  FLURRY_EXPECT_FIELD(r10);
  FLURRY_EXPECT_FIELD(r11);
  FLURRY_EXPECT_FIELD(r12);
  FLURRY_EXPECT_FIELD(r13);
  FLURRY_EXPECT_FIELD(r14);
  FLURRY_EXPECT_FIELD(r15);
  FLURRY_EXPECT_FIELD(rip);
  FLURRY_EXPECT_FIELD(rflags);
#undef FLURRY_EXPECT_FIELD

  const kvm_sregs& sa = a.vcpu.sregs;
  const kvm_sregs& sb = b.vcpu.sregs;
  ExpectSegmentEq("cs", sa.cs, sb.cs);
  ExpectSegmentEq("ds", sa.ds, sb.ds);
  ExpectSegmentEq("es", sa.es, sb.es);
  ExpectSegmentEq("fs", sa.fs, sb.fs);
  ExpectSegmentEq("gs", sa.gs, sb.gs);
  ExpectSegmentEq("ss", sa.ss, sb.ss);
  ExpectSegmentEq("tr", sa.tr, sb.tr);
  ExpectSegmentEq("ldt", sa.ldt, sb.ldt);
  EXPECT_EQ(sa.gdt.base, sb.gdt.base);
  EXPECT_EQ(sa.gdt.limit, sb.gdt.limit);
  EXPECT_EQ(sa.idt.base, sb.idt.base);
  EXPECT_EQ(sa.idt.limit, sb.idt.limit);
  EXPECT_EQ(sa.cr0, sb.cr0);
  EXPECT_EQ(sa.cr2, sb.cr2);
  EXPECT_EQ(sa.cr3, sb.cr3);
  EXPECT_EQ(sa.cr4, sb.cr4);
  EXPECT_EQ(sa.cr8, sb.cr8);
  EXPECT_EQ(sa.efer, sb.efer);
  EXPECT_EQ(sa.apic_base, sb.apic_base);
  for (size_t i = 0; i < std::size(sa.interrupt_bitmap); ++i) {
    EXPECT_EQ(sa.interrupt_bitmap[i], sb.interrupt_bitmap[i]) << "interrupt_bitmap " << i;
  }
  EXPECT_EQ(std::memcmp(&a.vcpu.xsave, &b.vcpu.xsave, sizeof(a.vcpu.xsave)), 0) << "xsave";
  EXPECT_EQ(a.vcpu.xcr0, b.vcpu.xcr0);
  ASSERT_EQ(a.vcpu.msrs.size(), b.vcpu.msrs.size());
  for (size_t i = 0; i < a.vcpu.msrs.size(); ++i) {
    EXPECT_EQ(a.vcpu.msrs[i].index, b.vcpu.msrs[i].index);
    EXPECT_EQ(a.vcpu.msrs[i].data, b.vcpu.msrs[i].data);
  }

  EXPECT_EQ(a.identity.pid, b.identity.pid);
  EXPECT_EQ(a.identity.ppid, b.identity.ppid);
  EXPECT_EQ(a.identity.tid, b.identity.tid);
  EXPECT_EQ(a.identity.clear_child_tid, b.identity.clear_child_tid);
  EXPECT_EQ(a.identity.robust_list, b.identity.robust_list);
  EXPECT_EQ(a.identity.robust_list_len, b.identity.robust_list_len);
  EXPECT_EQ(a.identity.exe_path, b.identity.exe_path);
  EXPECT_EQ(a.identity.hostname, b.identity.hostname);

  EXPECT_EQ(a.segment_bases.fs_base, b.segment_bases.fs_base);
  EXPECT_EQ(a.segment_bases.gs_base, b.segment_bases.gs_base);
  EXPECT_EQ(a.segment_bases.dirty, b.segment_bases.dirty);

  EXPECT_EQ(a.memory.ram_size, b.memory.ram_size);
  EXPECT_EQ(a.memory.image_start, b.memory.image_start);
  EXPECT_EQ(a.memory.image_end, b.memory.image_end);
  EXPECT_EQ(a.memory.brk_start, b.memory.brk_start);
  EXPECT_EQ(a.memory.brk, b.memory.brk);
  EXPECT_EQ(a.memory.mmap_top, b.memory.mmap_top);
  EXPECT_EQ(a.memory.stack_bottom, b.memory.stack_bottom);
  EXPECT_EQ(a.memory.regions, b.memory.regions);

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
  }

  for (size_t i = 0; i < a.signals.actions.size(); ++i) {
    SCOPED_TRACE(::testing::Message() << "signal " << i);
    EXPECT_EQ(a.signals.actions[i].handler, b.signals.actions[i].handler);
    EXPECT_EQ(a.signals.actions[i].flags, b.signals.actions[i].flags);
    EXPECT_EQ(a.signals.actions[i].restorer, b.signals.actions[i].restorer);
    EXPECT_EQ(a.signals.actions[i].mask, b.signals.actions[i].mask);
  }
  EXPECT_EQ(a.signals.blocked, b.signals.blocked);
  EXPECT_EQ(a.signals.altstack.sp, b.signals.altstack.sp);
  EXPECT_EQ(a.signals.altstack.flags, b.signals.altstack.flags);
  EXPECT_EQ(a.signals.altstack.size, b.signals.altstack.size);

  EXPECT_EQ(a.start_time_ns, b.start_time_ns);
  ASSERT_EQ(a.pages.present.size(), b.pages.present.size());
  for (size_t i = 0; i < a.pages.present.size(); ++i) {
    EXPECT_EQ(a.pages.present[i].first_page, b.pages.present[i].first_page) << "run " << i;
    EXPECT_EQ(a.pages.present[i].page_count, b.pages.present[i].page_count) << "run " << i;
  }
  EXPECT_EQ(a.clone.family_id, b.clone.family_id);
  EXPECT_EQ(a.clone.clone_id, b.clone.clone_id);
}

// ---------------------------------------------------------------------------------------------
// Blob surgery. The header is built here independently of the codec (it doubles as a check of
// the documented layout).

template <typename T>
void Put(std::vector<uint8_t>& blob, size_t offset, T value) {
  std::memcpy(blob.data() + offset, &value, sizeof(value));
}
template <typename T>
T Get(const std::vector<uint8_t>& blob, size_t offset) {
  T value;
  std::memcpy(&value, blob.data() + offset, sizeof(value));
  return value;
}

// Recomputes the checksum over whatever follows the header.
void Reseal(std::vector<uint8_t>& blob) {
  Put<uint64_t>(blob, 24, XXH64(blob.data() + 32, blob.size() - 32, 0));
}

// A blob with a correct header around an arbitrary payload.
std::vector<uint8_t> Wrap(const std::string& payload) {
  std::vector<uint8_t> blob(32 + payload.size());
  std::memcpy(blob.data(), "FLYVMDSC", 8);
  Put<uint32_t>(blob, 8, 1);
  Put<uint32_t>(blob, 12, 0);
  Put<uint64_t>(blob, 16, payload.size());
  std::memcpy(blob.data() + 32, payload.data(), payload.size());
  Reseal(blob);
  return blob;
}

// Encodes `d` (without validation), then lets `edit` change the protobuf message.
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

// The error DecodeDescriptor gives for `d` after an encode (which never validates).
std::string ErrorFor(const VmDescriptor& d) { return DecodeError(EncodeDescriptor(d)); }

class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "flurry-desc-XXXXXX").string();
    EXPECT_NE(mkdtemp(pattern.data()), nullptr);
    path_ = pattern;
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// ---------------------------------------------------------------------------------------------
// Round trips

TEST(DescriptorCodecTest, RoundTripsEveryField) {
  const VmDescriptor original = FullDescriptor();
  ASSERT_TRUE(ValidateDescriptor(original)) << ValidateDescriptor(original).error().message();
  const std::vector<uint8_t> blob = EncodeDescriptor(original);
  Result<VmDescriptor> decoded = DecodeDescriptor(blob);
  ASSERT_TRUE(decoded) << decoded.error().message();
  ExpectSameDescriptor(original, *decoded);
  EXPECT_EQ(EncodeDescriptor(*decoded), blob) << "re-encoding changed the bytes";
}

TEST(DescriptorCodecTest, FullDescriptorDiffersFromDefaultEverywhereItCan) {
  // Guards the round-trip test: a field left at its default would round-trip trivially.
  const VmDescriptor full = FullDescriptor();
  const VmDescriptor empty;
  EXPECT_NE(full.cpu.vendor, empty.cpu.vendor);
  EXPECT_NE(full.identity.hostname, empty.identity.hostname);
  EXPECT_NE(full.segment_bases.dirty, empty.segment_bases.dirty);
  EXPECT_NE(full.files.root_writable, empty.files.root_writable);
  EXPECT_NE(full.files.cwd, empty.files.cwd);
  EXPECT_NE(full.signals.altstack.flags, empty.signals.altstack.flags);
  const uint64_t* words = reinterpret_cast<const uint64_t*>(&full.vcpu.regs);
  for (int i = 0; i < 18; ++i) EXPECT_NE(words[i], 0u) << "register " << i;
  for (uint64_t word : full.vcpu.sregs.interrupt_bitmap) EXPECT_NE(word, 0u);
}

TEST(DescriptorCodecTest, DefaultSegmentFlagsAndEmptyCollectionsRoundTrip) {
  VmDescriptor d = FullDescriptor();
  d.vcpu.sregs.ldt = kvm_segment{};
  d.vcpu.msrs.clear();
  d.memory.regions.clear();
  d.files.root_host_path.reset();
  d.files.root_writable = false;
  d.files.cwd = "/";
  d.files.fds.clear();
  d.signals = SignalState{};
  d.pages.present.clear();
  d.clone = {};
  Result<VmDescriptor> decoded = DecodeDescriptor(EncodeDescriptor(d));
  ASSERT_TRUE(decoded) << decoded.error().message();
  ExpectSameDescriptor(d, *decoded);
  EXPECT_FALSE(decoded->files.root_host_path.has_value());
}

TEST(DescriptorCodecTest, EmptyRootPathIsDistinctFromNoRoot) {
  // `optional bytes`: presence survives even for a value that is invalid later.
  VmDescriptor d = FullDescriptor();
  d.files.root_host_path = "";
  EXPECT_EQ(ErrorFor(d), "invalid descriptor: root directory \"\" is not an absolute path");
}

TEST(DescriptorCodecTest, HeaderLayoutIsAsDocumented) {
  const std::vector<uint8_t> blob = EncodeDescriptor(FullDescriptor());
  ASSERT_GT(blob.size(), 32u);
  EXPECT_EQ(std::memcmp(blob.data(), "FLYVMDSC", 8), 0);
  EXPECT_EQ(Get<uint32_t>(blob, 8), VmDescriptor::kFormatVersion);
  EXPECT_EQ(Get<uint32_t>(blob, 8), 1u);
  EXPECT_EQ(Get<uint32_t>(blob, 12), 0u);
  EXPECT_EQ(Get<uint64_t>(blob, 16), blob.size() - 32);
  EXPECT_EQ(Get<uint64_t>(blob, 24), XXH64(blob.data() + 32, blob.size() - 32, 0));
  // Little-endian on the wire: the version's first byte is 1.
  EXPECT_EQ(blob[8], 1);
  EXPECT_EQ(blob[11], 0);
}

TEST(DescriptorCodecTest, EncodingIsDeterministic) {
  EXPECT_EQ(EncodeDescriptor(FullDescriptor()), EncodeDescriptor(FullDescriptor()));
}

// ---------------------------------------------------------------------------------------------
// Header refusals

TEST(DescriptorCodecTest, RefusesBadMagic) {
  std::vector<uint8_t> blob = EncodeDescriptor(FullDescriptor());
  blob[0] = 'X';
  EXPECT_EQ(DecodeError(blob), "not a flurry VM descriptor");
  EXPECT_EQ(DecodeError({}), "not a flurry VM descriptor");
  const std::string elf =
      "\x7f"
      "ELF\x02\x01\x01";
  EXPECT_EQ(DecodeError({reinterpret_cast<const uint8_t*>(elf.data()), elf.size()}),
            "not a flurry VM descriptor");
}

TEST(DescriptorCodecTest, RefusesOtherFormatVersions) {
  for (uint32_t version : {0u, 2u, 0xffffffffu}) {
    std::vector<uint8_t> blob = EncodeDescriptor(FullDescriptor());
    Put<uint32_t>(blob, 8, version);
    EXPECT_EQ(DecodeError(blob),
              fmt::format("descriptor format version {} is not supported (this flurry reads "
                          "version 1)",
                          version));
  }
}

TEST(DescriptorCodecTest, RefusesUnknownFlags) {
  std::vector<uint8_t> blob = EncodeDescriptor(FullDescriptor());
  Put<uint32_t>(blob, 12, 4);
  EXPECT_EQ(DecodeError(blob), "descriptor flags 0x4 are not supported");
}

TEST(DescriptorCodecTest, RefusesAnyFlippedPayloadOrChecksumByte) {
  const std::vector<uint8_t> good = EncodeDescriptor(FullDescriptor());
  for (size_t offset :
       {size_t{24}, size_t{31}, size_t{32}, size_t{33}, good.size() / 2, good.size() - 1}) {
    std::vector<uint8_t> blob = good;
    blob[offset] ^= 0x01;
    EXPECT_EQ(DecodeError(blob), "descriptor checksum mismatch (corrupted?)") << offset;
  }
}

TEST(DescriptorCodecTest, RefusesTruncation) {
  const std::vector<uint8_t> blob = EncodeDescriptor(FullDescriptor());
  const size_t payload = blob.size() - 32;
  for (size_t length : {size_t{1}, size_t{8}, size_t{20}, size_t{31}}) {
    EXPECT_EQ(
        DecodeError({blob.data(), length}),
        fmt::format("truncated descriptor: {} bytes, shorter than the 32-byte header", length));
  }
  for (size_t length : {size_t{32}, size_t{33}, 32 + payload / 2, blob.size() - 1}) {
    EXPECT_EQ(DecodeError({blob.data(), length}),
              fmt::format("truncated descriptor: header says {} bytes, file has {}", payload,
                          length - 32));
  }
}

TEST(DescriptorCodecTest, RefusesTrailingBytes) {
  std::vector<uint8_t> blob = EncodeDescriptor(FullDescriptor());
  blob.push_back(0);
  EXPECT_EQ(DecodeError(blob),
            fmt::format("descriptor has 1 bytes after its {}-byte payload", blob.size() - 33));
}

TEST(DescriptorCodecTest, RefusesOversizePayloadClaimWithoutAllocatingIt) {
  const std::vector<uint8_t> good = EncodeDescriptor(FullDescriptor());
  for (uint64_t claim : {kMaxDescriptorPayloadSize + 1, uint64_t{1} << 40, ~uint64_t{0}}) {
    std::vector<uint8_t> blob = good;
    Put<uint64_t>(blob, 16, claim);
    AllocationTracker tracker;
    EXPECT_EQ(DecodeError(blob),
              fmt::format("descriptor payload of {} bytes exceeds the 64 MiB limit", claim));
    EXPECT_LT(tracker.largest(), 4096u) << "claim " << claim;
  }
}

TEST(DescriptorCodecTest, RefusesPayloadThatIsNotProtobuf) {
  EXPECT_EQ(DecodeError(Wrap(std::string("\xff\xff\xff\xff\xff\xff", 6))),
            "descriptor payload is not a valid flurry.descriptor.v1.VmDescriptor message");
}

// ---------------------------------------------------------------------------------------------
// Semantic refusals: a bad VmDescriptor encodes (with a correct checksum) and fails to decode.

struct SemanticCase {
  const char* name;
  std::function<void(VmDescriptor&)> edit;
  const char* error;
};

TEST(DescriptorCodecTest, RefusesSemanticallyInvalidDescriptors) {
  const SemanticCase cases[] = {
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
      {"unknown file kind", [](VmDescriptor& d) { d.files.fds[3].kind = static_cast<FileKind>(9); },
       "invalid descriptor: fd 3 has unknown kind 0"},
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
      {"too many MSRs",
       [](VmDescriptor& d) {
         d.vcpu.msrs.clear();
         for (uint32_t i = 0; i < 65; ++i) d.vcpu.msrs.push_back({i, 0, i});
       },
       "invalid descriptor: 65 MSRs, at most 64 allowed"},
      {"duplicate MSR", [](VmDescriptor& d) { d.vcpu.msrs[1].index = d.vcpu.msrs[0].index; },
       "invalid descriptor: MSR 0xc0000080 appears twice"},
      {"SIGKILL handler", [](VmDescriptor& d) { d.signals.actions[SIGKILL].handler = 0x401000; },
       "invalid descriptor: signal 9 cannot have a handler"},
      {"SIGSTOP blocked", [](VmDescriptor& d) { d.signals.blocked |= 1ULL << (SIGSTOP - 1); },
       "invalid descriptor: blocked mask 0x8000000000040001 blocks SIGKILL or SIGSTOP"},
      {"altstack flags", [](VmDescriptor& d) { d.signals.altstack.flags = 4; },
       "invalid descriptor: alternate signal stack flags 0x4 (valid: 0, SS_DISABLE)"},
      {"negative clone id", [](VmDescriptor& d) { d.clone.clone_id = -1; },
       "invalid descriptor: clone id -1 is negative"},
      {"vendor too long", [](VmDescriptor& d) { d.cpu.vendor = "GenuineIntelX"; },
       "invalid descriptor: cpu vendor is 13 bytes, at most 12 allowed"},
  };
  for (const SemanticCase& c : cases) {
    SCOPED_TRACE(c.name);
    VmDescriptor d = FullDescriptor();
    c.edit(d);
    EXPECT_FALSE(ValidateDescriptor(d));
    EXPECT_EQ(ErrorFor(d), c.error);
  }
}

TEST(DescriptorCodecTest, ValidateDescriptorCatchesWhatTheEncodingWouldHide) {
  // Values the proto representation cannot carry are caught on the capture side.
  VmDescriptor d = FullDescriptor();
  d.vcpu.sregs.cs.present = 2;
  ASSERT_FALSE(ValidateDescriptor(d));
  EXPECT_EQ(ValidateDescriptor(d).error().message(),
            "invalid descriptor: sregs.cs present flag is 2, not 0 or 1");
  d = FullDescriptor();
  d.vcpu.msrs[0].reserved = 1;
  EXPECT_FALSE(ValidateDescriptor(d));
  d = FullDescriptor();
  d.signals.actions[0].handler = 5;
  EXPECT_FALSE(ValidateDescriptor(d));
}

// Refusals that a VmDescriptor cannot express: built by editing the protobuf message.
struct ProtoCase {
  const char* name;
  std::function<void(pb::VmDescriptor&)> edit;
  const char* error;
};

TEST(DescriptorCodecTest, RefusesMalformedMessages) {
  const ProtoCase cases[] = {
      {"xsave short", [](pb::VmDescriptor& m) { m.mutable_vcpu()->mutable_xsave()->pop_back(); },
       "invalid descriptor: xsave area is 4095 bytes, expected 4096"},
      {"xsave long", [](pb::VmDescriptor& m) { m.mutable_vcpu()->mutable_xsave()->push_back(0); },
       "invalid descriptor: xsave area is 4097 bytes, expected 4096"},
      {"interrupt bitmap short",
       [](pb::VmDescriptor& m) {
         m.mutable_vcpu()->mutable_sregs()->mutable_interrupt_bitmap()->RemoveLast();
       },
       "invalid descriptor: sregs.interrupt_bitmap has 3 words, expected 4"},
      {"selector too wide",
       [](pb::VmDescriptor& m) {
         m.mutable_vcpu()->mutable_sregs()->mutable_ss()->set_selector(0x10000);
       },
       "invalid descriptor: sregs.ss selector 0x10000 exceeds 16 bits"},
      {"dpl too large",
       [](pb::VmDescriptor& m) { m.mutable_vcpu()->mutable_sregs()->mutable_cs()->set_dpl(4); },
       "invalid descriptor: sregs.cs dpl 4 exceeds 3"},
      {"gdt limit too wide",
       [](pb::VmDescriptor& m) {
         m.mutable_vcpu()->mutable_sregs()->mutable_gdt()->set_limit(0x10000);
       },
       "invalid descriptor: sregs.gdt limit 0x10000 exceeds 16 bits"},
      {"missing vcpu", [](pb::VmDescriptor& m) { m.clear_vcpu(); },
       "invalid descriptor: missing vcpu"},
      {"missing segment",
       [](pb::VmDescriptor& m) { m.mutable_vcpu()->mutable_sregs()->clear_tr(); },
       "invalid descriptor: missing sregs.tr"},
      {"missing page map", [](pb::VmDescriptor& m) { m.clear_pages(); },
       "invalid descriptor: missing pages"},
      {"missing altstack", [](pb::VmDescriptor& m) { m.mutable_signals()->clear_altstack(); },
       "invalid descriptor: missing signals.altstack"},
      {"unspecified file kind",
       [](pb::VmDescriptor& m) {
         m.mutable_files()->mutable_fds(3)->set_kind(pb::FILE_KIND_UNSPECIFIED);
       },
       "invalid descriptor: fd 3 has unknown kind 0"},
      {"future file kind",
       [](pb::VmDescriptor& m) {
         m.mutable_files()->mutable_fds(3)->set_kind(static_cast<pb::FileKind>(17));
       },
       "invalid descriptor: fd 3 has unknown kind 17"},
      {"signal 0",
       [](pb::VmDescriptor& m) { m.mutable_signals()->mutable_actions(0)->set_signal(0); },
       "invalid descriptor: signal action for signal 0 (valid: 1..64)"},
      {"signal 65",
       [](pb::VmDescriptor& m) { m.mutable_signals()->mutable_actions(0)->set_signal(65); },
       "invalid descriptor: signal action for signal 65 (valid: 1..64)"},
      {"duplicate signal",
       [](pb::VmDescriptor& m) { m.mutable_signals()->mutable_actions(1)->set_signal(SIGINT); },
       "invalid descriptor: two actions for signal 2"},
      {"too many signal actions",
       [](pb::VmDescriptor& m) {
         for (int i = 0; i < 61; ++i) m.mutable_signals()->add_actions()->set_signal(10);
       },
       "invalid descriptor: 65 signal actions, at most 64 allowed"},
      {"run arrays differ", [](pb::VmDescriptor& m) { m.mutable_pages()->add_run_gaps(1); },
       "invalid descriptor: page map has 6 run gaps but 5 run lengths"},
      {"regions out of order",
       [](pb::VmDescriptor& m) { m.mutable_memory()->mutable_regions()->SwapElements(0, 1); },
       "invalid descriptor: memory regions not in ascending order at 0x30000000"},
      {"too many fds",
       [](pb::VmDescriptor& m) {
         for (int i = 0; i < 1020; ++i) m.mutable_files()->add_fds()->set_fd(5);
       },
       "invalid descriptor: 1026 fds, at most 1024 allowed"},
      {"more page runs than RAM pages",
       [](pb::VmDescriptor& m) {
         m.mutable_memory()->set_ram_size(16 * kMiB);
         for (int i = 0; i < 4096; ++i) {
           m.mutable_pages()->add_run_gaps(0);
           m.mutable_pages()->add_run_lengths(1);
         }
       },
       "invalid descriptor: 4101 page runs in 4096 pages of RAM"},
      {"bad ram before containers",
       [](pb::VmDescriptor& m) { m.mutable_memory()->set_ram_size(0); },
       "invalid descriptor: ram size 0x0 is not a multiple of 2 MiB in [16 MiB, 64 GiB]"},
  };
  for (const ProtoCase& c : cases) {
    SCOPED_TRACE(c.name);
    EXPECT_EQ(DecodeError(EncodeWithProtoEdit(FullDescriptor(), c.edit)), c.error);
  }
}

TEST(DescriptorCodecTest, IgnoresUnknownFieldsFromNewerWriters) {
  // Compatibility rule: a field added within format version 1 is ignored by older readers.
  const std::vector<uint8_t> blob = EncodeWithProtoEdit(FullDescriptor(), [](pb::VmDescriptor& m) {
    m.mutable_vcpu()->GetReflection()->MutableUnknownFields(m.mutable_vcpu())->AddVarint(99, 7);
    m.GetReflection()->MutableUnknownFields(&m)->AddLengthDelimited(1000, "future");
  });
  Result<VmDescriptor> decoded = DecodeDescriptor(blob);
  ASSERT_TRUE(decoded) << decoded.error().message();
  ExpectSameDescriptor(FullDescriptor(), *decoded);
}

// ---------------------------------------------------------------------------------------------
// Host compatibility

TEST(DescriptorCodecTest, RefusesADifferentCpuModel) {
  const VmDescriptor d = FullDescriptor();
  EXPECT_TRUE(CheckCompatibleWithHost(d, d.cpu));
  x86::CpuSignature host = d.cpu;
  host.model = 0x55;
  Result<void> result = CheckCompatibleWithHost(d, host);
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().message(),
            "descriptor was captured on GenuineIntel family 0x6 model 0x8f stepping 8 features "
            "0123456789abcdef xcr0 0x2e7; this host is GenuineIntel family 0x6 model 0x55 "
            "stepping 8 features 0123456789abcdef xcr0 0x2e7; refusing to run it on a different "
            "CPU model");
  host = d.cpu;
  host.xcr0 = 0x7;
  EXPECT_FALSE(CheckCompatibleWithHost(d, host));
  host = d.cpu;
  host.features_hash ^= 1;
  EXPECT_FALSE(CheckCompatibleWithHost(d, host));
}

TEST(DescriptorCodecTest, ThisHostIsCompatibleWithItsOwnSignature) {
  VmDescriptor d = FullDescriptor();
  d.cpu = x86::CpuSignature::OfHost();
  Result<VmDescriptor> decoded = DecodeDescriptor(EncodeDescriptor(d));
  ASSERT_TRUE(decoded) << decoded.error().message();
  EXPECT_TRUE(CheckCompatibleWithHost(*decoded, x86::CpuSignature::OfHost()));
}

// ---------------------------------------------------------------------------------------------
// Files

TEST(DescriptorFileTest, WritesAndReadsBack) {
  TempDir dir;
  const std::string path = dir / "vm.desc";
  const VmDescriptor original = FullDescriptor();
  ASSERT_TRUE(WriteDescriptorFile(path, original));
  Result<VmDescriptor> read = ReadDescriptorFile(path);
  ASSERT_TRUE(read) << read.error().message();
  ExpectSameDescriptor(original, *read);

  Result<std::vector<uint8_t>> bytes = ReadDescriptorBytes(path);
  ASSERT_TRUE(bytes);
  EXPECT_EQ(*bytes, EncodeDescriptor(original));

  struct stat st {};
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  // Only the descriptor is left behind: no temporary files.
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.path()),
                          std::filesystem::directory_iterator()),
            1);
}

TEST(DescriptorFileTest, ReplacesAnExistingFile) {
  TempDir dir;
  const std::string path = dir / "vm.desc";
  ASSERT_TRUE(WriteDescriptorFile(path, FullDescriptor()));
  VmDescriptor second = FullDescriptor();
  second.clone.clone_id = 9;
  second.files.fds.resize(3);
  ASSERT_TRUE(WriteDescriptorFile(path, second));
  Result<VmDescriptor> read = ReadDescriptorFile(path);
  ASSERT_TRUE(read) << read.error().message();
  ExpectSameDescriptor(second, *read);
}

TEST(DescriptorFileTest, WriteFailsInAMissingDirectory) {
  TempDir dir;
  Result<void> result = WriteDescriptorFile(dir / "missing/vm.desc", FullDescriptor());
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().code(), ENOENT);
}

TEST(DescriptorFileTest, ReadRefusals) {
  TempDir dir;
  Result<VmDescriptor> missing = ReadDescriptorFile(dir / "nope");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code(), ENOENT);

  Result<VmDescriptor> directory = ReadDescriptorFile(dir.path());
  ASSERT_FALSE(directory);
  EXPECT_EQ(directory.error().message(), "not a regular file");

  // A truncated file reports the header's claim against what the file has.
  const std::vector<uint8_t> blob = EncodeDescriptor(FullDescriptor());
  const std::string truncated = dir / "truncated";
  {
    UniqueFd fd(open(truncated.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
    ASSERT_TRUE(fd.valid());
    ASSERT_EQ(write(fd.get(), blob.data(), 100), 100);
  }
  Result<VmDescriptor> short_file = ReadDescriptorFile(truncated);
  ASSERT_FALSE(short_file);
  EXPECT_EQ(
      short_file.error().message(),
      fmt::format("truncated descriptor: header says {} bytes, file has 68", blob.size() - 32));
}

TEST(DescriptorFileTest, RefusesAnOversizeFileBeforeReadingIt) {
  TempDir dir;
  const std::string path = dir / "huge";
  {
    UniqueFd fd(open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
    ASSERT_TRUE(fd.valid());
    ASSERT_EQ(ftruncate(fd.get(), static_cast<off_t>(8 * kGiB)), 0);  // sparse
  }
  AllocationTracker tracker;
  Result<VmDescriptor> result = ReadDescriptorFile(path);
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().message(),
            "descriptor file of 8589934592 bytes exceeds the 64 MiB limit");
  EXPECT_LT(tracker.largest(), 4096u);
}

// ---------------------------------------------------------------------------------------------
// Size

TEST(DescriptorCodecTest, OneGiBGuestWithScatteredPagesStaysSmall) {
  VmDescriptor d = FullDescriptor();
  ASSERT_EQ(d.memory.ram_size, 1 * kGiB);
  const uint64_t ram_pages = d.memory.ram_size / kPageSize;  // 262144
  constexpr int kRuns = 1000;
  // Split the present half into 1000 runs and the absent half into 1000 gaps, both at random
  // (seeded) lengths of at least one page.
  std::mt19937_64 rng(42);
  auto split = [&rng](uint64_t total, int parts) {
    std::vector<uint64_t> cuts;
    std::uniform_int_distribution<uint64_t> pick(1, total - 1);
    std::set<uint64_t> unique;
    while (unique.size() < static_cast<size_t>(parts - 1)) unique.insert(pick(rng));
    cuts.assign(unique.begin(), unique.end());
    std::vector<uint64_t> lengths;
    uint64_t previous = 0;
    for (uint64_t cut : cuts) {
      lengths.push_back(cut - previous);
      previous = cut;
    }
    lengths.push_back(total - previous);
    return lengths;
  };
  const std::vector<uint64_t> present = split(ram_pages / 2, kRuns);
  const std::vector<uint64_t> gaps = split(ram_pages / 2, kRuns);
  d.pages.present.clear();
  uint64_t page = 0;
  for (int i = 0; i < kRuns; ++i) {
    page += gaps[i];
    d.pages.present.push_back({page, present[i]});
    page += present[i];
  }
  ASSERT_EQ(page, ram_pages);
  uint64_t present_pages = 0;
  for (const auto& run : d.pages.present) present_pages += run.page_count;
  ASSERT_EQ(present_pages, ram_pages / 2);

  const std::vector<uint8_t> blob = EncodeDescriptor(d);
  std::printf("1 GiB guest, %d runs, 50%% present: descriptor is %zu bytes\n", kRuns, blob.size());
  RecordProperty("encoded_bytes", std::to_string(blob.size()));
  EXPECT_LT(blob.size(), 64u * 1024);
  Result<VmDescriptor> decoded = DecodeDescriptor(blob);
  ASSERT_TRUE(decoded) << decoded.error().message();
  ExpectSameDescriptor(d, *decoded);
}

// ---------------------------------------------------------------------------------------------
// Robustness: random damage never crashes; it decodes or returns an error.

TEST(DescriptorCodecTest, RandomDamageNeverCrashes) {
  const std::vector<uint8_t> good = EncodeDescriptor(FullDescriptor());
  std::mt19937_64 rng(0xf1e55);
  int decoded = 0;
  int refused = 0;
  for (int iteration = 0; iteration < 10000; ++iteration) {
    std::vector<uint8_t> blob = good;
    switch (rng() % 4) {
      case 0:  // flip 1-8 random bits anywhere
        for (int n = 1 + rng() % 8; n > 0; --n) blob[rng() % blob.size()] ^= 1u << (rng() % 8);
        break;
      case 1:  // truncate anywhere
        blob.resize(rng() % blob.size());
        break;
      case 2:  // overwrite a random byte with a random value
        blob[rng() % blob.size()] = static_cast<uint8_t>(rng());
        break;
      case 3:  // append garbage
        for (int n = 1 + rng() % 16; n > 0; --n) blob.push_back(static_cast<uint8_t>(rng()));
        break;
    }
    Result<VmDescriptor> result = DecodeDescriptor(blob);
    if (result) {
      ++decoded;
      EXPECT_TRUE(ValidateDescriptor(*result));
    } else {
      ++refused;
      EXPECT_FALSE(result.error().message().empty());
    }
  }
  EXPECT_EQ(decoded + refused, 10000);
  EXPECT_GT(refused, 9000);  // the checksum catches nearly everything
}

TEST(DescriptorCodecTest, RandomPayloadDamageWithValidChecksumNeverCrashes) {
  // With the checksum fixed up, the damage reaches the protobuf parser and the validator.
  const std::vector<uint8_t> good = EncodeDescriptor(FullDescriptor());
  std::mt19937_64 rng(0xdec0de);
  int decoded = 0;
  int refused = 0;
  for (int iteration = 0; iteration < 10000; ++iteration) {
    std::vector<uint8_t> blob = good;
    const size_t payload = blob.size() - 32;
    switch (rng() % 3) {
      case 0:  // flip bits in the payload
        for (int n = 1 + rng() % 4; n > 0; --n) {
          blob[32 + rng() % payload] ^= 1u << (rng() % 8);
        }
        break;
      case 1:  // truncate the payload (and fix the size)
        blob.resize(32 + rng() % payload);
        Put<uint64_t>(blob, 16, blob.size() - 32);
        break;
      case 2:  // overwrite a run of payload bytes
        for (size_t at = 32 + rng() % payload, n = 1 + rng() % 8; n > 0 && at < blob.size();
             --n, ++at) {
          blob[at] = static_cast<uint8_t>(rng());
        }
        break;
    }
    Reseal(blob);
    Result<VmDescriptor> result = DecodeDescriptor(blob);
    if (result) {
      ++decoded;
      EXPECT_TRUE(ValidateDescriptor(*result));
      // Whatever decodes re-encodes and decodes again.
      EXPECT_TRUE(DecodeDescriptor(EncodeDescriptor(*result)));
    } else {
      ++refused;
      EXPECT_FALSE(result.error().message().empty());
    }
  }
  EXPECT_EQ(decoded + refused, 10000);
  EXPECT_GT(refused, 0);
  EXPECT_GT(decoded, 0);  // some damage lands in values that stay valid (registers, xsave)
}

// ---------------------------------------------------------------------------------------------
// Text dump

TEST(DescriptorTextTest, DescribesTheDescriptor) {
  const VmDescriptor d = FullDescriptor();
  const std::string text = DescribeDescriptor(d, 12345);
  const std::string expected[] = {
      "flurry VM descriptor, format version 1, 12345 bytes encoded\n",
      "cpu         GenuineIntel family 0x6 model 0x8f stepping 8",
      "clone       family feedfacecafebeef, clone 3\n",
      fmt::format("rip {:#018x}", d.vcpu.regs.rip),
      "cr3 0x20000",
      "fs base 0x4000000003",
      "(pending: fs base 0x5555000, gs base 0x6666000)",
      "memory      ram 1 GiB\n",
      "mmap   4 regions, 2.1 MiB, in [0x30000000, 0x3f600000)\n",
      "stack  [0x3f800000, 0x40000000)  8 MiB\n",
      "pages       5 runs, 2564 pages present (10.0 MiB)\n",
      "root /srv/guest root (read-write), cwd /data, 6 fds\n",
      "fd 0    stdio     host fd 0  O_RDONLY  offset 0\n",
      "fd 3    file      /data/in.txt  O_RDWR|O_APPEND  offset 123456789012  cloexec\n",
      "fd 1023 other     /link  O_RDONLY|O_PATH|O_NOFOLLOW  offset 0  cloexec\n",
      "signals     blocked 0x8000000000000001, altstack [0x7000000, +0x8000), 4 non-default "
      "actions\n",
      "SIGINT     0x401000  flags 0x4000000  restorer 0x402000  mask 0x2\n",
      "SIGPIPE    SIG_IGN  flags 0x0",
      "signal 64  0x404000",
      "identity    pid 4242, ppid 17, tid 4243, exe /bin/app, hostname clone-host\n",
  };
  for (const std::string& needle : expected) {
    EXPECT_NE(text.find(needle), std::string::npos) << "missing: " << needle << "\n" << text;
  }
  // The default handler of an untouched signal is not listed.
  EXPECT_EQ(text.find("SIGTERM"), std::string::npos);
}

TEST(DescriptorTextTest, EscapesControlBytesInPaths) {
  VmDescriptor d = FullDescriptor();
  d.files.fds[3].path = "/evil\nfd 9 file /etc/shadow";
  const std::string text = DescribeDescriptor(d, 1);
  EXPECT_NE(text.find("/evil\\x0afd 9 file"), std::string::npos) << text;
}

}  // namespace
}  // namespace flurry
