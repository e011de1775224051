// Error objects with code/errno/syscall, and the capture of libbpf's log.
#include "netoken.h"

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <mutex>

namespace netoken {

namespace {

// Kernel-internal errno that BPF syscalls leak to userspace; glibc has no name for it.
constexpr int kENOTSUPP = 524;

std::string ErrnoName(int err) {
  if (err == kENOTSUPP) return "ENOTSUPP";
  static const char *const kLibbpfNames[] = {
      "LIBELF", "FORMAT", "KVERSION", "ENDIAN", "INTERNAL", "RELOC",  "LOAD",
      "VERIFY", "PROG2BIG", "KVER",   "PROGTYPE", "WRNGPID", "INVSEQ", "NLPARSE",
  };
  const int first = LIBBPF_ERRNO__LIBELF;
  const int count = static_cast<int>(sizeof(kLibbpfNames) / sizeof(kLibbpfNames[0]));
  if (err >= first && err < first + count) {
    return std::string("LIBBPF_ERRNO__") + kLibbpfNames[err - first];
  }
  if (const char *name = strerrorname_np(err)) return name;
  return "ERRNO_" + std::to_string(err);
}

std::string ErrnoText(int err) {
  if (err == kENOTSUPP) return "Operation not supported";
  char buf[256];
  libbpf_strerror(err, buf, sizeof(buf));
  return buf;
}

}  // namespace

void ThrowErrno(Napi::Env env, const char *syscall, int err, const std::string &context,
                const std::string &log) {
  if (err < 0) err = -err;
  // A failing call that left no errno is a bug somewhere below us; say so rather than "Success".
  if (err == 0) err = EIO;
  std::string msg = std::string(syscall) + ": " + ErrnoText(err);
  if (!context.empty()) msg += " (" + context + ")";
  Napi::Error error = Napi::Error::New(env, msg);
  Napi::Object obj = error.Value();
  obj.Set("code", ErrnoName(err));
  obj.Set("errno", err);
  obj.Set("syscall", syscall);
  if (!log.empty()) obj.Set("log", log);
  throw error;
}

void ThrowTypeError(Napi::Env env, const std::string &msg, const char *code) {
  Napi::TypeError error = Napi::TypeError::New(env, msg);
  error.Value().Set("code", code);
  throw error;
}

void ThrowRangeError(Napi::Env env, const std::string &msg) {
  Napi::RangeError error = Napi::RangeError::New(env, msg);
  error.Value().Set("code", "ERR_OUT_OF_RANGE");
  throw error;
}

// ---- libbpf log capture ----------------------------------------------------------

namespace {

// Enough for the tail of a verifier log plus libbpf's own lines around it.
constexpr size_t kLogRingBytes = 64 * 1024;

std::mutex logMu;
std::string logRing;     // the last kLogRingBytes of output
uint64_t logTotal = 0;   // bytes ever appended

int CaptureLibbpfPrint(enum libbpf_print_level level, const char *fmt, va_list args) {
  // Debug output is a trace of every relocation: too chatty to keep.
  if (level == LIBBPF_DEBUG) return 0;
  va_list copy;
  va_copy(copy, args);
  char small[1024];
  int n = vsnprintf(small, sizeof(small), fmt, args);
  std::string line;
  if (n >= 0 && static_cast<size_t>(n) < sizeof(small)) {
    line.assign(small, static_cast<size_t>(n));
  } else if (n >= 0) {
    line.resize(static_cast<size_t>(n) + 1);
    vsnprintf(&line[0], line.size(), fmt, copy);
    line.resize(static_cast<size_t>(n));
  }
  va_end(copy);
  std::lock_guard<std::mutex> lock(logMu);
  logRing += line;
  logTotal += line.size();
  if (logRing.size() > kLogRingBytes) logRing.erase(0, logRing.size() - kLogRingBytes);
  return n;
}

}  // namespace

void InstallLibbpfLogCapture() {
  static std::once_flag once;
  std::call_once(once, [] { libbpf_set_print(CaptureLibbpfPrint); });
}

uint64_t LogMark() {
  std::lock_guard<std::mutex> lock(logMu);
  return logTotal;
}

std::string LogSince(uint64_t mark, size_t maxBytes) {
  std::lock_guard<std::mutex> lock(logMu);
  uint64_t n = logTotal - mark;
  if (n > logRing.size()) n = logRing.size();
  if (n > maxBytes) n = maxBytes;
  return logRing.substr(logRing.size() - static_cast<size_t>(n));
}

}  // namespace netoken
