"""The demo runner: the sections it is given, in order, each timed, in one report."""

from interpretlm.demo import Section, next_tokens_section, run_demo
from interpretlm.testing import tiny_lm


def test_run_demo_runs_only_the_sections_it_is_given(tmp_path):
    """``sections=`` replaces the registry's list: two sections given, two run, in that order."""
    lines: list[str] = []

    def second(lm, prompts):
        return Section("Second section", text=[f"{len(prompts)} prompts"])

    path = run_demo(tiny_lm("llama"), tmp_path / "demo.html", prompts=["a b c", "d e"], echo=lines.append,
                    sections=[next_tokens_section, second])
    titles = [line for line in lines if line.startswith("\n== ")]
    assert [t.split(" (")[0] for t in titles] == ["\n== Next-token predictions", "\n== Second section"]
    assert "2 prompts" in lines
    html = path.read_text()
    assert html.index("Next-token predictions") < html.index("Second section")
