"""Fuzz one target: ``python -m fuzz TARGET [--time SECONDS]`` (see fuzz/README.md).

atheris (coverage-guided, libFuzzer) when it is installed, else hypothesis. Exit status 0
when nothing was found; on a finding the input is saved under the work folder (atheris) or
printed (hypothesis) and the status is non-zero.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import runner

TARGET_NAMES = ("inspect", "decrypt", "reader", "keyfile", "x25519", "keyring", "manifest", "safetensors")


def _arguments(argv):
    parser = argparse.ArgumentParser(prog="python -m fuzz", description=__doc__.split("\n")[0])
    parser.add_argument("target", choices=TARGET_NAMES + ("all",))
    parser.add_argument("--time", type=float, default=60, help="seconds to fuzz (default 60)")
    parser.add_argument("--runs", type=int, help="stop after this many inputs (atheris)")
    parser.add_argument("--engine", choices=("auto", "atheris", "hypothesis"), default="auto")
    parser.add_argument("--work-dir", type=Path, default=runner.FUZZ_DIR / "work",
                        help="new corpus inputs and findings go to WORK_DIR/TARGET (default fuzz/work)")
    parser.add_argument("--strict", action="store_true", help="tolerate no known defect")
    parser.add_argument("--replay", action="store_true",
                        help="only run the seed corpus (and fuzz/known with --strict) once")
    parser.epilog = "Arguments after -- go to libFuzzer (atheris), e.g. -- -jobs=2 -dict=FILE."
    extra = []
    if "--" in argv:
        argv, extra = argv[:argv.index("--")], argv[argv.index("--") + 1:]
    args = parser.parse_args(argv)
    args.libfuzzer_args = extra
    return args


def main(argv=None) -> int:
    args = _arguments(list(sys.argv[1:] if argv is None else argv))
    names = TARGET_NAMES if args.target == "all" else (args.target,)
    if args.replay:
        for name in names:
            paths = runner.corpus_files(name) + (runner.corpus_files(name, runner.KNOWN) if args.strict else [])
            print(f"{name}: {runner.replay(name, paths, strict=args.strict)} inputs, no finding")
        return 0
    engine = args.engine
    if engine == "auto":
        engine = "atheris" if runner.have_atheris() else "hypothesis"
    if engine == "atheris":
        if len(names) != 1:
            raise SystemExit("atheris fuzzes one target per process: name one target")
        work = args.work_dir if args.work_dir.name == names[0] else args.work_dir / names[0]
        runner.run_atheris(names[0], seconds=args.time, runs=args.runs, work=work,
                           strict=args.strict, extra=args.libfuzzer_args)
        return 0
    for name in names:
        count = runner.run_hypothesis(name, seconds=args.time, max_examples=200, strict=args.strict)
        print(f"{name}: {count} inputs (hypothesis), no finding")
    return 0


if __name__ == "__main__":
    sys.exit(main())
