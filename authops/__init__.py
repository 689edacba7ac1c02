"""Operations tasks for authentik on Docker Swarm, run with Invoke and Fabric."""

from pathlib import Path

# The checkout root: env/, stack/, haproxy/ and sql/ are found relative to it.
REPO_ROOT = Path(__file__).resolve().parent.parent
