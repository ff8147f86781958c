// Bitmask NMS for boxes sorted by (group ascending, score descending).
//
// nms_mask: one block per upper-triangle tile (row tile r, column tile c >= r) of 64 x 64 boxes.
//   Thread t of the block owns box i = 64 r + t and writes one 64-bit word: bit j is set when box
//   64 c + j comes later than i, is in the same group and overlaps i with IoU > threshold.
//   Groups are contiguous, so a tile whose column boxes all belong to later groups than its row boxes
//   holds no bit and is skipped: the scan never reads words beyond the end of a row's group.
// nms_scan: a single block walks the tiles in order. Warp 0's lane 0 decides the keeps inside a tile
//   (a sequential walk over at most 64 boxes, using the diagonal words); then every thread ORs the rows
//   of the kept boxes into the "removed" words of later tiles. No mask leaves the GPU.

#define TILE 64

__device__ __forceinline__ float iou_of(const float* a, const float* b) {
    float left = fmaxf(a[0], b[0]), top = fmaxf(a[1], b[1]);
    float right = fminf(a[2], b[2]), bottom = fminf(a[3], b[3]);
    float w = fmaxf(right - left, 0.f), h = fmaxf(bottom - top, 0.f);
    float inter = w * h;
    float area_a = (a[2] - a[0]) * (a[3] - a[1]);
    float area_b = (b[2] - b[0]) * (b[3] - b[1]);
    return inter / (area_a + area_b - inter);
}

extern "C" __global__ void nms_mask(const float* __restrict__ boxes,      // (N, 4) sorted
                                    const long long* __restrict__ groups, // (N,) ascending
                                    const int* __restrict__ group_end,    // (N,) one past the last box of i's group
                                    int n, int tiles, float threshold,
                                    unsigned long long* __restrict__ mask) // (N, tiles)
{
    // Linear block index -> (row, col) over the upper triangle, row-major.
    long long b = blockIdx.x;
    int row = (int)((2.0 * tiles + 1.0 - sqrt((2.0 * tiles + 1.0) * (2.0 * tiles + 1.0) - 8.0 * (double)b)) / 2.0);
    while (row > 0 && (long long)row * tiles - (long long)row * (row - 1) / 2 > b) row--;
    while ((long long)(row + 1) * tiles - (long long)(row + 1) * row / 2 <= b) row++;
    int col = row + (int)(b - ((long long)row * tiles - (long long)row * (row - 1) / 2));

    int row_start = row * TILE, col_start = col * TILE;
    int row_size = min(n - row_start, TILE), col_size = min(n - col_start, TILE);
    // Skip tiles past the group of the row tile's last box: the scan never reads them.
    int last_needed = group_end[row_start + row_size - 1];
    if (col_start >= last_needed) return;

    __shared__ float col_boxes[TILE * 4];
    __shared__ long long col_groups[TILE];
    int t = threadIdx.x;
    if (t < col_size) {
        for (int k = 0; k < 4; k++) col_boxes[t * 4 + k] = boxes[(col_start + t) * 4 + k];
        col_groups[t] = groups[col_start + t];
    }
    __syncthreads();
    if (t >= row_size) return;
    int i = row_start + t;
    const float* box = boxes + i * 4;
    long long g = groups[i];
    unsigned long long bits = 0;
    int first = (row == col) ? t + 1 : 0;
    for (int j = first; j < col_size; j++) {
        if (col_groups[j] == g && iou_of(box, col_boxes + j * 4) > threshold) bits |= 1ULL << j;
    }
    mask[(long long)i * tiles + col] = bits;
}

extern "C" __global__ void nms_scan(const unsigned long long* __restrict__ mask, // (N, tiles)
                                    const int* __restrict__ group_end,          // (N,)
                                    int n, int tiles,
                                    unsigned long long* __restrict__ removed_global, // (tiles,) if not shared
                                    int use_shared,
                                    unsigned char* __restrict__ keep)            // (N,) out
{
    extern __shared__ unsigned long long removed_shared[];
    unsigned long long* removed = use_shared ? removed_shared : removed_global;
    __shared__ unsigned long long kept_bits;
    for (int w = threadIdx.x; w < tiles; w += blockDim.x) removed[w] = 0ULL;
    __syncthreads();
    for (int tile = 0; tile < tiles; tile++) {
        int start = tile * TILE, size = min(n - start, TILE);
        if (threadIdx.x == 0) {
            unsigned long long gone = removed[tile], kept = 0ULL;
            for (int j = 0; j < size; j++) {
                if (!(gone >> j & 1ULL)) {
                    kept |= 1ULL << j;
                    gone |= mask[(long long)(start + j) * tiles + tile];  // diagonal word: later boxes only
                }
            }
            for (int j = 0; j < size; j++) keep[start + j] = (unsigned char)(kept >> j & 1ULL);
            kept_bits = kept;
        }
        __syncthreads();
        unsigned long long kept = kept_bits;
        while (kept) {
            int j = __ffsll((long long)kept) - 1;
            kept &= kept - 1;
            int i = start + j;
            int end_tile = (group_end[i] - 1) / TILE;  // last tile holding boxes of i's group
            for (int w = tile + 1 + threadIdx.x; w <= end_tile; w += blockDim.x)
                removed[w] |= mask[(long long)i * tiles + w];
        }
        __syncthreads();
    }
}
