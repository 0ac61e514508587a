// env_info: prints what the guest sees of its environment, one "key: value" line each.
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/sysinfo.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

static long long NowNs(clockid_t clock) {
  struct timespec ts;
  if (clock_gettime(clock, &ts) != 0) return -1;
  return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(void) {
  printf("pid: %d\n", (int)getpid());

  struct utsname u;
  if (uname(&u) == 0) {
    printf("sysname: %s\n", u.sysname);
    printf("nodename: %s\n", u.nodename);
    printf("release: %s\n", u.release);
    printf("machine: %s\n", u.machine);
  } else {
    printf("uname: %s\n", strerrorname_np(errno));
  }

  long long t1 = NowNs(CLOCK_MONOTONIC);
  struct timespec ten_ms = {0, 10 * 1000 * 1000};
  int slept = nanosleep(&ten_ms, NULL);
  long long t2 = NowNs(CLOCK_MONOTONIC);
  printf("monotonic advancing: %s\n", (t1 > 0 && t2 > t1) ? "yes" : "no");
  printf("nanosleep 10ms: %s, elapsed_ms: %lld\n", slept == 0 ? "ok" : strerrorname_np(errno),
         (t2 - t1) / 1000000);

  printf("time: %lld\n", (long long)time(NULL));
  printf("realtime_s: %lld\n", NowNs(CLOCK_REALTIME) / 1000000000LL);

  unsigned char rnd[16];
  ssize_t got = getrandom(rnd, sizeof rnd, 0);
  if (got == (ssize_t)sizeof rnd) {
    printf("getrandom: ");
    for (size_t i = 0; i < sizeof rnd; i++) printf("%02x", rnd[i]);
    printf("\n");
  } else {
    printf("getrandom: %s\n", got < 0 ? strerrorname_np(errno) : "short");
  }

  struct sysinfo si;
  if (sysinfo(&si) == 0)
    printf("totalram: %llu\n", (unsigned long long)si.totalram * si.mem_unit);
  else
    printf("totalram: %s\n", strerrorname_np(errno));

  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0)
    printf("cpus: %d\n", CPU_COUNT(&set));
  else
    printf("cpus: %s\n", strerrorname_np(errno));

  char cwd[PATH_MAX];
  if (getcwd(cwd, sizeof cwd) != NULL)
    printf("cwd: %s\n", cwd);
  else
    printf("cwd: %s\n", strerrorname_np(errno));

  printf("isatty(1): %d\n", isatty(1));
  return 0;
}
