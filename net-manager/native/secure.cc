// See secure.h.
#include "secure.h"

#include <cstring>

namespace edge_secure {

namespace {

constexpr size_t kInitiationBytes = 133;
constexpr size_t kResponseBytes = 77;
// The cluster manager's rendezvous answer (control/reflexive-address.ts): handed up like a handshake message.
constexpr uint8_t kTypeRendezvousAnswer = 6;
constexpr size_t kRendezvousAnswerBytes = 26;
constexpr int kMaxSlots = 1 << 20;

void PutLe32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
void PutLe64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
uint32_t Le32(const uint8_t* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}
uint64_t Le64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

// Noise's ChaChaPoly nonce: 32 zero bits, then the counter little-endian.
void Nonce(uint64_t counter, uint8_t nonce[12]) {
  std::memset(nonce, 0, 4);
  PutLe64(nonce + 4, counter);
}

bool Usable(const Session& session, int64_t nowMs) {
  return nowMs - session.installedMs < kRejectAfterMs;
}

}  // namespace

bool ReplayWindow::Fresh(uint64_t counter) const {
  if (!any_ || counter > greatest_) return true;
  if (greatest_ - counter >= kBits - 64) return false;
  return ((words_[(counter >> 6) % kWords] >> (counter & 63)) & 1) == 0;
}

void ReplayWindow::Accept(uint64_t counter) {
  uint64_t word = counter >> 6;
  if (!any_ || counter > greatest_) {
    uint64_t top = greatest_ >> 6;
    uint64_t advance = any_ ? word - top : kWords;
    if (advance > kWords) advance = kWords;
    for (uint64_t i = 1; i <= advance; i++) words_[(top + i) % kWords] = 0;
    if (!any_) std::memset(words_, 0, sizeof words_);
    greatest_ = counter;
    any_ = true;
  }
  words_[word % kWords] |= uint64_t{1} << (counter & 63);
}

Channel::~Channel() {
  for (auto& entry : sessions_) {
    EVP_CIPHER_CTX_free(entry.second.seal);
    EVP_CIPHER_CTX_free(entry.second.open);
  }
}

Peer* Channel::PeerOf(int slot) {
  if (slot < 0 || static_cast<size_t>(slot) >= peers_.size() || !peers_[slot].used) return nullptr;
  return &peers_[slot];
}

const Peer* Channel::PeerAt(int slot) const {
  if (slot < 0 || static_cast<size_t>(slot) >= peers_.size() || !peers_[slot].used) return nullptr;
  return &peers_[slot];
}

const Session* Channel::SessionAt(uint32_t localIndex) const {
  auto found = sessions_.find(localIndex);
  return found == sessions_.end() ? nullptr : &found->second;
}

bool Channel::SetPeer(int slot, uint32_t ip, uint16_t port) {
  if (slot < 0 || slot >= kMaxSlots) return false;
  if (static_cast<size_t>(slot) >= peers_.size()) peers_.resize(static_cast<size_t>(slot) + 1);
  Peer& peer = peers_[slot];
  peer.used = true;
  peer.ip = ip;
  peer.port = port;
  peer.viaRelay = false;
  return true;
}

bool Channel::SetRelay(int slot, uint32_t ip, uint16_t port, const uint8_t* relayId, bool use) {
  Peer* peer = PeerOf(slot);
  if (peer == nullptr) return false;
  peer->hasRelay = true;
  peer->relayIp = ip;
  peer->relayPort = port;
  std::memcpy(peer->relayId, relayId, kRelayIdBytes);
  if (use) peer->viaRelay = true;
  return true;
}

void Channel::RemovePeer(int slot) {
  Peer* peer = PeerOf(slot);
  if (peer == nullptr) return;
  Drop(peer->current);
  Drop(peer->next);
  for (uint32_t previous : peer->previous) Drop(previous);
  *peer = Peer();
}

void Channel::Drop(uint32_t localIndex) {
  if (localIndex == 0) return;
  auto found = sessions_.find(localIndex);
  if (found == sessions_.end()) return;
  // Freeing a context wipes the key material in it.
  EVP_CIPHER_CTX_free(found->second.seal);
  EVP_CIPHER_CTX_free(found->second.open);
  sessions_.erase(found);
}

bool Channel::AddSession(int slot, uint32_t localIndex, uint32_t remoteIndex, const uint8_t* sendKey,
                         const uint8_t* recvKey, int role, Cipher cipher, int64_t nowMs) {
  Peer* peer = PeerOf(slot);
  if (peer == nullptr || localIndex == 0 || sessions_.count(localIndex) != 0) return false;
  const EVP_CIPHER* evp = cipher == kAes256Gcm ? EVP_aes_256_gcm() : EVP_chacha20_poly1305();
  EVP_CIPHER_CTX* seal = EVP_CIPHER_CTX_new();
  EVP_CIPHER_CTX* open = EVP_CIPHER_CTX_new();
  if (seal == nullptr || open == nullptr || EVP_EncryptInit_ex(seal, evp, nullptr, sendKey, nullptr) != 1 ||
      EVP_DecryptInit_ex(open, evp, nullptr, recvKey, nullptr) != 1) {
    EVP_CIPHER_CTX_free(seal);
    EVP_CIPHER_CTX_free(open);
    return false;
  }
  Session& session = sessions_[localIndex];
  session.peer = slot;
  session.remoteIndex = remoteIndex;
  session.seal = seal;
  session.open = open;
  session.installedMs = nowMs;
  if (role == 0) {
    Replace(peer, localIndex);
  } else {
    Drop(peer->next);
    peer->next = localIndex;
  }
  return true;
}

void Channel::Replace(Peer* peer, uint32_t localIndex) {
  if (peer->current != 0) {
    Drop(peer->previous[kPrevious - 1]);
    for (int i = kPrevious - 1; i > 0; i--) peer->previous[i] = peer->previous[i - 1];
    peer->previous[0] = peer->current;
  }
  peer->current = localIndex;
}

void Channel::RemoveSession(uint32_t localIndex) {
  auto found = sessions_.find(localIndex);
  if (found == sessions_.end()) return;
  Peer* peer = PeerOf(found->second.peer);
  if (peer != nullptr) {
    if (peer->current == localIndex) peer->current = 0;
    if (peer->next == localIndex) peer->next = 0;
    for (uint32_t& previous : peer->previous)
      if (previous == localIndex) previous = 0;
  }
  Drop(localIndex);
}

bool Channel::CanSeal(int slot, int64_t nowMs) {
  Peer* peer = PeerOf(slot);
  auto found = peer == nullptr || peer->current == 0 ? sessions_.end() : sessions_.find(peer->current);
  return found != sessions_.end() && Usable(found->second, nowMs) &&
         found->second.sendCounter < kRejectAfterMessages;
}

size_t Channel::Seal(int slot, uint8_t* packet, size_t length, int64_t nowMs, uint32_t* ip, uint16_t* port) {
  Peer* peer = PeerOf(slot);
  auto found = peer == nullptr || peer->current == 0 ? sessions_.end() : sessions_.find(peer->current);
  if (found == sessions_.end() || !Usable(found->second, nowMs) ||
      found->second.sendCounter >= kRejectAfterMessages) {
    counters_.noSession++;
    return 0;
  }
  Session& session = found->second;
  uint64_t counter = session.sendCounter++;
  uint8_t* header = packet - kHeaderBytes;
  header[0] = kTypeData;
  header[1] = header[2] = header[3] = 0;
  PutLe32(header + 4, session.remoteIndex);
  PutLe64(header + 8, counter);
  uint8_t nonce[12];
  Nonce(counter, nonce);
  int out = 0;
  EVP_CIPHER_CTX* seal = session.seal;
  if (EVP_EncryptInit_ex(seal, nullptr, nullptr, nullptr, nonce) != 1 ||
      (length > 0 && EVP_EncryptUpdate(seal, packet, &out, packet, static_cast<int>(length)) != 1) ||
      EVP_EncryptFinal_ex(seal, packet + out, &out) != 1 ||
      EVP_CIPHER_CTX_ctrl(seal, EVP_CTRL_AEAD_GET_TAG, kTagBytes, packet + length) != 1) {
    counters_.noSession++;
    return 0;
  }
  counters_.sealed++;
  peer->lastSentMs = nowMs;
  peer->txBytes += length;
  if (peer->viaRelay && peer->hasRelay) {
    uint8_t* relay = header - kRelayHeaderBytes;
    relay[0] = kTypeToRelay;
    relay[1] = relay[2] = relay[3] = 0;
    std::memcpy(relay + 4, peer->relayId, kRelayIdBytes);
    peer->relayedPackets++;
    counters_.relayedOut++;
    *ip = peer->relayIp;
    *port = peer->relayPort;
    return kHeaderBytes + kRelayHeaderBytes;
  }
  *ip = peer->ip;
  *port = peer->port;
  return kHeaderBytes;
}

Opened Channel::Open(uint8_t* datagram, size_t* length, uint32_t ip, uint16_t port, int64_t nowMs, int* slot,
                     bool* promoted) {
  size_t size = *length;
  *promoted = false;
  if (size == 0) {
    counters_.badLength++;
    return Opened::kDropped;
  }
  uint8_t type = datagram[0];
  // Through the relay: the message after the relay header, checked like any other; a data message is moved to
  // the datagram's start (so the packet lies where a direct one would), a handshake message handed up as it came.
  bool relayed = false;
  if (type == kTypeRelayed) {
    if (size <= kRelayHeaderBytes || datagram[1] != 0 || datagram[2] != 0 || datagram[3] != 0) {
      counters_.badLength++;
      return Opened::kDropped;
    }
    uint8_t inner = datagram[kRelayHeaderBytes];
    size_t innerSize = size - kRelayHeaderBytes;
    if (inner == kTypeInitiation || inner == kTypeResponse) {
      if (innerSize != (inner == kTypeInitiation ? kInitiationBytes : kResponseBytes)) {
        counters_.badLength++;
        return Opened::kDropped;
      }
      counters_.handshakes++;
      return Opened::kHandshake;
    }
    if (inner != kTypeData) {
      counters_.unknownType++;
      return Opened::kDropped;
    }
    std::memmove(datagram, datagram + kRelayHeaderBytes, innerSize);
    size = innerSize;
    type = kTypeData;
    relayed = true;
  }
  if (type >> 4 == 4) {
    counters_.plaintext++;
    return Opened::kDropped;
  }
  if (type == kTypeInitiation || type == kTypeResponse || type == kTypeRendezvousAnswer) {
    size_t expected = type == kTypeInitiation ? kInitiationBytes
                      : type == kTypeResponse ? kResponseBytes
                                              : kRendezvousAnswerBytes;
    if (size != expected) {
      counters_.badLength++;
      return Opened::kDropped;
    }
    counters_.handshakes++;
    return Opened::kHandshake;
  }
  if (type != kTypeData || datagram[1] != 0 || datagram[2] != 0 || datagram[3] != 0) {
    counters_.unknownType++;
    return Opened::kDropped;
  }
  if (size < kOverhead) {
    counters_.badLength++;
    return Opened::kDropped;
  }
  uint32_t localIndex = Le32(datagram + 4);
  auto found = localIndex == 0 ? sessions_.end() : sessions_.find(localIndex);
  if (found == sessions_.end()) {
    counters_.unknownSession++;
    return Opened::kDropped;
  }
  Session& session = found->second;
  if (!Usable(session, nowMs)) {
    counters_.expired++;
    return Opened::kDropped;
  }
  Peer* peer = PeerOf(session.peer);
  if (peer == nullptr) {
    counters_.unknownSession++;
    return Opened::kDropped;
  }
  // Before anything counts as seen: a relayed packet from elsewhere than the peer's relay is nobody's.
  if (relayed && (!peer->hasRelay || ip != peer->relayIp || port != peer->relayPort)) {
    counters_.notFromRelay++;
    return Opened::kDropped;
  }
  uint64_t counter = Le64(datagram + 8);
  if (counter >= kRejectAfterMessages || !session.window.Fresh(counter)) {
    counters_.replayed++;
    return Opened::kDropped;
  }
  size_t plain = size - kOverhead;
  uint8_t* packet = datagram + kHeaderBytes;
  uint8_t nonce[12];
  Nonce(counter, nonce);
  int out = 0;
  EVP_CIPHER_CTX* open = session.open;
  if (EVP_DecryptInit_ex(open, nullptr, nullptr, nullptr, nonce) != 1 ||
      (plain > 0 && EVP_DecryptUpdate(open, packet, &out, packet, static_cast<int>(plain)) != 1) ||
      EVP_CIPHER_CTX_ctrl(open, EVP_CTRL_AEAD_SET_TAG, kTagBytes, packet + plain) != 1 ||
      EVP_DecryptFinal_ex(open, packet + out, &out) != 1) {
    counters_.badTag++;
    return Opened::kDropped;
  }
  session.window.Accept(counter);
  if (peer->next == localIndex) {
    // The first packet sealed with the keys this side answered with: the other side has them too.
    Replace(peer, localIndex);
    peer->next = 0;
    counters_.promoted++;
    *promoted = true;
  }
  if (relayed) {
    peer->viaRelay = true;
    counters_.relayedIn++;
  } else {
    // A direct path works: the relay is left. Roaming: the peer is wherever its authenticated packets come from.
    peer->viaRelay = false;
    if (peer->ip != ip || peer->port != port) {
      peer->ip = ip;
      peer->port = port;
      peer->roams++;
      counters_.roams++;
    }
  }
  peer->lastReceivedMs = nowMs;
  peer->rxBytes += plain;
  *slot = session.peer;
  *length = plain;
  if (plain == 0) {
    counters_.keepalives++;
    return Opened::kKeepalive;
  }
  counters_.opened++;
  return Opened::kData;
}

}  // namespace edge_secure
