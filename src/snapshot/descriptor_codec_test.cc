#include "snapshot/descriptor_codec.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <cstdio>
#include <filesystem>
#include <random>
#include <set>

#include "arch/x86_64/layout.h"
#include "base/unique_fd.h"
#include "snapshot/descriptor_test_support.h"

// The framing (header, checksum, size caps), files, host compatibility, size and robustness.
// Field mapping: descriptor_proto_test.cc; semantic rules: descriptor_validate_test.cc; format
// version 1: descriptor_v1_test.cc; the text dump: descriptor_text_test.cc.

namespace flurry {
namespace {

using namespace descriptor_test;
using x86::kPageSize;

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
  EXPECT_NE(full.backend, empty.backend);
  EXPECT_NE(full.identity.hostname, empty.identity.hostname);
  EXPECT_NE(full.files.root_writable, empty.files.root_writable);
  EXPECT_NE(full.files.cwd, empty.files.cwd);
  EXPECT_NE(full.signals.altstack.flags, empty.signals.altstack.flags);
  EXPECT_NE(full.clock.has_value(), empty.clock.has_value());
  // Every register differs from its default and from every other register, so a register
  // written to or read from the wrong field shows up.
  std::set<uint64_t> values;
  for (const UserRegField& f : kUserRegFields) {
    EXPECT_NE(full.vcpu.regs.*f.field, empty.vcpu.regs.*f.field) << f.name;
    EXPECT_TRUE(values.insert(full.vcpu.regs.*f.field).second) << f.name << " repeats a value";
  }
  EXPECT_NE(full.vcpu.xcr0, empty.vcpu.xcr0);
  EXPECT_FALSE(full.vcpu.xsave.empty());
}

TEST(DescriptorCodecTest, RoundTripsEachRegisterInItsOwnField) {
  // One register at a time set to a marker: exactly that register comes back with it.
  for (const UserRegField& f : kUserRegFields) {
    SCOPED_TRACE(f.name);
    VmDescriptor d = FullDescriptor();
    constexpr uint64_t kMarker = 0x600d00;  // valid for every register (rip, rsp, bases)
    d.vcpu.regs.*f.field = kMarker;
    Result<VmDescriptor> decoded = DecodeDescriptor(EncodeDescriptor(d));
    ASSERT_TRUE(decoded) << decoded.error().message();
    for (const UserRegField& g : kUserRegFields) {
      EXPECT_EQ(decoded->vcpu.regs.*g.field == kMarker, &g == &f) << g.name;
    }
  }
}

TEST(DescriptorCodecTest, DefaultsAndEmptyCollectionsRoundTrip) {
  VmDescriptor d = FullDescriptor();
  d.backend.clear();
  d.vcpu.xsave.clear();  // the initial FPU state
  d.vcpu.xcr0 = 0;
  d.memory.regions.clear();
  d.files.root_host_path.reset();
  d.files.root_writable = false;
  d.files.cwd = "/";
  d.files.fds.clear();
  d.files.pipes.clear();
  d.signals = SignalState{};
  d.pages.present.clear();
  d.clone = {};
  Result<VmDescriptor> decoded = DecodeDescriptor(EncodeDescriptor(d));
  ASSERT_TRUE(decoded) << decoded.error().message();
  ExpectSameDescriptor(d, *decoded);
  EXPECT_FALSE(decoded->files.root_host_path.has_value());
  EXPECT_TRUE(decoded->vcpu.xsave.empty());
}

TEST(DescriptorCodecTest, RoundTripsTheLargestXsaveImage) {
  VmDescriptor d = FullDescriptor();
  d.vcpu.xcr0 = 0x602e7;  // with AMX (tile config and data)
  d.vcpu.xsave = XsaveImage(x86::UserCpuState::kMaxXsaveBytes, 0x602e7);
  Result<VmDescriptor> decoded = DecodeDescriptor(EncodeDescriptor(d));
  ASSERT_TRUE(decoded) << decoded.error().message();
  EXPECT_TRUE(decoded->vcpu == d.vcpu);
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
  EXPECT_EQ(Get<uint32_t>(blob, 8), 2u);
  EXPECT_EQ(Get<uint32_t>(blob, 12), 0u);
  EXPECT_EQ(Get<uint64_t>(blob, 16), blob.size() - 32);
  EXPECT_EQ(Get<uint64_t>(blob, 24), XXH64(blob.data() + 32, blob.size() - 32, 0));
  // Little-endian on the wire: the version's first byte is 2.
  EXPECT_EQ(blob[8], 2);
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
  for (uint32_t version : {0u, 4u, 0x100u, 0xffffffffu}) {
    std::vector<uint8_t> blob = EncodeDescriptor(FullDescriptor());
    Put<uint32_t>(blob, 8, version);
    EXPECT_EQ(DecodeError(blob),
              fmt::format("descriptor format version {} is not supported (this flurry reads "
                          "versions 1, 2 and 3)",
                          version));
  }
}

// A VM of several processes: its init's descriptor carries them, as format version 3, so that a
// reader of version 2 refuses it rather than restore one process of several. The version and
// the field go together.
TEST(DescriptorCodecTest, TheProcessesOfAVmComeInVersionThree) {
  const VmDescriptor original = WithProcesses(FullDescriptor());
  ASSERT_TRUE(ValidateDescriptor(original)) << ValidateDescriptor(original).error().message();
  std::vector<uint8_t> blob = EncodeDescriptor(original);
  EXPECT_EQ(DescriptorFormatVersion(blob), 3u);
  Result<VmDescriptor> decoded = DecodeDescriptor(blob);
  ASSERT_TRUE(decoded) << decoded.error().message();
  ExpectSameDescriptor(original, *decoded);
  EXPECT_EQ(EncodeDescriptor(*decoded), blob);
  EXPECT_EQ(DescriptorFormatVersion(EncodeDescriptor(FullDescriptor())), 2u);

  Put<uint32_t>(blob, 8, 2);
  EXPECT_EQ(DecodeError(blob), "a descriptor of format version 2 with the VM's processes");
  std::vector<uint8_t> single = EncodeDescriptor(FullDescriptor());
  Put<uint32_t>(single, 8, 3);
  EXPECT_EQ(DecodeError(single), "a descriptor of format version 3 without the VM's processes");
}

TEST(DescriptorCodecTest, ReportsTheHeaderFormatVersion) {
  std::vector<uint8_t> blob = EncodeDescriptor(FullDescriptor());
  EXPECT_EQ(DescriptorFormatVersion(blob), 2u);
  Put<uint32_t>(blob, 8, 1);
  EXPECT_EQ(DescriptorFormatVersion(blob), 1u);
  EXPECT_EQ(DescriptorFormatVersion({blob.data(), 31}), 0u);
  blob[0] = 'X';
  EXPECT_EQ(DescriptorFormatVersion(blob), 0u);
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
            "descriptor payload is not a valid flurry.descriptor.v2.VmDescriptor message");
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
  second.files.pipes.clear();  // fd 9, their end, is gone
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

}  // namespace
}  // namespace flurry
