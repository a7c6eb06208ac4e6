"""The production stack on this machine, on 127.0.0.1 (`evergreen stack up|down|status|env`).

Existing engines, each a background process recorded by pid in `<dir>/stack.json`:

- PostgreSQL (the machine's `initdb`/`postgres`; password auth, scram-sha-256, TCP on
  127.0.0.1 only, no Unix socket), with a database and a role each for Prefect, MLflow and
  MLflow's user store;
- an S3-compatible object store (moto's server mode) with the bucket `evergreen`: data on
  `s3://evergreen/...` (batches, labels, snapshots, the prediction log);
- a Prefect server on PostgreSQL with basic auth (`PREFECT_SERVER_API_AUTH_STRING`);
- an MLflow tracking server on PostgreSQL with its basic-auth app, serving its own artifacts
  (`--artifacts-destination`: clients need no storage credentials);
- a process work pool `evergreen` and two workers; the pool's job template hands each flow
  run the MLflow and S3 credentials from Prefect Secret blocks (resolved by the worker when
  the run starts: never in prefect.yaml or a deployment), and the zombie-run automations of
  `deploy/automations.yaml`.

Credentials are generated at the first `up` and kept in `<dir>/credentials.json` (0600) and
in Prefect Secret blocks; `evergreen stack env` prints the environment a shell needs. The
state file and every log hold no secret. The default folder is the project's
`.evergreen/stack` (or $EVERGREEN_STACK).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from evergreen.apps.services import (
    PrefectServer,
    _cmdline,
    _is_ours,
    executable,
    free_port,
    port_in_use,
    service_env,
    start_prefect_server,
    wait_http,
)

STACK_ENV = "EVERGREEN_STACK"
DEFAULT_DIR = Path(".evergreen") / "stack"
BUCKET = "evergreen"
WORK_POOL = "evergreen"
REGION = "us-east-1"
# SQLAlchemy would pick psycopg 3 for a bare postgresql://; MLflow gets psycopg2 (installed).
PG_SYNC_DRIVER = "postgresql+psycopg2"
MLFLOW_USER = "evergreen"
PREFECT_USER = "evergreen"
# Prefect Secret blocks the work pool's job template reads (the worker resolves them).
SECRET_BLOCKS = {
    "mlflow_password": "evergreen-mlflow-password",
    "s3_secret_key": "evergreen-s3-secret-access-key",
}
DEFAULT_PORTS = {"postgres": 55432, "s3": 5490, "prefect": 4300, "mlflow": 5300}
AUTOMATIONS_FILE = Path(__file__).resolve().parents[2] / "deploy" / "automations.yaml"
# Flow runs emit a heartbeat this often; the zombie automation waits 3 of them.
HEARTBEAT_SECONDS = 30
# While PostgreSQL restarts (or fails over) the Prefect API answers 500 to every request
# that needs a new database connection: a refused connection is not one of the database
# errors the server turns into a retryable 503. Prefect clients retry 429/502/503 only, so a
# flow run whose state change, concurrency slot or block read landed in those seconds
# crashed (or stayed Running with its process gone), and its batch went unmonitored. Every
# Prefect client of the stack (flow runs, workers, the server's automation actions, shells)
# retries a 500 too, with Prefect's exponential back-off (PREFECT_CLIENT_MAX_RETRIES, 5:
# about a minute), which outlasts a restart.
API_RETRY_ENV = {"PREFECT_CLIENT_RETRY_EXTRA_CODES": "500"}
_MARKERS = {"postgres": "postgres", "s3": "moto", "prefect": "server start", "mlflow": "mlflow", "worker": "worker start"}


class StackError(RuntimeError):
    """The stack cannot start or is not up; the message says what to do."""


def stack_home(path: Path | str | None = None) -> Path:
    """The stack's folder: `path`, else $EVERGREEN_STACK, else `.evergreen/stack` (absolute)."""
    return Path(path or os.environ.get(STACK_ENV) or DEFAULT_DIR).resolve()


# ----------------------------------------------------------------------------- credentials


@dataclass
class Credentials:
    """Everything secret about one stack; only ever in `credentials.json` (0600), in Prefect
    Secret blocks, and in the environment of the processes that need it."""

    postgres_superuser: str = "evergreen"
    postgres_password: str = ""
    prefect_db_password: str = ""
    mlflow_db_password: str = ""
    prefect_auth: str = ""  # "user:password", the server's basic-auth string
    mlflow_admin_password: str = ""
    mlflow_password: str = ""  # of user MLFLOW_USER, the one flows use
    mlflow_flask_secret: str = ""
    s3_access_key: str = ""
    s3_secret_key: str = ""

    @classmethod
    def generate(cls) -> Credentials:
        token = lambda: secrets.token_urlsafe(24)  # noqa: E731 - URL-safe: they go in DSNs
        return cls(
            postgres_password=token(), prefect_db_password=token(), mlflow_db_password=token(),
            prefect_auth=f"{PREFECT_USER}:{token()}", mlflow_admin_password=token(),
            mlflow_password=token(), mlflow_flask_secret=token(),
            s3_access_key="EVG" + secrets.token_hex(8).upper(), s3_secret_key=token(),
        )

    def values(self) -> list[str]:
        """Every secret value (for the secret search over logs and stores). User names and the
        S3 access key id are identifiers, not secrets (the work pool's job template holds the
        key id in clear, as AWS treats it)."""
        public = {"postgres_superuser", "s3_access_key"}
        return [v for k, v in asdict(self).items() if k not in public and v] + [self.prefect_auth.split(":", 1)[-1]]


def load_credentials(home: Path) -> Credentials | None:
    try:
        return Credentials(**json.loads((home / "credentials.json").read_text(encoding="utf-8")))
    except FileNotFoundError:
        return None


def _ensure_credentials(home: Path) -> Credentials:
    creds = load_credentials(home)
    if creds is not None:
        return creds
    creds = Credentials.generate()
    path = home / "credentials.json"
    # Created 0600 before anything is written into it.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(asdict(creds), fh, indent=2)
    return creds


def _write_secret_file(path: Path, text: str) -> None:
    """A file only its owner reads (0600 from its creation)."""
    with suppress(FileNotFoundError):
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)


# ----------------------------------------------------------------------------- state


@dataclass
class Service:
    name: str
    pid: int | None
    url: str
    log: str
    marker: str


@dataclass
class StackState:
    """What `up` started (no secrets): ports, pids, URLs, logs."""

    home: str
    cwd: str
    ports: dict[str, int]
    services: dict[str, Service] = field(default_factory=dict)
    workers: list[Service] = field(default_factory=list)
    started_at: str = ""
    postgres_data: str = ""

    @property
    def prefect_api_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['prefect']}/api"

    @property
    def mlflow_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['mlflow']}"

    @property
    def s3_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def postgres_url(self, user: str, password: str, database: str, driver: str = "postgresql") -> str:
        return f"{driver}://{user}:{password}@127.0.0.1:{self.ports['postgres']}/{database}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> StackState:
        services = {k: Service(**v) for k, v in raw.get("services", {}).items()}
        workers = [Service(**w) for w in raw.get("workers", [])]
        return cls(**{**raw, "services": services, "workers": workers})


def read_state(home: Path) -> StackState | None:
    try:
        return StackState.from_dict(json.loads((home / "stack.json").read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None


def _write_state(home: Path, state: StackState) -> None:
    tmp = home / "stack.json.tmp"
    tmp.write_text(json.dumps(state.to_dict(), indent=2) + "\n", encoding="utf-8")
    tmp.replace(home / "stack.json")


def _running(service: Service | None) -> bool:
    return service is not None and service.pid is not None and _is_ours(service.pid, service.marker)


# ----------------------------------------------------------------------------- the environment


def client_env(state: StackState, creds: Credentials) -> dict[str, str]:
    """The environment a shell or process needs to use the stack: the Prefect API and its
    auth string, the MLflow server and its user, the S3 endpoint and keys (for fsspec/s3fs,
    botocore and MLflow), and where the stack is."""
    return {
        STACK_ENV: state.home,
        "PREFECT_API_URL": state.prefect_api_url,
        "PREFECT_API_AUTH_STRING": creds.prefect_auth,
        "PREFECT_UI_URL": state.prefect_api_url.removesuffix("/api"),
        "MLFLOW_TRACKING_URI": state.mlflow_url,
        "MLFLOW_TRACKING_USERNAME": MLFLOW_USER,
        "MLFLOW_TRACKING_PASSWORD": creds.mlflow_password,
        **API_RETRY_ENV,
        **s3_env(state.s3_endpoint, creds.s3_access_key, creds.s3_secret_key),
    }


def s3_env(endpoint: str, access_key: str, secret_key: str) -> dict[str, str]:
    """S3 settings for botocore (and so s3fs and MLflow) and fsspec: the endpoint, keys and
    region, and no listing cache (other processes write the same prefixes)."""
    return {
        "AWS_ACCESS_KEY_ID": access_key,
        "AWS_SECRET_ACCESS_KEY": secret_key,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ENDPOINT_URL_S3": endpoint,
        "FSSPEC_S3": json.dumps({"endpoint_url": endpoint, "use_listings_cache": False}),
    }


def apply_env(env: dict[str, str]) -> None:
    """Set `env` in this process: os.environ (children, botocore) and fsspec's config (read
    from the environment only when fsspec was imported), dropping cached S3 filesystems."""
    os.environ.update(env)
    if "FSSPEC_S3" in env:
        import fsspec.config

        fsspec.config.conf.setdefault("s3", {}).update(json.loads(env["FSSPEC_S3"]))
        with suppress(ImportError):
            import s3fs

            s3fs.S3FileSystem.clear_instance_cache()


def shell_exports(env: dict[str, str]) -> str:
    import shlex

    return "\n".join(f"export {k}={shlex.quote(v)}" for k, v in env.items())


def stack_env(home: Path | None = None) -> dict[str, str]:
    """`client_env` of the stack recorded in `home` (StackError when there is none)."""
    home = stack_home(home)
    state, creds = read_state(home), load_credentials(home)
    if state is None or creds is None:
        raise StackError(f"no stack in {home} (no stack.json/credentials.json); start it with `evergreen stack up`")
    return client_env(state, creds)


# ----------------------------------------------------------------------------- processes


def _spawn(command: list[str], env: dict[str, str], log: Path, cwd: Path | None = None, user: str | None = None) -> int:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd,
            start_new_session=True, user=user,
        )
    return proc.pid


def _wait_pid_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _cmdline(pid) is None:
            with suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)
            return True
        with suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.2)
    return _cmdline(pid) is None


def stop_service(service: Service, sig: int = signal.SIGTERM, timeout: float = 30) -> bool:
    """Signal the process group of the recorded pid (when it still runs what `marker` names),
    SIGKILL after `timeout`; True if something was stopped. Never by name pattern."""
    if not _running(service):
        return False
    assert service.pid is not None
    with suppress(ProcessLookupError):
        os.killpg(service.pid, sig)
    if not _wait_pid_gone(service.pid, timeout):
        with suppress(ProcessLookupError):
            os.killpg(service.pid, signal.SIGKILL)
        _wait_pid_gone(service.pid, 10)
    return True


def _tcp_answers(port: int, timeout: float = 1.0) -> bool:
    with suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=timeout):
        return True
    return False


def _wait_tcp(port: int, timeout: float, pid: int, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _cmdline(pid) is None:
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise StackError(f"process {pid} exited; see {log}:\n{tail}")
        if _tcp_answers(port):
            return
        time.sleep(0.3)
    raise StackError(f"127.0.0.1:{port} did not answer within {timeout:.0f} s; see {log}")


def _pick_port(name: str, previous: dict[str, int]) -> int:
    if name in previous:
        return previous[name]
    port = DEFAULT_PORTS[name]
    return port if not port_in_use(port) else free_port()


# ----------------------------------------------------------------------------- PostgreSQL


def postgres_bin(name: str) -> str:
    """A PostgreSQL server program: from PATH, else Debian's /usr/lib/postgresql/<v>/bin."""
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    for folder in reversed(versions):
        if (folder / name).exists():
            return str(folder / name)
    raise StackError(
        f"PostgreSQL's `{name}` was not found on PATH nor in /usr/lib/postgresql/*/bin; install "
        "the server (Debian/Ubuntu as root: `apt-get update && apt-get install -y postgresql`)"
    )


def _server_user() -> str | None:
    """PostgreSQL refuses to run as root: as root, run it as the `postgres` account."""
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise StackError(
            "running as root and there is no `postgres` account to run PostgreSQL as; install "
            "the postgresql package (it creates it) or run `evergreen stack up` as another user"
        ) from None
    return "postgres"


def _postgres_data_dir(home: Path, user: str | None) -> Path:
    """`home/postgres`, owned by `user`; when that account cannot reach it (a home folder
    closed to others) a folder under /var/lib/evergreen-stack is used and linked from there."""
    link = home / "postgres"
    if user is None:
        link.mkdir(parents=True, exist_ok=True)
        return link
    import hashlib
    import pwd

    entry = pwd.getpwnam(user)
    if not link.is_symlink():
        link.mkdir(parents=True, exist_ok=True)
        os.chown(link, entry.pw_uid, entry.pw_gid)
        probe = subprocess.run(["test", "-w", str(link)], user=user, check=False)  # noqa: S603, S607
        if probe.returncode == 0:
            return link
        link.rmdir()
        elsewhere = Path("/var/lib/evergreen-stack") / hashlib.sha256(str(home).encode()).hexdigest()[:12]
        elsewhere.mkdir(parents=True, exist_ok=True)
        os.chown(elsewhere, entry.pw_uid, entry.pw_gid)
        link.symlink_to(elsewhere)
    return link.resolve()


_PG_CONF = """
# Written by `evergreen stack up`: TCP on loopback only, no Unix socket, passwords hashed.
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = ''
password_encryption = 'scram-sha-256'
max_connections = 200
shared_buffers = 64MB
log_connections = off
"""

_PG_HBA = """# Written by `evergreen stack up`: password (scram-sha-256) over TCP from 127.0.0.1 only.
# TYPE  DATABASE  USER  ADDRESS        METHOD
host    all       all   127.0.0.1/32   scram-sha-256
"""


def _init_postgres(data: Path, creds: Credentials, user: str | None, log: Callable[[str], None]) -> None:
    if (data / "PG_VERSION").exists():
        return
    log(f"initdb {data}")
    pwfile = data.parent / ".pgpass-init"
    _write_secret_file(pwfile, creds.postgres_password + "\n")
    try:
        if user is not None:
            import pwd

            entry = pwd.getpwnam(user)
            os.chown(pwfile, entry.pw_uid, entry.pw_gid)
        result = subprocess.run(  # noqa: S603
            [postgres_bin("initdb"), "-D", str(data), "-U", creds.postgres_superuser, f"--pwfile={pwfile}",
             "--auth-host=scram-sha-256", "--auth-local=scram-sha-256", "--encoding=UTF8", "--no-instructions"],
            user=user, capture_output=True, text=True, check=False, env={**os.environ, "LC_ALL": "C.UTF-8"},
        )
    finally:
        pwfile.unlink(missing_ok=True)
    if result.returncode != 0:
        raise StackError(f"initdb failed in {data}: {result.stderr.strip() or result.stdout.strip()}")


def _start_postgres(home: Path, state: StackState, creds: Credentials, log: Callable[[str], None]) -> Service:
    user = _server_user()
    data = _postgres_data_dir(home, user) / "data"
    state.postgres_data = str(data)
    _init_postgres(data, creds, user, log)
    port = state.ports["postgres"]
    (data / "postgresql.auto.conf").write_text(_PG_CONF.format(port=port), encoding="utf-8")
    (data / "pg_hba.conf").write_text(_PG_HBA, encoding="utf-8")
    logfile = data.parent / "postgres.log"
    if user is not None:
        import pwd

        entry = pwd.getpwnam(user)
        for path in (data / "postgresql.auto.conf", data / "pg_hba.conf"):
            os.chown(path, entry.pw_uid, entry.pw_gid)
        logfile.touch()
        os.chown(logfile, entry.pw_uid, entry.pw_gid)
    stale = data / "postmaster.pid"
    if stale.exists():
        old = int(stale.read_text().split()[0])
        if _cmdline(old) is None:
            stale.unlink()
    log(f"starting PostgreSQL on 127.0.0.1:{port} (data {data}; log {logfile})")
    pid = _spawn([postgres_bin("postgres"), "-D", str(data)], service_env(), logfile, cwd=data.parent, user=user)
    _wait_tcp(port, 60, pid, logfile)
    _wait_postgres_ready(state, creds, pid, logfile)
    return Service("postgres", pid, f"postgresql://127.0.0.1:{port}", str(logfile), _MARKERS["postgres"])


def _pg_connect(state: StackState, user: str, password: str, database: str):  # noqa: ANN202
    import psycopg2

    return psycopg2.connect(
        host="127.0.0.1", port=state.ports["postgres"], user=user, password=password, dbname=database, connect_timeout=5
    )


def _wait_postgres_ready(state: StackState, creds: Credentials, pid: int, logfile: Path, timeout: float = 60) -> None:
    import psycopg2

    deadline = time.monotonic() + timeout
    while True:
        try:
            _pg_connect(state, creds.postgres_superuser, creds.postgres_password, "postgres").close()
            return
        except psycopg2.OperationalError as exc:
            # "the database system is starting up" / "is in recovery mode": wait; else fail.
            transient = "starting up" in str(exc) or "recovery" in str(exc) or "refused" in str(exc)
            if not transient or time.monotonic() > deadline or _cmdline(pid) is None:
                raise StackError(f"PostgreSQL does not accept connections: {str(exc).strip()}; see {logfile}") from None
            time.sleep(0.5)


def _ensure_databases(state: StackState, creds: Credentials) -> None:
    """A role and a database each for Prefect, MLflow and MLflow's user store (idempotent)."""
    from psycopg2 import sql

    wanted = {"prefect": creds.prefect_db_password, "mlflow": creds.mlflow_db_password}
    conn = _pg_connect(state, creds.postgres_superuser, creds.postgres_password, "postgres")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for role, password in wanted.items():
                cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
                verb = "ALTER" if cur.fetchone() else "CREATE"
                cur.execute(sql.SQL(verb + " ROLE {} LOGIN PASSWORD %s").format(sql.Identifier(role)), (password,))
            for database, owner in (("prefect", "prefect"), ("mlflow", "mlflow"), ("mlflow_auth", "mlflow")):
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
                if not cur.fetchone():
                    cur.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(database), sql.Identifier(owner)))
            # Only the owners (and the superuser) may connect to each database.
            for database in ("prefect", "mlflow", "mlflow_auth"):
                cur.execute(sql.SQL("REVOKE CONNECT ON DATABASE {} FROM PUBLIC").format(sql.Identifier(database)))
    finally:
        conn.close()


def postgres_connections(state: StackState, creds: Credentials) -> dict[str, int]:
    """Open connections per database (pg_stat_activity), for status and the benchmark."""
    conn = _pg_connect(state, creds.postgres_superuser, creds.postgres_password, "postgres")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT datname, count(*) FROM pg_stat_activity WHERE datname IS NOT NULL GROUP BY datname")
            return {str(name): int(n) for name, n in cur.fetchall()}
    finally:
        conn.close()


def restart_postgres(home: Path | None = None, down_seconds: float = 0.0, log: Callable[[str], None] = print) -> Service:
    """Stop PostgreSQL (fast shutdown), wait `down_seconds`, start it again (fault tests)."""
    home = stack_home(home)
    state, creds = _require(home)
    stop_service(state.services["postgres"], signal.SIGINT)
    time.sleep(down_seconds)
    state.services["postgres"] = _start_postgres(home, state, creds, log)
    _write_state(home, state)
    return state.services["postgres"]


# ----------------------------------------------------------------------------- object store


def _start_s3(home: Path, state: StackState, creds: Credentials, log: Callable[[str], None]) -> Service:
    port = state.ports["s3"]
    logfile = home / "s3" / "s3.log"
    moto = executable("moto_server")
    if not Path(moto).exists() and shutil.which(moto) is None:
        raise StackError("moto's server is not installed (`uv sync` installs the dev group with moto[server]); or point data at a real object store")
    log(f"starting the S3 endpoint (moto server) on 127.0.0.1:{port} (log {logfile})")
    pid = _spawn([moto, "-H", "127.0.0.1", "-p", str(port)], service_env(), logfile, cwd=home)
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/moto-api/", 60)
    return Service("s3", pid, url, str(logfile), _MARKERS["s3"])


def _ensure_bucket(state: StackState, creds: Credentials) -> None:
    import boto3

    client = boto3.client(
        "s3", endpoint_url=state.s3_endpoint, region_name=REGION,
        aws_access_key_id=creds.s3_access_key, aws_secret_access_key=creds.s3_secret_key,
    )
    names = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    if BUCKET not in names:
        client.create_bucket(Bucket=BUCKET)


# ----------------------------------------------------------------------------- Prefect


def _prefect_server_env(state: StackState, creds: Credentials) -> dict[str, str]:
    return {
        "PREFECT_API_DATABASE_CONNECTION_URL": state.postgres_url(
            "prefect", creds.prefect_db_password, "prefect", driver="postgresql+asyncpg"
        ),
        "PREFECT_SERVER_API_AUTH_STRING": creds.prefect_auth,
        # The server's own services (automation actions) call its API too.
        "PREFECT_API_AUTH_STRING": creds.prefect_auth,
        "PREFECT_UI_API_URL": state.prefect_api_url,
        "PREFECT_UI_URL": state.prefect_api_url.removesuffix("/api"),
        # Outlive a PostgreSQL restart: more, longer reconnect attempts than the defaults.
        "PREFECT_API_DATABASE_TIMEOUT": "30",
        "PREFECT_API_DATABASE_CONNECTION_TIMEOUT": "10",
        # Its automation actions (run-deployment, change-flow-run-state) are API calls too.
        **API_RETRY_ENV,
    }


def _start_prefect(home: Path, state: StackState, creds: Credentials, log: Callable[[str], None], timeout: float) -> PrefectServer:
    """Start the Prefect server and return at once (the caller waits for `wait_healthy`)."""
    port = state.ports["prefect"]
    folder = home / "prefect"
    log(f"starting the Prefect server on {state.prefect_api_url} (PostgreSQL; log {folder / 'server.log'})")
    return start_prefect_server(
        folder, port=port, ui=True, extra_env=_prefect_server_env(state, creds), timeout=timeout, cwd=Path(state.cwd)
    )


def _worker_env(state: StackState, creds: Credentials) -> dict[str, str]:
    """A worker's environment: the Prefect API and its auth only. Flow runs get the MLflow
    and S3 credentials from the work pool's job template (Secret blocks)."""
    return service_env({
        "PREFECT_API_URL": state.prefect_api_url,
        "PREFECT_API_AUTH_STRING": creds.prefect_auth,
        "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_SECONDS),
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        "PREFECT_WORKER_PREFETCH_SECONDS": "2",
        **API_RETRY_ENV,
    })


def _start_worker(home: Path, state: StackState, creds: Credentials, index: int, limit: int | None) -> Service:
    logfile = home / "workers" / f"worker-{index}.log"
    command = [executable("prefect"), "worker", "start", "--pool", WORK_POOL, "--type", "process", "--name", f"evergreen-worker-{index}"]
    if limit:
        command += ["--limit", str(limit)]
    pid = _spawn(command, _worker_env(state, creds), logfile, cwd=Path(state.cwd))
    return Service(f"worker-{index}", pid, f"pool {WORK_POOL}", str(logfile), _MARKERS["worker"])


def job_env_template() -> dict[str, str]:
    """The environment every flow run of the pool gets: where MLflow and S3 are is filled in
    by `up`; the secrets are Secret block references the worker resolves at run time."""
    return {
        "MLFLOW_TRACKING_USERNAME": MLFLOW_USER,
        "MLFLOW_TRACKING_PASSWORD": "{{ prefect.blocks.secret." + SECRET_BLOCKS["mlflow_password"] + " }}",
        "AWS_SECRET_ACCESS_KEY": "{{ prefect.blocks.secret." + SECRET_BLOCKS["s3_secret_key"] + " }}",
        "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_SECONDS),
        **API_RETRY_ENV,
    }


@contextmanager
def prefect_settings(state: StackState, creds: Credentials) -> Iterator[None]:
    """Prefect clients of this process talk to the stack's server inside the block (Prefect
    reads PREFECT_API_URL and its auth string from the environment only when imported)."""
    from prefect.settings import (
        PREFECT_API_AUTH_STRING,
        PREFECT_API_URL,
        PREFECT_CLIENT_RETRY_EXTRA_CODES,
        temporary_settings,
    )

    updates = {
        PREFECT_API_URL: state.prefect_api_url,
        PREFECT_API_AUTH_STRING: creds.prefect_auth,
        PREFECT_CLIENT_RETRY_EXTRA_CODES: API_RETRY_ENV["PREFECT_CLIENT_RETRY_EXTRA_CODES"],
    }
    with temporary_settings(updates=updates):
        yield


def _configure_prefect(state: StackState, creds: Credentials, log: Callable[[str], None]) -> None:
    """Secret blocks, the process work pool with its job environment, the automations."""
    import asyncio

    with prefect_settings(state, creds):
        asyncio.run(_configure_prefect_async(state, creds, log))


async def _configure_prefect_async(state: StackState, creds: Credentials, log: Callable[[str], None]) -> None:
    import yaml
    from prefect.blocks.system import Secret
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.events.schemas.automations import AutomationCore
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker

    await Secret(value=creds.mlflow_password).save(SECRET_BLOCKS["mlflow_password"], overwrite=True)
    await Secret(value=creds.s3_secret_key).save(SECRET_BLOCKS["s3_secret_key"], overwrite=True)
    template = ProcessWorker.get_default_base_job_template()
    env = {
        **job_env_template(),
        **{k: v for k, v in s3_env(state.s3_endpoint, creds.s3_access_key, "").items() if k != "AWS_SECRET_ACCESS_KEY"},
        "MLFLOW_TRACKING_URI": state.mlflow_url,
    }
    template["variables"]["properties"]["env"]["default"] = env
    async with get_client() as client:
        try:
            await client.read_work_pool(WORK_POOL)
            await client.update_work_pool(WORK_POOL, WorkPoolUpdate(base_job_template=template))
        except ObjectNotFound:
            await client.create_work_pool(WorkPoolCreate(name=WORK_POOL, type="process", base_job_template=template))
        log(f"work pool {WORK_POOL!r} (process): flow runs get MLflow and S3 credentials from Secret blocks {sorted(SECRET_BLOCKS.values())}")
        wanted = yaml.safe_load(AUTOMATIONS_FILE.read_text(encoding="utf-8"))["automations"]
        existing = {a.name: a for a in await client.read_automations()}
        for raw in wanted:
            automation = AutomationCore.model_validate(raw)
            if automation.name in existing:
                await client.update_automation(existing[automation.name].id, automation)
            else:
                await client.create_automation(automation)
            log(f"automation {automation.name!r}")


def deploy_project(state: StackState, creds: Credentials, log: Callable[[str], None]) -> None:
    """`prefect deploy --all` of the project's prefect.yaml onto the stack's work pool."""
    if not (Path(state.cwd) / "prefect.yaml").exists():
        log(f"no prefect.yaml in {state.cwd}: no deployment created (run `evergreen stack up` from the project's folder)")
        return
    log("prefect deploy --all (prefect.yaml onto the work pool)")
    result = subprocess.run(  # noqa: S603
        [executable("prefect"), "--no-prompt", "deploy", "--all"], cwd=state.cwd, capture_output=True, text=True,
        env=service_env({"PREFECT_API_URL": state.prefect_api_url, "PREFECT_API_AUTH_STRING": creds.prefect_auth}),
        check=False, timeout=600,
    )
    if result.returncode != 0:
        raise StackError(f"`prefect deploy --all` failed:\n{(result.stdout + result.stderr)[-3000:]}")


# ----------------------------------------------------------------------------- MLflow


def _start_mlflow(home: Path, state: StackState, creds: Credentials, log: Callable[[str], None], timeout: float) -> Service:
    port = state.ports["mlflow"]
    folder = home / "mlflow"
    folder.mkdir(parents=True, exist_ok=True)
    ini = folder / "basic_auth.ini"
    _write_secret_file(ini, (
        "[mlflow]\n"
        "default_permission = READ\n"  # for signed-in users; anonymous requests get 401
        f"database_uri = {state.postgres_url('mlflow', creds.mlflow_db_password, 'mlflow_auth', driver=PG_SYNC_DRIVER)}\n"
        "admin_username = admin\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        # A verified password is cached for a minute: PBKDF2 on every request made a retrain's
        # few hundred small requests ~1 s each on two shared cores.
        "auth_cache_ttl_seconds = 60\n"
    ))
    env = service_env({
        "MLFLOW_AUTH_CONFIG_PATH": str(ini),
        "MLFLOW_AUTH_ADMIN_PASSWORD": creds.mlflow_admin_password,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": creds.mlflow_flask_secret,
        "MLFLOW_BACKEND_STORE_URI": state.postgres_url("mlflow", creds.mlflow_db_password, "mlflow", driver=PG_SYNC_DRIVER),
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    })
    artifacts = folder / "artifacts"
    artifacts.mkdir(exist_ok=True)
    logfile = folder / "server.log"
    command = [
        executable("mlflow"), "server", "--app-name", "basic-auth", "--host", "127.0.0.1", "--port", str(port),
        "--serve-artifacts", "--artifacts-destination", str(artifacts), "--workers", "2",
    ]
    log(f"starting the MLflow server on {state.mlflow_url} (PostgreSQL, basic auth, artifacts {artifacts}; log {logfile})")
    pid = _spawn(command, env, logfile, cwd=folder)
    try:
        _wait_mlflow(state, pid, logfile, timeout)
    except BaseException:
        stop_service(Service("mlflow", pid, "", str(logfile), _MARKERS["mlflow"]))
        raise
    return Service("mlflow", pid, state.mlflow_url, str(logfile), _MARKERS["mlflow"])


def _wait_mlflow(state: StackState, pid: int, logfile: Path, timeout: float) -> None:
    import urllib.error
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _cmdline(pid) is None:
            tail = logfile.read_text(errors="replace")[-3000:] if logfile.exists() else ""
            raise StackError(f"the MLflow server exited; see {logfile}:\n{tail}")
        try:
            with opener.open(f"{state.mlflow_url}/health", timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers (401: the auth app is up)
        except OSError:
            time.sleep(0.5)
    raise StackError(f"the MLflow server did not answer within {timeout:.0f} s; see {logfile}")


def _ensure_mlflow_user(state: StackState, creds: Credentials) -> None:
    """The user flows log as (MLFLOW_USER), created by the admin (its password follows the
    credentials file); anonymous requests stay refused (401)."""
    import httpx

    admin = ("admin", creds.mlflow_admin_password)
    base = f"{state.mlflow_url}/api/2.0/mlflow/users"
    with httpx.Client(timeout=30, trust_env=False) as client:
        got = client.get(f"{base}/get", params={"username": MLFLOW_USER}, auth=admin)
        if got.status_code == 404 or "RESOURCE_DOES_NOT_EXIST" in got.text:
            made = client.post(f"{base}/create", json={"username": MLFLOW_USER, "password": creds.mlflow_password}, auth=admin)
            made.raise_for_status()
        else:
            got.raise_for_status()
            client.patch(f"{base}/update-password", json={"username": MLFLOW_USER, "password": creds.mlflow_password}, auth=admin).raise_for_status()
        # The flows' account manages every registered model and experiment of the stack: the
        # auth app answers 403, not "does not exist", to a non-admin asking for a model (or an
        # alias) no one has created yet, which is how a first retrain finds an empty registry.
        client.patch(f"{base}/update-admin", json={"username": MLFLOW_USER, "is_admin": True}, auth=admin).raise_for_status()


def restart_mlflow(home: Path | None = None, down_seconds: float = 0.0, log: Callable[[str], None] = print, timeout: float = 240) -> Service:
    """Stop the MLflow server, wait `down_seconds`, start it again (fault tests)."""
    home = stack_home(home)
    state, creds = _require(home)
    stop_service(state.services["mlflow"])
    time.sleep(down_seconds)
    state.services["mlflow"] = _start_mlflow(home, state, creds, log, timeout)
    _write_state(home, state)
    return state.services["mlflow"]


# ----------------------------------------------------------------------------- up / down / status


def _require(home: Path) -> tuple[StackState, Credentials]:
    state, creds = read_state(home), load_credentials(home)
    if state is None or creds is None:
        raise StackError(f"no stack in {home}; start it with `evergreen stack up`")
    return state, creds


def up(
    home: Path | None = None,
    *,
    workers: int = 2,
    worker_limit: int | None = None,
    deploy: bool = True,
    timeout: float = 300,
    log: Callable[[str], None] = print,
) -> StackState:
    """Start every part of the stack that does not run yet (idempotent: what runs and answers
    is left alone), configure Prefect (Secret blocks, work pool, automations), deploy
    prefect.yaml onto the pool unless `deploy` is False, and start `workers` workers."""
    home = stack_home(home)
    home.mkdir(parents=True, exist_ok=True)
    os.chmod(home, 0o711)  # others may pass (PostgreSQL's account) but not list
    creds = _ensure_credentials(home)
    previous = read_state(home)
    state = previous or StackState(home=str(home), cwd=str(Path.cwd().resolve()), ports={})
    for name in DEFAULT_PORTS:
        state.ports[name] = _pick_port(name, state.ports)
    state.started_at = state.started_at or datetime.now(UTC).isoformat(timespec="seconds")
    _write_state(home, state)

    pg = state.services.get("postgres")
    if not (_running(pg) and _tcp_answers(state.ports["postgres"])):
        _check_port_free(state, "postgres")
        state.services["postgres"] = _start_postgres(home, state, creds, log)
        _write_state(home, state)
    _ensure_databases(state, creds)

    if not (_running(state.services.get("s3")) and _http_ok(f"{state.s3_endpoint}/moto-api/")):
        _check_port_free(state, "s3")
        state.services["s3"] = _start_s3(home, state, creds, log)
        _write_state(home, state)
    _ensure_bucket(state, creds)

    # The Prefect and MLflow servers boot at the same time (20-40 s each; they share only
    # PostgreSQL): the Prefect server is recorded as soon as it is spawned (`down` stops it if
    # MLflow fails) and waited for once MLflow answers.
    prefect_server = None
    if not (_running(state.services.get("prefect")) and _http_ok(f"{state.prefect_api_url}/health")):
        _check_port_free(state, "prefect")
        prefect_server = _start_prefect(home, state, creds, log, timeout)
        state.services["prefect"] = Service(
            "prefect", prefect_server.pid, state.prefect_api_url, str(prefect_server.log), _MARKERS["prefect"]
        )
        _write_state(home, state)

    if not (_running(state.services.get("mlflow")) and _tcp_answers(state.ports["mlflow"])):
        _check_port_free(state, "mlflow")
        state.services["mlflow"] = _start_mlflow(home, state, creds, log, timeout)
        _write_state(home, state)
    _ensure_mlflow_user(state, creds)
    if prefect_server is not None:
        prefect_server.wait_healthy()

    _configure_prefect(state, creds, log)
    # The workers boot (imports, ~10 s) while prefect.yaml is deployed: they only need the pool.
    _start_workers(home, state, creds, workers, worker_limit, log)
    if deploy:
        deploy_project(state, creds, log)
    return state


def _start_workers(
    home: Path, state: StackState, creds: Credentials, workers: int, worker_limit: int | None, log: Callable[[str], None]
) -> None:
    """Keep the recorded workers that run, start new ones until there are `workers`."""
    alive = [w for w in state.workers if _running(w)]
    for w in state.workers:
        if not _running(w):
            log(f"{w.name} (pid {w.pid}) is not running; starting a new one")
    names = {w.name for w in alive}
    index = 1
    while len(alive) < workers:
        while f"worker-{index}" in names:
            index += 1
        worker = _start_worker(home, state, creds, index, worker_limit)
        log(f"started {worker.name} on pool {WORK_POOL!r} (pid {worker.pid}; log {worker.log})")
        alive.append(worker)
        names.add(worker.name)
    state.workers = alive
    _write_state(home, state)


def _check_port_free(state: StackState, name: str) -> None:
    port = state.ports[name]
    if port_in_use(port):
        raise StackError(
            f"127.0.0.1:{port} (for {name}) is in use by another process; stop it, or edit "
            f"ports.{name} in {Path(state.home) / 'stack.json'}"
        )


def _http_ok(url: str) -> bool:
    try:
        wait_http(url, 2)
        return True
    except TimeoutError:
        return False


def add_worker(home: Path | None = None, limit: int | None = None) -> Service:
    """One more worker on the pool (the benchmark, the fault tests)."""
    home = stack_home(home)
    state, creds = _require(home)
    index = 1 + max((int(w.name.split("-")[-1]) for w in state.workers), default=0)
    worker = _start_worker(home, state, creds, index, limit)
    state.workers.append(worker)
    _write_state(home, state)
    return worker


def stop_worker(home: Path | None, name: str, sig: int = signal.SIGTERM) -> bool:
    """Stop one recorded worker (its process group). The flow runs it started run in their
    own process groups: on SIGTERM the worker lets them finish or marks them; after a
    SIGKILL they run on as orphans (`worker_of` finds a run's worker by its parent)."""
    home = stack_home(home)
    state, _ = _require(home)
    found = [w for w in state.workers if w.name == name]
    stopped = bool(found) and stop_service(found[0], sig)
    state.workers = [w for w in state.workers if w.name != name]
    _write_state(home, state)
    return stopped


def worker_of(home: Path | None, pid: int) -> Service | None:
    """The recorded worker that started process `pid` (a flow run's `infrastructure_pid`):
    the process worker starts each flow run as its child, in the run's own process group."""
    home = stack_home(home)
    state, _ = _require(home)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces: the parent pid is
    # the second field after its closing one.
    parent = int(stat.rsplit(")", 1)[1].split()[1])
    return next((w for w in state.workers if w.pid == parent), None)


def down(home: Path | None = None, log: Callable[[str], None] = print) -> list[str]:
    """Stop every recorded process by its pid: workers, MLflow, Prefect, S3, PostgreSQL. The
    databases, artifacts and credentials stay (moto's object store is in memory: its
    contents go)."""
    home = stack_home(home)
    state = read_state(home)
    if state is None:
        return []
    stopped = []
    for worker in state.workers:
        if stop_service(worker):
            stopped.append(f"{worker.name} (pid {worker.pid})")
    state.workers = []
    for name in ("mlflow", "prefect", "s3", "postgres"):
        service = state.services.get(name)
        # PostgreSQL: SIGINT is its "fast" shutdown (SIGTERM waits for every client).
        if service is not None and stop_service(service, signal.SIGINT if name == "postgres" else signal.SIGTERM):
            stopped.append(f"{name} (pid {service.pid})")
        state.services.pop(name, None)
    _write_state(home, state)
    for line in stopped:
        log(f"stopped {line}")
    return stopped


def purge(home: Path | None = None) -> None:
    """Remove a stopped stack's folder: databases, artifacts, logs, credentials."""
    home = stack_home(home)
    if any(r.running for r in status(home)):
        raise StackError(f"the stack in {home} still runs; `evergreen stack down` first")
    link = home / "postgres"
    if link.is_symlink():
        shutil.rmtree(link.resolve(), ignore_errors=True)
    shutil.rmtree(home, ignore_errors=True)


@dataclass
class ServiceStatus:
    name: str
    url: str
    pid: int | None
    running: bool
    answering: bool
    log: str
    detail: str = ""


def status(home: Path | None = None) -> list[ServiceStatus]:
    """Each recorded service: runs (by pid), answers (its port or health URL)."""
    home = stack_home(home)
    state = read_state(home)
    if state is None:
        return []
    rows = []
    checks = {
        "postgres": lambda: _tcp_answers(state.ports["postgres"]),
        "s3": lambda: _http_ok(f"{state.s3_endpoint}/moto-api/"),
        "prefect": lambda: _http_ok(f"{state.prefect_api_url}/health"),
        "mlflow": lambda: _tcp_answers(state.ports["mlflow"]),
    }
    urls = {
        "postgres": f"postgresql://127.0.0.1:{state.ports.get('postgres')}",
        "s3": f"{state.s3_endpoint} (s3://{BUCKET})",
        "prefect": state.prefect_api_url.removesuffix("/api") + " (API /api)",
        "mlflow": state.mlflow_url,
    }
    for name in ("postgres", "s3", "prefect", "mlflow"):
        service = state.services.get(name)
        running = _running(service)
        rows.append(ServiceStatus(
            name, urls[name], service.pid if service else None, running, running and checks[name](),
            service.log if service else "",
        ))
    for w in state.workers:
        running = _running(w)
        rows.append(ServiceStatus(w.name, w.url, w.pid, running, running, w.log))
    return rows


def is_up(home: Path | None = None) -> bool:
    rows = status(home)
    return bool(rows) and all(r.answering for r in rows)


