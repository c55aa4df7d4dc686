"""`bakup config`'s table of variables stays complete (every name the code looks up is in it)
and its report never shows a secret."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from bakup.config_report import build_report
from bakup.settings import INTEGER_VARIABLES
from bakup.variables import BY_NAME, VARIABLES

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("bakup", "worker", "notifications", "metrics")
# Lookups whose name is not in the code but given to it: a variable named in the BAKUP_CONFIG
# file (url_env), and the helpers that read the names their callers pass (found at the call).
DYNAMIC = {
    ("bakup/targets.py", "_read_target"),
    ("bakup/settings.py", "read_secret"),
    ("bakup/settings.py", "_read_int"),
    ("bakup/config_report.py", "_raw_value"),  # reads this very table
}
HELPERS = {"read_secret": 1, "_read_int": 1}


def _strings(node: ast.expr | None, constants: dict[str, set[str]]) -> set[str] | None:
    """The strings an expression may be: a literal, a tuple of them, or a name bound to one."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, (ast.Tuple, ast.List)):
        found: set[str] = set()
        for element in node.elts:
            values = _strings(element, constants)
            if values is None:
                return None
            found |= values
        return found
    if isinstance(node, ast.Dict):  # its keys
        return _strings(ast.Tuple([key for key in node.keys if key is not None]), constants)
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("items", "keys")
    ):
        return _strings(node.func.value, constants)
    if isinstance(node, ast.Name) and node.id in constants:
        return constants[node.id]
    return None


def _is_environment(node: ast.expr) -> bool:
    """``os.environ``, ``environ`` or a mapping called ``env`` (or a choice between them)."""
    if isinstance(node, ast.IfExp):
        return _is_environment(node.body) or _is_environment(node.orelse)
    if isinstance(node, ast.Attribute):
        return node.attr == "environ"
    return isinstance(node, ast.Name) and node.id in ("env", "environ")


class _Finder(ast.NodeVisitor):
    def __init__(self, path: str, constants: dict[str, set[str]]) -> None:
        self.path, self.constants = path, dict(constants)
        self.function = ""
        self.found: set[str] = set()
        self.unresolved: list[str] = []

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        outer, self.function = self.function, node.name
        self.generic_visit(node)
        self.function = outer

    def _loops(self, target: ast.expr, iterable: ast.expr) -> None:
        values = _strings(iterable, self.constants)
        if isinstance(target, ast.Tuple) and target.elts:  # for key, value in X.items()
            target = target.elts[0]
        if isinstance(target, ast.Name) and values is not None:
            self.constants[target.id] = self.constants.get(target.id, set()) | values

    def visit_For(self, node: ast.For) -> None:
        self._loops(node.target, node.iter)
        self.generic_visit(node)

    def visit(self, node: ast.AST) -> None:
        if isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
            # Its loops bind the names its element uses: read them first.
            for generator in node.generators:
                self._loops(generator.target, generator.iter)
        super().visit(node)

    def _name(self, node: ast.expr | None, where: int) -> None:
        values = _strings(node, self.constants)
        if values is not None:
            self.found |= values
        elif (self.path, self.function) not in DYNAMIC:
            self.unresolved.append(f"{self.path}:{where} in {self.function or 'module'}")

    def visit_Call(self, node: ast.Call) -> None:
        function = node.func
        if (
            isinstance(function, ast.Attribute)
            and function.attr in ("get", "getenv")
            and (_is_environment(function.value) or function.attr == "getenv")
            and node.args
        ):
            self._name(node.args[0], node.lineno)
        name = function.id if isinstance(function, ast.Name) else None
        if name in HELPERS and len(node.args) > HELPERS[name]:
            self._name(node.args[HELPERS[name]], node.lineno)
        self.generic_visit(node)

    def visit_Subscript(self, node: ast.Subscript) -> None:
        if isinstance(node.ctx, ast.Load) and _is_environment(node.value):
            self._name(node.slice, node.lineno)
        self.generic_visit(node)


def _sources() -> list[tuple[str, ast.Module]]:
    return [
        (str(path.relative_to(REPO)), ast.parse(path.read_text(encoding="utf-8")))
        for package in PACKAGES
        for path in sorted((REPO / package).rglob("*.py"))
    ]


def variables_looked_up() -> tuple[set[str], list[str]]:
    """Every environment variable name the code looks up, and the lookups it cannot name."""
    sources = _sources()
    constants: dict[str, set[str]] = {}
    for _path, tree in sources:  # module-level names bound to a string or a tuple of them
        for statement in tree.body:
            if isinstance(statement, (ast.Assign, ast.AnnAssign)):
                targets = (
                    statement.targets if isinstance(statement, ast.Assign) else [statement.target]
                )
                values = _strings(statement.value, {})
                for target in targets:
                    if isinstance(target, ast.Name) and values is not None:
                        constants[target.id] = values
    found: set[str] = set()
    unresolved: list[str] = []
    for path, tree in sources:
        finder = _Finder(path, constants)
        finder.visit(tree)
        found |= finder.found
        unresolved += finder.unresolved
    return found, unresolved


def test_every_environment_variable_the_code_looks_up_is_in_the_table() -> None:
    found, unresolved = variables_looked_up()
    assert unresolved == [], "lookups whose variable name the test cannot tell"
    assert {"DATABASE_URL", "SMTP_URL", "PROMETHEUS_MULTIPROC_DIR", "S3_ENDPOINT_URL"} <= found
    # NAME_FILE: the file a secret NAME is read from (bakup.settings.read_secret).
    read_from_files = {f"{v.name}_FILE" for v in VARIABLES if v.from_file}
    assert sorted(found - set(BY_NAME) - read_from_files) == []


def test_every_whole_number_setting_is_in_the_table_with_its_default() -> None:
    for name, (default, meaning) in INTEGER_VARIABLES.items():
        assert (BY_NAME[name].default, BY_NAME[name].meaning) == (str(default), meaning)


def test_every_variable_read_from_a_file_is_marked_so() -> None:
    settings = (REPO / "bakup" / "settings.py").read_text()
    notifications = (REPO / "notifications" / "config.py").read_text()
    for variable in VARIABLES:
        read_as_secret = f'read_secret(env, "{variable.name}"' in settings + notifications
        assert variable.from_file == read_as_secret, variable.name


def test_every_listed_variable_is_documented_in_the_readme() -> None:
    readme = (REPO / "README.md").read_text()
    missing = [v.name for v in VARIABLES if not v.internal and f"`{v.name}`" not in readme]
    assert missing == []


SECRETS = {
    "DATABASE_URL": "postgresql://backup:Db-Secr%40t-1@db.example.com:5432/app?sslmode=require",
    "VERIFY_DATABASE_URL": "postgresql://v:Verify-Pw-2@db/app?password=Query-Pw-3",
    "REDIS_URL": "redis://:Redis-Pw-4@redis:6379/0",
    "SMTP_URL": "smtps://alerts:Smtp-Pw-5@mail.example.com:465",
    "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T0AAA/B0BBB/SlackTok3nXYZ6",
    "WEBHOOK_URL": "https://receiver.example.com/hook/PathTok7?token=QueryTok8",
    "WEBHOOK_SECRET": "Webhook-Secret-9",
    "HEALTHCHECK_URL": "https://hc-ping.com/5f0a9b1c-0000-4c1d-9e2f-000000000010",
    "PUSHGATEWAY_URL": "https://push:Push-Pw-11@push.example.com",
    "AWS_ACCESS_KEY_ID": "AKIAEXAMPLEKEY12",
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY13",
    "AZURE_STORAGE_ACCOUNT_KEY": "Azure+Key/14==",
    "GOOGLE_SERVICE_ACCOUNT_KEY": '{"private_key": "Google-Key-15"}',
    "GOOGLE_BEARER_TOKEN": "ya29.Google-Token-16",
}
# What must never show: each password and token on its own, as written and decoded.
FORBIDDEN = [
    "Db-Secr%40t-1",
    "Db-Secr@t-1",
    "Verify-Pw-2",
    "Query-Pw-3",
    "Redis-Pw-4",
    "Smtp-Pw-5",
    "SlackTok3nXYZ6",
    "T0AAA/B0BBB",
    "PathTok7",
    "QueryTok8",
    "Webhook-Secret-9",
    "5f0a9b1c-0000-4c1d-9e2f-000000000010",
    "Push-Pw-11",
    "AKIAEXAMPLEKEY12",
    "EXAMPLEKEY13",
    "Azure+Key/14==",
    "Google-Key-15",
    "Google-Token-16",
]


@pytest.mark.parametrize("form", ["text", "json"])
def test_no_secret_is_shown_in_either_form(form: str) -> None:
    report = build_report(SECRETS)
    output = report.text() if form == "text" else report.json()
    leaked = [secret for secret in FORBIDDEN if secret in output]
    assert leaked == []
    # Still useful: where each thing is, without what opens it.
    assert "postgresql://backup:***@db.example.com:5432/app?sslmode=require" in output
    assert "https://hooks.slack.com/***" in output
    assert "redis://:***@redis:6379/0" in output


def test_the_json_form_names_each_value_and_its_origin() -> None:
    document = json.loads(build_report({"RETENTION_DAYS": "14"}).json())
    variables = {entry["name"]: entry for entry in document["variables"]}
    assert variables["RETENTION_DAYS"]["value"] == "14"
    assert variables["RETENTION_DAYS"]["source"] == "environment"
    assert variables["MAX_BACKUPS"]["source"] == "default"
    assert variables["DATABASE_URL"]["value"] is None
    assert document["problems"] == []


def test_an_invalid_configuration_is_still_shown_with_its_problems() -> None:
    report = build_report({"RETENTION_DAYS": "soon", "SLACK_WEBHOOK_URL": "ftp://x/Tok-Ftp-17"})
    assert any("RETENTION_DAYS" in problem for problem in report.problems)
    assert any("SLACK_WEBHOOK_URL" in problem for problem in report.problems)
    assert "Tok-Ftp-17" not in report.text()
