// cluster_files: a clone's view of its parent's --dir, for clones on other hosts (run with
// --dir DIR:rw, DIR holding input.bin (any size), sub/note.txt = "note\n" and
// sub/later.txt = "later\n", and nothing else).
//
// usage: cluster_files CLONES [nested]
// The parent opens /input.bin, reads its first 5 bytes, and clones CLONES. Each clone
//   - reads the rest of /input.bin from the inherited fd (its own offset: 5), sums the whole
//     file (the 5 bytes the parent read, then the rest) and checks that stat() gives the size
//     it read (status bit 1),
//   - reads /sub/note.txt ("note\n", bit 2),
//   - lists "/" and finds exactly input.bin and sub (bit 4),
//   - writes /clone_N.txt and reads it back (bit 8); its sibling's file is not there (bit 16),
//   - with "nested": clones one clone of its own, which reads /sub/later.txt ("later\n") —
//     a file its parent never opened — and exits 0 if it matches (bit 32 otherwise),
// and ends with sf_exit_with(status, "SUM" in hex). The parent sums the file itself, joins and
// prints
//   parent sum=S
//   clone N: sum=S status=X      (per clone, in join order)
//   parent sees /clone_1.txt: no
#include <dirent.h>
#include <fcntl.h>
#include <flurry/sf.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static uint64_t Add(uint64_t sum, const unsigned char* data, size_t n) {
  for (size_t i = 0; i < n; ++i) sum = sum * 31 + data[i];
  return sum;
}

static int FileIs(const char* path, const char* text) {
  char buf[64] = {0};
  int fd = open(path, O_RDONLY);
  if (fd < 0) return 0;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  return n == (ssize_t)strlen(text) && strcmp(buf, text) == 0;
}

static int CloneWork(int fd, const unsigned char* first, int id, int nested) {
  static unsigned char chunk[1 << 16];
  int status = 0;
  uint64_t sum = Add(0, first, 5);
  off_t total = 5;
  ssize_t n;
  while ((n = read(fd, chunk, sizeof chunk)) > 0) {
    sum = Add(sum, chunk, (size_t)n);
    total += n;
  }
  struct stat st;
  if (n < 0 || stat("/input.bin", &st) != 0 || st.st_size != total) status |= 1;
  if (!FileIs("/sub/note.txt", "note\n")) status |= 2;
  DIR* root = opendir("/");
  int entries = 0, expected = 0;
  if (root != NULL) {
    struct dirent* e;
    while ((e = readdir(root)) != NULL) {
      if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
      ++entries;
      if (strcmp(e->d_name, "input.bin") == 0 || strcmp(e->d_name, "sub") == 0) ++expected;
    }
    closedir(root);
  }
  if (entries != 2 || expected != 2) status |= 4;
  char name[32], text[32];
  snprintf(name, sizeof name, "/clone_%d.txt", id);
  int len = snprintf(text, sizeof text, "clone %d\n", id);
  int out = open(name, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (out < 0 || write(out, text, (size_t)len) != len || close(out) != 0) status |= 8;
  if (!FileIs(name, text)) status |= 8;
  snprintf(name, sizeof name, "/clone_%d.txt", id == 1 ? 2 : 1);
  if (access(name, F_OK) == 0) status |= 16;
  if (nested) {
    sf_ticket_t t = sf_request_ticket(1);
    int child = t < 0 ? -1 : sf_clone(t);
    if (child > 0) sf_exit_with(FileIs("/sub/later.txt", "later\n") ? 0 : 1, "", 0);
    struct sf_outcome o;
    memset(&o, 0, sizeof o);
    if (child < 0 || sf_join(t, &o, 1) != 1 || o.kind != SF_OUTCOME_EXITED || o.status != 0) {
      status |= 32;
    }
  }
  char result[32];
  int r = snprintf(result, sizeof result, "%llx", (unsigned long long)sum);
  sf_exit_with(status, result, (size_t)r);
  return 0;
}

int main(int argc, char** argv) {
  const int clones = argc > 1 ? atoi(argv[1]) : 2;
  const int nested = argc > 2 && strcmp(argv[2], "nested") == 0;
  int fd = open("/input.bin", O_RDONLY);
  unsigned char first[5];
  if (fd < 0 || read(fd, first, 5) != 5) {
    perror("/input.bin");
    return 1;
  }
  sf_ticket_t t = sf_request_ticket(clones);
  if (t < 0) return 3;
  int id = sf_clone(t);
  if (id < 0) return 4;
  if (id > 0) return CloneWork(fd, first, id, nested);

  // The parent: the whole file's sum, from the start.
  static unsigned char chunk[1 << 16];
  uint64_t sum = 0;
  ssize_t n;
  if (lseek(fd, 0, SEEK_SET) != 0) return 5;
  while ((n = read(fd, chunk, sizeof chunk)) > 0) sum = Add(sum, chunk, (size_t)n);
  printf("parent sum=%llx\n", (unsigned long long)sum);
  struct sf_outcome o[64];
  char results[64][32];
  memset(o, 0, sizeof o);
  memset(results, 0, sizeof results);
  for (int i = 0; i < 64; ++i) {
    o[i].result = (unsigned long)results[i];
    o[i].result_capacity = sizeof results[i] - 1;
  }
  const int joined = sf_join(t, o, clones < 64 ? clones : 64);
  for (int i = 0; i < joined; ++i) {
    printf("clone %d: sum=%s status=%d kind=%d\n", o[i].id, results[i], o[i].status, o[i].kind);
  }
  printf("parent sees /clone_1.txt: %s\n", access("/clone_1.txt", F_OK) == 0 ? "yes" : "no");
  return 0;
}
