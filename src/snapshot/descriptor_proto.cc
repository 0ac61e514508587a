#include "snapshot/descriptor_proto.h"

#include <array>

#include "snapshot/descriptor_checks.h"

namespace flurry::descriptor_internal {

namespace pb = ::flurry::descriptor::v2;

namespace {

// ---------------------------------------------------------------------------------------------
// VmDescriptor -> proto

void UserCpuToProto(const x86::UserCpuState& v, pb::UserCpu* out) {
  out->set_rax(v.regs.rax);
  out->set_rbx(v.regs.rbx);
  out->set_rcx(v.regs.rcx);
  out->set_rdx(v.regs.rdx);
  out->set_rsi(v.regs.rsi);
  out->set_rdi(v.regs.rdi);
  out->set_rsp(v.regs.rsp);
  out->set_rbp(v.regs.rbp);
  out->set_r8(v.regs.r8);
  out->set_r9(v.regs.r9);
  out->set_r10(v.regs.r10);
  out->set_r11(v.regs.r11);
  out->set_r12(v.regs.r12);
  out->set_r13(v.regs.r13);
  out->set_r14(v.regs.r14);
  out->set_r15(v.regs.r15);
  out->set_rip(v.regs.rip);
  out->set_rflags(v.regs.rflags);
  out->set_fs_base(v.regs.fs_base);
  out->set_gs_base(v.regs.gs_base);
  out->set_xcr0(v.xcr0);
  out->set_xsave(reinterpret_cast<const char*>(v.xsave.data()), v.xsave.size());
}

}  // namespace

void ToProto(const VmDescriptor& d, pb::VmDescriptor* out) {
  pb::CpuSignature* cpu = out->mutable_cpu();
  cpu->set_vendor(d.cpu.vendor);
  cpu->set_family(d.cpu.family);
  cpu->set_model(d.cpu.model);
  cpu->set_stepping(d.cpu.stepping);
  cpu->set_features_hash(d.cpu.features_hash);
  cpu->set_xcr0(d.cpu.xcr0);

  UserCpuToProto(d.vcpu, out->mutable_vcpu());
  out->set_backend(d.backend);

  pb::ProcessIdentity* id = out->mutable_identity();
  id->set_pid(d.identity.pid);
  id->set_ppid(d.identity.ppid);
  id->set_tid(d.identity.tid);
  id->set_clear_child_tid(d.identity.clear_child_tid);
  id->set_robust_list(d.identity.robust_list);
  id->set_robust_list_len(d.identity.robust_list_len);
  id->set_exe_path(d.identity.exe_path);
  id->set_hostname(d.identity.hostname);

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
  if (d.memory.protections) {
    mem->mutable_protections()->Reserve(static_cast<int>(d.memory.protections->size()));
    for (const auto& [start, span] : *d.memory.protections) {
      pb::PageProtection* p = mem->add_protections();
      p->set_start(start);
      p->set_length(span.end - start);
      p->set_prot(span.prot);
    }
  }

  FilesToProto(d.files, out->mutable_files());

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
  if (d.signals.real_timer.armed()) {
    sig->mutable_real_timer()->set_deadline_ns(d.signals.real_timer.deadline_ns);
    sig->mutable_real_timer()->set_interval_ns(d.signals.real_timer.interval_ns);
  }
  for (int signal = 1; signal <= SignalState::kSignals; ++signal) {
    if ((d.signals.pending & SignalState::Bit(signal)) == 0) continue;
    const PendingSignalInfo& info = d.signals.pending_info[signal];
    pb::PendingSignal* p = sig->add_pending();
    p->set_signal(static_cast<uint32_t>(signal));
    p->set_code(info.code);
    p->set_pid(info.pid);
    p->set_uid(info.uid);
    p->set_addr(info.addr);
  }

  out->set_start_time_ns(d.start_time_ns);
  if (d.clock) {
    pb::Clock* clock = out->mutable_clock();
    // Validated descriptors have a non-negative guest time; others round-trip modulo 2^64.
    clock->set_guest_monotonic_ns(static_cast<uint64_t>(d.clock->guest_monotonic_ns));
    clock->set_host_realtime_ns(d.clock->host_realtime_ns);
  }

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

  sig->set_thread_pending(d.signals.thread_pending);
  for (const PosixTimer& t : d.signals.timers) {
    pb::PosixTimer* timer = sig->add_timers();
    timer->set_id(t.id);
    timer->set_clock(t.clock);
    timer->set_notify(t.notify);
    timer->set_signal(t.signal);
    timer->set_tid(t.tid);
    timer->set_value(t.value);
    timer->set_deadline_ns(t.deadline_ns);
    timer->set_interval_ns(t.interval_ns);
    timer->set_queued(t.queued);
    timer->set_behind_plain(t.behind_plain);
    timer->set_overrun(t.overrun);
    timer->set_queued_overrun(t.queued_overrun);
  }
  for (const ThreadRecord& t : d.threads) {
    pb::GuestThread* thread = out->add_threads();
    thread->set_tid(t.tid);
    UserCpuToProto(t.cpu, thread->mutable_cpu());
    thread->set_clear_child_tid(t.clear_child_tid);
    thread->set_robust_list(t.robust_list);
    thread->set_robust_list_len(t.robust_list_len);
    thread->set_blocked(t.blocked);
    thread->set_thread_pending(t.thread_pending);
    thread->mutable_altstack()->set_sp(t.altstack.sp);
    thread->mutable_altstack()->set_flags(t.altstack.flags);
    thread->mutable_altstack()->set_size(t.altstack.size);
  }
  out->set_last_tid(d.last_tid);
  if (d.processes) ProcessesToProto(*d.processes, out->mutable_processes());
}

namespace {

// ---------------------------------------------------------------------------------------------
// proto -> VmDescriptor: representation checks (values the C++ types cannot hold, missing
// messages, malformed arrays). Semantic checks are ValidateDescriptor's.

Result<x86::UserCpuState> UserCpuFromProto(const pb::UserCpu& v) {
  // Bound the copy below; ValidateDescriptor checks the image itself.
  FLURRY_TRY(CheckXsaveSize(v.xsave().size()));
  x86::UserCpuState out;
  out.regs.rax = v.rax();
  out.regs.rbx = v.rbx();
  out.regs.rcx = v.rcx();
  out.regs.rdx = v.rdx();
  out.regs.rsi = v.rsi();
  out.regs.rdi = v.rdi();
  out.regs.rsp = v.rsp();
  out.regs.rbp = v.rbp();
  out.regs.r8 = v.r8();
  out.regs.r9 = v.r9();
  out.regs.r10 = v.r10();
  out.regs.r11 = v.r11();
  out.regs.r12 = v.r12();
  out.regs.r13 = v.r13();
  out.regs.r14 = v.r14();
  out.regs.r15 = v.r15();
  out.regs.rip = v.rip();
  out.regs.rflags = v.rflags();
  out.regs.fs_base = v.fs_base();
  out.regs.gs_base = v.gs_base();
  out.xcr0 = v.xcr0();
  out.xsave.assign(v.xsave().begin(), v.xsave().end());
  return out;
}

}  // namespace

Result<VmDescriptor> FromProto(const pb::VmDescriptor& in) {
  if (!in.has_vcpu()) return Missing("vcpu");
  VmDescriptor d = FLURRY_TRY(SharedFieldsFromProto(in));
  d.vcpu = FLURRY_TRY(UserCpuFromProto(in.vcpu()));
  d.backend = in.backend();
  if (in.threads_size() > kMaxThreads) {
    return Invalid("{} threads, at most {} allowed", in.threads_size(), kMaxThreads);
  }
  for (const pb::GuestThread& t : in.threads()) {
    if (!t.has_cpu()) return Missing(fmt::format("cpu of thread {}", t.tid()));
    ThreadRecord thread;
    thread.tid = t.tid();
    thread.cpu = FLURRY_TRY_CTX(UserCpuFromProto(t.cpu()), fmt::format("thread {}", t.tid()));
    thread.clear_child_tid = t.clear_child_tid();
    thread.robust_list = t.robust_list();
    thread.robust_list_len = t.robust_list_len();
    thread.blocked = t.blocked();
    thread.thread_pending = t.thread_pending();
    thread.altstack = GuestStack{.sp = t.altstack().sp(),
                                 .flags = t.altstack().flags(),
                                 .pad = 0,
                                 .size = t.altstack().size()};
    d.threads.push_back(std::move(thread));
  }
  d.last_tid = in.last_tid();
  if (in.has_processes()) {
    d.processes = FLURRY_TRY(ProcessesFromProto(in.processes()));
  }
  return d;
}

Result<VmDescriptor> SharedFieldsFromProto(const pb::VmDescriptor& in) {
  if (!in.has_cpu()) return Missing("cpu");
  if (!in.has_identity()) return Missing("identity");
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

  const pb::ProcessIdentity& id = in.identity();
  d.identity.pid = id.pid();
  d.identity.ppid = id.ppid();
  d.identity.tid = id.tid();
  d.identity.clear_child_tid = id.clear_child_tid();
  d.identity.robust_list = id.robust_list();
  d.identity.robust_list_len = id.robust_list_len();
  d.identity.exe_path = id.exe_path();
  d.identity.hostname = id.hostname();

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
  if (static_cast<uint64_t>(mem.protections_size()) > ram_pages) {
    return Invalid("{} protection spans in {} pages of RAM", mem.protections_size(), ram_pages);
  }
  if (mem.protections_size() > 0) {
    auto& spans = d.memory.protections.emplace();
    for (int i = 0; i < mem.protections_size(); ++i) {
      const pb::PageProtection& p = mem.protections(i);
      if (p.length() == 0 || p.start() + p.length() < p.start() || p.prot() > kProtAll) {
        return Invalid("protection span [{:#x}, +{:#x}) prot {:#x} is not valid", p.start(),
                       p.length(), p.prot());
      }
      if (i > 0 && p.start() < std::prev(spans.end())->second.end) {
        return Invalid("protection spans not ascending and apart at {:#x}", p.start());
      }
      spans.emplace_hint(
          spans.end(), p.start(),
          ProtectionMap::Span{p.start() + p.length(), static_cast<uint8_t>(p.prot())});
    }
  }

  d.files = FLURRY_TRY(FilesFromProto(in.files()));

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
  d.signals.thread_pending = sig.thread_pending();
  d.signals.altstack.sp = sig.altstack().sp();
  d.signals.altstack.flags = sig.altstack().flags();
  d.signals.altstack.pad = 0;
  d.signals.altstack.size = sig.altstack().size();
  if (sig.has_real_timer()) {
    const pb::IntervalTimer& t = sig.real_timer();
    if (t.deadline_ns() <= 0 || t.interval_ns() < 0) {
      return Invalid("interval timer deadline {} ns, interval {} ns", t.deadline_ns(),
                     t.interval_ns());
    }
    d.signals.real_timer =
        IntervalTimer{.deadline_ns = t.deadline_ns(), .interval_ns = t.interval_ns()};
  }
  // Bounded here (the vector is built from it); the rest is ValidateDescriptor's.
  if (sig.timers_size() > SignalState::kMaxTimers) {
    return Invalid("{} POSIX timers, at most {} allowed", sig.timers_size(),
                   SignalState::kMaxTimers);
  }
  for (const pb::PosixTimer& t : sig.timers()) {
    d.signals.timers.push_back(PosixTimer{.id = t.id(),
                                          .clock = t.clock(),
                                          .notify = t.notify(),
                                          .signal = t.signal(),
                                          .tid = t.tid(),
                                          .value = t.value(),
                                          .deadline_ns = t.deadline_ns(),
                                          .interval_ns = t.interval_ns(),
                                          .queued = t.queued(),
                                          .behind_plain = t.behind_plain(),
                                          .overrun = t.overrun(),
                                          .queued_overrun = t.queued_overrun()});
  }
  for (const pb::PendingSignal& p : sig.pending()) {
    if (p.signal() < 1 || p.signal() > static_cast<uint32_t>(kMaxSignal)) {
      return Invalid("pending signal {} (valid: 1..{})", p.signal(), kMaxSignal);
    }
    const uint64_t bit = SignalState::Bit(static_cast<int>(p.signal()));
    if (d.signals.pending & bit) return Invalid("signal {} pending twice", p.signal());
    d.signals.pending |= bit;
    d.signals.pending_info[p.signal()] =
        PendingSignalInfo{.code = p.code(), .pid = p.pid(), .uid = p.uid(), .addr = p.addr()};
  }

  d.start_time_ns = in.start_time_ns();
  if (in.has_clock()) {  // optional: older writers did not record it
    d.clock =
        ClockCapture{.guest_monotonic_ns = static_cast<int64_t>(in.clock().guest_monotonic_ns()),
                     .host_realtime_ns = in.clock().host_realtime_ns()};
  }

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

}  // namespace flurry::descriptor_internal
