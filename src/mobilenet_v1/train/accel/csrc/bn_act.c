/* Batch norm with batch statistics fused with ReLU / ReLU6, for channels_last CPU tensors.
 *
 * A channels_last (N, C, H, W) tensor is a rows x C matrix, rows = N*H*W. PyTorch's
 * training step of BN + ReLU makes seven passes over such a matrix (statistics twice,
 * normalize, ReLU; ReLU backward, BN gradient statistics, BN input gradient), three of them
 * into freshly allocated memory. These kernels make four, two of them into new memory:
 * statistics, then normalize-and-clamp; gradient statistics, then the input gradient, the
 * activation's mask recomputed from the saved input. Loaded by mobilenet_v1/native.py, used
 * by mobilenet_v1/layers.py; threads come from the OpenMP runtime PyTorch already runs.
 */
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define BLOCK 64 /* rows summed in the element type before the sum is added to a double */

/* Per-thread double sums (2 x C each) and per-thread block sums in the element type. */
typedef struct {
    int threads;
    double *sums;
    void *blocks;
} Partials;

static int partials_alloc(Partials *p, int64_t C, size_t element) {
    p->threads = omp_get_max_threads();
    p->sums = calloc((size_t)p->threads * 2 * C, sizeof(double));
    p->blocks = malloc((size_t)p->threads * 2 * C * element);
    if (p->sums && p->blocks) return 0;
    free(p->sums);
    free(p->blocks);
    return 1;
}

static void partials_reduce(Partials *p, int64_t C, double *out) {
    memset(out, 0, 2 * C * sizeof(double));
    for (int t = 0; t < p->threads; t++)
        for (int64_t c = 0; c < 2 * C; c++) out[c] += p->sums[(int64_t)t * 2 * C + c];
    free(p->sums);
    free(p->blocks);
}

#define CONCAT(a, b) a##_##b
#define EXPAND(a, b) CONCAT(a, b)
#define NAME(f) EXPAND(f, SUFFIX)

#define T float
#define SUFFIX f32
#include "bn_act_kernels.h"
#undef T
#undef SUFFIX

#define T double
#define SUFFIX f64
#include "bn_act_kernels.h"
#undef T
#undef SUFFIX
