"""Node validation names the field and the rule; the node book round-trips through JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pacspull.core.errors import InvalidInput
from pacspull.core.nodes import Node, NodeBook, validate_ae_title, validate_host, validate_port


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        ("", "must not be empty"),
        ("    ", "must not be empty"),
        ("A" * 17, "at most 16 characters"),
        ("BAD\\AE", "backslash"),
        ("BAD\nAE", "control characters"),
        ("BAD\x1bAE", "control characters"),
        ("MÜLLER", "plain ASCII"),
    ],
)
def test_bad_ae_titles_are_refused_with_the_rule(value: str, rule: str) -> None:
    with pytest.raises(InvalidInput) as info:
        validate_ae_title(value, "calling AE title")
    assert info.value.field == "calling AE title"
    assert rule in str(info.value)


def test_ae_title_keeps_inner_spaces_and_strips_outer() -> None:
    assert validate_ae_title("  MY AE ") == "MY AE"
    assert validate_ae_title("A" * 16) == "A" * 16


@pytest.mark.parametrize("value", ["0", "65536", "-1", "abc", "", "1.5"])
def test_bad_ports(value: str) -> None:
    with pytest.raises(InvalidInput, match="port: must be a whole number from 1 to 65535"):
        validate_port(value)


@pytest.mark.parametrize("value", ["pacs.example.org", "127.0.0.1", "::1", "PACS-1"])
def test_good_hosts(value: str) -> None:
    assert validate_host(value) == value


@pytest.mark.parametrize("value", ["", "bad host", "-lead.example", "a..b", "x/y"])
def test_bad_hosts(value: str) -> None:
    with pytest.raises(InvalidInput, match="host"):
        validate_host(value)


def test_node_validates_every_field() -> None:
    with pytest.raises(InvalidInput, match="called AE title"):
        Node(name="x", ae_title="", host="h", port=104)
    with pytest.raises(InvalidInput, match="connect timeout"):
        Node(name="x", ae_title="A", host="h", port=104, connect_timeout=0)
    with pytest.raises(InvalidInput, match="max PDU"):
        Node(name="x", ae_title="A", host="h", port=104, max_pdu=100)
    node = Node(name=" Main ", ae_title=" PACS ", host="h", port="104")  # type: ignore[arg-type]
    assert (node.name, node.ae_title, node.port) == ("Main", "PACS", 104)


def test_node_book_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "cfg" / "nodes.json"
    book = NodeBook(path=path)
    book.put(Node(name="Main", ae_title="PACS", host="10.0.0.1", port=104))
    book.put(Node(name="Müller's PACS", ae_title="B", host="b", port=11112, calling_ae="ME"))
    book.selected = "Main"
    book.save()
    again = NodeBook.load(path)
    assert again.nodes == book.nodes
    assert again.selected == "Main"
    assert json.loads(path.read_text(encoding="utf-8"))["nodes"][1]["name"] == "Müller's PACS"
    assert [p.name for p in path.parent.iterdir()] == ["nodes.json"]  # no temp file left


def test_node_book_duplicates_unknown_and_remove(tmp_path: Path) -> None:
    book = NodeBook(path=tmp_path / "nodes.json")
    book.put(Node(name="Main", ae_title="PACS", host="h", port=104))
    with pytest.raises(InvalidInput, match="already exists"):
        book.put(Node(name="main", ae_title="X", host="h", port=104))
    book.put(Node(name="main", ae_title="X", host="h", port=104), replace=True)
    assert book.get("MAIN").ae_title == "X"
    with pytest.raises(InvalidInput, match="no node named 'nope'; known nodes: 'main'"):
        book.get("nope")
    book.selected = "main"
    book.remove("main")
    assert len(book) == 0 and book.selected is None


def test_corrupt_node_book_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "nodes.json"
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(InvalidInput, match="node book: cannot read"):
        NodeBook.load(path)


def test_retrieved_studies_go_to_the_users_downloads_folder_by_default(monkeypatch: pytest.MonkeyPatch,
                                                                       tmp_path: Path) -> None:
    """Where a file manager shows them at once (not in a hidden app-data folder); PACSPULL_DATA_DIR, which
    moves everything PacsPull writes, moves this too."""
    import platformdirs

    from pacspull.core.settings import AppSettings, default_destination

    monkeypatch.delenv("PACSPULL_DATA_DIR", raising=False)
    monkeypatch.setattr(platformdirs, "user_downloads_dir", lambda: str(tmp_path / "Downloads"))
    monkeypatch.setattr(platformdirs, "user_data_dir", lambda *a, **k: str(tmp_path / "appdata"))
    assert default_destination() == tmp_path / "Downloads" / "PacsPull"
    assert AppSettings().destination == tmp_path / "Downloads" / "PacsPull"
    # Studies retrieved into the earlier default stay found (and skipped when retrieved again).
    (tmp_path / "appdata" / "Downloads").mkdir(parents=True)
    assert default_destination() == tmp_path / "Downloads" / "PacsPull"  # an empty one does not count
    (tmp_path / "appdata" / "Downloads" / "Doe_Jane").mkdir()
    assert default_destination() == tmp_path / "appdata" / "Downloads"
    monkeypatch.setenv("PACSPULL_DATA_DIR", str(tmp_path / "data"))
    assert default_destination() == tmp_path / "data" / "Downloads"
