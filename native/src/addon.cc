// Module entry: registers the handle classes and every module function.
#include "netoken.h"

#ifdef __GLIBC__
#include <malloc.h>
#endif

namespace netoken {

namespace {

Napi::Value LibbpfVersion(const Napi::CallbackInfo &info) {
  return Napi::String::New(info.Env(), std::to_string(libbpf_major_version()) + "." +
                                           std::to_string(libbpf_minor_version()));
}

Napi::Value NumPossibleCpusJs(const Napi::CallbackInfo &info) {
  return Napi::Number::New(info.Env(), NumPossibleCpus(info.Env()));
}

// Returns the C heap that is free but still held by the allocator to the system
// (malloc_trim(0): free pages inside every arena, not only at the top). True when
// something was released; false where the C library has no malloc_trim.
Napi::Value TrimMemory(const Napi::CallbackInfo &info) {
#ifdef __GLIBC__
  return Napi::Boolean::New(info.Env(), malloc_trim(0) != 0);
#else
  return Napi::Boolean::New(info.Env(), false);
#endif
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  InstallLibbpfLogCapture();

  auto *data = new AddonData();
  env.SetInstanceData(data);
  data->objectCtor = Napi::Persistent(ObjectHandle::Define(env));
  data->mapCtor = Napi::Persistent(MapHandle::Define(env));
  data->programCtor = Napi::Persistent(ProgramHandle::Define(env));
  data->linkCtor = Napi::Persistent(LinkHandle::Define(env));

  exports.Set("libbpfVersion", Napi::Function::New<LibbpfVersion>(env, "libbpfVersion"));
  exports.Set("numPossibleCpus", Napi::Function::New<NumPossibleCpusJs>(env, "numPossibleCpus"));
  exports.Set("trimMemory", Napi::Function::New<TrimMemory>(env, "trimMemory"));
  InitObjectFunctions(env, exports);
  InitMapFunctions(env, exports);
  InitProgramFunctions(env, exports);
  InitLinkFunctions(env, exports);
  InitAttachFunctions(env, exports);
  InitBpffsFunctions(env, exports);
  InitCaptureFunctions(env, exports);
  return exports;
}

}  // namespace

}  // namespace netoken

static Napi::Object InitNetoken(Napi::Env env, Napi::Object exports) {
  return netoken::Init(env, exports);
}

NODE_API_MODULE(netoken_native, InitNetoken)
