"""Gate throughput and latency on a 720p video of real arrivals.

N LFW identities with two or more photos: the first photo of each is enrolled
into an event gallery, the second appears in a 1280x720 video (one person at a
time, 1 s each at 10 fps, 0.3 s empty gap), plus strangers who are not
enrolled. The gate runs over the video file as fast as it can.

Reported: decisions per second (wall clock), latency from the first frame of
passing quality to the decision (p50/p99), and how many decisions were right.
Targets (issue 8): >= 5 decisions/s on 2 cores, latency < 1 s.

Usage::

    python benchmarks/bench_gate.py [--lfw ../shared/datasets/lfw] [--people 60] [--strangers 10]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

import facetrust
from facetrust.gallery import Gallery
from facetrust.gate import events
from facetrust.gate.arrivals import write_arrivals_video
from facetrust.gate.session import GatePolicy, run_gate

REPO = Path(__file__).resolve().parent.parent


def pick_identities(images: Path, count: int, seed: int) -> list[list[Path]]:
    folders = sorted(d for d in images.iterdir() if d.is_dir())
    rng = np.random.default_rng(seed)
    rng.shuffle(folders)  # type: ignore[arg-type]
    chosen = []
    for folder in folders:
        photos = sorted(folder.glob("*.jpg"))
        if len(photos) >= 2:
            chosen.append(photos)
        if len(chosen) == count:
            break
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lfw", type=Path, default=REPO.parent / "shared" / "datasets" / "lfw")
    parser.add_argument("--people", type=int, default=60)
    parser.add_argument("--strangers", type=int, default=10)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/gate.json")
    args = parser.parse_args()
    images = args.lfw / "lfw-deepfunneled"
    if not images.is_dir():
        raise SystemExit(f"LFW not found at {args.lfw}; pass --lfw")
    people = pick_identities(images, args.people + args.strangers, seed=1)
    enrolled, strangers = people[: args.people], people[args.people :]

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        print(f"embedding {len(enrolled)} enrolment photos ...", flush=True)
        templates = {
            r.source: r.faces[0].embedding
            for r in facetrust.embed_many([p[0] for p in enrolled], progress=True)
            if r.faces
        }
        gallery, _ = Gallery.init_folder(folder / "gallery")
        now = datetime.now(UTC)
        form = hashlib.sha256(b"bench").hexdigest()
        events.open_event(
            gallery,
            "bench-flight",
            purpose="boarding",
            valid_from=now - timedelta(minutes=1),
            valid_to=now + timedelta(hours=6),
            actor="bench",
        )
        expected: list[str | None] = []
        with gallery.batch():
            for photos in enrolled:
                name = photos[0].parent.name
                if str(photos[0]) not in templates:
                    continue
                gallery.add_subject(name, actor="bench")
                gallery.grant_consent(
                    name,
                    ["boarding"],
                    expires_at=now + timedelta(days=1),
                    evidence_ref="f",
                    evidence_sha256=form,
                    notice_version="v1",
                    actor="bench",
                )
                gallery.enroll(
                    name, [templates[str(photos[0])]], actor="bench", check_duplicates=False
                )
                events.add_member(gallery, "bench-flight", name, actor="bench")
        arrivals = [p for p in enrolled if str(p[0]) in templates] + strangers
        rng = np.random.default_rng(2)
        order = rng.permutation(len(arrivals))
        video_photos = [arrivals[i][1] for i in order]
        enrolled_names = {p[0].parent.name for p in enrolled if str(p[0]) in templates}
        expected = [
            arrivals[i][0].parent.name if arrivals[i][0].parent.name in enrolled_names else None
            for i in order
        ]
        video = folder / "arrivals.mp4"
        frames = write_arrivals_video(video_photos, video)
        print(f"video: {len(video_photos)} arrivals, {frames} frames of 1280x720", flush=True)

        started = time.perf_counter()
        decisions = list(
            run_gate(
                gallery, "bench-flight", video, gate_id="bench", actor="bench", policy=GatePolicy()
            )
        )
        seconds = time.perf_counter() - started
        gallery.close()

    latencies = np.array([d.latency_s for d in decisions if d.latency_s is not None])
    right = sum(d.subject_id == want for d, want in zip(decisions, expected, strict=False))
    result = {
        "arrivals": len(video_photos),
        "frames": frames,
        "decisions": len(decisions),
        "seconds": round(seconds, 2),
        "decisions_per_s": round(len(decisions) / seconds, 2),
        "frames_per_s": round(frames / seconds, 1),
        "latency_p50_s": round(float(np.percentile(latencies, 50)), 3),
        "latency_p99_s": round(float(np.percentile(latencies, 99)), 3),
        "latency_max_s": round(float(latencies.max()), 3),
        "right_decisions": right,
        "false_match": sum(
            d.outcome == "match" and d.subject_id != want
            for d, want in zip(decisions, expected, strict=False)
        ),
        "false_refer": sum(
            d.outcome != "match" and want is not None
            for d, want in zip(decisions, expected, strict=False)
        ),
        "operating_point": decisions[0].operating_point if decisions else None,
        "embedder": facetrust.FacePipeline().embedder.backend,
        "cpus": os.cpu_count(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(
        "\n| arrivals | frames | decisions/s (target >= 5) | frames/s | latency p50 / p99 / max "
        "(target < 1 s) | right | false match | false refer | embedder |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {result['arrivals']} | {frames} | {result['decisions_per_s']} "
        f"| {result['frames_per_s']} | {result['latency_p50_s']} / {result['latency_p99_s']} / "
        f"{result['latency_max_s']} s | {right}/{len(decisions)} | {result['false_match']} "
        f"| {result['false_refer']} | {result['embedder']} |"
    )


if __name__ == "__main__":
    main()
