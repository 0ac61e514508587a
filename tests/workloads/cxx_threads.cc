// cxx_threads: a C++ program as people write them with the standard library's threads —
// std::async futures for a parallel prime count, a std::thread pipeline on std::mutex and
// std::condition_variable, thread_local counters, std::atomic, std::jthread with a stop token.
// Output is deterministic (printed by the main thread after joining).
//
// usage: cxx_threads [CLONES]
// With CLONES > 0, the program first starts its worker pool, then calls sf_clone(CLONES):
// every VM (the parent too) runs the whole job on its own slice of numbers — the pool's threads
// are cloned with it — and each clone returns its results as a blob, which the parent checks
// against its own computation of that slice.
#include <flurry/sf.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <functional>
#include <future>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

namespace {

bool IsPrime(uint64_t n) {
  if (n < 2) return false;
  for (uint64_t d = 2; d * d <= n; ++d) {
    if (n % d == 0) return false;
  }
  return true;
}

// A small pool: tasks from a queue, run by a fixed set of threads.
class Pool {
 public:
  explicit Pool(int threads) {
    for (int i = 0; i < threads; ++i) workers_.emplace_back([this] { Work(); });
  }
  ~Pool() {
    {
      std::lock_guard lock(mutex_);
      done_ = true;
    }
    ready_.notify_all();
    for (std::thread& t : workers_) t.join();
  }
  std::future<uint64_t> Submit(std::function<uint64_t()> task) {
    auto packaged = std::make_shared<std::packaged_task<uint64_t()>>(std::move(task));
    std::future<uint64_t> result = packaged->get_future();
    {
      std::lock_guard lock(mutex_);
      queue_.push_back([packaged] { (*packaged)(); });
    }
    ready_.notify_one();
    return result;
  }

 private:
  void Work() {
    for (;;) {
      std::function<void()> task;
      {
        std::unique_lock lock(mutex_);
        ready_.wait(lock, [this] { return done_ || !queue_.empty(); });
        if (queue_.empty()) return;
        task = std::move(queue_.front());
        queue_.pop_front();
      }
      task();
    }
  }

  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<std::function<void()>> queue_;
  bool done_ = false;
  std::vector<std::thread> workers_;
};

thread_local uint64_t tls_tasks = 0;

struct Results {
  uint64_t primes = 0;        // std::async
  uint64_t pool_sum = 0;      // the pool
  uint64_t pipeline_sum = 0;  // producer -> consumer
  uint64_t jthread_ticks = 0;
  bool operator==(const Results&) const = default;
};

Results RunJob(Pool& pool, uint64_t base) {
  Results r;
  // std::async: count primes in four ranges at once.
  std::vector<std::future<uint64_t>> counts;
  for (uint64_t part = 0; part < 4; ++part) {
    counts.push_back(std::async(std::launch::async, [base, part] {
      uint64_t n = 0;
      for (uint64_t v = base + part * 25000; v < base + (part + 1) * 25000; ++v) n += IsPrime(v);
      return n;
    }));
  }
  for (auto& c : counts) r.primes += c.get();

  // The pool: 32 tasks, each counting how many tasks its thread has run (thread_local).
  std::vector<std::future<uint64_t>> sums;
  std::atomic<uint64_t> ran{0};
  for (uint64_t i = 0; i < 32; ++i) {
    sums.push_back(pool.Submit([i, base, &ran] {
      ++tls_tasks;
      ran.fetch_add(1);
      uint64_t s = 0;
      for (uint64_t v = 0; v < 10000; ++v) s += (base + i * v) % 97;
      return s;
    }));
  }
  for (auto& s : sums) r.pool_sum += s.get();
  if (ran.load() != 32) std::printf("pool ran %llu tasks\n", (unsigned long long)ran.load());

  // A pipeline: a producer hands 5000 numbers to a consumer through a bounded queue.
  std::mutex m;
  std::condition_variable changed;
  std::deque<uint64_t> queue;
  bool finished = false;
  std::thread consumer([&] {
    for (;;) {
      std::unique_lock lock(m);
      changed.wait(lock, [&] { return finished || !queue.empty(); });
      if (queue.empty()) return;
      r.pipeline_sum += queue.front() * queue.front();
      queue.pop_front();
      changed.notify_all();
    }
  });
  for (uint64_t v = 0; v < 5000; ++v) {
    std::unique_lock lock(m);
    changed.wait(lock, [&] { return queue.size() < 16; });
    queue.push_back(base + v);
    changed.notify_all();
  }
  {
    std::lock_guard lock(m);
    finished = true;
  }
  changed.notify_all();
  consumer.join();

  // std::jthread: runs until asked to stop; counts 1000 ticks first.
  std::atomic<uint64_t> ticks{0};
  {
    std::jthread ticker([&ticks](std::stop_token stop) {
      while (!stop.stop_requested()) {
        if (ticks.load() < 1000) ticks.fetch_add(1);
        std::this_thread::yield();
      }
    });
    while (ticks.load() < 1000) std::this_thread::yield();
  }  // request_stop + join
  r.jthread_ticks = ticks.load();
  return r;
}

void Print(const char* who, uint64_t base, const Results& r) {
  std::printf("%s base %llu: primes %llu, pool sum %llu, pipeline sum %llu, jthread ticks %llu\n",
              who, (unsigned long long)base, (unsigned long long)r.primes,
              (unsigned long long)r.pool_sum, (unsigned long long)r.pipeline_sum,
              (unsigned long long)r.jthread_ticks);
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  const int clones = argc > 1 ? std::atoi(argv[1]) : 0;
  Pool pool(3);
  if (clones <= 0) {
    Print("main", 0, RunJob(pool, 0));
    return 0;
  }
  sf_ticket_t ticket = sf_request_ticket(clones);
  const int id = sf_clone(ticket);  // the pool's three threads are cloned too
  if (id < 0) {
    std::fprintf(stderr, "sf_clone: %s\n", std::strerror(-id));
    return 1;
  }
  const uint64_t base = static_cast<uint64_t>(id) * 100000;
  const Results mine = RunJob(pool, base);
  if (id > 0) {
    sf_exit_with(0, &mine, sizeof mine);
    return 1;  // not reached
  }
  Print("parent", base, mine);
  std::vector<sf_outcome> outcomes(static_cast<size_t>(clones));
  std::vector<Results> results(static_cast<size_t>(clones));
  for (size_t i = 0; i < outcomes.size(); ++i) {
    std::memset(&outcomes[i], 0, sizeof outcomes[i]);
    outcomes[i].result = reinterpret_cast<uint64_t>(&results[i]);
    outcomes[i].result_capacity = sizeof(Results);
  }
  const int joined = sf_join(ticket, outcomes.data(), clones);
  for (int i = 0; i < joined; ++i) {
    const uint64_t clone_base = static_cast<uint64_t>(outcomes[static_cast<size_t>(i)].id) * 100000;
    const Results expected = RunJob(pool, clone_base);
    const bool match = outcomes[static_cast<size_t>(i)].kind == SF_OUTCOME_EXITED &&
                       outcomes[static_cast<size_t>(i)].result_length == sizeof(Results) &&
                       results[static_cast<size_t>(i)] == expected;
    std::printf("clone %d: matches the parent's computation of base %llu: %s\n",
                outcomes[static_cast<size_t>(i)].id, (unsigned long long)clone_base,
                match ? "yes" : "NO");
  }
  return 0;
}
