"""Every CLI entry point refuses bad input with one line, exit status 2 and no traceback, and
writes nothing outside its output path (a table of bad invocations, each cheap: refused before
any data is read or any model is built)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from encshield.checkpoints import save_encoder
from tests.synthetic import encoder


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("bad-inputs")
    save_encoder(encoder(), base / "enc.safetensors", ssl_method="random", pretrain_data="none")
    (base / "latin1.yaml").write_bytes("name: caf\xe9\n".encode("latin-1"))
    (base / "list.yaml").write_text("- 1\n- 2\n")
    (base / "bomb.yaml").write_text("a: &a [1, 2]\nb: [*a, *a]\n")
    (base / "not-a-model.safetensors").write_bytes(b"\x00" * 64)
    (base / "dir.safetensors").mkdir()
    (base / "text.db").write_text("not sqlite")
    return {"base": base, "enc": base / "enc.safetensors"}


def _cases(f: dict[str, Path]) -> list[tuple[list[str], str]]:
    """(argv, a fragment the one-line message must contain)."""
    enc, base = str(f["enc"]), f["base"]
    return [
        (["data", "info", "nope"], "unknown dataset 'nope'"),
        (["data", "info", "cifar10", "--root", str(base / "missing")], "not found"),
        (["encoder", "inspect", str(base / "missing.safetensors")], "missing.safetensors"),
        (["encoder", "inspect", str(base / "not-a-model.safetensors")], "not-a-model"),
        (["encoder", "build", str(base / "w.safetensors"), "--width", "1000000"], "width"),
        (["encoder", "convert", enc, str(base / "dir.safetensors")], "is a folder"),
        (["pretrain", "--config", str(base / "latin1.yaml")], "UTF-8"),
        (["pretrain", "--config", str(base / "list.yaml")], "mapping"),
        (["pretrain", "--set", "epochs=!!python/object/apply:os.system ['true']"], "--set"),
        (["pretrain", "--set", "optimizer.lr=.inf"], "finite"),
        (["attack", "fit", "nope", "--encoder", enc, "--surrogate", "cifar10", "--output",
          str(base / "a.safetensors")], "unknown universal attack 'nope'"),
        (["attack", "fit", "pap", "--encoder", enc, "--surrogate", "cifar10", "--eps", "10",
          "--output", str(base / "a.safetensors")], "did you mean 10/255"),
        (["attack", "fit", "pap", "--encoder", enc, "--surrogate", "cifar10:train[abc]",
          "--output", str(base / "a.safetensors")], "train[abc]"),
        (["attack", "fit", "pap", "--encoder", enc, "--surrogate", "cifar10", "--set",
          "steps=-1", "--output", str(base / "a.safetensors")], "steps"),
        (["attack", "fit", "pap", "--encoder", enc, "--surrogate", "cifar10", "--device",
          "tpu:7", "--output", str(base / "a.safetensors")], "tpu:7"),
        (["attack", "show", str(base / "missing.safetensors")], "missing.safetensors"),
        (["defend", "pgd_at", "--encoder", enc, "--data", "cifar10", "--set", "attack.eps=2",
          "--output", str(base / "m.safetensors")], "attack.eps"),
        (["defend", "pgd_at", "--encoder", enc, "--data", "cifar10", "--output",
          str(base / "m.json")], ".json"),
        (["defend", "nope", "--encoder", enc, "--data", "cifar10", "--output",
          str(base / "m.safetensors")], "unknown defense 'nope'"),
        (["evaluate", "--model", str(base / "missing.safetensors"), "--dataset", "cifar10",
          "--output", str(base / "r.json")], "missing.safetensors"),
        (["evaluate", "--encoder", enc, "--dataset", "cifar10", "--whitebox", "nope:eps=1/255",
          "--output", str(base / "r.json")], "nope"),
        (["tune", "pgd_at", "--encoder", enc, "--data", "cifar10", "--val", "cifar10",
          "--grid", "epochs"], "--grid"),
        (["bench", "--config", str(base / "bomb.yaml"), "--check"], "alias"),
        (["bench", "--config", str(base / "missing.yaml")], "missing.yaml"),
        (["report", str(base / "text.db")], "text.db"),
        (["zoo", "get", "nope"], "unknown zoo encoder 'nope'"),
    ]


def test_every_entry_point_refuses_bad_input_in_one_line(files: dict[str, Path]) -> None:
    """One process runs every case (so the import cost is paid once) and reports, per case,
    the exit status and what was printed on stderr."""
    script = (
        "import contextlib, io, json, sys\n"
        "from encshield.cli import main\n"
        "out = []\n"
        "for argv in json.loads(sys.argv[1]):\n"
        "    err = io.StringIO()\n"
        "    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):\n"
        "        try:\n"
        "            code = main(argv)\n"
        "        except SystemExit as stop:\n"
        "            code = stop.code\n"
        "    out.append([code, err.getvalue()])\n"
        "print(json.dumps(out))\n"
    )
    import json

    cases = _cases(files)
    before = set(files["base"].rglob("*"))
    env = {**os.environ, "ENCSHIELD_DATA": str(files["base"] / "no-data"),
           "ENCSHIELD_QUIET": "1"}
    done = subprocess.run([sys.executable, "-c", script, json.dumps([c for c, _ in cases])],
                          capture_output=True, text=True, env=env, cwd=files["base"],
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    for (argv, fragment), (code, err) in zip(cases, results):
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 2, (argv, code, err)
        assert "Traceback" not in err, (argv, err)
        assert len(lines) == 1 and lines[0].startswith("encshield: error:"), (argv, err)
        assert fragment in lines[0], (argv, lines[0])
    assert set(files["base"].rglob("*")) == before  # nothing written by a refused command
