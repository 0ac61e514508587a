#include "guest/initial_stack.h"

#include <elf.h>

#include <algorithm>
#include <cstring>
#include <string_view>
#include <utility>

#include "arch/x86_64/layout.h"

namespace flurry {
namespace {

constexpr std::string_view kPlatform = "x86_64";
constexpr uint64_t kClockTicks = 100;  // AT_CLKTCK: sysconf(_SC_CLK_TCK)

std::unexpected<Error> TooLarge() {
  return Fail("arguments and environment too large for the stack");
}

// Fills a stack image whose last byte is just below `top`, addressed by guest address.
class StackWriter {
 public:
  StackWriter(std::vector<uint8_t>& bytes, uint64_t bottom) : bytes_(bytes), bottom_(bottom) {}

  void Bytes(uint64_t addr, const void* data, size_t len) {
    if (len != 0) std::memcpy(bytes_.data() + (addr - bottom_), data, len);
  }
  void Word(uint64_t addr, uint64_t value) { Bytes(addr, &value, sizeof value); }
  // Writes `text` and its NUL at addr; returns the address just past the NUL.
  uint64_t String(uint64_t addr, std::string_view text) {
    Bytes(addr, text.data(), text.size());
    bytes_[addr + text.size() - bottom_] = 0;
    return addr + text.size() + 1;
  }

 private:
  std::vector<uint8_t>& bytes_;
  uint64_t bottom_;
};

// The strings reach the guest NUL-terminated, so an embedded NUL would silently cut one short.
Result<void> CheckNoNul(const StackInputs& inputs) {
  for (size_t i = 0; i < inputs.argv.size(); ++i) {
    if (inputs.argv[i].find('\0') != std::string::npos) {
      return Fail("argument {} contains a NUL byte", i);
    }
  }
  for (size_t i = 0; i < inputs.envp.size(); ++i) {
    if (inputs.envp[i].find('\0') != std::string::npos) {
      return Fail("environment variable {} contains a NUL byte", i);
    }
  }
  if (inputs.execfn.find('\0') != std::string::npos) {
    return Fail("program path contains a NUL byte");
  }
  return {};
}

}  // namespace

Result<InitialStack> BuildInitialStack(const StackInputs& inputs, uint64_t stack_top,
                                       uint64_t max_size) {
  if (stack_top % 16 != 0) return Fail("stack top {:#x} is not 16-byte aligned", stack_top);
  FLURRY_TRY(CheckNoNul(inputs));
  uint64_t limit = std::min(max_size, stack_top);

  // Sizes are measured as depth below stack_top; stack_top is 16-byte aligned, so aligning a
  // depth up aligns the address down. Every addition is checked against the limit first.
  uint64_t strings_size = 8;  // the end marker
  if (limit < strings_size) return TooLarge();
  for (const auto* list : {&inputs.argv, &inputs.envp}) {
    for (const std::string& s : *list) {
      if (s.size() >= limit - strings_size) return TooLarge();
      strings_size += s.size() + 1;
    }
  }
  if (inputs.execfn.size() >= limit - strings_size) return TooLarge();
  strings_size += inputs.execfn.size() + 1;
  if (limit - strings_size < 16 + kPlatform.size() + 1 + inputs.random.size()) return TooLarge();
  uint64_t platform_depth = x86::AlignUp(strings_size, 16) + kPlatform.size() + 1;
  uint64_t random_depth = platform_depth + inputs.random.size();

  std::vector<std::pair<uint64_t, uint64_t>> auxv;
  uint64_t random_addr = stack_top - random_depth;
  uint64_t platform_addr = stack_top - platform_depth;
  uint64_t strings_addr = stack_top - strings_size;
  uint64_t execfn_addr = stack_top - 8 - (inputs.execfn.size() + 1);

  // Same order as Linux's create_elf_tables (ARCH_DLINFO entries first).
  if (inputs.vdso_base != 0) auxv.emplace_back(AT_SYSINFO_EHDR, inputs.vdso_base);
  auxv.emplace_back(AT_MINSIGSTKSZ, inputs.minsigstksz);
  auxv.emplace_back(AT_HWCAP, inputs.hwcap);
  auxv.emplace_back(AT_PAGESZ, x86::kPageSize);
  auxv.emplace_back(AT_CLKTCK, kClockTicks);
  auxv.emplace_back(AT_PHDR, inputs.phdr);
  auxv.emplace_back(AT_PHENT, inputs.phent);
  auxv.emplace_back(AT_PHNUM, inputs.phnum);
  auxv.emplace_back(AT_BASE, 0);  // no interpreter
  auxv.emplace_back(AT_FLAGS, 0);
  auxv.emplace_back(AT_ENTRY, inputs.entry);
  auxv.emplace_back(AT_UID, 0);
  auxv.emplace_back(AT_EUID, 0);
  auxv.emplace_back(AT_GID, 0);
  auxv.emplace_back(AT_EGID, 0);
  auxv.emplace_back(AT_SECURE, 0);
  auxv.emplace_back(AT_RANDOM, random_addr);
  auxv.emplace_back(AT_HWCAP2, inputs.hwcap2);
  auxv.emplace_back(AT_EXECFN, execfn_addr);
  auxv.emplace_back(AT_PLATFORM, platform_addr);
  auxv.emplace_back(AT_NULL, 0);

  // argc, argv + NULL, envp + NULL, auxv.
  uint64_t argc = inputs.argv.size();
  uint64_t table_words = 1 + (argc + 1) + (inputs.envp.size() + 1) + 2 * auxv.size();
  if (random_depth > limit || table_words > (limit - random_depth) / 8) return TooLarge();
  uint64_t depth = x86::AlignUp(random_depth + 8 * table_words, 16);
  if (depth > limit) return TooLarge();

  InitialStack stack;
  stack.bottom = stack_top - depth;
  stack.rsp = stack.bottom;
  stack.bytes.assign(depth, 0);
  StackWriter out(stack.bytes, stack.bottom);

  // The string area: argv strings, envp strings, AT_EXECFN, end marker (already zero).
  uint64_t p = strings_addr;
  std::vector<uint64_t> argv_ptrs, envp_ptrs;
  for (const std::string& s : inputs.argv) {
    argv_ptrs.push_back(p);
    p = out.String(p, s);
  }
  for (const std::string& s : inputs.envp) {
    envp_ptrs.push_back(p);
    p = out.String(p, s);
  }
  out.String(execfn_addr, inputs.execfn);
  out.String(platform_addr, kPlatform);
  out.Bytes(random_addr, inputs.random.data(), inputs.random.size());

  // The table at RSP: argc, argv, NULL, envp, NULL, auxv.
  uint64_t q = stack.rsp;
  auto push = [&](uint64_t value) {
    out.Word(q, value);
    q += 8;
  };
  push(argc);
  for (uint64_t ptr : argv_ptrs) push(ptr);
  push(0);
  for (uint64_t ptr : envp_ptrs) push(ptr);
  push(0);
  for (const auto& [key, value] : auxv) {
    push(key);
    push(value);
  }
  return stack;
}

Result<uint64_t> PlaceInitialStack(const InitialStack& stack, GuestMemory& memory) {
  FLURRY_TRY_CTX(memory.Write(stack.bottom, stack.bytes.data(), stack.bytes.size()),
                 "placing the initial stack");
  return stack.rsp;
}

}  // namespace flurry
