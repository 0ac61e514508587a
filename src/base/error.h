// Error and Result<T>: the error type every layer of flurry returns.
//
// An Error carries an errno-style code (0 when no errno applies) and a human-readable message.
// Each layer that passes an error up adds its own context in front:
//   "restoring clone 3: fetching page 0x7f000: connection refused".
#pragma once

#include <fmt/format.h>

#include <cerrno>
#include <expected>
#include <string>
#include <string_view>
#include <utility>

namespace flurry {

class Error {
 public:
  Error(int code, std::string message) : code_(code), message_(std::move(message)) {}

  // The errno value behind this error, or 0 when there is none.
  int code() const { return code_; }
  // The errno value, or `fallback` when there is none (for replies that must carry one).
  int code_or(int fallback) const { return code_ != 0 ? code_ : fallback; }
  const std::string& message() const { return message_; }

  // Returns this error with "context: " in front of its message.
  Error WithContext(std::string_view context) const& {
    return Error(code_, fmt::format("{}: {}", context, message_));
  }
  Error WithContext(std::string_view context) && {
    message_ = fmt::format("{}: {}", context, message_);
    return std::move(*this);
  }

 private:
  int code_;
  std::string message_;
};

template <typename T>
using Result = std::expected<T, Error>;

// An error without an errno.
inline std::unexpected<Error> Fail(std::string message) {
  return std::unexpected(Error(0, std::move(message)));
}
template <typename... Args>
std::unexpected<Error> Fail(fmt::format_string<Args...> format, Args&&... args) {
  return std::unexpected(Error(0, fmt::format(format, std::forward<Args>(args)...)));
}

// An error with an explicit errno code: "what: strerror(code)".
std::unexpected<Error> FailErrno(int code, std::string_view what);

// An error from the current errno: "what: strerror(errno)".
inline std::unexpected<Error> FailErrno(std::string_view what) { return FailErrno(errno, what); }

// Adds context to the error of a Result, leaving a value untouched.
template <typename T>
Result<T> WithContext(Result<T> result, std::string_view context) {
  if (!result) return std::unexpected(std::move(result.error()).WithContext(context));
  return result;
}

namespace internal {
template <typename T>
T TakeValue(std::expected<T, Error>&& result) {
  return std::move(*result);
}
inline void TakeValue(std::expected<void, Error>&&) {}
}  // namespace internal

}  // namespace flurry

// FLURRY_TRY(expr): evaluates a Result; returns its error (as std::unexpected) from the enclosing
// function, or yields its value. FLURRY_TRY_CTX adds a context string to a returned error.
#define FLURRY_TRY(expr)                                             \
  ({                                                                 \
    auto&& flurry_try_result_ = (expr);                              \
    if (!flurry_try_result_) [[unlikely]]                            \
      return std::unexpected(std::move(flurry_try_result_.error())); \
    ::flurry::internal::TakeValue(std::move(flurry_try_result_));    \
  })

#define FLURRY_TRY_CTX(expr, context)                                                     \
  ({                                                                                      \
    auto&& flurry_try_result_ = (expr);                                                   \
    if (!flurry_try_result_) [[unlikely]]                                                 \
      return std::unexpected(std::move(flurry_try_result_.error()).WithContext(context)); \
    ::flurry::internal::TakeValue(std::move(flurry_try_result_));                         \
  })
