// Hooks: TCX links, legacy tc clsact filters, XDP.
#include "netoken.h"

#include <linux/bpf.h>
#include <net/if.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>

namespace netoken {

namespace {

// Not in the installed (Linux 6.1) UAPI headers: TCX arrived in 6.6, after
// BPF_STRUCT_OPS (44) and BPF_NETFILTER (45).
constexpr uint32_t kTcxIngress = 46;  // BPF_TCX_INGRESS
constexpr uint32_t kTcxEgress = 47;   // BPF_TCX_EGRESS

uint32_t TcxAttachType(Direction d) { return d == Direction::Ingress ? kTcxIngress : kTcxEgress; }

std::string IfContext(uint32_t ifindex, Direction d) {
  return "ifindex " + std::to_string(ifindex) + ", " + DirectionName(d);
}

// attr.query as of Linux 6.6. The kernel writes `revision` back through the
// user pointer, so the buffer must reach past it even though 6.1 headers end earlier.
struct ProgQueryAttr {
  uint32_t targetIfindex;
  uint32_t attachType;
  uint32_t queryFlags;
  uint32_t attachFlags;
  uint64_t progIds;
  uint32_t count;
  uint32_t pad;
  uint64_t progAttachFlags;
  uint64_t linkIds;
  uint64_t linkAttachFlags;
  uint64_t revision;
};
static_assert(sizeof(ProgQueryAttr) == 64, "BPF_PROG_QUERY attr layout");

// ---- TCX ---------------------------------------------------------------------------

Napi::Value CreateTcxLink(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  ProgramHandle *prog = ProgramHandle::FromValue(env, info[0], "program");
  uint32_t ifindex = ArgU32(env, info[1], "ifindex");
  Direction dir = ArgDirection(env, info[2]);
  // libbpf 1.1 has no TCX API, but bpf_link_create passes unknown attach types through.
  int fd = bpf_link_create(prog->fd(), static_cast<int>(ifindex),
                           static_cast<bpf_attach_type>(TcxAttachType(dir)), nullptr);
  if (fd < 0) {
    ThrowErrno(env, "bpf_link_create", fd, IfContext(ifindex, dir) + ", " + prog->Describe());
  }
  return LinkHandle::FromFd(env, UniqueFd(fd));
}

Napi::Value TcxQuery(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  uint32_t ifindex = ArgU32(env, info[0], "ifindex");
  Direction dir = ArgDirection(env, info[1]);
  std::vector<uint32_t> ids(64);
  for (;;) {
    ProgQueryAttr attr;
    memset(&attr, 0, sizeof(attr));
    attr.targetIfindex = ifindex;
    attr.attachType = TcxAttachType(dir);
    attr.progIds = reinterpret_cast<uintptr_t>(ids.data());
    attr.count = static_cast<uint32_t>(ids.size());
    long rc = syscall(__NR_bpf, BPF_PROG_QUERY, &attr, sizeof(attr));
    if (rc < 0 && errno == ENOSPC && attr.count > ids.size()) {
      // More programs than room (someone attached meanwhile): grow and ask again.
      ids.resize(attr.count + 16);
      continue;
    }
    if (rc < 0) ThrowErrno(env, "bpf(BPF_PROG_QUERY)", errno, IfContext(ifindex, dir));
    Napi::Array out = Napi::Array::New(env, attr.count);
    for (uint32_t i = 0; i < attr.count && i < ids.size(); i++) out.Set(i, ids[i]);
    return out;
  }
}

// ---- legacy tc (clsact qdisc + BPF filter) ---------------------------------------------

bpf_tc_hook MakeHook(uint32_t ifindex, uint32_t attachPoint) {
  bpf_tc_hook hook;
  memset(&hook, 0, sizeof(hook));
  hook.sz = sizeof(hook);
  hook.ifindex = static_cast<int>(ifindex);
  hook.attach_point = static_cast<bpf_tc_attach_point>(attachPoint);
  return hook;
}

bpf_tc_opts MakeTcOpts(uint32_t handle, uint32_t priority) {
  bpf_tc_opts opts;
  memset(&opts, 0, sizeof(opts));
  opts.sz = sizeof(opts);
  opts.handle = handle;
  opts.priority = priority;
  return opts;
}

struct TcSpec {
  uint32_t ifindex;
  Direction dir;
  uint32_t handle;
  uint32_t priority;

  std::string Context() const {
    return IfContext(ifindex, dir) + ", handle " + std::to_string(handle) + ", priority " +
           std::to_string(priority);
  }
  uint32_t AttachPoint() const { return dir == Direction::Ingress ? BPF_TC_INGRESS : BPF_TC_EGRESS; }
};

// Checked here rather than by libbpf so that an EINVAL from the kernel can
// only mean "no such qdisc or filter chain" (see TcQuery).
TcSpec ArgTcSpec(Napi::Env env, const Napi::Object &o, bool exact) {
  TcSpec s;
  s.ifindex = ArgU32(env, o.Get("ifindex"), "spec.ifindex");
  s.dir = ArgDirection(env, o.Get("direction"));
  s.handle = ArgU32(env, o.Get("handle"), "spec.handle");
  s.priority = ArgU32(env, o.Get("priority"), "spec.priority");
  if (s.ifindex == 0 || s.ifindex > INT32_MAX) ThrowRangeError(env, "spec.ifindex must be in [1, 2147483647]");
  if (s.priority > 0xffff) ThrowRangeError(env, "spec.priority must be at most 65535");
  if (exact && (s.handle == 0 || s.priority == 0)) {
    ThrowRangeError(env, "spec.handle and spec.priority must be non-zero to name one filter");
  }
  return s;
}

Napi::Value TcHookCreate(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  uint32_t ifindex = ArgU32(env, info[0], "ifindex");
  bpf_tc_hook hook = MakeHook(ifindex, BPF_TC_INGRESS | BPF_TC_EGRESS);
  int err = bpf_tc_hook_create(&hook);
  if (err && err != -EEXIST) {
    ThrowErrno(env, "bpf_tc_hook_create", err, "ifindex " + std::to_string(ifindex));
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("created", err == 0);
  return o;
}

void TcHookDestroy(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  uint32_t ifindex = ArgU32(env, info[0], "ifindex");
  // Both attach points together is libbpf's way of saying "delete the clsact qdisc".
  bpf_tc_hook hook = MakeHook(ifindex, BPF_TC_INGRESS | BPF_TC_EGRESS);
  int err = bpf_tc_hook_destroy(&hook);
  if (err) ThrowErrno(env, "bpf_tc_hook_destroy", err, "ifindex " + std::to_string(ifindex));
}

Napi::Value TcAttach(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  Napi::Object o = ArgObject(env, info[0], "spec");
  TcSpec spec = ArgTcSpec(env, o, false);
  int32_t progFd = ArgI32(env, o.Get("progFd"), "spec.progFd");
  bool replace = ArgBool(env, o.Get("replace"), "spec.replace");
  bpf_tc_hook hook = MakeHook(spec.ifindex, spec.AttachPoint());
  bpf_tc_opts opts = MakeTcOpts(spec.handle, spec.priority);
  opts.prog_fd = progFd;
  opts.flags = replace ? BPF_TC_F_REPLACE : 0;
  int err = bpf_tc_attach(&hook, &opts);
  if (err == -EINVAL) {
    ThrowErrno(env, "bpf_tc_attach", err, spec.Context() + "; is there a clsact qdisc (tcHookCreate)?");
  }
  if (err) ThrowErrno(env, "bpf_tc_attach", err, spec.Context());
  Napi::Object out = Napi::Object::New(env);
  out.Set("progId", opts.prog_id);
  return out;
}

void TcDetach(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  TcSpec spec = ArgTcSpec(env, ArgObject(env, info[0], "spec"), true);
  bpf_tc_hook hook = MakeHook(spec.ifindex, spec.AttachPoint());
  bpf_tc_opts opts = MakeTcOpts(spec.handle, spec.priority);
  int err = bpf_tc_detach(&hook, &opts);
  // No clsact qdisc (or no filter chain left on it): the filter is not there either.
  if (err == -EINVAL) ThrowErrno(env, "bpf_tc_detach", ENOENT, spec.Context() + ", no clsact qdisc or filter chain");
  if (err) ThrowErrno(env, "bpf_tc_detach", err, spec.Context());
}

Napi::Value TcQuery(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  TcSpec spec = ArgTcSpec(env, ArgObject(env, info[0], "spec"), true);
  bpf_tc_hook hook = MakeHook(spec.ifindex, spec.AttachPoint());
  bpf_tc_opts opts = MakeTcOpts(spec.handle, spec.priority);
  int err = bpf_tc_query(&hook, &opts);
  // ENOENT: no such filter. EINVAL (the arguments being valid): no clsact qdisc
  // or no filter chain on it. Either way nothing is attached there.
  if (err == -ENOENT || err == -EINVAL) return env.Null();
  if (err) ThrowErrno(env, "bpf_tc_query", err, spec.Context());
  return Napi::Number::New(env, opts.prog_id);
}

// ---- XDP ---------------------------------------------------------------------------

void XdpAttach(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  uint32_t ifindex = ArgU32(env, info[0], "ifindex");
  int32_t progFd = ArgI32(env, info[1], "progFd");
  uint32_t flags = ArgU32(env, info[2], "flags");
  int err = bpf_xdp_attach(static_cast<int>(ifindex), progFd, flags, nullptr);
  if (err) {
    ThrowErrno(env, "bpf_xdp_attach", err,
               "ifindex " + std::to_string(ifindex) + ", flags " + std::to_string(flags));
  }
}

void XdpDetach(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  uint32_t ifindex = ArgU32(env, info[0], "ifindex");
  uint32_t flags = ArgU32(env, info[1], "flags");
  int err = bpf_xdp_detach(static_cast<int>(ifindex), flags, nullptr);
  if (err) {
    ThrowErrno(env, "bpf_xdp_detach", err,
               "ifindex " + std::to_string(ifindex) + ", flags " + std::to_string(flags));
  }
}

Napi::Value XdpQuery(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  uint32_t ifindex = ArgU32(env, info[0], "ifindex");
  bpf_xdp_query_opts opts;
  memset(&opts, 0, sizeof(opts));
  opts.sz = sizeof(opts);
  int err = bpf_xdp_query(static_cast<int>(ifindex), 0, &opts);
  if (err) ThrowErrno(env, "bpf_xdp_query", err, "ifindex " + std::to_string(ifindex));
  // The netlink dump behind bpf_xdp_query answers "nothing attached" for an
  // interface that does not exist; say ENODEV like the tc and TCX calls do.
  char name[IF_NAMESIZE];
  if (opts.attach_mode == 0 && !if_indextoname(ifindex, name)) {
    ThrowErrno(env, "bpf_xdp_query", ENODEV, "ifindex " + std::to_string(ifindex));
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("attachMode", opts.attach_mode);
  o.Set("progId", opts.prog_id);
  o.Set("drvProgId", opts.drv_prog_id);
  o.Set("skbProgId", opts.skb_prog_id);
  o.Set("hwProgId", opts.hw_prog_id);
  return o;
}

}  // namespace

void InitAttachFunctions(Napi::Env env, Napi::Object exports) {
  exports.Set("createTcxLink", Napi::Function::New<CreateTcxLink>(env, "createTcxLink"));
  exports.Set("tcxQuery", Napi::Function::New<TcxQuery>(env, "tcxQuery"));
  exports.Set("tcHookCreate", Napi::Function::New<TcHookCreate>(env, "tcHookCreate"));
  exports.Set("tcHookDestroy", Napi::Function::New<TcHookDestroy>(env, "tcHookDestroy"));
  exports.Set("tcAttach", Napi::Function::New<TcAttach>(env, "tcAttach"));
  exports.Set("tcDetach", Napi::Function::New<TcDetach>(env, "tcDetach"));
  exports.Set("tcQuery", Napi::Function::New<TcQuery>(env, "tcQuery"));
  exports.Set("xdpAttach", Napi::Function::New<XdpAttach>(env, "xdpAttach"));
  exports.Set("xdpDetach", Napi::Function::New<XdpDetach>(env, "xdpDetach"));
  exports.Set("xdpQuery", Napi::Function::New<XdpQuery>(env, "xdpQuery"));
}

}  // namespace netoken
