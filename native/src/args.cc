// Argument conversion, fd ownership and the construction token.
#include "netoken.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <limits>

namespace netoken {

// ---- arguments ---------------------------------------------------------------------

std::string ArgString(Napi::Env env, const Napi::Value &v, const char *what) {
  if (!v.IsString()) ThrowTypeError(env, std::string(what) + " must be a string");
  return v.As<Napi::String>().Utf8Value();
}

static double ArgInteger(Napi::Env env, const Napi::Value &v, const char *what, double min,
                         double max) {
  if (!v.IsNumber()) ThrowTypeError(env, std::string(what) + " must be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d) || std::trunc(d) != d || d < min || d > max) {
    ThrowRangeError(env, std::string(what) + " must be an integer in [" +
                             std::to_string(static_cast<long long>(min)) + ", " +
                             std::to_string(static_cast<long long>(max)) + "], got " +
                             v.ToString().Utf8Value());
  }
  return d;
}

uint32_t ArgU32(Napi::Env env, const Napi::Value &v, const char *what) {
  return static_cast<uint32_t>(ArgInteger(env, v, what, 0, std::numeric_limits<uint32_t>::max()));
}

uint32_t ArgU32Or(Napi::Env env, const Napi::Value &v, const char *what, uint32_t fallback) {
  if (v.IsUndefined() || v.IsNull()) return fallback;
  return ArgU32(env, v, what);
}

int32_t ArgI32(Napi::Env env, const Napi::Value &v, const char *what) {
  return static_cast<int32_t>(ArgInteger(env, v, what, std::numeric_limits<int32_t>::min(),
                                         std::numeric_limits<int32_t>::max()));
}

bool ArgBool(Napi::Env env, const Napi::Value &v, const char *what) {
  if (!v.IsBoolean()) ThrowTypeError(env, std::string(what) + " must be a boolean");
  return v.As<Napi::Boolean>().Value();
}

Bytes ArgBytes(Napi::Env env, const Napi::Value &v, const char *what) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    ThrowTypeError(env, std::string(what) + " must be a Buffer or Uint8Array");
  }
  Napi::Uint8Array a = v.As<Napi::Uint8Array>();
  return Bytes{a.Data(), a.ElementLength()};
}

Napi::Object ArgObject(Napi::Env env, const Napi::Value &v, const char *what) {
  if (!v.IsObject()) ThrowTypeError(env, std::string(what) + " must be an object");
  return v.As<Napi::Object>();
}

Direction ArgDirection(Napi::Env env, const Napi::Value &v) {
  if (v.IsString()) {
    std::string s = v.As<Napi::String>().Utf8Value();
    if (s == "ingress") return Direction::Ingress;
    if (s == "egress") return Direction::Egress;
  }
  ThrowTypeError(env, "direction must be 'ingress' or 'egress'", "ERR_INVALID_ARG_VALUE");
}

const char *DirectionName(Direction d) { return d == Direction::Ingress ? "ingress" : "egress"; }

// ---- fds -------------------------------------------------------------------------------

UniqueFd::~UniqueFd() {
  if (fd_ >= 0) close(fd_);
}

UniqueFd DupFd(Napi::Env env, int fd, const std::string &context) {
  int copy = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (copy < 0) ThrowErrno(env, "fcntl(F_DUPFD_CLOEXEC)", errno, context);
  return UniqueFd(copy);
}

std::string FdKind(int fd) {
  char link[64];
  char target[256];
  snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
  ssize_t n = readlink(link, target, sizeof(target) - 1);
  if (n < 0) return "";
  target[n] = '\0';
  std::string s(target);
  const std::string prefix = "anon_inode:";
  return s.compare(0, prefix.size(), prefix) == 0 ? s.substr(prefix.size()) : s;
}

void CheckFdKind(Napi::Env env, int fd, const char *kind, const char *syscall,
                 const std::string &context) {
  std::string got = FdKind(fd);
  if (got == kind) return;
  // Kernels before 6.9 or so named link files "bpf_link"; later ones "bpf-link".
  if (std::string(kind) == "bpf-link" && got == "bpf_link") return;
  ThrowErrno(env, syscall, EINVAL, context + " is a " + (got.empty() ? "non-BPF object" : got) +
                                       ", not a " + kind);
}

// ---- construction token -----------------------------------------------------------------

static int constructTokenTag;

Napi::Value ConstructToken(Napi::Env env) {
  return Napi::External<int>::New(env, &constructTokenTag);
}

void CheckConstructToken(const Napi::CallbackInfo &info, const char *cls, const char *factory) {
  if (info.Length() >= 1 && info[0].IsExternal() &&
      info[0].As<Napi::External<int>>().Data() == &constructTokenTag) {
    return;
  }
  ThrowTypeError(info.Env(), std::string(cls) + " cannot be constructed directly; use " + factory,
                 "ERR_ILLEGAL_CONSTRUCTOR");
}

AddonData *Data(Napi::Env env) { return env.GetInstanceData<AddonData>(); }

}  // namespace netoken
