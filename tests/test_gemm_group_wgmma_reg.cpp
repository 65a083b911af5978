// The register-decoded grouped wgmma kernel (variant 2, src/cuda/gemm_group_wgmma_reg.{h,cu}) on the CPU,
// no GPU: its fragment decoders give exactly v2's decoded tile (gemm_v2::Decode's Tile32) at the
// fragment's positions, for random blocks, every IQ2_XXS grid entry x sign pattern x slot x lane, and
// every Q2_K scale byte; each decoded value lands in the A register that the PTX ISA's m64k16 fragment
// layout gives its (row, column), and each accumulator element is promoted with its own row's factors;
// the activation copies, the wgmma descriptors and the token sums' reads meet on the same bytes of the
// swizzled stages (every operand element read is the (term, item, column) the kernel means); the raw
// copies cover the rows the decoders read.
#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <map>
#include <random>
#include <set>
#include <vector>
#include <type_traits>

#include "common/half.h"
#include "quant/quant.h"
#include "cuda/gemm_group_wgmma_reg.h"

using namespace flashstar;
namespace gr = flashstar::cuda::wgmma_reg;
namespace g2 = flashstar::cuda::gemm_v2;
namespace dq = flashstar::cuda::wgmma_q8;
namespace wg = flashstar::cuda::wgmma;

namespace {

// PTX ISA, "Register fragments" of wgmma .m64nNk16 with A in registers (f16): warp w of the warpgroup holds
// rows 16 w .. + 15 laid out as mma.m16n8k16's A: a0, a1 (row g, columns 2 t + {0, 1}), a2, a3 (row g + 8),
// a4, a5 (row g, columns + 8), a6, a7 (row g + 8, columns + 8), g = lane / 4, t = lane % 4; register r
// holds a(2r), a(2r + 1).
void ptx_a(int w, int lane, int r, int half, int& row, int& col) {
  const int g = lane >> 2, t = lane & 3;
  row = 16 * w + g + ((r & 1) ? 8 : 0);
  col = 2 * t + half + ((r & 2) ? 8 : 0);
}
// The accumulator D (f32, m64nN): d(i) of lane l in warp w is row 16 w + l / 4 + 8 ((i / 2) % 2), column
// 8 (i / 4) + 2 (l % 4) + i % 2.
void ptx_d(int w, int lane, int i, int& row, int& col) {
  row = 16 * w + (lane >> 2) + 8 * ((i >> 1) & 1);
  col = 8 * (i >> 2) + 2 * (lane & 3) + (i & 1);
}

template <GgmlType T>
using TypeTag = std::integral_constant<GgmlType, T>;

// Random raw words of one row's unit, finite FP16 scales (IQ2_XXS d at the unit's first byte; Q2_K d, dmin
// in word 20).
void random_row(std::mt19937& rng, uint32_t* rw, int n) {
  for (int i = 0; i < n; ++i) rw[i] = rng() & 0xBFFFBFFFu;
}

// One row's k-tile j: every pair q's fragment values against v2's Tile32, and the row factors.
template <GgmlType T>
void check_row(const uint32_t* rw, int a2, int j, const unsigned char* tab, const uint32_t* sel, const char* what,
               int g = 5) {
  g2::Tile32 o;
  g2::Decode<T>::run(rw, a2, j, sel, o);
  for (int q = 0; q < 4; ++q) {
    uint32_t h[4];
    float sc, n0, n1;
    gr::FragDecode<T>::run(rw, a2, j, 4 * g + q, tab, h, sc, n0, n1);
    for (int m = 0; m < 4; ++m)
      ASSERT_EQ(h[m], o.h[4 * m + q]) << what << ": j " << j << " q " << q << " m " << m << " a2 " << a2;
    ASSERT_EQ(f32_to_bits(sc), f32_to_bits(o.scale)) << what;
    if constexpr (T == GgmlType::IQ2_XXS) {  // the kernel's path: the record, then the lane's decode
      gr::Iq2Rec rec;
      gr::iq2_record(rw, a2, j, rec);
      uint32_t hr[4];
      gr::iq2_rec_frag(rec, 4 * g + q, tab, hr);
      for (int m = 0; m < 4; ++m) ASSERT_EQ(hr[m], o.h[4 * m + q]) << what << " (record): j " << j << " q " << q << " m " << m;
      ASSERT_EQ(f32_to_bits(rec.scale), f32_to_bits(o.scale)) << what << " (record)";
    }
    if (g2::FmtOf<T, gr::G>::kMins > 0) {  // (IQ2_XXS: promote<0> reads no minima)
      ASSERT_EQ(f32_to_bits(n0), f32_to_bits(-o.min0)) << what;
      ASSERT_EQ(f32_to_bits(n1), f32_to_bits(-o.min1)) << what;
    }
  }
}

// The global pair table, its replication as the kernel's fill leaves it in shared memory, and v2's
// selector table.
struct Tables {
  uint32_t t32[1024];
  std::vector<unsigned char> tab = std::vector<unsigned char>(gr::kTabBytes, 0xEE);
  uint32_t sel[256];
  Tables() {
    EXPECT_TRUE(gr::iq2_pair_table(t32));
    EXPECT_TRUE(g2::iq2_sel_table(sel));
    for (int i = 0; i < gr::kTabFillTasks; ++i)  // the kernel's fill: entry i / 8's 16 bytes
      std::memcpy(&tab[gr::iq2_fill_off(i)], &t32[4 * (i >> 3)], 16);
  }
};

}  // namespace

TEST(GemmGroupWgmmaReg, FragmentsAreThePtxLayout) {
  for (int w = 0; w < 4; ++w)
    for (int lane = 0; lane < 32; ++lane) {
      const int q = lane & 3;
      // The decoders' value (row R + 8 rr, column 8 m + 2 q + half) goes to register r of step s.
      for (int m = 0; m < 4; ++m)
        for (int rr = 0; rr < 2; ++rr) {
          int s, r;
          gr::frag_reg(m, rr, s, r);
          ASSERT_TRUE(s >= 0 && s < 2 && r >= 0 && r < 4);
          for (int half = 0; half < 2; ++half) {
            int row, col;
            ptx_a(w, lane, r, half, row, col);
            ASSERT_EQ(row, dq::a_row(w, lane, 0) + 8 * rr);
            ASSERT_EQ(16 * s + col, 8 * m + 2 * q + half) << "w " << w << " lane " << lane << " m " << m;
            ASSERT_EQ(row, dq::a_row(w, lane, r));
            ASSERT_EQ(col, dq::a_col(lane, r, half));
          }
        }
      // Every (row, column) of the warp's 16 x 32 k-tile once over its lanes (checked below by a set).
      for (int i = 0; i < 64; ++i) {
        int row, col;
        ptx_d(w, lane, i, row, col);
        ASSERT_EQ(row, dq::a_row(w, lane, 0) + 8 * gr::acc_rr(i)) << "promotion row factors";
        ASSERT_EQ(row, wg::d_row(w, lane, i));
        ASSERT_EQ(col, wg::d_col(lane, i));
      }
    }
  std::map<std::pair<int, int>, int> seen;
  for (int w = 0; w < 4; ++w)
    for (int lane = 0; lane < 32; ++lane)
      for (int m = 0; m < 4; ++m)
        for (int rr = 0; rr < 2; ++rr)
          for (int half = 0; half < 2; ++half)
            ++seen[{dq::a_row(w, lane, 0) + 8 * rr, 8 * m + 2 * (lane & 3) + half}];
  ASSERT_EQ(seen.size(), size_t(64 * 32));
  for (const auto& kv : seen) ASSERT_EQ(kv.second, 1);
}

TEST(GemmGroupWgmmaReg, PairTableCopiesAreConflictFree) {
  // Every row group's copy of every entry where the lookups read it (256 idx + 16 g + 4 q, the PRMT
  // offset), and a warp's 32 lanes on 32 different banks whatever entries they read.
  Tables t;
  for (int idx = 0; idx < 256; ++idx)
    for (int lane = 0; lane < 32; ++lane) {
      const uint32_t qs = static_cast<uint32_t>(idx) << 16;  // grid index in byte 2
      const uint32_t off = gr::iq2_tab_off(qs, 2, gr::iq2_lane_off(lane));
      ASSERT_EQ(off, 256u * idx + 16u * (lane >> 2) + 4u * (lane & 3));
      uint32_t v;
      std::memcpy(&v, &t.tab[off], 4);
      ASSERT_EQ(v, t.t32[4 * idx + (lane & 3)]);
      ASSERT_EQ((off / 4) % 32, uint32_t(lane)) << "bank";
      ASSERT_LT(off % gr::kTabEntryBytes, 128u) << "clear of the records";
    }
  std::set<uint32_t> filled;
  for (int i = 0; i < gr::kTabFillTasks; ++i) {
    ASSERT_TRUE(filled.insert(gr::iq2_fill_off(i)).second);
    ASSERT_LT(gr::iq2_fill_off(i) % gr::kTabEntryBytes, 128u);
  }
}

TEST(GemmGroupWgmmaReg, Iq2RecordsSignsAndPlaces) {
  // The 8 signs of every 7-bit field, in each of the 4 entries, are the format's (kIq2xsSigns).
  for (uint32_t f = 0; f < 128; ++f)
    for (int e = 0; e < 4; ++e) {
      const uint32_t sg = (f << (7 * e)) | (0x5A3C96E1u & ~(127u << (7 * e)) & 0x0FFFFFFFu);
      ASSERT_EQ((gr::iq2_s8x4(sg) >> (8 * e)) & 255u, uint32_t(quant::kIq2xsSigns[f])) << "f " << f << " e " << e;
      ASSERT_EQ((gr::iq2_s8x4(sg) >> (8 * e)) & 255u, g2::iq2_signs(f));
    }
  // Records: every (row, buffer, sub-block) in its own 16 bytes, clear of the table's first 64 bytes of
  // each 256-byte slot and inside the array; a warp's 8 rows (R = 16 w + g, + 8) on 8 bank groups.
  std::set<uint32_t> used;
  for (int row = 0; row < gr::kBM; ++row)
    for (int buf = 0; buf < 2; ++buf)
      for (int j = 0; j < 8; ++j) {
        const uint32_t off = gr::iq2_rec_off(row, buf, j);
        ASSERT_EQ(off % 16, 0u);
        ASSERT_GE(off % gr::kTabEntryBytes, 128u);
        ASSERT_LE(off + 16, uint32_t(gr::kTabBytes));
        ASSERT_TRUE(used.insert(off).second);
      }
  for (int base = 0; base < gr::kBM; base += 8)
    for (int buf = 0; buf < 2; ++buf)
      for (int j = 0; j < 8; ++j) {
        std::set<uint32_t> groups;
        for (int g = 0; g < 8; ++g) groups.insert((gr::iq2_rec_off(base + g, buf, j) % 128) / 16);
        ASSERT_EQ(groups.size(), 8u);
      }
  // The pre-pass tasks: every (row, sub-block) of a unit once.
  std::set<std::pair<int, int>> tasks;
  for (int tid = 0; tid < gr::kThreads; ++tid)
    for (int k = 0; k < gr::kRecPerThread; ++k) ASSERT_TRUE(tasks.insert({gr::rec_row(tid), gr::rec_j(tid, k)}).second);
  ASSERT_EQ(tasks.size(), size_t(gr::kBM * 8));
}

TEST(GemmGroupWgmmaReg, DecodersAreV2sTileOnRandomBlocks) {
  Tables t;
  std::mt19937 rng(11);
  for (int trial = 0; trial < 3000; ++trial) {
    uint32_t rw[32];
    random_row(rng, rw, 32);
    for (int j = 0; j < 8; ++j) {
      check_row<GgmlType::IQ2_XXS>(rw, 0, j, t.tab.data(), t.sel, "IQ2_XXS a2 0", trial & 7);
      check_row<GgmlType::IQ2_XXS>(rw, 2, j, t.tab.data(), t.sel, "IQ2_XXS a2 2", (trial + 3) & 7);
      check_row<GgmlType::Q2_K>(rw, 0, j, t.tab.data(), t.sel, "Q2_K");
      if (HasFatalFailure()) return;
    }
  }
}

TEST(GemmGroupWgmmaReg, Iq2EveryEntrySignAndSlot) {
  // Each grid entry idx with each 7-bit sign field s in each of the 4 slots of a sub-block (the other
  // slots random), for both unit alignments and every lane pair q (check_row).
  Tables t;
  std::mt19937 rng(5);
  for (int idx = 0; idx < 256; ++idx)
    for (int s = 0; s < 128; ++s) {
      const int slot = (idx + s) & 3, j = (idx * 7 + s) & 7, a2 = (s & 1) * 2;
      uint8_t bytes[80];
      for (uint8_t& b : bytes) b = static_cast<uint8_t>(rng());
      bytes[a2 + 1] &= 0xBF;  // finite d
      uint8_t* sub = bytes + a2 + 2 + 8 * j;
      sub[slot] = static_cast<uint8_t>(idx);
      uint32_t sg = static_cast<uint32_t>(sub[4]) | (static_cast<uint32_t>(sub[5]) << 8) |
                    (static_cast<uint32_t>(sub[6]) << 16) | (static_cast<uint32_t>(sub[7]) << 24);
      sg = (sg & ~(127u << (7 * slot))) | (static_cast<uint32_t>(s) << (7 * slot));
      for (int k = 0; k < 4; ++k) sub[4 + k] = static_cast<uint8_t>(sg >> (8 * k));
      uint32_t rw[20];
      for (int w = 0; w < 20; ++w)
        rw[w] = bytes[4 * w] | (bytes[4 * w + 1] << 8) | (bytes[4 * w + 2] << 16) | (uint32_t(bytes[4 * w + 3]) << 24);
      check_row<GgmlType::IQ2_XXS>(rw, a2, j, t.tab.data(), t.sel, "IQ2_XXS entry x signs", s & 7);
      if (HasFatalFailure()) return;
    }
}

TEST(GemmGroupWgmmaReg, Q2kEveryScaleByte) {
  Tables t;
  std::mt19937 rng(3);
  for (int v = 0; v < 256; ++v)
    for (int pos = 0; pos < 16; ++pos) {
      uint32_t rw[24];
      random_row(rng, rw, 24);
      uint8_t* sc = reinterpret_cast<uint8_t*>(rw);  // little-endian words: byte pos of the block
      sc[pos] = static_cast<uint8_t>(v);
      sc[pos ^ 1] = static_cast<uint8_t>(255 - v);
      for (int j = 0; j < 8; ++j) check_row<GgmlType::Q2_K>(rw, 0, j, t.tab.data(), t.sel, "Q2_K scale byte");
      if (HasFatalFailure()) return;
    }
}

TEST(GemmGroupWgmmaReg, CopiesDescriptorsAndSumsMeetOnTheStages) {
  // Shared memory as the activation copies leave it: byte -> (term, item, column of the 64-column chunk),
  // per stage. The kernel's destination: xd + st + term * kTermBytes + (tok - tid / 8) * 128 with
  // xd = xs + b_off(tid / 8, tid % 8).
  const uint32_t xs = 3 * 1024;  // any 1024-byte aligned base
  std::map<uint32_t, std::array<int, 4>> owner;
  for (int st = 0; st < gr::kStages; ++st)
    for (int tid = 0; tid < gr::kThreads; ++tid)
      for (int v = 0; v < 8; ++v) {
        int term, tok, ch;
        dq::x_task(tid, v, term, tok, ch);
        ASSERT_EQ(tok & 7, (tid >> 3) & 7) << "the swizzle of tid / 8's row";
        const uint32_t a = xs + dq::b_off(tid >> 3, tid & 7) + st * gr::kStageBytes +
                           static_cast<uint32_t>(term * gr::kTermBytes + (tok - (tid >> 3)) * 128);
        ASSERT_EQ(a, xs + st * gr::kStageBytes + term * gr::kTermBytes + dq::b_off(tok, ch));
        ASSERT_EQ(ch, tid & 7);
        for (int e = 0; e < 8; ++e)
          ASSERT_TRUE(owner.emplace(a + 2 * e, std::array<int, 4>{st, term, tok, 8 * ch + e}).second) << "twice";
      }
  ASSERT_EQ(owner.size(), size_t(gr::kStages) * gr::kStageBytes / 2);
  // B of k-tile t, step s: the kernel's b_addr(t) (stage of chunk t / 2, + 64 bytes for odd t), + 2 s in the
  // descriptor's start field (32 bytes); lo term kTermBytes further. Element (n, k) must be item n's column
  // 32 (t % 2) + 16 s + k of that term.
  for (int t = 0; t < 16; ++t) {
    const int st = gr::stage_of(t >> 1);
    const uint32_t hi = xs + static_cast<uint32_t>(st) * gr::kStageBytes + 64u * static_cast<uint32_t>(t & 1);
    for (int s = 0; s < 2; ++s)
      for (int term = 0; term < 2; ++term) {
        const uint64_t d = dq::desc_b(hi + (term ? gr::kTermBytes : 0u)) + 2 * s;
        for (int n = 0; n < gr::kBN; ++n)
          for (int k = 0; k < 16; ++k) {
            const auto it = owner.find(wg::desc_element_addr(d, n, k));
            ASSERT_TRUE(it != owner.end());
            const std::array<int, 4> want{st, term, n, 32 * (t & 1) + 16 * s + k};
            ASSERT_EQ(it->second, want) << "t " << t << " s " << s << " n " << n << " k " << k;
          }
      }
    // The token sums' reads: item, half, k -> columns 32 (t % 2) + 16 half + 8 k + e, both terms.
    for (int item = 0; item < gr::kBN; ++item)
      for (int half = 0; half < 2; ++half)
        for (int k = 0; k < 2; ++k)
          for (int term = 0; term < 2; ++term)
            for (int e = 0; e < 8; ++e) {
              const uint32_t a = xs + static_cast<uint32_t>(st) * gr::kStageBytes + (term ? gr::kTermBytes : 0u) +
                                 dq::b_off(item, gr::sum_chunk(t, half, k)) + 2u * e;
              const std::array<int, 4> want{st, term, item, 32 * (t & 1) + 16 * half + 8 * k + e};
              ASSERT_EQ(owner.at(a), want);
            }
  }
  // Sum tasks: one a thread, every (item, half) once; each sum in its own slot, and the promotion's
  // 16-byte load for the even item j of element group g holds (j, half 0), (j + 1, half 0), (j, 1), (j + 1, 1)
  // (promote(): c & 1 picks the item, .x/.y half 0, .z/.w half 1).
  std::map<std::pair<int, int>, int> tasks;
  for (int tid = 0; tid < gr::kThreads; ++tid) ++tasks[{gr::sum_item(tid), gr::sum_half(tid)}];
  ASSERT_EQ(tasks.size(), size_t(2 * gr::kBN));
  std::set<int> slots;
  for (int i = 0; i < gr::kTilesPerIter; ++i)
    for (int half = 0; half < 2; ++half)
      for (int item = 0; item < gr::kBN; ++item) {
        const int x = gr::sum_index(i, half, item);
        ASSERT_TRUE(slots.insert(x).second);
        ASSERT_LT(x * 4, gr::Smem<GgmlType::Q2_K>::kSums);
      }
  for (int i = 0; i < gr::kTilesPerIter; ++i)
    for (int lane = 0; lane < 32; ++lane)
      for (int g = 0; g < 16; ++g) {
        const int j = wg::d_col(lane, 4 * g);
        ASSERT_EQ(j % 2, 0);
        ASSERT_EQ(j + 1, wg::d_col(lane, 4 * g + 1));
        const int p = gr::sum_pair(i, j);
        ASSERT_EQ(p % 4, 0) << "16-byte aligned";
        ASSERT_EQ(gr::sum_index(i, 0, j), p + 0);
        ASSERT_EQ(gr::sum_index(i, 0, j + 1), p + 1);
        ASSERT_EQ(gr::sum_index(i, 1, j), p + 2);
        ASSERT_EQ(gr::sum_index(i, 1, j + 1), p + 3);
      }
}

TEST(GemmGroupWgmmaReg, RawCopiesCoverWhatTheDecodersRead) {
  auto check = [](auto tag) {
    constexpr GgmlType T = decltype(tag)::value;
    using F = g2::FmtOf<T, gr::G>;
    using S = gr::Smem<T>;
    std::vector<int> written(S::kRawBuf, 0);
    for (int tid = 0; tid < gr::kThreads; ++tid)
      for (int v = 0; v < gr::kRawCopies<T>; ++v) {
        const int q = tid + gr::kThreads * v;
        if (q >= gr::kBM * F::kWords) continue;
        const int row = q / F::kWords, word = q - row * F::kWords;
        ASSERT_EQ(q, row * F::kStride + word);
        ++written[q];
      }
    for (int row = 0; row < gr::kBM; ++row)
      for (int w = 0; w < F::kWords; ++w) ASSERT_EQ(written[row * F::kStride + w], 1);
    // The decoders read row words 0 .. kWords (IQ2_XXS: one past the row, from the next row or the spare
    // words, shifted out); rows R and R + 8 of every thread are block rows.
    ASSERT_LE(gr::kBM * F::kStride + 1, S::kRawBuf);
    ASSERT_LE(S::off_raw + 2 * S::kRawBytes, S::off_sums);
    ASSERT_LE(S::bytes + 2048, 227 * 1024) << "one block an SM, with the alignment slack";
  };
  check(TypeTag<GgmlType::IQ2_XXS>{});
  check(TypeTag<GgmlType::Q2_K>{});
  ASSERT_EQ(gr::Smem<GgmlType::IQ2_XXS>::off_raw % 1024, 0);
}

// FLASHSTAR_GEMM_GROUP_Q2K_SUMS: the precomputed token sums (gr::tsum_*) are the sums the k-loop forms.
// For every k-tile of several iterations, half and sum8 k: the scratch group the kernel copies
// (tsum_group) holds columns tsum_col(g, k) .. + 7 (group_token_sums), which must be the k-tile's columns
// that the in-loop sums() read (chunk t / 2's 16-byte chunk sum_chunk(t, half, k)); each copy lands in
// the slot the promotion reads (sum_index), every slot of a buffer once; a thread's copies of an item and
// iteration stay in the item's 32-byte scratch sector; the two buffers fit the shared memory.
TEST(GemmGroupWgmmaReg, PrecomputedTokenSumsAreTheLoopsColumnsAndSlots) {
  const int groups = 2048 / 16;  // the down projection's input (FF = 2048)
  for (int it = 0; it < 2048 / (32 * gr::kTilesPerIter); ++it) {
    std::set<int> slots;
    for (int tid = 0; tid < gr::kThreads; ++tid) {
      const int item = gr::sum_item(tid), half = gr::sum_half(tid);
      std::set<int64_t> sectors;
      for (int i = 0; i < gr::kTilesPerIter; ++i) {
        const int t = gr::kTilesPerIter * it + i, g = gr::tsum_group(it, i, half);
        ASSERT_EQ(gr::tsum_group(it, i, half), gr::tsum_group(it, i, 0) + half) << "the half in the row offset";
        ASSERT_LT(g, groups);
        for (int k = 0; k < 2; ++k)
          ASSERT_EQ(gr::tsum_col(g, k), gr::kChunkCols * (t >> 1) + 8 * gr::sum_chunk(t, half, k))
              << "it " << it << " i " << i << " half " << half << " k " << k;
        ASSERT_TRUE(slots.insert(gr::sum_index(i, half, item)).second) << "a slot twice";
        sectors.insert(gr::tsum_index(item, g, groups) * 4 / 32);
      }
      ASSERT_EQ(sectors.size(), 1u) << "one sector an item and iteration";
    }
    constexpr int kBuf = gr::Smem<GgmlType::Q2_K, true>::kSumsBuf;
    ASSERT_EQ(slots.size(), size_t(kBuf));
    ASSERT_EQ(*slots.rbegin(), kBuf - 1);
  }
  using S1 = gr::Smem<GgmlType::Q2_K>;
  using S2 = gr::Smem<GgmlType::Q2_K, true>;
  ASSERT_EQ(S2::kSums, 2 * S1::kSums);
  ASSERT_EQ(S2::off_sums, S1::off_sums);
  ASSERT_LE(S2::off_sums + S2::kSums, S2::off_rec);
  ASSERT_EQ(S2::off_sums % 16, 0);
  ASSERT_LE(S2::bytes + 1024 + 16 + 1024, 227 * 1024) << "one block an SM (the launch's static_assert)";
  // Rows: item r's groups consecutive, rows groups apart.
  ASSERT_EQ(gr::tsum_index(3, 5, groups), 3 * groups + 5);
}

// swiglu_f16's token sums add two sum4 across lanes: sum4 of the first and last 4 columns, added, is
// sum8 bit for bit (random FP16 words, finite and not).
TEST(GemmGroupWgmmaReg, Sum4PairIsSum8) {
  std::mt19937 rng(11);
  for (int trial = 0; trial < 100000; ++trial) {
    uint32_t hi[4], lo[4];
    for (int i = 0; i < 4; ++i) hi[i] = rng(), lo[i] = rng() & 0x3FFF3FFFu;  // lo: small residuals
    if (trial % 2) for (uint32_t& w : hi) w &= 0xBFFFBFFFu;                  // mostly finite
    const uint32_t h0[2] = {hi[0], hi[1]}, h1[2] = {hi[2], hi[3]}, l0[2] = {lo[0], lo[1]}, l1[2] = {lo[2], lo[3]};
    const float a = cuda::gemm_int::sum8(hi, lo), b = cuda::gemm_int::sum4(h0, l0) + cuda::gemm_int::sum4(h1, l1);
    uint32_t ba, bb;
    std::memcpy(&ba, &a, 4), std::memcpy(&bb, &b, 4);
    if (a != a) ASSERT_TRUE(b != b);
    else ASSERT_EQ(ba, bb) << trial;
  }
}
