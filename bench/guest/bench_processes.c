// Times process creation from inside the program, with 64 MiB of touched memory (the size the
// issue's goal names): fork + _exit in the child + waitpid in the parent, and fork + execve of
// the program itself (a small static program) + waitpid. Prints one key=value per line.
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static int wait_for(pid_t child) {
  int status = 0;
  if (waitpid(child, &status, 0) != child || !WIFEXITED(status)) return -1;
  return WEXITSTATUS(status);
}

int main(int argc, char** argv) {
  if (argc > 1 && strcmp(argv[1], "exit") == 0) return 3;  // the execve'd program
  const int rounds = argc > 1 ? atoi(argv[1]) : 50;
  const size_t size = 64 << 20;
  char* memory = malloc(size);
  memset(memory, 1, size);  // every page present, as a warmed-up worker's

  double start = now_ns();
  for (int i = 0; i < rounds; ++i) {
    pid_t child = fork();
    if (child == 0) _exit(memory[i * 4096] == 1 ? 0 : 1);
    if (wait_for(child) != 0) return 1;
  }
  const double fork_ns = (now_ns() - start) / rounds;

  start = now_ns();
  for (int i = 0; i < rounds; ++i) {
    pid_t child = fork();
    if (child == 0) {
      char* args[] = {argv[0], "exit", NULL};
      execv("/proc/self/exe", args);
      _exit(1);
    }
    if (wait_for(child) != 3) return 2;
  }
  const double exec_ns = (now_ns() - start) / rounds;
  printf("fork_exit_wait_ns=%.0f\nfork_exec_wait_ns=%.0f\n", fork_ns, exec_ns);
  return 0;
}
