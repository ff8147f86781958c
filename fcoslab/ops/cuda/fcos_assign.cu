// FCOS assignment: one thread per (image, point), all images and levels in one launch.
// The ground-truth boxes of the block's image are staged in shared memory, STAGE at a time.
// Rules (identical to fcoslab.ops_reference.fcos_assign, compiled with --fmad=false so that every
// float operation rounds as torch's does):
//   box valid: label >= 0, x2 > x1, y2 > y1;  inside: min(l, t, r, b) > 0;
//   range: lo <= max(l, t, r, b) <= hi;  center sampling (radius >= 0): |px - cx| < radius * stride
//   and |py - cy| < radius * stride;  winner: smallest area, ties to the lowest index.
// These are the defaults range_bounds="closed", area_order="exact"; fcoslab.ops.fcos_assign runs the torch
// reference for torchvision's rules ("open", "float32_1e8"), which this kernel does not implement.

#define STAGE 256

extern "C" __global__ void fcos_assign(const float* __restrict__ points,   // (P, 2)
                                       const float* __restrict__ strides,  // (P,)
                                       const float* __restrict__ ranges,   // (P, 2)
                                       const float* __restrict__ boxes,    // (B, M, 4)
                                       const long long* __restrict__ labels, // (B, M)
                                       int num_points, int num_boxes, float radius, // radius < 0: off
                                       long long* __restrict__ matched)    // (B, P)
{
    __shared__ float s_boxes[STAGE * 4];
    __shared__ int s_valid[STAGE];
    int b = blockIdx.y;
    int p = blockIdx.x * blockDim.x + threadIdx.x;
    bool active = p < num_points;
    float px = 0.f, py = 0.f, lo = 0.f, hi = 0.f, reach = 0.f;
    if (active) {
        px = points[2 * p];
        py = points[2 * p + 1];
        lo = ranges[2 * p];
        hi = ranges[2 * p + 1];
        reach = radius * strides[p];
    }
    float best_area = __int_as_float(0x7f800000);  // +inf
    long long best = -1;
    for (int base = 0; base < num_boxes; base += STAGE) {
        int count = min(STAGE, num_boxes - base);
        __syncthreads();
        for (int m = threadIdx.x; m < count; m += blockDim.x) {
            long long g = (long long)b * num_boxes + base + m;
            float x1 = boxes[4 * g], y1 = boxes[4 * g + 1], x2 = boxes[4 * g + 2], y2 = boxes[4 * g + 3];
            s_boxes[4 * m] = x1;
            s_boxes[4 * m + 1] = y1;
            s_boxes[4 * m + 2] = x2;
            s_boxes[4 * m + 3] = y2;
            s_valid[m] = labels[g] >= 0 && x2 > x1 && y2 > y1;
        }
        __syncthreads();
        if (!active) continue;
        for (int m = 0; m < count; m++) {
            if (!s_valid[m]) continue;
            float x1 = s_boxes[4 * m], y1 = s_boxes[4 * m + 1], x2 = s_boxes[4 * m + 2], y2 = s_boxes[4 * m + 3];
            float l = px - x1, t = py - y1, r = x2 - px, bo = y2 - py;
            if (fminf(fminf(l, t), fminf(r, bo)) <= 0.f) continue;
            float side = fmaxf(fmaxf(l, t), fmaxf(r, bo));
            if (side < lo || side > hi) continue;
            if (radius >= 0.f) {
                float cx = (x1 + x2) / 2.f, cy = (y1 + y2) / 2.f;
                if (!(fabsf(px - cx) < reach && fabsf(py - cy) < reach)) continue;
            }
            float area = (x2 - x1) * (y2 - y1);
            if (area < best_area) {
                best_area = area;
                best = base + m;
            }
        }
    }
    if (active) matched[(long long)b * num_points + p] = best;
}
