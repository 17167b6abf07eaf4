"""No status changes anywhere but ``store/transitions.py``: a scan of the source.

It looks for the three ways the code could write a status: an SQLAlchemy
``update(deliveries | campaigns)`` (or ``table.update()``) whose values name
``status``; SQL text that updates a status; and, in the store, a dict that sets
``"status"`` (what :class:`~mailsched.store.bulk.KeyedUpdate` is given).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import mailsched

SOURCE = Path(mailsched.__file__).parent
THE_ONE_PLACE = SOURCE / "store" / "transitions.py"
TABLES = {"deliveries", "campaigns"}
SQL_STATUS_UPDATE = re.compile(
    r"\bUPDATE\s+(deliveries|campaigns)\b.*\bstatus\s*=|\bstatus\s*=\s*CASE\b", re.I | re.S
)


def status_writes(path: Path, *, in_store: bool) -> list[str]:
    """Where ``path`` writes a delivery's or campaign's status, as ``file:line`` notes."""
    tree = ast.parse(path.read_text(), str(path))
    found: list[str] = []
    for node in ast.walk(tree):
        where = f"{path.name}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Call) and _is_values_of_table_update(node):
            names = {k.arg for k in node.keywords}
            names |= {
                k.value
                for a in node.args
                if isinstance(a, ast.Dict)
                for k in a.keys
                if isinstance(k, ast.Constant)
            }
            if "status" in names:
                found.append(f"{where}: update(...).values(status=...)")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if SQL_STATUS_UPDATE.search(node.value):
                found.append(f"{where}: SQL that updates a status")
        elif in_store and isinstance(node, ast.Dict):
            keys = {k.value for k in node.keys if isinstance(k, ast.Constant)}
            if "status" in keys:
                found.append(f'{where}: a dict that sets "status"')
    return found


def _is_values_of_table_update(call: ast.Call) -> bool:
    """``<...update(deliveries)...>.values(...)`` or ``deliveries.update()...values(...)``."""
    if not (isinstance(call.func, ast.Attribute) and call.func.attr == "values"):
        return False
    node: ast.AST = call.func.value
    while True:
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id == "update":
                return any(isinstance(a, ast.Name) and a.id in TABLES for a in node.args)
            if (
                isinstance(func, ast.Attribute)
                and func.attr == "update"
                and isinstance(func.value, ast.Name)
                and func.value.id in TABLES
            ):
                return True
            node = func
        elif isinstance(node, ast.Attribute):
            node = node.value
        else:
            return False


def test_no_status_is_written_outside_the_transition_module() -> None:
    writes = [
        note
        for path in sorted(SOURCE.rglob("*.py"))
        if path != THE_ONE_PLACE and "migrations" not in path.parts
        for note in status_writes(path, in_store=path.parent.name == "store")
    ]
    assert writes == []


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        ("update(deliveries).where(deliveries.c.id == 1).values(status='SENT')", "values"),
        ("update(campaigns).values(completed_at=None, status=s)", "values"),
        ("campaigns.update().where(x).values({'status': 'RUNNING'})", "values"),
        ("'UPDATE deliveries SET attempts = 1, status = ? WHERE id = ?'", "SQL"),
        ("'update campaigns set status = %s'", "SQL"),
        ("('status = CASE status WHEN {} THEN {} ELSE status END', x)", "SQL"),
        ("{'status': 'SENT', 'lease_owner': None}", "dict"),
    ],
)
def test_the_scan_finds_each_kind_of_status_write(tmp_path: Path, line: str, kind: str) -> None:
    """The scan is not blind: each way of writing a status is caught."""
    sample = tmp_path / "sample.py"
    sample.write_text(f"x = {line}\n")
    notes = status_writes(sample, in_store=True)
    assert notes, line
    assert {"values": "update(", "SQL": "SQL", "dict": "dict"}[kind] in notes[0]


@pytest.mark.parametrize(
    "line",
    [
        "update(deliveries).values(attempts=d.attempts + 1)",
        "update(send_slots).values(status='x')",
        "select(deliveries).where(deliveries.c.status == 'SENT')",
        "'SELECT status FROM deliveries'",
    ],
)
def test_the_scan_leaves_other_statements_alone(tmp_path: Path, line: str) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(f"x = {line}\n")
    assert status_writes(sample, in_store=False) == []
