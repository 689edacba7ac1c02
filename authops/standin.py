"""The stand-in for authentik's image, built on this machine without a registry.

No container registry is reachable from the lab, so the image is built from
a Debian bookworm root file system made with debootstrap (from Debian's
package mirror) and imported as a base image. Both steps are skipped when
their result exists: the build is keyed by a hash of images/standin/.
"""

import fcntl
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from authops import REPO_ROOT, output
from authops.errors import OpsError
from authops.localsvc import docker

SOURCE_DIR = REPO_ROOT / "images" / "standin"
BASE_IMAGE = "authops/debian-base:bookworm"
IMAGE = "authops/authentik-standin"
TAG = "2025.10.3"
# A name under a registry on loopback where nothing listens. Swarm tries to
# pull a service's image before every task start, even when the image is
# present. With this name the attempt fails at once on this machine instead
# of going out to Docker Hub, and the task runs the local image.
LOOPBACK_IMAGE = "127.0.0.1:1/authops/authentik-standin"
SOURCE_HASH_LABEL = "authops.standin.source-hash"

WORK_DIR = Path("/var/lib/authops/standin-build")
LOCK_PATH = Path("/var/lib/authops/standin.lock")
DEBIAN_MIRROR = "http://deb.debian.org/debian"
BASE_PACKAGES = "python3,python3-psycopg2,openssl,ca-certificates"
DEBOOTSTRAP_TIMEOUT = 900  # seconds; took about 45 s on the development machine


def image_exists(reference: str) -> bool:
    return docker("image", "inspect", reference, check=False).returncode == 0


def image_label(reference: str, label: str) -> str | None:
    result = docker(
        "image",
        "inspect",
        "--format",
        f'{{{{index .Config.Labels "{label}"}}}}',
        reference,
        check=False,
    )
    value = result.stdout.strip()
    return value if result.returncode == 0 and value not in ("", "<no value>") else None


def source_hash(base_id: str) -> str:
    """Hash the stand-in's sources and the base image ID: the build's cache key."""
    digest = hashlib.sha256(base_id.encode())
    for path in sorted(SOURCE_DIR.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(SOURCE_DIR)).encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def build_base_image() -> None:
    """Debootstrap a minimal bookworm and import it as BASE_IMAGE."""
    rootfs = WORK_DIR / "rootfs"
    shutil.rmtree(rootfs, ignore_errors=True)
    rootfs.parent.mkdir(parents=True, exist_ok=True)
    output.phase(f"building {BASE_IMAGE} with debootstrap (about a minute)")
    result = subprocess.run(
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={BASE_PACKAGES}",
            "bookworm",
            str(rootfs),
            DEBIAN_MIRROR,
        ],
        capture_output=True,
        text=True,
        timeout=DEBOOTSTRAP_TIMEOUT,
    )
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip()[-600:]
        raise OpsError(
            f"debootstrap of bookworm into {rootfs} failed: {tail}\nCheck that {DEBIAN_MIRROR} is reachable, then run again."
        )
    clean_rootfs(rootfs)
    import_rootfs(rootfs)
    shutil.rmtree(rootfs, ignore_errors=True)


def clean_rootfs(rootfs: Path) -> None:
    """Drop the package caches: they only make the image larger."""
    for folder in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for entry in (rootfs / folder).glob("*"):
            if entry.is_file():
                entry.unlink()


def import_rootfs(rootfs: Path) -> None:
    tar = subprocess.Popen(
        ["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE
    )
    imported = subprocess.run(
        ["docker", "import", "-", BASE_IMAGE],
        stdin=tar.stdout,
        capture_output=True,
        text=True,
    )
    tar.stdout.close()
    tar.wait()
    if tar.returncode != 0 or imported.returncode != 0:
        raise OpsError(
            f"importing {rootfs} as {BASE_IMAGE} failed: {imported.stderr.strip()}"
        )


def build_image(reference: str, wanted_hash: str) -> None:
    output.phase(f"building {reference} from {SOURCE_DIR.relative_to(REPO_ROOT)}")
    result = subprocess.run(
        [
            "docker",
            "build",
            "--pull=false",
            "--build-arg",
            f"VERSION={TAG}",
            "--label",
            f"{SOURCE_HASH_LABEL}={wanted_hash}",
            "--tag",
            reference,
            "--tag",
            f"{LOOPBACK_IMAGE}:{TAG}",
            str(SOURCE_DIR),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "DOCKER_BUILDKIT": "0"},
        timeout=600,
    )
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip()[-800:]
        raise OpsError(f"docker build of {reference} failed: {tail}")


def ensure_standin_image() -> str:
    """Build the stand-in image unless an up-to-date one exists; return its reference.

    The image is also tagged LOOPBACK_IMAGE:TAG, the name to deploy on this
    machine (see LOOPBACK_IMAGE).
    """
    reference = f"{IMAGE}:{TAG}"
    LOCK_PATH.parent.mkdir(parents=True, exist_ok=True)
    with open(LOCK_PATH, "w") as lock:
        # Tests and the lab may call this at the same time.
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not image_exists(BASE_IMAGE):
            build_base_image()
        base_id = docker("image", "inspect", "--format", "{{.Id}}", BASE_IMAGE)
        wanted_hash = source_hash(base_id.stdout.strip())
        if image_label(reference, SOURCE_HASH_LABEL) == wanted_hash and image_exists(
            f"{LOOPBACK_IMAGE}:{TAG}"
        ):
            output.phase(f"stand-in image {reference} is up to date")
            return reference
        build_image(reference, wanted_hash)
    return reference
