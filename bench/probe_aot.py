"""Feasibility probe (bench only, nothing under src/ changes): can numba.pycc's ahead-of-time compilation
remove the per-process start-up cost of the allocation kernels (``import numba`` plus the first call of a
cached kernel, and numba's resident memory)?

    .venv/bin/python bench/probe_aot.py                 # ~2 min on 2 cores -> bench/out/probe_aot.json
    .venv/bin/python bench/probe_aot.py --repeats 5 --cases 8

What it does, in order:

1. records the Python-facing kernels' real inputs: the allocation solver (JIT, as today) on benchmark cases
   of tests/allocation_cases.py with K = 20 and 100, every entry point wrapped by a recorder that keeps a
   deep copy of some calls' arguments (aliasing kept: ``best_over_shares`` passes one array twice); plus
   random threshold inputs with zeros (division by zero, inf, NaN);
2. builds, each in a fresh process, extension modules with ``numba.pycc.CC`` exporting the ``.py_func`` of
   all 11 entry points (their ``@jit`` / ``@inline`` callees are compiled through their own dispatchers and
   linked in): ``generic`` (pycc's default target CPU) with a cold numba cache (``NUMBA_CACHE_DIR`` set to an
   empty folder, as on a fresh clone) and again warm, ``host`` (``cc.target_cpu = 'host'``), and a small
   ``control`` module built with pycc's own flags;
3. pycc's ``ModuleCompiler._cull_exports`` makes its own ``Flags()`` (error_model "python", GIL held); the
   builds swap ``numba.pycc.compiler.Flags`` for a subclass carrying the project's options (read from a
   kernel dispatcher's ``targetoptions``: ``error_model="numpy"``, ``nogil`` -> ``release_gil``), for the
   duration of the build only, and the probe checks that it took: ``ratio(1, 0)`` gives inf (control: raises
   ZeroDivisionError), and a Python thread keeps running while an exported loop runs (control: it stops);
4. replays every recorded call through the JIT dispatcher and each AOT module on separate deep copies and
   compares the returned values and every argument array afterwards byte for byte;
5. times fresh processes (process_time, peak RSS from getrusage), ``--repeats`` each, alternating:
   numpy baseline; ``import numba`` + kernel modules + first calls (cache warm); AOT import + first calls
   with numba never imported (asserted); for three kernels and for all 11;
6. times each kernel per call, JIT dispatcher against both AOT modules, interleaved in one process, on the
   recorded K = 20 and K = 100 inputs;
7. checks what the .so needs at run time (ldd, undefined symbols), imports it in a Python where numba is
   blocked (``sys.modules['numba'] = None``) and in one where it is not installed (``--bare-python``,
   default: the base interpreter if it lacks numba), and what the wrapper does with wrongly typed arguments
   (each in its own process: some crash).

Prints one table and writes bench/out/probe_aot.json; build products go to bench/out/aot/ (gitignored).

Written against the kernels of main 3a23cd2, where it was run (bench/README.md, "What numba costs per
process"). Since 9f5134c the optimized policies' search calls several of these kernels inside its own
compiled loop, so they are no longer all called from Python: to reproduce, run it in a worktree at 3a23cd2
(``git worktree add /tmp/aot 3a23cd2``).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import pickle
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
AOT_DIR = OUT / "aot"
START_CALLS = AOT_DIR / "start_calls.pkl"
MODULES = {"generic": "spfl_aot_generic", "host": "spfl_aot_host"}
CONTROL = "spfl_aot_control"

# export name -> (module, attribute) of the dispatcher the solver calls from Python
KERNELS = {
    "thresholds": ("spfl.simulator.channel", "_thresholds"),
    "prepare": ("spfl.simulator.allocation.packet", "_prepare"),
    "packet_best": ("spfl.simulator.allocation.packet", "_best"),
    "fixed_values": ("spfl.simulator.allocation.level_kernels", "fixed_values"),
    "zoom_values": ("spfl.simulator.allocation.level_kernels", "zoom_values"),
    "split": ("spfl.simulator.allocation.level_kernels", "split"),
    "best_choices": ("spfl.simulator.allocation.bandwidth", "_best_choices"),
    "descent_all": ("spfl.simulator.allocation.evaluation_kernels", "descent_all"),
    "descent_received": ("spfl.simulator.allocation.evaluation_kernels", "descent_received"),
    "jensen_all": ("spfl.simulator.allocation.evaluation_kernels", "jensen_all"),
    "jensen_received": ("spfl.simulator.allocation.evaluation_kernels", "jensen_received"),
}
START_KERNELS = ("thresholds", "descent_received", "best_choices")
SPIN = 60_000_000   # iterations of the GIL test's loop (~0.2-0.5 s)


def signatures():
    """The exported signatures: C-contiguous float64 arrays as the call sites make them (np.ascontiguousarray,
    np.empty, np.stack), Python bools and ints, the link as a tuple of 10 floats."""
    from numba import types as t

    f8, b1, i8 = t.float64, t.boolean, t.int64
    a1, a2, a3 = f8[::1], f8[:, ::1], f8[:, :, ::1]
    link = t.UniTuple(f8, 10)
    return {
        "thresholds": t.void(a1, a1, a1, a1, a1, f8, b1, f8, a1),
        "prepare": t.void(a1, a1, a1, a1, a1, a1, t.int8[::1], a2, a2, a2, a1),
        "packet_best": t.void(a2, a2, a1, a1, a1, a1, a1, a1, t.int8[::1], a2, a2, a2, a1, i8, a2, a2),
        "fixed_values": t.void(a2, a2, a3, a3, a3),
        "zoom_values": t.void(a2, f8, a1, a2, a2, a1, link, a1, b1, f8, a3, a3, a3, a3, a3),
        "split": t.void(a2, a2, a2, a1, link, a1, b1, f8, i8, a2, a2, a2, a2),
        "best_choices": t.Tuple((t.intp[:, ::1], b1))(a3, i8),
        "descent_all": t.Tuple((a1, a2, a2))(a2, a2, a2, a3, f8, f8, b1),
        "descent_received": t.Tuple((a1, a2, a2))(a2, a2, a2, a3, f8, f8, a2, a3, b1),
        "jensen_all": a1(a2, a2, a1, a1),
        "jensen_received": t.Tuple((a1, a2, a2))(a2, a2, a2, a1, a1, a2, a3, b1, b1),
    }


# --- test functions exported next to the kernels (flags check) -------------------------------------------

def ratio(a, b):
    return a / b


def spin(n):
    x = 0.0
    for i in range(n):
        x = x * 0.999999 + 1.0 / (i + 1.0)
    return x


def dispatcher(name):
    import importlib

    module, attr = KERNELS[name]
    return getattr(importlib.import_module(module), attr)


def load_aot(name):
    import importlib

    if str(AOT_DIR) not in sys.path:
        sys.path.insert(0, str(AOT_DIR))
    return importlib.import_module(name)


def rss_mb() -> float:
    """Peak RSS of this process (VmHWM: getrusage's ru_maxrss of a child started from a large parent reports
    the parent's peak, Linux carrying it over the exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# --- the build ---------------------------------------------------------------------------------------------

@contextlib.contextmanager
def project_flags(options: dict):
    """pycc's _cull_exports builds ``Flags()`` from the name it imported into numba.pycc.compiler; for the build
    only, that name is a subclass setting the project's error model and GIL release."""
    import numba.pycc.compiler as pycc_compiler

    original = pycc_compiler.Flags

    class ProjectFlags(original):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.error_model = options["error_model"]
            self.release_gil = bool(options["nogil"])

    pycc_compiler.Flags = ProjectFlags
    try:
        yield ProjectFlags
    finally:
        pycc_compiler.Flags = original


def build_child(name: str, cpu: str, patched: bool, kernels: bool) -> dict:
    """Runs in its own process: builds one module into AOT_DIR, returns what it saw."""
    import warnings

    start_cpu, start_wall = time.process_time(), time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from numba.pycc import CC
    import numba

    cc = CC(name)
    cc.output_dir = str(AOT_DIR)
    cc.target_cpu = cpu
    cc.export("ratio", "f8(f8, f8)")(ratio)
    cc.export("spin", "f8(i8)")(spin)
    options = dispatcher("thresholds").targetoptions
    if kernels:
        sigs = signatures()
        for export in KERNELS:
            disp = dispatcher(export)
            assert disp.targetoptions == options, (export, disp.targetoptions)
            cc.export(export, sigs[export])(disp.py_func)
    flags = {}
    with (project_flags(options) if patched else contextlib.nullcontext()) as flag_class:
        import numba.pycc.compiler as pycc_compiler

        made = pycc_compiler.Flags()
        flags = {"error_model": made.error_model, "release_gil": made.release_gil, "class": type(made).__name__}
        with warnings.catch_warnings(record=True) as caught_build:
            warnings.simplefilter("always")
            cc.compile()
    assert flag_class is None or pycc_compiler.Flags is not flag_class   # restored
    so = AOT_DIR / cc.output_file
    return {"module": name, "target_cpu": cpu or "(pycc default: generic)", "patched_flags": patched,
            "flags_seen_by_cull_exports": flags, "jit_targetoptions": {k: str(v) for k, v in options.items()},
            "numba": numba.__version__, "cpu_s": time.process_time() - start_cpu,
            "wall_s": time.perf_counter() - start_wall, "so": str(so.relative_to(ROOT)),
            "so_bytes": so.stat().st_size,
            "warnings": sorted({f"{w.category.__name__}: {str(w.message).splitlines()[0]}"
                                for w in caught + caught_build})}


def build(name: str, cpu: str, patched: bool = True, kernels: bool = True, cold: bool = False) -> dict:
    """build_child in a fresh process; its CPU includes the compiler (gcc) processes."""
    env = dict(os.environ)
    tmp = None
    if cold:
        tmp = tempfile.mkdtemp(prefix="probe-aot-numba-cache-")
        env["NUMBA_CACHE_DIR"] = tmp
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "--child", "build", name, cpu or "-", str(int(patched)),
                           str(int(kernels))], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if tmp:
        shutil.rmtree(tmp, ignore_errors=True)
    if done.returncode:
        raise RuntimeError(f"build {name} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result.update(numba_cache="cold (empty NUMBA_CACHE_DIR)" if cold else "warm", process_wall_s=wall,
                  process_tree_cpu_s=(after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime))
    return result


# --- recording the solver's inputs ----------------------------------------------------------------------------

def record(cases: int, keep: int):
    """Runs the solver (JIT) on benchmark cases of K = 20 and 100; returns {kernel: [(K, args), ...]}."""
    import importlib

    sys.path.insert(0, str(ROOT / "tests"))
    from allocation_cases import SIZES, benchmark_case
    from spfl.simulator.allocation import allocate

    calls = {name: [] for name in KERNELS}
    current = {"K": 0, "seen": {}, "kept": {}}
    keep_at = {0, 1, 3, 7, 15, 31, 63, 127, 255, 511, 1023, 2047}   # spread over each case's calls
    originals = {}
    for name, (module, attr) in KERNELS.items():
        mod = importlib.import_module(module)
        originals[name] = (mod, attr, getattr(mod, attr))

        def recorder(*args, _name=name, _jit=originals[name][2]):
            seen = current["seen"].get(_name, 0)
            current["seen"][_name] = seen + 1
            take = (seen in keep_at and current["kept"].get(_name, 0) < keep
                    and sum(k == current["K"] for k, _ in calls[_name]) < 4 * keep)
            snapshot = copy.deepcopy(args) if take else None   # before the call: outputs are written in place
            result = _jit(*args)
            if take:
                current["kept"][_name] = current["kept"].get(_name, 0) + 1
                calls[_name].append((current["K"], snapshot))
            return result

        setattr(mod, attr, recorder)
    # at least ``cases`` cases, more (up to 6x) until every kernel has calls at both K
    indices = [i for i in range(17 * 6 * cases) if SIZES[i % len(SIZES)] in (20, 100)][:6 * cases]
    solved = []
    try:
        for index in indices:
            covered = all({20, 100} <= {k for k, _ in recorded} for recorded in calls.values())
            if len(solved) >= cases and covered:
                break
            current["K"], current["seen"], current["kept"] = SIZES[index % len(SIZES)], {}, {}
            problem, policy = benchmark_case(index)
            assert problem.num_devices == current["K"]
            start = time.perf_counter()
            allocate(problem, policy)
            solved.append({"case": index, "K": problem.num_devices, "policy": policy,
                           "fading": problem.fading, "normalize": problem.normalize,
                           "descent": problem.descent is not None, "s": time.perf_counter() - start})
    finally:
        for mod, attr, original in originals.values():
            setattr(mod, attr, original)
    # random link inputs with zeros: a division by zero in the kernel (gain 0), inf and NaN
    rng = np.random.default_rng(7)
    for num in (20, 100):
        for outage in (True, False):
            values = [rng.uniform(0.0, 2.0, num) * np.where(rng.random(num) < 0.2, 0.0, 1.0) for _ in range(5)]
            values[0] *= 1e6
            values[3] *= 1e4
            values[2][:3] = [0.0, np.inf, np.nan]
            calls["thresholds"].append((num, (*values, 4e-21, outage, 3.0, np.empty(num))))
    return calls, solved


def same_bits(x, y) -> bool:
    if isinstance(x, (tuple, list)):
        return type(x) is type(y) and len(x) == len(y) and all(same_bits(a, b) for a, b in zip(x, y))
    if isinstance(x, np.ndarray):
        return (isinstance(y, np.ndarray) and x.dtype == y.dtype and x.shape == y.shape
                and x.tobytes() == y.tobytes())
    if isinstance(x, float):
        return isinstance(y, float) and np.float64(x).tobytes() == np.float64(y).tobytes()
    return type(x) is type(y) and x == y


def type_check(calls: dict) -> dict:
    """Every recorded call's numba types against the export's signature (readonly-ness aside), and the
    signatures the JIT dispatchers compiled."""
    import numba

    sigs = signatures()
    report = {}
    for name, recorded in calls.items():
        wanted = sigs[name].args
        mismatches = set()
        for _, args in recorded:
            for position, (arg, want) in enumerate(zip(args, wanted)):
                got = numba.typeof(arg)
                if isinstance(got, numba.types.Array) and not got.mutable:
                    got = got.copy(readonly=False)
                if got != want:
                    mismatches.add(f"arg {position}: {got} (exported {want})")
        report[name] = {"jit_signatures": [str(s) for s in dispatcher(name).signatures],
                        "mismatches": sorted(mismatches)}
    return report


def verify(calls: dict, modules: dict) -> dict:
    result = {}
    for name, recorded in calls.items():
        jit = dispatcher(name)
        row = {"calls": len(recorded), "K": sorted({k for k, _ in recorded})}
        for label, module in modules.items():
            aot = getattr(module, name)
            identical = 0
            for _, args in recorded:
                a, b = copy.deepcopy(args), copy.deepcopy(args)
                out_jit, out_aot = jit(*a), aot(*b)
                identical += same_bits((out_jit, a), (out_aot, b))
            row[label] = f"{identical}/{len(recorded)}"
            row[f"{label}_identical"] = identical == len(recorded) and len(recorded) > 0
        result[name] = row
    return result


# --- flags check ----------------------------------------------------------------------------------------------

def python_thread_share(function, n) -> float:
    """How fast a pure-Python thread counts while ``function(n)`` runs, relative to while the main thread
    sleeps: about 0 when the call holds the GIL, about 1 (one free core) or 0.5 when it releases it."""
    count, stop = [0], [False]

    def counter():
        while not stop[0]:
            count[0] += 1

    thread = threading.Thread(target=counter)
    thread.start()
    time.sleep(0.05)
    c0, t0 = count[0], time.perf_counter()
    time.sleep(0.2)
    idle_rate = (count[0] - c0) / (time.perf_counter() - t0)
    c0, t0 = count[0], time.perf_counter()
    function(n)
    busy_rate = (count[0] - c0) / (time.perf_counter() - t0)
    stop[0] = True
    thread.join()
    return busy_rate / idle_rate


def overlap(function, n) -> float:
    """Wall time of two threads calling function(n) at once over one call: ~1 when they run in parallel
    (with a free core), ~2 when serialized; needs an idle second core (under other load the nogil JIT reads
    ~2 as well: python_thread_share is the discriminating check)."""
    start = time.perf_counter()
    function(n)
    single = time.perf_counter() - start
    threads = [threading.Thread(target=function, args=(n,)) for _ in range(2)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return (time.perf_counter() - start) / single


def check_flags(modules: dict) -> dict:
    import numba

    spin_jit = numba.njit(nogil=True, error_model="numpy")(spin)
    ratio_jit = numba.njit(nogil=True, error_model="numpy")(ratio)
    spin_jit(10), ratio_jit(1.0, 1.0)
    report = {}
    for label, module in {"jit (nogil, numpy)": None, **modules}.items():
        r = ratio_jit if module is None else module.ratio
        s = spin_jit if module is None else module.spin
        try:
            outcome = repr(r(1.0, 0.0))
        except ZeroDivisionError as error:
            outcome = f"ZeroDivisionError: {error}"
        report[label] = {"ratio(1, 0)": outcome, "ratio(0, 0)": repr(_safe(r, 0.0, 0.0)),
                         "python_thread_share_during_call": round(statistics.median(
                             python_thread_share(s, SPIN) for _ in range(3)), 3),
                         "two_threads_wall_over_one": round(statistics.median(overlap(s, SPIN) for _ in range(3)), 2)}
    return report


def _safe(function, *args):
    try:
        return function(*args)
    except ZeroDivisionError as error:
        return f"ZeroDivisionError: {error}"


# --- fresh-process start ----------------------------------------------------------------------------------

def start_child(kind: str, which: str) -> dict:
    """Runs in a fresh process. kind: base (numpy + inputs), jit, aot-<label>."""
    with open(START_CALLS, "rb") as handle:
        stored = pickle.load(handle)
    names = [name for name in (START_KERNELS if which == "three" else KERNELS) if name in stored["args"]]
    result = {"kind": kind, "kernels": which}
    arguments = {name: copy.deepcopy(stored["args"][name]) for name in names}
    t0 = time.process_time()
    if kind == "base":
        pass
    elif kind == "jit":
        import numba  # noqa: F401

        result["import_numba_s"] = time.process_time() - t0
        functions = {name: dispatcher(name) for name in names}
        result["import_kernel_modules_s"] = time.process_time() - t0 - result["import_numba_s"]
    else:
        t = time.process_time()
        module = load_aot(MODULES[kind.split("-", 1)[1]])
        result["import_aot_s"] = time.process_time() - t
        functions = {name: getattr(module, name) for name in names}
    first = {}
    if kind != "base":
        t1 = time.process_time()
        for name in names:
            t = time.process_time()
            functions[name](*arguments[name])
            first[name] = time.process_time() - t
        result["first_calls_s"] = time.process_time() - t1
        result["first_call_each_s"] = first
        result["numba_in_sys_modules"] = "numba" in sys.modules
        result["llvmlite_in_sys_modules"] = "llvmlite" in sys.modules
        if kind.startswith("aot"):
            assert "numba" not in sys.modules and "llvmlite" not in sys.modules, "the AOT path imported numba"
    result["total_s"] = time.process_time() - t0
    result["peak_rss_mb"] = rss_mb()
    return result


def run_child(*args, python=None, env=None) -> dict:
    done = subprocess.run([python or sys.executable, __file__, "--child", *args], capture_output=True, text=True,
                          env=env)
    if done.returncode:
        raise RuntimeError(f"child {args} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def start_times(repeats: int) -> dict:
    kinds = ["base", "jit", "aot-generic", "aot-host"]
    for which in ("three", "all"):          # warm numba's cache (and the page cache) once, untimed
        run_child("start", "jit", which)
    samples = {(kind, which): [] for kind in kinds for which in ("three", "all")}
    for repeat in range(repeats):
        order = kinds if repeat % 2 == 0 else kinds[::-1]
        for which in ("three", "all"):
            for kind in order:
                samples[(kind, which)].append(run_child("start", kind, which))
    summary = {}
    for (kind, which), rows in samples.items():
        keys = [k for k in rows[0] if isinstance(rows[0][k], float)]
        entry = {k: statistics.median(r[k] for r in rows) for k in keys}
        if "first_call_each_s" in rows[0]:
            entry["first_call_each_s"] = {n: statistics.median(r["first_call_each_s"][n] for r in rows)
                                          for n in rows[0]["first_call_each_s"]}
        entry["repeats"] = len(rows)
        entry["total_s_all"] = [round(r["total_s"], 4) for r in rows]
        summary[f"{kind}/{which}"] = entry
    return summary


# --- per-call time -----------------------------------------------------------------------------------------

def per_call(calls: dict, modules: dict, repeats: int) -> dict:
    """Median process time per call of each kernel, JIT dispatcher vs each AOT module, interleaved."""
    result = {}
    for name, recorded in calls.items():
        jit = dispatcher(name)
        for num in (20, 100):
            pool = [args for k, args in recorded if k == num]
            if not pool:
                continue
            sizes = [sum(a.size for a in args if isinstance(a, np.ndarray)) for args in pool]
            args = pool[int(np.argsort(sizes)[len(sizes) // 2])]
            impls = {"jit": jit, **{label: getattr(m, name) for label, m in modules.items()}}
            copies = {label: copy.deepcopy(args) for label in impls}
            for label, f in impls.items():
                f(*copies[label])
            t = time.process_time()
            loops = 0
            while time.process_time() - t < 0.01 or loops < 3:
                jit(*copies["jit"])
                loops += 1
            block = max(3, int(loops * 0.01 / max(time.process_time() - t, 1e-9)))
            times = {label: [] for label in impls}
            for repeat in range(repeats):
                labels = list(impls) if repeat % 2 == 0 else list(impls)[::-1]
                for label in labels:
                    f, a = impls[label], copies[label]
                    t = time.process_time()
                    for _ in range(block):
                        f(*a)
                    times[label].append((time.process_time() - t) / block)
            row = {label: statistics.median(v) * 1e6 for label, v in times.items()}
            for label in modules:
                row[f"{label}/jit"] = row[label] / row["jit"]
            row["block"] = block
            result[f"{name} K={num}"] = row
    return result


# --- run-time dependencies and robustness ------------------------------------------------------------------

def so_facts(path: Path) -> dict:
    facts = {}
    for label, command in {"ldd": ["ldd", str(path)], "undefined": ["nm", "-D", "--undefined-only", str(path)],
                           "objdump": ["objdump", "-d", "--no-show-raw-insn", str(path)],
                           "symbols": ["nm", str(path)]}.items():
        try:
            text = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        except (OSError, subprocess.CalledProcessError) as error:
            facts[label] = f"unavailable: {error}"
            continue
        if label == "ldd":
            facts["ldd"] = [line.split()[0] for line in text.splitlines() if line.strip()]
        elif label == "undefined":
            names = [line.split()[-1] for line in text.splitlines() if line.strip()]
            facts["undefined_non_python"] = sorted(n for n in names if not n.startswith(("Py", "_Py")))
            facts["undefined_python_count"] = sum(n.startswith(("Py", "_Py")) for n in names)
        elif label == "objdump":
            facts["instructions_using_ymm"] = text.count("%ymm")
            facts["instructions_using_zmm"] = text.count("%zmm")
        else:
            names = [line.split()[-1] for line in text.splitlines() if " t " in line or " T " in line]
            facts["functions_named_inline_helpers"] = sorted(
                n for n in names if "level_kernels" in n and ("_best_share" in n or "_entry" in n))
            facts["functions_named_threshold_kernel"] = len([n for n in names if "threshold_kernel" in n])
    return facts


BAD_INPUTS = ("float32", "int64", "strided", "two_d", "list", "ok")


def bad_input_child(case: str) -> dict:
    """Runs in a fresh process: the generic module's thresholds on a wrongly typed input."""
    module = load_aot(MODULES["generic"])
    rng = np.random.default_rng(0)
    values = [rng.random(6) + 0.5 for _ in range(5)]
    reference = np.empty(6)
    module.thresholds(*values, 1e-20, True, 1.0, reference)
    args = {"float32": [v.astype(np.float32) for v in values], "int64": [(v * 10).astype(np.int64) for v in values],
            "strided": [np.repeat(v, 2)[::2] for v in values], "two_d": [v.reshape(2, 3) for v in values],
            "list": [list(v) for v in values], "ok": values}[case]
    out = np.empty(6)
    try:
        module.thresholds(*args, 1e-20, True, 1.0, out)
    except Exception as error:   # noqa: BLE001 - reporting what happens
        return {"outcome": f"raised {type(error).__name__}: {error}"}
    return {"outcome": "ran, same result as float64 C-contiguous" if np.array_equal(out, reference)
            else "ran, silently different result"}


def bad_inputs() -> dict:
    report = {}
    for case in BAD_INPUTS:
        done = subprocess.run([sys.executable, __file__, "--child", "bad", case], capture_output=True, text=True)
        if done.returncode:
            report[case] = f"process died (exit {done.returncode}{', SIGSEGV' if done.returncode == -11 else ''})"
        else:
            report[case] = json.loads(done.stdout.strip().splitlines()[-1])["outcome"]
    return report


def isolated_child(block: bool) -> dict:
    """Runs in a fresh process (maybe a Python without numba): every AOT kernel on the stored start inputs,
    against the JIT's stored outputs."""
    if block:
        sys.modules["numba"] = None
    with open(START_CALLS, "rb") as handle:
        stored = pickle.load(handle)
    result = {"python": sys.executable, "numpy": np.__version__}
    try:
        import numba  # noqa: F401

        result["numba_importable"] = True
    except ImportError:
        result["numba_importable"] = False
    for label, name in MODULES.items():
        module = load_aot(name)
        same = 0
        for kernel, args in stored["args"].items():
            args = copy.deepcopy(args)
            out = getattr(module, kernel)(*args)
            same += same_bits((stored["outputs"][kernel], stored["args_after"][kernel]), (out, args))
        result[label] = f"{same}/{len(stored['args'])} identical to the JIT"
    result["numba_in_sys_modules"] = sys.modules.get("numba") is not None
    return result


def bare_python(requested: str | None) -> str | None:
    candidate = requested or shutil.which("python3")
    if not candidate:
        return None
    probe = subprocess.run([candidate, "-I", "-c", "import sys, numpy; print(sys.version_info[:2])"],
                           capture_output=True, text=True)
    if probe.returncode or probe.stdout.strip() != str(tuple(sys.version_info[:2])):
        return None
    has_numba = subprocess.run([candidate, "-I", "-c", "import numba"], capture_output=True).returncode == 0
    return None if has_numba else candidate


# --- main ----------------------------------------------------------------------------------------------------

def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="fresh processes per start measurement")
    parser.add_argument("--call-repeats", type=int, default=21, help="interleaved blocks per per-call timing")
    parser.add_argument("--cases", type=int, default=12, help="benchmark cases (K = 20 and 100) recorded")
    parser.add_argument("--keep", type=int, default=6, help="recorded calls kept per kernel per case (at most)")
    parser.add_argument("--bare-python", default=None, help="a Python with numpy but no numba (default: python3)")
    parser.add_argument("--skip-build", action="store_true", help="reuse the modules in bench/out/aot")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        kind, *rest = options.child
        if kind == "build":
            name, cpu, patched, kernels = rest
            result = build_child(name, "" if cpu == "-" else cpu, patched == "1", kernels == "1")
        elif kind == "start":
            result = start_child(*rest)
        elif kind == "bad":
            result = bad_input_child(*rest)
        elif kind == "isolated":
            result = isolated_child(rest[0] == "block")
        print(json.dumps(result))
        return

    AOT_DIR.mkdir(parents=True, exist_ok=True)
    import llvmlite.binding as llvm
    import numba

    report = {"load_before": Path("/proc/loadavg").read_text().split()[:3], "machine": os.uname().machine,
              "cpu_count": os.cpu_count(), "numba": numba.__version__, "llvm_host_cpu": llvm.get_host_cpu_name(),
              "numba_jit_cpu_name": numba.config.CPU_NAME or "(host)",
              "numba_jit_cpu_features": numba.config.CPU_FEATURES or "(host)"}
    print("recording the solver's kernel inputs ...", flush=True)
    calls, solved = record(options.cases, options.keep)
    report["cases"] = solved
    report["recorded_calls"] = {name: len(v) for name, v in calls.items()}
    report["type_check"] = type_check(calls)

    # one K = 20 call per kernel (the largest K present otherwise) for the fresh-process runs
    stored = {"args": {}, "outputs": {}, "args_after": {}}
    for name, recorded in calls.items():
        pool = [args for k, args in recorded if k == 20] or [args for _, args in recorded]
        if pool:
            args = pool[len(pool) // 2]
            stored["args"][name] = args
            after = copy.deepcopy(args)
            stored["outputs"][name] = dispatcher(name)(*after)
            stored["args_after"][name] = after
    with open(START_CALLS, "wb") as handle:
        pickle.dump(stored, handle)

    if not options.skip_build:
        print("building (fresh processes) ...", flush=True)
        report["builds"] = [build(CONTROL, "", patched=False, kernels=False),
                            build(MODULES["generic"], "", cold=True),
                            build(MODULES["generic"], ""),
                            build(MODULES["host"], "host")]
    modules = {label: load_aot(name) for label, name in MODULES.items()}
    control = load_aot(CONTROL)

    print("flags, bit identity, run-time dependencies ...", flush=True)
    report["flags"] = check_flags({"aot generic (patched flags)": modules["generic"],
                                   "aot host (patched flags)": modules["host"],
                                   "aot control (pycc's Flags)": control})
    report["bit_identity"] = verify(calls, modules)
    report["so"] = {label: so_facts(Path(m.__file__)) for label, m in modules.items()}
    report["numba_blocked"] = run_child("isolated", "block")
    bare = bare_python(options.bare_python)
    report["no_numba_python"] = run_child("isolated", "free", python=bare) if bare else "no such Python found"
    report["bad_inputs"] = bad_inputs()

    print("fresh-process start ...", flush=True)
    report["load_start_measurements"] = Path("/proc/loadavg").read_text().split()[:3]
    report["start"] = start_times(options.repeats)
    print("per-call times ...", flush=True)
    report["per_call_us"] = per_call(calls, modules, options.call_repeats)
    report["load_after"] = Path("/proc/loadavg").read_text().split()[:3]
    (OUT / "probe_aot.json").write_text(json.dumps(report, indent=1, default=str))
    print_table(report)


def print_table(report: dict):
    print(f"\nload average before {report['load_before']}, at start timing {report['load_start_measurements']}, "
          f"after {report['load_after']}")
    for b in report.get("builds", []):
        print(f"build {b['module']:18} cpu={b['target_cpu']:24} cache={b['numba_cache']:30} "
              f"wall {b['process_wall_s']:6.1f} s  CPU (with gcc) {b['process_tree_cpu_s']:6.1f} s  "
              f"{b['so_bytes'] / 1e6:.2f} MB  flags {b['flags_seen_by_cull_exports']}")
    start = report["start"]
    base = start["base/three"]
    print(f"\nfresh process (median of {base['repeats']}), CPU s after numpy + inputs; peak RSS "
          f"(baseline numpy + inputs: {base['peak_rss_mb']:.0f} MB)")
    for which in ("three", "all"):
        for kind in ("jit", "aot-generic", "aot-host"):
            e = start[f"{kind}/{which}"]
            imp = e.get("import_numba_s", 0.0) + e.get("import_kernel_modules_s", 0.0) + e.get("import_aot_s", 0.0)
            print(f"  {kind:12} {which:5} kernels: import {imp:6.3f}  first calls {e['first_calls_s']:6.3f}  "
                  f"total {e['total_s']:6.3f} s   RSS +{e['peak_rss_mb'] - base['peak_rss_mb']:5.0f} MB")
    print("\nbit identity with the JIT (recorded calls):")
    for name, row in report["bit_identity"].items():
        print(f"  {name:17} K {row['K']}: generic {row['generic']}, host {row['host']}")
    print("\nper call, us (median; AOT / JIT):")
    for key, row in report["per_call_us"].items():
        print(f"  {key:24} jit {row['jit']:9.1f}  generic {row['generic']:9.1f} ({row['generic/jit']:.2f})  "
              f"host {row['host']:9.1f} ({row['host/jit']:.2f})")
    print("\nflags:")
    for label, row in report["flags"].items():
        print(f"  {label:30} {row}")
    print(f"\nnumba blocked: {report['numba_blocked']}\nno numba installed: {report['no_numba_python']}")
    print(f"wrong inputs to the AOT wrapper: {report['bad_inputs']}")


if __name__ == "__main__":
    main()
