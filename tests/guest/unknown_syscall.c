// unknown_syscall: calls syscalls flurry does not implement and prints the errno of each.
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static void Try(long nr) {
  errno = 0;
  long r = syscall(nr, 1, 0, 0, 0, 0, 0);
  if (r == -1)
    printf("syscall %ld: %s\n", nr, strerrorname_np(errno));
  else
    printf("syscall %ld: returned %ld\n", nr, r);
}

int main(void) {
  Try(425);  // io_uring_setup
  Try(425);  // again: reported only once
  Try(999);  // no such syscall at all
  Try(999);
  return 0;
}
