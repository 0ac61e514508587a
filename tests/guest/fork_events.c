// fork_events: eventfds, timerfds, epoll instances and signalfds across sf_clone. Each clone
// gets its own copy of each, as they were at the clone instant: the eventfd's count, the
// timerfd's setting (it fires in the clone too), the epoll instance watching the clone's own
// copies with the parent's data, the signalfd reading the clone's pending signals (a blocked
// SIGUSR1 sent before the clone is pending in the clone too). What a clone does to them does
// not reach the parent. Output (parent only):
//   clone N: status 0        (per clone; bits: 1 eventfd count not 5, 2 epoll did not report
//                             the eventfd with its data, 4 the timerfd did not fire, 8 the
//                             timerfd lost its period, 16 the semaphore flag was lost, 32 the
//                             signalfd was not readable or did not read SIGUSR1, 64 it read
//                             something after that)
//   parent count: 5
//   parent timer fired: yes
//   parent signalfd: 10
#define _GNU_SOURCE
#include <errno.h>
#include <flurry/sf.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

int main(void) {
  int efd = eventfd(5, 0);
  int sem = eventfd(2, EFD_SEMAPHORE | EFD_NONBLOCK);
  int tfd = timerfd_create(CLOCK_MONOTONIC, 0);
  struct itimerspec every = {.it_interval = {0, 20000000}, .it_value = {0, 20000000}};
  if (efd < 0 || sem < 0 || tfd < 0 || timerfd_settime(tfd, 0, &every, NULL) != 0) return 1;
  int epfd = epoll_create1(0);
  struct epoll_event e = {.events = EPOLLIN, .data.u64 = 0x5eed};
  if (epfd < 0 || epoll_ctl(epfd, EPOLL_CTL_ADD, efd, &e) != 0) return 1;
  sigset_t usr1;
  sigemptyset(&usr1);
  sigaddset(&usr1, SIGUSR1);
  if (sigprocmask(SIG_BLOCK, &usr1, NULL) != 0) return 1;
  int sfd = signalfd(-1, &usr1, SFD_NONBLOCK);
  if (sfd < 0 || kill(getpid(), SIGUSR1) != 0) return 1;

  sf_ticket_t t = sf_request_ticket(2);
  int id = sf_clone(t);
  if (id > 0) {
    int status = 0;
    struct epoll_event got;
    if (epoll_wait(epfd, &got, 1, 5000) != 1 || got.data.u64 != 0x5eed) status |= 2;
    uint64_t value = 0;
    if (read(efd, &value, 8) != 8 || value != 5) status |= 1;
    if (read(tfd, &value, 8) != 8 || value < 1) status |= 4;
    struct itimerspec now;
    if (timerfd_gettime(tfd, &now) != 0 || now.it_interval.tv_nsec != 20000000) status |= 8;
    if (read(sem, &value, 8) != 8 || value != 1) status |= 16;
    struct pollfd p = {.fd = sfd, .events = POLLIN};
    struct signalfd_siginfo info;
    if (poll(&p, 1, 5000) != 1 || read(sfd, &info, sizeof info) != (ssize_t)sizeof info ||
        info.ssi_signo != SIGUSR1) {
      status |= 32;
    }
    if (read(sfd, &info, sizeof info) != -1 || errno != EAGAIN) status |= 64;
    // Spent here, not in the parent.
    uint64_t more = 100;
    if (write(efd, &more, 8) != 8) status |= 1;
    sf_exit_with(status, NULL, 0);
  }
  struct sf_outcome o[2];
  memset(o, 0, sizeof o);
  int n = sf_join(t, o, 2);
  for (int i = 0; i < n; ++i) printf("clone %d: status %d\n", o[i].id, o[i].status);
  uint64_t value = 0;
  if (read(efd, &value, 8) != 8) return 1;
  printf("parent count: %llu\n", (unsigned long long)value);
  printf("parent timer fired: %s\n", read(tfd, &value, 8) == 8 && value >= 1 ? "yes" : "no");
  struct signalfd_siginfo info;
  if (read(sfd, &info, sizeof info) != (ssize_t)sizeof info) return 1;
  printf("parent signalfd: %u\n", info.ssi_signo);
  return 0;
}
