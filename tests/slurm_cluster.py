"""A real one-node SLURM cluster for the tests: munged, slurmctld and slurmd in a temp folder.

Nothing here fakes SLURM: Debian's ``slurm-wlm`` and ``munge`` are installed with ``apt-get``
when missing (``ensure_slurm``), and ``SlurmCluster`` writes a ``slurm.conf`` for one node with
this machine's CPUs, starts the three daemons as child processes with every file (key, socket,
state, spool, logs) under its folder, and stops them (after cancelling any job left) in
``stop``. Clients (``sbatch``, ``scontrol``, ``scancel``) find the cluster through
``SLURM_CONF`` in ``cluster.env``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

PROGRAMS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "scontrol", "scancel", "srun")
PACKAGES = ("slurm-wlm", "munge")


def missing_programs() -> list[str]:
    return [p for p in PROGRAMS if shutil.which(p) is None and not Path("/usr/sbin", p).exists()]


def ensure_slurm() -> tuple[str | None, float]:
    """Install slurm-wlm and munge with apt-get when missing.

    Returns (why SLURM cannot run here or None, seconds spent installing)."""
    if os.geteuid() != 0:  # SlurmUser=root, and apt-get would need it too
        return "the test cluster runs slurmctld/slurmd as root; these tests are not root", 0.0
    if not missing_programs():
        return None, 0.0
    if shutil.which("apt-get") is None:
        return f"SLURM is not installed ({', '.join(missing_programs())}) and apt-get is absent", 0
    start = time.perf_counter()
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES],
    ):
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            return f"`{' '.join(command)}` failed: {tail[0]}", time.perf_counter() - start
    if missing_programs():
        return f"apt-get installed {PACKAGES} but {missing_programs()} are missing", 0.0
    return None, time.perf_counter() - start


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def program(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


class SlurmError(RuntimeError):
    pass


class SlurmCluster:
    """One node (this machine) in one partition; ``start()`` returns once the node is idle."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.conf = root / "slurm.conf"
        self.host = socket.gethostname().split(".")[0]
        self.cpus = os.cpu_count() or 1
        self.procs: dict[str, subprocess.Popen] = {}
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}

    def write_conf(self) -> None:
        r = self.root
        for sub in ("state", "spool", "log", "munge"):
            (r / sub).mkdir(mode=0o700, exist_ok=True)
        lines = [
            "ClusterName=jepactl-test",
            f"SlurmctldHost={self.host}(127.0.0.1)",
            f"SlurmctldPort={free_port()}",
            f"SlurmdPort={free_port()}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            # cred_expire also sets how long a requeued job waits before it may start again
            # (default 120 s); 5 s keeps the requeue test short.
            f"AuthInfo=socket={r / 'munge' / 'munge.socket'},cred_expire=5",
            f"StateSaveLocation={r / 'state'}",
            f"SlurmdSpoolDir={r / 'spool'}",
            f"SlurmctldPidFile={r / 'slurmctld.pid'}",
            f"SlurmdPidFile={r / 'slurmd.pid'}",
            f"SlurmctldLogFile={r / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={r / 'log' / 'slurmd.log'}",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            "ProctrackType=proctrack/linuxproc",  # no cgroups in a container
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU",
            "SchedulerType=sched/backfill",
            "SchedulerParameters=sched_interval=2,bf_interval=1",
            "ReturnToService=2",
            "JobRequeue=1",
            "MinJobAge=600",  # finished jobs stay visible to scontrol for the checks
            "KillWait=30",
            "MpiDefault=none",
            "SwitchType=switch/none",
            "JobCompType=jobcomp/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            f"NodeName={self.host} NodeAddr=127.0.0.1 CPUs={self.cpus} State=UNKNOWN",
            "PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
        ]
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 60.0) -> None:
        self.write_conf()
        m = self.root / "munge"
        key = m / "munge.key"
        subprocess.run(
            [program("mungekey"), "--create", "--force", "--keyfile", str(key)], check=True
        )
        self._spawn(
            "munged",
            [
                program("munged"),
                "--foreground",
                "--force",
                f"--socket={m / 'munge.socket'}",
                f"--key-file={key}",
                f"--pid-file={m / 'munged.pid'}",
                f"--log-file={m / 'munged.log'}",
                f"--seed-file={m / 'munged.seed'}",
            ],
        )
        self._wait(lambda: (m / "munge.socket").exists(), timeout, "munged socket")
        self._spawn("slurmctld", [program("slurmctld"), "-D", "-i", "-f", str(self.conf)])
        self._spawn("slurmd", [program("slurmd"), "-D", "-f", str(self.conf), "-N", self.host])
        self._wait(self._node_idle, timeout, f"node {self.host} idle")

    def _spawn(self, name: str, command: list[str]) -> None:
        log = (self.root / "log" / f"{name}.out").open("w")
        self.procs[name] = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
        )

    def _node_idle(self) -> bool:
        done = self.run(["scontrol", "show", "node", self.host, "-o"], check=False)
        return "State=IDLE" in done.stdout

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise SlurmError(f"{name} exited with {proc.returncode}\n{self.logs()}")
            if ready():
                return
            time.sleep(0.5)
        raise SlurmError(f"timed out waiting for {what}\n{self.logs()}")

    def logs(self, lines: int = 20) -> str:
        out = []
        for path in sorted((self.root / "log").glob("*")) + [self.root / "munge" / "munged.log"]:
            if path.is_file():
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- {path.name}\n" + "\n".join(tail))
        return "\n".join(out)

    def run(self, command: list[str], check: bool = True, **kw) -> subprocess.CompletedProcess:
        done = subprocess.run(
            command, capture_output=True, text=True, env=self.env, timeout=60, **kw
        )
        if check and done.returncode != 0:
            raise SlurmError(f"{' '.join(command)}: {done.stderr.strip()}")
        return done

    def sbatch(self, script: Path, *options: str, env: dict | None = None, cwd=None) -> str:
        """Submit ``script`` (with its own #SBATCH lines plus ``options``); return the job id."""
        command = ["sbatch", "--parsable", *options, str(script)]
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            env={**self.env, **(env or {})},
            cwd=cwd,
            timeout=60,
        )
        if done.returncode != 0:
            raise SlurmError(f"sbatch failed: {done.stderr.strip()}")
        return done.stdout.strip().split(";")[0]

    def job(self, job_id: str) -> dict[str, str]:
        """``scontrol show job -o`` as a dict (the first record: an array's first task)."""
        text = self.run(["scontrol", "show", "job", "-o", job_id]).stdout.splitlines()[0]
        fields = {}
        for item in text.split():
            key, _, value = item.partition("=")
            fields[key] = value
        return fields

    def jobs(self, job_id: str) -> list[dict[str, str]]:
        text = self.run(["scontrol", "show", "job", "-o", job_id]).stdout
        return [
            dict(item.partition("=")[::2] for item in line.split()) for line in text.splitlines()
        ]

    def wait_for(self, ready, timeout: float, what: str, every: float = 0.5):
        """Poll ``ready()`` until it returns something true; fail with the daemons' logs."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = ready()
            if value:
                return value
            time.sleep(every)
        raise SlurmError(f"timed out after {timeout:.0f} s waiting for {what}\n{self.logs()}")

    def stop(self) -> None:
        """Cancel every job, then stop slurmd, slurmctld and munged (also after a failure)."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            self.run(["scancel", "--full", "--user", "root"], check=False)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                queue = self.run(["squeue", "-h"], check=False)
                if queue.returncode != 0 or not queue.stdout.strip():
                    break
                time.sleep(0.5)
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.procs.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)
