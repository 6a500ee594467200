"""In-database 1:N search with pgvector: the opt-in ``server_side_search`` path.

Mixed into :class:`~facetrust.store.postgres.PostgresStore`. The vectors held
here are the templates' keyed rotation, in the clear, not encrypted (see the
README's "What changes for security"); they sit in ``template_vectors`` under
an HNSW index (``vector_l2_ops``) and go with their templates (``ON DELETE
CASCADE``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..errors import StoreError
from .sql_base import Cursor

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    import psycopg

#: Dimension of the pgvector column (the dlib model's templates).
VECTOR_DIM = 128


class VectorSearch:
    """Store, count and search protected vectors in the database."""

    # (model, purpose) -> (generation, subjects searched, valid until)
    _counts: dict[tuple[str, str | None], tuple[int, int, datetime]]

    if TYPE_CHECKING:  # provided by the PostgreSQL store this is mixed into
        _db: psycopg.Connection[Any]

        def snapshot(self) -> AbstractContextManager[None]: ...
        def generation(self) -> int: ...
        def _write(self, sql: str, params: Sequence[Any] = ()) -> Cursor: ...
        def _rows(
            self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()
        ) -> list[tuple[Any, ...]]: ...

    def put_vectors(
        self, rows: Sequence[tuple[str, str, str, npt.NDArray[np.float32]]]
    ) -> None:
        """Store protected vectors for in-database search: (template_id, subject_id, model_id, v).

        Opt-in (``GalleryConfig.server_side_search``): the vectors are the
        keyed rotation of the templates, in the clear, not encrypted.
        """
        for template_id, subject_id, model_id, vector in rows:
            if vector.shape != (VECTOR_DIM,):
                raise StoreError(
                    f"Server-side search holds {VECTOR_DIM}-dimensional templates; got shape "
                    f"{vector.shape} from model {model_id!r}. Turn server_side_search off "
                    "for this model."
                )
            self._write(
                "INSERT INTO template_vectors VALUES (%s, %s, %s, %s::vector) "
                "ON CONFLICT (template_id) DO UPDATE SET embedding = EXCLUDED.embedding",
                (template_id, subject_id, model_id, _vector_text(vector)),
            )

    def vector_count(self) -> int:
        """How many templates are held for in-database search."""
        return int(self._rows("SELECT count(*) FROM template_vectors")[0][0])

    def search_vectors(
        self,
        probe: npt.NDArray[np.float32],
        *,
        model_id: str,
        purpose: str | None,
        now: str,
        retention_cutoff: str,
        k: int,
        exclude: str | None = None,
        only: Sequence[str] | None = None,
        ef_search: int = 200,
        count_searched: bool = True,
    ) -> tuple[list[tuple[str, float]], int]:
        """The ``k`` nearest eligible subjects to ``probe``, by the HNSW index.

        Eligible: not erased, last interaction after ``retention_cutoff``, an
        active consent unexpired at ``now`` covering ``purpose`` (any purpose
        if None), not ``exclude``, and among ``only`` when given. Approximate:
        the index may miss a true nearest neighbour; ``ef_search`` trades
        latency for recall (measured at 100k templates:
        recall@1 against exact search 0.94 at 100, 0.98 at 200, 0.99 at 400;
        ``benchmarks/bench_postgres.py``).

        Returns
        -------
        hits : list of (subject_id, distance)
            Euclidean distance (lower is more similar), best template per
            subject, increasing.
        searched : int
            Eligible subjects with templates of ``model_id`` (-1 if not counted).
        """
        params = {
            "cutoff": retention_cutoff,
            "now": now,
            "purpose": purpose,
            "exclude": exclude or "",
            "only": list(only) if only is not None else None,
            "model": model_id,
            "probe": _vector_text(probe),
            "limit": 4 * k,
        }
        eligible = "facetrust_eligible(v.subject_id, %(purpose)s, %(now)s, %(cutoff)s)"
        with self.snapshot():
            # iterative scan: keep walking the graph until enough rows pass the filter
            self._db.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
            self._db.execute(f"SET LOCAL hnsw.ef_search = {int(ef_search)}".encode())
            rows = self._rows(
                "SELECT v.subject_id, v.embedding <-> %(probe)s::vector AS distance "
                f"FROM template_vectors v WHERE v.model_id = %(model)s AND {eligible} "
                "AND v.subject_id <> %(exclude)s "
                "AND (%(only)s::text[] IS NULL OR v.subject_id = ANY(%(only)s::text[])) "
                "ORDER BY v.embedding <-> %(probe)s::vector LIMIT %(limit)s",
                params,
            )
            searched = self._count_eligible(params) if count_searched else -1
        best: dict[str, float] = {}
        for subject_id, distance in rows:
            best.setdefault(str(subject_id), float(distance))  # rows come nearest first
        hits = sorted(best.items(), key=lambda item: item[1])[:k]
        return hits, searched


    def _count_eligible(self, params: Mapping[str, Any]) -> int:
        """Eligible subjects with templates of the model, cached per store generation.

        The set-based count reads every subject and consent (hundreds of ms at
        100k subjects), so it is computed once per generation and reused until
        the earliest moment a counted consent expires or a counted subject
        leaves retention; like the in-memory index, a subject's last
        interaction moving forward alone does not refresh it.
        """
        generation = self.generation()
        key = (params["model"], params["purpose"])
        now = datetime.fromisoformat(params["now"])
        cached = self._counts.get(key)
        if cached is not None and cached[0] == generation and now < cached[2]:
            return cached[1]
        # hash joins: the planner's row estimates for these casts are far off
        self._db.execute("SET LOCAL enable_nestloop = off")
        row = self._rows(
            "SELECT count(DISTINCT s.subject_id), min(c.expires_at::timestamptz), "
            "min(s.last_interaction_at::timestamptz) "
            "+ (%(now)s::timestamptz - %(cutoff)s::timestamptz) "
            "FROM subjects s JOIN consents c ON c.subject_id = s.subject_id "
            "JOIN (SELECT DISTINCT subject_id FROM template_vectors WHERE model_id = %(model)s) "
            "v ON v.subject_id = s.subject_id "
            "WHERE s.erased_at IS NULL "
            "AND s.last_interaction_at::timestamptz > %(cutoff)s::timestamptz "
            "AND c.withdrawn_at IS NULL AND c.expires_at::timestamptz > %(now)s::timestamptz "
            "AND (%(purpose)s::text IS NULL OR c.purposes::jsonb ? %(purpose)s::text)",
            params,
        )[0]
        self._db.execute("RESET enable_nestloop")
        count = int(row[0])
        changes_at = min((t for t in row[1:] if t is not None), default=datetime.max.replace(
            tzinfo=UTC))
        self._counts[key] = (generation, count, changes_at)
        return count


def _vector_text(vector: npt.NDArray[np.float32]) -> str:
    return "[" + ",".join(repr(float(x)) for x in vector.tolist()) + "]"
