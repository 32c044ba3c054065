"""Command line: `spfl run`, `spfl prepare`, `spfl schema`, `spfl calibrate`.

Every error a user can cause is reported as one line naming the key or file, before any work.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from spfl import __version__


def _configure_logging(log_file: str | None) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, mode="w"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", handlers=handlers,
                        force=True)


def _spec_from_args(args):
    from spfl.spec import load_spec, parse_assignment

    overrides = dict(parse_assignment(a) for a in args.set)
    return load_spec(args.spec, **overrides)


def cmd_run(args) -> int:
    from spfl.methods import get_method

    spec = _spec_from_args(args)
    methods = args.methods.split(",") if args.methods else [spec.method]
    if len(set(methods)) != len(methods):
        raise ValueError(f"--methods {args.methods!r} lists a method twice: each method runs once")
    for name in methods:
        get_method(name)
    import torch  # after every check: importing torch takes seconds

    from spfl.simulation import run_cell

    torch.set_num_threads(args.threads)
    _configure_logging(args.log)
    summaries = run_cell(spec, methods, args.out)
    for name, summary in summaries.items():
        accuracy = summary["final_accuracy"]
        shown = "-" if accuracy is None else f"{accuracy:.4f}"
        print(f"{name}: status {summary['status']}, final accuracy {shown} -> {Path(args.out) / name}")
    return 0


def cmd_prepare(args) -> int:
    from spfl.data import prepare_dataset

    _configure_logging(args.log)
    path = prepare_dataset(args.dataset, args.data_dir, args.out, download=args.download)
    print(path)
    return 0


def cmd_schema(args) -> int:
    from spfl.records import write_atomic
    from spfl.spec import json_schema

    text = json.dumps(json_schema(), indent=2) + "\n"
    if args.out:
        write_atomic(args.out, text)
    else:
        sys.stdout.write(text)
    return 0


def cmd_calibrate(args) -> int:
    from spfl.calibration import calibrate_deadline

    spec = _spec_from_args(args)
    result = calibrate_deadline(spec, args.target)
    print(json.dumps(result, indent=2))
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is invalid: allowed an integer >= 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spfl", description="Sign-Prioritized Federated Learning simulator")
    parser.add_argument("--version", action="version", version=f"spfl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def spec_args(p):
        p.add_argument("spec", help="run spec file (YAML or JSON)")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override one run setting (repeatable)")

    run = sub.add_parser("run", help="simulate one or more methods on one seed's environment")
    spec_args(run)
    run.add_argument("--methods", help="comma-separated methods sharing common random numbers "
                     "(default: the spec's method)")
    run.add_argument("--out", required=True, help="output folder; each method writes OUT/<method>/")
    run.add_argument("--log", help="progress log file")
    run.add_argument("--threads", type=_positive_int, default=1, help="torch CPU threads (default 1)")
    run.set_defaults(func=cmd_run)

    prepare = sub.add_parser("prepare", help="load a dataset once and save it as one tensor file")
    prepare.add_argument("dataset", help="digits or cifar10")
    prepare.add_argument("--data-dir", default="data", help="folder with raw archives (cifar10)")
    prepare.add_argument("--out", required=True, help="prepared file to write (.pt)")
    prepare.add_argument("--download", action="store_true", help="download CIFAR-10 if missing")
    prepare.add_argument("--log", help="log file")
    prepare.set_defaults(func=cmd_prepare)

    schema = sub.add_parser("schema", help="print the JSON schema of the run settings")
    schema.add_argument("--out", help="write to this file instead of stdout")
    schema.set_defaults(func=cmd_schema)

    calibrate = sub.add_parser("calibrate", help="find the deadline T giving a target uniform packet error")
    spec_args(calibrate)
    calibrate.add_argument("--target", type=float, default=0.3,
                           help="mean packet error under uniform allocation at the spec's budget")
    calibrate.set_defaults(func=cmd_calibrate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"spfl {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
