#include "base/spawn.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <thread>

#include "base/unique_fd.h"

namespace flurry {
namespace {

// Everything readable from `fd` until end of file.
std::string ReadAll(int fd) {
  std::string text;
  char buffer[4096];
  ssize_t n;
  while ((n = read(fd, buffer, sizeof buffer)) > 0) text.append(buffer, static_cast<size_t>(n));
  return text;
}

struct Pipe {
  Pipe() {
    int fds[2];
    EXPECT_EQ(pipe2(fds, O_CLOEXEC), 0);
    read_end.Reset(fds[0]);
    // Above the child's 0..2, as SpawnTied requires.
    write_end.Reset(fcntl(fds[1], F_DUPFD_CLOEXEC, 10));
    close(fds[1]);
  }
  UniqueFd read_end, write_end;
};

int WaitExit(pid_t pid) {
  int status = 0;
  EXPECT_EQ(waitpid(pid, &status, 0), pid);
  return status;
}

TEST(SpawnTied, RunsTheProgramWithItsFdsEnvironmentAndDirectory) {
  Pipe out;
  UniqueFd null(fcntl(open("/dev/null", O_RDONLY | O_CLOEXEC), F_DUPFD_CLOEXEC, 10));
  TiedSpawn spec;
  spec.args = {"/bin/sh", "-c", "echo \"$FLURRY_SPAWN_TEST\"; pwd; grep SigBlk /proc/self/status"};
  spec.environment = {"FLURRY_SPAWN_TEST=hello there", "PATH=/usr/bin:/bin"};
  spec.fds = {null.get(), out.write_end.get(), out.write_end.get()};
  spec.work_dir = "/proc";
  // Whatever this thread blocks, the program starts with nothing blocked.
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  auto pid = SpawnTied(spec);
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  ASSERT_TRUE(pid.has_value()) << pid.error().message();
  EXPECT_EQ(getpgid(*pid), *pid);  // a process group of its own
  out.write_end.Reset();
  EXPECT_EQ(ReadAll(out.read_end.get()), "hello there\n/proc\nSigBlk:\t0000000000000000\n");
  const int status = WaitExit(*pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
}

TEST(SpawnTied, AProgramThatCannotRunIsAnError) {
  TiedSpawn spec;
  spec.args = {"/nonexistent/flurry-spawn-test"};
  auto pid = SpawnTied(spec);
  ASSERT_FALSE(pid.has_value());
  EXPECT_EQ(pid.error().code(), ENOENT) << pid.error().message();
  EXPECT_EQ(waitpid(-1, nullptr, WNOHANG), -1);  // nothing left to reap
  EXPECT_EQ(errno, ECHILD);

  Pipe out;
  spec.args = {"/bin/true"};
  spec.fds = {out.write_end.get(), 1};  // 1 would be overwritten before it is copied
  pid = SpawnTied(spec);
  ASSERT_FALSE(pid.has_value());
  EXPECT_EQ(pid.error().code(), EINVAL);
}

TEST(SpawnTied, TheProgramDiesWithTheThreadThatStartedIt) {
  pid_t pid = 0;
  std::thread starter([&pid] {
    TiedSpawn spec;
    spec.args = {"/bin/sleep", "60"};
    auto spawned = SpawnTied(spec);
    ASSERT_TRUE(spawned.has_value()) << spawned.error().message();
    pid = *spawned;
  });
  starter.join();
  ASSERT_GT(pid, 0);
  const int status = WaitExit(pid);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << status;
}

}  // namespace
}  // namespace flurry
