#include "base/error.h"

#include <cstring>

namespace flurry {

std::unexpected<Error> FailErrno(int code, std::string_view what) {
  return std::unexpected(Error(code, fmt::format("{}: {}", what, std::strerror(code))));
}

}  // namespace flurry
