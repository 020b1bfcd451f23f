"""Full-scale rehearsal: a synthetic copy of llava-instruct-zh-600k's shape, prepared by llava_zh.

Run by hand (not part of the tests):

    python benchmarks/bench_full_scale.py [--scale 1.0] [--num-proc 1c,1,2] [--format jsonl|json] [--workdir DIR]

Makes 641,868 samples (times ``--scale``) with the card's task counts and realistic Chinese lengths (up
to five rounds of 10-30 character questions and 60-220 character answers for conversations, one round
with 200-500 / 300-600 character answers for complex reasoning / detailed description), each with its
own small JPEG (a few hundred distinct JPEGs, each copy made unique by a comment segment), written
straight into 4 zip shards, with one annotation file per shard. Then ``llava_zh.load_dataset`` prepares
it in a fresh cache and the script prints wall time, samples/s, peak memory (the process and its
workers together, sampled from /proc), the Arrow size, and iteration speed over the prepared data as an
``IterableDataset`` with images decoded and not decoded, plus streaming straight from the source.
Aims: the whole preparation under 10 minutes and under 2 GB of memory.

``--num-proc 1c,1,2`` compares processes: ``1c`` is one process held to one core. One process already
keeps more than one core busy (it reads, checks and writes on separate threads), so on a 2-core machine
``num_proc=2`` over ``num_proc=1`` measures what the second process adds beyond those threads, and over
``1c`` how the work scales from one core to two.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import os
import random
import shutil
import struct
import sys
import tempfile
import threading
import time
import zipfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TASK_COUNTS = {"conversation": 247_431, "complex_reasoning": 194_646, "detail_description": 199_791}
SHARDS = 4
CHARS = (
    "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后多定行学法所民得经"
    "十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本去把性好应开它合还因由其些然前外天政四日那社义事平形相全"
    "表间样与关各重新线内数正心反你明看原又么利比或但质气第向道命此变条只没结解问意建月公无系军很情者最立代想已通并提直题党程展五果料象员"
    "革位入常文总次品式活设及管特件长求老头基资边流路级少图山统接知较将组见计别她手角期根论运农指几九区强放决西被干做必战先回则任取据处理府研"
)
PUNCT = "，。、；：？！"
DESCRIBE = ["请详细描述这张图片。", "详细描述这张照片的场景。", "描述一下图中的内容。"]


# --- synthetic data -------------------------------------------------------------------------------

class TextPool:
    """Random Chinese text cut from one long pre-made string (fast: no per-character sampling)."""

    def __init__(self, rng: random.Random, size: int = 1 << 21) -> None:
        chars = rng.choices(CHARS, k=size)
        for i in range(0, size, rng.randint(8, 20)):
            chars[i] = rng.choice(PUNCT)
        self.text = "".join(chars)
        self.rng = rng

    def take(self, low: int, high: int) -> str:
        n = self.rng.randint(low, high)
        start = self.rng.randrange(0, len(self.text) - n)
        return self.text[start:start + n]


def synthetic_record(i: int, task: str, pool: TextPool, image: str) -> dict:
    rng = pool.rng
    turns = []
    if task == "conversation":
        for r in range(rng.choice([5, 5, 5, 4, 3, 2])):
            turns.append({"from": "human", "value": pool.take(10, 30) + "？"})
            turns.append({"from": "gpt", "value": pool.take(60, 220) + "。"})
    elif task == "complex_reasoning":
        turns.append({"from": "human", "value": pool.take(20, 60) + "？"})
        turns.append({"from": "gpt", "value": pool.take(200, 500) + "。"})
    else:
        turns.append({"from": "human", "value": rng.choice(DESCRIBE)})
        turns.append({"from": "gpt", "value": pool.take(300, 600) + "。"})
    turns[0]["value"] = "<image>\n" + turns[0]["value"]
    return {"id": f"{task}_{i:07d}", "image": image, "task": task, "conversations": turns}


def base_jpegs(n: int, rng: random.Random) -> list[bytes]:
    """``n`` distinct small JPEGs (smooth colour noise, 96x72, about 2-3 KB each)."""
    from PIL import Image

    out = []
    for _ in range(n):
        noise = bytes(rng.randrange(256) for _ in range(12 * 9 * 3))
        im = Image.frombytes("RGB", (12, 9), noise).resize((96, 72), Image.BICUBIC)
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=80)
        out.append(buf.getvalue())
    return out


def unique_jpeg(base: bytes, tag: str) -> bytes:
    """``base`` with a COM segment holding ``tag`` right after SOI: a valid JPEG of its own bytes."""
    comment = tag.encode()
    return base[:2] + b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment + base[2:]


def make_dataset(root: str, scale: float, fmt: str, seed: int = 0) -> dict:
    """Write the synthetic copy under ``root``; returns counts and sizes."""
    rng = random.Random(seed)
    pool = TextPool(rng)
    jpegs = base_jpegs(256, rng)
    counts = {task: max(1, round(n * scale)) for task, n in TASK_COUNTS.items()}
    tasks = [t for t, n in counts.items() for _ in range(n)]
    rng.shuffle(tasks)
    total = len(tasks)
    per_shard = -(-total // SHARDS)
    os.makedirs(root, exist_ok=True)
    t0 = time.perf_counter()
    for shard in range(SHARDS):
        lo, hi = shard * per_shard, min((shard + 1) * per_shard, total)
        records = []
        with zipfile.ZipFile(os.path.join(root, f"images-{shard:04d}.zip"), "w", compression=zipfile.ZIP_STORED) as z:
            for i in range(lo, hi):
                name = f"{i:07d}.jpg"
                z.writestr(zipfile.ZipInfo(f"images/{name}", date_time=(2025, 1, 1, 0, 0, 0)), unique_jpeg(jpegs[i % len(jpegs)], name))
                records.append(synthetic_record(i, tasks[i], pool, name))
        ann = os.path.join(root, f"shard-{shard:04d}.{fmt}")
        with open(ann, "w", encoding="utf-8") as f:
            if fmt == "jsonl":
                for rec in records:
                    f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            else:
                json.dump(records, f, ensure_ascii=False, indent=2)
        print(f"  shard {shard}: {hi - lo:,} samples ({time.perf_counter() - t0:.0f} s)", flush=True)
    sizes = {name: os.path.getsize(os.path.join(root, name)) for name in sorted(os.listdir(root))}
    return {"samples": total, "counts": counts, "bytes": sizes}


# --- measuring ------------------------------------------------------------------------------------

def cpu_seconds() -> float:
    """CPU time of this process and of its finished child processes (user + system)."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class PeakMemory:
    """Peak of the memory of this process and all its descendants together, sampled from /proc.

    Counts PSS (``/proc/PID/smaps_rollup``): a page shared by several processes (a forked worker shares
    the parent's modules) counts once in all, so the sum is the memory the tree really holds. Falls
    back to RSS (which counts shared pages once per process: an overestimate) where PSS is missing.
    """

    def __init__(self, interval: float = 0.1) -> None:
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE")

    def _tree(self, pid: int) -> list[int]:
        pids, todo = [], [pid]
        while todo:
            p = todo.pop()
            pids.append(p)
            try:
                for task in os.listdir(f"/proc/{p}/task"):
                    with open(f"/proc/{p}/task/{task}/children") as f:
                        todo.extend(int(c) for c in f.read().split())
            except OSError:
                pass
        return pids

    def _memory(self, pid: int) -> int:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        try:
            with open(f"/proc/{pid}/statm") as f:
                return int(f.read().split()[1]) * self._page
        except OSError:
            return 0

    def _total(self) -> int:
        return sum(self._memory(p) for p in self._tree(os.getpid()))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._total())
            self._stop.wait(self.interval)

    def __enter__(self) -> "PeakMemory":
        self.peak = self._total()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._total())


def iterate(dataset, limit: int) -> tuple[int, float]:
    t0 = time.perf_counter()
    n = 0
    for _ in dataset.take(limit):
        n += 1
    return n, time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", type=float, default=1.0, help="fraction of the 641,868 samples to make (default 1)")
    p.add_argument("--num-proc", default="2", help="processes; a list such as 1,2 prepares once with each and compares; "
                   "'1c' is one process held to one CPU core (os.sched_setaffinity), the work of one core")
    p.add_argument("--format", choices=["jsonl", "json"], default="jsonl", help="annotation files: JSON Lines or JSON arrays")
    p.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "llava-zh-full-scale"))
    p.add_argument("--iterate", type=int, default=20_000, help="samples read in each iteration test")
    p.add_argument("--keep", action="store_true", help="keep the prepared cache")
    args = p.parse_args()

    import datasets

    import llava_zh

    datasets.disable_progress_bars()
    data_dir = os.path.join(args.workdir, f"data-{args.scale:g}-{args.format}")
    if not os.path.exists(os.path.join(data_dir, "done")):
        shutil.rmtree(data_dir, ignore_errors=True)
        print(f"writing the synthetic dataset (scale {args.scale:g}) into {data_dir} ...", flush=True)
        t0 = time.perf_counter()
        info = make_dataset(data_dir, args.scale, args.format)
        with open(os.path.join(data_dir, "done"), "w") as f:
            json.dump(info, f)
        print(f"  written in {time.perf_counter() - t0:.0f} s", flush=True)
    with open(os.path.join(data_dir, "done")) as f:
        info = json.load(f)
    size_in = sum(info["bytes"].values())
    print(f"input: {info['samples']:,} samples {info['counts']}, {size_in / 1e9:.2f} GB "
          f"({sum(v for k, v in info['bytes'].items() if k.endswith('.zip')) / 1e9:.2f} GB of zips)\n", flush=True)

    cache = os.path.join(args.workdir, "cache")
    walls = {}
    ds = None
    for label in args.num_proc.split(","):
        num_proc, one_core = int(label.rstrip("c")), label.endswith("c")
        del ds  # the previous run's memory-mapped dataset must not count in this run's memory
        gc.collect()
        shutil.rmtree(cache, ignore_errors=True)
        cores = os.sched_getaffinity(0)
        if one_core:  # the threads the preparation starts inherit this
            os.sched_setaffinity(0, {min(cores)})
        try:
            with PeakMemory() as mem:
                cpu0 = cpu_seconds()
                t0 = time.perf_counter()
                ds = llava_zh.load_dataset(data_dir, cache_dir=cache, num_proc=num_proc if num_proc > 1 else None)
                wall = walls[label] = time.perf_counter() - t0
                cpu = cpu_seconds() - cpu0
        finally:
            os.sched_setaffinity(0, cores)
        arrow = sum(os.path.getsize(f["filename"]) for f in ds.cache_files)
        print(f"prepare (num_proc={num_proc}{' on one core' if one_core else ''}, {args.format}): {len(ds):,} samples in {wall:.1f} s = "
              f"{len(ds) / wall:,.0f} samples/s; peak memory {mem.peak / 2**30:.2f} GiB; Arrow {arrow / 1e9:.2f} GB")
        how = ("held to one core" if one_core else "one process reads, checks and writes on separate threads"
               if num_proc == 1 else "each worker process works in one thread")
        print(f"  CPU {cpu:.1f} s: {cpu / wall:.2f} of this machine's {os.cpu_count()} cores busy on average ({how})")
        if args.scale < 1:
            print(f"  extrapolated to the full 641,868 samples (linear, x{1 / args.scale:.1f}): about {wall / args.scale / 60:.1f} min")
        print(f"  aims: under 10 min ({'met' if wall / min(args.scale, 1) < 600 else 'NOT met'}), "
              f"under 2 GiB ({'met' if mem.peak < 2 * 2**30 else 'NOT met'})", flush=True)
    for base, name in (("1", "num_proc=1"), ("1c", "num_proc=1 on one core")):
        for n, w in walls.items():
            if base in walls and n not in ("1", "1c"):
                print(f"speed-up num_proc={n} over {name}: {walls[base] / w:.2f}x (aim for 2: >= 1.5x)")
    print()

    limit = min(args.iterate, len(ds))
    if not limit:
        return
    plain = ds.cast_column("image", datasets.Image(decode=False)).to_iterable_dataset(num_shards=4)
    n, s = iterate(plain, len(ds))
    print(f"iterate the prepared data as an IterableDataset, images not decoded: {n / s:,.0f} samples/s ({n:,} samples)")
    decoded = ds.to_iterable_dataset(num_shards=4)
    n, s = iterate(decoded, limit)
    print(f"iterate the prepared data as an IterableDataset, images decoded (PIL): {n / s:,.0f} samples/s ({n:,} samples)")
    stream = llava_zh.load_dataset(data_dir, streaming=True, cache_dir=os.path.join(args.workdir, "stream-cache"))
    n, s = iterate(stream.cast_column("image", datasets.Image(decode=False)), limit)
    print(f"stream straight from the source (validated on the fly), images not decoded: {n / s:,.0f} samples/s ({n:,} samples)")
    if not args.keep:
        shutil.rmtree(cache, ignore_errors=True)
        shutil.rmtree(os.path.join(args.workdir, "stream-cache"), ignore_errors=True)


if __name__ == "__main__":
    main()
