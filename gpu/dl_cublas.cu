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
 * Descriptors and the heuristic's algorithm are cached per (T, K, N, y dtype, accumulate):
 * the heuristic query costs tens of microseconds, the cached launch a few.
 *
 * Test: build/tests/test_ops (matmul cases). */
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

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

#define LB_PLAN_CAP 64

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
};

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

void lb_cublas_close(struct lb_cu *c)
{
    struct lb_cublas *b = c->blas;
    if (!b) return;
    for (int i = 0; i < LB_PLAN_CAP; i++) plan_drop(b, &b->plan[i]);
    if (b->d_ws) cudaFree(b->d_ws);
    if (b->h) b->cublasLtDestroy(b->h);
    dlclose(b->so);
    free(b);
    c->blas = NULL;
}

static int plan_make(struct lb_cublas *b, struct gemm_plan *p, int n_tok, int n_in, int n_out, enum lb_dtype y_dt,
                     int accumulate, struct lb_err *err)
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
    cublasLtMatmulHeuristicResult_t res;
    int n_res = 0;
    cublasStatus_t st = b->cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                                &b->ws_bytes, sizeof b->ws_bytes);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = b->cublasLtMatmulAlgoGetHeuristic(b->h, p->op, p->la, p->lb, p->lc, p->lc, pref, 1, &res, &n_res);
    b->cublasLtMatmulPreferenceDestroy(pref);
    if (st != CUBLAS_STATUS_SUCCESS || n_res < 1)
        return lb_err_set(err, LB_E_DEVICE, "cuBLASLt: no algorithm for bf16 GEMM T=%d K=%d N=%d (y %s): %s", n_tok,
                          n_in, n_out, lb_dtype_name(y_dt),
                          st != CUBLAS_STATUS_SUCCESS ? b->cublasLtGetStatusName(st) : "heuristic returned none");
    p->algo = res.algo;
    p->n_tok = n_tok;
    p->n_in = n_in;
    p->n_out = n_out;
    p->y_dt = y_dt;
    p->accumulate = accumulate;
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
        }
        int rc = plan_make(b, p, n_tok, n_in, n_out, y_dt, accumulate, err);
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
