"""One owner of a retraining run across server restarts. The choice: **a run dies with the server that started it.**

MONAI Label runs a retraining as a subprocess of the server. A server killed with SIGKILL used to leave that run going,
out of every server's reach: the restarted server knew nothing of it and started a second run, whose clean-up deleted
the first one's folder; an orphan that lived on published a model with no server running. A restarted server could
instead adopt the orphan, but it could neither show its log nor stop it the usual way, and nobody asked it for that
run; so a run never outlives its server:

- The run's process holds `<model_dir>/train_run.lock` (an OS lock, flock, through filelock) for its whole life; the
  kernel lets go of it when the process ends, however it ends. Beside it, `train_run.json` records the run (its name,
  its process: pid and start time from /proc/<pid>/stat, since a pid alone is reused; its process group) and the
  server that started it.
- Started by a server (`watch=True`), the run leads its own process group (the rank processes Lightning starts join
  it) and checks every second that its server is alive; when the server is gone, it kills its whole group at once,
  ranks included: nothing more is trained, written or published.
- Right before the publish's final rename, the run checks again that its server is alive and that it holds the lock
  (`RunOwner.may_publish`); if not, nothing is published. (The check and the rename are a few microseconds apart.)
- `train_stats.json` is written only under the lock: by the run that holds it (`RunOwner.write_stats`), or by the
  server while no run does (`server_holds_lock`), so a killed run's late write can't overwrite a newer run's stats.
- A restarted server (`recover_after_restart`, at start) kills a run whose server is gone (its process still alive:
  pid and start time match), marks the stats "stopped" because the server restarted, and removes the unfinished run
  folder and a version folder the run moved in but did not publish. A new run is refused (429) while a living run
  holds the lock, whoever started it (`server_holds_lock` raises RunBusyError).
A rank process (Lightning starts one per further device; it runs the train task again) holds nothing: it follows the
holder's run name and writes, cleans and publishes nothing. No Lightning here: the server imports this through
main.py and lib/trainers.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import psutil
from filelock import FileLock, Timeout

from monailabel_app.core.errors import RequestError
from monailabel_app.core.json_files import write_json_atomically
from monailabel_app.reasoning.model_store import PUBLISHED_LINK, VERSIONS_DIR
from monailabel_app.training.run_records import last_training_stats, remove_unfinished_runs, write_training_stats

logger = logging.getLogger(__name__)

LOCK_FILE = "train_run.lock"
RECORD_FILE = "train_run.json"
SERVER_KEY = "started_by_server"  # in the train request: the server's pid and start time (set by the server only)
WATCH_INTERVAL_S = 1.0
CLAIM_TIMEOUT_S = 30.0  # a run waits this long for the lock: the server holds it a moment to write the stats
SERVER_LOCK_TIMEOUT_S = 30.0  # the server waits this long for a stopped run's process to let go of the lock
RESTARTED = "the server restarted"
PROC = Path("/proc")


class RunBusyError(RequestError):
    """A living run holds the model folder's run lock."""

    http_status = 429


class RunAbandonedError(RuntimeError):
    """The server that started this run is gone before the run began."""


@dataclass(frozen=True)
class ProcessIdentity:
    """One process for ever: its pid and its start time (a pid alone may be reused by another process)."""

    pid: int
    started: float  # `_start_time`: clock ticks since boot on Linux

    @classmethod
    def of(cls, pid: int) -> "ProcessIdentity":
        return cls(pid, _start_time(pid))

    @classmethod
    def current(cls) -> "ProcessIdentity":
        return cls.of(os.getpid())

    @classmethod
    def from_dict(cls, data: object) -> Optional["ProcessIdentity"]:
        try:
            return cls(int(data["pid"]), float(data["started"]))  # type: ignore[index]
        except (TypeError, KeyError, ValueError):
            return None

    def to_dict(self) -> dict:
        return {"pid": self.pid, "started": self.started}

    def is_alive(self) -> bool:
        """Running (not a zombie waiting for its parent) and the same process, not a later one with its pid."""
        try:
            same = abs(_start_time(self.pid) - self.started) < 1e-3
            return same and psutil.Process(self.pid).status() != psutil.STATUS_ZOMBIE
        except (OSError, ValueError, IndexError, psutil.Error):
            return False


def _start_time(pid: int) -> float:
    """When a process started, on a clock no change of the wall clock moves (psutil's create time would shift with an
    NTP step, and a run would take its living server for gone): clock ticks since boot, field 22 of Linux's
    /proc/<pid>/stat; psutil's create time where there is no /proc."""
    if not PROC.is_dir():
        return psutil.Process(pid).create_time()
    stat = (PROC / str(pid) / "stat").read_text()
    return float(stat[stat.rindex(")") + 2 :].split()[19])  # the fields after the command name start at field 3


def is_rank_process() -> bool:
    """A process Lightning started for a further device (it sets LOCAL_RANK / NODE_RANK in the child's environment)."""
    return any(os.environ.get(name, "0") not in ("", "0") for name in ("LOCAL_RANK", "NODE_RANK"))


class RunOwner:
    """The run's hold on its model folder, for the run's whole life (see the module docstring)."""

    def __init__(
        self, model_dir: Path, run_name: str, lock: Optional[FileLock], server: Optional[ProcessIdentity]
    ) -> None:
        self.model_dir = model_dir
        self.run_name = run_name
        self.server = server
        self._lock = lock
        self._stop_watching = threading.Event()

    @property
    def holds(self) -> bool:
        """This process holds the run lock (a rank process never does)."""
        return self._lock is not None and self._lock.is_locked

    def may_publish(self) -> bool:
        """The last check before the publish's rename: the lock is held and the server that asked is alive."""
        return self.holds and (self.server is None or self.server.is_alive())

    def write_stats(self, stats: dict) -> None:
        if self.holds:
            write_training_stats(self.model_dir, stats)

    def remove_unfinished_runs(self) -> None:
        """Folders of runs killed before they could clean up; only the holder cleans (a rank would delete its own)."""
        if self.holds:
            remove_unfinished_runs(self.model_dir)

    def watch(self) -> None:
        """Lead a process group (the ranks started later join it), and kill it when the server is gone."""
        try:
            os.setpgid(0, 0)
        except OSError as error:  # a session leader can't; then the watch kills this process and its children
            logger.warning(f"The run could not lead its own process group ({error})")
        thread = threading.Thread(target=self._watch_server, name="watch-server", daemon=True)
        thread.start()

    def _watch_server(self) -> None:
        while not self._stop_watching.wait(WATCH_INTERVAL_S):
            if self.server is not None and not self.server.is_alive():
                logger.error(f"The server (pid {self.server.pid}) that started this run is gone: the run ends")
                kill_own_group()

    def release(self) -> None:
        self._stop_watching.set()
        if self.holds:
            (self.model_dir / RECORD_FILE).unlink(missing_ok=True)
            self._lock.release()

    def __enter__(self) -> "RunOwner":
        return self

    def __exit__(self, *_exc) -> None:
        self.release()


def claim_run(
    model_dir: str | Path,
    server: Optional[ProcessIdentity] = None,
    watch: bool = True,
    timeout_s: float = CLAIM_TIMEOUT_S,
) -> RunOwner:
    """Take the run lock and record this run. `server`: the server that asked for the run; with `watch`, the run
    dies with it (the MONAI Label train subprocess). RunBusyError when another run holds the lock; RunAbandonedError
    when the server is already gone. In a rank process: a follower that holds nothing."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    if is_rank_process():
        return RunOwner(model_dir, read_record(model_dir).get("run") or _new_run_name(), None, server)
    if server is not None and not server.is_alive():
        raise RunAbandonedError(f"The server (pid {server.pid}) that asked for this run is gone; nothing was run")
    lock = _run_lock(model_dir)
    try:
        lock.acquire(timeout=timeout_s)
    except Timeout:
        raise RunBusyError(f"Another retraining holds {model_dir / LOCK_FILE} ({_describe(model_dir)})") from None
    owner = RunOwner(model_dir, _new_run_name(), lock, server)
    try:
        if server is not None and not server.is_alive():
            raise RunAbandonedError(f"The server (pid {server.pid}) that asked for this run is gone; nothing was run")
        if watch and server is not None:
            owner.watch()  # before the record, so the record names the group the run leads
        record = {
            "run": owner.run_name,
            "process": ProcessIdentity.current().to_dict(),
            "group": os.getpgid(0),
            "server": server.to_dict() if server else None,
            "since": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        write_json_atomically(model_dir / RECORD_FILE, record)
    except BaseException:
        owner.release()
        raise
    return owner


def read_record(model_dir: str | Path) -> dict:
    try:
        record = json.loads((Path(model_dir) / RECORD_FILE).read_text(encoding="utf-8"))
        return record if isinstance(record, dict) else {}
    except (OSError, ValueError):
        return {}


@contextmanager
def server_holds_lock(model_dir: str | Path, timeout_s: float = SERVER_LOCK_TIMEOUT_S) -> Iterator[None]:
    """The server's writes to the run record (a start, a stop, the clean-up after a restart), made only while no run
    holds the lock. RunBusyError if a run still holds it after `timeout_s`."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    lock = _run_lock(model_dir)
    try:
        lock.acquire(timeout=timeout_s)
    except Timeout:
        raise RunBusyError(f"A retraining is running ({_describe(model_dir)})") from None
    try:
        yield
    finally:
        lock.release()


def recover_after_restart(model_dir: str | Path) -> Optional[str]:
    """At a server's start: end a run left by a server that is gone, and record it as stopped. Returns what was done
    (for the log), or None when there was nothing to do. A run whose server is alive (another server on this model
    folder) or that no server started is left alone."""
    model_dir = Path(model_dir)
    record = read_record(model_dir)
    process = ProcessIdentity.from_dict(record.get("process"))
    server = ProcessIdentity.from_dict(record.get("server"))
    done = []
    if process is not None and process.is_alive():
        if server is None or server.is_alive():
            return None
        kill_run(process, record.get("group"))
        done.append(f"killed run {record.get('run')} (pid {process.pid}), left by a server that is gone")
    try:
        with server_holds_lock(model_dir):
            stats = last_training_stats(model_dir)
            removed = remove_unfinished_runs(model_dir)
            if stats.get("status") == "running":  # the run (or its start) ended with its server
                ended = _ended_by_restart(model_dir, stats)
                write_training_stats(model_dir, ended)
                done.append(f"marked run {stats.get('run')} {ended['status']}")
                removed += _remove_unpublished_version(model_dir, stats.get("run"))
            if removed:
                done.append(f"removed unfinished {', '.join(removed)}")
            (model_dir / RECORD_FILE).unlink(missing_ok=True)
            (model_dir / f".{PUBLISHED_LINK}.new").unlink(missing_ok=True)
    except RunBusyError as busy:
        logger.warning(f"Left the retraining record as it is: {busy}")
    except OSError as error:  # a model folder the server can't write: nothing to recover there
        logger.warning(f"Could not check the retraining record in {model_dir}: {error}")
    return "; ".join(done) or None


def kill_run(process: ProcessIdentity, group: object, timeout_s: float = 30) -> None:
    """SIGKILL to the run's process group (its ranks too) when it leads one, else to it and its children."""
    try:
        victim = psutil.Process(process.pid)
        if isinstance(group, int) and group == process.pid and os.getpgid(process.pid) == group:
            os.killpg(group, signal.SIGKILL)
        else:
            for child in victim.children(recursive=True):
                child.kill()
            victim.kill()
        psutil.wait_procs([victim], timeout=timeout_s)
    except (psutil.NoSuchProcess, ProcessLookupError):
        pass


def kill_own_group() -> None:
    """The run ends now, with every process of its group (SIGKILL: no clean-up runs, nothing more is written)."""
    if os.getpgid(0) == os.getpid():
        os.killpg(os.getpid(), signal.SIGKILL)
    for child in psutil.Process().children(recursive=True):
        child.kill()
    os.kill(os.getpid(), signal.SIGKILL)


def _ended_by_restart(model_dir: Path, stats: dict) -> dict:
    run = stats.get("run")
    if run and _published_version(model_dir) == run:  # it published, then went with its server before its last word
        return {**stats, "status": "completed", "published": str(model_dir / PUBLISHED_LINK), "note": RESTARTED}
    return {**stats, "status": "stopped", "stopped_because": RESTARTED}


def _remove_unpublished_version(model_dir: Path, run: object) -> list[str]:
    """A run killed between moving its reasoner into `reasoner_versions/` and swapping the link left it there."""
    if not isinstance(run, str) or not run or run != Path(run).name or _published_version(model_dir) == run:
        return []
    folder = model_dir / VERSIONS_DIR / run
    if not folder.is_dir() or folder.is_symlink():
        return []
    shutil.rmtree(folder, ignore_errors=True)
    return [f"{VERSIONS_DIR}/{run}"]


def _published_version(model_dir: Path) -> Optional[str]:
    try:
        return Path(os.readlink(model_dir / PUBLISHED_LINK)).name
    except OSError:
        return None


def _run_lock(model_dir: Path) -> FileLock:
    # one OS lock per call (not filelock's per-path singleton): the server's threads must exclude each other too
    return FileLock(str(model_dir / LOCK_FILE), thread_local=False)


def _describe(model_dir: Path) -> str:
    record = read_record(model_dir)
    process = ProcessIdentity.from_dict(record.get("process"))
    if process is None:
        return "its record is not written yet"
    return f"run {record.get('run')}, pid {process.pid}, since {record.get('since')}"


def _new_run_name() -> str:
    return time.strftime("%Y%m%d-%H%M%S")
