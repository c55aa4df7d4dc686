"""Choosing the part of a backup to restore: some tables, some schemas, and what they need.

pg_restore's own ``-t`` restores a table without its indexes, constraints, defaults or the
sequences behind its serial columns, and ``-n`` leaves out the ``CREATE SCHEMA`` itself. To
recover a dropped table whole, bakup picks the archive's table of contents entries itself and
hands pg_restore a list (``--use-list``), in archive order, so the same list works on a stream
and on a seekable copy.

What a selected table brings with it: its data, the entries that depend on it alone (indexes,
constraints, triggers, rules, policies, defaults, comments, grants), the sequences it owns and
their values, and its schema when the target lacks it. A foreign key is kept only when the
table it references is restored too: otherwise it could not be created.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from bakup.archive import TocEntry
from bakup.errors import RestoreError

# Entries that hold a relation a user can name with --table.
RELATIONS = frozenset(
    {"TABLE", "VIEW", "MATERIALIZED VIEW", "SEQUENCE", "FOREIGN TABLE", "PARTITIONED TABLE"}
)
# Entries that belong to the relation they depend on and come along with it.
SUBSIDIARY = frozenset(
    {
        "TABLE DATA",
        "SEQUENCE SET",
        "SEQUENCE OWNED BY",
        "DEFAULT",
        "INDEX",
        "CONSTRAINT",
        "FK CONSTRAINT",
        "CHECK CONSTRAINT",
        "TRIGGER",
        "RULE",
        "POLICY",
        "ROW SECURITY",
        "COMMENT",
        "ACL",
        "STATISTICS",
        "INDEX ATTACH",
        "MATERIALIZED VIEW DATA",
    }
)
_OWNED_BY = re.compile(r"OWNED BY\s+(.+?)\s*;", re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True)
class Selection:
    """The entries to restore (dump ids, in archive order) and the schemas they live in."""

    dump_ids: tuple[int, ...]
    schemas: frozenset[str]

    def use_list(self, entries: Sequence[TocEntry]) -> str:
        """Return the text of a pg_restore ``--use-list`` file naming the selected entries,
        in archive order (a streamed archive can only be read forwards)."""
        chosen = set(self.dump_ids)
        lines = [
            f"{entry.dump_id}; 0 0 {entry.desc} - -" for entry in entries if entry.dump_id in chosen
        ]
        return "\n".join(lines) + "\n"


def _split(name: str) -> tuple[str | None, str]:
    """``schema.table`` -> (schema, table); a bare name has no schema. Quotes are removed."""
    if "." in name and not (name.startswith('"') and name.endswith('"') and name.count('"') == 2):
        schema, _, table = name.partition(".")
        return schema.strip('"'), table.strip('"')
    return None, name.strip('"')


def select(
    entries: Sequence[TocEntry],
    *,
    tables: Iterable[str] = (),
    schemas: Iterable[str] = (),
    existing_schemas: Iterable[str] = (),
) -> Selection:
    """Pick the entries that restore ``tables`` (``name`` or ``schema.name``) and ``schemas``.

    Given the archive's table of contents, the names asked for and the schemas the target
    already has (their CREATE SCHEMA is left out). Returns the Selection. Raises RestoreError
    naming what the backup does not hold.
    """
    by_id = {entry.dump_id: entry for entry in entries}
    chosen: set[int] = set()
    wanted_schemas = set(schemas)
    missing = sorted(
        schema
        for schema in wanted_schemas
        if not any(
            entry.namespace == schema or (entry.desc == "SCHEMA" and entry.tag == schema)
            for entry in entries
        )
    )
    relations: set[int] = set()
    for name in tables:
        schema, table = _split(name)
        found = [
            entry
            for entry in entries
            if entry.desc in RELATIONS
            and entry.tag == table
            and (schema is None or entry.namespace == schema)
        ]
        if not found:
            missing.append(name)
        elif len({entry.namespace for entry in found}) > 1:
            places = ", ".join(sorted(f"{entry.namespace}.{table}" for entry in found))
            raise RestoreError(
                f"--table {name} is ambiguous ({places}): name it with its schema", stage="restore"
            )
        relations.update(entry.dump_id for entry in found)
    if missing:
        raise RestoreError(
            f"the backup holds no {', '.join(missing)}: `bakup show NAME` lists what it holds",
            stage="restore",
        )
    for entry in entries:
        if entry.namespace in wanted_schemas and entry.desc != "SCHEMA":
            chosen.add(entry.dump_id)
            if entry.desc in RELATIONS:
                relations.add(entry.dump_id)
    chosen |= relations
    _add_owned_sequences(entries, relations, chosen)
    # Subsidiary entries follow whatever they depend on; repeat until nothing changes, as a
    # sequence's value depends on the sequence that came in with its table.
    changed = True
    while changed:
        changed = False
        for entry in entries:
            if entry.dump_id in chosen or entry.desc not in SUBSIDIARY:
                continue
            relation_deps = [
                d for d in entry.dependencies if by_id.get(d) and by_id[d].desc in RELATIONS
            ]
            if relation_deps and all(d in chosen for d in relation_deps):
                chosen.add(entry.dump_id)
                changed = True
    in_use = {by_id[d].namespace for d in chosen if by_id[d].namespace}
    have = set(existing_schemas)
    for entry in entries:
        if (
            entry.desc == "SCHEMA"
            and entry.tag in in_use | wanted_schemas
            and entry.tag not in have
        ):
            chosen.add(entry.dump_id)
    ordered = tuple(entry.dump_id for entry in entries if entry.dump_id in chosen)
    return Selection(ordered, frozenset(in_use | wanted_schemas))


def _add_owned_sequences(
    entries: Sequence[TocEntry], relations: set[int], chosen: set[int]
) -> None:
    """Add the sequences owned by a chosen table's columns (serial columns), which pg_dump
    records as a ``SEQUENCE OWNED BY`` entry naming the table in its statement."""
    names = {(entry.namespace, entry.tag) for entry in entries if entry.dump_id in relations}
    for entry in entries:
        if entry.desc != "SEQUENCE OWNED BY":
            continue
        match = _OWNED_BY.search(entry.definition)
        if not match:
            continue
        parts = [part.strip('"') for part in match.group(1).split(".")]
        if len(parts) >= 3 and (parts[0], parts[1]) in names:
            chosen.add(entry.dump_id)
            chosen.update(entry.dependencies)  # the sequence itself
            relations.update(entry.dependencies)


def owners(entries: Sequence[TocEntry], dump_ids: Iterable[int] | None = None) -> set[str]:
    """Return the roles that own the given entries (all entries when ``dump_ids`` is None)."""
    chosen = None if dump_ids is None else set(dump_ids)
    return {
        entry.owner
        for entry in entries
        if entry.owner and (chosen is None or entry.dump_id in chosen)
    }
