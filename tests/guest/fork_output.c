// fork_output: many clones printing long lines at once.
//
// usage: fork_output [CLONES [LINES [WIDTH]]]   (defaults 4, 200, 300)
//
// Clone N prints LINES lines "line JJJ of clone N: PAYLOAD" on stdout through stdio (fully
// buffered: flushed in 4 KiB chunks that cut lines anywhere), where PAYLOAD is WIDTH copies of
// the letter 'a' + (7 * N + J) % 26, and LINES / 4 lines "err JJJ of clone N: PAYLOAD" (width
// 100) on stderr. Meanwhile the parent writes LINES lines "parent line J" on stdout, each with
// one write(2). After joining it prints "joined M".
#include <flurry/sf.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void Payload(char* buf, int width, int id, int line) {
  memset(buf, 'a' + (7 * id + line) % 26, (size_t)width);
  buf[width] = '\0';
}

int main(int argc, char** argv) {
  const int clones = argc > 1 ? atoi(argv[1]) : 4;
  const int lines = argc > 2 ? atoi(argv[2]) : 200;
  const int width = argc > 3 ? atoi(argv[3]) : 300;
  char* payload = malloc((size_t)(width > 100 ? width : 100) + 1);

  sf_ticket_t t = sf_request_ticket(clones);
  int id = sf_clone(t);
  if (id < 0) {
    printf("sf_clone: %d\n", id);
    return 1;
  }
  if (id > 0) {
    for (int j = 0; j < lines; ++j) {
      Payload(payload, width, id, j);
      printf("line %03d of clone %d: %s\n", j, id, payload);
      if (j % 4 == 0) {
        Payload(payload, 100, id, j);
        fprintf(stderr, "err %03d of clone %d: %s\n", j / 4, id, payload);
      }
    }
    sf_exit();  // flushes stdout
    return 1;   // not reached
  }
  for (int j = 0; j < lines; ++j) {
    char line[64];
    int n = snprintf(line, sizeof line, "parent line %d\n", j);
    if (write(1, line, (size_t)n) != n) return 1;
  }
  struct sf_outcome out[64];
  memset(out, 0, sizeof out);
  int n = sf_join(t, out, 64);
  printf("joined %d\n", n);
  return 0;
}
