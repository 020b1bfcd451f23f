"""Loading speed and memory of llava_zh.load_dataset against datasets' own json builder, in one run.

Run by hand (not part of the tests):

    python benchmarks/bench_load.py [--samples 200000] [--images 3000] [--workdir /tmp/llava-zh-bench]

Prints, each measured in a fresh subprocess with fresh caches:
  * samples/s of llava_zh.load_dataset on a synthetic JSONL (annotations + validation) and of
    datasets.load_dataset("json") on the same file, and their ratio (aim: >= 0.5);
  * MB/s of image bytes moved from a zip into Arrow by llava_zh, and of a plain sequential read of the
    same zip's members, and their ratio (aim: >= 0.5);
  * peak memory (max RSS) of each, and of streaming over the whole file vs a quarter of it (flat memory).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile

TASK_MIX = {"conversation": 247_431, "complex_reasoning": 194_646, "detail_description": 199_791}
CHARS = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本去把性好应开它合还因由其些然前外天政四日那社义事平形相全表间样与关各重新线内数正心反你明看原又么利比或但质气第向道命此变条只没结解问意建月公无系军很情者最立代想已通并提直题党程展五果料象员革位入常文总次品式活设及管特件长求老头基资边流路级少图山统接知较将组见计别她手角期根论运农指几九区强放决西被干做必战先回则任取据处理府研"


def synthetic_record(i: int, rng: random.Random, with_image: bool) -> dict:
    task = rng.choices(list(TASK_MIX), weights=list(TASK_MIX.values()))[0]
    rounds = rng.choice([5, 5, 5, 4, 3]) if task == "conversation" else 1
    answer_len = {"conversation": (60, 220), "complex_reasoning": (200, 500), "detail_description": (300, 600)}[task]
    turns = []
    for r in range(rounds):
        q = "".join(rng.choices(CHARS, k=rng.randint(10, 30))) + "?"
        if r == 0 and with_image:
            q = "<image>\n" + q
        turns.append({"from": "human", "value": q})
        turns.append({"from": "gpt", "value": "".join(rng.choices(CHARS, k=rng.randint(*answer_len))) + "。"})
    rec = {"id": f"{task}_{i:07d}", "task": task, "conversations": turns}
    if with_image:
        rec["image"] = f"{i:07d}.jpg"
    return rec


def write_jsonl(path: str, n: int, with_image: bool = False, seed: int = 0) -> None:
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            f.write(json.dumps(synthetic_record(i, rng, with_image), ensure_ascii=False) + "\n")


def write_zip(path: str, n: int) -> None:
    from PIL import Image

    rng = random.Random(1)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        for i in range(n):
            # smooth colour noise: JPEGs of about 50 KB, the size of the real dataset's images
            noise = bytes(rng.randrange(256) for _ in range(32 * 24 * 3))
            im = Image.frombytes("RGB", (32, 24), noise).resize((640, 480), Image.BICUBIC)
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=85)
            z.writestr(f"images/{i:07d}.jpg", buf.getvalue())


# --- workers: each runs in its own process so max RSS is its own --------------------------------

def worker(kind: str, path: str, cache: str) -> dict:
    import datasets  # noqa: F401  (imports are not what is measured)

    import llava_zh
    import llava_zh.builder  # noqa: F401

    t0 = time.perf_counter()
    rows = 0
    if kind == "datasets_json":
        import datasets

        ds = datasets.load_dataset("json", data_files=path, split="train", cache_dir=cache)
        rows = len(ds)
    elif kind == "llava_zh":
        import llava_zh

        ds = llava_zh.load_dataset(path, cache_dir=cache)
        rows = len(ds)
    elif kind == "llava_zh_images":
        import llava_zh

        ds = llava_zh.load_dataset(path, cache_dir=cache)
        rows = len(ds)
    elif kind == "raw_zip":
        total = 0
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                total += len(z.read(info))
        rows = total
    elif kind.startswith("stream"):
        import llava_zh

        limit = int(kind.split(":")[1])
        for row in llava_zh.load_dataset(path, streaming=True, cache_dir=cache).take(limit):
            rows += 1
    elapsed = time.perf_counter() - t0
    return {"rows": rows, "seconds": elapsed, "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_worker(kind: str, path: str, workdir: str) -> dict:
    cache = tempfile.mkdtemp(dir=workdir, prefix="cache-")
    env = dict(os.environ, HF_DATASETS_CACHE=cache, HF_HUB_OFFLINE="1", HF_DATASETS_DISABLE_PROGRESS_BARS="1")
    out = subprocess.run(
        [sys.executable, __file__, "--worker", kind, path, cache], capture_output=True, text=True, env=env, check=True
    )
    shutil.rmtree(cache, ignore_errors=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=200_000)
    p.add_argument("--images", type=int, default=3_000)
    p.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "llava-zh-bench"))
    p.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker)))
        return

    os.makedirs(args.workdir, exist_ok=True)
    ann_dir = os.path.join(args.workdir, "annotations")
    img_dir = os.path.join(args.workdir, "with_images")
    os.makedirs(ann_dir, exist_ok=True)
    os.makedirs(img_dir, exist_ok=True)
    jsonl = os.path.join(ann_dir, "train.jsonl")
    if not os.path.exists(jsonl):
        print(f"writing {args.samples} synthetic records ...", flush=True)
        write_jsonl(jsonl, args.samples)
    img_jsonl = os.path.join(img_dir, "train.jsonl")
    zip_path = os.path.join(img_dir, "images.zip")
    if not os.path.exists(zip_path):
        print(f"writing {args.images} JPEGs into a zip ...", flush=True)
        write_jsonl(img_jsonl, args.images, with_image=True)
        write_zip(zip_path, args.images)
    mb = os.path.getsize(jsonl) / 1e6
    print(f"annotations: {args.samples} records, {mb:.0f} MB; zip: {os.path.getsize(zip_path) / 1e6:.0f} MB\n")

    base = run_worker("datasets_json", jsonl, args.workdir)
    ours = run_worker("llava_zh", jsonl, args.workdir)
    r1 = (ours["rows"] / ours["seconds"]) / (base["rows"] / base["seconds"])
    print(f"{'datasets.load_dataset(json)':<36} {base['rows'] / base['seconds']:>10,.0f} samples/s  peak {base['max_rss_mb']:>6.0f} MB")
    print(f"{'llava_zh.load_dataset (+validation)':<36} {ours['rows'] / ours['seconds']:>10,.0f} samples/s  peak {ours['max_rss_mb']:>6.0f} MB")
    print(f"ratio llava_zh / datasets json: {r1:.2f}  (aim >= 0.5)\n")

    raw_zip = run_worker("raw_zip", zip_path, args.workdir)  # warms the page cache for both
    raw_zip = run_worker("raw_zip", zip_path, args.workdir)
    with_images = run_worker("llava_zh_images", img_dir, args.workdir)
    zip_mb = raw_zip["rows"] / 1e6
    raw_rate = zip_mb / raw_zip["seconds"]
    ours_rate = zip_mb / with_images["seconds"]
    print(f"{'plain sequential read of the zip':<36} {raw_rate:>10,.0f} MB/s")
    print(f"{'llava_zh zip -> Arrow (validated)':<36} {ours_rate:>10,.0f} MB/s  ({with_images['rows'] / with_images['seconds']:,.0f} samples/s, peak {with_images['max_rss_mb']:.0f} MB)")
    print(f"ratio llava_zh / raw read: {ours_rate / raw_rate:.2f}  (aim >= 0.5)\n")

    quarter = run_worker(f"stream:{args.samples // 4}", jsonl, args.workdir)
    whole = run_worker(f"stream:{args.samples}", jsonl, args.workdir)
    print(f"streaming {args.samples // 4:>7} samples: peak {quarter['max_rss_mb']:.0f} MB ({quarter['rows'] / quarter['seconds']:,.0f} samples/s)")
    print(f"streaming {args.samples:>7} samples: peak {whole['max_rss_mb']:.0f} MB ({whole['rows'] / whole['seconds']:,.0f} samples/s)")
    print(f"memory growth whole/quarter: {whole['max_rss_mb'] / quarter['max_rss_mb']:.2f}  (flat: ~1.0)")


if __name__ == "__main__":
    main()
