// GGUF v3 writer that streams tensor data: the header, metadata and tensor table are written first
// (all offsets are known once the tensors are declared), then each tensor's bytes are written in
// pieces, in any order and from any thread, straight to their final place in the file. Nothing holds
// a whole model in memory. The file appears under its name only after finish() (temp, fsync, rename).
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "common/file_util.h"
#include "gguf/gguf.h"

namespace flashstar::gguf {

class Writer {
 public:
  explicit Writer(const std::string& path, uint32_t alignment = kDefaultAlignment);
  ~Writer();

  // Metadata (in the order added). `general.alignment` is added automatically when alignment != 32.
  void add(std::string_view key, const Value& v);
  void add_u8(std::string_view key, uint8_t v);
  void add_i8(std::string_view key, int8_t v);
  void add_u16(std::string_view key, uint16_t v);
  void add_i16(std::string_view key, int16_t v);
  void add_u32(std::string_view key, uint32_t v);
  void add_i32(std::string_view key, int32_t v);
  void add_u64(std::string_view key, uint64_t v);
  void add_i64(std::string_view key, int64_t v);
  void add_f32(std::string_view key, float v);
  void add_f64(std::string_view key, double v);
  void add_bool(std::string_view key, bool v);
  void add_string(std::string_view key, std::string_view v);
  void add_array_u32(std::string_view key, const std::vector<uint32_t>& v);
  void add_array_i32(std::string_view key, const std::vector<int32_t>& v);
  void add_array_f32(std::string_view key, const std::vector<float>& v);
  void add_array_string(std::string_view key, const std::vector<std::string>& v);

  // Declares a tensor; returns its index. ne is in GGML order (ne[0] contiguous).
  size_t add_tensor(std::string_view name, GgmlType type, const std::vector<int64_t>& ne);
  uint64_t tensor_nbytes(size_t index) const;

  // Writes header + metadata + tensor table. Must be called once, after all add_* calls.
  void begin_data();
  // Writes `n` bytes of tensor `index` at byte `offset_in_tensor`. Thread-safe after begin_data().
  void write_tensor(size_t index, const void* data, size_t n, uint64_t offset_in_tensor = 0);
  // Checks every tensor received at least its size in bytes (a tensor never written is an error; write
  // zeros explicitly), then fsyncs and renames into place. Without finish() the temp file is removed.
  void finish();

  // Bytes of the file as finish() will leave it, and where tensor data starts; valid after begin_data().
  uint64_t file_size() const { return data_start_ + data_padded_; }
  uint64_t data_offset() const { return data_start_; }

 private:
  struct Pending {
    std::string name;
    GgmlType type;
    std::vector<int64_t> ne;
    uint64_t nbytes;
    uint64_t rel_offset;
  };
  std::string path_;
  uint32_t alignment_;
  std::vector<std::pair<std::string, Value>> kv_;
  std::vector<Pending> tensors_;
  std::unordered_set<std::string> tensor_names_;
  uint64_t data_start_ = 0;
  uint64_t data_size_ = 0;
  uint64_t data_padded_ = 0;
  bool begun_ = false;
  bool finished_ = false;
  std::unique_ptr<AtomicFileWriter> out_;
  std::unique_ptr<std::atomic<uint64_t>[]> written_;  // bytes handed to write_tensor, per tensor
};

}  // namespace flashstar::gguf
