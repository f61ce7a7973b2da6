// AioHandle: DeepSpeed's aio_handle semantics on an IoEngine (see the header).
#include "swapcoord/io/aio_handle.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "swapcoord/common/log.hpp"
#include "swapcoord/io/swap_file.hpp"
#include "swapcoord/io/unique_fd.hpp"

namespace swapcoord {

struct AioHandle::Cached {
  std::string path;
  bool writable = false, direct = false;
  dev_t device = 0;
  ino_t inode = 0;
  SwapFileRef file;  // keeps the descriptor open
};

struct AioHandle::Op {
  IoOp op = IoOp::read;
  SwapFileRef file;  // open until the operation is finished
  IoTicket ticket;
  std::byte* data = nullptr;
  std::size_t bytes = 0;
  std::string path;
  std::uint64_t offset = 0;
  bool validate = false;
};

namespace {

const char* verb(IoOp op) { return op == IoOp::read ? "read" : "write"; }

bool aligned_for(const OpenSwapFile& file, const std::byte* data, std::size_t bytes, std::uint64_t offset) {
  const auto memory = file.memory_alignment(), block = file.offset_alignment();
  return reinterpret_cast<std::uintptr_t>(data) % memory == 0 && bytes % block == 0 && offset % block == 0;
}

// Re-reads [offset, offset + bytes) of `path` without O_DIRECT and compares it with `data`.
void compare_with_file(const AioHandle::Op& op) {
  UniqueFd fd(::open(op.path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd) throw SystemError(fmt::format("aio_handle validate: cannot open '{}'", op.path), errno);
  std::vector<std::byte> chunk(std::min<std::size_t>(op.bytes, std::size_t{1} << 20));
  for (std::size_t done = 0; done < op.bytes;) {
    const std::size_t want = std::min(chunk.size(), op.bytes - done);
    const ssize_t got = ::pread(fd.get(), chunk.data(), want, static_cast<off_t>(op.offset + done));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0)
      throw SystemError(fmt::format("aio_handle validate: reading '{}' at offset {}", op.path, op.offset + done), errno);
    if (got == 0)
      throw Error(fmt::format("aio_handle validate: '{}' ends at offset {}, before the {} bytes {} at offset {}",
                              op.path, op.offset + done, op.bytes, op.op == IoOp::read ? "read" : "written",
                              op.offset));
    const auto n = static_cast<std::size_t>(got);
    if (std::memcmp(chunk.data(), op.data + done, n) != 0) {
      std::size_t i = 0;
      while (chunk[i] == op.data[done + i]) ++i;
      throw Error(fmt::format("aio_handle validate: after the {} of {} bytes at offset {} of '{}', the file differs "
                              "from the buffer at file offset {} (buffer byte {}: file 0x{:02x}, buffer 0x{:02x})",
                              verb(op.op), op.bytes, op.offset, op.path, op.offset + done + i, done + i,
                              static_cast<unsigned>(chunk[i]), static_cast<unsigned>(op.data[done + i])));
    }
    done += n;
  }
}

}  // namespace

AioHandle::AioHandle(const AioConfig& config, std::string_view backend) : _engine(make_engine(backend, config)) {}

AioHandle::~AioHandle() {
  try {
    (void)wait();
  } catch (const std::exception& e) {
    log::warn(fmt::format("aio_handle: an operation queued without wait() failed: {}", e.what()));
  }
}

std::unique_ptr<AioHandle::Op> AioHandle::prepare(IoOp kind, std::byte* data, std::size_t bytes,
                                                  const std::string& path, std::uint64_t file_offset, bool validate) {
  if (path.empty()) throw Error(fmt::format("aio_handle {}: empty file name", verb(kind)));
  if (data == nullptr && bytes > 0) throw Error(fmt::format("aio_handle {} of '{}': null buffer", verb(kind), path));
  auto op = std::make_unique<Op>();
  op->op = kind;
  op->data = data;
  op->bytes = bytes;
  op->path = path;
  op->offset = file_offset;
  op->validate = validate;
  op->file = open_file(path, kind == IoOp::write, config().direct != DirectMode::off);
  if (op->file->direct() && !aligned_for(*op->file, data, op->bytes, file_offset))
    op->file = open_file(path, kind == IoOp::write, false);
  if (op->bytes > 0) {
    const IoRequest request{kind, op->file, data, file_offset, op->bytes};
    op->ticket = _engine->submit({&request, 1});
  }
  return op;
}

SwapFileRef AioHandle::open_file(const std::string& path, bool writable, bool direct) {
  struct stat info{};
  const bool exists = ::lstat(path.c_str(), &info) == 0;
  if (exists) {
    for (const Cached& c : _files)
      if (c.path == path && c.writable == writable && c.direct == direct && c.device == info.st_dev &&
          c.inode == info.st_ino)
        return c.file;
  }
  // A miss: forget the kept files of this path and those deleted since they were opened
  // (a descriptor of a deleted file holds its blocks).
  std::erase_if(_files, [&](const Cached& c) {
    struct stat kept{};
    const bool replaced = c.path == path && (!exists || c.device != info.st_dev || c.inode != info.st_ino);
    return replaced || ::fstat(c.file->fd(), &kept) != 0 || kept.st_nlink == 0;
  });
  if (writable && !exists) {
    // DeepSpeed opens with O_CREAT and no O_TRUNC: other bytes of an existing file stay.
    UniqueFd made(::open(path.c_str(), O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!made) throw SystemError(fmt::format("aio_handle write: cannot open or create '{}'", path), errno);
  }
  const SwapFile opened = SwapFile::open(path, direct ? config().direct : DirectMode::off, writable);
  SwapFileRef file(opened);
  if (::fstat(file->fd(), &info) != 0) throw SystemError(fmt::format("aio_handle: cannot stat '{}'", path), errno);
  if (_files.size() >= 64) _files.erase(_files.begin());
  _files.push_back({path, writable, direct, info.st_dev, info.st_ino, file});
  return file;
}

void AioHandle::close_files() noexcept { _files.clear(); }

void AioHandle::finish(Op& op) {
  if (op.ticket) (void)_engine->wait(std::move(op.ticket));
  if (op.validate) compare_with_file(op);
}

void AioHandle::read(std::span<std::byte> buffer, const std::string& path, std::uint64_t file_offset, bool validate) {
  finish(*prepare(IoOp::read, buffer.data(), buffer.size(), path, file_offset, validate));
}

void AioHandle::write(std::span<const std::byte> buffer, const std::string& path, std::uint64_t file_offset,
                      bool validate) {
  // The engine never writes into a write request's buffer.
  finish(*prepare(IoOp::write, const_cast<std::byte*>(buffer.data()), buffer.size(), path, file_offset, validate));
}

void AioHandle::submit_read(std::span<std::byte> buffer, const std::string& path, std::uint64_t file_offset,
                            bool validate) {
  _queued.push_back(prepare(IoOp::read, buffer.data(), buffer.size(), path, file_offset, validate));
}

void AioHandle::submit_write(std::span<const std::byte> buffer, const std::string& path, std::uint64_t file_offset,
                             bool validate) {
  _queued.push_back(
      prepare(IoOp::write, const_cast<std::byte*>(buffer.data()), buffer.size(), path, file_offset, validate));
}

int AioHandle::wait() {
  auto queued = std::exchange(_queued, {});
  std::exception_ptr first;
  for (auto& op : queued) {
    try {
      finish(*op);
    } catch (const std::exception& e) {
      if (!first) first = std::current_exception();
      else log::warn(fmt::format("aio_handle: another queued operation failed too: {}", e.what()));
    }
  }
  if (first) std::rethrow_exception(first);
  return static_cast<int>(queued.size());
}

}  // namespace swapcoord
