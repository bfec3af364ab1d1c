"""Spec validation: every rule names the field and the rule."""

from __future__ import annotations

import re
from typing import Any

import pytest

from worker.errors import ConfigError, InvalidSpec
from worker.flow.accept import spec_argument
from worker.settings import load_settings
from worker.spec import MAX_TEXT_CHARS, parse_spec

OK: dict[str, Any] = {"tune_id": 1, "text": "ohwx man"}


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"colour": "red"}, "colour: unknown field"),
        ({"text": "  "}, "text: must not be blank"),
        ({"text": "x" * (MAX_TEXT_CHARS + 1)}, "text: String should have at most"),
        ({"tune_id": "12"}, "tune_id: Input should be a valid integer"),
        ({"tune_id": 0}, "tune_id: Input should be greater than 0"),
        ({"num_images": 9}, "num_images: Input should be less than or equal to 8"),
        ({"num_images": 0}, "num_images: Input should be greater than or equal to 1"),
        ({"seed": 2**32}, "seed: Input should be less than or equal to 4294967295"),
        ({"cfg_scale": 15.5}, "cfg_scale: Input should be less than or equal to 15"),
        ({"steps": 51}, "steps: Input should be less than or equal to 50"),
        ({"w": 510}, "w: Input should be a multiple of 8"),
        ({"denoising_strength": 1.5}, "denoising_strength: Input should be less than or equal"),
        ({"scheduler": "ddim"}, "scheduler: Input should be 'euler'"),
        ({"aspect_ratio": "7:5"}, "aspect_ratio: Input should be '1:1'"),
        ({"text": "<lora:abc:0.8> x"}, "text: bad tag '<lora:abc:0.8>'"),
        ({"text": "<lora:12> x"}, "text: bad tag '<lora:12>'"),
        ({"text": "<faceid:12:0.5> x"}, "text: bad tag"),
        ({"tune_id": 666678, "text": "<lora:1:1> <lora:2:1> x"}, "at most one <lora:...> tag"),
        ({"inpaint_faces": True}, "inpaint_faces: requires super_resolution=true"),
        ({"hires_fix": True, "super_resolution": False}, "hires_fix: requires super_resolution"),
        ({"controlnet": "canny"}, "controlnet: requires input_image_url or input_image_base64"),
        ({"controlnet": "pose2"}, "controlnet: Input should be"),
        ({"callback": "ftp://example.com/x"}, "callback: must be an http:// or https:// URL"),
        ({"input_image_url": "file:///etc/passwd"}, "input_image_url: must be an http://"),
        ({"input_image_base64": "aGVsbG8="}, "input_image_base64: must be a data:image/"),
        ({"input_image_base64": "data:image/png;base64," + "A" * (4 * 1024 * 1024)},
         "input_image_base64: String should have at most"),
        ({"lora_strength": 3}, "lora_strength: Input should be less than or equal to 2"),
        ({"idempotency_key": ""}, "idempotency_key: String should have at least 1"),
        ({"tune_id": 2**31}, "tune_id: Input should be less than or equal to 2147483647"),
        ({"tune_id": 2**70}, "tune_id: Input should be less than or equal to 2147483647"),
        ({"w": 2**70}, "w: Input should be less than or equal to 2048"),
        ({"h": 4096}, "h: Input should be less than or equal to 2048"),
        ({"cfg_scale": float("nan")}, "cfg_scale: Input should be a finite number"),
        ({"expires_in": float("inf")}, "expires_in: Input should be a finite number"),
        ({"text": "<lora:99999999999:0.5> x"}, "the tune id must be 1..2147483647"),
        ({"text": "<lora:5:7> x"}, "the strength must be in (0, 2]"),
        ({"callback": "https://example.com:99999/x"}, "callback: is not a valid URL"),
    ],
)
def test_invalid_specs_name_field_and_rule(changes: dict[str, Any], expected: str) -> None:
    with pytest.raises(InvalidSpec) as caught:
        parse_spec({**OK, **changes})
    assert expected in str(caught.value)


def test_an_invalid_spec_error_is_bounded_however_much_is_wrong() -> None:
    spec = {**OK, **{f"unknown_{i}_{'x' * 500}": 1 for i in range(10_000)}}
    with pytest.raises(InvalidSpec) as caught:
        parse_spec(spec)
    message = str(caught.value)
    assert len(message) <= 2000 and message.endswith("more problems")
    assert message.startswith("unknown_0_xxx")


@pytest.mark.parametrize(
    ("args", "kwargs", "expected"),
    [
        ((), {}, "missing 'spec'"),
        ((), {"spec": {}, "extra": 1}, "unexpected keyword arguments ['extra']"),
        (({}, {}), {}, "2 positional arguments"),
        (({},), {"spec": {}}, "positional argument(s) beside keyword arguments"),
    ],
)
def test_task_arguments_other_than_one_spec_are_named(args: tuple[object, ...],
                                                       kwargs: dict[str, object],
                                                       expected: str) -> None:
    with pytest.raises(InvalidSpec, match=r"^task arguments: .*" + re.escape(expected)):
        spec_argument(args, kwargs)
    assert spec_argument((), {"spec": OK}) == spec_argument((OK,), {}) == OK


def test_spec_must_be_an_object() -> None:
    with pytest.raises(InvalidSpec, match="spec: must be a JSON object"):
        parse_spec(["tune_id", 1])


def test_valid_spec_keeps_astria_field_names_and_drops_our_own() -> None:
    spec = parse_spec({**OK, "super_resolution": True, "inpaint_faces": True, "controlnet": "canny",
                       "input_image_url": "https://x.test/a.png", "lora_strength": 0.7,
                       "idempotency_key": "k1", "text": "<lora:5:0.8> ohwx"})
    assert spec.prompt_fields() == {
        "text": "<lora:5:0.8> ohwx", "super_resolution": True, "inpaint_faces": True,
        "controlnet": "canny", "input_image_url": "https://x.test/a.png",
    }
    assert spec.lora_tags() == [5]


def test_bad_settings_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASTRIA_POLL_INTERVAL", "-1")
    monkeypatch.setenv("REDIS_URL", "http://nope")
    monkeypatch.setenv("ASTRIA_DELETE_FOR_SECONDS", "forever")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "ASTRIA_POLL_INTERVAL: Input should be greater than 0" in str(caught.value)
    assert "ASTRIA_DELETE_FOR_SECONDS: Input should be a valid number" in str(caught.value)
    assert "REDIS_URL: String should match pattern" in str(caught.value)


def test_missing_api_key_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ASTRIA_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="ASTRIA_API_KEY"):
        load_settings().api_key()
