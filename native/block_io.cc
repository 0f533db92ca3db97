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
//   blockIoNow(op, fd, position, rams, segments, nowait) -> bytes | -1 | -2
//     the same read or write on the calling thread (see below)
//
// Every RAM a request touches is pinned (GuestRam::IoPin) until the callback
// has run, and the transfer itself runs between IoPin::Begin() and End():
// destroying the VM (releasing its RAM) cancels a request not yet started
// (ECANCELED) and waits for one in progress, so a write puts the guest's
// bytes on the disk or none of them, never zeros from freed pages.
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

// Moves the whole request between the file and `iov` (consumed as it goes),
// adding to *done; preadv2/pwritev2 `flags` as given (RWF_NOWAIT for a try
// that must not block). Returns 0 or an errno (EAGAIN/EOPNOTSUPP: a
// non-blocking try could not finish; what it moved stays moved, and redoing
// the whole request is harmless: the same bytes go to the same places).
int Transfer(uint32_t op, int fd, uint64_t position, std::vector<iovec>& iov, int flags, uint64_t* done) {
  size_t first = 0;  // iov[first..] still to transfer; iov[first] may be partly done
  while (first < iov.size()) {
    int cnt = static_cast<int>(std::min<size_t>(iov.size() - first, IOV_MAX));
    off_t at = static_cast<off_t>(position + *done);
    ssize_t n = op == kBlockRead ? preadv2(fd, &iov[first], cnt, at, flags) : pwritev2(fd, &iov[first], cnt, at, flags);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (n == 0) {
      if (op == kBlockWrite) return EIO;  // a regular file does not take zero bytes of a non-empty write
      // End of file: the rest of the request reads as zeros.
      for (size_t i = first; i < iov.size(); i++) std::memset(iov[i].iov_base, 0, iov[i].iov_len);
      return 0;
    }
    *done += static_cast<uint64_t>(n);
    size_t left = static_cast<size_t>(n);
    while (first < iov.size() && left >= iov[first].iov_len) left -= iov[first++].iov_len;
    if (left) {
      iov[first].iov_base = static_cast<uint8_t*>(iov[first].iov_base) + left;
      iov[first].iov_len -= left;
    }
  }
  return 0;
}

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
    // Claim the pages for the transfer: a request still queued when its VM
    // was destroyed is cancelled here, before it touches released RAM.
    size_t begun = 0;
    while (begun < pins_.size() && pins_[begun]->Begin()) begun++;
    if (begun == pins_.size()) err_ = Transfer(op_, fd_, position_, iov_, 0, &done_);
    else err_ = ECANCELED;
    for (size_t i = 0; i < begun; i++) pins_[i]->End();
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

// The request of blockIo/blockIoNow: arguments 0-4 checked and turned into
// iovecs over pinned guest RAM. Returns false with a JS exception pending.
struct Request {
  uint32_t op = 0;
  int fd = -1;
  uint64_t position = 0;
  std::vector<iovec> iov;
  std::vector<std::unique_ptr<GuestRam::IoPin>> pins;
};

bool ParseRequest(const Napi::CallbackInfo& info, const char* usage, Request* req) {
  Napi::Env env = info.Env();
  uint64_t op = 0, fd = 0, position = 0;
  if (info.Length() < 5 || !GetU64(info[0], &op) || op > kBlockSync || !GetU64(info[1], &fd) || fd > INT_MAX || !GetU64(info[2], &position) ||
      position > static_cast<uint64_t>(INT64_MAX) || !info[3].IsArray() || !info[4].IsTypedArray()) {
    ThrowUsage(env, usage);
    return false;
  }
  Napi::Array rams = info[3].As<Napi::Array>();
  Napi::TypedArray ta = info[4].As<Napi::TypedArray>();
  if (ta.TypedArrayType() != napi_float64_array || ta.ElementLength() % 3) {
    ThrowUsage(env, "blockIo segments must be a Float64Array of (ram, offset, length) triples");
    return false;
  }
  Napi::Float64Array segs = ta.As<Napi::Float64Array>();
  std::vector<GuestRam*> ram;
  for (uint32_t i = 0; i < rams.Length(); i++) {
    Napi::Value v = rams.Get(i);
    GuestRam* g = GuestRam::FromValue(env, v);
    if (!g) {
      ThrowUsage(env, "blockIo rams must be GuestRam objects");
      return false;
    }
    auto pin = g->PinForIo();
    if (!pin) {
      ThrowUsage(env, "guest ram was released");
      return false;
    }
    ram.push_back(g);
    req->pins.push_back(std::move(pin));
  }
  req->iov.reserve(segs.ElementLength() / 3);
  uint64_t total = 0;
  for (size_t i = 0; i < segs.ElementLength(); i += 3) {
    double r = segs[i], off = segs[i + 1], len = segs[i + 2];
    if (!(r >= 0 && r < ram.size() && r == static_cast<double>(static_cast<size_t>(r)))) {
      ThrowUsage(env, "blockIo segment names a ram outside rams[]");
      return false;
    }
    GuestRam* g = ram[static_cast<size_t>(r)];
    if (!(off >= 0 && len > 0 && off + len <= static_cast<double>(g->size()) && off == static_cast<double>(static_cast<uint64_t>(off)) &&
          len == static_cast<double>(static_cast<uint64_t>(len)))) {
      ThrowUsage(env, "blockIo segment lies outside its guest ram");
      return false;
    }
    req->iov.push_back({g->host() + static_cast<uint64_t>(off), static_cast<size_t>(len)});
    total += static_cast<uint64_t>(len);
  }
  if (op != kBlockSync && (req->iov.empty() || total > static_cast<uint64_t>(INT64_MAX) - position)) {
    ThrowUsage(env, "blockIo needs at least one segment, and position + length must fit a file offset");
    return false;
  }
  req->op = static_cast<uint32_t>(op);
  req->fd = static_cast<int>(fd);
  req->position = position;
  return true;
}

Napi::Value BlockIo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* usage = "blockIo(op 0-2, fd, position, rams[], Float64Array segments, callback)";
  if (info.Length() < 6 || !info[5].IsFunction()) return ThrowUsage(env, usage);
  Request req;
  if (!ParseRequest(info, usage, &req)) return env.Undefined();
  auto* w = new BlockIoWorker(info[5].As<Napi::Function>(), req.op, req.fd, req.position, std::move(req.iov), std::move(req.pins));
  w->Queue();
  return env.Undefined();
}

// blockIoNow(op 0-1, fd, position, rams, segments, nowait) -> bytes | -1 | -2
// The same transfer on the calling (JS) thread, for files whose pages are in
// memory: no pool hop, no callback. With `nowait` it is a try (RWF_NOWAIT):
// -1 when the kernel would have to block, -2 when the file cannot promise
// not to (a filesystem without RWF_NOWAIT); the caller then uses blockIo.
Napi::Value BlockIoNow(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* usage = "blockIoNow(op 0-1, fd, position, rams[], Float64Array segments, nowait)";
  Request req;
  if (!ParseRequest(info, usage, &req)) return env.Undefined();
  if (req.op == kBlockSync) return ThrowUsage(env, usage);
  bool nowait = info.Length() > 5 && info[5].ToBoolean().Value();
  uint64_t done = 0;
  int err = Transfer(req.op, req.fd, req.position, req.iov, nowait ? RWF_NOWAIT : 0, &done);
  if (nowait && err == EAGAIN) return Napi::Number::New(env, -1);
  if (nowait && err == EOPNOTSUPP) return Napi::Number::New(env, -2);
  if (err) {
    const char* sys = req.op == kBlockRead ? "preadv" : "pwritev";
    ErrnoError(env, err, sys, nullptr, std::string("disk ") + sys).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  return Napi::Number::New(env, static_cast<double>(done));
}

}  // namespace

void InitBlockIo(Napi::Env env, Napi::Object exports) {
  exports.Set("blockIo", Napi::Function::New(env, BlockIo, "blockIo"));
  exports.Set("blockIoNow", Napi::Function::New(env, BlockIoNow, "blockIoNow"));
}

}  // namespace nodevmm
