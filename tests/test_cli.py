"""The command line is generated from the registry: every method is reachable, with the common options."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

import interpretlm as il
from interpretlm import cli

PROMPT = "When Mary and John went to the store, John gave a drink to"


@pytest.fixture()
def runner(llama, monkeypatch):
    monkeypatch.setattr(il, "load", lambda name="smollm2-135m", **kw: llama)
    return CliRunner()


def test_version_and_methods(runner):
    res = runner.invoke(cli.app, ["--version"])
    assert res.exit_code == 0 and il.__version__ in res.output
    res = runner.invoke(cli.app, ["methods"])
    assert res.exit_code == 0
    for m in il.methods():
        assert m.name in res.output and m.verb in cli.app.commands
        assert {"--json", "--out", "--device", "--dtype", "--chat"} <= {
            o for p in cli.app.commands[m.verb].params for o in p.opts}


def test_attribute_every_method_including_lrp(runner, tmp_path):
    for method in ("lrp", "occlusion"):
        out, js = tmp_path / f"{method}.html", tmp_path / f"{method}.json"
        res = runner.invoke(cli.app, ["attribute", PROMPT, "--target", " Mary", "--method", method,
                                      "--out", str(out), "--json", str(js)])
        assert res.exit_code == 0, res.output
        assert "check:" in res.output and out.read_text().startswith("<!doctype html>")
        assert il.Result.load(js).method == method


def test_options_are_parsed_and_unknown_ones_listed(runner, tmp_path):
    res = runner.invoke(cli.app, ["attribute", PROMPT, "--target", " Mary", "--method", "kernel_shap",
                                  "--n-samples", "32", "--seed", "3", "--json", str(tmp_path / "k.json")])
    assert res.exit_code == 0, res.output
    r = il.Result.load(tmp_path / "k.json")
    assert r.options["n_samples"] == 32 and r.options["seed"] == 3
    # an option another method of the verb takes is refused by this one, with the valid names listed
    res = runner.invoke(cli.app, ["attribute", PROMPT, "--target", " Mary", "--method", "saliency", "--n-samples", "3"])
    assert res.exit_code == 2 and "takes no option 'n_samples'" in res.output and "reduce=" in res.output
    res = runner.invoke(cli.app, ["logit_lens", PROMPT, "--chat"])
    assert res.exit_code == 2 and "chat" in res.output


def test_a_file_of_prompts_gives_one_result_each(runner, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("The cat sat\nWhen Mary and John went\n")
    res = runner.invoke(cli.app, ["attention", "--prompts", str(prompts), "--json", str(tmp_path / "att.json")])
    assert res.exit_code == 0, res.output
    assert res.output.count("check: row_sum_error") == 2
    assert (tmp_path / "att-0.json").exists() and (tmp_path / "att-1.json").exists()


def test_pairs_tasks_and_results_from_the_command_line(runner, tmp_path):
    res = runner.invoke(cli.app, ["patch", PROMPT, PROMPT.replace("John gave", "Mary gave"), "--target", " Mary",
                                  "--contrast", " John", "--over", "resid_pre", "--json", str(tmp_path / "p.json")])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "p.json").read_text())["fields"]["target"]["kind"] == "Contrast"
    res = runner.invoke(cli.app, ["discover_circuit", "--dataset", "induction", "--n", "4", "--steps", "2"])
    assert res.exit_code == 0, res.output
    assert "check: faithfulness" in res.output
    res = runner.invoke(cli.app, ["probe", "sentiment", "--n", "40", "--layers", "0,1", "--mdl", "False"])
    assert res.exit_code == 0, res.output
    assert "check: selectivity_at_best" in res.output
    att = tmp_path / "a.json"
    assert runner.invoke(cli.app, ["attribute", PROMPT, "--target", " Mary", "--method", "occlusion",
                                   "--json", str(att)]).exit_code == 0
    res = runner.invoke(cli.app, ["faithfulness", str(att)])
    assert res.exit_code == 0 and "deletion AOPC" in res.output
