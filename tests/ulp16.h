// Comparing 16-bit (bf16 / f16) results element by element, in ulps of the dtype.
//
// An element passes when |got - ref| <= ulps * ulp(ref) + floor, with ulp(ref) the spacing of
// dt's values at |ref| (bf16: 8 significand bits, f16: 11; subnormal spacing below the
// smallest normal) and floor = floor_rel * max(1, max |ref|) when ulps > 0 (0 for exact
// checks). The suites use ulps = 1 and floor_rel = 1e-5 (the f32-vs-f32 noise every f32 suite
// allows): two implementations that each round one f32 result to dt differ by at most one
// rounding boundary, except where a sum cancels far below its terms and their f32 noise exceeds
// dt's ulp at the value. Non-finite values must match exactly (NaN with NaN, same Inf).
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

extern "C" {
#include "kernels/dtype.h"
}

// Elements of got (dt patterns) outside the bound around ref (dt patterns); the first one's
// index and values in *first / *ref_first / *got_first.
inline size_t ulp16_mismatches(const std::vector<uint16_t> &ref, const std::vector<uint16_t> &got, cvene_dtype dt,
                               int ulps, double floor_rel, size_t *first, float *ref_first, float *got_first) {
    std::vector<float> rf(ref.size()), gf(got.size());
    cvene_half_to_f32_array(rf.data(), ref.data(), ref.size(), dt);
    cvene_half_to_f32_array(gf.data(), got.data(), got.size(), dt);
    double mx = 0;
    for (float x : rf)
        if (std::isfinite(x)) mx = std::max(mx, (double)std::fabs(x));
    const int p = dt == CVENE_BF16 ? 8 : 11;
    const int emin = dt == CVENE_BF16 ? -126 : -14;
    size_t bad = 0;
    *first = 0;
    for (size_t i = 0; i < rf.size() && i < gf.size(); i++) {
        bool ok;
        if (!std::isfinite(rf[i]) || !std::isfinite(gf[i])) {
            ok = (std::isnan(rf[i]) && std::isnan(gf[i])) || rf[i] == gf[i];
        } else {
            const double a = std::fabs((double)rf[i]);
            const int e = std::max(a > 0 ? std::ilogb(a) : emin, emin);
            const double tol = ulps ? ulps * std::ldexp(1.0, e - (p - 1)) + floor_rel * std::max(1.0, mx) : 0.0;
            ok = std::fabs((double)gf[i] - rf[i]) <= tol;
        }
        if (!ok && bad++ == 0) *first = i;
    }
    if (!rf.empty()) *ref_first = rf[*first], *got_first = gf[*first];
    return bad;
}

// EXPECT that got is within the bound around ref; what names the check in the failure.
inline void expect_ulp16(const std::vector<uint16_t> &ref, const std::vector<uint16_t> &got, cvene_dtype dt,
                         const std::string &what, int ulps = 1, double floor_rel = 1e-5) {
    ASSERT_EQ(ref.size(), got.size()) << what;
    size_t first = 0;
    float r = 0, g = 0;
    const size_t bad = ulp16_mismatches(ref, got, dt, ulps, floor_rel, &first, &r, &g);
    EXPECT_EQ(bad, 0u) << what << " (" << (dt == CVENE_BF16 ? "bf16" : "f16") << "): " << bad << " of " << ref.size()
                       << " elements off by more than " << ulps << " ulp; first at " << first << ": " << g
                       << ", reference " << r;
}
