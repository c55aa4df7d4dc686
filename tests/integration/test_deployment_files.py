"""docker-compose.yml, render.yaml and the Dockerfile: valid against their published schemas
(offline copies), every variable the code reads documented and declared, every mounted path
present."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
import yaml

from tests.conftest import REPO

SCHEMAS = REPO.parent / "shared" / "schemas"
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
RENDER = yaml.safe_load((REPO / "render.yaml").read_text())
DOCKERFILE = (REPO / "deploy" / "Dockerfile").read_text()
SOURCES = ("bakup", "worker", "metrics", "notifications")
# Read by the code but not configuration: set by bakup itself for its children.
INTERNAL = {"PROMETHEUS_MULTIPROC_DIR", "PGAPPNAME", "PGPASSWORD", "PGSERVICEFILE"}
# Test hooks, never set in a deployment (bakup/failpoints.py).
INTERNAL |= {"BAKUP_CRASH_AT", "BAKUP_PAUSE_AT", "BAKUP_LEASE_SECONDS"}
# The system's own search path (PATH's pg_dump is the last client bakup considers).
INTERNAL |= {"PATH"}
# The clouds' own credential variables, read the way their tools read them: documented in the
# README, set by whoever uses that cloud, not declared for every deployment.
CLOUD = {
    "GOOGLE_SERVICE_ACCOUNT_KEY",
    "GOOGLE_BASE_URL",
    "GOOGLE_BEARER_TOKEN",
}
# The platform's standard state directory (the schedule file's default with object storage
# only); the deployments set BEAT_SCHEDULE_FILE instead.
CLOUD |= {"XDG_STATE_HOME"}


def variables_the_code_reads() -> set[str]:
    """Every environment variable name the code reads, found in its source."""
    patterns = (
        r"""env(?:iron)?\.get\(\s*["']([A-Z][A-Z0-9_]+)["']""",
        r"""env(?:iron)?\[\s*["']([A-Z][A-Z0-9_]+)["']\s*\]""",
        r"""read_secret\(\s*env,\s*["']([A-Z][A-Z0-9_]+)["']""",
        r"""^\s*["']([A-Z][A-Z0-9_]+)["']: \(\d""",  # INTEGER_VARIABLES
    )
    found: set[str] = set()
    for package in SOURCES:
        for path in (REPO / package).rglob("*.py"):
            text = path.read_text()
            for pattern in patterns:
                found.update(re.findall(pattern, text, flags=re.MULTILINE))
    # NAME_FILE is the generic "read NAME from this file" form of a secret (see the README).
    secret_files = {name for name in found if name.endswith("_FILE") and name[:-5] in found}
    return found - INTERNAL - secret_files


def compose_env(service: str) -> set[str]:
    declared = set(COMPOSE["services"][service].get("environment", {}))
    for env_file in COMPOSE["services"][service].get("env_file", []):
        for line in (REPO / env_file).read_text().splitlines():
            if "=" in line and not line.lstrip().startswith("#"):
                declared.add(line.split("=", 1)[0].strip())
    return declared


def render_env(service: str) -> set[str]:
    groups = {group["name"]: group["envVars"] for group in RENDER["envVarGroups"]}
    [definition] = [s for s in RENDER["services"] if s["name"] == service]
    declared = set()
    for entry in definition["envVars"]:
        if "fromGroup" in entry:
            declared.update(item["key"] for item in groups[entry["fromGroup"]])
        else:
            declared.add(entry["key"])
    return declared


def test_the_scan_finds_the_variables_it_should() -> None:
    found = variables_the_code_reads()
    for name in (
        "DATABASE_URL",
        "BACKUP_DIR",
        "RETENTION_DAYS",
        "REDIS_URL",
        "SMTP_URL",
        "SLACK_WEBHOOK_URL",
        "METRICS_PORT",
        "SUMMARY_SCHEDULE",
        "BAKUP_CONFIG",
    ):
        assert name in found


@pytest.mark.parametrize(
    ("document", "schema", "validator"),
    [
        ("docker-compose.yml", "compose-spec.json", jsonschema.Draft7Validator),
        ("render.yaml", "render.schema.json", jsonschema.Draft202012Validator),
    ],
)
def test_files_validate_against_their_published_schemas(
    document: str, schema: str, validator
) -> None:
    path = SCHEMAS / schema
    if not path.exists():
        pytest.skip(f"{path} is not beside this checkout")
    errors = [
        f"{'/'.join(map(str, error.path))}: {error.message[:200]}"
        for error in validator(json.loads(path.read_text())).iter_errors(
            yaml.safe_load((REPO / document).read_text())
        )
    ]
    assert errors == []


def test_every_variable_is_documented_in_the_readme() -> None:
    readme = (REPO / "README.md").read_text()
    missing = sorted(name for name in variables_the_code_reads() if f"`{name}`" not in readme)
    assert missing == []


@pytest.mark.parametrize("service", ["worker", "beat"])
def test_every_variable_is_declared_for_the_compose_services(service: str) -> None:
    dockerfile_env = set(re.findall(r"^\s*(?:ENV\s+)?([A-Z_]+)=", DOCKERFILE, flags=re.MULTILINE))
    missing = variables_the_code_reads() - compose_env(service) - dockerfile_env - CLOUD
    assert sorted(missing) == []


@pytest.mark.parametrize("service", ["bakup-worker", "bakup-beat"])
def test_every_variable_is_declared_for_the_render_services(service: str) -> None:
    assert sorted(variables_the_code_reads() - render_env(service) - CLOUD) == []


def test_render_keeps_secrets_out_of_the_file_and_never_evicts() -> None:
    for group in RENDER["envVarGroups"]:
        for entry in group["envVars"]:
            if re.search(r"URL|SECRET|PASSWORD|TOKEN|EMAIL_TO", entry["key"]) and entry[
                "key"
            ] not in ("PUSHGATEWAY_URL",):
                assert entry.get("sync") is False or entry.get("value") == "", entry
    [keyvalue] = [s for s in RENDER["services"] if s["type"] == "keyvalue"]
    assert keyvalue["maxmemoryPolicy"] == "noeviction" and keyvalue["ipAllowList"] == []
    [worker] = [s for s in RENDER["services"] if s["name"] == "bakup-worker"]
    assert worker["type"] == "pserv" and worker["disk"]["mountPath"] == "/var/lib/bakup/backups"
    assert not worker["disk"]["mountPath"].startswith("/opt/render/project")
    [beat] = [s for s in RENDER["services"] if s["name"] == "bakup-beat"]
    assert beat["numInstances"] == 1


def test_every_path_the_stack_uses_exists() -> None:
    for name, service in COMPOSE["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (REPO / source).exists(), (name, source)
        for env_file in service.get("env_file", []):
            assert (REPO / env_file).exists(), (name, env_file)
        if "build" in service:
            assert (REPO / service["build"]["dockerfile"]).exists()
    for service in RENDER["services"]:
        if "dockerfilePath" in service:
            assert (REPO / service["dockerfilePath"]).exists()
    for source in re.findall(r"^COPY (?!--from)(.+) \S+$", DOCKERFILE, flags=re.MULTILINE):
        for part in source.split():
            assert (REPO / part).exists(), part


def test_compose_has_one_beat_noeviction_and_healthchecks() -> None:
    services = COMPOSE["services"]
    beats = [name for name, s in services.items() if s.get("command") == ["beat"]]
    assert beats == ["beat"] and "--beat" not in services["worker"]["command"]
    assert "noeviction" in services["redis"]["command"]
    for name in ("postgres", "redis", "prometheus", "alertmanager", "grafana", "beat"):
        assert "healthcheck" in services[name], name
    assert "HEALTHCHECK" in DOCKERFILE  # the worker's own
    assert re.search(r"^USER (?!root)\w+", DOCKERFILE, flags=re.MULTILINE)
    assert all("restart" in s for s in services.values())


def test_prometheus_in_compose_scrapes_the_worker_service() -> None:
    config = yaml.safe_load((REPO / "deploy" / "prometheus" / "prometheus.yml").read_text())
    [job] = config["scrape_configs"]
    assert job["static_configs"][0]["targets"] == ["worker:9808"]
    alertmanager = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert alertmanager == ["alertmanager:9093"] and "alertmanager" in COMPOSE["services"]
