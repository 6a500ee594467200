"""Several real processes on one gallery file: nothing lost, nothing corrupted,
and a process killed inside an enrolment leaves no half-written subject."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from facetrust.faces import Embedding
from facetrust.gallery import Gallery

pytestmark = pytest.mark.slow  # several real processes per test

WORKER = r"""
import json, sys
from datetime import timedelta
import numpy as np
from facetrust.faces import Embedding
from facetrust.gallery import Gallery

folder, vectors_file, model_id, worker, count = sys.argv[1:6]
vectors = np.load(vectors_file)
found = 0
with Gallery.find(folder) as gallery:
    for i in range(int(count)):
        subject = f"w{worker}-{i}"
        gallery.add_subject(subject, actor=f"worker-{worker}")
        gallery.grant_consent(
            subject, ["boarding"], expires_at=gallery.now() + timedelta(days=30),
            evidence_ref="form", evidence_sha256="ab" * 32, notice_version="v1",
            actor=f"worker-{worker}",
        )
        row = (int(worker) * int(count) + i) % len(vectors)
        gallery.enroll(subject, [Embedding(vectors[row], model_id)], actor=f"worker-{worker}")
        result = gallery.identify(
            Embedding(vectors[row], model_id), purpose="boarding", actor=f"worker-{worker}",
            case_ref=f"case-{worker}-{i}",
        )
        found += subject in [c.subject_id for c in result.candidates]
print(json.dumps({"worker": worker, "found": found}))
"""

VICTIM = r"""
import pathlib, sys, time
import numpy as np
from facetrust.faces import Embedding
from facetrust.gallery import Gallery

folder, vectors_file, model_id, flag = sys.argv[1:5]
vectors = np.load(vectors_file)

def pause(stage):
    pathlib.Path(flag).write_text(stage)
    time.sleep(120)

gallery = Gallery.find(folder, _hook=pause)
gallery.enroll("victim", [Embedding(v, model_id) for v in vectors[:3]], actor="victim")
"""


def setup(tmp_path: Path, embeddings: dict[Path, Embedding]) -> tuple[Path, Path, str]:
    folder = tmp_path / "gallery"
    Gallery.init_folder(folder)[0].close()
    vectors_file = tmp_path / "vectors.npy"
    np.save(vectors_file, np.stack([e.vector for e in embeddings.values()]))
    return folder, vectors_file, next(iter(embeddings.values())).model_id


def integrity(db_path: Path) -> str:
    with sqlite3.connect(db_path) as db:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])


def test_concurrent_processes_lose_and_corrupt_nothing(
    tmp_path: Path, embeddings: dict[Path, Embedding]
) -> None:
    folder, vectors_file, model_id = setup(tmp_path, embeddings)
    workers, per_worker = 4, 6
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                WORKER,
                str(folder),
                str(vectors_file),
                model_id,
                str(w),
                str(per_worker),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(workers)
    ]
    outputs = [p.communicate(timeout=300) for p in processes]
    for process, (_, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err
    reports = [json.loads(out) for out, _ in outputs]
    assert all(r["found"] == per_worker for r in reports)  # each found its own subjects

    with Gallery.find(folder) as gallery:
        subjects = {s.subject_id for s in gallery.list_subjects()}
        assert subjects == {f"w{w}-{i}" for w in range(workers) for i in range(per_worker)}
        assert len(gallery.store.all_templates()) == workers * per_worker
        report = gallery.audit.verify()
        assert report.ok, report.reason
        assert report.events_checked == 1 + workers * per_worker * 4
        assert integrity(gallery.config.db_path) == "ok"
        assert integrity(gallery.config.keystore_path) == "ok"


def test_a_process_killed_mid_enrolment_leaves_no_half_written_subject(
    tmp_path: Path, embeddings: dict[Path, Embedding]
) -> None:
    folder, vectors_file, model_id = setup(tmp_path, embeddings)
    with Gallery.find(folder) as gallery:
        gallery.add_subject("victim", actor="registrar")
        gallery.grant_consent(
            "victim",
            ["boarding"],
            expires_at=gallery.now().replace(year=2099),
            evidence_ref="form",
            evidence_sha256="ab" * 32,
            notice_version="v1",
            actor="registrar",
        )
        events_before = gallery.audit.verify().events_checked
    flag = tmp_path / "paused"
    victim = subprocess.Popen(
        [sys.executable, "-c", VICTIM, str(folder), str(vectors_file), model_id, str(flag)],
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not flag.exists():
        assert victim.poll() is None, victim.stderr.read() if victim.stderr else ""
        assert time.monotonic() < deadline, "the enrolment never reached its pause"
        time.sleep(0.05)
    assert flag.read_text() == "enroll:template-written"  # one template row written, uncommitted
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=30)
    assert victim.returncode == -signal.SIGKILL

    with Gallery.find(folder) as gallery:
        assert gallery.get_subject("victim").template_count == 0
        assert gallery.store.all_templates() == []
        report = gallery.audit.verify()
        assert report.ok and report.events_checked == events_before
        assert integrity(gallery.config.db_path) == "ok"
        # the gallery is fully usable afterwards, by another process's writes too
        vector = np.load(vectors_file)[0]
        result = gallery.enroll("victim", [Embedding(vector, model_id)], actor="registrar")
        assert len(result.template_ids) == 1
        assert gallery.audit.verify().ok
