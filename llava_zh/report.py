"""What a load did: records read, loaded and refused per rule, with example ids and the quarantine file.

Counts always add up: ``read == loaded + refused + other_task`` (``other_task`` are records of another
task than the config asked for, which are not errors).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional

MAX_EXAMPLES = 5


@dataclass(slots=True)
class LoadReport:
    """Counts of one load (or validation) of a source.

    Example:
        >>> r = LoadReport(read=3, loaded=2, refused={"role_order": 1}, examples={"role_order": ["a"]})
        >>> r.ok, r.total_refused
        (False, 1)
    """

    read: int = 0
    loaded: int = 0
    other_task: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    ignored_files: list[str] = field(default_factory=list)
    quarantine_path: Optional[str] = None

    @property
    def total_refused(self) -> int:
        return sum(self.refused.values())

    @property
    def ok(self) -> bool:
        return self.total_refused == 0

    @property
    def balanced(self) -> bool:
        """True when every record read is accounted for."""
        return self.read == self.loaded + self.total_refused + self.other_task

    def add_refusal(self, rule: str, sample_id: Optional[str]) -> None:
        self.refused[rule] = self.refused.get(rule, 0) + 1
        examples = self.examples.setdefault(rule, [])
        if len(examples) < MAX_EXAMPLES:
            examples.append(sample_id if sample_id is not None else "<no id>")

    def merge(self, other: "LoadReport") -> "LoadReport":
        """A new report adding ``other`` to this one (examples capped per rule)."""
        merged = LoadReport.from_dict(self.to_dict())
        merged.read += other.read
        merged.loaded += other.loaded
        merged.other_task += other.other_task
        for rule, n in other.refused.items():
            merged.refused[rule] = merged.refused.get(rule, 0) + n
        for rule, ids in other.examples.items():
            kept = merged.examples.setdefault(rule, [])
            kept.extend(ids[: MAX_EXAMPLES - len(kept)])
        merged.files += [f for f in other.files if f not in merged.files]
        merged.ignored_files += [f for f in other.ignored_files if f not in merged.ignored_files]
        merged.quarantine_path = merged.quarantine_path or other.quarantine_path
        return merged

    @classmethod
    def combine(cls, reports: Iterable["LoadReport"]) -> "LoadReport":
        total = cls()
        for r in reports:
            total = total.merge(r)
        return total

    def to_dict(self) -> dict[str, Any]:
        return {
            "read": self.read,
            "loaded": self.loaded,
            "other_task": self.other_task,
            "refused": dict(self.refused),
            "examples": {k: list(v) for k, v in self.examples.items()},
            "files": list(self.files),
            "ignored_files": list(self.ignored_files),
            "quarantine_path": self.quarantine_path,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "LoadReport":
        return cls(
            read=d.get("read", 0),
            loaded=d.get("loaded", 0),
            other_task=d.get("other_task", 0),
            refused=dict(d.get("refused", {})),
            examples={k: list(v) for k, v in d.get("examples", {}).items()},
            files=list(d.get("files", [])),
            ignored_files=list(d.get("ignored_files", [])),
            quarantine_path=d.get("quarantine_path"),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=2)

    def __str__(self) -> str:
        lines = [f"records read: {self.read}", f"loaded: {self.loaded}"]
        if self.other_task:
            lines.append(f"of another task (not in this config): {self.other_task}")
        lines.append(f"refused: {self.total_refused}")
        for rule in sorted(self.refused):
            ids = ", ".join(self.examples.get(rule, []))
            lines.append(f"  {rule:<18} {self.refused[rule]:>8}   e.g. {ids}")
        if self.quarantine_path:
            lines.append(f"quarantine file: {self.quarantine_path}")
        return "\n".join(lines)
