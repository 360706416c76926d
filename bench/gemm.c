/* gemm.c: the measurement behind the CPU backend's choice of matrix-product library: single
 * precision products of the shapes the U-Net runs, through oneDNN's dnnl_sgemm and through
 * OpenBLAS's cblas_sgemm (loaded at run time, so the project does not link it), in GFLOP/s.
 * A benchmark: it prints a table and asserts nothing. Built as build/sdxs-bench-gemm.
 *
 *     OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 build/sdxs-bench-gemm
 */
#define _POSIX_C_SOURCE 200809L
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <dnnl.h>

/* cblas_sgemm's signature, with CBLAS's enum values written as ints. */
typedef void (*cblas_sgemm_fn)(int order, int ta, int tb, int m, int n, int k, float alpha,
                               const float *a, int lda, const float *b, int ldb, float beta,
                               float *c, int ldc);
enum { CBLAS_ROW_MAJOR = 101, CBLAS_NO_TRANS = 111, CBLAS_TRANS = 112 };

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* (M, K) x (N, K)^T, as a linear layer computes it. */
typedef struct shape {
    const char *what;
    int m, n, k;
} shape;

static const shape shapes[] = {
    {"attention proj. 64x64", 4096, 320, 320},
    {"feed-forward 64x64", 4096, 2560, 320},
    {"feed-forward 32x32", 1024, 5120, 640},
    {"feed-forward 16x16", 256, 10240, 1280},
    {"text encoder MLP", 77, 3072, 768},
    {"square 2048", 2048, 2048, 2048},
};

static double gflops(const shape *s, double seconds)
{
    return 2.0 * s->m * s->n * (double)s->k / seconds * 1e-9;
}

int main(void)
{
    void *blas = dlopen("libopenblas.so.0", RTLD_NOW);
    cblas_sgemm_fn cblas = blas ? (cblas_sgemm_fn)(size_t)dlsym(blas, "cblas_sgemm") : NULL;
    const int reps = 5;

    printf("%-24s %6s %6s %6s %14s %14s\n", "shape", "M", "N", "K", "oneDNN GFLOP/s",
           "OpenBLAS GFLOP/s");
    for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++) {
        const shape *s = &shapes[i];
        float *a = malloc(sizeof(float) * (size_t)s->m * s->k);
        float *b = malloc(sizeof(float) * (size_t)s->n * s->k);
        float *c = malloc(sizeof(float) * (size_t)s->m * s->n);
        double best_dnnl = 1e30, best_blas = 1e30;
        if (!a || !b || !c) {
            fprintf(stderr, "out of memory\n");
            return 1;
        }
        for (size_t j = 0; j < (size_t)s->m * s->k; j++)
            a[j] = (float)((j * 7919u) % 1000u) * 1e-3f - 0.5f;
        for (size_t j = 0; j < (size_t)s->n * s->k; j++)
            b[j] = (float)((j * 104729u) % 1000u) * 1e-3f - 0.5f;

        /* Best of reps after one warm-up call each. */
        for (int r = 0; r <= reps; r++) {
            double t0 = now_s();
            dnnl_sgemm('N', 'T', s->m, s->n, s->k, 1.0f, a, s->k, b, s->k, 0.0f, c, s->n);
            double dt = now_s() - t0;
            if (r && dt < best_dnnl)
                best_dnnl = dt;
        }
        for (int r = 0; cblas && r <= reps; r++) {
            double t0 = now_s();
            cblas(CBLAS_ROW_MAJOR, CBLAS_NO_TRANS, CBLAS_TRANS, s->m, s->n, s->k, 1.0f, a, s->k,
                  b, s->k, 0.0f, c, s->n);
            double dt = now_s() - t0;
            if (r && dt < best_blas)
                best_blas = dt;
        }
        printf("%-24s %6d %6d %6d %14.1f ", s->what, s->m, s->n, s->k, gflops(s, best_dnnl));
        if (cblas)
            printf("%14.1f\n", gflops(s, best_blas));
        else
            printf("%14s\n", "(no libopenblas.so.0)");
        free(a);
        free(b);
        free(c);
    }
    return 0;
}
