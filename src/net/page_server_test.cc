#include "net/page_server.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <thread>

#include "net/page_client.h"
#include "net/tcp.h"

namespace flurry {
namespace {

constexpr uint64_t kPages = 256;

class PageServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    image_.resize(kPages * 4096);
    for (uint64_t i = 0; i < image_.size(); ++i) image_[i] = static_cast<uint8_t>(i * 7 + i / 4096);
    auto server = PageServer::Listen({"127.0.0.1", 0});
    ASSERT_TRUE(server.has_value()) << server.error().message();
    address_ = PageServerAddress{server->address(), key_};
    int pipe_fds[2];
    ASSERT_EQ(pipe2(pipe_fds, O_CLOEXEC), 0);
    owner_read_.Reset(pipe_fds[0]);
    owner_write_.Reset(pipe_fds[1]);
    thread_ = std::thread([this, s = std::move(*server)]() mutable {
      auto stats = s.Serve(
          descriptor_, kPages,
          [this](uint64_t gpa, void* dst, uint64_t len) -> Result<void> {
            std::memcpy(dst, image_.data() + gpa, len);
            return {};
          },
          owner_read_.get(), key_, &files_);
      if (stats) stats_ = *stats;
      done_ = true;
    });
  }
  void TearDown() override {
    owner_write_.Reset();
    if (thread_.joinable()) thread_.join();
  }

  std::vector<uint8_t> image_;
  std::vector<uint8_t> descriptor_ = {'F', 'L', 'V', 'D', 1, 2, 3};
  // File tree entry 3 holds 2.5 MiB; every other index is unknown.
  std::string file_ = std::string(5u << 19, 'f') + "end";
  int tree_calls_ = 0;
  PageServer::FileService files_{
      [this]() -> Result<std::vector<uint8_t>> {
        ++tree_calls_;
        return std::vector<uint8_t>{'T', 'R', 'E', 'E'};
      },
      [this](uint32_t index, uint64_t offset, uint8_t* out, uint32_t max) -> Result<uint32_t> {
        if (index != 3) return FailErrno(ENOENT, "no such entry");
        if (offset >= file_.size()) return 0u;
        const auto n = static_cast<uint32_t>(std::min<uint64_t>(max, file_.size() - offset));
        std::memcpy(out, file_.data() + offset, n);
        return n;
      }};
  // A connection that said hello with these 16 bytes by hand (in `raw`): the reply's status
  // (-1: no connection or no reply).
  int RawHello(const uint8_t* proof, UniqueFd* raw) {
    auto connected = ConnectTcp(address_.server, std::chrono::milliseconds(3000));
    if (!connected) return -1;
    *raw = std::move(*connected);
    uint8_t hello[sizeof(PageRequest) + kPageKeyBytes] = {};
    const PageRequest request{
        kPageProtocolMagic, kPageProtocolVersion, static_cast<uint16_t>(PageOp::kHello), 0, 0, 0};
    std::memcpy(hello, &request, sizeof request);
    std::memcpy(hello + sizeof request, proof, kPageKeyBytes);
    PageReplyHeader header{};
    if (!WriteFull(raw->get(), hello, sizeof hello) ||
        !ReadFull(raw->get(), &header, sizeof header)) {
      return -1;
    }
    return header.status;
  }

  PageKey key_ = *PageKey::Random();
  PageServerAddress address_;
  UniqueFd owner_read_, owner_write_;
  std::thread thread_;
  PageServer::Stats stats_;
  std::atomic<bool> done_{false};
};

TEST_F(PageServerTest, ServesTheDescriptorAndPages) {
  auto client = PageClient::Connect(address_);
  ASSERT_TRUE(client.has_value()) << client.error().message();
  auto descriptor = (*client)->FetchDescriptor();
  ASSERT_TRUE(descriptor.has_value()) << descriptor.error().message();
  EXPECT_EQ(*descriptor, descriptor_);
  std::vector<uint8_t> pages(100 * 4096);  // more than one request's worth
  ASSERT_TRUE((*client)->Fetch(100, 100, pages.data()).has_value());
  EXPECT_EQ(0, std::memcmp(pages.data(), image_.data() + 100 * 4096, pages.size()));
  EXPECT_GT((*client)->bytes_received(), pages.size());
}

TEST_F(PageServerTest, PipelinedRequestsAreAnsweredInOrder) {
  auto client = PageClient::Connect(address_);
  ASSERT_TRUE(client.has_value()) << client.error().message();
  // Four windows asked for at once (a readahead stream), then taken one by one.
  const uint64_t firsts[] = {0, 64, 128, 200};
  for (uint64_t first : firsts) ASSERT_TRUE((*client)->Send(first, 50).has_value());
  std::vector<uint8_t> pages(50 * 4096);
  // A plain fetch must wait for the stream: refused while requests are outstanding.
  auto busy = (*client)->Fetch(0, 1, pages.data());
  ASSERT_FALSE(busy.has_value());
  EXPECT_EQ(busy.error().code(), EBUSY);
  // Only the oldest request's reply can be taken.
  auto wrong = (*client)->Receive(64, 50, pages.data());
  ASSERT_FALSE(wrong.has_value());
  EXPECT_EQ(wrong.error().code(), EINVAL);
  for (uint64_t first : firsts) {
    auto got = (*client)->Receive(first, 50, pages.data());
    ASSERT_TRUE(got.has_value()) << got.error().message();
    EXPECT_EQ(0, std::memcmp(pages.data(), image_.data() + first * 4096, pages.size())) << first;
  }
  ASSERT_TRUE((*client)->Fetch(3, 2, pages.data()).has_value());
  EXPECT_EQ(0, std::memcmp(pages.data(), image_.data() + 3 * 4096, 2 * 4096));
}

TEST_F(PageServerTest, ServesTheFileTreeAndFiles) {
  auto client = PageClient::Connect(address_);
  ASSERT_TRUE(client.has_value()) << client.error().message();
  for (int i = 0; i < 2; ++i) {
    auto tree = (*client)->FetchFileTree();
    ASSERT_TRUE(tree.has_value()) << tree.error().message();
    EXPECT_EQ(*tree, (std::vector<uint8_t>{'T', 'R', 'E', 'E'}));
  }
  std::vector<uint8_t> chunk(kMaxFileReadBytes);
  std::string got;
  while (true) {
    auto n = (*client)->ReadFile(3, got.size(), chunk.data(), kMaxFileReadBytes);
    ASSERT_TRUE(n.has_value()) << n.error().message();
    EXPECT_LE(*n, kMaxFileReadBytes);
    if (*n == 0) break;
    got.append(reinterpret_cast<const char*>(chunk.data()), *n);
  }
  EXPECT_EQ(got, file_);
  // A smaller buffer gets what fits; the rest comes with the next read.
  uint8_t small[5];
  auto n = (*client)->ReadFile(3, file_.size() - 4, small, sizeof small);
  ASSERT_TRUE(n.has_value()) << n.error().message();
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(small), *n), "fend");
  // An entry the service does not know: its errno, and the connection goes on.
  auto unknown = (*client)->ReadFile(4, 0, chunk.data(), kMaxFileReadBytes);
  ASSERT_FALSE(unknown.has_value());
  EXPECT_EQ(unknown.error().code(), ENOENT);
  EXPECT_TRUE((*client)->FetchDescriptor().has_value());
  client->reset();
  owner_write_.Reset();
  thread_.join();
  EXPECT_EQ(tree_calls_, 1);  // made once, then kept
  EXPECT_EQ(stats_.file_bytes_sent, file_.size() + 4);
}

TEST_F(PageServerTest, AllZeroPagesAreNotSent) {
  for (uint64_t page : {10, 12, 13}) std::memset(image_.data() + page * 4096, 0, 4096);
  auto client = PageClient::Connect(address_);
  ASSERT_TRUE(client.has_value());
  std::vector<uint8_t> pages(8 * 4096, 0xee);
  const uint64_t before = (*client)->bytes_received();
  ASSERT_TRUE((*client)->Fetch(8, 8, pages.data()).has_value());
  EXPECT_EQ(0, std::memcmp(pages.data(), image_.data() + 8 * 4096, pages.size()));
  EXPECT_EQ((*client)->zero_pages_elided(), 3u);
  EXPECT_EQ((*client)->bytes_received() - before, sizeof(PageReplyHeader) + 5 * 4096);
}

TEST_F(PageServerTest, RefusesRequestsOutsideTheImage) {
  auto client = PageClient::Connect(address_);
  ASSERT_TRUE(client.has_value());
  std::vector<uint8_t> page(4096);
  auto past = (*client)->Fetch(kPages, 1, page.data());
  ASSERT_FALSE(past.has_value());
  EXPECT_EQ(past.error().code(), ERANGE);
  // The connection is still good.
  EXPECT_TRUE((*client)->Fetch(kPages - 1, 1, page.data()).has_value());
}

TEST_F(PageServerTest, GarbageFromAPeerDropsOnlyThatPeer) {
  auto raw = ConnectTcp(address_.server, std::chrono::milliseconds(2000));
  ASSERT_TRUE(raw.has_value());
  // A hello's worth of bytes (the server reads nothing before that much is there).
  uint8_t bad[sizeof(PageRequest) + kPageKeyBytes] = {};
  const PageRequest request{0xdeadbeef, 9, 2, 0, 1, 0};
  std::memcpy(bad, &request, sizeof request);
  ASSERT_TRUE(WriteFull(raw->get(), bad, sizeof bad).has_value());
  PageReplyHeader header{};
  ASSERT_TRUE(ReadFull(raw->get(), &header, sizeof header).has_value());
  EXPECT_EQ(header.status, EPROTO);
  char byte;
  EXPECT_FALSE(ReadFull(raw->get(), &byte, 1).has_value());  // dropped
  // Others are served.
  auto client = PageClient::Connect(address_);
  ASSERT_TRUE(client.has_value());
  std::vector<uint8_t> page(4096);
  EXPECT_TRUE((*client)->Fetch(3, 1, page.data()).has_value());
}

TEST_F(PageServerTest, EndsWhenTheOwnerIsGoneAndTheLastPeerLeaves) {
  auto client = PageClient::Connect(address_);
  ASSERT_TRUE(client.has_value());
  std::vector<uint8_t> page(4096);
  ASSERT_TRUE((*client)->Fetch(0, 1, page.data()).has_value());
  owner_write_.Reset();  // the VM that made the image is gone ...
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_FALSE(done_.load());  // ... but a peer may still fault on it
  ASSERT_TRUE((*client)->Fetch(1, 1, page.data()).has_value());
  client->reset();
  thread_.join();
  EXPECT_TRUE(done_.load());
  EXPECT_EQ(stats_.pages_sent, 2u);
  EXPECT_EQ(stats_.connections, 1u);
}

TEST(PageClient, AServerThatNeverAnswersIsATimeoutNotAHang) {
  HostPort bound;
  auto listener = ListenTcp({"127.0.0.1", 0}, &bound);  // accepts (backlog), never answers
  ASSERT_TRUE(listener.has_value());
  const auto start = std::chrono::steady_clock::now();
  auto client = PageClient::Connect({bound, PageKey{}}, std::chrono::milliseconds(200));
  ASSERT_FALSE(client.has_value());  // the hello gets no answer
  EXPECT_EQ(client.error().code(), ETIMEDOUT) << client.error().message();
  // A generous bound for a slow host.
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(20));
}

TEST(PageClient, NobodyListeningIsRefused) {
  HostPort bound;
  { auto listener = ListenTcp({"127.0.0.1", 0}, &bound); }
  auto client = PageClient::Connect({bound, PageKey{}}, std::chrono::milliseconds(500));
  ASSERT_FALSE(client.has_value());
  EXPECT_EQ(client.error().code(), ECONNREFUSED);
}

TEST_F(PageServerTest, APeerWithoutTheKeyGetsNothing) {
  // A wrong key: refused at the hello.
  PageKey wrong = key_;
  wrong.bytes[5] ^= 1;
  auto client = PageClient::Connect({address_.server, wrong});
  ASSERT_FALSE(client.has_value());
  EXPECT_EQ(client.error().code(), EACCES) << client.error().message();
  // No hello at all: the first request is refused and the peer dropped.
  auto raw = ConnectTcp(address_.server, std::chrono::milliseconds(3000));
  ASSERT_TRUE(raw.has_value());
  uint8_t ask[sizeof(PageRequest) + kPageKeyBytes] = {};
  const PageRequest descriptor{kPageProtocolMagic,
                               kPageProtocolVersion,
                               static_cast<uint16_t>(PageOp::kDescriptor),
                               0,
                               0,
                               0};
  std::memcpy(ask, &descriptor, sizeof descriptor);
  ASSERT_TRUE(WriteFull(raw->get(), ask, sizeof ask).has_value());
  PageReplyHeader header{};
  ASSERT_TRUE(ReadFull(raw->get(), &header, sizeof header).has_value());
  EXPECT_EQ(header.status, EACCES);
  EXPECT_EQ(header.payload_bytes, 0u);
  char byte;
  EXPECT_FALSE(ReadFull(raw->get(), &byte, 1).has_value());  // dropped
  // The right key works.
  auto good = PageClient::Connect(address_);
  ASSERT_TRUE(good.has_value()) << good.error().message();
  EXPECT_TRUE((*good)->FetchDescriptor().has_value());
}

// The hello carries a proof of the key, never the key: a peer that sends the key itself (as
// someone who read it off the wire would have it) is refused.
TEST_F(PageServerTest, AHelloWithTheKeyItselfIsRefused) {
  UniqueFd raw;
  EXPECT_EQ(RawHello(key_.bytes.data(), &raw), EACCES);
}

// push_losses (protocol 6): counted from page requests, refused on any other request.
TEST_F(PageServerTest, PageRequestsReportLostPushesOtherRequestsMayNot) {
  const auto proof = key_.HelloProof();
  ASSERT_TRUE(proof.has_value());
  UniqueFd raw;
  ASSERT_EQ(RawHello(proof->data(), &raw), 0);
  const auto ask = [&](PageOp op, uint32_t count, uint32_t losses) {
    const PageRequest request{
        kPageProtocolMagic, kPageProtocolVersion, static_cast<uint16_t>(op), 5, count, losses};
    EXPECT_TRUE(WriteFull(raw.get(), &request, sizeof request).has_value());
    PageReplyHeader reply{};
    EXPECT_TRUE(ReadFull(raw.get(), &reply, sizeof reply).has_value());
    std::vector<uint8_t> payload(reply.payload_bytes);
    EXPECT_TRUE(ReadFull(raw.get(), payload.data(), payload.size()).has_value());
    return reply;
  };
  EXPECT_EQ(ask(PageOp::kPages, 2, 7).status, 0);
  EXPECT_EQ(ask(PageOp::kPagesUnlessPushed, 1, 4).status, 0);
  EXPECT_EQ(ask(PageOp::kDescriptor, 0, 1).status, EINVAL);
  EXPECT_EQ(ask(PageOp::kFileTree, 0, 1).status, EINVAL);
  EXPECT_EQ(ask(PageOp::kDescriptor, 0, 0).status, 0);
  raw.Reset();
  owner_write_.Reset();
  thread_.join();
  EXPECT_EQ(stats_.push_losses_reported, 11u);
}

TEST_F(PageServerTest, APeerTricklingItsHelloNeitherHoldsTheServerNorStays) {
  auto slow = ConnectTcp(address_.server, std::chrono::milliseconds(8000));
  ASSERT_TRUE(slow.has_value());
  const char part[10] = {};
  ASSERT_TRUE(WriteFull(slow->get(), part, sizeof part).has_value());
  // Meanwhile another peer is served at once.
  auto client = PageClient::Connect(address_, std::chrono::milliseconds(1000));
  ASSERT_TRUE(client.has_value()) << client.error().message();
  std::vector<uint8_t> page(4096);
  EXPECT_TRUE((*client)->Fetch(7, 1, page.data()).has_value());
  // The slow one is dropped after the hello deadline (2 s), without a reply.
  char byte;
  const auto start = std::chrono::steady_clock::now();
  auto got = ReadFull(slow->get(), &byte, 1);
  EXPECT_FALSE(got.has_value());
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(8));
  client->reset();
  owner_write_.Reset();
  thread_.join();
  EXPECT_EQ(stats_.refused, 1u);
}

TEST(PageKey, HexRoundTripsAndRefusesOtherText) {
  auto key = PageKey::Random();
  ASSERT_TRUE(key.has_value());
  auto back = PageKey::FromHex(key->Hex());
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->bytes, key->bytes);
  EXPECT_TRUE(key->Matches(back->bytes.data()));
  EXPECT_FALSE(PageKey::FromHex("abc").has_value());
  EXPECT_FALSE(PageKey::FromHex(std::string(32, 'g')).has_value());
  EXPECT_FALSE(PageKey::FromHex(std::string(32, 'A')).has_value());  // lower case only
  auto address = ParsePageServerAddress("10.0.0.1:7000/" + key->Hex(), std::nullopt);
  ASSERT_TRUE(address.has_value());
  EXPECT_EQ(address->server.port, 7000);
  EXPECT_EQ(address->ToString(), "10.0.0.1:7000/" + key->Hex());
  EXPECT_FALSE(ParsePageServerAddress("10.0.0.1:7000", std::nullopt).has_value());
  auto fallback = ParsePageServerAddress("10.0.0.1:7000", *key);
  ASSERT_TRUE(fallback.has_value());
  EXPECT_EQ(fallback->key.bytes, key->bytes);
}

TEST(HostPort, Parses) {
  auto hp = ParseHostPort("10.0.0.1:7000");
  ASSERT_TRUE(hp.has_value());
  EXPECT_EQ(hp->host, "10.0.0.1");
  EXPECT_EQ(hp->port, 7000);
  EXPECT_FALSE(ParseHostPort("10.0.0.1").has_value());
  EXPECT_FALSE(ParseHostPort("10.0.0.1:70000").has_value());
  EXPECT_FALSE(ParseHostPort(":1").has_value());
}

}  // namespace
}  // namespace flurry
