// See offload.h.

#include "offload.h"

#include "bytes.h"

#include <cstring>

namespace edge_offload {

namespace {

constexpr uint8_t kProtoTcp = 6;
constexpr uint8_t kFin = 0x01;
constexpr uint8_t kPsh = 0x08;
constexpr uint8_t kAck = 0x10;
constexpr uint8_t kCwr = 0x80;
constexpr size_t kMaxIpPacket = 65535;

using edge_bytes::Load16;
using edge_bytes::Load32;
using edge_bytes::Store16;
using edge_bytes::Store32;

// A folded sum stored as is: Sum() works on native words of network-order bytes.
void StoreNative16(uint8_t* at, uint16_t value) {
  std::memcpy(at, &value, 2);
}

// Sum of the TCP/UDP pseudo-header: addresses (from the IP header), protocol, `l4Length`.
uint64_t PseudoHeaderSum(const uint8_t* ipHeader, uint8_t protocol, size_t l4Length) {
  uint8_t pseudo[12];
  std::memcpy(pseudo, ipHeader + 12, 8);
  pseudo[8] = 0;
  pseudo[9] = protocol;
  Store16(pseudo + 10, static_cast<uint16_t>(l4Length));
  return Sum(pseudo, sizeof pseudo);
}

void FillIpChecksum(uint8_t* ipHeader, size_t headerLen) {
  std::memset(ipHeader + 10, 0, 2);
  StoreNative16(ipHeader + 10, static_cast<uint16_t>(~Fold(Sum(ipHeader, headerLen))));
}

}  // namespace

uint64_t Sum(const uint8_t* data, size_t length, uint64_t sum) {
  // 32-bit native loads into a 64-bit accumulator: no carry is lost for any packet this side of 16 GiB.
  while (length >= 4) {
    uint32_t word;
    std::memcpy(&word, data, 4);
    sum += word;
    data += 4;
    length -= 4;
  }
  if (length >= 2) {
    uint16_t half;
    std::memcpy(&half, data, 2);
    sum += half;
    data += 2;
    length -= 2;
  }
  if (length == 1) {
    // The odd last byte is the high-order byte of a word padded with zero, in network order.
    uint8_t pad[2] = {data[0], 0};
    uint16_t half;
    std::memcpy(&half, pad, 2);
    sum += half;
  }
  return sum;
}

uint16_t Fold(uint64_t sum) {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(sum);
}

bool CompleteChecksum(uint8_t* packet, size_t length, size_t start, size_t offset) {
  if (start >= length || offset + 2 > length - start) return false;
  uint16_t checksum = static_cast<uint16_t>(~Fold(Sum(packet + start, length - start)));
  // 0 means "no checksum" for UDP; the kernel writes 0xffff instead for every protocol, as here.
  if (checksum == 0) checksum = 0xffff;
  StoreNative16(packet + start + offset, checksum);
  return true;
}

bool TcpSegmenter::Start(const uint8_t* packet, size_t length, uint16_t mss) {
  packet_ = nullptr;
  if (length < 40 || length > kMaxIpPacket || mss == 0 || packet[0] >> 4 != 4 || packet[9] != kProtoTcp)
    return false;
  size_t ipHeaderLen = static_cast<size_t>(packet[0] & 0x0f) * 4;
  if (ipHeaderLen < 20 || ipHeaderLen + 20 > length) return false;
  size_t tcpHeaderLen = static_cast<size_t>(packet[ipHeaderLen + 12] >> 4) * 4;
  if (tcpHeaderLen < 20 || ipHeaderLen + tcpHeaderLen >= length) return false;
  packet_ = packet;
  length_ = length;
  ipHeaderLen_ = ipHeaderLen;
  headerLen_ = ipHeaderLen + tcpHeaderLen;
  offset_ = headerLen_;
  mss_ = mss;
  seq_ = Load32(packet + ipHeaderLen + 4);
  id_ = Load16(packet + 4);
  flags_ = packet[ipHeaderLen + 13];
  index_ = 0;
  return true;
}

size_t TcpSegmenter::NextLength() const {
  if (Done()) return 0;
  size_t left = length_ - offset_;
  return headerLen_ + (left < mss_ ? left : mss_);
}

size_t TcpSegmenter::Next(uint8_t* out) {
  size_t segmentLen = NextLength();
  if (segmentLen == 0) return 0;
  size_t payload = segmentLen - headerLen_;
  bool first = index_ == 0;
  bool last = offset_ + payload >= length_;
  std::memcpy(out, packet_, headerLen_);
  std::memcpy(out + headerLen_, packet_ + offset_, payload);

  Store16(out + 2, static_cast<uint16_t>(segmentLen));
  Store16(out + 4, static_cast<uint16_t>(id_ + index_));
  FillIpChecksum(out, ipHeaderLen_);

  uint8_t* tcp = out + ipHeaderLen_;
  Store32(tcp + 4, seq_ + static_cast<uint32_t>(offset_ - headerLen_));
  uint8_t flags = flags_;
  if (!last) flags &= static_cast<uint8_t>(~(kFin | kPsh));
  if (!first) flags &= static_cast<uint8_t>(~kCwr);
  tcp[13] = flags;
  std::memset(tcp + 16, 0, 2);
  size_t tcpLen = segmentLen - ipHeaderLen_;
  uint64_t sum = Sum(tcp, tcpLen, PseudoHeaderSum(out, kProtoTcp, tcpLen));
  StoreNative16(tcp + 16, static_cast<uint16_t>(~Fold(sum)));

  offset_ += payload;
  index_++;
  if (Done()) packet_ = nullptr;
  return segmentLen;
}

bool ParseTcpSegment(const uint8_t* packet, size_t length, TcpSegment* out) {
  if (length < 40 || packet[0] != 0x45 || packet[9] != kProtoTcp) return false;
  if (Load16(packet + 2) != length) return false;
  if ((Load16(packet + 6) & 0x3fff) != 0) return false;  // a fragment (MF or an offset)
  size_t tcpHeaderLen = static_cast<size_t>(packet[20 + 12] >> 4) * 4;
  if (tcpHeaderLen < 20 || 20 + tcpHeaderLen >= length) return false;
  uint8_t flags = packet[20 + 13];
  if ((flags & kAck) == 0 || (flags & ~(kAck | kPsh)) != 0) return false;
  out->packet = packet;
  out->length = length;
  out->headerLen = 20 + tcpHeaderLen;
  out->payload = length - out->headerLen;
  out->seq = Load32(packet + 24);
  out->push = (flags & kPsh) != 0;
  return true;
}

bool SameFlow(const TcpSegment& a, const TcpSegment& b) {
  return std::memcmp(a.packet + 12, b.packet + 12, 8) == 0 && std::memcmp(a.packet + 20, b.packet + 20, 4) == 0;
}

bool Continues(const TcpSegment& first, const TcpSegment& last, size_t runPayload, size_t runCount,
               const TcpSegment& next) {
  if (runCount >= kMaxCoalesced || last.push || last.payload != first.payload) return false;
  if (next.payload > first.payload || next.headerLen != first.headerLen) return false;
  if (next.seq != last.seq + static_cast<uint32_t>(last.payload)) return false;
  if (first.headerLen + runPayload + next.payload > kMaxIpPacket) return false;
  if (!SameFlow(first, next)) return false;
  const uint8_t* a = first.packet;
  const uint8_t* b = next.packet;
  // IP: TOS, DF, TTL alike (ID and checksum may differ).
  if (a[1] != b[1] || a[6] != b[6] || a[8] != b[8]) return false;
  // TCP: acknowledgement, flags but PSH, window, urgent pointer and options alike (sequence and checksum differ).
  if (std::memcmp(a + 28, b + 28, 4) != 0) return false;
  if ((a[33] & ~kPsh) != (b[33] & ~kPsh) || std::memcmp(a + 34, b + 34, 2) != 0) return false;
  if (std::memcmp(a + 38, b + 38, 2) != 0) return false;
  return std::memcmp(a + 40, b + 40, first.headerLen - 40) == 0;
}

void BuildRunHeaders(const TcpSegment& first, size_t runPayload, bool push, uint8_t* headers,
                     uint8_t* vnetHdr) {
  std::memcpy(headers, first.packet, first.headerLen);
  size_t totalLen = first.headerLen + runPayload;
  Store16(headers + 2, static_cast<uint16_t>(totalLen));
  FillIpChecksum(headers, 20);
  uint8_t* tcp = headers + 20;
  if (push) tcp[13] |= kPsh;
  // Partial: the pseudo-header sum, not inverted; the kernel (or whoever segments it again) adds the rest.
  StoreNative16(tcp + 16, Fold(PseudoHeaderSum(headers, kProtoTcp, totalLen - 20)));

  VnetHdr hdr;
  hdr.flags = kVnetNeedsCsum;
  hdr.gsoType = kGsoTcpV4;
  hdr.hdrLen = static_cast<uint16_t>(first.headerLen);
  hdr.gsoSize = static_cast<uint16_t>(first.payload);
  hdr.csumStart = 20;
  hdr.csumOffset = 16;
  std::memcpy(vnetHdr, &hdr, kVnetHdrLen);
}

}  // namespace edge_offload
