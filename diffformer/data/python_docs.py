"""Built-in text that every Python installation has, so text studies run offline and anyone can rebuild them.

- `pydoc_topics`: Python's documentation topics (`pydoc_data.topics`), split into paragraphs (≈ 0.46 MB).
- `python_docs`: those topics, then the docstrings of a fixed list of standard-library modules (their
  module, class and function docstrings, files in sorted order, each file walked in one fixed order),
  ≈ 1.6 MB of English prose on CPython 3.11, about 0.4M BPE tokens. The text depends on the Python
  version, so its SHA-256 (`corpus_checksum`) is part of every run's data settings: a recipe pins it with
  `data.builtin_sha256`, and another Python's corpus is then refused in one line instead of silently
  training on different text.
"""

import ast
import hashlib
import sysconfig
from pathlib import Path

# Standard-library modules (a file or a package) present from Python 3.10 to 3.13; packages' tests excluded.
MODULES = (
    "abc argparse ast asyncio base64 bdb bisect calendar cmd code codecs collections colorsys compileall "
    "concurrent configparser contextlib copy csv dataclasses datetime decimal difflib dis doctest email enum "
    "filecmp fileinput fnmatch fractions ftplib functools getopt gettext glob gzip hashlib heapq hmac html http "
    "imaplib importlib inspect io ipaddress json keyword linecache locale logging lzma mailbox mimetypes "
    "modulefinder multiprocessing netrc numbers operator optparse os pathlib pdb pickle pickletools pkgutil "
    "platform plistlib poplib pprint profile pstats pydoc queue quopri random re reprlib runpy sched secrets "
    "selectors shelve shlex shutil signal site smtplib socket socketserver sqlite3 statistics string stringprep "
    "struct subprocess sysconfig tabnanny tarfile tempfile textwrap threading timeit tokenize trace traceback "
    "tracemalloc turtle types typing unittest urllib uuid warnings wave weakref webbrowser xml zipapp zipfile "
    "zipimport"
).split()
DOCUMENTED = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def pydoc_topics() -> list[str]:
    """Python's documentation topics, each split into paragraphs (many short documents)."""
    from pydoc_data.topics import topics

    return [p.strip() for name in sorted(topics) for p in topics[name].split("\n\n") if p.strip()]


def python_docs() -> list[str]:
    """The topics' paragraphs, then every docstring of the MODULES' source files."""
    library = Path(sysconfig.get_paths()["stdlib"])
    documents = pydoc_topics()
    for name in MODULES:
        single = library / f"{name}.py"
        files = [single] if single.is_file() else sorted((library / name).rglob("*.py"))
        for path in files:
            if "test" in path.relative_to(library).parts or "tests" in path.relative_to(library).parts:
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, DOCUMENTED) and (text := ast.get_docstring(node, clean=True)):
                    documents.append(text)
    return documents


BUILTIN_CORPORA = {"pydoc_topics": pydoc_topics, "python_docs": python_docs}


def corpus_checksum(documents: list[str]) -> str:
    """SHA-256 of the documents in order (NUL-separated): what `data.builtin_sha256` pins."""
    digest = hashlib.sha256()
    for document in documents:
        digest.update(document.encode("utf-8") + b"\0")
    return digest.hexdigest()
