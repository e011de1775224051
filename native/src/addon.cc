// Module entry: registers the handle classes and every module function.
#include "netoken.h"

namespace netoken {

namespace {

Napi::Value LibbpfVersion(const Napi::CallbackInfo &info) {
  return Napi::String::New(info.Env(), std::to_string(libbpf_major_version()) + "." +
                                           std::to_string(libbpf_minor_version()));
}

Napi::Value NumPossibleCpusJs(const Napi::CallbackInfo &info) {
  return Napi::Number::New(info.Env(), NumPossibleCpus(info.Env()));
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
