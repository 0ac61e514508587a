// The page protocol's "Files" (docs/protocols/page_server.md) on both ends, bridging the
// network code (net/) and the guest's files (guest/):
//  * ServeFilesOf: the page server's FileService for a VM's --dir, in the page server process;
//  * PageServerFiles: a remote clone's FileSource, one connection of its own to that server
//    (the memory on demand thread has the other).
#pragma once

#include <memory>

#include "guest/host_dir.h"
#include "guest/lazy_files.h"
#include "net/page_client.h"
#include "net/page_server.h"

namespace flurry {

// Serves the tree and the regular files under `root`, which must outlive the service. Reads go
// through the root's confinement (a file is opened as its guest path, never following a
// symlink at the end), so a peer names only what the guest itself could open.
PageServer::FileService ServeFilesOf(const HostDir& root);

class PageServerFiles : public FileSource {
 public:
  explicit PageServerFiles(std::unique_ptr<PageClient> client) : client_(std::move(client)) {}
  Result<std::vector<uint8_t>> FetchFileTree() override { return client_->FetchFileTree(); }
  Result<uint32_t> ReadFile(uint32_t index, uint64_t offset, uint8_t* out, uint32_t max) override {
    return client_->ReadFile(index, offset, out, max);
  }
  std::string Describe() const override { return client_->Describe(); }

 private:
  std::unique_ptr<PageClient> client_;
};

}  // namespace flurry
