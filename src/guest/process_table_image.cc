// ProcessTable as data: the image of its shared memory (a clone's or snapshot's copy), that
// image as ProcessRecords (a descriptor's) and back, and a new table made from an image.
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>

#include "guest/process_table.h"
#include "guest/process_table_layout.h"

namespace flurry {

using process_table_layout::kTableBytes;
using process_table_layout::Live;

std::vector<uint8_t> ProcessTable::Image() const {
  std::vector<uint8_t> image(kTableBytes);
  std::memcpy(image.data(), mapping_.data(), kTableBytes);
  return image;
}

Result<std::vector<ProcessRecord>> ProcessTable::RecordsOf(const std::vector<uint8_t>& image,
                                                           int32_t* last_id) {
  if (image.size() != kTableBytes) return Fail("a process table image of {} bytes", image.size());
  const auto* header = reinterpret_cast<const Header*>(image.data());
  const auto* slots = reinterpret_cast<const SharedProcess*>(image.data() + sizeof(Header));
  *last_id = header->last_id.load();
  std::vector<ProcessRecord> records;
  for (int i = 0; i < kMaxProcesses; ++i) {
    const SharedProcess& p = slots[i];
    if (!Live(p)) continue;
    const bool zombie = p.state.load() == SharedProcess::kZombie;
    records.push_back(
        ProcessRecord{.pid = p.pid.load(),
                      .ppid = p.ppid.load(),
                      .pgid = p.pgid.load(),
                      .sid = p.sid.load(),
                      .zombie = zombie,
                      .wait_status = zombie ? p.wait_status.load() : 0,
                      .signals = p.signals.load(),
                      .sender = p.sender.load(),
                      .exit_signal = p.exit_signal.load(),
                      .no_zombies = (p.flags.load() & SharedProcess::kNoZombies) != 0});
  }
  if (!Live(slots[0])) return Fail("a process table without init");
  return records;
}

Result<std::vector<uint8_t>> ProcessTable::ImageOf(const std::vector<ProcessRecord>& records,
                                                   int32_t last_id) {
  if (records.empty() || records.size() > static_cast<size_t>(kMaxProcesses)) {
    return Fail("{} processes for a process table", records.size());
  }
  std::vector<uint8_t> image(kTableBytes);  // zero: every slot free, nothing pending
  auto* header = reinterpret_cast<Header*>(image.data());
  auto* slots = reinterpret_cast<SharedProcess*>(image.data() + sizeof(Header));
  header->last_id.store(last_id);
  for (size_t i = 0; i < records.size(); ++i) {
    const ProcessRecord& r = records[i];
    SharedProcess& p = slots[i];
    p.pid.store(r.pid);
    p.ppid.store(r.ppid);
    p.pgid.store(r.pgid);
    p.sid.store(r.sid);
    p.wait_status.store(r.zombie ? r.wait_status : 0);
    p.signals.store(r.signals);
    p.sender.store(r.sender);
    p.exit_signal.store(r.exit_signal);
    p.flags.store(r.no_zombies ? SharedProcess::kNoZombies : 0);
    p.state.store(r.zombie ? SharedProcess::kZombie : SharedProcess::kRunning);
  }
  return image;
}

Result<std::pair<ProcessTable, UniqueFd>> ProcessTable::FromImage(
    const std::vector<uint8_t>& image, int32_t self_pid,
    const std::vector<std::pair<int32_t, int32_t>>& host_pids) {
  if (image.size() != kTableBytes) return Fail("a process table image of {} bytes", image.size());
  UniqueFd memfd(static_cast<int>(syscall(SYS_memfd_create, "flurry-processes", MFD_CLOEXEC)));
  if (!memfd.valid()) return FailErrno("memfd_create for a process table");
  if (ftruncate(memfd.get(), static_cast<off_t>(kTableBytes)) != 0) {
    return FailErrno("sizing a process table");
  }
  {
    Mapping mapping = FLURRY_TRY_CTX(
        Mapping::Shared(memfd.get(), kTableBytes, PROT_READ | PROT_WRITE), "a process table");
    std::memcpy(mapping.data(), image.data(), kTableBytes);
    auto* header = reinterpret_cast<Header*>(mapping.data());
    header->shutdown.store(0);
    header->gather_host_pid.store(0);
    header->gather_owner.store(0);
    auto* slots = reinterpret_cast<SharedProcess*>(mapping.data() + sizeof(Header));
    for (int i = 0; i < kMaxProcesses; ++i) {
      SharedProcess& p = slots[i];
      p.gather.store(0);
      // A fork under way when the image was taken did not happen in the clone.
      uint32_t reserved = SharedProcess::kReserved;
      p.state.compare_exchange_strong(reserved, SharedProcess::kFree);
      if (p.state.load() != SharedProcess::kRunning) continue;
      p.host_pid.store(0);
      for (const auto& [pid, host] : host_pids) {
        if (p.pid.load() == pid) p.host_pid.store(host);
      }
    }
  }
  ProcessTable table = FLURRY_TRY(Attach(memfd.get(), self_pid));
  return std::pair{std::move(table), std::move(memfd)};
}

}  // namespace flurry
