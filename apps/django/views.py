"""The views: `async def` functions answering `JsonResponse`, as Django's docs write async views, plus the error
handlers the URLconf names, so that every answer is JSON (Django's own 400, 404 and 500 pages are HTML).

Django has no body models, so the body is checked by hand, as the Starlette app does: a POST body must be
declared `application/json` (415) and at most DATA_UPLOAD_MAX_MEMORY_SIZE, 1 MiB (Django raises
RequestDataTooBig, answered 413); malformed JSON gets 400, JSON that is not {"text": str} / {"texts": [str, …]}
within the limits 422, a wrong method 405.
"""

import json
import re
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from apps._db import DatabaseError
from apps.django.layers import layer

View = Callable[[HttpRequest], Awaitable[JsonResponse]]


class ApiError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def error(status: int, detail: str) -> JsonResponse:
    return JsonResponse({"detail": detail}, status=status)


def api_view(method: str) -> Callable[[View], View]:
    """Django's `require_http_methods` and `csrf_exempt` for a JSON API: a wrong method, an ApiError or a
    DatabaseError raised by the view are answered in JSON."""

    def decorator(view: View) -> View:
        @csrf_exempt
        @wraps(view)
        async def answer(request: HttpRequest) -> JsonResponse:
            if request.method != method:
                response = error(405, f"method {request.method} not allowed; use {method}")
                response["Allow"] = method
                return response
            try:
                return await view(request)
            except ApiError as exc:
                return error(exc.status, exc.detail)
            except DatabaseError as exc:
                return error(exc.status_code, str(exc))

        return answer

    return decorator


def read_json(request: HttpRequest) -> dict:
    if request.content_type != "application/json":  # Django lower-cases it and drops its parameters
        raise ApiError(415, "request body must be JSON, sent with Content-Type: application/json")
    try:
        body = request.body
    except RequestDataTooBig:
        raise ApiError(413, "request body larger than 1 MiB") from None
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
        raise ApiError(400, "request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiError(422, "request body must be a JSON object")
    return data


# json accepts a lone surrogate ("\ud800"), which is no text PostgreSQL can store; pydantic and msgspec refuse it.
SURROGATE = re.compile("[\ud800-\udfff]")


def is_text(value: Any) -> bool:
    return isinstance(value, str) and 1 <= len(value) <= 1000 and (value.isascii() or not SURROGATE.search(value))


def read_texts(request: HttpRequest) -> list[str]:
    texts = read_json(request).get("texts")
    if not (isinstance(texts, list) and 1 <= len(texts) <= 100 and all(map(is_text, texts))):
        raise ApiError(422, 'expected {"texts": 1-100 strings of 1-1000 characters}')
    return texts


@api_view("POST")
async def create_item(request: HttpRequest) -> JsonResponse:
    text = read_json(request).get("text")
    if not is_text(text):
        raise ApiError(422, 'expected {"text": a string of 1-1000 characters}')
    return JsonResponse({"id": await layer.insert_one(text)}, status=201)


@api_view("POST")
async def create_items(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"ids": await layer.insert_many(read_texts(request))}, status=201)


@api_view("POST")
async def create_items_each(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"ids": await layer.insert_each(read_texts(request))}, status=201)


@api_view("GET")
async def health(request: HttpRequest) -> JsonResponse:
    if not layer.ready:
        return error(503, "database layer not ready")
    return JsonResponse({"status": "ok"})


# Error handlers (handler400 … in urls.py): Django calls them synchronously, so they are plain functions.


def bad_request(request: HttpRequest, exception: Exception) -> JsonResponse:
    return error(400, "Bad Request")


def permission_denied(request: HttpRequest, exception: Exception) -> JsonResponse:
    return error(403, "Forbidden")


def not_found(request: HttpRequest, exception: Exception) -> JsonResponse:
    return error(404, "Not Found")


def server_error(request: HttpRequest) -> JsonResponse:
    return error(500, "Internal Server Error")
