"""AI Grid gateway."""

# The release's one version: the wheel's metadata (pyproject.toml reads it from here), `aigrid --version`,
# the image tag (deploy/k8s/components/release, docker-compose.yml) and the Helm chart's version and
# appVersion are kept on it by tests/house/test_release.py, tests/deploy/test_images.py and test_helm.py.
__version__ = "0.1.0"
