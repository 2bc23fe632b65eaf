/* The MPI transport: host buffers between ranks (the whole transport of CPU ranks). Collectives
 * are the non-blocking MPI ones, waited on with the communicator's time-out, so a rank that has
 * stopped or hangs makes the others fail with a message instead of waiting for ever. Messages
 * travel on a duplicate of MPI_COMM_WORLD, apart from any the caller sends. */
#define _POSIX_C_SOURCE 200809L
#include <limits.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/comm.h"
#include "kernels/ctx.h"

typedef struct {
    MPI_Comm comm;
    int finalize; /* MPI was initialised here: finalise it when freed */
} mpi_state;

static MPI_Comm world(const cvene_comm *c) { return ((const mpi_state *)c->impl)->comm; }

static cvene_status mpi_fail(cvene_comm *c, int rc, const char *call) {
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS) snprintf(msg, sizeof msg, "error %d", rc);
    return cvene_fail(c->ctx, CVENE_ERR_BACKEND, "MPI (rank %d): %s failed: %s", c->rank, call, msg);
}

/* every MPI call: a status naming the call on failure */
#define MPI_TRY(c, call)                                  \
    do {                                                  \
        int mpi_rc_ = (call);                             \
        if (mpi_rc_ != MPI_SUCCESS) return mpi_fail((c), mpi_rc_, #call); \
    } while (0)

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Wait for a request within the time-out (naps from 20 us up to 1 ms: a collective usually ends
 * within microseconds, but may wait for a rank still computing). */
static cvene_status wait_req(cvene_comm *c, MPI_Request *req, const char *what) {
    const double end = now_s() + c->timeout_s;
    long nap_ns = 20000;
    for (;;) {
        int flag = 0;
        MPI_TRY(c, MPI_Test(req, &flag, MPI_STATUS_IGNORE));
        if (flag) return CVENE_OK;
        if (now_s() > end)
            return cvene_fail(c->ctx, CVENE_ERR_BACKEND,
                              "ranks: rank %d waited %.0f s in %s for the other ranks (one has stopped or hangs; "
                              "CVENE_COMM_TIMEOUT sets the limit in seconds)", c->rank, c->timeout_s, what);
        const struct timespec ts = {0, nap_ns};
        nanosleep(&ts, NULL);
        if (nap_ns < 1000000) nap_ns *= 2;
    }
}

static cvene_status too_big(cvene_comm *c, size_t n) {
    return cvene_fail(c->ctx, CVENE_ERR_UNSUPPORTED, "ranks: a message of %zu bytes is more than MPI's int count", n);
}

static cvene_status m_barrier(cvene_comm *c) {
    MPI_Request r;
    MPI_TRY(c, MPI_Ibarrier(world(c), &r));
    return wait_req(c, &r, "a barrier");
}

static cvene_status m_bcast(cvene_comm *c, void *buf, size_t n, int root) {
    if (n > INT_MAX) return too_big(c, n);
    MPI_Request r;
    MPI_TRY(c, MPI_Ibcast(buf, (int)n, MPI_BYTE, root, world(c), &r));
    return wait_req(c, &r, "a broadcast");
}

static cvene_status m_allgatherv(cvene_comm *c, const void *send, size_t n_send, void *recv, const size_t *counts,
                                 const size_t *displs) {
    int *ic = malloc(sizeof(int) * 2 * (size_t)c->size);
    if (!ic) return cvene_fail(c->ctx, CVENE_ERR_OOM, "ranks: out of memory");
    int *id = ic + c->size;
    for (int r = 0; r < c->size; r++) {
        if (counts[r] > INT_MAX || displs[r] > INT_MAX) {
            free(ic);
            return too_big(c, counts[r] > INT_MAX ? counts[r] : displs[r]);
        }
        ic[r] = (int)counts[r], id[r] = (int)displs[r];
    }
    const int in_place = (const char *)recv + displs[c->rank] == send;
    MPI_Request r;
    int rc = MPI_Iallgatherv(in_place ? MPI_IN_PLACE : send, (int)n_send, MPI_BYTE, recv, ic, id, MPI_BYTE, world(c), &r);
    cvene_status st = rc == MPI_SUCCESS ? wait_req(c, &r, "an all-gather") : mpi_fail(c, rc, "MPI_Iallgatherv");
    free(ic);
    return st;
}

static cvene_status m_send(cvene_comm *c, const void *buf, size_t n, int dst, int tag) {
    if (n > INT_MAX) return too_big(c, n);
    MPI_TRY(c, MPI_Send(buf, (int)n, MPI_BYTE, dst, tag, world(c)));
    return CVENE_OK;
}

static cvene_status m_probe(cvene_comm *c, int tag, int *found, int *src, size_t *n) {
    MPI_Status s;
    MPI_TRY(c, MPI_Iprobe(MPI_ANY_SOURCE, tag, world(c), found, &s));
    if (*found) {
        int count = 0;
        MPI_TRY(c, MPI_Get_count(&s, MPI_BYTE, &count));
        *src = s.MPI_SOURCE, *n = (size_t)count;
    }
    return CVENE_OK;
}

static cvene_status m_recv(cvene_comm *c, void *buf, size_t n, int src, int tag) {
    if (n > INT_MAX) return too_big(c, n);
    MPI_TRY(c, MPI_Recv(buf, (int)n, MPI_BYTE, src, tag, world(c), MPI_STATUS_IGNORE));
    return CVENE_OK;
}

static void m_abort(cvene_comm *c, int code) { MPI_Abort(world(c), code ? code : 1); }

static void m_free(cvene_comm *c) {
    mpi_state *s = c->impl;
    if (!s) return;
    MPI_Comm_free(&s->comm);
    int done = 0;
    if (s->finalize && MPI_Finalized(&done) == MPI_SUCCESS && !done) MPI_Finalize();
    free(s);
    c->impl = NULL;
}

static const comm_ops mpi_ops = {"mpi", m_barrier, m_bcast, m_allgatherv, m_send, m_probe, m_recv, m_abort, m_free};

cvene_status comm_mpi_open(cvene_comm *c) {
    int inited = 0, done = 0;
    MPI_TRY(c, MPI_Initialized(&inited));
    MPI_TRY(c, MPI_Finalized(&done));
    if (done) return cvene_fail(c->ctx, CVENE_ERR_UNSUPPORTED, "ranks: MPI was finalised in this process already");
    mpi_state *s = calloc(1, sizeof *s);
    if (!s) return cvene_fail(c->ctx, CVENE_ERR_OOM, "ranks: out of memory");
    if (!inited) {
        int provided = 0; /* only the calling thread talks to MPI; OpenMP threads never do */
        int rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided);
        if (rc != MPI_SUCCESS) {
            free(s);
            return mpi_fail(c, rc, "MPI_Init_thread");
        }
        s->finalize = 1;
    }
    c->impl = s, c->ops = &mpi_ops;
    int rc = MPI_Comm_dup(MPI_COMM_WORLD, &s->comm);
    if (rc == MPI_SUCCESS) rc = MPI_Comm_set_errhandler(s->comm, MPI_ERRORS_RETURN);
    if (rc == MPI_SUCCESS) rc = MPI_Comm_rank(s->comm, &c->rank);
    if (rc == MPI_SUCCESS) rc = MPI_Comm_size(s->comm, &c->size);
    if (rc != MPI_SUCCESS) {
        cvene_status st = mpi_fail(c, rc, "MPI_Comm_dup/rank/size");
        if (s->finalize) MPI_Finalize();
        free(s);
        c->impl = NULL;
        return st;
    }
    return CVENE_OK;
}
