"""A throwaway single-node SLURM cluster on localhost, for tests that need a real scheduler.

Issue #5 asks for the SLURM profile to be tested against the real thing, not a mock: Debian's
`slurm-wlm` and `munge`, started here and stopped again.  `SlurmCluster` is a context manager that

* writes a private slurm.conf (loopback only, free ports, no cgroups, no accounting database) with every
  state directory, log and PID file under the directory it is given, so two test runs never collide;
* starts its own munged (as user munge, on a private socket and key), slurmctld, then slurmd, each in
  the foreground as a child of this process, and waits until the node is idle;
* on exit, always: cancels the jobs of its own cluster, then stops its daemons by the PIDs it started
  them with (the same PIDs they write into their PID files) -- never by name, so the daemons of a real
  cluster or of another test run on the same machine are left alone.  The daemons also get SIGTERM
  when the thread that started them ends (PR_SET_PDEATHSIG; for pytest, its main thread), so even a
  test run killed with SIGKILL leaves no daemon behind.

Clients find this cluster through `SLURM_CONF` (see `SlurmCluster.env`); the munge socket is named in
slurm.conf (`AuthInfo=socket=...`), so nothing under /etc or /run is touched.  One wrinkle: inside a job,
snakemake-executor-plugin-slurm-jobstep (0.6.1) removes every `SLURM_*` variable but the job's identity
before it calls `srun`, SLURM_CONF included, and srun then finds no configuration ("DNS SRV lookup
failed").  Real sites keep slurm.conf in /etc/slurm; this cluster instead puts a two-line `srun` first on
PATH that sets SLURM_CONF again and runs the real srun.  Facts behind the settings:
/work/shared/SLURM-NOTES.md.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

PARTITION = "debug"  # the partition the committed profile (workflow/profiles/slurm) names
DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "srun", "squeue", "scontrol", "sinfo", "scancel")
# Daemons live in sbin, which a non-root PATH may lack.
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin", "/usr/bin"])

INHERITED_SLURM = ("SLURM_", "SBATCH_", "SRUN_", "SALLOC_")  # client settings of an outer cluster or job
_PR_SET_PDEATHSIG = 1


def missing_requirements() -> list[str]:
    """What this machine lacks to run a cluster; empty when it can.  Names each missing thing."""
    missing = [f"`{name}` not found" for name in (*DAEMONS, *CLIENTS) if shutil.which(name, path=SEARCH_PATH) is None]
    if shutil.which("timeout") is None:
        missing.append("`timeout` (coreutils) not found")
    try:
        pwd.getpwnam("munge")
    except KeyError:
        missing.append("no `munge` user (package munge not installed)")
    if missing:
        missing.append("install them with .ci/install-slurm.sh")
    if os.geteuid() != 0:
        missing.append("not running as root (slurmd must run as root)")
    return missing


def _free_port() -> int:
    """A TCP port free on the loopback right now (tiny race, acceptable for a test)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _real_memory_mb() -> int:
    """RealMemory of the node: total minus 1 GB, so that SLURM never thinks it may use everything."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return max(int(line.split()[1]) // 1024 - 1024, 512)
    raise RuntimeError("no MemTotal in /proc/meminfo")


def _die_with_parent() -> None:
    """preexec_fn: SIGTERM this child when the process that started it dies, however it dies."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class SlurmError(RuntimeError):
    """The cluster did not come up; the message holds the tails of the daemons' logs."""


class SlurmCluster:
    """One slurmctld + one slurmd (+ munged) on 127.0.0.1, state under `root`.  Use as a context manager."""

    def __init__(self, root: Path, start_timeout: float = 60.0, min_job_age: int = 300):
        self.root = Path(root)
        self.start_timeout = start_timeout
        # The plugin's squeue status checks need finished jobs to stay visible: MinJobAge must be at
        # least 3 x slurm-init-seconds-before-status-checks, or it silently falls back to sacct.
        self.min_job_age = min_job_age
        self.node = socket.gethostname().split(".")[0]
        self.conf = self.root / "etc" / "slurm.conf"
        self.bin = self.root / "bin"  # the srun that restores SLURM_CONF (module docstring)
        self.logs = self.root / "log"
        self.jobcomp = self.logs / "jobcomp.txt"
        self.munge_dir: Path | None = None
        self.munge_socket: Path | None = None
        self._processes: dict[str, subprocess.Popen] = {}
        self._pid_files: dict[str, Path] = {}

    # --- public ----------------------------------------------------------------------------------

    @property
    def env(self) -> dict[str, str]:
        """Environment for clients (sbatch, squeue, Snakemake): points them at this cluster only.

        Inherited SLURM variables are dropped: inside an outer SLURM job (SLURM_JOB_ID set) the plugin
        would delete every SLURM_* variable, our SLURM_CONF included, and submit nowhere.
        """
        own = {key: value for key, value in os.environ.items() if not key.startswith(INHERITED_SLURM)}
        return {**own, "SLURM_CONF": str(self.conf), "PATH": os.pathsep.join([str(self.bin), SEARCH_PATH])}

    def __enter__(self) -> SlurmCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def start(self) -> None:
        missing = missing_requirements()
        if missing:
            raise SlurmError("cannot start SLURM: " + "; ".join(missing))
        for sub in ("bin", "etc", "log", "run", "state", "spool"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self._start_munged()
        self._write_conf()
        self._write_srun()
        self._spawn("slurmctld", ["slurmctld", "-D", "-f", str(self.conf)], self.root / "run" / "slurmctld.pid")
        self._wait("slurmctld answers `scontrol ping`", lambda: "is UP" in self._client("scontrol", "ping"))
        self._spawn("slurmd", ["slurmd", "-D", "-f", str(self.conf), "-N", self.node],
                    self.root / "run" / "slurmd.pid")
        self._wait(f"node {self.node} idle in sinfo", self._node_idle)

    def stop(self) -> None:
        """Cancel this cluster's jobs, then stop the daemons this object started, newest first.  Idempotent."""
        if self._processes.get("slurmctld") and self._processes["slurmctld"].poll() is None:
            self._cancel_jobs()
        for name in reversed(list(self._processes)):
            self._terminate(name, self._processes.pop(name))
        if self.munge_dir is not None:
            shutil.rmtree(self.munge_dir, ignore_errors=True)
            self.munge_dir = None

    def run(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
        """Run a SLURM client command (e.g. `squeue`) against this cluster."""
        return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, env=self.env)

    def job_ids(self) -> set[str]:
        """Every job this cluster has seen and still remembers (MinJobAge), finished or not."""
        out = self.run("squeue", "--states=all", "--noheader", "--format=%i").stdout
        return {line.strip() for line in out.splitlines() if line.strip()}

    def finished_jobs(self) -> dict[str, str]:
        """Job id -> final state (COMPLETED, FAILED, ...) from the job completion log (jobcomp/filetxt).

        The log is slurmctld's own record of jobs that ran and ended here, independent of what
        Snakemake reports and of MinJobAge.
        """
        if not self.jobcomp.exists():
            return {}
        jobs = {}
        for line in self.jobcomp.read_text().splitlines():
            fields = dict(field.split("=", 1) for field in line.split() if "=" in field)
            if "JobId" in fields:
                jobs[fields["JobId"]] = fields.get("JobState", "?")
        return jobs

    def log_tail(self, lines: int = 30) -> str:
        """Tails of the daemons' logs, for failure messages."""
        parts = []
        logs = [*sorted(self.logs.glob("*.log")), *sorted(self.logs.glob("*.out"))]
        if self.munge_dir is not None:
            logs += sorted(self.munge_dir.glob("*.log"))
        for log in logs:
            text = log.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {log} ---\n" + "\n".join(text))
        return "\n".join(parts)

    # --- daemons ---------------------------------------------------------------------------------

    def _start_munged(self) -> None:
        """Our own munged on our own key and socket, so a site munged (if any) is never touched.

        Its directory is outside `root`: munged runs as user munge and insists on a directory it owns
        whose ancestors others cannot write to, while pytest's tmp dirs are root-only (0700); a short
        path also keeps the socket name under the 108-byte limit.
        """
        munge = pwd.getpwnam("munge")
        self.munge_dir = Path(tempfile.mkdtemp(prefix="spfl-munge-"))
        os.chmod(self.munge_dir, 0o755)
        key = self.munge_dir / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o400)
        for path in (self.munge_dir, key):
            os.chown(path, munge.pw_uid, munge.pw_gid)
        self.munge_socket = self.munge_dir / "munge.socket.2"
        pid_file = self.munge_dir / "munged.pid"
        self._spawn("munged", ["munged", "--foreground", f"--socket={self.munge_socket}", f"--key-file={key}",
                               f"--log-file={self.munge_dir / 'munged.log'}", f"--pid-file={pid_file}",
                               f"--seed-file={self.munge_dir / 'munged.seed'}"],
                    pid_file, user=munge.pw_uid, group=munge.pw_gid)
        self._wait("munged socket", self.munge_socket.exists)

    def _write_conf(self) -> None:
        cpus = os.cpu_count() or 1
        root = self.root
        self.conf.write_text(f"""\
# Written by tests/slurm_cluster.py: a private single-node test cluster; everything under {root}.
ClusterName=spfltest
SlurmctldHost={self.node}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_socket}
# root: the state lives under the test's root-only tmp dir
SlurmUser=root
SlurmdUser=root
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/run/slurmctld.pid
SlurmdPidFile={root}/run/slurmd.pid
SlurmctldLogFile={self.logs}/slurmctld.log
SlurmdLogFile={self.logs}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# no cgroups on these machines
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# without it a job that asks for no memory takes the whole node
DefMemPerCPU=512
# finished jobs stay visible to squeue this long (the plugin's squeue status checks need it)
MinJobAge={self.min_job_age}
# no accounting database: sacct cannot work; jobcomp/filetxt still records every finished job
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc={self.jobcomp}
NodeName={self.node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={_real_memory_mb()} State=UNKNOWN
PartitionName={PARTITION} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
""")

    def _write_srun(self) -> None:
        srun = self.bin / "srun"
        srun.write_text("#!/bin/sh\n# tests/slurm_cluster.py: the jobstep plugin drops SLURM_CONF before srun\n"
                        f"SLURM_CONF='{self.conf}' exec '{shutil.which('srun', path=SEARCH_PATH)}' \"$@\"\n")
        srun.chmod(0o755)

    def _spawn(self, name: str, argv: list[str], pid_file: Path, **kwargs) -> None:
        """Start one daemon in the foreground as our child; output goes to log/<name>.out."""
        argv = [shutil.which(argv[0], path=SEARCH_PATH) or argv[0], *argv[1:]]
        with open(self.logs / f"{name}.out", "ab") as out:
            self._processes[name] = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                                     stderr=subprocess.STDOUT, env=self.env,
                                                     preexec_fn=_die_with_parent, **kwargs)
        self._pid_files[name] = pid_file
        self._wait(f"{name} PID file {pid_file}", lambda: self._pid_file_matches(name))

    def _pid_file_matches(self, name: str) -> bool:
        """The daemon wrote its PID file, holding the PID we started it with."""
        process = self._processes[name]
        if process.poll() is not None:
            raise SlurmError(f"{name} exited with {process.returncode}\n{self.log_tail()}")
        try:
            return int(self._pid_files[name].read_text().split()[0]) == process.pid
        except (OSError, ValueError, IndexError):
            return False

    def _terminate(self, name: str, process: subprocess.Popen) -> None:
        """SIGTERM, then SIGKILL after a grace period: only this exact child, never anything by name."""
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass  # unkillable (D state): nothing more to do, and the other daemons still need stopping
        self._pid_files.pop(name, None)

    def _cancel_jobs(self) -> None:
        """Cancel the jobs of this cluster (only: SLURM_CONF), so no slurmstepd outlives slurmd."""
        try:
            active = self.run("squeue", "--noheader", "--format=%i").stdout.split()
            if active:
                self.run("scancel", *active)
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline and self.run("squeue", "--noheader", "--format=%i").stdout.strip():
                    time.sleep(0.5)
        except (OSError, subprocess.SubprocessError):
            pass  # best effort: the daemons are stopped next in any case

    # --- helpers ---------------------------------------------------------------------------------

    def _client(self, *args: str) -> str:
        try:
            result = self.run(*args, timeout=10)
        except subprocess.TimeoutExpired:
            return ""
        return result.stdout + result.stderr

    def _node_idle(self) -> bool:
        state = self._client("sinfo", "--noheader", "--Node", f"--nodes={self.node}", "--format=%T").strip()
        return state == "idle"

    def _wait(self, what: str, ready) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            for name, process in self._processes.items():
                if process.poll() is not None:
                    raise SlurmError(f"{name} exited with {process.returncode} while waiting for {what}\n"
                                     f"{self.log_tail()}")
            if ready():
                return
            time.sleep(0.2)
        raise SlurmError(f"timed out after {self.start_timeout:.0f} s waiting for {what}\n{self.log_tail()}")
