// The protobuf mapping (descriptor.proto, format version 2): field numbers, representation
// refusals, unknown and reserved fields, the backend string.
#include <gtest/gtest.h>

#include <csignal>
#include <functional>
#include <string>

#include "descriptor.pb.h"
#include "descriptor_v1.pb.h"
#include "snapshot/descriptor_codec.h"
#include "snapshot/descriptor_test_support.h"

namespace flurry {
namespace {

using namespace descriptor_test;
namespace pb1 = ::flurry::descriptor::v1;

// ---------------------------------------------------------------------------------------------
// The schema: field numbers are the wire format and never change (docs/formats/descriptor.md).

int FieldNumber(const google::protobuf::Descriptor* message, const char* name) {
  const google::protobuf::FieldDescriptor* field = message->FindFieldByName(name);
  return field == nullptr ? -1 : field->number();
}

TEST(DescriptorProtoTest, UserCpuFieldNumbersAreAsDocumented) {
  const google::protobuf::Descriptor* m = pb::UserCpu::descriptor();
  const char* const names[] = {"rax", "rbx",    "rcx",     "rdx",     "rsi",  "rdi",  "rsp", "rbp",
                               "r8",  "r9",     "r10",     "r11",     "r12",  "r13",  "r14", "r15",
                               "rip", "rflags", "fs_base", "gs_base", "xcr0", "xsave"};
  ASSERT_EQ(m->field_count(), static_cast<int>(std::size(names)));
  for (size_t i = 0; i < std::size(names); ++i) {
    EXPECT_EQ(FieldNumber(m, names[i]), static_cast<int>(i + 1)) << names[i];
  }
  // The registers in the order of x86::UserRegs.
  for (size_t i = 0; i < std::size(kUserRegFields); ++i) {
    EXPECT_STREQ(kUserRegFields[i].name, names[i]);
  }
}

TEST(DescriptorProtoTest, TopLevelFieldNumbersAreAsDocumented) {
  const google::protobuf::Descriptor* m = pb::VmDescriptor::descriptor();
  EXPECT_EQ(FieldNumber(m, "cpu"), 1);
  EXPECT_EQ(FieldNumber(m, "identity"), 3);
  EXPECT_EQ(FieldNumber(m, "memory"), 5);
  EXPECT_EQ(FieldNumber(m, "files"), 6);
  EXPECT_EQ(FieldNumber(m, "signals"), 7);
  EXPECT_EQ(FieldNumber(m, "start_time_ns"), 8);
  EXPECT_EQ(FieldNumber(m, "pages"), 9);
  EXPECT_EQ(FieldNumber(m, "clone"), 10);
  EXPECT_EQ(FieldNumber(m, "vcpu"), 11);
  EXPECT_EQ(FieldNumber(m, "backend"), 12);
  EXPECT_EQ(FieldNumber(m, "clock"), 13);
  EXPECT_EQ(FieldNumber(m, "threads"), 14);
  EXPECT_EQ(FieldNumber(m, "last_tid"), 15);
  EXPECT_EQ(FieldNumber(m, "processes"), 16);
  EXPECT_EQ(m->field_count(), 14);
  EXPECT_EQ(FieldNumber(pb::Signals::descriptor(), "thread_pending"), 6);
  const google::protobuf::Descriptor* clock = pb::Clock::descriptor();
  EXPECT_EQ(FieldNumber(clock, "guest_monotonic_ns"), 1);
  EXPECT_EQ(FieldNumber(clock, "host_realtime_ns"), 2);
  EXPECT_EQ(clock->field_count(), 2);
  // Format version 1's vcpu (2) and segment_bases (4) are reserved, never reused.
  EXPECT_TRUE(m->IsReservedNumber(2));
  EXPECT_TRUE(m->IsReservedNumber(4));
  EXPECT_TRUE(m->IsReservedName("segment_bases"));
  EXPECT_EQ(pb1::VmDescriptor::descriptor()->FindFieldByName("vcpu")->number(), 2);
  EXPECT_EQ(pb1::VmDescriptor::descriptor()->FindFieldByName("segment_bases")->number(), 4);
  EXPECT_EQ(m->file()->package(), "flurry.descriptor.v2");
}

TEST(DescriptorProtoTest, WritesEveryRegisterToItsNamedField) {
  const VmDescriptor d = FullDescriptor();
  const std::vector<uint8_t> blob = EncodeDescriptor(d);
  pb::VmDescriptor m;
  ASSERT_TRUE(m.ParseFromArray(blob.data() + 32, static_cast<int>(blob.size() - 32)));
  const pb::UserCpu& c = m.vcpu();
  const google::protobuf::Reflection* reflection = c.GetReflection();
  for (const UserRegField& f : kUserRegFields) {
    const google::protobuf::FieldDescriptor* field = c.GetDescriptor()->FindFieldByName(f.name);
    ASSERT_NE(field, nullptr) << f.name;
    EXPECT_EQ(reflection->GetUInt64(c, field), d.vcpu.regs.*f.field) << f.name;
  }
  EXPECT_EQ(c.xcr0(), d.vcpu.xcr0);
  EXPECT_EQ(c.xsave(), std::string(d.vcpu.xsave.begin(), d.vcpu.xsave.end()));
  EXPECT_EQ(m.backend(), "seccomp");
}

// ---------------------------------------------------------------------------------------------
// The backend name

TEST(DescriptorProtoTest, BackendRoundTrips) {
  for (const char* backend : {"", "kvm", "seccomp", "kvm-amx.2"}) {
    SCOPED_TRACE(backend);
    VmDescriptor d = FullDescriptor();
    d.backend = backend;
    Result<VmDescriptor> decoded = DecodeDescriptor(EncodeDescriptor(d));
    ASSERT_TRUE(decoded) << decoded.error().message();
    EXPECT_EQ(decoded->backend, backend);
  }
}

TEST(DescriptorProtoTest, BackendNeedNotBeUtf8) {
  // `bytes`, not `string`: a peer's invalid UTF-8 is not a parse failure.
  VmDescriptor d = FullDescriptor();
  d.backend = "\xff\xfe";
  Result<VmDescriptor> decoded = DecodeDescriptor(EncodeDescriptor(d));
  ASSERT_TRUE(decoded) << decoded.error().message();
  EXPECT_EQ(decoded->backend, "\xff\xfe");
}

TEST(DescriptorProtoTest, AbsentBackendDecodesAsEmpty) {
  Result<VmDescriptor> decoded = DecodeDescriptor(
      EncodeWithProtoEdit(FullDescriptor(), [](pb::VmDescriptor& m) { m.clear_backend(); }));
  ASSERT_TRUE(decoded) << decoded.error().message();
  EXPECT_EQ(decoded->backend, "");
}

// ---------------------------------------------------------------------------------------------
// The capture instant's clock

TEST(DescriptorProtoTest, ClockIsWrittenToItsFields) {
  const VmDescriptor d = FullDescriptor();
  const std::vector<uint8_t> blob = EncodeDescriptor(d);
  pb::VmDescriptor m;
  ASSERT_TRUE(m.ParseFromArray(blob.data() + 32, static_cast<int>(blob.size() - 32)));
  ASSERT_TRUE(m.has_clock());
  EXPECT_EQ(m.clock().guest_monotonic_ns(), 1987654321012345u);
  EXPECT_EQ(m.clock().host_realtime_ns(), 1796428800123456789);
}

// Descriptors written before the clock was recorded decode, without one: a restore then reads
// the host's monotonic clock, as flurry did when it wrote them.
TEST(DescriptorProtoTest, AbsentClockDecodesAsNotRecorded) {
  const std::vector<uint8_t> blob =
      EncodeWithProtoEdit(FullDescriptor(), [](pb::VmDescriptor& m) { m.clear_clock(); });
  Result<VmDescriptor> decoded = DecodeDescriptor(blob);
  ASSERT_TRUE(decoded) << decoded.error().message();
  EXPECT_FALSE(decoded->clock.has_value());
  EXPECT_EQ(decoded->start_time_ns, 987654321012345u);
  // And re-encodes without one.
  pb::VmDescriptor m;
  const std::vector<uint8_t> again = EncodeDescriptor(*decoded);
  ASSERT_TRUE(m.ParseFromArray(again.data() + 32, static_cast<int>(again.size() - 32)));
  EXPECT_FALSE(m.has_clock());
}

// ---------------------------------------------------------------------------------------------
// Refusals that a VmDescriptor cannot express: built by editing the protobuf message.

struct ProtoCase {
  const char* name;
  std::function<void(pb::VmDescriptor&)> edit;
  const char* error;
};

TEST(DescriptorProtoTest, RefusesMalformedMessages) {
  const ProtoCase cases[] = {
      {"missing vcpu", [](pb::VmDescriptor& m) { m.clear_vcpu(); },
       "invalid descriptor: missing vcpu"},
      {"missing cpu", [](pb::VmDescriptor& m) { m.clear_cpu(); },
       "invalid descriptor: missing cpu"},
      {"missing identity", [](pb::VmDescriptor& m) { m.clear_identity(); },
       "invalid descriptor: missing identity"},
      {"xsave over the cap",  // refused before it is copied out of the message
       [](pb::VmDescriptor& m) { m.mutable_vcpu()->mutable_xsave()->resize(1 << 20); },
       "invalid descriptor: xsave area is 1048576 bytes (valid: 0, or 576..16384 in multiples of "
       "8)"},
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
       "invalid descriptor: 1032 fds, at most 1024 allowed"},
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

TEST(DescriptorProtoTest, IgnoresUnknownFieldsFromNewerWriters) {
  // Compatibility rule: a field added within format version 2 is ignored by older readers.
  const std::vector<uint8_t> blob = EncodeWithProtoEdit(FullDescriptor(), [](pb::VmDescriptor& m) {
    m.mutable_vcpu()->GetReflection()->MutableUnknownFields(m.mutable_vcpu())->AddVarint(99, 7);
    m.GetReflection()->MutableUnknownFields(&m)->AddLengthDelimited(1000, "future");
  });
  Result<VmDescriptor> decoded = DecodeDescriptor(blob);
  ASSERT_TRUE(decoded) << decoded.error().message();
  ExpectSameDescriptor(FullDescriptor(), *decoded);
}

TEST(DescriptorProtoTest, IgnoresVersion1FieldsInAVersion2Payload) {
  // Fields 2 and 4 (version 1's KVM vCPU and segment bases) mean nothing in version 2: a
  // version 2 payload that carries them decodes from its own fields.
  pb1::VmDescriptor v1;
  v1.mutable_vcpu()->mutable_regs()->set_rip(0x5007);
  v1.mutable_vcpu()->set_xsave(std::string(100, 'x'));
  v1.mutable_segment_bases()->set_fs_base(0x1234);
  v1.mutable_segment_bases()->set_dirty(true);
  const std::vector<uint8_t> v2 = EncodeDescriptor(FullDescriptor());
  const std::string payload(v2.begin() + 32, v2.end());
  Result<VmDescriptor> decoded = DecodeDescriptor(Wrap(payload + v1.SerializeAsString()));
  ASSERT_TRUE(decoded) << decoded.error().message();
  ExpectSameDescriptor(FullDescriptor(), *decoded);
}

}  // namespace
}  // namespace flurry
