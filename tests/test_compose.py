"""docker-compose.yml and infra/, checked offline (there is no Docker engine to start them).

The compose file is validated against the Compose Specification schema that check-jsonschema
ships (``--builtin-schema vendor.compose-spec``, no network), then parsed for the rules a
schema cannot express: health checks, loopback-only ports, pinned images, real cropflow
settings, documented variables, existing Dockerfiles without ``ENTRYPOINT ["cropflow"]``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, TypeAdapter

from cropflow.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
INFRA = ROOT / "infra"
ENV_EXAMPLE = INFRA / ".env.example"
INFRA_README = INFRA / "README.md"
CHECK_JSONSCHEMA = Path(sys.executable).parent / "check-jsonschema"

# Services that run once and exit (no health check; others wait for them to complete).
ONE_SHOT = {"minio-init"}

# $$ (a literal $), ${NAME}, ${NAME:-default} / ${NAME-default} / ${NAME:?err} ..., or $NAME.
_INTERPOLATION = re.compile(
    r"\$(?:\$|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


def run_check_jsonschema(path: Path) -> subprocess.CompletedProcess[str]:
    """check-jsonschema on ``path`` with the vendored compose schema; any network use fails.

    The proxies point at a closed local port, so a schema fetched from the internet would
    make the run fail rather than pass by luck.
    """
    assert CHECK_JSONSCHEMA.exists(), f"{CHECK_JSONSCHEMA} missing: pip install -e '.[dev]'"
    dead = "http://127.0.0.1:9"
    env = {**os.environ, "HTTP_PROXY": dead, "HTTPS_PROXY": dead, "ALL_PROXY": dead}
    env.pop("NO_PROXY", None)
    env.pop("no_proxy", None)
    return subprocess.run(
        [str(CHECK_JSONSCHEMA), "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )


def load_compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def services() -> dict[str, dict[str, Any]]:
    svc = load_compose()["services"]
    assert isinstance(svc, dict) and svc
    return svc


def read_env_example() -> dict[str, str]:
    """KEY=VALUE lines of infra/.env.example (comments and blank lines skipped)."""
    out: dict[str, str] = {}
    for raw in ENV_EXAMPLE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not KEY=VALUE in {ENV_EXAMPLE.name}: {raw!r}"
        assert key not in out, f"{key} twice in {ENV_EXAMPLE.name}"
        out[key.strip()] = value.strip()
    return out


def interpolations(text: str) -> list[tuple[str, str | None, str | None]]:
    """(name, operator, argument) of every interpolation in ``text``; ``$$`` is skipped."""
    found: list[tuple[str, str | None, str | None]] = []
    for m in _INTERPOLATION.finditer(text):
        if m.group("braced"):
            found.append((m.group("braced"), m.group("op"), m.group("arg")))
        elif m.group("bare"):
            found.append((m.group("bare"), None, None))
    return found


def resolve_defaults(text: str) -> str:
    """``text`` as compose sees it with no variable set: ``${X:-d}`` -> d, ``$$`` -> $."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group("braced") or m.group("bare")
        assert m.group("op") in (":-", "-"), f"${{{name}}} has no default"
        return str(m.group("arg"))

    return _INTERPOLATION.sub(sub, text)


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment (map or list syntax), defaults of interpolations applied."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    assert isinstance(env, dict)
    return {str(k): resolve_defaults(str(v)) for k, v in env.items()}


def settings_path(name: str) -> list[str]:
    """The attribute path of a ``CROPFLOW_*`` variable in Settings; AssertionError if none.

    Settings ignores unknown variables (extra="ignore"), so a misspelt name would silently do
    nothing: walk the models' fields instead.
    """
    assert name.startswith("CROPFLOW_"), name
    parts = name.removeprefix("CROPFLOW_").lower().split("__")
    model: type[BaseModel] = Settings
    for i, part in enumerate(parts):
        fields = model.model_fields
        assert part in fields, f"{name}: {model.__name__} has no field {part!r}"
        annotation = fields[part].annotation
        last = i == len(parts) - 1
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            assert not last, f"{name} names the group {part!r}, not a setting"
            model = annotation
        else:
            assert last, f"{name}: {part!r} is a value, it has no field {parts[i + 1]!r}"
    return parts


def settings_value(settings: BaseModel, path: list[str]) -> tuple[Any, Any]:
    """(value, annotation) of the field at ``path``."""
    obj: Any = settings
    annotation: Any = None
    for part in path:
        annotation = type(obj).model_fields[part].annotation
        obj = getattr(obj, part)
    return obj, annotation


# ---------------------------------------------------------------------------- the schema


def test_compose_file_is_valid_per_compose_spec() -> None:
    result = run_check_jsonschema(COMPOSE)
    assert result.returncode == 0, f"check-jsonschema failed:\n{result.stdout}\n{result.stderr}"


def test_validator_refuses_a_bad_compose_file(tmp_path: Path) -> None:
    bad = tmp_path / "docker-compose.yml"
    bad.write_text("services:\n  web:\n    image: nginx:1.29.1\n    ports: 5\n")
    result = run_check_jsonschema(bad)
    output = result.stdout + result.stderr
    assert result.returncode == 1, f"expected a schema failure, got {result.returncode}:\n{output}"
    assert "ports" in output, output


# ---------------------------------------------------------------------------- the rules


def test_long_running_services_have_health_checks() -> None:
    svc = services()
    one_shots = {name for name, s in svc.items() if str(s.get("restart")) == "no"}
    assert one_shots == ONE_SHOT
    for name, s in svc.items():
        if name in ONE_SHOT:
            continue
        check = s.get("healthcheck")
        assert isinstance(check, dict), f"service {name} has no healthcheck"
        assert not check.get("disable"), f"service {name} disables its healthcheck"
        assert check.get("test"), f"service {name}: healthcheck without test"


def test_dependencies_wait_for_health_or_completion() -> None:
    svc = services()
    for name, s in svc.items():
        deps = s.get("depends_on") or {}
        assert isinstance(deps, dict), f"{name}: depends_on without conditions"
        for dep, spec in deps.items():
            assert dep in svc, f"{name} depends on unknown service {dep}"
            condition = spec.get("condition")
            if dep in ONE_SHOT:
                assert condition == "service_completed_successfully", (name, dep)
            else:
                assert condition == "service_healthy", (name, dep)
                assert "healthcheck" in svc[dep], f"{name} waits for {dep}, which has none"


def test_ports_are_published_on_loopback_only() -> None:
    for name, s in services().items():
        assert s.get("network_mode") != "host", f"{name} uses the host network"
        for port in s.get("ports") or []:
            if isinstance(port, dict):
                assert port.get("host_ip") == "127.0.0.1", f"{name}: {port}"
                assert port.get("published"), f"{name}: {port} (random host port)"
            else:
                text = resolve_defaults(str(port))
                parts = text.split(":")
                assert len(parts) == 3 and parts[0] == "127.0.0.1", f"{name}: {text!r}"


def test_prefect_ui_is_told_the_published_port() -> None:
    """The UI (in the host's browser) calls the API at the address /ui-settings gives."""
    server = services()["prefect-server"]
    (published,) = server["ports"]
    host_port = resolve_defaults(str(published)).split(":")[1]
    env = server["environment"]
    assert "${PREFECT_PORT:-4200}" in str(published)
    assert resolve_defaults(env["PREFECT_UI_API_URL"]) == f"http://127.0.0.1:{host_port}/api"


def test_images_have_explicit_tags() -> None:
    for name, s in services().items():
        assert "image" in s, f"service {name} has no image name"
        image = resolve_defaults(str(s["image"]))
        ref = image.split("@", 1)[0]
        last = ref.rsplit("/", 1)[-1]
        assert ":" in last, f"{name}: image {image!r} has no tag"
        tag = last.rsplit(":", 1)[1]
        assert tag and tag != "latest", f"{name}: image {image!r} is not pinned"


def test_builds_reference_existing_dockerfiles() -> None:
    built = 0
    for name, s in services().items():
        build = s.get("build")
        if build is None:
            continue
        built += 1
        if isinstance(build, str):
            build = {"context": build}
        context = ROOT / resolve_defaults(str(build.get("context", ".")))
        dockerfile = context / resolve_defaults(str(build.get("dockerfile", "Dockerfile")))
        assert context.is_dir(), f"{name}: build context {context} missing"
        assert dockerfile.is_file(), f"{name}: {dockerfile} missing"
    assert built, "no service builds the cropflow image"


def dockerfiles() -> list[Path]:
    found = sorted(p for p in INFRA.glob("Dockerfile*") if p.suffix != ".dockerignore")
    assert {p.name for p in found} >= {"Dockerfile", "Dockerfile.gpu"}
    return found


def test_dockerfiles_have_no_cropflow_entrypoint() -> None:
    entrypoint = re.compile(r"^\s*ENTRYPOINT\s+(?P<args>.*)$", re.IGNORECASE | re.MULTILINE)
    for path in dockerfiles():
        for m in entrypoint.finditer(path.read_text()):
            assert "cropflow" not in m.group("args"), (
                f"{path.name}: {m.group(0).strip()} would prefix the command Prefect "
                "container workers give (prefect flow-run execute)"
            )


def test_copied_files_exist_and_are_in_the_build_context() -> None:
    """Every COPY source exists and is re-included by the Dockerfile's own .dockerignore."""
    copy = re.compile(r"^\s*COPY\s+(?P<args>.+)$", re.IGNORECASE | re.MULTILINE)
    for path in dockerfiles():
        ignore = path.with_name(path.name + ".dockerignore")
        assert ignore.is_file(), f"{ignore.name} missing: the whole checkout would be sent"
        allowed = {
            line.strip()[1:].rstrip("/")
            for line in ignore.read_text().splitlines()
            if line.strip().startswith("!")
        }
        for m in copy.finditer(path.read_text()):
            args = [a for a in m.group("args").split() if not a.startswith("--")]
            if "--from" in m.group("args"):
                continue
            for src in args[:-1]:
                assert (ROOT / src).exists(), f"{path.name}: COPY {src}: no such file"
                first = src.rstrip("/").split("/")[0]
                assert src.rstrip("/") in allowed or first in allowed, (
                    f"{path.name}: COPY {src} is excluded by {ignore.name}"
                )


def test_gpu_service_only_in_gpu_profile() -> None:
    gpu_services = []
    for name, s in services().items():
        devices = (
            s.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
        )
        if any(d.get("driver") == "nvidia" for d in devices):
            gpu_services.append(name)
            assert s.get("profiles") == ["gpu"], f"{name} reserves GPUs outside profile gpu"
            assert "Dockerfile.gpu" in str(s.get("build", {}).get("dockerfile")), name
        else:
            assert not s.get("profiles"), f"{name} has profiles but no GPU"
    assert gpu_services, "no GPU service"


def test_interpolated_variables_are_documented_with_the_same_defaults() -> None:
    text = COMPOSE.read_text()
    env_example = read_env_example()
    readme = INFRA_README.read_text()
    used = interpolations(text)
    assert used, "no ${VAR} in docker-compose.yml"
    for name, op, arg in used:
        assert name in env_example, f"${{{name}}} is not in infra/.env.example"
        assert f"`{name}`" in readme, f"${{{name}}} is not documented in infra/README.md"
        assert op == ":-", f"${{{name}}} needs a default (${{{name}:-...}})"
        assert arg == env_example[name], (
            f"${{{name}}}: default {arg!r} in docker-compose.yml, "
            f"{env_example[name]!r} in infra/.env.example"
        )
    unused = set(env_example) - {name for name, _, _ in used}
    assert not unused, f"infra/.env.example has variables compose does not use: {unused}"


def test_settings_path_refuses_unknown_names() -> None:
    assert settings_path("CROPFLOW_DASK__ADDRESS") == ["dask", "address"]
    for bad in (
        "CROPFLOW_DASK__ADRESS",
        "CROPFLOW_NOPE",
        "CROPFLOW_WORKDIR__X",
        "CROPFLOW_MLFLOW",
        "CROPFLOW_MLFLOW_TRACKING_URI",
    ):
        with pytest.raises(AssertionError):
            settings_path(bad)


def cropflow_variables() -> dict[str, str]:
    """Every CROPFLOW_* variable set in a service environment; one value per name."""
    found: dict[str, str] = {}
    for name, s in services().items():
        for key, value in environment(s).items():
            if key.startswith("CROPFLOW_"):
                assert found.setdefault(key, value) == value, f"{key} differs in {name}"
    return found


def test_cropflow_variables_are_real_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    variables = cropflow_variables()
    assert {"CROPFLOW_WORKDIR", "CROPFLOW_MLFLOW__TRACKING_URI", "CROPFLOW_DASK__ADDRESS"} <= set(
        variables
    )
    for key in list(os.environ):
        if key.startswith("CROPFLOW_"):
            monkeypatch.delenv(key)
    for key, value in variables.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    readme = INFRA_README.read_text()
    for key, value in variables.items():
        path = settings_path(key)
        got, annotation = settings_value(settings, path)
        expected = TypeAdapter(annotation).validate_python(value)
        assert got == expected, f"{key}={value!r} gave {'.'.join(path)}={got!r}"
        assert f"`{key}`" in readme, f"{key} is not documented in infra/README.md"


def test_worker_pool_matches_settings() -> None:
    svc = services()
    command = svc["prefect-worker"]["command"]
    pool = command[command.index("--pool") + 1]
    assert pool == Settings.model_fields["stack"].default.work_pool
    assert environment(svc["prefect-worker"])["CROPFLOW_STACK__WORK_POOL"] == pool
