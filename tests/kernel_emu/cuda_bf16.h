/* Host stand-in for cuda_bf16.h (kernel emulator): the 16-bit pattern and the RN conversion. */
#pragma once
#include <cstdint>
struct __nv_bfloat16 {
    uint16_t bits;
};
__nv_bfloat16 __float2bfloat16_rn(float x);
float __bfloat162float(__nv_bfloat16 h);
