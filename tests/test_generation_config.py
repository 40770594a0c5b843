"""The model's sampling defaults: read from a Hugging Face folder's generation_config.json, a GGUF's
general.sampling keys, or ours for the embedded model; `none` keeps OpenAI's."""

from __future__ import annotations

import json

import gguf
import pytest

from pyinfer.generation_config import EMBEDDED_MODEL_DEFAULTS, generation_defaults


def test_a_folder_s_generation_config_gives_its_sampling_fields(tmp_path):
    config = {"do_sample": True, "temperature": 0.6, "top_p": 0.9, "top_k": None, "max_new_tokens": 64}
    (tmp_path / "generation_config.json").write_text(json.dumps({**config, "eos_token_id": [1, 2]}))
    expected = {"temperature": 0.6, "top_p": 0.9, "max_tokens": 64}
    assert generation_defaults("auto", str(tmp_path), "hf") == expected
    assert generation_defaults("none", str(tmp_path), "hf") == {}
    assert generation_defaults(str(tmp_path), "elsewhere.gguf", "gguf") == expected  # a folder named


def test_a_folder_without_one_gives_none_and_naming_one_that_lacks_it_fails(tmp_path):
    assert generation_defaults("auto", str(tmp_path), "hf") == {}
    with pytest.raises(FileNotFoundError, match=r"generation_config\.json"):
        generation_defaults(str(tmp_path), str(tmp_path), "hf")


def test_a_gguf_s_sampling_keys(tmp_path):
    path = tmp_path / "model.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_float32("general.sampling.temp", 0.25)
    writer.add_int32("general.sampling.top_k", 20)
    writer.add_float32("general.sampling.penalty_repeat", 1.5)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert generation_defaults("auto", str(path), "gguf") == {
        "temperature": 0.25,
        "top_k": 20,
        "repetition_penalty": 1.5,
    }


def test_the_embedded_model_answers_greedily(smollm2_path):
    assert (
        generation_defaults("auto", smollm2_path, "gguf") == EMBEDDED_MODEL_DEFAULTS == {"temperature": 0.0}
    )
