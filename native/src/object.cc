// Opened and loaded BPF ELF objects (bpf_object).
#include "netoken.h"

#include <cerrno>
#include <cstring>

namespace netoken {

Napi::Function ObjectHandle::Define(Napi::Env env) {
  return DefineClass(env, "BpfObject",
                     {
                         InstanceAccessor<&ObjectHandle::Path>("path"),
                         InstanceMethod<&ObjectHandle::ProgramNames>("programNames"),
                         InstanceMethod<&ObjectHandle::MapNames>("mapNames"),
                         InstanceMethod<&ObjectHandle::Program>("program"),
                         InstanceMethod<&ObjectHandle::Map>("map"),
                         InstanceMethod<&ObjectHandle::Close>("close"),
                     });
}

Napi::Object ObjectHandle::Wrap(Napi::Env env, bpf_object *obj, const std::string &path) {
  Napi::Object js;
  try {
    js = Data(env)->objectCtor.New({ConstructToken(env)});
  } catch (...) {
    bpf_object__close(obj);
    throw;
  }
  ObjectHandle *self = Unwrap(js);
  self->obj_ = obj;
  self->path_ = path;
  return js;
}

ObjectHandle::ObjectHandle(const Napi::CallbackInfo &info) : Napi::ObjectWrap<ObjectHandle>(info) {
  CheckConstructToken(info, "BpfObject", "openObject()");
}

ObjectHandle::~ObjectHandle() {
  // Closing the object closes its own fds; handles given out hold dup'd fds and stay valid.
  if (obj_) bpf_object__close(obj_);
}

void ObjectHandle::CheckOpen(Napi::Env env, const char *op) const {
  if (!obj_) ThrowErrno(env, op, EBADF, "object " + path_ + " is closed");
}

Napi::Value ObjectHandle::Path(const Napi::CallbackInfo &info) {
  return Napi::String::New(info.Env(), path_);
}

// The names of an object's programs or maps in ELF order: next is bpf_object__next_program or
// bpf_object__next_map, name the matching bpf_program__name or bpf_map__name.
template <typename T, typename Next, typename Name>
static Napi::Array Names(Napi::Env env, const bpf_object *obj, Next next, Name name) {
  Napi::Array out = Napi::Array::New(env);
  uint32_t i = 0;
  for (T *it = next(obj, nullptr); it; it = next(obj, it)) out.Set(i++, name(it));
  return out;
}

Napi::Value ObjectHandle::ProgramNames(const Napi::CallbackInfo &info) {
  CheckOpen(info.Env(), "bpf_object__next_program");
  return Names<bpf_program>(info.Env(), obj_, bpf_object__next_program, bpf_program__name);
}

Napi::Value ObjectHandle::MapNames(const Napi::CallbackInfo &info) {
  CheckOpen(info.Env(), "bpf_object__next_map");
  return Names<bpf_map>(info.Env(), obj_, bpf_object__next_map, bpf_map__name);
}

Napi::Value ObjectHandle::Program(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  std::string name = ArgString(env, info[0], "program name");
  CheckOpen(env, "bpf_object__find_program_by_name");
  bpf_program *prog = bpf_object__find_program_by_name(obj_, name.c_str());
  if (!prog) {
    ThrowErrno(env, "bpf_object__find_program_by_name", ENOENT,
               "no program " + name + " in " + path_);
  }
  int fd = bpf_program__fd(prog);
  if (fd < 0) ThrowErrno(env, "bpf_program__fd", fd, "program " + name + " in " + path_);
  return ProgramHandle::FromFd(env, DupFd(env, fd, "program " + name));
}

Napi::Value ObjectHandle::Map(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  std::string name = ArgString(env, info[0], "map name");
  CheckOpen(env, "bpf_object__find_map_by_name");
  bpf_map *map = bpf_object__find_map_by_name(obj_, name.c_str());
  if (!map) ThrowErrno(env, "bpf_object__find_map_by_name", ENOENT, "no map " + name + " in " + path_);
  int fd = bpf_map__fd(map);
  if (fd < 0) ThrowErrno(env, "bpf_map__fd", fd, "map " + name + " in " + path_);
  return MapHandle::FromFd(env, DupFd(env, fd, "map " + name));
}

void ObjectHandle::Close(const Napi::CallbackInfo &) {
  if (obj_) {
    bpf_object__close(obj_);
    obj_ = nullptr;
  }
}

// openObject(path, {pinRoot}): open, then load. Maps declared with
// LIBBPF_PIN_BY_NAME are reused from pinRoot when a compatible pin exists there
// and pinned there otherwise; this is how a restarted agent finds its live maps.
static Napi::Value OpenObject(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  std::string path = ArgString(env, info[0], "path");
  std::string pinRoot;
  bool hasPinRoot = false;
  if (!info[1].IsUndefined() && !info[1].IsNull()) {
    Napi::Object opts = ArgObject(env, info[1], "options");
    Napi::Value v = opts.Get("pinRoot");
    if (!v.IsUndefined() && !v.IsNull()) {
      pinRoot = ArgString(env, v, "options.pinRoot");
      hasPinRoot = true;
    }
  }

  bpf_object_open_opts opts;
  memset(&opts, 0, sizeof(opts));
  opts.sz = sizeof(opts);
  if (hasPinRoot) opts.pin_root_path = pinRoot.c_str();

  uint64_t mark = LogMark();
  errno = 0;
  bpf_object *obj = bpf_object__open_file(path.c_str(), &opts);
  if (!obj) {
    int err = errno;
    ThrowErrno(env, "bpf_object__open_file", err, path, LogSince(mark));
  }
  int err = bpf_object__load(obj);
  if (err) {
    std::string log = LogSince(mark);
    bpf_object__close(obj);
    std::string context = path;
    if (hasPinRoot) context += ", pinRoot " + pinRoot;
    ThrowErrno(env, "bpf_object__load", err, context, log);
  }
  return ObjectHandle::Wrap(env, obj, path);
}

void InitObjectFunctions(Napi::Env env, Napi::Object exports) {
  exports.Set("openObject", Napi::Function::New<OpenObject>(env, "openObject"));
}

}  // namespace netoken
