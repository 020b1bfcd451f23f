"""One normalisation of speaker roles for every reader and converter.

LLaVA files say ``human``/``gpt``; chat formats say ``user``/``assistant``; Chinese exports sometimes say
``用户``/``助手``. Everything here maps to one canonical pair per vocabulary.

Example:
    >>> normalize_role("USER"), to_llava_role("助手")
    ('user', 'gpt')
"""

from __future__ import annotations

from typing import Optional

_CHAT_ROLES: dict[str, str] = {
    "human": "user",
    "user": "user",
    "用户": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "助手": "assistant",
    "system": "system",
    "系统": "system",
}
_LLAVA_FROM_CHAT: dict[str, str] = {"user": "human", "assistant": "gpt", "system": "system"}
_LLAVA_FAST: dict[str, str] = {k: _LLAVA_FROM_CHAT[v] for k, v in _CHAT_ROLES.items()}


class UnknownRoleError(ValueError):
    """A turn names a speaker that is neither user, assistant nor system."""


def normalize_role(role: str, sample_id: Optional[str] = None) -> str:
    """Map any known spelling of a role to ``user``, ``assistant`` or ``system`` (chat vocabulary)."""
    found = _CHAT_ROLES.get(role)  # the exact spelling first: the hot path when loading
    if found is not None:
        return found
    found = _CHAT_ROLES.get(role.strip().lower()) if isinstance(role, str) else None
    if found is None:
        where = f"sample {sample_id!r}: " if sample_id is not None else ""
        known = ", ".join(sorted(_CHAT_ROLES))
        raise UnknownRoleError(f"{where}unknown role {role!r}; expected one of {known}")
    return found


def to_llava_role(role: str, sample_id: Optional[str] = None) -> str:
    """Map any known spelling of a role to LLaVA's ``human``, ``gpt`` or ``system``."""
    found = _LLAVA_FAST.get(role)
    return found if found is not None else _LLAVA_FROM_CHAT[normalize_role(role, sample_id)]


def is_known_role(role: object) -> bool:
    return role in _LLAVA_FAST or (isinstance(role, str) and role.strip().lower() in _CHAT_ROLES)
