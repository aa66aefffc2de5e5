"""Real DICOM peers (Orthanc, dcmtk's dcmqrscp) for integration tests and benchmarks.

Plain Python on purpose (no pytest import): benchmarks reuse it. Every peer runs on free loopback
ports with its own temporary data folder, logs to a file in that folder, and is stopped (terminate,
then kill) on ``stop()`` or when its ``with`` block ends.

Facts this relies on (see /work/shared/PEERS.md, re-verified in tests/integration/test_peer_harness.py):

* Debian's dcmtk and Orthanc (which links dcmtk) leave Nagle's algorithm on unless the environment has
  ``TCP_NODELAY=1``; peers here get it unless ``nodelay=False``.
* Orthanc 1.10 binds its DICOM and HTTP ports on all interfaces (no bind-address option), so its HTTP
  API stays loopback-only through ``RemoteAccessAllowed: false``.
* dcmqrscp 3.6.7 caps an AETable quota at 500 studies and 1 GB per study (larger values are clamped
  with a warning). In a trial a 2-study quota did not evict anything (3 studies by dcmqridx, a 4th
  by storescu: all 4 kept), so nothing here relies on quota eviction either way.
"""

from __future__ import annotations

import atexit
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LOOPBACK = "127.0.0.1"

# Debian installs Orthanc in /usr/sbin, which is not on a normal user's PATH.
_EXTRA_BIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/bin")


class PeerError(RuntimeError):
    """A peer could not be started, loaded or stopped; the message carries the peer's log tail."""


# --------------------------------------------------------------------------------------------------
# small helpers


def free_port() -> int:
    """A TCP port that is free on loopback right now (bind to port 0 and ask)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def find_binary(name: str) -> str | None:
    """Full path of an executable, looking on PATH and then in the sbin folders Debian uses."""
    found = shutil.which(name)
    if found:
        return found
    return shutil.which(name, path=os.pathsep.join(_EXTRA_BIN_DIRS))


def peers_required() -> bool:
    """True when the environment says real peers must be present (``PACSPULL_REQUIRE_PEERS=1``)."""
    return os.environ.get("PACSPULL_REQUIRE_PEERS", "").strip() == "1"


def need_binary(name: str, package: str) -> str:
    """For tests: full path of ``name``; ``pytest.skip`` when missing (``pytest.fail`` under
    ``PACSPULL_REQUIRE_PEERS=1``). pytest is imported only here, so benchmarks can use this module."""
    path = find_binary(name)
    if path is not None:
        return path
    import pytest

    message = (f"{name} not installed (Debian package {package}); run `make test` as root to "
               f"install it or apt-get install {package}")
    if peers_required():
        pytest.fail(f"{message} [PACSPULL_REQUIRE_PEERS=1]", pytrace=False)
    pytest.skip(message)
    raise AssertionError("unreachable")


def _require_binary(name: str, package: str) -> str:
    path = find_binary(name)
    if path is None:
        raise PeerError(f"{name} not found (Debian package {package})")
    return path


def _version_of(binary: str, package: str, pattern: str) -> str | None:
    path = find_binary(binary)
    if path is None:
        return None
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(pattern, out)
    return match.group(1) if match else None


def orthanc_version() -> str | None:
    """Installed Orthanc version (e.g. ``"1.10.1"``), or None when Orthanc is not installed."""
    return _version_of("Orthanc", "orthanc", r"Orthanc\s+(\d+\.\d+\.\d+)")


def dcmtk_version() -> str | None:
    """Installed dcmtk version (e.g. ``"3.6.7"``), or None when dcmtk is not installed."""
    return _version_of("dcmqrscp", "dcmtk", r"v(\d+\.\d+\.\d+)")


def _tcp_accepts(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _listening(port: int) -> bool | None:
    """Whether something listens on TCP ``port`` (Linux /proc/net/tcp*), without connecting to it.

    Connecting just to probe makes dcmtk log a state-machine error; None when /proc is unavailable.
    """
    needle = f":{port:04X} "
    seen_table = False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as handle:
                seen_table = True
                next(handle, None)
                for line in handle:
                    fields = line.split()
                    if len(fields) > 3 and fields[3] == "0A" and (fields[1] + " ").endswith(needle):
                        return True
        except OSError:
            continue
    return False if seen_table else None


def _port_ready(host: str, port: int) -> bool:
    listening = _listening(port)
    return _tcp_accepts(host, port) if listening is None else listening


def _log_tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


def _peer_env(nodelay: bool) -> dict[str, str]:
    env = dict(os.environ)
    if nodelay:
        env["TCP_NODELAY"] = "1"
    else:
        env.pop("TCP_NODELAY", None)
    return env


def _echo(host: str, port: int, called_aet: str, *, calling_aet: str = "PROBE",
          timeout: float = 5.0) -> bool:
    """One C-ECHO with pynetdicom; True on status 0x0000."""
    from pynetdicom import AE  # local import: keeps `import peers` cheap
    from pynetdicom.sop_class import Verification

    ae = AE(ae_title=calling_aet)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    assoc = ae.associate(host, port, ae_title=called_aet)
    if not assoc.is_established:
        return False
    try:
        status = assoc.send_c_echo()
        return bool(status) and status.Status == 0x0000
    finally:
        assoc.release()
        ae.shutdown()


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: have the kernel SIGKILL the peer if the process that started it dies (test run killed
    by a timeout, a crashed benchmark), so no Orthanc/dcmqrscp outlives its harness."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - best effort only
        pass


_live_processes: set[_Process] = set()


@atexit.register
def _stop_leftovers() -> None:
    for process in list(_live_processes):
        process.stop(timeout=5, kill=True)


def _launch(peer: Any, prepare: Callable[[], list[str]]) -> None:
    """Start ``peer``'s server: ``prepare()`` picks its ports, writes its configuration and returns the
    command line; ``peer._wait_ready()`` waits until it answers. A second try covers a race for the free
    ports (the first process exited during start-up)."""
    started = time.perf_counter()
    for attempt in (1, 2):
        argv = prepare()
        with open(peer.log_path, "ab") as log:
            log.write(f"=== start attempt {attempt}: {' '.join(argv)}\n".encode())
        peer._process = _Process(argv, cwd=peer.workdir, env=_peer_env(peer.nodelay), log_path=peer.log_path)
        try:
            peer._wait_ready()
        except PeerError:
            exited = peer._process.exited
            peer._process.stop()
            peer._process = None
            if attempt == 1 and exited:
                continue
            raise
        break
    peer.startup_seconds = time.perf_counter() - started


class _Process:
    """A child process in its own session (so its forked children are stopped with it).

    Note for PR_SET_PDEATHSIG: the peer dies when the *thread* that started it exits, so start peers
    from the main thread (as pytest fixtures and scripts do).
    """

    def __init__(self, argv: list[str], *, cwd: Path, env: Mapping[str, str], log_path: Path):
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        try:
            self.proc = subprocess.Popen(
                argv, cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL,
                stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
        except BaseException:
            self._log.close()
            raise
        _live_processes.add(self)

    @property
    def exited(self) -> bool:
        return self.proc.poll() is not None

    def stop(self, timeout: float = 10.0, *, kill: bool = False) -> None:
        if self.proc.poll() is None:
            self._signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.proc.wait(timeout=timeout)
        # dcmqrscp forks a child per association; reap any left in our process group.
        self._signal(signal.SIGKILL, group_only=True)
        self._log.close()
        _live_processes.discard(self)

    def _signal(self, sig: int, group_only: bool = False) -> None:
        try:
            # The child leads its own session, so its pgid is its pid: only our processes.
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            if not group_only:
                try:
                    self.proc.send_signal(sig)
                except ProcessLookupError:
                    pass


# --------------------------------------------------------------------------------------------------
# what the sample files hold


@dataclass
class SampleStudy:
    """What the sample files hold for one study (read back with pydicom, pixel data skipped)."""

    study_uid: str
    patient_name: str = ""  # decoded with the file's own SpecificCharacterSet
    specific_character_set: tuple[str, ...] = ()
    files: list[Path] = field(default_factory=list)
    sop_instance_uids: set[str] = field(default_factory=set)
    sop_class_uids: set[str] = field(default_factory=set)
    transfer_syntaxes: set[str] = field(default_factory=set)


def describe_samples(paths: Iterable[Path]) -> dict[str, SampleStudy]:
    """Group Part-10 files by StudyInstanceUID (study order follows the files)."""
    from pydicom import dcmread

    studies: dict[str, SampleStudy] = {}
    for path in paths:
        ds = dcmread(path, stop_before_pixels=True)
        study = studies.get(ds.StudyInstanceUID)
        if study is None:
            raw = ds.get("SpecificCharacterSet") or ()
            charset = (raw,) if isinstance(raw, str) else tuple(str(c) for c in raw)
            study = studies[ds.StudyInstanceUID] = SampleStudy(
                ds.StudyInstanceUID, str(ds.get("PatientName", "")), charset)
        study.files.append(Path(path))
        study.sop_instance_uids.add(ds.SOPInstanceUID)
        study.sop_class_uids.add(ds.SOPClassUID)
        study.transfer_syntaxes.add(ds.file_meta.TransferSyntaxUID)
    return studies


# --------------------------------------------------------------------------------------------------
# Orthanc


class OrthancPeer:
    """Orthanc 1.10 as a C-FIND/C-GET SCP on free loopback ports, data in ``workdir``.

    ``allow_get=False`` leaves ``DicomAlwaysAllowGet`` off (no modality is registered), so a C-GET
    from any calling AE is refused. ``extra_config`` is merged over the generated configuration.
    ``default_encoding`` is Orthanc's ``DefaultEncoding``: Orthanc answers every C-FIND in it, whatever
    the query or the stored instance says. The stock value "Latin1" turns Chinese or Japanese names into
    bare "^" separators, so these peers default to "Utf8" (answers in ISO_IR 192, names intact).
    ``graceful_stop=False`` makes ``stop()`` kill at once (saves ~3.5 s per throw-away peer).
    """

    binary_name = "Orthanc"
    package = "orthanc"

    def __init__(self, workdir: Path, *, aet: str = "ORTHANC", nodelay: bool = True,
                 allow_get: bool = True, default_encoding: str = "Utf8", scp_timeout: int = 30,
                 verbose: bool = False,
                 extra_config: Mapping[str, Any] | None = None, start_timeout: float = 30.0,
                 graceful_stop: bool = True):
        self.workdir = Path(workdir)
        self.graceful_stop = graceful_stop
        self.aet = aet
        self.nodelay = nodelay
        self.allow_get = allow_get
        self.default_encoding = default_encoding
        self.scp_timeout = scp_timeout
        self.verbose = verbose
        self.extra_config = dict(extra_config or {})
        self.start_timeout = start_timeout
        self.host = LOOPBACK
        self.port = 0
        self.http_port = 0
        self.config_path = self.workdir / "orthanc.json"
        self.log_path = self.workdir / "orthanc.log"
        self.startup_seconds: float | None = None
        self.version: str | None = None
        self.loaded = 0  # files posted by load() (new or already stored)
        self._process: _Process | None = None
        self._http: http.client.HTTPConnection | None = None

    # lifecycle ------------------------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {
            "Name": f"PacsPull test {self.aet}",
            "StorageDirectory": str(self.workdir / "storage"),
            "IndexDirectory": str(self.workdir / "index"),
            "Plugins": [],
            "HttpServerEnabled": True,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomServerEnabled": True,
            "DicomAet": self.aet,
            "DicomPort": self.port,
            "DicomCheckCalledAet": False,
            "DicomCheckModalityHost": False,
            "DicomModalities": {},
            "DicomModalitiesInDatabase": False,
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowFind": True,
            "DicomAlwaysAllowGet": self.allow_get,
            "DicomAlwaysAllowMove": False,
            "DicomScpTimeout": self.scp_timeout,
            "DefaultEncoding": self.default_encoding,
            "SaveJobs": False,
            "StorageCompression": False,
            "OverwriteInstances": False,
            "KeepAlive": True,
            "TcpNoDelay": True,  # Orthanc's HTTP server (not DICOM): keeps load() fast
        }
        cfg.update(self.extra_config)
        return cfg

    def start(self) -> OrthancPeer:
        if self._process is not None:
            raise PeerError("Orthanc peer already started")
        self._binary = _require_binary(self.binary_name, self.package)
        self.workdir.mkdir(parents=True, exist_ok=True)
        _launch(self, self._prepare)
        return self

    def _prepare(self) -> list[str]:
        """Pick free ports, write the configuration; the command line."""
        self.port, self.http_port = free_port(), free_port()
        while self.http_port == self.port:
            self.http_port = free_port()
        self.config_path.write_text(json.dumps(self.config(), indent=2), encoding="utf-8")
        argv = [self._binary]
        if self.verbose:
            argv.append("--verbose")
        return [*argv, str(self.config_path)]

    def _wait_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._process.exited:
                raise PeerError(f"Orthanc exited during start-up (code "
                                f"{self._process.proc.returncode}):\n{_log_tail(self.log_path)}")
            try:
                system = self.get_json("/system")
            except (OSError, http.client.HTTPException, ValueError, PeerError):
                self._drop_http()
                time.sleep(0.05)
                continue
            if _port_ready(self.host, self.port):
                self.version = system.get("Version")
                return
            time.sleep(0.05)
        raise PeerError(f"Orthanc not ready after {self.start_timeout:.0f} s:\n"
                        f"{_log_tail(self.log_path)}")

    def stop(self, timeout: float = 10.0, *, kill: bool | None = None) -> None:
        """Stop Orthanc: SIGTERM (a clean shutdown takes Orthanc 1.10 about 3.5 s), SIGKILL after
        ``timeout``; ``kill=True`` (default: not ``graceful_stop``) kills at once, which is fine for
        a throw-away data folder."""
        self._drop_http()
        if self._process is not None:
            self._process.stop(timeout, kill=(not self.graceful_stop) if kill is None else kill)
            self._process = None

    @property
    def running(self) -> bool:
        return self._process is not None and not self._process.exited

    @property
    def pid(self) -> int | None:
        return self._process.proc.pid if self._process is not None else None

    def __enter__(self) -> OrthancPeer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_tail(self, lines: int = 40) -> str:
        return _log_tail(self.log_path, lines)

    def __repr__(self) -> str:
        return (f"OrthancPeer(aet={self.aet!r}, {self.host}:{self.port}, http={self.http_port}, "
                f"nodelay={self.nodelay}, allow_get={self.allow_get})")

    # REST -----------------------------------------------------------------------------------------

    def _conn(self) -> http.client.HTTPConnection:
        if self._http is None:
            self._http = http.client.HTTPConnection(self.host, self.http_port, timeout=30)
        return self._http

    def _drop_http(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: Mapping[str, str] | None = None) -> tuple[int, bytes]:
        """One REST call over the kept-alive connection (reconnects once if Orthanc closed it)."""
        for attempt in (1, 2):
            conn = self._conn()
            try:
                conn.request(method, path, body=body, headers=dict(headers or {}))
                response = conn.getresponse()
                data = response.read()
            except (ConnectionError, http.client.RemoteDisconnected, http.client.BadStatusLine):
                self._drop_http()
                if attempt == 2:
                    raise
                continue
            if response.will_close:
                self._drop_http()
            return response.status, data
        raise AssertionError("unreachable")

    def get_json(self, path: str) -> Any:
        status, data = self.request("GET", path)
        if status != 200:
            raise PeerError(f"GET {path} -> HTTP {status}: {data[:200]!r}")
        return json.loads(data)

    def load(self, paths: Iterable[Path]) -> int:
        """POST each Part-10 file to ``/instances``; returns how many Orthanc holds (new or already stored)."""
        count = 0
        for path in paths:
            status, data = self.request("POST", "/instances", body=Path(path).read_bytes(),
                                        headers={"Content-Type": "application/dicom"})
            if status != 200:
                raise PeerError(f"Orthanc refused {path}: HTTP {status} {data[:300]!r}")
            answer = json.loads(data)
            if answer.get("Status") not in ("Success", "AlreadyStored"):
                raise PeerError(f"Orthanc did not store {path}: {answer}")
            count += 1
        self.loaded += count
        return count

    def statistics(self) -> dict[str, Any]:
        return self.get_json("/statistics")

    def instance_count(self) -> int:
        return int(self.statistics()["CountInstances"])

    def clear(self) -> None:
        """Delete every patient (and so every study, series and instance)."""
        for patient in self.get_json("/patients"):
            status, data = self.request("DELETE", f"/patients/{patient}")
            if status != 200:
                raise PeerError(f"DELETE /patients/{patient} -> HTTP {status}: {data[:200]!r}")


# --------------------------------------------------------------------------------------------------
# dcmqrscp


class DcmqrscpPeer:
    """dcmtk's dcmqrscp as a C-FIND/C-GET SCP on a free loopback port, archive in ``workdir``.

    ``load()`` copies files into the storage area and registers them with ``dcmqridx`` (no network;
    works before ``start()`` and while running, dcmqrscp reads the index on every query). Use
    ``load_over_network()`` to go through storescu instead.

    What dcmqrscp 3.6.7 does (pinned in tests/integration/test_peer_harness.py):

    * C-FIND answers: each is converted to the query's SpecificCharacterSet (ASCII when absent) when
      iconv can, else left in the record's own character set, so one C-FIND can mix character sets.
      ISO 2022 IR 87 is not supported by its iconv backend: such records are neither converted nor
      matched by non-ASCII keys in another character set. Matching is case-sensitive.
    * C-GET: works with SCP role selection; it accepts storage contexts with uncompressed transfer
      syntaxes only (by default) and sends every instance of a SOP class on the first accepted
      context of that class, so an instance stored compressed (e.g. RLE) fails its sub-operation
      (study ends 0xB000). Without role selection every sub-operation fails: 0xA702 with the Failed
      SOP Instance UID List.
    """

    binary_name = "dcmqrscp"
    package = "dcmtk"
    # dcmqrscp 3.6.7 clamps larger quotas to these values (and says so in its log).
    MAX_STUDIES = 500
    MAX_BYTES_PER_STUDY_MB = 1024

    def __init__(self, workdir: Path, *, aet: str = "DCMQRSCP", nodelay: bool = True,
                 max_pdu: int = 16384, max_associations: int = 16, disable_get: bool = False,
                 verbose: bool = False, extra_args: Iterable[str] = (),
                 start_timeout: float = 30.0):
        if not re.fullmatch(r"[A-Za-z0-9_\-]{1,16}", aet):
            raise ValueError(f"AE title {aet!r} is not usable in dcmqrscp.cfg")
        self.workdir = Path(workdir).resolve()
        self.aet = aet
        self.nodelay = nodelay
        self.max_pdu = max_pdu
        self.max_associations = max_associations
        self.disable_get = disable_get
        self.verbose = verbose
        self.extra_args = list(extra_args)
        self.start_timeout = start_timeout
        self.host = LOOPBACK
        self.port = 0
        self.storage_dir = self.workdir / "storage"
        self.config_path = self.workdir / "dcmqrscp.cfg"
        self.log_path = self.workdir / "dcmqrscp.log"
        self.startup_seconds: float | None = None
        self.version = dcmtk_version()
        self._process: _Process | None = None
        self.loaded = 0  # files registered by load()
        if re.search(r"\s", str(self.storage_dir)):
            raise ValueError(f"dcmqrscp.cfg cannot hold a storage path with spaces: {self.storage_dir}")

    def config_text(self) -> str:
        return (
            f"# written by tests/peers.py\n"
            f"NetworkTCPPort  = {self.port}\n"
            f"MaxPDUSize      = {self.max_pdu}\n"
            f"MaxAssociations = {self.max_associations}\n"
            f"\nHostTable BEGIN\nHostTable END\n"
            f"\nVendorTable BEGIN\nVendorTable END\n"
            f"\nAETable BEGIN\n"
            f"{self.aet}  {self.storage_dir}  RW  ({self.MAX_STUDIES}, {self.MAX_BYTES_PER_STUDY_MB}mb)  ANY\n"
            f"AETable END\n"
        )

    def start(self) -> DcmqrscpPeer:
        if self._process is not None:
            raise PeerError("dcmqrscp peer already started")
        self._binary = _require_binary(self.binary_name, self.package)
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        _launch(self, self._prepare)
        return self

    def _prepare(self) -> list[str]:
        """Pick a free port, write the configuration; the command line."""
        self.port = free_port()
        self.config_path.write_text(self.config_text(), encoding="ascii")
        # --single-process would serialize associations; keep the default fork model.
        argv = [self._binary, "-c", str(self.config_path)]
        if self.verbose:
            argv.append("-v")
        if self.disable_get:
            argv.append("--disable-get")
        return argv + self.extra_args

    def _wait_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._process.exited:
                raise PeerError(f"dcmqrscp exited during start-up (code "
                                f"{self._process.proc.returncode}):\n{_log_tail(self.log_path)}")
            # Wait for the listening socket first: keeps pynetdicom from logging refused connections.
            if (_port_ready(self.host, self.port) and not self._process.exited
                    and _echo(self.host, self.port, self.aet, timeout=2.0)):
                return
            time.sleep(0.05)
        raise PeerError(f"dcmqrscp not ready after {self.start_timeout:.0f} s:\n"
                        f"{_log_tail(self.log_path)}")

    def stop(self, timeout: float = 10.0) -> None:
        if self._process is not None:
            self._process.stop(timeout)
            self._process = None

    @property
    def running(self) -> bool:
        return self._process is not None and not self._process.exited

    @property
    def pid(self) -> int | None:
        return self._process.proc.pid if self._process is not None else None

    def __enter__(self) -> DcmqrscpPeer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_tail(self, lines: int = 40) -> str:
        return _log_tail(self.log_path, lines)

    def __repr__(self) -> str:
        return f"DcmqrscpPeer(aet={self.aet!r}, {self.host}:{self.port}, nodelay={self.nodelay})"

    # data -----------------------------------------------------------------------------------------

    def load(self, paths: Iterable[Path], *, batch: int = 500) -> int:
        """Copy files into the storage area and index them with dcmqridx; returns how many.

        dcmqridx records file names as given, so they are absolute paths inside the storage area.
        """
        dcmqridx = _require_binary("dcmqridx", self.package)
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        targets: list[str] = []
        for path in paths:
            source = Path(path)
            target = self.storage_dir / f"L{self.loaded + len(targets) + 1:07d}_{source.name}"
            try:
                os.link(source, target)
            except OSError:
                shutil.copyfile(source, target)
            targets.append(str(target))
        for start in range(0, len(targets), batch):
            chunk = targets[start:start + batch]
            result = subprocess.run([dcmqridx, str(self.storage_dir), *chunk],
                                    capture_output=True, text=True, errors="replace",
                                    env=_peer_env(self.nodelay), timeout=300)
            problems = [line for line in (result.stdout + result.stderr).splitlines()
                        if line.startswith(("E:", "F:"))]
            if result.returncode != 0 or problems:
                raise PeerError(f"dcmqridx failed (exit {result.returncode}):\n"
                                + "\n".join(problems or (result.stdout + result.stderr).splitlines()[-20:]))
        self.loaded += len(targets)
        return len(targets)

    def load_over_network(self, paths: Iterable[Path], *, calling_aet: str = "LOADER",
                          batch: int = 500) -> int:
        """storescu the files to the running peer (about 3x slower than ``load()`` with TCP_NODELAY,
        30x without; exercises the SCP's C-STORE). Returns how many instances the index gained. dcmqrscp accepts uncompressed
        transfer syntaxes only unless started with e.g. ``extra_args=["+xr"]``."""
        storescu = _require_binary("storescu", self.package)
        if not self.running:
            raise PeerError("dcmqrscp is not running")
        files = [str(p) for p in paths]
        before = self.instance_count()
        for start in range(0, len(files), batch):
            result = subprocess.run(
                [storescu, "-aet", calling_aet, "-aec", self.aet, self.host, str(self.port),
                 *files[start:start + batch]],
                capture_output=True, text=True, errors="replace", env=_peer_env(self.nodelay),
                timeout=600,
            )
            if result.returncode != 0 or "E:" in result.stderr:
                raise PeerError(f"storescu failed (exit {result.returncode}):\n{result.stderr[-2000:]}"
                                f"\n--- dcmqrscp log ---\n{self.log_tail(20)}")
        gained = self.instance_count() - before
        self.loaded += len(files)
        return gained

    def index_records(self) -> list[dict[str, str]]:
        """The index as dcmqridx -p prints it: one dict per instance record (values as raw text)."""
        dcmqridx = _require_binary("dcmqridx", self.package)
        if not (self.storage_dir / "index.dat").exists():
            return []
        out = subprocess.run([dcmqridx, "-p", str(self.storage_dir)], capture_output=True,
                             timeout=60).stdout.decode("utf-8", errors="replace")
        records: list[dict[str, str]] = []
        for block in out.split("RECORD NUMBER:")[1:]:
            record: dict[str, str] = {}
            for line in block.splitlines()[1:]:
                key, sep, value = line.strip().partition(":")
                if sep and key not in record:
                    record[key] = value.strip().strip('"')
            records.append(record)
        return records

    def instance_count(self) -> int:
        return len(self.index_records())


def node_of(peer: Any, **kwargs: Any) -> Any:
    """A pacspull Node for a running peer (anything with host, port and an ``aet`` or ``ae_title``)."""
    from pacspull.core.nodes import Node

    aet = getattr(peer, "aet", None) or peer.ae_title
    return Node(name="test peer", ae_title=aet, host=peer.host, port=peer.port, **kwargs)
