// Where the suites find their data. tests/CMakeLists.txt compiles in absolute paths of the
// machine that built them (CVENE_*_PATH) and force-includes this header into every suite;
// an environment variable, when set and non-empty, overrides each one at run time, so the
// same binaries also run from a copy of the tree at another path (bench/gpu_check.sh on a
// lent GPU machine):
//   CVENE_FIXTURES_DIR   tests/fixtures
//   CVENE_TEST_TMP_DIR   scratch directory the suites write into
//   CVENE_ASSETS_DIR     assets/
// CVENE_FIXTURES, CVENE_TEST_TMP and CVENE_ASSETS are const char * expressions, not string
// literals: write std::string(CVENE_FIXTURES) + "/gpt2", never CVENE_FIXTURES "/gpt2".
#pragma once
#include <cstdlib>

inline const char *cvene_test_path(const char *env, const char *compiled_in) {
    const char *v = std::getenv(env);
    return v && *v ? v : compiled_in;
}

#ifdef CVENE_FIXTURES_PATH
#define CVENE_FIXTURES cvene_test_path("CVENE_FIXTURES_DIR", CVENE_FIXTURES_PATH)
#endif
#ifdef CVENE_TEST_TMP_PATH
#define CVENE_TEST_TMP cvene_test_path("CVENE_TEST_TMP_DIR", CVENE_TEST_TMP_PATH)
#endif
#ifdef CVENE_ASSETS_PATH
#define CVENE_ASSETS cvene_test_path("CVENE_ASSETS_DIR", CVENE_ASSETS_PATH)
#endif
