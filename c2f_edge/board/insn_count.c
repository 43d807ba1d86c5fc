/* A qemu TCG plugin that records which aarch64 basic blocks run between two marker syscalls, and how often.
 *
 * Built for this host at setup (c2f_edge/board/insn_count.py) against the installed qemu's plugin header,
 * loaded by the dynamic qemu-aarch64 with
 *   -plugin libinsn_count.so,out=PROFILE[,marker=155][,start=MAGIC][,stop=MAGIC]
 * The guest opens a region with syscall `marker` (getpgid on aarch64) called with the start magic as its
 * first argument and closes it with the stop magic; regions add up. Each translated block carries one inline
 * counter; at a marker every block's counter is read, so the hot path is one add per block executed.
 * Instructions are recorded as their words, and classified later in Python (board/insn_count.py): the
 * record is what the cycle model reads too, block by block.
 *
 * PROFILE, little-endian:
 *   "C2FB" | u32 version (1) | u32 regions closed | u32 blocks recorded
 *   per block run inside a region: u64 guest address | u64 executions | u32 n | n x u32 instruction word
 * The svc of the start marker is outside the region, the svc of the stop marker inside. Inline counters are
 * shared by all vCPUs: count a guest that runs one thread.
 *
 * With split=1, each region is written on its own when it closes, to PROFILE.N (N = 0, 1, ...: its index),
 * in the same format with one region; PROFILE itself then holds the count of regions and no block. That is
 * how many kernels are counted apart in one qemu run (a tuning batch).
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <qemu-plugin.h>

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

typedef struct {
  uint64_t vaddr;
  uint64_t count;  /* executions since translation; qemu adds to it inline */
  uint64_t start;  /* count when the open region began */
  uint64_t region; /* executions inside closed regions */
  uint32_t n;
  uint32_t* words;
} Block;

static Block** blocks;
static size_t n_blocks, cap_blocks;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int64_t marker = 155;
static uint64_t start_magic = 0x3C2F0001, stop_magic = 0x3C2F0002;
static int open_region, split;
static uint32_t regions;
static char out_path[4096];

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb* tb) {
  (void)id;
  Block* b = calloc(1, sizeof(Block));
  b->vaddr = qemu_plugin_tb_vaddr(tb);
  b->n = (uint32_t)qemu_plugin_tb_n_insns(tb);
  b->words = calloc(b->n ? b->n : 1, sizeof(uint32_t));
  for (uint32_t i = 0; i < b->n; ++i) {
    struct qemu_plugin_insn* insn = qemu_plugin_tb_get_insn(tb, i);
    size_t size = qemu_plugin_insn_size(insn);
    memcpy(&b->words[i], qemu_plugin_insn_data(insn), size < 4 ? size : 4);
  }
  pthread_mutex_lock(&lock);
  if (n_blocks == cap_blocks) {
    cap_blocks = cap_blocks ? 2 * cap_blocks : 4096;
    blocks = realloc(blocks, cap_blocks * sizeof(Block*));
  }
  blocks[n_blocks++] = b; /* a new block's count starts at 0, so its start is 0 too */
  pthread_mutex_unlock(&lock);
  qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &b->count, 1);
}

static void write_blocks(const char* path, uint32_t n_regions, int delta);

static void on_syscall(qemu_plugin_id_t id, unsigned int vcpu, int64_t num, uint64_t a1, uint64_t a2,
                       uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6, uint64_t a7, uint64_t a8) {
  (void)id, (void)vcpu, (void)a2, (void)a3, (void)a4, (void)a5, (void)a6, (void)a7, (void)a8;
  if (num != marker || (a1 != start_magic && a1 != stop_magic)) return;
  pthread_mutex_lock(&lock);
  if (a1 == start_magic && !open_region) {
    for (size_t i = 0; i < n_blocks; ++i) blocks[i]->start = blocks[i]->count;
    open_region = 1;
  } else if (a1 == stop_magic && open_region) {
    if (split) {
      char path[4200];
      snprintf(path, sizeof(path), "%s.%u", out_path, regions);
      write_blocks(path, 1, 1);
    } else {
      for (size_t i = 0; i < n_blocks; ++i) blocks[i]->region += blocks[i]->count - blocks[i]->start;
    }
    open_region = 0;
    ++regions;
  }
  pthread_mutex_unlock(&lock);
}

/* The blocks that ran in the closed regions (delta 0), or in the open one (delta 1). */
static void write_blocks(const char* path, uint32_t n_regions, int delta) {
  char tmp[4200];
  snprintf(tmp, sizeof(tmp), "%s.tmp", path);
  FILE* f = fopen(tmp, "wb");
  if (!f) {
    fprintf(stderr, "insn_count: cannot write %s\n", tmp);
    return;
  }
  uint32_t kept = 0, version = 1;
  for (size_t i = 0; i < n_blocks; ++i) kept += (delta ? blocks[i]->count - blocks[i]->start : blocks[i]->region) > 0;
  fwrite("C2FB", 1, 4, f);
  fwrite(&version, 4, 1, f);
  fwrite(&n_regions, 4, 1, f);
  fwrite(&kept, 4, 1, f);
  for (size_t i = 0; i < n_blocks; ++i) {
    Block* b = blocks[i];
    uint64_t execs = delta ? b->count - b->start : b->region;
    if (!execs) continue;
    fwrite(&b->vaddr, 8, 1, f);
    fwrite(&execs, 8, 1, f);
    fwrite(&b->n, 4, 1, f);
    fwrite(b->words, 4, b->n, f);
  }
  if (fclose(f) == 0) rename(tmp, path); /* a reader never sees half a profile */
}

static void write_profile(qemu_plugin_id_t id, void* data) {
  (void)id, (void)data;
  write_blocks(out_path, regions, 0);
}

static int parse(const char* arg, const char* key, const char** value) {
  size_t n = strlen(key);
  if (strncmp(arg, key, n) || arg[n] != '=') return 0;
  *value = arg + n + 1;
  return 1;
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t* info, int argc, char** argv) {
  (void)info;
  const char* v;
  for (int i = 0; i < argc; ++i) {
    if (parse(argv[i], "out", &v)) {
      snprintf(out_path, sizeof(out_path), "%s", v);
    } else if (parse(argv[i], "marker", &v)) {
      marker = strtoll(v, NULL, 0);
    } else if (parse(argv[i], "start", &v)) {
      start_magic = strtoull(v, NULL, 0);
    } else if (parse(argv[i], "stop", &v)) {
      stop_magic = strtoull(v, NULL, 0);
    } else if (parse(argv[i], "split", &v)) {
      split = atoi(v) != 0;
    } else {
      fprintf(stderr, "insn_count: unknown argument %s (out=, marker=, start=, stop=, split=)\n", argv[i]);
      return -1;
    }
  }
  if (!out_path[0]) {
    fprintf(stderr, "insn_count: out=PATH is required\n");
    return -1;
  }
  qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
  qemu_plugin_register_vcpu_syscall_cb(id, on_syscall);
  qemu_plugin_register_atexit_cb(id, write_profile, NULL);
  return 0;
}
