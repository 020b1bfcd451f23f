"""Tests of llava_zh.tiny_models: offline tokenizers, chat templates, processors and tiny random-weight VLMs."""

from __future__ import annotations

import base64
import doctest
import math

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from llava_zh import tiny_models as tm  # noqa: E402

QWEN_FAMILIES = ("qwen2_5_vl", "qwen2_vl")
ALL_FAMILIES = ("qwen2_5_vl", "qwen2_vl", "llava")

CHINESE_TEXTS = [
    "图片里有一只猫。",
    "用户:这张照片是在哪里拍的?\n\n助手:看起来是在杭州西湖边，远处有一座塔。",
    "问题：为什么他要戴头盔？\n回答：为了安全。",
    "生僻字：龘靐齉爩，标点：《》「」【】……——",
    "中英混合 Qwen2.5-VL 的 image tokens 数量是 256，emoji 🐱🚗 也可以。",
    "多个\n\n换行  和  空格\t制表符",
]


def two_turn_messages(with_image_object=None):
    image_item = {"type": "image"} if with_image_object is None else {"type": "image", "image": with_image_object}
    return [
        {"role": "user", "content": [image_item, {"type": "text", "text": "这张图片里有什么?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "一只橘色的猫趴在窗台上。"}]},
        {"role": "user", "content": [{"type": "text", "text": "它在做什么?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "它在晒太阳。"}]},
    ]


def qwen_expected_tokens(height, width, max_pixels=tm.QWEN_MAX_PIXELS, min_pixels=tm.QWEN_MIN_PIXELS):
    """Qwen2-VL's dynamic resolution, written out: round each side to a multiple of 28 within the pixel budget,
    then one token per 28x28 block (14-pixel patches merged 2x2)."""
    h, w = round(height / 28) * 28, round(width / 28) * 28
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h, w = math.floor(height / beta / 28) * 28, math.floor(width / beta / 28) * 28
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h, w = math.ceil(height * beta / 28) * 28, math.ceil(width * beta / 28) * 28
    return (h // 28) * (w // 28)


@pytest.fixture(scope="module")
def processors():
    return {fam: tm.build_processor(fam) for fam in ("qwen2_5_vl", "llava")}


@pytest.fixture(scope="module")
def marked_processors():
    return {fam: tm.build_processor(fam, generation_markers=True) for fam in ("qwen2_5_vl", "llava")}


@pytest.fixture(scope="module")
def models(processors):
    return {fam: tm.build_model(fam, processors[tm._tokenizer_family(fam)]) for fam in ALL_FAMILIES}


# ---------------------------------------------------------------------------------------------------- tokenizers


@pytest.mark.parametrize("family", ["qwen2_5_vl", "llava"])
def test_tokenizer_round_trips_chinese_exactly(family):
    tok = tm.build_tokenizer(family)
    for text in CHINESE_TEXTS:
        ids = tok(text)["input_ids"]
        assert tok.decode(ids, skip_special_tokens=True) == text
        assert tok.unk_token_id not in ids or tok.unk_token_id is None
    # Common Chinese words learned from the corpus are single tokens, not bytes.
    assert len(tok("图片", add_special_tokens=False)["input_ids"]) == 1
    assert 3000 <= len(tok) <= 5000


def test_qwen_tokenizer_special_tokens():
    tok = tm.build_tokenizer("qwen2_5_vl")
    ids = tok.convert_tokens_to_ids(list(tm.QWEN_ADDED_TOKENS))
    assert ids == list(range(ids[0], ids[0] + len(tm.QWEN_ADDED_TOKENS)))  # contiguous, in Qwen2.5-VL order
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>" and tok.bos_token is None
    for special in ("<|im_start|>", "<|vision_start|>", "<|image_pad|>", "<|vision_end|>"):
        text = f"前{special}后"
        pieces = tok.convert_ids_to_tokens(tok(text)["input_ids"])
        assert special in pieces
        assert tok.decode(tok(text)["input_ids"], skip_special_tokens=True) == "前后"
    assert tok(" ")["input_ids"] and tok("x")["input_ids"][0] != tok.convert_tokens_to_ids("<|endoftext|>")  # no BOS
    assert tok.padding_side == "left"
    assert tm.build_tokenizer("qwen2_5_vl", padding_side="right").padding_side == "right"


def test_llava_tokenizer_special_tokens():
    tok = tm.build_tokenizer("llava")
    assert tok.convert_tokens_to_ids(["<unk>", "<s>", "</s>"]) == [0, 1, 2]
    assert tok.convert_tokens_to_ids("<0x0A>") == 3 + 0x0A  # byte-fallback pieces follow the specials
    ids = tok("USER: <image>\n你好")["input_ids"]
    assert ids[0] == tok.bos_token_id  # the tokenizer adds BOS, like Llama
    assert ids.count(tok.convert_tokens_to_ids("<image>")) == 1
    assert tok.pad_token == "<pad>" and tok.pad_token_id not in (tok.eos_token_id, tok.unk_token_id)
    # A character never seen in the corpus falls back to its UTF-8 bytes instead of <unk>.
    pieces = tok.convert_ids_to_tokens(tok("靐", add_special_tokens=False)["input_ids"])
    assert pieces[-3:] == [f"<0x{b:02X}>" for b in "靐".encode()]


def test_unknown_family_and_mismatched_processor_are_rejected(processors):
    with pytest.raises(ValueError, match="unknown model family 'gpt2'"):
        tm.build_tokenizer("gpt2")
    with pytest.raises(ValueError, match="does not fit the 'qwen2_5_vl' family"):
        tm.build_model("qwen2_5_vl", processors["llava"])
    with pytest.raises(ValueError, match="multiple of the patch size"):
        tm.build_processor("llava", image_size=100)


# ---------------------------------------------------------------------------------------------------- templates


def test_qwen_template_renders_chatml(processors):
    text = processors["qwen2_5_vl"].apply_chat_template(two_turn_messages(), add_generation_prompt=False)
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>这张图片里有什么?<|im_end|>\n"
        "<|im_start|>assistant\n一只橘色的猫趴在窗台上。<|im_end|>\n"
        "<|im_start|>user\n它在做什么?<|im_end|>\n"
        "<|im_start|>assistant\n它在晒太阳。<|im_end|>\n"
    )
    prompt = processors["qwen2_5_vl"].apply_chat_template(
        [{"role": "system", "content": "你是一个助手。"}, {"role": "user", "content": "你好"}],
        add_generation_prompt=True,
    )
    assert prompt == (
        "<|im_start|>system\n你是一个助手。<|im_end|>\n"
        "<|im_start|>user\n你好<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_llava_template_renders_vicuna_style(processors):
    text = processors["llava"].apply_chat_template(two_turn_messages())
    assert text == (
        "USER: <image>\n这张图片里有什么? ASSISTANT: 一只橘色的猫趴在窗台上。</s>"
        "USER: 它在做什么? ASSISTANT: 它在晒太阳。</s>"
    )
    prompt = processors["llava"].apply_chat_template(two_turn_messages()[:1], add_generation_prompt=True)
    assert prompt.endswith("? ASSISTANT:")


@pytest.mark.parametrize("family", ["qwen2_5_vl", "llava"])
def test_generation_markers_change_only_the_mask(family, processors, marked_processors):
    plain, marked = processors[family], marked_processors[family]
    assert "{% generation %}" in marked.chat_template and "{% generation %}" not in plain.chat_template
    assert marked.tokenizer.chat_template == marked.chat_template
    assert plain.apply_chat_template(two_turn_messages()) == marked.apply_chat_template(two_turn_messages())

    out = marked.apply_chat_template(
        two_turn_messages(tm.make_image(224, 224)),
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=True,
    )
    ids, mask = out["input_ids"][0], out["assistant_masks"][0]
    eot = "<|im_end|>" if family == "qwen2_5_vl" else "</s>"
    masked_text = marked.tokenizer.decode([i for i, m in zip(ids, mask) if m])
    assert masked_text.replace(" ", "") == f"一只橘色的猫趴在窗台上。{eot}它在晒太阳。{eot}"
    assert not any(m for i, m in zip(ids, mask) if i == marked.image_token_id)


# ---------------------------------------------------------------------------------------------------- image tokens


@pytest.mark.parametrize(
    "height,width,expected",
    [(448, 448, 256), (224, 224, 64), (200, 300, 77), (280, 560, 200), (30, 40, 6), (1000, 600, None)],
)
def test_qwen_image_token_count_follows_image_size(processors, height, width, expected):
    processor = processors["qwen2_5_vl"]
    if expected is None:
        expected = qwen_expected_tokens(height, width)
    assert qwen_expected_tokens(height, width) == expected
    assert tm.num_image_tokens(processor, height, width) == expected

    out = processor.apply_chat_template(
        two_turn_messages(tm.make_image(width, height)), tokenize=True, return_dict=True, return_tensors="pt"
    )
    assert int((out["input_ids"] == processor.image_token_id).sum()) == expected
    assert int(out["image_grid_thw"].prod()) // 4 == expected
    assert out["pixel_values"].shape == (expected * 4, 3 * 2 * 14 * 14)


def test_qwen_image_size_caps_the_pixel_budget():
    processor = tm.build_processor("qwen2_5_vl", image_size=224)
    assert tm.num_image_tokens(processor, 448, 448) == 64
    assert tm.num_image_tokens(processor, 4000, 3000) == qwen_expected_tokens(4000, 3000, max_pixels=224 * 224)
    processor = tm.build_processor("qwen2_5_vl", max_pixels=448 * 448)
    assert tm.num_image_tokens(processor, 4000, 3000) <= 256


@pytest.mark.parametrize("image_size,expected", [(None, 64), (56, 16), (336, 576)])
def test_llava_image_token_count_is_fixed(image_size, expected):
    processor = tm.build_processor("llava", image_size=image_size)
    for width, height in [(448, 448), (300, 200), (64, 640)]:
        assert tm.num_image_tokens(processor, height, width) == expected
    out = processor.apply_chat_template(
        two_turn_messages(tm.make_image(300, 200)), tokenize=True, return_dict=True, return_tensors="pt"
    )
    assert int((out["input_ids"] == processor.image_token_id).sum()) == expected
    side = image_size or tm.DEFAULT_LLAVA_IMAGE_SIZE
    assert tuple(out["pixel_values"].shape) == (1, 3, side, side)


@pytest.mark.parametrize("family", ["qwen2_5_vl", "llava"])
def test_call_and_chat_template_flows_agree(family, processors):
    processor = processors[family]
    image = tm.make_image(336, 224, seed=3)
    rendered = processor.apply_chat_template(two_turn_messages())
    by_call = processor(text=rendered, images=[image], return_tensors="pt")
    by_items = processor.apply_chat_template(
        two_turn_messages(image), tokenize=True, return_dict=True, return_tensors="pt"
    )
    by_kwargs = processor.apply_chat_template(
        two_turn_messages(), tokenize=True, return_dict=True, return_tensors="pt", processor_kwargs={"images": [image]}
    )
    for other in (by_items, by_kwargs):
        assert torch.equal(by_call["input_ids"], other["input_ids"])
        assert torch.equal(by_call["pixel_values"], other["pixel_values"])
    # Text-only conversations need no image.
    text_only = [{"role": "user", "content": [{"type": "text", "text": "你好"}]}]
    out = processor.apply_chat_template(text_only, tokenize=True, return_dict=True, add_generation_prompt=True)
    assert processor.image_token_id not in out["input_ids"][0]


# ---------------------------------------------------------------------------------------------------- models


def test_tiny_configs_respect_the_pitfalls(processors):
    qwen = tm.tiny_config("qwen2_5_vl", processors["qwen2_5_vl"])
    text, vision = qwen.text_config, qwen.vision_config
    head_dim = text.hidden_size // text.num_attention_heads
    assert sum(text.rope_parameters["mrope_section"]) == head_dim // 2
    assert vision.out_hidden_size == text.hidden_size
    assert text.vocab_size >= len(processors["qwen2_5_vl"].tokenizer)
    assert vision.patch_size == processors["qwen2_5_vl"].image_processor.patch_size
    assert qwen.image_token_id == processors["qwen2_5_vl"].image_token_id
    llava = tm.tiny_config("llava", processors["llava"])
    assert llava.image_token_id == processors["llava"].image_token_id
    assert llava.vision_config.image_size == processors["llava"].image_processor.crop_size["height"]
    assert llava.text_config.vocab_size >= len(processors["llava"].tokenizer)


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_forward_with_labels_gives_finite_loss_and_gradients(family, processors, models):
    processor, model = processors[tm._tokenizer_family(family)], models[family]
    batch = processor.apply_chat_template(
        two_turn_messages(tm.make_image(280, 336)), tokenize=True, return_dict=True, return_tensors="pt"
    )
    labels = batch["input_ids"].clone()
    labels[labels == processor.image_token_id] = -100
    labels[:, : labels.shape[1] // 2] = -100
    model.zero_grad()
    out = model(**batch, labels=labels)
    assert torch.isfinite(out.loss)
    assert abs(out.loss.item() - math.log(model.config.get_text_config().vocab_size)) < 2.0  # near-uniform guess
    out.loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    model.zero_grad()


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_batched_left_padded_generation_matches_single(family, processors, models):
    processor, model = processors[tm._tokenizer_family(family)], models[family]
    def ask(image, question):
        return [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": question}]}]

    conversations = [
        ask(tm.make_image(448, 448), "描述一下这张图片。"),
        ask(tm.make_image(224, 336, seed=1), "图片中有几个人?请详细回答。"),
    ]
    batch = processor.apply_chat_template(
        conversations,
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
        processor_kwargs={"padding": True},
    )
    lengths = batch["attention_mask"].sum(1)
    shorter = int(lengths.argmin())
    if family != "llava":  # different image sizes give different lengths; LLaVA's may still differ by text
        assert lengths[0] != lengths[1]
    if lengths[0] != lengths[1]:
        assert batch["attention_mask"][shorter, 0] == 0 and batch["attention_mask"][shorter, -1] == 1
    with torch.no_grad():
        generated = model.generate(**batch, max_new_tokens=4, do_sample=False)
    prompt_len = batch["input_ids"].shape[1]
    assert generated.shape[0] == 2 and generated.shape[1] > prompt_len
    for row, conversation in enumerate(conversations):
        single = processor.apply_chat_template(
            [conversation], add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
        )
        with torch.no_grad():
            alone = model.generate(**single, max_new_tokens=4, do_sample=False)
        new_alone = alone[0, single["input_ids"].shape[1]:].tolist()
        assert generated[row, prompt_len : prompt_len + len(new_alone)].tolist() == new_alone


def test_model_weights_are_seeded(processors):
    a = tm.build_model("llava", processors["llava"], seed=1)
    b = tm.build_model("llava", processors["llava"], seed=1)
    c = tm.build_model("llava", processors["llava"], seed=2)
    pa, pb, pc = (dict(m.named_parameters()) for m in (a, b, c))
    name = next(n for n in pa if "embed_tokens" in n)
    assert torch.equal(pa[name], pb[name]) and not torch.equal(pa[name], pc[name])
    assert not a.training


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_save_and_load_round_trip(family, tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor, model = tm.build_tiny_vlm(family, tmp_path, generation_markers=True, padding_side="left")
    assert (tmp_path / "config.json").is_file() and (tmp_path / "processor_config.json").is_file()

    loaded = tm.load_processor(tmp_path)
    auto = AutoProcessor.from_pretrained(tmp_path)  # works in a process that imported tiny_models
    for other in (loaded, auto):
        assert type(other) is type(processor)
        assert other.chat_template == processor.chat_template
        assert other.tokenizer.padding_side == "left"
        assert other.image_token_id == processor.image_token_id
    reloaded_model = AutoModelForImageTextToText.from_pretrained(tmp_path)
    assert type(reloaded_model) is type(model)

    messages = two_turn_messages(tm.make_image(252, 196))
    before = processor.apply_chat_template(messages, tokenize=True, return_dict=True, return_tensors="pt")
    after = loaded.apply_chat_template(messages, tokenize=True, return_dict=True, return_tensors="pt")
    assert torch.equal(before["input_ids"], after["input_ids"])
    assert torch.allclose(before["pixel_values"], after["pixel_values"])
    with torch.no_grad():
        assert torch.allclose(model(**before).logits, reloaded_model(**after).logits, atol=1e-5)
    assert reloaded_model.generation_config.eos_token_id == model.generation_config.eos_token_id


def test_load_processor_uses_family_when_class_is_missing(tmp_path):
    processor = tm.build_processor("qwen2_5_vl")
    processor.save_pretrained(tmp_path)
    config = tmp_path / "processor_config.json"
    import json

    data = json.loads(config.read_text())
    data.pop("processor_class", None)
    config.write_text(json.dumps(data))
    loaded = tm.load_processor(tmp_path, family="qwen2_5_vl")
    assert type(loaded) is tm.Qwen2VLImageOnlyProcessor


def test_processors_pickle(processors):
    import pickle

    for processor in processors.values():  # datasets.map(num_proc=...) pickles the function and its processor
        clone = pickle.loads(pickle.dumps(processor))
        assert type(clone) is type(processor)
        assert clone.apply_chat_template(two_turn_messages()) == processor.apply_chat_template(two_turn_messages())


def test_module_examples_run():
    failures, attempted = doctest.testmod(tm, optionflags=doctest.ELLIPSIS)
    assert failures == 0 and attempted >= 15


# ---------------------------------------------------------------------------------------------------- real Qwen2 ranks


def _reference_bpe(ranks: dict[bytes, int], piece: bytes) -> list[int]:
    """tiktoken's algorithm, written out: merge the lowest-ranked adjacent pair until none is in the ranks."""
    parts = [piece[i : i + 1] for i in range(len(piece))]
    while len(parts) > 1:
        pairs = [(ranks.get(parts[i] + parts[i + 1]), i) for i in range(len(parts) - 1)]
        pairs = [(r, i) for r, i in pairs if r is not None]
        if not pairs:
            break
        _, i = min(pairs)
        parts[i : i + 2] = [parts[i] + parts[i + 1]]
    return [ranks[p] for p in parts]


def test_find_qwen_tiktoken_honours_the_environment(tmp_path, monkeypatch):
    fake = tmp_path / "qwen.tiktoken"
    fake.write_bytes(base64.b64encode(b"a") + b" 0\n")
    monkeypatch.setenv(tm.QWEN_TIKTOKEN_ENV, str(fake))
    assert tm.find_qwen_tiktoken() == fake
    with pytest.raises(ValueError, match="expected 151643 ranks"):
        tm.build_qwen2_tokenizer_from_ranks(fake)


def test_find_qwen_tiktoken_looks_in_an_installed_dashscope(tmp_path, monkeypatch):
    resources = tmp_path / "dashscope" / "resources"
    resources.mkdir(parents=True)
    (tmp_path / "dashscope" / "__init__.py").write_text("")
    (resources / "qwen.tiktoken").write_bytes(base64.b64encode(b"a") + b" 0\n")
    monkeypatch.delenv(tm.QWEN_TIKTOKEN_ENV, raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(__import__("sys").modules, "dashscope", raising=False)
    assert tm.find_qwen_tiktoken() == resources / "qwen.tiktoken"
    monkeypatch.setenv(tm.QWEN_TIKTOKEN_ENV, str(tmp_path / "missing.tiktoken"))  # a stale variable is skipped
    assert tm.find_qwen_tiktoken() == resources / "qwen.tiktoken"


def test_real_qwen2_tokenizer_from_ranks():
    path = tm.find_qwen_tiktoken()
    if path is None:
        pytest.skip(f"no qwen.tiktoken available locally (set ${tm.QWEN_TIKTOKEN_ENV} to run this test)")
    import regex

    tok = tm.build_qwen2_tokenizer_from_ranks(path)
    assert len(tok) == 151665
    assert tok.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>"]) == [151643, 151644, 151645]
    assert tok.convert_tokens_to_ids(["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]) == [
        151652,
        151653,
        151655,
        151656,
    ]
    assert tok("Hello world")["input_ids"] == [9707, 1879]

    ranks = {}
    for line in path.read_bytes().splitlines():
        if line.strip():
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    pattern = regex.compile(tm.QWEN2_PRETOKENIZE_REGEX)
    for text in CHINESE_TEXTS + ["The quick brown fox jumps over the lazy dog's 123 tails!!\n\n  ok"]:
        expected = [i for piece in pattern.findall(text) for i in _reference_bpe(ranks, piece.encode())]
        assert tok(text)["input_ids"] == expected
        assert tok.decode(expected) == text
