// VM descriptor size and capture time against guest RAM size and the fraction of it touched.
// In-process (no KVM): capture = page map (mincore) + guest state + encoding; the vCPU part
// (three ioctls) is measured by flurry_bench's clone benchmarks.
#include <benchmark/benchmark.h>

#include <cstring>

#include "arch/x86_64/layout.h"
#include "snapshot/descriptor_codec.h"
#include "snapshot/state_capture.h"

namespace flurry {
namespace {

void BM_DescriptorCapture(benchmark::State& state) {
  const uint64_t ram = static_cast<uint64_t>(state.range(0)) << 20;
  const int touched_percent = static_cast<int>(state.range(1));
  auto memory = GuestMemory::Create(ram);
  if (!memory) {
    state.SkipWithError(memory.error().message().c_str());
    return;
  }
  // Touch the given fraction in 64 KiB strides spread over RAM (scattered runs).
  const uint64_t stride = 64 << 10;
  for (uint64_t offset = x86::kUserBase; offset + stride <= ram; offset += stride) {
    if ((offset / stride) % 100 < static_cast<uint64_t>(touched_percent)) {
      std::memset(memory->host_base() + offset, 1, stride);
    }
  }
  GuestState guest;
  guest.memory_map = MemoryMap(4 << 20, 8 << 20, ram - (10 << 20), ram - (8 << 20), ram);
  guest.cpu = x86::CpuSignature::OfHost();
  size_t bytes = 0;
  uint64_t present = 0;
  for (auto _ : state) {
    auto descriptor = CaptureGuest(guest, *memory);
    if (!descriptor) {
      state.SkipWithError(descriptor.error().message().c_str());
      return;
    }
    std::vector<uint8_t> encoded = EncodeDescriptor(*descriptor);
    bytes = encoded.size();
    present = descriptor->pages.PresentPages();
    benchmark::DoNotOptimize(encoded.data());
  }
  state.counters["descriptor_kib"] = bytes / 1024.0;
  state.counters["present_mib"] = present * 4096.0 / (1 << 20);
}
BENCHMARK(BM_DescriptorCapture)
    ->ArgsProduct({{64, 256, 1024, 4096}, {0, 10, 50, 100}})
    ->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace flurry

BENCHMARK_MAIN();
