"""Collect what the deployment files refer to: ``eusdx`` command lines and ``EUSDX_*`` variables.

The drift tests compare these against the real Typer app and the real ``Settings`` class, so a
renamed command, option or configuration key breaks a test instead of a hospital deployment.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
DOCS = REPO / "docs"
K8S = DEPLOY / "kubernetes"
SYSTEMD = DEPLOY / "systemd"

ENV_RE = re.compile(r"\bEUSDX_[A-Z][A-Z0-9_]*[A-Z0-9]\b")
# The container entrypoint turns EUSDX_<KEY>_FILE into EUSDX_<KEY> (deploy/docker-entrypoint.sh).
FILE_SUFFIX = "_FILE"


@dataclass(frozen=True)
class CommandRef:
    """One ``eusdx ...`` invocation found in a file."""

    where: str
    argv: tuple[str, ...]  # the words after the program name

    def __str__(self) -> str:
        return f"{self.where}: eusdx {' '.join(self.argv)}"


class _ComposeLoader(yaml.SafeLoader):  # type: ignore[misc]  # PyYAML ships no type stubs here
    """SafeLoader that also accepts Compose's ``!reset`` / ``!override`` merge tags."""


def _compose_tag(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        value: Any = loader.construct_mapping(node, deep=True)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_scalar(node)
    return {"__compose_tag__": tag_suffix, "value": value}


_ComposeLoader.add_multi_constructor("!", _compose_tag)


def load_compose(path: Path) -> dict[str, Any]:
    """Parse a Compose file (anchors and merge keys resolved, ``!reset`` kept as a marker)."""
    with path.open(encoding="utf-8") as fh:
        data = yaml.load(fh, Loader=_ComposeLoader)  # noqa: S506 - SafeLoader subclass
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a mapping")
    return data


def load_yaml_docs(path: Path) -> list[dict[str, Any]]:
    """All non-empty documents of a multi-document YAML file."""
    with path.open(encoding="utf-8") as fh:
        return [d for d in yaml.safe_load_all(fh) if d is not None]


def k8s_manifest_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def systemd_units() -> list[Path]:
    return sorted(SYSTEMD.glob("*.service"))


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """Parse a systemd unit: section -> key -> values (keys may repeat), continuation lines joined."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = pending + raw.strip()
        pending = ""
        if not line or line.startswith(("#", ";")):
            continue
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        if current is None or "=" not in line:
            raise ValueError(f"{path.name}: cannot parse line {raw!r}")
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def _after_program(words: list[str]) -> tuple[str, ...] | None:
    for i, word in enumerate(words):
        if word == "eusdx" or word.endswith("/eusdx"):
            return tuple(words[i + 1 :])
    return None


def _compose_commands() -> Iterator[CommandRef]:
    for name in ("compose.yaml", "compose.cpu.yaml"):
        data = load_compose(DEPLOY / name)
        for svc, spec in (data.get("services") or {}).items():
            cmd = (spec or {}).get("command")
            if isinstance(cmd, str):
                cmd = shlex.split(cmd)
            if cmd:
                argv = _after_program(list(cmd))
                if argv is not None:
                    yield CommandRef(f"{name}:{svc}", argv)


def _k8s_containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc.get("spec") or {}
    pod = ((spec.get("template") or {}).get("spec")) or {}
    return list(pod.get("containers") or []) + list(pod.get("initContainers") or [])


def _k8s_commands() -> Iterator[CommandRef]:
    for path in k8s_manifest_files():
        for doc in load_yaml_docs(path):
            for c in _k8s_containers(doc):
                words = list(c.get("command") or []) + list(c.get("args") or [])
                argv = _after_program(words)
                if argv is not None:
                    yield CommandRef(f"kubernetes/{path.name}:{c.get('name')}", argv)


def _systemd_commands() -> Iterator[CommandRef]:
    for path in systemd_units():
        for key, values in parse_unit(path).get("Service", {}).items():
            if not key.startswith("Exec"):
                continue
            for value in values:
                argv = _after_program(shlex.split(value.lstrip("-+!@:")))
                if argv is not None:
                    yield CommandRef(f"systemd/{path.name}:{key}", argv)


_FENCE_RE = re.compile(r"^\s*(```|~~~)\s*(?P<lang>[\w+-]*)")
_SHELL_LANGS = {"", "sh", "bash", "shell", "console"}
_DOC_CMD_RE = re.compile(
    r"^\s*(?:\$\s+)?(?:sudo\s+(?:-u\s+\S+\s+)?)?(?:[A-Z_][A-Z0-9_]*=\S+\s+)*(?:\S*/)?eusdx\s+(?P<rest>.*)$"
)


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def markdown_commands(path: Path) -> Iterator[CommandRef]:
    """``eusdx ...`` lines inside fenced shell code blocks (no language, sh, bash, console)."""
    inside = False
    shell = False
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        fence = _FENCE_RE.match(line)
        if fence:
            inside = not inside
            shell = inside and fence["lang"] in _SHELL_LANGS
            continue
        if not shell:
            continue
        m = _DOC_CMD_RE.match(line)
        if not m:
            continue
        rest = m["rest"].split(" #", 1)[0]
        # Shell pipes and redirections end the eusdx command.
        rest = re.split(r"\s(?:\||>|&&|;)\s?", rest, maxsplit=1)[0].rstrip("\\ ")
        try:
            argv = shlex.split(rest)
        except ValueError:
            argv = rest.split()
        yield CommandRef(f"{_rel(path)}:{lineno}", tuple(argv))


def _dockerfile_commands() -> Iterator[CommandRef]:
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    for m in re.finditer(r"^CMD\s+(\[.*\])\s*$", text, re.M):
        argv = _after_program(yaml.safe_load(m.group(1)))
        if argv is not None:
            yield CommandRef("Dockerfile:CMD", argv)
    for lineno, line in enumerate(text.splitlines(), 1):
        comment = re.match(r"^#\s+(eusdx\s.*?)\s{2,}\S", line)
        if comment:
            yield CommandRef(f"Dockerfile:{lineno}", tuple(shlex.split(comment.group(1))[1:]))


def deploy_commands() -> list[CommandRef]:
    """Every ``eusdx`` invocation in compose files, manifests, units and the Dockerfile."""
    return [
        *_compose_commands(),
        *_k8s_commands(),
        *_systemd_commands(),
        *_dockerfile_commands(),
    ]


def doc_commands() -> list[CommandRef]:
    refs: list[CommandRef] = []
    for path in sorted(DOCS.glob("*.md")) + sorted(DEPLOY.rglob("*.md")):
        refs.extend(markdown_commands(path))
    return refs


def text_files(*roots: Path) -> list[Path]:
    """Text files under the roots (binary or git-ignored secret material excluded)."""
    out = []
    for root in roots:
        for p in sorted(root.rglob("*")):
            if p.is_file() and p.suffix not in {".png", ".pem", ".key", ".crt"}:
                out.append(p)
    return out


def env_var_uses(*roots: Path) -> dict[str, list[str]]:
    """``EUSDX_*`` names used in the files under the roots -> where (file:line)."""
    found: dict[str, list[str]] = {}
    for path in text_files(*roots):
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for lineno, line in enumerate(text.splitlines(), 1):
            for name in ENV_RE.findall(line):
                found.setdefault(name, []).append(f"{path.relative_to(REPO)}:{lineno}")
    return found


# --- checking a command line against a click command tree ----------------------------------


def _name(path: tuple[str, ...]) -> str:
    return "'" + " ".join(("eusdx", *path)) + "'"


class UnknownCommand(LookupError):
    """A command word the app does not have; ``path`` is where the walk stopped."""

    def __init__(self, path: tuple[str, ...], word: str) -> None:
        super().__init__(f"no command {word!r} under {_name(path)}")
        self.path = path
        self.word = word


# Typer >= 0.22 vendors its own click (typer._click), so classes are matched by behaviour, not
# by isinstance against the installed click.
def _is_option(param: Any) -> bool:
    return getattr(param, "param_type_name", None) == "option"


def _is_group(cmd: Any) -> bool:
    return isinstance(getattr(cmd, "commands", None), dict)


def _option_names(cmd: Any) -> set[str]:
    names = {"--help"}
    for param in cmd.params:
        if _is_option(param):
            names.update(param.opts)
            names.update(param.secondary_opts)
    return names


def _takes_value(cmd: Any, opt: str) -> bool:
    for param in cmd.params:
        if _is_option(param) and opt in (*param.opts, *param.secondary_opts):
            return not (param.is_flag or param.count)
    return False


def check_argv(root: Any, argv: tuple[str, ...]) -> list[str]:
    """Walk ``argv`` through the click tree; return problems (unknown options), raise
    ``UnknownCommand`` for an unknown (sub-)command.

    Words with ``<``, ``...`` or ``{`` are documentation placeholders and end the check.
    """
    problems: list[str] = []
    cmd: Any = root
    path: tuple[str, ...] = ()
    words = list(argv)
    i = 0
    while i < len(words):
        word = words[i]
        if any(mark in word for mark in ("<", "...", "{", "$")):
            break
        if word.startswith("-"):
            opt = word.split("=", 1)[0]
            if opt not in _option_names(cmd):
                problems.append(f"unknown option {opt} for {_name(path)}")
            elif "=" not in word and _takes_value(cmd, opt):
                i += 1  # skip the option's value
            i += 1
            continue
        if _is_group(cmd):
            sub = cmd.commands.get(word)
            if sub is None:
                raise UnknownCommand(path, word)
            cmd = sub
            path = (*path, word)
        # a positional argument of a leaf command: nothing to check
        i += 1
    if _is_group(cmd) and cmd is not root and not cmd.invoke_without_command:
        problems.append(f"{_name(path)} is a group: a sub-command is missing")
    return problems
