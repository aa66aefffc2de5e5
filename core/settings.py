"""Application settings the user edits in the Settings dialog, persisted as JSON in the config folder.

Qt-free on purpose: the CLI and the retrieve engine read the same file. Window geometry is not here
(the GUI keeps that in a QSettings file of its own).
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from pacspull.core.errors import InvalidInput
from pacspull.core.nodes import (
    APP_NAME,
    DEFAULT_CALLING_AE,
    config_dir,
    data_dir,
    validate_ae_title,
    validate_timeout,
)
from pacspull.core.query import DEFAULT_LIMIT
from pacspull.core.storage import DEFAULT_LAYOUT, validate_layout

SETTINGS_FILE = "settings.json"
MAX_RESULTS_LIMIT = 100_000
# Retrieves the window runs at once. A PACS serves few associations per client well; more rarely helps.
MAX_PARALLEL_RETRIEVES = 4


def default_destination() -> Path:
    """Where retrieved studies go unless the user chose a folder: ``PacsPull`` in the user's Downloads folder,
    where a file manager shows it at once. ``<data dir>/Downloads``, the default of earlier versions, while
    it holds anything, and when ``PACSPULL_DATA_DIR`` moves all PacsPull writes (tests, portable set-ups)."""
    earlier = data_dir() / "Downloads"  # the default before; where PACSPULL_DATA_DIR puts it
    if os.environ.get("PACSPULL_DATA_DIR") or _holds_anything(earlier):
        return earlier  # (a user's earlier retrieves stay where they are, and are skipped when asked again)
    return Path(platformdirs.user_downloads_dir()) / APP_NAME


def _holds_anything(folder: Path) -> bool:
    try:
        return any(folder.iterdir())
    except OSError:
        return False


def validate_destination(value: str | os.PathLike[str], field_name: str = "destination folder") -> Path:
    """Return the destination as an absolute path, or raise InvalidInput naming the rule.

    The folder need not exist yet (the retrieve creates it), but it must not be a file.
    """
    text = str(value).strip()
    if not text:
        raise InvalidInput(field_name, "must not be empty")
    path = Path(text).expanduser()
    if not path.is_absolute():
        raise InvalidInput(field_name, "must be an absolute path", value=text)
    if path.exists() and not path.is_dir():
        raise InvalidInput(field_name, "must be a folder, not a file", value=text)
    return path


def validate_max_results(value: object, field_name: str = "maximum results") -> int:
    """Return the row cap for one query (1..100000) or raise InvalidInput."""
    try:
        count = int(str(value).strip())
    except (TypeError, ValueError):
        raise InvalidInput(field_name, f"must be a whole number from 1 to {MAX_RESULTS_LIMIT}", value=value) from None
    if not 1 <= count <= MAX_RESULTS_LIMIT:
        raise InvalidInput(field_name, f"must be a whole number from 1 to {MAX_RESULTS_LIMIT}", value=value)
    return count


def validate_parallel_retrieves(value: object, field_name: str = "parallel retrieves") -> int:
    """Return how many retrieves may run at once (1..``MAX_PARALLEL_RETRIEVES``) or raise InvalidInput."""
    rule = f"must be a whole number from 1 to {MAX_PARALLEL_RETRIEVES}"
    if isinstance(value, bool):  # JSON true/false is not a count, though Python's int() would take it
        raise InvalidInput(field_name, rule, value=value)
    try:
        count = int(str(value).strip())
    except (TypeError, ValueError):
        raise InvalidInput(field_name, rule, value=value) from None
    if not 1 <= count <= MAX_PARALLEL_RETRIEVES:
        raise InvalidInput(field_name, rule, value=value)
    return count


@dataclass(frozen=True)
class AppSettings:
    """What the user set once: where studies go, how files are named, defaults for new nodes, transfers at once."""

    destination: Path = dataclasses.field(default_factory=default_destination)
    layout: str = DEFAULT_LAYOUT
    calling_ae: str = DEFAULT_CALLING_AE
    connect_timeout: float = 10.0
    acse_timeout: float = 30.0
    dimse_timeout: float = 60.0
    max_results: int = DEFAULT_LIMIT
    # 1: transfers run one after another. The CLI runs one retrieve per call and ignores it.
    parallel_retrieves: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "destination", validate_destination(self.destination))
        layout = (self.layout or "").strip()
        validate_layout(layout)
        object.__setattr__(self, "layout", layout)
        object.__setattr__(self, "calling_ae", validate_ae_title(self.calling_ae, "calling AE title"))
        for name in ("connect_timeout", "acse_timeout", "dimse_timeout"):
            object.__setattr__(self, name, validate_timeout(getattr(self, name), name.replace("_", " ")))
        object.__setattr__(self, "max_results", validate_max_results(self.max_results))
        object.__setattr__(self, "parallel_retrieves", validate_parallel_retrieves(self.parallel_retrieves))

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict."""
        data = dataclasses.asdict(self)
        data["destination"] = str(self.destination)
        return data

    @classmethod
    def from_json(cls, data: dict[str, object]) -> AppSettings:
        """Build settings from ``to_json`` output; unknown keys (newer versions) are ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})  # type: ignore[arg-type]


def settings_path() -> Path:
    """Where the settings file lives (follows ``PACSPULL_CONFIG_DIR``)."""
    return config_dir() / SETTINGS_FILE


def load_settings(path: Path | None = None) -> AppSettings:
    """Read the settings; a missing file gives the defaults, an unreadable one a clear InvalidInput."""
    path = path or settings_path()
    if not path.exists():
        return AppSettings()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        raise InvalidInput("settings", f"cannot read {path}: {exc}") from None
    return AppSettings.from_json(data)


def save_settings(settings: AppSettings, path: Path | None = None) -> None:
    """Write the settings atomically (temp file in the same folder, then ``os.replace``)."""
    path = path or settings_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"version": 1, **settings.to_json()}
    fd, tmp = tempfile.mkstemp(prefix=".settings-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(payload, fh, indent=2, ensure_ascii=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
