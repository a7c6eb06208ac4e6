"""Closed by default: on the stack, a client without credentials (or with wrong ones) is
refused by PostgreSQL, the Prefect API and the MLflow server, each of which listens on
127.0.0.1 only; the right credentials get in."""

from __future__ import annotations

import socket

import httpx
import psycopg2
import pytest

from tests.stack.conftest import Stack

pytestmark = [pytest.mark.slow, pytest.mark.stack]


def _connect(s: Stack, user: str, password: str | None, database: str):  # noqa: ANN202
    kwargs = {"host": "127.0.0.1", "port": s.state.ports["postgres"], "user": user, "dbname": database, "connect_timeout": 5}
    if password is not None:
        kwargs["password"] = password
    return psycopg2.connect(**kwargs)


def test_postgresql_takes_passwords_only_on_loopback(running_stack: Stack) -> None:
    s = running_stack
    with pytest.raises(psycopg2.OperationalError, match="no password supplied|password authentication failed"):
        _connect(s, "prefect", None, "prefect")
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        _connect(s, "prefect", "not-the-password", "prefect")
    # One service's role cannot open another service's database.
    with pytest.raises(psycopg2.OperationalError, match="permission denied|not permitted"):
        _connect(s, "prefect", s.creds.prefect_db_password, "mlflow")
    conn = _connect(s, s.creds.postgres_superuser, s.creds.postgres_password, "postgres")
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW listen_addresses")
            assert cur.fetchone()[0] == "127.0.0.1"
            cur.execute("SHOW unix_socket_directories")
            assert cur.fetchone()[0] == ""
            cur.execute("SELECT DISTINCT auth_method FROM pg_hba_file_rules WHERE error IS NULL")
            assert {row[0] for row in cur.fetchall()} == {"scram-sha-256"}
            cur.execute("SELECT rolname FROM pg_authid WHERE rolcanlogin AND rolpassword NOT LIKE 'SCRAM-SHA-256$%'")
            assert cur.fetchall() == []  # every login role has a scram verifier, none in clear
    finally:
        conn.close()


def _lan_address() -> str | None:
    """This machine's address on its default route (None without one)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: no packet is sent for UDP connect
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_no_service_listens_beyond_loopback(running_stack: Stack) -> None:
    address = _lan_address()
    if address is None:
        pytest.skip("this machine has no non-loopback address to try")
    for name, port in running_stack.state.ports.items():
        with socket.socket() as sock:
            sock.settimeout(2)
            assert sock.connect_ex((address, port)) != 0, f"{name} answers on {address}:{port}"


def test_prefect_api_refuses_a_client_without_its_auth_string(running_stack: Stack) -> None:
    api = running_stack.state.prefect_api_url
    with httpx.Client(timeout=30, trust_env=False) as client:
        assert client.get(f"{api}/health").status_code == 200  # probes stay open (Prefect's rule)
        assert client.post(f"{api}/flows/filter", json={}).status_code == 401
        assert client.post(f"{api}/flows/filter", json={}, auth=("evergreen", "wrong")).status_code == 401
        assert client.get(f"{api}/block_documents/filter").status_code in (401, 405)
        user, password = running_stack.creds.prefect_auth.split(":", 1)
        assert client.post(f"{api}/flows/filter", json={}, auth=(user, password)).status_code == 200


def test_mlflow_server_refuses_a_client_without_credentials(running_stack: Stack) -> None:
    url = running_stack.state.mlflow_url
    search = f"{url}/api/2.0/mlflow/experiments/search"
    with httpx.Client(timeout=30, trust_env=False) as client:
        assert client.get(search, params={"max_results": 5}).status_code == 401
        assert client.get(search, params={"max_results": 5}, auth=("evergreen", "wrong")).status_code == 401
        # The artifacts it serves are behind the same door.
        assert client.get(f"{url}/api/2.0/mlflow-artifacts/artifacts").status_code == 401
        ok = client.get(search, params={"max_results": 5}, auth=("evergreen", running_stack.creds.mlflow_password))
        assert ok.status_code == 200


def test_credentials_file_is_private_and_the_state_file_holds_no_secret(running_stack: Stack) -> None:
    home = running_stack.home
    assert (home / "credentials.json").stat().st_mode & 0o077 == 0
    assert (home / "mlflow" / "basic_auth.ini").stat().st_mode & 0o077 == 0
    state = (home / "stack.json").read_text(encoding="utf-8")
    assert not [v for v in running_stack.creds.values() if v in state]
