// Typed user errors. C++ code throws these for bad input; csrc/bindings/module.cpp is the one place
// that turns them into Python exceptions. Internal invariants use PANGU_ASSERT instead.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace pangu {

// Python class each kind becomes: Value -> ValueError, Type -> TypeError, Key -> KeyError,
// Index -> IndexError, Timeout -> TimeoutError, Runtime -> RuntimeError,
// QueueFull -> pangu_core.QueueFull, QueueClosed -> pangu_core.QueueClosed,
// PeerLost -> pangu_core.PeerLost (a shared segment or process that went away).
enum class ErrorKind { Value, Type, Key, Index, Timeout, Runtime, QueueFull, QueueClosed, PeerLost };

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
  ErrorKind kind() const noexcept { return kind_; }

 private:
  ErrorKind kind_;
};

namespace detail {
inline void append_all(std::ostringstream&) {}
template <typename T, typename... Rest>
void append_all(std::ostringstream& out, const T& first, const Rest&... rest) {
  out << first;
  append_all(out, rest...);
}
}  // namespace detail

// Joins the pieces with operator<< into one message: fail(ErrorKind::Value, "k: expected ", n).
template <typename... Parts>
[[noreturn]] void fail(ErrorKind kind, const Parts&... parts) {
  std::ostringstream out;
  detail::append_all(out, parts...);
  throw Error(kind, out.str());
}

}  // namespace pangu

// User-facing check: throws a typed error whose message names the argument.
#define PANGU_CHECK(cond, kind, ...)                        \
  do {                                                      \
    if (!(cond)) ::pangu::fail(::pangu::ErrorKind::kind, __VA_ARGS__); \
  } while (0)

// Internal invariant: a failure is a bug in pangu_core, reported as RuntimeError with its location.
#define PANGU_ASSERT(cond)                                                                  \
  do {                                                                                      \
    if (!(cond))                                                                            \
      ::pangu::fail(::pangu::ErrorKind::Runtime, "internal error: ", #cond, " failed at ",  \
                    __FILE__, ":", __LINE__);                                               \
  } while (0)
