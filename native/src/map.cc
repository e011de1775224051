// BPF map handles: raw-byte CRUD, iteration, pinning, and the ways to get one.
#include "netoken.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace netoken {

namespace {

bool IsPerCpu(uint32_t type) {
  switch (type) {
    case BPF_MAP_TYPE_PERCPU_HASH:
    case BPF_MAP_TYPE_PERCPU_ARRAY:
    case BPF_MAP_TYPE_LRU_PERCPU_HASH:
    case BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE:
      return true;
    default:
      return false;
  }
}

}  // namespace

int NumPossibleCpus(Napi::Env env) {
  int n = libbpf_num_possible_cpus();
  if (n <= 0) ThrowErrno(env, "libbpf_num_possible_cpus", n);
  return n;
}

Napi::Function MapHandle::Define(Napi::Env env) {
  return DefineClass(env, "BpfMap",
                     {
                         InstanceAccessor<&MapHandle::Fd>("fd"),
                         InstanceAccessor<&MapHandle::Info>("info"),
                         InstanceMethod<&MapHandle::Lookup>("lookup"),
                         InstanceMethod<&MapHandle::Update>("update"),
                         InstanceMethod<&MapHandle::Delete>("delete"),
                         InstanceMethod<&MapHandle::Keys>("keys"),
                         InstanceMethod<&MapHandle::Pin>("pin"),
                         InstanceMethod<&MapHandle::Close>("close"),
                     });
}

Napi::Object MapHandle::FromFd(Napi::Env env, UniqueFd fd) {
  bpf_map_info info;
  memset(&info, 0, sizeof(info));
  uint32_t len = sizeof(info);
  int err = bpf_obj_get_info_by_fd(fd.get(), &info, &len);
  if (err) ThrowErrno(env, "bpf_obj_get_info_by_fd", err, "map fd " + std::to_string(fd.get()));
  // Per-CPU values are one slot per possible CPU, each rounded up to 8 bytes.
  size_t valueBytes = info.value_size;
  if (IsPerCpu(info.type)) {
    valueBytes = static_cast<size_t>(NumPossibleCpus(env)) * ((info.value_size + 7u) & ~7u);
  }
  Napi::Object js = Data(env)->mapCtor.New({ConstructToken(env)});
  MapHandle *self = Unwrap(js);
  self->fd_ = fd.release();
  self->info_ = info;
  self->valueBytes_ = valueBytes;
  return js;
}

MapHandle::MapHandle(const Napi::CallbackInfo &info) : Napi::ObjectWrap<MapHandle>(info) {
  CheckConstructToken(info, "BpfMap", "openObject().map(), mapFromPin(), mapFromId() or createMap()");
}

MapHandle::~MapHandle() {
  if (fd_ >= 0) close(fd_);
}

std::string MapHandle::Describe() const {
  return std::string("map ") + info_.name + " id " + std::to_string(info_.id);
}

void MapHandle::CheckOpen(Napi::Env env, const char *op) const {
  if (fd_ < 0) ThrowErrno(env, op, EBADF, Describe() + " is closed");
}

size_t MapHandle::ValueBytes() const { return valueBytes_; }

Bytes MapHandle::KeyArg(Napi::Env env, const Napi::Value &v) const {
  Bytes key = ArgBytes(env, v, "key");
  if (key.length != info_.key_size) {
    ThrowTypeError(env,
                   "key must be " + std::to_string(info_.key_size) + " bytes for " + Describe() +
                       ", got " + std::to_string(key.length),
                   "ERR_INVALID_ARG_VALUE");
  }
  return key;
}

Napi::Value MapHandle::Fd(const Napi::CallbackInfo &info) {
  return Napi::Number::New(info.Env(), fd_);
}

Napi::Value MapHandle::Info(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("name", info_.name);
  o.Set("type", info_.type);
  o.Set("id", info_.id);
  o.Set("keySize", info_.key_size);
  o.Set("valueSize", info_.value_size);
  o.Set("maxEntries", info_.max_entries);
  o.Set("flags", info_.map_flags);
  return o;
}

Napi::Value MapHandle::Lookup(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  Bytes key = KeyArg(env, info[0]);
  CheckOpen(env, "bpf_map_lookup_elem");
  std::vector<uint8_t> value(ValueBytes());
  int err = bpf_map_lookup_elem(fd_, key.data, value.data());
  if (err == -ENOENT) return env.Null();
  if (err) ThrowErrno(env, "bpf_map_lookup_elem", err, Describe());
  return Napi::Buffer<uint8_t>::Copy(env, value.data(), value.size());
}

void MapHandle::Update(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  Bytes key = KeyArg(env, info[0]);
  Bytes value = ArgBytes(env, info[1], "value");
  if (value.length != ValueBytes()) {
    std::string why = IsPerCpu(info_.type)
                          ? " (per-CPU: " + std::to_string(NumPossibleCpus(env)) + " CPUs x " +
                                std::to_string((info_.value_size + 7u) & ~7u) + ")"
                          : "";
    ThrowTypeError(env,
                   "value must be " + std::to_string(ValueBytes()) + " bytes for " + Describe() +
                       why + ", got " + std::to_string(value.length),
                   "ERR_INVALID_ARG_VALUE");
  }
  uint32_t flags = ArgU32Or(env, info[2], "flags", BPF_ANY);
  CheckOpen(env, "bpf_map_update_elem");
  int err = bpf_map_update_elem(fd_, key.data, value.data, flags);
  if (err) ThrowErrno(env, "bpf_map_update_elem", err, Describe());
}

Napi::Value MapHandle::Delete(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  Bytes key = KeyArg(env, info[0]);
  CheckOpen(env, "bpf_map_delete_elem");
  int err = bpf_map_delete_elem(fd_, key.data);
  if (err == -ENOENT) return Napi::Boolean::New(env, false);
  if (err) ThrowErrno(env, "bpf_map_delete_elem", err, Describe());
  return Napi::Boolean::New(env, true);
}

Napi::Value MapHandle::Keys(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  CheckOpen(env, "bpf_map_get_next_key");
  Napi::Array out = Napi::Array::New(env);
  std::vector<uint8_t> cur(info_.key_size), next(info_.key_size);
  bool first = true;
  // A map never holds more than max_entries keys; the bound also stops a walk
  // that concurrent deletes keep restarting from the first key.
  for (uint32_t n = 0; n < info_.max_entries; n++) {
    int err = bpf_map_get_next_key(fd_, first ? nullptr : cur.data(), next.data());
    if (err == -ENOENT) break;
    if (err) ThrowErrno(env, "bpf_map_get_next_key", err, Describe());
    out.Set(n, Napi::Buffer<uint8_t>::Copy(env, next.data(), next.size()));
    cur.swap(next);
    first = false;
  }
  return out;
}

void MapHandle::Pin(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  std::string path = ArgString(env, info[0], "path");
  CheckOpen(env, "bpf_obj_pin");
  int err = bpf_obj_pin(fd_, path.c_str());
  if (err) ThrowErrno(env, "bpf_obj_pin", err, Describe() + " at " + path);
}

void MapHandle::Close(const Napi::CallbackInfo &) {
  if (fd_ >= 0) {
    close(fd_);
    fd_ = -1;
  }
}

// ---- module functions --------------------------------------------------------------

static Napi::Value MapFromPin(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  std::string path = ArgString(env, info[0], "path");
  int fd = bpf_obj_get(path.c_str());
  if (fd < 0) ThrowErrno(env, "bpf_obj_get", fd, path);
  UniqueFd owned(fd);
  CheckFdKind(env, fd, "bpf-map", "bpf_obj_get", path);
  return MapHandle::FromFd(env, std::move(owned));
}

static Napi::Value MapFromId(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  uint32_t id = ArgU32(env, info[0], "id");
  int fd = bpf_map_get_fd_by_id(id);
  if (fd < 0) ThrowErrno(env, "bpf_map_get_fd_by_id", fd, "map id " + std::to_string(id));
  return MapHandle::FromFd(env, UniqueFd(fd));
}

static Napi::Value CreateMap(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  Napi::Object o = ArgObject(env, info[0], "options");
  uint32_t type = ArgU32(env, o.Get("type"), "options.type");
  uint32_t keySize = ArgU32(env, o.Get("keySize"), "options.keySize");
  uint32_t valueSize = ArgU32(env, o.Get("valueSize"), "options.valueSize");
  uint32_t maxEntries = ArgU32(env, o.Get("maxEntries"), "options.maxEntries");
  uint32_t flags = ArgU32Or(env, o.Get("flags"), "options.flags", 0);
  std::string name;
  Napi::Value nameValue = o.Get("name");
  if (!nameValue.IsUndefined() && !nameValue.IsNull()) {
    name = ArgString(env, nameValue, "options.name");
  }

  bpf_map_create_opts opts;
  memset(&opts, 0, sizeof(opts));
  opts.sz = sizeof(opts);
  opts.map_flags = flags;
  int fd = bpf_map_create(static_cast<bpf_map_type>(type), name.empty() ? nullptr : name.c_str(),
                          keySize, valueSize, maxEntries, &opts);
  if (fd < 0) {
    ThrowErrno(env, "bpf_map_create", fd,
               "type " + std::to_string(type) + (name.empty() ? "" : ", name " + name));
  }
  return MapHandle::FromFd(env, UniqueFd(fd));
}

void InitMapFunctions(Napi::Env env, Napi::Object exports) {
  exports.Set("mapFromPin", Napi::Function::New<MapFromPin>(env, "mapFromPin"));
  exports.Set("mapFromId", Napi::Function::New<MapFromId>(env, "mapFromId"));
  exports.Set("createMap", Napi::Function::New<CreateMap>(env, "createMap"));
}

}  // namespace netoken
