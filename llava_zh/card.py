"""The dataset card of a published copy: YAML metadata the Hub and ``datasets`` read, and a body made from the data.

The metadata is built with ``huggingface_hub``'s ``DatasetCardData`` and ``datasets``' own serialisers for
``configs`` and ``dataset_info`` (so ``datasets.load_dataset(repo, config)`` reads back exactly what was
written); ``check_card`` re-parses a card offline the way the Hub and ``datasets`` do and compares it with
the files it points at.

Example:
    >>> from llava_zh.card import size_category
    >>> size_category(641_868)
    '100K<n<1M'
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

from .schema import DATASET_NAME, HUB_ID, TASKS

# The upstream card's license could not be confirmed from the reference material available offline;
# apache-2.0 is assumed, as declared by OpenCSG's sibling Chinese datasets on the Hub. Pass
# ``license=`` to ``publish`` to state another one.
DEFAULT_LICENSE = "apache-2.0"
#: Hub task ids for image + text instruction data (and for a text-only copy).
IMAGE_TASK_CATEGORIES: tuple[str, ...] = ("visual-question-answering", "image-text-to-text")
TEXT_TASK_CATEGORIES: tuple[str, ...] = ("text-generation",)
TAGS: tuple[str, ...] = ("llava", "instruction-tuning", "multimodal", "chinese", "synthetic", "llava-zh")

#: Upper bounds of the Hub's size categories, in order.
_SIZE_CATEGORIES: tuple[tuple[int, str], ...] = (
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
    (100_000_000, "10M<n<100M"),
    (1_000_000_000, "100M<n<1B"),
)
SIZE_CATEGORIES: tuple[str, ...] = tuple(name for _, name in _SIZE_CATEGORIES) + ("n>1B",)

TASK_TITLES: Mapping[str, str] = {
    "conversation": "日常对话 (conversation)",
    "complex_reasoning": "复杂推理 (complex reasoning)",
    "detail_description": "描述图片 (detailed description)",
}

_CITATION = """\
@misc{opencsg2025llavainstructzh,
  title        = {llava-instruct-zh-600k: Chinese visual instruction data synthesised with Qwen2.5-VL-32B-Instruct},
  author       = {{OpenCSG}},
  year         = {2025},
  howpublished = {\\url{https://huggingface.co/datasets/opencsg/llava-instruct-zh-600k}}
}

@inproceedings{liu2023llava,
  title     = {Visual Instruction Tuning},
  author    = {Liu, Haotian and Li, Chunyuan and Wu, Qingyang and Lee, Yong Jae},
  booktitle = {Advances in Neural Information Processing Systems},
  year      = {2023},
  eprint    = {2304.08485},
  archivePrefix = {arXiv}
}

@article{qwen2025qwen25vl,
  title   = {Qwen2.5-VL Technical Report},
  author  = {{Qwen Team}},
  journal = {arXiv preprint arXiv:2502.13923},
  year    = {2025}
}"""


class CardError(ValueError):
    """A dataset card whose metadata does not parse, or does not match the files it describes."""


def size_category(num_rows: int) -> str:
    """The Hub's ``size_categories`` value for a number of rows.

    Example:
        >>> size_category(999), size_category(1000), size_category(2_000_000_000)
        ('n<1K', '1K<n<10K', 'n>1B')
    """
    for bound, name in _SIZE_CATEGORIES:
        if num_rows < bound:
            return name
    return "n>1B"


@dataclass
class SplitLayout:
    """One split of one config: the data-file patterns the card declares and what they hold."""

    patterns: list[str]
    num_examples: int
    num_bytes: int
    download_size: int


@dataclass
class ConfigLayout:
    """One config of the published repo; ``members`` lists the stored configs a union config reads."""

    name: str
    splits: dict[str, SplitLayout]
    features: Any = None
    default: bool = False
    members: tuple[str, ...] = ()


@dataclass
class DataStats:
    """What the card body reports, counted from the data (not from the upstream card)."""

    #: task -> split -> rows
    task_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    #: task -> rows with an image
    with_image: dict[str, int] = field(default_factory=dict)
    #: task -> total human turns (rounds)
    rounds: dict[str, int] = field(default_factory=dict)
    languages: dict[str, int] = field(default_factory=dict)
    sources: dict[str, int] = field(default_factory=dict)
    has_images: bool = True

    @property
    def total(self) -> int:
        return sum(n for per_split in self.task_counts.values() for n in per_split.values())


def card_languages(stats: "DataStats") -> list[str]:
    """ISO 639 codes for the card's ``language``: the primary subtag of each value (``zh-CN`` -> ``zh``)."""
    codes = {str(v).replace("_", "-").split("-")[0].lower() for v in stats.languages}
    return sorted(c for c in codes if c.isalpha() and 2 <= len(c) <= 3) or ["zh"]


_LANGUAGE_NAMES = {"zh": "Chinese", "en": "English"}


def _ordered_tasks(tasks) -> list[str]:
    known = [t for t in TASKS if t in tasks]
    return known + sorted(t for t in tasks if t not in TASKS)


def build_card_data(
    layouts: Sequence[ConfigLayout], stats: DataStats, *, pretty_name: str, license: Optional[str] = None
):
    """The card's YAML as a ``DatasetCardData``: license, language, tasks, size, ``configs``, ``dataset_info``."""
    from datasets.info import DatasetInfo, DatasetInfosDict
    from datasets.splits import SplitDict, SplitInfo
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCardData

    languages = card_languages(stats)
    card_data = DatasetCardData(
        pretty_name=pretty_name,
        license=license or DEFAULT_LICENSE,
        language=languages,
        multilinguality="monolingual" if len(languages) == 1 else "multilingual",
        task_categories=list(IMAGE_TASK_CATEGORIES if stats.has_images else TEXT_TASK_CATEGORIES),
        size_categories=[size_category(stats.total)],
        annotations_creators=["machine-generated"],
        language_creators=["machine-generated"],
        tags=list(TAGS),
    )
    infos = {}
    for layout in layouts:
        info = DatasetInfo(
            config_name=layout.name, features=layout.features, splits=SplitDict(), download_size=0, dataset_size=0
        )
        for split, sl in layout.splits.items():
            info.splits.add(SplitInfo(name=split, num_bytes=sl.num_bytes, num_examples=sl.num_examples))
            info.download_size += sl.download_size
            info.dataset_size += sl.num_bytes
        info.size_in_bytes = info.download_size + info.dataset_size
        infos[layout.name] = info
    DatasetInfosDict(infos).to_dataset_card_data(card_data)
    configs = {}
    for layout in layouts:
        entry: dict[str, Any] = {
            "data_files": [
                {"split": split, "path": sl.patterns[0] if len(sl.patterns) == 1 else list(sl.patterns)}
                for split, sl in layout.splits.items()
            ]
        }
        if layout.default:
            entry["default"] = True
        configs[layout.name] = entry
    MetadataConfigs(configs).to_dataset_card_data(card_data)
    return card_data


def _fmt(n: int) -> str:
    return f"{n:,}"


def _prompts_section(stats: DataStats) -> str:
    """The generation prompts of each task present, in each language the data uses (zh when unknown)."""
    from .regenerate.prompts import PROMPTS

    languages = [lang for lang in sorted(stats.languages) if any(k[1] == lang for k in PROMPTS)] or ["zh"]
    parts = [
        "## Generation prompts",
        "",
        "Each sample was made by giving one image and one of these instructions to a vision-language model "
        "(Qwen2.5-VL-32B-Instruct for the original data) and parsing its reply into turns. "
        "Conversation replies use the `用户:...` / `助手:...` format, complex reasoning `问题:...` / `回答:...`, "
        "and a description is the whole reply.",
    ]
    for task in _ordered_tasks(stats.task_counts):
        for lang in languages:
            prompt = PROMPTS.get((task, lang))
            if prompt is None:
                continue
            parts += ["", f"### {TASK_TITLES.get(task, task)} · `{prompt.id}`", "", "```text", prompt.text, "```"]
    return "\n".join(parts)


def build_card_body(
    layouts: Sequence[ConfigLayout],
    stats: DataStats,
    *,
    repo_id: str,
    pretty_name: str,
    description: Optional[str] = None,
) -> str:
    """The Markdown body: what the data is, samples per task (counted), prompts, usage, citation."""
    default = next((layout.name for layout in layouts if layout.default), layouts[0].name)
    tasks = _ordered_tasks(stats.task_counts)
    splits = sorted({s for per_split in stats.task_counts.values() for s in per_split}, key=lambda s: (s != "train", s))
    lines = [f"# {pretty_name}", ""]
    if description:
        lines += [description.strip(), ""]
    langs = card_languages(stats)
    what = " and ".join(_LANGUAGE_NAMES.get(code, f"`{code}`") for code in langs)
    each = "a conversation about one image" if stats.has_images else "a text-only conversation"
    lines += [
        f"{what} {'visual ' if stats.has_images else ''}instruction-tuning data in the LLaVA format: "
        f"{_fmt(stats.total)} samples, each {each}, grouped by task. It follows "
        f"[{DATASET_NAME}](https://huggingface.co/datasets/{HUB_ID}), which imitates LLaVA-Instruct-150K with "
        "answers synthesised by Qwen2.5-VL-32B-Instruct on images (most with Chinese text) from Chinese websites: "
        "daily conversation (usually five rounds), complex reasoning and detailed description (one round each).",
        "",
        (
            "Images are stored inside the parquet files (`datasets.Image`, the original encoded bytes). "
            if stats.has_images
            else ""
        )
        + "This copy was written by [llava-zh](https://pypi.org/project/llava-zh/).",
        "",
        "## Samples per task",
        "",
        "| task | " + " | ".join(splits) + " | with image | mean rounds |",
        "|---|" + "---:|" * (len(splits) + 2),
    ]
    for task in tasks:
        counts = stats.task_counts[task]
        n = sum(counts.values())
        rounds = stats.rounds.get(task, 0) / n if n else 0.0
        cells = [_fmt(counts.get(s, 0)) for s in splits]
        lines.append(
            f"| {TASK_TITLES.get(task, task)} | "
            + " | ".join(cells)
            + f" | {_fmt(stats.with_image.get(task, 0))} | {rounds:.2f} |"
        )
    totals = [_fmt(sum(stats.task_counts[t].get(s, 0) for t in tasks)) for s in splits]
    lines.append("| **total** | " + " | ".join(totals) + f" | {_fmt(sum(stats.with_image.values()))} | |")
    if stats.languages or stats.sources:
        lines.append("")
        if stats.languages:
            lines.append(
                "Languages: " + ", ".join(f"`{k}` ({_fmt(v)})" for k, v in sorted(stats.languages.items())) + "."
            )
        if stats.sources:
            lines.append("Sources: " + ", ".join(f"`{k}` ({_fmt(v)})" for k, v in sorted(stats.sources.items())) + ".")
    lines += ["", "## Configs", "", "| config | split | rows | files |", "|---|---|---:|---|"]
    for layout in layouts:
        for split, sl in layout.splits.items():
            name = f"**{layout.name}** (default)" if layout.default else layout.name
            files = ", ".join(f"`{p}`" for p in sl.patterns)
            lines.append(f"| {name} | {split} | {_fmt(sl.num_examples)} | {files} |")
    unions = [layout for layout in layouts if layout.members]
    if unions:
        lines += [
            "",
            "A union config (" + ", ".join(f"`{u.name}`" for u in unions) + ") reads the files of the task configs "
            "instead of a copy of them, so every image is stored once.",
        ]
    lines += [
        "",
        "## Fields",
        "",
        "- `id`: sample id; `task`: one of the tasks above; `language`, `source`: where it comes from;",
        "- `image`: the picture (`datasets.Image`; decode with PIL, or cast to `Image(decode=False)` for the bytes);",
        '- `conversations`: the turns, `{"from": "human" | "gpt", "value": ...}`; the first human turn holds `<image>`.',
        "",
    ]
    lines += [_prompts_section(stats), ""]
    other = next((layout.name for layout in layouts if not layout.default), default)
    lines += [
        "## Usage",
        "",
        "With `datasets`:",
        "",
        "```python",
        "from datasets import load_dataset",
        "",
        f'ds = load_dataset("{repo_id}", "{default}", split="{splits[0] if splits else "train"}")',
        'print(ds[0]["conversations"])',
        "",
        "# stream without downloading everything first",
        f'stream = load_dataset("{repo_id}", "{other}", split="{splits[0] if splits else "train"}", streaming=True)',
        'print(next(iter(stream))["id"])',
        "```",
        "",
        "With `llava-zh` (`pip install llava-zh`): validated loading, chat messages for TRL/transformers, exports:",
        "",
        "```python",
        "import llava_zh",
        "",
        f'ds = llava_zh.load_dataset("{repo_id}", config="{other}")',
        "messages = llava_zh.to_messages(ds[0])  # chat messages for TRL / transformers",
        'llava_zh.export(ds, "llamafactory", "out/")',
        "```",
        "",
        "## Citation",
        "",
        "```bibtex",
        _CITATION,
        "```",
        "",
    ]
    return "\n".join(lines)


def render_card(
    layouts: Sequence[ConfigLayout],
    stats: DataStats,
    *,
    repo_id: str,
    pretty_name: Optional[str] = None,
    license: Optional[str] = None,
    description: Optional[str] = None,
) -> str:
    """The README.md text (YAML metadata + body) for a published layout."""
    pretty_name = pretty_name or repo_id.split("/")[-1]
    data = build_card_data(layouts, stats, pretty_name=pretty_name, license=license)
    body = build_card_body(layouts, stats, repo_id=repo_id, pretty_name=pretty_name, description=description)
    return f"---\n{data.to_yaml()}\n---\n\n{body}"


def build_card(layouts: Sequence[ConfigLayout], stats: DataStats, **kwargs):
    """The ``huggingface_hub.DatasetCard`` of ``render_card``."""
    from huggingface_hub import DatasetCard

    return DatasetCard(render_card(layouts, stats, **kwargs))


def check_card(card, local_dir: Optional[str] = None):
    """Check a card offline the way the Hub and ``datasets`` read it; raise ``CardError`` on the first problem.

    Parses the YAML through ``huggingface_hub.DatasetCard`` (and checks it survives a YAML round trip),
    checks the fields the Hub validates by value (``size_categories``, ``license``, ``language``), reads
    ``configs`` and ``dataset_info`` with ``datasets``' own parsers, and, given ``local_dir``, resolves every
    config's data files there and compares row counts with ``num_examples``. Returns the parsed card.

    Example:
        >>> check_card(open("hub_copy/README.md").read(), "hub_copy")  # doctest: +SKIP
    """
    import yaml
    from datasets.info import DatasetInfosDict
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCard

    text = card if isinstance(card, str) else str(card)
    try:
        parsed = DatasetCard(text)
    except Exception as e:  # yaml errors, non-dict metadata
        raise CardError(f"dataset card metadata does not parse: {e}") from e
    data = parsed.data.to_dict()
    again = yaml.load(parsed.data.to_yaml(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    if again != data:
        raise CardError("dataset card metadata changes when written to YAML and read back")
    for key in ("license", "language", "task_categories", "size_categories", "configs", "dataset_info"):
        if not data.get(key):
            raise CardError(f"dataset card metadata lacks {key!r}")
    for value in data["size_categories"]:
        if value not in SIZE_CATEGORIES:
            raise CardError(f"size_categories: expected one of {list(SIZE_CATEGORIES)}, got {value!r}")
    for lang in data["language"]:
        if not (isinstance(lang, str) and 2 <= len(lang) <= 3 and lang.isalpha() and lang.islower()):
            raise CardError(f"language: expected an ISO 639 code like 'zh', got {lang!r}")
    configs = MetadataConfigs.from_dataset_card_data(parsed.data)
    defaults = [name for name, cfg in configs.items() if cfg.get("default")]
    if len(configs) > 1 and len(defaults) != 1:
        raise CardError(f"expected exactly one config with 'default: true', got {defaults}")
    infos = DatasetInfosDict.from_dataset_card_data(parsed.data)
    if set(infos) != set(configs):
        raise CardError(f"configs {sorted(configs)} and dataset_info {sorted(infos)} name different configs")
    if local_dir is None:
        return parsed
    import pyarrow.parquet as pq

    for name, cfg in configs.items():
        split_infos = infos[name].splits
        for entry in cfg["data_files"]:
            split, patterns = entry["split"], entry["path"]
            patterns = [patterns] if isinstance(patterns, str) else list(patterns)
            files = [f for p in patterns for f in sorted(glob.glob(os.path.join(glob.escape(local_dir), p)))]
            if not files:
                raise CardError(f"config {name!r} split {split!r}: no file in {local_dir} matches {patterns}")
            rows = sum(pq.read_metadata(f).num_rows for f in files)
            expected = split_infos[split].num_examples if split in split_infos else None
            if rows != expected:
                raise CardError(
                    f"config {name!r} split {split!r}: dataset_info says {expected} rows, files hold {rows}"
                )
    return parsed


__all__ = [
    "CardError",
    "ConfigLayout",
    "DataStats",
    "SplitLayout",
    "DEFAULT_LICENSE",
    "SIZE_CATEGORIES",
    "build_card",
    "build_card_body",
    "build_card_data",
    "check_card",
    "render_card",
    "size_category",
]
