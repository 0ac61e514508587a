// fork_exit: a clone that ends the ordinary way (exit, return from main, _exit) is EXITED with
// that status, its stdio flushed and its atexit handlers run.
//
// Clone 1 calls exit(7), clone 2 returns 42 from main, clone 3 calls _exit(3), clone 4 calls
// exit(256 + 5) (status 5), clone 5 writes a line without a newline to stderr and returns 0. Clones
// 1 and 2 have an atexit handler printing "atexit in clone N". The parent prints "clone N: exited
// S, result L bytes" per clone.
#include <flurry/sf.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int g_id;

static void AtExit(void) { printf("atexit in clone %d\n", g_id); }

int main(void) {
  sf_ticket_t t = sf_request_ticket(5);
  g_id = sf_clone(t);
  switch (g_id) {
    case 0:
      break;
    case 1:
      atexit(AtExit);
      printf("clone 1 calls exit(7)\n");
      exit(7);
    case 2:
      atexit(AtExit);
      printf("clone 2 returns 42\n");
      return 42;
    case 3:
      _exit(3);
    case 4:
      exit(256 + 5);
    case 5:
      fprintf(stderr, "no newline from clone 5");
      return 0;
    default:
      printf("unexpected clone %d\n", g_id);
      return 99;
  }
  struct sf_outcome out[5];
  memset(out, 0, sizeof out);
  int n = sf_join(t, out, 5);
  for (int i = 0; i < n; ++i) {
    if (out[i].kind == SF_OUTCOME_EXITED)
      printf("clone %d: exited %d, result %llu bytes\n", out[i].id, out[i].status,
             (unsigned long long)out[i].result_length);
    else
      printf("clone %d: kind %d signal %d\n", out[i].id, out[i].kind, out[i].signal);
  }
  return 0;
}
