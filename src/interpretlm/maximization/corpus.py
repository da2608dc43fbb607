"""Corpora streamed as token windows: the built-in one (offline) and the user's files or datasets.

``il.corpus("builtin")`` is the King James Version of the Bible (1611; public domain), about
31,000 verses, 1.02M tokens with the default model's tokenizer: real human-written English
prose that Debian ships as the ``bible-kjv-text`` package (Debian main; the text's copyright
expired centuries ago; the retrieval program ``bible`` of the ``bible-kjv`` package is GPL-2+).
``make setup`` installs both; the text is read through ``bible -f`` one verse at a time, each
chapter one document. User corpora stream too, never loaded whole:

* ``.txt``: documents are paragraphs (blank-line separated; a paragraph longer than 100,000
  characters is cut at a line end);
* ``.jsonl``: one document per line, its ``text_field`` (default ``"text"``);
* a folder written by Hugging Face ``datasets``' ``save_to_disk`` (memory-mapped, read row by
  row; needs ``pip install datasets``);
* a list of strings (small corpora, tests).

:meth:`Corpus.windows` packs the documents' tokens (each followed by a blank line) into windows
of exactly ``window`` tokens, so batches need no padding; the order is deterministic, so a
window is named by its number and a resumed pass skips the windows already seen.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InterpretLMError

BUILTIN_NAMES = ("builtin", "kjv")
BUILTIN_PACKAGES = "bible-kjv bible-kjv-text"
_VERSE = re.compile(r"^(\d?[A-Za-z]+)(\d+):(\d+) (.*)$")
_MAX_DOC_CHARS = 100_000


class CorpusError(InterpretLMError, ValueError):
    """A corpus that cannot be read: missing, empty, shorter than a window, of an unknown kind."""


@dataclass(frozen=True)
class Corpus:
    """A streamed text corpus.

    Attributes:
        source: ``"builtin"``, a file or folder path, or ``"texts"`` for an in-memory list.
        kind: ``"builtin"``, ``"txt"``, ``"jsonl"``, ``"hf"`` or ``"texts"``.
        texts: the documents of an in-memory corpus.
        text_field: the field holding the text (``.jsonl`` and datasets).
    """

    source: str
    kind: str
    texts: tuple[str, ...] | None = None
    text_field: str = "text"

    def __repr__(self) -> str:
        n = f", {len(self.texts)} texts" if self.texts is not None else ""
        return f"Corpus({self.source!r}, kind={self.kind!r}{n})"

    # ---------------------------------------------------------------- documents
    def documents(self) -> Iterator[str]:
        """The documents, one string at a time (never the whole corpus in memory)."""
        if self.kind == "texts":
            yield from self.texts or ()
        elif self.kind == "builtin":
            yield from _kjv_chapters()
        elif self.kind == "txt":
            yield from _paragraphs(Path(self.source))
        elif self.kind == "jsonl":
            yield from _jsonl(Path(self.source), self.text_field)
        elif self.kind == "hf":
            yield from _hf_rows(Path(self.source), self.text_field)
        else:
            raise CorpusError(f"Unknown corpus kind {self.kind!r}.")

    def windows(self, tokenizer: Any, window: int, *, docs_per_call: int = 64,
                start: Sequence[int] | None = None) -> Iterator[list[int]]:
        """Token windows of exactly ``window`` ids, packed from the documents in order.

        ``start``: a cursor ``(document, offset)`` of :meth:`cursors`: the windows from there on (the
        documents before it are skipped unread by the tokenizer), the same as those of the whole stream.

        Example:
            >>> from interpretlm.testing import tiny_lm
            >>> c = corpus(["one two three four five six", "seven eight"])
            >>> ws = list(c.windows(tiny_lm().tokenizer, 4))
            >>> len(ws) >= 2 and all(len(w) == 4 for w in ws)
            True
        """
        sep = tokenizer("\n\n", add_special_tokens=False)["input_ids"]
        buf: list[int] = []
        docs: list[str] = []
        first, skip = (int(start[0]), int(start[1])) if start is not None else (0, 0)

        def flush() -> Iterator[list[int]]:
            nonlocal buf, skip
            for ids in tokenizer(docs, add_special_tokens=False)["input_ids"]:
                buf += list(ids) + list(sep)
            docs.clear()
            if skip:   # the start cursor's offset into its (first) document
                buf, skip = buf[skip:], 0
            n = len(buf) // window
            for i in range(n):
                yield buf[i * window:(i + 1) * window]
            buf = buf[n * window:]

        for i, doc in enumerate(self.documents()):
            if i < first:
                continue
            if doc and doc.strip():
                docs.append(doc)
            if len(docs) >= docs_per_call:
                yield from flush()
        if docs:
            yield from flush()

    def cursors(self, tokenizer: Any, window: int, every: int, n_windows: int,
                docs_per_call: int = 64) -> list[list[int]]:
        """Where windows ``0, every, 2 * every, ... < n_windows`` start: ``[document, token offset]`` each,
        for :meth:`windows`' ``start`` (so a worker mines its shard of the corpus without tokenizing
        what comes before it).

        Example:
            >>> from interpretlm.testing import tiny_lm
            >>> tok = tiny_lm().tokenizer
            >>> c = corpus(["one two three four five six", "seven eight nine ten"])
            >>> every = list(c.windows(tok, 2))
            >>> cur = c.cursors(tok, 2, 3, len(every))
            >>> all(next(c.windows(tok, 2, start=s)) == every[3 * i] for i, s in enumerate(cur))
            True
        """
        sep = tokenizer("\n\n", add_special_tokens=False)["input_ids"]
        out: list[list[int]] = []
        pos = 0                     # the stream's tokens before the current document
        target = 0                  # the next window whose start is wanted
        docs: list[tuple[int, str]] = []

        def flush() -> None:
            nonlocal pos, target
            for (i, _), ids in zip(docs, tokenizer([d for _, d in docs], add_special_tokens=False)["input_ids"]):
                n = len(ids) + len(sep)
                while target < n_windows and target * window < pos + n:
                    out.append([i, target * window - pos])
                    target += every
                pos += n
            docs.clear()

        for i, doc in enumerate(self.documents()):
            if target >= n_windows:
                break
            if doc and doc.strip():
                docs.append((i, doc))
            if len(docs) >= docs_per_call:
                flush()
        if docs:
            flush()
        return out

    def identity(self) -> dict[str, Any]:
        """What identifies the corpus's content (a resumed pass must see the same one)."""
        if self.kind == "texts":
            h = hashlib.sha256()
            for t in self.texts or ():
                h.update(t.encode("utf-8", "surrogatepass") + b"\x00")
            return {"kind": "texts", "sha256": h.hexdigest()}
        if self.kind == "builtin":
            return {"kind": "builtin", "bible_data": _file_id(Path("/usr/lib/bible.data"))}
        p = Path(self.source)
        files = sorted(p.rglob("*")) if p.is_dir() else [p]
        return {"kind": self.kind, "files": [_file_id(f) for f in files if f.is_file()], "field": self.text_field}

    # ---------------------------------------------------------------- plain data
    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "kind": self.kind, "texts": list(self.texts) if self.texts is not None else None,
                "text_field": self.text_field}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Corpus":
        texts = d.get("texts")
        return cls(d["source"], d["kind"], tuple(texts) if texts is not None else None, d.get("text_field", "text"))


def _file_id(f: Path) -> list[Any]:
    try:
        st = f.stat()
    except OSError:
        return [str(f), None]
    return [str(f), st.st_size, int(st.st_mtime)]


def corpus(source: "str | os.PathLike | Sequence[str] | Corpus" = "builtin", *, text_field: str = "text") -> Corpus:
    """A corpus to mine: ``"builtin"``, a ``.txt`` / ``.jsonl`` file, a ``datasets`` folder, or texts.

    Args:
        source: ``"builtin"`` (the King James Bible from Debian's ``bible-kjv-text``, 1.02M
            tokens), a path, or a list of strings.
        text_field: the field of ``.jsonl`` records and dataset rows holding the text.

    Returns:
        a :class:`Corpus`; nothing is read until it is streamed.

    Example:
        >>> c = corpus(["The cat sat.", "Dogs bark."])
        >>> c.kind, sum(1 for _ in c.documents())
        ('texts', 2)
    """
    if isinstance(source, Corpus):
        return source
    if isinstance(source, dict) and "kind" in source:   # a recorded corpus (il.rerun)
        return Corpus.from_dict({k: v for k, v in source.items() if k != "__class__"})
    if isinstance(source, (list, tuple)):
        if not source:
            raise CorpusError("The corpus is empty: give at least one non-empty text.")
        bad = [i for i, t in enumerate(source) if not isinstance(t, str)]
        if bad:
            raise CorpusError(f"Corpus entry {bad[0]} is a {type(source[bad[0]]).__name__}, not a string.")
        if not any(t.strip() for t in source):
            raise CorpusError("The corpus is empty: every text is blank.")
        return Corpus("texts", "texts", tuple(source))
    if not isinstance(source, (str, os.PathLike)):
        raise CorpusError(f"A corpus is 'builtin', a path or a list of texts; got {type(source).__name__}.")
    if str(source) in BUILTIN_NAMES:
        if shutil.which("bible") is None or not Path("/usr/lib/bible.data").exists():
            raise CorpusError("The built-in corpus is the King James Bible of Debian's bible-kjv-text package, which "
                              f"is not installed: run `make setup` or `apt-get install {BUILTIN_PACKAGES}`.")
        return Corpus("builtin", "builtin")
    p = Path(source)
    if not p.exists():
        raise CorpusError(f"No corpus at {str(p)!r}: give 'builtin', an existing .txt / .jsonl file, a folder "
                          "written by datasets' save_to_disk, or a list of texts.")
    if p.is_dir():
        if not (p / "dataset_info.json").exists() and not (p / "dataset_dict.json").exists():
            raise CorpusError(f"{p} is a folder but not a Hugging Face dataset saved with save_to_disk "
                              "(no dataset_info.json).")
        return Corpus(str(p), "hf", text_field=text_field)
    suffix = p.suffix.lower()
    if suffix in (".txt", ".text", ".md"):
        kind = "txt"
    elif suffix in (".jsonl", ".ndjson"):
        kind = "jsonl"
    else:
        raise CorpusError(f"{p.name}: unknown corpus file type {suffix!r}; use .txt (paragraphs) or .jsonl "
                          f"(one {{'{text_field}': ...}} record a line).")
    if p.stat().st_size == 0:
        raise CorpusError(f"The corpus file {p} is empty.")
    return Corpus(str(p), kind, text_field=text_field)


# -------------------------------------------------------------------- readers
def builtin_or(prompts: Sequence[str], repeat: int) -> tuple["Corpus | list[str]", str | None]:
    """The built-in corpus, or (when it is not installed) the non-empty ``prompts`` repeated
    ``repeat`` times, with a line saying so; for demo sections that must run anywhere.

    Example:
        >>> c, note = builtin_or(["a b"], 2)
        >>> note is None or c == ["a b", "a b"]
        True
    """
    try:
        return corpus("builtin"), None
    except CorpusError as exc:
        return [p for p in prompts if p.strip()] * repeat, f"(built-in corpus missing: {exc}; the demo prompts stand in)"


def _kjv_chapters() -> Iterator[str]:
    """The KJV, one chapter per document, one verse a line, streamed from ``bible -f`` (references removed)."""
    proc = subprocess.Popen(["bible", "-f", "gen1:1-rev22:21"], stdout=subprocess.PIPE, text=True,
                            encoding="utf-8", errors="replace")
    try:
        chapter: tuple[str, str] | None = None
        verses: list[str] = []
        assert proc.stdout is not None
        for line in proc.stdout:
            m = _VERSE.match(line.rstrip("\n"))
            if m is None:       # a verse continued on another line
                if verses and line.strip():
                    verses[-1] += " " + line.strip()
                continue
            key = (m.group(1), m.group(2))
            if key != chapter and verses:
                yield "\n".join(verses)
                verses = []
            chapter = key
            verses.append(m.group(4).strip())
        if verses:
            yield "\n".join(verses)
    finally:
        proc.stdout.close() if proc.stdout else None
        proc.kill()
        proc.wait()


def _paragraphs(path: Path) -> Iterator[str]:
    para: list[str] = []
    size = 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.strip():
                if para:
                    yield "".join(para).strip()
                para, size = [], 0
                continue
            para.append(line)
            size += len(line)
            if size > _MAX_DOC_CHARS:
                yield "".join(para).strip()
                para, size = [], 0
    if para:
        yield "".join(para).strip()


def _jsonl(path: Path, field: str) -> Iterator[str]:
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError as exc:
                raise CorpusError(f"{path}:{i + 1} is not JSON ({exc}).") from exc
            text = rec.get(field) if isinstance(rec, dict) else None
            if not isinstance(text, str):
                raise CorpusError(f"{path}:{i + 1} has no string field {field!r}; pass text_field= to name it.")
            yield text


def _hf_rows(path: Path, field: str) -> Iterator[str]:
    try:
        import datasets
    except ImportError as exc:
        raise CorpusError("Reading a Hugging Face dataset folder needs the datasets package: pip install datasets "
                          "(or export it to .jsonl).") from exc
    ds = datasets.load_from_disk(str(path))   # memory-mapped Arrow: rows are read on demand
    if isinstance(ds, datasets.DatasetDict):
        ds = ds["train"] if "train" in ds else next(iter(ds.values()))
    if field not in ds.column_names:
        raise CorpusError(f"The dataset at {path} has no column {field!r} (columns: {ds.column_names}); "
                          "pass text_field=.")
    for row in ds.select_columns([field]):
        yield row[field]


__all__ = ["Corpus", "CorpusError", "corpus"]
