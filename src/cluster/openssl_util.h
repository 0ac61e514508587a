// Small OpenSSL helpers for the credentials code: unique_ptr owners for the OpenSSL objects, the
// error queue as an Error, and PEM encoding/decoding of certificates and keys in memory.
#pragma once

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <memory>
#include <string>
#include <string_view>

#include "base/error.h"

namespace flurry::cluster_internal {

template <auto Free>
struct OpenSslDeleter {
  template <typename T>
  void operator()(T* object) const {
    Free(object);
  }
};

using PkeyPtr = std::unique_ptr<EVP_PKEY, OpenSslDeleter<EVP_PKEY_free>>;
using PkeyCtxPtr = std::unique_ptr<EVP_PKEY_CTX, OpenSslDeleter<EVP_PKEY_CTX_free>>;
using X509Ptr = std::unique_ptr<X509, OpenSslDeleter<X509_free>>;
using X509ExtensionPtr = std::unique_ptr<X509_EXTENSION, OpenSslDeleter<X509_EXTENSION_free>>;
using X509StorePtr = std::unique_ptr<X509_STORE, OpenSslDeleter<X509_STORE_free>>;
using X509StoreCtxPtr = std::unique_ptr<X509_STORE_CTX, OpenSslDeleter<X509_STORE_CTX_free>>;
using BioPtr = std::unique_ptr<BIO, OpenSslDeleter<BIO_free>>;
using BignumPtr = std::unique_ptr<BIGNUM, OpenSslDeleter<BN_free>>;

// "what: <the OpenSSL error queue>", emptying the queue.
std::unexpected<Error> FailOpenSsl(std::string_view what);

std::string CertificatePem(X509* certificate);
std::string PrivateKeyPem(EVP_PKEY* key);  // unencrypted PKCS#8
Result<X509Ptr> ParseCertificatePem(std::string_view pem);
Result<PkeyPtr> ParsePrivateKeyPem(std::string_view pem);  // an encrypted key is refused

// Verifies `certificate` against the single trust root `ca` (chain, signature, validity period,
// and `purpose` when it is not 0: X509_PURPOSE_SSL_SERVER / X509_PURPOSE_SSL_CLIENT).
Result<void> VerifyAgainstCa(X509* ca, X509* certificate, int purpose);

}  // namespace flurry::cluster_internal
