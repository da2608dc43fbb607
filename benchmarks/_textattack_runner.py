"""TextAttack 0.3.11 and ``il.counterfactuals`` on the same model, examples and goal, in one process.

Runs in the TextAttack venv (``/work/main/.bench-venvs/textattack``, see benchmarks/README.md)
with the working tree on ``PYTHONPATH``; ``counterfactuals.py --peer textattack`` starts it.
The job (JSON, first argument) names the examples (task and text), the query budget, the
thread count, the fluency weight and the TextAttack recipes. It prints one JSON line per
example and method, as it goes, so a run cut short keeps what it measured.

The model: the default model (SmolLM2-135M, ``il.load()``) wrapped as a TextAttack
``ModelWrapper`` whose ``__call__`` returns (batches of 32, the language-model head at each
row's last position only) the label probabilities read through the verbalizer tokens (the core's ``Label`` read-out: log-sum-exp of each label's tokens'
log-probabilities at the last position, normalised over the labels) of the prompt template
filled with the attacked text. TextAttack edits the text only, so the template words are as
protected as ``keep=`` makes them for interpretlm.

The recipes (both offline):

- ``embedding``: greedy search with word-importance ranking by deletion
  (``GreedyWordSwapWIR("delete")``), word swaps from the model's own input-embedding
  neighbours (the 15 nearest whole-word tokens by cosine, TextAttack's ``WordSwapEmbedding``
  default count, with the counter-fitted vectors it downloads replaced by the model's own),
  ``RepeatModification`` and ``StopwordModification``, goal ``UntargetedClassification``.
- ``deepwordbug``: TextAttack's ``DeepWordBugGao2018`` recipe as shipped.

Three stand-ins make ``import textattack`` work offline without flair (whose pins need
transformers < 5): a ``flair`` module holding the three names TextAttack imports (used only by
part-of-speech constraints and the flair tokenizer, which neither recipe uses), and NLTK's
English stopword list written in NLTK's data format to a folder on ``NLTK_DATA``.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import types
import warnings
from pathlib import Path

# NLTK's English stopword list (nltk_data corpora/stopwords/english), for StopwordModification
NLTK_ENGLISH_STOPWORDS = """i me my myself we our ours ourselves you you're you've you'll you'd your yours yourself
yourselves he him his himself she she's her hers herself it it's its itself they them their theirs themselves what which
who whom this that that'll these those am is are was were be been being have has had having do does did doing a an the
and but if or because as until while of at by for with about against between into through during before after above
below to from up down in out on off over under again further then once here there when where why how all any both each
few more most other some such no nor not only own same so than too very s t can will just don don't should should've
now d ll m o re ve y ain aren aren't couldn couldn't didn didn't doesn doesn't hadn hadn't hasn hasn't haven haven't
isn isn't ma mightn mightn't mustn mustn't needn needn't shan shan't shouldn shouldn't wasn wasn't weren weren't won
won't wouldn wouldn't""".split()


def _offline_stand_ins() -> None:
    folder = Path(tempfile.gettempdir()) / "interpretlm-nltk-data"
    stop = folder / "corpora" / "stopwords"
    stop.mkdir(parents=True, exist_ok=True)
    (stop / "english").write_text("\n".join(NLTK_ENGLISH_STOPWORDS) + "\n")
    os.environ["NLTK_DATA"] = str(folder)
    flair = types.ModuleType("flair")
    flair.__path__ = []
    data, models = types.ModuleType("flair.data"), types.ModuleType("flair.models")

    class _Unused:
        def __init__(self, *a, **k):
            raise RuntimeError("flair is not installed in this venv: a flair-based constraint was used")

    data.Tokenizer, data.Sentence, models.SequenceTagger = object, _Unused, _Unused
    flair.data, flair.models = data, models
    sys.modules.update({"flair": flair, "flair.data": data, "flair.models": models})


def main() -> None:
    job = json.loads(Path(sys.argv[1]).read_text())
    _offline_stand_ins()
    warnings.filterwarnings("ignore")
    import numpy as np
    import torch

    torch.set_num_threads(int(job["threads"]))
    import textattack
    from textattack.constraints.pre_transformation import RepeatModification, StopwordModification
    from textattack.goal_functions import UntargetedClassification
    from textattack.models.wrappers import ModelWrapper
    from textattack.search_methods import GreedyWordSwapWIR
    from textattack.transformations import WordSwap

    import interpretlm as il
    from interpretlm.counterfactual.evaluation import evaluation_set
    from interpretlm.counterfactual.scoring import as_rows, perplexity
    from interpretlm.counterfactual.words import levenshtein, split

    textattack.shared.utils.logger.setLevel("ERROR")
    lm = il.load()

    class VerbalizerWrapper(ModelWrapper):
        """The LM as a classifier: label probabilities through the verbalizer tokens of ``template``."""

        def __init__(self, template: str, target: il.Label) -> None:
            self.model, self.template = lm.model, template
            self.label_ids = list(target.bind(lm).label_ids.values())

        def __call__(self, texts: list[str]) -> np.ndarray:
            out = []
            with torch.no_grad(), lm.running():
                for s in range(0, len(texts), 32):
                    b = lm.tokenize([self.template.format(text=t) for t in texts[s:s + 32]])
                    # logits at each row's last position only (as interpretlm's scorer computes them without
                    # fluency): the language-model head over every position would make TextAttack's queries
                    # dearer than they need be
                    keep = torch.unique(b.last_index)
                    logits = lm.model(input_ids=b.input_ids, attention_mask=b.attention_mask, use_cache=False,
                                      logits_to_keep=keep).logits
                    last = logits[torch.arange(logits.shape[0]), torch.searchsorted(keep, b.last_index)]
                    logp = torch.log_softmax(last.float(), -1)
                    per = torch.stack([torch.logsumexp(logp[:, ids], -1) for ids in self.label_ids], -1)
                    out.append(torch.softmax(per, -1).numpy())
            return np.concatenate(out)

    # the model's whole-word tokens (leading space, letters only) and their unit embeddings
    emb = lm.model.get_input_embeddings().weight.detach().float()
    decoded = lm.tokenizer.batch_decode([[v] for v in range(lm.vocab_size)])
    vocab = {d[1:]: v for v, d in enumerate(decoded) if d.startswith(" ") and d[1:].isalpha()}
    ids = torch.tensor(list(vocab.values()))
    words = list(vocab)
    unit = torch.nn.functional.normalize(emb[ids], dim=-1)

    class ModelEmbeddingSwap(WordSwap):
        """The ``k`` nearest whole-word tokens of the word's token in the model's own input embedding (cosine)."""

        def __init__(self, k: int = 15) -> None:
            super().__init__()
            self.k = k
            self.memo: dict[str, list[str]] = {}

        def _get_replacement_words(self, word: str) -> list[str]:
            if word not in self.memo:
                key = word if word in vocab else word.lower()
                if key not in vocab:
                    self.memo[word] = []
                else:
                    sims = unit @ unit[words.index(key)]
                    top = sims.topk(self.k + 1).indices.tolist()
                    self.memo[word] = [words[t] for t in top if words[t] != key][:self.k]
            return self.memo[word]

    def build(recipe: str, wrapper: ModelWrapper):
        if recipe == "embedding":
            goal = UntargetedClassification(wrapper, query_budget=int(job["max_queries"]))
            cons = [RepeatModification(), StopwordModification(stopwords=NLTK_ENGLISH_STOPWORDS)]
            return textattack.Attack(goal, cons, ModelEmbeddingSwap(15), GreedyWordSwapWIR(wir_method="delete"))
        if recipe == "deepwordbug":
            from textattack.attack_recipes import DeepWordBugGao2018
            attack = DeepWordBugGao2018.build(wrapper)
            attack.goal_function.query_budget = int(job["max_queries"])
            return attack
        raise SystemExit(f"unknown recipe {recipe!r}")

    examples = {(e.task, e.text): e for e in evaluation_set()}
    # one untimed call first: the weights' fingerprint and the vocabulary's words are computed once per
    # process (tens of seconds under load), which would otherwise land on the first timed example
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = evaluation_set()[0]
        il.counterfactuals(lm, first.prompt, first.target, keep=list(first.keep), n=1, max_queries=2, progress=False)
    for task, text in job["examples"]:
        ex = examples[task, text]
        template = ex.prompt.replace(ex.text, "{text}")
        labels = list(ex.target.verbalizers)
        wrapper = VerbalizerWrapper(template, ex.target)
        n_words = len(split(ex.prompt))
        for search in job.get("searches", ["beam"]):
            t = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                cf = il.counterfactuals(lm, ex.prompt, ex.target, keep=list(ex.keep), n=1, seed=0, search=search,
                                        max_queries=int(job["max_queries"]), fluency=float(job["fluency"]),
                                        progress=False)
            secs = time.perf_counter() - t
            e = cf.edits[0]
            print(json.dumps({"task": task, "text": text,
                              "method": "interpretlm" if search == "beam" else f"interpretlm-{search}",
                              "flipped": bool(e["flipped"]), "minimality": e["minimality"], "queries": cf.queries,
                              "backward_passes": cf.diagnostics["backward_passes"], "seconds": secs,
                              "new_text": e["text"], "label": e["label"], "delta_perplexity": e["delta_perplexity"]}),
                  flush=True)
        for recipe in job["recipes"]:
            attack = build(recipe, wrapper)
            t = time.perf_counter()
            res = attack.attack(ex.text, labels.index(ex.label))
            secs = time.perf_counter() - t
            new = res.perturbed_result.attacked_text.text
            new_prompt = template.format(text=new)
            ok = isinstance(res, textattack.attack_results.SuccessfulAttackResult)
            dist = levenshtein(split(ex.prompt).words, split(new_prompt).words)
            # perplexity of the prompt and the edited prompt under the model, as interpretlm measures its own edits
            # (the prompt's tokens after the first; not timed: TextAttack does not compute it)
            tb = lm.tokenize([ex.prompt, new_prompt])
            marks = [[bool(tb.in_prompt[i, j]) and not bool(tb.special[i, j]) for j in range(int(tb.lengths[i]))]
                     for i in range(2)]
            p0, p1 = perplexity(lm, as_rows(tb), marks)
            print(json.dumps({"task": task, "text": text, "method": f"textattack-{recipe}", "flipped": ok,
                              "minimality": dist / n_words, "queries": int(res.perturbed_result.num_queries),
                              "seconds": secs, "new_text": new_prompt, "label": labels[res.perturbed_result.output],
                              "delta_perplexity": p1 - p0,
                              "result": type(res).__name__}), flush=True)


if __name__ == "__main__":
    main()
