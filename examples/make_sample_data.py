"""Draw and write the embedded sample set shipped in ``llava_zh/data/sample/``.

Thirty LLaVA-style records (ten per task of llava-instruct-zh-600k), each with its own small JPEG
showing a scene with Chinese text: a shop sign, a menu, a notice, a ticket... The texts live in
``examples/_sample_texts.py``; the drawings are the functions below, one per sample id. Everything
is deterministic, so re-running the script rewrites byte-identical files.

Usage:
    python examples/make_sample_data.py            # writes llava_zh/data/sample/
    python examples/make_sample_data.py --out DIR  # writes somewhere else

Needs Pillow and the CJK font of the Debian package ``fonts-wqy-zenhei`` (``apt-get install fonts-wqy-zenhei``).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import random
import sys
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _sample_texts import SAMPLES  # noqa: E402  (sibling data module)

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "llava_zh" / "data" / "sample"
FONT_PATH = Path("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc")
W, H = 384, 288
JPEG_QUALITY = 85
PLACEHOLDER = "<image>"


# --------------------------------------------------------------------------------------------- drawing helpers


@lru_cache(maxsize=None)
def font(size: int) -> ImageFont.FreeTypeFont:
    """The CJK font at ``size`` pixels; fails with the Debian package to install when it is missing."""
    if not FONT_PATH.exists():
        raise SystemExit(
            f"CJK font not found: {FONT_PATH}\n"
            "Install the Debian package fonts-wqy-zenhei (sudo apt-get install fonts-wqy-zenhei) and run again."
        )
    return ImageFont.truetype(str(FONT_PATH), size, index=0)


@lru_cache(maxsize=None)
def _has_glyph(ch: str) -> bool:
    """True when the font draws ``ch`` with its own glyph rather than the 'missing' box (tofu)."""
    def pixels(c: str) -> bytes:
        img = Image.new("L", (32, 32))
        ImageDraw.Draw(img).text((4, 2), c, font=font(24), fill=255)
        return img.tobytes()

    return pixels(ch) != pixels("\uffff")  # U+FFFF is never in a font: it draws the missing-glyph box


def text(d: ImageDraw.ImageDraw, xy, s: str, size: int, fill="black", anchor="la", bold=False) -> None:
    """Draw ``s`` at ``xy`` (Pillow anchor, e.g. "mm" = centred); refuse characters the font lacks."""
    lacking = sorted({ch for ch in s if not ch.isspace() and not _has_glyph(ch)})
    if lacking:
        raise ValueError(f"font {FONT_PATH.name} has no glyph for {lacking!r} in {s!r}")
    stroke = 1 if bold and size >= 22 else 0  # a 1-px stroke smudges small glyphs
    d.text(xy, s, font=font(size), fill=fill, anchor=anchor, stroke_width=stroke, stroke_fill=fill)


def vtext(d, x: int, y0: int, s: str, size: int, fill="black", step=None) -> None:
    """Draw ``s`` vertically, one character under the other, centred on column ``x`` from ``y0``."""
    step = step or size + 4
    for i, ch in enumerate(s):
        text(d, (x, y0 + i * step), ch, size, fill, "mm")


def sun(d, cx, cy, r, fill="#ffc83d") -> None:
    for k in range(8):
        a = k * math.pi / 4
        d.line((cx + (r + 3) * math.cos(a), cy + (r + 3) * math.sin(a),
                cx + (r + 9) * math.cos(a), cy + (r + 9) * math.sin(a)), fill=fill, width=3)
    d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)


def cloud(d, cx, cy, fill="#b0bec5") -> None:
    d.ellipse((cx - 24, cy - 6, cx + 2, cy + 14), fill=fill)
    d.ellipse((cx - 12, cy - 16, cx + 14, cy + 10), fill=fill)
    d.ellipse((cx + 2, cy - 8, cx + 26, cy + 14), fill=fill)
    d.rectangle((cx - 14, cy + 2, cx + 16, cy + 14), fill=fill)


def arrow(d, x0, y, x1, fill, width=3) -> None:
    """A horizontal arrow from x0 to x1 (head at x1)."""
    d.line((x0, y, x1, y), fill=fill, width=width)
    s = 1 if x1 > x0 else -1
    d.polygon([(x1 + 4 * s, y), (x1 - 6 * s, y - 6), (x1 - 6 * s, y + 6)], fill=fill)


def dashed_hline(d, x0, x1, y, fill="#888", dash=5, gap=3) -> None:
    for x in range(x0, x1, dash + gap):
        d.line((x, y, min(x + dash, x1), y), fill=fill)


def wood(d, box, base="#8d6e4c", grain="#7a5c3d", spacing=9) -> None:
    d.rectangle(box, fill=base)
    x0, y0, x1, y1 = box
    for y in range(y0 + 4, y1, spacing):
        d.line((x0, y, x1, y + 2), fill=grain)


# ------------------------------------------------------------------------------------ conversation scenes


def bakery(d):
    """Bakery front 阳光面包坊: hours, left window 3 loaves, right window 4 buns, door, chalkboard, sun."""
    d.rectangle((0, 0, W, 40), fill="#bfe3f5")
    sun(d, 352, 20, 11)
    d.rectangle((0, 40, W, 232), fill="#f1e0c5")
    d.rectangle((0, 232, W, H), fill="#b9b2a8")
    d.rectangle((40, 48, 344, 100), fill="#5a3a22")
    text(d, (192, 74), "阳光面包坊", 32, "#ffd54a", "mm", bold=True)
    text(d, (192, 116), "营业时间 7:00-21:00", 15, "#5a3a22", "mm")
    for box in ((24, 132, 148, 226), (236, 132, 360, 226)):
        d.rectangle(box, fill="#cfe8f3", outline="#5a3a22", width=4)
    for i in range(3):  # three long loaves, one above the other
        y = 146 + i * 26
        d.ellipse((44, y, 128, y + 20), fill="#d98a2b", outline="#a65e14", width=2)
        for k in range(3):
            d.line((66 + k * 20, y + 5, 74 + k * 20, y + 15), fill="#a65e14", width=2)
    for i in range(4):  # four round buns, two rows of two
        x, y = 260 + (i % 2) * 46, 146 + (i // 2) * 38
        d.ellipse((x, y, x + 34, y + 30), fill="#e0a04a", outline="#a65e14", width=2)
    d.rectangle((160, 128, 224, 232), fill="#6b4426")
    d.rectangle((170, 138, 214, 200), fill="#cfe8f3")
    text(d, (192, 169), "推", 18, "#6b4426", "mm")
    d.rectangle((206, 206, 210, 224), fill="#d8c36a")
    d.line((262, 284, 272, 238), fill="#5a3a22", width=3)
    d.line((346, 284, 336, 238), fill="#5a3a22", width=3)
    d.rectangle((252, 238, 356, 282), fill="#2b2b2b", outline="#5a3a22", width=3)
    text(d, (304, 252), "今日特价", 15, "#ffd54a", "mm")
    text(d, (304, 271), "全麦吐司 ¥12", 13, "white", "mm")


def metro_sign(d):
    """Metro station 梧桐湖站 on line 3 (green roundel), two direction boards, yellow exit band."""
    d.rectangle((0, 0, W, H), fill="#d9d9d6")
    for y in range(0, H, 24):
        d.line((0, y, W, y), fill="#cbcbc7")
    d.rectangle((0, 28, W, 112), fill="#1f3a68")
    d.ellipse((22, 42, 78, 98), fill="#2e9e4f", outline="white", width=3)
    text(d, (50, 70), "3", 34, "white", "mm", bold=True)
    text(d, (222, 60), "梧桐湖站", 36, "white", "mm", bold=True)
    text(d, (222, 96), "Wutong Lake", 14, "#c8d3e6", "mm")
    for box in ((16, 132, 184, 192), (200, 132, 368, 192)):
        d.rectangle(box, fill="white", outline="#1f3a68", width=3)
    text(d, (100, 162), "← 往 火车东站", 18, "#1f3a68", "mm")
    text(d, (284, 162), "往 科技园 →", 18, "#1f3a68", "mm")
    d.rectangle((0, 214, W, 268), fill="#f5c400")
    d.line((192, 220, 192, 262), fill="#333", width=2)
    text(d, (96, 241), "1号出口 湖滨路", 18, "black", "mm")
    text(d, (288, 241), "2号出口 市图书馆", 18, "black", "mm")


def bus_stop(d):
    """Bus stop board of line 18 at 梧桐路站: first/last bus, interval, fare, a 4-stop route strip."""
    d.rectangle((0, 0, W, 250), fill="#dbeef7")
    d.rectangle((0, 250, W, H), fill="#9a9a9a")
    d.rectangle((184, 250, 200, H), fill="#777")
    d.rectangle((70, 12, 314, 250), fill="white", outline="#888", width=3)
    d.rectangle((70, 12, 314, 58), fill="#1565c0")
    text(d, (84, 35), "18路", 30, "white", "lm", bold=True)
    text(d, (300, 35), "梧桐路站", 22, "white", "rm")
    for i, line in enumerate(("首班车  6:00", "末班车  22:30", "发车间隔  10-15分钟", "票价  2元")):
        text(d, (90, 80 + i * 27), line, 17, "#222", "lm")
    stops = ("火车站", "梧桐路", "市医院", "大学城")
    d.line((106, 204, 296, 204), fill="#1565c0", width=4)
    arrow(d, 290, 204, 302, "#1565c0", 4)
    for i, name in enumerate(stops):
        x = 106 + i * 62
        here = name == "梧桐路"
        r = 8 if here else 6
        d.ellipse((x - r, 204 - r, x + r, 204 + r), fill="#d32f2f" if here else "white", outline="#1565c0", width=2)
        text(d, (x, 226), name, 14, "#d32f2f" if here else "#222", "mm")


def medicine_box(d):
    """Medicine box 布洛芬缓释胶囊: red OTC oval, spec, dosage, expiry, batch, two capsules, red warning."""
    d.rectangle((0, 0, W, H), fill="#e7e4df")
    d.rectangle((48, 48, 352, 258), fill="#c9c5bf")
    d.rectangle((40, 40, 344, 250), fill="white", outline="#9aa4ad")
    d.rectangle((40, 40, 344, 84), fill="#1e6fb8")
    text(d, (56, 62), "布洛芬缓释胶囊", 24, "white", "lm", bold=True)
    d.ellipse((282, 94, 334, 122), fill="#d32f2f")
    text(d, (308, 108), "OTC", 16, "white", "mm", bold=True)
    lines = ("规格：0.3克×20粒", "用法用量：口服，一次1粒，一日2次", "有效期至 2026年08月", "批号 240815")
    for i, line in enumerate(lines):
        text(d, (56, 106 + i * 28), line, 15, "#333", "lm")
    for x, y in ((262, 166), (276, 190)):
        d.rounded_rectangle((x, y, x + 46, y + 18), radius=9, fill="#e53935")
        d.rounded_rectangle((x + 23, y, x + 46, y + 18), radius=9, fill="#f5f5f5")
        d.rectangle((x + 23, y, x + 32, y + 18), fill="#f5f5f5")
        d.rounded_rectangle((x, y, x + 46, y + 18), radius=9, outline="#999")
    text(d, (192, 232), "请仔细阅读说明书并按说明使用", 13, "#d32f2f", "mm")


def blackboard(d):
    """Blackboard: 勾股定理, date, right triangle a/b/c, formula, example, homework, two chalks + eraser."""
    d.rectangle((0, 0, W, H), fill="#efe6c8")
    d.rectangle((14, 14, 370, 236), fill="#8b5a2b")
    d.rectangle((22, 22, 362, 228), fill="#2f4f3a")
    d.rectangle((14, 236, 370, 246), fill="#7a4e25")
    text(d, (36, 32), "勾股定理", 26, "white", "la", bold=True)
    text(d, (350, 38), "10月9日 星期三", 14, "#dde5dd", "ra")
    a, b, c = (48, 206), (172, 206), (48, 96)
    d.line((a, b, c, a), fill="white", width=2)
    d.line((48, 194, 60, 194, 60, 206), fill="white", width=1)
    text(d, (36, 151), "a", 18, "white", "mm")
    text(d, (110, 217), "b", 18, "white", "mm")
    text(d, (122, 142), "c", 18, "white", "mm")
    text(d, (200, 96), "a² + b² = c²", 28, "#ffe066", "lm")
    text(d, (200, 144), "例：3² + 4² = 5²", 20, "white", "lm")
    text(d, (200, 190), "作业：练习册第12页", 16, "#ffb3c7", "lm")
    d.rectangle((70, 230, 96, 236), fill="white")
    d.rectangle((104, 230, 130, 236), fill="#ffe066")
    d.rectangle((300, 224, 344, 236), fill="#c9a36b")
    d.rectangle((300, 230, 344, 236), fill="#555")


def weather_board(d):
    """Five-day forecast board of 滨海市 (周一..周五) with icons, conditions, temperatures and a rain tip."""
    d.rectangle((0, 0, W, H), fill="#bfe3f5")
    d.rectangle((12, 12, 372, 276), fill="white", outline="#2b5d8a", width=3)
    d.rectangle((12, 12, 372, 52), fill="#2b5d8a")
    text(d, (192, 32), "滨海市 未来五天天气预报", 20, "white", "mm")
    days = (("周一", "晴", "15~24℃", "sun"), ("周二", "多云", "14~21℃", "cloud"), ("周三", "小雨", "12~17℃", 2),
            ("周四", "中雨", "11~15℃", 4), ("周五", "晴", "13~22℃", "sun"))
    for i, (day, cond, temp, icon) in enumerate(days):
        cx = 56 + 68 * i
        if i:
            d.line((cx - 34, 60, cx - 34, 200), fill="#d5dde5")
        text(d, (cx, 72), day, 16, "#2b5d8a", "mm")
        if icon == "sun":
            sun(d, cx, 114, 12)
        else:
            cloud(d, cx, 110)
            for k in range(icon if isinstance(icon, int) else 0):
                x = cx - 15 + k * 30 // max(icon - 1, 1)
                d.line((x, 128, x - 4, 140), fill="#1e88e5", width=2)
        text(d, (cx, 160), cond, 16, "#222", "mm")
        text(d, (cx, 186), temp, 14, "#444", "mm")
    d.rectangle((22, 212, 362, 264), fill="#fff3e0")
    text(d, (192, 228), "温馨提示：周三至周四有降雨，", 14, "#c62828", "mm")
    text(d, (192, 249), "出行请携带雨具。", 14, "#c62828", "mm")


def train_ticket(d):
    """Blue high-speed train ticket G123 北京南站 → 上海虹桥站 on a wooden table, with a QR code."""
    wood(d, (0, 0, W, H))
    d.rounded_rectangle((36, 48, 348, 240), radius=10, fill="#cfe6f5", outline="#7fa9c9", width=2)
    text(d, (50, 62), "Z45K012345", 14, "#d32f2f", "lm")
    text(d, (334, 62), "检票：12A", 14, "#222", "rm")
    text(d, (92, 98), "北京南站", 22, "#111", "mm", bold=True)
    text(d, (284, 98), "上海虹桥站", 22, "#111", "mm", bold=True)
    text(d, (188, 86), "G123", 18, "#111", "mm")
    arrow(d, 162, 104, 212, "#111", 2)
    text(d, (92, 122), "Beijingnan", 11, "#555", "mm")
    text(d, (284, 122), "Shanghaihongqiao", 11, "#555", "mm")
    text(d, (50, 148), "2025年05月01日 08:00开", 16, "#111", "lm")
    text(d, (334, 148), "05车12F号", 16, "#111", "rm")
    text(d, (50, 174), "¥553.0元", 16, "#111", "lm")
    text(d, (334, 174), "二等座", 16, "#111", "rm")
    text(d, (50, 202), "限乘当日当次车", 13, "#333", "lm")
    text(d, (50, 222), "3201**********1234 张*", 13, "#333", "lm")
    rng = random.Random(123)  # fixed seed: the same "QR code" every run
    x0, y0, n, m = 282, 190, 11, 4
    d.rectangle((x0 - 2, y0 - 2, x0 + n * m + 2, y0 + n * m + 2), fill="white")
    for r in range(n):
        for c in range(n):
            finder = (r < 3 and c < 3) or (r < 3 and c >= n - 3) or (r >= n - 3 and c < 3)
            if finder or rng.random() < 0.45:
                d.rectangle((x0 + c * m, y0 + r * m, x0 + c * m + m - 1, y0 + r * m + m - 1), fill="black")


def fruit_stall(d):
    """Fruit stall 老王水果店: striped awning, 5 apples, 6 oranges, 3 bananas, three price cards."""
    d.rectangle((0, 0, W, H), fill="#f3ead8")
    for i in range(8):
        d.rectangle((i * 48, 0, i * 48 + 48, 34), fill="#d32f2f" if i % 2 == 0 else "white")
        d.pieslice((i * 48, 22, i * 48 + 48, 46), 0, 180, fill="#d32f2f" if i % 2 == 0 else "white")
    d.rectangle((112, 48, 272, 84), fill="#2e7d32")
    text(d, (192, 66), "老王水果店", 22, "white", "mm", bold=True)
    wood(d, (0, 196, W, H), "#a0703c", "#8a5e30")
    d.rectangle((0, 196, W, 204), fill="#7a5228")

    def fruit(cx, cy, fill, edge):
        d.ellipse((cx - 15, cy - 15, cx + 15, cy + 15), fill=fill, outline=edge, width=2)

    for cx, cy in ((40, 181), (70, 181), (100, 181), (55, 155), (85, 155)):
        fruit(cx, cy, "#d62d2d", "#9e1b1b")
        d.line((cx, cy - 15, cx + 2, cy - 20), fill="#5d4037", width=2)
    for cx, cy in ((147, 181), (177, 181), (207, 181), (237, 181), (162, 155), (222, 155)):
        fruit(cx, cy, "#fb8c00", "#c66900")
    for by in (130, 145, 160):
        d.arc((270, by - 30, 350, by + 30), 25, 155, fill="#fdd835", width=9)
        d.arc((270, by - 30, 350, by + 30), 25, 32, fill="#6d4c41", width=9)
    for (x0, x1), name, price in (((28, 112), "苹果", "5.8元/斤"), ((150, 234), "橙子", "4.5元/斤"),
                                  ((268, 352), "香蕉", "3.2元/斤")):
        cx = (x0 + x1) // 2
        d.line((cx, 130, cx, 142), fill="#8d6e63", width=3)
        d.rectangle((x0, 92, x1, 130), fill="white", outline="#999")
        text(d, (cx, 103), name, 14, "#222", "mm")
        text(d, (cx, 120), price, 14, "#d32f2f", "mm")


def parking_notice(d):
    """Parking: blue P sign + 停车场, a red car, and the 停车收费标准 notice with fares and 12345."""
    d.rectangle((0, 0, W, H), fill="#cfd4d8")
    d.rectangle((0, 248, W, H), fill="#9ea3a8")
    d.rounded_rectangle((18, 24, 104, 110), radius=8, fill="#1e5bb8")
    text(d, (61, 67), "P", 64, "white", "mm", bold=True)
    text(d, (61, 128), "停车场", 16, "#333", "mm")
    d.polygon([(34, 204), (46, 182), (82, 182), (96, 204)], fill="#d84343")
    d.polygon([(42, 202), (50, 187), (62, 187), (62, 202)], fill="#cfe8f3")
    d.polygon([(66, 202), (66, 187), (79, 187), (89, 202)], fill="#cfe8f3")
    d.rounded_rectangle((16, 200, 110, 236), radius=8, fill="#d84343")
    for x in (38, 88):
        d.ellipse((x - 11, 226, x + 11, 248), fill="#222")
        d.ellipse((x - 4, 233, x + 4, 241), fill="#bbb")
    d.rectangle((124, 16, 368, 240), fill="white", outline="#1e5bb8", width=3)
    text(d, (246, 38), "停车收费标准", 22, "#c62828", "mm", bold=True)
    d.line((140, 58, 352, 58), fill="#1e5bb8", width=2)
    rules = ("小型车：首小时免费", "超出部分每小时5元", "24小时内最高收费40元", "大型车：每小时10元", "请妥善保管停车票")
    for i, line in enumerate(rules):
        text(d, (140, 78 + i * 26), line, 16, "#222", "lm")
    text(d, (246, 222), "投诉电话：12345", 14, "#555", "mm")


def bookstore(d):
    """Bookstore 新华书店: red sign, window with a three-shelf bookcase, banner 读书月 · 全场图书八折."""
    d.rectangle((0, 0, W, H), fill="#e8e2d6")
    d.rectangle((0, 276, W, H), fill="#a8a8a8")
    d.rectangle((24, 18, 360, 72), fill="#c62828")
    text(d, (192, 45), "新华书店", 36, "#ffe08a", "mm", bold=True)
    d.rectangle((24, 88, 360, 222), fill="#dfeef5", outline="#555", width=3)
    rng = random.Random(10)  # fixed seed: the same books every run
    colours = ("#c62828", "#1565c0", "#2e7d32", "#f9a825", "#6a1b9a", "#00838f", "#ef6c00", "#5d4037")
    for k, shelf in enumerate((130, 172, 214)):
        x = 36
        while True:
            w, h = rng.randint(9, 15), rng.randint(24, 34)
            if x + w > 348:
                break
            d.rectangle((x, shelf - h, x + w, shelf), fill=colours[rng.randrange(len(colours))], outline="#333")
            x += w + 1
        d.rectangle((30, shelf, 354, shelf + 4), fill="#8d5a2b")
    d.rectangle((24, 232, 360, 270), fill="#e53935")
    text(d, (192, 251), "读书月 · 全场图书八折", 20, "white", "mm", bold=True)


# ----------------------------------------------------------------------------- complex reasoning scenes


def restaurant_menu(d):
    """Menu of 家常菜馆: six dishes with prices and 满100元赠送饮料一瓶, on a wooden table."""
    wood(d, (0, 0, W, H), "#7b5230", "#6a4526")
    d.rectangle((44, 12, 340, 276), fill="#fbf3e0", outline="#c9a66b", width=2)
    text(d, (192, 38), "家常菜馆 · 菜单", 24, "#8e1b1b", "mm", bold=True)
    d.line((64, 60, 320, 60), fill="#8e1b1b", width=2)
    dishes = (("鱼香肉丝", "28元"), ("宫保鸡丁", "32元"), ("番茄炒蛋", "18元"), ("麻婆豆腐", "16元"),
              ("清炒时蔬", "15元"), ("米饭", "2元/碗"))
    for i, (name, price) in enumerate(dishes):
        y = 84 + i * 28
        text(d, (70, y), name, 17, "#222", "lm")
        text(d, (314, y), price, 17, "#222", "rm")
        for x in range(150, 248 if "/" in price else 268, 6):
            d.point((x, y + 4), fill="#999")
    text(d, (192, 256), "满100元赠送饮料一瓶", 14, "#8e1b1b", "mm")


def notice_board(d):
    """Cork board with the 停水通知 of 幸福里物业服务中心 (5月20日 9:00-17:00), two red pins."""
    d.rectangle((0, 0, W, H), fill="#e9e9e9")
    d.rectangle((16, 10, 368, 278), fill="#b9895a", outline="#6d4c2f", width=6)
    d.rectangle((52, 26, 332, 262), fill="white")
    for x in (62, 322):
        d.ellipse((x - 6, 30, x + 6, 42), fill="#d32f2f")
    text(d, (192, 58), "停水通知", 28, "#111", "mm", bold=True)
    body = ("尊敬的各位居民：", "因小区供水管道检修，", "本小区将于5月20日", "9:00至17:00暂停供水，", "请提前做好储水准备。")
    for i, line in enumerate(body):
        text(d, (72 if i == 0 else 88, 98 + i * 24), line, 16, "#222", "lm")
    text(d, (316, 228), "幸福里物业服务中心", 14, "#222", "rm")
    text(d, (316, 248), "2025年5月18日", 14, "#222", "rm")


def school_zone(d):
    """Street by 育才小学: 30 speed-limit disc, yellow 学校区域 减速慢行 sign, 8-stripe zebra crossing."""
    d.rectangle((0, 0, W, 186), fill="#cde9f7")
    d.rectangle((0, 186, W, H), fill="#5d5d5d")
    d.rectangle((0, 180, W, 192), fill="#bdbdbd")
    d.rectangle((16, 70, 196, 180), fill="#f2d7c9")
    d.rectangle((10, 60, 202, 74), fill="#b55a3c")
    d.rectangle((50, 82, 162, 106), fill="white", outline="#b55a3c")
    text(d, (106, 94), "育才小学", 18, "#c62828", "mm", bold=True)
    for i in range(4):
        d.rectangle((30 + i * 42, 116, 58 + i * 42, 142), fill="#a9d4ec", outline="#888")
    d.rectangle((86, 150, 126, 180), fill="#666")
    d.rectangle((300, 40, 306, 186), fill="#8a8a8a")
    d.ellipse((271, 30, 335, 94), fill="#d32f2f")
    d.ellipse((279, 38, 327, 86), fill="white")
    text(d, (303, 62), "30", 26, "black", "mm", bold=True)
    d.rectangle((246, 104, 360, 150), fill="#f9d71c", outline="black", width=2)
    text(d, (303, 117), "学校区域", 16, "black", "mm")
    text(d, (303, 138), "减速慢行", 16, "black", "mm")
    for i in range(8):
        x = 70 + i * 32
        d.rectangle((x, 206, x + 18, 272), fill="white")


def receipt(d):
    """Receipt of 惠民超市: milk, eggs, apples, bread, total 49.70, member discount -5.00, paid 44.70."""
    d.rectangle((0, 0, W, H), fill="#3b3f45")
    d.rectangle((96, 6, 288, 282), fill="white")
    text(d, (192, 24), "惠民超市", 20, "#111", "mm", bold=True)
    text(d, (192, 46), "2025-03-08 18:42", 12, "#333", "mm")
    rows = ((("牛奶 2×6.50", "13.00"), ("鸡蛋 1×12.80", "12.80"), ("苹果 1.5kg", "15.00"), ("面包 1×8.90", "8.90")),
            (("合计", "49.70"), ("会员优惠", "-5.00"), ("实付", "44.70"), ("微信支付", "44.70")))
    y = 58
    for block in rows:
        dashed_hline(d, 106, 278, y)
        for left, right in block:
            y += 20
            bold = left == "实付"
            text(d, (108, y - 8), left, 13, "#111", "lm", bold=bold)
            text(d, (276, y - 8), right, 13, "#111", "rm", bold=bold)
        y += 12
    dashed_hline(d, 106, 278, y)
    text(d, (192, y + 20), "谢谢惠顾 欢迎再来", 13, "#333", "mm")


def milk_carton(d):
    """Carton of 鲜牛奶 950毫升: 2~6℃冷藏, 保质期 7天, 生产日期见封口."""
    d.rectangle((0, 0, W, H), fill="#dbeaf6")
    d.rectangle((0, 250, W, H), fill="#c8b39a")
    d.polygon([(252, 70), (290, 54), (290, 244), (252, 262)], fill="#c9d6e2")
    d.polygon([(252, 70), (290, 54), (222, 18), (184, 30)], fill="#16589a")
    d.rectangle((116, 70, 252, 262), fill="white", outline="#9fb3c8")
    d.polygon([(116, 70), (184, 30), (252, 70)], fill="#1e6fb8")
    d.rectangle((172, 22, 196, 32), fill="#e3eef8")
    text(d, (184, 102), "鲜牛奶", 30, "#1e6fb8", "mm", bold=True)
    wave = [(116 + x, 138 + 5 * math.sin(x / 11)) for x in range(0, 137, 4)]
    d.polygon(wave + [(252, 152), (116, 152)], fill="#bbdefb")
    text(d, (184, 170), "950毫升", 16, "#1e6fb8", "mm")
    text(d, (184, 196), "2~6℃冷藏", 16, "#d32f2f", "mm", bold=True)
    text(d, (184, 220), "保质期 7天", 14, "#333", "mm")
    text(d, (184, 244), "生产日期见封口", 12, "#666", "mm")


def mall_directory(d):
    """Mall directory 楼层导览: floors 5F..B1 and 无障碍电梯位于商场东侧."""
    d.rectangle((0, 0, W, H), fill="#e4e4e4")
    d.rectangle((28, 10, 356, 278), fill="#2f3640")
    text(d, (192, 34), "楼层导览", 24, "white", "mm", bold=True)
    floors = (("5F", "餐饮美食 · 电影院", "#e53935"), ("4F", "儿童服饰 · 玩具 · 母婴室", "#fb8c00"),
              ("3F", "运动户外", "#43a047"), ("2F", "男装 · 女装", "#1e88e5"),
              ("1F", "化妆品 · 珠宝 · 服务台", "#8e24aa"), ("B1", "超市 · 停车场", "#757575"))
    for i, (floor, shops, colour) in enumerate(floors):
        y = 68 + i * 32
        d.rectangle((42, y - 12, 82, y + 12), fill=colour)
        text(d, (62, y), floor, 16, "white", "mm", bold=True)
        text(d, (96, y), shops, 16, "white", "lm")
    text(d, (192, 260), "无障碍电梯位于商场东侧", 14, "#ffd54a", "mm")


def wet_floor(d):
    """Corridor: yellow 小心地滑 / CAUTION stand, two puddles on the left, blue bucket with a mop."""
    d.rectangle((0, 0, W, 170), fill="#f3efe4")
    d.rectangle((0, 170, W, H), fill="#c7d3dc")
    d.rectangle((0, 164, W, 172), fill="#b0a48f")
    for y in (206, 246):
        d.line((0, y, W, y), fill="#b4c1cb")
    for x in range(48, W, 96):
        d.line((x, 172, x, H), fill="#b4c1cb")
    d.ellipse((24, 232, 122, 258), fill="#a9d2ec")
    d.ellipse((70, 194, 132, 212), fill="#a9d2ec")
    d.rectangle((176, 60, 208, 72), fill="#333")
    d.polygon([(160, 70), (224, 70), (246, 250), (138, 250)], fill="#ffd600", outline="#333")
    d.polygon([(192, 88), (216, 130), (168, 130)], outline="black", width=3)
    text(d, (192, 116), "!", 20, "black", "mm", bold=True)
    text(d, (192, 160), "小心", 22, "black", "mm", bold=True)
    text(d, (192, 190), "地滑", 22, "black", "mm", bold=True)
    text(d, (192, 224), "CAUTION", 12, "black", "mm")
    d.line((306, 96, 294, 232), fill="#8d6e63", width=4)
    d.arc((272, 190, 320, 222), 180, 360, fill="#555", width=2)
    d.polygon([(270, 206), (322, 206), (316, 254), (276, 254)], fill="#1e88e5", outline="#0d47a1")


def queue_display(d):
    """Hospital: 门诊叫号 screen (内科 A032 / 外科 B015 / 儿科 C008), a bench and a ticket 内科 A036."""
    d.rectangle((0, 0, W, H), fill="#e8edf0")
    d.rectangle((16, 12, 368, 196), fill="#333")
    d.rectangle((24, 20, 360, 188), fill="black")
    text(d, (192, 36), "门诊叫号", 20, "#ffd54a", "mm", bold=True)
    d.line((36, 54, 348, 54), fill="#444")
    for i, (dept, no, room) in enumerate((("内科", "A032", "3"), ("外科", "B015", "5"), ("儿科", "C008", "7"))):
        text(d, (44, 78 + i * 32), f"{dept}  请 {no} 号 到{room}诊室", 17, "#39e639", "lm")
    text(d, (192, 174), "请留意叫号，过号需重新排队", 13, "#ff7043", "mm")
    d.rectangle((20, 236, 180, 250), fill="#1e88e5")
    for x in (30, 170):
        d.rectangle((x - 2, 250, x + 2, 276), fill="#555")
    d.rectangle((224, 204, 372, 284), fill="white", outline="#bbb")
    text(d, (234, 216), "内科 普通号", 14, "#222", "lm")
    text(d, (298, 244), "A036", 28, "#111", "mm", bold=True)
    text(d, (234, 272), "挂号时间 09:12", 12, "#555", "lm")


def flight_board(d):
    """Departure board: five flights; CA1502 to 上海虹桥 09:30 延误, ticker 预计起飞时间 11:10."""
    d.rectangle((0, 0, W, H), fill="#0d1b2a")
    d.rectangle((10, 10, 374, 40), fill="#1b3a5c")
    for x, head in ((22, "航班"), (110, "目的地"), (222, "计划"), (300, "状态")):
        text(d, (x, 25), head, 15, "#7fdbff", "lm")
    flights = (("MU5101", "上海虹桥", "08:00", "已起飞", "#66bb6a"), ("CA1502", "上海虹桥", "09:30", "延误", "#ef5350"),
               ("CZ3108", "广州白云", "10:15", "正在登机", "#ffd54a"), ("HU7182", "成都天府", "11:20", "计划", "#e0e0e0"),
               ("3U8861", "重庆江北", "12:05", "取消", "#ef5350"))
    for i, (no, dest, time, status, colour) in enumerate(flights):
        y = 60 + i * 34
        text(d, (22, y), no, 15, "white", "lm")
        text(d, (110, y), dest, 15, "white", "lm")
        text(d, (222, y), time, 15, "white", "lm")
        text(d, (300, y), status, 15, colour, "lm")
        d.line((16, y + 17, 368, y + 17), fill="#24405f")
    d.rectangle((10, 236, 374, 274), fill="#1b3a5c")
    text(d, (192, 255), "CA1502 预计起飞时间 11:10", 16, "#ffd54a", "mm")


def garbage_bins(d):
    """Four sorting bins left to right: blue 可回收物, red 有害垃圾, green 厨余垃圾, grey 其他垃圾."""
    d.rectangle((0, 0, W, 200), fill="#f0f0e8")
    d.rectangle((0, 200, W, H), fill="#cfd8c4")
    d.rectangle((52, 12, 332, 52), fill="#2e7d32")
    text(d, (192, 32), "垃圾分类 从我做起", 20, "white", "mm", bold=True)
    bins = (("可回收物", "#1e64c8", "#154a96"), ("有害垃圾", "#d32f2f", "#9a2020"),
            ("厨余垃圾", "#2e8b3e", "#1f6a2c"), ("其他垃圾", "#5f6368", "#43464a"))
    for i, (label, body, lid) in enumerate(bins):
        x0 = 18 + i * 90
        d.rectangle((x0, 120, x0 + 78, 262), fill=body)
        d.rectangle((x0 - 4, 104, x0 + 82, 122), fill=lid)
        d.rectangle((x0 + 28, 98, x0 + 50, 104), fill=lid)
        text(d, (x0 + 39, 166), label, 16, "white", "mm", bold=True)
        for wx in (x0 + 12, x0 + 66):
            d.ellipse((wx - 7, 258, wx + 7, 272), fill="#222")


# --------------------------------------------------------------------------- detailed description scenes


def milk_tea_shop(d):
    """Milk tea shop 茶语时光: menu board (two columns of three drinks), 新品 tag, three cups on the counter."""
    d.rectangle((0, 0, W, H), fill="#f8d7e0")
    d.rectangle((26, 12, 358, 188), fill="#2b2b2b", outline="#8d6e63", width=4)
    text(d, (192, 36), "茶语时光", 26, "#ffb6c8", "mm", bold=True)
    d.rounded_rectangle((300, 22, 346, 48), radius=6, fill="#e53935")
    text(d, (323, 35), "新品", 14, "white", "mm")
    columns = ((50, 176, "奶茶系列", (("珍珠奶茶", "12元"), ("芋泥奶茶", "15元"), ("椰果奶茶", "13元"))),
               (206, 340, "果茶系列", (("柠檬绿茶", "10元"), ("杨枝甘露", "18元"), ("满杯百香果", "14元"))))
    for x0, x1, title, items in columns:
        text(d, (x0, 68), title, 17, "#ffd54a", "lm", bold=True)
        for i, (name, price) in enumerate(items):
            text(d, (x0, 98 + i * 28), name, 15, "white", "lm")
            text(d, (x1, 98 + i * 28), price, 15, "white", "rm")
    d.rectangle((0, 204, W, H), fill="#a1887f")
    d.rectangle((0, 200, W, 210), fill="#6d4c41")
    for cx, tea in ((110, "#c8a27a"), (192, "#b39ddb"), (274, "#ffca28")):
        d.line((cx + 4, 198, cx + 12, 172), fill="#444", width=4)
        d.polygon([(cx - 18, 196), (cx + 18, 196), (cx + 14, 250), (cx - 14, 250)], fill=tea, outline="#777")
        d.ellipse((cx - 19, 191, cx + 19, 201), fill="#f5f5f5", outline="#999")
    for px, py in ((102, 240), (110, 243), (118, 240), (106, 232), (114, 232)):
        d.ellipse((px - 3, py - 3, px + 3, py + 3), fill="#2b1d14")
    for px, py in ((266, 222), (280, 230), (270, 240), (283, 214)):
        d.ellipse((px - 2, py - 2, px + 2, py + 2), fill="#4e342e")


def hotpot_front(d):
    """Hotpot restaurant 老成都火锅: two 福 lanterns, couplets 麻辣鲜香 / 宾至如归, glass doors, hours board."""
    d.rectangle((0, 0, W, H), fill="#7a1f1f")
    d.rectangle((0, 0, W, 22), fill="#3e2723")
    d.rectangle((70, 32, 314, 92), fill="#1b1b1b", outline="#d4af37", width=3)
    text(d, (192, 62), "老成都火锅", 32, "#f2c94c", "mm", bold=True)
    for cx in (40, 344):
        d.line((cx, 22, cx, 44), fill="#d4af37", width=2)
        d.ellipse((cx - 24, 44, cx + 24, 96), fill="#e53935")
        d.rectangle((cx - 10, 42, cx + 10, 48), fill="#d4af37")
        d.rectangle((cx - 10, 92, cx + 10, 98), fill="#d4af37")
        text(d, (cx, 70), "福", 20, "#ffd54a", "mm", bold=True)
        for k in (-4, 0, 4):
            d.line((cx + k, 98, cx + k, 120), fill="#d4af37", width=2)
    for box in ((14, 124, 96, 220), (288, 124, 370, 220)):
        d.rectangle(box, fill="#ffd98a", outline="#3e2723", width=4)
    d.rectangle((146, 124, 238, H), fill="#3e2723")
    for x0 in (152, 194):
        d.rectangle((x0, 130, x0 + 38, H), fill="#9fc5d6")
    d.rectangle((184, 190, 187, 226), fill="#d4af37")
    d.rectangle((199, 190, 202, 226), fill="#d4af37")
    for x0, words in ((112, "麻辣鲜香"), (246, "宾至如归")):
        d.rectangle((x0, 124, x0 + 26, 246), fill="#d32f2f", outline="#d4af37")
        vtext(d, x0 + 13, 142, words, 18, "#ffd54a", step=28)
    d.rectangle((14, 236, 100, 276), fill="white")
    text(d, (57, 248), "营业时间", 13, "#333", "mm")
    text(d, (57, 266), "11:00-23:00", 12, "#333", "mm")


def sports_day(d):
    """School sports day: red banner 第十二届秋季运动会 / 阳光小学 · 2025年10月, 8 flags, 4-lane track, 终点."""
    d.rectangle((0, 0, W, 180), fill="#bfe6ff")
    d.rectangle((0, 180, W, H), fill="#6abf69")
    d.rectangle((0, 200, W, 256), fill="#c1553b")
    for y in (200, 214, 228, 242, 256):
        d.line((0, y, W, y), fill="white", width=2)
    d.rectangle((318, 200, 322, 256), fill="white")
    for x in (34, 350):
        d.rectangle((x - 2, 24, x + 2, 200), fill="#8a8a8a")
    d.rectangle((36, 26, 348, 92), fill="#d32f2f")
    text(d, (192, 50), "第十二届秋季运动会", 24, "#ffe082", "mm", bold=True)
    text(d, (192, 78), "阳光小学 · 2025年10月", 14, "white", "mm")
    d.line((36, 108, 348, 108), fill="#666")
    for i in range(8):
        x = 42 + i * 38
        d.polygon([(x, 108), (x + 30, 108), (x + 15, 132)], fill=("#e53935", "#fdd835", "#1e88e5", "#43a047")[i % 4])
    d.line((306, 166, 306, 200), fill="#555", width=2)
    d.line((334, 166, 334, 200), fill="#555", width=2)
    d.rectangle((300, 140, 340, 166), fill="white", outline="#555")
    text(d, (320, 153), "终点", 16, "#d32f2f", "mm", bold=True)


def highway_sign(d):
    """Green expressway sign: red G92 plate, 柯桥 8 km / 绍兴 22 km / 宁波 128 km; road and two trees."""
    d.rectangle((0, 0, W, 196), fill="#9fd3f2")
    d.rectangle((0, 196, W, H), fill="#7cb65a")
    d.polygon([(160, 196), (224, 196), (334, H), (50, H)], fill="#6b6b6b")
    for y, h in ((202, 8), (222, 12), (248, 16), (278, 10)):
        d.rectangle((191, y, 193, y + h), fill="white")
    for cx in (20, 364):
        d.rectangle((cx - 3, 186, cx + 3, 206), fill="#6d4c41")
        d.ellipse((cx - 18, 152, cx + 18, 190), fill="#2e7d32")
    for x in (96, 280):
        d.rectangle((x, 176, x + 8, 206), fill="#8a8a8a")
    d.rectangle((40, 22, 344, 178), fill="#1a7f3c")
    d.rectangle((46, 28, 338, 172), outline="white", width=2)
    d.rectangle((56, 36, 112, 62), fill="#d32f2f")
    text(d, (84, 49), "G92", 18, "white", "mm", bold=True)
    for i, (place, km) in enumerate((("柯桥", "8 km"), ("绍兴", "22 km"), ("宁波", "128 km"))):
        y = 86 + i * 32
        text(d, (110, y), place, 24, "white", "lm", bold=True)
        text(d, (320, y), km, 24, "white", "rm", bold=True)


def pharmacy(d):
    """Pharmacy 平安大药房: green cross, 24小时营业 LED, 医保 定点药店 poster, 欢迎光临 doors, 12 boxes."""
    d.rectangle((0, 0, W, H), fill="#eceff1")
    d.rectangle((0, 270, W, H), fill="#b0bec5")
    d.rectangle((24, 18, 360, 74), fill="#2e7d32")
    d.rectangle((34, 24, 78, 68), fill="white")
    d.rectangle((50, 30, 62, 62), fill="#2e7d32")
    d.rectangle((40, 40, 72, 52), fill="#2e7d32")
    text(d, (214, 46), "平安大药房", 30, "white", "mm", bold=True)
    d.rectangle((120, 84, 264, 108), fill="black")
    text(d, (192, 96), "24小时营业", 16, "#ff3d00", "mm")
    for box in ((18, 120, 128, 240), (256, 120, 366, 240)):
        d.rectangle(box, fill="#d6eaf5", outline="#90a4ae", width=3)
    d.rectangle((34, 136, 112, 216), fill="white")
    text(d, (73, 162), "医保", 20, "#1565c0", "mm", bold=True)
    text(d, (73, 192), "定点药店", 15, "#1565c0", "mm")
    d.rectangle((140, 118, 244, 270), fill="#90a4ae")
    d.rectangle((144, 122, 190, 270), fill="#cfe8f5")
    d.rectangle((194, 122, 240, 270), fill="#cfe8f5")
    text(d, (192, 146), "欢迎光临", 14, "#2e7d32", "mm")
    colours = ("#ef5350", "#42a5f5", "#66bb6a", "#ffca28")
    for r, shelf in enumerate((154, 186, 218)):
        d.rectangle((262, shelf, 360, shelf + 3), fill="#8d6e63")
        for c in range(4):
            x = 268 + c * 23
            d.rectangle((x, shelf - 20, x + 18, shelf), fill=colours[(r + c) % 4], outline="#555")


def museum_exhibit(d):
    """Museum: bronze ding (two ears, three legs) in a lit case, label 青铜鼎 / 西周 / 38厘米 / 1976年出土."""
    d.rectangle((0, 0, W, H), fill="#2b2521")
    d.polygon([(110, 0), (170, 0), (236, 200), (44, 200)], fill="#3d342d")
    d.rectangle((70, 176, 210, 210), fill="#5d4f45")
    for box in ((98, 68, 112, 96), (168, 68, 182, 96)):
        d.rectangle(box, fill="#4e6b52")
        x0, y0, x1, y1 = box
        d.rectangle((x0 + 4, y0 + 5, x1 - 4, y1 - 8), fill="#2b2521")
    for x in (100, 135, 170):
        d.rectangle((x, 158, x + 10, 178), fill="#4e6b52")
    d.ellipse((86, 92, 194, 168), fill="#5f7f62")
    d.rectangle((84, 90, 196, 102), fill="#4e6b52")
    d.line([(92 + 8 * k, 122 + (6 if k % 2 else 0)) for k in range(13)], fill="#3f5a44", width=2)
    d.rectangle((36, 20, 244, 210), outline="#8d8d8d", width=2)
    d.rectangle((256, 40, 368, 210), fill="#efe6d2")
    text(d, (312, 64), "青铜鼎", 22, "#3e2723", "mm", bold=True)
    d.line((268, 84, 356, 84), fill="#8d6e63")
    for i, line in enumerate(("年代：西周", "高：38厘米", "1976年出土")):
        text(d, (266, 104 + i * 26), line, 14, "#3e2723", "lm")
    text(d, (266, 186), "馆藏编号 B-017", 12, "#5d4037", "lm")
    d.rectangle((60, 226, 220, 270), fill="#f5f5f5")
    text(d, (140, 240), "请勿触摸", 16, "#d32f2f", "mm", bold=True)
    text(d, (140, 260), "禁止使用闪光灯", 13, "#333", "mm")


def cinema_ticket(d):
    """Cinema ticket 星光影城 《流浪星球》 with stub (副券), on red velvet, popcorn bucket bottom left."""
    d.rectangle((0, 0, W, H), fill="#5b0f1a")
    for x in range(0, W, 12):
        d.line((x, 0, x, H), fill="#4f0c16")
    d.rectangle((70, 28, 370, 226), fill="#fff8e1", outline="#c9a227", width=2)
    for y in range(36, 222, 8):
        d.ellipse((290, y, 293, y + 3), fill="#b0a080")
    text(d, (84, 48), "星光影城", 20, "#b71c1c", "lm", bold=True)
    for i, line in enumerate(("影片：流浪星球", "场次：2025-06-14 19:30", "影厅：3号厅 IMAX", "座位：7排12座", "票价：45.00元")):
        text(d, (84, 80 + i * 26), line, 14, "#222", "lm")
    text(d, (84, 212), "请提前10分钟入场", 12, "#777", "lm")
    text(d, (331, 54), "副券", 16, "#b71c1c", "mm", bold=True)
    for i, line in enumerate(("3号厅", "7排", "12座")):
        text(d, (331, 100 + i * 28), line, 14, "#222", "mm")
    rng = random.Random(7)  # fixed seed: the same popcorn every run
    for _ in range(26):
        x, y = rng.randint(8, 64), rng.randint(176, 196)
        d.ellipse((x - 6, y - 6, x + 6, y + 6), fill="#fff3c4", outline="#e6c66e")
    d.polygon([(4, 192), (70, 192), (60, 286), (14, 286)], fill="white")
    for k in range(3):
        x = 12 + k * 20
        d.polygon([(x, 192), (x + 10, 192), (x + 8, 286), (x + 2, 286)], fill="#d32f2f")


def park_map(d):
    """Park guide 湖滨公园导览图: lake 镜湖, ring path, five places, 您在这里 next to 正门."""
    d.rectangle((0, 0, W, H), fill="#9ccc65")
    d.rectangle((14, 8, 370, 280), fill="#6d4c41")
    text(d, (192, 27), "湖滨公园导览图", 20, "white", "mm", bold=True)
    d.rectangle((26, 44, 358, 270), fill="#dcedc8")
    path = "#e8d9b5"
    d.ellipse((92, 86, 292, 216), outline=path, width=8)
    for seg in (((192, 214), (192, 252)), ((112, 106), (66, 78)), ((272, 106), (316, 80)),
                ((290, 160), (326, 168)), ((108, 190), (60, 212))):
        d.line(seg, fill=path, width=8)
    d.ellipse((112, 100, 272, 200), fill="#64b5f6")
    text(d, (192, 150), "镜湖", 18, "white", "mm", bold=True)
    d.rectangle((52, 60, 72, 80), fill="#fdd835", outline="#555")
    text(d, (62, 94), "儿童乐园", 13, "#333", "mm")
    d.polygon([(304, 66), (318, 54), (332, 66)], fill="#d32f2f")
    d.rectangle((308, 66, 328, 78), fill="#ffccbc", outline="#d32f2f")
    text(d, (318, 94), "荷花亭", 13, "#333", "mm")
    d.rectangle((318, 158, 342, 178), fill="#1e88e5")
    text(d, (330, 168), "WC", 11, "white", "mm")
    text(d, (330, 192), "公共厕所", 13, "#333", "mm")
    d.rectangle((46, 204, 66, 224), fill="#fb8c00")
    text(d, (56, 214), "i", 14, "white", "mm", bold=True)
    text(d, (56, 238), "游客中心", 13, "#333", "mm")
    d.rectangle((180, 248, 204, 264), fill="#8d6e63")
    text(d, (212, 256), "正门", 13, "#333", "lm")
    d.ellipse((152, 246, 164, 258), fill="#d32f2f")
    text(d, (146, 252), "您在这里", 12, "#d32f2f", "rm")


def dumpling_menu(d):
    """Dumpling house 东北饺子馆: six hanging wooden boards (filling + price) and 每份15个 · 可打包 · 现包现煮."""
    d.rectangle((0, 0, W, H), fill="#f4ead5")
    d.rectangle((92, 10, 292, 52), fill="#c62828")
    text(d, (192, 31), "东北饺子馆", 24, "#ffe082", "mm", bold=True)
    items = (("猪肉白菜", "22元"), ("韭菜鸡蛋", "20元"), ("三鲜", "26元"), ("牛肉大葱", "28元"),
             ("酸菜猪肉", "22元"), ("香菇鸡肉", "24元"))
    for i, (name, price) in enumerate(items):
        x0 = 20 + i * 58
        d.line((x0 + 25, 56, x0 + 25, 66), fill="#5d4037", width=2)
        d.rectangle((x0, 66, x0 + 50, 236), fill="#d7a86e", outline="#8d5a2b", width=2)
        vtext(d, x0 + 25, 86, name, 18, "#3e2723", step=23)
        text(d, (x0 + 25, 220), price, 14, "#c62828", "mm", bold=True)
    text(d, (192, 262), "每份15个 · 可打包 · 现包现煮", 15, "#5d4037", "mm")


def mooncake_box(d):
    """Mooncake gift box 花好月圆: red with gold borders, four corner cloud ornaments, a golden moon."""
    d.rectangle((0, 0, W, H), fill="#f6efe3")
    d.rectangle((54, 38, 346, 270), fill="#d8cbb5")
    d.rectangle((46, 30, 338, 262), fill="#b71c1c", outline="#d4af37", width=4)
    d.rectangle((56, 40, 328, 252), outline="#d4af37", width=1)
    for cx, cy, start in ((62, 46, 0), (322, 46, 90), (322, 246, 180), (62, 246, 270)):
        for r in (10, 18, 26):
            d.arc((cx - r, cy - r, cx + r, cy + r), start, start + 90, fill="#d4af37", width=2)
    d.ellipse((138, 52, 246, 160), fill="#e0a800")
    d.ellipse((144, 58, 240, 154), fill="#f2c94c")
    text(d, (192, 188), "花好月圆", 30, "#f2c94c", "mm", bold=True)
    text(d, (192, 220), "中秋月饼礼盒", 16, "#ffe9a8", "mm")
    text(d, (192, 242), "6枚装 · 净含量480克", 13, "#ffe9a8", "mm")


#: Sample id -> the function drawing its image.
SCENES = {
    "conversation_0001": bakery,
    "conversation_0002": metro_sign,
    "conversation_0003": bus_stop,
    "conversation_0004": medicine_box,
    "conversation_0005": blackboard,
    "conversation_0006": weather_board,
    "conversation_0007": train_ticket,
    "conversation_0008": fruit_stall,
    "conversation_0009": parking_notice,
    "conversation_0010": bookstore,
    "complex_reasoning_0001": restaurant_menu,
    "complex_reasoning_0002": notice_board,
    "complex_reasoning_0003": school_zone,
    "complex_reasoning_0004": receipt,
    "complex_reasoning_0005": milk_carton,
    "complex_reasoning_0006": mall_directory,
    "complex_reasoning_0007": wet_floor,
    "complex_reasoning_0008": queue_display,
    "complex_reasoning_0009": flight_board,
    "complex_reasoning_0010": garbage_bins,
    "detail_description_0001": milk_tea_shop,
    "detail_description_0002": hotpot_front,
    "detail_description_0003": sports_day,
    "detail_description_0004": highway_sign,
    "detail_description_0005": pharmacy,
    "detail_description_0006": museum_exhibit,
    "detail_description_0007": cinema_ticket,
    "detail_description_0008": park_map,
    "detail_description_0009": dumpling_menu,
    "detail_description_0010": mooncake_box,
}


# ------------------------------------------------------------------------------------------------ writing


def draw(sample_id: str) -> bytes:
    """The JPEG bytes of one sample's image."""
    img = Image.new("RGB", (W, H), "white")
    SCENES[sample_id](ImageDraw.Draw(img))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=JPEG_QUALITY, optimize=True)
    return buf.getvalue()


def record(sample) -> dict:
    """The LLaVA record of one sample: ``<image>`` once, before (or after) the first question."""
    turns = []
    for i, (question, answer) in enumerate(sample.turns):
        if i == 0:
            question = f"{question}\n{PLACEHOLDER}" if sample.image_last else f"{PLACEHOLDER}\n{question}"
        turns += [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]
    return {"id": sample.id, "image": f"{sample.id}.jpg", "conversations": turns}


def write(out: Path) -> None:
    """Write ``<task>.json`` for every task and ``images/<id>.jpg`` for every sample under ``out``."""
    ids = [s.id for samples in SAMPLES.values() for s in samples]
    if sorted(ids) != sorted(SCENES):
        raise SystemExit(f"texts and drawings disagree: {sorted(set(ids) ^ set(SCENES))}")
    (out / "images").mkdir(parents=True, exist_ok=True)
    for task, samples in SAMPLES.items():
        records = [record(s) for s in samples]
        (out / f"{task}.json").write_text(json.dumps(records, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        for s in samples:
            (out / "images" / f"{s.id}.jpg").write_bytes(draw(s.id))
        print(f"{task}: {len(records)} samples")
    print(f"wrote {out}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})")
    write(parser.parse_args(argv).out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
