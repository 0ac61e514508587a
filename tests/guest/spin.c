// spin: announces itself, then loops forever (for --timeout).
#include <unistd.h>

int main(void) {
  write(1, "spinning\n", 9);
  for (;;) __asm__ volatile("" ::: "memory");
}
