# Turns one kernels/cuda/*.cu file into host C++ for the kernel emulator:
#   cmake -DIN=kernels/cuda/X.cu -DOUT=.../X_emu.inc -P gen_emu.cmake
#  - extern __shared__ T name[];  ->  T *name = reinterpret_cast<T *>(emu_smem);  (the block's
#    dynamic shared memory); other __shared__ arrays -> static (blocks run one at a time);
#  - kern<<<g, b, smem, st>>>(args);  ->  emu_cfg(g, b, smem, st) | [=]() { kern(args); };
#    (cuda_runtime.h: the lambda copies the arguments, as a launch does, and runs per thread);
#  - for iv_rotated.cu, a marker at each kernel choice so the harness can check the dispatcher.
# Every anchor must be found: when a kernel file changes shape this fails the build instead of
# silently testing less.
file(READ "${IN}" src)
get_filename_component(name "${IN}" NAME)
function(must_replace from to)
  string(FIND "${src}" "${from}" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "gen_emu.cmake: '${from}' not found in ${IN}: update tests/kernel_emu")
  endif()
  string(REPLACE "${from}" "${to}" out "${src}")
  set(src "${out}" PARENT_SCOPE)
endfunction()
string(REGEX REPLACE "extern __shared__ ([A-Za-z0-9_]+) ([A-Za-z0-9_]+)\\[\\];"
       "\\1 *\\2 = reinterpret_cast<\\1 *>(emu_smem);" src "${src}")
string(REPLACE "__shared__ " "static " src "${src}")
string(FIND "${src}" "__shared__" left)
if(NOT left EQUAL -1)
  message(FATAL_ERROR "gen_emu.cmake: a __shared__ declaration the emulator does not know is left in ${IN}")
endif()
string(REGEX REPLACE "([A-Za-z_][A-Za-z_0-9]*(<[A-Za-z_0-9, ]*>)?)<<<([^;]*)>>>\\(([^;]*)\\);"
       "emu_cfg(\\3) | [=]() { \\1(\\4); };" src "${src}")
string(FIND "${src}" ">>>" left)
if(NOT left EQUAL -1)
  message(FATAL_ERROR "gen_emu.cmake: a launch the emulator could not rewrite is left in ${IN}")
endif()
if(name STREQUAL "iv_rotated.cu")
  must_replace("auto kern = k_rot_wreg<K, C, S>;" "auto kern = k_rot_wreg<K, C, S>; emu_note(\"wreg\");")
  must_replace("if (occ == 1 && k >= kPipeMinK && ngp > sms && smem <= (size_t)optin) {"
               "if (occ == 1 && k >= kPipeMinK && ngp > sms && smem <= (size_t)optin) { emu_note(\"pipe\");")
  must_replace("const cvene_status r = queue_resident(be, st, kern, p.T, p.smem,"
               "emu_note(\"resident\"); const cvene_status r = queue_resident(be, st, kern, p.T, p.smem,")
  must_replace("auto kern = k_iv_rotated<V>;" "auto kern = k_iv_rotated<V>; emu_note(\"l2\");")
  must_replace("return rotated_gemm(" "return emu_note(\"cublas\"), rotated_gemm(")
endif()
file(WRITE "${OUT}" "// generated from ${IN} by tests/kernel_emu/gen_emu.cmake: do not edit\n${src}")
