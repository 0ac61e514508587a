// The cluster's mutual-TLS material: a private CA and one certificate and key per member (each
// host's flurryd, and the clients that start VMs). Layout and certificate contents:
// docs/formats/cluster.md.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "base/error.h"

namespace flurry {

// Every member certificate carries this DNS name besides its own: "is a member of the cluster".
inline constexpr const char* kMemberSubjectAltName = "flurry-member";
inline constexpr size_t kMaxCredentialFileBytes = 64 << 10;

// Creates DIR (mode 0700) with ca.crt, ca.key (0600) and, per member, members/NAME.crt and
// members/NAME.key (0600).
// The CA is self-signed (CN "flurry cluster CA <cluster name>", basicConstraints CA:TRUE,
// keyCertSign, 10 years).
// Member certs: CN=NAME, subjectAltName DNS:NAME, DNS:flurry-member, extendedKeyUsage
// serverAuth+clientAuth, signed by the CA, random 128-bit serial, valid as long as the CA.
// Refuses (error, nothing written) when DIR/ca.key already exists. Names are checked with
// ValidateMemberName and must be distinct.
Result<void> CreateClusterCredentials(const std::string& dir, const std::string& cluster_name,
                                      const std::vector<std::string>& members);

// Adds members to an existing CA (for a new host); refuses names that exist (nothing written).
Result<void> AddClusterMembers(const std::string& dir, const std::vector<std::string>& members);

struct MemberCredentials {
  std::string ca_pem;
  std::string cert_pem;
  std::string key_pem;
};

// Reads DIR/ca.crt, DIR/members/NAME.crt and DIR/members/NAME.key (each at most
// kMaxCredentialFileBytes). Refuses a key file that group or others may access, a key that does
// not match the certificate, and a certificate that does not verify against the CA.
Result<MemberCredentials> LoadMemberCredentials(const std::string& dir, const std::string& member);

}  // namespace flurry
