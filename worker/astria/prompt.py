"""`Prompt`: Astria's prompt object, as far as the queue believes it.

Astria's answers come from outside like everything else (and, through a proxy or a gateway, may
not come from Astria at all), so they are read into a typed, bounded value once, at the client:
- what decides a job is strict: `id` is a positive 63-bit integer, `images` a list of at most
  MAX_IMAGES http(s) URLs. An answer that breaks either is not a prompt (`AstriaClient` treats
  it like a garbled answer: look again later, or, for a POST, look for the prompt first);
- what only informs is lenient: a `cost_mc` outside 0..MAX_COST_MC, a seed that is not an
  integer, a date that is not a date, each becomes "unknown" rather than failing the job;
- text is cut: `user_error` at MAX_ERROR_CHARS, `text` and `callback` at MAX_TEXT_CHARS.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, WrapValidator

MAX_IMAGES = 64
#: Prompts one POST answer may carry (partner models answer a list).
MAX_PROMPTS = 16
MAX_URL_CHARS = 4096
#: A cost beyond this (ten million dollars in milli-cents) is not believed, and not counted.
MAX_COST_MC = 10**12
MAX_ERROR_CHARS = 1000
MAX_TEXT_CHARS = 10_000


def _or_none(value: Any, handler: Any) -> Any:
    try:
        return handler(value)
    except ValidationError:
        return None


def _cut(limit: int) -> WrapValidator:
    def cut(value: Any, handler: Any) -> str | None:
        if value is None or value == "" or value is False:
            return None
        text = value if isinstance(value, str) else str(value)
        return text[:limit]
    return WrapValidator(cut)


ImageUrl = Annotated[str, Field(max_length=MAX_URL_CHARS, pattern=r"^https?://\S+$")]


class Prompt(BaseModel):
    """The fields of Astria's prompt object the queue reads."""

    model_config = ConfigDict(extra="ignore", frozen=True, allow_inf_nan=False)

    id: int = Field(gt=0, le=2**63 - 1, strict=True)
    images: tuple[ImageUrl, ...] = Field((), max_length=MAX_IMAGES)
    user_error: Annotated[str | None, _cut(MAX_ERROR_CHARS)] = None
    tune_id: Annotated[int | None, Field(gt=0, le=2**63 - 1, strict=True),
                       WrapValidator(_or_none)] = None
    text: Annotated[str | None, _cut(MAX_TEXT_CHARS)] = None
    callback: Annotated[str | None, _cut(MAX_URL_CHARS)] = None
    seed: Annotated[int | None, Field(ge=0, le=2**63 - 1), WrapValidator(_or_none)] = None
    num_images: Annotated[int | None, Field(ge=0, le=MAX_IMAGES), WrapValidator(_or_none)] = None
    cost_mc: Annotated[int | None, Field(ge=0, le=MAX_COST_MC, strict=True),
                       WrapValidator(_or_none)] = None
    created_at: Annotated[datetime | None, WrapValidator(_or_none)] = None
    trained_at: Annotated[datetime | None, WrapValidator(_or_none)] = None

    @property
    def done(self) -> bool:
        """Astria's own rule (its CLI's): done when it has images, failed when `user_error`."""
        return bool(self.images or self.user_error)

    @staticmethod
    def dumps(prompts: list[Prompt]) -> str:
        """Prompts as JSON, read back with `Prompt.model_validate` (kept on a waiting job)."""
        return json.dumps([p.model_dump(mode="json") for p in prompts])


class Tune(BaseModel):
    """The fields of Astria's tune object the queue reads (GET /tunes/:id): whether its training
    has ended, and when it expires. Lenient: a date that is not one is unknown."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: int = Field(gt=0, le=2**63 - 1, strict=True)
    trained_at: Annotated[datetime | None, WrapValidator(_or_none)] = None
    expires_at: Annotated[datetime | None, WrapValidator(_or_none)] = None


def read_prompt(body: Any) -> Prompt | None:
    """The prompt in an answer's body (Astria's own CLI unwraps a one-element list), or None."""
    if isinstance(body, list) and len(body) == 1:
        body = body[0]
    if not isinstance(body, dict):
        return None
    try:
        return Prompt.model_validate(body)
    except ValidationError:
        return None
