// ProcessWatch and ElfSymbol (process_watch.h).
#include "process_watch.h"

#include <dirent.h>
#include <elf.h>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

namespace flurry_test {

std::optional<ProcStat> ReadProcStat(pid_t pid) {
  // Plain read(2): the process may vanish mid-read (ESRCH), which iostreams would throw on.
  const std::string path = "/proc/" + std::to_string(pid) + "/stat";
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return {};
  char buf[1024];
  const ssize_t n = read(fd, buf, sizeof buf);
  close(fd);
  if (n <= 0) return {};
  const std::string text(buf, static_cast<size_t>(n));
  const size_t open = text.find('(');
  const size_t close = text.rfind(')');
  if (open == std::string::npos || close == std::string::npos || close < open) return {};
  ProcStat st;
  st.comm = text.substr(open + 1, close - open - 1);
  std::istringstream rest(text.substr(close + 1));
  std::string field;
  // Fields after comm: 3 state, 4 ppid, 5 pgrp, 6 session, ..., 22 starttime.
  for (int index = 3; index <= 22 && rest >> field; ++index) {
    if (index == 3) st.state = field.empty() ? '?' : field[0];
    if (index == 4) st.ppid = static_cast<pid_t>(std::atoll(field.c_str()));
    if (index == 6) st.session = static_cast<pid_t>(std::atoll(field.c_str()));
    if (index == 22) st.start_time = std::strtoull(field.c_str(), nullptr, 10);
  }
  return st;
}

ProcessWatch::ProcessWatch() {
  Poll();  // what exists already (e.g. a test's own helper processes) is not watched
  {
    std::lock_guard lock(mutex_);
    for (const auto& [key, seen] : seen_) preexisting_.insert(key);
    seen_.clear();
  }
  thread_ = std::thread([this] {
    while (!stop_.load()) {
      Poll();
      std::this_thread::sleep_for(std::chrono::microseconds(500));
    }
  });
}

ProcessWatch::~ProcessWatch() {
  stop_.store(true);
  if (thread_.joinable()) thread_.join();
}

std::map<pid_t, ProcStat> Descendants(pid_t root) {
  std::map<pid_t, ProcStat> all;
  if (DIR* dir = opendir("/proc")) {
    while (dirent* entry = readdir(dir)) {
      const pid_t pid = static_cast<pid_t>(std::atoi(entry->d_name));
      if (pid <= 0) continue;
      if (auto st = ReadProcStat(pid)) all[pid] = *st;
    }
    closedir(dir);
  }
  std::set<pid_t> tree{root};
  for (bool grew = true; grew;) {
    grew = false;
    for (const auto& [pid, st] : all) {
      if (tree.count(st.ppid) != 0 && tree.insert(pid).second) grew = true;
    }
  }
  std::map<pid_t, ProcStat> descendants;
  for (pid_t pid : tree) {
    if (pid != root && all.count(pid) != 0) descendants[pid] = all[pid];
  }
  return descendants;
}

int LiveDescendantsNamed(pid_t root, const std::string& comm) {
  int count = 0;
  for (const auto& [pid, st] : Descendants(root)) {
    if (st.comm == comm && st.state != 'Z') ++count;
  }
  return count;
}

int LiveProcessesInSession(pid_t sid) {
  int count = 0;
  for (const auto& [pid, st] : Descendants(0)) {
    if (st.session == sid && st.state != 'Z') ++count;
  }
  return count;
}

void ProcessWatch::Poll() {
  // Descendants of this process, whatever the depth.
  const std::map<pid_t, ProcStat> tree = Descendants(getpid());
  std::lock_guard lock(mutex_);
  for (const auto& [pid, st] : tree) {
    if (preexisting_.count({pid, st.start_time}) != 0) continue;
    seen_.try_emplace({pid, st.start_time}, Seen{pid, st.start_time, st.comm});
  }
}

std::vector<ProcessWatch::Seen> ProcessWatch::SeenSoFar() {
  std::lock_guard lock(mutex_);
  std::vector<Seen> list;
  for (const auto& [key, seen] : seen_) list.push_back(seen);
  return list;
}

std::vector<std::string> ProcessWatch::Leftovers(int grace_ms) {
  stop_.store(true);
  if (thread_.joinable()) thread_.join();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(grace_ms);
  std::vector<Seen> alive;
  for (;;) {
    alive.clear();
    for (const Seen& seen : SeenSoFar()) {
      auto st = ReadProcStat(seen.pid);
      if (st && st->start_time == seen.start_time && st->state != 'Z') alive.push_back(seen);
    }
    if (alive.empty() || std::chrono::steady_clock::now() > deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::vector<std::string> described;
  for (const Seen& seen : alive) {
    described.push_back("pid " + std::to_string(seen.pid) + " (" + seen.comm + ")");
    kill(seen.pid, SIGKILL);
  }
  return described;
}

namespace {

// The Elf64_Sym of `name` in `path`'s .symtab.
std::optional<Elf64_Sym> FindSymbol(const std::string& path, const std::string& name) {
  std::ifstream f(path, std::ios::binary);
  std::string elf((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  if (elf.size() < sizeof(Elf64_Ehdr) || elf.compare(0, 4, ELFMAG) != 0) return {};
  Elf64_Ehdr eh;
  std::memcpy(&eh, elf.data(), sizeof eh);
  auto section = [&](size_t i) {
    Elf64_Shdr sh{};
    const size_t off = eh.e_shoff + i * sizeof(Elf64_Shdr);
    if (off + sizeof sh <= elf.size()) std::memcpy(&sh, elf.data() + off, sizeof sh);
    return sh;
  };
  for (size_t i = 0; i < eh.e_shnum; ++i) {
    const Elf64_Shdr symtab = section(i);
    if (symtab.sh_type != SHT_SYMTAB) continue;
    const Elf64_Shdr strtab = section(symtab.sh_link);
    for (size_t off = symtab.sh_offset;
         off + sizeof(Elf64_Sym) <= symtab.sh_offset + symtab.sh_size &&
         off + sizeof(Elf64_Sym) <= elf.size();
         off += sizeof(Elf64_Sym)) {
      Elf64_Sym sym;
      std::memcpy(&sym, elf.data() + off, sizeof sym);
      const size_t name_off = strtab.sh_offset + sym.st_name;
      if (name_off < elf.size() && std::strcmp(elf.c_str() + name_off, name.c_str()) == 0) {
        return sym;
      }
    }
  }
  return {};
}

}  // namespace

uint64_t ElfSymbol(const std::string& path, const std::string& name) {
  auto sym = FindSymbol(path, name);
  return sym ? sym->st_value : 0;
}

uint64_t ElfSymbolSize(const std::string& path, const std::string& name) {
  auto sym = FindSymbol(path, name);
  return sym ? sym->st_size : 0;
}

}  // namespace flurry_test
