// files MODE: exercises the --dir root. MODE is "ro" (the root is mounted read-only) or "rw".
//
// Expects the root prepared by the integration test:
//   /hello.txt      "file content\n"
//   /sub/a.txt      "in sub\n"
//   /to_delete.txt  anything
//   /escape_link -> ../sentinel          (relative symlink leaving the root)
//   /abs_link    -> <host path of sentinel, absolute>
//   /dir_link    -> ..                   (symlink to the root's host parent)
// and, on the host, a file "sentinel" next to the root that the guest must never reach.
//
// Output lines:
//   "read PATH: <first line>" / "read PATH: ERRNO"
//   "create|mkdir|unlink|open-write PATH: ok|ERRNO"
//   "ls PATH: name name ..." (sorted, without . and ..)
//   "escape PATH: denied" or "escape PATH: OPENED <content>" (an escape that worked)
//   "escape-write PATH: ok|ERRNO" and "escape-ls PATH: ..." (checked by the test on the host)
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char* Err(int e) { return strerrorname_np(e) ? strerrorname_np(e) : "E?"; }

// Reads the first line of PATH into out (without the newline); returns 0 or an errno.
static int ReadFirstLine(const char* path, char* out, size_t out_size) {
  int fd = open(path, O_RDONLY);
  if (fd < 0) return errno;
  ssize_t n = read(fd, out, out_size - 1);
  int err = n < 0 ? errno : 0;
  close(fd);
  if (err != 0) return err;
  out[n] = '\0';
  char* nl = strchr(out, '\n');
  if (nl != NULL) *nl = '\0';
  return 0;
}

static void Read(const char* path) {
  char buf[256];
  int err = ReadFirstLine(path, buf, sizeof buf);
  printf("read %s: %s\n", path, err == 0 ? buf : Err(err));
}

static int CompareStrings(const void* a, const void* b) {
  return strcmp(*(char* const*)a, *(char* const*)b);
}

static void List(const char* label, const char* path) {
  DIR* d = opendir(path);
  if (d == NULL) {
    printf("%s %s: %s\n", label, path, Err(errno));
    return;
  }
  char* names[256];
  int count = 0;
  struct dirent* e;
  while ((e = readdir(d)) != NULL && count < 256) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    names[count++] = strdup(e->d_name);
  }
  closedir(d);
  qsort(names, (size_t)count, sizeof names[0], CompareStrings);
  printf("%s %s:", label, path);
  for (int i = 0; i < count; i++) {
    printf(" %s", names[i]);
    free(names[i]);
  }
  printf("\n");
}

static void Create(const char* label, const char* path, const char* content) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) {
    printf("%s %s: %s\n", label, path, Err(errno));
    return;
  }
  ssize_t n = write(fd, content, strlen(content));
  int err = n < 0 ? errno : 0;
  close(fd);
  printf("%s %s: %s\n", label, path, err == 0 ? "ok" : Err(err));
}

static void OpenWrite(const char* label, const char* path, int flags) {
  int fd = open(path, O_WRONLY | flags);
  if (fd < 0) {
    printf("%s %s: %s\n", label, path, Err(errno));
    return;
  }
  ssize_t n = write(fd, "PWNED\n", 6);
  int err = n < 0 ? errno : 0;
  close(fd);
  printf("%s %s: %s\n", label, path, err == 0 ? "ok" : Err(err));
}

static void Mkdir(const char* label, const char* path) {
  printf("%s %s: %s\n", label, path, mkdir(path, 0755) == 0 ? "ok" : Err(errno));
}

static void Unlink(const char* label, const char* path) {
  printf("%s %s: %s\n", label, path, unlink(path) == 0 ? "ok" : Err(errno));
}

static void EscapeRead(const char* path) {
  char buf[256];
  int err = ReadFirstLine(path, buf, sizeof buf);
  if (err == 0) {
    printf("escape %s: OPENED %s\n", path, buf);
  } else {
    printf("escape %s: denied\n", path);
    fprintf(stderr, "files: escape %s: %s\n", path, Err(err));
  }
}

static void EscapeReads(void) {
  EscapeRead("../sentinel");
  EscapeRead("/../sentinel");
  EscapeRead("/sub/../../sentinel");
  EscapeRead("../../../../../../../etc/passwd");
  EscapeRead("/etc/passwd");
  EscapeRead("escape_link");
  EscapeRead("abs_link");
  EscapeRead("dir_link/sentinel");
  EscapeRead("/dir_link/../sentinel");
  List("escape-ls", "/..");
  List("escape-ls", "dir_link");
}

int main(int argc, char** argv) {
  if (argc != 2 || (strcmp(argv[1], "ro") != 0 && strcmp(argv[1], "rw") != 0)) {
    printf("usage: files ro|rw\n");
    return 2;
  }
  int rw = strcmp(argv[1], "rw") == 0;

  char cwd[PATH_MAX];
  printf("cwd: %s\n", getcwd(cwd, sizeof cwd) != NULL ? cwd : Err(errno));
  Read("/hello.txt");
  Read("hello.txt");
  Read("/sub/a.txt");
  Read("/sub/../hello.txt");
  Read("/missing.txt");
  List("ls", "/");
  List("ls", "/sub");

  // Writes: EROFS in ro mode.
  Create("create", "/new.txt", "written by guest\n");
  if (rw) Read("/new.txt");
  OpenWrite("open-write", "/hello.txt", O_APPEND);
  Mkdir("mkdir", "/newdir");
  if (rw) Create("create", "/newdir/inner.txt", "inner\n");
  Unlink("unlink", "/to_delete.txt");
  if (rw) {
    List("ls", "/");
    List("ls", "/newdir");
  }

  // Escapes: reads first (nothing may be created inside the root yet that would shadow them).
  EscapeReads();
  if (rw) {
    Create("escape-write", "../escaped1.txt", "PWNED\n");
    Create("escape-write", "/sub/../../escaped2.txt", "PWNED\n");
    Create("escape-write", "dir_link/escaped3.txt", "PWNED\n");
    OpenWrite("escape-write", "escape_link", O_TRUNC);
    OpenWrite("escape-write", "abs_link", O_APPEND);
    Mkdir("escape-write", "../escaped_dir");
    Unlink("escape-write", "../sentinel");
    Unlink("escape-write", "dir_link/sentinel");
  }
  printf("done\n");
  return 0;
}
