"""Settings: environment variables, overrides and validation."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from facetrust import Settings
from facetrust.errors import InvalidParameter
from facetrust.gallery import Gallery, GalleryConfig
from facetrust.service import ServiceSettings


def test_environment_then_overrides() -> None:
    env = {
        "FACETRUST_MAX_PIXELS": "1000000",
        "FACETRUST_DETECTOR": "cnn",
        "FACETRUST_DETECTION_RETRY": "false",
        "FACETRUST_MIN_SHARPNESS": "7.5",
    }
    settings = Settings.from_env(env, detector="hog", workers=None)
    assert settings.max_pixels == 1_000_000
    assert settings.detector == "hog"  # explicit override beats the environment
    assert settings.detection_retry is False
    assert settings.min_sharpness == 7.5
    assert settings.workers == 0 and settings.worker_count >= 1


@pytest.mark.parametrize(
    "env,message",
    [
        ({"FACETRUST_MAX_PIXELS": "lots"}, "FACETRUST_MAX_PIXELS must be a whole number"),
        ({"FACETRUST_DETECTION_RETRY": "maybe"}, "FACETRUST_DETECTION_RETRY must be true or"),
        ({"FACETRUST_DETECTOR": "magic"}, "one of 'hog', 'cnn'"),
        ({"FACETRUST_MAX_PIXELS": "-5"}, "positive"),
        ({"FACETRUST_MIN_SHARPNESS": "nan"}, "FACETRUST_MIN_SHARPNESS must be a finite number"),
    ],
)
def test_bad_values_are_refused_with_the_variable_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidParameter, match=message):
        Settings.from_env(env)


@pytest.mark.parametrize(
    "env,message",
    [
        # the message names the variable that was set, prefix and all
        ({"FACETRUST_SERVICE_MAX_BODY_BYTES": "abc"},
         "FACETRUST_SERVICE_MAX_BODY_BYTES must be a whole number"),
        ({"FACETRUST_SERVICE_IDENTIFY_BURST": "1e9"},
         "FACETRUST_SERVICE_IDENTIFY_BURST must be a whole number"),
        # a rate that is not a number would turn the rate limit off, or on for good
        ({"FACETRUST_SERVICE_IDENTIFY_PER_MINUTE": "nan"}, "must be a finite number"),
        ({"FACETRUST_SERVICE_IDENTIFY_PER_MINUTE": "inf"}, "must be a finite number"),
        ({"FACETRUST_SERVICE_REQUEST_TIMEOUT_S": "0"}, "must be a positive number"),
    ],
)
def test_bad_service_values_are_refused_with_the_variable_named(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(InvalidParameter, match=message):
        ServiceSettings.from_env(env)
    with pytest.raises(InvalidParameter, match="'identify_per_minute' service setting must be"):
        ServiceSettings(identify_per_minute=float("nan"))  # e.g. --identify-per-minute nan


def test_detector_per_use_settings_are_checked() -> None:
    settings = Settings()
    assert (settings.detector, settings.fallback_detector, settings.video_detector) == (
        "hog", "cnn", "hog"
    )
    assert Settings.from_env({"FACETRUST_FALLBACK_DETECTOR": "none"}).fallback_detector == "none"
    with pytest.raises(InvalidParameter, match="'video_detector' setting must be one of"):
        Settings(video_detector="yolo")
    with pytest.raises(InvalidParameter, match="'detector' setting must be one of 'hog', 'cnn'"):
        Settings(detector="none")


@pytest.mark.parametrize("edit", [
    '"retention_days": NaN', '"retention_days": 0.5', '"review_quorum": 1.5',
    '"review_quorum": true', '"pending_probe_hours": NaN',
])
def test_a_hand_edited_gallery_config_with_a_value_that_is_no_count_is_refused(
    tmp_path: Path, edit: str
) -> None:
    gallery, config_path = Gallery.init_folder(tmp_path)
    gallery.close()
    name = edit.split(":")[0].strip('"')
    text = re.sub(rf'"{name}": [^,\n]+', edit, config_path.read_text())
    config_path.write_text(text)
    with pytest.raises(InvalidParameter, match=f"'{name}' setting must be"):
        GalleryConfig.load(config_path)
