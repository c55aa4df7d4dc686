"""A database that exercises what a dump must carry: several schemas, a large object, bytea,
unicode text, an enum type, a view, a sequence and a table of a few hundred thousand rows."""

from __future__ import annotations

from tests.support.postgres_server import PostgresServer

SAMPLE_SQL = """
CREATE SCHEMA sales;
CREATE SCHEMA "audit log";
CREATE TYPE sales.status AS ENUM ('new', 'paid', 'shipped', 'refunded');
CREATE SEQUENCE sales.invoice_number START 1000;
CREATE TABLE sales.customers (
    id bigserial PRIMARY KEY,
    name text NOT NULL,
    email text,
    note text
);
CREATE TABLE sales.orders (
    id bigserial PRIMARY KEY,
    customer_id bigint REFERENCES sales.customers(id),
    status sales.status NOT NULL,
    amount numeric(12, 2),
    invoice bigint DEFAULT nextval('sales.invoice_number'),
    created_at timestamptz NOT NULL
);
CREATE TABLE "audit log"."Events ""v2"" table" (
    id serial PRIMARY KEY,
    payload bytea,
    message text
);
CREATE TABLE public.documents (id int PRIMARY KEY, blob oid, title text);
CREATE TABLE public.empty_table (id int);
CREATE VIEW sales.paid_orders AS SELECT * FROM sales.orders WHERE status = 'paid';

INSERT INTO sales.customers (name, email, note)
SELECT 'Customer ' || g, 'c' || g || '@example.com',
       CASE WHEN g % 7 = 0 THEN E'multi\\nline\\tnote with \\\\ backslash' ELSE md5(g::text) END
FROM generate_series(1, 20000) AS g;
INSERT INTO sales.customers (name, email, note) VALUES
    ('Zoë Ångström', 'zoe@example.com', 'naïve café — 日本語 — emoji 🎉'),
    (E'Tab\\tand\\nnewline', NULL, E'\\\\.');

INSERT INTO sales.orders (customer_id, status, amount, created_at)
SELECT 1 + (g % 20000), (ARRAY['new','paid','shipped','refunded'])[1 + g % 4]::sales.status,
       (g % 1000) / 3.0, timestamptz '2025-01-01' + g * interval '1 minute'
FROM generate_series(1, 300000) AS g;

INSERT INTO "audit log"."Events ""v2"" table" (payload, message)
SELECT decode(md5(g::text) || '000a0d5c', 'hex'), E'line one\\nline two ' || g
FROM generate_series(1, 500) AS g;
INSERT INTO "audit log"."Events ""v2"" table" (payload, message) VALUES ('\\x00010a0a5c2e0a', NULL);

INSERT INTO public.documents VALUES
    (1, lo_from_bytea(0, convert_to(repeat(E'large object line\\n', 5000), 'UTF8')), 'big'),
    (2, lo_from_bytea(0, '\\x0001020a0a'::bytea), 'binary');
"""

TABLES = (
    "sales.customers",
    "sales.orders",
    '"audit log"."Events ""v2"" table"',
    "public.documents",
    "public.empty_table",
)


def load_sample_data(server: PostgresServer, dbname: str) -> None:
    """Create the sample schema and data in ``dbname``."""
    server.psql(dbname, SAMPLE_SQL)


def table_fingerprints(server: PostgresServer, dbname: str) -> dict[str, tuple[int, str]]:
    """Return each sample table's row count and an md5 over its rows in primary-key order."""
    fingerprints = {}
    for table in TABLES:
        result = server.psql(
            dbname,
            "SELECT count(*) || ' ' || "
            f"coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') FROM {table} AS t",
        )
        count, digest = result.split(" ", 1) if " " in result else (result, "")
        fingerprints[table] = (int(count), digest)
    fingerprints["large objects"] = (
        int(server.psql(dbname, "SELECT count(*) FROM pg_largeobject_metadata")),
        server.psql(
            dbname,
            "SELECT md5(string_agg(md5(lo_get(oid)), '|' ORDER BY oid)) "
            "FROM pg_largeobject_metadata",
        ),
    )
    fingerprints["sequence"] = (
        0,
        server.psql(dbname, "SELECT last_value FROM sales.invoice_number"),
    )
    fingerprints["enum"] = (0, server.psql(dbname, "SELECT enum_range(NULL::sales.status)::text"))
    fingerprints["view"] = (int(server.psql(dbname, "SELECT count(*) FROM sales.paid_orders")), "")
    return fingerprints
