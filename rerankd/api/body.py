"""Reading a JSON body into a pydantic model, with clear 4xx errors.

Routes parse bodies here rather than through FastAPI parameters, so that one route can serve
two dialects (native and TEI on `/rerank`) and every failure reads the same way.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from rerankd.errors import InvalidInput, RerankError
from rerankd.validation import describe_validation_error

Model = TypeVar("Model", bound=BaseModel)


class UnsupportedMediaType(RerankError):
    status = 415
    type = "invalid_request_error"


class SchemaMismatch(InvalidInput):
    status = 422


TOO_DEEP = "the body's JSON is nested too deeply; no request field nests more than a few levels"

# curl's `-d` sends form-urlencoded unless told otherwise; README-style examples must work.
_ACCEPTED_TYPES = {"", "application/json", "application/x-www-form-urlencoded"}


async def read_json(request: Request) -> Any:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in _ACCEPTED_TYPES and not content_type.endswith("+json"):
        raise UnsupportedMediaType(f"content-type must be application/json, not {content_type!r}")
    raw = await request.body()
    if not raw.strip():
        raise InvalidInput("the request body is empty; send a JSON object")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"the body is not valid UTF-8 (byte {exc.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            f"the body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:  # the C parser's own guard against `[[[[...` a hundred thousand deep
        raise InvalidInput(TOO_DEEP) from None


def validate(model: type[Model], data: Any) -> Model:
    if not isinstance(data, dict):
        raise SchemaMismatch(f"the body must be a JSON object, not {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise SchemaMismatch(describe_validation_error(exc.errors())) from None
    except RecursionError:  # parsed, but too deep to walk
        raise InvalidInput(TOO_DEEP) from None


BODY_MODELS: list[type[BaseModel]] = []  # added to the OpenAPI components by the app


def body_schema(*models: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` documenting a JSON body that is one of `models`."""
    BODY_MODELS.extend(m for m in models if m not in BODY_MODELS)
    refs = [{"$ref": f"#/components/schemas/{m.__name__}"} for m in models]
    schema = refs[0] if len(refs) == 1 else {"anyOf": refs}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}
