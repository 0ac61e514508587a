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
#include <thread>
#include <vector>

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
    const int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(fd, 0);
    in_addr lo = Loopback();
    setsockopt(fd, IPPROTO_IP, IP_MULTICAST_IF, &lo, sizeof lo);
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_addr = sender_->group().group;
    to.sin_port = htons(sender_->group().port);
    EXPECT_EQ(sendto(fd, data, size, 0, reinterpret_cast<sockaddr*>(&to), sizeof to),
              static_cast<ssize_t>(size));
    close(fd);
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

// A page server with pushes: what one client asks for reaches another that joined its group.
TEST(PageServerPushTest, OneClientsPagesReachTheOthersThatJoined) {
  std::vector<uint8_t> image(kPages * kPage);
  for (uint64_t p = 0; p < kPages; ++p) {
    const auto bytes = PageBytes(p);
    std::memcpy(image.data() + p * kPage, bytes.data(), kPage);
  }
  std::memset(image.data() + 9 * kPage, 0, kPage);  // an all-zero page
  const PageKey key = *PageKey::Random();
  auto server = PageServer::Listen({"127.0.0.1", 0});
  ASSERT_TRUE(server.has_value()) << server.error().message();
  const PageServerAddress address{server->address(), key};
  auto sender = PushSender::Open("127.0.0.1", server->address().port, key, kPages);
  ASSERT_TRUE(sender.has_value()) << sender.error().message();
  int owner[2];
  ASSERT_EQ(pipe2(owner, O_CLOEXEC), 0);
  std::thread serving([&, s = std::move(*server)]() mutable {
    (void)s.Serve(
        {1, 2, 3}, kPages,
        [&](uint64_t gpa, void* dst, uint64_t len) -> Result<void> {
          std::memcpy(dst, image.data() + gpa, len);
          return {};
        },
        owner[0], key, nullptr, sender->get());
  });
  {
    auto asker = PageClient::Connect(address);
    auto listener = PageClient::Connect(address);
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
  close(owner[1]);
  serving.join();
  close(owner[0]);
  EXPECT_EQ((*sender)->stats().pages, 20u);
}

// kPagesUnlessPushed: pages another client made the server push a moment ago are answered
// "pushed"; others, and every page of a server that pushes none, come as for kPages.
TEST(PageServerPushTest, PagesPushedAMomentAgoAreAnsweredPushed) {
  std::vector<uint8_t> image(kPages * kPage);
  for (uint64_t p = 0; p < kPages; ++p) {
    const auto bytes = PageBytes(p);
    std::memcpy(image.data() + p * kPage, bytes.data(), kPage);
  }
  for (bool pushing : {true, false}) {
    const PageKey key = *PageKey::Random();
    auto server = PageServer::Listen({"127.0.0.1", 0});
    ASSERT_TRUE(server.has_value()) << server.error().message();
    const PageServerAddress address{server->address(), key};
    std::unique_ptr<PushSender> sender;
    if (pushing) {
      // "A moment ago": a minute here, so that a slow host answers the same.
      auto opened = PushSender::Open("127.0.0.1", server->address().port, key, kPages,
                                     std::chrono::milliseconds(20), std::chrono::minutes(1));
      ASSERT_TRUE(opened.has_value()) << opened.error().message();
      sender = std::move(*opened);
    }
    int owner[2];
    ASSERT_EQ(pipe2(owner, O_CLOEXEC), 0);
    PageServer::Stats stats;
    std::thread serving([&, s = std::move(*server)]() mutable {
      auto served = s.Serve(
          {1, 2, 3}, kPages,
          [&](uint64_t gpa, void* dst, uint64_t len) -> Result<void> {
            std::memcpy(dst, image.data() + gpa, len);
            return {};
          },
          owner[0], key, nullptr, sender.get());
      if (served) stats = *served;
    });
    // (In a lambda: a failed assertion returns from it, and the server is still stopped.)
    [&] {
      auto asker = PageClient::Connect(address);
      auto other = PageClient::Connect(address);
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
    close(owner[1]);
    serving.join();
    close(owner[0]);
    EXPECT_EQ(stats.pages_left_to_pushes, pushing ? 20u : 0u);
  }
}

// A server without pushes: a client joins none.
TEST(PageServerPushTest, AServerWithoutPushesHasNoGroup) {
  const PageKey key = *PageKey::Random();
  auto server = PageServer::Listen({"127.0.0.1", 0});
  ASSERT_TRUE(server.has_value());
  const PageServerAddress address{server->address(), key};
  int owner[2];
  ASSERT_EQ(pipe2(owner, O_CLOEXEC), 0);
  std::thread serving([&, s = std::move(*server)]() mutable {
    (void)s.Serve(
        {1}, kPages,
        [](uint64_t, void* dst, uint64_t len) -> Result<void> {
          std::memset(dst, 0, len);
          return {};
        },
        owner[0], key);
  });
  {
    auto client = PageClient::Connect(address);
    ASSERT_TRUE(client.has_value());
    auto pushes = (*client)->JoinPushes(kPages);
    ASSERT_TRUE(pushes.has_value()) << pushes.error().message();
    EXPECT_EQ(*pushes, nullptr);
    // The connection still serves.
    EXPECT_TRUE((*client)->FetchDescriptor().has_value());
  }
  close(owner[1]);
  serving.join();
  close(owner[0]);
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
