#include "cluster/openssl_util.h"

#include <openssl/err.h>
#include <openssl/pem.h>

namespace flurry::cluster_internal {

std::unexpected<Error> FailOpenSsl(std::string_view what) {
  std::string detail;
  while (const unsigned long code = ERR_get_error()) {
    char text[256];
    ERR_error_string_n(code, text, sizeof text);
    if (!detail.empty()) detail += "; ";
    detail += text;
  }
  if (detail.empty()) return Fail("{}", what);
  return Fail("{}: {}", what, detail);
}

namespace {

std::string BioContents(BIO* bio) {
  char* data = nullptr;
  const long size = BIO_get_mem_data(bio, &data);
  return size > 0 ? std::string(data, static_cast<size_t>(size)) : std::string();
}

// A passphrase callback that supplies none: OpenSSL must never prompt on the terminal.
int NoPassphrase(char*, int, int, void*) { return -1; }

}  // namespace

std::string CertificatePem(X509* certificate) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509(bio.get(), certificate) != 1) return {};
  return BioContents(bio.get());
}

std::string PrivateKeyPem(EVP_PKEY* key) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio ||
      PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    return {};
  }
  return BioContents(bio.get());
}

Result<X509Ptr> ParseCertificatePem(std::string_view pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return FailOpenSsl("BIO_new_mem_buf");
  X509Ptr certificate(PEM_read_bio_X509(bio.get(), nullptr, NoPassphrase, nullptr));
  if (!certificate) return FailOpenSsl("not a PEM certificate");
  return certificate;
}

Result<PkeyPtr> ParsePrivateKeyPem(std::string_view pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return FailOpenSsl("BIO_new_mem_buf");
  PkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, NoPassphrase, nullptr));
  if (!key) return FailOpenSsl("not an unencrypted PEM private key");
  return key;
}

Result<void> VerifyAgainstCa(X509* ca, X509* certificate, int purpose) {
  X509StorePtr store(X509_STORE_new());
  X509StoreCtxPtr context(X509_STORE_CTX_new());
  if (!store || !context || X509_STORE_add_cert(store.get(), ca) != 1 ||
      X509_STORE_CTX_init(context.get(), store.get(), certificate, nullptr) != 1) {
    return FailOpenSsl("setting up certificate verification");
  }
  if (purpose != 0 && X509_STORE_CTX_set_purpose(context.get(), purpose) != 1) {
    return FailOpenSsl("setting the verification purpose");
  }
  if (X509_verify_cert(context.get()) != 1) {
    const int error = X509_STORE_CTX_get_error(context.get());
    ERR_clear_error();
    return Fail("the certificate does not verify against the cluster CA: {}",
                X509_verify_cert_error_string(error));
  }
  return {};
}

}  // namespace flurry::cluster_internal
