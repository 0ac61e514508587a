// Fault service time of a remote page, measured from the client side of the page protocol
// (docs/protocols/page_server.md): one page (or a prefetch run) per request, as a restoring
// VM's fault handler asks for it. bench/page_fetch_netns.sh runs the two halves in two network
// namespaces joined by a veth pair (docs/perf.md).
//
//   page_fetch_bench serve HOST:PORT MIB     serve an MIB MiB image until killed
//   page_fetch_bench fetch HOST:PORT MIB N [PAGES]
//                                            N requests of PAGES (default 1) pages at random
//                                            places; prints mean, p50, p99 in microseconds
// Both halves use the all-zero key (docs/protocols/page_server.md: kHello).
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "net/page_client.h"
#include "net/page_server.h"

using namespace flurry;

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: page_fetch_bench serve|fetch HOST:PORT MIB [N [PAGES]]\n");
    return 2;
  }
  const std::string mode = argv[1];
  auto address = ParseHostPort(argv[2]);
  if (!address) {
    std::fprintf(stderr, "%s\n", address.error().message().c_str());
    return 2;
  }
  const uint64_t pages = std::strtoull(argv[3], nullptr, 10) * 256;
  if (mode == "serve") {
    std::vector<uint8_t> image(pages * 4096);
    for (size_t i = 0; i < image.size(); ++i) image[i] = static_cast<uint8_t>(i * 31);
    auto server = PageServer::Listen(*address);
    if (!server) {
      std::fprintf(stderr, "%s\n", server.error().message().c_str());
      return 1;
    }
    std::printf("serving %s\n", server->address().ToString().c_str());
    std::fflush(stdout);
    std::vector<uint8_t> descriptor;
    int forever[2];
    if (pipe(forever) != 0) return 1;
    auto served = server->Serve(
        descriptor, pages,
        [&](uint64_t gpa, void* dst, uint64_t len) -> Result<void> {
          std::memcpy(dst, image.data() + gpa, len);
          return {};
        },
        forever[0], PageKey{});  // the write end stays open: serve until killed
    return served ? 0 : 1;
  }
  const int n = argc > 4 ? std::atoi(argv[4]) : 10000;
  const uint32_t run = argc > 5 ? static_cast<uint32_t>(std::atoi(argv[5])) : 1;
  auto client = PageClient::Connect(PageServerAddress{*address, PageKey{}});
  if (!client) {
    std::fprintf(stderr, "%s\n", client.error().message().c_str());
    return 1;
  }
  std::vector<uint8_t> buffer(run * 4096);
  std::mt19937_64 random(42);
  std::vector<double> us;
  us.reserve(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    const uint64_t page = random() % (pages - run);
    const auto start = std::chrono::steady_clock::now();
    if (auto got = (*client)->Fetch(page, run, buffer.data()); !got) {
      std::fprintf(stderr, "%s\n", got.error().message().c_str());
      return 1;
    }
    us.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start)
                     .count());
  }
  std::sort(us.begin(), us.end());
  double sum = 0;
  for (double v : us) sum += v;
  std::printf("requests=%d pages_per_request=%u mean_us=%.1f p50_us=%.1f p99_us=%.1f\n", n, run,
              sum / n, us[us.size() / 2], us[us.size() * 99 / 100]);
  return 0;
}
