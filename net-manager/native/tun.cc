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
//   tun.linkFastPath(udp, capacity)   the fast path (fastpath.h) between the two: installFlow, forgetAddress,
//                                     forgetFlow, forgetAllFlows, flowActivity, fastPathStats
//
// With the fast path linked, the poll callbacks run in C: packets of cached flows are rewritten and sent (or
// written into the TUN) there, and the JavaScript callback is called only when a packet needs the slow path;
// readBatch, recvBatch and recvOpen then hand out only those packets (the misses), in the same layout as before.
//
// With `offload` the batches still hold ordinary packets of at most one MTU, but fewer, larger units cross the
// kernel boundary: the TUN hands over TCP super-packets (TSO) that offload.cc cuts into segments, segments written
// back are glued into super-packets (GRO-like); UDP sends runs of equal-sized datagrams as one UDP_SEGMENT (GSO)
// message and receives coalesced ones (UDP_GRO). A caller must drain until a batch comes back short: the rest of
// a super-packet or of a coalesced datagram waits in the addon, not in the kernel, so no poll event reminds of it.

#include <napi.h>
#include <uv.h>

#include "fastpath.h"
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

// The fast path reads kFastBatch packets at a time into slots of kFastSlot bytes, the first kFastHeadroom bytes
// into its area: every packet (the TUN's MTU is at most 1500) has room before it for the header (and the relay's)
// and after it for the tag when it is sealed in place.
constexpr size_t kFastBatch = 64;
constexpr size_t kFastSlot = 2048;
constexpr size_t kFastHeadroom = edge_secure::kHeaderBytes + edge_secure::kRelayHeaderBytes;
constexpr size_t kFastMaxPacket = kFastSlot - kFastHeadroom - edge_secure::kTagBytes;
// Batches one poll callback forwards at most before it lets the event loop go on (the fd stays readable).
constexpr size_t kFastRoundsPerPoll = 16;
// Flows flowActivity reports per call at most.
constexpr size_t kActivityPerCall = 1024;
// Set in the peers array of recvOpen when the packet confirmed the peer's `next` session.
constexpr int32_t kPromoted = 1 << 30;

// Where packets for the slow path go: the caller's slots (and arrays), or the fast path's own queue.
struct Sink {
  uint8_t* data;
  int64_t slotSize;
  int32_t* lengths;
  uint32_t* addresses;  // UDP only
  uint16_t* ports;      // UDP only
  int32_t* tags;        // encrypted UDP only: the peer slot (| kPromoted), -1 for handshake messages
};

// Packets a poll callback found that need the slow path, until readBatch / recvBatch / recvOpen take them.
struct Misses {
  std::vector<uint8_t> data = std::vector<uint8_t>(kFastBatch * kFastSlot);
  int32_t lengths[kFastBatch] = {};
  uint32_t addresses[kFastBatch] = {};
  uint16_t ports[kFastBatch] = {};
  int32_t tags[kFastBatch] = {};
  size_t count = 0;
  size_t taken = 0;

  bool Pending() const { return taken < count; }
  void Clear() { count = taken = 0; }
  Sink AsSink() { return {data.data(), kFastSlot, lengths, addresses, ports, tags}; }
};

struct FastSend {
  uint8_t* packet;
  size_t length;
  int32_t slot;  // -1: unencrypted, to ip:port
  uint32_t ip;
  uint16_t port;
};

struct FastPath {
  explicit FastPath(size_t capacity) : cache(capacity), activity(kActivityPerCall) {}
  edge_fastpath::FlowCache cache;
  std::vector<edge_fastpath::FlowEntry> activity;
  std::vector<uint8_t> area = std::vector<uint8_t>(kFastHeadroom + kFastBatch * kFastSlot);
  int32_t lengths[kFastBatch] = {};
  uint32_t addresses[kFastBatch] = {};
  uint16_t ports[kFastBatch] = {};
  FastSend sends[kFastBatch] = {};
  struct iovec writes[kFastBatch] = {};
  Misses fromTun;
  Misses fromUdp;

  uint8_t* Slot(size_t i) { return area.data() + kFastHeadroom + i * kFastSlot; }
};

// The addon's constructors, to check what linkFastPath is given.
struct AddonData {
  Napi::FunctionReference udp;
};

class Tun;
class Udp;

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
    static_cast<T*>(this)->Closing();
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
    // The fast path forwards what it can in C; JavaScript is called only for what it could not.
    if (status >= 0 && static_cast<T*>(this)->FastPass(env)) return;
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
                           InstanceMethod<&Tun::LinkFastPath>("linkFastPath"),
                           InstanceMethod<&Tun::InstallFlow>("installFlow"),
                           InstanceMethod<&Tun::ForgetAddress>("forgetAddress"),
                           InstanceMethod<&Tun::ForgetFlow>("forgetFlow"),
                           InstanceMethod<&Tun::ForgetAllFlows>("forgetAllFlows"),
                           InstanceMethod<&Tun::FlowActivity>("flowActivity"),
                           InstanceMethod<&Tun::FastPathStats>("fastPathStats"),
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

 ~Tun() override;

  // Called by Pollable: a poll event forwarded in C; true when nothing is left for JavaScript.
  bool FastPass(Napi::Env env);
  void Closing() { Unlink(); }

 private:
  friend class Udp;

  // The fast path, when linked to a UDP endpoint (which keeps a pointer back here).
  std::unique_ptr<FastPath> fast_;
  Udp* fastUdp_ = nullptr;
  Napi::ObjectReference fastUdpRef_;

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
    if (fast_) return Napi::Number::New(env, static_cast<double>(ReadMisses(env, buffer.data, slotSize, out, max)));
    return Napi::Number::New(env, static_cast<double>(ReadPackets(env, fd, buffer.data, slotSize, out, max)));
  }

  // Up to `max` packets into slots; a short count means the device is empty.
  size_t ReadPackets(Napi::Env env, int fd, uint8_t* slots, int64_t slotSize, int32_t* out, size_t max) {
    if (offload_) return ReadOffload(env, fd, slots, slotSize, out, max);
    size_t count = 0;
    size_t dropped = 0;
    while (count < max) {
      struct iovec iov[2] = {{slots + count * slotSize, static_cast<size_t>(slotSize)},
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
    return count;
  }

  // Fast path: the packets the slow path must see, into the caller's slots: those a poll callback queued, then
  // more from the device (packets of cached flows are forwarded on the way).
  size_t ReadMisses(Napi::Env env, uint8_t* slots, int64_t slotSize, int32_t* lengths, size_t max) {
    Misses& queued = fast_->fromTun;
    size_t count = 0;
    while (queued.Pending() && count < max) {
      size_t i = queued.taken++;
      size_t length = static_cast<size_t>(queued.lengths[i]);
      if (length > static_cast<size_t>(slotSize)) {
        oversized_++;
        continue;
      }
      std::memcpy(slots + count * slotSize, queued.data.data() + i * kFastSlot, length);
      lengths[count++] = queued.lengths[i];
    }
    if (!queued.Pending()) queued.Clear();
    if (count == max) return count;
    Sink sink{slots + count * slotSize, slotSize, lengths + count, nullptr, nullptr, nullptr};
    bool drained = false;
    return count + ForwardOut(env, sink, max - count, SIZE_MAX, &drained);
  }

  // Declared here, defined after Udp (it sends through it).
  size_t ForwardOut(Napi::Env env, const Sink& sink, size_t max, size_t rounds, bool* drained);
  void Unlink();

  // linkFastPath(udp, capacity): forwards cached flows between this device and `udp` in C from now on (a
  // flow cache of `capacity` entries); linkFastPath(null) stops it.
  Napi::Value LinkFastPath(const Napi::CallbackInfo& info);

  edge_fastpath::FlowCache& Cache(Napi::Env env) {
    if (!fast_) throw Napi::Error::New(env, "the fast path is not linked (call linkFastPath)");
    return fast_->cache;
  }

  static edge_fastpath::FlowKey KeyArgs(const Napi::CallbackInfo& info, size_t first) {
    edge_fastpath::FlowKey key;
    key.direction = static_cast<uint8_t>(IntegerArg(info, first, "direction", 0, 1));
    key.protocol = static_cast<uint8_t>(IntegerArg(info, first + 1, "protocol", 1, 255));
    key.src = static_cast<uint32_t>(IntegerArg(info, first + 2, "src", 0, UINT32_MAX));
    key.srcPort = static_cast<uint16_t>(IntegerArg(info, first + 3, "srcPort", 0, 65535));
    key.dst = static_cast<uint32_t>(IntegerArg(info, first + 4, "dst", 0, UINT32_MAX));
    key.dstPort = static_cast<uint16_t>(IntegerArg(info, first + 5, "dstPort", 0, 65535));
    return key;
  }

  // installFlow(direction, protocol, src, srcPort, dst, dstPort, newSrc, newDst, slot, peerIp, peerPort, dep0,
  // dep1, dep2): direction 0 (from the TUN): rewrite and send, sealed for peer `slot` or (slot -1) as it is to
  // peerIp:peerPort; 1 (from a peer): rewrite and write into the TUN when it came from peer `slot` (or, slot -1,
  // from peerIp:peerPort). dep0..2: the overlay addresses the decision read (0: none).
  Napi::Value InstallFlow(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    edge_fastpath::FlowEntry entry;
    entry.key = KeyArgs(info, 0);
    entry.newSrc = static_cast<uint32_t>(IntegerArg(info, 6, "newSrc", 0, UINT32_MAX));
    entry.newDst = static_cast<uint32_t>(IntegerArg(info, 7, "newDst", 0, UINT32_MAX));
    entry.slot = static_cast<int32_t>(IntegerArg(info, 8, "slot", -1, (1 << 20) - 1));
    entry.peerIp = static_cast<uint32_t>(IntegerArg(info, 9, "peerIp", 0, UINT32_MAX));
    entry.peerPort = static_cast<uint16_t>(IntegerArg(info, 10, "peerPort", 0, 65535));
    for (int i = 0; i < edge_fastpath::kDependencies; i++)
      entry.dependencies[i] = static_cast<uint32_t>(IntegerArg(info, 11 + i, "dependency", 0, UINT32_MAX));
    entry.action = entry.key.direction == edge_fastpath::kArriving ? edge_fastpath::kDeliver
                   : entry.slot >= 0                                ? edge_fastpath::kSeal
                                                                    : edge_fastpath::kSend;
    Cache(env).Install(entry);
    return env.Undefined();
  }

  // forgetAddress(ip): forgets every flow whose decision read this overlay address; returns how many.
  Napi::Value ForgetAddress(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    uint32_t address = static_cast<uint32_t>(IntegerArg(info, 0, "address", 0, UINT32_MAX));
    return Napi::Number::New(env, static_cast<double>(Cache(env).ForgetAddress(address)));
  }

  // forgetFlow(direction, protocol, src, srcPort, dst, dstPort): true when there was such an entry.
  Napi::Value ForgetFlow(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    edge_fastpath::FlowKey key = KeyArgs(info, 0);
    return Napi::Boolean::New(env, Cache(env).ForgetFlow(key));
  }

  Napi::Value ForgetAllFlows(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return Napi::Number::New(env, static_cast<double>(Cache(env).ForgetAll()));
  }

  // flowActivity(out: Uint32Array): the flows hit since the last call, 8 numbers each: direction << 8 | protocol,
  // src, dst, srcPort << 16 | dstPort, newSrc, newDst, slot (0xffffffff: none), 0. Returns how many (at most
  // 1024 per call: call again while it fills `out`).
  Napi::Value FlowActivity(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Uint32Array out = Uint32Arg(info, 0, "out");
    edge_fastpath::FlowCache& cache = Cache(env);
    size_t max = std::min(out.ElementLength() / 8, fast_->activity.size());
    size_t count = cache.TakeActivity(fast_->activity.data(), max);
    uint32_t* record = out.Data();
    for (size_t i = 0; i < count; i++, record += 8) {
      const edge_fastpath::FlowEntry& entry = fast_->activity[i];
      record[0] = static_cast<uint32_t>(entry.key.direction) << 8 | entry.key.protocol;
      record[1] = entry.key.src;
      record[2] = entry.key.dst;
      record[3] = static_cast<uint32_t>(entry.key.srcPort) << 16 | entry.key.dstPort;
      record[4] = entry.newSrc;
      record[5] = entry.newDst;
      record[6] = static_cast<uint32_t>(entry.slot);
      record[7] = 0;
    }
    return Napi::Number::New(env, static_cast<double>(count));
  }

  Napi::Value FastPathStats(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!fast_) return env.Null();
    edge_fastpath::FlowCache& cache = fast_->cache;
    const edge_fastpath::Counters& c = cache.counters();
    Napi::Object stats = Napi::Object::New(env);
    stats.Set("flows", static_cast<double>(cache.size()));
    stats.Set("capacity", static_cast<double>(cache.capacity()));
    stats.Set("hitsOut", static_cast<double>(c.hitsOut));
    stats.Set("hitsIn", static_cast<double>(c.hitsIn));
    stats.Set("misses", static_cast<double>(c.misses));
    stats.Set("ineligible", static_cast<double>(c.ineligible));
    stats.Set("installed", static_cast<double>(c.installed));
    stats.Set("replaced", static_cast<double>(c.replaced));
    stats.Set("forgotten", static_cast<double>(c.forgotten));
    return stats;
  }

  // Offload: whole packets as the kernel hands them over (virtio_net_hdr in front); super-packets are cut into
  // segments straight into the slots, partial checksums completed. What does not fit waits for the next call.
  size_t ReadOffload(Napi::Env env, int fd, uint8_t* slots, int64_t slotSize, int32_t* out, size_t max) {
    size_t count = 0;
    size_t dropped = 0;
    while (count < max) {
      uint8_t* slot = slots + count * slotSize;
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
    return Napi::Number::New(env, static_cast<double>(WritePackets(fd, count)));
  }

  // Writes packets_[0..count): glued where offloads allow; returns how many the kernel took.
  size_t WritePackets(int fd, size_t count) {
    if (offload_) return WriteGlued(fd, count);
    size_t written = 0;
    for (size_t i = 0; i < count; i++)
      if (WriteOne(fd, static_cast<const uint8_t*>(packets_[i].iov_base), packets_[i].iov_len)) written++;
    return written;
  }

  // Fast path: packets from peers, rewritten, into the device.
  void WriteFast(const struct iovec* packets, size_t count) {
    if (fd_ < 0) return;
    if (packets_.size() < count) packets_.resize(count);
    std::copy(packets, packets + count, packets_.begin());
    WritePackets(fd_, count);
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

 ~Udp() override {
    if (fastTun_ != nullptr) fastTun_->fastUdp_ = nullptr;
  }

  // Called by Pollable: a poll event forwarded in C; true when nothing is left for JavaScript.
  bool FastPass(Napi::Env env);
  void Closing();

 private:
  friend class Tun;

  // The TUN device whose fast path this endpoint is linked to (it owns the flow cache).
  Tun* fastTun_ = nullptr;
  Napi::ObjectReference fastTunRef_;

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
    if (fastTun_ != nullptr && !secure_) {
      Sink sink{buffer.data, slotSize, lengths.Data(), addresses.Data(), ports.Data(), nullptr};
      return Napi::Number::New(env, static_cast<double>(ReceiveMisses(env, sink, max)));
    }
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
    if (on == static_cast<bool>(secure_)) return info.Env().Undefined();
    if (on)
      secure_.reset(new edge_secure::Channel());
    else
      secure_.reset();
    // What the fast path cached or queued was for the other mode.
    if (fastTun_ != nullptr) {
      fastTun_->fast_->cache.ForgetAll();
      fastTun_->fast_->fromUdp.Clear();
    }
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
    int slot = static_cast<int>(IntegerArg(info, 0, "slot", 0, (1 << 20) - 1));
    Channel(env).RemovePeer(slot);
    if (fastTun_ != nullptr) fastTun_->fast_->cache.ForgetSlot(slot);
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
    if (fastTun_ != nullptr) {
      Sink sink{buffer.data, slotSize, outLengths, outAddresses, outPorts, outPeers};
      return Napi::Number::New(env, static_cast<double>(ReceiveMisses(env, sink, max)));
    }
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

  // --- the fast path (fastpath.h) ---

  // Bytes of a slow-path datagram in its slot: handshake messages and unencrypted packets as received, opened
  // data with the 16-byte header in front.
  size_t MissBytes(int32_t length, int32_t tag) const {
    return static_cast<size_t>(length) + (secure_ && tag != -1 ? edge_secure::kHeaderBytes : 0);
  }

  // Fast path: the datagrams the slow path must see, into the caller's slots as recvBatch (or, encrypted,
  // recvOpen) puts them: those a poll callback queued, then more from the socket (packets of cached flows are
  // written into the TUN on the way).
  size_t ReceiveMisses(Napi::Env env, const Sink& sink, size_t max) {
    Misses& queued = fastTun_->fast_->fromUdp;
    size_t count = 0;
    while (queued.Pending() && count < max) {
      size_t i = queued.taken++;
      size_t bytes = MissBytes(queued.lengths[i], queued.tags[i]);
      if (bytes > static_cast<size_t>(sink.slotSize)) {
        truncated_++;
        continue;
      }
      std::memcpy(sink.data + count * sink.slotSize, queued.data.data() + i * kFastSlot, bytes);
      sink.lengths[count] = queued.lengths[i];
      sink.addresses[count] = queued.addresses[i];
      sink.ports[count] = queued.ports[i];
      if (sink.tags != nullptr) sink.tags[count] = queued.tags[i];
      count++;
    }
    if (!queued.Pending()) queued.Clear();
    if (count == max) return count;
    Sink rest{sink.data + count * sink.slotSize,
              sink.slotSize,
              sink.lengths + count,
              sink.addresses + count,
              sink.ports + count,
              sink.tags != nullptr ? sink.tags + count : nullptr};
    bool drained = false;
    return count + ForwardIn(env, rest, max - count, SIZE_MAX, &drained);
  }

  // Receives (and, encrypted, opens) datagrams; packets of cached flows from the peer the flow expects are
  // rewritten and written into the TUN, the rest go to `sink` for the slow path. Stops after `max` of those, after
  // `rounds` batches, or when the socket is empty (*drained). Returns how many went to the sink.
  size_t ForwardIn(Napi::Env env, const Sink& sink, size_t max, size_t rounds, bool* drained) {
    FastPath& fast = *fastTun_->fast_;
    edge_fastpath::Counters& counters = fast.cache.counters();
    int fd = OpenFd(env, kKind);
    int64_t now = MonotonicMs();
    size_t misses = 0;
    for (size_t round = 0; misses < max && round < rounds; round++) {
      size_t want = std::min(kFastBatch, max - misses);
      bool empty = false;
      size_t got =
          Receive(env, fd, fast.Slot(0), kFastSlot, want, fast.lengths, fast.addresses, fast.ports, &empty);
      size_t writes = 0;
      for (size_t i = 0; i < got; i++) {
        uint8_t* datagram = fast.Slot(i);
        size_t length = static_cast<size_t>(fast.lengths[i]);
        uint32_t ip = fast.addresses[i];
        uint16_t port = fast.ports[i];
        uint8_t* packet = datagram;
        int32_t tag = 0;
        int slot = -1;
        bool eligible = true;
        if (secure_) {
          bool promoted = false;
          edge_secure::Opened opened = secure_->Open(datagram, &length, ip, port, now, &slot, &promoted);
          if (opened == edge_secure::Opened::kDropped) continue;
          if (opened == edge_secure::Opened::kKeepalive && !promoted) continue;
          tag = opened == edge_secure::Opened::kHandshake ? -1 : (slot | (promoted ? kPromoted : 0));
          packet = datagram + edge_secure::kHeaderBytes;
          // Handshakes, keepalives and promotions are the slow path's business.
          eligible = opened == edge_secure::Opened::kData && !promoted;
        }
        edge_fastpath::FlowKey key;
        edge_fastpath::FlowEntry* entry = nullptr;
        if (eligible && edge_fastpath::ParseFlow(packet, length, edge_fastpath::kArriving, &key)) {
          entry = fast.cache.Lookup(key);
          bool fromExpected = entry != nullptr && (secure_ ? entry->slot == slot
                                                           : entry->slot < 0 && entry->peerIp == ip &&
                                                                 entry->peerPort == port);
          if (!fromExpected) entry = nullptr;
          if (entry == nullptr) counters.misses++;
        } else if (eligible) {
          counters.ineligible++;
        }
        if (entry != nullptr) {
          edge_fastpath::Rewrite(packet, *entry);
          fast.writes[writes++] = {packet, length};
          counters.hitsIn++;
          continue;
        }
        size_t bytes = MissBytes(static_cast<int32_t>(length), tag);
        if (bytes > static_cast<size_t>(sink.slotSize)) {
          truncated_++;
          continue;
        }
        std::memcpy(sink.data + misses * sink.slotSize, datagram, bytes);
        sink.lengths[misses] = static_cast<int32_t>(length);
        sink.addresses[misses] = ip;
        sink.ports[misses] = port;
        if (sink.tags != nullptr) sink.tags[misses] = tag;
        misses++;
      }
      if (writes > 0) fastTun_->WriteFast(fast.writes, writes);
      if (empty || got == 0) {
        *drained = true;
        break;
      }
    }
    return misses;
  }

  // Whether a cached outgoing flow can be sent now: sealed needs the peer's session (else the slow path stages
  // the packet and starts a handshake); as it is, only while the overlay is unencrypted.
  bool Sendable(const edge_fastpath::FlowEntry& entry, int64_t now) {
    if (entry.action == edge_fastpath::kSeal) return secure_ && secure_->CanSeal(entry.slot, now);
    return entry.action == edge_fastpath::kSend && !secure_;
  }

  // Sends rewritten packets of cached flows (sealing those for encrypted peers in place) with one sendmmsg.
  void SendFast(Napi::Env env, const FastSend* sends, size_t count, int64_t now) {
    int fd = OpenFd(env, kKind);
    Reserve(count);
    size_t ready = 0;
    for (size_t i = 0; i < count; i++) {
      const FastSend& send = sends[i];
      uint32_t ip = send.ip;
      uint16_t port = send.port;
      if (send.slot >= 0) {
        size_t before = secure_ ? secure_->Seal(send.slot, send.packet, send.length, now, &ip, &port) : 0;
        if (before == 0) continue;
        iovs_[ready] = {send.packet - before, before + send.length + edge_secure::kTagBytes};
      } else {
        iovs_[ready] = {send.packet, send.length};
      }
      struct sockaddr_in& sin = addrs_[ready];
      std::memset(&sin, 0, sizeof sin);
      sin.sin_family = AF_INET;
      sin.sin_addr.s_addr = htonl(ip);
      sin.sin_port = htons(port);
      ready++;
    }
    Transmit(env, fd, BuildMessages(ready));
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

// ---- the fast path between the two ----

Tun::~Tun() {
  if (fastUdp_ != nullptr) fastUdp_->fastTun_ = nullptr;
}

void Udp::Closing() {
  if (fastTun_ != nullptr) fastTun_->Unlink();
}

void Tun::Unlink() {
  if (fastUdp_ != nullptr) {
    fastUdp_->fastTun_ = nullptr;
    fastUdp_->fastTunRef_.Reset();
  }
  fastUdp_ = nullptr;
  fastUdpRef_.Reset();
  fast_.reset();
}

Napi::Value Tun::LinkFastPath(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Unlink();
  if (info[0].IsNull() || info[0].IsUndefined()) return env.Undefined();
  AddonData* data = env.GetInstanceData<AddonData>();
  if (!info[0].IsObject() || data == nullptr || !info[0].As<Napi::Object>().InstanceOf(data->udp.Value()))
    throw Napi::TypeError::New(env, "linkFastPath takes a Udp endpoint (or null)");
  size_t capacity = static_cast<size_t>(IntegerArg(info, 1, "capacity", 4, 1 << 20));
  OpenFd(env, kKind);
  Napi::Object object = info[0].As<Napi::Object>();
  Udp* udp = Napi::ObjectWrap<Udp>::Unwrap(object);
  udp->OpenFd(env, Udp::kKind);
  if (udp->fastTun_ != nullptr) udp->fastTun_->Unlink();
  fast_.reset(new FastPath(capacity));
  fastUdp_ = udp;
  fastUdpRef_ = Napi::Persistent(object);
  udp->fastTun_ = this;
  udp->fastTunRef_ = Napi::Persistent(this->Value());
  return env.Undefined();
}

size_t Tun::ForwardOut(Napi::Env env, const Sink& sink, size_t max, size_t rounds, bool* drained) {
  FastPath& fast = *fast_;
  edge_fastpath::Counters& counters = fast.cache.counters();
  int fd = OpenFd(env, kKind);
  int64_t now = MonotonicMs();
  size_t misses = 0;
  for (size_t round = 0; misses < max && round < rounds; round++) {
    size_t want = std::min(kFastBatch, max - misses);
    size_t n = ReadPackets(env, fd, fast.Slot(0), kFastSlot, fast.lengths, want);
    size_t sends = 0;
    for (size_t i = 0; i < n; i++) {
      uint8_t* packet = fast.Slot(i);
      size_t length = static_cast<size_t>(fast.lengths[i]);
      edge_fastpath::FlowKey key;
      edge_fastpath::FlowEntry* entry = nullptr;
      if (length <= kFastMaxPacket && edge_fastpath::ParseFlow(packet, length, edge_fastpath::kOutgoing, &key)) {
        entry = fast.cache.Lookup(key);
        if (entry != nullptr && (fastUdp_ == nullptr || !fastUdp_->Sendable(*entry, now))) entry = nullptr;
        if (entry == nullptr) counters.misses++;
      } else {
        counters.ineligible++;
      }
      if (entry != nullptr) {
        edge_fastpath::Rewrite(packet, *entry);
        fast.sends[sends++] = {packet, length, entry->action == edge_fastpath::kSeal ? entry->slot : -1,
                               entry->peerIp, entry->peerPort};
        counters.hitsOut++;
        continue;
      }
      if (length > static_cast<size_t>(sink.slotSize)) {
        oversized_++;
        continue;
      }
      std::memcpy(sink.data + misses * sink.slotSize, packet, length);
      sink.lengths[misses++] = static_cast<int32_t>(length);
    }
    if (sends > 0) fastUdp_->SendFast(env, fast.sends, sends, now);
    if (n < want) {
      *drained = true;
      break;
    }
  }
  return misses;
}

bool Tun::FastPass(Napi::Env env) {
  if (!fast_ || fd_ < 0) return false;
  Misses& queued = fast_->fromTun;
  if (queued.Pending()) return false;  // JavaScript has yet to take these
  queued.Clear();
  bool drained = false;
  try {
    queued.count = ForwardOut(env, queued.AsSink(), kFastBatch, kFastRoundsPerPoll, &drained);
  } catch (const Napi::Error&) {
    return false;  // readBatch meets the error again, and reports it
  }
  // The rest of a super-packet waits in the addon, where no poll event reminds of it.
  if (!drained && !segmenter_.Done()) return false;
  return queued.count == 0;
}

bool Udp::FastPass(Napi::Env env) {
  if (fastTun_ == nullptr || fd_ < 0) return false;
  Misses& queued = fastTun_->fast_->fromUdp;
  if (queued.Pending()) return false;
  queued.Clear();
  bool drained = false;
  try {
    queued.count = ForwardIn(env, queued.AsSink(), kFastBatch, kFastRoundsPerPoll, &drained);
  } catch (const Napi::Error&) {
    return false;
  }
  // The rest of a coalesced datagram waits in the addon, where no poll event reminds of it.
  if (!drained && rx_.Pending()) return false;
  return queued.count == 0;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  Napi::Function udp = Udp::Init(env);
  auto* data = new AddonData();
  data->udp = Napi::Persistent(udp);
  env.SetInstanceData<AddonData>(data);
  exports.Set("Tun", Tun::Init(env));
  exports.Set("Udp", udp);
  return exports;
}

}  // namespace

NODE_API_MODULE(edge_tun, Init)
