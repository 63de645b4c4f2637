/*
 * The smallest TUN <-> UDP forwarder there is, in C, for test/bench/tun-forwarder.bench-run.ts: one epoll
 * loop, one read and one sendto per packet, no translation. It is the floor for what any user-space TUN data
 * plane pays per packet and per wakeup on this machine, next to which the addon's variants are measured.
 *
 *   reference-forwarder <tun cidr> <local udp address> <peer udp address>
 *
 * Creates TUN nmtun0 (MTU 1400, IFF_NO_PI) in the calling namespace, UDP port 50103; prints "ready".
 * Ends on SIGTERM.
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

static volatile sig_atomic_t stopping = 0;
static void on_term(int sig) { (void)sig; stopping = 1; }

static int fail(const char *what) {
  perror(what);
  return 1;
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s <tun cidr> <local address> <peer address>\n", argv[0]);
    return 2;
  }
  signal(SIGTERM, on_term);
  int tun = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (tun < 0) return fail("open /dev/net/tun");
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
  strcpy(ifr.ifr_name, "nmtun0");
  if (ioctl(tun, TUNSETIFF, &ifr) < 0) return fail("TUNSETIFF");
  char command[256];
  snprintf(command, sizeof command, "ip addr add %s dev nmtun0 && ip link set dev nmtun0 mtu 1400 up", argv[1]);
  if (system(command) != 0) return fail("ip");

  int udp = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (udp < 0) return fail("socket");
  struct sockaddr_in local = {.sin_family = AF_INET, .sin_port = htons(50103)};
  struct sockaddr_in peer = {.sin_family = AF_INET, .sin_port = htons(50103)};
  if (inet_pton(AF_INET, argv[2], &local.sin_addr) != 1 || inet_pton(AF_INET, argv[3], &peer.sin_addr) != 1) {
    fprintf(stderr, "bad address\n");
    return 2;
  }
  if (bind(udp, (struct sockaddr *)&local, sizeof local) < 0) return fail("bind");

  int poller = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event event = {.events = EPOLLIN, .data.fd = tun};
  epoll_ctl(poller, EPOLL_CTL_ADD, tun, &event);
  event.data.fd = udp;
  epoll_ctl(poller, EPOLL_CTL_ADD, udp, &event);
  printf("ready\n");
  fflush(stdout);

  static char packet[65536];
  while (!stopping) {
    struct epoll_event ready[2];
    int n = epoll_wait(poller, ready, 2, -1);
    for (int i = 0; i < n; i++) {
      ssize_t length;
      if (ready[i].data.fd == tun) {
        while ((length = read(tun, packet, sizeof packet)) > 0)
          sendto(udp, packet, (size_t)length, 0, (struct sockaddr *)&peer, sizeof peer);
      } else {
        while ((length = recv(udp, packet, sizeof packet, 0)) > 0) write(tun, packet, (size_t)length);
      }
    }
  }
  return 0;
}
