// The integration-test harness: runs the flurry binary (or any command) with captured stdin,
// stdout and stderr under a deadline, and the helpers the end-to-end tests share.
//
// Every run is killed after a deadline (60 s unless a test says otherwise), so a hung VM fails
// its test instead of stalling CI. A run ends when the process has exited AND its stdout and
// stderr have reached EOF, so a leftover process holding them (e.g. a clone VMM that outlived
// its parent) shows up as a timeout.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace flurry_test {

namespace fs = std::filesystem;

// Exit status the child uses when it could not hide /dev/kvm (not root, no mount namespaces).
inline constexpr int kCannotHideKvm = 251;
inline constexpr int kExecFailed = 250;

// The flurry binary and the directories of the guest programs and bad-input fixtures.
const std::string& FlurryBinary();
const std::string& GuestDir();
std::string Guest(const std::string& name);
std::string Fixture(const std::string& name);

struct RunOptions {
  std::string stdin_data;
  int timeout_seconds = 60;
  bool hide_kvm = false;  // run with an empty /dev (private mount namespace)
  std::vector<std::pair<std::string, std::string>> env;  // set in the child before exec
  // ExpectSameAsNative: flags of `flurry run` (before the program).
  std::vector<std::string> run_flags;
};

RunOptions WithStdin(std::string data);
RunOptions WithDeadline(int seconds);
RunOptions WithoutKvm();

struct RunResult {
  std::vector<std::string> argv;
  bool exited = false;  // exited normally (else killed by a signal)
  int exit_code = -1;
  int term_signal = 0;
  bool timed_out = false;  // we killed it after the deadline
  double seconds = 0;
  std::string out;
  std::string err;

  // For failure messages.
  std::string Describe() const;
  static std::string Excerpt(const std::string& text);
};

// Runs argv with stdin fed from options.stdin_data, capturing stdout and stderr.
RunResult Run(const std::vector<std::string>& argv, const RunOptions& options = {});
// `flurry ARGS...`
RunResult Flurry(std::vector<std::string> args, const RunOptions& options = {});
// Runs `program` (argv) natively and as `flurry run program...`, and expects the same: stdout,
// and the exit status — exited, with the same code and nothing on stderr; or killed by signal
// N natively, and flurry exiting with 128 + N after one line on stderr beginning with
// `killed_prefix`. Returns the flurry run (for further checks).
RunResult ExpectSameAsNative(const std::vector<std::string>& program,
                             const std::string& killed_prefix, const RunOptions& options = {});

std::vector<std::string> Lines(const std::string& text);
bool StartsWith(const std::string& s, const std::string& prefix);
std::string ReadFile(const fs::path& path);
void WriteFile(const fs::path& path, const std::string& content);

// A fresh temporary directory, removed at the end of the test.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

// The guest ran to completion: it exited with `code` and flurry printed nothing.
void ExpectCleanExit(const RunResult& r, int code);
// flurry refused the input: exit status 1, nothing on stdout, one line "flurry: ..." on stderr.
void ExpectInputError(const RunResult& r);
// A command-line usage error: exit status 1 or 2 (never a signal or CLI11's 1xx codes), with a
// message on stderr.
void ExpectUsageError(const RunResult& r);

}  // namespace flurry_test
