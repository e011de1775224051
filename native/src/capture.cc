// SYN capture: an AF_PACKET socket with a classic-BPF filter that keeps TCP SYNs
// (without ACK) and nothing else, for `netoken inspect`. Frames come without their
// link-layer header (SOCK_DGRAM), so Ethernet and L3 devices (tun, WireGuard) read
// the same; sll_pkttype tells frames the host sent from frames it received.
#include "netoken.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <linux/filter.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>

namespace netoken {

namespace {

// Enough for the IP header with options (60) or IPv6 with a few extension headers,
// plus a TCP header with all 40 bytes of options.
constexpr uint32_t kDefaultSnaplen = 256;
constexpr uint32_t kMaxSnaplen = 65535;
// Room for a burst of SYNs between two reads.
constexpr int kReceiveBuffer = 4 << 20;

constexpr uint8_t kTcpSyn = 0x02;
constexpr uint8_t kTcpAck = 0x10;

// The filter sees the network header at offset 0 (SOCK_DGRAM) and the EtherType
// through the SKF_AD_PROTOCOL extension. It accepts:
//   IPv4, protocol TCP, not a later fragment, flags SYN without ACK;
//   IPv6 with next header TCP, flags SYN without ACK;
//   IPv6 behind a hop-by-hop, routing, fragment or destination-options header, for
//   the parser in user space to decide (rare, and never a flood of ordinary traffic).
// Everything else is dropped in the kernel.
std::vector<sock_filter> SynFilter(uint32_t snaplen) {
  return {
      /* 0 */ BPF_STMT(BPF_LD | BPF_H | BPF_ABS, static_cast<uint32_t>(SKF_AD_OFF + SKF_AD_PROTOCOL)),
      /* 1 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, ETH_P_IP, 0, 8),
      // IPv4: protocol, fragment offset, then the flags behind IHL * 4 bytes of header
      /* 2 */ BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 9),
      /* 3 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, IPPROTO_TCP, 0, 17),
      /* 4 */ BPF_STMT(BPF_LD | BPF_H | BPF_ABS, 6),
      /* 5 */ BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, 0x1fff, 15, 0),
      /* 6 */ BPF_STMT(BPF_LDX | BPF_B | BPF_MSH, 0),
      /* 7 */ BPF_STMT(BPF_LD | BPF_B | BPF_IND, 13),
      /* 8 */ BPF_STMT(BPF_ALU | BPF_AND | BPF_K, kTcpSyn | kTcpAck),
      /* 9 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, kTcpSyn, 10, 11),
      // IPv6: next header TCP, flags at 40 + 13; extension headers go to user space
      /* 10 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, ETH_P_IPV6, 0, 10),
      /* 11 */ BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 6),
      /* 12 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, IPPROTO_TCP, 0, 3),
      /* 13 */ BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 40 + 13),
      /* 14 */ BPF_STMT(BPF_ALU | BPF_AND | BPF_K, kTcpSyn | kTcpAck),
      /* 15 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, kTcpSyn, 4, 5),
      /* 16 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, IPPROTO_HOPOPTS, 3, 0),
      /* 17 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, IPPROTO_ROUTING, 2, 0),
      /* 18 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, IPPROTO_FRAGMENT, 1, 0),
      /* 19 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, IPPROTO_DSTOPTS, 0, 1),
      /* 20 */ BPF_STMT(BPF_RET | BPF_K, snaplen),
      /* 21 */ BPF_STMT(BPF_RET | BPF_K, 0),
  };
}

}  // namespace

// One AF_PACKET socket. recv() never blocks: the caller polls it.
class CaptureHandle : public Napi::ObjectWrap<CaptureHandle> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "SynCapture",
                       {
                           InstanceAccessor<&CaptureHandle::Fd>("fd"),
                           InstanceMethod<&CaptureHandle::Recv>("recv"),
                           InstanceMethod<&CaptureHandle::Stats>("stats"),
                           InstanceMethod<&CaptureHandle::Close>("close"),
                       });
  }

  explicit CaptureHandle(const Napi::CallbackInfo &info) : Napi::ObjectWrap<CaptureHandle>(info) {
    CheckConstructToken(info, "SynCapture", "openSynCapture()");
  }

  ~CaptureHandle() override {
    if (fd_ >= 0) close(fd_);
  }

  void Open(Napi::Env env, uint32_t ifindex, uint32_t snaplen) {
    ifindex_ = ifindex;
    snaplen_ = snaplen;
    // Protocol 0: the socket receives nothing until bind(), so no frame slips past the filter.
    UniqueFd fd(socket(AF_PACKET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (fd.get() < 0) ThrowErrno(env, "socket", errno, "AF_PACKET (needs CAP_NET_RAW)");
    std::vector<sock_filter> code = SynFilter(snaplen);
    sock_fprog prog{static_cast<unsigned short>(code.size()), code.data()};
    if (setsockopt(fd.get(), SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof(prog)) != 0) {
      ThrowErrno(env, "setsockopt", errno, "SO_ATTACH_FILTER");
    }
    int on = 1;
    if (setsockopt(fd.get(), SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof(on)) != 0) {
      ThrowErrno(env, "setsockopt", errno, "SO_TIMESTAMPNS");
    }
    int rcvbuf = kReceiveBuffer;
    // Best effort: the default buffer works too, with earlier drops under a burst.
    setsockopt(fd.get(), SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    sockaddr_ll addr{};
    addr.sll_family = AF_PACKET;
    addr.sll_protocol = htons(ETH_P_ALL);
    addr.sll_ifindex = static_cast<int>(ifindex);
    if (bind(fd.get(), reinterpret_cast<sockaddr *>(&addr), sizeof(addr)) != 0) {
      ThrowErrno(env, "bind", errno, Describe());
    }
    fd_ = fd.release();
  }

 private:
  std::string Describe() const {
    return ifindex_ == 0 ? "AF_PACKET on every interface" : "AF_PACKET on ifindex " + std::to_string(ifindex_);
  }

  void CheckOpen(Napi::Env env, const char *op) const {
    if (fd_ < 0) ThrowErrno(env, op, EBADF, Describe() + " is closed");
  }

  Napi::Value Fd(const Napi::CallbackInfo &info) { return Napi::Number::New(info.Env(), fd_); }

  // recv(max): up to max frames that are waiting now, oldest first; [] when none.
  Napi::Value Recv(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    uint32_t max = ArgU32Or(env, info[0], "max", 256);
    CheckOpen(env, "recvmsg");
    Napi::Array out = Napi::Array::New(env);
    std::vector<uint8_t> buf(snaplen_);
    for (uint32_t n = 0; n < max; n++) {
      sockaddr_ll from{};
      iovec iov{buf.data(), buf.size()};
      alignas(cmsghdr) char control[CMSG_SPACE(sizeof(timespec))];
      msghdr msg{};
      msg.msg_name = &from;
      msg.msg_namelen = sizeof(from);
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      msg.msg_control = control;
      msg.msg_controllen = sizeof(control);
      // MSG_TRUNC: the return value is the frame's full length even when the buffer holds less.
      ssize_t len = recvmsg(fd_, &msg, MSG_DONTWAIT | MSG_TRUNC);
      if (len < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        if (errno == EINTR) continue;
        // A device that went away: ENETDOWN / ENXIO. The caller decides whether to stop.
        ThrowErrno(env, "recvmsg", errno, Describe());
      }
      timespec ts{};
      bool stamped = false;
      for (cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS) {
          memcpy(&ts, CMSG_DATA(c), sizeof(ts));
          stamped = true;
        }
      }
      if (!stamped) clock_gettime(CLOCK_REALTIME, &ts);
      size_t kept = static_cast<size_t>(len) < buf.size() ? static_cast<size_t>(len) : buf.size();
      Napi::Object f = Napi::Object::New(env);
      f.Set("data", Napi::Buffer<uint8_t>::Copy(env, buf.data(), kept));
      f.Set("length", Napi::Number::New(env, static_cast<double>(len)));
      f.Set("protocol", ntohs(from.sll_protocol));
      f.Set("ifindex", from.sll_ifindex);
      f.Set("pktType", from.sll_pkttype);
      f.Set("hatype", from.sll_hatype);
      f.Set("addr", Napi::Buffer<uint8_t>::Copy(env, from.sll_addr, from.sll_halen <= 8 ? from.sll_halen : 8));
      f.Set("tsSec", Napi::Number::New(env, static_cast<double>(ts.tv_sec)));
      f.Set("tsNsec", Napi::Number::New(env, static_cast<double>(ts.tv_nsec)));
      out.Set(out.Length(), f);
    }
    return out;
  }

  // stats(): frames the filter kept and frames the kernel dropped (buffer full), since open.
  Napi::Value Stats(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    CheckOpen(env, "getsockopt");
    tpacket_stats st{};
    socklen_t len = sizeof(st);
    // The kernel resets these counters on every read: keep the running sums here.
    if (getsockopt(fd_, SOL_PACKET, PACKET_STATISTICS, &st, &len) != 0) {
      ThrowErrno(env, "getsockopt", errno, "PACKET_STATISTICS");
    }
    packets_ += st.tp_packets;
    drops_ += st.tp_drops;
    Napi::Object o = Napi::Object::New(env);
    o.Set("packets", Napi::Number::New(env, static_cast<double>(packets_)));
    o.Set("drops", Napi::Number::New(env, static_cast<double>(drops_)));
    return o;
  }

  void Close(const Napi::CallbackInfo &) {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }

  int fd_ = -1;
  uint32_t ifindex_ = 0;
  uint32_t snaplen_ = kDefaultSnaplen;
  uint64_t packets_ = 0;
  uint64_t drops_ = 0;
};

namespace {

// openSynCapture(ifindex, {snaplen}): ifindex 0 captures on every interface.
Napi::Value OpenSynCapture(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  uint32_t ifindex = ArgU32(env, info[0], "ifindex");
  uint32_t snaplen = kDefaultSnaplen;
  if (!info[1].IsUndefined() && !info[1].IsNull()) {
    Napi::Object opts = ArgObject(env, info[1], "options");
    snaplen = ArgU32Or(env, opts.Get("snaplen"), "options.snaplen", kDefaultSnaplen);
    if (snaplen < 64 || snaplen > kMaxSnaplen) {
      ThrowRangeError(env, "options.snaplen must be in [64, " + std::to_string(kMaxSnaplen) + "], got " + std::to_string(snaplen));
    }
  }
  Napi::Object js = Data(env)->captureCtor.New({ConstructToken(env)});
  CaptureHandle::Unwrap(js)->Open(env, ifindex, snaplen);
  return js;
}

}  // namespace

void InitCaptureFunctions(Napi::Env env, Napi::Object exports) {
  Data(env)->captureCtor = Napi::Persistent(CaptureHandle::Define(env));
  exports.Set("openSynCapture", Napi::Function::New<OpenSynCapture>(env, "openSynCapture"));
}

}  // namespace netoken
