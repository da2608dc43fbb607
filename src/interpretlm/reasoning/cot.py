"""Elicitation: ``il.chain_of_thought(lm, question, samples=, seed=)``."""

from __future__ import annotations

import math
from typing import Any

import torch

from ..errors import InterpretLMWarning
from ..registry import CheckSpec, register
from .answers import extract, split_answer
from .engine import (Body, Forcer, direct_prompt_ids, encode, fitting_shots, generate, prompt_ids, room,
                     user_message)
from .question import Question, as_question
from .result import ChainOfThought


class ChatTemplateWarning(InterpretLMWarning):
    """The model has no chat template: the question was asked as a plain prompt."""


class UnextractedWarning(InterpretLMWarning):
    """Some answers could not be read from the generated text (forced by scoring, or none)."""


def candidates(q: Question, answers: list[str | None]) -> list[str]:
    """The answers forcing scores: the choices; for an open question the right answer and the answers read."""
    if q.choices:
        return list(q.choices)
    seen = [q.answer] if q.answer is not None else []
    return seen + [a for a in dict.fromkeys(answers) if a is not None and a not in seen]


def sample(lm: Any, q: Question, *, samples: int, seed: int, max_new_tokens: int, temperature: float,
           chat: bool, hint: str | None = None, shots: int | None = 0,
           generated: tuple[list[list[int]], int] | None = None) -> dict[str, Any]:
    """Prompt, generate and read answers (the common core of elicitation and the hint tests).

    ``generated``: the rows and token count already generated for this prompt (a batch of
    questions generated together, :func:`.engine.generate_many`).

    Returns a dict with ``prompt``, ``prompt_ids``, ``chat``, ``texts``, ``reasoning``,
    ``bodies`` (:class:`Body` each), ``answers``, ``paths``, ``generated_tokens``.
    """
    ids, text, used_chat = prompt_ids(lm, user_message(q, hint), chat, shots)
    if generated is not None:
        rows, produced = generated
        texts = [lm.tokenizer.decode(r, skip_special_tokens=True) for r in rows]
    elif lm.is_causal and lm.has_head:
        rows, produced = generate(lm, ids, samples, max_new_tokens=max_new_tokens, temperature=temperature,
                                  seed=seed)
        texts = [lm.tokenizer.decode(r, skip_special_tokens=True) for r in rows]
    else:  # an encoder does not generate: every answer is forced by scoring
        texts, produced = [""] * samples, 0
    answers, paths, reasoning = [], [], []
    for t in texts:
        a, path = extract(q, t)
        answers.append(a)
        paths.append(path)
        reasoning.append(split_answer(t)[0])
    left = room(lm, ids, candidates(q, answers))
    bodies = [Body.of(lm, r, left) for r in reasoning]
    reasoning = [b.text for b in bodies]
    return {"prompt": text, "prompt_ids": ids, "chat": used_chat, "texts": texts, "reasoning": reasoning,
            "bodies": bodies, "answers": answers, "paths": paths,
            "generated_tokens": produced}


def no_cot_logprobs(lm: Any, q: Question, cands: list[str], chat: bool, shots: int = 0) -> torch.Tensor:
    """The candidates' log-probabilities with no reasoning ``[c]``: standard prompting, cloze-style.

    The comparator of Wei et al. 2022 is standard few-shot prompting: the same ``shots`` worked examples as
    the CoT prompt, each with its answer and no reasoning (:func:`.engine.direct_prompt_ids`), then the
    question alone and ``"Answer:"``, after which each candidate is scored, the multiple-choice "cloze"
    formulation of lm-evaluation-harness (its few-shot form when ``shots`` > 0; ``shots=0``: the question
    alone). The choices are not listed: listing them makes small models copy the first one (the default
    model forced after the listed choices picked the first on 91% of the commonsense set and 82% of an
    earlier arithmetic set), which measures position, not knowledge; with the worked examples' answers after
    listed choices it picked worse than chance on held-out arithmetic problems of that set's development
    split (0.08 on 48, against 0.27 unlisted).

    A choice's score is the sum of its tokens' log-probabilities, the probability of its text, as
    lm-evaluation-harness's ``acc``. SmolLM2 writes numbers digit by digit (" 10" is three tokens, " 8" two,
    the space shared), so the sum is the model's probability of the whole number; the mean per token would
    reward a second digit that is near certain once the first is written. On the earlier arithmetic set (100
    additions and subtractions) neither was the cause of chance accuracy zero-shot: sum 0.23, mean 0.21, and
    the exact-number probability (the sum plus log P(no further digit)) 0.24 on its 100 questions, because
    the default model's most likely digit after "Answer:" is an operand of the question (the first on 75,
    the second on 25), which the set never offers as a choice.
    """
    ids, cue = direct_prompt_ids(lm, q.text, chat, shots)
    return Forcer(lm, ids, [], cands, cue_text=cue).score([(0, [])])[0]


def force(lm: Any, s: dict[str, Any], cands: list[str]) -> tuple[list[Forcer], torch.Tensor]:
    """A :class:`Forcer` per sample and the candidates' log-probabilities after each full reasoning ``[n, c]``."""
    forcers = [Forcer(lm, s["prompt_ids"], b.ids, cands) for b in s["bodies"]]
    lps = torch.stack([f.score([(len(f.body), [])])[0] for f in forcers]) if forcers else torch.zeros(0, len(cands))
    return forcers, lps


@register("chain_of_thought", family="chain-of-thought", takes="item", result=ChainOfThought, target="none",
          summary="sampled chains of thought through the chat template, answers read (answer line, regex) or forced",
          check=CheckSpec("extracted", 0.5, higher_is_better=True,
                          advice="the model rarely stated an answer; answers were forced by scoring each choice "
                                 "after 'Answer:' (see result.paths). Small models reason poorly."),
          cli_input="interpretlm.reasoning.question:question_from_text", demo="interpretlm.reasoning.demo:section",
          demo_order=90)
def chain_of_thought(lm: Any, question: Question | str, *, choices: list[str] | None = None,
                     answer: str | None = None, samples: int = 5, seed: int = 0, max_new_tokens: int = 128,
                     temperature: float = 0.7, chat: bool = True, shots: int | None = None) -> ChainOfThought:
    """Elicit chains of thought for a question and read their answers.

    The question, its choices and an instruction to think step by step and end with an
    ``Answer:`` line go through the model's chat template (a plain prompt when it has none,
    with a :class:`ChatTemplateWarning`). ``samples`` continuations are sampled with one
    seeded generator; the prompt runs once and its key/value cache is shared. Each answer is
    read from the answer line, else by a regex (the last choice named), else forced: the
    choice with the highest log-probability after the reasoning and ``"Answer:"``; ``paths``
    says which.

    Args:
        lm: a causal LM (an encoder cannot generate: its answers are all forced).
        question: a :class:`Question` or its text.
        choices, answer: override or give the question's choices / right answer.
        samples: chains of thought to sample.
        seed: the sampling seed (same seed, same texts).
        max_new_tokens: the longest reasoning.
        temperature: sampling temperature (0: greedy, then every sample is the same).
        chat: use the chat template when the model has one.
        shots: worked examples shown before the question (few-shot CoT, Wei et al. 2022; 0 to 6,
            :data:`.engine.EXEMPLARS`), as earlier turns of the chat; ``None``: as many as keep the
            prompt within half the context window (all six on the default model).

    Returns:
        :class:`ChainOfThought` (``choice_logprobs [n, n_choices]``, ``no_cot_logprobs [n_choices]``).

    Example:
        >>> import interpretlm as il
        >>> from interpretlm.testing import tiny_lm
        >>> run = il.chain_of_thought(tiny_lm("llama"), "2 + 2 = ?", choices=["3", "4"], samples=2,
        ...                           max_new_tokens=8)  # doctest: +ELLIPSIS
        >>> len(run.answers), run.paths[0] in ("answer_line", "regex", "scored")
        (2, True)
    """
    q = as_question(question, choices, answer)
    if samples < 1:
        from ..errors import OptionError

        raise OptionError(f"samples must be at least 1; got {samples}.")
    return elicit(lm, q, samples=samples, seed=seed, max_new_tokens=max_new_tokens, temperature=temperature,
                  chat=chat, shots=shots)


def elicit(lm: Any, q: Question, *, samples: int, seed: int, max_new_tokens: int, temperature: float, chat: bool,
           shots: int | None, generated: tuple[list[list[int]], int] | None = None) -> ChainOfThought:
    """The body of :func:`chain_of_thought` (``generated``: rows generated in a batch with other questions)."""
    s = sample(lm, q, samples=samples, seed=seed, max_new_tokens=max_new_tokens, temperature=temperature,
               chat=chat, shots=shots, generated=generated)
    cands = candidates(q, s["answers"])
    result = ChainOfThought(question=q.to_dict(), prompt=s["prompt"], prompt_ids=s["prompt_ids"], chat=s["chat"],
                            texts=s["texts"], reasoning=s["reasoning"],
                            sentences=[b.sentences for b in s["bodies"]], candidates=cands)
    if chat and not s["chat"]:
        result.warn(f"{lm.name} has no chat template: the question was asked as a plain 'Question: ... Reasoning:' "
                    "prompt.", ChatTemplateWarning)
    if not lm.is_causal:
        result.warn(f"{lm.name} is an encoder and cannot generate a chain of thought; every answer is the choice "
                    "scored highest at a mask after 'Answer:'.", UnextractedWarning)
    answers, paths = list(s["answers"]), list(s["paths"])
    forcers, lps = force(lm, s, cands) if cands else ([], torch.zeros(samples, 0))
    forced = [cands[int(i)] for i in lps.argmax(1)] if cands else [None] * samples
    for i in range(samples):
        if answers[i] is None and cands:
            answers[i], paths[i] = forced[i], "scored"
    listed = forcers[0].score([(0, [])])[0] if forcers else torch.zeros(0)
    k = shots if shots is not None else fitting_shots(lm, user_message(q), chat)  # the CoT prompt's worked examples
    no_cot = no_cot_logprobs(lm, q, cands, chat, k) if cands else torch.zeros(0)
    cloze = (no_cot_logprobs(lm, q, cands, chat) if k else no_cot) if cands else torch.zeros(0)
    gold = q.answer
    result.answers, result.paths, result.forced = answers, paths, forced
    result.choice_logprobs = lps.tolist()
    result.no_cot_logprobs = no_cot.tolist()
    result.correct = [float(a == gold) if gold is not None else math.nan for a in answers]
    extracted = sum(p in ("answer_line", "regex") for p in paths) / samples
    unread = samples - sum(p in ("answer_line", "regex") for p in paths)
    if unread and lm.is_causal:
        result.warn(f"{unread} of {samples} answers could not be read from the text"
                    f"{' and were forced by scoring each choice' if cands else ''}; see result.paths.",
                    UnextractedWarning)
    acc_no = (float(cands[int(no_cot.argmax())] == gold) if gold is not None and cands else math.nan)
    acc_listed = (float(cands[int(listed.argmax())] == gold) if gold is not None and cands else math.nan)
    acc_cloze = (float(cands[int(cloze.argmax())] == gold) if gold is not None and cands else math.nan)
    result.diagnostics = {
        "extracted": extracted, "answer_line": paths.count("answer_line") / samples,
        "regex": paths.count("regex") / samples, "scored": paths.count("scored") / samples,
        "accuracy": (sum(result.correct) / samples) if gold is not None else math.nan,
        "accuracy_no_cot": acc_no, "no_cot_shots": k, "accuracy_no_cot_cloze": acc_cloze,
        "accuracy_no_cot_listed": acc_listed,
        "first_choice_no_cot_listed": float(int(listed.argmax()) == 0) if cands else math.nan,
        "generated_tokens": s["generated_tokens"],
        "scored_tokens": sum(f.tokens_run for f in forcers), "prompt_tokens": len(s["prompt_ids"]),
        "sentences_mean": sum(len(b.sentences) for b in s["bodies"]) / samples}
    result.input_ids = list(s["prompt_ids"])
    return result


def bodies_of(lm: Any, run: ChainOfThought) -> list[Body]:
    """The reasoning of each sample of ``run``, tokenized with its sentence cuts."""
    return [Body.of(lm, r) for r in run.reasoning]


def from_texts(lm: Any, question: Question | str, texts: list[str], *, choices: list[str] | None = None,
               answer: str | None = None, chat: bool = True, shots: int | None = None) -> ChainOfThought:
    """A :class:`ChainOfThought` from reasoning texts written elsewhere (another model, a person).

    The texts are read and forced exactly as generated ones; ``faithfulness`` then tests
    whether *this* model's answers depend on them.

    Example:
        >>> from interpretlm.testing import tiny_lm
        >>> run = from_texts(tiny_lm("llama"), "2 + 2 = ?", ["Two and two make four.\\nAnswer: 4"], choices=["3", "4"])
        >>> run.answers, run.paths, run.sentences
        (['4'], ['answer_line'], [['Two and two make four.']])
    """
    q = as_question(question, choices, answer)
    ids, text, used_chat = prompt_ids(lm, user_message(q), chat, shots)
    answers, paths, reasoning = [], [], []
    for t in texts:
        a, p = extract(q, t)
        answers.append(a)
        paths.append(p)
        reasoning.append(split_answer(t)[0])
    cands = candidates(q, answers)
    left = room(lm, ids, cands)
    s = {"prompt": text, "prompt_ids": ids, "bodies": [Body.of(lm, r, left) for r in reasoning]}
    reasoning = [b.text for b in s["bodies"]]
    forcers, lps = force(lm, s, cands)
    forced = [cands[int(i)] for i in lps.argmax(1)]
    for i in range(len(texts)):
        if answers[i] is None:
            answers[i], paths[i] = forced[i], "scored"
    k = shots if shots is not None else fitting_shots(lm, user_message(q), chat)
    no_cot = no_cot_logprobs(lm, q, cands, chat, k) if cands else torch.zeros(len(cands))
    gold = q.answer
    correct = [float(a == gold) if gold is not None else math.nan for a in answers]
    r = ChainOfThought(question=q.to_dict(), prompt=text, prompt_ids=ids, chat=used_chat, texts=list(texts),
                       reasoning=reasoning, sentences=[b.sentences for b in s["bodies"]], answers=answers,
                       paths=paths, candidates=cands, forced=forced, choice_logprobs=lps.tolist(),
                       no_cot_logprobs=no_cot.tolist(), correct=correct)
    r.model = lm.name
    r.diagnostics = {"extracted": sum(p in ("answer_line", "regex") for p in paths) / max(1, len(texts)),
                     "accuracy": sum(correct) / len(correct) if gold is not None and correct else math.nan}
    r.options = {"samples": len(texts), "seed": 0, "max_new_tokens": 128, "temperature": 0.7, "chat": chat,
                 "shots": shots}
    return r


__all__ = ["ChainOfThought", "ChatTemplateWarning", "UnextractedWarning", "chain_of_thought", "from_texts",
           "candidates", "encode"]
