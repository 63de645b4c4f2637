#include "fastpath.h"

#include "bytes.h"
#include "offload.h"

#include <cstring>

namespace edge_fastpath {

namespace {

constexpr uint8_t kTcp = 6;
constexpr uint8_t kUdp = 17;
constexpr uint8_t kIcmp = 1;
constexpr uint8_t kEchoReply = 0;
constexpr uint8_t kEchoRequest = 8;

using edge_bytes::Load16;
using edge_bytes::Load32;
using edge_bytes::Store16;
using edge_bytes::Store32;

using edge_offload::Fold;

uint32_t AddressDelta(uint32_t oldSrc, uint32_t oldDst, uint32_t newSrc, uint32_t newDst) {
  uint32_t sum = (~oldSrc >> 16 & 0xffff) + (~oldSrc & 0xffff) + (~oldDst >> 16 & 0xffff) + (~oldDst & 0xffff) +
                 (newSrc >> 16) + (newSrc & 0xffff) + (newDst >> 16) + (newDst & 0xffff);
  return Fold(sum);
}

// RFC 1624: HC' = ~(~HC + ~m + m'); returns the new checksum.
uint16_t Adjust(uint8_t* field, uint32_t delta) {
  uint16_t checksum = static_cast<uint16_t>(~Fold((~Load16(field) & 0xffffu) + delta) & 0xffff);
  Store16(field, checksum);
  return checksum;
}

size_t Hash(const FlowKey& key) {
  uint64_t h = (static_cast<uint64_t>(key.src) << 32 | key.dst) * 0x9e3779b97f4a7c15ull;
  h ^= (static_cast<uint64_t>(key.srcPort) << 24 | static_cast<uint64_t>(key.dstPort) << 8 | key.protocol) ^
       (static_cast<uint64_t>(key.direction) << 40);
  h *= 0xbf58476d1ce4e5b9ull;
  return static_cast<size_t>(h ^ (h >> 31));
}

}  // namespace

bool ParseFlow(const uint8_t* packet, size_t length, uint8_t direction, FlowKey* key) {
  if (length < 20 || packet[0] >> 4 != 4) return false;
  size_t headerLength = static_cast<size_t>(packet[0] & 0x0f) * 4;
  if (headerLength < 20 || Load16(packet + 2) != length || headerLength > length) return false;
  if ((Load16(packet + 6) & 0x3fff) != 0) return false;  // a fragment (more to come, or an offset)
  if (edge_offload::Fold(edge_offload::Sum(packet, headerLength)) != 0xffff) return false;
  const uint8_t* l4 = packet + headerLength;
  size_t l4Length = length - headerLength;
  uint8_t protocol = packet[9];
  if (protocol == kTcp) {
    if (l4Length < 20) return false;
    size_t dataOffset = static_cast<size_t>(l4[12] >> 4) * 4;
    if (dataOffset < 20 || dataOffset > l4Length) return false;
    key->srcPort = Load16(l4);
    key->dstPort = Load16(l4 + 2);
  } else if (protocol == kUdp) {
    if (l4Length < 8) return false;
    key->srcPort = Load16(l4);
    key->dstPort = Load16(l4 + 2);
  } else if (protocol == kIcmp) {
    if (l4Length < 8 || (l4[0] != kEchoRequest && l4[0] != kEchoReply)) return false;
    key->srcPort = key->dstPort = Load16(l4 + 4);
  } else {
    return false;
  }
  key->protocol = protocol;
  key->direction = direction;
  key->src = Load32(packet + 12);
  key->dst = Load32(packet + 16);
  return true;
}

void Rewrite(uint8_t* packet, const FlowEntry& entry) {
  if (entry.newSrc == entry.key.src && entry.newDst == entry.key.dst) return;
  Store32(packet + 12, entry.newSrc);
  Store32(packet + 16, entry.newDst);
  Adjust(packet + 10, entry.checksumDelta);
  uint8_t* l4 = packet + static_cast<size_t>(packet[0] & 0x0f) * 4;
  if (entry.key.protocol == kTcp) {
    Adjust(l4 + 16, entry.checksumDelta);
  } else if (entry.key.protocol == kUdp) {
    // 0 means "no checksum" and stays; a computed 0 is sent as 0xffff.
    if (Load16(l4 + 6) != 0 && Adjust(l4 + 6, entry.checksumDelta) == 0) Store16(l4 + 6, 0xffff);
  }
}

FlowCache::FlowCache(size_t capacity) {
  size_t entries = kWays;
  while (entries < capacity) entries *= 2;
  entries_.resize(entries);
  bucketMask_ = entries / kWays - 1;
}

FlowEntry* FlowCache::Bucket(const FlowKey& key) { return &entries_[(Hash(key) & bucketMask_) * kWays]; }

FlowEntry* FlowCache::Lookup(const FlowKey& key) {
  FlowEntry* bucket = Bucket(key);
  for (size_t way = 0; way < kWays; way++) {
    FlowEntry* entry = bucket + way;
    if (entry->used && entry->key == key) {
      entry->lastHit = ++tick_;
      entry->active = true;
      return entry;
    }
  }
  return nullptr;
}

void FlowCache::Install(FlowEntry entry) {
  FlowEntry* bucket = Bucket(entry.key);
  FlowEntry* target = nullptr;
  for (size_t way = 0; way < kWays && target == nullptr; way++)
    if (bucket[way].used && bucket[way].key == entry.key) target = bucket + way;
  for (size_t way = 0; way < kWays && target == nullptr; way++)
    if (!bucket[way].used) target = bucket + way;
  if (target == nullptr) {
    target = bucket;
    for (size_t way = 1; way < kWays; way++)
      if (bucket[way].lastHit < target->lastHit) target = bucket + way;
    counters_.replaced++;
    Drop(target);
  }
  if (!target->used) size_++;
  entry.used = true;
  entry.active = true;
  entry.lastHit = ++tick_;
  entry.checksumDelta = AddressDelta(entry.key.src, entry.key.dst, entry.newSrc, entry.newDst);
  *target = entry;
  counters_.installed++;
}

void FlowCache::Drop(FlowEntry* entry) {
  if (!entry->used) return;
  entry->used = false;
  entry->active = false;
  size_--;
}

size_t FlowCache::ForgetAddress(uint32_t address) {
  if (address == 0 || size_ == 0) return 0;
  size_t forgotten = 0;
  for (FlowEntry& entry : entries_) {
    if (!entry.used) continue;
    for (uint32_t dependency : entry.dependencies) {
      if (dependency == address) {
        Drop(&entry);
        forgotten++;
        break;
      }
    }
  }
  counters_.forgotten += forgotten;
  return forgotten;
}

bool FlowCache::ForgetFlow(const FlowKey& key) {
  FlowEntry* bucket = Bucket(key);
  for (size_t way = 0; way < kWays; way++) {
    if (bucket[way].used && bucket[way].key == key) {
      Drop(bucket + way);
      counters_.forgotten++;
      return true;
    }
  }
  return false;
}

size_t FlowCache::ForgetSlot(int32_t slot) {
  if (slot < 0 || size_ == 0) return 0;
  size_t forgotten = 0;
  for (FlowEntry& entry : entries_) {
    if (entry.used && entry.slot == slot) {
      Drop(&entry);
      forgotten++;
    }
  }
  counters_.forgotten += forgotten;
  return forgotten;
}

size_t FlowCache::ForgetAll() {
  size_t forgotten = size_;
  for (FlowEntry& entry : entries_) Drop(&entry);
  counters_.forgotten += forgotten;
  return forgotten;
}

size_t FlowCache::TakeActivity(FlowEntry* out, size_t max) {
  size_t taken = 0;
  for (FlowEntry& entry : entries_) {
    if (taken >= max) break;
    if (!entry.used || !entry.active) continue;
    entry.active = false;
    out[taken++] = entry;
  }
  return taken;
}

}  // namespace edge_fastpath
