"""``python -m pyllama.server --model model.gguf [--n_ctx 4096 --n_gpu_layers 37 ...]``"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    import uvicorn

    from .app import create_app
    from .settings import parse

    parsed = parse(argv)
    app = create_app(parsed)
    models = parsed if isinstance(parsed, list) else [parsed]
    settings = models[0]
    names = ", ".join(f"{m.model_alias} ({m.n_parallel} slots, n_ctx {m.n_ctx})" for m in models)
    print(f"pyllama server on http{'s' if settings.ssl_certfile else ''}://{settings.host}:{settings.port}: {names}",
          flush=True)
    uvicorn.run(app, host=settings.host, port=settings.port, ssl_keyfile=settings.ssl_keyfile,
                ssl_certfile=settings.ssl_certfile, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
