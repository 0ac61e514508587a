// big_bss: a program with a 256 MiB .bss segment; touches every page.
#include <stdio.h>

char big[256 << 20];  // global (not static), so the compiler cannot drop it

int main(void) {
  volatile char* p = big;
  unsigned long sum = 0;
  for (unsigned long i = 0; i < sizeof big; i += 4096) {
    p[i] = 1;
    sum += (unsigned char)p[i];
  }
  printf("big_bss pages touched: %lu\n", sum);
  return 0;
}
