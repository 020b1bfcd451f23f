"""Reply parsers: every tolerance and every refusal on a realistic reply."""

from __future__ import annotations

import pytest

from llava_zh.regenerate.parsers import (
    REASONS,
    ReplyParseError,
    parse_conversation,
    parse_reply,
    split_labelled,
)
from llava_zh.checks import check_record


def turns(*pairs):
    out = []
    for q, a in pairs:
        out += [{"from": "human", "value": q}, {"from": "gpt", "value": a}]
    out[0] = {"from": "human", "value": "<image>\n" + out[0]["value"]}
    return out


def assert_valid_sample(conversations):
    assert check_record({"id": "x", "image": "x.jpg", "conversations": conversations}) is None


# --- conversation: the format the prompt asks for ---------------------------------------------------------------

PLAIN = (
    "用户:图片中有几个人?\n\n助手:图片中有三个人,两个大人和一个小孩。\n\n"
    "用户:他们在做什么?\n\n助手:他们在公园的草坪上放风筝,小孩手里拿着线轴。\n\n"
)


def test_conversation_in_the_prompted_format():
    result = parse_reply(PLAIN, "conversation")
    assert result.ok and result.status == "ok" and result.rounds == 2
    assert result.conversations == turns(
        ("图片中有几个人?", "图片中有三个人,两个大人和一个小孩。"),
        ("他们在做什么?", "他们在公园的草坪上放风筝,小孩手里拿着线轴。"),
    )
    assert_valid_sample(result.conversations)


def test_full_width_colon_and_bold_labels_and_preamble():
    reply = (
        "好的，以下是根据这张照片设计的对话：\n\n"
        "**用户：** 这张海报上写了什么字？\n\n"
        "**助手：** 海报上方写着“欢迎光临”四个大字，下方是营业时间“9:00-21:00”。\n\n"
        "**用户**：海报的主色调是什么？\n\n"
        "**助手**：主色调是红色，文字是金色的，很有节日气氛。"
    )
    result = parse_reply(reply, "conversation")
    assert result.ok, result.message
    assert result.conversations[0]["value"] == "<image>\n这张海报上写了什么字？"
    # a colon inside the answer (9:00) is not a label
    assert result.conversations[1]["value"] == "海报上方写着“欢迎光临”四个大字，下方是营业时间“9:00-21:00”。"
    assert result.conversations[3]["value"] == "主色调是红色，文字是金色的，很有节日气氛。"


def test_markdown_headings_labels_alone_on_their_line_and_round_headings():
    reply = (
        "### 第一轮\n#### 用户\n桌上放着哪些东西？\n#### 助手\n桌上有一台笔记本电脑、一杯咖啡和一本翻开的书。\n\n"
        "---\n\n### 第二轮\n#### 用户\n咖啡杯在电脑的哪一边？\n#### 助手\n咖啡杯在电脑的右边，靠近桌子边缘。\n"
    )
    result = parse_reply(reply, "conversation")
    assert result.ok, result.message
    assert result.conversations == turns(
        ("桌上放着哪些东西？", "桌上有一台笔记本电脑、一杯咖啡和一本翻开的书。"),
        ("咖啡杯在电脑的哪一边？", "咖啡杯在电脑的右边，靠近桌子边缘。"),
    )


def test_english_labels():
    reply = (
        "Sure! Here is the conversation:\n\nUser: How many dogs are in the picture?\n\n"
        "Assistant: There are two dogs, one black and one white.\n\nuser: What are they doing?\n\n"
        "ASSISTANT: They are chasing a red frisbee across the lawn."
    )
    result = parse_reply(reply, "conversation")
    assert result.ok and result.rounds == 2
    assert result.conversations[2] == {"from": "human", "value": "What are they doing?"}


def test_extra_blank_lines_trailing_whitespace_and_multi_paragraph_answers():
    reply = (
        "用户:  这道菜是怎么做的?   \n\n\n\n\n助手:这是一道红烧肉。\n\n\n\n做法如下:\n1. 五花肉切块焯水;  \n"
        "2. 炒糖色后加入肉块翻炒;\t\n3. 加酱油和水小火炖一小时。   \n\n\n"
    )
    result = parse_reply(reply, "conversation")
    assert result.ok
    assert result.conversations[0]["value"] == "<image>\n这道菜是怎么做的?"
    assert result.conversations[1]["value"] == (
        "这是一道红烧肉。\n\n做法如下:\n1. 五花肉切块焯水;\n2. 炒糖色后加入肉块翻炒;\n3. 加酱油和水小火炖一小时。"
    )


def test_backslash_n_copied_from_the_prompt_is_a_line_break():
    reply = "用户:这是哪里?\\n\\n助手:这是北京的天安门广场,远处可以看到城楼。\\n\\n"
    result = parse_reply(reply, "conversation")
    assert result.ok
    assert result.conversations == turns(("这是哪里?", "这是北京的天安门广场,远处可以看到城楼。"))


def test_code_fence_and_think_block_around_the_reply():
    reply = "<think>先看图片里有什么。</think>\n```markdown\n用户：车是什么颜色？\n\n助手：车是蓝色的。\n```"
    assert parse_reply(reply, "conversation").conversations == turns(("车是什么颜色？", "车是蓝色的。"))


def test_image_placeholder_echoed_by_the_model_is_not_duplicated():
    result = parse_reply("用户:<image>\n图中是什么动物?\n\n助手:是一只橘猫。", "conversation")
    assert result.conversations[0]["value"] == "<image>\n图中是什么动物?"
    assert_valid_sample(result.conversations)


def test_text_only_samples_get_no_placeholder():
    assert parse_conversation("用户:你好?\n\n助手:你好!", image=False)[0]["value"] == "你好?"


# --- conversation refusals -----------------------------------------------------------------------------------------

def test_no_pair_in_a_refusal_or_plain_description():
    result = parse_reply("抱歉，我无法看清这张图片的内容，请提供更清晰的图片。", "conversation")
    assert (result.status, result.reason, result.conversations) == ("failed", "no_pair", [])
    assert "抱歉" in result.message


def test_empty_reply():
    assert parse_reply("  \n ", "conversation").reason == "empty_reply"
    assert parse_reply("", "detail_description", question="描述图片").reason == "empty_reply"


def test_question_without_answer_at_the_end_cut_off_by_max_tokens():
    reply = "用户:图里有几辆车?\n\n助手:有四辆车。\n\n用户:最左边那辆车是什么牌子的?"
    result = parse_reply(reply, "conversation")
    assert result.reason == "question_without_answer" and "最左边" in result.message


def test_two_questions_in_a_row():
    reply = "用户:图里有几辆车?\n\n用户:车是什么颜色?\n\n助手:有四辆,都是白色的。"
    assert parse_reply(reply, "conversation").reason == "question_without_answer"


def test_answer_before_any_question():
    reply = "助手:你好,我来描述一下。\n\n用户:图里有什么?\n\n助手:一只猫。"
    assert parse_reply(reply, "conversation").reason == "answer_without_question"


def test_empty_answer_and_empty_question():
    assert parse_reply("用户: 图里有几只猫?\n\n助手:\n\n用户:它们在干什么?\n\n助手:睡觉。", "conversation").reason == "empty_answer"
    assert parse_reply("**用户：**\n\n**助手：**图中有一只猫。", "conversation").reason == "empty_question"


SIX_ROUNDS = "".join(f"用户:第{i}个问题是什么?\n\n助手:这是第{i}个回答。\n\n" for i in range(1, 7))


def test_more_rounds_than_allowed_is_refused():
    result = parse_reply(SIX_ROUNDS, "conversation")
    assert result.reason == "too_many_rounds" and "at most 5" in result.message and "got 6" in result.message


def test_more_rounds_than_allowed_keeps_the_first_five_by_option():
    result = parse_reply(SIX_ROUNDS, "conversation", on_too_many_rounds="keep_first")
    assert result.ok and result.rounds == 5
    assert result.conversations[-1] == {"from": "gpt", "value": "这是第5个回答。"}
    assert_valid_sample(result.conversations)


def test_round_limit_is_an_option():
    assert parse_reply(PLAIN, "conversation", max_rounds=1).reason == "too_many_rounds"
    with pytest.raises(ValueError, match="on_too_many_rounds"):
        parse_reply(PLAIN, "conversation", on_too_many_rounds="drop")


# --- complex reasoning ---------------------------------------------------------------------------------------------

def test_complex_reasoning_in_the_prompted_format():
    reply = (
        "问题:为什么图中的行人大多撑着伞,而地面却是干的?\n\n"
        "回答:虽然地面是干的,但画面中阳光强烈,行人撑的多是遮阳伞。结合人们穿着短袖来看,这是炎热的夏日,"
        "撑伞是为了防晒而不是避雨。\n\n"
    )
    result = parse_reply(reply, "complex_reasoning")
    assert result.ok and result.rounds == 1
    assert result.conversations[0]["value"].startswith("<image>\n为什么图中的行人")
    assert result.conversations[1]["value"].endswith("撑伞是为了防晒而不是避雨。")
    assert_valid_sample(result.conversations)


def test_complex_reasoning_numbered_bold_full_width_and_english():
    zh = "**问题1：** 这家店为什么排长队？\n\n**回答1：** 招牌上写着“开业八折”，说明正在做开业促销。"
    en = "Question: Why is the road blocked?\n\nAnswer: A fallen tree lies across both lanes after the storm."
    assert parse_reply(zh, "complex_reasoning").conversations[1]["value"] == "招牌上写着“开业八折”，说明正在做开业促销。"
    assert parse_reply(en, "complex_reasoning").conversations == turns(
        ("Why is the road blocked?", "A fallen tree lies across both lanes after the storm.")
    )


def test_complex_reasoning_with_two_pairs_is_refused_or_cut():
    reply = "问题:为什么?\n\n回答:因为下雨。\n\n问题:那怎么办?\n\n回答:带伞。"
    assert parse_reply(reply, "complex_reasoning").reason == "too_many_rounds"
    kept = parse_reply(reply, "complex_reasoning", on_too_many_rounds="keep_first")
    assert kept.conversations == turns(("为什么?", "因为下雨。"))


def test_complex_reasoning_question_without_answer():
    assert parse_reply("问题:为什么这家店门口排着长队?", "complex_reasoning").reason == "question_without_answer"


# --- description ---------------------------------------------------------------------------------------------------

def test_description_is_the_whole_reply():
    reply = (
        "这张照片拍摄于一条老街。画面左侧有两家店铺,招牌分别写着“老王面馆”和“便民超市”。\n\n\n"
        "街道中央有三辆自行车停在一起,右侧一位老人坐在竹椅上看报纸。  \n"
    )
    result = parse_reply(reply, "detail_description", question="请详细描述这张图片。")
    assert result.ok
    assert result.conversations == [
        {"from": "human", "value": "<image>\n请详细描述这张图片。"},
        {
            "from": "gpt",
            "value": "这张照片拍摄于一条老街。画面左侧有两家店铺,招牌分别写着“老王面馆”和“便民超市”。\n\n"
            "街道中央有三辆自行车停在一起,右侧一位老人坐在竹椅上看报纸。",
        },
    ]


def test_description_needs_its_question():
    with pytest.raises(ValueError, match="question"):
        parse_reply("一只猫。", "detail_description")


# --- helpers -------------------------------------------------------------------------------------------------------

def test_option_letters_inside_an_answer_are_not_labels():
    reply = "问题:图中的交通灯是什么颜色?\n\n回答:根据图片,选项如下:\nA:红色\nB:绿色\n正确答案是A。"
    result = parse_reply(reply, "complex_reasoning")
    assert result.ok and result.conversations[1]["value"] == "根据图片,选项如下:\nA:红色\nB:绿色\n正确答案是A。"


def test_split_labelled_keeps_order_and_drops_preamble():
    assert split_labelled("好的:\n- **用户:** 这是什么?\n- **助手:** 一只猫。") == [("human", "这是什么?"), ("gpt", "一只猫。")]


def test_parse_error_carries_a_known_reason():
    with pytest.raises(ReplyParseError) as info:
        parse_conversation("没有任何标签的回复。")
    assert info.value.reason in REASONS and str(info.value).startswith("no_pair: ")


def test_unknown_task():
    with pytest.raises(ValueError, match="unknown task 'caption'"):
        parse_reply("x", "caption")
