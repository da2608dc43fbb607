"""EPO's fast paths against references computed another way (tiny models, a few seconds).

The gradient pass and the candidate scoring skip work a direct implementation does (the last
position's logits, a written-out log-softmax, the one-hot product in the forward pass, a second
forward pass of the parents): each must give the numbers of that direct implementation.
"""

from __future__ import annotations

import torch

import interpretlm as il
from interpretlm.maximization import optimize as O
from interpretlm.testing import tiny_lm
from interpretlm.units import bind_units, unit_values


def _direct(lm, bound, ids, lambdas):
    """Activation, cross-entropy, one-hot gradient and per-token losses the textbook way: a one-hot input
    ``onehot @ E`` fed as embeddings, full logits, a written-out log-softmax."""
    emb = lm.model.get_input_embeddings().weight
    onehot = torch.nn.functional.one_hot(ids, emb.shape[0]).to(emb.dtype).requires_grad_(True)
    with torch.enable_grad(), lm.capture(bound.components, grad=True) as cache:
        scale = lm.model.get_input_embeddings()(ids[:1, :1]).norm() / emb[ids[0, 0]].norm()
        out = lm.forward(ids.tolist(), grad=True, inputs_embeds=(onehot @ emb) * scale)
        act = unit_values(lm, bound, cache)[:, -1, 0]
        logp = out.logits.log_softmax(-1)
        nll = -logp[:, :-1].gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
        ce = nll.mean(1)
        (grad,) = torch.autograd.grad((act - lambdas * ce).sum(), onehot)
    return act.detach(), ce.detach(), grad / scale, nll.detach(), logp.detach()


def test_gradient_pass_equals_a_one_hot_input():
    for family in ("llama", "gpt2"):
        lm = tiny_lm(family, seed=4)
        bound = bind_units(lm, il.Unit("blocks.1.mlp.neurons", 2))
        ids = torch.randint(5, 60, (3, 6), generator=torch.Generator().manual_seed(1))
        lambdas = torch.tensor([0.0, 0.5, 3.0])
        act, ce, grad, nll, logp = _direct(lm, bound, ids, lambdas)
        for share in (False, True):
            a, c, g, shared = O._gradients(lm, bound, ids, lambdas, share=share)
            torch.testing.assert_close(a, act, rtol=1e-4, atol=1e-6)
            torch.testing.assert_close(c, ce, rtol=1e-4, atol=0)
            torch.testing.assert_close(g, grad, rtol=1e-4, atol=1e-4 * float(grad.abs().max()))
            assert (shared is not None) == share
        # the parents' per-token losses and next-token distributions the candidates reuse
        torch.testing.assert_close(shared.nll[:, 1:], nll, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(shared.loss_of(torch.tensor([2, 0]), 3, torch.tensor([17, 40])),
                                   -logp[[2, 0], 2, [17, 40]], rtol=1e-4, atol=1e-6)
        # score: the model without its last logits, and a logsumexp instead of the log-softmax
        s_act, s_ce = O.score(lm, bound, ids, batch_size=2)
        torch.testing.assert_close(s_act, act, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(s_ce, ce, rtol=1e-4, atol=0)


def test_restarts_and_kept_gradients_keep_every_score_exact():
    """Members that keep their prompt skip the gradient pass and keep their key/value cache; after a
    restart every member holds one prompt. Every score the search reports (the final population, each
    point of the front, built from candidates scored on merged caches) equals a fresh whole pass."""
    for family in ("llama", "gpt2"):
        lm = tiny_lm(family, seed=5)
        bound = bind_units(lm, il.Unit("blocks.1.mlp.neurons", 4))
        lambdas = torch.logspace(-1, 1, 4)
        ids, act, ce, front, hist, costs = O.discrete_search(
            lm, bound, length=5, population=4, swaps=8, top_k=16, steps=12, lambdas=lambdas, seed=0,
            batch_size=8, desc="test", restart_every=5, restart_lambda=(2 / 3, 6.0))
        assert costs["restarts"] == 3                                  # iterations 0, 5 and 10
        for step in (0, 5, 10):                                        # one prompt for the whole population
            assert torch.equal(hist[step], hist[step, :1].expand(4)), hist[step]
        assert 4 <= costs["gradient_rows"] < 12 * 4                    # some members kept their gradient
        ref_act, ref_ce = O.score(lm, bound, ids)
        torch.testing.assert_close(act, ref_act, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(ce, ref_ce, rtol=1e-4, atol=0)
        f_act, f_ce = O.score(lm, bound, front.ids)
        torch.testing.assert_close(front.act, f_act, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(front.ce, f_ce, rtol=1e-4, atol=0)
