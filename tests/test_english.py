"""load_llava_instruct_150k: the release's files, COCO images from a folder or train2017.zip, text-only, tasks."""

import io
import json
import zipfile

import datasets
import pytest
from PIL import Image

import llava_zh
from factories import COLORS, jpeg_bytes
from llava_zh.english import DETAIL_QUESTIONS, english_task
from llava_zh.errors import BadSampleError
from llava_zh.schema import FEATURES
from llava_zh.tasks import task_from_shape

MULTI = [{"from": "human", "value": "What is the man holding?\n<image>"}, {"from": "gpt", "value": "A kite."},
         {"from": "human", "value": "Is it windy?"}, {"from": "gpt", "value": "Probably, the kite flies high."}]
DETAIL = [{"from": "human", "value": "<image>\nWhat do you see happening in this image?"},
          {"from": "gpt", "value": "A man flies a kite in a park while children watch."}]
REASON = [{"from": "human", "value": "What might be the reason for the crowd?\n<image>"},
          {"from": "gpt", "value": "A street parade is passing by."}]


def coco_records(start, n, conversations):
    return [{"id": f"{i:012d}", "image": f"{i:012d}.jpg", "conversations": conversations} for i in range(start, start + n)]


def coco_images(records):
    return {r["image"]: jpeg_bytes(16 + i % 7, 12 + i % 5, COLORS[i % len(COLORS)]) for i, r in enumerate(records)}


def write_release(tmp_path, with_mixed=False):
    """The three task files of LLaVA-Instruct-150K (and optionally the mixed 150K file) plus train2017.zip."""
    files = {
        "conversation_58k.json": coco_records(0, 4, MULTI),
        "complex_reasoning_77k.json": coco_records(100, 3, REASON),
        "detail_23k.json": coco_records(200, 2, DETAIL),
    }
    if with_mixed:
        files["llava_instruct_150k.json"] = [r for recs in files.values() for r in recs]
    for name, recs in files.items():
        (tmp_path / name).write_text(json.dumps(recs), encoding="utf-8")
    images = coco_images([r for name, recs in files.items() if name != "llava_instruct_150k.json" for r in recs])
    with zipfile.ZipFile(tmp_path / "train2017.zip", "w") as z:  # COCO's own layout: train2017/<name>
        z.writestr("train2017/", b"")
        for name, data in images.items():
            z.writestr(f"train2017/{name}", data)
    return files, images


def as_rows(ds):
    ds = ds.cast_column("image", datasets.Image(decode=False))
    return {r["id"]: (r["task"], r["image"]["bytes"] if r["image"] else None, r["conversations"]) for r in ds}


def test_task_files_with_images_from_train2017_zip(tmp_path):
    files, images = write_release(tmp_path)
    for name, recs in files.items():
        ds = llava_zh.load_llava_instruct_150k(str(tmp_path / name), images=str(tmp_path / "train2017.zip"))
        assert ds.features == FEATURES
        assert set(ds["language"]) == {"en"} and set(ds["source"]) == {"llava-instruct-150k"}
        task = {"conversation_58k.json": "conversation", "complex_reasoning_77k.json": "complex_reasoning",
                "detail_23k.json": "detail_description"}[name]
        rows = as_rows(ds)
        assert rows == {r["id"]: (task, images[r["image"]], r["conversations"]) for r in recs}
    first = llava_zh.load_llava_instruct_150k(str(tmp_path / "detail_23k.json"), images=str(tmp_path / "train2017.zip"))[0]
    assert first["image"].size == Image.open(io.BytesIO(images["000000000200.jpg"])).size


def test_images_from_a_folder_and_streaming_equal_map_style(tmp_path):
    files, images = write_release(tmp_path)
    folder = tmp_path / "train2017"
    folder.mkdir()
    for name, data in images.items():
        (folder / name).write_bytes(data)
    ds = llava_zh.load_llava_instruct_150k(str(tmp_path / "conversation_58k.json"), images=str(folder))
    stream = llava_zh.load_llava_instruct_150k(str(tmp_path / "conversation_58k.json"), images=str(folder), streaming=True)
    assert isinstance(stream, datasets.IterableDataset)
    assert as_rows(stream) == as_rows(ds)
    assert len(ds) == 4


def test_without_images_the_samples_are_text_only(tmp_path):
    write_release(tmp_path)
    ds = llava_zh.load_llava_instruct_150k(str(tmp_path / "detail_23k.json"))
    assert ds.features == FEATURES
    assert ds["image"] == [None, None]
    assert ds[0]["conversations"][0]["value"] == "What do you see happening in this image?"


def test_a_folder_reads_the_three_task_files_once(tmp_path):
    files, _ = write_release(tmp_path, with_mixed=True)  # the 150K file repeats them: it must not be read too
    ds = llava_zh.load_llava_instruct_150k(str(tmp_path), images=str(tmp_path / "train2017.zip"))
    assert sorted(ds["id"]) == sorted(r["id"] for n, recs in files.items() if n != "llava_instruct_150k.json" for r in recs)


def test_tasks_of_the_mixed_file_come_from_llava_questions(tmp_path):
    write_release(tmp_path, with_mixed=True)
    path = str(tmp_path / "llava_instruct_150k.json")
    ds = llava_zh.load_llava_instruct_150k(path)
    assert ds.features == FEATURES
    tasks = dict(zip(ds["id"], ds["task"]))
    assert {tasks[f"{i:012d}"] for i in range(4)} == {"conversation"}
    assert {tasks[f"{i:012d}"] for i in range(100, 103)} == {"complex_reasoning"}
    assert {tasks[f"{i:012d}"] for i in range(200, 202)} == {"detail_description"}
    # the builder's shape rule knows LLaVA's fixed detailed-description questions
    assert task_from_shape(DETAIL) == "detail_description" == english_task(DETAIL)
    only = llava_zh.load_llava_instruct_150k(path, config="detail_description")
    assert sorted(only["id"]) == [f"{i:012d}" for i in range(200, 202)]
    streamed = llava_zh.load_llava_instruct_150k(path, config="detail_description", streaming=True)
    assert sorted(r["id"] for r in streamed) == sorted(only["id"])


def test_english_task_rule():
    assert english_task(MULTI) == "conversation"
    assert english_task(REASON) == "complex_reasoning"
    assert english_task([{"from": "human", "value": "<image>\nDescribe the following image"},
                         {"from": "gpt", "value": "..."}]) == "detail_description"
    assert "what is this photo about" in DETAIL_QUESTIONS


def test_config_picks_the_task_file(tmp_path):
    write_release(tmp_path)
    names = [str(tmp_path / n) for n in ("conversation_58k.json", "complex_reasoning_77k.json", "detail_23k.json")]
    ds = llava_zh.load_llava_instruct_150k(names, config="complex_reasoning")
    assert set(ds["task"]) == {"complex_reasoning"} and len(ds) == 3
    both = llava_zh.load_llava_instruct_150k(names)
    assert len(both) == 9
    with pytest.raises(ValueError, match="holds that task"):
        llava_zh.load_llava_instruct_150k(names[:1], config="detail_description")


def test_a_missing_coco_image_follows_the_bad_sample_policy(tmp_path):
    write_release(tmp_path)
    recs = coco_records(200, 2, DETAIL) + coco_records(999, 1, DETAIL)  # 000000000999.jpg is in no container
    (tmp_path / "detail_23k.json").write_text(json.dumps(recs))
    with pytest.raises(BadSampleError, match="000000000999"):
        llava_zh.load_llava_instruct_150k(str(tmp_path / "detail_23k.json"), images=str(tmp_path / "train2017.zip"))
    ds = llava_zh.load_llava_instruct_150k(str(tmp_path / "detail_23k.json"), images=str(tmp_path / "train2017.zip"),
                                           on_bad_sample="skip")
    assert sorted(ds["id"]) == ["000000000200", "000000000201"]


def test_no_release_file_in_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="LLaVA-Instruct-150K"):
        llava_zh.load_llava_instruct_150k(str(tmp_path))
