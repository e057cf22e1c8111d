"""``python -m pyllama.server --model model.gguf [--n_ctx 4096 --n_gpu_layers 37 ...]``"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    import uvicorn

    from .app import create_app
    from .settings import parse

    settings = parse(argv)
    app = create_app(settings)
    print(f"pyllama server: {settings.model_alias} on http{'s' if settings.ssl_certfile else ''}://"
          f"{settings.host}:{settings.port} ({settings.n_parallel} slots, n_ctx {settings.n_ctx})", flush=True)
    uvicorn.run(app, host=settings.host, port=settings.port, ssl_keyfile=settings.ssl_keyfile,
                ssl_certfile=settings.ssl_certfile, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
