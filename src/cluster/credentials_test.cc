// Tests of the cluster credentials: the files and their modes, what the certificates hold, that
// member certificates verify against their own CA only, and the refusals.
#include "cluster/credentials.h"

#include <gtest/gtest.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <sstream>
#include <string>

#include "base/test_temp_dir.h"

namespace flurry {
namespace {

namespace fs = std::filesystem;

// A temporary directory of this test's own.
class TempDir : public TestTempDir {
 public:
  TempDir() : TestTempDir("credentials_test") {}
};

struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct StoreFree {
  void operator()(X509_STORE* s) const { X509_STORE_free(s); }
};
struct StoreCtxFree {
  void operator()(X509_STORE_CTX* c) const { X509_STORE_CTX_free(c); }
};
struct PkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using Cert = std::unique_ptr<X509, X509Free>;

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

Cert ReadCert(const std::string& path) {
  FILE* file = fopen(path.c_str(), "r");
  if (file == nullptr) return nullptr;
  Cert cert(PEM_read_X509(file, nullptr, nullptr, nullptr));
  fclose(file);
  return cert;
}

mode_t ModeOf(const std::string& path) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) return 0;
  return st.st_mode & 07777;
}

// X509_verify_cert of `cert` against the single trust root `ca` for `purpose`.
bool Verifies(X509* ca, X509* cert, int purpose) {
  std::unique_ptr<X509_STORE, StoreFree> store(X509_STORE_new());
  std::unique_ptr<X509_STORE_CTX, StoreCtxFree> context(X509_STORE_CTX_new());
  if (X509_STORE_add_cert(store.get(), ca) != 1) return false;
  if (X509_STORE_CTX_init(context.get(), store.get(), cert, nullptr) != 1) return false;
  if (X509_STORE_CTX_set_purpose(context.get(), purpose) != 1) return false;
  return X509_verify_cert(context.get()) == 1;
}

std::string CommonName(X509* cert) {
  char text[256] = {};
  X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, text, sizeof text);
  return text;
}

TEST(Credentials, CreatesTheFilesWithTheirModes) {
  TempDir tmp;
  const std::string dir = tmp.path() + "/creds";
  auto created = CreateClusterCredentials(dir, "test", {"host1", "host2", "client"});
  ASSERT_TRUE(created) << created.error().message();
  EXPECT_EQ(ModeOf(dir), 0700u);
  EXPECT_EQ(ModeOf(dir + "/members"), 0700u);
  EXPECT_EQ(ModeOf(dir + "/ca.key"), 0600u);
  EXPECT_EQ(ModeOf(dir + "/ca.crt"), 0644u);
  std::set<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir + "/members")) {
    names.insert(entry.path().filename().string());
  }
  EXPECT_EQ(names, (std::set<std::string>{"client.crt", "client.key", "host1.crt", "host1.key",
                                          "host2.crt", "host2.key"}));
  for (const char* member : {"host1", "host2", "client"}) {
    EXPECT_EQ(ModeOf(dir + "/members/" + member + ".key"), 0600u) << member;
    EXPECT_EQ(ModeOf(dir + "/members/" + member + ".crt"), 0644u) << member;
    EXPECT_NE(Slurp(dir + "/members/" + member + ".key").find("-----BEGIN PRIVATE KEY-----"),
              std::string::npos);
  }
  // Nothing else (no temporary files) in the directory.
  EXPECT_EQ(std::distance(fs::directory_iterator(dir), fs::directory_iterator()), 3);
}

TEST(Credentials, CaCertificateHoldsWhatTheDocsSay) {
  TempDir tmp;
  ASSERT_TRUE(CreateClusterCredentials(tmp.path(), "prod", {"h1"}));
  Cert ca = ReadCert(tmp.path() + "/ca.crt");
  ASSERT_TRUE(ca);
  EXPECT_EQ(CommonName(ca.get()), "flurry cluster CA prod");
  EXPECT_EQ(X509_check_ca(ca.get()), 1);  // basicConstraints CA:TRUE
  EXPECT_TRUE(X509_get_key_usage(ca.get()) & KU_KEY_CERT_SIGN);
  EXPECT_EQ(X509_check_issued(ca.get(), ca.get()), X509_V_OK);  // self-signed
  std::unique_ptr<EVP_PKEY, PkeyFree> ca_key(X509_get_pubkey(ca.get()));
  EXPECT_EQ(X509_verify(ca.get(), ca_key.get()), 1);
  EXPECT_EQ(EVP_PKEY_get_bits(ca_key.get()), 256);
  EXPECT_TRUE(EVP_PKEY_is_a(ca_key.get(), "EC"));
  // Valid now, for ten years (give or take a day).
  int days = 0;
  int seconds = 0;
  ASSERT_EQ(ASN1_TIME_diff(&days, &seconds, nullptr, X509_get0_notAfter(ca.get())), 1);
  EXPECT_GE(days, 3650);
  EXPECT_LE(days, 3654);
  EXPECT_LT(X509_cmp_current_time(X509_get0_notBefore(ca.get())), 0);
}

TEST(Credentials, MemberCertificatesVerifyWithBothUsages) {
  TempDir tmp;
  ASSERT_TRUE(CreateClusterCredentials(tmp.path(), "test", {"host1", "client"}));
  Cert ca = ReadCert(tmp.path() + "/ca.crt");
  Cert host = ReadCert(tmp.path() + "/members/host1.crt");
  Cert client = ReadCert(tmp.path() + "/members/client.crt");
  ASSERT_TRUE(ca && host && client);
  for (X509* member : {host.get(), client.get()}) {
    EXPECT_TRUE(Verifies(ca.get(), member, X509_PURPOSE_SSL_SERVER));
    EXPECT_TRUE(Verifies(ca.get(), member, X509_PURPOSE_SSL_CLIENT));
    EXPECT_EQ(X509_get_extended_key_usage(member) & (XKU_SSL_SERVER | XKU_SSL_CLIENT),
              static_cast<uint32_t>(XKU_SSL_SERVER | XKU_SSL_CLIENT));
    EXPECT_EQ(X509_check_ca(member), 0);
    EXPECT_EQ(X509_check_host(member, "flurry-member", 0, 0, nullptr), 1);
    EXPECT_EQ(X509_check_host(member, "host2", 0, 0, nullptr), 0);
    // A member certificate cannot act as a CA for another certificate.
    EXPECT_FALSE(Verifies(member, member == host.get() ? client.get() : host.get(),
                          X509_PURPOSE_SSL_SERVER));
  }
  EXPECT_EQ(CommonName(host.get()), "host1");
  EXPECT_EQ(X509_check_host(host.get(), "host1", 0, 0, nullptr), 1);
  EXPECT_EQ(X509_check_host(host.get(), "client", 0, 0, nullptr), 0);
  EXPECT_EQ(X509_check_host(client.get(), "client", 0, 0, nullptr), 1);
  // Random 128-bit serials: distinct, positive, at most 17 octets of DER content.
  const ASN1_INTEGER* a = X509_get0_serialNumber(host.get());
  const ASN1_INTEGER* b = X509_get0_serialNumber(client.get());
  EXPECT_NE(ASN1_INTEGER_cmp(a, b), 0);
  EXPECT_GE(ASN1_STRING_length(a), 8);
  EXPECT_LE(ASN1_STRING_length(a), 16);
}

TEST(Credentials, AnotherClustersCertificateDoesNotVerify) {
  TempDir one;
  TempDir two;
  ASSERT_TRUE(CreateClusterCredentials(one.path(), "one", {"host1"}));
  ASSERT_TRUE(CreateClusterCredentials(two.path(), "two", {"host1"}));
  Cert ca_one = ReadCert(one.path() + "/ca.crt");
  Cert host_one = ReadCert(one.path() + "/members/host1.crt");
  Cert host_two = ReadCert(two.path() + "/members/host1.crt");
  ASSERT_TRUE(ca_one && host_one && host_two);
  EXPECT_TRUE(Verifies(ca_one.get(), host_one.get(), X509_PURPOSE_SSL_SERVER));
  EXPECT_FALSE(Verifies(ca_one.get(), host_two.get(), X509_PURPOSE_SSL_SERVER));
  EXPECT_FALSE(Verifies(ca_one.get(), host_two.get(), X509_PURPOSE_SSL_CLIENT));

  // Mixing the other cluster's member files into this one is caught on loading.
  fs::copy_file(two.path() + "/members/host1.crt", one.path() + "/members/host1.crt",
                fs::copy_options::overwrite_existing);
  auto loaded = LoadMemberCredentials(one.path(), "host1");
  ASSERT_FALSE(loaded);
  EXPECT_NE(loaded.error().message().find("does not belong to"), std::string::npos)
      << loaded.error().message();
  fs::copy_file(two.path() + "/members/host1.key", one.path() + "/members/host1.key",
                fs::copy_options::overwrite_existing);
  loaded = LoadMemberCredentials(one.path(), "host1");
  ASSERT_FALSE(loaded);
  EXPECT_NE(loaded.error().message().find("does not verify against the cluster CA"),
            std::string::npos)
      << loaded.error().message();
}

TEST(Credentials, ExistingCaIsRefusedAndNothingWritten) {
  TempDir tmp;
  ASSERT_TRUE(CreateClusterCredentials(tmp.path(), "test", {"host1"}));
  const std::string ca_before = Slurp(tmp.path() + "/ca.crt");
  const std::string key_before = Slurp(tmp.path() + "/ca.key");
  auto again = CreateClusterCredentials(tmp.path(), "test", {"host1", "host9"});
  ASSERT_FALSE(again);
  EXPECT_NE(again.error().message().find("ca.key exists already"), std::string::npos)
      << again.error().message();
  EXPECT_EQ(Slurp(tmp.path() + "/ca.crt"), ca_before);
  EXPECT_EQ(Slurp(tmp.path() + "/ca.key"), key_before);
  EXPECT_FALSE(fs::exists(tmp.path() + "/members/host9.crt"));
  EXPECT_FALSE(fs::exists(tmp.path() + "/members/host9.key"));
}

TEST(Credentials, BadNamesAreRefusedBeforeAnythingIsWritten) {
  TempDir tmp;
  const std::string dir = tmp.path() + "/creds";
  EXPECT_FALSE(CreateClusterCredentials(dir, "Bad Name", {"h1"}));
  EXPECT_FALSE(CreateClusterCredentials(dir, "c", {"h1", "H2"}));
  EXPECT_FALSE(CreateClusterCredentials(dir, "c", {"../x"}));
  EXPECT_FALSE(CreateClusterCredentials(dir, "c", {"flurry-member"}));
  auto twice = CreateClusterCredentials(dir, "c", {"h1", "h1"});
  ASSERT_FALSE(twice);
  EXPECT_NE(twice.error().message().find("member \"h1\" is named twice"), std::string::npos)
      << twice.error().message();
  EXPECT_FALSE(fs::exists(dir));
}

TEST(Credentials, AddClusterMembers) {
  TempDir tmp;
  ASSERT_TRUE(CreateClusterCredentials(tmp.path(), "test", {"host1"}));
  const std::string ca_before = Slurp(tmp.path() + "/ca.crt");
  const std::string host1_before = Slurp(tmp.path() + "/members/host1.crt");
  auto added = AddClusterMembers(tmp.path(), {"host2", "host3"});
  ASSERT_TRUE(added) << added.error().message();
  EXPECT_EQ(Slurp(tmp.path() + "/ca.crt"), ca_before);
  EXPECT_EQ(Slurp(tmp.path() + "/members/host1.crt"), host1_before);
  Cert ca = ReadCert(tmp.path() + "/ca.crt");
  Cert host2 = ReadCert(tmp.path() + "/members/host2.crt");
  ASSERT_TRUE(ca && host2);
  EXPECT_TRUE(Verifies(ca.get(), host2.get(), X509_PURPOSE_SSL_SERVER));
  EXPECT_TRUE(Verifies(ca.get(), host2.get(), X509_PURPOSE_SSL_CLIENT));
  EXPECT_EQ(X509_check_host(host2.get(), "host2", 0, 0, nullptr), 1);
  EXPECT_EQ(ModeOf(tmp.path() + "/members/host3.key"), 0600u);

  // Existing names are refused, and nothing of the request is written.
  auto again = AddClusterMembers(tmp.path(), {"host4", "host1"});
  ASSERT_FALSE(again);
  EXPECT_NE(again.error().message().find("member \"host1\" exists already"), std::string::npos)
      << again.error().message();
  EXPECT_FALSE(fs::exists(tmp.path() + "/members/host4.crt"));
  EXPECT_EQ(Slurp(tmp.path() + "/members/host1.crt"), host1_before);

  // Without a CA there is nothing to add to.
  TempDir empty;
  EXPECT_FALSE(AddClusterMembers(empty.path(), {"host1"}));
  EXPECT_FALSE(fs::exists(empty.path() + "/members"));
}

TEST(Credentials, LoadMemberCredentials) {
  TempDir tmp;
  ASSERT_TRUE(CreateClusterCredentials(tmp.path(), "test", {"host1", "client"}));
  auto loaded = LoadMemberCredentials(tmp.path(), "host1");
  ASSERT_TRUE(loaded) << loaded.error().message();
  EXPECT_EQ(loaded->ca_pem, Slurp(tmp.path() + "/ca.crt"));
  EXPECT_EQ(loaded->cert_pem, Slurp(tmp.path() + "/members/host1.crt"));
  EXPECT_EQ(loaded->key_pem, Slurp(tmp.path() + "/members/host1.key"));

  EXPECT_FALSE(LoadMemberCredentials(tmp.path(), "host2"));  // no such member
  EXPECT_FALSE(LoadMemberCredentials(tmp.path(), "../ca"));  // not a member name

  // A key that group or others can read is refused.
  const std::string key = tmp.path() + "/members/client.key";
  ASSERT_EQ(chmod(key.c_str(), 0640), 0);
  auto open_key = LoadMemberCredentials(tmp.path(), "client");
  ASSERT_FALSE(open_key);
  EXPECT_NE(open_key.error().message().find("has mode 0640"), std::string::npos)
      << open_key.error().message();
  ASSERT_EQ(chmod(key.c_str(), 0604), 0);
  EXPECT_FALSE(LoadMemberCredentials(tmp.path(), "client"));
  ASSERT_EQ(chmod(key.c_str(), 0600), 0);
  EXPECT_TRUE(LoadMemberCredentials(tmp.path(), "client"));

  // The size cap.
  std::ofstream(tmp.path() + "/members/client.crt", std::ios::app)
      << std::string(kMaxCredentialFileBytes, '\n');
  auto big = LoadMemberCredentials(tmp.path(), "client");
  ASSERT_FALSE(big);
  EXPECT_NE(big.error().message().find("exceeds the limit"), std::string::npos)
      << big.error().message();

  // Another member's certificate under this member's name.
  fs::copy_file(tmp.path() + "/members/host1.crt", tmp.path() + "/members/client.crt",
                fs::copy_options::overwrite_existing);
  fs::copy_file(tmp.path() + "/members/host1.key", tmp.path() + "/members/client.key",
                fs::copy_options::overwrite_existing);
  auto swapped = LoadMemberCredentials(tmp.path(), "client");
  ASSERT_FALSE(swapped);
  EXPECT_NE(swapped.error().message().find("is not a certificate for \"client\""),
            std::string::npos)
      << swapped.error().message();
}

}  // namespace
}  // namespace flurry
