"""Redraw time of the prediction viewer for a 640 px image on the current machine (predictions cached).

    python benchmarks/viewer.py RUN_DIR [--repeat 20]
"""

from __future__ import annotations

import argparse
import sys

from PIL import Image

import common
from fcoslab.inference.predict import Predictor
from fcoslab.viz.viewer import PredictionViewer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    common.print_header()
    predictor = Predictor(args.run, device="cpu")
    viewer = PredictionViewer(predictor, None, score=0.0)
    photo = Image.effect_mandelbrot((640, 480), (-2.0, -1.2, 1.0, 1.2), 60).convert("RGB")
    viewer.add_image(photo, "640x480.png")  # predicts once (cached)
    updates = common.Timing([])
    for i in range(args.repeat):
        viewer.score.value = 0.0
        with common.stopwatch(None) as watch:
            viewer.score.value = 0.05 + 0.01 * (i % 10)  # fires the observer: render, encode, table
        updates.times.append(watch.seconds)
    print(f"viewer update (640x480, {len(viewer.prediction(0)['scores'])} cached detections): "
          f"median {1000 * updates.median:.1f} ms, max {1000 * max(updates.times):.1f} ms over {args.repeat} updates")
    return 0


if __name__ == "__main__":
    sys.exit(main())
