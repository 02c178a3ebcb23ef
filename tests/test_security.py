"""API keys, JWTs and rate limits on a real server."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.server import ServerProcess, run_server

BODY = {"query": "capital of France", "documents": ["Paris", "Berlin"]}
SECRET = "an-hs256-secret-that-is-long-enough-for-pyjwt"


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def server(
    bert_model: Path, rsa_key, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("security")
    keys_file = folder / "keys.txt"
    keys_file.write_text("# one key per line\nfile-key\n")
    public = folder / "public.pem"
    public.write_bytes(
        rsa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    args = [
        "--model", str(bert_model),
        "--api-keys", "key-one", "--api-keys", "key-two",
        "--api-keys-file", str(keys_file),
        "--jwt-secret", SECRET,
        "--jwt-public-key-file", str(public),
        "--jwt-audience", "rerankd", "--jwt-issuer", "https://issuer.test",
        "--auth-ops",
        "--rate-limit", "15/minute",
    ]  # fmt: skip
    with run_server(args, log_dir=folder, env={}, wait_ready=False) as running:
        _wait_ready(running)
        yield running


def _wait_ready(server: ServerProcess) -> None:
    for _ in range(600):
        try:
            if (
                httpx.get(server.url + "/health", headers={"X-API-Key": "key-one"}).status_code
                == 200
            ):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(server.logs())


def token(claims: dict, key=SECRET, algorithm: str = "HS256") -> str:
    base = {
        "aud": "rerankd",
        "iss": "https://issuer.test",
        "exp": int(time.time()) + 60,
        "sub": "tester",
    }
    return jwt.encode({**base, **claims}, key, algorithm=algorithm)


def post(server: ServerProcess, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(server.url + "/rerank", json=BODY, headers=headers, timeout=30)


def test_api_keys(server: ServerProcess) -> None:
    missing = post(server, {})
    assert (
        missing.status_code == 401 and "missing credentials" in missing.json()["error"]["message"]
    )
    assert post(server, {"Authorization": "Bearer wrong"}).status_code == 401
    assert post(server, {"X-API-Key": "key-onex"}).status_code == 401
    assert post(server, {"Authorization": "Bearer key-one"}).status_code == 200
    assert post(server, {"X-API-Key": "key-two"}).status_code == 200
    assert post(server, {"X-API-Key": "file-key"}).status_code == 200


def test_ops_routes_need_a_key_when_configured(server: ServerProcess) -> None:
    assert httpx.get(server.url + "/metrics").status_code == 401
    assert httpx.get(server.url + "/metrics", headers={"X-API-Key": "key-one"}).status_code == 200
    assert httpx.get(server.url + "/docs").status_code == 200
    # The reference's own files are public too, or /docs would be blank with auth on.
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js"):
        assert httpx.get(f"{server.url}/docs/assets/{asset}").status_code == 200
    assert httpx.get(server.url + "/redoc").status_code == 200


def test_jwt(server: ServerProcess, rsa_key) -> None:
    assert post(server, {"Authorization": f"Bearer {token({'sub': 'hs'})}"}).status_code == 200
    assert (
        post(
            server, {"Authorization": f"Bearer {token({'sub': 'rs'}, rsa_key, 'RS256')}"}
        ).status_code
        == 200
    )
    wrong_audience = post(server, {"Authorization": f"Bearer {token({'aud': 'someone-else'})}"})
    assert (
        wrong_audience.status_code == 401
        and "audience" in wrong_audience.json()["error"]["message"].lower()
    )
    expired = post(server, {"Authorization": f"Bearer {token({'exp': int(time.time()) - 10})}"})
    assert expired.status_code == 401 and "expired" in expired.json()["error"]["message"].lower()
    bad_signature = post(
        server, {"Authorization": f"Bearer {token({}, 'another-secret-of-sufficient-length!!')}"}
    )
    assert bad_signature.status_code == 401
    wrong_issuer = post(server, {"Authorization": f"Bearer {token({'iss': 'https://evil.test'})}"})
    assert wrong_issuer.status_code == 401


def test_jwt_without_a_usable_algorithm_is_a_401(server: ServerProcess) -> None:
    """The header is the client's: a missing, null or non-string "alg" is refused cleanly."""
    _, claims, signature = token({}).split(".")
    for header in ({"typ": "JWT"}, {"alg": None, "typ": "JWT"}, {"alg": ["HS256"]}, {"alg": 7}):
        raw = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
        response = post(server, {"Authorization": f"Bearer {raw}.{claims}.{signature}"})
        assert response.status_code == 401, (header, response.text)
        assert "algorithm" in response.json()["error"]["message"]


def test_rate_limit_gives_429_with_retry_after(server: ServerProcess) -> None:
    headers = {"Authorization": "Bearer " + token({"sub": "burst"})}
    statuses = [post(server, headers).status_code for _ in range(20)]
    assert statuses[:15] == [200] * 15
    assert statuses[15:] == [429] * 5
    limited = post(server, headers)
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    assert (
        post(server, {"X-API-Key": "key-two"}).status_code == 200
    )  # other principals are unaffected
    metrics = httpx.get(server.url + "/metrics", headers={"X-API-Key": "key-one"}).text
    assert 'rerankd_rejected_requests_total{reason="rate_limited"}' in metrics
