"""`billing keys ...` and `billing serve` (a real uvicorn process answering over TCP)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import typer
from typer.testing import CliRunner

from billing.cli.keys import app as keys_app
from billing.cli.serve import serve
from billing.config import get_settings
from billing.store.db import engine_for
from tests.support.live_server import free_port
from tests.support.quota import PLANS, make_db

cli = typer.Typer()
cli.add_typer(keys_app, name="keys")
cli.command("serve")(serve)


@pytest.mark.slow
def test_keys_and_serve(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    make_db(url).dispose()
    monkeypatch.setenv("BILLING_DATABASE_URL", url)
    monkeypatch.setenv("BILLING_PLANS_DIR", str(PLANS))
    get_settings.cache_clear()
    engine_for.cache_clear()
    try:
        runner = CliRunner()
        out = runner.invoke(cli, ["keys", "create", "--scope", "admin", "--json"])
        assert out.exit_code == 0, out.output
        admin = json.loads(out.output)
        out = runner.invoke(cli, ["keys", "create", "--scope", "read", "--customer", "acme", "--name", "dash", "--json"])
        read = json.loads(out.output)
        assert read["customer"] == "acme" and read["key"].startswith(f"bk_{read['id']}_")
        assert runner.invoke(cli, ["keys", "create", "--scope", "root"]).exit_code == 2
        listed = json.loads(runner.invoke(cli, ["keys", "list", "--json"]).output)
        assert {k["id"] for k in listed} == {admin["id"], read["id"]} and "key" not in listed[0]
        assert runner.invoke(cli, ["keys", "revoke", read["id"]]).exit_code == 0
        assert runner.invoke(cli, ["keys", "revoke", read["id"]]).exit_code == 2

        port = free_port()
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        proc = subprocess.Popen([sys.executable, "-c", f"from billing.cli.serve import serve; "
                                 f"serve(host='127.0.0.1', port={port}, workers=1, log_level='warning')"],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            base = f"http://127.0.0.1:{port}"
            for _ in range(100):
                try:
                    if httpx.get(f"{base}/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            headers = {"Authorization": f"Bearer {admin['key']}"}
            assert httpx.post(f"{base}/v1/customers", json={"id": "acme"}, headers=headers).status_code == 201
            assert httpx.get(f"{base}/v1/plans", headers={"Authorization": f"Bearer {read['key']}"}).status_code == 401
            assert "cursor-pro" in httpx.get(f"{base}/v1/plans", headers=headers).text
            assert httpx.get(f"{base}/docs").status_code == 200
        finally:
            proc.terminate()
            proc.wait(10)
    finally:
        get_settings.cache_clear()
        engine_for.cache_clear()
