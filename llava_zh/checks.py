"""Validation rules for one record, written as plain checks for the hot path, and over Arrow tables.

``schemas/llava_sample.schema.json`` is the definition of a record's shape; ``check_record`` applies the
same rules in plain Python (about 50x faster than ``jsonschema``), and ``tests/test_checks_property.py``
shows on generated records that both give the same verdict and name the same rule. On top of the schema
it checks what a schema cannot say: the order of roles, the ``<image>`` placeholder, the safety of the
image path; ``check_image_bytes`` looks at the image header. ``flag_table`` runs the same rules over a
whole Arrow table at once and marks the rows that ``check_record`` must see.

Each check returns ``None`` or a ``Problem(rule, message)`` whose message says expected vs got.

Example:
    >>> check_record({"id": "a", "conversations": [{"from": "gpt", "value": "hi"}]}).rule
    'role_order'
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from .roles import is_known_role, to_llava_role
from .schema import GPT, HUMAN, IMAGE_PLACEHOLDER, SYSTEM, TASKS

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_DRIVE = re.compile(r"^[A-Za-z]:")
# optional string fields, and whether the schema lets them be blank (all three carry ``"pattern": "\\S"``;
# the flag stays so a field the schema lets be blank can say so in one place)
_OPTIONAL_STRINGS = (("image", False), ("language", False), ("source", False))


@dataclass(frozen=True, slots=True)
class Problem:
    """A broken rule (one of ``llava_zh.schema.RULES``) and what was expected vs found."""

    rule: str
    message: str


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _check_string(value: Any, what: str, blank_ok: bool = False) -> Optional[Problem]:
    if type(value) is not str and not isinstance(value, str):
        return Problem("schema", f"{what} must be a string, got {_type_name(value)}")
    # ``not value`` is ``"minLength": 1``; ``value.isspace()`` is ``"pattern": "\\S"`` failing, without a regex
    if not value or (not blank_ok and value.isspace()):
        return Problem("empty_value", f"{what} must not be empty{'' if blank_ok else ' or blank'}, got {value!r}")
    return None


def check_schema(record: Any) -> Optional[Problem]:
    """The rules of ``llava_sample.schema.json``: required fields, types, non-blank strings, task names."""
    if not isinstance(record, dict):
        return Problem("schema", f"a record must be a JSON object, got {_type_name(record)}")
    if "id" not in record:
        return Problem("schema", "missing required field 'id'")
    if "conversations" not in record:
        return Problem("schema", "missing required field 'conversations'")
    problem = _check_string(record["id"], "'id'")
    if problem:
        return problem
    for key, blank_ok in _OPTIONAL_STRINGS:
        if key in record:
            problem = _check_string(record[key], f"'{key}'", blank_ok)
            if problem:
                return problem
    if "task" in record:
        task = record["task"]
        if not isinstance(task, str) or task not in TASKS:
            return Problem("schema", f"'task' must be one of {list(TASKS)}, got {task!r}")
    conversations = record["conversations"]
    if not isinstance(conversations, list):
        return Problem("schema", f"'conversations' must be a list, got {_type_name(conversations)}")
    if not conversations:
        return Problem("schema", "'conversations' must hold at least one turn, got an empty list")
    for i, turn in enumerate(conversations):
        if not isinstance(turn, dict):
            return Problem("schema", f"turn {i} must be an object with 'from' and 'value', got {_type_name(turn)}")
        if "from" not in turn or "value" not in turn:
            missing = "from" if "from" not in turn else "value"
            return Problem("schema", f"turn {i} is missing required field '{missing}'")
        role, value = turn["from"], turn["value"]
        if type(role) is not str or type(value) is not str or not role or not value or role.isspace() or value.isspace():
            for key in ("from", "value"):
                problem = _check_string(turn[key], f"turn {i} '{key}'")
                if problem:
                    return problem
    return None


def check_roles(conversations: list[Mapping[str, Any]]) -> Optional[Problem]:
    """Roles alternate human/gpt, start with human (after an optional system turn) and end with gpt."""
    expected = HUMAN
    for i, turn in enumerate(conversations):
        role = turn["from"]
        if not is_known_role(role):
            return Problem("role_order", f"turn {i}: unknown role {role!r}; expected human/user or gpt/assistant")
        role = to_llava_role(role)
        if role == SYSTEM:
            if i == 0:
                continue
            return Problem("role_order", f"turn {i}: a system turn may only come first, got it at turn {i}")
        if role != expected:
            return Problem("role_order", f"turn {i}: expected {expected}, got {role}")
        expected = GPT if role == HUMAN else HUMAN
    if expected != HUMAN:
        return Problem("role_order", "the conversation must end with a gpt turn, got a human turn last")
    return None


def check_placeholder(record: Mapping[str, Any], has_image: bool) -> Optional[Problem]:
    """An image sample has exactly one ``<image>``, in its first human turn; a text-only sample has none."""
    counts = [turn["value"].count(IMAGE_PLACEHOLDER) for turn in record["conversations"]]
    total = sum(counts)
    if not has_image:
        if total:
            return Problem("image_placeholder", f"a sample without an image must not hold {IMAGE_PLACEHOLDER}, found {total}")
        return None
    if total != 1:
        return Problem("image_placeholder", f"expected exactly one {IMAGE_PLACEHOLDER} placeholder, found {total}")
    first_human = next(
        i for i, turn in enumerate(record["conversations"]) if to_llava_role(turn["from"]) == HUMAN
    )
    if counts[first_human] != 1:
        where = counts.index(1)
        return Problem("image_placeholder", f"{IMAGE_PLACEHOLDER} must be in the first human turn ({first_human}), found it in turn {where}")
    return None


def check_image_path(path: str) -> Optional[Problem]:
    """The image path is relative and cannot leave its container (no ``..``, no absolute path, no URL)."""
    if _SCHEME.match(path):
        return Problem("unsafe_image_path", f"expected a relative path, got a URL {path!r}")
    normalised = path.replace("\\", "/")
    if normalised.startswith("/") or _DRIVE.match(normalised):
        return Problem("unsafe_image_path", f"expected a relative path, got an absolute one {path!r}")
    if ".." in normalised.split("/"):
        return Problem("unsafe_image_path", f"the path {path!r} climbs out of its container with '..'")
    return None


def check_record(record: Any, *, text_only: bool = False) -> Optional[Problem]:
    """All the rules that need only the record itself, in the order they are reported."""
    problem = check_schema(record)
    if problem:
        return problem
    problem = check_roles(record["conversations"])
    if problem:
        return problem
    has_image = "image" in record and not text_only
    if has_image:
        problem = check_image_path(record["image"])
        if problem:
            return problem
    if not text_only:
        return check_placeholder(record, has_image)
    return None


_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _jpeg_size(data: bytes) -> Optional[tuple[int, int]]:
    """Width and height from a JPEG's frame header, walking the marker segments; None if not plain."""
    pos, end = 2, len(data)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _SOF_MARKERS:
            if pos + 9 > end:
                return None
            height = (data[pos + 5] << 8) | data[pos + 6]
            width = (data[pos + 7] << 8) | data[pos + 8]
            return (width, height) if width and height else None
        if marker == 0xD8 or 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a length
            pos += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image or start of scan before any frame header
            return None
        pos += 2 + ((data[pos + 2] << 8) | data[pos + 3])
    return None


#: marker segments walked per JPEG by ``jpeg_sizes`` before it leaves the image to the exact check
_MAX_SEGMENTS = 32


def images_known_good(data, offsets, found):
    """True for every image of a batch that ``check_image_bytes`` is sure to accept, decided for all of
    them at once: a JPEG whose size (``jpeg_sizes``) is within Pillow's limit. False means "not proven
    here": those images go through ``check_image_bytes`` one by one, which names the rule.

    ``data`` is the batch's ``uint8`` buffer, image ``i`` being ``data[offsets[i]:offsets[i + 1]]``.
    """
    width, height = jpeg_sizes(data, offsets, found)
    good = (width > 0) & (height > 0)
    limit = _pil_image().MAX_IMAGE_PIXELS
    if limit is not None:
        good &= width * height <= limit
    return good


def jpeg_sizes(data, offsets, found):
    """``(widths, heights)`` of the JPEGs of a batch, 0 where ``_jpeg_size`` finds none: the same walk
    over the marker segments, taken by every image in step (a few numpy operations per segment
    instead of a Python loop per image)."""
    import numpy as np

    starts, ends = offsets[:-1], offsets[1:]
    width = np.zeros(len(starts), dtype=np.int64)
    height = np.zeros(len(starts), dtype=np.int64)
    live = np.flatnonzero(found & (ends - starts >= 4))
    if not len(live):
        return width, height
    s = starts[live]
    live = live[(data[s] == 0xFF) & (data[s + 1] == 0xD8) & (data[s + 2] == 0xFF)]
    pos = starts[live] + 2
    frame_at = np.full(len(starts), -1, dtype=np.int64)  # where each image's frame header (SOF) starts
    last = len(data) - 4  # the four bytes of a segment's head are read at min(pos, last): always in the buffer
    four = np.arange(4)
    steps, walks, with_length, sof = _jpeg_marker_tables()
    for _ in range(_MAX_SEGMENTS):
        if not len(live):
            break
        head = data[np.minimum(pos, last)[:, None] + four]  # 0xFF, marker, length (big-endian)
        words = head.view(">u2")  # (0xFF << 8 | marker, length)
        marker = head[:, 1]
        ok = (pos + 4 <= ends[live]) & (words[:, 0] >= 0xFF00)
        frame = ok & sof[marker]
        frame_at[live[frame]] = pos[frame]
        walk = ok & walks[marker]  # a frame header, end of image or start of scan ends the walk
        live, pos = live[walk], (pos + steps[marker] + with_length[marker] * words[:, 1])[walk]
    frame_at[(frame_at >= 0) & (frame_at + 9 > ends)] = -1  # a frame header cut short: not plain
    rows = np.flatnonzero(frame_at >= 0)
    p = frame_at[rows]
    h = (data[p + 5].astype(np.int64) << 8) | data[p + 6]
    w = (data[p + 7].astype(np.int64) << 8) | data[p + 8]
    proven = (w > 0) & (h > 0)  # _jpeg_size: "not plain" otherwise
    width[rows[proven]], height[rows[proven]] = w[proven], h[proven]
    return width, height


_MARKER_TABLES = None


def _jpeg_marker_tables():
    """Per marker byte: the step past its segment without the length field, whether the walk goes on
    after it, whether the length field adds to the step, whether it is a frame header (SOF)."""
    global _MARKER_TABLES
    if _MARKER_TABLES is None:
        import numpy as np

        steps = np.full(256, 2, dtype=np.int64)
        steps[0xFF] = 1  # fill byte
        with_length = np.ones(256, dtype=np.int64)  # int64: the length it multiplies must not overflow
        with_length[[0xFF, 0xD8, 0x01, *range(0xD0, 0xD8)]] = 0  # fill byte and markers without a length
        sof = np.zeros(256, dtype=bool)
        sof[list(_SOF_MARKERS)] = True
        walks = ~sof
        walks[[0xD9, 0xDA]] = False  # end of image, start of scan: no frame header before them
        _MARKER_TABLES = (steps, walks, with_length, sof)
    return _MARKER_TABLES


_PIL_IMAGE = None


def _pil_image():
    """``PIL.Image``, imported once (an import statement per image costs more than the header check)."""
    global _PIL_IMAGE
    if _PIL_IMAGE is None:
        from PIL import Image

        _PIL_IMAGE = Image
    return _PIL_IMAGE


def _sniff_size(data: bytes) -> Optional[tuple[int, int]]:
    """The size of a JPEG or PNG read straight from its header (the common formats, 10x faster than
    opening them with Pillow); None means "let Pillow decide"."""
    if data[:3] == b"\xff\xd8\xff":
        return _jpeg_size(data)
    if data[:8] == _PNG_SIGNATURE and data[12:16] == b"IHDR" and len(data) >= 24:
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        return (width, height) if width and height else None
    return None


def check_image_bytes(data: bytes, path: str) -> Optional[Problem]:
    """The image header decodes and its size stays under Pillow's decompression-bomb limit."""
    Image = _pil_image()
    size = _sniff_size(data)
    if size is None:
        from PIL import UnidentifiedImageError

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(io.BytesIO(data)) as im:
                    size = im.size
        except Image.DecompressionBombError as e:
            return Problem("image_too_large", f"{path}: {e}")
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            return Problem("undecodable_image", f"{path}: expected an image Pillow can read, got {len(data)} bytes that fail: {e}")
    width, height = size
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and width * height > limit:
        return Problem(
            "image_too_large",
            f"{path}: {width}x{height} = {width * height} pixels exceeds Pillow's limit of {limit} (PIL.Image.MAX_IMAGE_PIXELS)",
        )
    return None


# --- the same rules over an Arrow table, for the hot path ----------------------------------------
#
# ``flag_table`` looks at a whole block of records at once and marks every row that *might* break a rule;
# the rows it leaves unmarked are exactly rows ``check_record`` accepts (``tests/test_checks_property.py``
# checks this on generated records), and the marked ones go through ``check_record`` itself, which names
# the rule. A mark is cheap to over-give: an unusual but valid row (a role spelt ``USER``) is just
# checked the slow way.

#: every character ``str.isspace`` (and the schema's ``\S``, with Python's ``re``) counts as whitespace
PY_WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
    "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
# the ``check_image_path`` rules as one RE2 pattern: a URL, an absolute path, a drive, a ``..`` part
_UNSAFE_PATH = r"^[A-Za-z][A-Za-z0-9+.-]*://|^[/\\]|^[A-Za-z]:|(^|[/\\])\.\.([/\\]|$)"
#: exact spellings of roles, in the order of ``ROLE_LLAVA``; other spellings are checked row by row
ROLE_SPELLINGS: tuple[str, ...] = ("human", "gpt", "system", "user", "assistant", "用户", "助手", "系统")
ROLE_LLAVA: tuple[str, ...] = tuple(to_llava_role(r) for r in ROLE_SPELLINGS)
_ROLE_CLASS = {HUMAN: 0, GPT: 1, SYSTEM: 2}
_OPTIONAL_COLUMNS = ("image", "language", "source", "task")


def _role_classes():
    import numpy as np

    return np.array([_ROLE_CLASS[r] for r in ROLE_LLAVA], dtype=np.int8)


def _np(mask):
    """A boolean Arrow array as numpy, nulls read as False."""
    import pyarrow.compute as pc

    return pc.fill_null(mask, False).to_numpy(zero_copy_only=False)


# first bytes (in UTF-8) of every whitespace character: a string starting with any other byte is not blank
_SPACE_LEAD_BYTES = sorted({c.encode()[0] for c in PY_WHITESPACE})


def _nonblank(array):
    """True where a string is neither empty nor only whitespace (where ``not v or v.isspace()`` fails),
    False for nulls. Decided from the first byte of each string; only the few strings that open with a
    byte some whitespace character opens with are looked at in Python."""
    import numpy as np
    import pyarrow as pa

    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if not pa.types.is_string(array.type):
        array = array.cast(pa.string())
    n = len(array)
    _, offsets_buffer, data_buffer = array.buffers()
    if offsets_buffer is None:  # all null
        return np.zeros(n, dtype=bool)
    offsets = np.frombuffer(offsets_buffer, dtype=np.int32)[array.offset: array.offset + n + 1]
    data = np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer is not None and data_buffer.size else np.zeros(1, np.uint8)
    starts = offsets[:-1]
    filled = offsets[1:] > starts
    first = data[np.minimum(starts, len(data) - 1)]
    result = filled & ~np.isin(first, _SPACE_LEAD_BYTES) & _np(array.is_valid())
    doubt = np.flatnonzero(filled & ~result & _np(array.is_valid()))
    if len(doubt):
        texts = array.take(pa.array(doubt)).to_pylist()
        result[doubt] = [not t.isspace() for t in texts]
    return result


def role_indices(roles):
    """Index of each role in ``ROLE_SPELLINGS`` (null for any other spelling)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.index_in(roles, value_set=pa.array(ROLE_SPELLINGS))


class TurnLayout:
    """Where the turns of a list<struct<from, value>> column sit: per row its length, first turn and
    whether it opens with a system turn; per turn its row, position, role (``role_class``: 0 human,
    1 gpt, 2 system, for the exact spellings in ``ROLE_SPELLINGS``) and text."""

    def __init__(self, conversations) -> None:
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        if isinstance(conversations, pa.ChunkedArray):
            conversations = conversations.combine_chunks()
        self.conversations = conversations
        n = len(conversations)
        self.lengths = pc.fill_null(pc.list_value_length(conversations), 0).to_numpy(zero_copy_only=False)
        self.turns = pc.list_flatten(conversations)
        self.parents = pc.list_parent_indices(conversations).to_numpy(zero_copy_only=False)
        self.roles = pc.struct_field(self.turns, "from")
        self.values = pc.struct_field(self.turns, "value")
        self.spelling = role_indices(self.roles)
        self.known = _np(self.spelling.is_valid())
        self.role_class = _role_classes()[pc.fill_null(self.spelling, 0).to_numpy(zero_copy_only=False)]
        self.starts = np.zeros(n, dtype=np.int64)
        np.cumsum(self.lengths[:-1], out=self.starts[1:])
        self.position = np.arange(len(self.turns)) - self.starts[self.parents]
        self.system_first = np.zeros(n, dtype=np.int64)
        self.system_first[self.parents[(self.role_class == 2) & (self.position == 0)]] = 1


def flag_table(table, *, text_only: bool = False, mentions_null=None, layout: Optional["TurnLayout"] = None):
    """Rows of ``table`` (columns as ``llava_zh.readers.input_schema``) that ``check_record`` must look at.

    Returns a numpy boolean array; an unmarked row passes ``check_record(row, text_only=text_only)``.
    ``mentions_null`` marks rows whose text holds a JSON ``null``: there a null column may be an explicit
    ``null`` (a schema error) rather than an absent field. ``layout`` is the table's ``TurnLayout`` when
    the caller has it already.

    Example:
        >>> import pyarrow.json as paj, io                                   # doctest: +SKIP
        >>> flag_table(paj.read_json(io.BytesIO(b'{"id": " ", "conversations": []}')))   # doctest: +SKIP
        array([ True])
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    n = table.num_rows
    names = set(table.column_names)
    if "id" not in names or "conversations" not in names:
        return np.ones(n, dtype=bool)
    flagged = ~_nonblank(table["id"])  # null or blank id
    optional = {name: table[name] for name in _OPTIONAL_COLUMNS if name in names}
    for name in ("image", "language", "source"):
        if name in optional:
            column = optional[name]
            flagged |= _np(column.is_valid()) & ~_nonblank(column)
    if "task" in optional:
        task = optional["task"]
        flagged |= _np(task.is_valid()) & ~_np(pc.is_in(task, value_set=pa.array(TASKS)))
    if mentions_null is not None:
        some_null = np.zeros(n, dtype=bool)
        for column in optional.values():
            some_null |= _np(column.is_null())
        flagged |= some_null & np.asarray(mentions_null, dtype=bool)

    layout = layout or TurnLayout(table["conversations"])
    lengths, parents, position, system_first = layout.lengths, layout.parents, layout.position, layout.system_first
    flagged |= _np(layout.conversations.is_null()) | (lengths == 0)
    values = layout.values
    bad_turn = ~_np(layout.turns.is_valid()) | ~_nonblank(layout.roles) | ~_nonblank(values)
    # roles: human/gpt alternate from human (after an optional first system turn) and end with gpt
    bad_turn |= ~layout.known
    is_system = layout.role_class == 2
    bad_turn |= is_system & (position != 0)
    bad_turn |= ~is_system & (layout.role_class != ((position - system_first[parents]) % 2))
    flagged |= (lengths - system_first) % 2 != 0

    if not text_only:
        # exactly one <image> in the first human turn of an image sample, none in a text-only one
        counts = pc.fill_null(pc.count_substring_regex(values, "<image>"), 0).to_numpy(zero_copy_only=False)
        total = np.bincount(parents, weights=counts, minlength=n)
        first_human = np.zeros(n, dtype=np.float64)
        at_first = position == system_first[parents]
        first_human[parents[at_first]] = counts[at_first]
        has_image = _np(optional["image"].is_valid()) if "image" in optional else np.zeros(n, dtype=bool)
        flagged |= np.where(has_image, (total != 1) | (first_human != 1), total != 0)
        if "image" in optional:
            flagged |= has_image & _np(pc.match_substring_regex(optional["image"], _UNSAFE_PATH))

    if bad_turn.any():
        flagged[parents[bad_turn]] = True
    return flagged
