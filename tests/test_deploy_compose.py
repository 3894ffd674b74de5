"""docker-compose.yml: checked by every Compose implementation installed here (`docker compose
config`, Debian's `docker-compose config`: neither needs a Docker engine), then its structure:
loopback-only ports, healthchecks, health-gated start order, GPU reservation, secrets from .env."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
SERVICES = {"postgres", "mlflow", "worker", "worker-cpu", "dashboard"}
VALIDATORS = {"docker compose": ["docker", "compose"], "docker-compose": ["docker-compose"]}
WHERE = {"docker compose": "Docker's Compose v2 plugin, which Debian does not package",
         "docker-compose": "Debian's docker-compose package, which .ci/run installs"}


def spec() -> dict:
    return yaml.safe_load(COMPOSE.read_text())  # safe_load applies the `<<: *anchor` merges


def env_example() -> dict[str, str]:
    lines = (ROOT / ".env.example").read_text().splitlines()
    return dict(ln.split("=", 1) for ln in lines if ln.strip() and not ln.startswith("#"))


def missing_reason(name: str) -> str | None:
    cmd = VALIDATORS[name]
    if shutil.which(cmd[0]) is None:
        return f"`{name}` is not installed"
    r = subprocess.run([*cmd, "version"], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        return f"`{name}` is not available ({(r.stderr or r.stdout).strip().splitlines()[0]})"
    return None


def run_config(name: str, env_file: Path) -> subprocess.CompletedProcess:
    # a clean environment: only the env file may set the variables
    env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
    return subprocess.run([*VALIDATORS[name], "--env-file", str(env_file), "-f", str(COMPOSE), "--profile", "cpu",
                           "config"], capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)


def host_ips(ports: list) -> list[str]:
    """The host address of each published port, short ("127.0.0.1:5000:5000") or long form."""
    return [p["host_ip"] if isinstance(p, dict) else str(p).split(":")[0] for p in ports]


@pytest.mark.parametrize("name", sorted(VALIDATORS))
def test_compose_file_passes_the_validator(name, tmp_path):
    why = missing_reason(name)
    if why:
        pytest.skip(f"{why}: `{name} config` cannot validate docker-compose.yml here ({WHERE[name]})")
    dummy = tmp_path / "dummy.env"  # the least a .env must say: everything else has a default
    dummy.write_text("POSTGRES_PASSWORD=s3cret\nSTUDY=annealing_vs_tfr\n")
    r = run_config(name, dummy)
    assert r.returncode == 0, r.stderr
    resolved = yaml.safe_load(r.stdout)["services"]
    assert set(resolved) == SERVICES
    url = "postgresql://vpsearch:s3cret@postgres:5432/optuna"
    assert resolved["worker"]["environment"]["VPSEARCH_STORAGE"] == url
    assert resolved["dashboard"]["environment"]["VPSEARCH_STORAGE"] == url
    assert resolved["mlflow"]["environment"]["MLFLOW_BACKEND_STORE_URI"] == url.replace("/optuna", "/mlflow")
    assert resolved["worker"]["command"] == ["vpsearch", "worker", "--study", "annealing_vs_tfr", "--device",
                                             "cuda:free"]
    for service in resolved.values():  # published on loopback only by default
        assert set(host_ips(service.get("ports", []))) <= {"127.0.0.1"}
    assert len(resolved["postgres"]["ports"]) == len(resolved["mlflow"]["ports"]) == 1

    # without the password the file refuses to resolve, naming the variable and where to set it
    dummy.write_text("STUDY=annealing_vs_tfr\n")
    r = run_config(name, dummy)
    assert r.returncode != 0 and "set POSTGRES_PASSWORD in .env" in r.stdout + r.stderr


def test_services_ports_and_health_gated_start_order():
    services = spec()["services"]
    assert set(services) == SERVICES
    published = {name: s["ports"] for name, s in services.items() if "ports" in s}
    assert set(published) == {"postgres", "mlflow", "dashboard"}  # workers publish nothing: they scale
    for name, ports in published.items():  # loopback unless BIND_ADDRESS says otherwise
        assert all(str(p).startswith("${BIND_ADDRESS:-127.0.0.1}:") for p in ports), (name, ports)
    for name in ("postgres", "mlflow", "dashboard"):
        assert services[name]["healthcheck"]["test"], name
    assert "-h 127.0.0.1" in services["postgres"]["healthcheck"]["test"][1]  # not the init-time socket server
    healthy = {"condition": "service_healthy"}
    assert services["mlflow"]["depends_on"] == {"postgres": healthy}
    assert services["worker"]["depends_on"] == {"postgres": healthy, "mlflow": healthy}
    assert services["worker-cpu"]["depends_on"] == {"postgres": healthy, "mlflow": healthy}
    assert services["dashboard"]["depends_on"] == {"postgres": healthy}
    assert services["dashboard"]["command"][:5] == ["vpsearch", "dashboard", "${STUDY:?set STUDY in .env}",
                                                   "--serve", "--host"]


def test_postgres_and_mlflow_keep_their_data_in_volumes():
    s = spec()
    services = s["services"]
    assert {"pgdata", "mlartifacts"} <= set(s["volumes"])
    assert "pgdata:/var/lib/postgresql/data" in services["postgres"]["volumes"]
    assert services["postgres"]["environment"]["POSTGRES_DB"] == "optuna"
    assert "CREATE DATABASE mlflow;" in services["postgres"]["entrypoint"][2]  # MLflow's own database
    cmd = services["mlflow"]["command"]
    assert cmd[:2] == ["mlflow", "server"] and "--serve-artifacts" in cmd
    assert cmd[cmd.index("--artifacts-destination") + 1] == "/mlartifacts"
    assert "mlartifacts:/mlartifacts" in services["mlflow"]["volumes"]
    assert services["mlflow"]["environment"]["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql://")


def test_worker_reserves_gpus_and_scales():
    worker = spec()["services"]["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    # replicas see all GPUs and each claims one for itself (compose cannot split them)
    assert worker["command"][-2:] == ["--device", "${WORKER_DEVICE:-cuda:free}"]
    assert "container_name" not in worker and "ports" not in worker  # both would break --scale
    assert worker["environment"]["MLFLOW_TRACKING_URI"] == "http://${MLFLOW_ADDRESS:-mlflow:5000}"
    cpu = spec()["services"]["worker-cpu"]
    assert cpu["profiles"] == ["cpu"] and "deploy" not in cpu


def test_secrets_come_from_the_env_file():
    text = COMPOSE.read_text()
    used = set(re.findall(r"\$\{([A-Z_]+)", text))
    example = env_example()
    assert used <= set(example), f"not in .env.example: {sorted(used - set(example))}"
    # every URL takes the password from .env and the file refuses to start without one
    assert text.count("${POSTGRES_PASSWORD:?") == text.count("${POSTGRES_PASSWORD") == 3
    assert example["POSTGRES_PASSWORD"] not in text
    assert ".env" in (ROOT / ".gitignore").read_text().splitlines()
    assert ".env" in (ROOT / ".dockerignore").read_text().splitlines()  # never baked into the image


def test_image_installs_the_pinned_torch_first():
    lines = [ln.strip() for ln in (ROOT / "Dockerfile").read_text().splitlines()]
    installs = [ln for ln in lines if ln.startswith("RUN pip install")]
    assert 'torch==${TORCH_VERSION}' in installs[0] and "ARG TORCH_VERSION=2.13.0" in lines
    assert "-e ." in installs[1]
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in lines
