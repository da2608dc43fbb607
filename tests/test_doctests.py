"""Every runnable example in a docstring runs and prints what it says (examples that need the real
default model are marked ``+SKIP`` and live in the slow tests instead)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import warnings

import pytest

import interpretlm

MODULES = sorted(info.name for info in pkgutil.walk_packages(interpretlm.__path__, "interpretlm."))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, report=True)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
