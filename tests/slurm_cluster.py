"""A throw-away one-node SLURM cluster with accounting, for testing the SLURM profile (see tests/test_slurm.py).

`cluster()` follows the recipe of shared/docs/slurm-local.md (Debian 12's SLURM 22.05, as root), but keeps every
file in one temporary folder instead of /etc, /var and /run: munged with its own key and socket, MariaDB with its
own data directory, slurmdbd (the plugin polls `sacct`, so accounting must be on), slurmctld and slurmd. The daemons
run in the foreground as children of this process, listen on 127.0.0.1 only, on fixed ports away from the usual ones
(6817-6819, 3306), and are stopped, last started first, in a `finally` block; the folder is then removed.

Clients (`sbatch`, `sacct`, `sinfo`, `snakemake --executor slurm` ...) find the cluster through `SLURM_CONF`: run
them with `Cluster.environ()`. The slurm-jobstep plugin drops every SLURM_* variable, SLURM_CONF too, before it
starts the rule with `srun` inside a job (a real cluster has /etc/slurm/slurm.conf); so that environment also puts
first on PATH an `srun` that sets SLURM_CONF again, instead of writing /etc/slurm/slurm.conf.
"""
from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

# slurmctld, slurmd, slurmdbd, mariadbd: fixed, and apart from SLURM's and MariaDB's defaults.
PORTS = {"slurmctld": 16817, "slurmd": 16818, "slurmdbd": 16819, "mariadb": 16820}
CLUSTER = "meltrtest"
ACCOUNT = "meltr"
PARTITION = "cpu"
DB_PASSWORD = "meltr-test-only"
BINARIES = ("slurmctld", "slurmd", "slurmdbd", "sbatch", "srun", "sacct", "sacctmgr", "sinfo", "squeue", "scontrol",
            "scancel", "munged", "munge", "unmunge", "mariadbd", "mariadb-install-db", "mariadb")


def missing_binaries() -> list[str]:
    """The programs `cluster()` needs that are not installed (searched on PATH and in /usr/sbin)."""
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin" + os.pathsep + "/sbin"
    return [name for name in BINARIES if shutil.which(name, path=path) is None]


def _which(name: str) -> str:
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin" + os.pathsep + "/sbin"
    found = shutil.which(name, path=path)
    if found is None:
        raise RuntimeError(f"{name} is not installed")
    return found


@dataclass
class Cluster:
    root: Path
    env: dict
    node: str
    cpus: int
    memory_mb: int
    partition: str = PARTITION
    account: str = ACCOUNT
    procs: dict = field(default_factory=dict)

    @property
    def bin(self) -> Path:
        """Wrappers of client commands for jobs (srun with SLURM_CONF)."""
        return self.root / "bin"

    def environ(self, base: dict | None = None) -> dict:
        """`base` (default: os.environ) set up for this cluster's clients and jobs."""
        env = {k: v for k, v in (os.environ if base is None else base).items()
               if not k.startswith(("SLURM_", "SBATCH_", "SALLOC_", "SRUN_"))}
        env["SLURM_CONF"] = str(self.root / "etc/slurm.conf")
        env["PATH"] = os.pathsep.join([str(self.bin), env.get("PATH", ""), "/usr/sbin"])
        return env

    def run(self, *cmd: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        """A client command against this cluster."""
        proc = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
                               f"\n{self.logs()}")
        return proc

    def logs(self, tail: int = 2000) -> str:
        """The end of every daemon's log, for error messages."""
        parts = []
        for log in sorted((self.root / "log").glob("*")) + [self.root / "mysql/mariadbd.log"]:
            text = log.read_text(errors="replace") if log.is_file() else ""
            parts.append(f"--- {log.name}\n{text[-tail:]}")
        return "\n".join(parts)


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _wait(what: str, ready, cluster: Cluster, timeout: float = 60, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} while starting\n{cluster.logs()}")
        try:
            if ready():
                return
        except (OSError, subprocess.SubprocessError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what} not ready after {timeout} s\n{cluster.logs()}")


def _chown(path: Path, user: str) -> None:
    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)


def _write(path: Path, text: str, mode: int = 0o644) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def _start(cluster: Cluster, name: str, cmd: list[str], user: str | None = None) -> subprocess.Popen:
    """Start a daemon in the foreground (its output to log/<name>.out), in a session of its own, as `user`.
    It stays a child of this process, so that stopping it also reaps it."""
    out = open(cluster.root / "log" / f"{name}.out", "w")
    try:
        proc = subprocess.Popen(cmd, env=cluster.env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, user=user, group=None if user is None else user,
                                extra_groups=None if user is None else [])
    finally:
        out.close()
    cluster.procs[name] = proc
    return proc


def _stop(proc: subprocess.Popen, grace: float = 15) -> None:
    """SIGTERM the daemon's process group, then SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    # Anything left in the group (a forked helper) goes too.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _slurm_conf(root: Path, node: str, cpus: int, memory_mb: int) -> str:
    auth = f"AuthType=auth/munge\nAuthInfo=socket={root / 'munge/munge.socket'}\n"
    return f"""# Generated by tests/slurm_cluster.py: a one-node test cluster on 127.0.0.1.
ClusterName={CLUSTER}
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={PORTS['slurmctld']}
SlurmdPort={PORTS['slurmd']}
SlurmUser=root
SlurmdUser=root
{auth}CredType=cred/munge
StateSaveLocation={root / 'state'}
SlurmdSpoolDir={root / 'spool'}
SlurmctldPidFile={root / 'run/slurmctld.pid'}
SlurmdPidFile={root / 'run/slurmd.pid'}
SlurmctldLogFile={root / 'log/slurmctld.log'}
SlurmdLogFile={root / 'log/slurmd.log'}
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={PORTS['slurmdbd']}
AccountingStoragePass={root / 'munge/munge.socket'}
AccountingStoreFlags=job_comment
JobAcctGatherType=jobacct_gather/linux
JobCompType=jobcomp/none
InactiveLimit=0
KillWait=5
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName={PARTITION} Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


def _slurmdbd_conf(root: Path) -> str:
    return f"""# Generated by tests/slurm_cluster.py
AuthType=auth/munge
AuthInfo=socket={root / 'munge/munge.socket'}
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort={PORTS['slurmdbd']}
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={PORTS['mariadb']}
StorageLoc=slurm_acct_db
StorageUser=slurm
StoragePass={DB_PASSWORD}
LogFile={root / 'log/slurmdbd.log'}
PidFile={root / 'run/slurmdbd.pid'}
DebugLevel=info
"""


@contextlib.contextmanager
def cluster(cpus: int | None = None, memory_mb: int = 4000, timeout: float = 90) -> Iterator[Cluster]:
    """Start a one-node SLURM cluster (partition `cpu`, account `meltr`) in a temporary folder; stop it on exit.

    Needs root and Debian's slurmctld, slurmd, slurm-client, slurmdbd, munge and mariadb-server packages.
    """
    if os.geteuid() != 0:
        raise RuntimeError("the test cluster needs root (the daemons run as root, munge and mysql)")
    missing = missing_binaries()
    if missing:
        raise RuntimeError(f"not installed: {', '.join(missing)}")
    busy = [f"{name} ({port})" for name, port in PORTS.items() if not _port_free(port)]
    if busy:
        raise RuntimeError(f"ports in use, is another test cluster running? {', '.join(busy)}")
    cpus = cpus or os.cpu_count() or 1
    node = socket.gethostname().split(".")[0]
    # A short path: MariaDB's and munge's unix sockets must stay under 108 bytes.
    root = Path(tempfile.mkdtemp(prefix="meltr-slurm-", dir="/tmp"))
    root.chmod(0o755)  # munge and mysql must reach their folders below it
    c = Cluster(root=root, env={}, node=node, cpus=cpus, memory_mb=memory_mb)
    env = c.env = c.environ()
    try:
        for sub in ("bin", "etc", "state", "spool", "run", "log", "munge", "mysql"):
            (root / sub).mkdir()
        _write(c.bin / "srun", f'#!/bin/sh\nSLURM_CONF={env["SLURM_CONF"]} exec {_which("srun")} "$@"\n', 0o755)
        _chown(root / "munge", "munge")
        (root / "munge").chmod(0o755)  # munged wants its socket folder reachable by all
        _chown(root / "mysql", "mysql")

        # munge: a fresh key, its own socket.
        key = _write(root / "munge/munge.key", "", 0o600)
        key.write_bytes(os.urandom(1024))
        _chown(key, "munge")
        sock = root / "munge/munge.socket"
        munged = _start(c, "munged", [_which("munged"), "--foreground", f"--socket={sock}", f"--key-file={key}",
                                      f"--pid-file={root / 'munge/munged.pid'}", f"--log-file={root / 'log/munged.log'}",
                                      f"--seed-file={root / 'munge/munged.seed'}"], user="munge")

        def munge_ok() -> bool:
            cred = subprocess.run([_which("munge"), "-n", f"--socket={sock}"], capture_output=True, timeout=5)
            return cred.returncode == 0 and subprocess.run(
                [_which("unmunge"), f"--socket={sock}"], input=cred.stdout, capture_output=True,
                timeout=5).returncode == 0

        _wait("munged", munge_ok, c, timeout, munged)

        # MariaDB: a data directory of its own, TCP on 127.0.0.1 for slurmdbd, a socket for the setup below.
        data, mysock = root / "mysql/data", root / "mysql/mysqld.sock"
        init = subprocess.run([_which("mariadb-install-db"), "--user=mysql", f"--datadir={data}",
                               "--auth-root-authentication-method=socket", "--skip-test-db"],
                              capture_output=True, text=True, timeout=timeout)
        if init.returncode != 0:
            raise RuntimeError(f"mariadb-install-db failed:\n{init.stdout}\n{init.stderr}")
        mariadbd = _start(c, "mariadbd", [_which("mariadbd"), "--no-defaults", "--user=mysql", f"--datadir={data}",
                                          f"--socket={mysock}", "--bind-address=127.0.0.1",
                                          f"--port={PORTS['mariadb']}", f"--pid-file={root / 'mysql/mariadbd.pid'}",
                                          f"--log-error={root / 'mysql/mariadbd.log'}", "--skip-log-bin",
                                          "--innodb-buffer-pool-size=64M", "--innodb-log-file-size=16M"])
        sql = [_which("mariadb"), "--no-defaults", f"--socket={mysock}", "-u", "root"]
        _wait("mariadbd", lambda: subprocess.run(sql + ["-e", "SELECT 1"], capture_output=True,
                                                 timeout=5).returncode == 0, c, timeout, mariadbd)
        grants = "".join(
            f"CREATE USER 'slurm'@'{host}' IDENTIFIED BY '{DB_PASSWORD}';"
            f"GRANT ALL ON slurm_acct_db.* TO 'slurm'@'{host}';" for host in ("localhost", "127.0.0.1"))
        subprocess.run(sql + ["-e", f"CREATE DATABASE slurm_acct_db;{grants}FLUSH PRIVILEGES;"], check=True,
                       capture_output=True, timeout=30)

        # slurmdbd, then the cluster, an account and root as its user in the accounting database.
        _write(root / "etc/slurm.conf", _slurm_conf(root, node, cpus, memory_mb))
        _write(root / "etc/slurmdbd.conf", _slurmdbd_conf(root), 0o600)
        slurmdbd = _start(c, "slurmdbd", [_which("slurmdbd"), "-D"])
        _wait("slurmdbd", lambda: _port_open(PORTS["slurmdbd"]), c, timeout, slurmdbd)
        c.run("sacctmgr", "-i", "add", "cluster", CLUSTER)
        c.run("sacctmgr", "-i", "add", "account", ACCOUNT, f"Cluster={CLUSTER}", "Description=meltr tests",
              "Organization=meltr")
        c.run("sacctmgr", "-i", "add", "user", "root", f"Account={ACCOUNT}", f"Cluster={CLUSTER}")

        slurmctld = _start(c, "slurmctld", [_which("slurmctld"), "-D", "-i"])
        _wait("slurmctld", lambda: c.run("scontrol", "ping", check=False, timeout=10).returncode == 0, c, timeout,
              slurmctld)
        slurmd = _start(c, "slurmd", [_which("slurmd"), "-D"])
        _wait("slurmd (node idle)", lambda: c.run("sinfo", "-h", "-N", "-o", "%t", check=False,
                                                 timeout=10).stdout.strip() == "idle", c, timeout, slurmd)
        yield c
    finally:
        try:
            if "slurmctld" in c.procs and c.procs["slurmctld"].poll() is None:
                # No job may outlive the cluster: cancel what is left and give slurmd time to end the steps.
                subprocess.run(["scancel", "--full", "-u", "root"], env=env, capture_output=True, timeout=30)
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    queue = subprocess.run(["squeue", "-h", "-o", "%i"], env=env, capture_output=True, text=True,
                                           timeout=30)
                    if queue.returncode != 0 or not queue.stdout.strip():
                        break
                    time.sleep(0.5)
        except (OSError, subprocess.SubprocessError):
            pass
        finally:
            for name in ("slurmd", "slurmctld", "slurmdbd", "mariadbd", "munged"):
                if name in c.procs:
                    _stop(c.procs[name])
            shutil.rmtree(root, ignore_errors=True)
