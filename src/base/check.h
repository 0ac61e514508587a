// CHECK(cond): aborts with a message when an internal invariant is broken. Only for invariants
// that flurry itself guarantees; anything a guest or a peer can influence returns an Error.
#pragma once

#include <cstdio>
#include <cstdlib>

#define FLURRY_CHECK(cond)                                                                 \
  do {                                                                                     \
    if (!(cond)) [[unlikely]] {                                                            \
      std::fprintf(stderr, "flurry: internal invariant failed at %s:%d: %s\n", __FILE__, \
                   __LINE__, #cond);                                                       \
      std::abort();                                                                        \
    }                                                                                      \
  } while (0)
