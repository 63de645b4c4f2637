// The encrypted overlay's data messages: sealing packets for a peer and opening what arrives, in place, with
// ChaCha20-Poly1305 or AES-256-GCM (the handshake picks, per session: AES where both ends have AES instructions)
// from the OpenSSL that Node itself carries. The handshake that makes the keys runs in
// TypeScript (net-manager/secure/noise.ts); it installs each session's keys here, and from then on every data
// packet is sealed and opened in C++ without JavaScript seeing a key.
//
// A data message (type 4, 32 bytes more than the packet it carries):
//   0      1       4                8                16                      16+n        16+n+16
//   | type | zero | receiver index | counter (LE u64) | ciphertext of the packet | Poly1305 tag |
// The receiver index names the session at the receiving end; the counter is the nonce (4 zero bytes, then the
// counter little-endian), checked against a sliding replay window. An empty packet is a keepalive.
//
// Handshake messages (types 1 and 2) and the cluster manager's rendezvous answers (type 6) are handed up to
// TypeScript as they came; anything else that is not a data message is dropped and counted.
//
// The relay (the cluster manager's rendezvous port), for peers no direct path reaches: a message to relay is
// type 7, three zero bytes, the receiving peer's relay id (8 bytes: the start of SHA-256 of its public key), then
// the message; what the relay delivers is type 8, three zero bytes, the sending peer's relay id, the message. A
// peer whose authenticated packets arrive through its relay is sent to through it (`viaRelay`) until one arrives
// directly; relayed packets are taken only from the relay's own address and port.
//
// Each peer (a slot number the TypeScript side chooses) has `current` (sealing), `next` (made by a handshake
// this side answered; it becomes current when the first packet sealed with it arrives, which confirms the other
// side has the keys) and up to kPrevious `previous` sessions, newest first, that still open what the other side
// seals: after two handshakes that crossed, each side may seal with another one for a while. A session opens
// and seals for kRejectAfterMs after it was installed, never longer.
#ifndef EDGE_SECURE_H_
#define EDGE_SECURE_H_

#include <openssl/evp.h>

#include <cstddef>
#include <cstdint>
#include <unordered_map>
#include <vector>

namespace edge_secure {

constexpr uint8_t kTypeInitiation = 1;
constexpr uint8_t kTypeResponse = 2;
constexpr uint8_t kTypeData = 4;
constexpr size_t kHeaderBytes = 16;
constexpr size_t kTagBytes = 16;
constexpr size_t kOverhead = kHeaderBytes + kTagBytes;
constexpr uint8_t kTypeToRelay = 7;
constexpr uint8_t kTypeRelayed = 8;
constexpr size_t kRelayHeaderBytes = 12;
constexpr size_t kRelayIdBytes = 8;
constexpr size_t kKeyBytes = 32;
constexpr int64_t kRejectAfterMs = 180000;
// Counters stop well before a nonce could repeat.
constexpr uint64_t kRejectAfterMessages = (uint64_t{1} << 60);
constexpr int kPrevious = 3;

// Accepted counters of one session: RFC 6479's bitmap, 2048 bits (the newest 1984 counters are told apart).
class ReplayWindow {
 public:
  bool Fresh(uint64_t counter) const;
  void Accept(uint64_t counter);

 private:
  static constexpr uint64_t kWords = 32;
  static constexpr uint64_t kBits = kWords * 64;
  uint64_t greatest_ = 0;
  bool any_ = false;
  uint64_t words_[kWords] = {};
};

enum Cipher { kChaCha20Poly1305 = 0, kAes256Gcm = 1 };

// A session's keys live in its two OpenSSL contexts, set once when it is installed (key schedules and, for
// GCM, the hash key's tables are made then): per packet only the nonce changes.
struct Session {
  int peer = -1;
  uint32_t remoteIndex = 0;
  EVP_CIPHER_CTX* seal = nullptr;
  EVP_CIPHER_CTX* open = nullptr;
  uint64_t sendCounter = 0;
  int64_t installedMs = 0;
  ReplayWindow window;
};

struct Peer {
  bool used = false;
  uint32_t ip = 0;  // host order
  uint16_t port = 0;
  uint32_t current = 0;  // local indices; 0: none
  uint32_t next = 0;
  uint32_t previous[kPrevious] = {};
  int64_t lastReceivedMs = -1;
  int64_t lastSentMs = -1;
  uint64_t rxBytes = 0;
  uint64_t txBytes = 0;
  uint64_t roams = 0;
  // The relay that reaches it, and its id there; `viaRelay` while its packets come through the relay.
  bool hasRelay = false;
  bool viaRelay = false;
  uint32_t relayIp = 0;
  uint16_t relayPort = 0;
  uint8_t relayId[kRelayIdBytes] = {};
  uint64_t relayedPackets = 0;
};

struct Counters {
  uint64_t opened = 0;
  uint64_t sealed = 0;
  uint64_t keepalives = 0;
  uint64_t handshakes = 0;       // handshake messages handed up
  uint64_t badLength = 0;        // too short, or a handshake message of the wrong size
  uint64_t unknownType = 0;
  uint64_t plaintext = 0;        // an unencrypted IP packet while encryption is on
  uint64_t unknownSession = 0;   // a receiver index no session has (a stranger, or a session long gone)
  uint64_t expired = 0;          // a session past kRejectAfterMs
  uint64_t replayed = 0;         // a counter seen before, or too old for the window
  uint64_t badTag = 0;           // does not authenticate: forged, corrupted, or another key
  uint64_t noSession = 0;        // a packet to seal for a peer without a usable session: dropped
  uint64_t promoted = 0;         // `next` sessions confirmed by their first packet
  uint64_t roams = 0;            // a peer's endpoint moved to the source of an authenticated packet
  uint64_t relayedIn = 0;        // data packets that came through the relay
  uint64_t relayedOut = 0;       // and that went out through it
  uint64_t notFromRelay = 0;     // "relayed" packets from somewhere else than the peer's relay: dropped
};

// What Open made of one datagram.
enum class Opened { kData, kKeepalive, kHandshake, kDropped };

class Channel {
 public:
  Channel() = default;
  ~Channel();
  Channel(const Channel&) = delete;
  Channel& operator=(const Channel&) = delete;

  // The peer's direct endpoint; packets go there (not through the relay) from now on.
  bool SetPeer(int slot, uint32_t ip, uint16_t port);
  // The relay that reaches the peer and its id there; `use`: send through it from now on.
  bool SetRelay(int slot, uint32_t ip, uint16_t port, const uint8_t* relayId, bool use);
  void RemovePeer(int slot);
  // role 0: current (this side initiated), 1: next (this side answered). False when the index is in use or the
  // slot is no peer.
  bool AddSession(int slot, uint32_t localIndex, uint32_t remoteIndex, const uint8_t* sendKey,
                  const uint8_t* recvKey, int role, Cipher cipher, int64_t nowMs);
  void RemoveSession(uint32_t localIndex);
  const Peer* PeerAt(int slot) const;
  const Session* SessionAt(uint32_t localIndex) const;

  // Whether Seal would find a usable session for the peer now.
  bool CanSeal(int slot, int64_t nowMs);

  // Seals packet[0..length) in place: the header goes into the kHeaderBytes before it (and, through the relay,
  // the relay header before that), the tag after it. Returns how many bytes before the packet the datagram
  // starts (kHeaderBytes, or kHeaderBytes + kRelayHeaderBytes) and sets its destination; 0 (counted) when the
  // peer has no usable session.
  size_t Seal(int slot, uint8_t* packet, size_t length, int64_t nowMs, uint32_t* ip, uint16_t* port);

  // Opens a received datagram in place. kData/kKeepalive: the packet is datagram+kHeaderBytes, *length its
  // length, *slot its peer, *promoted whether this confirmed a `next` session. kHandshake: handed up as it is.
  Opened Open(uint8_t* datagram, size_t* length, uint32_t ip, uint16_t port, int64_t nowMs, int* slot,
              bool* promoted);

  const Counters& counters() const { return counters_; }

 private:
  std::vector<Peer> peers_;
  std::unordered_map<uint32_t, Session> sessions_;
  Counters counters_;

  Peer* PeerOf(int slot);
  void Drop(uint32_t localIndex);
  // `current` makes way for `localIndex`: it joins the previous ones (the oldest beyond kPrevious goes).
  void Replace(Peer* peer, uint32_t localIndex);
};

}  // namespace edge_secure

#endif  // EDGE_SECURE_H_
