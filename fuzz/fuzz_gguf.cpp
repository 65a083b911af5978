// libFuzzer entry for the GGUF reader: any input must parse or throw flashstar::Error with one line.
// Anything else (another exception, a sanitizer report, a crash, a timeout, an RSS blowup) is a finding.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "common/error.h"
#include "gguf/gguf.h"

volatile unsigned g_sink;  // keeps the touches below from being optimized away

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace flashstar;
  try {
    const auto f = gguf::File::parse(data, size, "fuzz.gguf");
    // Touch what a consumer touches: every tensor's first and last byte, every value and lookup.
    unsigned sum = 0;
    for (const auto& t : f->tensors()) {
      if (t.offset + t.nbytes > size || t.nbytes == 0) std::abort();
      sum += f->tensor_data(t)[0] + f->tensor_data(t)[t.nbytes - 1];
      if (f->find_tensor(t.name) != &t) std::abort();
    }
    for (const auto& kv : f->metadata()) {
      sum += static_cast<unsigned>(kv.value.as_u64().value_or(0) + kv.value.items.size());
      if (f->find(kv.key) != &kv.value) std::abort();
    }
    (void)f->get_u64("general.alignment");
    (void)f->get_string("general.architecture");
    g_sink = sum;
  } catch (const Error& e) {
    const char* msg = e.what();
    if (std::strchr(msg, '\n') || std::strncmp(msg, "fuzz.gguf: ", 11) != 0) {
      std::fprintf(stderr, "bad error message: %s\n", msg);
      std::abort();
    }
  }
  return 0;
}
