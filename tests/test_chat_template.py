"""ChatTemplateEncoder with tiny real processors of two families (Qwen2-VL style, LLaVA-1.5 style)."""

import itertools
import pickle

import datasets
import numpy as np
import pytest
from datasets.fingerprint import Hasher

import llava_zh
from llava_zh.convert.chat_template import ChatTemplateEncoder, SampleTooLongError, TemplateError
from llava_zh.convert.messages import to_messages
from llava_zh.schema import FEATURES
from llava_zh.tiny_models import build_processor, build_tokenizer, make_image, num_image_tokens

FAMILIES = ("qwen2_5_vl", "llava")
END_OF_TURN = {"qwen2_5_vl": "<|im_end|>", "llava": "</s>"}
REPLIES = ("北京。", "是的,没错。\n这是第二段:天安门。", "大约有 3 个人。")


@pytest.fixture(scope="module")
def processors():
    return {(f, m): build_processor(f, generation_markers=m) for f in FAMILIES for m in (False, True)}


def conversation(image, replies=REPLIES, sample_id="c1", system=None):
    questions = ["<image>\n这是哪里?", "你确定吗?", "图里有几个人?"]
    turns = [{"from": "system", "value": system}] if system else []
    for q, a in zip(questions, replies):
        turns += [{"from": "human", "value": q}, {"from": "gpt", "value": a}]
    return {"id": sample_id, "task": "conversation", "language": "zh", "source": "t", "image": image,
            "conversations": turns}


def text_only(sample_id="text"):
    return {"id": sample_id, "task": "conversation", "language": "zh", "source": "t", "image": None,
            "conversations": [{"from": "human", "value": "你好"}, {"from": "gpt", "value": "你好!"}]}


def label_runs(row):
    """Contiguous runs of learned token ids."""
    pairs = zip(row["input_ids"], row["labels"])
    return [[i for i, _ in run] for learned, run in itertools.groupby(pairs, key=lambda p: p[1] != -100) if learned]


def chat(processor, sample):
    """The sample as messages with the image inside its item, for processor.apply_chat_template."""
    m = to_messages(sample)
    images = iter(m["images"])
    for message in m["messages"]:
        for item in message["content"]:
            if item["type"] == "image":
                item["image"] = next(images)
    return m["messages"]


@pytest.mark.parametrize("markers", [False, True])
@pytest.mark.parametrize("family", FAMILIES)
def test_labels_are_exactly_the_replies_and_their_end_of_turn(processors, family, markers):
    processor = processors[family, markers]
    encoder = ChatTemplateEncoder(processor)
    assert encoder.span_method == ("markers" if markers else "sentinels")
    assert encoder.end_of_turn == END_OF_TURN[family]
    row = encoder(conversation(make_image(120, 90)))
    decoded = [processor.tokenizer.decode(run) for run in label_runs(row)]
    assert decoded == [reply + END_OF_TURN[family] for reply in REPLIES]
    assert all(label in (-100, token) for token, label in zip(row["input_ids"], row["labels"]))


@pytest.mark.parametrize("markers", [False, True])
@pytest.mark.parametrize("family", FAMILIES)
def test_tensors_match_the_processors_own_apply_chat_template(processors, family, markers):
    processor = processors[family, markers]
    sample = conversation(make_image(200, 150), system="你是一个有用的助手。")
    row = ChatTemplateEncoder(processor)(sample)
    ref = processor.apply_chat_template(chat(processor, sample), tokenize=True, return_dict=True,
                                        return_assistant_tokens_mask=markers)
    assert row["input_ids"] == list(ref["input_ids"][0])
    assert row["attention_mask"] == [1] * len(row["input_ids"])
    np.testing.assert_allclose(row["pixel_values"], np.asarray(ref["pixel_values"]))
    if family == "qwen2_5_vl":
        assert row["image_grid_thw"].tolist() == np.asarray(ref["image_grid_thw"]).tolist()
        assert row["mm_token_type_ids"] == list(ref["mm_token_type_ids"][0])
    if markers:  # the template's own {% generation %} mask is exactly what is learned
        assert [int(label != -100) for label in row["labels"]] == list(ref["assistant_masks"][0])


@pytest.mark.parametrize("markers", [False, True])
@pytest.mark.parametrize("family", FAMILIES)
def test_span_methods_agree(processors, family, markers):
    processor = processors[family, markers]
    sample = conversation(make_image(64, 64), replies=("第一。\n", "第二:  有空格  ", "三\n\n"))
    methods = ["sentinels", "prefixes"] + (["markers"] if markers else [])
    labels = {m: ChatTemplateEncoder(processor, span_method=m)(sample)["labels"] for m in methods}
    assert all(v == labels["prefixes"] for v in labels.values())


def test_a_template_that_changes_the_reply_falls_back_to_prefixes(processors):
    processor = processors["qwen2_5_vl", False]
    trimming = processor.chat_template.replace("render_content(message.content) + '<|im_end|>'",
                                               "render_content(message.content) | trim + '<|im_end|>'")
    assert trimming != processor.chat_template
    encoder = ChatTemplateEncoder(processor, chat_template=trimming)
    assert encoder.span_method == "prefixes"
    row = encoder(conversation(make_image(64, 64), replies=("  北京。 ", "对。\n", "三个。")))
    assert [processor.tokenizer.decode(r) for r in label_runs(row)] == ["北京。<|im_end|>", "对。<|im_end|>",
                                                                         "三个。<|im_end|>"]


SIZES = [(448, 448), (300, 200), (56, 56), (1000, 500), (84, 560)]


def test_qwen_image_token_count_follows_the_image_size(processors):
    processor = processors["qwen2_5_vl", False]
    processed, sized = ChatTemplateEncoder(processor), ChatTemplateEncoder(processor, process_images=False)
    counts = []
    for width, height in SIZES:
        sample = conversation(make_image(width, height))
        row = processed(sample)
        n = row["input_ids"].count(processor.image_token_id)
        assert n == num_image_tokens(processor, height, width) == int(np.prod(row["image_grid_thw"][0])) // 4
        assert sized(sample)["input_ids"].count(processor.image_token_id) == n
        counts.append(n)
    assert counts[0] == 256  # 448x448: a 32x32 grid of patches, merged 2x2
    assert len(set(counts)) == len(SIZES)


def test_llava_image_token_count_is_fixed(processors):
    processor = processors["llava", False]
    encoder = ChatTemplateEncoder(processor)
    counts = {encoder(conversation(make_image(w, h)))["input_ids"].count(processor.image_token_id) for w, h in SIZES}
    assert counts == {num_image_tokens(processor, 10, 10)} == {64}


@pytest.mark.parametrize("family", FAMILIES)
def test_pretokenizing_without_pixels_gives_the_same_tokens(processors, family):
    processor = processors[family, False]
    samples = [conversation(make_image(w, h), sample_id=str(i)) for i, (w, h) in enumerate(SIZES[:3])]
    samples.append(text_only())
    full = ChatTemplateEncoder(processor).encode_batch(samples)
    light = ChatTemplateEncoder(processor, process_images=False).encode_batch(samples)
    for a, b in zip(full, light):
        assert (a["input_ids"], a["labels"]) == (b["input_ids"], b["labels"])
        assert "pixel_values" not in b
    assert [row["pixel_values"] is not None for row in full] == [True, True, True, False]


def _rounds(sample, k):
    """The sample cut after its k-th reply."""
    cut = dict(sample)
    cut["conversations"] = sample["conversations"][: 2 * k]
    return cut


def test_truncation_keeps_whole_turns_and_whole_images(processors):
    processor = processors["qwen2_5_vl", False]
    sample = conversation(make_image(112, 112))
    full = ChatTemplateEncoder(processor)(sample)
    two_rounds = ChatTemplateEncoder(processor)(_rounds(sample, 2))
    assert len(two_rounds["input_ids"]) < len(full["input_ids"])
    encoder = ChatTemplateEncoder(processor, max_length=len(full["input_ids"]) - 1, on_too_long="truncate")
    row = encoder(sample)
    assert row["input_ids"] == two_rounds["input_ids"] and row["labels"] == two_rounds["labels"]
    assert [processor.tokenizer.decode(r) for r in label_runs(row)] == [r + "<|im_end|>" for r in REPLIES[:2]]
    image_id = processor.image_token_id
    assert row["input_ids"].count(image_id) == full["input_ids"].count(image_id)
    np.testing.assert_array_equal(row["pixel_values"], full["pixel_values"])
    assert encoder.truncated == 1
    # not even the first turn fits: dropped with its reason counted
    assert encoder(_rounds(sample, 1) | {"id": "tiny"}) is not None
    small = ChatTemplateEncoder(processor, max_length=full["input_ids"].count(image_id), on_too_long="truncate")
    assert small(sample) is None and small.dropped == {"no_whole_turn_fits": 1}


def test_drop_and_raise(processors):
    processor = processors["llava", False]
    sample = conversation(make_image(64, 64), sample_id="long-1")
    length = len(ChatTemplateEncoder(processor)(sample)["input_ids"])
    dropper = ChatTemplateEncoder(processor, max_length=length - 1, on_too_long="drop")
    assert dropper(sample) is None and dropper.dropped == {"longer_than_max_length": 1}
    assert ChatTemplateEncoder(processor, max_length=length)(sample) is not None
    with pytest.raises(SampleTooLongError, match=rf"'long-1'.*max_length={length - 1}.*got {length}"):
        ChatTemplateEncoder(processor, max_length=length - 1, on_too_long="raise")(sample)
    assert "dropped: 1 longer_than_max_length" in dropper.report()


def test_batches_in_dataset_map_drop_rows(processors):
    processor = processors["qwen2_5_vl", False]
    from factories import jpeg_bytes

    short = {"id": "short", "task": "detail_description", "language": "zh", "source": "t",
             "image": {"bytes": jpeg_bytes(60, 60), "path": "s.jpg"},
             "conversations": [{"from": "human", "value": "<image>\n描述"}, {"from": "gpt", "value": "一张图。"}]}
    long = conversation({"bytes": jpeg_bytes(60, 60), "path": "l.jpg"}, sample_id="long")
    ds = datasets.Dataset.from_list([short, long, text_only(), short | {"id": "short2"}], features=FEATURES)
    limit = len(ChatTemplateEncoder(processor)(short)["input_ids"]) + 5
    encoder = ChatTemplateEncoder(processor, max_length=limit)
    out = ds.map(encoder, batched=True, batch_size=3, remove_columns=ds.column_names)
    assert len(out) == 3 and encoder.dropped == {"longer_than_max_length": 1} and encoder.encoded == 3
    assert {"input_ids", "labels", "attention_mask", "pixel_values", "image_grid_thw"} <= set(out.column_names)
    assert out[1]["pixel_values"] is None and out[0]["pixel_values"] is not None  # the text-only row
    assert encoder(ds[:2])["input_ids"][0] == out[0]["input_ids"]  # one call on a batch of columns


def test_encoder_is_picklable_and_its_fingerprint_is_stable(processors):
    processor = processors["qwen2_5_vl", False]
    encoder = ChatTemplateEncoder(processor, max_length=512)
    before = Hasher.hash(encoder)
    sample = conversation(make_image(64, 64))
    row = encoder(sample)
    assert Hasher.hash(encoder) == before  # counts and calls do not change it
    assert Hasher.hash(ChatTemplateEncoder(processor, max_length=512)) == before
    assert Hasher.hash(ChatTemplateEncoder(processor, max_length=256)) != before
    copy = pickle.loads(pickle.dumps(encoder))
    assert copy.encoded == 0 and copy(sample)["labels"] == row["labels"]


def test_dataset_map_reuses_its_cache():
    processor = build_processor("qwen2_5_vl")
    ds = llava_zh.load_dataset("sample")
    first = ChatTemplateEncoder(processor, process_images=False)
    a = ds.map(first, batched=True, remove_columns=ds.column_names)
    second = ChatTemplateEncoder(processor, process_images=False)
    b = ds.map(second, batched=True, remove_columns=ds.column_names)
    assert first.encoded == len(ds) and second.encoded == 0  # the second map was read from the cache
    assert a.cache_files == b.cache_files and a[0]["labels"] == b[0]["labels"]
    replies = [t["value"] for t in ds[0]["conversations"] if t["from"] == "gpt"]
    assert [processor.tokenizer.decode(r) for r in label_runs(a[0])] == [r + "<|im_end|>" for r in replies]


def test_messages_input_tokenizer_only_and_full_loss(processors):
    processor = processors["qwen2_5_vl", False]
    sample = conversation(make_image(64, 64))
    encoder = ChatTemplateEncoder(processor)
    a, b = encoder(to_messages(sample)), encoder(sample)
    assert a["input_ids"] == b["input_ids"] and a["labels"] == b["labels"]

    everything = ChatTemplateEncoder(processor, assistant_only_loss=False)(sample)
    image_id = processor.image_token_id
    assert everything["labels"] == [-100 if t == image_id else t for t in everything["input_ids"]]

    tokenizer = build_tokenizer("qwen2_5_vl")
    text_sample = text_only() | {"conversations": [{"from": "human", "value": "你好"},
                                                   {"from": "gpt", "value": "你好,有什么可以帮你?"}]}
    row = ChatTemplateEncoder(tokenizer)(text_sample)
    rendered = tokenizer.apply_chat_template(to_messages(text_sample)["messages"], tokenize=False)
    assert row["input_ids"] == tokenizer(rendered, add_special_tokens=False)["input_ids"]
    assert [tokenizer.decode(r) for r in label_runs(row)] == ["你好,有什么可以帮你?<|im_end|>"]
    with pytest.raises(TemplateError, match="not a processor"):
        ChatTemplateEncoder(tokenizer)(sample)


def test_errors():
    tokenizer = build_tokenizer("qwen2_5_vl")
    tokenizer.chat_template = None
    with pytest.raises(TemplateError, match="no usable chat template"):
        ChatTemplateEncoder(tokenizer)
    with pytest.raises(ValueError, match="on_too_long"):
        ChatTemplateEncoder(build_tokenizer("qwen2_5_vl"), on_too_long="cut")
    with pytest.raises(TemplateError, match="generation"):
        ChatTemplateEncoder(build_tokenizer("qwen2_5_vl"), span_method="markers")


def test_large_batches_are_pipelined_with_the_same_result(processors):
    processor = processors["qwen2_5_vl", False]
    samples = [conversation(make_image(56 + 28 * i, 56), sample_id=str(i)) for i in range(5)] + [text_only()]
    sequential = ChatTemplateEncoder(processor, process_images=False).encode_batch(samples)
    pipelined = ChatTemplateEncoder(processor, process_images=False)
    pipelined.PIPELINE_CHUNK = 2  # three chunks: tokenized in a thread while the next one is rendered
    assert pipelined.encode_batch(samples) == sequential


def test_columns_are_the_same_in_every_batch(processors):
    # a batch of text-only samples still has the image columns (None), so map can write every batch
    processor = processors["llava", False]
    encoder = ChatTemplateEncoder(processor)
    assert encoder.output_keys == ("input_ids", "attention_mask", "labels", "pixel_values")
    rows = [text_only("t1"), text_only("t2"), conversation(make_image(40, 40), sample_id="i1")]
    ds = datasets.Dataset.from_list([r | {"image": None} if r["image"] is None else r for r in rows])
    out = encoder.map(ds, batch_size=2)  # = ds.map(encoder, batched=True, features=encoder.features, ...)
    assert len(out) == 3 and out[0]["pixel_values"] is None and np.asarray(out[2]["pixel_values"]).shape == (1, 3, 112, 112)
    assert out.features["pixel_values"] == datasets.List(datasets.List(datasets.List(datasets.List(datasets.Value("float32")))))
    assert out.features["labels"] == datasets.List(datasets.Value("int32"))
    qwen = ChatTemplateEncoder(processors["qwen2_5_vl", False])
    assert set(qwen.output_keys) == {"input_ids", "attention_mask", "labels", "mm_token_type_ids", "pixel_values",
                                     "image_grid_thw"}
    assert len(qwen.map(ds, batch_size=2)) == 3


def test_a_text_models_template_gets_string_content():
    tokenizer = build_tokenizer("qwen2_5_vl")
    chatml = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
              "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
    encoder = ChatTemplateEncoder(tokenizer, chat_template=chatml)
    assert (encoder.span_method, encoder.end_of_turn) == ("sentinels", "<|im_end|>")
    sample = text_only() | {"conversations": [{"from": "system", "value": "简短回答。"},
                                              {"from": "human", "value": "你好"}, {"from": "gpt", "value": "你好!"}]}
    row = encoder(sample)
    rendered = tokenizer.apply_chat_template([{"role": "system", "content": "简短回答。"},
                                              {"role": "user", "content": "你好"},
                                              {"role": "assistant", "content": "你好!"}], chat_template=chatml, tokenize=False)
    assert "[{" not in rendered and row["input_ids"] == tokenizer(rendered, add_special_tokens=False)["input_ids"]
    assert [tokenizer.decode(r) for r in label_runs(row)] == ["你好!<|im_end|>"]


# -- image budgets -------------------------------------------------------------------------------------


def test_a_large_image_is_encoded_within_the_pixel_budget(processors):
    import warnings

    from llava_zh.convert.chat_template import pixel_budget_kwargs

    processor = processors["qwen2_5_vl", False]
    ip = processor.image_processor
    budget = 448 * 448
    sample = conversation(make_image(4000, 3000))
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # the current `size` option, not the deprecated min/max_pixels
        row = ChatTemplateEncoder(processor, max_pixels=budget)(sample)
    (t, h, w), = np.asarray(row["image_grid_thw"]).tolist()
    image_tokens = row["input_ids"].count(processor.image_token_id)
    assert t * h * w // ip.merge_size ** 2 == image_tokens == 234  # 4000x3000 -> 504x364 pixels -> 36x26 patches
    assert h * w * ip.patch_size ** 2 <= budget and np.asarray(row["pixel_values"]).shape[0] == t * h * w
    assert row["input_ids"].count(processor.image_token_id) == \
        ChatTemplateEncoder(processor, max_pixels=budget, process_images=False)(sample)["input_ids"].count(processor.image_token_id)
    unbudgeted = ChatTemplateEncoder(processor, process_images=False)(sample)["input_ids"].count(processor.image_token_id)
    assert unbudgeted == num_image_tokens(processor, 3000, 4000) == 1230  # the processor's own default budget
    # min_pixels lifts a small image the same way; the budget is part of the encoder's fingerprint
    small = ChatTemplateEncoder(processor, min_pixels=112 * 112, max_pixels=budget)(conversation(make_image(30, 30)))
    assert int(np.prod(small["image_grid_thw"][0])) * ip.patch_size ** 2 >= 112 * 112
    assert Hasher.hash(ChatTemplateEncoder(processor, max_pixels=budget)) != Hasher.hash(ChatTemplateEncoder(processor))
    assert pixel_budget_kwargs(processor, max_pixels=budget) == {
        "images_kwargs": {"size": {"shortest_edge": ip.size["shortest_edge"], "longest_edge": budget}}}
    with pytest.raises(ValueError, match="must not exceed"):
        ChatTemplateEncoder(processor, min_pixels=500 * 500, max_pixels=budget)


def test_a_size_budget_in_processor_kwargs_is_counted_as_processed(processors):
    # transformers' token counter ignores `size`; the encoder translates it so counting matches processing
    processor = processors["qwen2_5_vl", False]
    kwargs = {"images_kwargs": {"size": {"shortest_edge": 56 * 56, "longest_edge": 224 * 224}}}
    sample = conversation(make_image(1000, 700))
    full = ChatTemplateEncoder(processor, processor_kwargs=kwargs)(sample)
    light = ChatTemplateEncoder(processor, processor_kwargs=kwargs, process_images=False)(sample)
    assert full["input_ids"] == light["input_ids"]


def test_llava_fixed_size_honours_or_refuses_a_budget(processors):
    processor = processors["llava", False]  # CLIP: every image resized and cropped to 112x112
    sample = conversation(make_image(4000, 3000))
    plain = ChatTemplateEncoder(processor)(sample)
    within = ChatTemplateEncoder(processor, max_pixels=448 * 448)(sample)
    assert within["input_ids"] == plain["input_ids"] and np.asarray(within["pixel_values"]).shape == (1, 3, 112, 112)
    with pytest.raises(ValueError, match=r"fixed 112x112 \(12544 pixels\), above max_pixels=10000"):
        ChatTemplateEncoder(processor, max_pixels=100 * 100)
