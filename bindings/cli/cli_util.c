/* Small helpers every command shares: a clock and reading a whole input file. */
#define _POSIX_C_SOURCE 200809L
#include <time.h>

#include "bindings/cli/cli.h"
#include "models/fileio.h"

double cli_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

char *cli_read_file(const char *path, char *err, size_t errlen) {
    char *buf = NULL;
    return file_read_all(path, (size_t)256 << 20, &buf, NULL, err, errlen) == CVENE_OK ? buf : NULL;
}
