"""YAML output that people read: multi-line strings (ConfigMap files) as literal blocks."""

from __future__ import annotations

from typing import Any, Iterable

import yaml


class _ReadableDumper(yaml.SafeDumper):
    pass


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_ReadableDumper.add_representer(str, _represent_str)


def dump(document: Any) -> str:
    return yaml.dump(document, Dumper=_ReadableDumper, sort_keys=False, width=100)


def dump_all(documents: Iterable[Any]) -> str:
    return yaml.dump_all(list(documents), Dumper=_ReadableDumper, sort_keys=False, width=100)


# What `kubectl apply` would take: the API server refuses requests above 3 MiB.
MAX_BYTES = 3 * 1024 * 1024
# A few aliases are a convenience; more, or a document that expands to more values than any
# FineTuneJob holds, is an expansion bomb.
MAX_ALIASES = 100
MAX_VALUES = 100_000


class UnreadableYAML(ValueError):
    """A file that is not a YAML document kubetune reads; the message says why, in one line."""


class _StrictLoader(yaml.SafeLoader):
    """YAML as kubectl reads it: a duplicate key is an error, and aliases are bounded."""

    aliases = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.events.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                raise yaml.composer.ComposerError(None, None, f"more than {MAX_ALIASES} aliases",
                                                  self.peek_event().start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen and key != "<<":
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def load_all(data: bytes) -> list[Any]:
    """Every non-empty document of a YAML file, or UnreadableYAML saying why not."""
    if len(data) > MAX_BYTES:
        limit = MAX_BYTES // 2**20
        raise UnreadableYAML(f"{len(data) / 2**20:.1f} MiB is more than the API server takes ({limit} MiB)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UnreadableYAML("not a text file (UTF-8)") from None
    if "\x00" in text:
        raise UnreadableYAML("not a text file (it holds NUL bytes)")
    try:
        documents = [d for d in yaml.load_all(text, Loader=_StrictLoader) if d is not None]
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise UnreadableYAML(f"{where}invalid YAML: {getattr(error, 'problem', None) or error}") from None
    except RecursionError:
        raise UnreadableYAML("invalid YAML: nested too deeply") from None
    if _expands_beyond(documents, MAX_VALUES):
        raise UnreadableYAML(f"its aliases expand to more than {MAX_VALUES} values")
    return documents


def _expands_beyond(value: Any, limit: int) -> bool:
    """Whether walking the value, aliases expanded, visits more than `limit` values."""
    stack, seen = [value], 0
    while stack:
        seen += 1
        if seen > limit:
            return True
        item = stack.pop()
        if isinstance(item, dict):
            stack += list(item.keys()) + list(item.values())
        elif isinstance(item, list):
            stack += item
    return False
