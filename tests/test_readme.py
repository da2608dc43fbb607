"""Every ```python block of README.md runs, in order, in one namespace (as a reader pastes them).

``il.load`` gives a tiny random model shaped like the default one (30 layers, 9 query / 3
key-value heads: every layer and head index the README uses exists), and the data sets'
default tokenizer is that model's, so the blocks run in seconds. The figures the README
quotes (scores, timings) come from the real model and are not asserted; every call must run,
and the results must be what the README says they are (types, shapes, checks present).
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import pytest

import interpretlm as il
from interpretlm.testing import tiny_lm

# ~80 s on 2 shared cores (IG's refinement, a 30-layer patching sweep and spaCy POS tagging in
# the blocks), so it runs with the full suite (`make test`), not the fast subset.
pytestmark = pytest.mark.slow

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_readme_has_python_blocks():
    assert len(BLOCKS) >= 7


@pytest.fixture(scope="module")
def namespace(tmp_path_factory):
    """The reader's session: a tiny default model, a working folder, the files the README assumes."""
    from interpretlm.datasets import base as datasets_base

    lm = tiny_lm("llama", seed=0, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                 hidden_size=36, intermediate_size=48, max_position_embeddings=512)
    mp = pytest.MonkeyPatch()
    mp.setattr(il, "load", lambda *a, **k: lm)
    mp.setattr(datasets_base, "default_tokenizer", lambda: lm.tokenizer)
    work = tmp_path_factory.mktemp("readme")
    mp.chdir(work)
    # "your own sentence or word labels": the file a reader would have
    rows = [{"text": f"I {w} it.", "label": lab} for w, lab in [("loved", "pos"), ("hated", "neg")] * 10]
    (work / "my.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    ns: dict = {"__name__": "readme"}
    yield ns
    mp.undo()


@pytest.mark.parametrize("i", range(len(BLOCKS)))
def test_readme_block_runs(namespace, i):
    code = BLOCKS[i]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a random model fails checks; the README's figures are the real model's
        exec(compile(code, f"README.md python block {i + 1}", "exec"), namespace)
    if "lm.info()" in code:
        assert namespace["lm"].n_layers == 30
    if "a = il.attribute" in code:
        assert namespace["a"].check.name == "completeness_error"
    if "small = ds[:8]" in code:
        assert len(namespace["small"]) == 8 and namespace["h"].effect.shape == (30, 9)
