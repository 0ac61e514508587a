// fork_vm_processes: sf_clone in a VM of several processes clones all of them (SnowFlock's
// semantics: a clone is a copy of the whole machine). Init talks to its child through pipes;
// the clones' copies of the two talk through copies of the pipes, with the bytes that were in
// flight at the clone instant.
//
// usage: fork_vm_processes init_clones|checkpoint_clones|checkpoint_kill|child_clones|busy_clones
//
// init_clones: init forks a child that answers each line it reads from one pipe with a line on
// another, and reads a third pipe ("later") only when told. init writes "in flight" into
// "later", then calls sf_clone(2). In every VM (the parent, clones 1 and 2) init asks the child
// for a ping and for what "later" holds, tells it to exit, and reaps it. Output per VM N:
//   vm N: ping from P in clone N        (P: the child's pid, the same in every VM)
//   vm N: later from P: in flight
//   vm N: child P exited 3N             (the child exits 30 + sf_id())
//   vm N: answers at end of file: yes
// then, in the parent: "clone K: status 1K" per clone.
// checkpoint_clones: as init_clones, with sf_checkpoint_parent where init_clones calls sf_clone;
// the parent talks to its child, reaps it, and only then makes the two clones from the
// checkpoint (sf_create_clones, one ticket of one clone at a time): they still have the
// child, and "later" its bytes in flight.
// checkpoint_kill: init forks a child and prints "tick T" (T: ms since the start) every 100 ms
// for 10 s, then reaps the child. The child takes a checkpoint, makes one clone from it, and in
// the clone its copy waits forever; 3 s after the start the child kills the clone (sf_kill),
// prints "killed at T" and the outcome's kind, and exits 5 s later. The clone's init (a copy
// that is not the cloning one) must end with the clone: its last tick comes soon after the
// kill, not when the checkpoint's owner exits.
// child_clones: init forks a child that calls sf_clone(2) while init waits for it in waitpid.
// In each clone the child prints "clone N: child P, parent I" and ends the clone with
// sf_exit_with(N); the parent's child joins them, prints "joined K: status K", exits 7, and
// init prints "init: child exited 7".
// busy_clones: init forks a child whose two threads compute without a syscall, and clones the
// VM while they do: the child must be stopped where it computes. In every VM N the child
// writes its sum to a pipe and exits 40 + N; init prints "vm N: sum S, child exited 4N".
#include <errno.h>
#include <flurry/sf.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int ReadLine(int fd, char* line, size_t size) {
  size_t n = 0;
  while (n + 1 < size) {
    ssize_t got = read(fd, line + n, 1);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return -1;
    if (line[n] == '\n') break;
    ++n;
  }
  line[n] = '\0';
  return (int)n;
}

static void WriteText(int fd, const char* text) {
  if (write(fd, text, strlen(text)) != (ssize_t)strlen(text)) _exit(90);
}

// A clone ends with status 10 + its ID; the parent joins the two clones and prints their
// statuses.
static int EndOrJoin(int id, sf_ticket_t t) {
  fflush(stdout);
  if (id > 0) sf_exit_with(10 + id, NULL, 0);
  struct sf_outcome out[2];
  memset(out, 0, sizeof out);
  const int n = sf_join(t, out, 2);
  for (int i = 0; i < n; ++i) printf("clone %d: status %d\n", out[i].id, out[i].status);
  return 0;
}

static void Child(int commands, int answers, int later) {
  char line[128], reply[256];
  for (;;) {
    if (ReadLine(commands, line, sizeof line) < 0) _exit(91);
    if (strcmp(line, "ping") == 0) {
      snprintf(reply, sizeof reply, "ping from %d in clone %d\n", (int)getpid(), sf_id());
    } else if (strcmp(line, "later") == 0) {
      char held[64];
      if (ReadLine(later, held, sizeof held) < 0) strcpy(held, "(nothing)");
      snprintf(reply, sizeof reply, "later from %d: %s\n", (int)getpid(), held);
    } else if (strcmp(line, "exit") == 0) {
      _exit(30 + sf_id());
    } else {
      snprintf(reply, sizeof reply, "unknown command %s\n", line);
    }
    WriteText(answers, reply);
  }
}

static int InitClones(int checkpoint) {
  int commands[2], answers[2], later[2];
  if (pipe(commands) != 0 || pipe(answers) != 0 || pipe(later) != 0) return 1;
  pid_t child = fork();
  if (child == 0) {
    close(commands[1]);
    close(answers[0]);
    close(later[1]);
    Child(commands[0], answers[1], later[0]);
  }
  close(commands[0]);
  close(answers[1]);
  close(later[0]);
  WriteText(later[1], "in flight\n");
  // The child answers once before the clone: it is waiting in read(2) at the clone instant.
  char line[256];
  WriteText(commands[1], "ping\n");
  if (ReadLine(answers[0], line, sizeof line) < 0) return 2;

  sf_ticket_t t = 0;
  sf_checkpoint_t saved = 0;
  int id;
  if (checkpoint) {
    id = sf_checkpoint_parent(&saved);
  } else {
    t = sf_request_ticket(2);
    id = sf_clone(t);
  }
  if (id < 0) {
    printf("%s failed: %d\n", checkpoint ? "sf_checkpoint_parent" : "sf_clone", id);
    return 1;
  }
  WriteText(commands[1], "ping\n");
  if (ReadLine(answers[0], line, sizeof line) < 0) return 3;
  printf("vm %d: %s\n", id, line);
  WriteText(commands[1], "later\n");
  if (ReadLine(answers[0], line, sizeof line) < 0) return 4;
  printf("vm %d: %s\n", id, line);
  fflush(stdout);
  WriteText(commands[1], "exit\n");
  int status = 0;
  if (waitpid(child, &status, 0) != child) return 5;
  printf("vm %d: child %d exited %d\n", id, (int)child,
         WIFEXITED(status) ? WEXITSTATUS(status) : -1);
  // Its last writer gone, the pipe reads end of file (nothing outside the VM holds an end).
  printf("vm %d: answers at end of file: %s\n", id, read(answers[0], line, 1) == 0 ? "yes" : "no");
  if (checkpoint && id == 0) {
    // One clone per ticket: the checkpoint's processes are copied for each request.
    fflush(stdout);
    sf_ticket_t tickets[2];
    for (int i = 0; i < 2; ++i) {
      tickets[i] = sf_request_ticket(1);
      const int made = sf_create_clones(saved, tickets[i]);
      if (made < 0) {
        printf("sf_create_clones failed: %d\n", made);
        return 1;
      }
    }
    for (int i = 0; i < 2; ++i) {
      struct sf_outcome out;
      memset(&out, 0, sizeof out);
      if (sf_join(tickets[i], &out, 1) == 1) printf("clone %d: status %d\n", out.id, out.status);
    }
    return 0;
  }
  return EndOrJoin(id, t);
}

// init reaps its child and prints its exit status.
static int ReapChild(pid_t child) {
  int status = 0;
  if (waitpid(child, &status, 0) != child) return 5;
  printf("init: child exited %d\n", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
  return 0;
}

static struct timespec g_start;

static long MsSinceStart(void) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (now.tv_sec - g_start.tv_sec) * 1000L + (now.tv_nsec - g_start.tv_nsec) / 1000000L;
}

static void SleepMs(long ms) {
  struct timespec left = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&left, &left) != 0 && errno == EINTR) {
  }
}

static int CheckpointKill(void) {
  clock_gettime(CLOCK_MONOTONIC, &g_start);
  pid_t child = fork();
  if (child == 0) {
    SleepMs(200);
    sf_checkpoint_t saved = 0;
    const int id = sf_checkpoint_parent(&saved);
    if (id < 0) {
      printf("sf_checkpoint_parent failed: %d\n", id);
      _exit(1);
    }
    if (id > 0) {
      for (;;) pause();  // the cloning copy: until killed
    }
    sf_ticket_t t = sf_request_ticket(1);
    if (sf_create_clones(saved, t) < 0) _exit(2);
    while (MsSinceStart() < 3000) SleepMs(50);  // the clone has time to start, even in QEMU
    sf_kill(t);
    printf("killed at %ld\n", MsSinceStart());
    struct sf_outcome out;
    memset(&out, 0, sizeof out);
    if (sf_join(t, &out, 1) == 1) printf("clone %d: kind %d\n", out.id, (int)out.kind);
    fflush(stdout);
    SleepMs(5000);
    _exit(0);
  }
  while (MsSinceStart() < 10000) {
    printf("tick %ld\n", MsSinceStart());
    fflush(stdout);
    SleepMs(100);
  }
  return ReapChild(child);
}

static int ChildClones(void) {
  const pid_t init = getpid();
  pid_t child = fork();
  if (child == 0) {
    sf_ticket_t t = sf_request_ticket(2);
    const int id = sf_clone(t);
    if (id < 0) {
      printf("sf_clone failed: %d\n", id);
      _exit(1);
    }
    if (id > 0) {
      printf("clone %d: child %d, parent %d\n", id, (int)getpid(),
             getppid() == init ? (int)init : -1);
      fflush(stdout);
      sf_exit_with(id, NULL, 0);
    }
    struct sf_outcome out[2];
    memset(out, 0, sizeof out);
    const int n = sf_join(t, out, 2);
    for (int i = 0; i < n; ++i) printf("joined %d: status %d\n", out[i].id, out[i].status);
    fflush(stdout);
    _exit(7);
  }
  return ReapChild(child);
}

static volatile uint64_t sink;

static void* Compute(void* arg) {
  uint64_t sum = 0;
  for (uint64_t i = 0; i < 300000000ULL; ++i) sum += i ^ (sum >> 3);
  sink = sum;
  return arg;
}

static int BusyClones(void) {
  int results[2], started[2];
  if (pipe(results) != 0 || pipe(started) != 0) return 1;
  pid_t child = fork();
  if (child == 0) {
    pthread_t other;
    if (pthread_create(&other, NULL, Compute, NULL) != 0) _exit(92);
    WriteText(started[1], "go\n");
    Compute(NULL);
    const uint64_t mine = sink;
    pthread_join(other, NULL);
    char line[64];
    snprintf(line, sizeof line, "%llu\n", (unsigned long long)(mine + sink));
    WriteText(results[1], line);
    _exit(40 + sf_id());
  }
  char line[64];
  if (ReadLine(started[0], line, sizeof line) < 0) return 2;
  sf_ticket_t t = sf_request_ticket(2);
  const int id = sf_clone(t);
  if (id < 0) {
    printf("sf_clone failed: %d\n", id);
    return 1;
  }
  if (ReadLine(results[0], line, sizeof line) < 0) return 3;
  int status = 0;
  if (waitpid(child, &status, 0) != child) return 5;
  printf("vm %d: sum %s, child exited %d\n", id, line,
         WIFEXITED(status) ? WEXITSTATUS(status) : -1);
  return EndOrJoin(id, t);
}

int main(int argc, char** argv) {
  if (argc > 1 && strcmp(argv[1], "busy_clones") == 0) return BusyClones();
  if (argc > 1 && strcmp(argv[1], "init_clones") == 0) return InitClones(0);
  if (argc > 1 && strcmp(argv[1], "checkpoint_clones") == 0) return InitClones(1);
  if (argc > 1 && strcmp(argv[1], "checkpoint_kill") == 0) return CheckpointKill();
  if (argc > 1 && strcmp(argv[1], "child_clones") == 0) return ChildClones();
  return 2;
}
