/* Communicators: the public calls, the single-process transport, and what every schedule shares
 * (splitting units of work by cost, exchanging their result rows). The MPI transport is
 * engine/comm_mpi.c; each transport is one comm_ops table (engine/comm.h). */
#define _POSIX_C_SOURCE 200809L
#include "engine/comm.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/ctx.h"

enum { TAG_POST = 17, TAG_PROGRESS = 18 };

/* ---- this process alone --------------------------------------------------- */
static cvene_status single_barrier(cvene_comm *c) { (void)c; return CVENE_OK; }
static cvene_status single_bcast(cvene_comm *c, void *buf, size_t n, int root) {
    (void)c, (void)buf, (void)n, (void)root;
    return CVENE_OK;
}
static cvene_status single_allgatherv(cvene_comm *c, const void *send, size_t n_send, void *recv,
                                      const size_t *counts, const size_t *displs) {
    (void)c, (void)counts;
    if ((const char *)recv + displs[0] != send) memmove((char *)recv + displs[0], send, n_send);
    return CVENE_OK;
}
static cvene_status single_send(cvene_comm *c, const void *buf, size_t n, int dst, int tag) {
    (void)buf, (void)n, (void)tag;
    return cvene_fail(c->ctx, CVENE_ERR_INVALID_ARG, "comm: rank %d does not exist (one process)", dst);
}
static cvene_status single_probe(cvene_comm *c, int tag, int *found, int *src, size_t *n) {
    (void)c, (void)tag, (void)src, (void)n;
    *found = 0;
    return CVENE_OK;
}
static cvene_status single_recv(cvene_comm *c, void *buf, size_t n, int src, int tag) {
    (void)buf, (void)n, (void)tag;
    return cvene_fail(c->ctx, CVENE_ERR_INVALID_ARG, "comm: rank %d does not exist (one process)", src);
}
static void single_abort(cvene_comm *c, int code) { (void)c, (void)code; }
static void single_free(cvene_comm *c) { (void)c; }
static const comm_ops single_ops = {"single", single_barrier, single_bcast, single_allgatherv, single_send,
                                    single_probe, single_recv, single_abort, single_free};

/* ---- public calls --------------------------------------------------------- */
static int env_int(const char *name) {
    const char *v = getenv(name);
    return v && *v ? atoi(v) : 0;
}

int cvene_comm_launched(void) {
    return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMI_SIZE") || getenv("PMIX_RANK") || getenv("PMI_RANK");
}

int cvene_comm_launched_size(void) {
    int n = env_int("OMPI_COMM_WORLD_SIZE");
    if (n <= 0) n = env_int("PMI_SIZE");
    if (n <= 0) n = env_int("SLURM_NTASKS");
    return n > 0 ? n : 1;
}

int cvene_comm_launched_local_rank(void) {
    const char *names[] = {"OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "MPI_LOCALRANKID", "PMI_LOCAL_RANK"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        const char *v = getenv(names[i]);
        if (v && *v) return atoi(v) > 0 ? atoi(v) : 0;
    }
    return 0;
}

int cvene_comm_mpi_available(void) {
#ifdef CVENE_WITH_MPI
    return 1;
#else
    return 0;
#endif
}

cvene_status cvene_comm_new(cvene_ctx *ctx, int use_mpi, double timeout_s, cvene_comm **out) {
    if (!ctx || !out) return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "comm: NULL argument");
    *out = NULL;
    cvene_comm *c = calloc(1, sizeof *c);
    if (!c) return cvene_fail(ctx, CVENE_ERR_OOM, "comm: out of memory");
    c->ctx = ctx, c->ops = &single_ops, c->rank = 0, c->size = 1;
    c->timeout_s = timeout_s > 0 ? timeout_s : 600;
    const char *t = getenv("CVENE_COMM_TIMEOUT");
    if (timeout_s <= 0 && t && atof(t) > 0) c->timeout_s = atof(t);
    if (use_mpi) {
#ifdef CVENE_WITH_MPI
        cvene_status st = comm_mpi_open(c);
        if (st != CVENE_OK) {
            free(c);
            return st;
        }
#else
        free(c);
        return cvene_fail(ctx, CVENE_ERR_UNSUPPORTED, "comm: this build has no MPI (install libopenmpi-dev and rebuild)");
#endif
    }
    *out = c;
    return CVENE_OK;
}

int cvene_comm_rank(const cvene_comm *c) { return c ? c->rank : 0; }
int cvene_comm_size(const cvene_comm *c) { return c ? c->size : 1; }

void cvene_comm_abort(cvene_comm *c, int code) {
    if (c) c->ops->abort(c, code);
}

void cvene_comm_free(cvene_comm *c) {
    if (!c) return;
    c->ops->free(c);
    free(c);
}

cvene_status cvene_comm_bcast(cvene_comm *c, void *data, size_t n, int root) {
    if (!c || (!data && n)) return cvene_fail(c ? c->ctx : NULL, CVENE_ERR_INVALID_ARG, "comm: NULL argument");
    if (root < 0 || root >= c->size)
        return cvene_fail(c->ctx, CVENE_ERR_INVALID_ARG, "comm: root %d is outside [0, %d)", root, c->size);
    return c->ops->bcast(c, data, n, root);
}

/* FNV-1a: a digest of what a rank is about to do, compared across ranks */
static uint64_t fnv1a(const void *data, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ ((const unsigned char *)data)[i]) * 1099511628211ull;
    return h;
}

cvene_status cvene_comm_agree(cvene_comm *c, const void *data, size_t n, const char *what) {
    if (!c || (!data && n)) return cvene_fail(c ? c->ctx : NULL, CVENE_ERR_INVALID_ARG, "comm: NULL argument");
    uint64_t mine[2] = {fnv1a(data, n), (uint64_t)n};
    uint64_t *all = malloc(sizeof mine * (size_t)c->size);
    if (!all) return cvene_fail(c->ctx, CVENE_ERR_OOM, "comm: out of memory");
    cvene_status st = comm_allgather(c, mine, sizeof mine, all);
    for (int r = 1; st == CVENE_OK && r < c->size; r++)
        if (all[2 * r] != all[0] || all[2 * r + 1] != all[1])
            st = cvene_fail(c->ctx, CVENE_ERR_INVALID_ARG,
                            "ranks disagree: rank %d's %s differs from rank 0's (every rank must run the same "
                            "command on the same files)", r, what ? what : "description");
    free(all);
    return st;
}

cvene_status cvene_comm_post(cvene_comm *c, int item, const void *data, size_t n) {
    if (!c || (!data && n) || item < 0) return cvene_fail(c ? c->ctx : NULL, CVENE_ERR_INVALID_ARG, "comm: bad post");
    if (c->rank == 0) return cvene_fail(c->ctx, CVENE_ERR_INVALID_ARG, "comm: rank 0 collects; it does not post");
    unsigned char *msg = malloc(sizeof(int32_t) + n);
    if (!msg) return cvene_fail(c->ctx, CVENE_ERR_OOM, "comm: out of memory");
    const int32_t it = item;
    memcpy(msg, &it, sizeof it);
    if (n) memcpy(msg + sizeof it, data, n);
    cvene_status st = c->ops->send(c, msg, sizeof it + n, 0, TAG_POST);
    free(msg);
    return st;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Whether a message with tag is waiting (*found; from *src, *n bytes), looking until time `end`
 * (now_s's clock; a past end looks once), with short naps between looks. */
static cvene_status probe_until(cvene_comm *c, int tag, double end, int *found, int *src, size_t *n) {
    for (;;) {
        CVENE_TRY(c->ops->probe(c, tag, found, src, n));
        if (*found || now_s() >= end) return CVENE_OK;
        const struct timespec nap = {0, 200000}; /* 0.2 ms: a message is rarely that close */
        nanosleep(&nap, NULL);
    }
}

cvene_status cvene_comm_collect(cvene_comm *c, int *item, void *data, size_t cap, size_t *n_out, int *from,
                                double wait_s) {
    if (!c || !item || (!data && cap)) return cvene_fail(c ? c->ctx : NULL, CVENE_ERR_INVALID_ARG, "comm: NULL argument");
    *item = -1;
    if (from) *from = -1;
    if (n_out) *n_out = 0;
    if (c->rank != 0) return cvene_fail(c->ctx, CVENE_ERR_INVALID_ARG, "comm: only rank 0 collects");
    int found = 0, src = -1;
    size_t n = 0;
    CVENE_TRY(probe_until(c, TAG_POST, now_s() + (wait_s > 0 ? wait_s : 0), &found, &src, &n));
    if (!found) return CVENE_OK;
    if (n < sizeof(int32_t))
        return cvene_fail(c->ctx, CVENE_ERR_FORMAT, "comm: rank %d sent a message of %zu bytes (no item)", src, n);
    if (n - sizeof(int32_t) > cap) { /* left queued for a call with more room */
        *item = -2;
        if (n_out) *n_out = n - sizeof(int32_t);
        if (from) *from = src;
        return CVENE_OK;
    }
    unsigned char *msg = malloc(n);
    if (!msg) return cvene_fail(c->ctx, CVENE_ERR_OOM, "comm: out of memory");
    cvene_status st = c->ops->recv(c, msg, n, src, TAG_POST);
    if (st == CVENE_OK) {
        int32_t it;
        memcpy(&it, msg, sizeof it);
        memcpy(data, msg + sizeof it, n - sizeof it);
        *item = it;
        if (n_out) *n_out = n - sizeof it;
        if (from) *from = src;
    }
    free(msg);
    return st;
}

/* ---- point to point with a time-out ------------------------------------------ */

cvene_status comm_recv_wait(cvene_comm *c, void *buf, size_t n, int src, int tag, const char *what) {
    int found = 0, from = -1;
    size_t len = 0;
    CVENE_TRY(probe_until(c, tag, now_s() + c->timeout_s, &found, &from, &len));
    if (!found)
        return cvene_fail(c->ctx, CVENE_ERR_IO, "ranks: rank %d waited %.0f s for %s from rank %d "
                          "(CVENE_COMM_TIMEOUT): it is stuck or dead", c->rank, c->timeout_s, what, src);
    if (from != src)
        return cvene_fail(c->ctx, CVENE_ERR_FORMAT, "ranks: rank %d expected %s from rank %d, not from rank %d",
                          c->rank, what, src, from);
    if (len != n)
        return cvene_fail(c->ctx, CVENE_ERR_FORMAT, "ranks: rank %d sent %zu bytes of %s, rank %d expected %zu", src,
                          len, what, c->rank, n);
    return c->ops->recv(c, buf, n, src, tag);
}

#define COMM_PIECE ((size_t)1 << 30)

cvene_status comm_send_big(cvene_comm *c, const void *buf, size_t n, int dst, int tag) {
    for (size_t o = 0; o < n || o == 0; o += COMM_PIECE) {
        CVENE_TRY(c->ops->send(c, (const char *)buf + o, n - o < COMM_PIECE ? n - o : COMM_PIECE, dst, tag));
        if (n == 0) break;
    }
    return CVENE_OK;
}

cvene_status comm_recv_big(cvene_comm *c, void *buf, size_t n, int src, int tag, const char *what) {
    for (size_t o = 0; o < n || o == 0; o += COMM_PIECE) {
        CVENE_TRY(comm_recv_wait(c, (char *)buf + o, n - o < COMM_PIECE ? n - o : COMM_PIECE, src, tag, what));
        if (n == 0) break;
    }
    return CVENE_OK;
}

/* ---- progress of split work, for rank 0's bar -------------------------------- */

cvene_status comm_progress_send(cvene_comm *c, int64_t done) {
    return c->rank == 0 || c->size == 1 ? CVENE_OK : c->ops->send(c, &done, sizeof done, 0, TAG_PROGRESS);
}

/* One progress message that arrives by time `end` into done[from]; *got 0 when none has. */
static cvene_status progress_take(cvene_comm *c, int64_t *done, double end, int *got) {
    int src = -1;
    size_t n = 0;
    CVENE_TRY(probe_until(c, TAG_PROGRESS, end, got, &src, &n));
    if (!*got) return CVENE_OK;
    int64_t v = 0;
    if (n != sizeof v)
        return cvene_fail(c->ctx, CVENE_ERR_FORMAT, "comm: rank %d sent a progress message of %zu bytes", src, n);
    CVENE_TRY(c->ops->recv(c, &v, sizeof v, src, TAG_PROGRESS));
    if (src > 0 && src < c->size && v > done[src]) done[src] = v;
    return CVENE_OK;
}

cvene_status comm_progress_poll(cvene_comm *c, int64_t *done) {
    for (int got = 1; got && c->rank == 0 && c->size > 1;) CVENE_TRY(progress_take(c, done, 0, &got));
    return CVENE_OK;
}

cvene_status comm_progress_drain(cvene_comm *c, int64_t *done, const int64_t *final) {
    if (c->rank != 0 || c->size == 1) return CVENE_OK;
    for (;;) {
        int missing = -1;
        for (int r = c->size - 1; r > 0; r--)
            if (done[r] < final[r]) missing = r;
        if (missing < 0) return CVENE_OK;
        int got = 0; /* the time-out counts from the last word of any rank */
        CVENE_TRY(progress_take(c, done, now_s() + c->timeout_s, &got));
        if (!got)
            return cvene_fail(c->ctx, CVENE_ERR_IO, "ranks: rank %d has done %lld of its %lld units and said nothing "
                              "for %.0f s (CVENE_COMM_TIMEOUT): it is stuck or dead", missing, (long long)done[missing],
                              (long long)final[missing], c->timeout_s);
    }
}

/* ---- what schedules share -------------------------------------------------- */
cvene_status comm_allgather(cvene_comm *c, const void *mine, size_t n, void *all) {
    size_t *counts = malloc(sizeof(size_t) * 2 * (size_t)c->size);
    if (!counts) return cvene_fail(c->ctx, CVENE_ERR_OOM, "comm: out of memory");
    for (int r = 0; r < c->size; r++) counts[r] = n, counts[c->size + r] = n * (size_t)r;
    cvene_status st = c->ops->allgatherv(c, mine, n, all, counts, counts + c->size);
    free(counts);
    return st;
}

void comm_split_costs(const double *cost, const int *skip, int n_units, int n_ranks, int *owner) {
    double *load = calloc((size_t)(n_ranks > 0 ? n_ranks : 1), sizeof(double));
    for (int u = 0; u < n_units; u++) owner[u] = skip && skip[u] ? -1 : -2; /* -2: not yet placed */
    for (;;) {
        int best = -1; /* the costliest unit not yet placed; ties: the lower unit */
        for (int u = 0; u < n_units; u++)
            if (owner[u] == -2 && (best < 0 || cost[u] > cost[best])) best = u;
        if (best < 0) break;
        int r = 0;
        if (load)
            for (int k = 1; k < n_ranks; k++)
                if (load[k] < load[r]) r = k;
        owner[best] = load ? r : best % (n_ranks > 0 ? n_ranks : 1); /* out of memory: round robin */
        if (load) load[r] += cost[best];
    }
    free(load);
}

void cvene_comm_split(const double *cost, const int *skip, int n_units, int n_ranks, int *owner) {
    if (cost && owner && n_units > 0) comm_split_costs(cost, skip, n_units, n_ranks, owner);
}

cvene_status comm_share_parts(cvene_comm *c, const int *owner, int n_units, const size_t *off, const size_t *len,
                              void *buf) {
    if (c->size == 1) return CVENE_OK;
    size_t *counts = calloc(2 * (size_t)c->size, sizeof(size_t)), total = 0;
    for (int u = 0; u < n_units; u++) total += owner[u] >= 0 ? len[u] : 0;
    unsigned char *packed = malloc(total + 1), *b = buf;
    if (!counts || !packed) {
        free(counts), free(packed);
        return cvene_fail(c->ctx, CVENE_ERR_OOM, "comm: out of memory exchanging %d parts (%zu bytes)", n_units, total);
    }
    size_t *displs = counts + c->size, n_mine = 0;
    /* packed: rank 0's parts in unit order, then rank 1's, ...; this rank's packed in place */
    for (int u = 0; u < n_units; u++)
        if (owner[u] >= 0) counts[owner[u]] += len[u];
    for (int r = 1; r < c->size; r++) displs[r] = displs[r - 1] + counts[r - 1];
    unsigned char *mine = packed + displs[c->rank];
    for (int u = 0; u < n_units; u++)
        if (owner[u] == c->rank) memcpy(mine + n_mine, b + off[u], len[u]), n_mine += len[u];
    cvene_status st = c->ops->allgatherv(c, mine, n_mine, packed, counts, displs);
    for (int u = 0; st == CVENE_OK && u < n_units; u++) { /* displs[r] walks rank r's parts */
        const int r = owner[u];
        if (r < 0) continue;
        memcpy(b + off[u], packed + displs[r], len[u]);
        displs[r] += len[u];
    }
    free(counts), free(packed);
    return st;
}

cvene_status comm_share_rows(cvene_comm *c, const int *owner, int n_units, size_t row_bytes, void *rows) {
    if (c->size == 1) return CVENE_OK;
    size_t *off = malloc(sizeof(size_t) * 2 * ((size_t)n_units + 1));
    if (!off) return cvene_fail(c->ctx, CVENE_ERR_OOM, "comm: out of memory exchanging %d rows", n_units);
    size_t *len = off + n_units + 1;
    for (int u = 0; u < n_units; u++) off[u] = (size_t)u * row_bytes, len[u] = row_bytes;
    cvene_status st = comm_share_parts(c, owner, n_units, off, len, rows);
    free(off);
    return st;
}
