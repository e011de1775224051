// bpffs: detect and mount the BPF filesystem that pins live on, and lock a directory of it.
#include "netoken.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>

#include <unistd.h>

#include <cerrno>

namespace netoken {

namespace {

constexpr long kBpfFsMagic = 0xcafe4a11;  // BPF_FS_MAGIC

// A path that does not exist is not on bpffs; other failures are real errors.
Napi::Value IsBpffs(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  std::string path = ArgString(env, info[0], "path");
  struct statfs st;
  if (statfs(path.c_str(), &st) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) return Napi::Boolean::New(env, false);
    ThrowErrno(env, "statfs", errno, path);
  }
  return Napi::Boolean::New(env, static_cast<long>(st.f_type) == kBpfFsMagic);
}

// mkdir -p: each missing component gets mode 0755, like mkdir(1) would give it.
void MakeDirs(Napi::Env env, const std::string &path) {
  for (size_t i = 1; i <= path.size(); i++) {
    if (i != path.size() && path[i] != '/') continue;
    std::string prefix = path.substr(0, i);
    if (mkdir(prefix.c_str(), 0755) != 0 && errno != EEXIST) ThrowErrno(env, "mkdir", errno, prefix);
  }
}

void MountBpffs(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  std::string path = ArgString(env, info[0], "path");
  if (path.empty()) ThrowTypeError(env, "path must not be empty", "ERR_INVALID_ARG_VALUE");
  MakeDirs(env, path);
  // mode=0700: pins are reachable only by root, as on a systemd-mounted /sys/fs/bpf.
  if (mount("bpf", path.c_str(), "bpf", 0, "mode=0700") != 0) ThrowErrno(env, "mount", errno, path);
}

// An exclusive flock(2) on a directory: the fd that holds it (kept open for as long as the
// lock is wanted; the kernel drops it when the process exits, however it exits), or -1 when
// another open file holds it. O_CLOEXEC: programs the caller runs do not inherit the lock.
Napi::Value LockDir(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  std::string path = ArgString(env, info[0], "path");
  int fd = open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) ThrowErrno(env, "open", errno, path);
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    int err = errno;
    close(fd);
    if (err == EWOULDBLOCK) return Napi::Number::New(env, -1);
    ThrowErrno(env, "flock", err, path);
  }
  return Napi::Number::New(env, fd);
}

}  // namespace

void InitBpffsFunctions(Napi::Env env, Napi::Object exports) {
  exports.Set("isBpffs", Napi::Function::New<IsBpffs>(env, "isBpffs"));
  exports.Set("mountBpffs", Napi::Function::New<MountBpffs>(env, "mountBpffs"));
  exports.Set("lockDir", Napi::Function::New<LockDir>(env, "lockDir"));
}

}  // namespace netoken
