/* Communicator internals (not public): one table of operations per transport, so nothing above
 * it knows which one moves the bytes. engine/comm.c holds the single-process transport and the
 * public calls; engine/comm_mpi.c the MPI one (host buffers: the whole transport of CPU ranks).
 * Every operation returns a status with the message on the communicator's context. */
#ifndef CVENE_COMM_H
#define CVENE_COMM_H

#include <stddef.h>
#include <stdint.h>

#include "cvene.h"

typedef struct {
    const char *name; /* "single", "mpi" */
    /* every rank waits for every other (time-out: the communicator's) */
    cvene_status (*barrier)(cvene_comm *c);
    /* root's n bytes reach every rank */
    cvene_status (*bcast)(cvene_comm *c, void *buf, size_t n, int root);
    /* rank r's counts[r] bytes land at recv + displs[r] on every rank (send may alias them) */
    cvene_status (*allgatherv)(cvene_comm *c, const void *send, size_t n_send, void *recv, const size_t *counts,
                               const size_t *displs);
    /* point to point: a message of n bytes with a tag; probe says (without blocking) whether one
     * is waiting, from which rank and how long it is */
    cvene_status (*send)(cvene_comm *c, const void *buf, size_t n, int dst, int tag);
    cvene_status (*probe)(cvene_comm *c, int tag, int *found, int *src, size_t *n);
    cvene_status (*recv)(cvene_comm *c, void *buf, size_t n, int src, int tag);
    void (*abort)(cvene_comm *c, int code);
    void (*free)(cvene_comm *c);
} comm_ops;

struct cvene_comm {
    const comm_ops *ops;
    cvene_ctx *ctx;   /* messages go here; borrowed */
    int rank, size;
    double timeout_s; /* a collective that waits longer fails */
    void *impl;       /* the transport's own state */
};

#ifdef CVENE_WITH_MPI
cvene_status comm_mpi_open(cvene_comm *c);
#endif

/* Tags of the messages schedules send each other (cvene_comm_post's is the communicator's own). */
enum { COMM_TAG_STAGE = 19, COMM_TAG_STAGE_OUT = 20 };

/* A message of n bytes from rank src with tag into buf, waiting for it at most the communicator's
 * time-out (then failing, naming src and what: a stuck or dead rank ends the wait). */
cvene_status comm_recv_wait(cvene_comm *c, void *buf, size_t n, int src, int tag, const char *what);
/* Sends and receives of any size (MPI counts in int: pieces of at most 1 GiB). */
cvene_status comm_send_big(cvene_comm *c, const void *buf, size_t n, int dst, int tag);
cvene_status comm_recv_big(cvene_comm *c, void *buf, size_t n, int src, int tag, const char *what);

/* Progress of work split among ranks, for one bar on rank 0: every other rank tells rank 0 how
 * much of its share is done (comm_progress_send: a running count, after each unit); rank 0 reads
 * what has arrived into done[rank] (comm_progress_poll, never waits) and, before results are
 * exchanged, takes every rank's last word (comm_progress_drain: until done[r] == final[r]; a rank
 * silent for the communicator's time-out fails it, naming the rank). No-ops where they do not apply. */
cvene_status comm_progress_send(cvene_comm *c, int64_t done);
cvene_status comm_progress_poll(cvene_comm *c, int64_t *done);
cvene_status comm_progress_drain(cvene_comm *c, int64_t *done, const int64_t *final);

/* Rows of results, one per unit of work, go to every rank: rank r holds the units with
 * owner[u] == r in rows (n_units, row_bytes) (the others' rows are overwritten). Exchanged in one
 * allgatherv; the result does not depend on the number of ranks. */
cvene_status comm_share_rows(cvene_comm *c, const int *owner, int n_units, size_t row_bytes, void *rows);

/* The same for parts of any size: unit u is the len[u] bytes at buf + off[u] (parts must not overlap). */
cvene_status comm_share_parts(cvene_comm *c, const int *owner, int n_units, const size_t *off, const size_t *len,
                              void *buf);

/* Every rank's n bytes, rank by rank, into all (size x n bytes) on every rank. */
cvene_status comm_allgather(cvene_comm *c, const void *mine, size_t n, void *all);

/* Units of work with costs, split among n ranks: longest first to the least-loaded rank (ties:
 * the lower unit, the lower rank), so every rank computes the same split and they finish
 * together. skip (may be NULL): units already done (owner -1). */
void comm_split_costs(const double *cost, const int *skip, int n_units, int n_ranks, int *owner);

#endif
