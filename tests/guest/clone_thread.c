// clone_thread: tries to start a thread (unsupported in flurry) and reports the error.
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <string.h>

static void* Thread(void* arg) { return arg; }

int main(void) {
  pthread_t t;
  int err = pthread_create(&t, NULL, Thread, NULL);
  if (err != 0) {
    printf("pthread_create failed: %s\n", strerrorname_np(err));
  } else {
    pthread_join(t, NULL);
    printf("pthread_create succeeded\n");
  }
  printf("still running\n");
  return 0;
}
