"""Run LXT 2.1 (AttnLRP, efficient mode) in its own venv; used by benchmarks/lrp.py.

LXT 2.1 imports only with Transformers 4.52, so it runs in /work/bench-venvs/lxt (torch
2.13.0, transformers 4.52.4, lxt and zennit with --no-deps). Its ViT module imports
torchvision, whose wheels do not match this torch build; the runner gives that import an
empty stand-in (the ViT patches are never used for a Llama model).

    python _lxt_runner.py MODEL_DIR PROMPTS_JSON REPEATS THREADS  ->  JSON on stdout
"""

import json
import statistics
import sys
import time
import types

import torch


def _stand_in_torchvision() -> None:
    tv, models, vit = (types.ModuleType(n) for n in ("torchvision", "torchvision.models",
                                                     "torchvision.models.vision_transformer"))
    vit.nn = torch.nn
    tv.models, models.vision_transformer = models, vit
    sys.modules.update({"torchvision": tv, "torchvision.models": models, "torchvision.models.vision_transformer": vit})


def main() -> None:
    model_dir, prompts_path, repeats, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(threads)
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast
    from transformers.models.llama import modeling_llama

    prompts = json.load(open(prompts_path))
    # the cached tokenizer_config names a Transformers 5 class; the tokenizer.json itself is version-free
    tok = PreTrainedTokenizerFast(tokenizer_file=f"{model_dir}/tokenizer.json")
    from transformers import LlamaConfig
    config = LlamaConfig.from_pretrained(model_dir)
    rope = getattr(config, "rope_parameters", None) or {}
    if "rope_theta" in rope:  # a Transformers 5 config: 4.52 reads rope_theta at the top level
        config.rope_theta = rope["rope_theta"]

    def load():
        m = LlamaForCausalLM.from_pretrained(model_dir, config=config, torch_dtype=torch.float32).eval()
        m.requires_grad_(False)
        return m

    model = load()

    def explain(prompt: str):
        ids = tok(prompt, return_tensors="pt").input_ids
        emb = model.get_input_embeddings()(ids).detach().requires_grad_(True)
        logits = model(inputs_embeds=emb, use_cache=False).logits
        top = int(logits[0, -1].argmax())
        logits[0, -1, top].backward()
        return (emb * emb.grad).sum(-1)[0].tolist(), float(logits[0, -1, top]), top

    def timed(fn, prompt):
        ts = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn(prompt)
            ts.append(time.perf_counter() - t)
        return statistics.median(ts)

    plain = [timed(explain, p) for p in prompts[:1]]
    _stand_in_torchvision()
    from lxt.efficient import monkey_patch
    monkey_patch(modeling_llama, verbose=False)
    model = load()  # built from the patched classes
    out = []
    for p in prompts:
        rel, logit, top = explain(p)
        out.append({"relevance": rel, "logit": logit, "token": top})
    lxt_time = timed(explain, prompts[0])
    print(json.dumps({"results": out, "lxt_seconds": lxt_time, "plain_seconds": plain[0]}))


if __name__ == "__main__":
    main()
