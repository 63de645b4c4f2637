/*
 * What sealing one overlay packet costs in the addon's way (net-manager/native/secure.cc): an OpenSSL EVP context
 * per session with the cipher and key set once, then per packet the nonce, the update, the final and the tag;
 * and, for comparison, with the key set again for every packet (what the addon did first).
 * Built against Node's own OpenSSL headers and run by aead-cost.bench-run.ts; prints one JSON line per cipher
 * and packet size: nanoseconds per packet.
 */
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static double seal_ns(const EVP_CIPHER *cipher, int length, int packets, int rekey) {
  unsigned char key[32], nonce[12] = {0}, buffer[2048], tag[16];
  memset(key, 1, sizeof key);
  memset(buffer, 7, sizeof buffer);
  EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
  EVP_EncryptInit_ex(ctx, cipher, NULL, key, NULL);
  double start = now_ns();
  for (int i = 0; i < packets; i++) {
    int out = 0;
    memcpy(nonce + 4, &i, sizeof i);
    EVP_EncryptInit_ex(ctx, NULL, NULL, rekey ? key : NULL, nonce);
    if (length > 0) EVP_EncryptUpdate(ctx, buffer, &out, buffer, length);
    EVP_EncryptFinal_ex(ctx, buffer + out, &out);
    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, 16, tag);
  }
  double elapsed = now_ns() - start;
  EVP_CIPHER_CTX_free(ctx);
  return elapsed / packets;
}

int main(int argc, char **argv) {
  int packets = argc > 1 ? atoi(argv[1]) : 300000;
  const struct { const char *name; const EVP_CIPHER *cipher; } ciphers[] = {
      {"chacha20-poly1305", EVP_chacha20_poly1305()}, {"aes-256-gcm", EVP_aes_256_gcm()}};
  const int lengths[] = {0, 64, 1420};
  for (int c = 0; c < 2; c++)
    for (int l = 0; l < 3; l++)
      printf("{\"cipher\":\"%s\",\"bytes\":%d,\"nsPerPacket\":%.0f,\"keyEveryPacketNs\":%.0f}\n",
             ciphers[c].name, lengths[l], seal_ns(ciphers[c].cipher, lengths[l], packets, 0),
             seal_ns(ciphers[c].cipher, lengths[l], packets, 1));
  return 0;
}
