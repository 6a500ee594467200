"""Per-face quality measurements and the pass/fail decision against minimums."""

from __future__ import annotations

import math

import cv2
import numpy as np
import numpy.typing as npt

from .config import Settings
from .faces import Landmarks, Quality, QualityCheck


def sharpness_of(chip: npt.NDArray[np.uint8]) -> float:
    """Variance of the Laplacian of the grayscale ``chip``; higher is sharper."""
    gray = cv2.cvtColor(chip, cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


def pose_of(landmarks: Landmarks) -> tuple[float, float]:
    """Rough (yaw, roll_deg) from five landmarks.

    yaw is the nose's offset from the eyes' midpoint, measured along the eye
    line and divided by half the inter-eye distance: 0 frontal, about +-1 in
    profile. roll is the angle of the eye line in degrees.
    """
    (ax, ay), (bx, by) = landmarks.eye_centres
    dx, dy = bx - ax, by - ay
    length = math.hypot(dx, dy) or 1.0
    mx, my = (ax + bx) / 2, (ay + by) / 2
    nx, ny = landmarks.nose
    along = ((nx - mx) * dx + (ny - my) * dy) / length
    return along / (length / 2), math.degrees(math.atan2(dy, dx))


def assess_quality(
    landmarks: Landmarks, chip: npt.NDArray[np.uint8], settings: Settings
) -> Quality:
    """Measure a face and check it against the minimums in ``settings``."""
    inter_eye = landmarks.inter_eye_distance
    sharpness = sharpness_of(chip)
    yaw, roll = pose_of(landmarks)
    reasons = []
    if inter_eye < settings.min_inter_eye_px:
        reasons.append(
            f"face too small: {inter_eye:.1f} px between the eyes, "
            f"{settings.min_inter_eye_px:g} needed; move closer or use a larger photo"
        )
    if sharpness < settings.min_sharpness:
        reasons.append(
            f"face too blurred: sharpness {sharpness:.1f}, {settings.min_sharpness:g} needed; "
            "hold still, focus, or use a sharper photo"
        )
    if abs(yaw) > settings.max_abs_yaw:
        reasons.append(
            f"face turned away: yaw {yaw:+.2f}, at most +-{settings.max_abs_yaw:g} allowed; "
            "look at the camera"
        )
    if abs(roll) > settings.max_abs_roll_deg:
        reasons.append(
            f"head tilted: roll {roll:+.1f} degrees, at most +-{settings.max_abs_roll_deg:g}; "
            "hold the head upright"
        )
    checks = (
        QualityCheck("inter_eye_px", "Inter-eye distance (px)", inter_eye,
                     settings.min_inter_eye_px, "min", inter_eye >= settings.min_inter_eye_px),
        QualityCheck("sharpness", "Sharpness (variance of the Laplacian)", sharpness,
                     settings.min_sharpness, "min", sharpness >= settings.min_sharpness),
        QualityCheck("yaw", "Yaw (0 = frontal, 1 = profile)", yaw, settings.max_abs_yaw,
                     "max_abs", abs(yaw) <= settings.max_abs_yaw),
        QualityCheck("roll_deg", "Roll (degrees)", roll, settings.max_abs_roll_deg, "max_abs",
                     abs(roll) <= settings.max_abs_roll_deg),
    )
    return Quality(inter_eye, sharpness, yaw, roll, not reasons, tuple(reasons), checks)
