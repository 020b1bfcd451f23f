"""Backends: the shared pure parts, the transformers backend on a tiny Qwen2.5-VL, and the pure parts of
the vLLM and Ray backends (whose engines cannot run on this CPU machine)."""

from __future__ import annotations

import io
import types

import pytest

from llava_zh.regenerate.backends import BACKENDS, backend_class, create_backend
from llava_zh.regenerate.backends.base import (
    GenerationParams,
    GenerationRequest,
    GenerationResult,
    batched,
    chat_messages,
    count_generated,
    match_results,
    request_seed,
)


def jpeg(seed: int = 0, width: int = 56, height: int = 56) -> bytes:
    from llava_zh.tiny_models import make_image

    buf = io.BytesIO()
    make_image(width, height, seed).save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def tiny_qwen():
    import torch

    from llava_zh.tiny_models import build_tiny_vlm

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: more threads only add contention on a shared machine
    yield build_tiny_vlm("qwen2_5_vl", image_size=112)
    torch.set_num_threads(threads)


# --- shared pure parts ---------------------------------------------------------------------------------------------

def test_registry_imports_lazily_and_names_unknown_backends():
    assert sorted(BACKENDS) == ["ray", "transformers", "vllm"]
    assert backend_class("vllm").__name__ == "VLLMBackend"  # importing the module does not need vllm
    assert backend_class("ray").name == "ray"
    with pytest.raises(ValueError, match="unknown backend 'tgi'"):
        backend_class("tgi")


def test_generation_params_map_to_transformers_and_vllm():
    p = GenerationParams(max_new_tokens=512, temperature=0.7, top_p=0.8, top_k=20, repetition_penalty=1.05, seed=3)
    assert p.hf_generate_kwargs() == {
        "max_new_tokens": 512, "do_sample": True, "temperature": 0.7, "top_p": 0.8, "top_k": 20,
        "repetition_penalty": 1.05,
    }
    v = p.vllm_sampling_kwargs("img1")
    assert v == {"max_tokens": 512, "temperature": 0.7, "seed": request_seed(3, "img1"), "top_p": 0.8, "top_k": 20,
                 "repetition_penalty": 1.05}
    assert v["seed"] != p.vllm_sampling_kwargs("img2")["seed"]
    greedy = GenerationParams(temperature=0, repetition_penalty=None)
    assert greedy.hf_generate_kwargs() == {"max_new_tokens": 2048, "do_sample": False}
    assert greedy.to_dict()["do_sample"] is False
    with pytest.raises(ValueError, match="max_new_tokens"):
        GenerationParams(max_new_tokens=0)


def test_request_seed_is_stable_and_depends_on_every_id():
    assert request_seed(0, "a", "b") == request_seed(0, "a", "b")
    assert len({request_seed(0, "a", "b"), request_seed(1, "a", "b"), request_seed(0, "b", "a"), request_seed(0, "ab")}) == 4
    assert 0 <= request_seed(7, "x") < 2**31


def test_requests_read_images_inline_or_from_containers(tmp_path):
    import zipfile

    data = jpeg(1)
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.jpg").write_bytes(data)
    with zipfile.ZipFile(tmp_path / "imgs.zip", "w") as z:
        z.writestr("photos/b.jpg", data)
    inline = GenerationRequest("a", "p", image=data)
    folder = GenerationRequest("a", "p", container=str(tmp_path / "imgs"), member="a.jpg")
    zipped = GenerationRequest("b", "p", container=str(tmp_path / "imgs.zip"), member="photos/b.jpg")
    assert inline.image_bytes() == folder.image_bytes() == zipped.image_bytes() == data
    assert zipped.load_image().size == (56, 56) and zipped.load_image().mode == "RGB"
    assert GenerationRequest.from_row(zipped.to_row()) == zipped
    with pytest.raises(FileNotFoundError, match="'missing.jpg' not found"):
        GenerationRequest("c", "p", container=str(tmp_path / "imgs"), member="missing.jpg").image_bytes()
    with pytest.raises(ValueError, match="cannot be read"):
        GenerationRequest("d", "p", image=b"not an image").load_image()


def test_chat_messages_for_transformers_and_vllm():
    r = GenerationRequest("a", "详细描述这张照片。", system="你是一个视觉助手。")
    hf = chat_messages(r)
    assert hf[0] == {"role": "system", "content": [{"type": "text", "text": "你是一个视觉助手。"}]}
    assert hf[1] == {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "详细描述这张照片。"}]}
    image = object()
    vllm = chat_messages(GenerationRequest("a", "p"), image, image_type="image_pil")
    assert vllm == [{"role": "user", "content": [{"type": "image_pil", "image_pil": image}, {"type": "text", "text": "p"}]}]


def test_batched_and_match_results():
    assert list(batched(range(7), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
    with pytest.raises(ValueError):
        list(batched([1], 0))
    reqs = [GenerationRequest(i, "p") for i in ("a", "b", "c")]
    res = [GenerationResult("c", "3"), GenerationResult("a", "1"), GenerationResult("b", "2")]
    assert [r.text for r in match_results(reqs, res)] == ["1", "2", "3"]
    with pytest.raises(ValueError, match="no answer for 1"):
        match_results(reqs, res[:2])
    with pytest.raises(ValueError, match="twice"):
        match_results(reqs, res + [GenerationResult("a", "again")])
    with pytest.raises(ValueError, match="not asked"):
        match_results(reqs[:2], res)


def test_count_generated_stops_at_the_first_stop_token():
    assert count_generated([5, 6, 151645, 151643, 151643], [151645, 151643]) == 3
    assert count_generated([5, 6, 7], [151645]) == 3
    assert count_generated([151643, 151643], [151643]) == 1


# --- transformers backend on a tiny random Qwen2.5-VL --------------------------------------------------------------

def test_transformers_backend_batches_with_left_padding_like_single_requests(tiny_qwen):
    processor, model = tiny_qwen
    backend = create_backend("transformers", model, processor=processor, device="cpu", prefetch=False,
                             generation=GenerationParams(max_new_tokens=8, temperature=0))
    # different image sizes give prompts of different lengths, so the batch needs padding
    reqs = [GenerationRequest(f"r{i}", "详细描述这张照片。", image=jpeg(i, 56 + 28 * i, 56)) for i in range(3)]
    batch = {r.id: r for r in backend.generate(reqs)}
    single = {r.id: backend.generate([r])[0] for r in reqs}
    for rid in batch:
        assert batch[rid].text == single[rid].text
        assert batch[rid].output_tokens == single[rid].output_tokens
        assert batch[rid].input_tokens == single[rid].input_tokens
    assert processor.tokenizer.padding_side == "left"
    assert len({r.input_tokens for r in batch.values()}) == 3
    assert all(1 <= r.output_tokens <= 8 and r.batch_size == 3 and r.seconds > 0 for r in batch.values())
    assert backend.describe()["backend"] == "transformers" and "float32" in backend.describe()["dtype"]


def test_transformers_backend_records_unreadable_images_and_streams_with_prefetch(tiny_qwen):
    processor, model = tiny_qwen
    backend = create_backend("transformers", model, processor=processor, device="cpu",
                             generation=GenerationParams(max_new_tokens=4, temperature=0.7, seed=1))
    batches = [[GenerationRequest("ok1", "p", image=jpeg(1)), GenerationRequest("bad", "p", image=b"\xff\xd8broken")],
               [GenerationRequest("ok2", "p", image=jpeg(2))]]
    results = [r for chunk in backend.generate_stream(batches) for r in chunk]
    by_id = {r.id: r for r in results}
    assert sorted(by_id) == ["bad", "ok1", "ok2"]
    assert by_id["bad"].error and "cannot be read" in by_id["bad"].error and by_id["bad"].text == ""
    assert by_id["ok1"].error is None and by_id["ok1"].output_tokens >= 1
    # sampling is seeded from the run seed and the batch ids: the same batch samples the same way again
    again = {r.id: r for r in backend.generate(batches[0])}
    assert again["ok1"].text == by_id["ok1"].text


def test_transformers_backend_loads_a_saved_model_folder(tmp_path, tiny_qwen):
    from llava_zh.tiny_models import save_tiny_vlm

    save_tiny_vlm(*tiny_qwen, tmp_path / "tiny")
    backend = create_backend("transformers", str(tmp_path / "tiny"), dtype="float32", device="cpu",
                             generation=GenerationParams(max_new_tokens=4, temperature=0))
    assert backend.model_id == str(tmp_path / "tiny")
    [result] = backend.generate([GenerationRequest("a", "这是什么?", image=jpeg(0))])
    assert result.id == "a" and result.output_tokens >= 1


def test_transformers_backend_needs_a_processor_for_a_model_object():
    from llava_zh.tiny_models import build_tiny_vlm

    _, model = build_tiny_vlm("qwen2_5_vl", image_size=112)
    model.name_or_path = ""
    with pytest.raises(ValueError, match="processor"):
        create_backend("transformers", model, device="cpu")


# --- vLLM: pure parts (the engine needs a GPU) ---------------------------------------------------------------------

def test_vllm_llm_kwargs():
    from llava_zh.regenerate.backends.vllm import llm_kwargs

    kw = llm_kwargs("Qwen/Qwen2.5-VL-32B-Instruct", tensor_parallel_size=4, max_model_len=8192,
                    mm_processor_kwargs={"max_pixels": 1280 * 28 * 28}, enforce_eager=True)
    assert kw["tensor_parallel_size"] == 4 and kw["limit_mm_per_prompt"] == {"image": 1}
    assert kw["max_model_len"] == 8192 and kw["mm_processor_kwargs"] == {"max_pixels": 1003520}
    assert kw["enforce_eager"] is True and kw["model"] == "Qwen/Qwen2.5-VL-32B-Instruct"
    with pytest.raises(ValueError, match="tensor_parallel_size"):
        llm_kwargs("m", tensor_parallel_size=0)


def test_vllm_conversations_and_mapping_outputs_back_to_ids():
    from llava_zh.regenerate.backends.vllm import build_conversations, results_from_outputs

    reqs = [GenerationRequest("a", "描述图片", image=jpeg(1)), GenerationRequest("b", "描述图片", image=b"junk"),
            GenerationRequest("c", "描述图片", image=jpeg(2))]
    kept, conversations, failed = build_conversations(reqs)
    assert [r.id for r in kept] == ["a", "c"] and [f.id for f in failed] == ["b"] and failed[0].error
    part = conversations[0][0]["content"][0]
    assert part["type"] == "image_pil" and part["image_pil"].size == (56, 56)

    # the fields of vllm.RequestOutput / CompletionOutput that the backend reads
    def output(text, n_out, n_in):
        return types.SimpleNamespace(outputs=[types.SimpleNamespace(text=text, token_ids=list(range(n_out)))],
                                     prompt_token_ids=list(range(n_in)))

    results = results_from_outputs(kept, [output("甲", 5, 40), output("丙", 7, 41)], seconds=2.0, batch_size=3)
    assert [(r.id, r.text, r.output_tokens, r.input_tokens) for r in results] == [("a", "甲", 5, 40), ("c", "丙", 7, 41)]
    with pytest.raises(ValueError, match="1 outputs for 2 requests"):
        results_from_outputs(kept, [output("甲", 1, 1)], seconds=1.0, batch_size=2)


def test_vllm_backend_without_vllm_names_the_extra():
    pytest.importorskip("torch")
    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r'pip install "llava-zh\[vllm\]"'):
            create_backend("vllm", "Qwen/Qwen2.5-VL-7B-Instruct")
    else:  # pragma: no cover - only where vLLM is installed
        pytest.skip("vllm is installed here")


# --- Ray: pure parts and the map_batches callable run directly ----------------------------------------------------

def test_ray_request_and_result_tables_round_trip():
    from llava_zh.regenerate.backends.ray import request_table, result_table, results_from_table

    reqs = [GenerationRequest("a", "p", image=b"\x01\x02"), GenerationRequest("b", "p", container="/x.zip", member="b.jpg")]
    table = request_table(reqs)
    assert table.column_names == ["id", "prompt", "image", "container", "member", "system"]
    assert [GenerationRequest.from_row(r) for r in table.to_pylist()] == reqs
    results = [GenerationResult("a", "甲", 3, 10, 0.5, 2), GenerationResult("b", "", error="image of 'b' cannot be read")]
    assert results_from_table(result_table(results)) == results
    assert results_from_table({"id": ["a"], "text": ["x"], "error": [float("nan")]})[0].error is None


def test_ray_plans_one_actor_per_gpu_share():
    from llava_zh.regenerate.backends.ray import plan_actors

    assert plan_actors(16, 1) == 16
    assert plan_actors(16, 4) == 4
    assert plan_actors(0, 1) == 1
    assert plan_actors(16, 1, requested=3) == 3
    with pytest.raises(ValueError):
        plan_actors(8, 1, requested=0)


def test_ray_map_batches_arguments():
    from llava_zh.regenerate.backends.ray import GenerateBatch, RayBackend

    backend = RayBackend("Qwen/Qwen2.5-VL-7B-Instruct", inner="vllm", gpus_per_actor=2, actor_batch_size=64,
                         inner_options={"tensor_parallel_size": 2}, generation=GenerationParams(seed=5))
    kw = backend.map_batches_kwargs(num_actors=8)
    assert kw["concurrency"] == 8 and kw["num_gpus"] == 2 and kw["batch_size"] == 64
    assert kw["batch_format"] == "pyarrow"
    ctor = kw["fn_constructor_kwargs"]
    assert ctor["backend"] == "vllm" and ctor["options"] == {"tensor_parallel_size": 2}
    assert GenerationParams(**ctor["generation"]) == GenerationParams(seed=5)
    with pytest.raises(ValueError, match="not another ray"):
        RayBackend("m", inner="ray")
    assert GenerateBatch.__call__  # the callable class Ray instantiates once per actor


def test_ray_actor_callable_answers_a_pyarrow_batch_with_a_real_backend(tmp_path, tiny_qwen):
    from llava_zh.regenerate.backends.ray import GenerateBatch, request_table, results_from_table
    from llava_zh.tiny_models import save_tiny_vlm

    save_tiny_vlm(*tiny_qwen, tmp_path / "tiny")
    actor = GenerateBatch("transformers", str(tmp_path / "tiny"), options={"device": "cpu", "prefetch": False},
                          generation={"max_new_tokens": 4, "temperature": 0.0, "seed": 0})
    out = actor(request_table([GenerationRequest("a", "这是什么?", image=jpeg(0)),
                               GenerationRequest("b", "这是什么?", image=b"junk")]))
    results = {r.id: r for r in results_from_table(out)}
    assert sorted(results) == ["a", "b"]
    assert results["a"].output_tokens >= 1 and results["a"].error is None and results["b"].error
