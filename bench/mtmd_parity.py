"""pyllama's greedy reply to an image equals llama.cpp's own ``llama-mtmd-cli`` built from the same tree.

    python bench/mtmd_parity.py --build                  # builds llama-mtmd-cli in /tmp/mtmd-build first (slow)
    python bench/mtmd_parity.py --cli PATH/llama-mtmd-cli

The tiny random Gemma 3 vision model of the tests (tests/media_models.py) looks at generated
images; for each, both programs answer the same question greedily (temperature 0) through the
model's chat template. pyllama's greedy tokens (the chat planned as Llama plans it, then argmax
through the core) must print the same bytes as the tool, which shows special tokens as text, and
Llama.create_chat_completion's reply must be that same text without them. Not part of the test
suite: building the tool takes long. Prints each image's replies; exits 1 on any difference.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from media_models import png, square, write_tiny_multimodal  # noqa: E402

QUESTION = "What colour is the square?"
N_PREDICT = 24
MARKER = "<<<pyllama-parity-reply>>>"


def build_cli(build_dir: Path) -> Path:
    """llama-mtmd-cli from the pinned tree, with the backend flags of pyllama's default build."""
    source = REPO / "vendor" / "llama.cpp"
    nice = ["nice", "-n", "10"] if os.name == "posix" else []
    subprocess.run([*nice, "cmake", "-S", str(source), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release",
                    "-DLLAMA_BUILD_TOOLS=ON", "-DLLAMA_BUILD_EXAMPLES=ON", "-DLLAMA_BUILD_TESTS=OFF",
                    "-DLLAMA_BUILD_SERVER=OFF", "-DLLAMA_OPENSSL=OFF", *os.environ.get("CMAKE_ARGS", "").split()],
                   check=True)
    subprocess.run([*nice, "cmake", "--build", str(build_dir), "--target", "llama-mtmd-cli", "-j", "2"], check=True)
    return build_dir / "bin" / "llama-mtmd-cli"


def images() -> dict[str, np.ndarray]:
    gradient = np.zeros((48, 64, 3), np.uint8)
    gradient[..., 0] = np.linspace(0, 255, 64, dtype=np.uint8)[None, :]
    gradient[..., 2] = np.linspace(255, 0, 48, dtype=np.uint8)[:, None]
    noise = np.random.default_rng(7).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    return {"red square": square((255, 0, 0)), "blue square": square((0, 0, 255)), "gradient 64x48": gradient,
            "noise 40x40": noise}


def cli_reply(cli: Path, model: Path, mmproj: Path, image: Path) -> str:
    result = subprocess.run([str(cli), "-m", str(model), "--mmproj", str(mmproj), "--image", str(image), "-p", QUESTION,
                             "-n", str(N_PREDICT), "--temp", "0", "-t", "2", "-c", "512", "--no-warmup"],
                            capture_output=True, env={**os.environ, "MTMD_TEST_RESPONSE_MARKER": MARKER},
                            timeout=600)
    if result.returncode != 0:
        raise RuntimeError(f"llama-mtmd-cli failed:\n{result.stderr.decode(errors='replace')[-3000:]}")
    # the tool prints each token's bytes as they come; a random model's need not be whole UTF-8
    return result.stdout.split(MARKER.encode(), 1)[-1].strip(b"\n").decode("utf-8", "replace")


def greedy_pieces(llm, messages: list[dict]) -> tuple[bytes, bytes]:
    """The greedy reply through pyllama's core: the chat planned as Llama plans it, the MediaPrompt
    evaluated into a fresh Context, then argmax token by token. Returns its bytes rendered as
    llama-mtmd-cli prints them (special tokens as text) and as a chat reply shows them (without)."""
    from pyllama import Batch, Context
    from pyllama.chat import plan_chat
    from pyllama.chat.media import MediaReader
    from pyllama.multimodal import MediaPrompt

    vocab = llm.model.vocab
    plan = plan_chat(llm.chat_template, vocab, messages, media=MediaReader(llm.projector, local_files=True))
    printed, shown = b"", b""
    with Context(llm.model, n_ctx=512, n_threads=2) as context:
        MediaPrompt(plan.prompt_tokens, plan.media).evaluate(context)
        position = len(plan.prompt_tokens)
        for _ in range(N_PREDICT):
            token = int(np.argmax(context.logits()))
            if vocab.is_eog(token):
                break
            printed += vocab.token_to_piece(token, special=True)
            shown += vocab.token_to_piece(token)
            context.decode(Batch.of([token], start_pos=position))
            position += 1
    return printed, shown


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cli", type=Path, default=Path("/tmp/mtmd-build/bin/llama-mtmd-cli"))
    parser.add_argument("--build", action="store_true", help="build llama-mtmd-cli in the --cli path's build dir")
    args = parser.parse_args()
    cli = build_cli(args.cli.parent.parent) if args.build else args.cli
    if not cli.exists():
        parser.error(f"{cli} does not exist; build it with --build")

    from pyllama import Llama

    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        model, mmproj, _ = write_tiny_multimodal(folder / "models")
        failures = 0
        with Llama(model, mmproj=mmproj, n_ctx=512, n_threads=2, seed=0) as llm:
            for name, pixels in images().items():
                path = folder / f"{name.replace(' ', '-')}.png"
                path.write_bytes(png(pixels))
                messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": str(path)}},
                                                         {"type": "text", "text": QUESTION}]}]
                chat = llm.create_chat_completion(messages, max_tokens=N_PREDICT, temperature=0)
                printed, shown = greedy_pieces(llm, messages)
                theirs = cli_reply(cli, model, mmproj, path)
                ours = printed.decode("utf-8", "replace")
                same = ours == theirs and chat["choices"][0]["message"]["content"] == shown.decode("utf-8", "replace")
                failures += not same
                print(f"{'same' if same else 'DIFFERENT'}  {name}: pyllama {ours!r}\n"
                      f"      llama-mtmd-cli {theirs!r}\n      Llama chat reply {chat['choices'][0]['message']['content']!r}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
