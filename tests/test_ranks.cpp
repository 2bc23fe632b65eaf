// Ranks (issue #15): the communicator and the work split among ranks. ctest runs this suite alone
// (one process: the single-process communicator) and under `mpirun -np 3` and `-np 2` (CPU ranks over
// MPI), where every rank runs every test. A sweep or dataset sweep on N ranks must equal the same
// call on one process (p->comm NULL) bit for bit: each layer / example is computed by exactly the
// code one process runs, and the mean is added in example order, so no tolerance applies.
// Data-parallel training adds fixed parts of each batch (shards) in part order on every rank, so
// it too equals one process with the same shards bit for bit. A layer split (stages) equals one
// process's forward of the same micro-batches. ctest runs it on 2 ranks as well (ranks.mpi2).
#include <cmath>
#include <numeric>

#include "test_util.h"
extern "C" {
#include "engine/train.h"
#include "engine/trainable.h"
}

namespace {

// One communicator per process (MPI cannot be initialised twice), made before the first test.
struct Ranks : ::testing::Environment {
    cvene_ctx *ctx = nullptr;
    cvene_comm *comm = nullptr;
    void SetUp() override {
        char err[256];
        ASSERT_EQ(cvene_ctx_new(nullptr, &ctx, err, sizeof err), CVENE_OK) << err;
        ASSERT_EQ(cvene_comm_new(ctx, cvene_comm_launched(), 0, &comm), CVENE_OK) << cvene_ctx_error(ctx);
    }
    void TearDown() override {
        cvene_comm_free(comm);
        cvene_ctx_free(ctx);
    }
};
Ranks *g_ranks = static_cast<Ranks *>(::testing::AddGlobalTestEnvironment(new Ranks));

std::string demo() { return std::string(CVENE_ASSETS) + "/demo-gpt2"; }

TEST(Ranks, SizeRankBroadcastAgree) {
    cvene_comm *c = g_ranks->comm;
    const int n = cvene_comm_size(c), r = cvene_comm_rank(c);
    EXPECT_EQ(n, cvene_comm_launched_size());
    EXPECT_EQ(cvene_comm_launched_local_rank(), r) << "one machine: the place on it is the rank";
    ASSERT_GE(r, 0);
    ASSERT_LT(r, n);
    // the last rank's bytes reach every rank
    int v[3] = {r, 7 * r, -r};
    ASSERT_EQ(cvene_comm_bcast(c, v, sizeof v, n - 1), CVENE_OK) << cvene_ctx_error(g_ranks->ctx);
    EXPECT_EQ(v[0], n - 1);
    EXPECT_EQ(v[1], 7 * (n - 1));
    EXPECT_EQ(cvene_comm_bcast(c, v, sizeof v, n), CVENE_ERR_INVALID_ARG);
    // the same description agrees; one that differs on rank 1 fails on every rank, naming rank 1
    const char same[] = "sweep --model demo";
    EXPECT_EQ(cvene_comm_agree(c, same, sizeof same, "command"), CVENE_OK);
    char mine[] = "sweep --layers 0";
    if (r == 1) mine[sizeof mine - 2] = '1';
    const cvene_status st = cvene_comm_agree(c, mine, sizeof mine, "command");
    if (n == 1) {
        EXPECT_EQ(st, CVENE_OK);
    } else {
        EXPECT_EQ(st, CVENE_ERR_INVALID_ARG);
        EXPECT_NE(std::string(cvene_ctx_error(g_ranks->ctx)).find("rank 1's command differs"), std::string::npos)
            << cvene_ctx_error(g_ranks->ctx);
    }
}

// Each rank but 0 posts three items; rank 0 collects every one, each rank's in the order posted.
TEST(Ranks, PostAndCollect) {
    cvene_comm *c = g_ranks->comm;
    const int n = cvene_comm_size(c), r = cvene_comm_rank(c);
    int item = 5;
    float row[4];
    if (n == 1) { // alone: nothing arrives, and rank 0 does not post
        EXPECT_EQ(cvene_comm_collect(c, &item, row, sizeof row, nullptr, nullptr, 0.01), CVENE_OK);
        EXPECT_EQ(item, -1);
        EXPECT_EQ(cvene_comm_post(c, 0, row, sizeof row), CVENE_ERR_INVALID_ARG);
        return;
    }
    if (r != 0) {
        for (int k = 0; k < 3; k++) {
            for (int i = 0; i < 4; i++) row[i] = 100.0f * r + 10.0f * k + i;
            ASSERT_EQ(cvene_comm_post(c, 10 * r + k, row, sizeof row), CVENE_OK) << cvene_ctx_error(g_ranks->ctx);
        }
    } else {
        std::vector<int> next(n, 0);
        int got = 0;
        for (int tries = 0; got < 3 * (n - 1) && tries < 2000; tries++) {
            int from = -1;
            size_t len = 0;
            if (got == 0) { // the first one offered too little room: told its length, left queued
                ASSERT_EQ(cvene_comm_collect(c, &item, row, sizeof row - 1, &len, &from, 5.0), CVENE_OK);
                ASSERT_EQ(item, -2);
                EXPECT_EQ(len, sizeof row);
            }
            ASSERT_EQ(cvene_comm_collect(c, &item, row, sizeof row, &len, &from, 0.05), CVENE_OK);
            if (item < 0) continue;
            EXPECT_EQ(len, sizeof row);
            ASSERT_GT(from, 0);
            EXPECT_EQ(item, 10 * from + next[from]) << "rank " << from << "'s items out of order";
            for (int i = 0; i < 4; i++) EXPECT_EQ(row[i], 100.0f * from + 10.0f * next[from] + i);
            next[from]++, got++;
        }
        EXPECT_EQ(got, 3 * (n - 1));
    }
    // every rank here before the next test's messages
    int dummy = 0;
    ASSERT_EQ(cvene_comm_bcast(c, &dummy, sizeof dummy, 0), CVENE_OK);
}

// The split: every layer left has one rank, done layers none; the loads (block-tokens resumed, as
// derived by hand below) differ by at most the costliest layer (longest first to the least loaded).
TEST(Ranks, SplitByCost) {
    Loaded L(demo());
    ASSERT_EQ(L.status, CVENE_OK) << L.error();
    cvene_sweep_params p = cvene_sweep_default_params(); // block_output, every position
    const cvene_model_info mi = cvene_model_get_info(L.model);
    const int nl = mi.n_layer, T = 10; // 8 layers
    // block_output at l: blocks l+1 .. L-1 over positions t..T-1 for each t, plus one row's unembedding
    auto cost = [&](int l) { return (nl - l - 1) * (T * (T + 1) / 2.0) + T * mi.vocab_size / (12.0 * mi.n_embd); };
    for (int n = 1; n <= 4; n++) {
        std::vector<int> owner(nl), done(nl, 0);
        done[2] = 1;
        ASSERT_EQ(cvene_sweep_split(L.model, &p, T, done.data(), n, owner.data()), CVENE_OK);
        std::vector<double> load(n, 0);
        for (int l = 0; l < nl; l++) {
            if (done[l]) {
                EXPECT_EQ(owner[l], -1);
                continue;
            }
            ASSERT_GE(owner[l], 0);
            ASSERT_LT(owner[l], n);
            load[owner[l]] += cost(l);
        }
        const auto mm = std::minmax_element(load.begin(), load.end());
        EXPECT_LE(*mm.second - *mm.first, cost(0) + 1e-6) << n << " ranks";
        if (n == 2) { // the two costliest layers (0 and 1) go to different ranks
            EXPECT_NE(owner[0], owner[1]);
        }
    }
    std::vector<int> owner(nl);
    EXPECT_EQ(cvene_sweep_split(L.model, &p, T, nullptr, 0, owner.data()), CVENE_ERR_INVALID_ARG);
    EXPECT_EQ(cvene_sweep_split(L.model, &p, 0, nullptr, 2, owner.data()), CVENE_ERR_INVALID_ARG);
}

TEST(Ranks, SweepEqualsOneProcess) {
    Loaded L(demo());
    ASSERT_EQ(L.status, CVENE_OK) << L.error();
    const int n = cvene_comm_size(g_ranks->comm);
    const cvene_model_info mi = cvene_model_get_info(L.model);
    const int32_t base[] = {5, 9, 2, 7, 1, 3, 8, 11, 4}, src[] = {4, 4, 6, 1, 9, 2, 8, 11, 4};
    const int T = 9;
    for (int heads = 0; heads < 2; heads++) {
        cvene_sweep_params p = cvene_sweep_default_params();
        p.metric = CVENE_METRIC_KL, p.max_batch = 4;
        if (heads) p.component = CVENE_HEAD_ATTENTION_VALUE_OUTPUT, p.head = CVENE_ALL_HEADS;
        const size_t cells = (size_t)mi.n_layer * T * (heads ? mi.n_head : 1);
        std::vector<float> one(cells), ranked(cells, -1.0f);
        cvene_sweep_summary s1, sr;
        ASSERT_EQ(cvene_sweep(L.model, base, src, T, &p, one.data(), &s1), CVENE_OK) << L.error();
        p.comm = g_ranks->comm;
        ASSERT_EQ(cvene_sweep(L.model, base, src, T, &p, ranked.data(), &sr), CVENE_OK) << L.error();
        EXPECT_EQ(0, memcmp(one.data(), ranked.data(), sizeof(float) * cells)) << "heads " << heads;
        EXPECT_EQ(s1.base_score, sr.base_score);
        EXPECT_EQ(s1.source_score, sr.source_score);
        EXPECT_EQ(s1.sites, sr.sites);
        EXPECT_EQ(sr.forwards, s1.forwards + 2 * (n - 1)) << "each rank runs the base and the source once";
    }
}

TEST(Ranks, DatasetSweepEqualsOneProcess) {
    Loaded L(demo());
    ASSERT_EQ(L.status, CVENE_OK) << L.error();
    const cvene_model_info mi = cvene_model_get_info(L.model);
    std::vector<std::vector<int32_t>> b = {{5, 9, 2, 7, 1, 3}, {15, 19, 12, 17, 11, 13, 40, 41}, {25, 29, 22, 27, 21},
                                           {35, 39, 32, 37, 31, 33, 30}, {45, 49, 42, 47}};
    std::vector<std::vector<int32_t>> s = b;
    for (auto &v : s) v[0] += 1, v[1] += 2;
    std::vector<std::vector<int>> pos = {{2, 5}, {5, 7}, {0, 4}, {1, 6}, {3, 3}};
    std::vector<cvene_sweep_example> ex;
    for (size_t e = 0; e < b.size(); e++)
        ex.push_back({b[e].data(), s[e].data(), (int)b[e].size(), pos[e].data(), (int32_t)(3 + e), (int32_t)(8 + e)});
    cvene_sweep_params p = cvene_sweep_default_params();
    const size_t per = (size_t)mi.n_layer * 2;
    std::vector<float> pe1(per * ex.size()), m1(per), pe(per * ex.size(), -1.0f), m(per, -1.0f);
    cvene_sweep_summary s1, sr;
    ASSERT_EQ(cvene_sweep_dataset(L.model, ex.data(), (int)ex.size(), 2, &p, pe1.data(), m1.data(), &s1), CVENE_OK)
        << L.error();
    p.comm = g_ranks->comm;
    // rank 0's bar covers every rank's examples: done never falls and ends at the whole dataset
    struct Seen {
        int64_t last = -1, total = -1;
        bool monotone = true;
    } seen;
    p.progress = [](void *u, int64_t done, int64_t total) {
        auto *s = static_cast<Seen *>(u);
        s->monotone = s->monotone && done >= s->last;
        s->last = done, s->total = total;
    };
    p.progress_user = &seen;
    ASSERT_EQ(cvene_sweep_dataset(L.model, ex.data(), (int)ex.size(), 2, &p, pe.data(), m.data(), &sr), CVENE_OK)
        << L.error();
    p.progress = nullptr;
    EXPECT_TRUE(seen.monotone);
    EXPECT_EQ(seen.total, (int64_t)(per * ex.size()));
    if (cvene_comm_rank(g_ranks->comm) == 0) {
        EXPECT_EQ(seen.last, seen.total);
    }
    EXPECT_EQ(0, memcmp(pe1.data(), pe.data(), sizeof(float) * pe.size()));
    EXPECT_EQ(0, memcmp(m1.data(), m.data(), sizeof(float) * m.size()));
    EXPECT_EQ(s1.base_score, sr.base_score);
    EXPECT_EQ(s1.forwards, sr.forwards);
    // the mean alone (no per-example rows asked for)
    std::vector<float> m2(per, -1.0f);
    ASSERT_EQ(cvene_sweep_dataset(L.model, ex.data(), (int)ex.size(), 2, &p, nullptr, m2.data(), nullptr), CVENE_OK);
    EXPECT_EQ(0, memcmp(m1.data(), m2.data(), sizeof(float) * m.size()));
}

// A collect (probe grid: two positions per example) split by batches equals one process's bit for bit.
TEST(Ranks, CollectEqualsOneProcess) {
    Loaded L(demo());
    ASSERT_EQ(L.status, CVENE_OK) << L.error();
    const int N = 10, R = 2;
    std::vector<std::vector<int32_t>> ids(N);
    std::vector<const int32_t *> idp(N);
    std::vector<int> lens(N), pos(N * R);
    for (int e = 0; e < N; e++) {
        for (int t = 0; t < 4 + (e * 7) % 9; t++) ids[e].push_back((e * 31 + t * 17) % 500 + 1);
        idp[e] = ids[e].data(), lens[e] = (int)ids[e].size();
        pos[e * R] = 1, pos[e * R + 1] = -1;
    }
    const cvene_site sites[] = {{CVENE_BLOCK_OUTPUT, 1}, {CVENE_MLP_ACTIVATION, 6}, {CVENE_BLOCK_INPUT, 0}};
    cvene_activations *one = nullptr, *ranked = nullptr;
    ASSERT_EQ(cvene_collect_positions(L.model, idp.data(), lens.data(), pos.data(), R, N, sites, 3, 3, &one), CVENE_OK)
        << L.error();
    ASSERT_EQ(cvene_collect_ranks(g_ranks->comm, L.model, idp.data(), lens.data(), pos.data(), R, N, sites, 3, 3, &ranked),
              CVENE_OK)
        << L.error();
    ASSERT_EQ(cvene_activations_count(one), cvene_activations_count(ranked));
    for (int s = 0; s < 3; s++) {
        const int D = cvene_activations_width(one, s);
        ASSERT_EQ(D, cvene_activations_width(ranked, s)) << "site " << s;
        EXPECT_EQ(0, memcmp(cvene_activations_data(one, s), cvene_activations_data(ranked, s),
                            sizeof(float) * (size_t)N * R * D))
            << "site " << s;
    }
    cvene_activations_free(one);
    cvene_activations_free(ranked);
}

// Data-parallel training (cvene_train_params.comm): a step's batches cut into 6 shards (parts of 1
// and 2 examples of batches of 8), each rank computing its run of them, all added in shard order. Against one process with the same shards: every step's loss and every weight equal bit for
// bit, on any number of ranks. Against one process adding the whole batch at once (shards 0), and
// against ranks with one shard each (shards 0 on ranks: the split depends on the rank count), the
// same terms are added in another order: the first step's gradient within 1e-4 of its largest
// entry. That is float rounding: per-example gradients up to ~10x the batch mean cancel in sums of 8
// to 16 rows (n eps sum|terms| ~ 16 x 6e-8 x 10 ~ 1e-5; measured 1.4e-6 and 1.7e-5 of the largest
// entry), while a lost or doubled shard would be off by 1/8 of it. Later steps are not compared
// across orders: Adam's first step is lr * sign(g) on entries whose gradient is below that
// rounding, so any two summation orders part there (which is why ranks add fixed shards).
struct TrainCase {
    const char *name, *config;
    int grad_accum;
    double boundary_loss, t_start, t_end;
};

struct Trained {
    cvene_trainer *t = nullptr;
    ~Trained() { cvene_trainer_free(t); }
};

TEST(Ranks, TrainingEqualsOneProcess) {
    Loaded L(demo());
    ASSERT_EQ(L.status, CVENE_OK) << L.error();
    cvene_tokenizer *tok = nullptr;
    ASSERT_EQ(cvene_tokenizer_load(L.ctx, demo().c_str(), &tok), CVENE_OK) << L.error();
    cvene_dataset *all = nullptr, *rest = nullptr, *data = nullptr;
    ASSERT_EQ(cvene_dataset_load_jsonl(L.ctx, (demo() + "/das_colour/train.jsonl").c_str(), tok, &all), CVENE_OK)
        << L.error();
    // 72 examples: the frozen caches are built in chunks of 32, one per rank on 3 ranks, then shared
    ASSERT_EQ(cvene_dataset_split(all, 0.14, 7, &rest, &data), CVENE_OK) << L.error();
    ASSERT_EQ(cvene_dataset_count(data), 72);
    const TrainCase cases[] = {
        {"LowRankRotatedSpace", R"({"representations": [{"layer": 2, "component": "block_output", "unit": "pos",
            "max_number_of_units": 1, "low_rank_dimension": 4}], "intervention_types": "LowRankRotatedSpaceIntervention"})",
         1, 0, 0, 0},
        {"BoundlessRotatedSpace, accumulated", R"({"representations": [{"layer": 1, "component": "block_output",
            "unit": "pos", "max_number_of_units": 1}], "intervention_types": "BoundlessRotatedSpaceIntervention"})",
         2, 1.0, 50, 0.1},
    };
    for (const TrainCase &c : cases) {
        SCOPED_TRACE(c.name);
        cvene_config *cfg = nullptr;
        ASSERT_EQ(cvene_config_parse(L.ctx, c.config, &cfg), CVENE_OK) << L.error();
        auto make = [&](cvene_comm *comm, int shards, int64_t max_steps, Trained &out) {
            cvene_train_params p = cvene_train_default_params();
            p.batch_size = 8, p.epochs = 1, p.lr = 1e-2, p.seed = 3, p.grad_accum = c.grad_accum;
            p.boundary_loss = c.boundary_loss, p.temperature_start = c.t_start, p.temperature_end = c.t_end;
            p.comm = comm, p.shards = shards, p.max_steps = max_steps;
            ASSERT_EQ(cvene_trainer_new(L.model, cfg, &p, &out.t), CVENE_OK) << L.error();
            ASSERT_EQ(cvene_trainer_fit(out.t, data), CVENE_OK) << L.error();
        };
        // the same shards: one process and the ranks, every step
        Trained one, ranked;
        make(nullptr, 6, 0, one);
        make(g_ranks->comm, 6, 0, ranked);
        int64_t n1 = 0, nr = 0;
        const double *l1 = cvene_trainer_losses(one.t, &n1), *lr = cvene_trainer_losses(ranked.t, &nr);
        ASSERT_EQ(n1, nr);
        EXPECT_EQ(n1, c.grad_accum == 1 ? 9 : 5) << "9 batches";
        EXPECT_EQ(0, memcmp(l1, lr, sizeof(double) * (size_t)n1));
        EXPECT_GT(l1[0], l1[n1 - 1]) << "it trains";
        const tr_weights *w1 = train_weights(one.t, 0), *wr = train_weights(ranked.t, 0);
        ASSERT_EQ(w1->n, wr->n);
        for (int k = 0; k < w1->n; k++)
            EXPECT_EQ(0, memcmp(w1->t[k].value, wr->t[k].value, sizeof(float) * (size_t)w1->t[k].numel)) << w1->t[k].name;
        // another summation order: the first step's gradient (left in grad after it)
        Trained plain, sharded, per_rank;
        make(nullptr, 0, 1, plain);
        make(nullptr, 6, 1, sharded);
        make(g_ranks->comm, 0, 1, per_rank);
        const tr_weights *wp = train_weights(plain.t, 0), *ws = train_weights(sharded.t, 0), *wk = train_weights(per_rank.t, 0);
        for (int k = 0; k < wp->n; k++) {
            if (!wp->t[k].grad) continue;
            double gmax = 0, d_shard = 0, d_rank = 0;
            for (int64_t q = 0; q < wp->t[k].numel; q++) {
                gmax = std::fmax(gmax, std::fabs(wp->t[k].grad[q]));
                d_shard = std::fmax(d_shard, std::fabs((double)wp->t[k].grad[q] - ws->t[k].grad[q]));
                d_rank = std::fmax(d_rank, std::fabs((double)wp->t[k].grad[q] - wk->t[k].grad[q]));
            }
            EXPECT_GT(gmax, 0) << wp->t[k].name;
            EXPECT_LE(d_shard, 1e-4 * gmax) << wp->t[k].name;
            EXPECT_LE(d_rank, 1e-4 * gmax) << wp->t[k].name;
        }
        // evaluation splits batches and adds them in batch order: equal to one process exactly
        double acc1 = -1, loss1 = -1, accr = -2, lossr = -2;
        ASSERT_EQ(cvene_trainer_evaluate(one.t, data, &acc1, &loss1), CVENE_OK) << L.error();
        ASSERT_EQ(cvene_trainer_evaluate(ranked.t, data, &accr, &lossr), CVENE_OK) << L.error();
        EXPECT_EQ(acc1, accr);
        EXPECT_EQ(loss1, lossr);
        cvene_config_free(cfg);
    }
    cvene_dataset_free(all), cvene_dataset_free(rest), cvene_dataset_free(data);
    cvene_tokenizer_free(tok);
}

// Layer split (cvene_forward_stages): the model's layers in stages on the ranks (1, 2 or 3: 8 layers
// as 8 / 4+4 / 3+3+2), rows in micro-batches of 2 (three: 2, 2, 1 rows). Sites on both sides of every
// boundary change the residual (a row- and layer-dependent shift), and a carry takes each row's
// activation at position 2 of layer 1 (stage 0) to position 4 at layer 6 (the last stage): a source
// read on one stage and written on another. Against the same sites in one process's cvene_forward
// of the same micro-batches, the logits within 1e-6 (measured: equal - the same kernels on the same
// rows; a stage boundary only unfuses one residual add from the next layernorm). (One forward of all
// 5 rows differs from micro-batches of 2 by ~1e-5 on these logits: OpenBLAS blocks a GEMM by its row
// count, so a row's sums depend on the batch it is in, staged or not.) GPT-NeoX (2 layers, parallel residual, 25%
// rotary) on 1 or 2 ranks.
struct StageSites {
    int C = 0;
    bool carry = false;
    std::vector<float> carry_one; // one process: every row's carry
    static void shift(cvene_tensor_view *v, int layer, int row0) {
        const int64_t rows = v->shape[0], per = v->shape[1] * v->shape[2];
        float *x = static_cast<float *>(v->data);
        for (int64_t b = 0; b < rows; b++)
            for (int64_t q = 0; q < per; q++) x[b * per + q] += 0.01f * (float)((row0 + b + 1) * (layer + 1));
    }
    // what both runs do at a site, given the rows' carry (C floats per row)
    void at(cvene_component c, int layer, cvene_tensor_view *v, float *rows_carry) const {
        const int64_t rows = v->shape[0], T = v->shape[1];
        float *x = static_cast<float *>(v->data);
        if (!carry) return;
        if (c == CVENE_BLOCK_OUTPUT && layer == 1)
            for (int64_t b = 0; b < rows; b++) memcpy(rows_carry + b * C, x + (b * T + 2) * C, sizeof(float) * C);
        if (c == CVENE_BLOCK_OUTPUT && layer == 6)
            for (int64_t b = 0; b < rows; b++) memcpy(x + (b * T + 4) * C, rows_carry + b * C, sizeof(float) * C);
    }
};

constexpr int kMicro = 2;

void stages_case(const std::string &dir, const int32_t *ids, int B, int T, const std::vector<int> &shift_layers,
                 bool carry) {
    Loaded L(dir);
    ASSERT_EQ(L.status, CVENE_OK) << L.error();
    const cvene_model_info mi = cvene_model_get_info(L.model);
    if (cvene_comm_size(g_ranks->comm) > mi.n_layer) GTEST_SKIP() << "more ranks than layers";
    StageSites ss;
    ss.C = mi.n_embd, ss.carry = carry;
    ss.carry_one.assign((size_t)B * mi.n_embd, 0.0f);
    uint64_t bits = 0;
    for (int l : shift_layers) bits |= 1ull << l;
    // one process: the same sites through cvene_forward
    struct One {
        StageSites *ss;
        uint64_t bits;
        int row0;
    } one{&ss, bits, 0};
    cvene_run_opts o;
    memset(&o, 0, sizeof o);
    std::vector<float> ref((size_t)B * T * mi.vocab_size), got(ref.size(), -1.0f);
    o.logits = ref.data();
    o.site_fn = [](void *u, cvene_component c, int layer, cvene_tensor_view *v) {
        auto *p = static_cast<One *>(u);
        if ((p->bits >> layer) & 1u) StageSites::shift(v, layer, p->row0);
        p->ss->at(c, layer, v, p->ss->carry_one.data() + (size_t)p->row0 * p->ss->C);
        return 0;
    };
    o.site_user = &one;
    o.sites[CVENE_BLOCK_OUTPUT] = bits | (carry ? (1ull << 1) | (1ull << 6) : 0);
    o.sites[CVENE_MLP_OUTPUT] = bits;
    for (int r0 = 0; r0 < B; r0 += kMicro) { // the same micro-batches, so the GEMMs see the same rows
        one.row0 = r0;
        o.logits = ref.data() + (size_t)r0 * T * mi.vocab_size;
        ASSERT_EQ(cvene_forward(L.model, ids + (size_t)r0 * T, std::min(kMicro, B - r0), T, &o), CVENE_OK) << L.error();
    }
    // stages
    cvene_stage_opts st;
    memset(&st, 0, sizeof st);
    st.fn = [](void *u, cvene_component c, int layer, cvene_tensor_view *v, int row0, float *carry) {
        auto *p = static_cast<One *>(u);
        if ((p->bits >> layer) & 1u) StageSites::shift(v, layer, row0);
        p->ss->at(c, layer, v, carry);
        return 0;
    };
    st.user = &one;
    st.sites[CVENE_BLOCK_OUTPUT] = o.sites[CVENE_BLOCK_OUTPUT];
    st.sites[CVENE_MLP_OUTPUT] = bits;
    st.carry = carry ? mi.n_embd : 0;
    const bool rank0 = cvene_comm_rank(g_ranks->comm) == 0;
    ASSERT_EQ(cvene_forward_stages(g_ranks->comm, L.model, rank0 ? ids : nullptr, B, T, kMicro, &st,
                                   rank0 ? got.data() : nullptr),
              CVENE_OK)
        << L.error();
    if (!rank0) return;
    double worst = 0;
    for (size_t i = 0; i < ref.size(); i++) worst = std::fmax(worst, std::fabs((double)ref[i] - got[i]));
    EXPECT_LE(worst, 1e-6) << dir;
}

std::vector<int32_t> stage_ids(int B, int T) {
    std::vector<int32_t> ids((size_t)B * T);
    for (int i = 0; i < B * T; i++) ids[i] = (i * 37 + 11) % 90 + 1; // the NeoX fixture's vocabulary is 96
    return ids;
}

TEST(Ranks, StagesEqualOneProcessGpt2) {
    // the shift before and after every boundary of 1, 2 and 3 stages; the carry from stage 0 to the last
    stages_case(demo(), stage_ids(5, 7).data(), 5, 7, {0, 2, 3, 4, 5, 7}, true);
}

// Only each row's last position's logits (what a prediction reads): the last block runs its tail
// rows only, as one process with logits_to_keep 1 does.
TEST(Ranks, StagesKeepLastLogits) {
    Loaded L(demo());
    ASSERT_EQ(L.status, CVENE_OK) << L.error();
    const int B = 5, T = 7, V = cvene_model_get_info(L.model).vocab_size;
    const std::vector<int32_t> ids = stage_ids(B, T);
    std::vector<float> ref((size_t)B * V), got(ref.size(), -1.0f);
    cvene_run_opts o;
    memset(&o, 0, sizeof o);
    o.logits_to_keep = 1;
    for (int r0 = 0; r0 < B; r0 += kMicro) {
        o.logits = ref.data() + (size_t)r0 * V;
        ASSERT_EQ(cvene_forward(L.model, ids.data() + (size_t)r0 * T, std::min(kMicro, B - r0), T, &o), CVENE_OK);
    }
    cvene_stage_opts so;
    memset(&so, 0, sizeof so);
    so.logits_to_keep = 1;
    const bool rank0 = cvene_comm_rank(g_ranks->comm) == 0;
    ASSERT_EQ(cvene_forward_stages(g_ranks->comm, L.model, ids.data(), B, T, kMicro, &so, rank0 ? got.data() : nullptr),
              CVENE_OK)
        << L.error();
    if (rank0) {
        EXPECT_EQ(0, memcmp(ref.data(), got.data(), sizeof(float) * ref.size()));
    }
}

TEST(Ranks, StagesEqualOneProcessNeox) {
    stages_case(std::string(CVENE_FIXTURES) + "/neox/par_rot25/model", stage_ids(5, 7).data(), 5, 7, {0, 1}, false);
}

TEST(Ranks, StagesRefuseBadArguments) {
    Loaded L(demo());
    ASSERT_EQ(L.status, CVENE_OK) << L.error();
    const int32_t ids[4] = {1, 2, 3, 4};
    std::vector<float> lg(4 * 1024);
    expect_msg(L.ctx, cvene_forward_stages(g_ranks->comm, L.model, ids, 2, 2, 3, nullptr, nullptr),
               CVENE_ERR_INVALID_ARG, {"micro_batch = 3"});
    cvene_stage_opts st;
    memset(&st, 0, sizeof st);
    st.carry = 4;
    expect_msg(L.ctx, cvene_forward_stages(g_ranks->comm, L.model, ids, 2, 2, 1, &st, nullptr), CVENE_ERR_INVALID_ARG,
               {"carry = 4"});
}

} // namespace
