#include "net/page_server.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <optional>

#include "net/tcp.h"

namespace flurry {
namespace {

constexpr std::chrono::milliseconds kPeerTimeout{5000};
constexpr size_t kMaxPeers = 1024;
// A peer must have said hello (all of it) within this long of connecting; at most this many may
// be waiting to. Until then the socket is not readable (SO_RCVLOWAT) before the whole hello is
// there, so a peer trickling bytes never holds the (single) serving thread.
constexpr auto kHelloDeadline = std::chrono::seconds(2);
constexpr size_t kMaxUnauthenticated = 64;
constexpr int kHelloBytes = static_cast<int>(sizeof(PageRequest) + kPageKeyBytes);

PageReplyHeader ReplyTo(const PageRequest& request, uint16_t status) {
  PageReplyHeader h{};
  h.magic = kPageProtocolMagic;
  h.version = kPageProtocolVersion;
  h.status = status;
  h.first_page = request.first_page;
  h.count = status == 0 ? request.count : 0;
  return h;
}

bool IsZeroPage(const uint8_t* page) {
  const auto* words = reinterpret_cast<const uint64_t*>(page);
  uint64_t any = 0;
  for (size_t i = 0; i < 4096 / sizeof(uint64_t); ++i) any |= words[i];
  return any == 0;
}

}  // namespace

Result<PageServer> PageServer::Listen(const HostPort& address) {
  HostPort bound;
  UniqueFd fd = FLURRY_TRY_CTX(ListenTcp(address, &bound), "starting the page server");
  return PageServer(std::move(fd), std::move(bound));
}

Result<PageServer::Stats> PageServer::Serve(const std::vector<uint8_t>& descriptor,
                                            uint64_t page_count, const PageReader& read_pages,
                                            int owner_fd, const PageKey& key,
                                            const FileService* files, PushSender* pushes) {
  Stats stats;
  const auto proof = key.HelloProof();
  if (!proof) return Fail("page server: computing the hello proof");
  PageKey expected;  // what a peer's hello must carry (compared in constant time)
  expected.bytes = *proof;
  struct Peer {
    UniqueFd fd;
    bool authenticated = false;
    std::chrono::steady_clock::time_point accepted;
    uint64_t id = 0;  // names it to the push sender's pacer
  };
  uint64_t peers_accepted = 0;
  std::vector<Peer> peers;
  bool owner_gone = false;
  std::vector<uint8_t> payload(kMaxPagesPerRequest * 4096);
  std::optional<std::vector<uint8_t>> file_tree;  // made on the first request
  std::vector<uint8_t> file_chunk;                // kMaxFileReadBytes, once files are read
  const PushGroupWire push_group = pushes ? EncodePushGroup(pushes->group()) : PushGroupWire{};
  while (!(owner_gone && peers.empty())) {
    // Peers that have not said hello in time go.
    const auto now = std::chrono::steady_clock::now();
    size_t waiting = 0;
    std::erase_if(peers, [&](const Peer& p) {
      if (p.authenticated) return false;
      if (now - p.accepted > kHelloDeadline) {
        ++stats.refused;
        return true;
      }
      ++waiting;
      return false;
    });
    std::vector<pollfd> fds;
    fds.push_back({listener_.get(), POLLIN, 0});
    fds.push_back({owner_gone ? -1 : owner_fd, POLLIN, 0});
    for (const Peer& p : peers) fds.push_back({p.fd.get(), POLLIN, 0});
    if (poll(fds.data(), fds.size(), waiting > 0 ? 250 : -1) < 0) {
      if (errno == EINTR) continue;
      return FailErrno("page server: poll");
    }
    if (fds[1].revents != 0) {
      char byte;
      if (read(owner_fd, &byte, 1) <= 0) owner_gone = true;
    }
    // Peers first (indexes shift when one is dropped: walk backwards).
    for (size_t i = fds.size(); i-- > 2;) {
      if (fds[i].revents == 0) continue;
      const int fd = fds[i].fd;
      PageRequest request{};
      bool keep = true;
      if (!ReadFull(fd, &request, sizeof request)) {
        keep = false;
      } else {
        ++stats.requests;
        PageReplyHeader header{};
        const uint8_t* body = nullptr;
        if (request.magic != kPageProtocolMagic || request.version != kPageProtocolVersion) {
          header = ReplyTo(request, EPROTO);
          keep = false;
        } else if (request.op == static_cast<uint16_t>(PageOp::kHello)) {
          uint8_t offered[kPageKeyBytes];
          const bool matches = ReadFull(fd, offered, sizeof offered) && expected.Matches(offered);
          header = ReplyTo(request, matches ? 0 : EACCES);
          header.count = 0;
          peers[i - 2].authenticated = matches;
          const int one = 1;  // from now on a request is readable from its first byte
          if (matches) setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &one, sizeof one);
          if (!matches) {
            ++stats.refused;
            keep = false;
          }
        } else if (!peers[i - 2].authenticated) {
          header = ReplyTo(request, EACCES);  // nothing before the key
          ++stats.refused;
          keep = false;
        } else if (request.push_losses != 0 &&
                   request.op != static_cast<uint16_t>(PageOp::kPages) &&
                   request.op != static_cast<uint16_t>(PageOp::kPagesUnlessPushed)) {
          header = ReplyTo(request, EINVAL);
        } else if (request.op == static_cast<uint16_t>(PageOp::kDescriptor)) {
          header = ReplyTo(request, 0);
          header.count = 0;
          header.payload_bytes = static_cast<uint32_t>(descriptor.size());
          body = descriptor.data();
        } else if (request.op == static_cast<uint16_t>(PageOp::kPages) ||
                   request.op == static_cast<uint16_t>(PageOp::kPagesUnlessPushed)) {
          if (request.push_losses != 0) {
            stats.push_losses_reported += request.push_losses;
            if (pushes != nullptr) pushes->NoteLosses(peers[i - 2].id, request.push_losses);
          }
          if (request.count == 0 || request.count > kMaxPagesPerRequest ||
              request.first_page >= page_count || request.count > page_count - request.first_page) {
            header = ReplyTo(request, ERANGE);
          } else if (request.op == static_cast<uint16_t>(PageOp::kPagesUnlessPushed) &&
                     pushes != nullptr &&
                     pushes->PushedWithin(request.first_page, request.count,
                                          pushes->pushed_reply_window_ms())) {
            // Every page went to the group a moment ago (another clone asked): the asker takes
            // them from there.
            header = ReplyTo(request, 0);
            header.count = 0;
            stats.pages_left_to_pushes += request.count;
          } else if (auto got = read_pages(request.first_page * 4096, payload.data(),
                                           uint64_t{request.count} * 4096);
                     !got) {
            header = ReplyTo(request, static_cast<uint16_t>(got.error().code_or(EIO)));
          } else {
            // All-zero pages (populated but never written to non-zero, e.g. the rest of a
            // transparent huge page) are not sent: the payload is compacted around them.
            header = ReplyTo(request, 0);
            uint32_t kept = 0;
            for (uint32_t i = 0; i < request.count; ++i) {
              const uint8_t* page = payload.data() + uint64_t{i} * 4096;
              if (IsZeroPage(page)) {
                header.zero_mask |= 1ULL << i;
                continue;
              }
              if (kept != i) std::memmove(payload.data() + uint64_t{kept} * 4096, page, 4096);
              ++kept;
            }
            header.payload_bytes = kept * 4096;
            body = payload.data();
            stats.pages_sent += request.count;
            stats.zero_pages_elided += request.count - kept;
          }
        } else if (request.op == static_cast<uint16_t>(PageOp::kPushGroup)) {
          if (pushes == nullptr) {
            header = ReplyTo(request, ENOENT);
          } else {
            header = ReplyTo(request, 0);
            header.count = 0;
            header.payload_bytes = sizeof push_group;
            body = reinterpret_cast<const uint8_t*>(&push_group);
            pushes->AddReceiver(peers[i - 2].id);
          }
        } else if (request.op == static_cast<uint16_t>(PageOp::kFileTree)) {
          if (files == nullptr) {
            header = ReplyTo(request, ENOENT);
          } else if (!file_tree) {
            auto tree = files->tree();
            if (!tree) {
              header = ReplyTo(request, static_cast<uint16_t>(tree.error().code_or(EIO)));
            } else if (tree->size() > kMaxFileTreeReplyBytes) {
              header = ReplyTo(request, E2BIG);
            } else {
              file_tree = std::move(*tree);
            }
          }
          if (file_tree) {
            header = ReplyTo(request, 0);
            header.payload_bytes = static_cast<uint32_t>(file_tree->size());
            body = file_tree->data();
          }
        } else if (request.op == static_cast<uint16_t>(PageOp::kFileRead)) {
          if (files == nullptr) {
            header = ReplyTo(request, ENOENT);
          } else {
            file_chunk.resize(kMaxFileReadBytes);
            auto got = files->read(request.count, request.first_page, file_chunk.data(),
                                   kMaxFileReadBytes);
            if (!got || *got > kMaxFileReadBytes) {
              header =
                  ReplyTo(request, static_cast<uint16_t>(got ? EIO : got.error().code_or(EIO)));
            } else {
              header = ReplyTo(request, 0);
              header.payload_bytes = *got;
              body = file_chunk.data();
              stats.file_bytes_sent += *got;
            }
          }
        } else {
          header = ReplyTo(request, EOPNOTSUPP);
        }
        header.checksum = PayloadChecksum(body, body ? header.payload_bytes : 0);
        if (!WriteFull(fd, &header, sizeof header) ||
            (body != nullptr && !WriteFull(fd, body, header.payload_bytes))) {
          keep = false;
        }
        stats.bytes_sent += sizeof header + (body ? header.payload_bytes : 0);
        // The other clones get the pages too (after the asker: its fault waits for them).
        if (pushes != nullptr && header.status == 0 && header.count > 0 &&
            (request.op == static_cast<uint16_t>(PageOp::kPages) ||
             request.op == static_cast<uint16_t>(PageOp::kPagesUnlessPushed))) {
          pushes->Push(request.first_page, request.count, header.zero_mask, payload.data());
        }
      }
      if (!keep) {
        if (pushes != nullptr) pushes->RemoveReceiver(peers[i - 2].id);
        peers.erase(peers.begin() + static_cast<std::ptrdiff_t>(i - 2));
      }
    }
    if (fds[0].revents & POLLIN) {
      UniqueFd peer(accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
      const size_t unauthenticated = static_cast<size_t>(std::count_if(
          peers.begin(), peers.end(), [](const Peer& p) { return !p.authenticated; }));
      if (peer.valid() && peers.size() < kMaxPeers && unauthenticated < kMaxUnauthenticated &&
          ConfigureTcp(peer.get(), kPeerTimeout) &&
          setsockopt(peer.get(), SOL_SOCKET, SO_RCVLOWAT, &kHelloBytes, sizeof kHelloBytes) == 0) {
        ++stats.connections;
        peers.push_back(
            Peer{std::move(peer), false, std::chrono::steady_clock::now(), ++peers_accepted});
      }
    }
  }
  return stats;
}

}  // namespace flurry
