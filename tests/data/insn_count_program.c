/* A known aarch64 loop for the instruction-count plugin's tests (tests/board/test_insn_count.py).
 *
 *   insn_count_program ITERATIONS REGIONS
 * Work outside the markers, then REGIONS times: the start marker, ITERATIONS loops of LOOP_BODY
 * instructions (each class at least once), the stop marker (4 instructions, its svc inside the region).
 */
#include <stdlib.h>

static float data[64] __attribute__((aligned(16)));
static volatile long sink;

static void region(long n) {
  register long cnt __asm__("x9") = n;
  register float* src __asm__("x10") = data;
  register float* dst __asm__("x11") = data + 32;
  __asm__ volatile(
      "mov x8, #155\n"
      "movz x0, #0x0001\n"
      "movk x0, #0x3C2F, lsl #16\n"
      "svc #0\n"                              /* start: everything below up to the stop svc is counted */
      "1:\n"
      "fmla v0.4s, v1.4s, v2.4s\n"            /* fma_f32x4 */
      "fmla v12.4s, v13.4s, v14.s[1]\n"       /* fma_f32x4, by element */
      "fmla v3.8h, v4.8h, v5.8h\n"            /* fma_f16x8 */
      "fmla v6.4h, v7.4h, v8.4h\n"            /* fma_f16x4 */
      "fmls v9.2s, v10.2s, v11.2s\n"          /* fma_f32x2 */
      "fadd v15.4s, v16.4s, v17.4s\n"         /* neon_other */
      "ld1 {v18.4s}, [x10]\n"                 /* neon_load 16 */
      "ldr q19, [x10]\n"                      /* neon_load 16 */
      "ldp q20, q21, [x10]\n"                 /* neon_load 32 */
      "st1 {v18.4s, v19.4s}, [x11]\n"         /* neon_store 32 */
      "fadd s22, s23, s24\n"                  /* fp_scalar */
      "fmadd s25, s26, s27, s28\n"            /* fp_scalar */
      "ldr s29, [x10]\n"                      /* load */
      "ldr x12, [x10]\n"                      /* load */
      "ldp s30, s31, [x10]\n"                 /* load */
      "str x12, [x11]\n"                      /* store */
      "add x13, x13, #1\n"                    /* other */
      "subs x9, x9, #1\n"                     /* other */
      "b.ne 1b\n"                             /* branch */
      "mov x8, #155\n"
      "movz x0, #0x0002\n"
      "movk x0, #0x3C2F, lsl #16\n"
      "svc #0\n"                              /* stop */
      : "+r"(cnt), "+r"(src), "+r"(dst)
      :
      : "x0", "x8", "x12", "x13", "memory", "v0", "v1", "v2", "v3", "v4", "v5", "v6", "v7", "v8", "v9", "v10",
        "v11", "v12", "v13", "v14", "v15", "v16", "v17", "v18", "v19", "v20", "v21", "v22", "v23", "v24", "v25",
        "v26", "v27", "v28", "v29", "v30", "v31");
}

int main(int argc, char** argv) {
  long n = argc > 1 ? atol(argv[1]) : 1000, regions = argc > 2 ? atol(argv[2]) : 1;
  for (long i = 0; i < 3 * n; ++i) sink += i * i; /* not counted */
  for (long r = 0; r < regions; ++r) {
    region(n);
    for (long i = 0; i < n; ++i) sink += i; /* between regions: not counted */
  }
  return 0;
}
