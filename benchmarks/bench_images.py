"""Images per CPU-second of the download + process path: img2dataset vs ours vs the Pillow floor.

    python benchmarks/bench_images.py --images 400 --work /tmp/bench-images

One run, one corpus: realistic JPEGs (half iNat-size, long side <= 500 px; half EOL-size, 1500-4000 px) served
from loopback by `tol serve-kit` in its own process, so the server's CPU is never counted.
- (a) img2dataset, installed by this script in its own venv, `--resize_mode center_crop`, webdataset output;
- (b) ours: the polite fetcher (rate limit lifted) and `images.process` (center-crop 224, JPEG q95), as the
  download and build stages call them, on a thread pool (the md5 the fetcher computed is reused, as the build
  reuses the one stored in the download parts);
- (c) the floor: Pillow decode with draft + resize + encode of the same bytes, no I/O.
"Per core" = images / (user + sys CPU seconds) of the measured process tree. Appends a dated section to
benchmarks/RESULTS.md with the command.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import io
import os
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.fetch import Fetcher, FetchPolicy, open_session
from pipeline.images import ResizeSpec, process
from pipeline.samplekit.drawing import draw_specimen

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "RESULTS.md"
SPEC = ResizeSpec(size=224, mode="center-crop", jpeg_quality=95)
RANKS = ("Animalia", "Chordata", "Aves", "Passeriformes", "Corvidae", "Pica", "hudsonia")


@dataclass(frozen=True)
class Measure:
    name: str
    images: int
    wall_s: float
    cpu_s: float

    @property
    def per_cpu_second(self) -> float:
        return self.images / self.cpu_s


def photo_like(size: tuple[int, int], rng: np.random.Generator) -> bytes:
    """A drawn specimen with full-resolution sensor-like noise, so it decodes like a photo, not a flat drawing."""
    image = draw_specimen(RANKS, size, rng)
    pixels = np.asarray(image, dtype=np.int16) + rng.normal(0, 7, (size[1], size[0], 1)).astype(np.int16)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def make_corpus(root: Path, count: int) -> list[str]:
    """Write the corpus under root/images; return the URL paths."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        if i % 2 == 0:
            long_side = int(rng.integers(333, 501))
        else:
            long_side = int(rng.integers(1500, 4001))
        short = int(long_side * rng.choice([0.66, 0.75, 1.0]))
        size = (long_side, short) if rng.random() < 0.6 else (short, long_side)
        path = f"img/{i:05d}.jpg"
        (root / "images" / path).parent.mkdir(parents=True, exist_ok=True)
        (root / "images" / path).write_bytes(photo_like(size, rng))
        paths.append(path)
    return paths


def cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cpu_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def start_server(root: Path, port: int) -> subprocess.Popen:
    server = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "serve-kit", str(root / "images"), "--port", str(port)],
                              stderr=subprocess.PIPE, text=True)
    for line in server.stderr:
        if "serving" in line:
            return server
    raise RuntimeError("tol serve-kit did not start")


def img2dataset_venv(work: Path) -> Path:
    venv = work / "img2dataset-venv"
    if not (venv / "bin" / "img2dataset").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "img2dataset"], check=True)
    return venv


def run_img2dataset(venv: Path, urls: Path, out: Path, count: int, threads: int) -> Measure:
    shutil.rmtree(out, ignore_errors=True)
    command = [str(venv / "bin" / "img2dataset"), "--url_list", str(urls), "--input_format", "txt",
               "--output_format", "webdataset", "--output_folder", str(out), "--image_size", "224",
               "--resize_mode", "center_crop", "--encode_quality", "95", "--processes_count", "1",
               "--thread_count", str(threads), "--timeout", "30", "--retries", "0", "--enable_wandb", "False",
               "--disallowed_header_directives", "[]", "--distributor", "multiprocessing"]
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "NO_PROXY": "127.0.0.1"}
    before, start = cpu_children(), time.perf_counter()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    written = sum(1 for _ in out.glob("*.tar"))
    if not written:
        raise RuntimeError("img2dataset wrote no shard")
    return Measure("img2dataset (download + center_crop 224, webdataset)", count, wall, cpu_children() - before)


def run_ours(base_url: str, paths: list[str], threads: int) -> Measure:
    policy = FetchPolicy(rate=10_000.0, burst=float(threads), per_host_concurrency=threads)  # politeness off: loopback
    session = open_session(policy, pool_size=threads)
    fetcher = Fetcher(session, policy)

    def one(path: str) -> int:
        result = fetcher.fetch([f"{base_url}/{path}"])
        return len(process(result.data, SPEC, result.md5).jpeg) if result.status == "ok" else 0

    before, start = cpu_self(), time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        done = sum(1 for size in pool.map(one, paths) if size)
    wall = time.perf_counter() - start
    session.close()
    return Measure("ours (fetch + images.process center-crop 224)", done, wall, cpu_self() - before)


def run_floor(root: Path, paths: list[str]) -> Measure:
    blobs = [(root / "images" / p).read_bytes() for p in paths]
    before, start = cpu_self(), time.perf_counter()
    for data in blobs:
        image = Image.open(io.BytesIO(data))
        scale = max(224 / image.width, 224 / image.height)
        image.draft("RGB", (int(image.width * scale) + 1, int(image.height * scale) + 1))
        image = image.convert("RGB")
        side = min(image.size)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        image = image.resize((224, 224), Image.BICUBIC, box=(left, top, left + side, top + side))
        image.save(io.BytesIO(), "JPEG", quality=95)
    wall = time.perf_counter() - start
    return Measure("Pillow floor (decode with draft + resize + encode, no I/O)", len(blobs), wall, cpu_self() - before)


def report(measures: list[Measure], args: argparse.Namespace) -> str:
    i2d, ours, floor = measures
    lines = [f"\n## Image download + processing ({datetime.date.today()})\n",
             f"Command: `python benchmarks/bench_images.py --images {args.images} --threads {args.threads}` "
             f"({os.cpu_count()} cores; corpus: {args.images} JPEGs, half <= 500 px, half 1500-4000 px, served from "
             "loopback by `tol serve-kit` in its own process).\n",
             "| path | images | wall s | CPU s | images / CPU-second |", "|---|---|---|---|---|"]
    lines += [f"| {m.name} | {m.images} | {m.wall_s:.1f} | {m.cpu_s:.1f} | {m.per_cpu_second:.1f} |" for m in measures]
    lines += ["", f"Ours vs img2dataset per core: **{ours.per_cpu_second / i2d.per_cpu_second:.2f}x** (target >= 2x); "
                  f"ours vs the floor: **{ours.per_cpu_second / floor.per_cpu_second:.0%}** (target >= 70%).", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=400, help="corpus size (default 400)")
    parser.add_argument("--threads", type=int, default=16, help="download threads for both tools (default 16)")
    parser.add_argument("--port", type=int, default=8799, help="loopback port for the corpus server (default 8799)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/treeoflife-bench-images"))
    parser.add_argument("--no-write", action="store_true", help="print the results without appending RESULTS.md")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(args.work / "images", ignore_errors=True)
    paths = make_corpus(args.work, args.images)
    base_url = f"http://127.0.0.1:{args.port}"
    (args.work / "urls.txt").write_text("".join(f"{base_url}/{p}\n" for p in paths))
    venv = img2dataset_venv(args.work)
    server = start_server(args.work, args.port)
    try:
        measures = [run_img2dataset(venv, args.work / "urls.txt", args.work / "i2d-out", len(paths), args.threads),
                    run_ours(base_url, paths, args.threads), run_floor(args.work, paths)]
    finally:
        server.terminate()
        server.wait()
    text = report(measures, args)
    print(text)
    if not args.no_write:
        with open(RESULTS, "a", encoding="utf-8") as f:
            f.write(text)


if __name__ == "__main__":
    main()
