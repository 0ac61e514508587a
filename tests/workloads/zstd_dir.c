// zstd_dir: a program linked statically against Debian's libzstd (libzstd-dev's libzstd.a),
// part of the workload suite (tests/workloads/README.md).
//
//   zstd_dir DIR            compresses every regular file of DIR whose name does not end in
//                           ".zst" (in name order) at level 3 to DIR/NAME.zst, decompresses
//                           it again and checks the bytes; prints one line per file
//   zstd_dir DIR CLONES     the same, then (under flurry) clones CLONES workers; clone i
//                           compresses the first file at level i and returns its compressed
//                           size and checksum as a result blob; the parent compresses at each
//                           level itself and prints whether each clone's result matches
//
// Output is deterministic: the same natively and in flurry.
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <flurry/sf.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

struct Buffer {
  unsigned char* data;
  size_t size;
};

struct CloneResult {
  uint64_t compressed_size;
  uint64_t checksum;
};

static uint64_t Fnv1a(const unsigned char* p, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

static int ReadAll(const char* path, struct Buffer* out) {
  int fd = open(path, O_RDONLY);
  if (fd < 0) return -1;
  struct stat st;
  if (fstat(fd, &st) != 0) return -1;
  out->size = (size_t)st.st_size;
  out->data = malloc(out->size ? out->size : 1);
  size_t done = 0;
  while (done < out->size) {
    ssize_t n = read(fd, out->data + done, out->size - done);
    if (n <= 0) return -1;
    done += (size_t)n;
  }
  close(fd);
  return 0;
}

static int WriteAll(const char* path, const unsigned char* p, size_t n) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return -1;
  size_t done = 0;
  while (done < n) {
    ssize_t w = write(fd, p + done, n - done);
    if (w <= 0) return -1;
    done += (size_t)w;
  }
  return close(fd);
}

// Compresses `in` at `level` into a new buffer.
static struct Buffer Compress(const struct Buffer* in, int level) {
  struct Buffer out;
  out.data = malloc(ZSTD_compressBound(in->size));
  out.size = ZSTD_compress(out.data, ZSTD_compressBound(in->size), in->data, in->size, level);
  if (ZSTD_isError(out.size)) {
    fprintf(stderr, "compress: %s\n", ZSTD_getErrorName(out.size));
    exit(1);
  }
  return out;
}

static int CompareNames(const void* a, const void* b) {
  return strcmp(*(char* const*)a, *(char* const*)b);
}

static int EndsWith(const char* s, const char* suffix) {
  size_t n = strlen(s), m = strlen(suffix);
  return n >= m && strcmp(s + n - m, suffix) == 0;
}

int main(int argc, char** argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: zstd_dir DIR [CLONES]\n");
    return 2;
  }
  const char* dir = argv[1];
  const int clones = argc > 2 ? atoi(argv[2]) : 0;
  DIR* d = opendir(dir);
  if (!d) {
    fprintf(stderr, "opendir %s: %s\n", dir, strerror(errno));
    return 1;
  }
  char* names[256];
  int count = 0;
  for (struct dirent* e; (e = readdir(d)) != NULL && count < 256;) {
    if (e->d_name[0] == '.' || EndsWith(e->d_name, ".zst")) continue;
    names[count++] = strdup(e->d_name);
  }
  closedir(d);
  qsort(names, (size_t)count, sizeof names[0], CompareNames);

  struct Buffer first = {NULL, 0};
  for (int i = 0; i < count; ++i) {
    char path[4096], zpath[4200];
    snprintf(path, sizeof path, "%s/%s", dir, names[i]);
    snprintf(zpath, sizeof zpath, "%s.zst", path);
    struct Buffer in;
    if (ReadAll(path, &in) != 0) {
      fprintf(stderr, "reading %s: %s\n", path, strerror(errno));
      return 1;
    }
    struct Buffer z = Compress(&in, 3);
    if (WriteAll(zpath, z.data, z.size) != 0) {
      fprintf(stderr, "writing %s: %s\n", zpath, strerror(errno));
      return 1;
    }
    unsigned char* back = malloc(in.size ? in.size : 1);
    size_t n = ZSTD_decompress(back, in.size, z.data, z.size);
    const int same = !ZSTD_isError(n) && n == in.size && memcmp(back, in.data, in.size) == 0;
    printf("%s: %zu bytes -> %zu bytes, fnv %016llx, round trip %s\n", names[i], in.size, z.size,
           (unsigned long long)Fnv1a(z.data, z.size), same ? "ok" : "FAILED");
    free(back);
    free(z.data);
    if (i == 0) {
      first = in;
    } else {
      free(in.data);
    }
  }
  if (clones <= 0 || count == 0) return 0;

  sf_ticket_t ticket = sf_request_ticket(clones);
  const int id = sf_clone(ticket);
  if (id < 0) {
    fprintf(stderr, "sf_clone: %s\n", strerror(-id));
    return 1;
  }
  if (id > 0) {
    struct Buffer z = Compress(&first, id);
    struct CloneResult r = {z.size, Fnv1a(z.data, z.size)};
    sf_exit_with(0, &r, sizeof r);
    return 1;  // not reached
  }
  struct sf_outcome outcomes[64];
  struct CloneResult results[64];
  memset(outcomes, 0, sizeof outcomes);
  for (int i = 0; i < 64; ++i) {
    outcomes[i].result = (uint64_t)(uintptr_t)&results[i];
    outcomes[i].result_capacity = sizeof results[i];
  }
  const int joined = sf_join(ticket, outcomes, clones < 64 ? clones : 64);
  for (int i = 0; i < joined; ++i) {
    const int level = outcomes[i].id;
    struct Buffer z = Compress(&first, level);
    const int match = outcomes[i].kind == SF_OUTCOME_EXITED && outcomes[i].status == 0 &&
                      outcomes[i].result_length == sizeof(struct CloneResult) &&
                      results[i].compressed_size == z.size &&
                      results[i].checksum == Fnv1a(z.data, z.size);
    printf("clone %d (level %d): %zu bytes, matches the parent's own: %s\n", outcomes[i].id, level,
           z.size, match ? "yes" : "NO");
    free(z.data);
  }
  return 0;
}
