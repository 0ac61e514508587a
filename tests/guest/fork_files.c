// fork_files: open files and a writable --dir across sf_clone (run with --dir DIR:rw, DIR
// holding data.txt with "0123456789ABCDEFGHIJ").
//
// The parent opens /data.txt, reads 5 bytes, and clones 2. Each clone
//   - reads 5 bytes from the inherited fd (from its own copy of the offset: "56789"),
//   - writes /clone_N.txt ("clone N\n") and reads it back,
//   - checks that its sibling's file does not exist (each clone has a private view of --dir),
// and returns what it read with exit status = a bit mask of failed checks (1: offset, 2: read,
// 4: write, 8: read back, 16: sibling's file visible). After sf_join the parent reads its next
// 5 bytes (still "56789": the clones did not move its offset) and looks for the clones' files
// (its view does not have them). Output (parent only):
//   parent read: 01234
//   clone N: read 56789, status 0        (per clone)
//   parent read after join: 56789
//   parent sees /clone_1.txt: no
//   parent sees /clone_2.txt: no
//
// With argv[1] = "after", the parent reads its next 5 bytes right after sf_clone returns (the
// clones must still read "56789": the offset is the one at sf_clone), printing
// "parent read right after sf_clone: 56789" before the clone lines and no "after join" line.
// With argv[1] = "checkpoint", the parent checkpoints after its first read, reads 5 more
// ("56789"), then creates 2 clones from the checkpoint; they resume inside
// sf_checkpoint_parent and read from the checkpoint's offset ("56789" again). Output:
//   parent read: 01234
//   parent read after checkpoint: 56789
//   clone N: read 56789, status 0        (per clone)
#include <fcntl.h>
#include <flurry/sf.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int g_fd;

// A clone reads its next 5 bytes (expecting offset 5) and returns them.
static void CloneReads(void) {
  char mine[6] = {0};
  int status = 0;
  if (lseek(g_fd, 0, SEEK_CUR) != 5) status |= 1;
  if (read(g_fd, mine, 5) != 5) status |= 2;
  sf_exit_with(status, mine, 5);
}

static void JoinAndPrint(sf_ticket_t t) {
  struct sf_outcome o[2];
  char got[2][6];
  memset(o, 0, sizeof o);
  memset(got, 0, sizeof got);
  for (int i = 0; i < 2; ++i) {
    o[i].result = (unsigned long)got[i];
    o[i].result_capacity = 5;
  }
  int n = sf_join(t, o, 2);
  for (int i = 0; i < n; ++i)
    printf("clone %d: read %s, status %d\n", o[i].id, got[i], o[i].status);
}

int main(int argc, char** argv) {
  const char* mode = argc > 1 ? argv[1] : "dir";
  int fd = open("/data.txt", O_RDONLY);
  if (fd < 0) {
    perror("open /data.txt");
    return 1;
  }
  char buf[6] = {0};
  if (read(fd, buf, 5) != 5) return 1;
  printf("parent read: %s\n", buf);
  g_fd = fd;
  if (strcmp(mode, "checkpoint") == 0) {
    sf_checkpoint_t cp;
    int r = sf_checkpoint_parent(&cp);
    if (r > 0) CloneReads();
    if (r < 0 || read(fd, buf, 5) != 5) return 1;
    printf("parent read after checkpoint: %s\n", buf);
    sf_ticket_t t = sf_request_ticket(2);
    if (sf_create_clones(cp, t) != 0) return 1;
    JoinAndPrint(t);
    return 0;
  }
  if (strcmp(mode, "after") == 0) {
    sf_ticket_t t = sf_request_ticket(2);
    int id = sf_clone(t);
    if (id > 0) CloneReads();
    if (id < 0 || read(fd, buf, 5) != 5) return 1;
    printf("parent read right after sf_clone: %s\n", buf);
    JoinAndPrint(t);
    return 0;
  }
  sf_ticket_t t = sf_request_ticket(2);
  int id = sf_clone(t);
  if (id > 0) {
    char mine[6] = {0};
    int status = 0;
    if (lseek(fd, 0, SEEK_CUR) != 5) status |= 1;
    if (read(fd, mine, 5) != 5) status |= 2;
    char name[32], text[32], back[32] = {0};
    snprintf(name, sizeof name, "/clone_%d.txt", id);
    int n = snprintf(text, sizeof text, "clone %d\n", id);
    int out = open(name, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (out < 0 || write(out, text, (size_t)n) != n || close(out) != 0) status |= 4;
    int in = open(name, O_RDONLY);
    if (in < 0 || read(in, back, sizeof back - 1) != n || strcmp(back, text) != 0) status |= 8;
    if (in >= 0) close(in);
    char sibling[32];
    snprintf(sibling, sizeof sibling, "/clone_%d.txt", id == 1 ? 2 : 1);
    if (access(sibling, F_OK) == 0) status |= 16;
    sf_exit_with(status, mine, 5);
  }
  JoinAndPrint(t);
  memset(buf, 0, sizeof buf);
  if (read(fd, buf, 5) != 5) return 1;
  printf("parent read after join: %s\n", buf);
  printf("parent sees /clone_1.txt: %s\n", access("/clone_1.txt", F_OK) == 0 ? "yes" : "no");
  printf("parent sees /clone_2.txt: %s\n", access("/clone_2.txt", F_OK) == 0 ? "yes" : "no");
  return 0;
}
