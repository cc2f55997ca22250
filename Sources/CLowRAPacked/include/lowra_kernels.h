// Kernels that multiply straight from the packed format (lowra_packed.h), never expanding W:
// Y = X W^T for a few columns (decode: one; a batch of sequences: up to LOWRA_MAX_COLUMNS).
//
// The table of kernels: one function per instruction-set path, chosen at run time (lowra_cpu.c
// detects the CPU and reads the environment's overrides; each kernel file keeps the scalar reference
// and the dispatch, and the vector code lives in arch/<architecture>/, a file per path).
//   LOWRA_PATH_SCALAR  portable C (any CPU; the reference every other path is tested against)
//   LOWRA_PATH_AVX2    x86-64 with AVX2 + FMA: 8 lanes, each row's levels in two registers
//   LOWRA_PATH_AVX512  x86-64 with AVX-512 F/BW: 16 lanes, each row's levels in one register
//   LOWRA_PATH_NEON    arm64 Advanced SIMD: 8 lanes in two registers, levels by byte-table lookups;
//                      integer products with sdot where the CPU has it (arch/arm/, tested under qemu)
// Per block of 64 inputs the row's levels are scaled once by the block's absmax; codes are
// unpacked in registers (variable shifts) and looked up with a lane permute, then multiplied
// into the columns with fused multiply-adds.
#ifndef LOWRA_KERNELS_H
#define LOWRA_KERNELS_H

#include "lowra_packed.h"

#define LOWRA_MAX_COLUMNS 8

enum lowra_kernel_path {
    LOWRA_PATH_SCALAR = 0,
    LOWRA_PATH_AVX2 = 1,
    LOWRA_PATH_AVX512 = 2,
    LOWRA_PATH_NEON = 3,
    LOWRA_PATH_COUNT = 4
};

/// One packed weight as the kernels read it: pointers into its arrays or its mapped file.
typedef struct {
    uint64_t out, in;
    const uint8_t *bits;           // (out)
    const uint8_t *codes;          // packed rows
    const int64_t *row_offsets;    // (out + 1): byte offset of each row in codes
    const float *levels;           // codebooks
    const int64_t *level_offsets;  // (out): first level of each row
    const float *absmax;           // plain block scales (out * nb), or NULL when double-quantized
    const uint8_t *absmax_codes;   // double-quantized: (out * nb) codes
    const float *absmax_scales;    // double-quantized: one scale per LOWRA_DQ_GROUP blocks
    // For the integer kernels (lowra_packed_gemm_q8), from lowra_integer_levels_row:
    const uint8_t *levels_u8;      // (out, 16) each row's levels as codes
    const float *level_min;        // (out)
    const float *level_step;       // (out)
    // Optional (NULL: natural order): the products (lowra_packed_gemm, lowra_packed_gemm_q8)
    // visit positions r0 <= i < r1 as rows order[i]. A permutation that groups each stretch of
    // rows by width keeps the kernels' width branch predictable; any partition of [0, out) still
    // computes every row once. Panels (lowra_packed_dequantize) always take rows in order.
    const int64_t *order;          // (out)
} lowra_packed_view;

/// The fastest path this CPU runs (honouring LOWRA_KERNEL=scalar|avx2|avx512 to force a slower one).
int lowra_kernel_best_path(void);
/// Whether this CPU can run `path`.
int lowra_kernel_path_supported(int path);
/// "scalar", "avx2", "avx512" or "neon".
const char *lowra_kernel_path_name(int path);
/// The path's name with the instructions its integer kernels use: "avx512 vnni vbmi", "avx512 vnni",
/// "avx512 (integer kernels: avx2)" on AVX-512 CPUs without VNNI; "neon sdot" or "neon (no dot product)";
/// else as lowra_kernel_path_name.
const char *lowra_kernel_variant_name(int path);
/// Whether the AVX-512 integer kernels unpack with VBMI (vpmultishiftqb, vpermb): when the CPU has
/// it, unless the environment variable LOWRA_VBMI=0 says otherwise.
int lowra_kernel_vbmi(void);
/// Turns the VBMI code off (0) or back on where the CPU has it (tests cover both variants).
void lowra_kernel_set_vbmi(int enabled);

/// Y[c][r] = sum_j X[c][j] W[r][j] for rows r0 <= r < r1 and columns c < n (any n >= 1: more than
/// LOWRA_MAX_COLUMNS, the most a row kernel keeps in flight, are taken in groups, as by the others);
/// X is (n, in) row-major, Y has leading dimension ldy (Y[c][r] at y[c * ldy + r]).
void lowra_packed_gemm(int path, const lowra_packed_view *w, const float *x, uint64_t n, float *y, uint64_t ldy,
                       uint64_t r0, uint64_t r1);

/// Rows r0 <= r < r1 of W in fp32 into out ((r1 - r0), in): a panel for sgemm when a batch is too
/// large for the kernels above. Same values as lowra_dequantize_row_ref.
void lowra_packed_dequantize(int path, const lowra_packed_view *w, uint64_t r0, uint64_t r1, float *out);

/// Stored (unquantized) matrices in their file's encoding, by ggml type number: F32 (0), F16 (1),
/// Q4_0 (2), Q4_1 (3), Q8_0 (8), BF16 (30). Rows are `row_bytes` apart starting at `rows`.
int lowra_stored_gemm_supports(unsigned ggml_type);
/// Rows r0 <= r < r1 of a stored matrix (a type lowra_stored_gemm_supports) in fp32 into out
/// ((r1 - r0), in), the values dequantizeGGML gives: the panels of prefill and training.
void lowra_stored_dequantize(int path, unsigned ggml_type, const uint8_t *rows, uint64_t row_bytes, uint64_t in,
                             uint64_t r0, uint64_t r1, float *out);
/// Y[c][r] = sum_j X[c][j] W[r][j] for rows r0 <= r < r1 of a stored matrix, as lowra_packed_gemm.
void lowra_stored_gemm(int path, unsigned ggml_type, const uint8_t *rows, uint64_t row_bytes, uint64_t in,
                       const float *x, uint64_t n, float *y, uint64_t ldy, uint64_t r0, uint64_t r1);

// ---------------------------------------------------------------------------------------------
// Integer kernels (lowra_q8_kernels.c): activations quantized per block of 64 inputs to int8, or
// to 16 bits held as two int8 halves, and each row's levels to uint8, multiplied with integer dot
// products (AVX-512 VNNI, or AVX2 widening multiply-adds; the AVX-512 path falls back to the AVX2
// code on CPUs without VNNI) into exact int32 block sums, then scaled in fp32. Every path
// computes the same integers, so they agree with the scalar path to fp32 rounding. Against the
// fp32 kernels they differ by the activations' rounding (int8: 1/254 of a block's largest value;
// split: 1/65024) and the levels' (none when the levels lie on the row's uint8 grid, as
// quantize leaves them; else up to 1/510 of a row's range).

/// Activations quantized for the integer kernels: per column c and block b of 64 inputs,
/// h = round(x * 127 / m) in [-127, 127] (m = max|x| over the block) and, when split,
/// l = round(256 * (x * 127 / m - h)) clamped to [-127, 127]; inputs past `in` are zero.
/// Every kernel reads t = h (int8) or t = 256 h + l (split), with x ≈ scale * t.
typedef struct {
    uint64_t n, in, nb;        // columns, inputs, blocks of 64
    const int8_t *q;           // h (n, 4, nb * 64): natural order, then the unpacking orders of 1-, 2- and
                               // 4-bit codes (lowra_q8_kernels.c), so codes need no reordering
    const int8_t *lo;          // l in the same layout when split, else NULL
    const float *scale;        // (n, nb): m / 127, or m / (127 * 256) when split
    const int32_t *sum;        // (n, nb): Σ t over the block
    const int32_t *offset;     // (n, nb, 16): 128 · Σ t over each 4 consecutive inputs, for Q8_0
                               // (filled only when lowra_q8_quantize's `orders` is 0)
    const int16_t *t16;        // split: t = 256 h + l as int16 in q's layout and orders (one operand for
                               // the AVX2 kernels' vpmaddwd instead of two widened halves), else NULL
} lowra_q8_activations;

/// The bit of lowra_q8_quantize's `orders` for codes of `bits` (1, 2 or 4) bits.
static inline unsigned lowra_q8_order(unsigned bits) { return bits == 1 ? 2u : bits == 2 ? 4u : 8u; }

/// Bytes of the buffer lowra_q8_quantize fills (split or not).
uint64_t lowra_q8_activation_bytes(uint64_t n, uint64_t in);
/// Quantizes X (n, in) into `buffer` (lowra_q8_activation_bytes long, 64-byte aligned) and
/// describes it in `a`. `orders`: lowra_q8_order(bits) OR'ed over the code widths to be
/// multiplied (0 for Q8_0 only); the natural order is always filled. `split`: 16 bits as two
/// int8 halves (nonzero) or int8.
void lowra_q8_quantize(const float *x, uint64_t n, uint64_t in, unsigned orders, int split, void *buffer,
                       lowra_q8_activations *a);

/// One row's `count` levels (count <= 16) as uint8 codes: u[k] = round((levels[k] - min) / step),
/// step ≈ (max - min) / 255, so levels[k] ≈ min + step * u[k]; u[k] = 0 for count <= k < 16.
void lowra_integer_levels_row(const float *levels, unsigned count, uint8_t u[16], float *min, float *step);
/// Moves a row's levels onto that grid: levels[k] = min + step * u[k], each operation rounded on its
/// own. Idempotent: levels already on a grid re-derive the same (min, step, u) and stay bit for bit.
void lowra_snap_levels_row(float *levels, unsigned count);

/// Y[c][r] ≈ sum_j X[c][j] W[r][j] as lowra_packed_gemm, from quantized activations and the
/// view's integer levels.
void lowra_packed_gemm_q8(int path, const lowra_packed_view *w, const lowra_q8_activations *x, float *y,
                          uint64_t ldy, uint64_t r0, uint64_t r1);
/// The same for a stored Q8_0 matrix (`in` a multiple of 32).
void lowra_q8_0_gemm_q8(int path, const uint8_t *rows, uint64_t row_bytes, const lowra_q8_activations *x, float *y,
                        uint64_t ldy, uint64_t r0, uint64_t r1);

/// Columns [c0, c0 + count) of quantized activations, as their own lowra_q8_activations.
static inline lowra_q8_activations lowra_q8_columns(const lowra_q8_activations *x, uint64_t c0, uint64_t count) {
    const uint64_t at = c0 * 4 * x->nb * 64;
    return (lowra_q8_activations){.n = count, .in = x->in, .nb = x->nb, .q = x->q + at,
                                  .lo = x->lo ? x->lo + at : NULL, .scale = x->scale + c0 * x->nb,
                                  .sum = x->sum + c0 * x->nb, .offset = x->offset + c0 * x->nb * 16,
                                  .t16 = x->t16 ? x->t16 + at : NULL};
}

// ---------------------------------------------------------------------------------------------
// Tiled packed weights (lowra_tile_kernels.c): the rows of a packed weight regrouped into tiles
// of LOWRA_TILE_ROWS rows of one width whose codes interleave, built once per weight in memory,
// for the integer products of decode: lane i of a register is row i of the tile, so a tile's
// codes are unpacked once per block for every column, and the block scales applied once per 16
// rows (AVX-512 VNNI + VBMI; a plain scalar reference elsewhere, for tests).

#define LOWRA_TILE_ROWS 16
#define LOWRA_TILE_COLUMNS 16  // columns one call keeps in flight; more are taken 16 at a time

/// How a tile's codes are laid out (lowra_tile_kernels.c): interleaved across the 16 lanes for
/// vpmultishiftqb (the AVX-512 VBMI kernel), or lane by lane in the order whose unpacking gives
/// the inputs in natural order (the AVX2 and NEON kernels). The scalar reference reads either.
enum { LOWRA_TILE_MULTISHIFT = 0, LOWRA_TILE_LANES = 1 };

/// What the tiled kernels read (lowra_tile_pack fills the arrays; layout in lowra_tile_kernels.c).
typedef struct {
    uint64_t out, in, nb, tiles;
    int layout;                // LOWRA_TILE_MULTISHIFT or LOWRA_TILE_LANES
    const uint8_t *bits;       // (tiles) each tile's width
    const uint64_t *offsets;   // (tiles) byte offset of each tile's codes
    const uint8_t *codes;      // per tile nb blocks of 128 · bits bytes
    const uint8_t *tables;     // (tiles, 256) the lanes' uint8 levels, laid out for lookups
    const float *scales;       // (tiles, nb, 16) block scales a_rb, zero in empty lanes
    const float *level_min;    // (tiles, 16)
    const float *level_step;   // (tiles, 16)
    const int32_t *rows;       // (tiles, 16) the weight's row in each lane, -1 when empty
} lowra_tiled_view;

/// The arrays lowra_tile_pack writes, sized by lowra_tile_sizes (tiles T, code bytes B):
/// bits T, offsets T, codes B, tables 256 T, scales 16 T nb, level_min and level_step 16 T, rows 16 T.
typedef struct {
    uint8_t *bits;
    uint64_t *offsets;
    uint8_t *codes, *tables;
    float *scales, *level_min, *level_step;
    int32_t *rows;
} lowra_tiled_buffers;

/// Tiles and code bytes of w's tiled form.
void lowra_tile_sizes(const lowra_packed_view *w, uint64_t *tiles, uint64_t *code_bytes);
/// Fills the tiled form of w (which must carry its integer levels): the rows of each width in
/// order, 16 per tile, the last tile of a width padded with empty lanes; the widths' tiles
/// interleaved in proportion, so any stretch of tiles holds about the same mix. 0, or -1 when its
/// scratch could not be allocated.
int lowra_tile_pack(const lowra_packed_view *w, int layout, lowra_tiled_buffers *out);
/// Whether `path` runs the tiled kernels, for packed weights and Q8_0 rows (AVX-512 with VNNI and
/// VBMI: the multishift layouts; AVX2, AVX-512 without VBMI and NEON: the lanes layouts; tiles not
/// turned off); else lowra_tiled_gemm_q8 and lowra_q8_0_tiled_gemm_q8 run their scalar references.
int lowra_tiled_supported(int path);
/// The layout `path`'s tiled kernels read (a view of the other layout runs the scalar reference).
int lowra_tile_layout(int path);
/// Turns the tiled kernels off for the rest of the process (before anything decodes: a model
/// whose tiles would not fit in memory), as LOWRA_TILES=0 does.
void lowra_tiled_disable(void);
/// Y[c][r] ≈ Σ_j X[c][j] W[r][j] for the rows of tiles t0 <= t < t1, any number of columns, from
/// quantized activations (natural order only: lowra_q8_quantize's `orders` may be 1). Each
/// column's result is bit for bit the same whatever the other columns, and on every path.
void lowra_tiled_gemm_q8(int path, const lowra_tiled_view *t, const lowra_q8_activations *x, float *y, uint64_t ldy,
                         uint64_t t0, uint64_t t1);

/// Q8_0 rows (`in` a multiple of 32) in tiles of 16 rows, for the same products: what
/// lowra_q8_0_tile_pack fills, (out + 15) / 16 tiles T of in / 32 blocks.
typedef struct {
    uint64_t out, in, tiles;
    int layout;             // LOWRA_TILE_MULTISHIFT or LOWRA_TILE_LANES
    const uint8_t *codes;   // (T, in / 32, 512): multishift: weights + 128, interleaved by lane (byte
                            // 64 (j / 4) + 4 i + j % 4); lanes: lane i's 32 int8 weights at 32 i
    const float *scales;    // (T, in / 32, 16): the blocks' scales d, zero in empty lanes
    const int32_t *rows;    // (T, 16): row of each lane, -1 when empty
} lowra_q8_0_tiled_view;

/// The arrays lowra_q8_0_tile_pack writes: codes 512 T (in / 32) bytes, scales 16 T (in / 32),
/// rows 16 T.
typedef struct {
    uint8_t *codes;
    float *scales;
    int32_t *rows;
} lowra_q8_0_tiled_buffers;

/// Fills the tiled form of `out` Q8_0 rows (row r at rows + r * row_bytes).
void lowra_q8_0_tile_pack(const uint8_t *rows, uint64_t row_bytes, uint64_t out, uint64_t in, int layout,
                          lowra_q8_0_tiled_buffers *dst);
/// Y[c][r] ≈ Σ_j X[c][j] W[r][j] for the rows of tiles t0 <= t < t1, from activations quantized
/// with `orders` 0 (their Q8_0 offsets); as lowra_tiled_gemm_q8, the same bits on every path
/// and for any columns.
void lowra_q8_0_tiled_gemm_q8(int path, const lowra_q8_0_tiled_view *t, const lowra_q8_activations *x, float *y,
                              uint64_t ldy, uint64_t t0, uint64_t t1);

/// Training's input gradient from the tiles: DX[c][j] = Σ_r DY[c][r] W[r][j] (accumulate: DX[c][j] +=
/// it) for columns c0 <= c < c1 and every input j; DY (n, out) with leading dimension lddy, DX (n, in)
/// with lddx. Per column and block of 64 inputs, each row's DY · a_rb · step_r is quantized to int8 per
/// group of 64 tile rows (rounding: 1/254 of the group's largest) and multiplied by the rows' uint8
/// levels into exact int32 sums; the rows' min terms are summed in fp32 (lowra_tile_gradient.c). The
/// same bits on every path and for any columns. Uses the calling thread's lowra_thread_scratch: 0, or
/// -1 when it could not be allocated.
int lowra_tiled_gemm_t(int path, const lowra_tiled_view *t, const float *dy, uint64_t lddy, float *dx, uint64_t lddx,
                       int accumulate, uint64_t c0, uint64_t c1);
/// Whether `path` runs lowra_tiled_gemm_t with a vector kernel (AVX-512 VNNI + VBMI, multishift tiles);
/// elsewhere it runs the scalar reference, and training multiplies fp32 panels instead.
int lowra_tiled_t_supported(int path);
// ---------------------------------------------------------------------------------------------
// LoRA over a few columns (lowra_lora.c).

/// Y[c][o] += s · Σ_k B[o][k] XA[c][k] for rows o0 <= o < o1 of B (out, r) fp32 row-major and
/// columns c < n of XA (n, r); Y has leading dimension ldy. Every path computes each output as
/// one chain of fused multiply-adds over k, then y = fma(s, acc, y): the same bits on every path
/// and for any n.
void lowra_lora_up(int path, const float *b, uint64_t out, uint64_t r, const float *xa, uint64_t n, float s, float *y,
                   uint64_t ldy, uint64_t o0, uint64_t o1);

// ---------------------------------------------------------------------------------------------
// Decode attention over an f16 KV cache (lowra_attention.c), same paths.

/// For heads h0 <= h < h1: out[h*D ..< (h+1)*D] = softmax(q_h · K_g^T / sqrt(D)) V_g over the `tk`
/// cached positions, g = h / (heads / kv_heads); q (heads * D) fp32; keys and values (tk, kv_heads * D)
/// IEEE half; scores: tk floats of scratch per head (scores + h * tk).
void lowra_attention_decode_f16(int path, const float *q, const uint16_t *keys, const uint16_t *values, uint64_t tk,
                                uint64_t heads, uint64_t kv_heads, uint64_t head_dim, float *scores, float *out,
                                uint64_t h0, uint64_t h1);

/// fp32 -> IEEE half for n values with F16C (round to nearest even): 1 when `path` has F16C, else 0
/// and nothing written (the caller converts: Swift's Float16, `halvesFromFloats`).
int lowra_floats_to_halves(int path, const float *src, uint16_t *dst, uint64_t n);
/// IEEE half -> fp32 for n values, F16C where the path has it.
void lowra_halves_to_floats(int path, const uint16_t *src, float *dst, uint64_t n);

// ---------------------------------------------------------------------------------------------
// Elementwise (lowra_elementwise.c), same paths.

/// out[i] = silu(gate[i]) * up[i] = gate[i] / (1 + exp(-gate[i])) * up[i]. The scalar path calls
/// expf; the vector paths evaluate exp by range reduction and a degree-7 polynomial (relative
/// error a few fp32 ulps, below 1e-6).
void lowra_swiglu(int path, const float *gate, const float *up, float *out, uint64_t n);
/// Its gradient: dup[i] += dout[i] · silu(gate[i]), dgate[i] += dout[i] · up[i] · σ (1 + gate[i] (1 − σ)),
/// σ = 1 / (1 + exp(−gate[i])), with the same exp.
void lowra_swiglu_backward(int path, const float *gate, const float *up, const float *dout, float *dgate, float *dup,
                           uint64_t n);
/// x = softmax(x) in place over n values: exp(x - max) / Σ (the same exp as lowra_swiglu; the vector
/// paths sum 8 lanes, then the lanes in a fixed order).
void lowra_softmax(int path, float *x, uint64_t n);
/// Σ exp(x[i] - shift) accumulated in double (cross-entropy's log-sum-exp).
double lowra_sum_exp(int path, const float *x, uint64_t n, float shift);
/// out[i] = exp(x[i] - shift) · scale, the shift taken as two floats (hi + lo) so that it loses
/// nothing of a double's log-sum-exp near the logits (cross-entropy's gradient).
void lowra_exp_scaled(int path, const float *x, uint64_t n, double shift, float scale, float *out);

// Quantization (lowra_error_feedback.c, same paths).

/// Levels per row in lowra_error_feedback's padded tables (precisions up to 4 bits).
#define LOWRA_EF_LEVELS 16
/// Rows to hand lowra_error_feedback at a time (the widest path's lanes; fewer run the reference).
#define LOWRA_EF_ROWS 16

/// Error feedback (GPTQ's sweep) over the columns i1 ..< i2 of rows r0 ..< r1 of W (row-major, n
/// columns); later columns are the caller's (one product with the block's errors). Column by column,
/// each w[r][j] gets the code c = the number of the row's thresholds below w[r][j] / s (0 where the
/// block scale s is not positive) and the value q = s · levels[c], the scaled error e = (w − q) / u[j][j]
/// goes to e[r · (i2 − i1) + j − i1] and, squared in double, onto errors[r], and w[r][t] −= e · u[j][t]
/// for j < t < i2. levels: 16 per row (the row's, then anything); thresholds: 15 per row, ascending,
/// +inf past the row's; scales: (rows, scale_stride), one per `block_size` columns; u: (n, n); codes:
/// (rows, n). Each operation is rounded on its own, in this order, on every path: the same bits.
void lowra_error_feedback(int path, float *w, uint64_t n, uint64_t r0, uint64_t r1, uint64_t i1, uint64_t i2,
                          const float *u, const float *scales, uint64_t scale_stride, uint64_t block_size,
                          const float *levels, const float *thresholds, uint8_t *codes, double *errors, float *e);

#endif
