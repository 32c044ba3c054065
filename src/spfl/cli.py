"""The one command line: `spfl run`, `prepare`, `calibrate`, `schema` (the simulator), `config check` /
`config schemas` (the pipeline's configuration) and `generate` (the files derived from the registries).

Every error a user can cause is reported as one line naming the key or file, before any work.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import logging
import sys
from pathlib import Path

from spfl import __version__

MAX_MESSAGE = 2000  # characters of an error line; the messages bound what they quote, this is the backstop


class LogError(OSError):
    """The --log file could not be written (full disk, ...): the run stops, one line naming the file."""

    def __str__(self) -> str:
        return str(self.strerror)


class _LogFile(logging.FileHandler):
    """A log file whose write failure stops the run with one line, instead of logging's default: a traceback
    on stderr for every line and a run that goes on (and exits 0) with an empty or cut log."""

    def handleError(self, record: logging.LogRecord) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):
            hint = "; free some space and run again" if exc.errno == errno.ENOSPC else ""
            raise LogError(exc.errno, f"cannot write the log '{self.baseFilename}': {exc.strerror or exc}{hint}") \
                from exc
        super().handleError(record)


def _configure_logging(log_file: str | None) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(_LogFile(log_file, mode="w"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", handlers=handlers,
                        force=True)


def _drop_log_file() -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _LogFile):
            root.removeHandler(handler)
            with contextlib.suppress(OSError, ValueError):
                handler.close()


def _close_logging() -> None:
    """Flush and close the log file now, so that a failure to write its end is this command's error."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _LogFile):
            try:
                handler.flush()
            except OSError as exc:
                raise LogError(exc.errno, f"cannot write the log '{handler.baseFilename}': "
                                          f"{exc.strerror or exc}") from exc
            finally:
                root.removeHandler(handler)
                with contextlib.suppress(OSError):
                    handler.close()


def _spec_from_args(args):
    from spfl.configuration.reading import load_spec, parse_assignment

    overrides = {}
    for text in args.set:
        key, value = parse_assignment(text)
        if key in overrides:
            raise ValueError(f"--set {text!r} sets '{key}' a second time: allowed each key once")
        overrides[key] = value
    return load_spec(args.spec, **overrides)


def _methods(text: str | None, spec) -> list[str]:
    from spfl.configuration.methods import METHODS, get_method
    from spfl.configuration.settings import did_you_mean

    if text is None:
        return [spec.method]
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise ValueError(f"--methods {text!r} has an empty method name: allowed a comma-separated list of "
                         f"{', '.join(METHODS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"--methods {text!r} lists a method twice: each method runs once")
    for name in names:
        if name not in METHODS:
            raise ValueError(f"--methods {text!r}: method '{name}' is unknown{did_you_mean(name, METHODS)}: allowed "
                             f"{', '.join(METHODS)}")
    return [get_method(name).name for name in names]


def _pin_threads(threads: int) -> None:
    """The numerical work runs on exactly the spec's thread count, so its numbers never depend on the
    cores a scheduler grants (torch's reductions and BLAS split work by thread count)."""
    import torch

    torch.set_num_threads(threads)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - installed with scikit-learn
        return
    threadpool_limits(limits=threads, user_api="blas")


def cmd_run(args) -> int:
    from spfl.simulator import run_folder

    spec = _spec_from_args(args)
    methods = _methods(args.methods, spec)
    out = Path(args.out)
    keep = [Path(args.spec)] + ([Path(args.log)] if args.log else [])  # may be in --out: not the run's files
    run_folder.check(out, spec, keep=keep, force=args.force)
    if args.log:
        run_folder.check_log(Path(args.log), Path(args.spec), out, spec)
    from spfl.simulator.simulation import (  # after every check: importing torch takes seconds
        build_environment,
        run_cell,
    )

    _pin_threads(spec.threads)
    _configure_logging(args.log)
    if args.threads is not None and spec.threads > args.threads:
        logging.getLogger("spfl").warning(
            "run setting 'threads' = %d is more than --threads %d (the cores granted): the numbers stay those of "
            "%d threads, the run is slower", spec.threads, args.threads, spec.threads)
    env = build_environment(spec)  # reads the data; nothing is written before the folder is claimed
    with run_folder.claim(out, spec, keep=keep, force=args.force):
        summaries = run_cell(spec, methods, out, env=env)
    _close_logging()
    for name, summary in summaries.items():
        accuracy = summary["final_accuracy"]
        shown = "-" if accuracy is None else f"{100 * accuracy:.2f} %"
        print(f"{name}: status {summary['status']}, final accuracy {shown} -> {out / name}")
    return 0


def cmd_prepare(args) -> int:
    from spfl.simulator.data import prepare_dataset

    if args.log and Path(args.log).is_dir():
        raise ValueError(f"--log '{args.log}' is a folder: allowed a file")
    if args.log and Path(args.log).resolve() == Path(args.out).resolve():
        raise ValueError(f"--log '{args.log}' is the prepared file (--out): allowed another file")
    _configure_logging(args.log)
    path = prepare_dataset(args.dataset, args.data_dir, args.out, download=args.download)
    logging.getLogger("spfl").info("prepared %s -> %s", args.dataset, path)
    _close_logging()
    print(path)
    return 0


def cmd_schema(args) -> int:
    from spfl.configuration.settings import json_schema
    from spfl.records import write_atomic

    text = json.dumps(json_schema(), indent=2) + "\n"
    if args.out:
        write_atomic(args.out, text)
    else:
        sys.stdout.write(text)
    return 0


def cmd_calibrate(args) -> int:
    from spfl.simulator.calibration import calibrate_deadline

    spec = _spec_from_args(args)
    result = calibrate_deadline(spec, args.target)
    print(json.dumps(result, indent=2))
    return 0


def cmd_config(args) -> int:
    from spfl.configuration import ConfigError, load_plan, read_config

    if args.action == "schemas":
        from spfl.configuration.pipeline import write_schemas

        if len(args.paths) != 1:
            raise ValueError(f"config schemas takes one folder, got {len(args.paths)} paths")
        for path in write_schemas(args.paths[0]):
            print(path)
        return 0
    try:
        plan = load_plan(read_config(args.paths))
    except ConfigError as exc:
        raise ValueError(f"{', '.join(args.paths)}: {exc}") from None
    runs = plan.all_runs()
    print(f"{', '.join(args.paths)}: config '{plan.config['name']}', {len(plan.experiments)} experiments, "
          f"{len(plan.cells)} cells, {len({(r.cell, r.method) for r in runs})} distinct runs, "
          f"figures: {', '.join(plan.figures)}")
    return 0


def cmd_generate(args) -> int:
    from spfl.configuration.generated import stale_files, write_generated

    root = Path(args.root)
    if not (root / "config" / "README.md").is_file():
        raise ValueError(f"'{root}' is not an spfl checkout (no config/README.md): allowed the repository's root")
    if args.check:
        stale = stale_files(root)
        for path in stale:
            print(f"{path}: out of date; run `spfl generate`", file=sys.stderr)
        return 1 if stale else 0
    for path in write_generated(root):
        print(f"{path}: updated")
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is invalid: allowed an integer >= 1")
    return value


def _methods_epilog() -> str:
    from spfl.configuration.methods import METHOD

    width = max(map(len, METHOD))
    return "methods:\n" + "\n".join(f"  {name:<{width}}  {m.summary}" for name, m in METHOD.items())


def build_parser() -> argparse.ArgumentParser:
    from spfl.configuration.datasets import DATASETS

    parser = argparse.ArgumentParser(prog="spfl", description="Sign-Prioritized Federated Learning simulator")
    parser.add_argument("--version", action="version", version=f"spfl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def spec_args(p):
        p.add_argument("spec", help="run spec file (YAML or JSON)")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override one run setting (repeatable)")

    run = sub.add_parser("run", help="simulate one or more methods on one seed's environment",
                         formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_methods_epilog())
    spec_args(run)
    run.add_argument("--methods", help="comma-separated methods sharing common random numbers "
                     "(default: the spec's method); the methods are listed below")
    run.add_argument("--out", required=True, help="output folder; each method writes OUT/<method>/")
    run.add_argument("--log", help="progress log file (not the spec, the data or a record of the run)")
    run.add_argument("--force", action="store_true", help="write into an --out folder that holds files no run of "
                     "this spec wrote (never into one holding another spec's records)")
    run.add_argument("--threads", type=_positive_int, help="CPU cores granted to this run (a scheduler's "
                     "grant); the numbers use the spec's 'threads' setting, so they never depend on it")
    run.set_defaults(func=cmd_run)

    prepare = sub.add_parser("prepare", help="load a dataset once and save it as one tensor file")
    prepare.add_argument("dataset", help=f"one of {', '.join(DATASETS)}")
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

    config = sub.add_parser("config", help="check pipeline configs (merged in order) and summarize their plan, "
                            "or write their JSON schemas")
    config.add_argument("action", choices=("check", "schemas"), help="check CONFIG...: validate and summarize; "
                        "schemas DIR: write the config, run and grid JSON schemas to DIR")
    config.add_argument("paths", nargs="+", metavar="PATH", help="config files (check) or one folder (schemas)")
    config.set_defaults(func=cmd_config)

    generate = sub.add_parser("generate", help="rewrite the files derived from the settings table and the figure "
                              "catalogue (config/README.md tables, schema figure list, report captions)")
    generate.add_argument("root", nargs="?", default=".", help="the repository's root (default: .)")
    generate.add_argument("--check", action="store_true", help="only name the files that are out of date (exit 1)")
    generate.set_defaults(func=cmd_generate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError) as exc:  # a user's mistake or the machine's state: one line, no traceback
        if isinstance(exc, LogError):  # nothing more goes to a log that cannot be written
            _drop_log_file()
        print(f"spfl {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2


def _one_line(exc: BaseException) -> str:
    from spfl.records import WriteError

    if isinstance(exc, OSError) and not isinstance(exc, (WriteError, LogError)) and exc.strerror:
        where = f" '{exc.filename}'" if exc.filename else ""
        return f"cannot use{where}: {exc.strerror}"
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE - 20] + " ... (message cut)"


if __name__ == "__main__":
    sys.exit(main())
