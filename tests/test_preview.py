"""The HTML preview: built from real data, then opened in headless Chromium (Debian's ``chromium``)."""

from __future__ import annotations

import html.parser
import re
import subprocess
from pathlib import Path
from urllib.parse import quote

import pytest

import llava_zh
from inspect_data import draw_image, make, row, turns, write_source
from llava_zh.schema import TASKS

CHROMIUM = "/usr/bin/chromium"
needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (.ci/install-chromium installs it)"
)
INJECTION = '<script>document.title="pwned"</script><img src=x onerror="document.title=1">'


def preview_rows(n: int = 12) -> list[dict]:
    """``n`` samples over the three tasks, every one with a real JPEG; samples 2, 5, 8 mention 斑马 (zebra)."""
    out = []
    for i in range(n):
        task = TASKS[i % 3]
        animal = "斑马" if i % 3 == 2 else "小猫"
        answer = f"图片里有一只{animal}，它站在绿色的草地上，远处是蓝色的天空和几朵白云。这是第{i}号样本。"
        conv = turns("<image>\n图里有什么动物?", answer, "它在做什么?", "它在安静地吃草。") if task == "conversation" else turns(
            "<image>\n请详细描述这张图片。", answer
        )
        out.append(row(f"s{i:02d}", task, conv, draw_image(160 + 8 * i, 120, seed=i)))
    return out


class _Tags(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: dict[str, int] = {}
        self.imgs: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags[tag] = self.tags.get(tag, 0) + 1
        if tag == "img":
            self.imgs.append(dict(attrs).get("src", ""))


def chromium(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    profile = tmp_path / f"chromium-profile-{len(list(tmp_path.glob('chromium-profile-*')))}"
    cmd = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", f"--user-data-dir={profile}", *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90)


def body_attributes(dom: str) -> dict[str, str]:
    m = re.search(r"<body([^>]*)>", dom)
    assert m, f"no <body> in the dumped DOM: {dom[:500]}"
    return dict(re.findall(r'([\w-]+)="([^"]*)"', m.group(1)))


def dump_dom(page: Path, tmp_path: Path, fragment: str = "") -> tuple[dict[str, str], str]:
    url = page.resolve().as_uri() + fragment
    proc = chromium(["--virtual-time-budget=10000", "--dump-dom", url], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return body_attributes(proc.stdout), proc.stdout


def test_page_is_self_contained_and_escaped(tmp_path):
    rows = preview_rows(6)
    rows[0]["conversations"][1]["value"] = "答案里有 " + INJECTION + ' & "引号"'
    rows.append(row("no-image", "complex_reasoning", turns("这是什么?", "没有图片。")))
    out = llava_zh.preview(make(rows), tmp_path / "p.html", n=10, seed=0)
    page = out.read_text(encoding="utf-8")
    tags = _Tags()
    tags.feed(page)
    assert tags.tags["script"] == 1 and tags.tags["article"] == 7
    assert len(tags.imgs) == 6 and all(src.startswith("data:image/jpeg;base64,") for src in tags.imgs)
    assert "&lt;script&gt;document.title=&quot;pwned&quot;&lt;/script&gt;" in page
    assert "&amp; &quot;引号&quot;" in page
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", page) and "<link" not in page and "@import" not in page
    assert "no image" in page
    for font in ("PingFang SC", "Noto Sans CJK SC", "WenQuanYi Zen Hei", "Microsoft YaHei"):
        assert font in page
    for task in ("conversation", "complex_reasoning", "detail_description"):
        assert '<span class="badge" style="background:' in page and f">{task}</span>" in page
    assert page.count('<div class="turn user">') == 2 * 2 + 2 * 1 + 2 * 1 + 1  # 2 conversations of 2 rounds
    assert '<span class="ph">&lt;image&gt;</span>' in page


def test_thumbnails_are_downscaled(tmp_path):
    import base64
    import io

    from PIL import Image

    big = row("big", "detail_description", turns("<image>\n描述", "很大的图。"), draw_image(1200, 900, 1))
    page = llava_zh.preview(make([big]), tmp_path / "p.html", thumb_size=200).read_text(encoding="utf-8")
    src = re.search(r'src="data:image/jpeg;base64,([^"]+)"', page).group(1)
    with Image.open(io.BytesIO(base64.b64decode(src))) as im:
        assert max(im.size) <= 200 and im.size == (200, 150)
    assert "1200×900 JPEG RGB" in page


def test_choice_is_seeded_filtered_and_same_for_streams(tmp_path):
    ds = make(preview_rows(12))

    def ids(path):
        return re.findall(r'<code class="sid">([^<]+)</code>', Path(path).read_text(encoding="utf-8"))

    a = ids(llava_zh.preview(ds, tmp_path / "a.html", n=5, seed=3))
    b = ids(llava_zh.preview(ds, tmp_path / "b.html", n=5, seed=3))
    c = ids(llava_zh.preview(ds, tmp_path / "c.html", n=5, seed=4))
    assert a == b and len(a) == 5 and len(set(a)) == 5 and a != c
    only = ids(llava_zh.preview(ds, tmp_path / "d.html", n=3, task="detail_description", seed=0))
    assert len(only) == 3 and all(int(i[1:]) % 3 == 2 for i in only)
    stream = ds.to_iterable_dataset(num_shards=3)
    s = ids(llava_zh.preview(stream, tmp_path / "e.html", n=4, task="complex_reasoning", seed=0))
    assert len(s) == 4 and all(int(i[1:]) % 3 == 1 for i in s) and s == sorted(s)
    everything = ids(llava_zh.preview(stream, tmp_path / "f.html", n=50, seed=0))
    assert everything == [f"s{i:02d}" for i in range(12)]
    with pytest.raises(ValueError, match="no sample to preview with task 'nope'"):
        llava_zh.preview(ds, tmp_path / "g.html", task="nope")


@needs_chromium
def test_opens_in_headless_chromium_with_images_loaded(tmp_path):
    rows = preview_rows(12)
    rows[1]["conversations"][1]["value"] += INJECTION
    out = llava_zh.preview(make(rows), tmp_path / "preview.html", n=9, seed=1)
    attrs, dom = dump_dom(out, tmp_path)
    assert attrs["data-status"] == "ready", attrs
    assert attrs["data-samples"] == "9" and attrs["data-images"] == "9"
    assert attrs["data-images-loaded"] == "9", attrs
    assert attrs["data-visible"] == "9"
    assert dom.count("<article") == 9 and dom.count("<script") == 1  # the injected text stayed text
    assert "<title>llava-zh preview</title>" in dom  # not rewritten by the injected script

    shot = tmp_path / "preview.png"
    proc = chromium(["--window-size=1280,1600", "--hide-scrollbars", "--virtual-time-budget=10000",
                     f"--screenshot={shot}", out.resolve().as_uri()], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    from PIL import Image

    with Image.open(shot) as im:
        assert im.size == (1280, 1600)
        # the page is not blank: thumbnails and badges put many colours on screen
        assert len(im.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 200


@needs_chromium
def test_search_box_and_task_filter_in_the_browser(tmp_path):
    out = llava_zh.preview(make(preview_rows(12)), tmp_path / "p.html", n=12, seed=0)
    attrs, _ = dump_dom(out, tmp_path, "#q=" + quote("斑马"))
    assert attrs["data-visible"] == "4"  # i % 3 == 2: s02 s05 s08 s11
    attrs, _ = dump_dom(out, tmp_path, "#task=conversation")
    assert attrs["data-visible"] == "4"
    attrs, _ = dump_dom(out, tmp_path, "#q=" + quote("小猫") + "&task=complex_reasoning")
    assert attrs["data-visible"] == "4"
    attrs, _ = dump_dom(out, tmp_path, "#q=" + quote("第7号样本"))
    assert attrs["data-visible"] == "1"
    attrs, _ = dump_dom(out, tmp_path, "#q=nothing-matches-this")
    assert attrs["data-visible"] == "0" and attrs["data-samples"] == "12"
    # typing into the box: a copy of the page with a script that types and reports what stayed visible
    typed = tmp_path / "typed.html"
    typer = (
        '<script>window.addEventListener("load", function () {'
        'var q = document.getElementById("q"); q.value = "斑马"; q.dispatchEvent(new Event("input"));'
        'var shown = document.querySelectorAll("article.sample:not([hidden])").length;'
        'document.body.setAttribute("data-typed", shown + "|" + document.getElementById("shown").textContent);'
        "});</script></body>"
    )
    typed.write_text(out.read_text(encoding="utf-8").replace("</body>", typer), encoding="utf-8")
    attrs, _ = dump_dom(typed, tmp_path)
    assert attrs["data-typed"] == "4|4 / 12"


@needs_chromium
def test_cli_preview(tmp_path, capsys):
    from llava_zh.cli import main

    src = write_source(tmp_path / "src", preview_rows(9))
    out = tmp_path / "cli.html"
    assert main(["preview", str(src), "--out", str(out), "--n", "2", "--task", "complex_reasoning", "--seed", "5"]) == 0
    assert "wrote" in capsys.readouterr().out
    attrs, dom = dump_dom(out, tmp_path)
    assert attrs["data-samples"] == "2" and attrs["data-images-loaded"] == "2"
    assert dom.count(">complex_reasoning</span>") == 2
    assert main(["preview", str(src), "--out", str(out), "--task", "nope"]) == 2
