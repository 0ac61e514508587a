// TestSeqpacketPair: two connected AF_UNIX SOCK_SEQPACKET sockets (close-on-exec), for unit
// tests of messages with descriptors attached. For tests only.
#pragma once

#include <gtest/gtest.h>
#include <sys/socket.h>

#include "base/unique_fd.h"

namespace flurry {

struct TestSeqpacketPair {
  TestSeqpacketPair() {
    int sv[2];
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
    a.Reset(sv[0]);
    b.Reset(sv[1]);
  }
  UniqueFd a, b;
};

}  // namespace flurry
