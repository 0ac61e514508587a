// A VM restored on another (test) host: two network namespaces joined by a veth pair stand for
// two hosts. The parent VM runs in one and serves itself (flurry ctl serve); a VM in the other
// restores from it over TCP with its memory on demand. The bytes that crossed the restoring
// host's interface are checked against what the restore says it fetched. Root only (network
// namespaces); skipped, with the reason, elsewhere. Runs once per backend.
#include <gtest/gtest.h>
#include <unistd.h>

#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "ctl_support.h"
#include "harness.h"
#include "netns_support.h"
#include "on_demand_support.h"

namespace {

using namespace flurry_test;

// Two namespaces "hosts" A (10.253.N.1) and B (10.253.N.2) on a veth pair; removed on
// destruction.
class TwoHosts {
 public:
  TwoHosts() {
    const std::string id = std::to_string(getpid() % 100000);
    a_ = "flurry-t-a-" + id;
    b_ = "flurry-t-b-" + id;
    link_a_ = "ft-a-" + id;
    link_b_ = "ft-b-" + id;
    subnet_ = "10.253." + std::to_string(getpid() % 250) + ".";
    ok_ = Ip({"netns", "add", a_}) && Ip({"netns", "add", b_}) &&
          Ip({"link", "add", link_a_, "netns", a_, "type", "veth", "peer", "name", link_b_, "netns",
              b_}) &&
          Ip({"-n", a_, "addr", "add", subnet_ + "1/24", "dev", link_a_}) &&
          Ip({"-n", b_, "addr", "add", subnet_ + "2/24", "dev", link_b_}) &&
          Ip({"-n", a_, "link", "set", link_a_, "up"}) &&
          Ip({"-n", b_, "link", "set", link_b_, "up"}) &&
          Ip({"-n", a_, "link", "set", "lo", "up"}) && Ip({"-n", b_, "link", "set", "lo", "up"});
  }
  ~TwoHosts() {
    Ip({"netns", "del", a_});
    Ip({"netns", "del", b_});
  }
  bool ok() const { return ok_; }
  std::string address_a() const { return subnet_ + "1"; }
  // argv run inside host A or B.
  std::vector<std::string> InA(std::vector<std::string> argv) const { return In(a_, argv); }
  std::vector<std::string> InB(std::vector<std::string> argv) const { return In(b_, argv); }
  // Bytes host B's interface has received.
  uint64_t ReceivedByB() const {
    auto r = Run(InB({"/bin/cat", "/sys/class/net/" + link_b_ + "/statistics/rx_bytes"}));
    return r.exit_code == 0 ? std::stoull(r.out) : 0;
  }

 private:
  static bool Ip(std::vector<std::string> args) {
    args.insert(args.begin(), IpBinary());
    auto r = Run(args, WithDeadline(30));
    return r.exited && r.exit_code == 0;
  }
  static std::vector<std::string> In(const std::string& ns, std::vector<std::string> argv) {
    argv.insert(argv.begin(), {IpBinary(), "netns", "exec", ns});
    return argv;
  }
  std::string a_, b_, link_a_, link_b_, subnet_;
  bool ok_ = false;
};

// The parent VM in host A (on_demand: 32 MiB, then reads /input of its --dir), paused at
// "ready" and served (`flurry ctl serve A:0` followed by `serve_words`).
class ServedParent {
 public:
  ServedParent(const TwoHosts& hosts, const std::vector<std::string>& serve_words)
      : root_(dir_.path() / "root"), socket_((dir_.path() / "api.sock").string()) {
    fs::create_directories(root_);
    WriteFile(root_ / "input", std::string(64 << 10, 'x'));
    parent_.emplace(
        RawCommand{},
        hosts.InA(Background::WithFlurry({"run", "--dir", root_.string(), "--api", socket_,
                                          Guest("on_demand"), "32", "/input", "2"})));
    if (!parent_->WaitForLine("ready", 120s)) {
      failure_ = "the parent never got ready: " + parent_->out() + parent_->err();
      return;
    }
    ExpectCtlOk(Ctl(socket_, {"pause"}));
    std::vector<std::string> serve = {"serve", hosts.address_a() + ":0"};
    serve.insert(serve.end(), serve_words.begin(), serve_words.end());
    auto served = Ctl(socket_, serve);
    ExpectCtlOk(served);
    if (auto address = Field(served.out, "serving")) {
      address_ = *address;
    } else {
      failure_ = "no address: " + served.Describe();
    }
  }
  const std::string& failure() const { return failure_; }  // "" when served
  const std::string& address() const { return address_; }
  const fs::path& root() const { return root_; }
  // Lets the parent go on and waits for its end.
  RunResult ResumeAndWait() {
    ExpectCtlOk(Ctl(socket_, {"resume"}));
    return parent_->Wait(240s);
  }

 private:
  TempDir dir_;
  fs::path root_;
  std::string socket_;
  std::optional<Background> parent_;
  std::string address_;
  std::string failure_;
};

TEST(TwoHosts, AVmRestoresOnAnotherHostWithItsMemoryFetchedOverTheNetwork) {
  if (const std::string why = WhyNoNetns(); !why.empty()) GTEST_SKIP() << why;
  TwoHosts hosts;
  ASSERT_TRUE(hosts.ok()) << "could not set up the two namespaces";
  ServedParent served(hosts, {});
  ASSERT_EQ(served.failure(), "");
  const fs::path root = served.root();
  const std::string address = served.address();

  const uint64_t before = hosts.ReceivedByB();
  auto restored =
      flurry_test::Run(hosts.InB(Background::WithFlurry(
                           {"restore", "--stats", "--dir", root.string(), "tcp://" + address})),
                       WithDeadline(240));
  const uint64_t received = hosts.ReceivedByB() - before;
  auto original = served.ResumeAndWait();
  ExpectCleanExit(original, 0);

  ExpectExitWithStats(restored);
  const std::string expected = ResultLine(original.out);
  ASSERT_FALSE(expected.empty()) << original.Describe();
  EXPECT_EQ(ResultLine(restored.out), expected) << restored.Describe();
  auto c = OnDemandCounters(restored.err);
  ASSERT_FALSE(c.empty()) << restored.Describe();
  // The 32 MiB array crossed B's interface (all-zero pages travel as mask bits), and not much
  // more than what the protocol received (TCP/IP headers, the descriptor).
  EXPECT_GE(c["fetched"], 32.0 * 256) << restored.Describe();
  EXPECT_GE(static_cast<double>(received), (c["fetched"] - c["zero_elided"]) * 4096)
      << "B's interface saw " << received << " bytes" << restored.Describe();
  EXPECT_LT(static_cast<double>(received), c["bytes_received"] * 1.2 + (1 << 20))
      << "B's interface saw " << received << " bytes" << restored.Describe();
}

// `serve HOST:PORT multicast`: every page reply also goes to the group every restoring VM
// joined, so each of two VMs restoring at once receives pushes (of the pages either asked for);
// both compute what the original does.
TEST(TwoHosts, AServerWithMulticastPushesItsPagesToTheVmsRestoringFromIt) {
  if (const std::string why = WhyNoNetns(); !why.empty()) GTEST_SKIP() << why;
  TwoHosts hosts;
  ASSERT_TRUE(hosts.ok()) << "could not set up the two namespaces";
  ServedParent served(hosts, {"multicast"});
  ASSERT_EQ(served.failure(), "");
  const fs::path root = served.root();
  const std::string address = served.address();

  const auto restore = hosts.InB(
      Background::WithFlurry({"restore", "--stats", "--dir", root.string(), "tcp://" + address}));
  Background first(RawCommand{}, restore);
  auto second = flurry_test::Run(restore, WithDeadline(240));
  auto first_done = first.Wait(240s);
  auto original = served.ResumeAndWait();
  ExpectCleanExit(original, 0);
  const std::string expected = ResultLine(original.out);
  ASSERT_FALSE(expected.empty()) << original.Describe();
  for (const RunResult* r : {&first_done, &second}) {
    ExpectExitWithStats(*r);
    EXPECT_EQ(ResultLine(r->out), expected) << r->Describe();
    auto c = OnDemandCounters(r->err);
    ASSERT_FALSE(c.empty()) << r->Describe();
    EXPECT_GT(c["push_bytes"], 0) << "no pushes reached it" << r->Describe();
    EXPECT_EQ(c["push_rejected"], 0) << r->Describe();
    // Every page of the 32 MiB array came one way or the other.
    EXPECT_GE(c["fetched"] + c["pushed"], 32.0 * 256) << r->Describe();
  }
}

}  // namespace
