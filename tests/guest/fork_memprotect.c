// fork_memprotect: page protections travel into clones, and each VM's mprotect is its own.
// The parent maps three pages — read/write data, a PROT_NONE guard, read-only data — and
// clones 2. Each clone reads the read-only page, writes the data page, and tries the guard
// and a write to the read-only page (both fault: its SIGSEGV handler prints and jumps back).
// Clone 1 then makes the read-only page writable and writes it. The clones exit with 10 + id.
// The parent, after sf_join, finds its own bytes and its own protections: the read-only
// page still refuses writes.
#include <flurry/sf.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#define PAGE 4096

static sigjmp_buf g_jump;
static int g_id;
static char* g_base;

static void OnSegv(int sig, siginfo_t* info, void* uc) {
  (void)sig;
  (void)uc;
  printf("clone %d: SIGSEGV %s at page %ld\n", g_id,
         info->si_code == SEGV_ACCERR ? "SEGV_ACCERR" : "other",
         (long)(((char*)info->si_addr - g_base) / PAGE));
  siglongjmp(g_jump, 1);
}

static void TryWrite(char* p, char value) {
  if (sigsetjmp(g_jump, 1) == 0) {
    *(volatile char*)p = value;
    printf("clone %d: wrote page %ld\n", g_id, (long)((p - g_base) / PAGE));
  }
}

static void TryRead(char* p) {
  if (sigsetjmp(g_jump, 1) == 0) {
    printf("clone %d: read page %ld: %d\n", g_id, (long)((p - g_base) / PAGE), *(volatile char*)p);
  }
}

int main(void) {
  setvbuf(stdout, NULL, _IONBF, 0);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = OnSegv;
  sa.sa_flags = SA_SIGINFO | SA_NODEFER;
  sigaction(SIGSEGV, &sa, NULL);
  g_base = mmap(NULL, 3 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (g_base == MAP_FAILED) return 2;
  g_base[0] = 1;
  g_base[2 * PAGE] = 3;
  if (mprotect(g_base + PAGE, PAGE, PROT_NONE) != 0) return 3;
  if (mprotect(g_base + 2 * PAGE, PAGE, PROT_READ) != 0) return 4;

  sf_ticket_t t = sf_request_ticket(2);
  g_id = sf_clone(t);
  if (g_id > 0) {
    TryRead(g_base + 2 * PAGE);
    TryWrite(g_base, (char)(10 + g_id));
    TryRead(g_base + PAGE);
    TryWrite(g_base + 2 * PAGE, 7);
    if (g_id == 1) {
      if (mprotect(g_base + 2 * PAGE, PAGE, PROT_READ | PROT_WRITE) != 0) return 5;
      TryWrite(g_base + 2 * PAGE, 7);
      TryRead(g_base + 2 * PAGE);
    }
    return 10 + g_id;
  }
  struct sf_outcome out[2];
  memset(out, 0, sizeof out);
  int n = sf_join(t, out, 2);
  for (int i = 0; i < n; ++i) {
    printf("clone %d: kind %d status %d\n", out[i].id, (int)out[i].kind, out[i].status);
  }
  TryRead(g_base);
  TryRead(g_base + 2 * PAGE);
  TryWrite(g_base + 2 * PAGE, 9);
  return 0;
}
