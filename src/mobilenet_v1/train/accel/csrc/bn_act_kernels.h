/* The kernels of bn_act.c for one element type T; NAME(f) gives f its type suffix. */

/* Adds one row to the block sums: bs += x - shift, bq += (x - shift)^2. */
static inline void NAME(add_row)(const T *xr, const T *shift, int64_t C, T *bs, T *bq) {
#pragma omp simd
    for (int64_t c = 0; c < C; c++) {
        T d = xr[c] - shift[c];
        bs[c] += d;
        bq[c] += d * d;
    }
}

/* Adds one row of the gradient: g' = g where 0 < x * scale + bias < upper (the activation's
   mask, recomputed exactly as in the forward pass), else 0; bs += g', bq += g' * (x - shift). */
static inline void NAME(add_grad_row)(const T *xr, const T *gr, const T *shift, const T *scale, const T *bias,
                                      T upper, int64_t C, T *bs, T *bq) {
#pragma omp simd
    for (int64_t c = 0; c < C; c++) {
        T z = xr[c] * scale[c] + bias[c];
        T gm = (z > 0 && z < upper) ? gr[c] : 0;
        bs[c] += gm;
        bq[c] += gm * (xr[c] - shift[c]);
    }
}

/* Per-channel sums over the rows into out[0:C] and out[C:2C]. Without g (NULL):
   sum(x - shift) and sum((x - shift)^2), the shift being one row of x so that
   E[d^2] - E[d]^2 does not cancel. With g (shift = the batch mean): sum(g') and
   sum(g' * (x - mean)). Returns 0, or 1 when out of memory. */
int NAME(bn_act_sums)(const T *x, const T *g, int64_t rows, int64_t C, const T *shift, const T *scale,
                      const T *bias, T upper, double *out) {
    Partials p;
    if (partials_alloc(&p, C, sizeof(T))) return 1;
#pragma omp parallel num_threads(p.threads)
    {
        int t = omp_get_thread_num(), n = omp_get_num_threads();
        int64_t lo = rows * t / n, hi = rows * (t + 1) / n;
        double *s = p.sums + (int64_t)t * 2 * C;
        T *bs = (T *)p.blocks + (int64_t)t * 2 * C, *bq = bs + C;
        for (int64_t r0 = lo; r0 < hi; r0 += BLOCK) {
            int64_t r1 = r0 + BLOCK < hi ? r0 + BLOCK : hi;
            memset(bs, 0, 2 * C * sizeof(T));
            for (int64_t r = r0; r < r1; r++) {
                if (g)
                    NAME(add_grad_row)(x + r * C, g + r * C, shift, scale, bias, upper, C, bs, bq);
                else
                    NAME(add_row)(x + r * C, shift, C, bs, bq);
            }
            for (int64_t c = 0; c < 2 * C; c++) s[c] += bs[c];
        }
    }
    partials_reduce(&p, C, out);
    return 0;
}

/* y = min(max(x * scale + bias, 0), upper) */
void NAME(bn_act_forward)(const T *x, T *y, int64_t rows, int64_t C, const T *scale, const T *bias, T upper) {
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        const T *xr = x + r * C;
        T *yr = y + r * C;
#pragma omp simd
        for (int64_t c = 0; c < C; c++) {
            T z = xr[c] * scale[c] + bias[c];
            z = z > 0 ? z : 0;
            yr[c] = z < upper ? z : upper;
        }
    }
}

/* dx = a * g' + b + (x - mean) * d, g' masked as above; coef holds the rows
   [scale, bias, mean, a, b, d], each of length C. */
void NAME(bn_act_backward_input)(const T *g, const T *x, T *dx, int64_t rows, int64_t C, const T *coef, T upper) {
    const T *scale = coef, *bias = coef + C, *mean = coef + 2 * C;
    const T *a = coef + 3 * C, *b = coef + 4 * C, *d = coef + 5 * C;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        const T *xr = x + r * C, *gr = g + r * C;
        T *out = dx + r * C;
#pragma omp simd
        for (int64_t c = 0; c < C; c++) {
            T z = xr[c] * scale[c] + bias[c];
            T gm = (z > 0 && z < upper) ? gr[c] : 0;
            out[c] = a[c] * gm + b[c] + (xr[c] - mean[c]) * d[c];
        }
    }
}
