// Format version 1 (flurry before version 2): decoded by conversion (docs/formats/descriptor.md,
// "Format version 1").
#include <fcntl.h>
#include <gtest/gtest.h>

#include <csignal>
#include <fstream>
#include <iterator>
#include <string>

#include "arch/x86_64/layout.h"
#include "descriptor.pb.h"
#include "descriptor_v1.pb.h"
#include "snapshot/descriptor_codec.h"
#include "snapshot/descriptor_test_support.h"

namespace flurry {
namespace {

using namespace descriptor_test;
namespace pb1 = ::flurry::descriptor::v1;

std::vector<uint8_t> ReadTestdata(const std::string& name) {
  std::ifstream in(std::string(FLURRY_SNAPSHOT_TESTDATA) + "/" + name, std::ios::binary);
  EXPECT_TRUE(in.good()) << name;
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

// A version 1 blob: `shared`'s fields 1 and 3..10 (identical in both versions) plus the
// version 1 vCPU fields. Concatenated protobuf messages merge.
std::vector<uint8_t> Version1Blob(const VmDescriptor& shared, const pb1::VmDescriptor& v1) {
  const std::vector<uint8_t> v2 = EncodeDescriptor(shared);
  pb::VmDescriptor message;
  EXPECT_TRUE(message.ParseFromArray(v2.data() + 32, static_cast<int>(v2.size() - 32)));
  message.clear_vcpu();
  message.clear_backend();
  return Wrap(message.SerializeAsString() + v1.SerializeAsString(), 1);
}

// A valid version 1 vCPU as KVM reported it: user-mode registers, FS/GS in the segment
// registers and the MSRs, a 4 KiB XSAVE area whose software-reserved bytes hold what the kernel
// writes there.
pb1::VmDescriptor SampleVersion1() {
  pb1::VmDescriptor v1;
  pb1::Vcpu* v = v1.mutable_vcpu();
  pb1::Regs* r = v->mutable_regs();
  r->set_rax(0x10);
  r->set_rbx(0x11);
  r->set_rcx(0x12);
  r->set_rdx(0x13);
  r->set_rsi(0x14);
  r->set_rdi(0x15);
  r->set_rsp(0x3fff0000);
  r->set_rbp(0x17);
  r->set_r8(0x18);
  r->set_r9(0x19);
  r->set_r10(0x1a);
  r->set_r11(0x1b);
  r->set_r12(0x1c);
  r->set_r13(0x1d);
  r->set_r14(0x1e);
  r->set_r15(0x1f);
  r->set_rip(0x402000);
  r->set_rflags(0x246);
  v->mutable_sregs()->mutable_fs()->set_base(0x5000000);
  v->mutable_sregs()->mutable_gs()->set_base(0x6000000);
  std::vector<uint8_t> xsave = XsaveImage(4096, 0x7);
  const uint32_t sw_bytes[] = {0x46505853, 836, 0x7, 832};  // FP_XSTATE_MAGIC1, ...
  std::memcpy(xsave.data() + 464, sw_bytes, sizeof(sw_bytes));
  v->set_xsave(std::string(xsave.begin(), xsave.end()));
  v->set_xcr0(0x7);
  pb1::Msr* fs = v->add_msrs();
  fs->set_index(0xc0000100);
  fs->set_data(0x5000000);
  pb1::Msr* gs = v->add_msrs();
  gs->set_index(0xc0000101);
  gs->set_data(0x6000000);
  v1.mutable_segment_bases()->set_fs_base(0x5000000);
  v1.mutable_segment_bases()->set_gs_base(0x6000000);
  return v1;
}

Result<VmDescriptor> DecodeVersion1(const pb1::VmDescriptor& v1) {
  return DecodeDescriptor(Version1Blob(FullDescriptor(), v1));
}

// ---------------------------------------------------------------------------------------------
// A file written by the version 1 encoder (testdata/README.md)

TEST(DescriptorV1Test, DecodesAFileWrittenByTheVersion1Encoder) {
  const std::vector<uint8_t> blob = ReadTestdata("descriptor_v1.fvd");
  ASSERT_EQ(DescriptorFormatVersion(blob), 1u);
  Result<VmDescriptor> decoded = DecodeDescriptor(blob);
  ASSERT_TRUE(decoded) << decoded.error().message();
  const VmDescriptor& d = *decoded;

  EXPECT_EQ(d.backend, "kvm");
  EXPECT_EQ(d.cpu.ToString(),
            "AuthenticAMD family 0x19 model 0x21 stepping 2 features 5f71f9dbbdf129ff xcr0 0x7");
  // Captured at the gate's sysretq (rip 0x5007, CPL0): moved to the syscall's return address
  // with the RFLAGS sysretq loads from r11 (0x30a57 & 0x3c7fd7 | 2).
  const x86::UserRegs& r = d.vcpu.regs;
  EXPECT_EQ(r.rip, 0x401abcu);
  EXPECT_EQ(r.rflags, 0xa57u);
  EXPECT_EQ(r.rax, 0x1u);
  EXPECT_EQ(r.rbx, 0x1111u);
  EXPECT_EQ(r.rcx, 0x401abcu);
  EXPECT_EQ(r.rdx, 0x3333u);
  EXPECT_EQ(r.rsi, 0x4444u);
  EXPECT_EQ(r.rdi, 0x5555u);
  EXPECT_EQ(r.rsp, 0x1fffe8c0u);
  EXPECT_EQ(r.rbp, 0x1fffe900u);
  EXPECT_EQ(r.r8, 0x8888u);
  EXPECT_EQ(r.r9, 0x9999u);
  EXPECT_EQ(r.r10, 0xaaaau);
  EXPECT_EQ(r.r11, 0x30a57u);
  EXPECT_EQ(r.r12, 0xccccu);
  EXPECT_EQ(r.r13, 0xddddu);
  EXPECT_EQ(r.r14, 0xeeeeu);
  EXPECT_EQ(r.r15, 0xffffu);
  EXPECT_EQ(r.fs_base, 0x4c6880u);
  EXPECT_EQ(r.gs_base, 0x0u);
  EXPECT_EQ(d.vcpu.xcr0, 0x7u);

  // The XSAVE area is kept at 4096 bytes, with the kernel's software-reserved bytes zeroed.
  const std::vector<uint8_t>& x = d.vcpu.xsave;
  ASSERT_EQ(x.size(), 4096u);
  EXPECT_EQ(x[0], 0x7f);  // FCW 0x37f
  EXPECT_EQ(x[1], 0x03);
  EXPECT_EQ(x[24], 0x80);  // MXCSR 0x1f80
  EXPECT_EQ(x[25], 0x1f);
  for (int i = 0; i < 256; ++i) ASSERT_EQ(x[160 + i], static_cast<uint8_t>(i + 1)) << i;
  for (int i = 464; i < 512; ++i) ASSERT_EQ(x[i], 0) << i;
  EXPECT_EQ(x[512], 0x7);  // XSTATE_BV
  for (int i = 513; i < 576; ++i) ASSERT_EQ(x[i], 0) << i;
  for (int i = 0; i < 256; ++i) ASSERT_EQ(x[576 + i], static_cast<uint8_t>(0xff - i)) << i;
  for (size_t i = 832; i < x.size(); ++i) ASSERT_EQ(x[i], 0) << i;

  // The fields version 2 shares with version 1.
  EXPECT_EQ(d.identity.pid, 1234);
  EXPECT_EQ(d.identity.exe_path, "/hello");
  EXPECT_EQ(d.memory.ram_size, 512u << 20);
  EXPECT_EQ(d.memory.brk, 0x4ea000u);
  EXPECT_EQ(d.memory.regions.at(0x1f5df000), 0x21000u);
  EXPECT_EQ(d.files.root_host_path, "/srv/data");
  ASSERT_EQ(d.files.fds.size(), 4u);
  EXPECT_EQ(d.files.fds[3].path, "/input.txt");
  EXPECT_EQ(d.files.fds[3].offset, 4096);
  EXPECT_EQ(d.signals.actions[SIGTERM].handler, 0x401500u);
  EXPECT_EQ(d.signals.actions[SIGPIPE].handler, 1u);
  EXPECT_EQ(d.start_time_ns, 123456789012u);
  EXPECT_FALSE(d.clock.has_value()) << "version 1 never recorded the capture instant's clock";
  ASSERT_EQ(d.pages.present.size(), 4u);
  EXPECT_EQ(d.pages.present[2].first_page, 0x1f5dfu);
  EXPECT_EQ(d.pages.present[2].page_count, 0x21u);
  EXPECT_EQ(d.clone.family_id, 0x1234abcd5678ef90u);
}

TEST(DescriptorV1Test, AConvertedFileReencodesAsVersion2) {
  Result<VmDescriptor> v1 = DecodeDescriptor(ReadTestdata("descriptor_v1.fvd"));
  ASSERT_TRUE(v1) << v1.error().message();
  const std::vector<uint8_t> blob = EncodeDescriptor(*v1);
  EXPECT_EQ(DescriptorFormatVersion(blob), 2u);
  Result<VmDescriptor> v2 = DecodeDescriptor(blob);
  ASSERT_TRUE(v2) << v2.error().message();
  ExpectSameDescriptor(*v1, *v2);
}

TEST(DescriptorV1Test, TheChecksumStillGuardsAVersion1File) {
  std::vector<uint8_t> blob = ReadTestdata("descriptor_v1.fvd");
  ASSERT_GT(blob.size(), 100u);
  blob[100] ^= 1;
  EXPECT_EQ(DecodeError(blob), "descriptor checksum mismatch (corrupted?)");
}

// ---------------------------------------------------------------------------------------------
// Conversion

TEST(DescriptorV1Test, ConvertsEveryRegister) {
  Result<VmDescriptor> d = DecodeVersion1(SampleVersion1());
  ASSERT_TRUE(d) << d.error().message();
  const x86::UserRegs& r = d->vcpu.regs;
  EXPECT_EQ(r.rax, 0x10u);
  EXPECT_EQ(r.rbx, 0x11u);
  EXPECT_EQ(r.rcx, 0x12u);
  EXPECT_EQ(r.rdx, 0x13u);
  EXPECT_EQ(r.rsi, 0x14u);
  EXPECT_EQ(r.rdi, 0x15u);
  EXPECT_EQ(r.rsp, 0x3fff0000u);
  EXPECT_EQ(r.rbp, 0x17u);
  EXPECT_EQ(r.r8, 0x18u);
  EXPECT_EQ(r.r9, 0x19u);
  EXPECT_EQ(r.r10, 0x1au);
  EXPECT_EQ(r.r11, 0x1bu);
  EXPECT_EQ(r.r12, 0x1cu);
  EXPECT_EQ(r.r13, 0x1du);
  EXPECT_EQ(r.r14, 0x1eu);
  EXPECT_EQ(r.r15, 0x1fu);
  EXPECT_EQ(r.rip, 0x402000u);
  EXPECT_EQ(r.rflags, 0x246u);
  EXPECT_EQ(r.fs_base, 0x5000000u);
  EXPECT_EQ(r.gs_base, 0x6000000u);
  EXPECT_EQ(d->vcpu.xcr0, 0x7u);
  EXPECT_EQ(d->backend, "kvm");
  // Everything else comes from the shared fields.
  VmDescriptor expected = FullDescriptor();
  expected.backend = d->backend;
  expected.vcpu = d->vcpu;
  expected.threads.clear();  // version 1 had no threads but the one in vcpu
  expected.last_tid = 0;
  ExpectSameDescriptor(expected, *d);
}

TEST(DescriptorV1Test, KeepsTheXsaveAreaButZeroesItsSoftwareReservedBytes) {
  const pb1::VmDescriptor v1 = SampleVersion1();
  Result<VmDescriptor> d = DecodeVersion1(v1);
  ASSERT_TRUE(d) << d.error().message();
  std::string expected = v1.vcpu().xsave();
  std::fill(expected.begin() + 464, expected.begin() + 512, '\0');
  EXPECT_EQ(std::string(d->vcpu.xsave.begin(), d->vcpu.xsave.end()), expected);
  EXPECT_NE(v1.vcpu().xsave(), expected) << "the sample has non-zero software-reserved bytes";
}

TEST(DescriptorV1Test, CompletesASyscallCapturedAtTheGateSysret) {
  pb1::VmDescriptor v1 = SampleVersion1();
  v1.mutable_vcpu()->mutable_regs()->set_rip(x86::kSyscallGateAddr + 7);
  v1.mutable_vcpu()->mutable_regs()->set_rflags(0x2);
  v1.mutable_vcpu()->mutable_regs()->set_rcx(0x4010f0);
  v1.mutable_vcpu()->mutable_regs()->set_r11(0xffffffffffffffff);
  Result<VmDescriptor> d = DecodeVersion1(v1);
  ASSERT_TRUE(d) << d.error().message();
  EXPECT_EQ(d->vcpu.regs.rip, 0x4010f0u);
  EXPECT_EQ(d->vcpu.regs.rflags, 0x3c7fd7u);
  EXPECT_EQ(d->vcpu.regs.rax, 0x10u);  // the syscall's result stays
}

TEST(DescriptorV1Test, RewindsASyscallCapturedBeforeTheDoorbell) {
  pb1::VmDescriptor v1 = SampleVersion1();
  v1.mutable_vcpu()->mutable_regs()->set_rip(x86::kSyscallGateAddr);
  v1.mutable_vcpu()->mutable_regs()->set_rflags(0x2);
  v1.mutable_vcpu()->mutable_regs()->set_rcx(0x4010f0);
  v1.mutable_vcpu()->mutable_regs()->set_r11(0x10246);
  Result<VmDescriptor> d = DecodeVersion1(v1);
  ASSERT_TRUE(d) << d.error().message();
  EXPECT_EQ(d->vcpu.regs.rip, 0x4010eeu);  // the `syscall` instruction, run again
  EXPECT_EQ(d->vcpu.regs.rflags, 0x10246u);
}

TEST(DescriptorV1Test, RefusesAnyOtherPlaceInTheGate) {
  pb1::VmDescriptor v1 = SampleVersion1();
  v1.mutable_vcpu()->mutable_regs()->set_rip(x86::kSyscallGateAddr + 3);
  EXPECT_EQ(DecodeError(Version1Blob(FullDescriptor(), v1)),
            "invalid descriptor: rip 0x5003 is neither in user memory [0x200000, 0x40000000) nor "
            "in the vDSO [0xb000, 0xf000)");
}

TEST(DescriptorV1Test, PendingSegmentBasesWin) {
  pb1::VmDescriptor v1 = SampleVersion1();
  v1.mutable_segment_bases()->set_fs_base(0x7000000);
  v1.mutable_segment_bases()->set_gs_base(0x8000000);
  v1.mutable_segment_bases()->set_dirty(true);
  Result<VmDescriptor> d = DecodeVersion1(v1);
  ASSERT_TRUE(d) << d.error().message();
  EXPECT_EQ(d->vcpu.regs.fs_base, 0x7000000u);
  EXPECT_EQ(d->vcpu.regs.gs_base, 0x8000000u);
}

TEST(DescriptorV1Test, AppliedBasesComeFromTheMsrs) {
  pb1::VmDescriptor v1 = SampleVersion1();
  v1.mutable_segment_bases()->set_fs_base(0x7000000);  // stale: not dirty
  v1.mutable_vcpu()->mutable_msrs(0)->set_data(0x9000000);
  v1.mutable_vcpu()->mutable_msrs(1)->set_data(0xa000000);
  Result<VmDescriptor> d = DecodeVersion1(v1);
  ASSERT_TRUE(d) << d.error().message();
  EXPECT_EQ(d->vcpu.regs.fs_base, 0x9000000u);
  EXPECT_EQ(d->vcpu.regs.gs_base, 0xa000000u);
}

TEST(DescriptorV1Test, BasesFallBackToTheSegmentRegistersWithoutMsrs) {
  pb1::VmDescriptor v1 = SampleVersion1();
  v1.mutable_vcpu()->clear_msrs();
  v1.mutable_vcpu()->mutable_sregs()->mutable_fs()->set_base(0xb000000);
  v1.mutable_vcpu()->mutable_sregs()->mutable_gs()->set_base(0xc000000);
  Result<VmDescriptor> d = DecodeVersion1(v1);
  ASSERT_TRUE(d) << d.error().message();
  EXPECT_EQ(d->vcpu.regs.fs_base, 0xb000000u);
  EXPECT_EQ(d->vcpu.regs.gs_base, 0xc000000u);
}

TEST(DescriptorV1Test, IgnoresVersion2FieldsInAVersion1Payload) {
  // A version 1 writer never wrote fields 11 and 12: the vCPU comes from field 2, the backend
  // is "kvm".
  pb::VmDescriptor v2_fields;
  v2_fields.mutable_vcpu()->set_rip(0x30000000);
  v2_fields.set_backend("seccomp");
  const std::vector<uint8_t> blob = Version1Blob(FullDescriptor(), SampleVersion1());
  const std::string payload(blob.begin() + 32, blob.end());
  Result<VmDescriptor> d = DecodeDescriptor(Wrap(payload + v2_fields.SerializeAsString(), 1));
  ASSERT_TRUE(d) << d.error().message();
  EXPECT_EQ(d->vcpu.regs.rip, 0x402000u);
  EXPECT_EQ(d->backend, "kvm");
}

// ---------------------------------------------------------------------------------------------
// Refusals

TEST(DescriptorV1Test, RefusesAnXsaveAreaOtherThan4KiB) {
  for (size_t size : {size_t{0}, size_t{4095}, size_t{4097}, size_t{2688}}) {
    SCOPED_TRACE(size);
    pb1::VmDescriptor v1 = SampleVersion1();
    v1.mutable_vcpu()->mutable_xsave()->resize(size);
    EXPECT_EQ(DecodeError(Version1Blob(FullDescriptor(), v1)),
              fmt::format("invalid descriptor: xsave area is {} bytes, expected 4096", size));
  }
}

TEST(DescriptorV1Test, RefusesMoreThan64Msrs) {
  pb1::VmDescriptor v1 = SampleVersion1();
  for (int i = 0; i < 63; ++i) v1.mutable_vcpu()->add_msrs()->set_index(0x10 + i);
  EXPECT_EQ(DecodeError(Version1Blob(FullDescriptor(), v1)),
            "invalid descriptor: 65 MSRs, at most 64 allowed");
}

TEST(DescriptorV1Test, RefusesMissingMessages) {
  const std::pair<const char*, std::function<void(pb1::VmDescriptor&)>> cases[] = {
      {"vcpu", [](pb1::VmDescriptor& m) { m.clear_vcpu(); }},
      {"segment_bases", [](pb1::VmDescriptor& m) { m.clear_segment_bases(); }},
      {"vcpu.regs", [](pb1::VmDescriptor& m) { m.mutable_vcpu()->clear_regs(); }},
      {"vcpu.sregs", [](pb1::VmDescriptor& m) { m.mutable_vcpu()->clear_sregs(); }},
      {"sregs.fs", [](pb1::VmDescriptor& m) { m.mutable_vcpu()->mutable_sregs()->clear_fs(); }},
      {"sregs.gs", [](pb1::VmDescriptor& m) { m.mutable_vcpu()->mutable_sregs()->clear_gs(); }},
  };
  for (const auto& [what, edit] : cases) {
    SCOPED_TRACE(what);
    pb1::VmDescriptor v1 = SampleVersion1();
    edit(v1);
    EXPECT_EQ(DecodeError(Version1Blob(FullDescriptor(), v1)),
              fmt::format("invalid descriptor: missing {}", what));
  }
}

TEST(DescriptorV1Test, AppliesTheVersion2RulesToTheConvertedState) {
  pb1::VmDescriptor v1 = SampleVersion1();
  std::string& xsave = *v1.mutable_vcpu()->mutable_xsave();
  xsave[527] = static_cast<char>(0x80);  // XCOMP_BV: compacted
  EXPECT_EQ(DecodeError(Version1Blob(FullDescriptor(), v1)),
            "invalid descriptor: xsave XCOMP_BV is 0x8000000000000000, not 0: only the standard "
            "format is accepted");
  v1 = SampleVersion1();
  v1.mutable_segment_bases()->set_fs_base(0x8000000000000000);
  v1.mutable_segment_bases()->set_dirty(true);
  EXPECT_EQ(DecodeError(Version1Blob(FullDescriptor(), v1)),
            "invalid descriptor: fs base 0x8000000000000000 is not canonical");
}

TEST(DescriptorV1Test, RefusesAPayloadThatIsNotProtobuf) {
  EXPECT_EQ(DecodeError(Wrap(std::string("\xff\xff\xff\xff\xff\xff", 6), 1)),
            "descriptor payload is not a valid flurry.descriptor.v1.VmDescriptor message");
}

TEST(DescriptorV1Test, RandomDamageToAVersion1PayloadNeverCrashes) {
  const std::vector<uint8_t> good = ReadTestdata("descriptor_v1.fvd");
  ASSERT_GT(good.size(), 32u);
  uint64_t state = 0x5eed;
  auto next = [&state] {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return state >> 33;
  };
  int decoded = 0;
  for (int iteration = 0; iteration < 5000; ++iteration) {
    std::vector<uint8_t> blob = good;
    for (uint64_t n = 1 + next() % 4; n > 0; --n) {
      blob[32 + next() % (blob.size() - 32)] ^= static_cast<uint8_t>(1u << (next() % 8));
    }
    Reseal(blob);
    Result<VmDescriptor> result = DecodeDescriptor(blob);
    if (result) {
      ++decoded;
      EXPECT_TRUE(ValidateDescriptor(*result));
      EXPECT_TRUE(DecodeDescriptor(EncodeDescriptor(*result)));
    }
  }
  EXPECT_GT(decoded, 0);
}

}  // namespace
}  // namespace flurry
