// fork_checkpoint_release: sf_release_checkpoint frees a checkpoint, but only once the clones
// made from it have been joined.
//
// The parent sets x = 1, checkpoints, sets x = 2, creates 2 clones from the checkpoint (each
// sleeps 300 ms, then exits with status x, i.e. 1) and releases the checkpoint while they run;
// it then takes and releases 20 more checkpoints (8 MiB written between each), then takes two
// and releases the first. It prints "holding 1 checkpoint" and waits (up to 60 s) until the file
// /done exists in its --dir, so that the test can count the VM's snapshot processes meanwhile.
// Output (parent only):
//   create_clones: 0
//   release: 0
//   release again: EINVAL
//   create_clones after release: EINVAL
//   clone: kind 1 status 1
//   clone: kind 1 status 1
//   20 checkpoints taken and released: yes
//   holding 1 checkpoint
//   done
#include <errno.h>
#include <flurry/sf.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define kBufferBytes (8u << 20)

static volatile int x;

static const char* ErrName(int r) {
  switch (r) {
    case -EINVAL:
      return "EINVAL";
    case 0:
      return "0";
  }
  return "unexpected";
}

static void SleepMs(long ms) {
  struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&t, NULL);
}

int main(void) {
  uint8_t* buffer = malloc(kBufferBytes);
  x = 1;
  sf_checkpoint_t cp = 0;
  int r = sf_checkpoint_parent(&cp);
  if (r > 0) {
    SleepMs(300);  // still running when the parent releases the checkpoint
    sf_exit_with(x, NULL, 0);
    return 100;  // not reached
  }
  if (r < 0) {
    printf("checkpoint: %d\n", r);
    return 1;
  }
  x = 2;
  sf_ticket_t t = sf_request_ticket(2);
  if (sf_ticket_granted(t) != 2) {
    printf("granted %d\n", sf_ticket_granted(t));
    return 1;
  }
  printf("create_clones: %s\n", ErrName(sf_create_clones(cp, t)));
  printf("release: %s\n", ErrName(sf_release_checkpoint(cp)));
  printf("release again: %s\n", ErrName(sf_release_checkpoint(cp)));
  sf_ticket_t t2 = sf_request_ticket(1);
  printf("create_clones after release: %s\n", ErrName(sf_create_clones(cp, t2)));
  struct sf_outcome out[2];
  memset(out, 0, sizeof out);
  int n = sf_join(t, out, 2);
  if (n != 2) {
    printf("join: %d\n", n);
    return 1;
  }
  for (int i = 0; i < n; ++i) printf("clone: kind %d status %d\n", out[i].kind, out[i].status);
  sf_join(t2, NULL, 0);

  int ok = 1;
  for (int i = 0; i < 20; ++i) {
    memset(buffer, i, kBufferBytes);
    sf_checkpoint_t c = 0;
    r = sf_checkpoint_parent(&c);
    if (r > 0) sf_exit();  // (no clones are made from these)
    if (r != 0 || sf_release_checkpoint(c) != 0) ok = 0;
  }
  printf("20 checkpoints taken and released: %s\n", ok ? "yes" : "NO");
  // One taken while another is held, which is then released: nothing made for the second
  // (in a cluster VM, its page server) may keep the first one's copy alive.
  sf_checkpoint_t first = 0, kept = 0;
  r = sf_checkpoint_parent(&first);
  if (r > 0) sf_exit();
  int r2 = sf_checkpoint_parent(&kept);
  if (r2 > 0) sf_exit();
  printf("holding %d checkpoint\n", r == 0 && r2 == 0 && sf_release_checkpoint(first) == 0 ? 1 : 0);
  fflush(stdout);
  for (int i = 0; i < 6000 && access("/done", F_OK) != 0; ++i) SleepMs(10);
  printf("done\n");
  return 0;
}
