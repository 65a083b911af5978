// Safetensors checkpoints (one file, or shards listed by model.safetensors.index.json), memory-mapped.
// Every header field is validated against the file before use: a damaged or hostile file gives one
// flashstar::Error line naming the file and tensor, never a crash.
//
// Reading goes through SourceTensor, which presents a stored tensor as rows of float32 (the last,
// contiguous dimension is the row) or as integers. PlainTensor covers the unscaled dtypes. Extension
// point for the official checkpoint: FP8 (F8_E4M3 with a `.scale` / `weight_scale_inv` block-scale
// companion) and packed FP4 experts (I8 with a per-32 `.scale`) become further SourceTensor subclasses
// that Checkpoint::source() builds when it sees those dtypes together with a companion; the converter
// above this layer needs no change. Neither is implemented yet.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/file_util.h"

namespace flashstar::convert {

enum class StDtype { BOOL, U8, I8, U16, I16, U32, I32, U64, I64, F16, BF16, F32, F64, F8_E4M3, F8_E5M2, F8_E8M0, Unknown };

const char* st_dtype_name(StDtype t);
// Bytes per element; 0 for Unknown (size cannot be checked).
size_t st_dtype_size(StDtype t);
StDtype st_dtype_from_name(const std::string& s);

// One tensor's header record; data points into the mapping of its shard.
struct StTensor {
  std::string name;
  StDtype dtype = StDtype::Unknown;
  std::string dtype_name;       // as spelled in the header (kept for unknown dtypes)
  std::vector<int64_t> shape;   // PyTorch order: shape.back() is contiguous
  const uint8_t* data = nullptr;
  uint64_t nbytes = 0;
  std::string file;             // shard path, for messages
  int64_t numel() const;
};

// One .safetensors file.
class SafetensorsFile {
 public:
  static std::unique_ptr<SafetensorsFile> open(const std::string& path);
  // Parses an in-memory image (tests). The buffer must outlive the object.
  static std::unique_ptr<SafetensorsFile> parse(const uint8_t* data, size_t size, const std::string& label);

  const std::string& path() const { return label_; }
  const std::vector<StTensor>& tensors() const { return tensors_; }

 private:
  SafetensorsFile() = default;
  void parse_header();
  MappedFile map_;
  const uint8_t* base_ = nullptr;
  size_t size_ = 0;
  std::string label_;
  std::vector<StTensor> tensors_;
};

// A stored tensor as the converter sees it.
class SourceTensor {
 public:
  virtual ~SourceTensor() = default;
  virtual const std::string& name() const = 0;
  // Logical shape (PyTorch order); for a block-quantized source this is the dequantized shape.
  virtual const std::vector<int64_t>& shape() const = 0;
  virtual std::string dtype_desc() const = 0;
  virtual bool is_integer() const = 0;
  int64_t row_len() const;   // shape.back() (1 for a scalar)
  int64_t n_rows() const;    // product of the other dimensions
  // Rows [row0, row0 + n) as float32, row-major, into dst (n * row_len floats).
  virtual void read_rows_f32(int64_t row0, int64_t n, float* dst) const = 0;
  // Every element as int64 (integer dtypes only).
  virtual void read_ints(std::vector<int64_t>& out) const = 0;
};

// Unscaled dtypes: BF16, F16, F32, F64 as floats; I64, I32, I16, I8, U8, U16, U32 as integers.
class PlainTensor final : public SourceTensor {
 public:
  explicit PlainTensor(const StTensor& t) : t_(t) {}
  const std::string& name() const override { return t_.name; }
  const std::vector<int64_t>& shape() const override { return t_.shape; }
  std::string dtype_desc() const override { return t_.dtype_name; }
  bool is_integer() const override;
  void read_rows_f32(int64_t row0, int64_t n, float* dst) const override;
  void read_ints(std::vector<int64_t>& out) const override;

 private:
  const StTensor& t_;
};

// All shards of a checkpoint directory (or a single file), with a name → tensor index.
class Checkpoint {
 public:
  // dir: a directory holding model.safetensors.index.json or model.safetensors (or exactly one
  // *.safetensors file), or the path of a single .safetensors file.
  static std::unique_ptr<Checkpoint> open(const std::string& dir_or_file);

  const StTensor* find(const std::string& name) const;
  std::vector<std::string> names() const;  // sorted
  size_t size() const { return index_.size(); }
  // The reader for a stored tensor (see the extension point above). Throws for unsupported dtypes.
  std::unique_ptr<SourceTensor> source(const std::string& name) const;

 private:
  void add_file(std::unique_ptr<SafetensorsFile> f);
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const StTensor*> index_;
};

}  // namespace flashstar::convert
