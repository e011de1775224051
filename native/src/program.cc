// BPF program handles: info, pinning, BPF_PROG_TEST_RUN.
#include "netoken.h"

#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <ctime>

namespace netoken {

Napi::Function ProgramHandle::Define(Napi::Env env) {
  return DefineClass(env, "BpfProgram",
                     {
                         InstanceAccessor<&ProgramHandle::Fd>("fd"),
                         InstanceAccessor<&ProgramHandle::Info>("info"),
                         InstanceMethod<&ProgramHandle::Pin>("pin"),
                         InstanceMethod<&ProgramHandle::TestRun>("testRun"),
                         InstanceMethod<&ProgramHandle::Close>("close"),
                     });
}

Napi::Object ProgramHandle::FromFd(Napi::Env env, UniqueFd fd) {
  bpf_prog_info info;
  memset(&info, 0, sizeof(info));
  uint32_t len = sizeof(info);
  int err = bpf_obj_get_info_by_fd(fd.get(), &info, &len);
  if (err) ThrowErrno(env, "bpf_obj_get_info_by_fd", err, "program fd " + std::to_string(fd.get()));
  Napi::Object js = Data(env)->programCtor.New({ConstructToken(env)});
  ProgramHandle *self = Unwrap(js);
  self->fd_ = fd.release();
  self->info_ = info;
  return js;
}

ProgramHandle *ProgramHandle::FromValue(Napi::Env env, const Napi::Value &v, const char *what) {
  if (!v.IsObject() || !v.As<Napi::Object>().InstanceOf(Data(env)->programCtor.Value())) {
    ThrowTypeError(env, std::string(what) + " must be a program handle");
  }
  ProgramHandle *prog = Unwrap(v.As<Napi::Object>());
  if (prog->fd_ < 0) ThrowErrno(env, "bpf_prog_fd", EBADF, prog->Describe() + " is closed");
  return prog;
}

ProgramHandle::ProgramHandle(const Napi::CallbackInfo &info)
    : Napi::ObjectWrap<ProgramHandle>(info) {
  CheckConstructToken(info, "BpfProgram",
                      "openObject().program(), programFromPin() or programFromId()");
}

ProgramHandle::~ProgramHandle() {
  if (fd_ >= 0) close(fd_);
}

std::string ProgramHandle::Describe() const {
  return std::string("program ") + info_.name + " id " + std::to_string(info_.id);
}

Napi::Value ProgramHandle::Fd(const Napi::CallbackInfo &info) {
  return Napi::Number::New(info.Env(), fd_);
}

Napi::Value ProgramHandle::Info(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  static const char hex[] = "0123456789abcdef";
  std::string tag;
  for (uint8_t b : info_.tag) {
    tag += hex[b >> 4];
    tag += hex[b & 15];
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("name", info_.name);
  o.Set("type", info_.type);
  o.Set("id", info_.id);
  o.Set("tag", tag);
  return o;
}

void ProgramHandle::Pin(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  std::string path = ArgString(env, info[0], "path");
  if (fd_ < 0) ThrowErrno(env, "bpf_obj_pin", EBADF, Describe() + " is closed");
  int err = bpf_obj_pin(fd_, path.c_str());
  if (err) ThrowErrno(env, "bpf_obj_pin", err, Describe() + " at " + path);
}

Napi::Value ProgramHandle::TestRun(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  Napi::Object o = ArgObject(env, info[0], "options");
  Bytes data = ArgBytes(env, o.Get("data"), "options.data");
  uint32_t repeat = ArgU32Or(env, o.Get("repeat"), "options.repeat", 1);
  uint32_t sizeOut = ArgU32Or(env, o.Get("dataSizeOut"), "options.dataSizeOut",
                              static_cast<uint32_t>(data.length + 256));
  Napi::Value ctxValue = o.Get("ctxIn");
  bool hasCtx = !ctxValue.IsUndefined() && !ctxValue.IsNull();
  Bytes ctx{nullptr, 0};
  if (hasCtx) ctx = ArgBytes(env, ctxValue, "options.ctxIn");
  if (repeat > INT32_MAX) ThrowRangeError(env, "options.repeat must be at most 2147483647");
  // The kernel's own limit on test packets is far below this; it only stops a typo allocating gigabytes.
  if (sizeOut > (64u << 20)) ThrowRangeError(env, "options.dataSizeOut must be at most 64 MiB");
  if (fd_ < 0) ThrowErrno(env, "bpf_prog_test_run_opts", EBADF, Describe() + " is closed");

  std::vector<uint8_t> out(sizeOut);
  std::vector<uint8_t> ctxOut(ctx.length);
  bpf_test_run_opts opts;
  memset(&opts, 0, sizeof(opts));
  opts.sz = sizeof(opts);
  opts.data_in = data.data;
  opts.data_size_in = static_cast<uint32_t>(data.length);
  opts.data_out = sizeOut ? out.data() : nullptr;
  opts.data_size_out = sizeOut;
  if (hasCtx && ctx.length) {
    opts.ctx_in = ctx.data;
    opts.ctx_size_in = static_cast<uint32_t>(ctx.length);
    opts.ctx_out = ctxOut.data();
    opts.ctx_size_out = static_cast<uint32_t>(ctxOut.size());
  }
  opts.repeat = static_cast<int>(repeat);

  // The CPU time this thread spends in the call: the runs themselves (the kernel's
  // duration is their mean, in whole ns) plus the call's fixed cost, which over many
  // repetitions is a small part; unlike wall time it leaves out time the thread waited.
  timespec cpu0{}, cpu1{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &cpu0);
  int err = bpf_prog_test_run_opts(fd_, &opts);
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &cpu1);
  if (err == -ENOSPC) {
    ThrowErrno(env, "bpf_prog_test_run_opts", err,
               Describe() + ": output packet is " + std::to_string(opts.data_size_out) +
                   " bytes, dataSizeOut " + std::to_string(sizeOut));
  }
  if (err) ThrowErrno(env, "bpf_prog_test_run_opts", err, Describe());

  // The kernel reports the output packet's real length in data_size_out.
  size_t outLen = opts.data_size_out < sizeOut ? opts.data_size_out : sizeOut;
  Napi::Object result = Napi::Object::New(env);
  result.Set("retval", static_cast<int32_t>(opts.retval));
  result.Set("data", Napi::Buffer<uint8_t>::Copy(env, out.data(), outLen));
  result.Set("duration", opts.duration);
  result.Set("cpuNs", static_cast<double>(cpu1.tv_sec - cpu0.tv_sec) * 1e9 + static_cast<double>(cpu1.tv_nsec - cpu0.tv_nsec));
  if (hasCtx) {
    size_t ctxLen = opts.ctx_size_out < ctxOut.size() ? opts.ctx_size_out : ctxOut.size();
    result.Set("ctxOut", Napi::Buffer<uint8_t>::Copy(env, ctxOut.data(), ctxLen));
  } else {
    result.Set("ctxOut", env.Null());
  }
  return result;
}

void ProgramHandle::Close(const Napi::CallbackInfo &) {
  if (fd_ >= 0) {
    close(fd_);
    fd_ = -1;
  }
}

// ---- module functions --------------------------------------------------------------

static Napi::Value ProgramFromPin(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  std::string path = ArgString(env, info[0], "path");
  int fd = bpf_obj_get(path.c_str());
  if (fd < 0) ThrowErrno(env, "bpf_obj_get", fd, path);
  UniqueFd owned(fd);
  CheckFdKind(env, fd, "bpf-prog", "bpf_obj_get", path);
  return ProgramHandle::FromFd(env, std::move(owned));
}

static Napi::Value ProgramFromId(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  uint32_t id = ArgU32(env, info[0], "id");
  int fd = bpf_prog_get_fd_by_id(id);
  if (fd < 0) ThrowErrno(env, "bpf_prog_get_fd_by_id", fd, "program id " + std::to_string(id));
  return ProgramHandle::FromFd(env, UniqueFd(fd));
}

void InitProgramFunctions(Napi::Env env, Napi::Object exports) {
  exports.Set("programFromPin", Napi::Function::New<ProgramFromPin>(env, "programFromPin"));
  exports.Set("programFromId", Napi::Function::New<ProgramFromId>(env, "programFromId"));
}

}  // namespace netoken
