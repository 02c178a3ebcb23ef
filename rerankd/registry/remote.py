"""The registry's admin calls over HTTP, for the command line (a thin httpx layer)."""

from __future__ import annotations

import json
from typing import Any

import httpx

DEFAULT_ENDPOINT = "http://127.0.0.1:8000"
MODEL_TYPE = "rerank"


class RemoteError(Exception):
    """A call the server refused, with its status and the server's own message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class RegistryClient:
    def __init__(
        self, endpoint: str = DEFAULT_ENDPOINT, key: str | None = None, timeout: float = 600.0
    ) -> None:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._http = httpx.Client(base_url=endpoint.rstrip("/"), headers=headers, timeout=timeout)

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.close()

    def register(self, spec: dict[str, Any], *, persist: bool, replace: bool = False) -> Any:
        body = {"model": json.dumps(spec), "persist": persist, "replace": replace}
        return self._call("POST", f"/v1/model_registrations/{MODEL_TYPE}", json=body)

    def unregister(self, name: str) -> Any:
        return self._call("DELETE", f"/v1/model_registrations/{MODEL_TYPE}/{name}")

    def registrations(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self._call(
            "GET", f"/v1/model_registrations/{MODEL_TYPE}", params={"detailed": "true"}
        )
        return found

    def launch(self, name: str, *, wait: bool = True, **options: Any) -> dict[str, Any]:
        body = {"model_name": name, "model_type": MODEL_TYPE}
        body.update({k: v for k, v in options.items() if v is not None})
        launched: dict[str, Any] = self._call(
            "POST", "/v1/models", json=body, params={"wait_ready": str(wait).lower()}
        )
        return launched

    def models(self) -> list[dict[str, Any]]:
        running: list[dict[str, Any]] = self._call("GET", "/v1/models")["data"]
        return running

    def terminate(self, uid: str) -> dict[str, Any]:
        terminated: dict[str, Any] = self._call("DELETE", f"/v1/models/{uid}")
        return terminated

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise RemoteError(0, f"cannot reach {self._http.base_url}: {exc}") from None
        if response.is_success:
            return response.json()
        raise RemoteError(response.status_code, _message(response))


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500] or response.reason_phrase
    if isinstance(body, dict):
        detail = body.get("detail")
        if isinstance(detail, str):
            return detail
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
    return str(body)[:500]
