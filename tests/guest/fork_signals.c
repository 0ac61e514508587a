// fork_signals: signal state travels into clones. The parent installs a SIGUSR1 handler,
// blocks SIGUSR1 and raises it (pending), then clones 2. Each clone unblocks it: its handler
// runs there, prints and the clone exits with 10 + id. Clone 2 then faults on a null pointer
// with a SIGSEGV handler that exits with 20 (faults are caught in clones too). The parent
// unblocks last and prints the outcomes.
#include <flurry/sf.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int g_id;
static volatile int* volatile g_null;

static void OnUsr1(int sig) { printf("clone %d: handler for signal %d\n", g_id, sig); }

static void OnSegv(int sig) {
  (void)sig;
  printf("clone %d: caught SIGSEGV\n", g_id);
  _exit(20);
}

int main(void) {
  setvbuf(stdout, NULL, _IONBF, 0);
  signal(SIGUSR1, OnUsr1);
  signal(SIGSEGV, OnSegv);
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGUSR1);
  sigprocmask(SIG_BLOCK, &set, NULL);
  raise(SIGUSR1);
  sf_ticket_t t = sf_request_ticket(2);
  g_id = sf_clone(t);
  sigprocmask(SIG_UNBLOCK, &set, NULL);
  if (g_id == 2) *g_null = 1;
  if (g_id > 0) return 10 + g_id;
  struct sf_outcome out[2];
  memset(out, 0, sizeof out);
  int n = sf_join(t, out, 2);
  for (int i = 0; i < n; ++i) {
    printf("clone %d: kind %d status %d\n", out[i].id, (int)out[i].kind, out[i].status);
  }
  return 0;
}
