"""``bakup show NAME``: what a backup holds, from its manifest alone (no download, no key).

Schemas, extensions, large objects, and each table with its row count and data size, so an
operator can pick what to recover with ``bakup restore --table`` / ``--schema``.
"""

from __future__ import annotations

from typing import Any

from bakup.catalog import Backup
from bakup.logs import megabytes


def describe(backup: Backup) -> dict[str, Any]:
    """Return what ``backup`` holds as JSON-ready data: name, database, created, state, the
    role passwords/globals flag, schemas, extensions, large objects and tables (each with
    rows and data bytes, None where the manifest does not record them)."""
    contents = backup.contents or {}
    sizes: dict[str, int] = contents.get("table_bytes", {})
    return {
        "name": backup.name,
        "database": backup.database,
        "created_at": backup.created_at.isoformat(),
        "status": backup.status,
        "encrypted": backup.encrypted,
        "globals": backup.globals is not None,
        "schemas": contents.get("schemas"),
        "extensions": contents.get("extensions"),
        "large_objects": contents.get("large_objects"),
        "tables": [
            {"name": name, "rows": rows, "data_bytes": sizes.get(name)}
            for name, rows in sorted(backup.table_row_counts.items())
        ],
    }


def render(backup: Backup) -> str:
    """Return ``describe(backup)`` as text for a terminal."""
    info = describe(backup)
    unknown = "not recorded (backup taken before bakup recorded it)"
    lines = [
        f"{info['name']}  database {info['database']}, {info['status']}"
        + (", encrypted" if info["encrypted"] else ""),
        f"schemas:       {', '.join(info['schemas']) if info['schemas'] is not None else unknown}",
        "extensions:    "
        + (", ".join(info["extensions"]) or "none" if info["extensions"] is not None else unknown),
        "large objects: "
        + (str(info["large_objects"]) if info["large_objects"] is not None else unknown),
        "roles:         "
        + (
            "recorded (restore --roles creates missing ones)" if info["globals"] else "not recorded"
        ),
    ]
    if not backup.described:
        lines.append("tables:        not described yet: `bakup verify NAME` records them")
        return "\n".join(lines)
    rows = [("TABLE", "ROWS", "DATA")] + [
        (
            table["name"],
            str(table["rows"]),
            megabytes(table["data_bytes"]) if table["data_bytes"] is not None else "?",
        )
        for table in info["tables"]
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    lines.append(f"tables:        {len(info['tables'])}")
    lines.extend(
        "  "
        + "  ".join(
            cell.rjust(width) if column else cell.ljust(width)
            for column, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    )
    return "\n".join(lines)
