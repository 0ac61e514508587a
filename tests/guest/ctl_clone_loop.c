// ctl_clone_loop: a bounded loop printing its clone ID, for host-initiated clones
// (flurry ctl SOCKET clone N).
//
// usage: ctl_clone_loop [ITERATIONS [INTERVAL_MS [threaded|piped|processes|processes_piped]]]
//        (defaults 60, 50)
//
// Prints "id=<sf_id()> iter=<i>" for i = 0..ITERATIONS-1 (one write(2) each), sleeping
// INTERVAL_MS in between, then "id=<sf_id()> done" and exits 0. A clone made from outside
// resumes mid-loop and finishes the remaining iterations under its own ID. "threaded": the loop
// runs in a second thread while the first waits in pthread_join — between lines, every thread
// of the VM waits in a syscall. "piped": before the loop, "carried" is written into a pipe and
// left there; after it, "and more" is written, and what the pipe holds is printed as
// "pipe: carried and more" (a snapshot or clone taken meanwhile must carry the pipe's bytes).
// "processes": the loop runs in a child process while init waits in waitpid; init prints the
// "done" line once the child has exited 0 (a clone taken meanwhile must copy both processes).
// "processes_piped": as "processes", with a pipe between them and a zombie: init first forks a
// child that exits 7 at once (and is not reaped until the end), writes "carried" into a pipe,
// forks the looping child, writes " and more" and closes its ends; the child, after the loop,
// reads the pipe to its end (every writer gone) and prints "pipe: <what it read>"; init, its
// waitpid returned, reaps the first child ("zombie: status 7") and prints the "done" line (a
// snapshot taken meanwhile must carry both processes, the zombie, the pipe's bytes, and no
// writer the VM does not have).
#include <errno.h>
#include <flurry/sf.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void Say(const char* text) { (void)!write(1, text, strlen(text)); }

static int iterations = 60;
static int interval_ms = 50;
static int say_done = 1;

static void* Loop(void* arg) {
  char line[64];
  for (int i = 0; i < iterations; ++i) {
    snprintf(line, sizeof line, "id=%d iter=%d\n", sf_id(), i);
    Say(line);
    struct timespec left = {interval_ms / 1000, (long)(interval_ms % 1000) * 1000000L};
    while (nanosleep(&left, &left) != 0 && errno == EINTR) {
    }
  }
  if (say_done) {
    snprintf(line, sizeof line, "id=%d done\n", sf_id());
    Say(line);
  }
  return arg;
}

int main(int argc, char** argv) {
  if (argc > 1) iterations = atoi(argv[1]);
  if (argc > 2) interval_ms = atoi(argv[2]);
  if (argc > 3 && strcmp(argv[3], "piped") == 0) {
    int fds[2];
    if (pipe(fds) != 0 || write(fds[1], "carried", 7) != 7) return 1;
    Loop(NULL);
    if (write(fds[1], " and more", 9) != 9) return 1;
    char bytes[64] = {0};
    ssize_t got = read(fds[0], bytes, sizeof bytes - 1);
    printf("pipe: %s\n", got > 0 ? bytes : "(nothing)");
    return 0;
  }
  if (argc > 3 && strcmp(argv[3], "processes_piped") == 0) {
    const pid_t zombie = fork();
    if (zombie == 0) _exit(7);
    int fds[2];
    if (zombie < 0 || pipe(fds) != 0 || write(fds[1], "carried", 7) != 7) return 1;
    const pid_t child = fork();
    if (child == 0) {
      close(fds[1]);
      say_done = 0;
      Loop(NULL);
      char bytes[64] = {0};
      size_t have = 0;
      for (;;) {
        const ssize_t got = read(fds[0], bytes + have, sizeof bytes - 1 - have);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) break;
        have += (size_t)got;
      }
      char line[96];
      snprintf(line, sizeof line, "pipe: %s\n", bytes);
      Say(line);
      _exit(0);
    }
    if (child < 0 || write(fds[1], " and more", 9) != 9) return 1;
    close(fds[0]);
    close(fds[1]);
    int status = 0;
    if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      return 1;
    }
    if (waitpid(zombie, &status, 0) != zombie || !WIFEXITED(status)) return 1;
    printf("zombie: status %d\n", WEXITSTATUS(status));
    printf("id=%d done\n", sf_id());
    return 0;
  }
  if (argc > 3 && strcmp(argv[3], "processes") == 0) {
    const pid_t child = fork();
    if (child == 0) {
      say_done = 0;
      Loop(NULL);
      _exit(0);
    }
    int status = 0;
    if (child < 0 || waitpid(child, &status, 0) != child || !WIFEXITED(status) ||
        WEXITSTATUS(status) != 0) {
      return 1;
    }
    char line[64];
    snprintf(line, sizeof line, "id=%d done\n", sf_id());
    Say(line);
    return 0;
  }
  if (argc > 3 && strcmp(argv[3], "threaded") == 0) {
    pthread_t loop;
    if (pthread_create(&loop, NULL, Loop, NULL) != 0) return 1;
    return pthread_join(loop, NULL) == 0 ? 0 : 1;
  }
  Loop(NULL);
  return 0;
}
