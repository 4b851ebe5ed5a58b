"""HTTP plumbing of the service that needs no model: bounded body reading (size and deadline),
the multipart form, content negotiation and the one-line error answers."""

from __future__ import annotations

import asyncio
import re
import time

from starlette.requests import Request
from starlette.responses import JSONResponse

from faseg_rt.errors import InvalidInputError
from faseg_rt.serve.request import FIELDS


#: Longest error message a client gets, and the longest run of one word inside it (a 10,000
#: character class name is cut, with its length said).
MAX_MESSAGE_CHARS = 600
MAX_WORD_CHARS = 80
_LONG_WORD = re.compile(r"\S{%d,}" % (MAX_WORD_CHARS + 1))
#: An absolute path (two or more parts): clients see only its last part.
_ABS_PATH = re.compile(r"(?<![\w.:/])/(?:[^\s/'\"]+/)+([^\s/'\"]+)")


class RequestTooLarge(Exception):
    """The request body is over the service's cap (HTTP 413)."""


class BodyTimeout(Exception):
    """The request body did not arrive within the service's deadline (HTTP 408)."""


def client_message(message) -> str:
    """One line for a client: whitespace collapsed, absolute paths cut to their last part,
    words over MAX_WORD_CHARS and the whole over MAX_MESSAGE_CHARS cut with their length said."""
    text = _ABS_PATH.sub(lambda m: m.group(1), " ".join(str(message).split()))
    text = _LONG_WORD.sub(lambda m: f"{m.group(0)[:MAX_WORD_CHARS - 20]}... ({len(m.group(0))} "
                                    f"characters)", text)
    if len(text) > MAX_MESSAGE_CHARS:
        text = f"{text[:MAX_MESSAGE_CHARS - 30]}... ({len(text)} characters)"
    return text


def error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    """{"error": one line} with the status (400, 408, 413, 500, 503); see client_message."""
    return JSONResponse({"error": client_message(message)}, status_code=status, headers=headers)


async def read_body(request: Request, cap: int, timeout_s: float = 30.0) -> bytes:
    """The whole body, refused as soon as it is known to exceed `cap` bytes (Content-Length up
    front; a chunked body while it streams), so an oversized upload is never held whole; and
    BodyTimeout unless all of it arrives within `timeout_s` (a client trickling bytes holds a
    slot for that long at most)."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > cap:
        raise RequestTooLarge(f"the request is {int(length)} bytes, over the limit of {cap} bytes")
    parts, size = [], 0
    deadline = time.monotonic() + timeout_s
    stream = request.stream().__aiter__()
    while True:
        try:
            chunk = await asyncio.wait_for(stream.__anext__(), max(0.0, deadline - time.monotonic()))
        except StopAsyncIteration:
            break
        except asyncio.TimeoutError:
            raise BodyTimeout(f"the request body did not arrive within {timeout_s:g} s "
                              f"({size} bytes came); send it faster or in one piece") from None
        size += len(chunk)
        if size > cap:
            raise RequestTooLarge(f"the request is over the limit of {cap} bytes")
        parts.append(chunk)
    return b"".join(parts)


async def read_form(request: Request, body: bytes) -> tuple[bytes, dict[str, str]]:
    """Parse the multipart form of an already read body -> (image bytes, text fields)."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise InvalidInputError("send the request as multipart/form-data with an 'image' file and "
                                "a 'classes' field (curl -F image=@photo.jpg -F classes=cat,dog)")
    sent = False

    async def replay():
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=1, max_fields=len(FIELDS))
    except Exception as e:  # starlette's MultiPartException / HTTPException: a malformed form
        detail = getattr(e, "message", None) or getattr(e, "detail", None) or str(e)
        raise InvalidInputError(f"malformed multipart form: {detail}") from None
    try:
        image, fields = None, {}
        for key, value in form.multi_items():
            if key in fields or (key == "image" and image is not None):
                raise InvalidInputError(f"the form field {key!r} is given twice")
            if key == "image":
                if isinstance(value, str):
                    raise InvalidInputError("'image' must be a file upload (curl -F image=@photo.jpg)")
                image = await value.read()
            elif isinstance(value, str):
                fields[key] = value
            else:
                raise InvalidInputError(_file_in_wrong_field(key))
        if image is None:
            raise InvalidInputError("the form has no 'image' file (curl -F image=@photo.jpg)")
        return image, fields
    finally:
        await form.close()


def _file_in_wrong_field(key: str) -> str:
    """A file sent under a field other than 'image' ('img', 'file', 'classes'): name the field
    the photo goes in."""
    text = ", ".join(repr(f) for f in FIELDS[1:])
    if key in FIELDS:
        return (f"the form field {key!r} must be text, not a file; send the photo as the field "
                f"'image' (curl -F image=@photo.jpg)")
    return (f"the form field {key!r} is not one this service reads: send the photo as the field "
            f"'image' (curl -F image=@photo.jpg); the others, {text}, are text")


def wants_png(request: Request) -> bool:
    """Accept: image/png (and not application/json): the PNG as the body, fields in a header."""
    accept = request.headers.get("accept", "")
    return "image/png" in accept and "application/json" not in accept
