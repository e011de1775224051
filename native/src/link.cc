// bpf_link handles: info, update, pin, detach.
#include "netoken.h"

#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstring>

namespace netoken {

namespace {

// The installed UAPI headers (Linux 6.1) predate TCX, so the part of struct
// bpf_link_info we read is laid out here. The kernel fills what it knows and
// requires the rest of the buffer to be zero.
constexpr uint32_t kLinkTypeTcx = 11;  // BPF_LINK_TYPE_TCX

struct LinkInfoRaw {
  uint32_t type;
  uint32_t id;
  uint32_t progId;
  uint32_t pad;  // the union that follows is 8-byte aligned
  union {
    struct {
      uint32_t ifindex;
      uint32_t attachType;
    } tcx;
    uint8_t room[112];
  };
};
static_assert(offsetof(LinkInfoRaw, tcx) == offsetof(bpf_link_info, xdp),
              "link info union offset must match the kernel's");

}  // namespace

Napi::Function LinkHandle::Define(Napi::Env env) {
  return DefineClass(env, "BpfLink",
                     {
                         InstanceAccessor<&LinkHandle::Fd>("fd"),
                         InstanceMethod<&LinkHandle::Info>("info"),
                         InstanceMethod<&LinkHandle::Update>("update"),
                         InstanceMethod<&LinkHandle::Pin>("pin"),
                         InstanceMethod<&LinkHandle::Detach>("detach"),
                         InstanceMethod<&LinkHandle::Close>("close"),
                     });
}

Napi::Object LinkHandle::FromFd(Napi::Env env, UniqueFd fd) {
  LinkInfoRaw info;
  memset(&info, 0, sizeof(info));
  uint32_t len = sizeof(info);
  int err = bpf_obj_get_info_by_fd(fd.get(), &info, &len);
  if (err) ThrowErrno(env, "bpf_obj_get_info_by_fd", err, "link fd " + std::to_string(fd.get()));
  Napi::Object js = Data(env)->linkCtor.New({ConstructToken(env)});
  LinkHandle *self = Unwrap(js);
  self->fd_ = fd.release();
  self->id_ = info.id;
  return js;
}

LinkHandle::LinkHandle(const Napi::CallbackInfo &info) : Napi::ObjectWrap<LinkHandle>(info) {
  CheckConstructToken(info, "BpfLink", "createTcxLink(), linkFromPin() or linkFromId()");
}

LinkHandle::~LinkHandle() {
  // Closing the last fd of an unpinned link detaches it: that is the link we made.
  if (fd_ >= 0) close(fd_);
}

std::string LinkHandle::Describe() const { return "link id " + std::to_string(id_); }

void LinkHandle::CheckOpen(Napi::Env env, const char *op) const {
  if (fd_ < 0) ThrowErrno(env, op, EBADF, Describe() + " is closed");
}

Napi::Value LinkHandle::Fd(const Napi::CallbackInfo &info) {
  return Napi::Number::New(info.Env(), fd_);
}

Napi::Value LinkHandle::Info(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  CheckOpen(env, "bpf_obj_get_info_by_fd");
  LinkInfoRaw raw;
  memset(&raw, 0, sizeof(raw));
  uint32_t len = sizeof(raw);
  int err = bpf_obj_get_info_by_fd(fd_, &raw, &len);
  if (err) ThrowErrno(env, "bpf_obj_get_info_by_fd", err, Describe());
  bool tcx = raw.type == kLinkTypeTcx;
  Napi::Object o = Napi::Object::New(env);
  o.Set("id", raw.id);
  o.Set("progId", raw.progId);
  o.Set("type", raw.type);
  o.Set("ifindex", tcx ? raw.tcx.ifindex : 0);
  o.Set("attachType", tcx ? raw.tcx.attachType : 0);
  return o;
}

void LinkHandle::Update(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  ProgramHandle *prog = ProgramHandle::FromValue(env, info[0], "program");
  CheckOpen(env, "bpf_link_update");
  int err = bpf_link_update(fd_, prog->fd(), nullptr);
  if (err) ThrowErrno(env, "bpf_link_update", err, Describe() + " to " + prog->Describe());
}

void LinkHandle::Pin(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  std::string path = ArgString(env, info[0], "path");
  CheckOpen(env, "bpf_obj_pin");
  int err = bpf_obj_pin(fd_, path.c_str());
  if (err) ThrowErrno(env, "bpf_obj_pin", err, Describe() + " at " + path);
}

void LinkHandle::Detach(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  CheckOpen(env, "bpf_link_detach");
  int err = bpf_link_detach(fd_);
  if (err) ThrowErrno(env, "bpf_link_detach", err, Describe());
}

void LinkHandle::Close(const Napi::CallbackInfo &) {
  if (fd_ >= 0) {
    close(fd_);
    fd_ = -1;
  }
}

// ---- module functions --------------------------------------------------------------

static Napi::Value LinkFromPin(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  std::string path = ArgString(env, info[0], "path");
  int fd = bpf_obj_get(path.c_str());
  if (fd < 0) ThrowErrno(env, "bpf_obj_get", fd, path);
  UniqueFd owned(fd);
  CheckFdKind(env, fd, "bpf-link", "bpf_obj_get", path);
  return LinkHandle::FromFd(env, std::move(owned));
}

static Napi::Value LinkFromId(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  uint32_t id = ArgU32(env, info[0], "id");
  int fd = bpf_link_get_fd_by_id(id);
  if (fd < 0) ThrowErrno(env, "bpf_link_get_fd_by_id", fd, "link id " + std::to_string(id));
  return LinkHandle::FromFd(env, UniqueFd(fd));
}

void InitLinkFunctions(Napi::Env env, Napi::Object exports) {
  exports.Set("linkFromPin", Napi::Function::New<LinkFromPin>(env, "linkFromPin"));
  exports.Set("linkFromId", Napi::Function::New<LinkFromId>(env, "linkFromId"));
}

}  // namespace netoken
