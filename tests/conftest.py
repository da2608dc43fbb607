import os
import shutil
import warnings

import pytest
import torch

from interpretlm.testing import tiny_lm

# Tests never reach a model hub: no retries against an unreachable network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
from interpretlm.runtime import use_free_cores  # noqa: E402

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two workers on the two cores: one thread each (and in their subprocesses), since
    # two workers each spinning two OpenMP threads on two cores slow each other down.
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
use_free_cores()
warnings.filterwarnings("ignore", message=".*bos_token_id must be.*")

FAMILIES = ["llama", "gpt2", "gpt_neox", "bert", "phi3", "gemma3"]


@pytest.fixture(scope="session", params=FAMILIES)
def any_lm(request):
    """A tiny random model of each supported family."""
    return tiny_lm(request.param, seed=0)


@pytest.fixture(scope="session")
def llama():
    return tiny_lm("llama", seed=0)


@pytest.fixture(scope="session")
def default_lm():
    """The real default model (SmolLM2-135M-Instruct); converted once and cached."""
    import interpretlm as il
    return il.load()


def pytest_collection_modifyitems(config, items):
    """Every test that uses the real default model is ``slow``, marked or not: ``pytest -m "not slow"``
    is then the fast subset (tiny models only), and ``make test`` still runs everything."""
    for item in items:
        if "default_lm" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


def prompt_for(lm):
    return "When Mary and [MASK] went to the store" if lm.family.name == "bert" else "When Mary and John went to the store"


# Debian's chromium, driven by playwright (make test installs it; `playwright install` cannot download here)
CHROMIUM = shutil.which("chromium")


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium for the view and app tests (one per test module)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu",
                                                              "--disable-background-networking"])
        yield b
        b.close()
