# Turns kernels/cuda/iv_rotated.cu into host C++ for the kernel emulator:
#   cmake -DIN=kernels/cuda/iv_rotated.cu -DOUT=.../iv_rotated_emu.inc -P gen_emu.cmake
# dynamic shared memory -> the emulated block's buffer; the static tile -> a static array
# (blocks run one at a time); launches kern<<<g, b, smem, st>>>(args) -> EMU_LAUNCH; and a
# marker at each kernel choice so the harness can check the dispatcher. Every anchor must be
# found: when the kernel file changes shape, this fails the build instead of testing less.
file(READ "${IN}" src)
function(must_replace from to)
  string(FIND "${src}" "${from}" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "gen_emu.cmake: '${from}' not found in ${IN}: update tests/kernel_emu")
  endif()
  string(REPLACE "${from}" "${to}" out "${src}")
  set(src "${out}" PARENT_SCOPE)
endfunction()
must_replace("extern __shared__ float4 sm4[];" "float4 *sm4 = reinterpret_cast<float4 *>(emu_smem);")
must_replace("extern __shared__ float sm[];" "float *sm = reinterpret_cast<float *>(emu_smem);")
must_replace("__shared__ float tile" "static float tile")
must_replace("auto kern = k_rot_wreg<K, C, S>;" "auto kern = k_rot_wreg<K, C, S>; emu_note(\"wreg\");")
must_replace("if (occ == 1 && k >= kPipeMinK && ngp > sms && smem <= (size_t)optin) {"
             "if (occ == 1 && k >= kPipeMinK && ngp > sms && smem <= (size_t)optin) { emu_note(\"pipe\");")
must_replace("const cvene_status r = queue_resident(be, st, kern, p.T, p.smem,"
             "emu_note(\"resident\"); const cvene_status r = queue_resident(be, st, kern, p.T, p.smem,")
must_replace("auto kern = k_iv_rotated<V>;" "auto kern = k_iv_rotated<V>; emu_note(\"l2\");")
must_replace("return rotated_gemm(" "return emu_note(\"cublas\"), rotated_gemm(")
string(FIND "${src}" "__shared__" left)
if(NOT left EQUAL -1)
  message(FATAL_ERROR "gen_emu.cmake: a __shared__ declaration the emulator does not know is left in ${IN}")
endif()
string(REGEX REPLACE "([A-Za-z_0-9]+)<<<([^>]*)>>>\\(([^;]*)\\);" "EMU_LAUNCH(\\1, \\2, \\3);" src "${src}")
string(FIND "${src}" "<<<" left)
if(NOT left EQUAL -1)
  message(FATAL_ERROR "gen_emu.cmake: a launch the emulator could not rewrite is left in ${IN}")
endif()
file(WRITE "${OUT}" "// generated from ${IN} by tests/kernel_emu/gen_emu.cmake: do not edit\n${src}")
