"""Loading speed and memory of llava_zh.load_dataset against datasets' own json builder, in one run.

Run by hand (not part of the tests):

    python benchmarks/bench_load.py [--samples 100000] [--images 3000] [--repeat 2] [--workdir DIR]

Every figure is measured in a fresh subprocess with a fresh cache (peak memory = that process's peak RSS,
VmHWM, imports included), ``--repeat`` times, alternating the two sides of each comparison; every run is printed
and the ratio uses the medians. The machine these were written on has 2 cores shared with other jobs, so
single runs are noisy: read all of them.

  1. a JSON array of ``--samples`` records: llava_zh (streamed, validated) vs datasets.load_dataset("json")
     (aim: >= 2x faster, <= half the peak memory);
  2. the same records as JSON Lines (aim: ratio >= 1.0);
  3. ``--images`` JPEGs of about 46 KB in a zip and in a tar: image bytes into Arrow vs a plain sequential
     read of the archive file (aim: >= 0.5x). Printed: the builder's image work alone (names looked up in
     the archive index, bytes read in the builder's pieces of about 8 MB, headers checked, Arrow ``image``
     columns made; once with the index built inside the timing, once with the index an earlier load kept
     beside the cache, as a second config of the same data finds it), the
     builder's tables (the same, plus the annotations read and validated), the whole
     llava_zh.load_dataset (the same, plus datasets' ArrowWriter writing the cache file), a plain copy of
     the archive into a new file (what writing those bytes anywhere costs this machine's page cache), and
     the same read and load with the archive evicted from the page cache first (posix_fadvise DONTNEED:
     the disk's own speed). Each run gets a fresh cache, so the archive index is built inside the timing
     (but for the "index kept" line);
  4. streaming a quarter of the JSON Lines vs all of it: peak memory stays flat.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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


def write_array(jsonl: str, path: str) -> None:
    """The records of ``jsonl`` as one indented JSON array, as LLaVA-Instruct-150K ships them."""
    with open(jsonl, encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    with open(path, "w", encoding="utf-8") as f:
        json.dump(records, f, ensure_ascii=False, indent=2)


def jpegs(n: int):
    from PIL import Image

    rng = random.Random(1)
    for i in range(n):
        # smooth colour noise: JPEGs of about 46 KB, the size of the real dataset's images
        noise = bytes(rng.randrange(256) for _ in range(32 * 24 * 3))
        im = Image.frombytes("RGB", (32, 24), noise).resize((640, 480), Image.BICUBIC)
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=85)
        yield f"images/{i:07d}.jpg", buf.getvalue()


def write_archives(zip_path: str, tar_path: str, n: int) -> None:
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_STORED) as z, tarfile.open(tar_path, "w") as t:
        for name, data in jpegs(n):
            z.writestr(name, data)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))


# --- workers: each runs in its own process so max RSS is its own --------------------------------

def evict(path: str) -> None:
    """Drop a file (every file of a folder) from the page cache, so the next read comes from the disk."""
    for p in [os.path.join(path, f) for f in os.listdir(path)] if os.path.isdir(path) else [path]:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def worker(kind: str, path: str, cache: str) -> dict:
    import datasets

    import llava_zh
    import llava_zh.builder  # noqa: F401  (imports are not what is measured)
    import llava_zh.prepare  # noqa: F401

    datasets.disable_progress_bars()
    if kind.endswith("_cold"):
        kind = kind[: -len("_cold")]
        evict(path)
    t0 = time.perf_counter()
    extra: dict = {}
    if kind == "datasets_json":
        rows = len(datasets.load_dataset("json", data_files=path, split="train", cache_dir=cache))
    elif kind == "llava_zh":
        rows = len(llava_zh.load_dataset(path, cache_dir=cache))
    elif kind == "tables":  # the builder's record batches, made and dropped: no cache file written
        from llava_zh.prepare import PrepareOptions, generate_tables

        archives = [os.path.join(path, f) for f in sorted(os.listdir(path)) if f.endswith((".zip", ".tar"))]
        rows = 0
        for _, table in generate_tables([(0, os.path.join(path, "train.jsonl"))], "train", PrepareOptions(),
                                        archives, os.path.join(cache, "index"), os.path.join(cache, "reports")):
            rows += table.num_rows
    elif kind in ("image_path", "image_path_kept"):  # the builder's image work alone: names -> index -> read -> checked -> Arrow
        import numpy as np
        import pyarrow as pa

        from llava_zh.checks import check_image_bytes, images_known_good
        from llava_zh.images import ImageBatch, ImageStore
        from llava_zh.prepare import read_pieces

        archives = [os.path.join(path, f) for f in sorted(os.listdir(path)) if f.endswith((".zip", ".tar"))]
        with open(os.path.join(path, "train.jsonl"), "rb") as f:
            names = [json.loads(line)["image"] for line in f]
        if kind == "image_path_kept":  # the index kept beside the cache by an earlier load (another config)
            with ImageStore(archives, index_dir=os.path.join(cache, "index")) as store:
                store.locate_many(names[:1])
        rows, t0 = 0, time.perf_counter()  # the names are this part's input: reading them is not timed
        with ImageStore(archives, index_dir=os.path.join(cache, "index")) as store:
            for start in range(0, len(names), 1000):  # the builder's batch of rows, read in its pieces
                located = store.locate_many(names[start:start + 1000])
                bounds = read_pieces(located.sizes)
                for p0, p1 in zip(bounds, bounds[1:]):
                    part = names[start + p0:start + p1]
                    batch = ImageBatch.read(located.slice(p0, p1), store.pool)
                    good = images_known_good(batch.data, batch.offsets, batch.found)
                    bad = [] if good.all() else [i for i in np.flatnonzero(~good).tolist() if check_image_bytes(batch.get(i), part[i])]
                    column = pa.StructArray.from_arrays([batch.array(range(len(part))), pa.array(part)], ["bytes", "path"])
                    rows += len(column) - len(bad)
    elif kind == "copy":  # the archive copied into a new file in the cache folder (copy_file_range)
        rows = os.path.getsize(path)
        shutil.copyfile(path, os.path.join(cache, "copy.bin"))
    elif kind == "plain_read":  # the archive file read start to end, 8 MB at a time
        rows = 0
        with open(path, "rb") as f:
            while True:
                block = f.read(8 << 20)
                if not block:
                    break
                rows += len(block)
    elif kind.startswith("stream"):
        limit = int(kind.split(":")[1])
        rows = sum(1 for _ in llava_zh.load_dataset(path, streaming=True, cache_dir=cache).take(limit))
    else:
        raise ValueError(kind)
    elapsed = time.perf_counter() - t0
    return {"rows": rows, "seconds": elapsed, "max_rss_mb": peak_rss_mb(), **extra}


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ``ru_maxrss``, not inherited from the parent
    that forked it, which would put a floor under every worker's figure)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_worker(kind: str, path: str, workdir: str) -> dict:
    cache = tempfile.mkdtemp(dir=workdir, prefix="cache-")
    env = dict(os.environ, HF_DATASETS_CACHE=cache, HF_HUB_OFFLINE="1", HF_DATASETS_DISABLE_PROGRESS_BARS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    out = subprocess.run([sys.executable, __file__, "--worker", kind, path, cache], capture_output=True, text=True, env=env)
    shutil.rmtree(cache, ignore_errors=True)
    if out.returncode:
        raise RuntimeError(f"worker {kind} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def compare(kinds: list[tuple[str, str]], workdir: str, repeat: int) -> dict[str, list[dict]]:
    """Run each (kind, path) ``repeat`` times, interleaved, printing every run."""
    runs: dict[str, list[dict]] = {k: [] for k, _ in kinds}
    for r in range(repeat):
        for kind, path in kinds:
            res = run_worker(kind, path, workdir)
            runs[kind].append(res)
            print(f"    run {r + 1} {kind:<14} {res['seconds']:7.3f} s  peak {res['max_rss_mb']:6.0f} MB", flush=True)
    return runs


def med(runs: list[dict], key: str = "seconds") -> float:
    return statistics.median(r[key] for r in runs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=100_000)
    p.add_argument("--images", type=int, default=3_000)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "llava-zh-bench"))
    p.add_argument("--only", default="array,jsonl,images,stream", help="which parts to run")
    p.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker)))
        return

    parts = set(args.only.split(","))
    os.makedirs(args.workdir, exist_ok=True)
    ann_dir = os.path.join(args.workdir, f"jsonl-{args.samples}")
    arr_dir = os.path.join(args.workdir, f"array-{args.samples}")
    img_dir = os.path.join(args.workdir, f"images-{args.images}")
    for d in (ann_dir, arr_dir, img_dir):
        os.makedirs(d, exist_ok=True)
    jsonl = os.path.join(ann_dir, "train.jsonl")
    array = os.path.join(arr_dir, "train.json")
    if not os.path.exists(jsonl):
        print(f"writing {args.samples} synthetic records ...", flush=True)
        write_jsonl(jsonl, args.samples)
    if not os.path.exists(array):
        write_array(jsonl, array)
    zip_dir, tar_dir = os.path.join(img_dir, "zip"), os.path.join(img_dir, "tar")
    zip_path, tar_path = os.path.join(zip_dir, "images.zip"), os.path.join(tar_dir, "images.tar")
    if "images" in parts and not os.path.exists(tar_path):
        print(f"writing {args.images} JPEGs into a zip and a tar ...", flush=True)
        for d in (zip_dir, tar_dir):
            os.makedirs(d, exist_ok=True)
            write_jsonl(os.path.join(d, "train.jsonl"), args.images, with_image=True)
        write_archives(zip_path, tar_path, args.images)
    print(f"JSON Lines {os.path.getsize(jsonl) / 1e6:.0f} MB, JSON array {os.path.getsize(array) / 1e6:.0f} MB, "
          f"{args.samples:,} records; repeat {args.repeat}\n", flush=True)

    for part, path, aim in (("array", array, "aim: >= 2x faster, <= 0.5x memory"), ("jsonl", jsonl, "aim: >= 1.0")):
        if part not in parts:
            continue
        print(f"{part}: llava_zh.load_dataset (validated) vs datasets.load_dataset('json')", flush=True)
        runs = compare([("datasets_json", path), ("llava_zh", path)], args.workdir, args.repeat)
        base, ours = runs["datasets_json"], runs["llava_zh"]
        print(f"  medians: datasets {args.samples / med(base):,.0f} samples/s, peak {med(base, 'max_rss_mb'):.0f} MB; "
              f"llava_zh {args.samples / med(ours):,.0f} samples/s, peak {med(ours, 'max_rss_mb'):.0f} MB")
        print(f"  speed llava_zh / datasets: {med(base) / med(ours):.2f}x; memory: {med(ours, 'max_rss_mb') / med(base, 'max_rss_mb'):.2f}x  ({aim})\n", flush=True)

    if "images" in parts:
        for name, folder, archive in (("zip", zip_dir, zip_path), ("tar", tar_dir, tar_path)):
            mb = os.path.getsize(archive) / 1e6
            print(f"images ({name}, {args.images} JPEGs, {mb:.0f} MB): into Arrow vs a plain sequential read", flush=True)
            kinds = [("plain_read", archive), ("image_path", folder), ("image_path_kept", folder), ("tables", folder),
                     ("llava_zh", folder), ("copy", archive),
                     ("plain_read_cold", archive), ("image_path_cold", folder), ("llava_zh_cold", folder)]
            runs = compare(kinds, args.workdir, args.repeat)
            rate = {kind: mb / med(runs[kind]) for kind, _ in kinds}
            plain, cold = rate["plain_read"], rate["plain_read_cold"]
            for kind, label, base, base_name in (
                ("plain_read", "plain sequential read (page cache)", plain, "plain read"),
                ("image_path", "image bytes into Arrow (checked)", plain, "plain read"),
                ("image_path_kept", "  the same, archive index kept from a load before", plain, "plain read"),
                ("tables", "llava_zh tables (annotations too)", plain, "plain read"),
                ("llava_zh", "llava_zh.load_dataset, cache file written", plain, "plain read"),
                ("copy", "plain copy of the archive (cp)", plain, "plain read"),
                ("llava_zh", "llava_zh.load_dataset, cache file written", rate["copy"], "plain copy"),
                ("plain_read_cold", "plain sequential read, from disk", cold, "read from disk"),
                ("image_path_cold", "image bytes into Arrow, from disk", cold, "read from disk"),
                ("llava_zh_cold", "llava_zh.load_dataset, from disk", cold, "read from disk"),
            ):
                print(f"  {label:<44} {rate[kind]:8,.0f} MB/s  ({rate[kind] / base:.2f}x the {base_name})")
            print("  (aim: image bytes into Arrow >= 0.5x the plain read)\n", flush=True)

    if "stream" in parts:
        print("streaming JSON Lines: a quarter vs all (memory should stay flat)", flush=True)
        runs = compare([(f"stream:{args.samples // 4}", jsonl), (f"stream:{args.samples}", jsonl)], args.workdir, 1)
        quarter, whole = runs[f"stream:{args.samples // 4}"][0], runs[f"stream:{args.samples}"][0]
        print(f"  {args.samples // 4:>7} samples: peak {quarter['max_rss_mb']:.0f} MB ({args.samples // 4 / quarter['seconds']:,.0f} samples/s)")
        print(f"  {args.samples:>7} samples: peak {whole['max_rss_mb']:.0f} MB ({args.samples / whole['seconds']:,.0f} samples/s)")
        print(f"  memory growth whole/quarter: {whole['max_rss_mb'] / quarter['max_rss_mb']:.2f}  (flat: ~1.0)")


if __name__ == "__main__":
    main()
