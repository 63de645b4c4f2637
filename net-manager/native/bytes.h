// Big-endian (network order) loads and stores, for the packet code of the addon.
#ifndef EDGE_BYTES_H_
#define EDGE_BYTES_H_

#include <cstdint>

namespace edge_bytes {

inline uint16_t Load16(const uint8_t* at) { return static_cast<uint16_t>(at[0] << 8 | at[1]); }

inline uint32_t Load32(const uint8_t* at) {
  return static_cast<uint32_t>(at[0]) << 24 | static_cast<uint32_t>(at[1]) << 16 |
         static_cast<uint32_t>(at[2]) << 8 | at[3];
}

inline void Store16(uint8_t* at, uint16_t value) {
  at[0] = static_cast<uint8_t>(value >> 8);
  at[1] = static_cast<uint8_t>(value);
}

inline void Store32(uint8_t* at, uint32_t value) {
  Store16(at, static_cast<uint16_t>(value >> 16));
  Store16(at + 2, static_cast<uint16_t>(value));
}

}  // namespace edge_bytes

#endif  // EDGE_BYTES_H_
