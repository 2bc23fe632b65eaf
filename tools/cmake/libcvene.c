/* libcvene.so has no code of its own: its objects are the static library's, linked whole
 * (CMakeLists.txt, cvene_shared). CMake needs a source per target; this is it. */
typedef int cvene_shared_library_unit;
