"""`extends`: a spec as the changes to another. Merging (mappings key by key, lists replace,
`--set` last), locations in the file that wrote each value, and every way a chain can be wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

import unetdsl
from unetdsl.cli import main
from unetdsl.extends import merge, origins

from .conftest import ROOT

BASE = """\
unetdsl: 1
name: base
in_channels: 3
out_channels: 3
sample_size: 16
time: {embedding: sinusoidal, features: 8, dim: 16}
defaults:
  norm: {groups: 2}
  dropout: 0.0
encoder:
  downsample: conv
  levels:
    - {channels: 4, blocks: 1}
    - {channels: 8, blocks: 1, attention: {heads: 2}}
middle: {blocks: 2, attention: {heads: 2}}
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def problems(source, overrides=()) -> list[str]:
    with pytest.raises(unetdsl.SpecError) as exc:
        unetdsl.resolve_spec(source, overrides)
    return [p.render() for p in exc.value.problems]


def test_merge_rules() -> None:
    base = {"a": {"x": 1, "y": [1, 2]}, "b": 1}
    top = {"a": {"y": [3]}, "c": 2}
    assert merge(base, top) == {"a": {"x": 1, "y": [3]}, "b": 1, "c": 2}
    assert merge({"a": [1]}, {"a": {"k": 1}}) == {"a": {"k": 1}}  # a mapping over a list replaces it
    # who wrote what: the top document for what it wrote, the base for the rest; a replaced list is all the top's
    assert origins([top, base]) == {(): 0, ("a",): 0, ("a", "x"): 1, ("a", "y"): 0, ("a", "y", 0): 0,
                                    ("b",): 1, ("c",): 0}


def test_a_child_equals_the_spec_written_out(tmp_path: Path) -> None:
    write(tmp_path, "base.yaml", BASE)
    child = write(tmp_path, "nested/child.yaml", """\
unetdsl: 1
extends: ../base.yaml
name: child
defaults: {dropout: 0.1}
encoder:
  levels:
    - {channels: 4, blocks: 2}
    - {channels: 8, blocks: 1}
""")
    written_out = BASE.replace("name: base", "name: child").replace("dropout: 0.0", "dropout: 0.1").replace(
        "- {channels: 4, blocks: 1}", "- {channels: 4, blocks: 2}").replace(
        "- {channels: 8, blocks: 1, attention: {heads: 2}}", "- {channels: 8, blocks: 1}")
    resolved, _ = unetdsl.resolve_spec(child, root=tmp_path)  # ../base.yaml: above the child's folder
    direct, _ = unetdsl.resolve_spec(written_out)
    assert resolved.spec_id == direct.spec_id
    assert resolved.encoder[0].norm.groups == 2  # defaults merged key by key: groups kept, dropout changed
    assert resolved.encoder[1].attention is None  # the level list was replaced, not merged item by item
    # --set applies last, over both files
    assert unetdsl.resolve_spec(child, ["name=over"], root=tmp_path)[0].name == "over"
    # a chain: a grandchild over the child over the base
    grandchild = write(tmp_path, "g.yaml", "unetdsl: 1\nextends: nested/child.yaml\nname: g\nmiddle: {blocks: 3}\n")
    g, _ = unetdsl.resolve_spec(grandchild)
    assert (g.name, g.middle.blocks, g.encoder[0].blocks[0].out_channels, len(g.encoder[0].blocks)) == ("g", 3, 4, 2)


def test_errors_point_at_the_file_that_wrote_the_value(tmp_path: Path) -> None:
    base = write(tmp_path, "base.yaml", BASE.replace("dim: 16}", "dim: 0}"))  # an error in the base
    child = write(tmp_path, "child.yaml", "unetdsl: 1\nextends: base.yaml\nname: child\nmiddle: {blocks: 99}\n"
                                          "encoder: {downsample: strided}\n")
    rendered = problems(child)
    by_path = {r.split(": ", 2)[1]: r for r in rendered}
    assert by_path["time.dim"].startswith(f"{base}:6:")  # the base's line
    assert by_path["middle.blocks"].startswith(f"{child}:4:")  # the child's lines
    assert by_path["encoder.downsample"].startswith(f"{child}:5:")
    # a value the base wrote inside a mapping the child extends keeps the base's line
    fixed = write(tmp_path, "base.yaml", BASE.replace("channels: 8, blocks: 1,", "channels: 7, blocks: 1,"))
    child.write_text("unetdsl: 1\nextends: base.yaml\nname: child\nencoder: {downsample: avgpool}\n")
    assert any(r.startswith(f"{fixed}:14:") for r in problems(child))  # groups 2 do not divide 7
    # an override's error points at --set
    assert problems(child, ["middle.blocks=x"])[0].startswith("--set:1:")


@pytest.mark.parametrize("extends,says", [
    ("missing.yaml", "cannot read the extended spec: No such file or directory"),
    ("https://example.com/s.yaml", "only files on this machine can be extended"),
    ("'.'", "not a regular file"),
    ("/dev/null", "takes a relative path"),
    ("[a.yaml]", "must be the path of the spec this one extends"),
    ("''", "must be the path of the spec this one extends"),
    ('"a\\0b.yaml"', "contains a NUL character"),  # YAML's \0 escape: os.stat raises ValueError on it
    ("x" * 5000, "File name too long"),
])
def test_bad_targets_are_located_errors(tmp_path: Path, extends: str, says: str) -> None:
    child = write(tmp_path, "child.yaml", f"unetdsl: 1\nname: c\nextends: {extends}\n")
    rendered = problems(child)
    assert len(rendered) == 1 and rendered[0].startswith(f"{child}:3:10: extends: ") and says in rendered[0]


def test_cycles_and_depth(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "unetdsl: 1\nextends: b.yaml\n")
    b = write(tmp_path, "b.yaml", "unetdsl: 1\nextends: a.yaml\n")
    rendered = problems(tmp_path / "a.yaml")
    assert rendered[0].startswith(f"{b}:2:10: extends: specs extend one another in a cycle")
    assert "a.yaml -> b.yaml -> a.yaml" in rendered[0]
    write(tmp_path, "self.yaml", "unetdsl: 1\nextends: self.yaml\n")
    assert "self.yaml -> self.yaml" in problems(tmp_path / "self.yaml")[0]
    for i in range(20):
        write(tmp_path, f"d{i}.yaml", f"unetdsl: 1\nextends: d{i + 1}.yaml\n")
    write(tmp_path, "d20.yaml", BASE)
    assert "more than 16 files extend one another" in problems(tmp_path / "d0.yaml")[0]


def test_text_and_dict_sources_extend_relative_to_the_working_directory(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "base.yaml", BASE)
    monkeypatch.chdir(tmp_path)
    assert unetdsl.resolve_spec("unetdsl: 1\nextends: base.yaml\nname: t\n")[0].name == "t"
    assert unetdsl.resolve_spec({"unetdsl": 1, "extends": "base.yaml", "name": "d"})[0].name == "d"
    assert problems({"extends": "nope.yaml"})[0].startswith("extends: cannot read the extended spec")
    # a name no file system can encode (a lone surrogate, only a dict can carry one) is refused too
    assert "surrogates not allowed" in problems({"extends": "\ud800.yaml"})[0]


def test_cli_resolve_shows_the_merged_spec_and_the_schema_accepts_a_child(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    import json

    import jsonschema
    import yaml

    write(tmp_path, "base.yaml", BASE)
    child = write(tmp_path, "child.yaml", "unetdsl: 1\nextends: base.yaml\nname: child\nmiddle: {blocks: 3}\n")
    assert main(["resolve", str(child)]) == 0
    out = yaml.safe_load(capsys.readouterr().out)
    assert out["name"] == "child" and out["middle"]["blocks"] == 3 and out["in_channels"] == 3
    assert "extends" not in out
    schema = json.loads((ROOT / "schemas" / "unetdsl.schema.json").read_text())
    jsonschema.validate(yaml.safe_load(child.read_text()), schema)  # a partial child is valid on its own
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"unetdsl": 1, "name": "partial"}, schema)  # without extends, everything is required


# --- confinement: extends reads only spec files inside the root, and never quotes anything else --
SECRET = "TOKEN=hunter2-do-not-print"


def outside_tree(tmp_path: Path) -> tuple[Path, Path]:
    """A project folder, and a secret file beside it (outside its tree)."""
    project = tmp_path / "project"
    project.mkdir()
    secret = write(tmp_path, "secret.txt", f"{SECRET}\nroot:x:0:0\n")
    write(tmp_path, "base.yaml", BASE)  # a real spec, but outside the project
    return project, secret


@pytest.mark.parametrize("ref", [
    "/etc/passwd", "/proc/self/environ", "~/.bashrc", "~root/x.yaml", "../secret.txt", "../base.yaml",
    "sub/../../secret.txt", "link-out.yaml", "sub/link-dir/secret.txt", "//etc/passwd",
])
def test_extends_never_leaves_the_root(tmp_path: Path, ref: str, capsys: pytest.CaptureFixture[str]) -> None:
    project, secret = outside_tree(tmp_path)
    (project / "sub").mkdir()
    (project / "link-out.yaml").symlink_to(secret)
    (project / "sub" / "link-dir").symlink_to(tmp_path)
    child = write(project, "child.yaml", f"unetdsl: 1\nname: c\nextends: '{ref}'\n")
    rendered = "\n".join(problems(child))
    assert f"{child}:3:10: extends: " in rendered
    assert ("relative path" in rendered) or ("outside the folder of the spec given" in rendered)
    assert SECRET not in rendered and "root:x" not in rendered and "PATH=" not in rendered
    # the command line says the same, and exits 1
    assert main(["validate", str(child)]) == 1
    err = capsys.readouterr().err
    assert SECRET not in err and ("outside" in err or "relative" in err)


def test_a_root_widens_the_tree_and_only_that(tmp_path: Path) -> None:
    project, _ = outside_tree(tmp_path)
    child = write(project / "variants", "wide.yaml", "unetdsl: 1\nextends: ../../base.yaml\nname: wide\n")
    assert "outside the folder" in problems(child)[0]
    assert unetdsl.resolve_spec(child, root=tmp_path)[0].name == "wide"
    with pytest.raises(unetdsl.SpecError, match="outside the folder"):
        unetdsl.resolve_spec(child, root=project)  # the project alone does not hold ../../base.yaml
    assert main(["validate", "--root", str(tmp_path), str(child)]) == 0


@pytest.mark.parametrize("content", [
    f"{SECRET}\n",                                    # plain text: a YAML string, not a mapping
    f"key: {SECRET}\nother: [1, 2]\n",                # a mapping, but not a spec (no unetdsl: 1)
    f"{SECRET}: [\n",                                 # not YAML at all
    f"a: 1\na: {SECRET}\n",                           # a duplicate key naming the secret
    f"\x00{SECRET}",                                  # a binary file
    "\xff\xfe" + SECRET,                              # not UTF-8
])
def test_a_file_that_is_not_a_spec_is_never_quoted(tmp_path: Path, content: str) -> None:
    (tmp_path / "notes.txt").write_bytes(content.encode("utf-8", "surrogateescape") if "\xff" not in content
                                         else b"\xff\xfe" + SECRET.encode())
    child = write(tmp_path, "child.yaml", "unetdsl: 1\nname: c\nextends: notes.txt\n")
    rendered = "\n".join(problems(child))
    assert SECRET not in rendered and "hunter2" not in rendered
    assert rendered.startswith(f"{child}:3:10: extends: the extended file notes.txt is not a")


def test_devices_and_pipes_inside_the_tree_are_refused_without_blocking(tmp_path: Path) -> None:
    import os

    os.mkfifo(tmp_path / "pipe.yaml")  # reading a FIFO with no writer would block forever
    child = write(tmp_path, "child.yaml", "unetdsl: 1\nname: c\nextends: pipe.yaml\n")
    assert "not a regular file" in problems(child)[0]
    # the spec given itself may not be a pipe either (opened without blocking, checked after opening)
    assert "not a regular file" in problems(tmp_path / "pipe.yaml")[0]


def test_the_bounds_hold_for_the_whole_chain(tmp_path: Path) -> None:
    from unetdsl.loader import MAX_BYTES, MAX_NODES

    # 16 files of 100 kB each: each alone is far under the bound, together over it
    filler = "#" + "x" * 99 + "\n"
    per_file = (MAX_BYTES // 10) // len(filler)
    for i in range(16):
        write(tmp_path, f"c{i}.yaml", f"unetdsl: 1\nextends: c{i + 1}.yaml\n" + filler * per_file)
    write(tmp_path, "c16.yaml", BASE)
    rendered = problems(tmp_path / "c0.yaml")
    assert len(rendered) == 1 and f"over what is left of the {MAX_BYTES} bytes" in rendered[0]
    # values: a chain whose files hold 15,000 values each is refused as one document of 20,000 would be
    many = "pad: [" + ", ".join(["1"] * 15_000) + "]\n"
    write(tmp_path, "v1.yaml", "unetdsl: 1\n" + many)
    top = write(tmp_path, "v0.yaml", "unetdsl: 1\nextends: v1.yaml\n" + many.replace("pad", "pad2"))
    rendered = problems(top)
    assert len(rendered) == 1 and len(rendered[0]) < 2000
    assert str(MAX_NODES) in rendered[0] or "not a readable spec" in rendered[0]


def test_file_names_with_escape_sequences_are_printed_escaped(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    name = "evil\x1b[2J\x1b]0;pwned\x07.yaml"
    write(tmp_path, name, BASE.replace("dim: 16}", "dim: 0}"))
    child = write(tmp_path, "child.yaml", 'unetdsl: 1\nname: c\nextends: "evil\\e[2J\\e]0;pwned\\a.yaml"\n')
    assert main(["validate", str(child)]) == 1
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\x07" not in err and "evil\\x1b[2J" in err
    # a cycle and an unreadable file name the files escaped too
    write(tmp_path, name, 'unetdsl: 1\nextends: child.yaml\n')
    assert main(["validate", str(child)]) == 1
    err = capsys.readouterr().err
    assert "\x1b" not in err and "cycle" in err


@pytest.mark.parametrize("command", ["build", "diagram"])
@pytest.mark.parametrize("depth", [1, 2])
def test_outputs_never_replace_a_file_of_the_chain(tmp_path: Path, command: str, depth: int,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    base = write(tmp_path, "base.yaml", BASE)
    mid = write(tmp_path, "mid.yaml", "unetdsl: 1\nextends: base.yaml\nname: mid\n")
    child = write(tmp_path, "child.yaml", "unetdsl: 1\nextends: mid.yaml\nname: child\n")
    target = {1: mid, 2: base}[depth]
    before = target.read_bytes()
    out = ["-o", str(target)]
    assert main([command, str(child), *out]) == 1
    assert target.read_bytes() == before
    assert f"is also the spec it extends ({depth} deep)" in capsys.readouterr().err
    # through another name for the same file (a hard link) too
    alias = tmp_path / "alias.yaml"
    alias.hardlink_to(target)
    assert main([command, str(child), "-o", str(alias)]) == 1
    assert target.read_bytes() == before


@pytest.mark.parametrize("content", [f"{SECRET}\nroot:x:0:0\n", '{"auths": {"r": "' + SECRET + '"}}',
                                     '{"_class_name": "Other", "k": "' + SECRET + '"}', "\x00" + SECRET])
def test_convert_never_quotes_a_linked_file_that_is_not_a_config(tmp_path: Path, content: str,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    # class 3's other door: `convert diffusers DIR` where DIR/config.json links elsewhere
    (tmp_path / "elsewhere").mkdir()
    target = write(tmp_path / "elsewhere", "data", content)
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").symlink_to(target)
    assert main(["convert", "diffusers", str(folder), "-o", str(tmp_path / "out.yaml")]) == 1
    err = capsys.readouterr().err
    assert SECRET not in err and "root:x" not in err and "Traceback" not in err
    assert not (tmp_path / "out.yaml").exists()
