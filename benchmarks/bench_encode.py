"""Throughput of ChatTemplateEncoder against a raw tokenizer ceiling and a per-turn loop, in one run.

Run by hand (not part of the tests):

    python benchmarks/bench_encode.py [--samples 20000] [--tiktoken PATH | --dashscope-wheel WHEEL]

It needs the real Qwen2 tokenizer, rebuilt offline from the ``qwen.tiktoken`` ranks shipped in the
``dashscope`` wheel (``pip download --no-deps dashscope==2.0.2``; give the wheel, the extracted file, or set
``$LLAVA_ZH_QWEN_TIKTOKEN``). The processor is a Qwen2.5-VL processor around that tokenizer with the
Qwen chat template. Samples are synthetic Chinese conversations in the dataset's task mix (conversation
up to 5 rounds, complex reasoning, detailed description), each with an image of one of a few sizes.
Encoding is text-only: image tokens are inserted by count (``process_images=False``), no pixels.

Prints, measured in the same run on the same samples:
  * tokens/s of ``ChatTemplateEncoder`` (render + tokenize + labels, from LLaVA samples);
  * tokens/s of a raw ``encode_batch`` over the same final texts (the ceiling: tokenizing only);
  * tokens/s of per-turn loops: LLaVA's preprocessing (the whole prompt tokenized, then each round and
    its instruction tokenized again to count the tokens to mask), a loop rendering and tokenizing each
    turn with apply_chat_template (LLaVA-NeXT's way for Qwen), and the leanest loop (hand-written ChatML
    strings, one tokenizer call per piece);
  * the ratios encoder/ceiling (aim >= 0.5) and encoder/each loop (aim >= 3 against LLaVA's), and whether
    all of them agree token for token and label for label.

Every method runs on the same batch in turn (best of ``--repeat`` runs per batch), batch after batch, so
that the changing load of a shared machine hits all of them alike.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llava_zh.convert.chat_template import ChatTemplateEncoder  # noqa: E402
from llava_zh.convert.messages import to_messages  # noqa: E402
from llava_zh.tiny_models import (  # noqa: E402
    QWEN_DEFAULT_SYSTEM,
    Qwen2VLImageOnlyProcessor,
    build_image_processor,
    build_qwen2_tokenizer_from_ranks,
    chat_template,
    corpus_lines,
    find_qwen_tiktoken,
)

TASK_MIX = {"conversation": 247_431, "complex_reasoning": 194_646, "detail_description": 199_791}
#: (width, height) of the synthetic images: 256, 391 and 140 image tokens with Qwen2.5-VL's defaults
IMAGE_SIZES = ((448, 448), (640, 480), (384, 288))


def _text(rng: random.Random, lines: list[str], lo: int, hi: int) -> str:
    target, out = rng.randint(lo, hi), []
    while sum(map(len, out)) < target:
        out.append(rng.choice(lines))
    return "".join(out)


def synthetic_samples(n: int, seed: int = 0) -> list[dict]:
    from PIL import Image

    rng = random.Random(seed)
    lines = [line for line in corpus_lines() if "<" not in line and ">" not in line]  # no tags
    images = [Image.new("RGB", size, (120, 80, 40)) for size in IMAGE_SIZES]
    samples = []
    for i in range(n):
        task = rng.choices(list(TASK_MIX), weights=list(TASK_MIX.values()))[0]
        rounds = rng.choice([5, 5, 4, 3, 2]) if task == "conversation" else 1
        turns = []
        for r in range(rounds):
            if task == "detail_description":
                question = "请详细描述这张图片。"
                answer = _text(rng, lines, 300, 700)
            else:
                question = _text(rng, lines, 10, 40).rstrip("。") + "?"
                answer = _text(rng, lines, *((60, 260) if task == "conversation" else (200, 600)))
            if r == 0:
                question = "<image>\n" + question
            turns += [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]
        samples.append({"id": f"{task}_{i:06d}", "task": task, "image": images[i % len(images)],
                        "conversations": turns})
    return samples


def ranks_file(args) -> Path:
    if args.tiktoken:
        return Path(args.tiktoken)
    if args.dashscope_wheel:
        target = Path(tempfile.mkdtemp()) / "qwen.tiktoken"
        with zipfile.ZipFile(args.dashscope_wheel) as z:
            target.write_bytes(z.read("dashscope/resources/qwen.tiktoken"))
        return target
    found = find_qwen_tiktoken()
    if found is None:
        sys.exit("no qwen.tiktoken: pass --tiktoken PATH or --dashscope-wheel WHEEL "
                 "(pip download --no-deps dashscope==2.0.2), or set $LLAVA_ZH_QWEN_TIKTOKEN")
    return found


def final_texts(processor, samples, counts):
    """The rendered conversations with image placeholders expanded: what the tokenizer finally sees."""
    pad = processor.image_token
    texts = []
    for s in samples:
        m = to_messages(s)
        text = processor.apply_chat_template(m["messages"], tokenize=False)
        texts.append(text.replace(pad, pad * counts[id(m["images"][0])], 1))
    return texts


#: One message in ChatML, the template a per-turn loop applies to each turn on its own
TURN_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{% else %}{{ item['text'] }}{% endif %}{% endfor %}{% endif %}{{ '<|im_end|>\\n' }}{% endfor %}"
)


def per_turn_chat_template(tokenizer, processor, sample, count, header_len):
    """LLaVA-NeXT's way for Qwen: each turn rendered and tokenized on its own with apply_chat_template."""
    ids, labels = [], []
    system = tokenizer.apply_chat_template([{"role": "system", "content": QWEN_DEFAULT_SYSTEM}],
                                           chat_template=TURN_TEMPLATE, tokenize=True, return_dict=False)
    ids += system
    labels += [-100] * len(system)
    pad = processor.image_token
    for message in to_messages(sample)["messages"]:
        piece = tokenizer.apply_chat_template([message], chat_template=TURN_TEMPLATE, tokenize=False)
        piece = tokenizer(piece.replace(pad, pad * count, 1), add_special_tokens=False)["input_ids"]
        ids += piece
        if message["role"] == "assistant":  # the reply and <|im_end|>, not the header nor the last newline
            labels += [-100] * header_len + piece[header_len:-1] + [-100]
        else:
            labels += [-100] * len(piece)
    return ids, labels


def chatml_prompt(sample, count, image_token):
    """The conversation as one ChatML string, written by hand as LLaVA's conversation templates do."""
    vision = "<|vision_start|>" + image_token * count + "<|vision_end|>"
    out = [f"<|im_start|>system\n{QWEN_DEFAULT_SYSTEM}<|im_end|>\n"]
    for turn in sample["conversations"]:
        role = "user" if turn["from"] == "human" else "assistant"
        out.append(f"<|im_start|>{role}\n{turn['value'].replace('<image>' + chr(10), vision)}<|im_end|>\n")
    return "".join(out)


def llava_preprocess(tokenizer, processor, sample, count):
    """LLaVA's preprocessing for ChatML-style templates: tokenize the whole prompt, then split it into rounds
    and tokenize each round and its instruction again, only to count how many tokens to mask."""
    tok = tokenizer
    prompt = chatml_prompt(sample, count, processor.image_token)
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    labels = list(ids)
    end, reply_start = "<|im_end|>", "<|im_end|>\n<|im_start|>assistant\n"
    pieces = prompt.split(end)
    rounds = [end.join(pieces[:3])] + [end.join(pieces[i:i + 2]) for i in range(3, len(pieces), 2)]
    cursor = 0
    for text in rounds:
        if not text.strip():
            break
        parts = text.split(reply_start)
        if len(parts) != 2:
            break
        instruction = parts[0] + reply_start
        round_len = len(tok(text + end, add_special_tokens=False)["input_ids"])
        instruction_len = len(tok(instruction, add_special_tokens=False)["input_ids"])
        labels[cursor:cursor + instruction_len] = [-100] * instruction_len
        cursor += round_len
    labels[cursor:] = [-100] * (len(labels) - cursor)
    return ids, labels


def per_turn_strings(tokenizer, processor, sample, count):
    """The leanest per-turn loop: hand-written ChatML strings, each piece tokenized on its own."""
    tok = tokenizer
    ids, labels = [], []

    def add(text, learn):
        piece = tok(text, add_special_tokens=False)["input_ids"]
        ids.extend(piece)
        labels.extend(piece if learn else [-100] * len(piece))

    add(f"<|im_start|>system\n{QWEN_DEFAULT_SYSTEM}<|im_end|>\n", False)
    for turn in sample["conversations"]:
        if turn["from"] == "human":
            vision = "<|vision_start|>" + processor.image_token * count + "<|vision_end|>"
            value = turn["value"].replace("<image>\n", vision)
            add(f"<|im_start|>user\n{value}<|im_end|>\n", False)
        else:
            add("<|im_start|>assistant\n", False)
            add(turn["value"] + "<|im_end|>", True)
            add("\n", False)
    return ids, labels


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=1000, help="samples per encoder call (as in Dataset.map)")
    parser.add_argument("--repeat", type=int, default=2, help="best of this many runs per measurement")
    parser.add_argument("--tiktoken", help="path of qwen.tiktoken")
    parser.add_argument("--dashscope-wheel", help="path of a dashscope wheel holding qwen.tiktoken")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    tokenizer = build_qwen2_tokenizer_from_ranks(ranks_file(args))
    processor = Qwen2VLImageOnlyProcessor(image_processor=build_image_processor("qwen2_5_vl"), tokenizer=tokenizer,
                                          chat_template=chat_template("qwen2_5_vl"))
    print(f"real Qwen2 tokenizer: {len(tokenizer):,} tokens, built in {time.perf_counter() - start:.1f} s; "
          f"RAYON threads: {os.environ.get('RAYON_NUM_THREADS', 'default')}, cpus: {os.cpu_count()}")
    samples = synthetic_samples(args.samples)
    mix = {t: sum(s["task"] == t for s in samples) for t in TASK_MIX}
    print(f"{len(samples):,} synthetic samples: {mix}")

    encoder = ChatTemplateEncoder(processor, process_images=False)
    print(f"encoder: {encoder!r}")
    counts = {id(s["image"]): encoder.count_image_tokens([s["image"]])[0] for s in samples}
    texts = final_texts(processor, samples, counts)
    backend = tokenizer.backend_tokenizer
    header_len = len(tokenizer("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"])

    # Each method takes a batch of samples (with their final texts) and returns [(input_ids, labels)].
    methods = {
        "encoder": lambda batch, _: [(r["input_ids"], r["labels"]) for r in encoder.encode_batch(batch)],
        "ceiling": lambda _, texts_: [(e.ids, None) for e in backend.encode_batch(texts_, add_special_tokens=False)],
        "llava": lambda batch, _: [llava_preprocess(tokenizer, processor, s, counts[id(s["image"])]) for s in batch],
        "turns": lambda batch, _: [per_turn_chat_template(tokenizer, processor, s, counts[id(s["image"])], header_len)
                                   for s in batch],
        "pieces": lambda batch, _: [per_turn_strings(tokenizer, processor, s, counts[id(s["image"])]) for s in batch],
    }
    # Batch by batch, every method runs on the same batch in turn (best of --repeat runs), so that the load of
    # a shared machine changing over the minutes hits all of them alike; results are checked and dropped.
    seconds = dict.fromkeys(methods, 0.0)
    tokens = dict.fromkeys(methods, 0)
    same = dict.fromkeys(methods, 0)
    learned = 0
    for start in range(0, len(samples), args.batch_size):
        batch, batch_texts = samples[start:start + args.batch_size], texts[start:start + args.batch_size]
        outputs = {}
        for name, fn in methods.items():
            best = float("inf")
            for _ in range(args.repeat):
                begin = time.perf_counter()
                outputs[name] = fn(batch, batch_texts)
                best = min(best, time.perf_counter() - begin)
            seconds[name] += best
            tokens[name] += sum(len(ids) for ids, _ in outputs[name])
        reference = outputs["encoder"]
        learned += sum(sum(label != -100 for label in labels) for _, labels in reference)
        for name, out in outputs.items():
            if name == "ceiling":
                same[name] += sum(ids == ref_ids for (ids, _), (ref_ids, _) in zip(out, reference))
            else:
                same[name] += sum(pair == ref for pair, ref in zip(out, reference))
        print(f"  {start + len(batch):>6,} samples, load average {os.getloadavg()[0]:.1f}", end="\r", flush=True)

    print()
    rate = {name: tokens[name] / seconds[name] for name in methods}
    n_tokens = tokens["encoder"]
    print(f"{n_tokens:,} tokens ({n_tokens / len(samples):.0f} per sample, {learned / n_tokens:.0%} learned); "
          f"batches of "
          f"{args.batch_size}, best of {args.repeat} runs per batch and method; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cpus")
    labels = {
        "encoder": "ChatTemplateEncoder (render + tokenize + labels)",
        "ceiling": "raw encode_batch over the same texts (ceiling)",
        "llava": "per-turn loop: LLaVA's preprocess (whole + rounds)",
        "turns": "per-turn loop: apply_chat_template per turn",
        "pieces": "per-turn loop: hand-written strings per piece",
    }
    for name in methods:
        print(f"{labels[name]:52s} {rate[name] / 1e6:6.3f} M tokens/s  ({seconds[name]:.2f} s)")
    print(f"encoder / ceiling                  = {rate['encoder'] / rate['ceiling']:.2f}x   (aim >= 0.5)")
    print(f"encoder / LLaVA's preprocess loop  = {rate['encoder'] / rate['llava']:.2f}x   (aim >= 3)")
    print(f"encoder / apply_chat_template loop = {rate['encoder'] / rate['turns']:.2f}x")
    print(f"encoder / hand-written piece loop  = {rate['encoder'] / rate['pieces']:.2f}x")
    n = len(samples)
    print(f"identical input_ids to the ceiling: {same['ceiling']}/{n}; identical input_ids and labels to the LLaVA "
          f"loop: {same['llava']}/{n}, the apply_chat_template loop: {same['turns']}/{n}, the piece loop: "
          f"{same['pieces']}/{n}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
