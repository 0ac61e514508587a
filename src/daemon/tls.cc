#include "daemon/tls.h"

namespace flurry {

std::shared_ptr<grpc::ServerCredentials> DaemonCredentials(const TlsIdentity& identity) {
  grpc::SslServerCredentialsOptions options(
      GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  options.pem_root_certs = identity.ca_pem;
  options.pem_key_cert_pairs.push_back({identity.key_pem, identity.cert_pem});
  return grpc::SslServerCredentials(options);
}

std::shared_ptr<grpc::Channel> DaemonChannel(const TlsIdentity& identity,
                                             const std::string& address,
                                             const std::string& host_name) {
  grpc::SslCredentialsOptions options;
  options.pem_root_certs = identity.ca_pem;
  options.pem_private_key = identity.key_pem;
  options.pem_cert_chain = identity.cert_pem;
  grpc::ChannelArguments arguments;
  // The daemon's certificate must name the host (subjectAltName DNS:<host name>).
  arguments.SetSslTargetNameOverride(host_name);
  // A host that vanishes (no RST: its network is gone) is noticed within a few seconds.
  arguments.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 1000);
  arguments.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 2000);
  arguments.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  arguments.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  // A stand-in makes one call per host (a spare's channels, connected ahead, then idle with
  // these pings, reconnect within a second): no reconnect backoff worth waiting for.
  arguments.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 200);
  arguments.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  return grpc::CreateCustomChannel(address, grpc::SslCredentials(options), arguments);
}

}  // namespace flurry
