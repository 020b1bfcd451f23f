"""The generation prompts: the published ones byte for byte, English counterparts, custom text."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from llava_zh.regenerate.prompts import (
    DESCRIPTION_QUESTIONS,
    LANGUAGES,
    PROMPTS,
    description_question,
    get_prompt,
)
from llava_zh.schema import TASKS

# sha256 of the UTF-8 text inside each ```text block of the dataset card's prompts (seed-prompts.md).
PUBLISHED_SHA256 = {
    "conversation": "8a2906e0ea7021f997c29cf24593189e4dcc9e6ef0f243e40b925a4e69b6b810",
    "complex_reasoning": "3b50f8b70f19699a5322dde83773270eed32b0cf2633c94f11a8d714af9cca03",
    "detail_description": "db98663aba81cc918fadbea8bd1cd4edbd6e2ced24d09ba0af2fa43c64098b89",
}
SEED_FILE = Path(__file__).resolve().parents[2] / "shared" / "seed-prompts.md"


@pytest.mark.parametrize("task", TASKS)
def test_chinese_prompts_are_the_published_bytes(task):
    text = get_prompt(task, "zh").text
    assert hashlib.sha256(text.encode("utf-8")).hexdigest() == PUBLISHED_SHA256[task]


@pytest.mark.skipif(not SEED_FILE.is_file(), reason="the project's seed-prompts.md is not beside this checkout")
def test_chinese_prompts_match_the_seed_file():
    blocks = re.findall(r"```text\n(.*?)\n```", SEED_FILE.read_text(encoding="utf-8"), re.S)
    assert [get_prompt(t, "zh").text for t in TASKS] == blocks


def test_published_format_lines_keep_backslash_n_and_ascii_colons():
    conversation = get_prompt("conversation", "zh").text
    reasoning = get_prompt("complex_reasoning", "zh").text
    # the card shows the reply format with the two characters backslash + n, not a line break
    assert "以 用户:...\\n\\n助手:...\\n\\n用户:...\\n\\n助手:...\\n\\n 的格式返回。" in conversation
    assert reasoning.endswith("以 问题:...\\n\\n回答:...\\n\\n 的格式返回。")
    assert "：" not in conversation + reasoning
    assert conversation.count("\n") == 6 and reasoning.count("\n") == 2


@pytest.mark.parametrize("task", TASKS)
def test_english_counterparts_exist_and_ask_for_english_labels(task):
    prompt = get_prompt(task, "en")
    assert prompt.id == f"{task}-en-v1" and prompt.language == "en"
    assert not re.search(r"[\u4e00-\u9fff]", prompt.text)
    if task == "conversation":
        assert "User:...\\n\\nAssistant:..." in prompt.text and "5 rounds" in prompt.text
    elif task == "complex_reasoning":
        assert "Question:...\\n\\nAnswer:..." in prompt.text


def test_prompts_cover_every_task_and_language():
    assert set(PROMPTS) == {(t, lang) for t in TASKS for lang in LANGUAGES}
    assert len({p.id for p in PROMPTS.values()}) == len(PROMPTS)


def test_custom_prompt_gets_an_id_from_its_text():
    a = get_prompt("conversation", "zh", text="请就这张图提三个问题并回答。")
    b = get_prompt("complex_reasoning", "zh", text="请就这张图提三个问题并回答。")
    c = get_prompt("conversation", "zh", text="另一个提示。")
    assert a.id == b.id != c.id
    assert a.id == "custom-" + hashlib.sha256("请就这张图提三个问题并回答。".encode()).hexdigest()[:12]
    assert a.text == "请就这张图提三个问题并回答。" and a.task == "conversation"


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="unknown task 'caption'"):
        get_prompt("caption")
    with pytest.raises(ValueError, match="no built-in prompt for language 'fr'"):
        get_prompt("conversation", "fr")
    with pytest.raises(ValueError, match="must not be empty"):
        get_prompt("conversation", text="  ")


def test_description_question_is_fixed_by_id_and_language():
    zh = [description_question(f"img{i}", "zh") for i in range(50)]
    assert zh == [description_question(f"img{i}", "zh") for i in range(50)]
    assert set(zh) <= set(DESCRIPTION_QUESTIONS["zh"]) and len(set(zh)) > 1
    assert description_question("img0", "en") in DESCRIPTION_QUESTIONS["en"]
