#include "guest_ram.h"

#if defined(_WIN32)
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#ifndef NOMINMAX
#define NOMINMAX
#endif
#include <windows.h>
#else
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#endif

#include <algorithm>
#include <chrono>
#include <string>

#include "common.h"

namespace nodevmm {

namespace {
// Marks JS objects that wrap a GuestRam (napi_type_tag_object), so native
// calls taking a ram can tell it from any other object.
constexpr napi_type_tag kGuestRamTag = {0x6e6f6465766d6d2dull, 0x67756573747261ull};
// One ArrayBuffer per 32 MiB. V8 counts an external buffer's length as
// memory a GC could free and starts a mark-compact whenever that count grew
// by 64 MiB since the last one; guest RAM is freed by release(), never by a
// GC, so each view takes its length back out of the count right after V8
// adds it (GuestRam::Views), and views under 64 MiB keep the add itself from
// crossing the limit. Counted, every 64 MiB guest cost a mark-compact.
constexpr uint64_t kDefaultViewSize = 32ull << 20;
// How long Release() waits for transfers in flight (a pwritev of a few MiB
// to a sick disk can take seconds). Past it the pages stay mapped, owned by
// the last pin, so a late transfer still sees the guest's bytes.
constexpr auto kReleaseIoWait = std::chrono::seconds(10);

#if !defined(_WIN32)
// Guest RAM starts on a 2 MiB boundary, as a guest-physical region does:
// only then can a transparent huge page back a 2 MiB guest page and KVM map
// it with one large nested-page entry (the host address and the GPA must
// agree modulo 2 MiB). Reserves `size` bytes so aligned (PROT_NONE, to be
// mapped over with MAP_FIXED), or returns nullptr.
constexpr uint64_t kHugePage = 2ull << 20;
void* ReserveAligned(uint64_t size) {
  uint64_t span = size + kHugePage;
  // SAFETY: a fresh PROT_NONE reservation; we trim it to [start, start+size).
  void* raw = mmap(nullptr, span, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (raw == MAP_FAILED) return nullptr;
  uintptr_t base = reinterpret_cast<uintptr_t>(raw);
  uintptr_t start = (base + kHugePage - 1) & ~(kHugePage - 1);
  if (start > base) munmap(raw, start - base);
  uintptr_t end = start + size;
  if (base + span > end) munmap(reinterpret_cast<void*>(end), base + span - end);
  return reinterpret_cast<void*>(start);
}

// What every guest RAM mapping is advised: not worth dumping into a core
// file, and not inherited by a child process. Node starts helpers (passt,
// virtiofsd, iptables...) with fork: a private mapping (anonymous RAM, a
// restore's file) would turn copy-on-write in the parent until the child's
// exec, so the guest's next write to each page would copy it, and a page
// pinned meanwhile (vhost, O_DIRECT) could part from the one KVM maps. QEMU
// advises its RAM the same way.
void AdviseRam(void* p, uint64_t size) {
  madvise(p, size, MADV_DONTDUMP);
  madvise(p, size, MADV_DONTFORK);
}

// Fresh zeroed RAM, or, with private_file >= 0, that file's bytes mapped
// MAP_PRIVATE (copy-on-write: a snapshot's memory file, which every restore
// shares until the guest writes). Fresh RAM is a memfd mapped MAP_SHARED
// when `shared` (*fd_out is the memfd), else private anonymous memory
// (*fd_out is -1). nullptr with *err, *call set.
uint8_t* MapRam(uint64_t size, const std::string& name, int private_file, bool shared, int* fd_out, int* err, const char** call) {
  *fd_out = -1;
  if (private_file >= 0) {
    void* at = ReserveAligned(size);
    // SAFETY: the caller checked private_file is a regular file of at least
    // `size` bytes; `at` is our own reservation of that size (or null).
    void* p = mmap(at, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE | (at ? MAP_FIXED : 0), private_file, 0);
    if (p == MAP_FAILED) {
      *err = errno;
      *call = "mmap";
      if (at) munmap(at, size);
      return nullptr;
    }
    AdviseRam(p, size);
    return static_cast<uint8_t*>(p);
  }
  if (!shared) {
    void* at = ReserveAligned(size);
    // SAFETY: `at` is our own PROT_NONE reservation of `size` bytes (or
    // null: let the kernel choose); fresh anonymous pages replace it.
    // MAP_NORESERVE: pages exist once touched, nothing is charged up front.
    void* p = mmap(at, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | (at ? MAP_FIXED : 0), -1, 0);
    if (p == MAP_FAILED) {
      *err = errno;
      *call = "mmap";
      if (at) munmap(at, size);
      return nullptr;
    }
    AdviseRam(p, size);
    return static_cast<uint8_t*>(p);
  }
  int fd = memfd_create(name.c_str(), MFD_CLOEXEC);
  if (fd < 0) {
    *err = errno;
    *call = "memfd_create";
    return nullptr;
  }
  // A sparse file: pages exist once touched, as with MAP_NORESERVE anonymous memory.
  if (ftruncate(fd, static_cast<off_t>(size)) != 0) {
    *err = errno;
    *call = "ftruncate";
    close(fd);
    return nullptr;
  }
  void* at = ReserveAligned(size);
  // SAFETY: fd is a fresh memfd of exactly `size` bytes; `at` is our own
  // reservation of that size (or null: let the kernel choose). File offset 0
  // sits at a 2 MiB-aligned address, so shmem huge pages line up with guest
  // 2 MiB pages too.
  void* p = mmap(at, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE | (at ? MAP_FIXED : 0), fd, 0);
  if (p == MAP_FAILED) {
    *err = errno;
    *call = "mmap";
    if (at) munmap(at, size);
    close(fd);
    return nullptr;
  }
  AdviseRam(p, size);
  *fd_out = fd;
  return static_cast<uint8_t*>(p);
}
void UnmapRam(uint8_t* p, uint64_t size) { munmap(p, size); }
// SAFETY (callers): [p, p+size) is our own mapping. MAP_FIXED swaps in empty
// private pages, so a straggler reads zeros instead of faulting.
void ReplaceWithZeroPages(uint8_t* p, uint64_t size) {
  mmap(p, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0);
}
void CloseRamFd(int fd) { if (fd >= 0) close(fd); }
#else
// Windows: committed private memory from VirtualAlloc (zero-filled on first
// touch; Windows has no overcommit, so the size is charged to the commit
// limit up front). WHvMapGpaRange maps these very pages into the guest.
uint8_t* MapRam(uint64_t size, const std::string& name, int private_file, bool shared, int* fd_out, int* err, const char** call) {
  (void)name;
  (void)private_file;  // refused by the constructor on Windows
  (void)shared;        // refused by the constructor on Windows
  void* p = VirtualAlloc(nullptr, static_cast<SIZE_T>(size), MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
  if (!p) {
    *err = ENOMEM;
    *call = "VirtualAlloc";
    return nullptr;
  }
  *fd_out = -1;
  return static_cast<uint8_t*>(p);
}
void UnmapRam(uint8_t* p, uint64_t size) {
  (void)size;
  VirtualFree(p, 0, MEM_RELEASE);
}
// Decommit and commit again: the range reads as fresh zero pages.
void ReplaceWithZeroPages(uint8_t* p, uint64_t size) {
  VirtualFree(p, static_cast<SIZE_T>(size), MEM_DECOMMIT);
  VirtualAlloc(p, static_cast<SIZE_T>(size), MEM_COMMIT, PAGE_READWRITE);
}
void CloseRamFd(int fd) { (void)fd; }
#endif
}  // namespace

Napi::Function GuestRam::Init(Napi::Env env) {
  return DefineClass(env, "GuestRam",
                     {
                         InstanceMethod("views", &GuestRam::Views),
                         InstanceMethod("view", &GuestRam::ViewAt),
                         InstanceMethod("release", &GuestRam::Release),
                         InstanceMethod("advise", &GuestRam::Advise),
                         InstanceMethod("writeTo", &GuestRam::WriteTo),
                         InstanceAccessor("size", &GuestRam::GetSize, nullptr),
                         InstanceAccessor("fd", &GuestRam::GetFd, nullptr),
                         InstanceAccessor("hostAddress", &GuestRam::GetHostAddress, nullptr),
                     });
}

// new GuestRam(size, { name?: string, privateFile?: fd, shared?: boolean })
//
// Plain: private anonymous memory (what the host backs with transparent
// huge pages under THP "enabled"); fd reads -1.
//
// shared: a memfd mapped MAP_SHARED, so the same pages can be handed to
// another process (a vhost-user backend such as virtiofsd maps them from
// the fd), while KVM and JS see them exactly as anonymous RAM. See
// docs/architecture.md, "Guest memory", for what that changes (shmem
// accounting, THP knob, freeing).
//
// With privateFile: that file's first `size` bytes mapped MAP_PRIVATE (a
// snapshot's memory): pages are read from the page cache on first touch and
// copied only when written, so every mapping of one file shares the pages
// nobody wrote and the cost of mapping does not grow with `size`. There is
// no memfd then (fd reads -1): another process cannot share these pages.
// The caller keeps its fd; the mapping holds the file by itself.
GuestRam::GuestRam(const Napi::CallbackInfo& info) : Napi::ObjectWrap<GuestRam>(info) {
  Napi::Env env = info.Env();
  uint64_t size = 0;
  if (info.Length() < 1 || !GetU64(info[0], &size) || size == 0 || (size & 0xfff)) {
    ThrowUsage(env, "guest ram size must be a positive multiple of 4096");
    return;
  }
  std::string name = "nodevmm-ram";
  int private_file = -1;
  bool shared = false;
  if (info.Length() > 1 && info[1].IsObject()) {
    Napi::Object o = info[1].As<Napi::Object>();
    if (o.Get("name").IsString()) name = o.Get("name").As<Napi::String>().Utf8Value();
    if (o.Get("privateFile").IsNumber()) private_file = o.Get("privateFile").As<Napi::Number>().Int32Value();
    shared = o.Get("shared").ToBoolean().Value();
  }
  if (shared && private_file >= 0) {
    ThrowUsage(env, "guest ram is either shared (a memfd) or a private file mapping, not both");
    return;
  }
#if defined(_WIN32)
  if (private_file >= 0) {
    ThrowUsage(env, "guest ram from a file (a snapshot restore) is not supported on Windows");
    return;
  }
  if (shared) {
    ThrowUsage(env, "guest ram shared with another process (a memfd) is not supported on Windows");
    return;
  }
#else
  if (private_file >= 0) {
    struct stat st;
    if (fstat(private_file, &st) != 0) {
      ThrowErrno(env, errno, "fstat", nullptr, "inspect guest ram file");
      return;
    }
    if (!S_ISREG(st.st_mode)) {
      ThrowUsage(env, "guest ram file is not a regular file");
      return;
    }
    if (static_cast<uint64_t>(st.st_size) < size) {
      ThrowUsage(env, "guest ram file holds " + std::to_string(st.st_size) + " bytes, fewer than the " + std::to_string(size) + " the ram needs");
      return;
    }
  }
#endif
  int fd = -1, err = 0;
  const char* call = "";
  uint8_t* p = MapRam(size, name, private_file, shared, &fd, &err, &call);
  if (!p) {
    ThrowErrno(env, err, call, nullptr, "map guest ram");
    return;
  }
  backing_ = private_file >= 0 ? Backing::kFile : shared ? Backing::kShared : Backing::kAnonymous;
  memfd_ = fd;
  host_ = p;
  size_ = size;
  napi_type_tag_object(env, info.This(), &kGuestRamTag);
  deferred_ = std::make_shared<Deferred>();
  deferred_->host = host_;
  deferred_->size = size_;
}

GuestRam::~GuestRam() {
  // Never released: the views may now be collected, and V8 takes their
  // lengths out of its count then, so put them back first.
  for (auto& v : views_) Napi::MemoryManagement::AdjustExternalMemory(Env(), v.uncounted);
  // Runs at GC or environment teardown. Views hold no reference to this
  // object, so unmapping here could strand a live view: defer if any remain.
  if (host_) {
    if (deferred_->live.load() == 0) {
      UnmapRam(host_, size_);
    } else {
      deferred_->unmap_when_last = true;
    }
    host_ = nullptr;
  }
  CloseRamFd(memfd_);
}

// views(maxViewSize?) -> ArrayBuffer[] covering the whole range in order.
Napi::Value GuestRam::Views(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!host_) return ThrowUsage(env, "guest ram was released");
  uint64_t chunk = kDefaultViewSize;
  if (info.Length() > 0 && !info[0].IsUndefined()) {
    if (!GetU64(info[0], &chunk) || chunk == 0 || (chunk & 0xfff)) return ThrowUsage(env, "view size must be a positive multiple of 4096");
  }
  Napi::Array out = Napi::Array::New(env);
  uint32_t i = 0;
  for (uint64_t off = 0; off < size_; off += chunk, i++) out.Set(i, MakeView(env, off, std::min(chunk, size_ - off)));
  return out;
}

// view(offset, length) -> one ArrayBuffer over [offset, offset+length) of
// the RAM, made when asked: a caller that makes views only of the parts JS
// touches keeps the rest of guest RAM out of V8's young generation, where
// external buffers make V8 force scavenges (lib/memory/guest-memory.ts).
Napi::Value GuestRam::ViewAt(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!host_) return ThrowUsage(env, "guest ram was released");
  uint64_t off = 0, len = 0;
  if (info.Length() < 2 || !GetU64(info[0], &off) || !GetU64(info[1], &len)) return ThrowUsage(env, "view needs an offset and a length");
  if (len == 0 || off > size_ || len > size_ - off) return ThrowUsage(env, "view range outside guest ram");
  return MakeView(env, off, len);
}

Napi::ArrayBuffer GuestRam::MakeView(Napi::Env env, uint64_t off, uint64_t len) {
  std::shared_ptr<Deferred>* hint = new std::shared_ptr<Deferred>(deferred_);
  deferred_->live++;
  // SAFETY: [host_+off, +len) lies inside our live mapping; the finalizer
  // only drops the hint, and unmaps if the owner already asked for it.
  Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(
      env, host_ + off, len,
      [](Napi::Env, void*, std::shared_ptr<Deferred>* d) {
        Deferred* dd = d->get();
        if (--dd->live == 0 && dd->unmap_when_last.load() && dd->host) UnmapRam(dd->host, dd->size);
        delete d;
      },
      hint);
  // V8 counted `len` as it made the buffer (see kDefaultViewSize); take it
  // back out. Release() and the destructor put it back before V8 takes it
  // out again, so the count never drops below what V8 really tracks.
  Napi::MemoryManagement::AdjustExternalMemory(env, -static_cast<int64_t>(len));
  views_.push_back({Napi::Persistent(ab), static_cast<int64_t>(len)});
  return ab;
}

void GuestRam::ReleaseImpl(Napi::Env env) {
  if (!host_) return;
  bool all_detached = true;
  for (auto& view : views_) {
    // Back into V8's count before detaching takes it out (see Views).
    Napi::MemoryManagement::AdjustExternalMemory(env, view.uncounted);
    Napi::Value v = view.ref.Value();
    if (v.IsEmpty() || v.IsUndefined()) continue;
    Napi::ArrayBuffer ab = v.As<Napi::ArrayBuffer>();
    if (ab.IsDetached()) continue;
    napi_status st = napi_detach_arraybuffer(env, ab);
    if (st != napi_ok) all_detached = false;
  }
  views_.clear();
  // No transfer starts from now on; wait for those running. Pins only come
  // and go on this thread, so once none is active the memory is ours.
  bool io_done;
  {
    std::unique_lock<std::mutex> lock(deferred_->io_mu);
    deferred_->io_closed = true;
    io_done = deferred_->io_cv.wait_for(lock, kReleaseIoWait, [&] { return deferred_->io_active == 0; });
  }
  if (!io_done) {
    // A transfer is stuck in the kernel: leave it the real pages (swapping
    // in empty ones would make a write copy zeros to the disk). The last
    // pin or view unmaps; the straggler views were detached above or will
    // read the same pages.
    deferred_->unmap_when_last = true;
  } else if (all_detached && deferred_->live.load() == 0) {
    UnmapRam(host_, size_);
  } else if (all_detached) {
    // Detached buffers and finished pins never touch the memory again, but
    // their finalizers still hold the hint: unmap now, and tell them not to.
    UnmapRam(host_, size_);
    deferred_->host = nullptr;
  } else {
    // A straggler view (or pinned I/O) then reads zeros or writes into pages
    // nobody sees instead of faulting, and the old pages are freed.
    ReplaceWithZeroPages(host_, size_);
    deferred_->unmap_when_last = true;
  }
  host_ = nullptr;
  CloseRamFd(memfd_);
  memfd_ = -1;
}

GuestRam::IoPin::IoPin(std::shared_ptr<GuestRamDeferred> d) : d_(std::move(d)) {
  d_->pins++;
  d_->live++;
}

bool GuestRam::IoPin::Begin() {
  std::lock_guard<std::mutex> lock(d_->io_mu);
  if (d_->io_closed) return false;
  d_->io_active++;
  return true;
}

void GuestRam::IoPin::End() {
  std::lock_guard<std::mutex> lock(d_->io_mu);
  if (--d_->io_active == 0) d_->io_cv.notify_all();
}

GuestRam::IoPin::~IoPin() {
  d_->pins--;
  if (--d_->live == 0 && d_->unmap_when_last.load() && d_->host) UnmapRam(d_->host, d_->size);
}

GuestRam* GuestRam::FromValue(Napi::Env env, Napi::Value v) {
  if (!v.IsObject()) return nullptr;
  bool tagged = false;
  if (napi_check_object_type_tag(env, v, &kGuestRamTag, &tagged) != napi_ok || !tagged) return nullptr;
  void* p = nullptr;
  if (napi_unwrap(env, v, &p) != napi_ok) return nullptr;
  return static_cast<GuestRam*>(p);
}

std::unique_ptr<GuestRam::IoPin> GuestRam::PinForIo() {
  if (!host_) return nullptr;
  return std::unique_ptr<IoPin>(new IoPin(deferred_));
}

Napi::Value GuestRam::Release(const Napi::CallbackInfo& info) {
  ReleaseImpl(info.Env());
  return info.Env().Undefined();
}

// advise("dontneed" | "hugepage", offset, length). "dontneed" frees the
// range and leaves zeros: MADV_DONTNEED on anonymous memory; on a shared
// memfd mapping MADV_DONTNEED would only drop this process's page-table
// entries and keep the pages in the file, so there it is MADV_REMOVE (a
// hole punched in the memfd).
Napi::Value GuestRam::Advise(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!host_) return ThrowUsage(env, "guest ram was released");
  std::string what = info[0].ToString().Utf8Value();
  uint64_t off = 0, len = size_;
  if (info.Length() > 1 && !GetU64(info[1], &off)) return ThrowUsage(env, "offset must be an integer");
  if (info.Length() > 2 && !GetU64(info[2], &len)) return ThrowUsage(env, "length must be an integer");
  if (off > size_ || len > size_ - off || (off & 0xfff)) return ThrowUsage(env, "advise range outside guest ram");
  if (what != "dontneed" && what != "hugepage") return ThrowUsage(env, "unknown advice " + what);
#if defined(_WIN32)
  // No transparent huge pages to ask for; "dontneed" decommits and commits
  // again, which frees the pages and leaves zeros.
  if (what == "dontneed") ReplaceWithZeroPages(host_ + off, len);
#else
  int advice = MADV_HUGEPAGE;
  if (what == "dontneed") {
    if (backing_ == Backing::kFile) {
      // A private file mapping: MADV_DONTNEED would bring the file's bytes
      // back, MADV_REMOVE is refused. Fresh anonymous pages leave zeros.
      ReplaceWithZeroPages(host_ + off, len);
      return env.Undefined();
    }
    advice = backing_ == Backing::kShared ? MADV_REMOVE : MADV_DONTNEED;
  } else if (backing_ == Backing::kFile) {
    return env.Undefined();  // a regular file's private pages are never huge
  }
  if (madvise(host_ + off, len, advice) != 0) return ThrowErrno(env, errno, "madvise", nullptr, "advise guest ram");
#endif
  return env.Undefined();
}

// writeTo(fd) -> bytes written: the RAM's contents into a regular file from
// offset 0, sparse: pages of zeros are skipped (they read back as zeros
// from the hole), and pages never touched are not even read: the memfd's
// holes (SEEK_DATA/SEEK_HOLE), and on anonymous RAM the pages that are
// neither in memory nor in swap (/proc/self/pagemap), so a mostly untouched
// guest saves in time proportional to what it used. The file is sized to
// the RAM. The caller pauses the vCPUs first: a page written meanwhile may
// be saved torn.
Napi::Value GuestRam::WriteTo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!host_) return ThrowUsage(env, "guest ram was released");
#if defined(_WIN32)
  return ThrowUsage(env, "saving guest ram to a file (a snapshot) is not supported on Windows");
#else
  if (info.Length() < 1 || !info[0].IsNumber()) return ThrowUsage(env, "writeTo needs a file descriptor");
  int out = info[0].As<Napi::Number>().Int32Value();
  if (ftruncate(out, static_cast<off_t>(size_)) != 0) return ThrowErrno(env, errno, "ftruncate", nullptr, "size guest ram file");
  constexpr uint64_t kPage = 4096;
  static const uint8_t kZero[kPage] = {};
  uint64_t written = 0;
  // [pos, end), page aligned, into the file: each run of non-zero pages with
  // one pwrite. false with errno set if a write failed.
  auto save = [&](uint64_t pos, uint64_t end) {
    uint64_t run = pos;
    for (uint64_t p = pos; p <= end; p += kPage) {
      bool zero = p == end || std::memcmp(host_ + p, kZero, kPage) == 0;
      if (!zero) continue;
      while (run < p) {
        ssize_t n = pwrite(out, host_ + run, p - run, static_cast<off_t>(run));
        if (n < 0) {
          if (errno == EINTR) continue;
          return false;
        }
        run += static_cast<uint64_t>(n);
        written += static_cast<uint64_t>(n);
      }
      run = p + kPage;
    }
    return true;
  };
  bool ok = true;
  int pagemap = backing_ == Backing::kAnonymous ? open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC) : -1;
  if (memfd_ >= 0) {
    uint64_t pos = 0;
    while (ok && pos < size_) {
      off_t d = lseek(memfd_, static_cast<off_t>(pos), SEEK_DATA);
      if (d < 0) break;  // ENXIO: only holes from here on
      off_t h = lseek(memfd_, d, SEEK_HOLE);
      uint64_t start = static_cast<uint64_t>(d) & ~(kPage - 1);
      uint64_t end = h < 0 ? size_ : std::min<uint64_t>(size_, (static_cast<uint64_t>(h) + kPage - 1) & ~(kPage - 1));
      ok = save(start, end);
      pos = end;
    }
  } else if (pagemap >= 0) {
    // One 64-bit entry per page of this process; bit 63: in memory, bit 62:
    // in swap. Neither: never touched (or freed with MADV_DONTNEED), zeros.
    constexpr uint64_t kPresent = 1ull << 63, kSwapped = 1ull << 62;
    constexpr uint64_t kBatch = 512;  // pages per read: 2 MiB of RAM, 4 KiB of entries
    uint64_t entries[kBatch];
    const uint64_t first = reinterpret_cast<uintptr_t>(host_) / kPage;
    for (uint64_t pos = 0; ok && pos < size_; pos += kBatch * kPage) {
      uint64_t pages = std::min<uint64_t>(kBatch, (size_ - pos) / kPage);
      ssize_t n = pread(pagemap, entries, pages * sizeof(uint64_t), static_cast<off_t>((first + pos / kPage) * sizeof(uint64_t)));
      if (n != static_cast<ssize_t>(pages * sizeof(uint64_t))) {
        ok = save(pos, pos + pages * kPage);  // cannot tell: look at every page
        continue;
      }
      uint64_t i = 0;
      while (ok && i < pages) {
        while (i < pages && !(entries[i] & (kPresent | kSwapped))) i++;
        uint64_t from = i;
        while (i < pages && (entries[i] & (kPresent | kSwapped))) i++;
        if (i > from) ok = save(pos + from * kPage, pos + i * kPage);
      }
    }
  } else {
    ok = save(0, size_);
  }
  int saved_errno = errno;
  if (pagemap >= 0) close(pagemap);
  if (!ok) return ThrowErrno(env, saved_errno, "pwrite", nullptr, "write guest ram file");
  return Napi::Number::New(env, static_cast<double>(written));
#endif
}

Napi::Value GuestRam::GetSize(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), static_cast<double>(size_)); }
Napi::Value GuestRam::GetFd(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), memfd_); }

// The mapping's address in this process, for in-kernel users of guest RAM
// that take userspace addresses (vhost's memory table); 0n once released.
Napi::Value GuestRam::GetHostAddress(const Napi::CallbackInfo& info) { return Big(info.Env(), reinterpret_cast<uint64_t>(host_)); }

}  // namespace nodevmm
