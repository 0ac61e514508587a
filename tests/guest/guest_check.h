// What the guest test programs share: CHECK (exit 99 with the line on failure), SHOW (a call's
// result and errno, printed), ErrnoName (an SDK call's -errno by name), StartThread
// (pthread_create or exit 98) and SleepMs (a sleep that signals do not cut short). Header-only:
// each program is one static executable.
#pragma once

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CHECK(x)                                             \
  do {                                                       \
    if (!(x)) {                                              \
      printf("check failed at line %d: %s\n", __LINE__, #x); \
      exit(99);                                              \
    }                                                        \
  } while (0)

// Prints `label: result (error)` for a call that returns -1 and sets errno on failure.
#define SHOW(label, call)                                                            \
  do {                                                                               \
    errno = 0;                                                                       \
    long result_ = (long)(call);                                                     \
    int error_ = errno;                                                              \
    printf("%s: %ld (%s)\n", label, result_, result_ < 0 ? strerror(error_) : "ok"); \
  } while (0)

// The name of the -errno an SDK call returned (the SDK's errors), or the value itself.
static inline const char* ErrnoName(long r) {
  static char buf[32];
  switch (r) {
    case -EINVAL:
      return "EINVAL";
    case -EALREADY:
      return "EALREADY";
    case -EPERM:
      return "EPERM";
    case -E2BIG:
      return "E2BIG";
    case -EFAULT:
      return "EFAULT";
    case -EAGAIN:
      return "EAGAIN";
    case -ENOSYS:
      return "ENOSYS";
  }
  snprintf(buf, sizeof buf, "%ld", r);
  return buf;
}

static inline void StartThread(pthread_t* t, void* (*fn)(void*), void* arg) {
  int err = pthread_create(t, NULL, fn, arg);
  if (err != 0) {
    printf("pthread_create: %s\n", strerror(err));
    exit(98);
  }
}

static inline void SleepMs(int ms) {
  struct timespec t = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&t, &t) != 0 && errno == EINTR) {
  }
}
