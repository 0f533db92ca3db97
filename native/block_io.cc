// File I/O straight between a file and guest pages, on libuv's thread pool:
// the block device's data path. No bounce buffer and no JS on the way; the
// caller (TypeScript) has already decided which pages and where in the file.
//
//   blockIo(op, fd, position, rams, segments, callback)
//     op        0 read (preadv into guest pages; bytes past the end of the
//               file read as zeros), 1 write (pwritev from guest pages),
//               2 fdatasync (rams/segments empty)
//     rams      GuestRam[] the segments refer to
//     segments  Float64Array of (ram index, offset in that ram, length) triples
//     callback  (error | null, bytes) on the JS thread
//
// Every RAM a request touches is pinned (GuestRam::IoPin) until the callback
// has run, so destroying the VM meanwhile cannot unmap pages a pool thread is
// writing.
#include <fcntl.h>
#include <limits.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <vector>

#include "common.h"
#include "guest_ram.h"

namespace nodevmm {

namespace {

enum BlockOp : uint32_t { kBlockRead = 0, kBlockWrite = 1, kBlockSync = 2 };

class BlockIoWorker : public Napi::AsyncWorker {
 public:
  BlockIoWorker(Napi::Function cb, uint32_t op, int fd, uint64_t position, std::vector<iovec> iov, std::vector<std::unique_ptr<GuestRam::IoPin>> pins)
      : Napi::AsyncWorker(cb, "nodevmm:blockIo"), op_(op), fd_(fd), position_(position), iov_(std::move(iov)), pins_(std::move(pins)) {}

  void Execute() override {
    if (op_ == kBlockSync) {
      int r;
      do r = fdatasync(fd_);
      while (r < 0 && errno == EINTR);
      if (r < 0) err_ = errno;
      return;
    }
    size_t first = 0;  // iov_[first..] still to transfer; iov_[first] may be partly done
    while (first < iov_.size()) {
      int cnt = static_cast<int>(std::min<size_t>(iov_.size() - first, IOV_MAX));
      off_t at = static_cast<off_t>(position_ + done_);
      ssize_t n = op_ == kBlockRead ? preadv(fd_, &iov_[first], cnt, at) : pwritev(fd_, &iov_[first], cnt, at);
      if (n < 0) {
        if (errno == EINTR) continue;
        err_ = errno;
        return;
      }
      if (n == 0) {
        if (op_ == kBlockWrite) {
          err_ = EIO;  // a regular file does not take zero bytes of a non-empty write
          return;
        }
        // End of file: the rest of the request reads as zeros.
        for (size_t i = first; i < iov_.size(); i++) std::memset(iov_[i].iov_base, 0, iov_[i].iov_len);
        return;
      }
      done_ += static_cast<uint64_t>(n);
      size_t left = static_cast<size_t>(n);
      while (first < iov_.size() && left >= iov_[first].iov_len) left -= iov_[first++].iov_len;
      if (left) {
        iov_[first].iov_base = static_cast<uint8_t*>(iov_[first].iov_base) + left;
        iov_[first].iov_len -= left;
      }
    }
  }

  void OnOK() override {
    Napi::Env env = Env();
    pins_.clear();  // on the JS thread, before anything the callback does
    if (err_) {
      const char* sys = op_ == kBlockSync ? "fdatasync" : op_ == kBlockRead ? "preadv" : "pwritev";
      Callback().Call({ErrnoError(env, err_, sys, nullptr, std::string("disk ") + sys).Value(), Napi::Number::New(env, 0)});
      return;
    }
    Callback().Call({env.Null(), Napi::Number::New(env, static_cast<double>(done_))});
  }

 private:
  uint32_t op_;
  int fd_;
  uint64_t position_;
  std::vector<iovec> iov_;
  std::vector<std::unique_ptr<GuestRam::IoPin>> pins_;
  uint64_t done_ = 0;
  int err_ = 0;
};

Napi::Value BlockIo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t op = 0, fd = 0, position = 0;
  if (info.Length() < 6 || !GetU64(info[0], &op) || op > kBlockSync || !GetU64(info[1], &fd) || fd > INT_MAX || !GetU64(info[2], &position) ||
      position > static_cast<uint64_t>(INT64_MAX) || !info[3].IsArray() || !info[4].IsTypedArray() || !info[5].IsFunction()) {
    return ThrowUsage(env, "blockIo(op 0-2, fd, position, rams[], Float64Array segments, callback)");
  }
  Napi::Array rams = info[3].As<Napi::Array>();
  Napi::TypedArray ta = info[4].As<Napi::TypedArray>();
  if (ta.TypedArrayType() != napi_float64_array || ta.ElementLength() % 3) return ThrowUsage(env, "blockIo segments must be a Float64Array of (ram, offset, length) triples");
  Napi::Float64Array segs = ta.As<Napi::Float64Array>();
  std::vector<GuestRam*> ram;
  std::vector<std::unique_ptr<GuestRam::IoPin>> pins;
  for (uint32_t i = 0; i < rams.Length(); i++) {
    Napi::Value v = rams.Get(i);
    GuestRam* g = GuestRam::FromValue(env, v);
    if (!g) return ThrowUsage(env, "blockIo rams must be GuestRam objects");
    auto pin = g->PinForIo();
    if (!pin) return ThrowUsage(env, "guest ram was released");
    ram.push_back(g);
    pins.push_back(std::move(pin));
  }
  std::vector<iovec> iov;
  iov.reserve(segs.ElementLength() / 3);
  uint64_t total = 0;
  for (size_t i = 0; i < segs.ElementLength(); i += 3) {
    double r = segs[i], off = segs[i + 1], len = segs[i + 2];
    if (!(r >= 0 && r < ram.size() && r == static_cast<double>(static_cast<size_t>(r)))) return ThrowUsage(env, "blockIo segment names a ram outside rams[]");
    GuestRam* g = ram[static_cast<size_t>(r)];
    if (!(off >= 0 && len > 0 && off + len <= static_cast<double>(g->size()) && off == static_cast<double>(static_cast<uint64_t>(off)) &&
          len == static_cast<double>(static_cast<uint64_t>(len))))
      return ThrowUsage(env, "blockIo segment lies outside its guest ram");
    iov.push_back({g->host() + static_cast<uint64_t>(off), static_cast<size_t>(len)});
    total += static_cast<uint64_t>(len);
  }
  if (op != kBlockSync && (iov.empty() || total > static_cast<uint64_t>(INT64_MAX) - position)) return ThrowUsage(env, "blockIo needs at least one segment, and position + length must fit a file offset");
  auto* w = new BlockIoWorker(info[5].As<Napi::Function>(), static_cast<uint32_t>(op), static_cast<int>(fd), position, std::move(iov), std::move(pins));
  w->Queue();
  return env.Undefined();
}

}  // namespace

void InitBlockIo(Napi::Env env, Napi::Object exports) { exports.Set("blockIo", Napi::Function::New(env, BlockIo, "blockIo")); }

}  // namespace nodevmm
