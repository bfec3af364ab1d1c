"""`PromptSpec`: what a producer asks for, validated before anything is sent to Astria.

Field names are Astria's own `prompt[...]` names, so a spec reads like Astria's docs; our own keys
(`tune_id`, `lora_strength`, `idempotency_key`, `priority`, `tenant`, `expires_in`) are never sent
as prompt fields, and neither is `callback`: that is the producer's webhook
(`worker.flow.webhooks`), while Astria calls our own receiver.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from worker.errors import InvalidSpec
from worker.net.addresses import url_host_problem
from worker.records import Lane
from worker.tenants import TENANT_PATTERN

MAX_TEXT_CHARS = 4000
MAX_INLINE_IMAGE_CHARS = 4 * 1024 * 1024
MAX_URL_CHARS = 2048
#: Astria's ids are 31-bit integers (tune ids, LoRA and FaceID tags).
MAX_ID = 2**31 - 1
#: Largest `w` or `h` sent. Astria documents multiples of 8 and no maximum; SDXL is trained at
#: 1024 and Flux goes to about 2 megapixels, so 2048 admits every real request.
MAX_SIDE = 2048
#: Strength of a `<lora:ID:W>` tag, as `lora_strength`.
MAX_LORA_STRENGTH = 2.0
#: An InvalidSpec message lists at most this many problems and is cut at MAX_ERROR_CHARS: it is
#: stored on the job, in the result, in the webhook and in the log.
MAX_PROBLEMS = 20
MAX_ERROR_CHARS = 2000

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
                      "expires_in", "webhook_events"})
#: Spec keys never sent to Astria as they are.
NOT_SENT = OWN_KEYS | {"callback"}
#: A job's events a spec's `webhook_events` may ask for as webhooks, besides its end (its
#: `succeeded`, `failed` or `revoked` is always sent, and may be named too).
WebhookEventName = Literal["queued", "following", "posted", "reconciling", "retrying", "waiting",
                           "redriven", "succeeded", "failed", "revoked"]
WEBHOOK_EVENTS: tuple[str, ...] = get_args(WebhookEventName)
MAX_EXPIRES_IN = 30 * 24 * 3600
#: A batch id (`enqueue_batch`, POST /v1/batches): its members' job ids are `<batch id>-<n>`.
BATCH_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}")
BATCH_ID_RULE = ("1-100 letters, digits, '_', '.', ':' or '-', starting with a letter or "
                 "digit")


def _http_url(value: str | None) -> str | None:
    if value is None:
        return None
    if len(value) > MAX_URL_CHARS:
        raise ValueError(f"must be at most {MAX_URL_CHARS} characters")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018  (raises on a port that is not a number in range)
    except ValueError:
        raise ValueError("is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    return value


def _webhook_url(value: str, allow_private: bool) -> str:
    """A producer's webhook URL: no credentials in it (they would be stored and listed), and a
    host that may receive webhooks (`worker.net.addresses`)."""
    parts = urlsplit(value)
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not carry credentials (user:password@)")
    problem = None if allow_private else url_host_problem(value)
    if problem:
        raise ValueError(f"{problem}: webhooks go to public addresses only "
                         "(WEBHOOK_ALLOW_PRIVATE_ADDRESSES=true lifts this)")
    return value


def _check_tags(text: str) -> None:
    for match in _ANY_TAG.finditer(text):
        tag = match.group(0)
        parsed = LORA_TAG.fullmatch(tag) or FACEID_TAG.fullmatch(tag)
        if not parsed:
            raise ValueError(f"bad tag {tag[:40]!r}: use <lora:TUNE_ID:STRENGTH> or "
                             "<faceid:TUNE_ID:1>")
        if not 0 < int(parsed.group(1)) <= MAX_ID:
            raise ValueError(f"bad tag {tag[:40]!r}: the tune id must be 1..{MAX_ID}")
        if tag.startswith("<lora:") and not 0 < float(parsed.group(2)) <= MAX_LORA_STRENGTH:
            raise ValueError(f"bad tag {tag[:40]!r}: the strength must be in "
                             f"(0, {MAX_LORA_STRENGTH:g}]")


class PromptSpec(BaseModel):
    """One image-generation job. Unknown keys are refused rather than silently dropped."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)

    tune_id: int = Field(gt=0, le=MAX_ID)
    text: str = Field(max_length=MAX_TEXT_CHARS, json_schema_extra={"pattern": r"\S"})
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
    w: int | None = Field(None, gt=0, le=MAX_SIDE, multiple_of=8)
    h: int | None = Field(None, gt=0, le=MAX_SIDE, multiple_of=8)
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
    webhook_events: list[WebhookEventName] | None = Field(
        None, max_length=len(WEBHOOK_EVENTS),
        description="the job's events sent to `callback` besides its end (always sent)")

    @field_validator("text")
    @classmethod
    def _text(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        _check_tags(value)
        return value

    @field_validator("input_image_url", "mask_image_url")
    @classmethod
    def _urls(cls, value: str | None) -> str | None:
        return _http_url(value)

    @field_validator("callback")
    @classmethod
    def _callback(cls, value: str | None, info: ValidationInfo) -> str | None:
        url = _http_url(value)
        allow_private = bool((info.context or {}).get("allow_private"))
        return None if url is None else _webhook_url(url, allow_private)

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
        if self.webhook_events and not self.callback:
            raise ValueError("webhook_events: requires callback")
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
        "text not blank, tags <lora:ID:W> and <faceid:ID:1> only, one LoRA on SDXL (several "
        "on Flux), "
        "inpaint_faces and hires_fix need super_resolution, controlnet needs an input image, "
        "URLs are http(s), input_image_base64 is a data:image/...;base64 URL, callback carries "
        "no credentials and its host is not a loopback, private, link-local, CGNAT, "
        "unique-local, multicast or unspecified address, nor localhost, in any spelling."
    )
    return schema


def _describe(err: dict[str, Any]) -> str:
    loc = ".".join(str(part)[:64] for part in err["loc"])
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        return f"{loc}: unknown field (not an Astria prompt field nor one of {sorted(OWN_KEYS)})"
    if not loc and ": " in msg:  # model-level rules already start with the field name
        return msg
    return f"{loc or 'spec'}: {msg}"


def problems_text(problems: list[str]) -> str:
    """Problems joined for an InvalidSpec message, at most MAX_PROBLEMS of them and
    MAX_ERROR_CHARS in all."""
    shown = problems[:MAX_PROBLEMS]
    while len(shown) > 1 and sum(len(p) + 2 for p in shown) > MAX_ERROR_CHARS - 40:
        shown.pop()
    text = "; ".join(shown)[:MAX_ERROR_CHARS - 40]
    more = len(problems) - len(shown)
    return text + (f"; and {more} more problem{'s' if more > 1 else ''}" if more else "")


def parse_spec(data: Any, *, sdxl_base_tune_id: int = 666678,
               private_callbacks: bool = False) -> PromptSpec:
    """Validate a producer's spec; raise InvalidSpec naming every bad field and its rule.

    `private_callbacks` admits a `callback` on a private or local address (see
    `worker.net.addresses`; WEBHOOK_ALLOW_PRIVATE_ADDRESSES)."""
    if not isinstance(data, dict):
        raise InvalidSpec(f"spec: must be a JSON object, got {type(data).__name__}")
    try:
        spec = PromptSpec.model_validate(data, context={"allow_private": private_callbacks})
    except ValidationError as exc:
        raise InvalidSpec(problems_text([_describe(dict(e)) for e in exc.errors()])) from None
    if spec.tune_id == sdxl_base_tune_id and len(spec.lora_tags()) > 1:
        raise InvalidSpec("text: SDXL prompts take at most one <lora:...> tag")
    return spec
