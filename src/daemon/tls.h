// Mutual TLS for the control plane: both ends of every flurryd call present a certificate
// signed by the cluster's CA (flurry cluster init, docs/formats/cluster.md) and check the
// other's. A client also checks that the daemon's certificate names the host it meant to reach.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

namespace flurry {

struct TlsIdentity {
  std::string ca_pem;    // the cluster CA: the only trust root
  std::string cert_pem;  // this member's certificate
  std::string key_pem;   // and its private key
};

// A daemon: requires and verifies a client certificate from the cluster's CA.
std::shared_ptr<grpc::ServerCredentials> DaemonCredentials(const TlsIdentity& identity);

// A member calling the daemon of host `host_name` (checked against the daemon's certificate).
std::shared_ptr<grpc::Channel> DaemonChannel(const TlsIdentity& identity,
                                             const std::string& address,
                                             const std::string& host_name);

}  // namespace flurry
