// The overlay's fast path: a cache of flows whose rewrite the TypeScript translator (the slow path) has decided,
// so that their later packets are rewritten (and sent, or written into the TUN) in C without JavaScript.
//
// The translator stays the only place where decisions are made (routes, service balancing, who may send what).
// When it has translated a packet of an ordinary flow (TCP, UDP or ICMP echo; no fragment, no ICMP error), the
// forwarder installs what it did: for a packet read from the TUN, the new source and destination and where it
// went (a peer's session, or a peer's endpoint); for a packet from a peer, the new source and who must have sent
// it (the peer the source instance runs on). A packet that hits an entry gets exactly that rewrite; anything else
// (a miss, a sender that does not match, a peer without a usable session) goes to the slow path untouched.
//
// Entries never expire by time: each names the overlay addresses its decision read (the local namespace IP, the
// destination or source, the instance a service flow chose), and the TypeScript side forgets every entry naming
// an address whose answer changed (a route table, an attachment, a service flow). Entries through a peer slot go
// when the peer does. The cache is bounded: buckets of kWays entries, the least recently hit one replaced.
//
// Hits are remembered per entry until `TakeActivity` hands them to the slow path, which refreshes what its own
// timers read (flows, route tables and peers in use), so nothing a running flow needs is expired under it.

#ifndef EDGE_FASTPATH_H_
#define EDGE_FASTPATH_H_

#include <cstddef>
#include <cstdint>
#include <vector>

namespace edge_fastpath {

enum Direction : uint8_t { kOutgoing = 0, kArriving = 1 };

// What a hit does with the packet once rewritten.
enum Action : uint8_t {
  kSeal = 0,     // outgoing: seal for the peer in `slot` and send (encrypted overlay)
  kSend = 1,     // outgoing: send as it is to peerIp:peerPort (unencrypted overlay)
  kDeliver = 2,  // arriving: write into the TUN, if it came from `slot` (encrypted) or peerIp:peerPort
};

// A flow as the packet shows it before its rewrite; ICMP echo uses its identifier as both ports.
struct FlowKey {
  uint32_t src = 0;  // host order
  uint32_t dst = 0;
  uint16_t srcPort = 0;
  uint16_t dstPort = 0;
  uint8_t protocol = 0;
  uint8_t direction = 0;

  bool operator==(const FlowKey& o) const {
    return src == o.src && dst == o.dst && srcPort == o.srcPort && dstPort == o.dstPort &&
           protocol == o.protocol && direction == o.direction;
  }
};

constexpr int kDependencies = 3;

struct FlowEntry {
  bool used = false;
  bool active = false;  // hit since the last TakeActivity
  uint8_t action = kSend;
  FlowKey key;
  uint32_t newSrc = 0;
  uint32_t newDst = 0;
  uint32_t checksumDelta = 0;  // RFC 1624: the sum of ~old and new address words, folded
  int32_t slot = -1;
  uint32_t peerIp = 0;
  uint16_t peerPort = 0;
  uint32_t dependencies[kDependencies] = {};  // overlay addresses; 0: none
  uint64_t lastHit = 0;                       // a tick of the cache's own clock (for replacement)
};

struct Counters {
  uint64_t hitsOut = 0;
  uint64_t hitsIn = 0;
  uint64_t misses = 0;       // eligible packets with no entry (or a sender that does not match)
  uint64_t ineligible = 0;   // fragments, ICMP errors, other protocols, bad headers: always the slow path
  uint64_t installed = 0;
  uint64_t replaced = 0;     // entries pushed out of a full bucket
  uint64_t forgotten = 0;    // entries dropped because what they were decided from changed
};

// Reads the flow of an IPv4 packet the fast path may handle: exact total length, a valid header checksum, not a
// fragment, TCP, UDP or ICMP echo with its header complete. False: the slow path decides.
bool ParseFlow(const uint8_t* packet, size_t length, uint8_t direction, FlowKey* key);

// Applies the entry's rewrite to a packet ParseFlow accepted: addresses, IP checksum, TCP/UDP checksum.
void Rewrite(uint8_t* packet, const FlowEntry& entry);

class FlowCache {
 public:
  static constexpr size_t kWays = 4;

  // `capacity` entries at most (rounded up to a power of two, at least kWays).
  explicit FlowCache(size_t capacity);

  // The entry for the key, or nullptr. A hit is counted and remembered for TakeActivity.
  FlowEntry* Lookup(const FlowKey& key);

  // Installs (or replaces) the entry for `entry.key`; the checksum delta is computed here.
  void Install(FlowEntry entry);

  // Forgets entries naming `address` among their dependencies; returns how many.
  size_t ForgetAddress(uint32_t address);
  // Forgets the entry for this key; returns whether there was one.
  bool ForgetFlow(const FlowKey& key);
  // Forgets entries sending through, or expecting packets from, this peer slot.
  size_t ForgetSlot(int32_t slot);
  size_t ForgetAll();

  // Copies up to `max` entries hit since the last call into `out` and clears their mark; returns the count.
  size_t TakeActivity(FlowEntry* out, size_t max);

  size_t size() const { return size_; }
  size_t capacity() const { return entries_.size(); }
  Counters& counters() { return counters_; }

 private:
  std::vector<FlowEntry> entries_;
  size_t bucketMask_ = 0;
  size_t size_ = 0;
  uint64_t tick_ = 0;
  Counters counters_;

  FlowEntry* Bucket(const FlowKey& key);
  void Drop(FlowEntry* entry);
};

}  // namespace edge_fastpath

#endif  // EDGE_FASTPATH_H_
