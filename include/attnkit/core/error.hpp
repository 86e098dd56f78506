// One exception type for every bad argument. Messages name the argument, its
// value and the rule, so a user porting a model sees what to change.
#pragma once

#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>

namespace attnkit {

class Error : public std::invalid_argument {
 public:
  explicit Error(const std::string& what) : std::invalid_argument(what) {}
};

// Raised for failures of the CUDA runtime; carries cudaGetErrorString's text.
class CudaError : public std::runtime_error {
 public:
  explicit CudaError(const std::string& what) : std::runtime_error(what) {}
};

namespace detail {

template <class... Parts>
std::string concat(const Parts&... parts) {
  std::ostringstream os;
  (os << ... << parts);
  return os.str();
}

// "attnkit: <name> (<value>) <rule>"
template <class V>
[[noreturn]] void fail_arg(const char* name, const V& value, const std::string& rule) {
  throw Error(concat("attnkit: ", name, " (", value, ") ", rule));
}

[[noreturn]] inline void fail(const std::string& message) { throw Error("attnkit: " + message); }

template <class V>
void require(bool ok, const char* name, const V& value, const std::string& rule) {
  if (!ok) fail_arg(name, value, rule);
}
// The same with a literal rule: no std::string is built unless it fails (the
// checks run on every call, and a GPU decode call is a few microseconds).
template <class V>
void require(bool ok, const char* name, const V& value, const char* rule) {
  if (!ok) fail_arg(name, value, rule);
}

inline void require_not_null(const void* p, const char* name) {
  if (p == nullptr) fail(concat(name, " must not be null"));
}

}  // namespace detail
}  // namespace attnkit
