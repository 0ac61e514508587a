// bench_clock: does the vDSO's CLOCK_MONOTONIC agree with the syscall's? Each second for
// argv[1] seconds (default 8), 1000 times: a raw clock_gettime syscall, the vDSO's
// clock_gettime, the syscall again. Prints per second how far the vDSO reading was ahead of the
// syscall made after it (at most; negative: never ahead), and the vDSO clock's rate against
// the syscall clock's since the start, in parts per million. Run it natively for reference:
//   flurry run build/bench/guest/bench_clock 8
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static long long Ns(struct timespec t) { return t.tv_sec * 1000000000LL + t.tv_nsec; }

static struct timespec SyscallNow(void) {
  struct timespec t;
  syscall(SYS_clock_gettime, CLOCK_MONOTONIC, &t);
  return t;
}

int main(int argc, char** argv) {
  const int seconds = argc > 1 ? atoi(argv[1]) : 8;
  long long first_vdso = 0, first_syscall = 0;
  for (int s = 0; s < seconds; ++s) {
    long long most_ahead = -1000000000LL;
    long long vdso = 0, before = 0;
    for (int i = 0; i < 1000; ++i) {
      struct timespec a = SyscallNow(), v, b;
      clock_gettime(CLOCK_MONOTONIC, &v);
      b = SyscallNow();
      if (Ns(v) - Ns(b) > most_ahead) most_ahead = Ns(v) - Ns(b);
      vdso = Ns(v);
      before = Ns(a);
      if (first_vdso == 0) {
        first_vdso = vdso;
        first_syscall = before;
      }
    }
    const double ppm = ((double)(vdso - first_vdso) / (double)(before - first_syscall) - 1.0) * 1e6;
    printf("second %d: vDSO ahead of the syscall by at most %lld ns; rate %+.1f ppm\n", s,
           most_ahead, ppm);
    struct timespec one = {1, 0};
    nanosleep(&one, NULL);
  }
  return 0;
}
