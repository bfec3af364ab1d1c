"""`PromptSpec`: what a producer asks for, validated before anything is sent to Astria.

Field names are Astria's own `prompt[...]` names, so a spec reads like Astria's docs; our own keys
(`tune_id`, `lora_strength`, `idempotency_key`, `priority`, `tenant`, `expires_in`) are never sent
as prompt fields, and neither is `callback`: that is the producer's webhook (`worker.webhooks`),
while Astria calls our own receiver.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from worker.errors import InvalidSpec
from worker.records import Lane

MAX_TEXT_CHARS = 4000
MAX_INLINE_IMAGE_CHARS = 4 * 1024 * 1024
MAX_URL_CHARS = 2048

LORA_TAG = re.compile(r"<lora:(\d+):(\d+(?:\.\d+)?)>")
FACEID_TAG = re.compile(r"<faceid:(\d+):1>")
_ANY_TAG = re.compile(r"<(lora|faceid):[^>]*>?")
_DATA_URL = re.compile(r"^data:image/(png|jpe?g|webp|gif);base64,([A-Za-z0-9+/=\s]+)$")

Scheduler = Literal[
    "euler", "euler_a", "dpm++2m_karras", "dpm++sde_karras", "dpm++2m", "dpm++sde", "lcm", "tcd"
]
AspectRatio = Literal[
    "1:1", "16:9", "9:16", "21:9", "9:21", "3:2", "2:3", "5:4", "4:5", "4:3", "3:4"
]
Controlnet = Literal[
    "composition", "reference", "segroom", "ipadapter", "lineart", "canny", "depth", "mlsd", "hed",
    "pose", "tile", "qr",
]

#: Spec keys that are ours, not Astria prompt fields.
OWN_KEYS = frozenset({"tune_id", "lora_strength", "idempotency_key", "priority", "tenant",
                      "expires_in"})
#: Spec keys never sent to Astria as they are.
NOT_SENT = OWN_KEYS | {"callback"}
TENANT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
MAX_EXPIRES_IN = 30 * 24 * 3600


def _http_url(value: str | None) -> str | None:
    if value is None:
        return None
    if len(value) > MAX_URL_CHARS:
        raise ValueError(f"must be at most {MAX_URL_CHARS} characters")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    return value


class PromptSpec(BaseModel):
    """One image-generation job. Unknown keys are refused rather than silently dropped."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    tune_id: int = Field(gt=0)
    text: str = Field(max_length=MAX_TEXT_CHARS)
    negative_prompt: str | None = Field(None, max_length=MAX_TEXT_CHARS)
    callback: str | None = None
    num_images: int | None = Field(None, ge=1, le=8)
    seed: int | None = Field(None, ge=0, le=2**32 - 1)
    super_resolution: bool | None = None
    inpaint_faces: bool | None = None
    hires_fix: bool | None = None
    face_correct: bool | None = None
    face_swap: bool | None = None
    cfg_scale: float | None = Field(None, ge=0, le=15)
    steps: int | None = Field(None, ge=0, le=50)
    w: int | None = Field(None, gt=0, multiple_of=8)
    h: int | None = Field(None, gt=0, multiple_of=8)
    scheduler: Scheduler | None = None
    aspect_ratio: AspectRatio | None = None
    controlnet: Controlnet | None = None
    controlnet_conditioning_scale: float | None = Field(None, ge=0, le=1)
    controlnet_txt2img: bool | None = None
    denoising_strength: float | None = Field(None, ge=0, le=1)
    use_lpw: bool | None = None
    style: str | None = Field(None, max_length=100)
    color_grading: str | None = Field(None, max_length=100)
    film_grain: bool | None = None
    workspace_id: str | None = Field(None, max_length=100)
    input_image_url: str | None = None
    input_image_base64: str | None = Field(None, max_length=MAX_INLINE_IMAGE_CHARS)
    mask_image_url: str | None = None

    # Our own keys
    lora_strength: float | None = Field(None, gt=0, le=2)
    idempotency_key: str | None = Field(None, min_length=1, max_length=200)
    priority: Literal["interactive", "normal", "batch"] = "normal"
    tenant: str = Field("default", pattern=TENANT_PATTERN)
    expires_in: float | None = Field(None, gt=0, le=MAX_EXPIRES_IN)

    @field_validator("text")
    @classmethod
    def _text(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        for match in _ANY_TAG.finditer(value):
            tag = match.group(0)
            if not (LORA_TAG.fullmatch(tag) or FACEID_TAG.fullmatch(tag)):
                raise ValueError(
                    f"bad tag {tag!r}: use <lora:TUNE_ID:STRENGTH> or <faceid:TUNE_ID:1>"
                )
        return value

    @field_validator("callback", "input_image_url", "mask_image_url")
    @classmethod
    def _urls(cls, value: str | None) -> str | None:
        return _http_url(value)

    @field_validator("input_image_base64")
    @classmethod
    def _data_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        match = _DATA_URL.match(value)
        if not match:
            raise ValueError("must be a data:image/(png|jpeg|webp|gif);base64,... URL")
        try:
            base64.b64decode(match.group(2), validate=False)
        except (binascii.Error, ValueError):
            raise ValueError("is not valid base64") from None
        return value

    @model_validator(mode="after")
    def _relations(self) -> PromptSpec:
        for name in ("inpaint_faces", "hires_fix"):
            if getattr(self, name) and not self.super_resolution:
                raise ValueError(f"{name}: requires super_resolution=true")
        if self.controlnet and not (self.input_image_url or self.input_image_base64):
            raise ValueError("controlnet: requires input_image_url or input_image_base64")
        if self.input_image_url and self.input_image_base64:
            raise ValueError("input_image_url: give either input_image_url or input_image_base64")
        return self

    def lora_tags(self) -> list[int]:
        """Tune ids of the `<lora:...>` tags in the text."""
        return [int(m.group(1)) for m in LORA_TAG.finditer(self.text)]

    @property
    def lane(self) -> Lane:
        return Lane(self.priority)

    def prompt_fields(self) -> dict[str, Any]:
        """The Astria prompt fields that are set (our own keys and the webhook left out)."""
        return self.model_dump(exclude_none=True, exclude=set(NOT_SENT))


def spec_json_schema() -> dict[str, Any]:
    """The JSON Schema of a spec, for producers in other languages (rules across fields and the
    `<lora:...>` tag grammar are in the description; the worker checks them all)."""
    schema = PromptSpec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Astria prompt spec (astria.submit_prompt kwargs.spec)"
    schema["description"] = (
        "Astria prompt fields plus tune_id, lora_strength, idempotency_key, priority, tenant "
        "and expires_in; callback is the producer's signed webhook. Also enforced: "
        "text not blank, tags <lora:ID:W> and <faceid:ID:1> only, one LoRA on SDXL, "
        "inpaint_faces and hires_fix need super_resolution, controlnet needs an input image, "
        "URLs are http(s), input_image_base64 is a data:image/...;base64 URL."
    )
    return schema


def _describe(err: dict[str, Any]) -> str:
    loc = ".".join(str(part) for part in err["loc"])
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        return f"{loc}: unknown field (not an Astria prompt field nor one of {sorted(OWN_KEYS)})"
    if not loc and ": " in msg:  # model-level rules already start with the field name
        return msg
    return f"{loc or 'spec'}: {msg}"


def parse_spec(data: Any, *, sdxl_base_tune_id: int = 666678) -> PromptSpec:
    """Validate a producer's spec; raise InvalidSpec naming every bad field and its rule."""
    if not isinstance(data, dict):
        raise InvalidSpec(f"spec: must be a JSON object, got {type(data).__name__}")
    try:
        spec = PromptSpec.model_validate(data)
    except ValidationError as exc:
        raise InvalidSpec("; ".join(_describe(dict(e)) for e in exc.errors())) from None
    if spec.tune_id == sdxl_base_tune_id and len(spec.lora_tags()) > 1:
        raise InvalidSpec("text: SDXL prompts take at most one <lora:...> tag")
    return spec
