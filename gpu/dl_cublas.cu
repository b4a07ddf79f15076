/* dl_cublas.cu — cuBLASLt opened at run time, and the dense GEMM built on it.
 *
 * The binary links cudart statically and nothing else from CUDA, so it starts on a machine
 * without cuBLAS (the CPU backend still works there). lb_cublas_open dlopens libcublasLt
 * (sonames tried in order: .so.13, .so.12, .so) and resolves the dozen entry points the GEMM
 * needs; a missing library or symbol is an LB_E_DEVICE error that names it.
 *
 * GEMM: y[T,N] (+)= x[T,K] @ w[N,K]^T, bf16 operands, fp32 accumulate and scale, y bf16 or
 * f32. Row-major y is column-major y^T [N,T]; so D(N x T) = op(Wc)^T(N x K) * Xc(K x T) with
 * Wc = w seen column-major [K,N] (ld K), Xc = x seen column-major [K,T] (ld K).
 * Descriptors and the heuristic's algorithm are cached per (T, K, N, y dtype): making a plan
 * (descriptors and the heuristic query) cost 0.25-0.8 ms of host time on the H100 (run 43,
 * LB_CUDA_STATS), the cached launch a few microseconds. LB_CUDA_GEMM_TUNE=1 (not yet
 * measured on a GPU: off by default): a new shape times up to 8 of the heuristic's algorithms on
 * its real operands and keeps the fastest (one stream synchronisation per new shape).
 *
 * Test: build/tests/test_ops (matmul cases). */
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cublasLt.h>

#include "common.cuh"

#define LB_BLAS_FNS(X)                                                                                      \
    X(cublasLtCreate)                                                                                       \
    X(cublasLtDestroy)                                                                                      \
    X(cublasLtGetStatusName)                                                                                \
    X(cublasLtMatmulDescCreate)                                                                             \
    X(cublasLtMatmulDescDestroy)                                                                            \
    X(cublasLtMatmulDescSetAttribute)                                                                       \
    X(cublasLtMatrixLayoutCreate)                                                                           \
    X(cublasLtMatrixLayoutDestroy)                                                                          \
    X(cublasLtMatmulPreferenceCreate)                                                                       \
    X(cublasLtMatmulPreferenceDestroy)                                                                      \
    X(cublasLtMatmulPreferenceSetAttribute)                                                                 \
    X(cublasLtMatmulAlgoGetHeuristic)                                                                       \
    X(cublasLtMatmul)

#define LB_PLAN_CAP 256 /* 64 until run 42; the dense path's row groups make many shapes per step */

struct gemm_plan {
    int used;
    int n_tok, n_in, n_out, y_dt, accumulate;
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t la, lb, lc;
    cublasLtMatmulAlgo_t algo;
};

struct lb_cublas {
    void *so; /* owned dlopen handle */
#define X(f) decltype(&::f) f;
    LB_BLAS_FNS(X)
#undef X
    cublasLtHandle_t h;
    void *d_ws; /* owned, device: cuBLASLt workspace */
    size_t ws_bytes;
    struct gemm_plan plan[LB_PLAN_CAP];
    int next_evict;
    /* LB_CUDA_GEMM_TUNE=1: a new plan times up to LB_TUNE_N of the heuristic's algorithms on its
     * real operands (output into d_tune, beta 0) and keeps the fastest */
    int tune;
    void *d_tune;
    size_t tune_bytes;
    cudaEvent_t ev[2];
    int n_tuned, n_changed;
    double tune_ms;
    long long n_made, n_evicted; /* plans made (heuristic queries), plans evicted to make room */
    double make_s;              /* host seconds in plan_make */
};
#define LB_TUNE_N 8

#define LB_BLAS(expr)                                                                                       \
    do {                                                                                                    \
        cublasStatus_t s_ = (expr);                                                                         \
        if (s_ != CUBLAS_STATUS_SUCCESS)                                                                    \
            return lb_err_set(err, LB_E_DEVICE, "%s:%d: %s: %s", __FILE__, __LINE__, #expr,                 \
                              b->cublasLtGetStatusName ? b->cublasLtGetStatusName(s_) : "cublas error");    \
    } while (0)

int lb_cublas_open(struct lb_cu *c, struct lb_err *err)
{
    static const char *names[] = {"libcublasLt.so.13", "libcublasLt.so.12", "libcublasLt.so"};
    struct lb_cublas *b = (struct lb_cublas *)calloc(1, sizeof *b);
    if (!b) return lb_err_set(err, LB_E_OOM, "cuBLASLt: out of host memory");
    const char *last = "";
    for (size_t i = 0; i < sizeof names / sizeof names[0] && !b->so; i++) {
        b->so = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
        if (!b->so) last = dlerror();
    }
    if (!b->so) {
        free(b);
        return lb_err_set(err, LB_E_DEVICE,
                          "cannot load cuBLASLt (tried libcublasLt.so.13, .so.12, .so): %s; install the CUDA 13 "
                          "cuBLAS library or add its folder to LD_LIBRARY_PATH",
                          last ? last : "?");
    }
#define X(f)                                                                                                \
    b->f = (decltype(&::f))dlsym(b->so, #f);                                                                \
    if (!b->f) {                                                                                            \
        dlclose(b->so);                                                                                     \
        free(b);                                                                                            \
        return lb_err_set(err, LB_E_DEVICE, "cuBLASLt library lacks symbol %s (too old?)", #f);            \
    }
    LB_BLAS_FNS(X)
#undef X
    c->blas = b;
    const char *ev = getenv("LB_CUDA_GEMM_TUNE");
    b->tune = ev && atoi(ev) > 0;
    LB_BLAS(b->cublasLtCreate(&b->h));
    b->ws_bytes = (size_t)32 << 20;
    LB_CU(cudaMalloc(&b->d_ws, b->ws_bytes));
    return 0;
}

static void plan_drop(struct lb_cublas *b, struct gemm_plan *p)
{
    if (!p->used) return;
    b->cublasLtMatmulDescDestroy(p->op);
    b->cublasLtMatrixLayoutDestroy(p->la);
    b->cublasLtMatrixLayoutDestroy(p->lb);
    b->cublasLtMatrixLayoutDestroy(p->lc);
    p->used = 0;
}

void lb_cublas_stats(const struct lb_cu *c)
{
    const struct lb_cublas *b = c->blas;
    if (b && b->n_made)
        fprintf(stderr, "cuda stats: GEMM plans: %lld made (heuristic queries) in %.3f s of host time, %lld evicted (cache of %d)\n",
                b->n_made, b->make_s, b->n_evicted, LB_PLAN_CAP);
}

void lb_cublas_close(struct lb_cu *c)
{
    struct lb_cublas *b = c->blas;
    if (!b) return;
    for (int i = 0; i < LB_PLAN_CAP; i++) plan_drop(b, &b->plan[i]);
    if (b->tune && b->n_tuned)
        fprintf(stderr, "cuBLASLt tuning: %d GEMM shapes timed in %.1f ms; %d of them run faster than the heuristic's first choice\n",
                b->n_tuned, b->tune_ms, b->n_changed);
    if (b->d_tune) cudaFree(b->d_tune);
    for (int i = 0; i < 2; i++)
        if (b->ev[i]) cudaEventDestroy(b->ev[i]);
    if (b->d_ws) cudaFree(b->d_ws);
    if (b->h) b->cublasLtDestroy(b->h);
    dlclose(b->so);
    free(b);
    c->blas = NULL;
}

/* Times each of the n algorithms (3 launches after a warm-up) on the plan's real operands with
 * beta 0 into a scratch output; returns the index of the fastest, 0 when timing is impossible
 * (no scratch memory: the heuristic's first choice stands). Synchronises the stream. */
static int tune_pick(struct lb_cublas *b, struct gemm_plan *p, const cublasLtMatmulHeuristicResult_t *res, int n,
                     const void *x, const void *w, cudaStream_t stream)
{
    size_t need = (size_t)p->n_tok * p->n_out * (p->y_dt == LB_F32 ? 4 : 2);
    if (need > b->tune_bytes) {
        if (b->d_tune) cudaFree(b->d_tune);
        b->d_tune = NULL;
        b->tune_bytes = 0;
        if (cudaMalloc(&b->d_tune, need) != cudaSuccess) {
            (void)cudaGetLastError();
            return 0;
        }
        b->tune_bytes = need;
    }
    for (int i = 0; i < 2; i++)
        if (!b->ev[i] && cudaEventCreate(&b->ev[i]) != cudaSuccess) {
            (void)cudaGetLastError();
            return 0;
        }
    float alpha = 1.0f, beta = 0.0f, best_ms = 0;
    int best = -1;
    for (int a = 0; a < n; a++) {
        int ok = b->cublasLtMatmul(b->h, p->op, &alpha, w, p->la, x, p->lb, &beta, b->d_tune, p->lc, b->d_tune, p->lc,
                                   &res[a].algo, b->d_ws, b->ws_bytes, stream) == CUBLAS_STATUS_SUCCESS;
        cudaEventRecord(b->ev[0], stream);
        for (int r = 0; r < 3 && ok; r++)
            ok = b->cublasLtMatmul(b->h, p->op, &alpha, w, p->la, x, p->lb, &beta, b->d_tune, p->lc, b->d_tune, p->lc,
                                   &res[a].algo, b->d_ws, b->ws_bytes, stream) == CUBLAS_STATUS_SUCCESS;
        cudaEventRecord(b->ev[1], stream);
        float ms = 0;
        if (cudaEventSynchronize(b->ev[1]) != cudaSuccess || cudaEventElapsedTime(&ms, b->ev[0], b->ev[1]) != cudaSuccess) ok = 0;
        (void)cudaGetLastError();
        b->tune_ms += ms;
        if (ok && (best < 0 || ms < best_ms)) {
            best = a;
            best_ms = ms;
        }
    }
    if (best < 0) best = 0;
    b->n_tuned++;
    b->n_changed += best != 0;
    return best;
}

static int plan_make(struct lb_cublas *b, struct gemm_plan *p, int n_tok, int n_in, int n_out, enum lb_dtype y_dt,
                     int accumulate, const void *x, const void *w, cudaStream_t stream, struct lb_err *err)
{
    memset(p, 0, sizeof *p);
    cudaDataType_t yt = y_dt == LB_F32 ? CUDA_R_32F : CUDA_R_16BF;
    LB_BLAS(b->cublasLtMatmulDescCreate(&p->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    p->used = 1; /* from here plan_drop releases what exists */
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    LB_BLAS(b->cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    LB_BLAS(b->cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    LB_BLAS(b->cublasLtMatrixLayoutCreate(&p->la, CUDA_R_16BF, n_in, n_out, n_in));
    LB_BLAS(b->cublasLtMatrixLayoutCreate(&p->lb, CUDA_R_16BF, n_in, n_tok, n_in));
    LB_BLAS(b->cublasLtMatrixLayoutCreate(&p->lc, yt, n_out, n_tok, n_out));
    cublasLtMatmulPreference_t pref;
    LB_BLAS(b->cublasLtMatmulPreferenceCreate(&pref));
    cublasLtMatmulHeuristicResult_t res[LB_TUNE_N];
    int n_res = 0;
    cublasStatus_t st = b->cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                                &b->ws_bytes, sizeof b->ws_bytes);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = b->cublasLtMatmulAlgoGetHeuristic(b->h, p->op, p->la, p->lb, p->lc, p->lc, pref, b->tune ? LB_TUNE_N : 1, res,
                                               &n_res);
    b->cublasLtMatmulPreferenceDestroy(pref);
    if (st != CUBLAS_STATUS_SUCCESS || n_res < 1)
        return lb_err_set(err, LB_E_DEVICE, "cuBLASLt: no algorithm for bf16 GEMM T=%d K=%d N=%d (y %s): %s", n_tok,
                          n_in, n_out, lb_dtype_name(y_dt),
                          st != CUBLAS_STATUS_SUCCESS ? b->cublasLtGetStatusName(st) : "heuristic returned none");
    p->n_tok = n_tok;
    p->n_in = n_in;
    p->n_out = n_out;
    p->y_dt = y_dt;
    p->accumulate = accumulate;
    p->algo = res[b->tune && n_res > 1 ? tune_pick(b, p, res, n_res, x, w, stream) : 0].algo;
    return 0;
}

int lb_cublas_gemm(struct lb_cu *c, const void *x, const void *w, void *y, enum lb_dtype y_dt, int n_tok, int n_in,
                   int n_out, int accumulate, struct lb_err *err)
{
    struct lb_cublas *b = c->blas;
    struct gemm_plan *p = NULL;
    for (int i = 0; i < LB_PLAN_CAP; i++) {
        struct gemm_plan *q = &b->plan[i];
        if (q->used && q->n_tok == n_tok && q->n_in == n_in && q->n_out == n_out && q->y_dt == (int)y_dt) {
            p = q;
            break;
        }
    }
    if (!p) {
        for (int i = 0; i < LB_PLAN_CAP && !p; i++)
            if (!b->plan[i].used) p = &b->plan[i];
        if (!p) {
            p = &b->plan[b->next_evict];
            b->next_evict = (b->next_evict + 1) % LB_PLAN_CAP;
            plan_drop(b, p);
            b->n_evicted++;
        }
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        int rc = plan_make(b, p, n_tok, n_in, n_out, y_dt, accumulate, x, w, c->stream, err);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        b->n_made++;
        b->make_s += (t1.tv_sec - t0.tv_sec) + 1e-9 * (t1.tv_nsec - t0.tv_nsec);
        if (rc < 0) {
            plan_drop(b, p);
            return rc;
        }
    }
    /* The heuristic's choice does not depend on beta, so one plan serves both accumulate modes. */
    float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
    LB_BLAS(b->cublasLtMatmul(b->h, p->op, &alpha, w, p->la, x, p->lb, &beta, y, p->lc, y, p->lc, &p->algo, b->d_ws,
                              b->ws_bytes, c->stream));
    return 0;
}
