"""``interpretlm serve``: the app under uvicorn, on loopback unless the user allows otherwise."""

from __future__ import annotations

from pathlib import Path

from ..errors import InterpretLMError
from .server import Limits, create_app

LOOPBACK = ("127.0.0.1", "localhost", "::1")
# Seconds an idle keep-alive connection stays open. uvicorn's default of 5 s races with clients that
# reuse a pooled connection just as the server closes it (the request then fails with a reset);
# 75 s is nginx's default, longer than a page's pauses between requests.
KEEP_ALIVE_S = 75


def serve(model: str | list[str] | None = None, data_dir: str | Path = "interpretlm-runs", host: str = "127.0.0.1",
          port: int = 8000, allow_remote: bool = False, limits: Limits | None = None) -> None:
    """Run the app with uvicorn until interrupted (``interpretlm serve``).

    ``host`` other than loopback needs ``allow_remote=True`` and prints a warning: the app
    has no accounts, so anyone who reaches the port can run methods on this machine.
    """
    import uvicorn

    if host not in LOOPBACK:
        if not allow_remote:
            raise InterpretLMError(f"refusing to bind {host!r}: the app has no login. Pass --allow-remote to "
                                   "serve other machines anyway.")
        print(f"WARNING: serving on {host}:{port}: anyone who can reach this address can run methods and read "
              f"the results in {data_dir}. There is no login.", flush=True)
    names = [model] if isinstance(model, str) else list(model or ["smollm2-135m"])
    app = create_app({n: n for n in names}, data_dir, limits)
    print(f"interpretlm app on http://{host}:{port} (models: {', '.join(names)}; results in {Path(data_dir).resolve()})",
          flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_keep_alive=KEEP_ALIVE_S)
