// Shared declarations of the netoken native addon.
//
// Conventions: every libbpf or syscall failure is thrown (as a C++ exception
// that node-addon-api turns into a JS exception) by ThrowErrno, which gives the
// Error `code`, `errno` and `syscall`. Handles own exactly one fd (or one
// bpf_object) and release it in close() or, if JS forgets, in the destructor
// that runs from the GC finalizer.
#pragma once

#include <napi.h>

#include <cstdint>
#include <string>
#include <vector>

extern "C" {
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
}

namespace netoken {

// ---- errors.cc ---------------------------------------------------------------

// Throws Error{code, errno, syscall[, log]} with the message
// "<syscall>: <strerror>[ (<context>)]". err may be negative (libbpf style).
[[noreturn]] void ThrowErrno(Napi::Env env, const char *syscall, int err,
                             const std::string &context = "", const std::string &log = "");
// Throws a TypeError/RangeError with a Node-style `code`.
[[noreturn]] void ThrowTypeError(Napi::Env env, const std::string &msg,
                                 const char *code = "ERR_INVALID_ARG_TYPE");
[[noreturn]] void ThrowRangeError(Napi::Env env, const std::string &msg);

// libbpf's own log output is kept in a ring instead of going to stderr, so a
// failed load can carry the verifier's explanation in `err.log`.
void InstallLibbpfLogCapture();
// Position in the captured log; pass it to LogSince after the call.
uint64_t LogMark();
// The last maxBytes of what libbpf logged since mark.
std::string LogSince(uint64_t mark, size_t maxBytes = 4096);

// ---- args.cc -------------------------------------------------------------------

struct Bytes {
  const uint8_t *data;
  size_t length;
};

std::string ArgString(Napi::Env env, const Napi::Value &v, const char *what);
uint32_t ArgU32(Napi::Env env, const Napi::Value &v, const char *what);
// undefined/null -> fallback
uint32_t ArgU32Or(Napi::Env env, const Napi::Value &v, const char *what, uint32_t fallback);
int32_t ArgI32(Napi::Env env, const Napi::Value &v, const char *what);
bool ArgBool(Napi::Env env, const Napi::Value &v, const char *what);
// Any Uint8Array (Buffer included).
Bytes ArgBytes(Napi::Env env, const Napi::Value &v, const char *what);
Napi::Object ArgObject(Napi::Env env, const Napi::Value &v, const char *what);

enum class Direction { Ingress, Egress };
Direction ArgDirection(Napi::Env env, const Napi::Value &v);
const char *DirectionName(Direction d);

// ---- fds ------------------------------------------------------------------------

// Owns one fd until release().
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(const UniqueFd &) = delete;
  UniqueFd &operator=(const UniqueFd &) = delete;
  UniqueFd(UniqueFd &&o) noexcept : fd_(o.release()) {}
  ~UniqueFd();
  int get() const { return fd_; }
  int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  int fd_ = -1;
};

// dup(fd) with O_CLOEXEC; throws on failure.
UniqueFd DupFd(Napi::Env env, int fd, const std::string &context);

// What an fd refers to, from /proc/self/fd: "bpf-map", "bpf-prog", "bpf-link", ...
std::string FdKind(int fd);
// Throws EINVAL (as `syscall`) unless fd is of the expected kind.
void CheckFdKind(Napi::Env env, int fd, const char *kind, const char *syscall,
                 const std::string &context);

// ---- handles --------------------------------------------------------------------

struct AddonData {
  Napi::FunctionReference objectCtor;
  Napi::FunctionReference mapCtor;
  Napi::FunctionReference programCtor;
  Napi::FunctionReference linkCtor;
  Napi::FunctionReference captureCtor;
};

AddonData *Data(Napi::Env env);

// Handle classes refuse construction from JS: only this token, which JS cannot
// obtain, lets the addon create instances.
Napi::Value ConstructToken(Napi::Env env);
void CheckConstructToken(const Napi::CallbackInfo &info, const char *cls, const char *factory);

class MapHandle : public Napi::ObjectWrap<MapHandle> {
 public:
  static Napi::Function Define(Napi::Env env);
  // Takes ownership of fd; reads the map's info first (throws on failure).
  static Napi::Object FromFd(Napi::Env env, UniqueFd fd);

  explicit MapHandle(const Napi::CallbackInfo &info);
  ~MapHandle() override;

 private:
  Napi::Value Fd(const Napi::CallbackInfo &info);
  Napi::Value Info(const Napi::CallbackInfo &info);
  Napi::Value Lookup(const Napi::CallbackInfo &info);
  void Update(const Napi::CallbackInfo &info);
  Napi::Value Delete(const Napi::CallbackInfo &info);
  Napi::Value Keys(const Napi::CallbackInfo &info);
  void Pin(const Napi::CallbackInfo &info);
  void Close(const Napi::CallbackInfo &info);

  void CheckOpen(Napi::Env env, const char *op) const;
  std::string Describe() const;
  size_t ValueBytes() const;
  Bytes KeyArg(Napi::Env env, const Napi::Value &v) const;

  int fd_ = -1;
  bpf_map_info info_{};
  size_t valueBytes_ = 0;
};

class ProgramHandle : public Napi::ObjectWrap<ProgramHandle> {
 public:
  static Napi::Function Define(Napi::Env env);
  static Napi::Object FromFd(Napi::Env env, UniqueFd fd);
  // The open program behind a JS value, or a TypeError.
  static ProgramHandle *FromValue(Napi::Env env, const Napi::Value &v, const char *what);

  explicit ProgramHandle(const Napi::CallbackInfo &info);
  ~ProgramHandle() override;

  int fd() const { return fd_; }
  uint32_t id() const { return info_.id; }
  std::string Describe() const;

 private:
  Napi::Value Fd(const Napi::CallbackInfo &info);
  Napi::Value Info(const Napi::CallbackInfo &info);
  void Pin(const Napi::CallbackInfo &info);
  Napi::Value TestRun(const Napi::CallbackInfo &info);
  void Close(const Napi::CallbackInfo &info);

  int fd_ = -1;
  bpf_prog_info info_{};
};

class LinkHandle : public Napi::ObjectWrap<LinkHandle> {
 public:
  static Napi::Function Define(Napi::Env env);
  static Napi::Object FromFd(Napi::Env env, UniqueFd fd);

  explicit LinkHandle(const Napi::CallbackInfo &info);
  ~LinkHandle() override;

 private:
  Napi::Value Fd(const Napi::CallbackInfo &info);
  Napi::Value Info(const Napi::CallbackInfo &info);
  void Update(const Napi::CallbackInfo &info);
  void Pin(const Napi::CallbackInfo &info);
  void Detach(const Napi::CallbackInfo &info);
  void Close(const Napi::CallbackInfo &info);

  void CheckOpen(Napi::Env env, const char *op) const;
  std::string Describe() const;

  int fd_ = -1;
  uint32_t id_ = 0;
};

class ObjectHandle : public Napi::ObjectWrap<ObjectHandle> {
 public:
  static Napi::Function Define(Napi::Env env);
  // Takes ownership of a loaded bpf_object.
  static Napi::Object Wrap(Napi::Env env, bpf_object *obj, const std::string &path);

  explicit ObjectHandle(const Napi::CallbackInfo &info);
  ~ObjectHandle() override;

 private:
  Napi::Value Path(const Napi::CallbackInfo &info);
  Napi::Value ProgramNames(const Napi::CallbackInfo &info);
  Napi::Value MapNames(const Napi::CallbackInfo &info);
  Napi::Value Program(const Napi::CallbackInfo &info);
  Napi::Value Map(const Napi::CallbackInfo &info);
  void Close(const Napi::CallbackInfo &info);

  void CheckOpen(Napi::Env env, const char *op) const;

  bpf_object *obj_ = nullptr;
  std::string path_;
};

// ---- module functions (one file per area) -----------------------------------------

void InitObjectFunctions(Napi::Env env, Napi::Object exports);  // object.cc
void InitMapFunctions(Napi::Env env, Napi::Object exports);     // map.cc
void InitProgramFunctions(Napi::Env env, Napi::Object exports); // program.cc
void InitLinkFunctions(Napi::Env env, Napi::Object exports);    // link.cc
void InitAttachFunctions(Napi::Env env, Napi::Object exports);  // attach.cc
void InitBpffsFunctions(Napi::Env env, Napi::Object exports);   // bpffs.cc
void InitCaptureFunctions(Napi::Env env, Napi::Object exports); // capture.cc

int NumPossibleCpus(Napi::Env env);

}  // namespace netoken
