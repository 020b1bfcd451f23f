"""The error raised for a bad sample: it names the file, the line or index, the sample id and the rule."""

from __future__ import annotations

from typing import Optional


class BadSampleError(ValueError):
    """A record broke a validation rule (see ``llava_zh.schema.RULES``).

    Example:
        >>> str(BadSampleError("a.jsonl", 3, 2, "x1", "role_order", "expected gpt, got human"))
        "a.jsonl:3: sample 'x1' (record 2): role_order: expected gpt, got human"
    """

    def __init__(
        self,
        file: str,
        line: Optional[int],
        index: int,
        sample_id: Optional[str],
        rule: str,
        message: str,
    ) -> None:
        self.file, self.line, self.index, self.sample_id, self.rule, self.message = (
            file,
            line,
            index,
            sample_id,
            rule,
            message,
        )
        where = f"{file}:{line}" if line is not None else f"{file}"
        who = f"sample {sample_id!r}" if sample_id is not None else "sample without id"
        super().__init__(f"{where}: {who} (record {index}): {rule}: {message}")

    def __reduce__(self):  # keep the fields when the error crosses a process boundary (num_proc)
        return (type(self), (self.file, self.line, self.index, self.sample_id, self.rule, self.message))


def bad_sample_in(error: BaseException) -> Optional[BadSampleError]:
    """The ``BadSampleError`` that ``error`` wraps (``datasets`` wraps what a builder raises in a
    ``DatasetGenerationError``), following causes and contexts; None if there is none.

    Example:
        >>> bad = BadSampleError("a.jsonl", 3, 2, "x1", "role_order", "expected gpt, got human")
        >>> try:
        ...     try:
        ...         raise bad
        ...     except BadSampleError as e:
        ...         raise RuntimeError("wrapped") from e
        ... except RuntimeError as wrapped:
        ...     bad_sample_in(wrapped) is bad
        True
    """
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, BadSampleError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


class SourceError(ValueError):
    """A source that cannot be resolved: no such path, not a Hub id, or no annotation files in it."""
