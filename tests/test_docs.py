"""Every code block of README.md and docs/ runs, so none can drift from what unetdsl does.

Each page's blocks run in order in one folder of their own (with `specs/`, `tests/`, `examples/`,
`benchmarks/`, `schemas/` and `.venv` linked in), so a block can use what an earlier one wrote.
An HTML comment `<!-- docs-test: setup ... -->` right before a block holds Python that prepares
what the block needs and the reader already has (a diffusers folder, a trained checkpoint).

- ```python: run as a script (under `torchrun --nproc_per_node 1` when it starts a process group);
- ```yaml: a spec. With a `# specs/NAME.yaml` line, each value it shows must be that file's
  (abridged blocks show a part); a file that does not exist is written next to the example specs
  and resolved there (an `extends` example); otherwise it must resolve as it is;
- ```console: each `$ command` runs; the lines after it must appear in its output, in order
  (`console numbers-vary`: with every number masked, for figures of the machine at hand), and it
  must fail exactly when the output shown is an error. What cannot run inside the suite is checked
  as far as it can be: `make TARGET` with `make -n`, a long script's flags against its `--help`,
  the C++ build by tests/test_cpp_example.py, which runs the block itself;
- ```text: a synopsis. `unetdsl` lines name real commands and options; `unetdsl/...` paths exist.

docs/language.md is generated from the language's models; tests/test_reference.py keeps it current.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from .conftest import ROOT

PAGES = [ROOT / "README.md", *sorted(p for p in (ROOT / "docs").glob("*.md") if p.name != "language.md")]
BIN = Path(sys.executable).parent
LINKED = ["specs", "tests", "examples", "benchmarks", "schemas"]
BLOCK = re.compile(r"(?:<!-- docs-test: setup\n(?P<setup>.*?)-->\n)?^```(?P<info>[^\n`]*)\n(?P<body>.*?)^```[ \t]*$",
                   re.S | re.M)
# scripts too long for the suite (a 15-minute training run, the benchmarks): flags checked against --help
LONG_SCRIPTS = ("examples/train_digits.py", "benchmarks/")
CPP_TEST = ROOT / "tests" / "test_cpp_example.py"


@dataclass
class Block:
    page: Path
    line: int
    info: str
    body: str
    setup: str | None

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    text = page.read_text()
    return [Block(page, text.count("\n", 0, m.start("body")), m["info"].strip(), m["body"], m["setup"])
            for m in BLOCK.finditer(text)]


def commands(body: str) -> list[tuple[str, list[str]]]:
    """A console block's commands, each with the output lines shown after it."""
    out: list[tuple[str, list[str]]] = []
    for line in body.splitlines():
        if line.startswith("$ "):
            out.append((line[2:], []))
        elif out and line.strip():
            out[-1][1].append(line)
    return out


def workdir(tmp: Path) -> Path:
    for name in LINKED:
        (tmp / name).symlink_to(ROOT / name)
    (tmp / ".venv").symlink_to(BIN.parent)
    return tmp


def env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "PYTHONWARNINGS": "ignore"}


def run(args: list[str] | str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout,
                          shell=isinstance(args, str), executable="/bin/bash" if isinstance(args, str) else None)


# --- the block kinds ----------------------------------------------------------------------------


def run_python(block: Block, cwd: Path) -> None:
    script = cwd / f"block-{block.line}.py"
    script.write_text(block.body)
    distributed = "init_process_group" in block.body
    args = [str(BIN / "torchrun"), "--nproc_per_node", "1", str(script)] if distributed else [sys.executable, str(script)]
    proc = run(args, cwd)
    assert proc.returncode == 0, f"{block.where}: the python block failed:\n{proc.stderr[-3000:]}"


def contains(whole: object, part: object) -> bool:
    """`part` shows only values `whole` has (mappings may leave keys out; lists and values are equal)."""
    if isinstance(part, dict):
        return isinstance(whole, dict) and all(k in whole and contains(whole[k], v) for k, v in part.items())
    return whole == part


def run_yaml(block: Block, cwd: Path) -> None:
    import unetdsl

    named = re.search(r"^# (specs/[\w.-]+\.yaml)", block.body, re.M)
    data = yaml.safe_load(block.body)
    if named and (ROOT / named[1]).exists():
        real = yaml.safe_load((ROOT / named[1]).read_text())
        assert contains(real, data), f"{block.where}: the block shows values {named[1]} does not have"
        return
    if named:  # an example file beside the specs it extends
        folder = cwd / "example-specs"
        folder.mkdir(exist_ok=True)
        for spec in (ROOT / "specs").glob("*.yaml"):
            (folder / spec.name).write_text(spec.read_text())
        path = folder / Path(named[1]).name
        path.write_text(block.body)
        unetdsl.resolve_spec(path)
        return
    assert "unetdsl" in data, f"{block.where}: a yaml block is a spec (or names the spec file it shows)"
    unetdsl.resolve_spec(block.body)


def masked(line: str) -> str:
    return re.sub(r"\d[\d,]*(\.\d+)?", "#", " ".join(line.split()))


def run_console(block: Block, cwd: Path) -> None:
    numbers_vary = "numbers-vary" in block.info
    for command, shown in commands(block.body):
        command = re.sub(r"\s+#.*$", "", command)  # a trailing comment
        argv = shlex.split(command)
        if argv[0] == "make":
            proc = run(["make", "-n", "-C", str(ROOT), *argv[1:]], cwd)
            assert proc.returncode == 0, f"{block.where}: `{command}`: no such make target\n{proc.stderr}"
            continue
        if argv[0] == "cmake":  # tests/test_cpp_example.py builds the runner with these very lines
            assert block.page.name == "deployment.md" and "docs/deployment.md" in CPP_TEST.read_text()
            continue
        script = next((a for a in argv if a.endswith(".py")), None)
        if script is not None and script.startswith(LONG_SCRIPTS):
            proc = run([sys.executable, script, "--help"], cwd)
            assert proc.returncode == 0, f"{block.where}: `{script} --help` failed"
            for flag in (a.split("=")[0] for a in argv if a.startswith("--") and a != "--nproc_per_node"):
                assert flag in proc.stdout, f"{block.where}: {script} has no {flag}"
            continue
        proc = run(command, cwd)
        output = [" ".join(line.split()) for line in (proc.stdout + proc.stderr).splitlines()]
        failure = any(line.lstrip().startswith(("error", "Error")) or re.match(r"\d+ problems? in ", line)
                      for line in shown)
        assert (proc.returncode != 0) == failure, (
            f"{block.where}: `{command}` exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
        at = 0
        for line in shown:
            want = masked(line) if numbers_vary else " ".join(line.split())
            got = [masked(o) if numbers_vary else o for o in output]
            assert want in got[at:], f"{block.where}: `{command}` did not print:\n{line}\nit printed:\n" + "\n".join(output)
            at = got.index(want, at) + 1


def run_text(block: Block, cwd: Path) -> None:
    from unetdsl.cli import build_parser

    parser = build_parser()
    subcommands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    current = None
    for line in block.body.splitlines():
        words = line.split()
        if words[:1] == ["unetdsl"] and len(words) > 1:
            current = words[1]
            assert current in subcommands, f"{block.where}: no command `unetdsl {current}`"
        if current is not None and line.startswith(("unetdsl ", " ")):
            options = {o for a in subcommands[current]._actions for o in a.option_strings}
            for flag in re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", line.split("  ")[0] if line.startswith("unetdsl") else line):
                assert flag in options, f"{block.where}: `unetdsl {current}` has no option {flag}"
    for path in re.findall(r"(?<![\w/.])((?:unetdsl|tests|benchmarks|examples|specs|schemas|docs)/[\w./-]*\w/?)", block.body):
        assert (ROOT / path).exists(), f"{block.where}: {path} does not exist"


KINDS = {"python": run_python, "yaml": run_yaml, "console": run_console, "text": run_text}


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_block_of_the_page_runs(page: Path, tmp_path: Path) -> None:
    cwd = workdir(tmp_path)
    found = blocks(page)
    for block in found:
        kind = block.info.split()[0] if block.info else ""
        assert kind in KINDS, f"{block.where}: a block says what it is: one of {', '.join(KINDS)} (found {kind!r})"
        if block.setup:
            proc = run([sys.executable, "-c", block.setup], cwd)
            assert proc.returncode == 0, f"{block.where}: its setup failed:\n{proc.stderr[-2000:]}"
        KINDS[kind](block, cwd)


def test_the_extractor_finds_every_fence() -> None:
    # a block the pattern missed would silently go untested
    for page in PAGES:
        fences = sum(1 for line in page.read_text().splitlines() if line.startswith("```"))
        assert fences == 2 * len(blocks(page)), page


def test_a_drifted_block_fails(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("```console\n$ unetdsl validate specs/tiny.yaml\n"
                    "ok  specs/tiny.yaml  tiny  v2:sha256:0000000000000000\n```\n")  # not its id
    (block,) = blocks(page)
    with pytest.raises(AssertionError, match="did not print"):
        (tmp_path / "w").mkdir()
        run_console(Block(ROOT / "README.md", 1, block.info, block.body, None), workdir(tmp_path / "w"))
