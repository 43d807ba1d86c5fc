/* Runs the kernels of a TVM bundle (model.so) one call at a time, for a host that drives the VM.
 *
 * Built for the bundle's CPU and run under qemu user mode (c2f_edge/board/kernel_runner.py), it lets a build
 * for a CPU with no TVM runtime wheel (armv7) be checked end to end: the Relax VM runs on the host
 * and sends every kernel call here, with its arguments; this process runs the bundle's own compiled
 * kernel on them and sends every tensor back (outputs are written in place).
 *
 * Protocol on stdin/stdout, little-endian:
 *   request:  u32 magic 'C2FK' | u32 name length | name | u32 nargs | nargs x arg
 *             arg = u32 kind (0 tensor, 1 int64, 2 float64), then
 *                   tensor: u8 code, u8 bits, u16 lanes, u32 ndim, i64 shape[ndim], data
 *                   int64: i64; float64: f64
 *   reply:    i32 status (0 ok) | u32 message length | message | (status 0) each tensor's data
 * A zero-length name ends the session. Parallel loops run serially: results, not timings.
 */
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dlpack/dlpack.h>
#include <tvm/ffi/c_api.h>

#define MAX_ARGS 64

typedef struct {
  void* sync_handle;
  int32_t num_task;
} ParallelEnv;
typedef int (*ParallelLambda)(int task_id, ParallelEnv* penv, void* cdata);

static char error_message[4096];

/* The bundle reports a failed check (shape, dtype, alignment) through this; it must come from us. */
void TVMFFIErrorSetRaisedFromCStrParts(const char* kind, const char** parts, int32_t num_parts) {
  size_t n = (size_t)snprintf(error_message, sizeof(error_message), "%s: ", kind);
  for (int32_t i = 0; i < num_parts && n < sizeof(error_message); ++i) {
    n += (size_t)snprintf(error_message + n, sizeof(error_message) - n, "%s", parts[i]);
  }
}

static int parallel_launch(ParallelLambda flambda, void* cdata, int num_task) {
  ParallelEnv env = {NULL, 1};
  (void)num_task;
  return flambda(0, &env, cdata);
}

static int parallel_barrier(int task_id, ParallelEnv* penv) {
  (void)task_id;
  (void)penv;
  return 0;
}

static void* alloc_workspace(int device_type, int device_id, uint64_t nbytes, int code, int bits) {
  void* p = NULL;
  (void)device_type, (void)device_id, (void)code, (void)bits;
  return posix_memalign(&p, 64, nbytes ? nbytes : 1) == 0 ? p : NULL;
}

static int free_workspace(int device_type, int device_id, void* ptr) {
  (void)device_type, (void)device_id;
  free(ptr);
  return 0;
}

static void read_exact(void* buf, size_t n) {
  if (n && fread(buf, 1, n, stdin) != n) {
    fprintf(stderr, "kernel_runner: the host closed the pipe\n");
    exit(3);
  }
}

static void write_exact(const void* buf, size_t n) {
  if (n && fwrite(buf, 1, n, stdout) != n) exit(4);
}

static void reply(int32_t status, const char* message) {
  uint32_t len = (uint32_t)strlen(message);
  write_exact(&status, 4);
  write_exact(&len, 4);
  write_exact(message, len);
}

/* Fill the backend function pointers the bundle's code calls through (TVM's runtime does this on load). */
static void bind(void* lib, const char* symbol, void* fn) {
  void** slot = (void**)dlsym(lib, symbol);
  if (slot) *slot = fn;
}

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: kernel_runner model.so\n");
    return 2;
  }
  void* lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    fprintf(stderr, "kernel_runner: %s\n", dlerror());
    return 2;
  }
  bind(lib, "__TVMBackendParallelLaunch", (void*)parallel_launch);
  bind(lib, "__TVMBackendParallelBarrier", (void*)parallel_barrier);
  bind(lib, "__TVMBackendAllocWorkspace", (void*)alloc_workspace);
  bind(lib, "__TVMBackendFreeWorkspace", (void*)free_workspace);

  DLTensor tensors[MAX_ARGS];
  int64_t shapes[MAX_ARGS][8];
  TVMFFIAny args[MAX_ARGS];
  size_t sizes[MAX_ARGS];
  char name[512], symbol[600];
  for (;;) {
    uint32_t magic, name_len, nargs;
    read_exact(&magic, 4);
    if (magic != 0x4B463243u) { /* "C2FK" */
      fprintf(stderr, "kernel_runner: bad request\n");
      return 3;
    }
    read_exact(&name_len, 4);
    if (name_len == 0) break;
    if (name_len >= sizeof(name)) return 3;
    read_exact(name, name_len);
    name[name_len] = 0;
    read_exact(&nargs, 4);
    if (nargs > MAX_ARGS) return 3;
    memset(args, 0, sizeof(args));
    for (uint32_t i = 0; i < nargs; ++i) {
      uint32_t kind;
      read_exact(&kind, 4);
      sizes[i] = 0;
      if (kind == 1) {
        args[i].type_index = kTVMFFIInt;
        read_exact(&args[i].v_int64, 8);
      } else if (kind == 2) {
        args[i].type_index = kTVMFFIFloat;
        read_exact(&args[i].v_float64, 8);
      } else {
        DLTensor* t = &tensors[i];
        uint8_t code, bits;
        uint16_t lanes;
        uint32_t ndim;
        read_exact(&code, 1);
        read_exact(&bits, 1);
        read_exact(&lanes, 2);
        read_exact(&ndim, 4);
        if (ndim > 8) return 3;
        read_exact(shapes[i], 8 * ndim);
        size_t n = (size_t)((bits * lanes + 7) / 8);
        for (uint32_t d = 0; d < ndim; ++d) n *= (size_t)shapes[i][d];
        memset(t, 0, sizeof(*t));
        t->data = alloc_workspace(0, 0, n, 0, 0);
        t->device.device_type = kDLCPU;
        t->ndim = (int32_t)ndim;
        t->dtype.code = code;
        t->dtype.bits = bits;
        t->dtype.lanes = lanes;
        t->shape = shapes[i];
        read_exact(t->data, n);
        sizes[i] = n;
        args[i].type_index = kTVMFFIDLTensorPtr;
        args[i].v_ptr = t;
      }
    }
    snprintf(symbol, sizeof(symbol), "__tvm_ffi_%s", name);
    TVMFFISafeCallType fn = (TVMFFISafeCallType)dlsym(lib, symbol);
    error_message[0] = 0;
    if (!fn) {
      snprintf(error_message, sizeof(error_message), "no kernel %s in the bundle", name);
      reply(1, error_message);
    } else {
      TVMFFIAny result;
      memset(&result, 0, sizeof(result));
      result.type_index = kTVMFFINone;
      int32_t status = fn(NULL, args, (int32_t)nargs, &result);
      reply(status, status ? (error_message[0] ? error_message : "kernel failed") : "");
      if (status == 0) {
        for (uint32_t i = 0; i < nargs; ++i) {
          if (sizes[i]) write_exact(tensors[i].data, sizes[i]);
        }
      }
    }
    fflush(stdout);
    for (uint32_t i = 0; i < nargs; ++i) {
      if (sizes[i]) free(tensors[i].data);
    }
  }
  return 0;
}
