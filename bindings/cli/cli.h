/* Shared helpers of the cvene command-line tool. */
#ifndef CVENE_CLI_H
#define CVENE_CLI_H
#include <stddef.h>
#include <time.h>

static inline double cli_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
/* Whole file, NUL-terminated, malloc'd; NULL with a message in err on failure. */
char *cli_read_file(const char *path, char *err, size_t errlen);

int cmd_predict(int argc, char **argv);
int cmd_run(int argc, char **argv);
#endif
