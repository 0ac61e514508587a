// flurry's benchmarks: launch latency, syscall and clock costs, compute and first-touch speed
// against native, and VMM memory overhead. Each benchmark runs real `flurry run` processes on
// the guest programs in bench/guest; results and the command line are in docs/perf.md.
#include <benchmark/benchmark.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

extern char** environ;

namespace {

struct RunResult {
  int status = -1;
  std::string output;
  double wall_ns = 0;
  long maxrss_kib = 0;
  std::map<std::string, double> values;  // key=value lines of the output
};

double RealtimeNs() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return ts.tv_sec * 1e9 + ts.tv_nsec;
}

// Runs argv, capturing stdout; stderr passes through.
RunResult Run(const std::vector<std::string>& args) {
  RunResult result;
  int out[2];
  if (pipe(out) != 0) return result;
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out[1], 1);
  posix_spawn_file_actions_addclose(&actions, out[0]);
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  auto start = std::chrono::steady_clock::now();
  pid_t pid;
  int rc = posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  close(out[1]);
  if (rc != 0) {
    close(out[0]);
    return result;
  }
  char buffer[4096];
  ssize_t n;
  while ((n = read(out[0], buffer, sizeof buffer)) > 0) result.output.append(buffer, n);
  close(out[0]);
  int status = 0;
  rusage usage{};
  wait4(pid, &status, 0, &usage);
  result.wall_ns =
      std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - start).count();
  result.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  result.maxrss_kib = usage.ru_maxrss;
  std::istringstream lines(result.output);
  std::string line;
  while (std::getline(lines, line)) {
    auto eq = line.find('=');
    if (eq != std::string::npos)
      result.values[line.substr(0, eq)] = std::atof(line.c_str() + eq + 1);
  }
  return result;
}

std::vector<std::string> InFlurry(std::vector<std::string> program, const char* mem = "1G") {
  std::vector<std::string> args = {FLURRY_BIN, "run", "--mem", mem};
  args.insert(args.end(), program.begin(), program.end());
  return args;
}

std::string Guest(const char* name) { return std::string(BENCH_GUEST_DIR) + "/" + name; }

bool Check(benchmark::State& state, const RunResult& r) {
  if (r.status != 0) {
    state.SkipWithError(("program failed: " + r.output).c_str());
    return false;
  }
  return true;
}

// flurry run start -> guest main() (the guest reads CLOCK_REALTIME first thing in main).
void BM_LaunchToMain(benchmark::State& state) {
  const bool in_flurry = state.range(0) == 1;
  for (auto _ : state) {
    double start = RealtimeNs();
    RunResult r = Run(in_flurry ? InFlurry({Guest("bench_start")}, "256M")
                                : std::vector<std::string>{Guest("bench_start")});
    if (!Check(state, r)) return;
    state.SetIterationTime((r.values["main_ns"] - start) / 1e9);
  }
  state.SetLabel(in_flurry ? "flurry" : "native");
}
BENCHMARK(BM_LaunchToMain)
    ->Arg(1)
    ->Arg(0)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond)
    ->Iterations(30);

// hello, whole process, flurry vs native.
void BM_HelloEndToEnd(benchmark::State& state) {
  const bool in_flurry = state.range(0) == 1;
  const std::string hello = std::string(TEST_GUEST_DIR) + "/hello";
  for (auto _ : state) {
    RunResult r = Run(in_flurry ? InFlurry({hello}, "256M") : std::vector<std::string>{hello});
    if (!Check(state, r)) return;
    state.SetIterationTime(r.wall_ns / 1e9);
  }
  state.SetLabel(in_flurry ? "flurry" : "native");
}
BENCHMARK(BM_HelloEndToEnd)
    ->Arg(1)
    ->Arg(0)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond)
    ->Iterations(30);

// Syscall round trip (getppid) and clock_gettime, measured by the guest itself.
void BM_SyscallAndClock(benchmark::State& state) {
  double syscall_ns = 0, clock_ns = 0;
  for (auto _ : state) {
    RunResult r = Run(InFlurry({Guest("bench_syscall"), "20000", "1000000"}));
    if (!Check(state, r)) return;
    syscall_ns += r.values["syscall_ns"];
    clock_ns += r.values["clock_gettime_ns"];
  }
  RunResult native = Run({Guest("bench_syscall"), "20000", "1000000"});
  state.counters["syscall_us"] = syscall_ns / state.iterations() / 1000;
  state.counters["clock_gettime_ns"] = clock_ns / state.iterations();
  state.counters["native_syscall_us"] = native.values["syscall_ns"] / 1000;
  state.counters["native_clock_gettime_ns"] = native.values["clock_gettime_ns"];
}
BENCHMARK(BM_SyscallAndClock)->Iterations(5)->Unit(benchmark::kMillisecond);

// Signal delivery round trips (bench/guest/bench_signal.c): raise() to a handler and back, and
// a fault (ud2) whose handler steps over it. Guest and native, in microseconds.
void BM_SignalDelivery(benchmark::State& state) {
  double raise_ns = 0, fault_ns = 0;
  for (auto _ : state) {
    RunResult r = Run(InFlurry({Guest("bench_signal"), "20000"}));
    if (!Check(state, r)) return;
    raise_ns += r.values["raise_ns"];
    fault_ns += r.values["fault_ns"];
  }
  RunResult native = Run({Guest("bench_signal"), "20000"});
  state.counters["raise_us"] = raise_ns / state.iterations() / 1000;
  state.counters["fault_us"] = fault_ns / state.iterations() / 1000;
  state.counters["native_raise_us"] = native.values["raise_ns"] / 1000;
  state.counters["native_fault_us"] = native.values["fault_ns"] / 1000;
}
BENCHMARK(BM_SignalDelivery)->Iterations(5)->Unit(benchmark::kMillisecond);

// Page protection (bench/guest/bench_mprotect.c): one mprotect of one page, and a fault whose
// SIGSEGV handler makes the page writable. Guest and native, in microseconds.
void BM_MemoryProtection(benchmark::State& state) {
  double mprotect_ns = 0, fault_ns = 0;
  for (auto _ : state) {
    RunResult r = Run(InFlurry({Guest("bench_mprotect"), "20000"}));
    if (!Check(state, r)) return;
    mprotect_ns += r.values["mprotect_ns"];
    fault_ns += r.values["fault_unprotect_ns"];
  }
  RunResult native = Run({Guest("bench_mprotect"), "20000"});
  state.counters["mprotect_us"] = mprotect_ns / state.iterations() / 1000;
  state.counters["fault_unprotect_us"] = fault_ns / state.iterations() / 1000;
  state.counters["native_mprotect_us"] = native.values["mprotect_ns"] / 1000;
  state.counters["native_fault_unprotect_us"] = native.values["fault_unprotect_ns"] / 1000;
}
BENCHMARK(BM_MemoryProtection)->Iterations(5)->Unit(benchmark::kMillisecond);

// Threads (bench/guest/bench_threads.c): pthread_create + join, a futex ping-pong round between
// two threads, and a 4-thread compute job's speed-up over one thread. Guest and native.
void BM_Threads(benchmark::State& state) {
  const std::vector<std::string> program = {Guest("bench_threads"), "2000", "20000", "400000000"};
  double create_ns = 0, pingpong_ns = 0, ratio = 0;
  for (auto _ : state) {
    RunResult r = Run(InFlurry(program));
    if (!Check(state, r)) return;
    create_ns += r.values["create_join_ns"];
    pingpong_ns += r.values["pingpong_round_ns"];
    ratio += r.values["parallel_ratio"];
  }
  RunResult native = Run(program);
  if (!Check(state, native)) return;
  const double n = static_cast<double>(state.iterations());
  state.counters["create_join_us"] = create_ns / n / 1000;
  state.counters["pingpong_round_us"] = pingpong_ns / n / 1000;
  state.counters["four_thread_speedup"] = ratio / n;
  state.counters["native_create_join_us"] = native.values["create_join_ns"] / 1000;
  state.counters["native_pingpong_round_us"] = native.values["pingpong_round_ns"] / 1000;
  state.counters["native_four_thread_speedup"] = native.values["parallel_ratio"];
}
BENCHMARK(BM_Threads)->Iterations(3)->Unit(benchmark::kMillisecond);

// Processes (bench/guest/bench_processes.c): fork + exit + wait of a process holding 64 MiB of
// touched memory, and fork + execve + wait. Guest and native; goal (issue 8): process creation
// within 5x native on the seccomp backend.
void BM_Processes(benchmark::State& state) {
  const std::vector<std::string> program = {Guest("bench_processes"), "30"};
  double fork_ns = 0, exec_ns = 0;
  for (auto _ : state) {
    RunResult r = Run(InFlurry(program, "256M"));
    if (!Check(state, r)) return;
    fork_ns += r.values["fork_exit_wait_ns"];
    exec_ns += r.values["fork_exec_wait_ns"];
  }
  RunResult native = Run(program);
  if (!Check(state, native)) return;
  const double n = static_cast<double>(state.iterations());
  state.counters["fork_exit_wait_us"] = fork_ns / n / 1000;
  state.counters["fork_exec_wait_us"] = exec_ns / n / 1000;
  state.counters["native_fork_exit_wait_us"] = native.values["fork_exit_wait_ns"] / 1000;
  state.counters["native_fork_exec_wait_us"] = native.values["fork_exec_wait_ns"] / 1000;
  state.counters["fork_guest_over_native"] = fork_ns / n / native.values["fork_exit_wait_ns"];
}
BENCHMARK(BM_Processes)->Iterations(3)->Unit(benchmark::kMillisecond);

// Debian's busybox (busybox-static): `seq 100000 | sort -n | tail -1`, three processes and two
// pipes, the whole run timed from outside (flurry's own start included), natively and in
// flurry with busybox inside --dir.
void BM_BusyboxPipeline(benchmark::State& state) {
  const std::string busybox = "/bin/busybox";
  if (access(busybox.c_str(), X_OK) != 0) {
    state.SkipWithError("/bin/busybox missing (busybox-static)");
    return;
  }
  char dir_template[] = "/tmp/flurry_bench_busybox_XXXXXX";
  const std::string dir = mkdtemp(dir_template);
  const std::string copy = dir + "/busybox";
  if (std::system(("cp " + busybox + " " + copy).c_str()) != 0) {
    state.SkipWithError("copying busybox");
    return;
  }
  const std::vector<std::string> script = {"sh", "-c", "seq 100000 | sort -n | tail -1"};
  std::vector<std::string> native_args = {busybox};
  native_args.insert(native_args.end(), script.begin(), script.end());
  std::vector<std::string> guest_args = {"--dir", dir, copy};
  guest_args.insert(guest_args.end(), script.begin(), script.end());
  double guest_ns = 0, native_ns = 0;
  for (auto _ : state) {
    RunResult g = Run(InFlurry(guest_args, "256M"));
    RunResult n = Run(native_args);
    if (!Check(state, g) || !Check(state, n)) break;
    guest_ns += g.wall_ns;
    native_ns += n.wall_ns;
  }
  std::filesystem::remove_all(dir);
  const double iterations = static_cast<double>(state.iterations());
  state.counters["guest_ms"] = guest_ns / iterations / 1e6;
  state.counters["native_ms"] = native_ns / iterations / 1e6;
  state.counters["guest_over_native"] = guest_ns / native_ns;
}
BENCHMARK(BM_BusyboxPipeline)->Iterations(5)->Unit(benchmark::kMillisecond);

// The same workload natively and in flurry; ratio = native time / guest time (1.0 = native).
void CompareWithNative(benchmark::State& state, std::vector<std::string> program, const char* key,
                       const char* mem) {
  double guest = 0, native = 0;
  for (auto _ : state) {
    RunResult n = Run(program);
    RunResult g = Run(InFlurry(program, mem));
    if (!Check(state, n) || !Check(state, g)) return;
    native += n.values[key];
    guest += g.values[key];
  }
  state.counters["native_ms"] = native / state.iterations() / 1e6;
  state.counters["guest_ms"] = guest / state.iterations() / 1e6;
  state.counters["native_over_guest"] = native / guest;
}

void BM_Compute(benchmark::State& state) {
  CompareWithNative(state, {Guest("bench_compute")}, "compute_ns", "1G");
}
BENCHMARK(BM_Compute)->Iterations(5)->Unit(benchmark::kMillisecond);

void BM_FirstTouch512MiB(benchmark::State& state) {
  CompareWithNative(state, {Guest("bench_touch"), "512"}, "touch_ns", "1G");
}
BENCHMARK(BM_FirstTouch512MiB)->Iterations(5)->Unit(benchmark::kMillisecond);

// Peak RSS of `flurry run hello` vs native hello: the VMM's memory overhead.
void BM_RssOverhead(benchmark::State& state) {
  const std::string hello = std::string(TEST_GUEST_DIR) + "/hello";
  long flurry_kib = 0, native_kib = 0;
  for (auto _ : state) {
    RunResult g = Run(InFlurry({hello}, "512M"));
    RunResult n = Run({hello});
    if (!Check(state, g) || !Check(state, n)) return;
    flurry_kib = g.maxrss_kib;
    native_kib = n.maxrss_kib;
  }
  state.counters["flurry_maxrss_kib"] = flurry_kib;
  state.counters["native_maxrss_kib"] = native_kib;
  state.counters["overhead_kib"] = flurry_kib - native_kib;
}
BENCHMARK(BM_RssOverhead)->Iterations(3)->Unit(benchmark::kMillisecond);

// sf_clone() in the parent -> all N children executing, with 256 MiB touched.
void BM_CloneLatency(benchmark::State& state) {
  const std::string n = std::to_string(state.range(0));
  double pause_ns = 0;
  for (auto _ : state) {
    RunResult r = Run(InFlurry({Guest("bench_clone"), "256", n}, "1G"));
    if (!Check(state, r)) return;
    state.SetIterationTime(r.values["clone_latency_ns"] / 1e9);
    pause_ns += r.values["parent_pause_ns"];
  }
  state.counters["parent_pause_ms"] = pause_ns / state.iterations() / 1e6;
}
BENCHMARK(BM_CloneLatency)
    ->Arg(1)
    ->Arg(2)
    ->Arg(4)
    ->Arg(8)
    ->Arg(16)
    ->Arg(32)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond)
    ->Iterations(3);

// How long a host process with `bytes` of touched memory pauses in fork() (the reference for
// the parent's pause in sf_clone). Huge pages or not.
double ForkPauseNs(size_t bytes, bool huge) {
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return -1;
  madvise(p, bytes, huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
  memset(p, 1, bytes);
  auto start = std::chrono::steady_clock::now();
  pid_t pid = fork();
  if (pid == 0) _exit(0);
  double ns =
      std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - start).count();
  waitpid(pid, nullptr, 0);
  munmap(p, bytes);
  return ns;
}

// The parent's pause in sf_clone with 1 GiB touched, next to fork() of a 1 GiB process.
void BM_ParentPause1GiB(benchmark::State& state) {
  double pause_ns = 0;
  for (auto _ : state) {
    RunResult r = Run(InFlurry({Guest("bench_clone"), "1024", "1"}, "2G"));
    if (!Check(state, r)) return;
    pause_ns += r.values["parent_pause_ns"];
    state.SetIterationTime(r.values["parent_pause_ns"] / 1e9);
  }
  state.counters["flurry_pause_ms"] = pause_ns / state.iterations() / 1e6;
  state.counters["fork_4k_pages_ms"] = ForkPauseNs(1ULL << 30, false) / 1e6;
  state.counters["fork_huge_pages_ms"] = ForkPauseNs(1ULL << 30, true) / 1e6;
}
BENCHMARK(BM_ParentPause1GiB)->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(3);

// Memory of a clone that wrote nothing (parent touched 256 MiB): RSS and private (USS) of its
// VMM process, read from /proc/PID/smaps_rollup while it runs.
std::map<std::string, long> SmapsRollupKib(int pid) {
  std::map<std::string, long> values;
  std::ifstream in("/proc/" + std::to_string(pid) + "/smaps_rollup");
  std::string key;
  long value;
  std::string unit;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    if (fields >> key >> value) values[key] = value;
  }
  return values;
}

void BM_CloneMemory(benchmark::State& state) {
  long rss = 0, uss = 0, count = 0;
  for (auto _ : state) {
    std::vector<std::string> args = InFlurry({Guest("bench_clone_rss"), "256", "4"}, "1G");
    int out[2];
    if (pipe(out) != 0) return;
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, out[1], 1);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_t pid;
    posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    close(out[1]);
    FILE* lines = fdopen(out[0], "r");
    char line[256];
    while (fgets(line, sizeof line, lines) != nullptr) {
      const char* found = strstr(line, "clone_pid=");
      if (found == nullptr) continue;
      auto values = SmapsRollupKib(atoi(found + 10));
      rss += values["Rss:"];
      uss += values["Private_Clean:"] + values["Private_Dirty:"];
      ++count;
    }
    fclose(lines);
    waitpid(pid, nullptr, 0);
  }
  if (count == 0) {
    state.SkipWithError("no clone reported its pid");
    return;
  }
  state.counters["clone_rss_mib"] = rss / count / 1024.0;
  state.counters["clone_private_mib"] = uss / count / 1024.0;
}
BENCHMARK(BM_CloneMemory)->Iterations(2)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
