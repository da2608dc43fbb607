"""Activation store (shards, manifest, resume) and bad input: clear errors, nothing written half-way."""

import json
import warnings

import pytest
import torch

import interpretlm as il
from interpretlm.errors import ComponentError, InterpretLMError
from interpretlm.probing import StoreError, TaskError, store as store_mod
from interpretlm.probing import tasks as T
from interpretlm.testing import tiny_lm

TEXTS = [f"When Mary and John went to the store number {i}, John gave a drink to Mary." for i in range(10)] + \
    ["The cat sat.", "Paris is a city in France and Rome is a city in Italy."]


@pytest.fixture(scope="module")
def lm():
    return tiny_lm("gpt2", seed=0)


def _files(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_token_level_store_matches_capture(lm):
    store = il.activations(lm, TEXTS[:3], "resid_post", batch_size=2)
    assert store.components[0] == "embed" and len(store.components) == lm.n_layers + 1
    with lm.capture("blocks.1.resid_post") as cache:
        lm.forward(TEXTS[1])
    n = cache["blocks.1.resid_post"].shape[1]
    assert torch.allclose(store.text_rows("blocks.1.resid_post", 1), cache["blocks.1.resid_post"][0], atol=1e-5)
    assert int(store.row_ptr[2] - store.row_ptr[1]) == n
    assert store.token_ids[store.row_ptr[1]:store.row_ptr[2]].tolist() == lm.tokenize(TEXTS[1]).input_ids[0].tolist()


@pytest.mark.parametrize("pooling", ["mean", "first", "last"])
def test_pooled_store(lm, pooling):
    store = il.activations(lm, TEXTS[:4], "mlp", layers=[0], pooling=pooling, batch_size=3)
    with lm.capture("blocks.0.mlp") as cache:
        lm.forward(TEXTS[2])
    x = cache["blocks.0.mlp"][0]
    ref = {"mean": x.mean(0), "first": x[0], "last": x[-1]}[pooling]
    assert store["blocks.0.mlp"].shape == (4, lm.d_model)
    assert torch.allclose(store["blocks.0.mlp"][2], ref, atol=1e-5)


def test_heads_and_neurons_are_flattened(lm):
    store = il.activations(lm, TEXTS[:2], ["blocks.1.attn.heads", "blocks.0.mlp.neurons"], pooling="last")
    assert store["blocks.1.attn.heads"].shape == (2, lm.n_heads * lm.d_head)
    assert store["blocks.0.mlp.neurons"].shape == (2, lm.d_mlp)


def test_interrupted_store_resumes_one_shard_and_equals_an_uninterrupted_run(lm, tmp_path, monkeypatch):
    kw = dict(components="resid_post", shard_size=3, batch_size=2)
    full = il.activations(lm, TEXTS, path=tmp_path / "full", **kw)
    assert full.computed_shards == [0, 1, 2, 3]

    real = store_mod._run_shard
    calls = {"n": 0}

    def dying(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:   # killed while computing the third shard
            raise KeyboardInterrupt
        return real(*a, **k)
    monkeypatch.setattr(store_mod, "_run_shard", dying)
    with pytest.raises(KeyboardInterrupt):
        il.activations(lm, TEXTS, path=tmp_path / "part", **kw)
    manifest = json.loads((tmp_path / "part" / "manifest.json").read_text())
    assert sorted(manifest["shards"]) == ["0", "1"]
    assert not any(n.endswith(".tmp") for n in _files(tmp_path / "part"))

    monkeypatch.setattr(store_mod, "_run_shard", real)
    resumed = il.activations(lm, TEXTS, path=tmp_path / "part", **kw)
    assert resumed.computed_shards == [2, 3]   # only the interrupted shard is recomputed, then the rest
    assert (json.loads((tmp_path / "part" / "manifest.json").read_text())
            == json.loads((tmp_path / "full" / "manifest.json").read_text()))
    for k in range(4):
        name = f"shard-{k:05d}.safetensors"
        assert (tmp_path / "part" / name).read_bytes() == (tmp_path / "full" / name).read_bytes()
    for c in full.components:
        assert torch.equal(resumed[c], full[c])
    again = il.activations(lm, TEXTS, path=tmp_path / "part", **kw)
    assert again.computed_shards == []
    opened = store_mod.ActivationStore.open(tmp_path / "part")
    assert torch.equal(opened["blocks.1.resid_post"], full["blocks.1.resid_post"])


def test_a_write_that_fails_leaves_no_partial_shard(lm, tmp_path, monkeypatch):
    import safetensors.torch as st

    def broken(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half")
        raise OSError("disk full")
    monkeypatch.setattr(st, "save_file", broken)
    with pytest.raises(OSError):
        il.activations(lm, TEXTS[:4], "resid_post", path=tmp_path / "s", shard_size=2)
    assert _files(tmp_path / "s") == []


def test_store_of_another_request_is_refused_and_left_alone(lm, tmp_path):
    il.activations(lm, TEXTS[:4], "resid_post", path=tmp_path / "s", shard_size=2)
    before = {n: (tmp_path / "s" / n).read_bytes() for n in _files(tmp_path / "s")}
    with pytest.raises(StoreError, match="different request"):
        il.activations(lm, TEXTS[:5], "resid_post", path=tmp_path / "s", shard_size=2)
    assert {n: (tmp_path / "s" / n).read_bytes() for n in _files(tmp_path / "s")} == before
    with pytest.raises(StoreError, match="unfinished|no activation store"):
        store_mod.ActivationStore.open(tmp_path / "nothing")


def test_a_folder_with_only_hidden_files_is_empty_and_one_with_other_files_is_refused(lm, tmp_path):
    """A Ray worker that is still starting writes and removes a ``.write-probe-*`` file in the store folder,
    possibly while the first worker's plan checks that folder: that file must not make it "not empty"."""
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / ".write-probe-abc").touch()
    ref = il.activations(lm, TEXTS[:4], "resid_post", shard_size=2)
    got = il.activations(lm, TEXTS[:4], "resid_post", path=tmp_path / "s", shard_size=2)
    assert got.computed_shards == [0, 1] and torch.equal(got["blocks.0.resid_post"], ref["blocks.0.resid_post"])
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="holds other files"):
        il.activations(lm, TEXTS[:4], "resid_post", path=tmp_path / "t", shard_size=2)
    assert (tmp_path / "t" / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("call, err, msg", [
    (lambda lm, p: il.activations(lm, TEXTS, "resid_mid", path=p), ComponentError, "Unknown component"),
    (lambda lm, p: il.activations(lm, TEXTS, "attn.pattern", path=p), ComponentError, "cannot be probed"),
    (lambda lm, p: il.activations(lm, TEXTS, "resid_post", layers=[7], path=p), ComponentError, "out of range"),
    (lambda lm, p: il.activations(lm, ["ok", ""], path=p), InterpretLMError, "empty"),
    (lambda lm, p: il.activations(lm, TEXTS, pooling="max", path=p), InterpretLMError, "pooling"),
    (lambda lm, p: il.activations(lm, TEXTS, positions=[[0]], path=p), InterpretLMError, "one list per text"),
])
def test_bad_extraction_requests_write_nothing(lm, tmp_path, call, err, msg):
    with pytest.raises(err, match=msg):
        call(lm, tmp_path / "s")
    assert not (tmp_path / "s").exists()


def _jsonl(tmp_path, lines):
    p = tmp_path / "task.jsonl"
    p.write_text("\n".join(json.dumps(x) for x in lines))
    return p


def test_jsonl_tasks_load_sentence_and_word_labels(tmp_path):
    t = T.from_jsonl(_jsonl(tmp_path, [{"text": "I loved it.", "label": "pos"}, {"text": "I hated it.", "label": "neg"}]))
    assert t.level == "sentence" and t.labels == ["pos", "neg"] and t.name == "task"
    t = T.from_jsonl(_jsonl(tmp_path, [{"text": "The cat sat.", "words": ["The", "cat", "sat"],
                                        "labels": ["DET", "NOUN", "VERB"]},
                                       {"text": "A dog ran.", "spans": [[2, 5]], "labels": ["NOUN"]}]))
    assert t.level == "token" and t.spans == [[(0, 3), (4, 7), (8, 11)], [(2, 5)]] and t.words[1] == ["dog"]
    t = T.from_jsonl(_jsonl(tmp_path, [{"text": "a b", "words": ["a", "b"], "labels": [0.5, 1.5]}]))
    assert t.kind == "numeric"


@pytest.mark.parametrize("lines, msg", [
    ([{"text": "The cat sat.", "words": ["The", "cat"], "labels": ["DET", "NOUN", "VERB"]}], "2 words but 3 labels"),
    ([{"text": "The cat.", "spans": [[0, 3]], "labels": ["DET", "NOUN"]}], "1 spans but 2 labels"),
    ([{"text": "The cat.", "label": {"a": 1}}], "labels must be strings or integers"),
    ([{"text": "The cat.", "label": None}], "labels must be strings or integers"),
    ([{"text": "A", "label": "x"}, {"text": "B", "label": 0.5}], "mix classes"),
    ([{"text": "The cat.", "words": ["dog"], "labels": ["N"]}], "not found"),
    ([{"text": "The cat.", "spans": [[3, 40]], "labels": ["N"]}], "outside the text"),
    ([{"text": "", "label": "x"}], "non-empty string"),
    ([{"label": "x"}], "needs a 'text'"),
    ([], "No .* were given"),
])
def test_bad_label_files_raise_clear_errors(tmp_path, lines, msg):
    with pytest.raises(TaskError, match=msg):
        T.from_jsonl(_jsonl(tmp_path, lines))


def test_too_few_examples_per_class_raises_before_anything_is_written(lm, tmp_path):
    task = T.Task.sentences("few", ["I loved it.", "Great.", "Bad.", "Awful.", "Meh."],
                            ["pos", "pos", "neg", "neg", "neutral"])
    with pytest.raises(TaskError, match="too few examples per class.*'neutral' has 1"):
        il.probe(lm, task, path=tmp_path / "acts")
    assert not (tmp_path / "acts").exists()
    with pytest.raises(TaskError, match="real-valued|mix"):
        T.Task.sentences("x", ["a", "b"], ["p", 1.5])
    depth = T.Task.sentences("depth", ["a b", "c d", "e f"], [1.0, 2.0, 3.0])
    with pytest.raises(InterpretLMError, match="probe='ridge'"):
        il.probe(lm, depth, probe="logistic", path=tmp_path / "acts")
    with pytest.raises(InterpretLMError, match="Unknown probe"):
        il.probe(lm, depth, probe="svm", path=tmp_path / "acts")
    assert not (tmp_path / "acts").exists()


def test_probe_writes_a_resumable_store_when_given_a_path(lm, tmp_path):
    task = T.sentiment(24, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = il.probe(lm, task, layers=[0, 1], control=False, mdl=False, path=tmp_path / "acts", shard_size=10)
        b = il.probe(lm, task, layers=[0, 1], control=False, mdl=False, path=tmp_path / "acts", shard_size=10)
    assert (tmp_path / "acts" / "manifest.json").exists() and len(list((tmp_path / "acts").glob("shard-*"))) == 3
    assert a.scores["accuracy"] == b.scores["accuracy"]
