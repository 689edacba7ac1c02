"""The stack file: render stack/authentik.yml.j2, merge the override, check the result.

`render_stack` returns the exact text that `stack.deploy` hands to
`docker stack deploy`, so `stack.render` shows what will run.
"""

import copy
import hashlib
import json
from dataclasses import dataclass

import jinja2
import yaml

from authops import REPO_ROOT
from authops.errors import OpsError
from authops.settings import Settings
from authops.stacksecrets import SecretVersion, secret_versions

TEMPLATE_PATH = REPO_ROOT / "stack" / "authentik.yml.j2"
SERVICES = ("server", "worker")
METRICS_PORT = 9300
SPEC_HASH_LABEL = "authops.spec-hash"
HEADER = (
    "# Rendered by `invoke stack.render --env {env}` from stack/authentik.yml.j2{override}.\n"
    "# Deployed as stack {stack}; edit the template or the env file, not this output.\n"
)


class FileMode(int):
    """A file mode, written in octal (0400) in the rendered file."""


class StackDumper(yaml.SafeDumper):
    """Writes every block in full: the template's anchors are expanded, not aliased."""

    def ignore_aliases(self, data):
        return True


StackDumper.add_representer(
    FileMode,
    lambda dumper, mode: dumper.represent_scalar("tag:yaml.org,2002:int", f"0{mode:o}"),
)


@dataclass(frozen=True)
class RenderedStack:
    """The stack file as deployed (`text`), its parsed form and its secrets."""

    text: str
    document: dict
    secrets: dict[str, SecretVersion]


def quote(value: object) -> str:
    """Quote a value as a YAML string, with each `$` doubled for `docker stack deploy`."""
    return json.dumps(str(value).replace("$", "$$"))


def unescape(value: str) -> str:
    """Return a stack file string as the service receives it: `$$` becomes `$`."""
    return value.replace("$$", "$")


def server_update_order(settings: Settings) -> str:
    """Return start-first unless host-mode ports leave no node free for the new task."""
    host_mode = settings.get("PUBLISH_MODE") == "host"
    if host_mode and settings.number("SERVER_REPLICAS") >= len(settings.nodes):
        return "stop-first"
    return "start-first"


def template_context(
    settings: Settings, secrets: dict[str, SecretVersion]
) -> dict[str, object]:
    return {
        "values": settings.values,
        "image": settings.image,
        "secrets": secrets,
        "secret_file": lambda purpose: f"file://{secrets[purpose].path}",
        "nfs_directories": settings.nfs_directories,
        "server_update_order": server_update_order(settings),
    }


def jinja_environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701 - the output is YAML, not HTML
    )
    environment.filters["q"] = quote
    return environment


def render_template(text: str, context: dict, source: str) -> str:
    try:
        return jinja_environment().from_string(text).render(context)
    except jinja2.TemplateError as error:
        line = getattr(error, "lineno", None)
        where = f"{source}:{line}" if line else source
        raise OpsError(f"{where}: template error: {error}") from None


def load_yaml(text: str, source: str) -> dict:
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise OpsError(f"{source} is not valid YAML: {error}") from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise OpsError(f"{source} must be a YAML mapping at the top level")
    return document


def deep_merge(base: dict, override: dict) -> dict:
    """Merge `override` into a copy of `base`: mappings merge, lists and scalars replace."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def drop_extension_fields(document: dict) -> dict:
    """Remove the template's `x-` blocks: their anchors are already expanded."""
    return {key: value for key, value in document.items() if not key.startswith("x-")}


def mark_file_modes(document: dict) -> None:
    """Wrap each secret's `mode` in FileMode, so that it is written in octal."""
    for service in document.get("services", {}).values():
        for secret in service.get("secrets") or []:
            if isinstance(secret, dict) and isinstance(secret.get("mode"), int):
                secret["mode"] = FileMode(secret["mode"])


def spec_hash(service: dict) -> str:
    """Hash a service definition without its own hash label: changes when anything does."""
    definition = copy.deepcopy(service)
    definition.get("deploy", {}).get("labels", {}).pop(SPEC_HASH_LABEL, None)
    canonical = json.dumps(definition, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def add_spec_hashes(document: dict) -> None:
    """Label each service with the hash of its definition, so that a plan detects any change."""
    for service in document.get("services", {}).values():
        deploy = service.setdefault("deploy", {})
        labels = deploy.setdefault("labels", {})
        labels[SPEC_HASH_LABEL] = spec_hash(service)


def override_path(settings: Settings):
    name = settings.get("STACK_OVERRIDE")
    return REPO_ROOT / name if name else None


def render_document(settings: Settings, secrets: dict[str, SecretVersion]) -> dict:
    """Render the template and the override, and merge them into one document."""
    context = template_context(settings, secrets)
    source = str(TEMPLATE_PATH.relative_to(REPO_ROOT))
    document = load_yaml(
        render_template(TEMPLATE_PATH.read_text(), context, source), source
    )
    path = override_path(settings)
    if path is not None:
        if not path.is_file():
            raise OpsError(
                f"STACK_OVERRIDE file {path} not found: give a path relative to the checkout"
            )
        name = settings.get("STACK_OVERRIDE")
        override = load_yaml(render_template(path.read_text(), context, name), name)
        document = deep_merge(document, override)
    document = drop_extension_fields(document)
    mark_file_modes(document)
    add_spec_hashes(document)
    return document


def dump(document: dict, settings: Settings) -> str:
    override = settings.get("STACK_OVERRIDE")
    header = HEADER.format(
        env=settings.env_name,
        override=f" and {override}" if override else "",
        stack=settings.stack_name,
    )
    body = yaml.dump(
        document,
        Dumper=StackDumper,
        sort_keys=False,
        default_flow_style=False,
        width=1000,
    )
    return header + body


def render_stack(settings: Settings) -> RenderedStack:
    """Render, merge and check the stack file; raise OpsError listing every problem."""
    secrets = secret_versions(settings)
    document = render_document(settings, secrets)
    text = dump(document, settings)
    problems = stack_problems(document, text, secrets)
    if problems:
        lines = "\n".join(f"  {problem}" for problem in problems)
        raise OpsError(f"the rendered stack file is invalid:\n{lines}")
    return RenderedStack(text, document, secrets)


def compose_version(document: dict) -> tuple[int, ...]:
    """Return the file's `version` as numbers, (0,) when missing or invalid."""
    parts = str(document.get("version", "")).split(".")
    return (
        tuple(int(part) for part in parts) if all(p.isdigit() for p in parts) else (0,)
    )


def stack_problems(
    document: dict, text: str, secrets: dict[str, SecretVersion]
) -> list[str]:
    """Return what makes a rendered stack file unfit to deploy."""
    problems = []
    if compose_version(document) < (3, 8):
        problems.append("version: must be 3.8 or newer for the tmpfs size")
    services = document.get("services") or {}
    for name in SERVICES:
        if name not in services:
            problems.append(f"services.{name}: missing")
            continue
        problems += service_problems(name, services[name], document)
    for version in secrets.values():
        if version.value and version.value in text:
            problems.append(
                f"the value of secret {version.name} appears in the file: pass it as a secret file"
            )
    return problems


def service_problems(name: str, service: dict, document: dict) -> list[str]:
    where = f"services.{name}"
    problems = []
    for key in ("image", "command", "environment", "healthcheck", "deploy"):
        if not service.get(key):
            problems.append(f"{where}.{key}: missing")
    replicas = service.get("deploy", {}).get("replicas")
    if not isinstance(replicas, int) or replicas < 1:
        problems.append(
            f"{where}.deploy.replicas: {replicas!r} is not a positive number"
        )
    for port in service.get("ports") or []:
        if not isinstance(port, dict):
            problems.append(f"{where}.ports: {port!r} must use the long syntax")
        elif METRICS_PORT in (port.get("target"), port.get("published")):
            problems.append(
                f"{where}.ports: {METRICS_PORT} is authentik's metrics port, which has no authentication: never publish it"
            )
    environment = service.get("environment") or {}
    if not isinstance(environment, dict):
        problems.append(f"{where}.environment: must be a mapping")
        environment = {}
    for key, value in environment.items():
        if not isinstance(value, str):
            problems.append(f"{where}.environment.{key}: {value!r} must be a string")
    problems += reference_problems(where, service, document)
    return problems


def reference_problems(where: str, service: dict, document: dict) -> list[str]:
    """Check that the secrets and named volumes a service uses are declared at the top."""
    problems = []
    declared_secrets = document.get("secrets") or {}
    for secret in service.get("secrets") or []:
        source = secret.get("source") if isinstance(secret, dict) else secret
        if source not in declared_secrets:
            problems.append(f"{where}.secrets: {source} is not declared under secrets")
        elif not declared_secrets[source].get("external"):
            problems.append(
                f"secrets.{source}: must be external (created by stack.deploy)"
            )
    declared_volumes = document.get("volumes") or {}
    named_volumes = [
        volume.get("source")
        for volume in service.get("volumes") or []
        if isinstance(volume, dict) and volume.get("type") == "volume"
    ]
    for source in named_volumes:
        if source not in declared_volumes:
            problems.append(f"{where}.volumes: {source} is not declared under volumes")
    return problems
