#include "cluster/credentials.h"

#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <set>

#include "base/file_io.h"
#include "cluster/cluster_file.h"
#include "cluster/openssl_util.h"
#include "cluster/quote.h"

namespace flurry {
namespace {

using namespace cluster_internal;

constexpr long kCaValidityDays = 3653;       // 10 years, leap days included
constexpr long kClockSkewSeconds = 60 * 60;  // notBefore is an hour back: hosts' clocks differ
constexpr mode_t kPrivateMode = 0600;
constexpr mode_t kPublicMode = 0644;

struct Issued {
  std::string name;
  std::string cert_pem;
  std::string key_pem;
};

std::string MemberPath(const std::string& dir, const std::string& name, const char* suffix) {
  return fmt::format("{}/members/{}{}", dir, name, suffix);
}

// Whether `path` exists (as anything, a dangling symlink included).
Result<bool> Exists(const std::string& path) {
  struct stat st {};
  if (lstat(path.c_str(), &st) == 0) return true;
  if (errno == ENOENT) return false;
  return FailErrno(path);
}

Result<void> ValidateMembers(const std::vector<std::string>& members) {
  std::set<std::string_view> seen;
  for (const std::string& member : members) {
    FLURRY_TRY_CTX(ValidateMemberName(member), "member name");
    if (!seen.insert(member).second) return Fail("member {} is named twice", Quote(member));
  }
  return {};
}

Result<PkeyPtr> GenerateKey() {
  PkeyCtxPtr context(EVP_PKEY_CTX_new_from_name(nullptr, "EC", nullptr));
  if (!context || EVP_PKEY_keygen_init(context.get()) <= 0 ||
      EVP_PKEY_CTX_set_group_name(context.get(), "P-256") <= 0) {
    return FailOpenSsl("setting up EC P-256 key generation");
  }
  EVP_PKEY* key = nullptr;
  if (EVP_PKEY_generate(context.get(), &key) <= 0) return FailOpenSsl("generating a P-256 key");
  return PkeyPtr(key);
}

// A version 3 certificate for `key` with subject CN=`common_name`, a random positive 128-bit
// serial and notBefore an hour ago; issuer, notAfter, extensions and signature are the caller's.
Result<X509Ptr> NewCertificate(const std::string& common_name, EVP_PKEY* key) {
  X509Ptr certificate(X509_new());
  if (!certificate || X509_set_version(certificate.get(), X509_VERSION_3) != 1) {
    return FailOpenSsl("X509_new");
  }
  unsigned char serial[16];
  BignumPtr number;
  do {
    if (RAND_bytes(serial, sizeof serial) != 1) return FailOpenSsl("random serial number");
    number.reset(BN_bin2bn(serial, sizeof serial, nullptr));
    if (!number) return FailOpenSsl("BN_bin2bn");
  } while (BN_is_zero(number.get()));
  if (BN_to_ASN1_INTEGER(number.get(), X509_get_serialNumber(certificate.get())) == nullptr) {
    return FailOpenSsl("setting the serial number");
  }
  X509_NAME* subject = X509_get_subject_name(certificate.get());
  if (X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_UTF8,
                                 reinterpret_cast<const unsigned char*>(common_name.c_str()), -1,
                                 -1, 0) != 1 ||
      X509_set_pubkey(certificate.get(), key) != 1 ||
      X509_gmtime_adj(X509_getm_notBefore(certificate.get()), -kClockSkewSeconds) == nullptr) {
    return FailOpenSsl("filling in the certificate");
  }
  return certificate;
}

// Adds the extension `nid` written in OpenSSL's config syntax ("critical,CA:TRUE").
Result<void> AddExtension(X509* certificate, X509* issuer, int nid, const char* value) {
  X509V3_CTX context;
  X509V3_set_ctx(&context, issuer, certificate, nullptr, nullptr, 0);
  X509ExtensionPtr extension(X509V3_EXT_nconf_nid(nullptr, &context, nid, value));
  if (!extension || X509_add_ext(certificate, extension.get(), -1) != 1) {
    return FailOpenSsl(fmt::format("adding the extension {} = {}", OBJ_nid2sn(nid), value));
  }
  return {};
}

struct Ca {
  X509Ptr certificate;
  PkeyPtr key;
};

Result<Ca> CreateCa(const std::string& cluster_name) {
  PkeyPtr key = FLURRY_TRY(GenerateKey());
  X509Ptr ca =
      FLURRY_TRY(NewCertificate(fmt::format("flurry cluster CA {}", cluster_name), key.get()));
  if (X509_set_issuer_name(ca.get(), X509_get_subject_name(ca.get())) != 1 ||
      X509_time_adj_ex(X509_getm_notAfter(ca.get()), kCaValidityDays, 0, nullptr) == nullptr) {
    return FailOpenSsl("filling in the CA certificate");
  }
  FLURRY_TRY(AddExtension(ca.get(), ca.get(), NID_basic_constraints, "critical,CA:TRUE"));
  FLURRY_TRY(AddExtension(ca.get(), ca.get(), NID_key_usage, "critical,keyCertSign,cRLSign"));
  FLURRY_TRY(AddExtension(ca.get(), ca.get(), NID_subject_key_identifier, "hash"));
  if (X509_sign(ca.get(), key.get(), EVP_sha256()) <= 0) return FailOpenSsl("signing the CA");
  return Ca{std::move(ca), std::move(key)};
}

Result<Issued> IssueMember(const Ca& ca, const std::string& name) {
  PkeyPtr key = FLURRY_TRY(GenerateKey());
  X509Ptr certificate = FLURRY_TRY(NewCertificate(name, key.get()));
  X509* issuer = ca.certificate.get();
  // A member certificate expires with the CA: it is useless after that anyway.
  if (X509_set_issuer_name(certificate.get(), X509_get_subject_name(issuer)) != 1 ||
      X509_set1_notAfter(certificate.get(), X509_get0_notAfter(issuer)) != 1) {
    return FailOpenSsl("filling in the member certificate");
  }
  const std::string alt_names = fmt::format("DNS:{},DNS:{}", name, kMemberSubjectAltName);
  FLURRY_TRY(AddExtension(certificate.get(), issuer, NID_basic_constraints, "critical,CA:FALSE"));
  FLURRY_TRY(AddExtension(certificate.get(), issuer, NID_key_usage, "critical,digitalSignature"));
  FLURRY_TRY(AddExtension(certificate.get(), issuer, NID_ext_key_usage, "serverAuth,clientAuth"));
  FLURRY_TRY(AddExtension(certificate.get(), issuer, NID_subject_alt_name, alt_names.c_str()));
  FLURRY_TRY(AddExtension(certificate.get(), issuer, NID_subject_key_identifier, "hash"));
  FLURRY_TRY(AddExtension(certificate.get(), issuer, NID_authority_key_identifier, "keyid:always"));
  if (X509_sign(certificate.get(), ca.key.get(), EVP_sha256()) <= 0) {
    return FailOpenSsl("signing the member certificate");
  }
  Issued issued{name, CertificatePem(certificate.get()), PrivateKeyPem(key.get())};
  if (issued.cert_pem.empty() || issued.key_pem.empty()) return FailOpenSsl("PEM encoding");
  return issued;
}

Result<std::vector<Issued>> IssueMembers(const Ca& ca, const std::vector<std::string>& members) {
  std::vector<Issued> issued;
  for (const std::string& member : members) {
    issued.push_back(FLURRY_TRY_CTX(IssueMember(ca, member), fmt::format("member {}", member)));
  }
  return issued;
}

// Creates `path` with `mode`; an existing directory is fine (and gets `mode`). Sets *created.
Result<void> MakeDirectory(const std::string& path, mode_t mode, bool* created) {
  *created = mkdir(path.c_str(), mode) == 0;
  if (*created) return {};
  if (errno != EEXIST) return FailErrno(fmt::format("{}: mkdir", path));
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) return FailErrno(path);
  if (!S_ISDIR(st.st_mode)) return Fail("{}: not a directory", path);
  if (chmod(path.c_str(), mode) != 0) return FailErrno(fmt::format("{}: chmod", path));
  return {};
}

// Writes files in order, exclusively unless noted; on a failure removes the ones it wrote.
struct FileToWrite {
  std::string path;
  std::string content;
  mode_t mode;
};
Result<void> WriteAllOrNothing(const std::vector<FileToWrite>& files) {
  for (size_t i = 0; i < files.size(); ++i) {
    auto written = WriteFileAtomic(files[i].path, files[i].content, files[i].mode, true);
    if (!written) {
      for (size_t j = 0; j < i; ++j) unlink(files[j].path.c_str());
      return written;
    }
  }
  return {};
}

void AppendMemberFiles(const std::string& dir, const std::vector<Issued>& issued,
                       std::vector<FileToWrite>& files) {
  for (const Issued& member : issued) {
    files.push_back({MemberPath(dir, member.name, ".key"), member.key_pem, kPrivateMode});
    files.push_back({MemberPath(dir, member.name, ".crt"), member.cert_pem, kPublicMode});
  }
}

}  // namespace

Result<void> CreateClusterCredentials(const std::string& dir, const std::string& cluster_name,
                                      const std::vector<std::string>& members) {
  const std::string context = fmt::format("cluster credentials {}", dir);
  FLURRY_TRY_CTX(ValidateMemberName(cluster_name), fmt::format("{}: cluster name", context));
  FLURRY_TRY_CTX(ValidateMembers(members), context);
  if (FLURRY_TRY_CTX(Exists(dir + "/ca.key"), context)) {
    return Fail("{}: ca.key exists already: refusing to replace the cluster's CA", context);
  }
  // Everything is made in memory first: a failure here writes nothing.
  const Ca ca = FLURRY_TRY_CTX(CreateCa(cluster_name), context);
  const std::vector<Issued> issued = FLURRY_TRY_CTX(IssueMembers(ca, members), context);

  // ca.key first: written exclusively, it is the lock against a concurrent creation.
  std::vector<FileToWrite> files{
      {dir + "/ca.key", PrivateKeyPem(ca.key.get()), kPrivateMode},
      {dir + "/ca.crt", CertificatePem(ca.certificate.get()), kPublicMode}};
  if (files[0].content.empty() || files[1].content.empty()) {
    return FailOpenSsl(fmt::format("{}: PEM encoding of the CA", context));
  }
  AppendMemberFiles(dir, issued, files);
  bool created_dir = false;
  bool created_members = false;
  FLURRY_TRY(MakeDirectory(dir, 0700, &created_dir));
  auto written = MakeDirectory(dir + "/members", 0700, &created_members);
  if (written) written = WriteAllOrNothing(files);
  if (!written) {
    if (created_members) rmdir((dir + "/members").c_str());
    if (created_dir) rmdir(dir.c_str());
    return std::unexpected(std::move(written.error()));
  }
  return {};
}

Result<void> AddClusterMembers(const std::string& dir, const std::vector<std::string>& members) {
  const std::string context = fmt::format("cluster credentials {}", dir);
  FLURRY_TRY_CTX(ValidateMembers(members), context);
  const std::string ca_pem =
      FLURRY_TRY(ReadSmallFile(dir + "/ca.crt", {.max_bytes = kMaxCredentialFileBytes}));
  const std::string key_pem = FLURRY_TRY(ReadSmallFile(
      dir + "/ca.key", {.max_bytes = kMaxCredentialFileBytes, .require_private = true}));
  Ca ca;
  ca.certificate = FLURRY_TRY_CTX(ParseCertificatePem(ca_pem), dir + "/ca.crt");
  ca.key = FLURRY_TRY_CTX(ParsePrivateKeyPem(key_pem), dir + "/ca.key");
  if (X509_check_private_key(ca.certificate.get(), ca.key.get()) != 1) {
    return FailOpenSsl(fmt::format("{}: ca.key does not belong to ca.crt", context));
  }
  for (const std::string& member : members) {
    for (const char* suffix : {".crt", ".key"}) {
      if (FLURRY_TRY(Exists(MemberPath(dir, member, suffix)))) {
        return Fail("{}: member {} exists already", context, Quote(member));
      }
    }
  }
  const std::vector<Issued> issued = FLURRY_TRY_CTX(IssueMembers(ca, members), context);
  std::vector<FileToWrite> files;
  AppendMemberFiles(dir, issued, files);
  bool created_members = false;
  FLURRY_TRY(MakeDirectory(dir + "/members", 0700, &created_members));
  return WriteAllOrNothing(files);
}

Result<MemberCredentials> LoadMemberCredentials(const std::string& dir, const std::string& member) {
  const std::string context = fmt::format("credentials of member {}", Quote(member));
  FLURRY_TRY_CTX(ValidateMemberName(member), context);
  MemberCredentials credentials;
  const std::string cert_path = MemberPath(dir, member, ".crt");
  const std::string key_path = MemberPath(dir, member, ".key");
  credentials.ca_pem = FLURRY_TRY_CTX(
      ReadSmallFile(dir + "/ca.crt", {.max_bytes = kMaxCredentialFileBytes}), context);
  credentials.cert_pem =
      FLURRY_TRY_CTX(ReadSmallFile(cert_path, {.max_bytes = kMaxCredentialFileBytes}), context);
  credentials.key_pem = FLURRY_TRY_CTX(
      ReadSmallFile(key_path, {.max_bytes = kMaxCredentialFileBytes, .require_private = true}),
      context);

  X509Ptr ca = FLURRY_TRY_CTX(ParseCertificatePem(credentials.ca_pem),
                              fmt::format("{}: {}/ca.crt", context, dir));
  X509Ptr certificate =
      FLURRY_TRY_CTX(ParseCertificatePem(credentials.cert_pem), context + ": " + cert_path);
  PkeyPtr key = FLURRY_TRY_CTX(ParsePrivateKeyPem(credentials.key_pem), context + ": " + key_path);
  if (X509_check_private_key(certificate.get(), key.get()) != 1) {
    return FailOpenSsl(fmt::format("{}: {} does not belong to {}", context, key_path, cert_path));
  }
  FLURRY_TRY_CTX(VerifyAgainstCa(ca.get(), certificate.get(), 0), context + ": " + cert_path);
  if (X509_check_host(certificate.get(), member.data(), member.size(), 0, nullptr) != 1) {
    return Fail("{}: {} is not a certificate for {}", context, cert_path, Quote(member));
  }
  return credentials;
}

}  // namespace flurry
