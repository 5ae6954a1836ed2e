/*
 * Preloaded into the IRC peers during benchmarks (LD_PRELOAD): sets
 * TCP_NODELAY on every accepted socket, as confab does on its own. Neither
 * ngIRCd nor InspIRCd has a setting for it, and with Nagle on they can fall
 * into a 40 ms delayed-ACK stall per message that measures the timer, not the
 * server. Compiled at bench time by bench/lib/servers.ts.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

typedef int (*accept_fn)(int, struct sockaddr *, socklen_t *);
typedef int (*accept4_fn)(int, struct sockaddr *, socklen_t *, int);

static void nodelay(int fd) {
  int on = 1;
  if (fd >= 0) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
}

int accept(int fd, struct sockaddr *addr, socklen_t *len) {
  static accept_fn real;
  if (!real) real = (accept_fn)dlsym(RTLD_NEXT, "accept");
  int s = real(fd, addr, len);
  nodelay(s);
  return s;
}

int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags) {
  static accept4_fn real;
  if (!real) real = (accept4_fn)dlsym(RTLD_NEXT, "accept4");
  int s = real(fd, addr, len, flags);
  nodelay(s);
  return s;
}
