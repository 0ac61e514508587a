// fork_identity: every clone is a copy of the whole machine — the parent's pid, ppid and clock —
// with its own ID and its own entropy.
//
// 4 clones each return {sf_id, getpid, getppid, 16 bytes of getrandom, microseconds of
// CLOCK_MONOTONIC since the parent's reading just before sf_clone, read through the vDSO (libc's
// clock_gettime) and through the raw syscall} in their blob; the parent prints one line per VM,
// its own first (taken right after sf_clone):
//   id ID pid PID ppid PPID rand HEX32 clock_us US sys_clock_us US
#include <flurry/sf.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

struct Identity {
  int32_t id;
  int32_t pid;
  int32_t ppid;
  int32_t pad;
  uint8_t rand[16];
  int64_t clock_us;      // CLOCK_MONOTONIC now (vDSO) minus the parent's reading before sf_clone
  int64_t sys_clock_us;  // the same through the clock_gettime syscall
};

static struct timespec g_before_clone;

static int64_t MicrosecondsSinceClone(const struct timespec* now) {
  return (now->tv_sec - g_before_clone.tv_sec) * 1000000LL +
         (now->tv_nsec - g_before_clone.tv_nsec) / 1000;
}

static struct Identity Me(void) {
  struct Identity me;
  memset(&me, 0, sizeof me);
  me.id = sf_id();
  me.pid = getpid();
  me.ppid = getppid();
  if (getrandom(me.rand, sizeof me.rand, 0) != (ssize_t)sizeof me.rand) me.pad = -1;
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  me.clock_us = MicrosecondsSinceClone(&now);
  struct timespec sys_now;
  if (syscall(SYS_clock_gettime, CLOCK_MONOTONIC, &sys_now) != 0) me.pad = -1;
  me.sys_clock_us = MicrosecondsSinceClone(&sys_now);
  return me;
}

static void Print(const struct Identity* who) {
  printf("id %d pid %d ppid %d rand ", who->id, who->pid, who->ppid);
  for (int i = 0; i < 16; ++i) printf("%02x", who->rand[i]);
  printf(" clock_us %lld sys_clock_us %lld%s\n", (long long)who->clock_us,
         (long long)who->sys_clock_us, who->pad != 0 ? " (getrandom or clock_gettime failed)" : "");
}

int main(void) {
  sf_ticket_t t = sf_request_ticket(4);
  clock_gettime(CLOCK_MONOTONIC, &g_before_clone);
  int id = sf_clone(t);
  if (id > 0) {
    struct Identity me = Me();
    sf_exit_with(0, &me, sizeof me);
    return 1;
  }
  struct Identity me = Me();
  struct sf_outcome out[4];
  struct Identity them[4];
  memset(out, 0, sizeof out);
  memset(them, 0, sizeof them);
  for (int i = 0; i < 4; ++i) {
    out[i].result = (uint64_t)(uintptr_t)&them[i];
    out[i].result_capacity = sizeof them[i];
  }
  int n = sf_join(t, out, 4);
  Print(&me);
  for (int i = 0; i < n; ++i) {
    if (out[i].kind != SF_OUTCOME_EXITED || out[i].result_length != sizeof them[i])
      printf("clone %d: kind %d length %llu\n", out[i].id, out[i].kind,
             (unsigned long long)out[i].result_length);
    else
      Print(&them[i]);
  }
  return 0;
}
