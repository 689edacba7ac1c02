"""Rotation of the database password without a task ever holding an invalid password.

PostgreSQL keeps one password per role, so setting a new password on the
role that running tasks log in with breaks each new connection they open
until the tasks are replaced. The rotation therefore goes through a second
login role, OWNER_next, a member of the owner role that switches to it at
login (`ALTER ROLE ... SET role`), so every object stays owned by the owner:

1. the env file gets the new password first, so an interrupted rotation
   resumes with it;
2. OWNER_next may log in with the new password;
3. the stack is deployed with USER=OWNER_next and the new password;
4. the owner role gets the new password: the old one stops working;
5. the stack is deployed back with USER=OWNER;
6. OWNER_next loses its login and password.

Before each password change, the running services are read: a change is
made only when no service, and no running task, uses that role with a
password secret other than the new one. Both deploys wait for convergence,
and Swarm rolls a failed one back to a spec whose password still works.
"""

import dataclasses
from dataclasses import dataclass

import psycopg
from psycopg import sql

from authops import output
from authops.dbbootstrap import SCRAM, read_role, run_all
from authops.env import generate_password
from authops.envupdate import update_env_file
from authops.errors import CHANGED, OK, UNCHANGED, WOULD_CHANGE, OpsError
from authops.postgres import (
    Superuser,
    check_identifier,
    check_names,
    check_server,
    query,
    statements,
)
from authops.scram import password_matches
from authops.settings import Settings, load_settings
from authops.stackdeploy import deploy
from authops.stacksecrets import version_name
from authops.swarm import find_manager, service_tasks, services_of_stack

NEXT_SUFFIX = "_next"
USER_KEY = "AUTHENTIK_POSTGRESQL__USER"
PASSWORD_KEY = "AUTHENTIK_POSTGRESQL__PASSWORD"  # noqa: S105 - a key name
SECRET_PURPOSE = "db_password"  # noqa: S105 - a secret purpose, not a value


@dataclass(frozen=True)
class Credential:
    """The role and password secret that one service spec or running task logs in with."""

    where: str
    user: str
    secret: str


@dataclass
class Roles:
    """The owner role and the second login role, as the superuser reads them."""

    owner: str
    next: str
    owner_state: dict
    next_state: dict | None


def next_role_name(owner: str) -> str:
    name = f"{owner}{NEXT_SUFFIX}"
    check_identifier(f"{USER_KEY} + {NEXT_SUFFIX!r}", name)
    return name


def password_secret(settings: Settings, password: str) -> str:
    """Return the name of the Swarm secret that a deploy creates for `password`."""
    return version_name(
        settings.stack_name, SECRET_PURPOSE, password, settings.secret_key
    )


def spec_credential(where: str, spec: dict, stack: str) -> Credential:
    container = spec.get("ContainerSpec") or {}
    env = dict(item.split("=", 1) for item in container.get("Env") or [] if "=" in item)
    prefix = f"{stack}_{SECRET_PURPOSE}_"
    secrets = [
        ref["SecretName"]
        for ref in container.get("Secrets") or []
        if ref["SecretName"].startswith(prefix)
    ]
    return Credential(where, env.get(USER_KEY, ""), ",".join(secrets))


def stack_credentials(settings: Settings) -> list[Credential]:
    """Return what each service spec and each running task of the stack logs in with."""
    stack = settings.stack_name
    host = find_manager(settings)
    try:
        credentials = []
        for service in services_of_stack(host, stack):
            name = service["Spec"]["Name"]
            template = service["Spec"]["TaskTemplate"]
            credentials.append(spec_credential(name, template, stack))
            for task in service_tasks(host, service["ID"]):
                if task.get("DesiredState") == "running":
                    where = f"{name} task {task['ID'][:12]}"
                    credentials.append(spec_credential(where, task["Spec"], stack))
        return credentials
    finally:
        host.close()


def read_roles(admin: Superuser, owner: str, next_role: str) -> Roles:
    """Read both roles; raise OpsError when the owner role is missing or unfit."""
    with admin.connect() as connection:
        check_server(connection, admin)
        owner_state = read_role(connection, owner)
        next_state = connection.execute(
            query("next_role_state"), {"role": next_role, "owner": owner}
        ).fetchone()
    if owner_state is None:
        raise OpsError(
            f"role {owner} not found at {admin.address}: run `invoke db.bootstrap` first"
        )
    for name, state in ((owner, owner_state), (next_role, next_state)):
        if state and state["is_superuser"]:
            raise OpsError(
                f"role {name} at {admin.address} is a superuser: the rotation does not "
                f"change superusers; make authentik use a dedicated role"
            )
    return Roles(owner, next_role, owner_state, next_state)


def interruption(
    settings: Settings, roles: Roles, credentials: list[Credential]
) -> str | None:
    """Return why the last rotation did not finish, or None when everything is settled.

    Settled: the owner role has the env file's password, every service and
    task logs in as the owner with that password, and OWNER_next cannot log in.
    """
    password = settings.database.password
    secret = password_secret(settings, password)
    if not password_matches(password, roles.owner_state["password_verifier"]):
        return f"the env file's password is not role {roles.owner}'s"
    strays = [
        c.where for c in credentials if (c.user, c.secret) != (roles.owner, secret)
    ]
    if strays:
        return f"{', '.join(strays)} log in with another role or password"
    if roles.next_state and roles.next_state["can_login"]:
        return f"role {roles.next} can still log in"
    return None


def check_unused_elsewhere(
    role: str, secret: str, credentials: list[Credential]
) -> None:
    """Raise OpsError when a service or task logs in as `role` with a password other than the new one.

    Changing the role's password then would break that task's new connections.
    """
    holders = [c.where for c in credentials if c.user == role and c.secret != secret]
    if holders:
        raise OpsError(
            f"{', '.join(holders)} log in as {role} with another password: changing "
            f"it now would break their new connections. Nothing more was changed; check "
            f"`invoke stack.status`, then run the rotation again"
        )


def verifier_for(admin: Superuser, role: str, password: str) -> str:
    """Compute the SCRAM-SHA-256 verifier on this machine, so the server never receives the password."""
    with admin.connect() as connection:
        verifier = connection.pgconn.encrypt_password(
            password.encode(), role.encode(), SCRAM
        ).decode()
    output.register_secret(verifier)
    return verifier


def next_role_statements(
    admin: Superuser, roles: Roles, password: str
) -> list[sql.Composed]:
    """Return the statements that let OWNER_next log in, as the owner, with `password`."""
    role = sql.Identifier(roles.next)
    state = roles.next_state
    commands = []
    if state is None:
        commands += statements("next_role_create", role=role)
    if state is None or not state["is_member"] or not state["sets_role"]:
        commands += statements(
            "next_role_setup",
            role=role,
            owner=sql.Identifier(roles.owner),
            owner_name=sql.Literal(roles.owner),
        )
    current = state["password_verifier"] if state else None
    if (
        state is None
        or not state["can_login"]
        or not password_matches(password, current)
    ):
        verifier = verifier_for(admin, roles.next, password)
        commands += statements(
            "next_role_login", role=role, verifier=sql.Literal(verifier)
        )
    return commands


def run_statements(admin: Superuser, commands: list[sql.Composed]) -> None:
    with admin.connect() as connection:
        run_all(connection, commands)


def with_login(settings: Settings, user: str, password: str) -> Settings:
    values = {**settings.values, USER_KEY: user, PASSWORD_KEY: password}
    return dataclasses.replace(settings, values=values)


class DbRotation:
    """One rotation of the database password; `run` performs or, in a dry run, shows the steps."""

    def __init__(
        self, settings: Settings, admin: Superuser, timeout: int | None, dry_run: bool
    ):
        self.settings = settings
        self.admin = admin
        self.timeout = timeout
        self.dry_run = dry_run
        database = settings.database
        check_names(database)
        self.owner = database.user
        self.next = next_role_name(self.owner)
        self.old_password: str | None = None
        self.password = ""

    def run(self) -> None:
        credentials = stack_credentials(self.settings)
        if not credentials:
            raise OpsError(
                f"stack {self.settings.stack_name} is not deployed, so nothing logs in "
                f"yet: put a new {PASSWORD_KEY} in {self.settings.path} and run "
                f"`invoke db.bootstrap`"
            )
        roles = read_roles(self.admin, self.owner, self.next)
        self.choose_password(roles, credentials)

        self.write_env_file()
        if self.switched_back(roles, credentials):
            output.status(
                self.settings.stack_name,
                UNCHANGED,
                f"every service logs in as {self.owner} with the new password already",
            )
        else:
            self.enable_next_role(roles, credentials)
            login = with_login(self.settings, self.next, self.password)
            self.deploy_as(self.next, login)
            self.set_owner_password()
            self.deploy_as(self.owner, None)
        self.disable_next_role()
        self.confirm()
        if not self.dry_run:
            output.warn(
                f"each service's previous spec logs in as {self.next}, which cannot log "
                f"in any more: until the next deploy, fix problems with `invoke "
                f"stack.deploy`, not `invoke stack.rollback`"
            )

    def choose_password(self, roles: Roles, credentials: list[Credential]) -> None:
        """Generate the new password, or take the env file's to finish an interrupted rotation."""
        reason = interruption(self.settings, roles, credentials)
        if reason is None:
            self.old_password = self.settings.database.password
            self.password = generate_password()
            output.register_secret(self.password)
            return
        self.password = self.settings.database.password
        output.warn(
            f"the last rotation did not finish ({reason}): finishing it with the "
            f"password in {self.settings.path}"
        )

    def switched_back(self, roles: Roles, credentials: list[Credential]) -> bool:
        """Return whether an interrupted rotation got past its second deploy already."""
        if self.old_password is not None:
            return False
        secret = password_secret(self.settings, self.password)
        verifier = roles.owner_state["password_verifier"]
        return password_matches(self.password, verifier) and all(
            (c.user, c.secret) == (self.owner, secret) for c in credentials
        )

    def write_env_file(self) -> None:
        path = str(self.settings.path)
        if self.old_password is None:
            output.status(
                path, UNCHANGED, f"{PASSWORD_KEY} already holds the new password"
            )
            return
        update_env_file(
            self.settings.path,
            self.settings.env_name,
            {PASSWORD_KEY: self.password},
            dry_run=self.dry_run,
        )
        if self.dry_run:
            output.status(
                path,
                WOULD_CHANGE,
                f"would set {PASSWORD_KEY} to a new generated password",
            )
            return
        output.status(path, CHANGED, f"{PASSWORD_KEY} set to a new generated password")

    def enable_next_role(self, roles: Roles, credentials: list[Credential]) -> None:
        secret = password_secret(self.settings, self.password)
        check_unused_elsewhere(self.next, secret, credentials)
        commands = next_role_statements(self.admin, roles, self.password)
        name = f"role {self.next}"
        if not commands:
            output.status(
                name, UNCHANGED, f"logs in with the new password as {self.owner}"
            )
            return
        if self.dry_run:
            output.status(
                name,
                WOULD_CHANGE,
                f"would log in with the new password, as a member of {self.owner} that "
                f"switches to it at login",
            )
            return
        run_statements(self.admin, commands)
        output.status(
            name, CHANGED, f"logs in with the new password, acting as {self.owner}"
        )

    def deploy_as(self, user: str, settings: Settings | None) -> None:
        """Deploy the stack logging in as `user`; the env file's settings when `settings` is None."""
        stack = self.settings.stack_name
        if self.dry_run:
            output.status(
                stack,
                WOULD_CHANGE,
                f"would deploy with {USER_KEY}={user} and the new password, and wait",
            )
            return
        output.phase(f"deploying {stack} with {USER_KEY}={user}")
        if settings is None:
            settings = load_settings(self.settings.env_name)
        if not deploy(settings, self.timeout):
            raise OpsError(
                f"the deploy with {USER_KEY}={user} failed (see above); Swarm keeps or "
                f"rolls back to a spec whose password still works. {self.settings.path} "
                f"holds the new password: fix the cause, then run `invoke secrets.rotate "
                f"--which db --env {self.settings.env_name}` again to finish"
            )

    def set_owner_password(self) -> None:
        name = f"role {self.owner}"
        secret = password_secret(self.settings, self.password)
        if not self.dry_run:
            check_unused_elsewhere(self.owner, secret, stack_credentials(self.settings))
        roles = read_roles(self.admin, self.owner, self.next)
        if password_matches(self.password, roles.owner_state["password_verifier"]):
            output.status(name, UNCHANGED, "already has the new password")
            return
        if self.dry_run:
            output.status(
                name,
                WOULD_CHANGE,
                "would get the new password; the old one stops working",
            )
            return
        verifier = verifier_for(self.admin, self.owner, self.password)
        run_statements(
            self.admin,
            statements(
                "role_password",
                role=sql.Identifier(self.owner),
                verifier=sql.Literal(verifier),
            ),
        )
        output.status(name, CHANGED, "has the new password; the old one stops working")

    def disable_next_role(self) -> None:
        name = f"role {self.next}"
        if self.dry_run:
            output.status(name, WOULD_CHANGE, "would lose its login and password")
            return
        in_use = [
            c.where for c in stack_credentials(self.settings) if c.user == self.next
        ]
        if in_use:
            raise OpsError(
                f"{', '.join(in_use)} still log in as {self.next}: it keeps its login. "
                f"Check `invoke stack.status`, then run the rotation again"
            )
        run_statements(
            self.admin, statements("next_role_disable", role=sql.Identifier(self.next))
        )
        ended = self.end_sessions()
        output.status(
            name,
            CHANGED,
            f"cannot log in any more (NOLOGIN, no password); {ended} session(s) ended",
        )

    def end_sessions(self) -> int:
        with self.admin.connect() as connection:
            row = connection.execute(
                query("role_sessions_end"), {"role": self.next}
            ).fetchone()
        return row["ended"]

    def confirm(self) -> None:
        """Check the stored verifier: the new password matches, the old one does not."""
        if self.dry_run:
            return
        roles = read_roles(self.admin, self.owner, self.next)
        verifier = roles.owner_state["password_verifier"]
        if not password_matches(self.password, verifier):
            raise OpsError(
                f"role {self.owner} does not have the new password after the rotation: "
                f"run it again"
            )
        detail = "the new password matches"
        if self.old_password is not None:
            if password_matches(self.old_password, verifier):
                raise OpsError(f"role {self.owner} still accepts the old password")
            detail += "; the old one no longer does"
        output.status(f"role {self.owner}", OK, detail)


def rotate_database_password(
    settings: Settings, admin: Superuser, timeout: int | None, dry_run: bool
) -> None:
    """Rotate the database password as the module doc describes; raise OpsError on a failure."""
    output.phase(
        f"rotating the password of role {settings.database.user} at {admin.address}"
    )
    try:
        DbRotation(settings, admin, timeout, dry_run).run()
    except psycopg.Error as error:
        raise OpsError(output.redact(f"PostgreSQL error: {error}")) from None
