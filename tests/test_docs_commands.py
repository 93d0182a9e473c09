"""Every command the README and docs/ show names a script (or module, or tool) that exists and only options and
settings it takes; every top-level script answers --help."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
from conftest import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SCRIPTS = sorted(p.name for p in ROOT.glob("*.py"))
TOOLS = ("pytest", "onnx-asr", "torchrun")  # console scripts of locked packages, run through `uv run`
KEY_VALUE = re.compile(r"^[A-Za-z_][\w.]*=")


def shown_commands(text: str) -> list[str]:
    """The command lines of a Markdown text's ```bash blocks (continuation lines joined, comments dropped)."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


@cache
def _config_keys():
    from omegaconf import OmegaConf

    from enhi.config import RunCfg

    return OmegaConf.merge(OmegaConf.structured(RunCfg), OmegaConf.load(ROOT / "ft_110M_enhi.yaml"))


def _switches(source: str) -> set[str]:
    m = re.search(r"^SWITCHES = \[(.*?)\]", source, re.M)
    return set(re.findall(r"\"(\w+)\"", m.group(1))) if m else set()


def command_problems(command: str) -> list[str]:
    """What is wrong with one shown command: a script, module or tool that does not exist, an option its source
    never declares, a key=value that is neither a switch nor a key of the run's YAML."""
    from omegaconf import OmegaConf

    words = shlex.split(command)
    while words and (KEY_VALUE.match(words[0]) or words[0] == "srun"):  # VAR=1 ..., srun ...
        words = words[1:]
    if words[:2] == ["uv", "run"]:
        words = words[2:]
    elif not words or words[0] != "python3":
        return [f"{command!r}: neither `uv run` nor `python3`"]
    if words[0] in TOOLS:
        tool = Path(sys.executable).parent / words[0]
        if not tool.is_file():
            return [f"{command!r}: {words[0]} is not installed by uv.lock"]
        if words[0] != "torchrun":
            return []
        words = words[next((i for i, w in enumerate(words) if w.endswith(".py")), len(words)):]
    if words and words[0] in ("python", "python3"):
        words = words[1:]
    if words[:1] == ["-m"]:
        path, args = ROOT / (words[1].replace(".", "/") + ".py"), words[2:]
    elif words:
        path, args = ROOT / words[0], words[1:]
    else:
        return [f"{command!r}: no script"]
    if not path.is_file():
        return [f"{command!r}: {path.relative_to(ROOT)} does not exist"]
    source = path.read_text(encoding="utf-8")
    problems = []
    for arg in args:
        if arg.startswith("--"):
            option = arg.split("=", 1)[0]
            if f'"{option}"' not in source and f"'{option}'" not in source:
                problems.append(f"{command!r}: {path.name} has no option {option}")
        elif KEY_VALUE.match(arg) and "load_run_config" in source:
            key = arg.split("=", 1)[0]
            free = key.split(".")[0] in ("trainer", "exp_manager") or key.startswith("model.spec_augment.")
            known = key in _switches(source) | {"config"} or OmegaConf.select(_config_keys(), key, default=KeyError) is not KeyError
            if not (known or free):
                problems.append(f"{command!r}: {key} is neither a switch of {path.name} nor a key of the YAML")
    return problems


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shown_command_names_what_exists(doc):
    commands = shown_commands(doc.read_text(encoding="utf-8"))
    assert commands or doc.name != "README.md"
    problems = [p for c in commands for p in command_problems(c)]
    assert not problems, "\n".join(problems)


def test_the_command_check_catches_a_wrong_script_option_or_key():
    assert command_problems("uv run eval_nemo.py --model m.nemo --manifest a.json --out p.jsonl") == []
    assert command_problems("uv run eval_nemo.py --modle m.nemo") == ["'uv run eval_nemo.py --modle m.nemo': eval_nemo.py has no option --modle"]
    assert "does not exist" in command_problems("uv run evaluate.py --model m.nemo")[0]
    assert "does not exist" in command_problems("uv run python -m enhi.shard shar a.json out")[0]
    assert command_problems("uv run ft_110M_enhi_demo.py bnb_optim=true model.optim.lr=1e-4 trainer.devices=2") == []
    assert "neither a switch" in command_problems("uv run ft_110M_enhi_demo.py model.optim.lrate=1e-4")[0]
    assert "neither a switch" in command_problems("uv run ft_110M_enhi_demo.py bnb_optimizer=true")[0]
    assert "does not exist" in command_problems("uv run torchrunner x.py")[0]
    assert "neither" in command_problems("bash run.sh")[0]


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_top_level_script_answers_help(script):
    proc = subprocess.run([sys.executable, script, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-1500:]
    first = (ROOT / script).read_text(encoding="utf-8").split('"""', 2)[1].strip().splitlines()[0]
    # The script's own description (argparse re-wraps it), not a stray error.
    assert " ".join(first.split()) in " ".join(proc.stdout.split()), proc.stdout[:500]
