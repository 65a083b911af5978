// flashstar dump-tensor: one GGUF tensor (or a range of its rows) dequantized to float32 little-endian.
// The cross-check tool against gguf-py: its output must equal gguf.quants.dequantize bit for bit.
#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <vector>

#include "commands.h"
#include "common/error.h"
#include "common/file_util.h"
#include "gguf/gguf.h"
#include "quant/quant.h"

namespace flashstar::tools {
namespace {

int64_t parse_index(const std::string& s, const std::string& spec) {
  if (s.empty() || s.find_first_not_of("0123456789") != std::string::npos)
    fail("dump-tensor: bad --rows '%s' (want A:B, rows A..B-1)", spec.c_str());
  errno = 0;
  const unsigned long long v = std::strtoull(s.c_str(), nullptr, 10);
  if (errno != 0 || v > static_cast<unsigned long long>(INT64_MAX)) fail("dump-tensor: --rows value '%s' is too large", s.c_str());
  return static_cast<int64_t>(v);
}

}  // namespace

void add_dump_tensor_command(CLI::App& app) {
  struct Opts {
    std::string file, name, out, rows;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("dump-tensor", "Dequantize one GGUF tensor (or some of its rows) to float32 little-endian");
  cmd->add_option("file", o->file, "GGUF file")->required();
  cmd->add_option("name", o->name, "tensor name")->required();
  cmd->add_option("-o,--output", o->out, "output file (raw float32, row-major, ne0 contiguous)")->required();
  cmd->add_option("--rows", o->rows, "row range A:B (rows A..B-1; a row is ne0 elements, rows = product of the other dims)");
  cmd->callback([o] {
    const auto file = gguf::File::open(o->file);
    const gguf::TensorInfo* t = file->find_tensor(o->name);
    if (!t) fail("dump-tensor: %s has no tensor named '%s'", o->file.c_str(), o->name.c_str());
    if (!quant::can_dequantize(t->type))
      fail("dump-tensor: tensor '%s' has type %s, which flashstar cannot dequantize", o->name.c_str(), type_name(t->type));
    const int64_t ncols = t->dim(0);
    const int64_t nrows = ncols > 0 ? t->nelements() / ncols : 0;
    int64_t r0 = 0, r1 = nrows;
    if (!o->rows.empty()) {
      const size_t colon = o->rows.find(':');
      if (colon == std::string::npos) fail("dump-tensor: bad --rows '%s' (want A:B, rows A..B-1)", o->rows.c_str());
      r0 = parse_index(o->rows.substr(0, colon), o->rows);
      r1 = parse_index(o->rows.substr(colon + 1), o->rows);
      if (r0 > r1 || r1 > nrows)
        fail("dump-tensor: --rows %s is outside tensor '%s' (%lld rows)", o->rows.c_str(), o->name.c_str(),
             static_cast<long long>(nrows));
    }
    if (ncols % static_cast<int64_t>(type_info(t->type).block_elems) != 0)
      fail("dump-tensor: tensor '%s' row length %lld is not a multiple of the %s block size", o->name.c_str(),
           static_cast<long long>(ncols), type_name(t->type));
    const size_t rb = row_bytes(t->type, ncols);
    if (static_cast<uint64_t>(nrows) * rb != t->nbytes) fail("dump-tensor: tensor '%s' has an inconsistent byte size", o->name.c_str());

    // Bounded memory for any tensor size: dequantize ~4M elements at a time.
    AtomicFileWriter out(o->out);
    const int64_t chunk = ncols > 0 ? std::max<int64_t>(1, (int64_t{1} << 22) / ncols) : 1;
    std::vector<float> buf;
    for (int64_t r = r0; r < r1; r += chunk) {
      const int64_t n = std::min(chunk, r1 - r);
      buf.resize(static_cast<size_t>(n * ncols));
      quant::dequantize_rows(t->type, file->tensor_data(*t) + static_cast<size_t>(r) * rb, buf.data(), n, ncols);
      out.write(buf.data(), buf.size() * sizeof(float));
    }
    out.commit();
  });
}

}  // namespace flashstar::tools
