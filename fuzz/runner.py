"""Running the targets: corpus replay, atheris (coverage-guided) and a hypothesis fallback."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

FUZZ_DIR = Path(__file__).resolve().parent
ROOT = FUZZ_DIR.parent
CORPUS = FUZZ_DIR / "corpus"
DICTS = FUZZ_DIR / "dicts"  # libFuzzer dictionaries: tokens the JSON-shaped targets parse
KNOWN = FUZZ_DIR / "known"  # inputs of filed, unfixed defects (see targets.KNOWN_DEFECTS)
PER_INPUT_TIMEOUT = 10  # seconds: an input that runs longer is a hang


def have_atheris() -> bool:
    return importlib.util.find_spec("atheris") is not None


def corpus_files(target: str, folder: Path = CORPUS) -> list[Path]:
    """The files of target's corpus folder, sorted."""
    return sorted(p for p in (folder / target).glob("*") if p.is_file())


class Hang(Exception):
    """One input ran longer than PER_INPUT_TIMEOUT."""


@contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    """Raises Hang in the main thread after seconds (no-op where SIGALRM is missing)."""
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def expire(*_):
        raise Hang(f"one input ran longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def replay(target: str, paths, *, strict: bool = False) -> int:
    """Runs every file in paths through target; raises on the first finding."""
    from . import targets

    for path in paths:
        with time_limit(PER_INPUT_TIMEOUT):
            try:
                targets.run(target, Path(path).read_bytes(), strict=strict)
            except Exception as exc:
                raise AssertionError(f"{target}: {path} is a finding: {type(exc).__name__}") from exc
    return len(paths)


def atheris_command(target: str, *, seconds: Optional[float], runs: Optional[int], work: Path,
                    strict: bool = False, extra=()) -> list[str]:
    """The command line that fuzzes target with atheris in a fresh process."""
    command = [sys.executable, "-m", "fuzz", target, "--engine", "atheris", "--work-dir", str(work)]
    if seconds is not None:
        command += ["--time", str(seconds)]
    if runs is not None:
        command += ["--runs", str(runs)]
    if strict:
        command.append("--strict")
    return command + [*(["--"] if extra else []), *extra]


def run_atheris(target: str, *, seconds, runs, work: Path, strict: bool, extra) -> None:
    """Fuzzes target in this process with atheris (libFuzzer); never returns.

    New inputs go to work/corpus, crashes, hangs and out-of-memory inputs to work/ as
    ``crash-*``, ``timeout-*``, ``oom-*``; the seed corpus is read, never written.
    """
    import atheris

    # Every shardseal module the targets reach is imported inside this block, so that all of
    # them are instrumented (a module imported earlier or later gives the fuzzer no coverage).
    with atheris.instrument_imports(include=["shardseal"]):
        from . import targets
        if target == "safetensors":
            import shardseal.safetensors  # noqa: F401
            import shardseal.torch  # noqa: F401

    if target not in targets.TARGETS:
        raise SystemExit(f"unknown target {target!r}; one of {', '.join(targets.TARGETS)}")

    def one_input(data: bytes) -> None:
        targets.run(target, data, strict=strict)

    (work / "corpus").mkdir(parents=True, exist_ok=True)
    args = [sys.argv[0], f"-timeout={PER_INPUT_TIMEOUT}", "-rss_limit_mb=4096", "-max_len=65536",
            f"-artifact_prefix={work}{os.sep}", "-print_final_stats=1"]
    if seconds is not None:
        args.append(f"-max_total_time={max(1, int(seconds))}")
    if runs is not None:
        args.append(f"-runs={runs}")
    if (DICTS / f"{target}.dict").is_file():
        args.append(f"-dict={DICTS / f'{target}.dict'}")
    # libFuzzer writes new inputs to the first folder only: the work folder, never the seeds
    # (nor a folder given after --, which is read as more seeds).
    args += [str(work / "corpus"), str(CORPUS / target), *extra]
    atheris.Setup(args, one_input)
    atheris.Fuzz()


def _mutated_inputs(seeds: list[bytes]):
    """A hypothesis strategy: raw bytes, or a seed with byte edits, cuts and splices."""
    from hypothesis import strategies as st

    edit = st.tuples(st.sampled_from(["set", "insert", "delete", "cut"]),
                     st.integers(0, 1 << 20), st.integers(0, 255))

    def apply(seed_and_edits):
        seed, edits = seed_and_edits
        data = bytearray(seed)
        for kind, where, value in edits:
            position = where % (len(data) + 1)
            if kind == "set" and data:
                data[position % len(data)] = value
            elif kind == "insert":
                data[position:position] = bytes([value]) * (1 + value % 4)
            elif kind == "delete":
                del data[position:position + 1 + value]
            elif kind == "cut":
                del data[position:]
        return bytes(data)

    mutated = st.tuples(st.sampled_from(seeds), st.lists(edit, max_size=6)).map(apply)
    return st.one_of(st.binary(max_size=512), mutated) if seeds else st.binary(max_size=4096)


def run_hypothesis(target: str, *, seconds: Optional[float], max_examples: int,
                   strict: bool = False) -> int:
    """Fuzzes target with hypothesis for max_examples inputs (repeated until seconds pass).

    Returns:
        The number of inputs run. Raises on a finding (hypothesis shrinks it first).
    """
    from hypothesis import HealthCheck, given, settings

    from . import targets

    seeds = [p.read_bytes() for p in corpus_files(target)]
    count = 0

    @settings(max_examples=max_examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(_mutated_inputs(seeds))
    def check(data: bytes) -> None:
        nonlocal count
        count += 1
        with time_limit(PER_INPUT_TIMEOUT):
            targets.run(target, data, strict=strict)

    end = time.monotonic() + (seconds or 0)
    check()
    while seconds is not None and time.monotonic() < end:
        check()
    return count


def brief_atheris_run(target: str, work: Path, seconds: float = 2) -> subprocess.CompletedProcess:
    """A short atheris run in a subprocess (what the default test run does)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.run(atheris_command(target, seconds=seconds, runs=None, work=work),
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
