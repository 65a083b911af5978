// Files: read-only memory maps, and atomic writes (temp file, fsync, rename) so nothing is ever torn.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace flashstar {

class MappedFile {
 public:
  MappedFile() = default;
  explicit MappedFile(const std::string& path);  // throws Error with a one-line message
  ~MappedFile();
  MappedFile(MappedFile&& o) noexcept;
  MappedFile& operator=(MappedFile&& o) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  std::string path_;
};

// Writes `bytes` to `path` atomically: path.tmp.<pid>, fsync, rename, fsync of the directory.
void write_file_atomic(const std::string& path, std::string_view bytes);
std::string read_file(const std::string& path);

// Temp-file-then-rename writer for large outputs written in pieces (possibly with pwrite from
// several threads). commit() fsyncs and renames; destruction without commit() removes the temp file.
class AtomicFileWriter {
 public:
  explicit AtomicFileWriter(const std::string& path);
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  void write(const void* data, size_t n);                   // append at the current end
  void pwrite(const void* data, size_t n, uint64_t offset);  // thread-safe positional write
  void truncate(uint64_t size);                              // pre-size the file (sparse)
  uint64_t position() const { return pos_; }
  void commit();

 private:
  std::string path_, tmp_;
  int fd_ = -1;
  uint64_t pos_ = 0;
  bool committed_ = false;
};

}  // namespace flashstar
