#include "net/page_push.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <cstring>
#include <map>
#include <optional>
#include <thread>
#include <vector>

#include "base/unique_fd.h"
#include "net/page_client.h"
#include "net/page_server.h"

namespace flurry {
namespace {

constexpr uint64_t kPages = 64;
constexpr uint64_t kPage = 4096;

in_addr Loopback() {
  in_addr a{};
  a.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

// A page's bytes: recognisable per page, never all zero.
std::vector<uint8_t> PageBytes(uint64_t page) {
  std::vector<uint8_t> bytes(kPage);
  for (uint64_t i = 0; i < kPage; ++i) bytes[i] = static_cast<uint8_t>(page * 13 + i % 251 + 1);
  return bytes;
}

// Sends a raw datagram to the group `times` times, as anyone on the network could; how many
// the socket took.
int SendToGroup(const PushGroup& group, const void* data, size_t size, int times = 1) {
  const int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  in_addr lo = Loopback();
  setsockopt(fd, IPPROTO_IP, IP_MULTICAST_IF, &lo, sizeof lo);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_addr = group.group;
  to.sin_port = htons(group.port);
  int sent = 0;
  for (int i = 0; i < times; ++i) {
    sent += sendto(fd, data, size, 0, reinterpret_cast<sockaddr*>(&to), sizeof to) ==
            static_cast<ssize_t>(size);
  }
  close(fd);
  return sent;
}

// Sends `count` datagrams of 60000 bytes to `group` at once: more than a receiver's socket
// buffer holds (8 MiB asked for where the process may force it, which the kernel doubles;
// else the system's cap).
void Flood(const PushGroup& group, int count) {
  const std::vector<uint8_t> junk(60000, 0x5a);
  EXPECT_EQ(SendToGroup(group, junk.data(), junk.size(), count), count);
}

// A sender and a receiver joined over the loopback interface.
class PagePushTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // (A page is pushed again only a minute later: the tests push each page once.)
    auto sender = PushSender::Open("127.0.0.1", 40000 + static_cast<uint16_t>(getpid() % 20000),
                                   key_, kPages, std::chrono::minutes(1));
    ASSERT_TRUE(sender.has_value()) << sender.error().message();
    sender_ = std::move(*sender);
    auto receiver = PushReceiver::Join(sender_->group(), Loopback(), key_, kPages);
    ASSERT_TRUE(receiver.has_value()) << receiver.error().message();
    receiver_ = std::move(*receiver);
  }

  // Every push waiting (within a second of the first): page -> its bytes.
  std::map<uint64_t, std::vector<uint8_t>> TakeAll(const PagePushes::WantedPages& wanted) {
    std::map<uint64_t, std::vector<uint8_t>> pages;
    pollfd p{receiver_->fd(), POLLIN, 0};
    while (poll(&p, 1, 500) == 1) {
      std::optional<PushedPages> pushed;
      while (receiver_->TakeNext(wanted, &pushed)) {
        if (!pushed) continue;
        const uint8_t* next = pushed->payload;
        for (uint32_t i = 0; i < pushed->count; ++i) {
          if (pushed->zero_mask & (1ULL << i)) {
            pages[pushed->first_page + i] = std::vector<uint8_t>(kPage, 0);
          } else {
            pages[pushed->first_page + i] = std::vector<uint8_t>(next, next + kPage);
            next += kPage;
          }
        }
      }
    }
    return pages;
  }

  // Sends a raw datagram to the group, as anyone on the network could.
  void SendRaw(const void* data, size_t size) {
    EXPECT_EQ(SendToGroup(sender_->group(), data, size), 1);
  }

  PageKey key_ = *PageKey::Random();
  std::unique_ptr<PushSender> sender_;
  std::unique_ptr<PushReceiver> receiver_;
};

const PagePushes::WantedPages kAll = [](uint64_t, uint32_t) { return true; };

TEST(PushGroupTest, EncodesAndChecksTheGroup) {
  PushGroup group;
  inet_pton(AF_INET, "239.255.3.4", &group.group);
  group.port = 7070;
  group.session = 0x1234;
  const PushGroupWire wire = EncodePushGroup(group);
  auto back = DecodePushGroup(reinterpret_cast<const uint8_t*>(&wire), sizeof wire);
  ASSERT_TRUE(back.has_value()) << back.error().message();
  EXPECT_EQ(back->ToString(), "239.255.3.4:7070");
  EXPECT_EQ(back->session, 0x1234u);
  EXPECT_EQ(back->ttl, 1);
  EXPECT_FALSE(DecodePushGroup(reinterpret_cast<const uint8_t*>(&wire), sizeof wire - 1));
  PushGroupWire bad = wire;
  inet_pton(AF_INET, "10.0.0.1", &bad.group);  // not a multicast address
  EXPECT_FALSE(DecodePushGroup(reinterpret_cast<const uint8_t*>(&bad), sizeof bad));
  bad = wire;
  bad.session = 0;
  EXPECT_FALSE(DecodePushGroup(reinterpret_cast<const uint8_t*>(&bad), sizeof bad));
  bad = wire;
  bad.port = 0;
  EXPECT_FALSE(DecodePushGroup(reinterpret_cast<const uint8_t*>(&bad), sizeof bad));
}

TEST_F(PagePushTest, PushedPagesReachTheGroupWithTheirZeroPages) {
  // A reply of 20 pages from page 5, pages 6 and 17 all zero (left out of the payload): two
  // datagrams (15 pages and 5).
  const uint64_t zero_mask = (1ULL << 1) | (1ULL << 12);
  std::vector<uint8_t> payload;
  for (uint64_t i = 0; i < 20; ++i) {
    if (zero_mask & (1ULL << i)) continue;
    const auto bytes = PageBytes(5 + i);
    payload.insert(payload.end(), bytes.begin(), bytes.end());
  }
  sender_->Push(5, 20, zero_mask, payload.data());
  EXPECT_EQ(sender_->stats().datagrams, 2u);
  EXPECT_EQ(sender_->stats().pages, 20u);
  const auto pages = TakeAll(kAll);
  ASSERT_EQ(pages.size(), 20u);
  for (uint64_t p = 5; p < 25; ++p) {
    ASSERT_TRUE(pages.count(p)) << p;
    const bool zero = (zero_mask >> (p - 5)) & 1;
    EXPECT_EQ(pages.at(p), zero ? std::vector<uint8_t>(kPage, 0) : PageBytes(p)) << p;
  }
  EXPECT_EQ(receiver_->rejected(), 0u);
  EXPECT_GT(receiver_->bytes_received(), 18 * kPage);
}

TEST_F(PagePushTest, PagesPushedAMomentAgoAreNotPushedAgain) {
  const auto bytes = PageBytes(3);
  sender_->Push(3, 1, 0, bytes.data());
  sender_->Push(3, 1, 0, bytes.data());
  EXPECT_EQ(sender_->stats().datagrams, 1u);
  EXPECT_EQ(sender_->stats().suppressed, 1u);
  EXPECT_EQ(TakeAll(kAll).size(), 1u);
  // Pages out of the image are never pushed.
  sender_->Push(kPages, 1, 0, bytes.data());
  EXPECT_EQ(sender_->stats().datagrams, 1u);
}

// Pushes go no faster than the pacer lets them (net/push_pacer.h): of 32 MiB pushed at once,
// its burst goes out and the rest is counted as paced; a millisecond later, a millisecond's
// worth more. (The sender's clock is the test's: a slow host changes nothing.)
TEST(PushSenderTest, PushesOverThePacersRateAreNotSent) {
  constexpr uint64_t kImagePages = 8192;
  const PageKey key = *PageKey::Random();
  auto sender = PushSender::Open("127.0.0.1", 40000 + static_cast<uint16_t>(getpid() % 20000), key,
                                 kImagePages, std::chrono::minutes(1));
  ASSERT_TRUE(sender.has_value()) << sender.error().message();
  int64_t now_ns = 1'000'000'000;
  (*sender)->SetClockForTesting([&now_ns] { return now_ns; });
  std::vector<uint8_t> reply(64 * kPage);
  for (uint64_t i = 0; i < reply.size(); ++i) reply[i] = static_cast<uint8_t>(i % 253 + 1);
  const auto& stats = (*sender)->stats();
  for (uint64_t page = 0; page < kImagePages / 2; page += 64) {
    (*sender)->Push(page, 64, 0, reply.data());
  }
  ASSERT_EQ(stats.dropped, 0u) << "the socket took every datagram offered";
  EXPECT_EQ(stats.pages + stats.paced, kImagePages / 2);
  EXPECT_LE(static_cast<double>(stats.bytes), PushPacer::kMaxBurstBytes);
  EXPECT_GT(static_cast<double>(stats.bytes), PushPacer::kMaxBurstBytes - 2 * 61496);
  const uint64_t burst = stats.bytes;
  now_ns += 1'000'000;
  for (uint64_t page = kImagePages / 2; page < kImagePages; page += 64) {
    (*sender)->Push(page, 64, 0, reply.data());
  }
  ASSERT_EQ(stats.dropped, 0u);
  EXPECT_EQ(stats.pages + stats.paced, kImagePages);
  // 1 ms at 512 MiB/s (and what the burst left): about 0.5 MiB.
  const double more = static_cast<double>(stats.bytes - burst);
  EXPECT_LE(more, PushPacer::kStartRate / 1000 + 2 * 61496);
  EXPECT_GT(more, PushPacer::kStartRate / 1000 - 2 * 61496);
}

// Pushes that arrive at a full socket are lost; the receiver counts them (SO_MEMINFO).
TEST_F(PagePushTest, PushesTheSocketHadNoRoomForAreCountedLost) {
  EXPECT_EQ(receiver_->lost(), 0u);
  Flood(sender_->group(), 600);
  std::optional<PushedPages> pushed;
  EXPECT_TRUE(receiver_->TakeNext(kAll, &pushed));  // (junk: rejected)
  EXPECT_GT(receiver_->lost(), 0u);
  EXPECT_LT(receiver_->lost(), 600u);
}

TEST_F(PagePushTest, SaysWhichPagesWentOutAMomentAgo) {
  const auto bytes = PageBytes(3);
  // (Windows of minutes: a slow host takes no time into account here.)
  constexpr uint32_t kLong = 600000;
  EXPECT_FALSE(sender_->PushedWithin(3, 1, kLong)) << "never pushed";
  sender_->Push(3, 1, 0, bytes.data());
  EXPECT_TRUE(sender_->PushedWithin(3, 1, kLong));
  EXPECT_FALSE(sender_->PushedWithin(3, 2, kLong)) << "page 4 was not";
  EXPECT_FALSE(sender_->PushedWithin(3, 1, 0)) << "not within no time";
  EXPECT_FALSE(sender_->PushedWithin(kPages, 1, kLong)) << "outside the image";
}

TEST_F(PagePushTest, PushesOfPagesNoLongerWantedAreDropped) {
  std::vector<uint8_t> payload;
  for (uint64_t p = 0; p < 30; ++p) {
    const auto bytes = PageBytes(p);
    payload.insert(payload.end(), bytes.begin(), bytes.end());
  }
  sender_->Push(0, 30, 0, payload.data());
  // Only pages from 15 on are wanted: the first datagram (pages 0..14) is dropped unread.
  const auto pages = TakeAll([](uint64_t first, uint32_t count) { return first + count > 15; });
  EXPECT_EQ(pages.size(), 15u);
  EXPECT_EQ(pages.begin()->first, 15u);
  EXPECT_EQ(receiver_->rejected(), 0u);
}

TEST_F(PagePushTest, ForgedMalformedAndForeignDatagramsAreRejected) {
  // A genuine datagram, captured by a second receiver, then altered.
  auto spy = PushReceiver::Join(sender_->group(), Loopback(), key_, kPages);
  ASSERT_TRUE(spy.has_value());
  const auto bytes = PageBytes(7);
  sender_->Push(7, 1, 0, bytes.data());
  std::vector<uint8_t> genuine(sizeof(PushHeader) + kPage);
  pollfd p{(*spy)->fd(), POLLIN, 0};
  ASSERT_EQ(poll(&p, 1, 2000), 1);
  ASSERT_EQ(recv((*spy)->fd(), genuine.data(), genuine.size(), 0),
            static_cast<ssize_t>(genuine.size()));
  EXPECT_EQ(TakeAll(kAll).size(), 1u);  // the genuine one
  ASSERT_EQ(receiver_->rejected(), 0u);

  PushHeader header;
  std::memcpy(&header, genuine.data(), sizeof header);
  // 1. The payload changed: the tag no longer matches.
  auto forged = genuine;
  forged[sizeof header + 100] ^= 1;
  SendRaw(forged.data(), forged.size());
  // 2. The page number changed (the header is covered too).
  forged = genuine;
  PushHeader moved = header;
  moved.first_page = 8;
  std::memcpy(forged.data(), &moved, sizeof moved);
  SendRaw(forged.data(), forged.size());
  // 3. Another server's session.
  forged = genuine;
  PushHeader other = header;
  other.session ^= 1;
  std::memcpy(forged.data(), &other, sizeof other);
  SendRaw(forged.data(), forged.size());
  // 4. Too short, a wrong size, pages past the image, too many pages.
  SendRaw(genuine.data(), 10);
  SendRaw(genuine.data(), genuine.size() - 1);
  PushHeader past = header;
  past.first_page = kPages;
  SendRaw(&past, sizeof past);
  PushHeader many = header;
  many.count = kMaxPagesPerPush + 1;
  many.zero_mask = (1u << many.count) - 1;
  many.payload_bytes = 0;
  SendRaw(&many, sizeof many);
  // 5. A tag that is not the key's.
  forged = genuine;
  forged[sizeof header - 1] ^= 0x80;  // the tag's last byte
  SendRaw(forged.data(), forged.size());
  // 6. Malformed but tagged with the right key (as a buggy sender would): the structure is
  // checked on its own, not only through the tag.
  const PushKey push_key = *DerivePushKey(key_, sender_->group().session);
  auto sealed = [&](PushHeader h, size_t payload_bytes) {
    std::vector<uint8_t> d(sizeof h + payload_bytes, 0x5a);
    h.tag = *PushTag(push_key, h, d.data() + sizeof h, payload_bytes);
    std::memcpy(d.data(), &h, sizeof h);
    SendRaw(d.data(), d.size());
  };
  PushHeader h = header;
  h.count = kMaxPagesPerPush + 1;  // too many pages (all but one zero: a datagram that fits)
  h.zero_mask = (1u << h.count) - 2;
  h.payload_bytes = kPage;
  sealed(h, kPage);
  h = header;
  h.zero_mask = 1u << 3;  // a zero page past `count`
  sealed(h, kPage);
  h = header;
  h.first_page = kPages - 1;  // running past the image
  h.count = 2;
  h.payload_bytes = 2 * kPage;
  sealed(h, 2 * kPage);
  h = header;
  h.payload_bytes = 2 * kPage;  // more payload than pages
  sealed(h, 2 * kPage);

  EXPECT_TRUE(TakeAll(kAll).empty()) << "a forged or malformed push was taken";
  EXPECT_EQ(receiver_->rejected(), 12u);
  // A replayed genuine datagram is harmless (the image never changes) and taken again.
  SendRaw(genuine.data(), genuine.size());
  const auto replayed = TakeAll(kAll);
  ASSERT_EQ(replayed.size(), 1u);
  EXPECT_EQ(replayed.at(7), bytes);
}

// kPages recognisable pages (PageBytes).
std::vector<uint8_t> Image() {
  std::vector<uint8_t> image(kPages * kPage);
  for (uint64_t p = 0; p < kPages; ++p) {
    const auto bytes = PageBytes(p);
    std::memcpy(image.data() + p * kPage, bytes.data(), kPage);
  }
  return image;
}

// A page server of `image` on the loopback interface, serving in a thread from Run (pushing
// through a sender, or not) until Stop.
class ImageServer {
 public:
  explicit ImageServer(std::vector<uint8_t> image) : image_(std::move(image)) {
    auto server = PageServer::Listen({"127.0.0.1", 0});
    EXPECT_TRUE(server.has_value()) << server.error().message();
    if (!server) return;
    address_ = PageServerAddress{server->address(), key_};
    server_.emplace(std::move(*server));
    int owner[2];
    EXPECT_EQ(pipe2(owner, O_CLOEXEC), 0);
    owner_read_.Reset(owner[0]);
    owner_write_.Reset(owner[1]);
  }
  ~ImageServer() { Stop(); }

  bool listening() const { return server_.has_value(); }
  const PageServerAddress& address() const { return address_; }
  const PageKey& key() const { return key_; }
  const std::vector<uint8_t>& image() const { return image_; }

  void Run(PushSender* pushes) {
    thread_ = std::thread([this, pushes, s = std::move(*server_)]() mutable {
      auto served = s.Serve(
          {1, 2, 3}, kPages,
          [this](uint64_t gpa, void* dst, uint64_t len) -> Result<void> {
            std::memcpy(dst, image_.data() + gpa, len);
            return {};
          },
          owner_read_.get(), key_, nullptr, pushes);
      if (served) stats_ = *served;
    });
  }
  // Ends the server (its owner gone) once its clients have left; what it counted.
  PageServer::Stats Stop() {
    owner_write_.Reset();
    if (thread_.joinable()) thread_.join();
    return stats_;
  }

 private:
  std::vector<uint8_t> image_;
  PageKey key_ = *PageKey::Random();
  PageServerAddress address_;
  std::optional<PageServer> server_;
  UniqueFd owner_read_, owner_write_;
  std::thread thread_;
  PageServer::Stats stats_;
};

// A push sender for `server`'s port (its own "moment ago" for pages answered "pushed").
std::unique_ptr<PushSender> SenderFor(const ImageServer& server,
                                      std::chrono::milliseconds pushed_reply_window =
                                          std::chrono::milliseconds(kPushedReplyWindowMs)) {
  auto sender = PushSender::Open("127.0.0.1", server.address().server.port, server.key(), kPages,
                                 std::chrono::milliseconds(20), pushed_reply_window);
  EXPECT_TRUE(sender.has_value()) << sender.error().message();
  return sender ? std::move(*sender) : nullptr;
}

// A page server with pushes: what one client asks for reaches another that joined its group.
TEST(PageServerPushTest, OneClientsPagesReachTheOthersThatJoined) {
  std::vector<uint8_t> image = Image();
  std::memset(image.data() + 9 * kPage, 0, kPage);  // an all-zero page
  ImageServer server(image);
  ASSERT_TRUE(server.listening());
  auto sender = SenderFor(server);
  ASSERT_NE(sender, nullptr);
  server.Run(sender.get());
  {
    auto asker = PageClient::Connect(server.address());
    auto listener = PageClient::Connect(server.address());
    ASSERT_TRUE(asker.has_value() && listener.has_value());
    auto pushes = (*listener)->JoinPushes(kPages);
    ASSERT_TRUE(pushes.has_value()) << pushes.error().message();
    ASSERT_NE(*pushes, nullptr) << "the server pushes";
    std::vector<uint8_t> got(20 * kPage);
    ASSERT_TRUE((*asker)->Fetch(4, 20, got.data()).has_value());
    EXPECT_EQ(std::memcmp(got.data(), image.data() + 4 * kPage, got.size()), 0);
    // The listener gets the same 20 pages without asking.
    std::map<uint64_t, std::vector<uint8_t>> pages;
    pollfd p{(*pushes)->fd(), POLLIN, 0};
    while (pages.size() < 20 && poll(&p, 1, 2000) == 1) {
      std::optional<PushedPages> pushed;
      while ((*pushes)->TakeNext(kAll, &pushed)) {
        if (!pushed) continue;
        const uint8_t* next = pushed->payload;
        for (uint32_t i = 0; i < pushed->count; ++i) {
          const bool zero = (pushed->zero_mask >> i) & 1;
          pages[pushed->first_page + i] =
              zero ? std::vector<uint8_t>(kPage, 0) : std::vector<uint8_t>(next, next + kPage);
          if (!zero) next += kPage;
        }
      }
    }
    ASSERT_EQ(pages.size(), 20u);
    for (const auto& [page, bytes] : pages) {
      EXPECT_EQ(std::memcmp(bytes.data(), image.data() + page * kPage, kPage), 0) << page;
    }
  }
  server.Stop();
  EXPECT_EQ(sender->stats().pages, 20u);
}

// kPagesUnlessPushed: pages another client made the server push a moment ago are answered
// "pushed"; others, and every page of a server that pushes none, come as for kPages.
TEST(PageServerPushTest, PagesPushedAMomentAgoAreAnsweredPushed) {
  for (bool pushing : {true, false}) {
    ImageServer server(Image());
    ASSERT_TRUE(server.listening());
    const std::vector<uint8_t>& image = server.image();
    // "A moment ago": a minute here, so that a slow host answers the same.
    std::unique_ptr<PushSender> sender;
    if (pushing) {
      sender = SenderFor(server, std::chrono::minutes(1));
      ASSERT_NE(sender, nullptr);
    }
    server.Run(sender.get());
    // (In a lambda: a failed assertion returns from it, and the server is still stopped.)
    [&] {
      auto asker = PageClient::Connect(server.address());
      auto other = PageClient::Connect(server.address());
      ASSERT_TRUE(asker.has_value() && other.has_value());
      std::vector<uint8_t> got(20 * kPage);
      ASSERT_TRUE((*asker)->Fetch(4, 20, got.data()).has_value());
      std::vector<uint8_t> again(20 * kPage, 0xee);
      ASSERT_TRUE((*other)->SendUnlessPushed(4, 20).has_value());
      ASSERT_TRUE((*other)->SendUnlessPushed(30, 4).has_value());
      ASSERT_TRUE((*other)->Send(4, 2).has_value());
      auto first = (*other)->ReceiveOrPushed(4, 20, again.data());
      ASSERT_TRUE(first.has_value()) << first.error().message();
      EXPECT_EQ(*first, !pushing) << "pages 4..23 were pushed a moment ago";
      if (pushing) {
        EXPECT_EQ(again, std::vector<uint8_t>(20 * kPage, 0xee)) << "nothing written";
      } else {
        EXPECT_EQ(std::memcmp(again.data(), image.data() + 4 * kPage, again.size()), 0);
      }
      auto second = (*other)->ReceiveOrPushed(30, 4, again.data());
      ASSERT_TRUE(second.has_value()) << second.error().message();
      EXPECT_TRUE(*second) << "pages 30..33 were not pushed";
      EXPECT_EQ(std::memcmp(again.data(), image.data() + 30 * kPage, 4 * kPage), 0);
      auto third = (*other)->Receive(4, 2, again.data());  // kPages: always the pages
      ASSERT_TRUE(third.has_value()) << third.error().message();
      EXPECT_EQ(std::memcmp(again.data(), image.data() + 4 * kPage, 2 * kPage), 0);
    }();
    EXPECT_EQ(server.Stop().pages_left_to_pushes, pushing ? 20u : 0u);
  }
}

// A client that lost pushes says so with its next page request, and the server pushes slower.
TEST(PageServerPushTest, LostPushesAreReportedAndSlowTheServersPushes) {
  ImageServer server(Image());
  ASSERT_TRUE(server.listening());
  auto sender = SenderFor(server);
  ASSERT_NE(sender, nullptr);
  server.Run(sender.get());
  uint64_t lost = 0;
  [&] {
    auto client = PageClient::Connect(server.address());
    ASSERT_TRUE(client.has_value());
    auto pushes = (*client)->JoinPushes(kPages);
    ASSERT_TRUE(pushes.has_value() && *pushes != nullptr);
    std::vector<uint8_t> got(2 * kPage);
    ASSERT_TRUE((*client)->Fetch(0, 2, got.data()).has_value());
    Flood(sender->group(), 600);
    std::optional<PushedPages> pushed;
    (void)(*pushes)->TakeNext(kAll, &pushed);
    lost = (*pushes)->lost();
    ASSERT_GT(lost, 0u);
    // Reported with the next page requests, once: pipelined, then not.
    ASSERT_TRUE((*client)->Send(8, 2).has_value());
    ASSERT_TRUE((*client)->Receive(8, 2, got.data()).has_value());
    ASSERT_TRUE((*client)->Fetch(4, 2, got.data()).has_value());
    EXPECT_EQ(std::memcmp(got.data(), server.image().data() + 4 * kPage, got.size()), 0);
  }();
  EXPECT_EQ(server.Stop().push_losses_reported, lost);
  EXPECT_EQ(sender->stats().losses, lost);
  EXPECT_EQ(sender->stats().rate_cuts, 1u);
}

// A server without pushes: a client joins none.
TEST(PageServerPushTest, AServerWithoutPushesHasNoGroup) {
  ImageServer server(Image());
  ASSERT_TRUE(server.listening());
  server.Run(nullptr);
  auto client = PageClient::Connect(server.address());
  ASSERT_TRUE(client.has_value());
  auto pushes = (*client)->JoinPushes(kPages);
  ASSERT_TRUE(pushes.has_value()) << pushes.error().message();
  EXPECT_EQ(*pushes, nullptr);
  // The connection still serves.
  EXPECT_TRUE((*client)->FetchDescriptor().has_value());
}

TEST(PushKeyTest, DependsOnThePageKeyAndTheSession) {
  const PageKey a = *PageKey::Random();
  const PageKey b = *PageKey::Random();
  ASSERT_TRUE(DerivePushKey(a, 1).has_value());
  EXPECT_EQ(DerivePushKey(a, 1), DerivePushKey(a, 1));
  EXPECT_NE(DerivePushKey(a, 1), DerivePushKey(b, 1));
  EXPECT_NE(DerivePushKey(a, 1), DerivePushKey(a, 2));
  // Neither is the key itself, nor what a hello carries.
  PushKey raw{};
  std::copy_n(a.bytes.begin(), raw.size(), raw.begin());
  EXPECT_NE(*DerivePushKey(a, 1), raw);
  EXPECT_NE(*a.HelloProof(), a.bytes);
}

// Known answers, computed with OpenSSL's EVP (AES-128-GCM with the datagram as associated
// data; SHA-256), an implementation independent of the one in page_push.cc: the tag covers
// the header with its tag zeroed, then the payload.
TEST(PushTagTest, MatchesAnIndependentAesGcm) {
  PushKey key{};
  for (size_t i = 0; i < key.size(); ++i) key[i] = static_cast<uint8_t>(i);
  PushHeader header{};
  header.magic = 0x12345678;
  header.version = 1;
  header.count = 2;
  header.session = 0x1122334455667788ULL;
  header.sequence = 42;
  header.first_page = 100;
  header.zero_mask = 2;
  header.payload_bytes = 4096;
  header.tag.fill(0xee);  // not covered
  std::vector<uint8_t> payload(4096);
  for (size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<uint8_t>(i * 7);
  const std::array<uint8_t, kPushTagBytes> expected = {0x40, 0x27, 0x0a, 0xe4, 0xcf, 0xc9,
                                                       0x3a, 0xd8, 0x96, 0xea, 0xe2, 0xc7,
                                                       0xf4, 0xb4, 0x7c, 0xf2};
  EXPECT_EQ(PushTag(key, header, payload.data(), payload.size()), expected);
  // Any change of header or payload changes it.
  payload[4095] ^= 1;
  EXPECT_NE(PushTag(key, header, payload.data(), payload.size()), expected);
  payload[4095] ^= 1;
  header.first_page = 101;
  EXPECT_NE(PushTag(key, header, payload.data(), payload.size()), expected);
}

TEST(LabelledDigestTest, IsTheSha256OfLabelThenData) {
  const auto digest = LabelledDigest("flurry label", "abc");
  ASSERT_TRUE(digest.has_value());
  std::string hex;
  for (uint8_t b : *digest) hex += fmt::format("{:02x}", b);
  EXPECT_EQ(hex, "bb0ad6133b0e6e26e7443a89717a231271fd38ff4a1a15ef1a1109b72c35b3de");
}

}  // namespace
}  // namespace flurry
