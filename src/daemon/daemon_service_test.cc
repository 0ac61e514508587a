#include "daemon/daemon_service.h"

#include <gtest/gtest.h>

namespace flurry {
namespace {

namespace v1 = flurry::daemon::v1;

// A request that passes every check but the one a test breaks.
v1::RunClonesRequest ValidRequest() {
  v1::RunClonesRequest request;
  request.set_page_server("10.0.0.1:4000");
  request.set_page_server_key(std::string(32, 'a'));
  request.set_family_id(0xabc);
  request.add_clone_ids(7);
  return request;
}

// With no slot at all, a request that passed the checks is refused for want of slots: no clone
// is started and the call's context and writer are never used.
grpc::Status Check(const v1::RunClonesRequest& request) {
  DaemonConfig config;
  config.name = "host1";
  config.slots = 0;
  DaemonService service(config);
  return service.RunClones(nullptr, &request, nullptr);
}

TEST(DaemonService, AvoidIsCheckedBeforeItReachesACommandLine) {
  for (const char* bad : {"zero;reboot", "none,zero", "zero,", "ZERO", "--help", "all,all"}) {
    v1::RunClonesRequest request = ValidRequest();
    request.set_avoid(bad);
    const grpc::Status status = Check(request);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << bad;
    EXPECT_NE(status.error_message().find("avoid"), std::string::npos) << status.error_message();
  }
  for (const char* good : {"", "all", "none", "fresh", "overwritten,zero"}) {
    v1::RunClonesRequest request = ValidRequest();
    request.set_avoid(good);
    EXPECT_EQ(Check(request).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
        << "'" << good << "': " << Check(request).error_message();
  }
}

TEST(DaemonService, PrefetchPagesAreChecked) {
  v1::RunClonesRequest request = ValidRequest();
  request.set_prefetch_pages(65);
  EXPECT_EQ(Check(request).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST(DaemonService, RamBytesAreChecked) {
  for (uint64_t bad : {uint64_t{3} << 20, uint64_t{1}, (uint64_t{64} << 30) + (2 << 20)}) {
    v1::RunClonesRequest request = ValidRequest();
    request.set_ram_bytes(bad);
    EXPECT_EQ(Check(request).error_code(), grpc::StatusCode::INVALID_ARGUMENT) << bad;
  }
  for (uint64_t good : {uint64_t{0}, uint64_t{4} << 20, uint64_t{64} << 30}) {
    v1::RunClonesRequest request = ValidRequest();
    request.set_ram_bytes(good);
    EXPECT_EQ(Check(request).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << good;
  }
}

}  // namespace
}  // namespace flurry
