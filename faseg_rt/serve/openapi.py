"""The OpenAPI description of POST /v1/segment (its form and answers), kept apart from the routes."""

from faseg_rt.config import FASegConfig
from faseg_rt.serve.request import MAX_HEADER_BYTES

#: The header carrying the JSON fields beside an image/png answer.
RESULT_HEADER = "X-FASeg-Result"
#: Sent instead of RESULT_HEADER when the fields are over MAX_HEADER_BYTES.
OMITTED_HEADER = "X-FASeg-Result-Omitted"

FORM = {"multipart/form-data": {"schema": {
    "type": "object", "required": ["image", "classes"],
    "properties": {
        "image": {"type": "string", "format": "binary",
                  "description": "the photo (JPEG, PNG, WebP, ...; at most the service's --max-pixels)"},
        "classes": {"type": "string", "description": "comma-separated names or a JSON list of "
                                                     "strings (at most the service's --max-classes)"},
        "caption": {"type": "string", "description": "caption of the image, or 'auto' (BLIP; "
                                                     "only when the service has a --captioner)"},
        "candidates": {"type": "string",
                       "description": "'auto' (the classes the caption names plus the "
                                      "recogniser's), 'caption', 'recognizer', or a JSON list of "
                                      "names from classes; default: segment every class"},
        "threshold": {"type": "number", "minimum": 0, "maximum": 1,
                      "description": f"background threshold (default {FASegConfig().threshold})"},
        "exif_transpose": {"type": "boolean", "description": "1: turn the photo as its EXIF "
                           "orientation says before segmenting (the mask then fits the upright "
                           "photo); default 0: the stored pixels"}}}}}
_ERROR = {"content": {"application/json": {"schema": {
    "type": "object", "properties": {"error": {"type": "string"}}}}}}
_ANSWER = {"description": "the label map and what produced it", "content": {
    "application/json": {"schema": {"type": "object", "properties": {
        "classes": {"type": "array", "items": {"type": "string"}},
        "labels_png": {"type": "string", "format": "byte",
                       "description": "base64 of the label PNG `faseg-rt segment` writes"},
        "width": {"type": "integer"}, "height": {"type": "integer"},
        "caption": {"type": "string", "nullable": True},
        "candidates": {"type": "array", "items": {"type": "string"}},
        "sources": {"type": "object", "nullable": True,
                    "description": "per candidate: caption, recognizer or given"},
        "scores": {"type": "object", "nullable": True,
                   "description": "recogniser probability per class (null unless it ran)"}}}},
    "image/png": {"schema": {"type": "string", "format": "binary"},
                  "description": f"with Accept: image/png; the other fields in {RESULT_HEADER} "
                                 f"when they fit {MAX_HEADER_BYTES} bytes, else {OMITTED_HEADER} "
                                 f"says so (ask for JSON to get them)"}}}
SEGMENT_RESPONSES = {200: _ANSWER, 400: dict(_ERROR, description="bad input or over a limit"),
                     408: dict(_ERROR, description="the body did not arrive within --body-timeout"),
                     413: dict(_ERROR, description="request over --max-request-mb"),
                     500: dict(_ERROR, description="internal error (the service log has it)"),
                     503: dict(_ERROR, description="model loading, queue full or out of memory "
                                                   "(Retry-After)")}
