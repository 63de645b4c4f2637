// TCP/IPv4 segmentation and coalescing for a TUN device with IFF_VNET_HDR (TUN_F_CSUM | TUN_F_TSO4).
//
// With offloads on, the kernel hands the TUN reader TCP super-packets of up to 64 KiB (one virtio_net_hdr in
// front, checksum left partial) and takes such super-packets back on write. The net manager's data plane works on
// ordinary MTU-sized packets, so the addon cuts super-packets read from the TUN into segments (as the kernel's TSO
// would) and glues consecutive segments of one TCP flow back into a super-packet before writing (as GRO would).
// Everything here works on plain byte buffers; nothing here calls into Node.

#pragma once

#include <cstddef>
#include <cstdint>

namespace edge_offload {

// struct virtio_net_hdr of <linux/virtio_net.h>, which C++ cannot include (a member is named `class`).
// Fields in the host's byte order (legacy virtio, as TUN uses unless TUNSETVNETBE/LE say otherwise).
struct VnetHdr {
  uint8_t flags;
  uint8_t gsoType;
  uint16_t hdrLen;
  uint16_t gsoSize;
  uint16_t csumStart;
  uint16_t csumOffset;
};
constexpr size_t kVnetHdrLen = 10;
static_assert(sizeof(VnetHdr) == kVnetHdrLen, "virtio_net_hdr is 10 bytes");
constexpr uint8_t kVnetNeedsCsum = 1;  // VIRTIO_NET_HDR_F_NEEDS_CSUM
constexpr uint8_t kGsoNone = 0;        // VIRTIO_NET_HDR_GSO_NONE
constexpr uint8_t kGsoTcpV4 = 1;       // VIRTIO_NET_HDR_GSO_TCPV4
constexpr uint8_t kGsoEcn = 0x80;      // VIRTIO_NET_HDR_GSO_ECN

constexpr size_t kMaxCoalesced = 64;  // segments glued into one super-packet at most

// Ones'-complement sum of `length` bytes in network order, read as native 16-bit words (the classic trick: the
// folded result can be stored back with memcpy as is). Not folded, not inverted.
uint64_t Sum(const uint8_t* data, size_t length, uint64_t sum = 0);
// Folds a Sum() to 16 bits (not inverted).
uint16_t Fold(uint64_t sum);

// Fills in a checksum the kernel left partial (VIRTIO_NET_HDR_F_NEEDS_CSUM): the field at start + offset holds
// the pseudo-header sum; the checksum covers [start, length). False when start/offset do not fit the packet.
bool CompleteChecksum(uint8_t* packet, size_t length, size_t start, size_t offset);

// Cuts one TCP/IPv4 super-packet into segments of at most `mss` payload bytes: headers copied, IP total length,
// ID (+1 per segment) and checksum, TCP sequence number, flags (FIN/PSH on the last only, CWR on the first only)
// and a full TCP checksum per segment. The super-packet must stay in place until Done().
class TcpSegmenter {
 public:
  // False (and Done()) when the packet is not TCP/IPv4 with a payload, or mss is 0.
  bool Start(const uint8_t* packet, size_t length, uint16_t mss);
  bool Done() const { return packet_ == nullptr || offset_ >= length_; }
  // The length of the segment Next() writes.
  size_t NextLength() const;
  // Writes the next segment to `out` (room for NextLength() bytes); returns its length.
  size_t Next(uint8_t* out);
  void Abandon() { packet_ = nullptr; }

 private:
  const uint8_t* packet_ = nullptr;
  size_t length_ = 0;
  size_t ipHeaderLen_ = 0;
  size_t headerLen_ = 0;  // IP + TCP headers
  size_t offset_ = 0;     // of the next payload byte in the packet
  size_t mss_ = 0;
  uint32_t seq_ = 0;
  uint16_t id_ = 0;
  uint8_t flags_ = 0;
  uint32_t index_ = 0;
};

// A TCP/IPv4 segment that may be glued to its neighbours: no IP options, not a fragment, only ACK (and PSH),
// a payload, lengths that agree with the buffer.
struct TcpSegment {
  const uint8_t* packet;
  size_t length;
  size_t headerLen;  // 20 + TCP header
  size_t payload;
  uint32_t seq;
  bool push;
};

// False when the packet cannot take part in coalescing (it is then written on its own).
bool ParseTcpSegment(const uint8_t* packet, size_t length, TcpSegment* out);

// Whether two segments belong to one TCP flow (addresses and ports alike).
bool SameFlow(const TcpSegment& a, const TcpSegment& b);

// Whether `next` continues the run whose first segment is `first` and last is `last` (same flow, headers alike,
// sequence numbers back to back, every segment but the last exactly as long as the first; under 64 KiB).
bool Continues(const TcpSegment& first, const TcpSegment& last, size_t runPayload, size_t runCount,
               const TcpSegment& next);

// Writes the IP + TCP headers (first.headerLen bytes) and the virtio_net_hdr of a run glued into one super-packet:
// total length, IP checksum, PSH of the last segment, the TCP checksum left partial for the kernel.
void BuildRunHeaders(const TcpSegment& first, size_t runPayload, bool push, uint8_t* headers,
                     uint8_t* vnetHdr);

}  // namespace edge_offload
