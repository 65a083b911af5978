// Errors that reach the user as one line. Library code throws flashstar::Error; tools catch it at
// the top, print "flashstar: <message>" and exit 1. Never abort() on bad input.
#pragma once
#include <cstdarg>
#include <stdexcept>
#include <string>

namespace flashstar {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// printf-style formatting into a std::string (GCC 12 has no <format>).
std::string strfmt(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
std::string vstrfmt(const char* fmt, va_list ap);

[[noreturn]] void fail(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

}  // namespace flashstar
