// Sigmoid focal loss on (N, K) logits with integer labels (N,), -1 = background.
//
// Positive element (label == k): loss = -a  (1-p)^g log p,      dloss/dx = a (1-p)^g (g p log p - (1-p))
// Negative element:              loss = -(1-a) p^g log(1-p),    dloss/dx = (1-a) p^g (p - g (1-p) log(1-p))
// with p = sigmoid(x), log p = -softplus(-x), log(1-p) = -softplus(x); a < 0 means no alpha weighting.
// Logits are float32, float16 or bfloat16 (converted by hand: NVRTC needs no CUDA headers) with
// float32 arithmetic, or float64 (for gradcheck) with float64 arithmetic. reduce != 0: the forward
// sums into one value (block reduction + one atomicAdd per block), so nothing of size (N, K) is
// written; the backward recomputes from the logits. Calls hold fewer than 2^31 elements.

__device__ __forceinline__ float h2f(unsigned short h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}
__device__ __forceinline__ unsigned short f2h(float f) {
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}
__device__ __forceinline__ float bf2f(unsigned short b) { return __uint_as_float(((unsigned int)b) << 16); }
__device__ __forceinline__ unsigned short f2bf(float f) {
    unsigned int u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40);  // NaN stays NaN
    u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
    return (unsigned short)(u >> 16);
}

template <typename S>
__device__ __forceinline__ S softplus(S x) {  // log(1 + exp(x)), stable
    return fmax(x, S(0)) + log1p(exp(-fabs(x)));
}

template <typename S>
__device__ __forceinline__ S pow_gamma(S base, S gamma) {  // the usual gammas without powf
    if (gamma == S(2)) return base * base;
    if (gamma == S(1)) return base;
    if (gamma == S(0)) return S(1);
    return pow(base, gamma);
}

// S: float32 for float32/float16/bfloat16 logits, float64 for float64 logits.
template <typename S>
__device__ __forceinline__ void focal_terms(S x, bool positive, S alpha, S gamma, S* loss, S* grad) {
    S one = S(1), p = one / (one + exp(-x));
    if (positive) {
        S log_p = -softplus(-x);
        S w = (alpha >= S(0) ? alpha : one) * pow_gamma(one - p, gamma);
        *loss = -w * log_p;
        *grad = w * (gamma * p * log_p - (one - p));
    } else {
        S log_1mp = -softplus(x);
        S w = (alpha >= S(0) ? one - alpha : one) * pow_gamma(p, gamma);
        *loss = -w * log_1mp;
        *grad = w * (p - gamma * (one - p) * log_1mp);
    }
}

template <typename S>
__device__ __forceinline__ S block_sum(S v) {
    __shared__ S warp_sums[32];
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) warp_sums[warp] = v;
    __syncthreads();
    v = (threadIdx.x < (blockDim.x >> 5)) ? warp_sums[lane] : S(0);
    if (warp == 0)
        for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    return v;
}

#define FOCAL_KERNELS(SUFFIX, T, S, LOAD, STORE)                                                              \
extern "C" __global__ void focal_forward_##SUFFIX(const T* __restrict__ logits, const long long* __restrict__ labels, \
        int n, int k, S alpha, S gamma, int reduce, S* __restrict__ out) {                                 \
    S acc = S(0);                                                                                           \
    int total = n * k;                                                                                      \
    for (int e = blockIdx.x * blockDim.x + threadIdx.x; e < total; e += gridDim.x * blockDim.x) {           \
        int row = e / k;                                                                                    \
        int cls = e - row * k;                                                                              \
        S loss, grad;                                                                                       \
        focal_terms<S>((S)LOAD(logits[e]), labels[row] == cls, alpha, gamma, &loss, &grad);               \
        if (reduce) acc += loss; else out[e] = loss;                                                        \
    }                                                                                                       \
    if (reduce) {                                                                                           \
        acc = block_sum<S>(acc);                                                                               \
        if (threadIdx.x == 0) atomicAdd(out, acc);                                                          \
    }                                                                                                       \
}                                                                                                           \
extern "C" __global__ void focal_backward_##SUFFIX(const T* __restrict__ logits, const long long* __restrict__ labels, \
        const S* __restrict__ grad_out, int grad_is_scalar, S grad_scale, int n, int k,                      \
        S alpha, S gamma, T* __restrict__ grad_in) {                                                       \
    int total = n * k;                                                                                      \
    S scalar = grad_is_scalar ? grad_out[0] * grad_scale : S(0);                                            \
    for (int e = blockIdx.x * blockDim.x + threadIdx.x; e < total; e += gridDim.x * blockDim.x) {           \
        int row = e / k;                                                                                    \
        int cls = e - row * k;                                                                              \
        S loss, grad;                                                                                       \
        focal_terms<S>((S)LOAD(logits[e]), labels[row] == cls, alpha, gamma, &loss, &grad);               \
        grad_in[e] = STORE(grad * (grad_is_scalar ? scalar : grad_out[e]));                                 \
    }                                                                                                       \
}

#define IDENTITY(x) (x)
FOCAL_KERNELS(f32, float, float, IDENTITY, IDENTITY)
FOCAL_KERNELS(f16, unsigned short, float, h2f, f2h)
FOCAL_KERNELS(bf16, unsigned short, float, bf2f, f2bf)
FOCAL_KERNELS(f64, double, double, IDENTITY, IDENTITY)
