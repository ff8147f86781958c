"""Images per second of the training loader on COCO-like JPEGs, per worker and per core, and of JPEG
decoding alone (PIL vs torchvision.io.decode_jpeg). A benchmark, not a test.

    python benchmarks/loader.py [--data DIR] [--images 512] [--batches 20] [--batch-size 2]
                                [--preset imprv_coco_1x seed_coco_2x] [--workers 0 1 2] [--decoders torchvision pil]

Data: the 640x480 JPEGs of ``fcoslab.data.make_cocolike`` (COCO's object counts and sizes, about
130 KB a file), generated into a temporary folder, or the set that ``fcoslab make-cocolike DIR`` wrote.
Files are read once before timing, so every figure is decoding and transforms from the page cache.

Decoding: one thread, each file decoded to uint8 (3, H, W) RGB by ``pil_to_tensor(read_image(path))``
(PIL), by ``read_pixels(path)`` (what datasets use: decode_jpeg after a PIL header check), and by bare
``Image.open(path).load()`` and ``decode_jpeg`` (the decoders without the copies around them); the pixels
of PIL and read_pixels are compared file by file.

Loader: for each preset, its training dataset and transforms (resize to min_size/max_size, flips, float
pixels), collate (padding to the size divisibility) and the training sampler, through ``make_loader``
with ``data.num_workers`` = each of --workers. The first 1 + 2 W batches (worker start-up and the
batches prefetched meanwhile) are not timed; then --batches batches are. Per core: a row with 0 workers runs in this process (torch set to 1 thread); with
W workers it is the rate / W (each worker is one process with one torch thread; the main process only
receives the batches). "10 cores" is 10 times the per-core rate, if loading scaled linearly.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

import PIL
import torch
import torchvision
from PIL import Image
from torchvision.transforms.v2 import functional as F

import common
from fcoslab.config import load_config
from fcoslab.data import (CocoDetection, EpochBatchSampler, build_datasets, collate_fn, make_cocolike, make_loader,
                          read_image)
from fcoslab.data.formats.coco import read_pixels


class PilCocoDetection(CocoDetection):
    """The dataset with PIL decoding, as before read_pixels (for the --decoders pil rows)."""

    def load_pixels(self, i: int) -> torch.Tensor:
        return F.pil_to_tensor(read_image(self.image_path(i)))


def bare_decode_jpeg(path: Path) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        data = torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8)
        return torchvision.io.decode_jpeg(data, mode=torchvision.io.ImageReadMode.RGB)


def bare_pil(path: Path) -> None:
    with Image.open(path) as im:
        im.load()


def bench_decoding(files: list[Path], repeat: int) -> None:
    readers = {"PIL (pil_to_tensor(read_image))": lambda p: F.pil_to_tensor(read_image(p)),
               "read_pixels (decode_jpeg + header check)": read_pixels,
               "bare PIL Image.open + load (no copies)": bare_pil,
               "bare torchvision.io.decode_jpeg": bare_decode_jpeg}
    print(f"\n## Decoding alone: {len(files)} files x {repeat}, one thread")

    def one_pass(read):
        def run() -> None:
            for path in files:
                read(path)
        return run

    # interleaved, so that a load from elsewhere falls on every reader
    timings = common.interleaved([one_pass(read) for read in readers.values()], repeat, warmup=0, device=None)
    for name, t in zip(readers, timings):
        best = t.best / len(files)
        print(f"  {name:42s} {best * 1e3:6.3f} ms per image (best of {repeat}), {1 / best:7.0f} images/s")
    differing, largest = 0, 0
    for path in files:
        a, b = F.pil_to_tensor(read_image(path)).int(), read_pixels(path).int()
        d = int((a - b).abs().max()) if a.shape == b.shape else 255
        differing, largest = differing + (d > 0), max(largest, d)
    print(f"  pixels of read_pixels vs PIL: {differing} of {len(files)} files differ, largest difference {largest}")


def loader_rate(cfg, dataset, batch_size: int, batches: int) -> float:
    """Images per second over ``batches`` batches after the first ``1 + 2 * workers``: worker start-up,
    and the batches the workers prefetched meanwhile (DataLoader's prefetch_factor is 2)."""
    warm = 1 + 2 * cfg.data.num_workers
    sampler = EpochBatchSampler(len(dataset), batch_size, 0, 1, seed=0, epoch_length=(batches + warm) * batch_size)
    it = iter(make_loader(dataset, sampler, cfg.data, collate_fn(cfg.data, cfg.model.size_divisibility)))
    for _ in range(warm):
        next(it)
    with common.stopwatch(None) as watch:
        for _ in range(batches):
            next(it)
    return batches * batch_size / watch.seconds


def bench_loader(data: Path, preset: str, workers: list[int], decoders: list[str], batch_size: int,
                 batches: int) -> None:
    paths = {"data.train_ann": str(data / "train.json"), "data.train_images": str(data / "train"),
             "data.val_ann": str(data / "val.json"), "data.val_images": str(data / "val")}
    base = load_config(preset, paths)
    d = base.data
    print(f"\n## Loader, {preset}: min_size {list(d.min_size)}, max_size {d.max_size}, hflip {d.hflip}, "
          f"resize {d.resize}, batch {batch_size}, {batches} timed batches")
    print(f"  {'decoder':12s} {'workers':>7s} {'images/s':>9s} {'per core':>9s} {'10 cores':>9s}")
    for decoder in decoders:
        for w in workers:
            cfg = load_config(preset, dict(paths, **{"data.num_workers": w}))
            train, _ = build_datasets(cfg)
            if decoder == "pil":
                train = PilCocoDetection(train.ann_file, train.image_dir, train.transforms, data=train.data)
            rate = loader_rate(cfg, train, batch_size, batches)
            per_core = rate / max(w, 1)
            print(f"  {decoder:12s} {w:7d} {rate:9.1f} {per_core:9.1f} {10 * per_core:9.0f}")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="a make-cocolike folder (default: generate into a temp folder)")
    parser.add_argument("--images", type=int, default=512, help="training images to generate (default 512)")
    parser.add_argument("--batches", type=int, default=20, help="timed batches per row (default 20)")
    parser.add_argument("--batch-size", type=int, default=2, help="images per batch (default 2: 16 / 8 GPUs)")
    parser.add_argument("--preset", nargs="+", default=["imprv_coco_1x", "seed_coco_2x"])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--decoders", nargs="+", default=["torchvision"], choices=["torchvision", "pil"],
                        help="loader rows with read_pixels (torchvision) and/or PIL decoding")
    parser.add_argument("--decode-files", type=int, default=200, help="files in the decoding test (default 200)")
    parser.add_argument("--repeat", type=int, default=3, help="passes of the decoding test (default 3)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    common.print_header(__file__, argv)
    print(f"# Pillow {PIL.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or Path(tmp)
        if args.data is None:
            _, seconds = common.once(lambda: make_cocolike(data, train=args.images, val=2, seed=0), None)
            print(f"# Data: make_cocolike({args.images} train images, seed 0) in "
                  f"{seconds / args.images * 1e3:.1f} ms per image")
        files = sorted((data / "train").glob("*.jpg"))
        sizes = [len(p.read_bytes()) for p in files]  # into the page cache
        print(f"# {len(files)} training JPEGs in {data}, {sum(sizes) / len(sizes) / 1e3:.0f} KB on average")
        bench_decoding(files[: args.decode_files], args.repeat)
        for preset in args.preset:
            bench_loader(data, preset, args.workers, args.decoders, args.batch_size, args.batches)


if __name__ == "__main__":
    main(sys.argv[1:])
