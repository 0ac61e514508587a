#include "snapshot/descriptor_codec.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <array>
#include <bit>
#include <csignal>
#include <cstddef>
#include <cstring>
#include <set>
#include <string_view>

#include "arch/x86_64/layout.h"
#include "base/check.h"
#include "base/unique_fd.h"
#include "descriptor.pb.h"

namespace flurry {
namespace {

namespace pb = ::flurry::descriptor::v1;

using x86::kPageSize;

static_assert(std::endian::native == std::endian::little,
              "the descriptor header is little-endian and copied as-is");
static_assert(offsetof(DescriptorHeader, format_version) == 8);
static_assert(offsetof(DescriptorHeader, flags) == 12);
static_assert(offsetof(DescriptorHeader, payload_size) == 16);
static_assert(offsetof(DescriptorHeader, payload_xxh64) == 24);
static_assert(kMaxDescriptorPayloadSize <= INT32_MAX, "protobuf parses at most 2 GiB");

constexpr size_t kInterruptBitmapWords = std::size(kvm_sregs{}.interrupt_bitmap);
static_assert(kInterruptBitmapWords == 4);
constexpr int kMaxSignal = SignalState::kSignals;

constexpr uint64_t kUnblockableSignals = (1ULL << (SIGKILL - 1)) | (1ULL << (SIGSTOP - 1));

std::unexpected<Error> Invalid(std::string_view message) {
  return std::unexpected(Error(0, fmt::format("invalid descriptor: {}", message)));
}
template <typename... Args>
std::unexpected<Error> Invalid(fmt::format_string<Args...> format, Args&&... args) {
  return Invalid(std::string_view(fmt::format(format, std::forward<Args>(args)...)));
}

std::unexpected<Error> Missing(std::string_view what) { return Invalid("missing {}", what); }

Result<void> CheckRamSize(uint64_t ram_size) {
  if (ram_size % x86::kHugePageSize != 0 || ram_size < x86::kMinRamSize ||
      ram_size > x86::kMaxRamSize) {
    return Invalid("ram size {:#x} is not a multiple of 2 MiB in [{} MiB, {} GiB]", ram_size,
                   x86::kMinRamSize >> 20, x86::kMaxRamSize >> 30);
  }
  return {};
}

// ---------------------------------------------------------------------------------------------
// VmDescriptor -> proto

void SegmentToProto(const kvm_segment& s, pb::Segment* out) {
  out->set_base(s.base);
  out->set_limit(s.limit);
  out->set_selector(s.selector);
  out->set_type(s.type);
  out->set_present(s.present != 0);
  out->set_dpl(s.dpl);
  out->set_db(s.db != 0);
  out->set_s(s.s != 0);
  out->set_l(s.l != 0);
  out->set_g(s.g != 0);
  out->set_avl(s.avl != 0);
  out->set_unusable(s.unusable != 0);
}

void DtableToProto(const kvm_dtable& t, pb::DescriptorTable* out) {
  out->set_base(t.base);
  out->set_limit(t.limit);
}

void VcpuToProto(const VcpuState& v, pb::Vcpu* out) {
  pb::Regs* r = out->mutable_regs();
  r->set_rax(v.regs.rax);
  r->set_rbx(v.regs.rbx);
  r->set_rcx(v.regs.rcx);
  r->set_rdx(v.regs.rdx);
  r->set_rsi(v.regs.rsi);
  r->set_rdi(v.regs.rdi);
  r->set_rsp(v.regs.rsp);
  r->set_rbp(v.regs.rbp);
  r->set_r8(v.regs.r8);
  r->set_r9(v.regs.r9);
  r->set_r10(v.regs.r10);
  r->set_r11(v.regs.r11);
  r->set_r12(v.regs.r12);
  r->set_r13(v.regs.r13);
  r->set_r14(v.regs.r14);
  r->set_r15(v.regs.r15);
  r->set_rip(v.regs.rip);
  r->set_rflags(v.regs.rflags);

  pb::Sregs* s = out->mutable_sregs();
  SegmentToProto(v.sregs.cs, s->mutable_cs());
  SegmentToProto(v.sregs.ds, s->mutable_ds());
  SegmentToProto(v.sregs.es, s->mutable_es());
  SegmentToProto(v.sregs.fs, s->mutable_fs());
  SegmentToProto(v.sregs.gs, s->mutable_gs());
  SegmentToProto(v.sregs.ss, s->mutable_ss());
  SegmentToProto(v.sregs.tr, s->mutable_tr());
  SegmentToProto(v.sregs.ldt, s->mutable_ldt());
  DtableToProto(v.sregs.gdt, s->mutable_gdt());
  DtableToProto(v.sregs.idt, s->mutable_idt());
  s->set_cr0(v.sregs.cr0);
  s->set_cr2(v.sregs.cr2);
  s->set_cr3(v.sregs.cr3);
  s->set_cr4(v.sregs.cr4);
  s->set_cr8(v.sregs.cr8);
  s->set_efer(v.sregs.efer);
  s->set_apic_base(v.sregs.apic_base);
  for (uint64_t word : v.sregs.interrupt_bitmap) s->add_interrupt_bitmap(word);

  out->set_xsave(reinterpret_cast<const char*>(&v.xsave), sizeof(v.xsave));
  out->set_xcr0(v.xcr0);
  for (const kvm_msr_entry& msr : v.msrs) {
    pb::Msr* m = out->add_msrs();
    m->set_index(msr.index);
    m->set_data(msr.data);
  }
}

pb::FileKind KindToProto(FileKind kind) {
  switch (kind) {
    case FileKind::kStdio:
      return pb::FILE_KIND_STDIO;
    case FileKind::kRegular:
      return pb::FILE_KIND_REGULAR;
    case FileKind::kDirectory:
      return pb::FILE_KIND_DIRECTORY;
    case FileKind::kOther:
      return pb::FILE_KIND_OTHER;
  }
  return pb::FILE_KIND_UNSPECIFIED;  // an out-of-range enum value; the decoder refuses it
}

void ToProto(const VmDescriptor& d, pb::VmDescriptor* out) {
  pb::CpuSignature* cpu = out->mutable_cpu();
  cpu->set_vendor(d.cpu.vendor);
  cpu->set_family(d.cpu.family);
  cpu->set_model(d.cpu.model);
  cpu->set_stepping(d.cpu.stepping);
  cpu->set_features_hash(d.cpu.features_hash);
  cpu->set_xcr0(d.cpu.xcr0);

  VcpuToProto(d.vcpu, out->mutable_vcpu());

  pb::ProcessIdentity* id = out->mutable_identity();
  id->set_pid(d.identity.pid);
  id->set_ppid(d.identity.ppid);
  id->set_tid(d.identity.tid);
  id->set_clear_child_tid(d.identity.clear_child_tid);
  id->set_robust_list(d.identity.robust_list);
  id->set_robust_list_len(d.identity.robust_list_len);
  id->set_exe_path(d.identity.exe_path);
  id->set_hostname(d.identity.hostname);

  pb::SegmentBases* bases = out->mutable_segment_bases();
  bases->set_fs_base(d.segment_bases.fs_base);
  bases->set_gs_base(d.segment_bases.gs_base);
  bases->set_dirty(d.segment_bases.dirty);

  pb::MemoryLayout* mem = out->mutable_memory();
  mem->set_ram_size(d.memory.ram_size);
  mem->set_image_start(d.memory.image_start);
  mem->set_image_end(d.memory.image_end);
  mem->set_brk_start(d.memory.brk_start);
  mem->set_brk(d.memory.brk);
  mem->set_mmap_top(d.memory.mmap_top);
  mem->set_stack_bottom(d.memory.stack_bottom);
  mem->mutable_regions()->Reserve(static_cast<int>(d.memory.regions.size()));
  for (const auto& [start, length] : d.memory.regions) {
    pb::MemoryRegion* region = mem->add_regions();
    region->set_start(start);
    region->set_length(length);
  }

  pb::Files* files = out->mutable_files();
  if (d.files.root_host_path) files->set_root_host_path(*d.files.root_host_path);
  files->set_root_writable(d.files.root_writable);
  files->set_cwd(d.files.cwd);
  for (const FdRecord& fd : d.files.fds) {
    pb::FileDescriptor* f = files->add_fds();
    f->set_fd(fd.fd);
    f->set_kind(KindToProto(fd.kind));
    f->set_stdio_fd(fd.stdio_fd);
    f->set_path(fd.path);
    f->set_flags(fd.flags);
    f->set_cloexec(fd.cloexec);
    f->set_offset(fd.offset);
  }

  pb::Signals* sig = out->mutable_signals();
  for (size_t signal = 0; signal < d.signals.actions.size(); ++signal) {
    const GuestSigaction& a = d.signals.actions[signal];
    if (a.handler == 0 && a.flags == 0 && a.restorer == 0 && a.mask == 0) continue;
    pb::SignalAction* action = sig->add_actions();
    action->set_signal(static_cast<uint32_t>(signal));
    action->set_handler(a.handler);
    action->set_flags(a.flags);
    action->set_restorer(a.restorer);
    action->set_mask(a.mask);
  }
  sig->set_blocked(d.signals.blocked);
  pb::SignalStack* altstack = sig->mutable_altstack();
  altstack->set_sp(d.signals.altstack.sp);
  altstack->set_flags(d.signals.altstack.flags);
  altstack->set_size(d.signals.altstack.size);

  out->set_start_time_ns(d.start_time_ns);

  // Gaps are computed modulo 2^64, so even unsorted runs round-trip exactly (and are then
  // refused by validation).
  pb::PageMap* pages = out->mutable_pages();
  pages->mutable_run_gaps()->Reserve(static_cast<int>(d.pages.present.size()));
  pages->mutable_run_lengths()->Reserve(static_cast<int>(d.pages.present.size()));
  uint64_t previous_end = 0;
  for (const PageMapRecord::Run& run : d.pages.present) {
    pages->add_run_gaps(run.first_page - previous_end);
    pages->add_run_lengths(run.page_count);
    previous_end = run.first_page + run.page_count;
  }

  pb::CloneIdentity* clone = out->mutable_clone();
  clone->set_family_id(d.clone.family_id);
  clone->set_clone_id(d.clone.clone_id);
}

// ---------------------------------------------------------------------------------------------
// proto -> VmDescriptor: representation checks (values the C++ types cannot hold, missing
// messages, malformed arrays). Semantic checks are ValidateDescriptor's.

Result<void> SegmentFromProto(std::string_view name, const pb::Segment& s, kvm_segment* out) {
  if (s.selector() > 0xffff)
    return Invalid("{} selector {:#x} exceeds 16 bits", name, s.selector());
  if (s.type() > 15) return Invalid("{} type {} exceeds 4 bits", name, s.type());
  if (s.dpl() > 3) return Invalid("{} dpl {} exceeds 3", name, s.dpl());
  *out = kvm_segment{};
  out->base = s.base();
  out->limit = s.limit();
  out->selector = static_cast<uint16_t>(s.selector());
  out->type = static_cast<uint8_t>(s.type());
  out->present = s.present();
  out->dpl = static_cast<uint8_t>(s.dpl());
  out->db = s.db();
  out->s = s.s();
  out->l = s.l();
  out->g = s.g();
  out->avl = s.avl();
  out->unusable = s.unusable();
  return {};
}

Result<void> DtableFromProto(std::string_view name, const pb::DescriptorTable& t, kvm_dtable* out) {
  if (t.limit() > 0xffff) return Invalid("{} limit {:#x} exceeds 16 bits", name, t.limit());
  *out = kvm_dtable{};
  out->base = t.base();
  out->limit = static_cast<uint16_t>(t.limit());
  return {};
}

Result<void> VcpuFromProto(const pb::Vcpu& v, VcpuState* out) {
  if (!v.has_regs()) return Missing("vcpu.regs");
  if (!v.has_sregs()) return Missing("vcpu.sregs");
  const pb::Regs& r = v.regs();
  out->regs = kvm_regs{};
  out->regs.rax = r.rax();
  out->regs.rbx = r.rbx();
  out->regs.rcx = r.rcx();
  out->regs.rdx = r.rdx();
  out->regs.rsi = r.rsi();
  out->regs.rdi = r.rdi();
  out->regs.rsp = r.rsp();
  out->regs.rbp = r.rbp();
  out->regs.r8 = r.r8();
  out->regs.r9 = r.r9();
  out->regs.r10 = r.r10();
  out->regs.r11 = r.r11();
  out->regs.r12 = r.r12();
  out->regs.r13 = r.r13();
  out->regs.r14 = r.r14();
  out->regs.r15 = r.r15();
  out->regs.rip = r.rip();
  out->regs.rflags = r.rflags();

  const pb::Sregs& s = v.sregs();
  kvm_sregs& o = out->sregs;
  o = kvm_sregs{};
  struct NamedSegment {
    const char* name;
    bool present;
    const pb::Segment& in;
    kvm_segment* out;
  };
  const NamedSegment segments[] = {
      {"sregs.cs", s.has_cs(), s.cs(), &o.cs}, {"sregs.ds", s.has_ds(), s.ds(), &o.ds},
      {"sregs.es", s.has_es(), s.es(), &o.es}, {"sregs.fs", s.has_fs(), s.fs(), &o.fs},
      {"sregs.gs", s.has_gs(), s.gs(), &o.gs}, {"sregs.ss", s.has_ss(), s.ss(), &o.ss},
      {"sregs.tr", s.has_tr(), s.tr(), &o.tr}, {"sregs.ldt", s.has_ldt(), s.ldt(), &o.ldt},
  };
  for (const NamedSegment& seg : segments) {
    if (!seg.present) return Missing(seg.name);
    FLURRY_TRY(SegmentFromProto(seg.name, seg.in, seg.out));
  }
  if (!s.has_gdt()) return Missing("sregs.gdt");
  if (!s.has_idt()) return Missing("sregs.idt");
  FLURRY_TRY(DtableFromProto("sregs.gdt", s.gdt(), &o.gdt));
  FLURRY_TRY(DtableFromProto("sregs.idt", s.idt(), &o.idt));
  o.cr0 = s.cr0();
  o.cr2 = s.cr2();
  o.cr3 = s.cr3();
  o.cr4 = s.cr4();
  o.cr8 = s.cr8();
  o.efer = s.efer();
  o.apic_base = s.apic_base();
  if (static_cast<size_t>(s.interrupt_bitmap_size()) != kInterruptBitmapWords) {
    return Invalid("sregs.interrupt_bitmap has {} words, expected {}", s.interrupt_bitmap_size(),
                   kInterruptBitmapWords);
  }
  for (size_t i = 0; i < kInterruptBitmapWords; ++i) {
    o.interrupt_bitmap[i] = s.interrupt_bitmap(static_cast<int>(i));
  }

  if (v.xsave().size() != sizeof(out->xsave)) {
    return Invalid("xsave area is {} bytes, expected {}", v.xsave().size(), sizeof(out->xsave));
  }
  std::memcpy(&out->xsave, v.xsave().data(), sizeof(out->xsave));
  out->xcr0 = v.xcr0();
  if (static_cast<size_t>(v.msrs_size()) > kMaxDescriptorMsrs) {
    return Invalid("{} MSRs, at most {} allowed", v.msrs_size(), kMaxDescriptorMsrs);
  }
  out->msrs.clear();
  out->msrs.reserve(v.msrs_size());
  for (const pb::Msr& m : v.msrs()) {
    kvm_msr_entry entry{};
    entry.index = m.index();
    entry.data = m.data();
    out->msrs.push_back(entry);
  }
  return {};
}

Result<FileKind> KindFromProto(int kind, int32_t fd) {
  switch (kind) {
    case pb::FILE_KIND_STDIO:
      return FileKind::kStdio;
    case pb::FILE_KIND_REGULAR:
      return FileKind::kRegular;
    case pb::FILE_KIND_DIRECTORY:
      return FileKind::kDirectory;
    case pb::FILE_KIND_OTHER:
      return FileKind::kOther;
    default:
      return Invalid("fd {} has unknown kind {}", fd, kind);
  }
}

Result<VmDescriptor> FromProto(const pb::VmDescriptor& in) {
  if (!in.has_cpu()) return Missing("cpu");
  if (!in.has_vcpu()) return Missing("vcpu");
  if (!in.has_identity()) return Missing("identity");
  if (!in.has_segment_bases()) return Missing("segment_bases");
  if (!in.has_memory()) return Missing("memory");
  if (!in.has_files()) return Missing("files");
  if (!in.has_signals()) return Missing("signals");
  if (!in.signals().has_altstack()) return Missing("signals.altstack");
  if (!in.has_pages()) return Missing("pages");
  if (!in.has_clone()) return Missing("clone");

  VmDescriptor d;
  const pb::CpuSignature& cpu = in.cpu();
  d.cpu.vendor = cpu.vendor();
  d.cpu.family = cpu.family();
  d.cpu.model = cpu.model();
  d.cpu.stepping = cpu.stepping();
  d.cpu.features_hash = cpu.features_hash();
  d.cpu.xcr0 = cpu.xcr0();

  FLURRY_TRY(VcpuFromProto(in.vcpu(), &d.vcpu));

  const pb::ProcessIdentity& id = in.identity();
  d.identity.pid = id.pid();
  d.identity.ppid = id.ppid();
  d.identity.tid = id.tid();
  d.identity.clear_child_tid = id.clear_child_tid();
  d.identity.robust_list = id.robust_list();
  d.identity.robust_list_len = id.robust_list_len();
  d.identity.exe_path = id.exe_path();
  d.identity.hostname = id.hostname();

  d.segment_bases.fs_base = in.segment_bases().fs_base();
  d.segment_bases.gs_base = in.segment_bases().gs_base();
  d.segment_bases.dirty = in.segment_bases().dirty();

  const pb::MemoryLayout& mem = in.memory();
  d.memory.ram_size = mem.ram_size();
  d.memory.image_start = mem.image_start();
  d.memory.image_end = mem.image_end();
  d.memory.brk_start = mem.brk_start();
  d.memory.brk = mem.brk();
  d.memory.mmap_top = mem.mmap_top();
  d.memory.stack_bottom = mem.stack_bottom();
  // Bound what the containers below may allocate by what the declared RAM can hold (a valid
  // descriptor never has more regions or page runs than RAM has pages).
  FLURRY_TRY(CheckRamSize(d.memory.ram_size));
  const uint64_t ram_pages = d.memory.ram_size / kPageSize;
  if (static_cast<uint64_t>(mem.regions_size()) > ram_pages) {
    return Invalid("{} memory regions in {} pages of RAM", mem.regions_size(), ram_pages);
  }
  uint64_t previous_start = 0;
  for (int i = 0; i < mem.regions_size(); ++i) {
    const pb::MemoryRegion& region = mem.regions(i);
    if (i > 0 && region.start() <= previous_start) {
      return Invalid("memory regions not in ascending order at {:#x}", region.start());
    }
    previous_start = region.start();
    d.memory.regions.emplace_hint(d.memory.regions.end(), region.start(), region.length());
  }

  const pb::Files& files = in.files();
  if (files.has_root_host_path()) d.files.root_host_path = files.root_host_path();
  d.files.root_writable = files.root_writable();
  d.files.cwd = files.cwd();
  if (files.fds_size() > FdTable::kMaxFds) {
    return Invalid("{} fds, at most {} allowed", files.fds_size(), FdTable::kMaxFds);
  }
  d.files.fds.reserve(files.fds_size());
  for (const pb::FileDescriptor& f : files.fds()) {
    FdRecord fd;
    fd.fd = f.fd();
    fd.kind = FLURRY_TRY(KindFromProto(f.kind(), f.fd()));
    fd.stdio_fd = f.stdio_fd();
    fd.path = f.path();
    fd.flags = f.flags();
    fd.cloexec = f.cloexec();
    fd.offset = f.offset();
    d.files.fds.push_back(std::move(fd));
  }

  const pb::Signals& sig = in.signals();
  if (sig.actions_size() > kMaxSignal) {
    return Invalid("{} signal actions, at most {} allowed", sig.actions_size(), kMaxSignal);
  }
  std::array<bool, kMaxSignal + 1> seen{};
  for (const pb::SignalAction& a : sig.actions()) {
    if (a.signal() < 1 || a.signal() > static_cast<uint32_t>(kMaxSignal)) {
      return Invalid("signal action for signal {} (valid: 1..{})", a.signal(), kMaxSignal);
    }
    if (seen[a.signal()]) {
      return Invalid("two actions for signal {}", a.signal());
    }
    seen[a.signal()] = true;
    GuestSigaction& out = d.signals.actions[a.signal()];
    out.handler = a.handler();
    out.flags = a.flags();
    out.restorer = a.restorer();
    out.mask = a.mask();
  }
  d.signals.blocked = sig.blocked();
  d.signals.altstack.sp = sig.altstack().sp();
  d.signals.altstack.flags = sig.altstack().flags();
  d.signals.altstack.pad = 0;
  d.signals.altstack.size = sig.altstack().size();

  d.start_time_ns = in.start_time_ns();

  const pb::PageMap& pages = in.pages();
  if (pages.run_gaps_size() != pages.run_lengths_size()) {
    return Invalid("page map has {} run gaps but {} run lengths", pages.run_gaps_size(),
                   pages.run_lengths_size());
  }
  if (static_cast<uint64_t>(pages.run_gaps_size()) > ram_pages) {
    return Invalid("{} page runs in {} pages of RAM", pages.run_gaps_size(), ram_pages);
  }
  d.pages.present.reserve(pages.run_gaps_size());
  uint64_t previous_end = 0;
  for (int i = 0; i < pages.run_gaps_size(); ++i) {
    PageMapRecord::Run run;
    run.first_page = previous_end + pages.run_gaps(i);  // modulo 2^64, as encoded
    run.page_count = pages.run_lengths(i);
    previous_end = run.first_page + run.page_count;
    d.pages.present.push_back(run);
  }

  d.clone.family_id = in.clone().family_id();
  d.clone.clone_id = in.clone().clone_id();
  return d;
}

// ---------------------------------------------------------------------------------------------
// Semantic validation

// A bounded string without NUL bytes; `absolute` additionally requires a leading '/'.
Result<void> CheckString(std::string_view what, const std::string& value, size_t max_bytes,
                         bool absolute) {
  if (value.size() > max_bytes) {
    return Invalid("{} is {} bytes, at most {} allowed", what, value.size(), max_bytes);
  }
  if (value.find('\0') != std::string::npos) return Invalid("{} contains a NUL byte", what);
  if (absolute && (value.empty() || value[0] != '/')) {
    return Invalid("{} \"{}\" is not an absolute path", what, value);
  }
  return {};
}

Result<void> CheckSegment(std::string_view name, const kvm_segment& s) {
  if (s.type > 15) return Invalid("{} type {} exceeds 4 bits", name, s.type);
  if (s.dpl > 3) return Invalid("{} dpl {} exceeds 3", name, s.dpl);
  const std::pair<const char*, uint8_t> flags[] = {
      {"present", s.present},  {"db", s.db}, {"s", s.s}, {"l", s.l}, {"g", s.g}, {"avl", s.avl},
      {"unusable", s.unusable}};
  for (const auto& [flag, value] : flags) {
    if (value > 1) return Invalid("{} {} flag is {}, not 0 or 1", name, flag, value);
  }
  return {};
}

Result<void> ValidateVcpu(const VcpuState& v) {
  const std::pair<const char*, const kvm_segment&> segments[] = {
      {"sregs.cs", v.sregs.cs}, {"sregs.ds", v.sregs.ds},  {"sregs.es", v.sregs.es},
      {"sregs.fs", v.sregs.fs}, {"sregs.gs", v.sregs.gs},  {"sregs.ss", v.sregs.ss},
      {"sregs.tr", v.sregs.tr}, {"sregs.ldt", v.sregs.ldt}};
  for (const auto& [name, segment] : segments) FLURRY_TRY(CheckSegment(name, segment));
  if (v.msrs.size() > kMaxDescriptorMsrs) {
    return Invalid("{} MSRs, at most {} allowed", v.msrs.size(), kMaxDescriptorMsrs);
  }
  std::set<uint32_t> indices;
  for (const kvm_msr_entry& msr : v.msrs) {
    if (msr.reserved != 0) return Invalid("MSR {:#x} has a non-zero reserved word", msr.index);
    if (!indices.insert(msr.index).second) return Invalid("MSR {:#x} appears twice", msr.index);
  }
  return {};
}

Result<void> ValidateIdentity(const ProcessIdentity& id) {
  if (id.pid < 1) return Invalid("pid {} is not positive", id.pid);
  if (id.tid < 1) return Invalid("tid {} is not positive", id.tid);
  if (id.ppid < 0) return Invalid("ppid {} is negative", id.ppid);
  FLURRY_TRY(CheckString("exe path", id.exe_path, kMaxDescriptorPathBytes, true));
  FLURRY_TRY(CheckString("hostname", id.hostname, kMaxHostnameBytes, false));
  return {};
}

Result<void> ValidateMemory(const MemoryLayoutRecord& m) {
  FLURRY_TRY(CheckRamSize(m.ram_size));
  const std::pair<const char*, uint64_t> aligned[] = {{"image end", m.image_end},
                                                      {"brk start", m.brk_start},
                                                      {"mmap top", m.mmap_top},
                                                      {"stack bottom", m.stack_bottom}};
  for (const auto& [name, value] : aligned) {
    if (value % kPageSize != 0) return Invalid("{} {:#x} is not page-aligned", name, value);
  }
  // kUserBase <= image_start <= image_end <= brk_start <= brk <= mmap_top <= stack_bottom <
  // ram_size
  const std::pair<const char*, uint64_t> order[] = {{"user base", x86::kUserBase},
                                                    {"image start", m.image_start},
                                                    {"image end", m.image_end},
                                                    {"brk start", m.brk_start},
                                                    {"brk", m.brk},
                                                    {"mmap top", m.mmap_top},
                                                    {"stack bottom", m.stack_bottom}};
  for (size_t i = 1; i < std::size(order); ++i) {
    if (order[i].second < order[i - 1].second) {
      return Invalid("memory layout out of order: {} {:#x} is below {} {:#x}", order[i].first,
                     order[i].second, order[i - 1].first, order[i - 1].second);
    }
  }
  if (m.stack_bottom >= m.ram_size) {
    return Invalid("stack bottom {:#x} is not below the end of RAM {:#x}", m.stack_bottom,
                   m.ram_size);
  }
  // mmap regions: page-aligned, inside [AlignUp(brk), mmap_top), non-overlapping.
  const uint64_t floor = x86::AlignUp(m.brk, kPageSize);  // brk <= mmap_top: no overflow
  uint64_t previous_end = floor;
  for (const auto& [start, length] : m.regions) {
    if (start % kPageSize != 0 || length == 0 || length % kPageSize != 0) {
      return Invalid("memory region [{:#x}, +{:#x}) is not a non-empty page-aligned range", start,
                     length);
    }
    if (start < floor || start > m.mmap_top || length > m.mmap_top - start) {
      return Invalid("memory region [{:#x}, {:#x}) is outside the mmap area [{:#x}, {:#x})", start,
                     start + length, floor, m.mmap_top);
    }
    if (start < previous_end) {
      return Invalid("memory region at {:#x} overlaps the region ending at {:#x}", start,
                     previous_end);
    }
    previous_end = start + length;
  }
  return {};
}

Result<void> ValidateFiles(const FilesRecord& f) {
  if (f.root_host_path) {
    FLURRY_TRY(CheckString("root directory", *f.root_host_path, kMaxDescriptorPathBytes, true));
  } else if (f.root_writable) {
    return Invalid("root is writable but there is no root directory");
  }
  FLURRY_TRY(CheckString("working directory", f.cwd, kMaxDescriptorPathBytes, true));
  if (!f.root_host_path && f.cwd != "/") {
    return Invalid("working directory \"{}\" without a root directory", f.cwd);
  }
  std::vector<bool> used(FdTable::kMaxFds, false);
  for (const FdRecord& fd : f.fds) {
    if (fd.fd < 0 || fd.fd >= FdTable::kMaxFds) {
      return Invalid("fd {} is outside 0..{}", fd.fd, FdTable::kMaxFds - 1);
    }
    if (used[fd.fd]) return Invalid("fd {} appears twice", fd.fd);
    used[fd.fd] = true;
    if (fd.flags < 0) return Invalid("fd {} has invalid open flags {:#x}", fd.fd, fd.flags);
    if (fd.offset < 0) return Invalid("fd {} has negative offset {}", fd.fd, fd.offset);
    switch (fd.kind) {
      case FileKind::kStdio:
        if (fd.stdio_fd < 0 || fd.stdio_fd > 2) {
          return Invalid("fd {} is host stdio fd {}, not 0, 1 or 2", fd.fd, fd.stdio_fd);
        }
        if (!fd.path.empty()) return Invalid("fd {} is host stdio but has a path", fd.fd);
        break;
      case FileKind::kRegular:
      case FileKind::kDirectory:
      case FileKind::kOther:
        if (fd.stdio_fd != -1) {
          return Invalid("fd {} is not host stdio but has stdio fd {}", fd.fd, fd.stdio_fd);
        }
        if (!f.root_host_path) {
          return Invalid("fd {} is a file but there is no root directory", fd.fd);
        }
        FLURRY_TRY(
            CheckString(fmt::format("fd {} path", fd.fd), fd.path, kMaxDescriptorPathBytes, true));
        break;
      default:
        return Invalid("fd {} has unknown kind {}", fd.fd, static_cast<int>(fd.kind));
    }
  }
  return {};
}

Result<void> ValidateSignals(const SignalState& s) {
  const GuestSigaction& zero = s.actions[0];
  if (zero.handler != 0 || zero.flags != 0 || zero.restorer != 0 || zero.mask != 0) {
    return Invalid("action for signal 0");
  }
  for (int signal = 1; signal <= kMaxSignal; ++signal) {
    const GuestSigaction& a = s.actions[signal];
    if ((signal == SIGKILL || signal == SIGSTOP) && a.handler != 0) {
      return Invalid("signal {} cannot have a handler", signal);
    }
    if (a.mask & kUnblockableSignals) {
      return Invalid("signal {} action mask {:#x} blocks SIGKILL or SIGSTOP", signal, a.mask);
    }
  }
  if (s.blocked & kUnblockableSignals) {
    return Invalid("blocked mask {:#x} blocks SIGKILL or SIGSTOP", s.blocked);
  }
  if (s.altstack.flags != 0 && s.altstack.flags != SS_DISABLE) {
    return Invalid("alternate signal stack flags {:#x} (valid: 0, SS_DISABLE)", s.altstack.flags);
  }
  return {};
}

Result<void> ValidatePages(const PageMapRecord& p, uint64_t ram_size) {
  const uint64_t ram_pages = ram_size / kPageSize;
  uint64_t previous_end = 0;
  for (size_t i = 0; i < p.present.size(); ++i) {
    const PageMapRecord::Run& run = p.present[i];
    if (run.page_count == 0)
      return Invalid("page run {} at page {:#x} is empty", i, run.first_page);
    if (run.first_page > ram_pages || run.page_count > ram_pages - run.first_page) {
      return Invalid("page run {} [{:#x}, +{:#x}) is outside RAM ({:#x} pages)", i, run.first_page,
                     run.page_count, ram_pages);
    }
    if (i > 0 && run.first_page < previous_end) {
      return Invalid("page run {} at page {:#x} overlaps or precedes the run ending at {:#x}", i,
                     run.first_page, previous_end);
    }
    previous_end = run.first_page + run.page_count;
  }
  return {};
}

}  // namespace

// ---------------------------------------------------------------------------------------------

std::vector<uint8_t> EncodeDescriptor(const VmDescriptor& descriptor) {
  pb::VmDescriptor message;
  ToProto(descriptor, &message);
  const size_t payload_size = message.ByteSizeLong();
  std::vector<uint8_t> out(kDescriptorHeaderSize + payload_size);
  uint8_t* payload = out.data() + kDescriptorHeaderSize;
  FLURRY_CHECK(message.SerializeWithCachedSizesToArray(payload) == payload + payload_size);
  DescriptorHeader header{};
  std::memcpy(header.magic, kDescriptorMagic, sizeof(header.magic));
  header.format_version = VmDescriptor::kFormatVersion;
  header.flags = 0;
  header.payload_size = payload_size;
  header.payload_xxh64 = XXH64(payload, payload_size, 0);
  std::memcpy(out.data(), &header, sizeof(header));
  return out;
}

Result<VmDescriptor> DecodeDescriptor(std::span<const uint8_t> bytes) {
  const size_t magic_bytes = std::min(bytes.size(), sizeof(kDescriptorMagic));
  if (magic_bytes == 0 || std::memcmp(bytes.data(), kDescriptorMagic, magic_bytes) != 0) {
    return Fail("not a flurry VM descriptor");
  }
  if (bytes.size() < kDescriptorHeaderSize) {
    return Fail("truncated descriptor: {} bytes, shorter than the {}-byte header", bytes.size(),
                kDescriptorHeaderSize);
  }
  DescriptorHeader header;
  std::memcpy(&header, bytes.data(), sizeof(header));
  if (header.format_version != VmDescriptor::kFormatVersion) {
    return Fail("descriptor format version {} is not supported (this flurry reads version {})",
                header.format_version, VmDescriptor::kFormatVersion);
  }
  if (header.flags != 0) return Fail("descriptor flags {:#x} are not supported", header.flags);
  if (header.payload_size > kMaxDescriptorPayloadSize) {
    return Fail("descriptor payload of {} bytes exceeds the {} MiB limit", header.payload_size,
                kMaxDescriptorPayloadSize >> 20);
  }
  const std::span<const uint8_t> payload = bytes.subspan(kDescriptorHeaderSize);
  if (payload.size() < header.payload_size) {
    return Fail("truncated descriptor: header says {} bytes, file has {}", header.payload_size,
                payload.size());
  }
  if (payload.size() > header.payload_size) {
    return Fail("descriptor has {} bytes after its {}-byte payload",
                payload.size() - header.payload_size, header.payload_size);
  }
  if (XXH64(payload.data(), payload.size(), 0) != header.payload_xxh64) {
    return Fail("descriptor checksum mismatch (corrupted?)");
  }
  pb::VmDescriptor message;
  if (!message.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) {
    return Fail("descriptor payload is not a valid flurry.descriptor.v1.VmDescriptor message");
  }
  VmDescriptor descriptor = FLURRY_TRY(FromProto(message));
  FLURRY_TRY(ValidateDescriptor(descriptor));
  return descriptor;
}

Result<void> ValidateDescriptor(const VmDescriptor& d) {
  FLURRY_TRY(CheckString("cpu vendor", d.cpu.vendor, kMaxVendorBytes, false));
  FLURRY_TRY(ValidateVcpu(d.vcpu));
  FLURRY_TRY(ValidateIdentity(d.identity));
  FLURRY_TRY(ValidateMemory(d.memory));
  FLURRY_TRY(ValidateFiles(d.files));
  FLURRY_TRY(ValidateSignals(d.signals));
  FLURRY_TRY(ValidatePages(d.pages, d.memory.ram_size));
  if (d.clone.clone_id < 0) return Invalid("clone id {} is negative", d.clone.clone_id);
  return {};
}

Result<void> WriteDescriptorFile(const std::string& path, const VmDescriptor& descriptor) {
  const std::vector<uint8_t> bytes = EncodeDescriptor(descriptor);
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "."
                          : slash == 0               ? "/"
                                                     : path.substr(0, slash);
  std::string tmp = path + ".XXXXXX";
  UniqueFd fd(mkostemp(tmp.data(), O_CLOEXEC));
  if (!fd.valid()) return FailErrno("creating a temporary file next to it");
  auto fail = [&](std::string_view what) {
    auto error = FailErrno(what);
    unlink(tmp.c_str());
    return error;
  };
  for (size_t done = 0; done < bytes.size();) {
    const ssize_t n = write(fd.get(), bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail("writing");
    }
    done += static_cast<size_t>(n);
  }
  if (fsync(fd.get()) != 0) return fail("fsync");
  if (close(fd.Release()) != 0) return fail("closing");
  if (rename(tmp.c_str(), path.c_str()) != 0) return fail("renaming the temporary file");
  UniqueFd dir_fd(open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir_fd.valid() || fsync(dir_fd.get()) != 0) return FailErrno("fsync of the directory");
  return {};
}

Result<std::vector<uint8_t>> ReadDescriptorBytes(const std::string& path) {
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return FailErrno("cannot open");
  struct stat st {};
  if (fstat(fd.get(), &st) != 0) return FailErrno("fstat");
  if (!S_ISREG(st.st_mode)) return Fail("not a regular file");
  constexpr uint64_t kMaxFileSize = kDescriptorHeaderSize + kMaxDescriptorPayloadSize;
  if (static_cast<uint64_t>(st.st_size) > kMaxFileSize) {
    return Fail("descriptor file of {} bytes exceeds the {} MiB limit", st.st_size,
                kMaxDescriptorPayloadSize >> 20);
  }
  // Read at most kMaxFileSize + 1 bytes, whatever the file does meanwhile.
  std::vector<uint8_t> bytes(static_cast<size_t>(st.st_size) + 1);
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = read(fd.get(), bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return FailErrno("reading");
    }
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  if (done > kMaxFileSize) {
    return Fail("descriptor file exceeds the {} MiB limit", kMaxDescriptorPayloadSize >> 20);
  }
  bytes.resize(done);
  return bytes;
}

Result<VmDescriptor> ReadDescriptorFile(const std::string& path) {
  const std::vector<uint8_t> bytes = FLURRY_TRY(ReadDescriptorBytes(path));
  return DecodeDescriptor(bytes);
}

Result<void> CheckCompatibleWithHost(const VmDescriptor& descriptor,
                                     const x86::CpuSignature& host) {
  if (descriptor.cpu == host) return {};
  return Fail(
      "descriptor was captured on {}; this host is {}; refusing to run it on a different CPU "
      "model",
      descriptor.cpu.ToString(), host.ToString());
}

}  // namespace flurry
