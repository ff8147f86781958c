// ATSS pair matrices: one thread per (image, box, point), grid-stride over B * M * P, output (B, M, P).
// The same float operations in the same order as fcoslab.ops.reference.atss_pairs (compiled with
// --fmad=false, so every operation rounds as torch's does):
//   dist2 = dx * dx + dy * dy, dx = px - (x1 + x2) / 2, dy = py - (y1 + y2) / 2;
//   anchor: side = scale * stride, half = side / 2, a square centred on the point;
//   iou = inter / (side * side + (x2 - x1) * (y2 - y1) - inter);
//   inside = px - x1 > 0 && py - y1 > 0 && x2 - px > 0 && y2 - py > 0.
// The selection (nearest per level, mean + std threshold, conflicts) runs in torch afterwards.

extern "C" __global__ void atss_pairs(const float* __restrict__ points,   // (P, 2)
                                      const float* __restrict__ strides,  // (P,)
                                      const float* __restrict__ boxes,    // (B, M, 4)
                                      int num_points, long long total,    // total = B * M * P
                                      float scale,
                                      float* __restrict__ dist2,          // (B, M, P)
                                      float* __restrict__ iou,            // (B, M, P)
                                      unsigned char* __restrict__ inside) // (B, M, P), bool
{
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)blockDim.x * gridDim.x) {
        int p = (int)(i % num_points);
        long long g = i / num_points;  // b * M + m
        float px = points[2 * p], py = points[2 * p + 1];
        float x1 = boxes[4 * g], y1 = boxes[4 * g + 1], x2 = boxes[4 * g + 2], y2 = boxes[4 * g + 3];
        float dx = px - (x1 + x2) / 2.f, dy = py - (y1 + y2) / 2.f;
        dist2[i] = dx * dx + dy * dy;
        float side = scale * strides[p];
        float half = side / 2.f;
        float iw = fmaxf(fminf(px + half, x2) - fmaxf(px - half, x1), 0.f);
        float ih = fmaxf(fminf(py + half, y2) - fmaxf(py - half, y1), 0.f);
        float inter = iw * ih;
        iou[i] = inter / (side * side + (x2 - x1) * (y2 - y1) - inter);
        inside[i] = (px - x1 > 0.f) && (py - y1 > 0.f) && (x2 - px > 0.f) && (y2 - py > 0.f);
    }
}
