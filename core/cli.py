"""``pacspull``: the headless face of the engine, for technicians' scripts, tests and benchmarks.

Exit codes (stable; scripts rely on them):
  0  success
  1  some sub-operations failed, or the operation was cancelled
  2  bad input (a value breaks a rule; the message names the field)
  3  could not connect to or associate with the PACS
  4  the PACS refused or failed the service
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import unicodedata
from pathlib import Path
from collections.abc import Sequence
from typing import Any, NoReturn

from pacspull.core import __version__
from pacspull.core.errors import ConnectionFailed, InvalidInput, NotFound, PacsPullError
from pacspull.core.nodes import (
    DEFAULT_CALLING_AE,
    DEMO_NODE_NAME,
    IDENTITY_TYPES,
    Node,
    NodeBook,
    validate_ae_title,
    validate_port_or_zero,
    validate_timeout,
)
from pacspull.core.query import DATE_HELP, Level, QueryRequest, parse_date

EXIT_CODES = """exit codes:
  0  success
  1  some sub-operations failed, or cancelled
  2  bad input (the message names the field and the rule)
  3  could not connect to or associate with the PACS
  4  the PACS refused or failed the service
"""


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error on one line and exits 2, as every other bad input does."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _connection_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("connection (give --node, or --host, --port and --aet)")
    group.add_argument("--node", metavar="NAME", help="a node saved with 'pacspull nodes add'")
    group.add_argument("--host", metavar="H", help="PACS host name or IP address")
    group.add_argument("--port", metavar="P", help="PACS DICOM port (1-65535)")
    group.add_argument("--aet", metavar="CALLED", help="the PACS's AE title (the called AE)")
    group.add_argument(
        "--calling-aet", metavar="AET", help=f"our AE title (default: the node's, else {DEFAULT_CALLING_AE})"
    )
    group.add_argument("--timeout", metavar="S", type=str, help="connect/association/response timeout in seconds "
                       "(default: the node's, else 10 s connect, 30 s association, 60 s response)")
    _security_options(parser)


def _security_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("security (TLS and user identity; a saved node keeps its own)")
    group.add_argument("--tls", action="store_true", default=None, help="DICOM over TLS (1.2 or newer)")
    group.add_argument("--tls-ca", metavar="FILE", help="PEM file of the CA(s) that signed the PACS certificate "
                       "(default: the system's CAs)")
    group.add_argument("--tls-cert", metavar="FILE", help="our client certificate (PEM), if the PACS asks for one")
    group.add_argument("--tls-key", metavar="FILE", help="the key of --tls-cert (PEM)")
    group.add_argument("--no-verify-hostname", action="store_true", default=None,
                       help="accept a PACS certificate issued for another host name (the CA is still checked)")
    group.add_argument("--user-identity", metavar="TYPE", choices=list(IDENTITY_TYPES),
                       help="none, username, password, kerberos, saml or jwt (default none)")
    group.add_argument("--user", metavar="NAME", help="user name for --user-identity username/password")
    group.add_argument("--secret-stdin", action="store_true",
                       help="read the password or token from standard input (first line)")
    group.add_argument("--identity-positive-response", action="store_true", default=None,
                       help="require the PACS to confirm the user identity")
    group.add_argument("--allow-plain-credentials", action="store_true", default=None,
                       help="allow sending a password or token without TLS (unsafe)")


_SECURITY_FIELDS = {
    "tls": "tls", "tls_ca": "tls_ca_file", "tls_cert": "tls_cert_file", "tls_key": "tls_key_file",
    "user_identity": "identity", "user": "identity_user",
    "identity_positive_response": "identity_positive_response",
    "allow_plain_credentials": "allow_plain_credentials",
}


def _with_security(node: Node, args: argparse.Namespace) -> Node:
    """Apply the security options given on the command line; a secret from stdin is kept for this run."""
    changes = {field: getattr(args, opt) for opt, field in _SECURITY_FIELDS.items()
               if getattr(args, opt, None) is not None}
    if getattr(args, "no_verify_hostname", None):
        changes["tls_verify_hostname"] = False
    if changes:
        node = Node(**{**node.to_json(), **changes})  # type: ignore[arg-type]
    if getattr(args, "secret_stdin", False):
        from pacspull.core.credentials import remember_for_run

        secret = sys.stdin.readline().rstrip("\r\n")
        if not secret:
            raise InvalidInput("--secret-stdin", "standard input gave an empty password or token")
        remember_for_run(node.name, secret)
    return node


def _query_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("query keys (empty matches anything; * and ? are wildcards)")
    group.add_argument("--patient-name", metavar="NAME", default="", help="e.g. 'Müller*' or 'DOE^JOHN'")
    group.add_argument("--patient-id", metavar="ID", default="")
    group.add_argument("--accession", metavar="ACC", default="")
    group.add_argument("--date", metavar="WHEN", default="", help=f"study date: {DATE_HELP}")
    group.add_argument("--modality", metavar="MOD", action="append", default=[],
                       help="CT, MR, ... (repeat for several)")
    group.add_argument("--description", metavar="TEXT", default="", help="study description")
    group.add_argument("--study-uid", metavar="UID", action="append", default=[], help="repeatable")
    group.add_argument("--series-uid", metavar="UID", action="append", default=[], help="repeatable")


def _verbose_option(parser: argparse.ArgumentParser, dest: str, default: Any) -> None:
    """-v/-vv, wherever it is given: main() adds the counts up."""
    parser.add_argument("-v", "--verbose", action="count", dest=dest, default=default,
                        help="-v: association events; -vv: pynetdicom debug (no patient data)")


def build_parser() -> argparse.ArgumentParser:
    """The whole command line (also used by the README and tests)."""
    parser = _Parser(
        prog="pacspull",
        description="Query and retrieve DICOM studies (C-ECHO, C-FIND, C-GET).",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"pacspull {__version__}")
    _verbose_option(parser, "verbose", 0)
    parser.add_argument("--log-identifiers", action="store_true",
                        help="with -vv, also log query identifiers: this prints patient data")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text, epilog=EXIT_CODES,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        _verbose_option(p, "sub_verbose", 0)  # also after the command (`pacspull get ... -v`)
        return p

    p = command("echo", "C-ECHO the PACS: is it there and does it accept us?")
    _connection_options(p)
    p.add_argument("--json", action="store_true", help="print a JSON object")

    p = command("diagnose", "staged connectivity check: resolve, connect, associate, echo, find, get")
    _connection_options(p)
    p.add_argument("--json", action="store_true", help="print a JSON report")

    p = command("find", "search the PACS (Study Root C-FIND)")
    _connection_options(p)
    _query_options(p)
    p.add_argument("--level", choices=["study", "series", "image"], default="study", help="default: study")
    p.add_argument("--limit", metavar="N", type=int, default=1000, help="stop after N rows (default 1000)")
    p.add_argument("--json", action="store_true", help="print one JSON array of rows keyed by DICOM keyword")

    p = command("get", "retrieve studies or series with C-GET into a folder")
    _connection_options(p)
    _query_options(p)
    group = p.add_argument_group("where and how")
    group.add_argument("--out", metavar="DIR", default=".", help="destination folder (default: the current folder)")
    group.add_argument("--layout", metavar="TEMPLATE", help="folder layout under DIR, DICOM keywords in braces "
                       "(default: {PatientName}_{PatientID}/{StudyDate}_{StudyDescription}_{AccessionNumber}/"
                       "{SeriesNumber}_{Modality}_{SeriesDescription}/{SOPInstanceUID}.dcm)")
    group.add_argument("--uncompressed-only", action="store_true",
                       help="accept only uncompressed transfer syntaxes (the PACS must decompress)")
    group.add_argument("--no-skip", action="store_true",
                       help="fetch instances again even if the destination already has them")
    group.add_argument("--json", action="store_true", help="print the final summary as a JSON object")

    p = command("demo-pacs", "run the embedded demo PACS (C-ECHO, C-FIND, C-GET) until Ctrl-C")
    p.add_argument("--port", metavar="P", default="11112", help="port to listen on; 0 picks a free one "
                   "(default 11112)")
    p.add_argument("--aet", metavar="AET", default="PACSPULL_DEMO", help="its AE title (default PACSPULL_DEMO)")
    p.add_argument("--host", metavar="H", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--data-dir", metavar="DIR", help="sample data folder (default: the app data folder)")

    p = command("nodes", "manage saved nodes")
    nodes = p.add_subparsers(dest="nodes_command", metavar="ACTION", parser_class=_Parser)
    nodes.required = True

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        n = nodes.add_parser(name, help=help_text)
        _verbose_option(n, "sub_verbose", argparse.SUPPRESS)  # (counting on from a -v before the action)
        return n

    n = action("add", "save a node")
    n.add_argument("name", metavar="NAME", help="what to call it (--node NAME in the other commands)")
    n.add_argument("--host", metavar="H", required=True, help="the PACS's host name or IP address")
    n.add_argument("--port", metavar="P", required=True, help="its DICOM port (1-65535; often 104 or 11112)")
    n.add_argument("--aet", metavar="CALLED", required=True, help="the PACS's AE title (1-16 characters)")
    n.add_argument("--calling-aet", metavar="AET", default=DEFAULT_CALLING_AE,
                   help=f"this computer's AE title, as the PACS knows it (default {DEFAULT_CALLING_AE})")
    n.add_argument("--timeout", metavar="S", help="all timeouts, in seconds")
    n.add_argument("--replace", action="store_true", help="update the node if it exists")
    _security_options(n)
    n = action("list", "list saved nodes")
    n.add_argument("--json", action="store_true", help="print them as a JSON array")
    n = action("remove", "forget a node")
    n.add_argument("name", metavar="NAME")
    n = action("test", "diagnose a saved node")
    n.add_argument("name", metavar="NAME")
    n.add_argument("--json", action="store_true", help="print a JSON report")
    return parser


def node_from_args(args: argparse.Namespace) -> Node:
    """The node the connection options describe; every value validated, errors name the option."""
    if args.node:
        if any(v is not None for v in (args.host, args.port, args.aet)):
            raise InvalidInput("--node", "give either --node or --host/--port/--aet, not both")
        node = NodeBook.load().get(args.node)
        if args.calling_aet:
            node = Node(**{**node.to_json(), "calling_ae": args.calling_aet})  # type: ignore[arg-type]
    else:
        missing = [opt for opt, value in (("--host", args.host), ("--port", args.port), ("--aet", args.aet))
                   if value is None]
        if missing:
            raise InvalidInput("connection", "give --node NAME, or all of --host, --port and --aet "
                               f"(missing {', '.join(missing)})")
        node = Node(name="command line", ae_title=args.aet, host=args.host, port=args.port,
                    calling_ae=args.calling_aet or DEFAULT_CALLING_AE)
    if args.timeout is not None:
        node = node.with_timeout(validate_timeout(args.timeout, "--timeout"))
    return _with_security(node, args)


def _print_json(value: Any) -> None:
    sys.stdout.buffer.write(json.dumps(value, ensure_ascii=False, indent=2).encode("utf-8") + b"\n")
    sys.stdout.flush()


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain text table that stays aligned with CJK (double-width) characters."""
    widths = [max([_width(h)] + [_width(r[i]) for r in rows]) for i, h in enumerate(headers)]
    lines = []
    for cells in [list(headers)] + [list(r) for r in rows]:
        lines.append("  ".join(c + " " * (w - _width(c)) for c, w in zip(cells, widths)).rstrip())
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return "\\".join(value)
    return str(value)


_COLUMNS = {
    Level.STUDY: ["PatientName", "PatientID", "StudyDate", "ModalitiesInStudy", "StudyDescription",
                  "AccessionNumber", "NumberOfStudyRelatedInstances", "StudyInstanceUID"],
    Level.SERIES: ["StudyInstanceUID", "SeriesNumber", "Modality", "SeriesDescription",
                   "NumberOfSeriesRelatedInstances", "SeriesInstanceUID"],
    Level.IMAGE: ["SeriesInstanceUID", "InstanceNumber", "SOPClassUID", "SOPInstanceUID"],
}
_SHORT = {"ModalitiesInStudy": "Modalities", "NumberOfStudyRelatedInstances": "Instances",
          "NumberOfSeriesRelatedInstances": "Instances", "AccessionNumber": "Accession",
          "StudyDescription": "Description", "SeriesDescription": "Description"}


def cmd_echo(args: argparse.Namespace) -> int:
    from pacspull.core.echo import echo

    node = node_from_args(args)
    result = echo(node)
    if args.json:
        _print_json({"ok": True, "node": node.address, "status": result.status.code, "seconds": result.seconds})
    else:
        print(f"C-ECHO {node.address} as {node.calling_ae!r}: success in {result.seconds * 1000:.1f} ms")
    return 0


def _print_report(report: Any) -> None:
    marks = {True: "ok  ", False: "FAIL", None: "--  "}
    for stage in report.stages:
        line = f"[{marks[stage.ok]}] {stage.name:<9} {stage.seconds * 1000:8.1f} ms  {stage.detail}"
        print(line)
        if stage.hint:
            print(f"{'':16}hint: {stage.hint}")
    if report.contexts:
        print("\nPresentation contexts:")
        for cx in report.contexts:
            print(f"  {'+' if cx.accepted else '-'} {cx.describe()}")
    failed = report.failed_stage
    print("\nAll stages passed." if report.ok else f"\nFailed at stage '{failed.name}'." if failed else "")


def _diagnose_exit(report: Any) -> int:
    failed = report.failed_stage
    if failed is None:
        return 0
    return 3 if failed.name in ("resolve", "connect", "associate") else 4


def cmd_diagnose(args: argparse.Namespace, node: Node | None = None) -> int:
    from pacspull.core.diagnose import diagnose

    node = node or node_from_args(args)
    report = diagnose(node)
    if args.json:
        _print_json(report.to_json())
    else:
        print(f"Diagnosing {node.address} as calling AE {node.calling_ae!r}\n")
        _print_report(report)
    return _diagnose_exit(report)


def cmd_find(args: argparse.Namespace) -> int:
    from pacspull.core.query import find

    request = QueryRequest(
        level=Level(args.level.upper()),
        patient_name=args.patient_name,
        patient_id=args.patient_id,
        accession=args.accession,
        date=parse_date(args.date),
        modalities=tuple(args.modality),
        study_description=args.description,
        study_uids=tuple(args.study_uid),
        series_uids=tuple(args.series_uid),
        limit=args.limit,
    )
    node = node_from_args(args)
    result = find(node, request)
    if args.json:
        _print_json([row.to_json() for row in result.rows])
    else:
        columns = _COLUMNS[request.level]
        rows = [[_cell(row.to_json()[k]) for k in columns] for row in result.rows]
        print(_table([_SHORT.get(c, c) for c in columns], rows))
        print(f"\n{len(result.rows)} {request.level.value.lower()} row(s)")
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if result.capped:
        print(f"warning: results capped at {len(result.rows)} rows; narrow the query or raise --limit",
              file=sys.stderr)
    return 0


def _get_requests(args: argparse.Namespace, node: Node) -> list[Any]:
    """What ``get`` fetches: the given UIDs, or every study the query keys match."""
    from pacspull.core.get import RetrieveRequest
    from pacspull.core.query import find

    if args.series_uid and len(args.study_uid) != 1:
        raise InvalidInput("--series-uid", "needs exactly one --study-uid: the study the series belong to")
    request = QueryRequest(
        patient_name=args.patient_name, patient_id=args.patient_id, accession=args.accession,
        date=parse_date(args.date), modalities=tuple(args.modality), study_description=args.description,
        study_uids=tuple(args.study_uid), series_uids=tuple(args.series_uid),
    )
    if request.study_uids:
        if request.series_uids:
            return [RetrieveRequest(request.study_uids[0], series_uids=request.series_uids)]
        return [RetrieveRequest(uid) for uid in request.study_uids]
    if not any((request.patient_name, request.patient_id, request.accession, request.date, request.modalities,
                request.study_description)):
        raise InvalidInput("get", "give --study-uid, or query keys (--patient-id, --date, ...) to retrieve "
                           "every matching study; an empty query would fetch the whole PACS")
    rows = find(node, request).rows
    if not rows:
        raise NotFound("no study on the PACS matches the query keys", stage="get")
    return [RetrieveRequest(r.study_uid, label=f"{r.patient_name or ''} {r.study_date or ''} "
                            f"{r.description or ''}".strip(), sop_classes=tuple(r.sop_classes or ()),
                            expected=r.instance_count)
            for r in rows if r.study_uid]


def _human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.1f} GB"


def cmd_get(args: argparse.Namespace) -> int:
    import threading
    import time

    from pacspull.core.get import Retrieval, RetrievalListener, RetrieveOptions
    from pacspull.core.progress import CancelToken
    from pacspull.core.storage import DEFAULT_LAYOUT, StudyWriter

    node = node_from_args(args)
    writer = StudyWriter(Path(args.out), layout=args.layout or DEFAULT_LAYOUT)
    requests = _get_requests(args, node)
    live = sys.stderr.isatty() and not args.json

    class Progress(RetrievalListener):
        last = 0.0

        def progress(self, snapshot: Any) -> None:
            now = time.monotonic()
            if not live or now - self.last < 0.1:
                return
            self.last = now
            total = f"/{snapshot.total}" if snapshot.total is not None else ""
            eta = snapshot.eta_seconds
            line = (f"[{snapshot.request_index}/{snapshot.request_count}] {snapshot.done}{total} done, "
                    f"{snapshot.failed} failed, {snapshot.skipped} skipped, "
                    f"{snapshot.bytes_per_second / 1e6:.1f} MB/s" + (f", ETA {eta:.0f} s" if eta is not None else ""))
            sys.stderr.write("\r" + line[:120].ljust(120))
            sys.stderr.flush()

    cancel = CancelToken()
    options = RetrieveOptions(uncompressed_only=args.uncompressed_only, skip_existing=not args.no_skip)
    retrieval = Retrieval(node, requests, writer, listener=Progress(), cancel=cancel, options=options)
    result: list[Any] = []
    worker = threading.Thread(target=lambda: result.append(retrieval.run()), name="pacspull-get")
    worker.start()
    try:
        while worker.is_alive():
            worker.join(0.2)
    except KeyboardInterrupt:
        # Ctrl-C: C-CANCEL, keep what arrived, print the summary, exit 1.
        print("\ncancelling (C-CANCEL sent; waiting for the PACS to stop)...", file=sys.stderr)
        cancel.cancel()
        worker.join()
    if live:
        sys.stderr.write("\r" + " " * 120 + "\r")
    summary = result[0]
    if args.json:
        _print_json(summary.to_json())
    else:
        _print_summary(summary)
    if summary.error is not None:
        _explain_demo_node(args, summary.error)
        if not args.json:
            print(f"pacspull get: {summary.error}", file=sys.stderr)
    return summary.exit_code


def _print_summary(summary: Any) -> None:
    done = summary.total("completed") + summary.total("warning")
    rate = summary.total("bytes_received") / summary.seconds / 1e6 if summary.seconds else 0.0
    state = "cancelled: kept" if summary.cancelled else "retrieved" if summary.ok else "incomplete: kept"
    print(f"{state} {done} instance(s), {_human_bytes(summary.total('bytes_received'))} in {summary.seconds:.1f} s "
          f"({rate:.1f} MB/s) into {summary.destination}")
    print(f"  failed {summary.total('failed')}, warnings {summary.total('warning')}, "
          f"skipped (already there) {summary.total('skipped')}")
    for outcome in summary.outcomes:
        status = "no final response" if outcome.status is None else str(outcome.status)
        print(f"  {outcome.request.describe()}: {outcome.completed + outcome.warning} stored, {outcome.failed} failed"
              f", {outcome.skipped} skipped; {status}")
        for issue in outcome.failures + outcome.warnings:
            print(f"    {issue.sop_instance_uid}: {issue.status}: {issue.reason}")
        for note in outcome.notes:
            print(f"    note: {note}")
        if outcome.error:
            print(f"    error: {outcome.error}")


def cmd_demo_pacs(args: argparse.Namespace) -> int:
    port = validate_port_or_zero(args.port, "--port")
    aet = validate_ae_title(args.aet, "--aet")
    from pacspull.core.demo_pacs import DemoPacs

    pacs = DemoPacs(ae_title=aet, host=args.host, port=port,
                    data_dir=Path(args.data_dir) if args.data_dir else None)
    pacs.start()
    print(f"Demo PACS {aet!r} listening on {pacs.host}:{pacs.port} (Ctrl-C to stop)", flush=True)
    try:
        pacs.serve_forever()
    finally:
        pacs.stop()
    return 0


def cmd_nodes(args: argparse.Namespace) -> int:
    book = NodeBook.load()
    if args.nodes_command == "add":
        node = Node(name=args.name, ae_title=args.aet, host=args.host, port=args.port,
                    calling_ae=args.calling_aet)
        if args.timeout is not None:
            node = node.with_timeout(validate_timeout(args.timeout, "--timeout"))
        node = _with_security(node, args)
        if node.identity_has_secret and not node.tls and not node.allow_plain_credentials:
            # Refused now, not at every later use of the node.
            raise InvalidInput("--user-identity", f"{node.identity} sends a secret: give --tls, or "
                               "--allow-plain-credentials to send it unencrypted over plain TCP")
        if args.secret_stdin:
            from pacspull.core.credentials import get_secret, store_secret

            store_secret(node.name, get_secret(node.name) or "")
        book.put(node, replace=args.replace)
        book.selected = book.selected or node.name
        book.save()
        print(f"saved node {node.name!r}: {node.address} (calling AE {node.calling_ae!r}) in {book.path}")
    elif args.nodes_command == "list":
        if args.json:
            _print_json([dict(n.to_json(), selected=n.name == book.selected) for n in book])
        elif not len(book):
            print("no nodes saved; add one with 'pacspull nodes add NAME --host H --port P --aet AET'")
        else:
            rows = [["*" if n.name == book.selected else "", n.name, n.ae_title, n.host, str(n.port), n.calling_ae]
                    for n in book]
            print(_table(["", "Name", "Called AE", "Host", "Port", "Calling AE"], rows))
    elif args.nodes_command == "remove":
        from pacspull.core.credentials import delete_secret

        node = book.remove(args.name)
        book.save()
        delete_secret(node.name)
        print(f"removed node {node.name!r}")
    elif args.nodes_command == "test":
        return cmd_diagnose(args, book.get(args.name))
    return 0


class _UserFormatter(logging.Formatter):
    """Without -v, a warning reads like the CLI's other messages: ``pacspull get: warning: ...``."""

    def __init__(self, command: str) -> None:
        super().__init__()
        self.command = command

    def format(self, record: logging.LogRecord) -> str:
        text = f"pacspull {self.command}: {record.levelname.lower()}: {record.getMessage()}"
        return text + "\n" + self.formatException(record.exc_info) if record.exc_info else text


def _configure_logging(verbosity: int, log_identifiers: bool, command: str = "") -> None:
    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    root = logging.getLogger()
    if not root.handlers:  # (what logging.basicConfig does; a test runner has its own handlers)
        handler = logging.StreamHandler(sys.stderr)
        # -v and up: level and logger name, for whoever debugs
        handler.setFormatter(_UserFormatter(command) if verbosity == 0
                             else logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
        root.setLevel(logging.WARNING)
    logging.getLogger("pacspull").setLevel(level)
    # pynetdicom is chatty at INFO; only -vv shows it. Without -v even its errors are ours to report.
    logging.getLogger("pynetdicom").setLevel(logging.DEBUG if verbosity >= 2 else logging.CRITICAL)
    # pynetdicom's debug dump of an association request prints a password in clear: masked, always.
    from pacspull.core.credentials import install_log_masking

    install_log_masking()
    if log_identifiers:
        from pacspull.core.association import enable_identifier_logging

        enable_identifier_logging(True)


COMMANDS = {
    "echo": cmd_echo,
    "diagnose": cmd_diagnose,
    "find": cmd_find,
    "get": cmd_get,
    "demo-pacs": cmd_demo_pacs,
    "nodes": cmd_nodes,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit code (so tests call it directly)."""
    args = build_parser().parse_args(argv)
    args.verbose += getattr(args, "sub_verbose", 0)
    _configure_logging(args.verbose, args.log_identifiers, args.command)
    try:
        return COMMANDS[args.command](args)
    except PacsPullError as exc:
        _explain_demo_node(args, exc)
        print(f"pacspull {args.command}: {exc}", file=sys.stderr)
        if getattr(args, "json", False):  # a script reading stdout gets the failure as JSON too
            _print_json({"ok": False, "error": exc.message, "stage": exc.stage or None, "hint": exc.hint or None,
                         "exit_code": exc.exit_code})
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"pacspull {args.command}: cancelled", file=sys.stderr)
        return 1


def _explain_demo_node(args: argparse.Namespace, exc: PacsPullError) -> None:
    """The window saves its demo node in the shared nodes.json; with the window closed nothing listens there."""
    if isinstance(exc, ConnectionFailed) and getattr(args, "node", None) == DEMO_NODE_NAME:
        exc.hint = (f"the {DEMO_NODE_NAME!r} node is the demo PACS inside the PacsPull window, which runs only "
                    "while the window is open; 'pacspull demo-pacs' starts one of its own")


def run() -> NoReturn:
    """``main()``, then end the process without the interpreter's teardown.

    Freeing pydicom's and pynetdicom's tables object by object takes about 0.1 s after the work is
    done. Everything that normal exit does for us happens first: non-daemon threads are waited for,
    atexit handlers run (logging's flush among them), stdout and stderr are flushed. An exception
    from ``main()`` takes Python's normal path (traceback, full teardown).
    """
    code = main()
    import atexit
    import os
    import threading

    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed, or a broken pipe: nothing left to save
            pass
    os._exit(code)


if __name__ == "__main__":
    run()
