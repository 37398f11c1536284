"""How ``stsun`` shows a person's mistake: one paragraph that ends the output.

A :class:`~stsun_lightning.errors.ConfigError` can reach ``stsun`` wrapped three ways,
and each wrapping is undone here:

- raised while jsonargparse instantiates the datamodule, the model or a callback, it is
  the ``__cause__`` of jsonargparse's "Does not validate against any of the Union
  subtypes" error (:func:`config_error_in` finds it);
- raised in a DataLoader worker, torch re-raises it in the main process with the
  worker's traceback as its message (:func:`person_message` keeps the original message);
- jsonargparse's own parse errors (an unknown key, a wrong type, a missing config file)
  come as an ``ArgumentError`` whose message nests the union's subtypes and repeats the
  whole given value; :func:`parse_error_message` keeps the key, the problem and the
  closest valid option.

And :func:`check_ckpt_path` refuses a ``ckpt_path`` without checkpoint right after
parsing, which Lightning would report only after building everything, with a traceback.
"""

from __future__ import annotations

import importlib
import inspect
import itertools
import re
import sys
import zipfile
from argparse import ArgumentParser
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from stsun_lightning.errors import ConfigError, InputFileError, MissingFileError, closest_name

__all__ = [
    "MOVED_OPTIONS",
    "check_ckpt_path",
    "command_line_error",
    "config_error_in",
    "parse_error_message",
    "person_message",
]

# Options that moved, with what to say to a config that still has them.
MOVED_OPTIONS = {
    "model.coarsen": "data.coarsen",
    "model.coarsen_factors": "data.coarsen_factors",
}
"""Old option -> its new name; the datamodule now draws coarse crops larger (see docs)."""
# Values of ``ckpt_path`` that Lightning resolves itself (no file of that name).
_CKPT_KEYWORDS = ("last", "best", "hpc")
# Files that ``torch.save`` writes: a zip archive, or before PyTorch 1.6 a pickle.
_TORCH_SUFFIXES = (".ckpt", ".pt", ".pth")


def config_error_in(error: BaseException) -> ConfigError | None:
    """The :class:`ConfigError` that ``error`` is or was raised from, if any.

    Follows ``__cause__`` only (``raise ... from``, as jsonargparse wraps), never
    ``__context__``: a bug raised while handling a person's mistake stays a bug.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, ConfigError):
            return current
        seen.add(id(current))
        current = current.__cause__
    return None


def person_message(error: BaseException) -> str:
    """The message of ``error`` as one paragraph, without a DataLoader worker's traceback."""
    text = str(error)
    if text.startswith("Caught ") and "\nOriginal Traceback (most recent call last):" in text:
        # torch's ExceptionWrapper: the worker's traceback, ending on "module.Class: message".
        kind = type(error)
        _, found, message = text.rpartition(f"\n{kind.__module__}.{kind.__qualname__}: ")
        text = message if found else text.rstrip().rsplit("\n", 1)[-1]
    return " ".join(text.split())


def parse_error_message(message: str, known_options: Iterable[str] = ()) -> str:
    """A jsonargparse parse error as one short paragraph naming the key.

    Args:
        message: the ``ArgumentError``'s message, e.g. ``Parser key "data": Does not
            validate against any of the Union subtypes ... Given value: {...}``.
        known_options: the options of the subcommand (``model.learning_rate``, ...), for
            the closest match of an option that is not accepted.

    Returns:
        E.g. ``data.patch_size: Expected int. Got value: sixteen`` or ``data:
        stsun_lightning.data.GeoTiffDataModule does not accept option 'patch_sise'. Did
        you mean 'patch_size'?``.
    """
    keys, text = _summary(_tree(message.splitlines()))
    text = re.sub(r"<class '([^']+)'>", r"\1", text).replace("Expected a ", "Expected ")
    text = re.sub(r"typing\.Literal\[(.+?)\]", r"one of \1", text)
    if match := re.fullmatch(r"Subcommand '\w+' does not accept option '([^']+)'", text):
        moved = MOVED_OPTIONS.get(match[1])
        if moved is not None:
            text += f". It moved to {moved!r} (the datamodule's option)."
        else:
            text += "." + _closest(match[1], known_options)
    return f"{'.'.join(keys)}: {text}" if keys else text


def command_line_error(
    message: str, args: Sequence[str] | None, parsers: Mapping[str, ArgumentParser]
) -> str:
    """A parse error of ``stsun`` as one paragraph, ending on where ``--help`` is.

    Args:
        message: the ``ArgumentError``'s message.
        args: the command-line arguments (None: ``sys.argv[1:]``).
        parsers: the parser of each subcommand, for the closest option.
    """
    words = [str(w) for w in (sys.argv[1:] if args is None else args)]
    subcommand = next((w for w in words if w in parsers), None)
    options = [a.dest for a in parsers[subcommand]._actions] if subcommand else []
    text = parse_error_message(message, [o for o in options if o and o != "help"])
    configs = [w.removeprefix("--config=") for w in words if w.startswith("--config=")]
    configs += [after for w, after in itertools.pairwise(words) if w in ("-c", "--config")]
    if len(configs) == 1:  # YAML errors say where in "<unicode string>"
        text = text.replace('"<unicode string>"', configs[0])
    tip = f"stsun {subcommand} --help" if subcommand else "stsun --help"
    return f"{text} ('{tip}' lists the accepted options.)"


def check_ckpt_path(ckpt_path: str | None) -> None:
    """Refuse a ``ckpt_path`` that names no file, or a torch file that is no checkpoint.

    Lightning would find out only after building the model and the datamodule (and for a
    corrupt file, say so with a traceback of its unpickler).

    Raises:
        MissingFileError: no file at the path, naming the closest file beside it.
        InputFileError: a ``.ckpt``/``.pt``/``.pth`` file that is neither the zip archive
            that ``torch.save`` writes nor a legacy pickle (corrupt or truncated).
    """
    if not ckpt_path or ckpt_path in _CKPT_KEYWORDS or ckpt_path.startswith("registry"):
        return
    if "://" in ckpt_path:  # remote paths are Lightning's (fsspec) to open
        return
    path = Path(ckpt_path).expanduser()
    if not path.is_file():
        beside = [p.name for p in path.parent.iterdir()] if path.parent.is_dir() else []
        raise MissingFileError(
            f"ckpt_path: no checkpoint file at {ckpt_path}.{_closest(path.name, beside)}"
        )
    if path.suffix in _TORCH_SUFFIXES:
        with path.open("rb") as file:
            legacy = file.read(1) == b"\x80"  # a pickle, protocol 2 or later
        if not legacy and not zipfile.is_zipfile(path):
            raise InputFileError(
                f"ckpt_path: {ckpt_path} is not a checkpoint (corrupt or truncated?): "
                "expected the zip archive that torch.save writes."
            )


def _closest(name: str, known: Iterable[str]) -> str:
    close = closest_name(name, known)
    return f" Did you mean {close!r}?" if close else ""


_Node = tuple[str, list["_Node"]]


def _tree(lines: list[str]) -> list[_Node]:
    """Lines nested by their indentation: ``[(text, children), ...]``."""
    root: list[_Node] = []
    stack: list[tuple[int, list[_Node]]] = [(-1, root)]
    for line in lines:
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        while stack[-1][0] >= indent:
            stack.pop()
        node: _Node = (line.strip(), [])
        stack[-1][1].append(node)
        stack.append((indent, node[1]))
    return root


def _summary(nodes: list[_Node]) -> tuple[list[str], str]:
    """The keys down to the problem, and the problem, of a jsonargparse error tree."""
    if not nodes:
        return [], ""
    text, children = nodes[0]
    if key := re.fullmatch(r'Parser key "([^"]+)":\s*(.*)', text):
        rest: list[_Node] = [(key[2], [])] if key[2] else []
        keys, problem = _summary(rest + children + nodes[1:])
        return [key[1], *keys], problem
    if text == "Does not validate against any of the Union subtypes":
        return _union(nodes[1:])
    if class_path := re.fullmatch(r"Problem with given class_path '(.+)':", text):
        keys, problem = _summary(children)
        return keys, problem if keys else _class_problem(class_path[1], problem)
    return [], " ".join([text, *_flatten(children), *_flatten(nodes[1:])])


def _union(siblings: list[_Node]) -> tuple[list[str], str]:
    """The problems of a union's subtypes: the class the user named, else every non-None."""
    errors = next((c for t, c in siblings if t == "Errors:"), [])
    branches = [(t.removeprefix("- "), c) for t, c in errors]
    named = [b for b in branches if b[0].startswith("Problem with given class_path")]
    kept = named or [b for b in branches if b[0] != "Expected a <class 'NoneType'>"] or branches
    summaries = [_summary([b]) for b in kept]
    keys = summaries[0][0] if len(summaries) == 1 else []
    problem = " or ".join(p for _, p in summaries)
    given = next((t for t, _ in siblings if t.startswith("Given value: ")), "")
    if not named and "Got value" not in problem and 0 < len(given) <= 80:
        problem += f". Got value: {given.removeprefix('Given value: ')}"
    return keys, problem


def _class_problem(class_path: str, problem: str) -> str:
    """A problem of a class named in the config, with the closest option or class name."""
    if option := re.fullmatch(r"Option '(.+)' is not accepted", problem):
        hint = _closest(option[1], _parameters(class_path))
        return f"{class_path} does not accept option {option[1]!r}.{hint}"
    if missing := re.fullmatch(r"module '(.+)' has no attribute '(.+)'", problem):
        try:
            module = importlib.import_module(missing[1])
        except ImportError:
            names = []
        else:
            names = [f"{missing[1]}.{n}" for n in dir(module) if not n.startswith("_")]
        hint = _closest(class_path, names)
        return f"class_path {class_path!r} names no class ({problem}).{hint}"
    return f"{problem} ({class_path})" if problem else class_path


def _parameters(class_path: str) -> list[str]:
    """The keyword parameters of the class at ``class_path`` (empty if it cannot be found)."""
    module, _, name = class_path.rpartition(".")
    try:
        signature = inspect.signature(getattr(importlib.import_module(module), name))
    except (ImportError, AttributeError, TypeError, ValueError):
        return []
    return [
        p.name
        for p in signature.parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]


def _flatten(nodes: list[_Node]) -> list[str]:
    return [part for text, children in nodes for part in (text, *_flatten(children))]
