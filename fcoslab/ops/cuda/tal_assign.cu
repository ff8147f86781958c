// TAL pair matrices: one thread per (image, box, point), grid-stride over B * M * P, output (B, M, P).
// The same float operations in the same order as fcoslab.ops.reference.tal_pairs (compiled with
// --fmad=false, so every operation rounds as torch's does):
//   score = scores[b, p, max(label, 0)] (the box's class at the point; padding reads class 0, unused);
//   iou of the predicted box q with the box: inter / union, union = (q2 - q0) * (q3 - q1)
//   + (x2 - x1) * (y2 - y1) - inter, 0 where union <= 0;
//   inside = px - x1 > 0 && py - y1 > 0 && x2 - px > 0 && y2 - py > 0.
// The alignment score^alpha * iou^beta and the selection run in torch afterwards.

extern "C" __global__ void tal_pairs(const float* __restrict__ points,      // (P, 2)
                                     const float* __restrict__ pred,        // (B, P, 4)
                                     const float* __restrict__ scores,      // (B, P, K)
                                     const float* __restrict__ boxes,       // (B, M, 4)
                                     const long long* __restrict__ labels,  // (B, M)
                                     int num_points, int num_boxes, int num_classes,
                                     long long total,                       // B * M * P
                                     float* __restrict__ score_out,         // (B, M, P)
                                     float* __restrict__ iou_out,           // (B, M, P)
                                     unsigned char* __restrict__ inside)    // (B, M, P), bool
{
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)blockDim.x * gridDim.x) {
        int p = (int)(i % num_points);
        long long g = i / num_points;  // b * M + m
        long long b = g / num_boxes;
        long long cls = labels[g] < 0 ? 0 : labels[g];
        long long bp = b * num_points + p;
        score_out[i] = scores[bp * num_classes + cls];
        float px = points[2 * p], py = points[2 * p + 1];
        float x1 = boxes[4 * g], y1 = boxes[4 * g + 1], x2 = boxes[4 * g + 2], y2 = boxes[4 * g + 3];
        float q0 = pred[4 * bp], q1 = pred[4 * bp + 1], q2 = pred[4 * bp + 2], q3 = pred[4 * bp + 3];
        float iw = fmaxf(fminf(q2, x2) - fmaxf(q0, x1), 0.f);
        float ih = fmaxf(fminf(q3, y2) - fmaxf(q1, y1), 0.f);
        float inter = iw * ih;
        float uni = (q2 - q0) * (q3 - q1) + (x2 - x1) * (y2 - y1) - inter;
        iou_out[i] = uni > 0.f ? inter / uni : 0.f;
        inside[i] = (px - x1 > 0.f) && (py - y1 > 0.f) && (x2 - px > 0.f) && (y2 - py > 0.f);
    }
}
