/* Host stand-in for cuda_fp16.h (kernel emulator): the 16-bit pattern and the RN conversion. */
#pragma once
#include <cstdint>
struct __half {
    uint16_t bits;
};
__half __float2half_rn(float x);
float __half2float(__half h);
