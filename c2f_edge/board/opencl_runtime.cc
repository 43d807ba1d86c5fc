// An OpenCL runtime for the TVM wheel, which generates OpenCL kernels but ships no runtime to run them.
// Written from TVM's public headers (device_api.h, tvm/ffi) and the OpenCL 2.0 specification.
//
// Two parts, registered when the library is loaded (board/opencl.py loads it):
//   device_api.opencl                   memory, copies, synchronization and device attributes;
//   ffi.Module.load_from_bytes.opencl   TVM's serialized "opencl" module: kernels built on first use,
//                                       launched with the sizes the host code passes.
// Memory is OpenCL 2.0 shared virtual memory, so a device pointer is an address: tensors placed at an
// offset inside a planned storage (Relax's memory planning) are plain pointer arithmetic, and kernels
// take their buffers through clSetKernelArgSVMPointer.
#define CL_TARGET_OPENCL_VERSION 200
#include <CL/cl.h>
#include <tvm/ffi/cast.h>
#include <tvm/ffi/container/map.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>
#include <tvm/ffi/reflection/registry.h>
#include <tvm/ffi/string.h>
#include <tvm/runtime/device_api.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

namespace c2f_opencl {

namespace ffi = tvm::ffi;
using tvm::runtime::DeviceAPI;
using tvm::runtime::DeviceAttrKind;

[[noreturn]] void Fail(const std::string& msg) { TVM_FFI_THROW(RuntimeError) << msg; }

void Check(cl_int err, const char* what) {
  if (err != CL_SUCCESS) Fail(std::string(what) + " failed with OpenCL error " + std::to_string(err));
}

// The first platform that has a device; one in-order queue per device.
struct Platform {
  cl_context context = nullptr;
  std::vector<cl_device_id> devices;
  std::vector<cl_command_queue> queues;
  std::string problem;  // why there is no device, when there is none

  Platform() {
    cl_uint n = 0;
    if (clGetPlatformIDs(0, nullptr, &n) != CL_SUCCESS || n == 0) {
      problem = "no OpenCL platform (is an ICD such as PoCL installed under /etc/OpenCL/vendors?)";
      return;
    }
    std::vector<cl_platform_id> platforms(n);
    clGetPlatformIDs(n, platforms.data(), nullptr);
    for (cl_platform_id p : platforms) {
      cl_uint k = 0;
      if (clGetDeviceIDs(p, CL_DEVICE_TYPE_ALL, 0, nullptr, &k) != CL_SUCCESS || k == 0) continue;
      devices.resize(k);
      clGetDeviceIDs(p, CL_DEVICE_TYPE_ALL, k, devices.data(), nullptr);
      for (cl_device_id d : devices) {
        cl_device_svm_capabilities svm = 0;
        if (clGetDeviceInfo(d, CL_DEVICE_SVM_CAPABILITIES, sizeof(svm), &svm, nullptr) != CL_SUCCESS ||
            !(svm & CL_DEVICE_SVM_COARSE_GRAIN_BUFFER)) {
          problem = "the OpenCL device has no shared virtual memory (OpenCL 2.0 SVM), which this runtime needs";
          devices.clear();
          return;
        }
      }
      cl_int err;
      context = clCreateContext(nullptr, k, devices.data(), nullptr, nullptr, &err);
      Check(err, "clCreateContext");
      for (cl_device_id d : devices) {
        queues.push_back(clCreateCommandQueueWithProperties(context, d, nullptr, &err));
        Check(err, "clCreateCommandQueueWithProperties");
      }
      return;
    }
    problem = "no OpenCL device on any of " + std::to_string(n) + " platform(s)";
  }

  cl_device_id device(int id) {
    if (!problem.empty()) Fail(problem);
    if (id < 0 || id >= static_cast<int>(devices.size()))
      Fail("opencl(" + std::to_string(id) + "): there are " + std::to_string(devices.size()) + " device(s)");
    return devices[id];
  }
  cl_command_queue queue(int id) {
    device(id);
    return queues[id];
  }
};

Platform& GetPlatform() {
  static Platform platform;
  return platform;
}

std::string DeviceString(cl_device_id d, cl_device_info what) {
  size_t n = 0;
  clGetDeviceInfo(d, what, 0, nullptr, &n);
  std::string s(n, '\0');
  clGetDeviceInfo(d, what, n, s.data(), nullptr);
  while (!s.empty() && s.back() == '\0') s.pop_back();
  return s;
}

bool HasExtension(cl_device_id d, const std::string& name) {
  std::istringstream words(DeviceString(d, CL_DEVICE_EXTENSIONS));
  std::string word;
  while (words >> word)
    if (word == name) return true;
  return false;
}

template <typename T>
T DeviceValue(cl_device_id d, cl_device_info what) {
  T v{};
  clGetDeviceInfo(d, what, sizeof(T), &v, nullptr);
  return v;
}

thread_local int current_device = 0;

// The largest work-group each kernel was launched with: a phone's GPU allows far fewer work items per
// group than PoCL, so board/opencl.py checks these against the target's limit.
std::mutex launches_mutex;
std::unordered_map<std::string, int64_t> largest_group;

void RecordLaunch(const std::string& kernel, int64_t items) {
  std::lock_guard<std::mutex> lock(launches_mutex);
  int64_t& seen = largest_group[kernel];
  seen = std::max(seen, items);
}

class OpenCLDeviceAPI final : public DeviceAPI {
 public:
  void SetDevice(DLDevice dev) final { current_device = dev.device_id; }

  void GetAttr(DLDevice dev, DeviceAttrKind kind, ffi::Any* rv) final {
    Platform& p = GetPlatform();
    if (kind == tvm::runtime::kExist) {
      *rv = static_cast<int>(p.problem.empty() && dev.device_id >= 0 &&
                             dev.device_id < static_cast<int>(p.devices.size()));
      return;
    }
    cl_device_id d = p.device(dev.device_id);
    switch (kind) {
      case tvm::runtime::kMaxThreadsPerBlock:
        *rv = static_cast<int64_t>(DeviceValue<size_t>(d, CL_DEVICE_MAX_WORK_GROUP_SIZE));
        break;
      case tvm::runtime::kWarpSize:
        *rv = 1;  // OpenCL has no portable notion of a warp
        break;
      case tvm::runtime::kMaxSharedMemoryPerBlock:
        *rv = static_cast<int64_t>(DeviceValue<cl_ulong>(d, CL_DEVICE_LOCAL_MEM_SIZE));
        break;
      case tvm::runtime::kComputeVersion:
        *rv = ffi::String(DeviceString(d, CL_DEVICE_VERSION));
        break;
      case tvm::runtime::kDeviceName:
        *rv = ffi::String(DeviceString(d, CL_DEVICE_NAME));
        break;
      case tvm::runtime::kMaxClockRate:
        *rv = static_cast<int64_t>(DeviceValue<cl_uint>(d, CL_DEVICE_MAX_CLOCK_FREQUENCY));
        break;
      case tvm::runtime::kMultiProcessorCount:
        *rv = static_cast<int64_t>(DeviceValue<cl_uint>(d, CL_DEVICE_MAX_COMPUTE_UNITS));
        break;
      case tvm::runtime::kMaxThreadDimensions: {
        size_t dims[3] = {0, 0, 0};
        clGetDeviceInfo(d, CL_DEVICE_MAX_WORK_ITEM_SIZES, sizeof(dims), dims, nullptr);
        std::ostringstream os;
        os << "[" << dims[0] << ", " << dims[1] << ", " << dims[2] << "]";
        *rv = ffi::String(os.str());
        break;
      }
      case tvm::runtime::kDriverVersion:
        *rv = ffi::String(DeviceString(d, CL_DRIVER_VERSION));
        break;
      case tvm::runtime::kTotalGlobalMemory:
        *rv = static_cast<int64_t>(DeviceValue<cl_ulong>(d, CL_DEVICE_GLOBAL_MEM_SIZE));
        break;
      default:
        break;  // not known here: TVM reads an empty value as "not available"
    }
  }

  void* AllocDataSpace(DLDevice dev, size_t nbytes, size_t alignment, DLDataType) final {
    Platform& p = GetPlatform();
    p.device(dev.device_id);
    void* ptr = clSVMAlloc(p.context, CL_MEM_READ_WRITE, std::max<size_t>(nbytes, 1),
                           static_cast<cl_uint>(std::max<size_t>(alignment, 128)));
    if (ptr == nullptr) Fail("clSVMAlloc of " + std::to_string(nbytes) + " bytes failed (device memory, or no SVM)");
    return ptr;
  }

  void FreeDataSpace(DLDevice, void* ptr) final {
    // Kernels may still read it: the queue is in order, so drain it first.
    Platform& p = GetPlatform();
    for (cl_command_queue q : p.queues) clFinish(q);
    clSVMFree(p.context, ptr);
  }

  void StreamSync(DLDevice dev, TVMStreamHandle) final {
    Check(clFinish(GetPlatform().queue(dev.device_id)), "clFinish");
  }

  bool SupportsDevicePointerArithmeticsOnHost() final { return true; }

 protected:
  void CopyDataFromTo(const void* from, size_t from_offset, void* to, size_t to_offset, size_t size,
                      DLDevice dev_from, DLDevice dev_to, DLDataType, TVMStreamHandle) final {
    if (size == 0) return;
    const int id = dev_from.device_type == kDLOpenCL ? dev_from.device_id : dev_to.device_id;
    if (dev_from.device_type != kDLOpenCL && dev_from.device_type != kDLCPU)
      Fail("copies between OpenCL and device type " + std::to_string(dev_from.device_type) + " are not supported");
    if (dev_to.device_type != kDLOpenCL && dev_to.device_type != kDLCPU)
      Fail("copies between OpenCL and device type " + std::to_string(dev_to.device_type) + " are not supported");
    Check(clEnqueueSVMMemcpy(GetPlatform().queue(id), CL_TRUE, static_cast<char*>(to) + to_offset,
                             static_cast<const char*>(from) + from_offset, size, 0, nullptr, nullptr),
          "clEnqueueSVMMemcpy");
  }
};

// --- TVM's serialized "opencl" module --------------------------------------------------------------
// Little-endian: a string is a u64 length and its bytes. str format; u64 n, then n x (str name,
// FunctionInfo); str source. FunctionInfo: str name; u64 k, k x DLDataType (code u8, bits u8, lanes u16)
// of the arguments; u64 t, t x str launch tags ("blockIdx.x", "threadIdx.y", ...); u64 e, e x i32 tags.

struct Reader {
  const char* p;
  const char* end;
  uint64_t U64() {
    Need(8);
    uint64_t v;
    std::memcpy(&v, p, 8);
    p += 8;
    return v;
  }
  std::string Str() {
    uint64_t n = U64();
    Need(n);
    std::string s(p, n);
    p += n;
    return s;
  }
  void Need(uint64_t n) {
    if (static_cast<uint64_t>(end - p) < n) Fail("the serialized opencl module is truncated or not one");
  }
};

struct Kernel {
  std::string name;
  std::vector<DLDataType> args;
  std::vector<int> launch_dims;  // per launch tag: 0..2 grid (blockIdx), 3..5 block (threadIdx)
};

int LaunchDim(const std::string& kernel, const std::string& tag) {
  auto axis = [&](char c) -> int {
    if (c < 'x' || c > 'z') Fail("kernel " + kernel + ": unknown launch tag " + tag);
    return c - 'x';
  };
  if (tag.rfind("blockIdx.", 0) == 0 && tag.size() == 10) return axis(tag[9]);
  if (tag.rfind("threadIdx.", 0) == 0 && tag.size() == 11) return 3 + axis(tag[10]);
  Fail("kernel " + kernel + ": launch tag " + tag + " is not supported by this runtime");
}

class OpenCLModule final : public ffi::ModuleObj {
 public:
  explicit OpenCLModule(std::string bytes) : bytes_(std::move(bytes)) {
    Reader r{bytes_.data(), bytes_.data() + bytes_.size()};
    format_ = r.Str();
    uint64_t n = r.U64();
    for (uint64_t i = 0; i < n; ++i) {
      std::string key = r.Str();
      Kernel k;
      k.name = r.Str();
      uint64_t nargs = r.U64();
      r.Need(nargs * 4);
      for (uint64_t j = 0; j < nargs; ++j) {
        DLDataType t;
        std::memcpy(&t.code, r.p, 1);
        std::memcpy(&t.bits, r.p + 1, 1);
        std::memcpy(&t.lanes, r.p + 2, 2);
        r.p += 4;
        k.args.push_back(t);
      }
      uint64_t ntags = r.U64();
      for (uint64_t j = 0; j < ntags; ++j) k.launch_dims.push_back(LaunchDim(k.name, r.Str()));
      uint64_t nextra = r.U64();
      r.Need(nextra * 4);
      r.p += nextra * 4;
      kernels_.emplace(key, std::move(k));
    }
    source_ = r.Str();
    if (format_ != "cl") Fail("opencl module in format '" + format_ + "': only OpenCL C source ('cl') is supported");
  }

  const char* kind() const final { return "opencl"; }
  int GetPropertyMask() const final {
    return ffi::Module::kBinarySerializable | ffi::Module::kRunnable;
  }
  ffi::Bytes SaveToBytes() const final { return ffi::Bytes(bytes_); }
  ffi::String InspectSource(const ffi::String&) const final { return ffi::String(source_); }

  ffi::Optional<ffi::Function> GetFunction(const ffi::String& name) final {
    auto it = kernels_.find(std::string(name));
    if (it == kernels_.end()) return std::nullopt;
    ffi::ObjectPtr<ffi::Object> self = ffi::GetObjectPtr<ffi::Object>(this);
    const Kernel* k = &it->second;
    return ffi::Function::FromPacked([self, this, k](ffi::PackedArgs args, ffi::Any*) { Launch(*k, args); });
  }

 private:
  cl_kernel GetKernel(int dev, const std::string& name) {
    auto key = std::make_pair(dev, name);
    auto found = cl_kernels_.find(key);
    if (found != cl_kernels_.end()) return found->second;
    cl_program program = Program(dev);
    cl_int err;
    cl_kernel kernel = clCreateKernel(program, name.c_str(), &err);
    if (err != CL_SUCCESS) Fail("kernel " + name + " is not in the module's OpenCL source (error " + std::to_string(err) + ")");
    cl_kernels_.emplace(key, kernel);
    return kernel;
  }

  cl_program Program(int dev) {
    if (programs_.size() <= static_cast<size_t>(dev)) programs_.resize(dev + 1, nullptr);
    if (programs_[dev] != nullptr) return programs_[dev];
    Platform& p = GetPlatform();
    cl_device_id device = p.device(dev);
    // TVM's half kernels #error without the extension; say so before the driver's compiler does.
    if (source_.find("cl_khr_fp16") != std::string::npos && !HasExtension(device, "cl_khr_fp16"))
      Fail("these kernels compute in half precision, and " + DeviceString(device, CL_DEVICE_NAME) +
           " does not offer cl_khr_fp16: run this fp16 bundle on a GPU that has it, or build --precision fp32");
    const char* src = source_.c_str();
    size_t len = source_.size();
    cl_int err;
    cl_program program = clCreateProgramWithSource(p.context, 1, &src, &len, &err);
    Check(err, "clCreateProgramWithSource");
    err = clBuildProgram(program, 1, &device, "", nullptr, nullptr);
    if (err != CL_SUCCESS) {
      size_t n = 0;
      clGetProgramBuildInfo(program, device, CL_PROGRAM_BUILD_LOG, 0, nullptr, &n);
      std::string log(n, '\0');
      clGetProgramBuildInfo(program, device, CL_PROGRAM_BUILD_LOG, n, log.data(), nullptr);
      clReleaseProgram(program);
      std::istringstream lines(log);
      std::string line, first;
      while (std::getline(lines, line)) {
        if (line.find("error") != std::string::npos) {
          first = line;
          break;
        }
      }
      if (first.empty()) first = log.substr(0, log.find('\n'));
      Fail("the OpenCL kernels failed to build on " + DeviceString(device, CL_DEVICE_NAME) + " (error " +
           std::to_string(err) + "): " + first);
    }
    programs_[dev] = program;
    return program;
  }

  void Launch(const Kernel& k, ffi::PackedArgs args) {
    const size_t nargs = k.args.size();
    if (static_cast<size_t>(args.size()) != nargs + k.launch_dims.size())
      Fail("kernel " + k.name + ": called with " + std::to_string(args.size()) + " arguments, expects " +
           std::to_string(nargs + k.launch_dims.size()));
    std::lock_guard<std::mutex> lock(mutex_);  // kernel arguments are state of the cl_kernel
    const int dev = current_device;
    cl_kernel kernel = GetKernel(dev, k.name);
    for (size_t i = 0; i < nargs; ++i) {
      const DLDataType t = k.args[i];
      cl_int err;
      if (t.code == kDLOpaqueHandle) {
        err = clSetKernelArgSVMPointer(kernel, i, args[i].cast<void*>());
      } else if (t.code == kDLInt && t.bits == 32) {
        int32_t v = static_cast<int32_t>(args[i].cast<int64_t>());
        err = clSetKernelArg(kernel, i, sizeof(v), &v);
      } else if (t.code == kDLInt && t.bits == 64) {
        int64_t v = args[i].cast<int64_t>();
        err = clSetKernelArg(kernel, i, sizeof(v), &v);
      } else if (t.code == kDLUInt && t.bits == 32) {
        uint32_t v = static_cast<uint32_t>(args[i].cast<int64_t>());
        err = clSetKernelArg(kernel, i, sizeof(v), &v);
      } else if (t.code == kDLFloat && t.bits == 32) {
        float v = static_cast<float>(args[i].cast<double>());
        err = clSetKernelArg(kernel, i, sizeof(v), &v);
      } else if (t.code == kDLFloat && t.bits == 64) {
        double v = args[i].cast<double>();
        err = clSetKernelArg(kernel, i, sizeof(v), &v);
      } else {
        Fail("kernel " + k.name + ": argument " + std::to_string(i) + " has a type this runtime does not pass (code " +
             std::to_string(t.code) + ", " + std::to_string(t.bits) + " bits)");
      }
      Check(err, "clSetKernelArg");
    }
    size_t size[6] = {1, 1, 1, 1, 1, 1};
    int work_dim = 1;
    for (size_t j = 0; j < k.launch_dims.size(); ++j) {
      const int d = k.launch_dims[j];
      size[d] = static_cast<size_t>(args[nargs + j].cast<int64_t>());
      work_dim = std::max(work_dim, d % 3 + 1);
    }
    size_t global[3], local[3];
    for (int d = 0; d < 3; ++d) {
      global[d] = size[d] * size[3 + d];
      local[d] = size[3 + d];
    }
    if (global[0] * global[1] * global[2] == 0) return;  // an empty launch (a zero-sized tensor)
    RecordLaunch(k.name, static_cast<int64_t>(local[0] * local[1] * local[2]));
    cl_int err = clEnqueueNDRangeKernel(GetPlatform().queue(dev), kernel, work_dim, nullptr, global, local, 0,
                                        nullptr, nullptr);
    if (err == CL_INVALID_WORK_GROUP_SIZE || err == CL_INVALID_WORK_ITEM_SIZE) {
      cl_device_id device = GetPlatform().device(dev);
      size_t kernel_max = 0;
      clGetKernelWorkGroupInfo(kernel, device, CL_KERNEL_WORK_GROUP_SIZE, sizeof(kernel_max), &kernel_max, nullptr);
      Fail("kernel " + k.name + ": a work-group of " + std::to_string(local[0] * local[1] * local[2]) + " items (" +
           std::to_string(local[0]) + "x" + std::to_string(local[1]) + "x" + std::to_string(local[2]) +
           ") exceeds what " + DeviceString(device, CL_DEVICE_NAME) + " allows for it (" +
           std::to_string(kernel_max) + " items)");
    }
    Check(err, ("clEnqueueNDRangeKernel of " + k.name).c_str());
  }

  std::string bytes_, format_, source_;
  std::unordered_map<std::string, Kernel> kernels_;
  std::vector<cl_program> programs_;
  struct PairHash {
    size_t operator()(const std::pair<int, std::string>& p) const {
      return std::hash<std::string>()(p.second) * 31 + p.first;
    }
  };
  std::unordered_map<std::pair<int, std::string>, cl_kernel, PairHash> cl_kernels_;
  std::mutex mutex_;
};

TVM_FFI_STATIC_INIT_BLOCK() {
  namespace refl = tvm::ffi::reflection;
  refl::GlobalDef()
      .def("device_api.opencl",
           []() -> void* {
             static OpenCLDeviceAPI api;
             return static_cast<void*>(static_cast<DeviceAPI*>(&api));
           })
      .def("ffi.Module.load_from_bytes.opencl",
           [](const ffi::Bytes& bytes) -> ffi::Module {
             return ffi::Module(ffi::make_object<OpenCLModule>(std::string(bytes.data(), bytes.size())));
           })
      .def("c2f_edge.opencl.problem", []() -> ffi::String { return ffi::String(GetPlatform().problem); })
      .def("c2f_edge.opencl.extensions",
           []() -> ffi::String { return ffi::String(DeviceString(GetPlatform().device(0), CL_DEVICE_EXTENSIONS)); })
      .def("c2f_edge.opencl.launches", []() -> ffi::Map<ffi::String, int64_t> {
        std::lock_guard<std::mutex> lock(launches_mutex);
        ffi::Map<ffi::String, int64_t> out;
        for (const auto& [name, items] : largest_group) out.Set(ffi::String(name), items);
        return out;
      });
}

}  // namespace c2f_opencl
