// Tests of the cluster file: round trips, relative credentials paths, and every refusal with the
// host and field it names.
#include "cluster/cluster_file.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "base/test_temp_dir.h"

namespace flurry {
namespace {

namespace fs = std::filesystem;

// A temporary directory of this test's own.
class TempDir : public TestTempDir {
 public:
  TempDir() : TestTempDir("cluster_file_test") {}
};

ClusterFile Sample() {
  ClusterFile file;
  file.name = "test";
  file.credentials_dir = "/etc/flurry/creds";
  file.hosts = {{"host1", "10.88.0.11:7070", 8, 0},
                {"host2", "10.88.0.12:7070", 16, 4ULL << 30},
                {"h-3", "192.168.1.1:65535", 4096, 1}};
  return file;
}

// A valid file with `hosts` spliced in as the hosts array.
std::string WithHosts(const std::string& hosts) {
  return R"({"format":"flurry-cluster","version":1,"name":"c","credentials":"creds","hosts":)" +
         hosts + "}";
}

std::string ParseError(std::string_view json) {
  auto parsed = ParseClusterFile(json, "/base");
  if (parsed) return "(parsed)";
  return parsed.error().message();
}

void ExpectSame(const ClusterFile& a, const ClusterFile& b) {
  EXPECT_EQ(a.name, b.name);
  EXPECT_EQ(a.credentials_dir, b.credentials_dir);
  ASSERT_EQ(a.hosts.size(), b.hosts.size());
  for (size_t i = 0; i < a.hosts.size(); ++i) {
    EXPECT_EQ(a.hosts[i].name, b.hosts[i].name);
    EXPECT_EQ(a.hosts[i].address, b.hosts[i].address);
    EXPECT_EQ(a.hosts[i].slots, b.hosts[i].slots);
    EXPECT_EQ(a.hosts[i].memory_bytes, b.hosts[i].memory_bytes);
  }
}

TEST(ClusterFile, FormatParseRoundTrip) {
  const ClusterFile file = Sample();
  const std::string text = FormatClusterFile(file);
  auto parsed = ParseClusterFile(text, "/somewhere");
  ASSERT_TRUE(parsed) << parsed.error().message();
  ExpectSame(file, *parsed);
  EXPECT_EQ(FormatClusterFile(*parsed), text);
  // Memory 0 (not stated) is left out of the text: two of the three hosts have it.
  size_t memory_keys = 0;
  for (size_t at = text.find("\"memory\""); at != std::string::npos;
       at = text.find("\"memory\"", at + 1)) {
    ++memory_keys;
  }
  EXPECT_EQ(memory_keys, 2u) << text;
}

TEST(ClusterFile, WriteLoadRoundTripAndFind) {
  TempDir dir;
  const std::string path = dir.path() + "/cluster.json";
  ASSERT_TRUE(WriteClusterFile(path, Sample()));
  auto loaded = LoadClusterFile(path);
  ASSERT_TRUE(loaded) << loaded.error().message();
  ExpectSame(Sample(), *loaded);
  ASSERT_NE(loaded->Find("host2"), nullptr);
  EXPECT_EQ(loaded->Find("host2")->address, "10.88.0.12:7070");
  EXPECT_EQ(loaded->Find("host4"), nullptr);
  // Replacing works and leaves no temporary file behind.
  ClusterFile changed = Sample();
  changed.hosts.pop_back();
  ASSERT_TRUE(WriteClusterFile(path, changed));
  EXPECT_EQ(LoadClusterFile(path)->hosts.size(), 2u);
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()), 1);
}

TEST(ClusterFile, WriteRefusesAnInvalidFileAndLeavesTheOldOne) {
  TempDir dir;
  const std::string path = dir.path() + "/cluster.json";
  ASSERT_TRUE(WriteClusterFile(path, Sample()));
  ClusterFile bad = Sample();
  bad.hosts[1].slots = 0;
  auto written = WriteClusterFile(path, bad);
  ASSERT_FALSE(written);
  EXPECT_EQ(written.error().message(),
            "cluster file " + path + ": host 2 (\"host2\"): slots must be 1..4096");
  EXPECT_EQ(LoadClusterFile(path)->hosts[1].slots, 16);
}

TEST(ClusterFile, RelativeCredentialsAreRelativeToTheFilesDirectory) {
  TempDir dir;
  fs::create_directory(dir.path() + "/sub");
  const std::string path = dir.path() + "/sub/cluster.json";
  ClusterFile file = Sample();
  file.credentials_dir = "creds";
  ASSERT_TRUE(WriteClusterFile(path, file));
  EXPECT_NE(FormatClusterFile(file).find("\"credentials\": \"creds\""), std::string::npos);
  auto loaded = LoadClusterFile(path);
  ASSERT_TRUE(loaded) << loaded.error().message();
  EXPECT_EQ(loaded->credentials_dir, dir.path() + "/sub/creds");

  file.credentials_dir = "../x/./creds/";
  auto parsed = ParseClusterFile(FormatClusterFile(file), "/a/b");
  ASSERT_TRUE(parsed);
  EXPECT_EQ(parsed->credentials_dir, "/a/x/creds");

  // A relative base directory is made absolute against the current directory.
  parsed = ParseClusterFile(FormatClusterFile(file), "rel");
  ASSERT_TRUE(parsed);
  EXPECT_EQ(parsed->credentials_dir, (fs::current_path() / "x/creds").string());

  file.credentials_dir = "/abs/creds";
  EXPECT_EQ(ParseClusterFile(FormatClusterFile(file), "/a/b")->credentials_dir, "/abs/creds");
}

TEST(ClusterFile, DefaultsAndMemoryForms) {
  auto parsed = ParseClusterFile(WithHosts(R"([{"name":"a","address":"10.0.0.1:1"},
                    {"name":"b","address":"10.0.0.2:1","memory":"4G"},
                    {"name":"c","address":"10.0.0.3:1","memory":1048576}])"),
                                 "/base");
  ASSERT_TRUE(parsed) << parsed.error().message();
  EXPECT_EQ(parsed->hosts[0].slots, 8);
  EXPECT_EQ(parsed->hosts[0].memory_bytes, 0u);
  EXPECT_EQ(parsed->hosts[1].memory_bytes, 4ULL << 30);
  EXPECT_EQ(parsed->hosts[2].memory_bytes, 1ULL << 20);
  EXPECT_EQ(parsed->credentials_dir, "/base/creds");
}

TEST(ClusterFile, TopLevelErrors) {
  EXPECT_TRUE(ParseError("").starts_with("not valid JSON: ")) << ParseError("");
  EXPECT_TRUE(ParseError("{").starts_with("not valid JSON: parse error")) << ParseError("{");
  EXPECT_EQ(ParseError("[]"), "must be a JSON object");
  EXPECT_EQ(ParseError(R"({"version":1})"), "format must be \"flurry-cluster\"");
  EXPECT_EQ(ParseError(R"({"format":"flurry-vm","version":1})"),
            "format must be \"flurry-cluster\"");
  EXPECT_EQ(ParseError(R"({"format":"flurry-cluster"})"), "version must be an integer");
  EXPECT_EQ(ParseError(R"({"format":"flurry-cluster","version":"1"})"),
            "version must be an integer");
  EXPECT_EQ(ParseError(R"({"format":"flurry-cluster","version":2})"),
            "version 2 is not supported (this flurry reads version 1)");
  const std::string head = R"({"format":"flurry-cluster","version":1,)";
  EXPECT_EQ(ParseError(head + R"("credentials":"c","hosts":[]})"), "name is missing");
  EXPECT_EQ(ParseError(head + R"("name":7})"), "name must be a string");
  EXPECT_EQ(ParseError(head + R"("name":"Big"})"),
            "name: \"Big\": only a-z, 0-9 and '-' are allowed (a DNS label)");
  EXPECT_EQ(ParseError(head + R"("name":"c","hosts":[]})"), "credentials is missing");
  EXPECT_EQ(ParseError(head + R"("name":"c","credentials":""})"), "credentials must not be empty");
  EXPECT_EQ(ParseError(head + R"("name":"c","credentials":"x"})"), "hosts must be an array");
  EXPECT_EQ(ParseError(head + R"("name":"c","credentials":"x","hosts":{}})"),
            "hosts must be an array");
  EXPECT_EQ(ParseError(WithHosts("[]")), "hosts must name at least one host");
  EXPECT_EQ(ParseError(head + R"("name":"c","credentials":"x","hsots":[]})"),
            "unknown key \"hsots\"");
  EXPECT_EQ(ParseError(head + R"("name":"c","name":"d"})"),
            "key \"name\" appears twice in one object");
}

TEST(ClusterFile, SizeAndHostCountCaps) {
  std::string big = WithHosts(R"([{"name":"a","address":"10.0.0.1:1"}])");
  big.insert(big.size() - 1, std::string(kMaxClusterFileBytes, ' '));
  EXPECT_EQ(ParseError(big),
            fmt::format("{} bytes exceeds the limit of 1048576 bytes", big.size()));

  auto hosts = [](size_t n) {
    std::string list = "[";
    for (size_t i = 0; i < n; ++i) {
      list += fmt::format(R"({}{{"name":"h{}","address":"10.{}.{}.1:7070"}})", i ? "," : "", i,
                          i / 256, i % 256);
    }
    return WithHosts(list + "]");
  };
  auto parsed = ParseClusterFile(hosts(kMaxClusterHosts), "/");
  ASSERT_TRUE(parsed) << parsed.error().message();
  EXPECT_EQ(parsed->hosts.size(), kMaxClusterHosts);
  EXPECT_EQ(ParseError(hosts(kMaxClusterHosts + 1)), "1025 hosts exceeds the limit of 1024");

  TempDir dir;
  const std::string path = dir.path() + "/cluster.json";
  std::ofstream(path) << big;
  auto loaded = LoadClusterFile(path);
  ASSERT_FALSE(loaded);
  EXPECT_EQ(loaded.error().message(),
            fmt::format("cluster file {}: {} bytes exceeds the limit of 1048576 bytes", path,
                        big.size()));
}

TEST(ClusterFile, HostErrorsNameTheHostAndField) {
  struct Case {
    std::string host2;
    std::string error;
  };
  const std::vector<Case> cases = {
      {R"(7)", "host 2: must be an object"},
      {R"({"address":"10.0.0.2:1"})", "host 2: name is missing"},
      {R"({"name":2,"address":"10.0.0.2:1"})", "host 2: name must be a string"},
      {R"({"name":"","address":"10.0.0.2:1"})", "host 2 (\"\"): name: must not be empty"},
      {R"({"name":"Host2","address":"10.0.0.2:1"})",
       "host 2 (\"Host2\"): name: \"Host2\": only a-z, 0-9 and '-' are allowed (a DNS label)"},
      {R"({"name":"-h","address":"10.0.0.2:1"})",
       "host 2 (\"-h\"): name: \"-h\" must not start or end with '-'"},
      {R"({"name":"flurry-member","address":"10.0.0.2:1"})",
       "host 2 (\"flurry-member\"): name: \"flurry-member\" is reserved: every member "
       "certificate carries it"},
      {R"({"name":"h2"})", "host 2 (\"h2\"): address is missing"},
      {R"({"name":"h2","address":"10.0.0.2"})",
       "host 2 (\"h2\"): address \"10.0.0.2\" must be IPv4:PORT"},
      {R"({"name":"h2","address":"host2:80"})",
       "host 2 (\"h2\"): address \"host2:80\": \"host2\" is not an IPv4 address (a.b.c.d)"},
      {R"({"name":"h2","address":"10.0.0.256:80"})",
       "host 2 (\"h2\"): address \"10.0.0.256:80\": \"10.0.0.256\" is not an IPv4 address "
       "(a.b.c.d)"},
      {R"({"name":"h2","address":"[::1]:80"})",
       "host 2 (\"h2\"): address \"[::1]:80\": \"[::1]\" is not an IPv4 address (a.b.c.d)"},
      {R"({"name":"h2","address":"0.0.0.0:80"})",
       "host 2 (\"h2\"): address \"0.0.0.0:80\": 0.0.0.0 cannot be connected to"},
      {R"({"name":"h2","address":"10.0.0.2:0"})",
       "host 2 (\"h2\"): address \"10.0.0.2:0\": the port must be 1..65535"},
      {R"({"name":"h2","address":"10.0.0.2:65536"})",
       "host 2 (\"h2\"): address \"10.0.0.2:65536\": the port must be 1..65535"},
      {R"({"name":"h2","address":"10.0.0.2:080"})",
       "host 2 (\"h2\"): address \"10.0.0.2:080\": the port must be 1..65535"},
      {R"({"name":"h2","address":"10.0.0.2:8x"})",
       "host 2 (\"h2\"): address \"10.0.0.2:8x\": the port must be 1..65535"},
      {R"({"name":"h2","address":"10.0.0.2:1","slots":0})",
       "host 2 (\"h2\"): slots must be 1..4096"},
      {R"({"name":"h2","address":"10.0.0.2:1","slots":4097})",
       "host 2 (\"h2\"): slots must be 1..4096"},
      {R"({"name":"h2","address":"10.0.0.2:1","slots":-1})",
       "host 2 (\"h2\"): slots must be 1..4096"},
      {R"({"name":"h2","address":"10.0.0.2:1","slots":2.5})",
       "host 2 (\"h2\"): slots must be 1..4096"},
      {R"({"name":"h2","address":"10.0.0.2:1","slots":18446744073709551615})",
       "host 2 (\"h2\"): slots must be 1..4096"},
      {R"({"name":"h2","address":"10.0.0.2:1","slots":"8"})",
       "host 2 (\"h2\"): slots must be 1..4096"},
      {R"({"name":"h2","address":"10.0.0.2:1","memory":-5})",
       "host 2 (\"h2\"): memory must be a non-negative integer (bytes) or a size string like "
       "\"4G\""},
      {R"({"name":"h2","address":"10.0.0.2:1","memory":"4Q"})",
       "host 2 (\"h2\"): memory: size '4Q': unknown unit 'Q' (use K, M, G or T)"},
      {R"({"name":"h2","address":"10.0.0.2:1","slot":4})", "host 2 (\"h2\"): unknown key \"slot\""},
      {R"({"name":"h1","address":"10.0.0.2:1"})",
       "host 2 (\"h1\"): name \"h1\" is used by an earlier host"},
      {R"({"name":"h2","address":"10.0.0.1:7070"})",
       "host 2 (\"h2\"): address \"10.0.0.1:7070\" is used by an earlier host"},
  };
  for (const Case& c : cases) {
    const std::string json =
        WithHosts(R"([{"name":"h1","address":"10.0.0.1:7070"},)" + c.host2 + "]");
    EXPECT_EQ(ParseError(json), c.error) << json;
  }
}

TEST(ClusterFile, LoadErrorsNameTheFile) {
  TempDir dir;
  const std::string path = dir.path() + "/cluster.json";
  std::ofstream(path) << WithHosts(R"([{"name":"h1","address":"10.0.0.1:7070","slots":0}])");
  auto loaded = LoadClusterFile(path);
  ASSERT_FALSE(loaded);
  EXPECT_EQ(loaded.error().message(),
            "cluster file " + path + ": host 1 (\"h1\"): slots must be 1..4096");
  auto missing = LoadClusterFile(dir.path() + "/none.json");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().message(),
            "cluster file " + dir.path() + "/none.json: cannot open: No such file or directory");
  EXPECT_FALSE(LoadClusterFile(dir.path()));  // a directory
}

TEST(ClusterFile, MemberNames) {
  for (const std::string& good :
       std::vector<std::string>{"a", "host1", "h-1", "0", "9-a", std::string(63, 'x')}) {
    EXPECT_TRUE(ValidateMemberName(good)) << good;
  }
  for (const std::string& bad :
       std::vector<std::string>{"", "-a", "a-", "A", "a.b", "a_b", "a b", "flurry-member",
                                std::string(64, 'x'), std::string("a\0b", 3)}) {
    EXPECT_FALSE(ValidateMemberName(bad)) << bad;
  }
  EXPECT_EQ(ValidateMemberName(std::string(100, 'x')).error().message(),
            "\"" + std::string(64, 'x') + "\"... is 100 characters long; the limit is 63");
}

}  // namespace
}  // namespace flurry
