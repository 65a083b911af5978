// The rounding boundary of the official numerics (quant_sim.h) nearest to a magnitude a > 0. The distance
// |a - b| is the rounding's margin: near 0, a last-bit change elsewhere can flip the stored value by a
// whole step. Used to trace drift between two implementations to the roundings that caused it.
#pragma once
#include <cmath>

namespace flashstar {

// The nearest rounding midpoint for a float format with `mant` stored mantissa bits whose normal range
// starts at `min_normal` (below it: uniform steps of min_normal * 2^-mant). Just above a power of two the
// midpoint below it (half the spacing) can be the nearer one.
inline double float_boundary(double a, int mant, double min_normal) {
  if (a < min_normal) {
    const double q = min_normal * std::ldexp(1.0, -mant);
    return (std::floor(a / q) + 0.5) * q;
  }
  int e;
  std::frexp(a, &e);  // a in [2^(e-1), 2^e)
  const double q = std::ldexp(1.0, e - 1 - mant), k = std::floor(a / q);
  const double up = (k + 0.5) * q;
  const double low = std::ldexp(1.0, e - 1);
  const double down = k * q == low ? (low > min_normal ? low - q / 4 : low - q / 2) : (k - 0.5) * q;
  return std::fabs(a - up) <= std::fabs(a - down) ? up : down;
}

// FP8 E4M3 (scaled magnitude, before clamping at 448).
inline double e4m3_boundary(double a) { return a >= 464.0 ? 1e30 : float_boundary(a, 3, 0.015625); }

// IEEE half.
inline double f16_boundary(double a) { return float_boundary(a, 10, 6.103515625e-05); }

// FP4 E2M1 magnitudes {0, .5, 1, 1.5, 2, 3, 4, 6}: the midpoints between them.
inline double e2m1_boundary(double a) {
  const double mids[7] = {0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0};
  double best = mids[0];
  for (double m : mids)
    if (std::fabs(a - m) < std::fabs(a - best)) best = m;
  return best;
}

// A power-of-two ceiling (the block scales): the boundaries are the powers of two themselves.
inline double pow2_ceil_boundary(double y) { return y > 0 ? std::exp2(std::round(std::log2(y))) : 1e30; }

}  // namespace flashstar
