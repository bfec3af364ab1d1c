"""Where a job's prompt is POSTed: its own tune, or a base tune for SDXL LoRA, FaceID and Flux
LoRA tunes.

Astria answers a POST to an SDXL LoRA ("pti") tune with `422 model_type=pti is not supported. Use
a checkpoint instead`; the prompt must go to the SDXL base tune with `<lora:TUNE:STRENGTH>` in its
text, and SDXL takes one LoRA. FaceID tunes likewise go to their base tune with
`<faceid:TUNE:1>`. A Flux LoRA tune answers `model_type=lora`: the prompt goes to the Flux base
tune (ASTRIA_FLUX_BASE_TUNE_ID, 1504944) with `<lora:TUNE:STRENGTH>` (strength 1 unless the spec
says, Astria's own example), and Flux takes several LoRAs. Once a tune answered so, the route is
remembered (`worker.store.learnt`, in Redis: it survives restarts) and later jobs go straight to
the base tune.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from worker.errors import InvalidSpec
from worker.settings import Settings
from worker.spec import FACEID_TAG, LORA_TAG, PromptSpec

RouteKind = Literal["pti", "faceid", "flux"]
ROUTE_KINDS: tuple[RouteKind, ...] = ("pti", "faceid", "flux")
_UNSUPPORTED = re.compile(r"model_type=(pti|faceid|lora) is not supported")
#: A Flux LoRA's strength when the spec gives none (Astria's example uses 1).
FLUX_LORA_STRENGTH = 1.0
#: What each 422's model_type means for the route.
_ROUTE_OF: dict[str, RouteKind] = {"pti": "pti", "faceid": "faceid", "lora": "flux"}


@dataclass(frozen=True)
class Target:
    """Where and what to POST."""

    tune_id: int
    text: str
    rerouted: bool


def unsupported_kind(error_message: str) -> RouteKind | None:
    """'pti', 'faceid' or 'flux' when a 422 says the tune needs its base tune."""
    match = _UNSUPPORTED.search(error_message)
    if match is None:
        return None
    return _ROUTE_OF[match.group(1)]


def route(settings: Settings, spec: PromptSpec, known: RouteKind | None) -> Target:
    """The spec's own tune, or its base tune when the tune is known to need one."""
    if known is None:
        return Target(spec.tune_id, spec.text, rerouted=False)
    if known == "faceid":
        has_tag = any(int(m.group(1)) == spec.tune_id for m in FACEID_TAG.finditer(spec.text))
        text = spec.text if has_tag else f"<faceid:{spec.tune_id}:1> {spec.text}"
        return Target(settings.astria_faceid_base_tune_id, text, rerouted=True)
    flux = known == "flux"
    strength = spec.lora_strength or (FLUX_LORA_STRENGTH if flux else settings.astria_lora_strength)
    text = spec.text
    if spec.tune_id not in spec.lora_tags():
        text = f"<lora:{spec.tune_id}:{strength:g}> {text}"
    if flux:
        return Target(settings.astria_flux_base_tune_id, text, rerouted=True)
    if len(LORA_TAG.findall(text)) > 1:
        raise InvalidSpec(
            f"text: tune {spec.tune_id} is an SDXL LoRA and SDXL prompts take one LoRA; "
            "remove the other <lora:...> tags"
        )
    return Target(settings.astria_sdxl_base_tune_id, text, rerouted=True)
