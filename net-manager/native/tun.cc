// edge_tun: TUN devices and UDP sockets for the net manager's data plane.
//
// The addon only moves bytes: packets are read and written in batches between the kernel and buffers that the
// JavaScript side allocates once and passes in per batch (no JS object is created per packet). Readiness comes
// from a uv_poll handle on Node's own event loop; the JavaScript callback drains the fd until it is empty.
//
// Exports two classes, wrapped by net-manager/tun.ts and net-manager/tunnel.ts:
//   new Tun(name, offload)            readBatch, write, writeBatch, onReadable, close, stats, name, offload, fd
//   new Udp(address, port, offload)   recvBatch, sendBatch, onReadable, close, stats, port, offload, fd;
//                                     encrypted (secure.h): secure, setPeer, setRelay, removePeer, addSession,
//                                     removeSession, peer, recvOpen, sendSealed
//
// With `offload` the batches still hold ordinary packets of at most one MTU, but fewer, larger units cross the
// kernel boundary: the TUN hands over TCP super-packets (TSO) that offload.cc cuts into segments, segments written
// back are glued into super-packets (GRO-like); UDP sends runs of equal-sized datagrams as one UDP_SEGMENT (GSO)
// message and receives coalesced ones (UDP_GRO). A caller must drain until a batch comes back short: the rest of
// a super-packet or of a coalesced datagram waits in the addon, not in the kernel, so no poll event reminds of it.

#include <napi.h>
#include <uv.h>

#include "offload.h"
#include "secure.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace {

// The kernel caps one recvmmsg/sendmmsg call at UIO_MAXIOV messages.
constexpr uint32_t kMaxMessagesPerCall = 1024;
// Room behind each slot for the tail of an oversized packet, so that its real length can be seen and the
// packet dropped (TUN packets are at most 64 KiB).
constexpr size_t kOverflowSize = 128 * 1024;
constexpr int kSocketBufferBytes = 4 * 1024 * 1024;
// One UDP_SEGMENT message: at most 64 datagrams (the kernel's UDP_MAX_SEGMENTS is 64 or more) and 64 KiB in all.
constexpr size_t kMaxGsoSegments = 64;
constexpr size_t kMaxUdpPayload = 65507;

std::string ErrnoName(int err) {
  return uv_err_name(uv_translate_sys_error(err));
}

// CLOCK_MONOTONIC in milliseconds: session ages must not follow the wall clock.
int64_t MonotonicMs() {
  struct timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

// An Error with the errno text and Node's usual `code`, `errno` and `syscall` properties.
Napi::Error ErrnoError(Napi::Env env, int err, const std::string& what, const char* syscall,
                       const std::string& hint = "") {
  std::string message = what + ": " + std::strerror(err) + " (" + ErrnoName(err) + ")";
  if (!hint.empty()) message += "; " + hint;
  Napi::Error error = Napi::Error::New(env, message);
  error.Set("code", Napi::String::New(env, ErrnoName(err)));
  error.Set("errno", Napi::Number::New(env, uv_translate_sys_error(err)));
  error.Set("syscall", Napi::String::New(env, syscall));
  return error;
}

// ---- argument checking: every index is checked before the kernel sees a pointer ----

struct Bytes {
  uint8_t* data;
  size_t length;
};

Bytes ByteArg(const Napi::CallbackInfo& info, size_t index, const char* name) {
  Napi::Value value = info[index];
  if (!value.IsTypedArray() || value.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array)
    throw Napi::TypeError::New(info.Env(), std::string(name) + " must be a Buffer or Uint8Array");
  Napi::Uint8Array array = value.As<Napi::Uint8Array>();
  return {array.Data(), array.ElementLength()};
}

template <typename T, napi_typedarray_type Type>
Napi::TypedArrayOf<T> TypedArg(const Napi::CallbackInfo& info, size_t index, const char* name,
                               const char* typeName) {
  Napi::Value value = info[index];
  if (!value.IsTypedArray() || value.As<Napi::TypedArray>().TypedArrayType() != Type)
    throw Napi::TypeError::New(info.Env(), std::string(name) + " must be " + typeName);
  return value.As<Napi::TypedArrayOf<T>>();
}

Napi::Int32Array Int32Arg(const Napi::CallbackInfo& info, size_t index, const char* name) {
  return TypedArg<int32_t, napi_int32_array>(info, index, name, "an Int32Array");
}
Napi::Uint32Array Uint32Arg(const Napi::CallbackInfo& info, size_t index, const char* name) {
  return TypedArg<uint32_t, napi_uint32_array>(info, index, name, "a Uint32Array");
}
Napi::Uint16Array Uint16Arg(const Napi::CallbackInfo& info, size_t index, const char* name) {
  return TypedArg<uint16_t, napi_uint16_array>(info, index, name, "a Uint16Array");
}

// An integer in [min, max]; TypeError when not a number, RangeError when not an integer in range.
int64_t IntegerArg(const Napi::CallbackInfo& info, size_t index, const char* name, int64_t min, int64_t max) {
  Napi::Value value = info[index];
  if (!value.IsNumber()) throw Napi::TypeError::New(info.Env(), std::string(name) + " must be a number");
  double number = value.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(number) || std::floor(number) != number || number < static_cast<double>(min) ||
      number > static_cast<double>(max))
    throw Napi::RangeError::New(info.Env(), std::string(name) + " must be an integer from " +
                                                std::to_string(min) + " to " + std::to_string(max));
  return static_cast<int64_t>(number);
}

std::string StringArg(const Napi::CallbackInfo& info, size_t index, const char* name) {
  Napi::Value value = info[index];
  if (!value.IsString()) throw Napi::TypeError::New(info.Env(), std::string(name) + " must be a string");
  return value.As<Napi::String>().Utf8Value();
}

// `count` slots of `slotSize` bytes must fit in the buffer.
void CheckSlots(Napi::Env env, const Bytes& buffer, int64_t slotSize, size_t count) {
  if (static_cast<uint64_t>(slotSize) * count > buffer.length)
    throw Napi::RangeError::New(env, "buffer (" + std::to_string(buffer.length) + " bytes) cannot hold " +
                                         std::to_string(count) + " slots of " + std::to_string(slotSize) +
                                         " bytes");
}

// [offset, offset + length) must lie inside the buffer.
void CheckRange(Napi::Env env, const Bytes& buffer, int64_t offset, int64_t length, size_t index) {
  if (offset < 0 || length < 0 || static_cast<uint64_t>(offset) + static_cast<uint64_t>(length) > buffer.length)
    throw Napi::RangeError::New(env, "packet " + std::to_string(index) + " (offset " + std::to_string(offset) +
                                         ", length " + std::to_string(length) + ") is outside the buffer (" +
                                         std::to_string(buffer.length) + " bytes)");
}

// ---- an fd watched by uv_poll on Node's loop ----

// The uv_poll_t is allocated on its own: uv_close completes on a later loop turn, possibly after the wrapping
// object was collected. Its `data` points at the owner while one is attached, nullptr afterwards.
template <typename T>
class Pollable : public Napi::ObjectWrap<T> {
 public:
  explicit Pollable(const Napi::CallbackInfo& info) : Napi::ObjectWrap<T>(info) {}

  ~Pollable() override { Release(); }

 protected:
  int fd_ = -1;

  // Takes ownership of an open fd and registers the env cleanup hook that closes it at env teardown.
  void Adopt(int fd) {
    fd_ = fd;
    napi_add_env_cleanup_hook(this->Env(), CleanupHook, this);
    hooked_ = true;
  }

  int OpenFd(Napi::Env env, const char* kind) const {
    if (fd_ < 0) throw Napi::Error::New(env, std::string(kind) + " is closed");
    return fd_;
  }

  Napi::Value OnReadable(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!info[0].IsFunction()) throw Napi::TypeError::New(env, "callback must be a function");
    OpenFd(env, T::kKind);
    callback_ = Napi::Persistent(info[0].As<Napi::Function>());
    if (!context_) context_.reset(new Napi::AsyncContext(env, T::kResourceName));
    if (poll_ == nullptr) {
      uv_loop_t* loop = nullptr;
      if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr)
        throw Napi::Error::New(env, "no event loop");
      auto* poll = new uv_poll_t();
      int rc = uv_poll_init(loop, poll, fd_);
      if (rc != 0) {
        delete poll;
        throw ErrnoError(env, -rc, std::string("cannot poll the ") + T::kKind, "uv_poll_init");
      }
      poll->data = this;
      poll_ = poll;
    }
    if (!polling_) {
      int rc = uv_poll_start(poll_, UV_READABLE, OnPoll);
      if (rc != 0) throw ErrnoError(env, -rc, std::string("cannot poll the ") + T::kKind, "uv_poll_start");
      polling_ = true;
      // An object being polled stays alive (its callback may be the only thing that refers to it).
      this->Ref();
    }
    return env.Undefined();
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    StopPolling(true);
    Release();
    // Let go of the callback (and whatever its closure holds, buffers included). The async context stays until
    // the object goes: close() may run inside a callback made with it.
    callback_.Reset();
    return info.Env().Undefined();
  }

  uint64_t pollErrors_ = 0;

 private:
  uv_poll_t* poll_ = nullptr;
  bool polling_ = false;
  bool hooked_ = false;
  Napi::FunctionReference callback_;
  std::unique_ptr<Napi::AsyncContext> context_;

  void StopPolling(bool unref) {
    if (!polling_) return;
    polling_ = false;
    if (poll_ != nullptr) uv_poll_stop(poll_);
    if (unref) this->Unref();
  }

  // Stops polling, frees the handle (in its close callback) and closes the fd; no JavaScript is touched, so
  // this is also what the destructor and the env cleanup hook run.
  void Release() {
    if (poll_ != nullptr) {
      uv_poll_stop(poll_);
      poll_->data = nullptr;
      uv_close(reinterpret_cast<uv_handle_t*>(poll_),
               [](uv_handle_t* handle) { delete reinterpret_cast<uv_poll_t*>(handle); });
      poll_ = nullptr;
    }
    if (fd_ >= 0) {
      ::close(fd_);
      fd_ = -1;
    }
    if (hooked_) {
      napi_remove_env_cleanup_hook(this->Env(), CleanupHook, this);
      hooked_ = false;
    }
  }

  static void CleanupHook(void* arg) {
    auto* self = static_cast<Pollable*>(arg);
    self->hooked_ = false;  // hooks must not be removed from inside themselves
    self->polling_ = false;
    self->Release();
  }

  static void OnPoll(uv_poll_t* handle, int status, int /*events*/) {
    auto* self = static_cast<Pollable*>(handle->data);
    if (self != nullptr) self->Dispatch(status);
  }

  // Calls the JavaScript callback on the main thread. A poll error (say the fd went bad) stops polling for good
  // and is passed to the callback as an Error, so that nothing spins on a dead fd.
  void Dispatch(int status) {
    Napi::Env env = this->Env();
    Napi::HandleScope scope(env);
    // Locals keep the object and the callback alive through the call even if polling stops below.
    Napi::Object self = this->Value();
    if (callback_.IsEmpty()) return;
    Napi::Function callback = callback_.Value();
    std::vector<napi_value> args;
    if (status < 0) {
      pollErrors_++;
      StopPolling(true);
      Napi::Error error = Napi::Error::New(env, std::string("polling the ") + T::kKind +
                                                    " failed: " + uv_strerror(status) + " (" +
                                                    uv_err_name(status) + "); polling stopped");
      error.Set("code", Napi::String::New(env, uv_err_name(status)));
      args.push_back(error.Value());
    }
    try {
      callback.MakeCallback(self, args, context_ ? static_cast<napi_async_context>(*context_) : nullptr);
    } catch (const Napi::Error& error) {
      // Thrown by the JavaScript callback: an uncaught exception, as for any other event-loop callback.
      napi_fatal_exception(env, error.Value());
    }
  }
};

// ---- TUN ----

class Tun : public Pollable<Tun> {
 public:
  static constexpr const char* kKind = "TUN device";
  static constexpr const char* kResourceName = "edge_tun:TunReadable";

  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "Tun",
                       {
                           InstanceMethod<&Tun::ReadBatch>("readBatch"),
                           InstanceMethod<&Tun::Write>("write"),
                           InstanceMethod<&Tun::WriteBatch>("writeBatch"),
                           InstanceMethod("onReadable", &Tun::OnReadable),
                           InstanceMethod("close", &Tun::Close),
                           InstanceMethod<&Tun::Stats>("stats"),
                           InstanceAccessor<&Tun::Name>("name"),
                           InstanceAccessor<&Tun::Offload>("offload"),
                           InstanceAccessor<&Tun::Fd>("fd"),
                       });
  }

  // new Tun(name, offload): IFF_TUN | IFF_NO_PI (| IFF_VNET_HDR with checksum and TSO4 offloads), non-blocking,
  // close-on-exec.
  explicit Tun(const Napi::CallbackInfo& info) : Pollable<Tun>(info) {
    Napi::Env env = info.Env();
    std::string name = StringArg(info, 0, "name");
    if (name.size() >= IFNAMSIZ)
      throw Napi::RangeError::New(env, "TUN device name '" + name + "' is longer than " +
                                           std::to_string(IFNAMSIZ - 1) + " characters");
    if (name.find('\0') != std::string::npos)
      throw Napi::TypeError::New(env, "TUN device name must not contain NUL");
    offload_ = info.Length() > 1 && info[1].ToBoolean().Value();

    int fd = ::open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
      int err = errno;
      throw ErrnoError(env, err, "cannot open /dev/net/tun", "open",
                       err == ENOENT ? "the tun module is not loaded or the device node is missing"
                       : err == EACCES || err == EPERM ? "TUN devices need root (CAP_NET_ADMIN)"
                                                       : "");
    }
    struct ifreq ifr;
    std::memset(&ifr, 0, sizeof ifr);
    ifr.ifr_flags = IFF_TUN | IFF_NO_PI | (offload_ ? IFF_VNET_HDR : 0);
    std::memcpy(ifr.ifr_name, name.data(), name.size());
    if (::ioctl(fd, TUNSETIFF, &ifr) < 0) {
      int err = errno;
      ::close(fd);
      throw ErrnoError(env, err, "cannot create TUN device '" + name + "'", "ioctl(TUNSETIFF)",
                       err == EPERM ? "TUN devices need root (CAP_NET_ADMIN)"
                       : err == EBUSY ? "the device is held by another process"
                       : err == EINVAL ? "the name is not a valid interface name, or a device of another kind has it"
                                       : "");
    }
    if (offload_) {
      // The kernel may then hand over (and accept) TCP/IPv4 super-packets of up to 64 KiB with a virtio_net_hdr
      // in front; checksums are left partial (VIRTIO_NET_HDR_F_NEEDS_CSUM). The overlay is IPv4 only: no TSO6.
      int size = static_cast<int>(edge_offload::kVnetHdrLen);
      unsigned int offload = TUN_F_CSUM | TUN_F_TSO4;
      if (::ioctl(fd, TUNSETVNETHDRSZ, &size) < 0 || ::ioctl(fd, TUNSETOFFLOAD, offload) < 0) {
        int err = errno;
        ::close(fd);
        throw ErrnoError(env, err, "cannot enable offloads on TUN device '" + name + "'", "ioctl(TUNSETOFFLOAD)");
      }
    }
    name_.assign(ifr.ifr_name, strnlen(ifr.ifr_name, IFNAMSIZ));
    if (offload_)
      superPacket_.resize(edge_offload::kVnetHdrLen + 65536);
    else
      overflow_.resize(kOverflowSize);
    Adopt(fd);
  }

 private:
  // A run of packets of one writeBatch that goes into the TUN as one write: a single packet, or TCP segments
  // of one flow glued into a super-packet (linked through runNext_).
  struct Run {
    size_t first;
    size_t last;
    size_t count;
    size_t payload;
    bool tcp;
  };

  std::string name_;
  bool offload_ = false;
  std::vector<uint8_t> overflow_;
  std::vector<struct iovec> packets_;  // writeBatch's checked ranges, grown to the largest batch seen
  // Offload only: the packet last read (virtio_net_hdr in front) and what is left of it to cut.
  std::vector<uint8_t> superPacket_;
  edge_offload::TcpSegmenter segmenter_;
  std::vector<edge_offload::TcpSegment> segments_;
  std::vector<int32_t> runNext_;
  std::vector<Run> runs_;
  std::vector<struct iovec> runIovs_;
  uint8_t runHeaders_[120];
  uint8_t runVnetHdr_[edge_offload::kVnetHdrLen];
  uint64_t oversized_ = 0;
  uint64_t writeErrors_ = 0;
  uint64_t readErrors_ = 0;
  uint64_t superPacketsRead_ = 0;
  uint64_t segmentsCut_ = 0;
  uint64_t superPacketsWritten_ = 0;
  uint64_t segmentsGlued_ = 0;
  uint64_t offloadDropped_ = 0;

  Napi::Value Name(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), name_); }
  Napi::Value Offload(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), offload_); }
  Napi::Value Fd(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), fd_); }

  // readBatch(buffer, slotSize, lengths): packets until EAGAIN or lengths.length of them.
  Napi::Value ReadBatch(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Bytes buffer = ByteArg(info, 0, "buffer");
    int64_t slotSize = IntegerArg(info, 1, "slotSize", 1, INT32_MAX);
    Napi::Int32Array lengths = Int32Arg(info, 2, "lengths");
    size_t max = lengths.ElementLength();
    CheckSlots(env, buffer, slotSize, max);
    int fd = OpenFd(env, kKind);
    int32_t* out = lengths.Data();
    if (offload_) return Napi::Number::New(env, static_cast<double>(ReadOffload(env, fd, buffer, slotSize, out, max)));

    size_t count = 0;
    size_t dropped = 0;
    while (count < max) {
      struct iovec iov[2] = {{buffer.data + count * slotSize, static_cast<size_t>(slotSize)},
                             {overflow_.data(), overflow_.size()}};
      ssize_t n = ::readv(fd, iov, 2);
      if (n < 0) {
        int err = errno;
        if (err == EINTR) continue;
        if (err == EAGAIN || err == EWOULDBLOCK) break;
        readErrors_++;
        if (count > 0) break;  // hand over what was read; the error comes back on the next call
        throw ErrnoError(env, err, "cannot read from TUN device '" + name_ + "'", "read");
      }
      if (n > slotSize || n == 0) {
        if (n > 0) oversized_++;
        // Bounded, so that a stream of oversized packets cannot hold the loop forever.
        if (++dropped > max) break;
        continue;
      }
      out[count++] = static_cast<int32_t>(n);
    }
    return Napi::Number::New(env, static_cast<double>(count));
  }

  // Offload: whole packets as the kernel hands them over (virtio_net_hdr in front); super-packets are cut into
  // segments straight into the slots, partial checksums completed. What does not fit waits for the next call.
  size_t ReadOffload(Napi::Env env, int fd, const Bytes& buffer, int64_t slotSize, int32_t* out, size_t max) {
    size_t count = 0;
    size_t dropped = 0;
    while (count < max) {
      uint8_t* slot = buffer.data + count * slotSize;
      if (!segmenter_.Done()) {
        if (segmenter_.NextLength() > static_cast<size_t>(slotSize)) {
          oversized_++;
          segmenter_.Abandon();
          continue;
        }
        out[count++] = static_cast<int32_t>(segmenter_.Next(slot));
        segmentsCut_++;
        continue;
      }
      ssize_t n = ::read(fd, superPacket_.data(), superPacket_.size());
      if (n < 0) {
        int err = errno;
        if (err == EINTR) continue;
        if (err == EAGAIN || err == EWOULDBLOCK) break;
        readErrors_++;
        if (count > 0) break;
        throw ErrnoError(env, err, "cannot read from TUN device '" + name_ + "'", "read");
      }
      switch (TakeOffloaded(static_cast<size_t>(n), slot, slotSize, out + count)) {
        case Taken::kPacket:
          count++;
          break;
        case Taken::kSuperPacket:  // cut into the next slots from the top of the loop
          break;
        case Taken::kDropped:
          // Bounded, so that a stream of unusable packets cannot hold the loop forever.
          if (++dropped > max) return count;
          break;
      }
    }
    return count;
  }

  enum class Taken { kPacket, kSuperPacket, kDropped };

  // One packet read with offloads: a super-packet goes to the segmenter, anything else to `slot` (its length to
  // *length) with its checksum completed; unusable ones are dropped and counted.
  Taken TakeOffloaded(size_t n, uint8_t* slot, int64_t slotSize, int32_t* length) {
    if (n <= edge_offload::kVnetHdrLen || n >= superPacket_.size()) {
      offloadDropped_++;
      return Taken::kDropped;
    }
    edge_offload::VnetHdr hdr;
    std::memcpy(&hdr, superPacket_.data(), sizeof hdr);
    uint8_t* packet = superPacket_.data() + edge_offload::kVnetHdrLen;
    size_t packetLen = n - edge_offload::kVnetHdrLen;
    uint8_t gso = hdr.gsoType & static_cast<uint8_t>(~edge_offload::kGsoEcn);
    if (gso == edge_offload::kGsoTcpV4) {
      if (!segmenter_.Start(packet, packetLen, hdr.gsoSize)) {
        offloadDropped_++;
        return Taken::kDropped;
      }
      superPacketsRead_++;
      return Taken::kSuperPacket;
    }
    if (gso != edge_offload::kGsoNone) {  // TCP/IPv6 or UDP super-packets: never asked for, IPv4 overlay
      offloadDropped_++;
      return Taken::kDropped;
    }
    if ((hdr.flags & edge_offload::kVnetNeedsCsum) != 0 &&
        !edge_offload::CompleteChecksum(packet, packetLen, hdr.csumStart, hdr.csumOffset)) {
      offloadDropped_++;
      return Taken::kDropped;
    }
    if (packetLen > static_cast<size_t>(slotSize)) {
      oversized_++;
      return Taken::kDropped;
    }
    std::memcpy(slot, packet, packetLen);
    *length = static_cast<int32_t>(packetLen);
    return Taken::kPacket;
  }

  bool WriteOne(int fd, const uint8_t* data, size_t length) {
    if (offload_) {
      // A plain packet: a zeroed virtio_net_hdr (checksums complete, no segmentation) in front.
      static const uint8_t kPlain[edge_offload::kVnetHdrLen] = {};
      struct iovec iov[2] = {{const_cast<uint8_t*>(kPlain), sizeof kPlain},
                             {const_cast<uint8_t*>(data), length}};
      return WriteV(fd, iov, 2, 1);
    }
    for (;;) {
      ssize_t n = ::write(fd, data, length);
      if (n >= 0) return true;
      if (errno == EINTR) continue;
      writeErrors_++;
      return false;
    }
  }

  // One writev carrying `packets` packets (counted as write errors when refused).
  bool WriteV(int fd, const struct iovec* iov, int iovCount, size_t packets) {
    for (;;) {
      ssize_t n = ::writev(fd, iov, iovCount);
      if (n >= 0) return true;
      if (errno == EINTR) continue;
      writeErrors_ += packets;
      return false;
    }
  }

  // Offload: consecutive segments of a TCP flow become one super-packet. A segment joins the newest run of its
  // flow (looking back over a few runs, so that interleaved flows still glue) or starts a new one; runs are
  // written in the order they started, which keeps every flow's packets in order.
  size_t WriteGlued(int fd, size_t count) {
    if (segments_.size() < count) {
      segments_.resize(count);
      runNext_.resize(count);
    }
    runs_.clear();
    for (size_t i = 0; i < count; i++) {
      runNext_[i] = -1;
      edge_offload::TcpSegment& segment = segments_[i];
      bool tcp = edge_offload::ParseTcpSegment(static_cast<const uint8_t*>(packets_[i].iov_base),
                                               packets_[i].iov_len, &segment);
      bool joined = false;
      size_t looked = 0;
      for (size_t k = runs_.size(); tcp && k-- > 0 && looked < 8; looked++) {
        Run& run = runs_[k];
        if (!run.tcp) continue;
        const edge_offload::TcpSegment& first = segments_[run.first];
        if (!edge_offload::SameFlow(first, segment)) continue;
        if (edge_offload::Continues(first, segments_[run.last], run.payload, run.count, segment)) {
          runNext_[run.last] = static_cast<int32_t>(i);
          run.last = i;
          run.count++;
          run.payload += segment.payload;
          joined = true;
        }
        break;
      }
      if (!joined) runs_.push_back({i, i, 1, tcp ? segment.payload : 0, tcp});
    }

    size_t written = 0;
    runIovs_.resize(2 + edge_offload::kMaxCoalesced);
    for (const Run& run : runs_) {
      if (run.count == 1) {
        const struct iovec& packet = packets_[run.first];
        if (WriteOne(fd, static_cast<const uint8_t*>(packet.iov_base), packet.iov_len)) written++;
        continue;
      }
      const edge_offload::TcpSegment& first = segments_[run.first];
      edge_offload::BuildRunHeaders(first, run.payload, segments_[run.last].push, runHeaders_, runVnetHdr_);
      runIovs_[0] = {runVnetHdr_, sizeof runVnetHdr_};
      runIovs_[1] = {runHeaders_, first.headerLen};
      size_t n = 2;
      for (int32_t j = static_cast<int32_t>(run.first); j >= 0; j = runNext_[static_cast<size_t>(j)]) {
        const edge_offload::TcpSegment& segment = segments_[static_cast<size_t>(j)];
        runIovs_[n++] = {const_cast<uint8_t*>(segment.packet + segment.headerLen), segment.payload};
      }
      if (WriteV(fd, runIovs_.data(), static_cast<int>(n), run.count)) {
        written += run.count;
        superPacketsWritten_++;
        segmentsGlued_ += run.count;
      }
    }
    return written;
  }

  // write(buffer, offset, length): one IP packet; false (and counted) when the kernel refuses it.
  Napi::Value Write(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Bytes buffer = ByteArg(info, 0, "buffer");
    int64_t offset = IntegerArg(info, 1, "offset", 0, INT32_MAX);
    int64_t length = IntegerArg(info, 2, "length", 0, INT32_MAX);
    CheckRange(env, buffer, offset, length, 0);
    int fd = OpenFd(env, kKind);
    return Napi::Boolean::New(env, WriteOne(fd, buffer.data + offset, static_cast<size_t>(length)));
  }

  // writeBatch(buffer, offsets, lengths, count): `count` packets, one write each; returns how many the kernel took.
  Napi::Value WriteBatch(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Bytes buffer = ByteArg(info, 0, "buffer");
    Napi::Int32Array offsets = Int32Arg(info, 1, "offsets");
    Napi::Int32Array lengths = Int32Arg(info, 2, "lengths");
    size_t limit = std::min(offsets.ElementLength(), lengths.ElementLength());
    size_t count = static_cast<size_t>(IntegerArg(info, 3, "count", 0, static_cast<int64_t>(limit)));
    int fd = OpenFd(env, kKind);
    // Every range is read once and checked before anything is written (the arrays may be shared memory).
    if (packets_.size() < count) packets_.resize(count);
    const int32_t* off = offsets.Data();
    const int32_t* len = lengths.Data();
    for (size_t i = 0; i < count; i++) {
      int32_t offset = off[i];
      int32_t length = len[i];
      CheckRange(env, buffer, offset, length, i);
      packets_[i] = {buffer.data + offset, static_cast<size_t>(length)};
    }
    if (offload_) return Napi::Number::New(env, static_cast<double>(WriteGlued(fd, count)));
    size_t written = 0;
    for (size_t i = 0; i < count; i++)
      if (WriteOne(fd, static_cast<const uint8_t*>(packets_[i].iov_base), packets_[i].iov_len)) written++;
    return Napi::Number::New(env, static_cast<double>(written));
  }

  Napi::Value Stats(const Napi::CallbackInfo& info) {
    Napi::Object stats = Napi::Object::New(info.Env());
    stats.Set("oversized", static_cast<double>(oversized_));
    stats.Set("writeErrors", static_cast<double>(writeErrors_));
    stats.Set("readErrors", static_cast<double>(readErrors_));
    stats.Set("pollErrors", static_cast<double>(pollErrors_));
    stats.Set("superPacketsRead", static_cast<double>(superPacketsRead_));
    stats.Set("segmentsCut", static_cast<double>(segmentsCut_));
    stats.Set("superPacketsWritten", static_cast<double>(superPacketsWritten_));
    stats.Set("segmentsGlued", static_cast<double>(segmentsGlued_));
    stats.Set("offloadDropped", static_cast<double>(offloadDropped_));
    return stats;
  }
};

// ---- UDP ----

class Udp : public Pollable<Udp> {
 public:
  static constexpr const char* kKind = "UDP endpoint";
  static constexpr const char* kResourceName = "edge_tun:UdpReadable";

  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "Udp",
                       {
                           InstanceMethod<&Udp::RecvBatch>("recvBatch"),
                           InstanceMethod<&Udp::SendBatch>("sendBatch"),
                           InstanceMethod<&Udp::Secure>("secure"),
                           InstanceMethod<&Udp::SetPeer>("setPeer"),
                           InstanceMethod<&Udp::RemovePeer>("removePeer"),
                           InstanceMethod<&Udp::SetRelay>("setRelay"),
                           InstanceMethod<&Udp::AddSession>("addSession"),
                           InstanceMethod<&Udp::RemoveSession>("removeSession"),
                           InstanceMethod<&Udp::PeerInfo>("peer"),
                           InstanceMethod<&Udp::RecvOpen>("recvOpen"),
                           InstanceMethod<&Udp::SendSealed>("sendSealed"),
                           InstanceMethod("onReadable", &Udp::OnReadable),
                           InstanceMethod("close", &Udp::Close),
                           InstanceMethod<&Udp::Stats>("stats"),
                           InstanceAccessor<&Udp::Port>("port"),
                           InstanceAccessor<&Udp::Offload>("offload"),
                           InstanceAccessor<&Udp::Fd>("fd"),
                       });
  }

  // new Udp(address, port, offload): IPv4, non-blocking, close-on-exec, 4 MiB socket buffers; with offload,
  // UDP_GRO on receive and UDP_SEGMENT runs on send (both fall back to plain datagrams where the kernel says no).
  explicit Udp(const Napi::CallbackInfo& info) : Pollable<Udp>(info) {
    Napi::Env env = info.Env();
    std::string address = StringArg(info, 0, "address");
    int64_t port = IntegerArg(info, 1, "port", 0, 65535);
    struct sockaddr_in sin;
    std::memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_port = htons(static_cast<uint16_t>(port));
    if (::inet_pton(AF_INET, address.c_str(), &sin.sin_addr) != 1)
      throw Napi::TypeError::New(env, "address '" + address + "' is not an IPv4 address");

    int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) throw ErrnoError(env, errno, "cannot create a UDP socket", "socket");
    RaiseBuffer(fd, SO_RCVBUFFORCE, SO_RCVBUF);
    RaiseBuffer(fd, SO_SNDBUFFORCE, SO_SNDBUF);
    offload_ = info.Length() > 2 && info[2].ToBoolean().Value();
    if (offload_) {
      // Best effort: without UDP_GRO the kernel hands over coalesced datagrams one by one, as before.
      int on = 1;
      ::setsockopt(fd, SOL_UDP, UDP_GRO, &on, sizeof on);
      gso_ = true;  // until a send says otherwise
      rx_.Allocate();
    }
    if (::bind(fd, reinterpret_cast<struct sockaddr*>(&sin), sizeof sin) < 0) {
      int err = errno;
      ::close(fd);
      throw ErrnoError(env, err, "cannot bind UDP " + address + ":" + std::to_string(port), "bind");
    }
    socklen_t len = sizeof sin;
    if (::getsockname(fd, reinterpret_cast<struct sockaddr*>(&sin), &len) < 0) {
      int err = errno;
      ::close(fd);
      throw ErrnoError(env, err, "cannot read the bound UDP address", "getsockname");
    }
    port_ = ntohs(sin.sin_port);
    Adopt(fd);
  }

 private:
  // Coalesced datagrams received with UDP_GRO, handed out one segment per slot (offload only).
  struct Received {
    static constexpr size_t kMessages = 8;
    static constexpr size_t kBytes = 65536;
    std::vector<uint8_t> data;
    struct mmsghdr msgs[kMessages];
    struct iovec iovs[kMessages];
    struct sockaddr_in addrs[kMessages];
    uint64_t control[kMessages][4];  // room for one cmsg with an int, aligned
    size_t segment[kMessages];       // segment size of each (its whole length when not coalesced)
    size_t count = 0;                // messages received
    size_t index = 0;                // the message being handed out
    size_t offset = 0;               // within it

    void Allocate() { data.resize(kMessages * kBytes); }
    bool Pending() const { return index < count; }
  };

  uint16_t port_ = 0;
  bool offload_ = false;
  bool gso_ = false;
  // Set while the overlay is encrypted: peers, sessions and their keys.
  std::unique_ptr<edge_secure::Channel> secure_;
  Received rx_;
  uint64_t gsoSends_ = 0;
  uint64_t gsoFallbacks_ = 0;
  uint64_t groReceives_ = 0;
  // Per message of a sendBatch: how many datagrams it carries and where its cmsg lives.
  std::vector<size_t> msgSegments_;
  std::vector<uint64_t> msgControl_;
  // Room for one cmsg carrying a uint16_t (CMSG_SPACE(2) is 24 bytes on 64-bit Linux), in aligned words.
  static constexpr size_t kControlWords = (CMSG_SPACE(sizeof(uint16_t)) + 7) / 8;
  uint64_t truncated_ = 0;
  uint64_t sendErrors_ = 0;
  uint64_t recvErrors_ = 0;
  // Scratch for recvmmsg/sendmmsg, grown to the largest batch seen (no allocation in the steady state).
  std::vector<struct mmsghdr> msgs_;
  std::vector<struct iovec> iovs_;
  std::vector<struct sockaddr_in> addrs_;

  static void RaiseBuffer(int fd, int forced, int plain) {
    int size = kSocketBufferBytes;
    if (::setsockopt(fd, SOL_SOCKET, forced, &size, sizeof size) < 0)
      ::setsockopt(fd, SOL_SOCKET, plain, &size, sizeof size);  // best effort without CAP_NET_ADMIN
  }

  void Reserve(size_t n) {
    if (msgs_.size() >= n) return;
    msgs_.resize(n);
    iovs_.resize(n);
    addrs_.resize(n);
    msgSegments_.resize(n);
    msgControl_.resize(n * kControlWords);
  }

  Napi::Value Port(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), port_); }
  Napi::Value Offload(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), offload_); }

  // Offload: datagrams (coalesced ones cut at their segment size) from the addon's own receive area into the
  // caller's slots; what does not fit waits for the next call.
  size_t RecvOffload(Napi::Env env, int fd, uint8_t* slots, int64_t slotSize, size_t max, int32_t* outLengths,
                     uint32_t* outAddresses, uint16_t* outPorts, bool* drained) {
    size_t count = 0;
    while (count < max) {
      if (!rx_.Pending()) {
        if (!ReceiveCoalesced(env, fd)) {
          *drained = true;
          break;
        }
        continue;
      }
      size_t i = rx_.index;
      size_t length = rx_.msgs[i].msg_len;
      if (rx_.msgs[i].msg_hdr.msg_flags & MSG_TRUNC) {
        truncated_++;
        rx_.index++;
        continue;
      }
      size_t take = std::min(rx_.segment[i], length - rx_.offset);
      if (take > static_cast<size_t>(slotSize)) {
        truncated_++;
      } else {
        std::memcpy(slots + count * slotSize, rx_.data.data() + i * Received::kBytes + rx_.offset, take);
        outLengths[count] = static_cast<int32_t>(take);
        outAddresses[count] = ntohl(rx_.addrs[i].sin_addr.s_addr);
        outPorts[count] = ntohs(rx_.addrs[i].sin_port);
        count++;
      }
      rx_.offset += take;
      if (rx_.offset >= length) {
        rx_.index++;
        rx_.offset = 0;
      }
    }
    return count;
  }

  // One recvmmsg into the receive area; false when nothing was waiting (or a pending error was reported).
  bool ReceiveCoalesced(Napi::Env env, int fd) {
    for (size_t i = 0; i < Received::kMessages; i++) {
      rx_.iovs[i] = {rx_.data.data() + i * Received::kBytes, Received::kBytes};
      struct msghdr& hdr = rx_.msgs[i].msg_hdr;
      std::memset(&hdr, 0, sizeof hdr);
      hdr.msg_name = &rx_.addrs[i];
      hdr.msg_namelen = sizeof(struct sockaddr_in);
      hdr.msg_iov = &rx_.iovs[i];
      hdr.msg_iovlen = 1;
      hdr.msg_control = rx_.control[i];
      hdr.msg_controllen = sizeof rx_.control[i];
      rx_.msgs[i].msg_len = 0;
    }
    int n;
    do {
      n = ::recvmmsg(fd, rx_.msgs, Received::kMessages, MSG_DONTWAIT, nullptr);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
      int err = errno;
      if (err == EAGAIN || err == EWOULDBLOCK) return false;
      if (err == EBADF || err == EFAULT || err == EINVAL || err == ENOTSOCK)
        throw ErrnoError(env, err, "cannot receive on UDP port " + std::to_string(port_), "recvmmsg");
      recvErrors_++;
      return false;
    }
    if (n == 0) return false;
    for (size_t i = 0; i < static_cast<size_t>(n); i++) {
      size_t length = rx_.msgs[i].msg_len;
      size_t segment = length;
      for (struct cmsghdr* cmsg = CMSG_FIRSTHDR(&rx_.msgs[i].msg_hdr); cmsg != nullptr;
           cmsg = CMSG_NXTHDR(&rx_.msgs[i].msg_hdr, cmsg)) {
        if (cmsg->cmsg_level == SOL_UDP && cmsg->cmsg_type == UDP_GRO && cmsg->cmsg_len >= CMSG_LEN(sizeof(int))) {
          int size;
          std::memcpy(&size, CMSG_DATA(cmsg), sizeof size);
          if (size > 0 && static_cast<size_t>(size) < length) {
            segment = static_cast<size_t>(size);
            groReceives_++;
          }
        }
      }
      // A zero-length datagram still counts as one (empty) packet.
      rx_.segment[i] = segment == 0 ? 1 : segment;
    }
    rx_.count = static_cast<size_t>(n);
    rx_.index = 0;
    rx_.offset = 0;
    return true;
  }
  Napi::Value Fd(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), fd_); }

  // recvBatch(buffer, slotSize, lengths, addresses, ports): up to lengths.length datagrams.
  Napi::Value RecvBatch(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Bytes buffer = ByteArg(info, 0, "buffer");
    int64_t slotSize = IntegerArg(info, 1, "slotSize", 1, INT32_MAX);
    Napi::Int32Array lengths = Int32Arg(info, 2, "lengths");
    Napi::Uint32Array addresses = Uint32Arg(info, 3, "addresses");
    Napi::Uint16Array ports = Uint16Arg(info, 4, "ports");
    size_t max = lengths.ElementLength();
    if (addresses.ElementLength() < max || ports.ElementLength() < max)
      throw Napi::RangeError::New(env, "addresses and ports must be at least as long as lengths");
    CheckSlots(env, buffer, slotSize, max);
    int fd = OpenFd(env, kKind);
    if (max > kMaxMessagesPerCall) max = kMaxMessagesPerCall;
    bool drained = false;
    size_t count = Receive(env, fd, buffer.data, slotSize, max, lengths.Data(), addresses.Data(), ports.Data(),
                           &drained);
    return Napi::Number::New(env, static_cast<double>(count));
  }

  // Up to `max` datagrams into slots; *drained when the socket had no more (so a short count means empty).
  size_t Receive(Napi::Env env, int fd, uint8_t* slots, int64_t slotSize, size_t max, int32_t* outLengths,
                 uint32_t* outAddresses, uint16_t* outPorts, bool* drained) {
    Reserve(max);
    if (offload_) return RecvOffload(env, fd, slots, slotSize, max, outLengths, outAddresses, outPorts, drained);

    // A batch of nothing but truncated datagrams is read past (a few times) rather than reported as empty.
    for (int round = 0; round < 4 && max > 0; round++) {
      for (size_t i = 0; i < max; i++) {
        iovs_[i] = {slots + i * slotSize, static_cast<size_t>(slotSize)};
        struct msghdr& hdr = msgs_[i].msg_hdr;
        std::memset(&hdr, 0, sizeof hdr);
        hdr.msg_name = &addrs_[i];
        hdr.msg_namelen = sizeof(struct sockaddr_in);
        hdr.msg_iov = &iovs_[i];
        hdr.msg_iovlen = 1;
        msgs_[i].msg_len = 0;
      }
      int n;
      do {
        n = ::recvmmsg(fd, msgs_.data(), static_cast<unsigned int>(max), MSG_DONTWAIT, nullptr);
      } while (n < 0 && errno == EINTR);
      if (n < 0) {
        int err = errno;
        *drained = true;
        if (err == EAGAIN || err == EWOULDBLOCK) return 0;
        if (err == EBADF || err == EFAULT || err == EINVAL || err == ENOTSOCK)
          throw ErrnoError(env, err, "cannot receive on UDP port " + std::to_string(port_), "recvmmsg");
        // A pending socket error (an ICMP error for an earlier send, say) is reported once and then cleared.
        recvErrors_++;
        return 0;
      }
      if (static_cast<size_t>(n) < max) *drained = true;
      size_t kept = 0;
      for (size_t i = 0; i < static_cast<size_t>(n); i++) {
        if (msgs_[i].msg_hdr.msg_flags & MSG_TRUNC) {
          truncated_++;
          continue;
        }
        if (kept != i) std::memmove(slots + kept * slotSize, slots + i * slotSize, msgs_[i].msg_len);
        outLengths[kept] = static_cast<int32_t>(msgs_[i].msg_len);
        outAddresses[kept] = ntohl(addrs_[i].sin_addr.s_addr);
        outPorts[kept] = ntohs(addrs_[i].sin_port);
        kept++;
      }
      if (kept > 0 || n == 0 || *drained) return kept;
    }
    return 0;
  }

  // --- the encrypted overlay (secure.h) ---

  edge_secure::Channel& Channel(Napi::Env env) {
    if (!secure_) throw Napi::Error::New(env, "encryption is off on this UDP endpoint (call secure(true))");
    return *secure_;
  }

  // secure(on): on creates the peer and session tables (empty); off drops them, keys included.
  Napi::Value Secure(const Napi::CallbackInfo& info) {
    bool on = info[0].ToBoolean().Value();
    if (on && !secure_) secure_.reset(new edge_secure::Channel());
    if (!on) secure_.reset();
    return info.Env().Undefined();
  }

  // setPeer(slot, address, port): where the peer in `slot` is sent to (until an authenticated packet says else).
  Napi::Value SetPeer(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int slot = static_cast<int>(IntegerArg(info, 0, "slot", 0, (1 << 20) - 1));
    uint32_t address = static_cast<uint32_t>(IntegerArg(info, 1, "address", 0, UINT32_MAX));
    uint16_t port = static_cast<uint16_t>(IntegerArg(info, 2, "port", 0, 65535));
    Channel(env).SetPeer(slot, address, port);
    return env.Undefined();
  }

  // setRelay(slot, address, port, relayId, use): the relay that reaches the peer, its id there (8 bytes);
  // `use`: send through it from now on (until a packet arrives directly).
  Napi::Value SetRelay(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int slot = static_cast<int>(IntegerArg(info, 0, "slot", 0, (1 << 20) - 1));
    uint32_t address = static_cast<uint32_t>(IntegerArg(info, 1, "address", 0, UINT32_MAX));
    uint16_t port = static_cast<uint16_t>(IntegerArg(info, 2, "port", 0, 65535));
    Bytes id = ByteArg(info, 3, "relayId");
    if (id.length != edge_secure::kRelayIdBytes) throw Napi::RangeError::New(env, "relayId must be 8 bytes");
    bool use = info[4].ToBoolean().Value();
    return Napi::Boolean::New(env, Channel(env).SetRelay(slot, address, port, id.data, use));
  }

  Napi::Value RemovePeer(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Channel(env).RemovePeer(static_cast<int>(IntegerArg(info, 0, "slot", 0, (1 << 20) - 1)));
    return env.Undefined();
  }

  // addSession(slot, localIndex, remoteIndex, sendKey, recvKey, role, cipher): role 0 current, 1 next; cipher 0
  // ChaCha20-Poly1305 (the default), 1 AES-256-GCM. False when the local index is taken or the slot is no peer.
  Napi::Value AddSession(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int slot = static_cast<int>(IntegerArg(info, 0, "slot", 0, (1 << 20) - 1));
    uint32_t localIndex = static_cast<uint32_t>(IntegerArg(info, 1, "localIndex", 1, UINT32_MAX));
    uint32_t remoteIndex = static_cast<uint32_t>(IntegerArg(info, 2, "remoteIndex", 0, UINT32_MAX));
    Bytes sendKey = ByteArg(info, 3, "sendKey");
    Bytes recvKey = ByteArg(info, 4, "recvKey");
    if (sendKey.length != edge_secure::kKeyBytes || recvKey.length != edge_secure::kKeyBytes)
      throw Napi::RangeError::New(env, "keys must be 32 bytes");
    int role = static_cast<int>(IntegerArg(info, 5, "role", 0, 1));
    auto cipher = static_cast<edge_secure::Cipher>(info.Length() > 6 ? IntegerArg(info, 6, "cipher", 0, 1) : 0);
    bool added = Channel(env).AddSession(slot, localIndex, remoteIndex, sendKey.data, recvKey.data, role, cipher,
                                         MonotonicMs());
    return Napi::Boolean::New(env, added);
  }

  Napi::Value RemoveSession(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Channel(env).RemoveSession(static_cast<uint32_t>(IntegerArg(info, 0, "localIndex", 0, UINT32_MAX)));
    return env.Undefined();
  }

  // peer(slot): its endpoint, sessions and traffic, or null.
  Napi::Value PeerInfo(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const edge_secure::Channel& channel = Channel(env);
    const edge_secure::Peer* peer = channel.PeerAt(static_cast<int>(IntegerArg(info, 0, "slot", 0, (1 << 20) - 1)));
    if (peer == nullptr) return env.Null();
    int64_t now = MonotonicMs();
    Napi::Object out = Napi::Object::New(env);
    out.Set("address", static_cast<double>(peer->ip));
    out.Set("port", static_cast<double>(peer->port));
    out.Set("current", static_cast<double>(peer->current));
    out.Set("next", static_cast<double>(peer->next));
    out.Set("previous", static_cast<double>(peer->previous[0]));
    const edge_secure::Session* current = channel.SessionAt(peer->current);
    out.Set("currentAgeMs", current ? static_cast<double>(now - current->installedMs) : -1.0);
    out.Set("msSinceReceived", peer->lastReceivedMs < 0 ? -1.0 : static_cast<double>(now - peer->lastReceivedMs));
    out.Set("msSinceSent", peer->lastSentMs < 0 ? -1.0 : static_cast<double>(now - peer->lastSentMs));
    out.Set("rxBytes", static_cast<double>(peer->rxBytes));
    out.Set("txBytes", static_cast<double>(peer->txBytes));
    out.Set("roams", static_cast<double>(peer->roams));
    out.Set("viaRelay", peer->viaRelay);
    out.Set("relayedPackets", static_cast<double>(peer->relayedPackets));
    return out;
  }

  // recvOpen(buffer, slotSize, lengths, addresses, ports, peers): recvBatch, each datagram opened in place.
  // Data and keepalives: the packet starts 16 bytes into its slot, lengths[i] is its length (0: a keepalive),
  // peers[i] its peer slot, plus kPromoted when it confirmed the peer's `next` session. Handshake messages:
  // as received, from the slot's start, peers[i] = -1. Everything else is dropped and counted. A short count
  // means the socket is empty.
  static constexpr int32_t kPromoted = 1 << 30;
  Napi::Value RecvOpen(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Bytes buffer = ByteArg(info, 0, "buffer");
    int64_t slotSize = IntegerArg(info, 1, "slotSize", 1, INT32_MAX);
    Napi::Int32Array lengths = Int32Arg(info, 2, "lengths");
    Napi::Uint32Array addresses = Uint32Arg(info, 3, "addresses");
    Napi::Uint16Array ports = Uint16Arg(info, 4, "ports");
    Napi::Int32Array peers = Int32Arg(info, 5, "peers");
    size_t max = lengths.ElementLength();
    if (addresses.ElementLength() < max || ports.ElementLength() < max || peers.ElementLength() < max)
      throw Napi::RangeError::New(env, "addresses, ports and peers must be at least as long as lengths");
    CheckSlots(env, buffer, slotSize, max);
    edge_secure::Channel& channel = Channel(env);
    int fd = OpenFd(env, kKind);
    if (max > kMaxMessagesPerCall) max = kMaxMessagesPerCall;
    int32_t* outLengths = lengths.Data();
    uint32_t* outAddresses = addresses.Data();
    uint16_t* outPorts = ports.Data();
    int32_t* outPeers = peers.Data();
    int64_t now = MonotonicMs();
    size_t kept = 0;
    while (kept < max) {
      bool drained = false;
      size_t got = Receive(env, fd, buffer.data + kept * slotSize, slotSize, max - kept, outLengths + kept,
                           outAddresses + kept, outPorts + kept, &drained);
      size_t end = kept + got;
      for (size_t i = kept; i < end; i++) {
        uint8_t* datagram = buffer.data + i * slotSize;
        size_t length = static_cast<size_t>(outLengths[i]);
        int slot = -1;
        bool promoted = false;
        edge_secure::Opened opened =
            channel.Open(datagram, &length, outAddresses[i], outPorts[i], now, &slot, &promoted);
        if (opened == edge_secure::Opened::kDropped) continue;
        size_t bytes = opened == edge_secure::Opened::kHandshake ? length : length + edge_secure::kHeaderBytes;
        if (kept != i) std::memmove(buffer.data + kept * slotSize, datagram, bytes);
        outLengths[kept] = static_cast<int32_t>(length);
        outAddresses[kept] = outAddresses[i];
        outPorts[kept] = outPorts[i];
        outPeers[kept] = opened == edge_secure::Opened::kHandshake ? -1 : (slot | (promoted ? kPromoted : 0));
        kept++;
      }
      if (drained || got == 0) break;
    }
    return Napi::Number::New(env, static_cast<double>(kept));
  }

  // sendSealed(buffer, offsets, lengths, peers, count): packet i (offsets[i], lengths[i]) is sealed in place for
  // peer slot peers[i] (28 bytes before it and 16 after it must be in the buffer and free: the header, the relay's
  // header when the peer is reached through the relay, the tag) and sent to the peer's endpoint or its relay. Returns how many the kernel took; packets of peers without a usable session are dropped and counted.
  Napi::Value SendSealed(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Bytes buffer = ByteArg(info, 0, "buffer");
    Napi::Int32Array offsets = Int32Arg(info, 1, "offsets");
    Napi::Int32Array lengths = Int32Arg(info, 2, "lengths");
    Napi::Int32Array peers = Int32Arg(info, 3, "peers");
    size_t limit = std::min(std::min(offsets.ElementLength(), lengths.ElementLength()), peers.ElementLength());
    size_t count = static_cast<size_t>(IntegerArg(info, 4, "count", 0, static_cast<int64_t>(limit)));
    edge_secure::Channel& channel = Channel(env);
    int fd = OpenFd(env, kKind);
    Reserve(count);
    const int32_t* off = offsets.Data();
    const int32_t* len = lengths.Data();
    const int32_t* peer = peers.Data();
    constexpr int64_t kBefore = edge_secure::kHeaderBytes + edge_secure::kRelayHeaderBytes;
    for (size_t i = 0; i < count; i++)
      CheckRange(env, buffer, static_cast<int64_t>(off[i]) - kBefore,
                 static_cast<int64_t>(len[i]) + kBefore + static_cast<int64_t>(edge_secure::kTagBytes), i);
    int64_t now = MonotonicMs();
    size_t ready = 0;
    for (size_t i = 0; i < count; i++) {
      uint8_t* packet = buffer.data + off[i];
      uint32_t ip;
      uint16_t port;
      size_t before = channel.Seal(peer[i], packet, static_cast<size_t>(len[i]), now, &ip, &port);
      if (before == 0) continue;
      iovs_[ready] = {packet - before, before + static_cast<size_t>(len[i]) + edge_secure::kTagBytes};
      struct sockaddr_in& sin = addrs_[ready];
      std::memset(&sin, 0, sizeof sin);
      sin.sin_family = AF_INET;
      sin.sin_addr.s_addr = htonl(ip);
      sin.sin_port = htons(port);
      ready++;
    }
    return Napi::Number::New(env, static_cast<double>(Transmit(env, fd, BuildMessages(ready))));
  }

  // sendBatch(buffer, offsets, lengths, addresses, ports, count): returns how many the kernel took.
  Napi::Value SendBatch(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Bytes buffer = ByteArg(info, 0, "buffer");
    Napi::Int32Array offsets = Int32Arg(info, 1, "offsets");
    Napi::Int32Array lengths = Int32Arg(info, 2, "lengths");
    Napi::Uint32Array addresses = Uint32Arg(info, 3, "addresses");
    Napi::Uint16Array ports = Uint16Arg(info, 4, "ports");
    size_t limit = std::min(std::min(offsets.ElementLength(), lengths.ElementLength()),
                            std::min(addresses.ElementLength(), ports.ElementLength()));
    size_t count = static_cast<size_t>(IntegerArg(info, 5, "count", 0, static_cast<int64_t>(limit)));
    int fd = OpenFd(env, kKind);
    // Every range is read once and checked before anything is sent (the arrays may be shared memory).
    Reserve(count);
    const int32_t* off = offsets.Data();
    const int32_t* len = lengths.Data();
    const uint32_t* addr = addresses.Data();
    const uint16_t* port = ports.Data();
    for (size_t i = 0; i < count; i++) {
      int32_t offset = off[i];
      int32_t length = len[i];
      CheckRange(env, buffer, offset, length, i);
      iovs_[i] = {buffer.data + offset, static_cast<size_t>(length)};
      struct sockaddr_in& sin = addrs_[i];
      std::memset(&sin, 0, sizeof sin);
      sin.sin_family = AF_INET;
      sin.sin_addr.s_addr = htonl(addr[i]);
      sin.sin_port = htons(port[i]);
    }
    return Napi::Number::New(env, static_cast<double>(Transmit(env, fd, BuildMessages(count))));
  }

  // sendmmsg of the messages BuildMessages made; returns how many datagrams the kernel took.
  size_t Transmit(Napi::Env env, int fd, size_t messages) {
    size_t sent = 0;
    size_t done = 0;  // messages sent or dropped
    while (done < messages) {
      // The kernel takes at most UIO_MAXIOV messages per call.
      size_t chunk = std::min(messages - done, static_cast<size_t>(kMaxMessagesPerCall));
      int n = ::sendmmsg(fd, msgs_.data() + done, static_cast<unsigned int>(chunk), MSG_DONTWAIT);
      if (n > 0) {
        for (size_t k = done; k < done + static_cast<size_t>(n); k++) {
          sent += msgSegments_[k];
          if (msgSegments_[k] > 1) gsoSends_++;
        }
        done += static_cast<size_t>(n);
        continue;
      }
      int err = n < 0 ? errno : EAGAIN;
      if (err == EINTR) continue;
      if (err == EBADF || err == ENOTSOCK || err == EFAULT)
        throw ErrnoError(env, err, "cannot send on UDP port " + std::to_string(port_), "sendmmsg");
      if (err == EAGAIN || err == EWOULDBLOCK) {
        // The socket buffer is full: the rest of the batch is dropped.
        for (size_t k = done; k < messages; k++) sendErrors_ += msgSegments_[k];
        return sent;
      }
      if (msgSegments_[done] > 1 && (err == EIO || err == EINVAL || err == ENOPROTOOPT || err == EOPNOTSUPP)) {
        // The kernel would not segment this run (no checksum offload on the way out, a smaller MTU ...):
        // its datagrams go one by one; after EIO (the device cannot) GSO stays off for good.
        gsoFallbacks_++;
                if (err != EINVAL) gso_ = false;
        sent += SendOneByOne(msgs_[done].msg_hdr);
      } else {
        // This message was refused (unreachable, too big, port 0, filtered ...): drop it, go on.
        sendErrors_ += msgSegments_[done];
      }
      done++;
    }
    return sent;
  }

  // Groups the checked datagrams (iovs_, addrs_) into messages: with GSO, a run to one destination of datagrams
  // all as long as the first (the last may be shorter) goes as one message with UDP_SEGMENT. Returns the count.
  size_t BuildMessages(size_t count) {
    size_t messages = 0;
    for (size_t i = 0; i < count;) {
      size_t size = iovs_[i].iov_len;
      size_t j = i + 1;
      if (gso_ && size > 0) {
        size_t total = size;
        while (j < count && j - i < kMaxGsoSegments && iovs_[j - 1].iov_len == size && iovs_[j].iov_len > 0 &&
               iovs_[j].iov_len <= size && total + iovs_[j].iov_len <= kMaxUdpPayload &&
               addrs_[j].sin_addr.s_addr == addrs_[i].sin_addr.s_addr && addrs_[j].sin_port == addrs_[i].sin_port) {
          total += iovs_[j].iov_len;
          j++;
        }
      }
      struct msghdr& hdr = msgs_[messages].msg_hdr;
      std::memset(&hdr, 0, sizeof hdr);
      hdr.msg_name = &addrs_[i];
      hdr.msg_namelen = sizeof(struct sockaddr_in);
      hdr.msg_iov = &iovs_[i];
      hdr.msg_iovlen = j - i;
      if (j - i > 1) {
        hdr.msg_control = &msgControl_[messages * kControlWords];
        hdr.msg_controllen = CMSG_SPACE(sizeof(uint16_t));
        struct cmsghdr* cmsg = CMSG_FIRSTHDR(&hdr);
        cmsg->cmsg_level = SOL_UDP;
        cmsg->cmsg_type = UDP_SEGMENT;
        cmsg->cmsg_len = CMSG_LEN(sizeof(uint16_t));
        uint16_t segment = static_cast<uint16_t>(size);
        std::memcpy(CMSG_DATA(cmsg), &segment, sizeof segment);
      }
      msgSegments_[messages] = j - i;
      messages++;
      i = j;
    }
    return messages;
  }

  // The datagrams of a GSO message the kernel refused, one sendmsg each; returns how many went.
  size_t SendOneByOne(const struct msghdr& run) {
    size_t sent = 0;
    for (size_t k = 0; k < run.msg_iovlen; k++) {
      struct msghdr hdr;
      std::memset(&hdr, 0, sizeof hdr);
      hdr.msg_name = run.msg_name;
      hdr.msg_namelen = run.msg_namelen;
      hdr.msg_iov = &run.msg_iov[k];
      hdr.msg_iovlen = 1;
      ssize_t n;
      do {
        n = ::sendmsg(fd_, &hdr, MSG_DONTWAIT);
      } while (n < 0 && errno == EINTR);
      if (n >= 0)
        sent++;
      else
        sendErrors_++;
    }
    return sent;
  }

  Napi::Value Stats(const Napi::CallbackInfo& info) {
    Napi::Object stats = Napi::Object::New(info.Env());
    stats.Set("truncated", static_cast<double>(truncated_));
    stats.Set("gsoSends", static_cast<double>(gsoSends_));
    stats.Set("gsoFallbacks", static_cast<double>(gsoFallbacks_));
    stats.Set("groReceives", static_cast<double>(groReceives_));
    stats.Set("sendErrors", static_cast<double>(sendErrors_));
    stats.Set("recvErrors", static_cast<double>(recvErrors_));
    stats.Set("pollErrors", static_cast<double>(pollErrors_));
    if (secure_) {
      const edge_secure::Counters& c = secure_->counters();
      stats.Set("opened", static_cast<double>(c.opened));
      stats.Set("sealed", static_cast<double>(c.sealed));
      stats.Set("keepalives", static_cast<double>(c.keepalives));
      stats.Set("handshakes", static_cast<double>(c.handshakes));
      stats.Set("badLength", static_cast<double>(c.badLength));
      stats.Set("unknownType", static_cast<double>(c.unknownType));
      stats.Set("plaintext", static_cast<double>(c.plaintext));
      stats.Set("unknownSession", static_cast<double>(c.unknownSession));
      stats.Set("expired", static_cast<double>(c.expired));
      stats.Set("replayed", static_cast<double>(c.replayed));
      stats.Set("badTag", static_cast<double>(c.badTag));
      stats.Set("noSession", static_cast<double>(c.noSession));
      stats.Set("promoted", static_cast<double>(c.promoted));
      stats.Set("roams", static_cast<double>(c.roams));
      stats.Set("relayedIn", static_cast<double>(c.relayedIn));
      stats.Set("relayedOut", static_cast<double>(c.relayedOut));
      stats.Set("notFromRelay", static_cast<double>(c.notFromRelay));
    }
    return stats;
  }
};

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("Tun", Tun::Init(env));
  exports.Set("Udp", Udp::Init(env));
  return exports;
}

}  // namespace

NODE_API_MODULE(edge_tun, Init)
