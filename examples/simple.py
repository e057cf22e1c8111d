"""llama.cpp's examples/simple, in Python: greedy generation one token at a time.

    python examples/simple.py -m model.gguf [-n 32] [-ngl 99] "Hello my name is"
"""

from __future__ import annotations

import argparse
import sys

import pyllama


def generate(model_path: str, prompt: str, n_predict: int = 32, n_gpu_layers: int = 0) -> str:
    with pyllama.Model(model_path, n_gpu_layers=n_gpu_layers) as model:
        tokens = model.tokenize(prompt, add_special=True)
        with pyllama.Context(model, n_ctx=len(tokens) + n_predict, n_batch=len(tokens)) as ctx, \
                pyllama.Sampler().greedy() as sampler:
            batch = pyllama.Batch.of(tokens)  # the whole prompt, logits for the last token only
            pieces = []
            for pos in range(len(tokens), len(tokens) + n_predict):
                ctx.decode(batch)
                token = sampler.sample(ctx)
                if model.vocab.is_eog(token):
                    break
                pieces.append(model.token_to_piece(token))
                batch = pyllama.Batch.of([token], start_pos=pos)
            print(ctx.perf(), file=sys.stderr)
    return b"".join(pieces).decode("utf-8", "replace")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-m", "--model", required=True)
    parser.add_argument("-n", "--n-predict", type=int, default=32)
    parser.add_argument("-ngl", "--n-gpu-layers", type=int, default=0)
    parser.add_argument("prompt", nargs="?", default="Hello my name is")
    args = parser.parse_args()
    print(args.prompt + generate(args.model, args.prompt, args.n_predict, args.n_gpu_layers))


if __name__ == "__main__":
    main()
