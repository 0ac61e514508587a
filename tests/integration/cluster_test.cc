// End-to-end tests of `flurry cluster init` and `flurry cluster show`: the files a new cluster
// gets (cluster.json, the CA and the member credentials, their modes), the table `show` prints,
// and the refusals (an existing cluster or CA, usage errors that must write nothing).
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <set>
#include <string>
#include <vector>

#include "harness.h"

namespace {

using namespace flurry_test;

mode_t ModeOf(const fs::path& path) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) return 0;
  return st.st_mode & 07777;
}

std::set<std::string> FileNames(const fs::path& dir) {
  std::set<std::string> names;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    names.insert(entry.path().filename().string());
  }
  return names;
}

RunResult Init(const fs::path& dir, std::vector<std::string> extra) {
  std::vector<std::string> args{"cluster", "init", dir.string(), "--name", "test"};
  args.insert(args.end(), extra.begin(), extra.end());
  return Flurry(args);
}

TEST(ClusterCli, InitThenShow) {
  TempDir tmp;
  const fs::path dir = tmp.path() / "cluster";
  auto init = Init(dir, {"--host", "host1=10.88.0.11:7070", "--host", "host2=10.88.0.12:7071:16"});
  ASSERT_TRUE(init.exited && init.exit_code == 0) << init.Describe();
  EXPECT_EQ(init.err, "");
  const std::vector<std::string> lines = Lines(init.out);
  ASSERT_FALSE(lines.empty());
  EXPECT_EQ(lines.back(), (dir / "cluster.json").string());

  const std::string json = ReadFile(dir / "cluster.json");
  EXPECT_NE(json.find("\"format\": \"flurry-cluster\""), std::string::npos) << json;
  EXPECT_NE(json.find("\"credentials\": \"creds\""), std::string::npos) << json;
  EXPECT_EQ(ModeOf(dir / "creds"), 0700u);
  EXPECT_EQ(FileNames(dir / "creds"), (std::set<std::string>{"ca.crt", "ca.key", "members"}));
  EXPECT_EQ(ModeOf(dir / "creds/ca.key"), 0600u);
  EXPECT_EQ(FileNames(dir / "creds/members"),
            (std::set<std::string>{"client.crt", "client.key", "host1.crt", "host1.key",
                                   "host2.crt", "host2.key"}));
  for (const char* member : {"client", "host1", "host2"}) {
    EXPECT_EQ(ModeOf(dir / "creds/members" / (std::string(member) + ".key")), 0600u) << member;
    EXPECT_NE(ReadFile(dir / "creds/members" / (std::string(member) + ".crt"))
                  .find("-----BEGIN CERTIFICATE-----"),
              std::string::npos);
  }

  auto show = Flurry({"cluster", "show", lines.back()});
  ASSERT_TRUE(show.exited && show.exit_code == 0) << show.Describe();
  EXPECT_EQ(show.err, "");
  const std::vector<std::string> table = Lines(show.out);
  ASSERT_EQ(table.size(), 4u) << show.out;
  EXPECT_EQ(table[0], "cluster test (credentials " + (dir / "creds").string() + ")");
  EXPECT_EQ(table[1], "NAME   ADDRESS          SLOTS  MEMORY");
  EXPECT_EQ(table[2], "host1  10.88.0.11:7070      8  -");
  EXPECT_EQ(table[3], "host2  10.88.0.12:7071     16  -");
}

TEST(ClusterCli, MembersReplaceTheDefaultClient) {
  TempDir tmp;
  const fs::path dir = tmp.path() / "c";
  auto init = Init(dir, {"--host", "h1=10.0.0.1:7070", "--member", "laptop", "--member", "ci"});
  ASSERT_TRUE(init.exited && init.exit_code == 0) << init.Describe();
  EXPECT_EQ(
      FileNames(dir / "creds/members"),
      (std::set<std::string>{"ci.crt", "ci.key", "h1.crt", "h1.key", "laptop.crt", "laptop.key"}));
}

TEST(ClusterCli, ExistingClusterIsRefused) {
  TempDir tmp;
  const fs::path dir = tmp.path() / "c";
  ASSERT_EQ(Init(dir, {"--host", "h1=10.0.0.1:7070"}).exit_code, 0);
  const std::string json = ReadFile(dir / "cluster.json");
  const std::string ca = ReadFile(dir / "creds/ca.crt");

  auto again = Init(dir, {"--host", "h9=10.0.0.9:7070"});
  ExpectInputError(again);
  EXPECT_TRUE(StartsWith(again.err, "flurry: cluster init: ")) << again.Describe();
  EXPECT_NE(again.err.find("cluster.json exists already"), std::string::npos) << again.Describe();
  EXPECT_EQ(ReadFile(dir / "cluster.json"), json);
  EXPECT_EQ(ReadFile(dir / "creds/ca.crt"), ca);
  EXPECT_FALSE(fs::exists(dir / "creds/members/h9.crt"));

  // A CA without a cluster file is refused too, and no cluster file appears.
  fs::remove(dir / "cluster.json");
  auto over_ca = Init(dir, {"--host", "h9=10.0.0.9:7070"});
  ExpectInputError(over_ca);
  EXPECT_NE(over_ca.err.find("ca.key exists already"), std::string::npos) << over_ca.Describe();
  EXPECT_FALSE(fs::exists(dir / "cluster.json"));
  EXPECT_EQ(ReadFile(dir / "creds/ca.crt"), ca);
}

TEST(ClusterCli, UsageErrorsWriteNothing) {
  TempDir tmp;
  const fs::path dir = tmp.path() / "c";
  const std::vector<std::vector<std::string>> cases = {
      {"cluster", "init", dir.string(), "--name", "test"},                  // no --host
      {"cluster", "init", dir.string(), "--host", "h1=10.0.0.1:7070"},      // no --name
      {"cluster", "init", "--name", "test", "--host", "h1=10.0.0.1:7070"},  // no DIR
      {"cluster", "init", dir.string(), "--name", "test", "--host", "h1"},
      {"cluster", "init", dir.string(), "--name", "test", "--host", "=10.0.0.1:7070"},
      {"cluster", "init", dir.string(), "--name", "test", "--host", "h1=10.0.0.1"},
      {"cluster", "init", dir.string(), "--name", "test", "--host", "h1=10.0.0.1:7070:x"},
      {"cluster", "init", dir.string(), "--name", "test", "--host", "h1=10.0.0.1:7070:0"},
      {"cluster", "init", dir.string(), "--name", "test", "--host", "h1=example.com:7070"},
      {"cluster", "init", dir.string(), "--name", "test", "--host", "H1=10.0.0.1:7070"},
      {"cluster", "init", dir.string(), "--name", "Test", "--host", "h1=10.0.0.1:7070"},
      {"cluster", "init", dir.string(), "--name", "test", "--host", "h1=10.0.0.1:7070", "--host",
       "h1=10.0.0.2:7070"},
      {"cluster", "init", dir.string(), "--name", "test", "--host", "h1=10.0.0.1:7070", "--host",
       "h2=10.0.0.1:7070"},
      {"cluster", "init", dir.string(), "--name", "test", "--host", "h1=10.0.0.1:7070", "--member",
       "h1"},
      {"cluster", "init", dir.string(), "--name", "test", "--host", "h1=10.0.0.1:7070", "--member",
       "a/b"},
      {"cluster"},
      {"cluster", "show"},
  };
  for (const auto& args : cases) {
    auto r = Flurry(args);
    EXPECT_TRUE(r.exited && r.exit_code == 2) << r.Describe();
    EXPECT_NE(r.err, "") << r.Describe();
    EXPECT_EQ(r.out, "") << r.Describe();
    EXPECT_FALSE(fs::exists(dir)) << r.Describe();
  }
  auto slots = Flurry({"cluster", "init", dir.string(), "--name", "test", "--host",
                       "h1=10.0.0.1:7070", "--host", "h2=10.0.0.2:7070:5000"});
  EXPECT_EQ(slots.err, "flurry: cluster init: host 2 (\"h2\"): slots must be 1..4096\n");
}

TEST(ClusterCli, ShowRefusesABadFile) {
  TempDir tmp;
  const fs::path file = tmp.path() / "cluster.json";
  WriteFile(file, R"({"format":"flurry-cluster","version":1,"name":"c","credentials":"creds",
                      "hosts":[{"name":"h1","address":"10.0.0.1:7070","slot":4}]})");
  auto show = Flurry({"cluster", "show", file.string()});
  ExpectInputError(show);
  EXPECT_EQ(show.err, "flurry: cluster show: cluster file " + file.string() +
                          ": host 1 (\"h1\"): unknown key \"slot\"\n");
  ExpectInputError(Flurry({"cluster", "show", (tmp.path() / "missing.json").string()}));
}

}  // namespace
