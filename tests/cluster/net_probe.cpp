// A tiny TCP probe for the emulated cluster tests (run inside its hosts):
//   net_probe serve PORT OUTFILE CONNECTIONS   accept CONNECTIONS senders on
//       PORT, read each to EOF, then write "BYTES FIRST LAST" to OUTFILE:
//       bytes received, CLOCK_MONOTONIC seconds of the first byte and of the
//       last EOF (one clock for every namespace, so the test can combine
//       several servers).
//   net_probe send ADDR PORT BYTES   connect (retrying while refused: the
//       server may still be starting), send BYTES, wait for the server to close.
//   net_probe echo PORT   accept one connection and send back every byte
//       it reads, until EOF.
//   net_probe ping ADDR PORT COUNT OUTFILE   connect, then COUNT times send
//       one byte and wait for it to come back (20 ms apart); write the median
//       round trip in seconds to OUTFILE.
// Exit 0 on success, 3 when the connection fails for another reason (the
// message names it), 1 on any other error.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <vector>

namespace {

double now() {
  timespec t{};
  clock_gettime(CLOCK_MONOTONIC, &t);
  return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_nsec) * 1e-9;
}

int fail(const char* what) {
  std::fprintf(stderr, "net_probe: %s: %s\n", what, std::strerror(errno));
  return 1;
}

// A socket listening on every address at `port`; -1 after printing why.
int listen_on(int port, int backlog) {
  const int s = socket(AF_INET, SOCK_STREAM, 0);
  const int one = 1;
  setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_ANY);
  if (bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    fail("bind");
    return -1;
  }
  if (listen(s, backlog) != 0) {
    fail("listen");
    return -1;
  }
  return s;
}

int serve(int port, const char* out, int connections) {
  const int s = listen_on(port, 16);
  if (s < 0) return 1;
  std::vector<pollfd> fds{{s, POLLIN, 0}};
  int accepted = 0, open = 0;
  long long bytes = 0;
  double first = 0, last = 0;
  std::vector<char> buf(1 << 16);
  while (accepted < connections || open > 0) {
    if (poll(fds.data(), fds.size(), -1) < 0) {
      if (errno == EINTR) continue;
      return fail("poll");
    }
    for (std::size_t i = 0; i < fds.size(); ++i) {
      if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      if (i == 0) {
        const int c = accept(s, nullptr, nullptr);
        if (c < 0) return fail("accept");
        fds.push_back({c, POLLIN, 0});
        ++accepted, ++open;
        if (accepted == connections) fds[0].events = 0;
        continue;
      }
      const ssize_t n = read(fds[i].fd, buf.data(), buf.size());
      if (n > 0) {
        if (bytes == 0) first = now();
        bytes += n;
      } else if (n == 0 || errno != EINTR) {
        last = now();
        close(fds[i].fd);
        fds[i].fd = -1;  // poll ignores negative descriptors
        --open;
      }
    }
  }
  const std::string tmp = std::string(out) + ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "w");
  if (!f) return fail("open the output file");
  std::fprintf(f, "%lld %.6f %.6f\n", bytes, first, last);
  std::fclose(f);
  return std::rename(tmp.c_str(), out) == 0 ? 0 : fail("rename the output file");
}

// A connection to addr:port, retrying while refused (the server may still be
// starting); -1 after printing why (then exit 3).
int connect_to(const char* addr, int port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  if (inet_pton(AF_INET, addr, &a.sin_addr) != 1) {
    std::fprintf(stderr, "net_probe: '%s' is not an IPv4 address\n", addr);
    return -1;
  }
  const double give_up = now() + 5;
  while (true) {
    const int s = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) return s;
    const int err = errno;
    close(s);
    if (err != ECONNREFUSED || now() > give_up) {
      std::fprintf(stderr, "net_probe: connect %s:%d: %s\n", addr, port, std::strerror(err));
      return -1;
    }
    usleep(5000);
  }
}

int send_bytes(const char* addr, int port, long long bytes) {
  const int s = connect_to(addr, port);
  if (s < 0) return 3;
  std::vector<char> buf(1 << 16, 'x');
  while (bytes > 0) {
    const ssize_t n = write(s, buf.data(), static_cast<std::size_t>(std::min<long long>(bytes, 1 << 16)));
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail("write");
    }
    bytes -= n;
  }
  shutdown(s, SHUT_WR);
  char c;
  while (read(s, &c, 1) > 0) {
  }
  close(s);
  return 0;
}

int echo(int port) {
  const int s = listen_on(port, 1);
  if (s < 0) return 1;
  const int one = 1;
  const int c = accept(s, nullptr, nullptr);
  if (c < 0) return fail("accept");
  setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  char byte;
  while (read(c, &byte, 1) == 1)
    if (write(c, &byte, 1) != 1) return fail("write");
  close(c);
  close(s);
  return 0;
}

int ping(const char* addr, int port, int count, const char* out) {
  const int s = connect_to(addr, port);
  if (s < 0) return 3;
  const int one = 1;
  setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  std::vector<double> rtts;
  for (int i = 0; i < count; ++i) {
    char byte = 'p';
    const double t0 = now();
    if (write(s, &byte, 1) != 1 || read(s, &byte, 1) != 1) return fail("ping");
    rtts.push_back(now() - t0);
    usleep(20000);
  }
  close(s);
  std::sort(rtts.begin(), rtts.end());
  FILE* f = std::fopen(out, "w");
  if (!f) return fail("open the output file");
  std::fprintf(f, "%.6f\n", rtts[rtts.size() / 2]);
  std::fclose(f);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "serve" && argc == 5) return serve(std::atoi(argv[2]), argv[3], std::atoi(argv[4]));
  if (mode == "send" && argc == 5) return send_bytes(argv[2], std::atoi(argv[3]), std::atoll(argv[4]));
  if (mode == "echo" && argc == 3) return echo(std::atoi(argv[2]));
  if (mode == "ping" && argc == 6 && std::atoi(argv[4]) > 0)
    return ping(argv[2], std::atoi(argv[3]), std::atoi(argv[4]), argv[5]);
  std::fprintf(stderr,
               "usage: net_probe serve PORT OUTFILE CONNECTIONS | send ADDR PORT BYTES | echo PORT | "
               "ping ADDR PORT COUNT OUTFILE\n");
  return 1;
}
