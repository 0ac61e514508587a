// oom: allocates 1 MiB blocks with new until std::bad_alloc, catches it, frees everything and
// checks that allocation works again.
#include <cstdio>
#include <cstring>
#include <new>
#include <vector>

int main() {
  std::vector<char*> blocks;
  blocks.reserve(1 << 20);
  size_t count = 0;
  bool caught = false;
  try {
    for (;;) {
      char* p = new char[1 << 20];
      std::memset(p, 0x5a, 1 << 20);  // touch it, and keep the allocation observable
      blocks.push_back(p);
      count++;
      if (count > (1u << 20)) break;  // 1 TiB: memory is clearly not limited
    }
  } catch (const std::bad_alloc&) {
    caught = true;
  }
  std::fprintf(stderr, "oom: allocated %zu MiB\n", count);
  if (!caught) {
    std::printf("no bad_alloc after %zu MiB\n", count);
    return 1;
  }
  std::printf("bad_alloc caught\n");
  for (char* p : blocks) delete[] p;
  blocks.clear();
  char* again = new char[1 << 20];
  std::memset(again, 1, 1 << 20);
  std::printf("allocation after free ok\n");
  delete[] again;
  return 0;
}
