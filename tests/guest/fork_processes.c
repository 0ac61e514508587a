// fork_processes: VM fork and the guest's own processes. A child is forked and killed (the
// clones of a VM of several processes: tests/guest/fork_vm_processes.c); once it is reaped,
// each clone — a VM of its own — forks processes of its own, whose pids and exit statuses are
// its alone.
#include <errno.h>
#include <flurry/sf.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

int main(void) {
  setvbuf(stdout, NULL, _IONBF, 0);
  pid_t child = fork();
  if (child == 0) {
    for (;;) pause();
  }
  kill(child, SIGKILL);
  int status = 0;
  waitpid(child, &status, 0);
  printf("child: %s\n", WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL ? "killed" : "?");

  sf_ticket_t t = sf_request_ticket(2);
  const int id = sf_clone(t);
  if (id < 0) {
    printf("sf_clone failed: %d\n", id);
    return 1;
  }
  // Every VM forks a child that exits with its VM's clone ID plus 20.
  pid_t mine = fork();
  if (mine == 0) _exit(20 + sf_id());
  status = 0;
  const pid_t reaped = waitpid(mine, &status, 0);
  printf("clone %d: child exited %d%s\n", id, WEXITSTATUS(status),
         reaped == mine ? "" : " (wrong pid)");
  errno = 0;
  const int none = waitpid(-1, &status, WNOHANG);
  printf("clone %d: no other children: %s\n", id, none == -1 && errno == ECHILD ? "yes" : "no");
  if (id > 0) return 10 + id;
  struct sf_outcome out[2];
  memset(out, 0, sizeof out);
  int n = sf_join(t, out, 2);
  for (int i = 0; i < n; ++i) {
    printf("clone %d: kind %d status %d\n", out[i].id, (int)out[i].kind, out[i].status);
  }
  return 0;
}
