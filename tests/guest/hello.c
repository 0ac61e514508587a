// hello: prints a greeting and its argv; exits with the status given in argv[1], if any.
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char** argv) {
  printf("hello from flurry\n");
  printf("argc=%d\n", argc);
  for (int i = 0; i < argc; i++) printf("argv[%d]=%s\n", i, argv[i]);
  return argc > 1 ? atoi(argv[1]) : 0;
}
