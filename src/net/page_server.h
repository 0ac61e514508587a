// PageServer: serves one frozen VM — its encoded descriptor and its memory pages — to the VMs
// that restore from it over TCP (docs/protocols/page_server.md). It runs in a process of its
// own that holds the copy-on-write image (a fork of the VMM: `flurry ctl SOCK serve ADDR`).
//
// Threads: one; Serve() polls the listening socket, the owner link and every peer. A peer
// that breaks the protocol gets an error reply and is dropped; nothing a peer sends ends the
// server.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "base/error.h"
#include "base/unique_fd.h"
#include "net/page_protocol.h"
#include "net/page_push.h"

namespace flurry {

class PageServer {
 public:
  // Reads guest pages [gpa, gpa+len) of the image.
  using PageReader = std::function<Result<void>(uint64_t gpa, void* dst, uint64_t len)>;

  struct Stats {
    uint64_t refused = 0;  // peers dropped for a missing or wrong key
    uint64_t connections = 0;
    uint64_t requests = 0;
    uint64_t pages_sent = 0;            // zero pages included
    uint64_t pages_left_to_pushes = 0;  // kPagesUnlessPushed answered "pushed"
    uint64_t zero_pages_elided = 0;     // all-zero pages answered by zero_mask, not sent
    uint64_t bytes_sent = 0;
    uint64_t file_bytes_sent = 0;       // file contents (kFileRead payloads)
    uint64_t push_losses_reported = 0;  // pushes the clients said they lost (push_losses)
  };

  // The files of the served VM's --dir (page protocol 3, "Files"). Without one, file requests
  // get ENOENT.
  struct FileService {
    // The encoded file tree (guest/file_tree.h); asked for on the first request and kept.
    std::function<Result<std::vector<uint8_t>>()> tree;
    // Up to `max` bytes of tree entry `index` from `offset` (0 at the end of the file).
    std::function<Result<uint32_t>(uint32_t index, uint64_t offset, uint8_t* out, uint32_t max)>
        read;
  };

  static Result<PageServer> Listen(const HostPort& address);
  const HostPort& address() const { return address_; }

  // Serves until `owner_fd` reports hang-up (its other end closed: the VM that made this
  // snapshot is gone) and no peer is connected any more: the image lives as long as anyone
  // can still fault on it.
  // A peer must first say hello with `key`; one that does not (or with another key) gets
  // EACCES and is dropped.
  // With `pushes`, every page reply is also pushed to its multicast group (net/page_push.h),
  // which peers learn with PageOp::kPushGroup.
  Result<Stats> Serve(const std::vector<uint8_t>& descriptor, uint64_t page_count,
                      const PageReader& read_pages, int owner_fd, const PageKey& key,
                      const FileService* files = nullptr, PushSender* pushes = nullptr);

 private:
  explicit PageServer(UniqueFd listener, HostPort address)
      : listener_(std::move(listener)), address_(std::move(address)) {}
  UniqueFd listener_;
  HostPort address_;
};

}  // namespace flurry
