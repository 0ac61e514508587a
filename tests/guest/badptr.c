// badptr: passes bad pointers to syscalls and prints the errno of each (all must be EFAULT).
// Expects at least 30 bytes on stdin, so a read that wrongly succeeds does not block.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static void Report(const char* what, long r) {
  if (r == -1)
    printf("%s: %s\n", what, strerrorname_np(errno));
  else
    printf("%s: returned %ld\n", what, r);
  fflush(stdout);
}

int main(void) {
  // Raw syscalls throughout: libc wrappers (and the vDSO) may touch the pointers themselves.
  Report("write(1, 0x1, 10)", syscall(SYS_write, 1, (void*)1, 10));
  Report("write(1, 0x7fff00000000, 10)", syscall(SYS_write, 1, (void*)0x7fff00000000ULL, 10));
  Report("write(1, 0x20000 page tables, 16)", syscall(SYS_write, 1, (void*)0x20000, 16));
  Report("read(0, NULL, 10)", syscall(SYS_read, 0, NULL, 10));
  Report("read(0, 0x1000 gdt, 10)", syscall(SYS_read, 0, (void*)0x1000, 10));
  Report("openat(AT_FDCWD, 0x10)", syscall(SYS_openat, AT_FDCWD, (void*)0x10, O_RDONLY));
  Report("uname(0x1)", syscall(SYS_uname, (void*)1));
  Report("clock_gettime(MONOTONIC, 0x1)", syscall(SYS_clock_gettime, 1, (void*)1));
  Report("getrandom(NULL, 16)", syscall(SYS_getrandom, NULL, 16, 0));
  Report("getcwd(0x1, 4096)", syscall(SYS_getcwd, (void*)1, 4096));
  printf("done\n");
  return 0;
}
