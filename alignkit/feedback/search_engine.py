"""A SQLite-file search engine for argilla_server, so a local Argilla needs no Elasticsearch/OpenSearch.

Runs inside the Argilla server's own virtualenv (imported by launch_server.py before the app starts), never in
alignkit's. It is a file, not memory, because the RQ worker is another process that updates the same index.

Each record is stored as the JSON document the Elasticsearch engine would index (`fields`, `metadata`,
`responses`, `suggestions`, `vectors`, `status`, timestamps); filters, sorting, text queries and similarity
search are evaluated in Python over a dataset's documents. That is plenty for the thousands of records a local
annotation round holds; deployments that need more point alignkit at an Argilla backed by Elasticsearch.

Text queries support a subset of Elasticsearch's `simple_query_string` (default operator AND): words,
`"phrases"`, `prefix*`, `-excluded` and `a b | c` (either all of `a b`, or `c`); case-insensitive word tokens.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any
from uuid import UUID

from argilla_server.enums import (
    MetadataPropertyType,
    ResponseStatusFilter,
    SimilarityOrder,
    SortOrder,
)
from argilla_server.models import (
    Dataset,
    MetadataProperty,
    Record,
    Response,
    Suggestion,
    User,
    VectorSettings,
)
from argilla_server.search_engine import (
    AndFilter,
    Filter,
    FilterScope,
    FloatMetadataMetrics,
    IntegerMetadataMetrics,
    MetadataFilterScope,
    MetadataMetrics,
    Order,
    RangeFilter,
    RecordFilterScope,
    ResponseFilterScope,
    SearchEngine,
    SearchResponseItem,
    SearchResponses,
    SuggestionFilterScope,
    TermsFilter,
    TermsMetrics,
    TextQuery,
)
from argilla_server.settings import settings

ENGINE_NAME = "sqlite"
INDEX_FILE_NAME = "search-index.sqlite3"
MAX_TERMS = 2**14  # same bucket cap as the Elasticsearch engine

# Words; Chinese characters and hiragana one token each, as Elasticsearch's standard tokenizer (Unicode text
# segmentation) cuts text that does not space its words, so "革命" finds "法国大革命".
_IDEOGRAPHIC = "\u3040-\u309f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_TOKEN = re.compile(rf"[{_IDEOGRAPHIC}]|[^\W{_IDEOGRAPHIC}]+")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    record_id TEXT NOT NULL UNIQUE,
    dataset_id TEXT NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS documents_dataset ON documents (dataset_id, seq);
"""
_initialised_paths: set[Path] = set()


def index_path() -> Path:
    """The index file: next to Argilla's own SQLite database in `ARGILLA_HOME_PATH`."""
    return Path(settings.home_path) / INDEX_FILE_NAME


@SearchEngine.register(engine_name=ENGINE_NAME)
@dataclass
class SQLiteSearchEngine(SearchEngine):
    """One instance per request (as argilla_server uses engines); each holds one SQLite connection."""

    connection: sqlite3.Connection
    path: Path

    @classmethod
    async def new_instance(cls) -> SQLiteSearchEngine:
        path = index_path()
        connection = sqlite3.connect(path, timeout=30, isolation_level=None)
        connection.execute("PRAGMA busy_timeout = 30000")
        if path not in _initialised_paths:
            connection.execute("PRAGMA journal_mode = WAL")
            connection.executescript(_SCHEMA)
            _initialised_paths.add(path)
        return cls(connection=connection, path=path)

    async def close(self) -> None:
        self.connection.close()

    async def ping(self) -> bool:
        return self.connection.execute("SELECT 1").fetchone() == (1,)

    async def info(self) -> dict:
        return {"engine": ENGINE_NAME, "path": str(self.path), "sqlite_version": sqlite3.sqlite_version}

    # -- index and documents ---------------------------------------------------------------------------------

    async def create_index(self, dataset: Dataset) -> None:
        """A dataset's index is its rows in the one documents table: nothing to create."""

    async def delete_index(self, dataset: Dataset) -> None:
        self.connection.execute("DELETE FROM documents WHERE dataset_id = ?", (str(dataset.id),))

    async def configure_metadata_property(self, dataset: Dataset, metadata_property: MetadataProperty) -> None:
        """Documents are schemaless JSON: nothing to configure."""

    async def configure_index_vectors(self, vector_settings: VectorSettings) -> None:
        """Documents are schemaless JSON: nothing to configure."""

    async def index_records(self, dataset: Dataset, records: Iterable[Record]) -> None:
        rows = [(str(record.id), str(dataset.id), _dumps(_record_document(record, dataset))) for record in records]
        with self._transaction():
            self.connection.executemany(
                "INSERT INTO documents (record_id, dataset_id, doc) VALUES (?, ?, ?) "
                "ON CONFLICT (record_id) DO UPDATE SET doc = excluded.doc",
                rows,
            )

    async def partial_record_update(self, record: Record, **update: Any) -> None:
        self._update_document(record.id, lambda doc: doc.update(json.loads(_dumps(update))))

    async def delete_records(self, dataset: Dataset, records: Iterable[Record]) -> None:
        with self._transaction():
            self.connection.executemany(
                "DELETE FROM documents WHERE record_id = ?", [(str(record.id),) for record in records]
            )

    async def update_record_response(self, response: Response) -> None:
        entry = json.loads(_dumps(_response_entry(response)))

        def replace(doc: dict) -> None:
            others = [item for item in doc.get("responses") or [] if item["id"] != entry["id"]]
            doc["responses"] = [*others, entry]

        self._update_document(response.record_id, replace)

    async def delete_record_response(self, response: Response) -> None:
        response_id = str(response.id)

        def remove(doc: dict) -> None:
            if doc.get("responses") is not None:
                doc["responses"] = [item for item in doc["responses"] if item["id"] != response_id]

        self._update_document(response.record_id, remove)

    async def update_record_suggestion(self, suggestion: Suggestion) -> None:
        entry = json.loads(_dumps(_suggestion_entries([suggestion])))
        self._update_document(suggestion.record_id, lambda doc: doc.setdefault("suggestions", {}).update(entry))

    async def delete_record_suggestion(self, suggestion: Suggestion) -> None:
        name = suggestion.question.name
        self._update_document(suggestion.record_id, lambda doc: (doc.get("suggestions") or {}).pop(name, None))

    # -- progress and metrics --------------------------------------------------------------------------------

    async def get_dataset_progress(self, dataset: Dataset) -> dict:
        if dataset.is_draft:
            return {}
        statuses = Counter(doc["status"] for doc in self._documents(dataset.id) if doc.get("status") is not None)
        return {"total": sum(statuses.values()), **statuses}

    async def get_dataset_user_progress(self, dataset: Dataset, user: User) -> dict:
        """Counts of the user's own responses by status.

        The Elasticsearch engine aggregates the statuses of *all* responses on the records the user answered;
        callers subtract these counts from the record total to get the user's pending records, which only adds
        up when the counts are the user's own, so that is what this returns.
        """
        if dataset.is_draft:
            return {}
        user_id = str(user.id)
        statuses = Counter(
            response["status"]
            for doc in self._documents(dataset.id)
            for response in doc.get("responses") or []
            if response.get("user_id") == user_id
        )
        return {"total": sum(statuses.values()), **statuses}

    async def compute_metrics_for(self, metadata_property: MetadataProperty) -> MetadataMetrics:
        name = metadata_property.name
        values = [
            value
            for doc in self._documents(metadata_property.dataset_id)
            for value in _as_list((doc.get("metadata") or {}).get(name))
        ]
        if metadata_property.type == MetadataPropertyType.terms:
            counts = Counter(str(value) for value in values)
            ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:MAX_TERMS]
            terms = [TermsMetrics.TermCount(term=term, count=count) for term, count in ranked]
            return TermsMetrics(total=len(values), values=terms)
        metrics_class = (
            IntegerMetadataMetrics if metadata_property.type == MetadataPropertyType.integer else FloatMetadataMetrics
        )
        return metrics_class(min=min(values, default=None), max=max(values, default=None))

    # -- search ----------------------------------------------------------------------------------------------

    async def search(
        self,
        dataset: Dataset,
        query: TextQuery | str | None = None,
        filter: Filter | None = None,
        sort: list[Order] | None = None,
        offset: int = 0,
        limit: int = 100,
        user_id: UUID | str | None = None,
    ) -> SearchResponses:
        """Like the Elasticsearch engine: text relevance, then a per-user deterministic shuffle when `user_id`
        is given (annotators sharing a dataset start on different records), unless a `sort` is given.
        """
        documents = list(self._documents(dataset.id))
        if filter is not None:
            documents = [doc for doc in documents if _matches(filter, doc)]
        scores = _text_scores(dataset, query, documents)
        hits = [(doc, scores[doc["id"]]) for doc in documents if doc["id"] in scores]
        if user_id is not None:
            hits = [(doc, score * _seeded_random(str(user_id), doc["id"])) for doc, score in hits]

        if sort:
            ordered = _sorted_documents([doc for doc, _ in hits], sort)
            items = [SearchResponseItem(record_id=UUID(doc["id"]), score=None) for doc in ordered]
        else:
            if query is not None or user_id is not None:
                hits.sort(key=lambda hit: -hit[1])
            items = [SearchResponseItem(record_id=UUID(doc["id"]), score=score) for doc, score in hits]
        return SearchResponses(items=items[offset : offset + limit], total=len(items))

    async def similarity_search(
        self,
        dataset: Dataset,
        vector_settings: VectorSettings,
        value: list[float] | None = None,
        record: Record | None = None,
        query: TextQuery | str | None = None,
        filter: Filter | None = None,
        max_results: int = 100,
        order: SimilarityOrder = SimilarityOrder.most_similar,
        threshold: float | None = None,
    ) -> SearchResponses:
        if bool(value) == bool(record):
            raise ValueError("Must provide either vector value or record to compute the similarity search")

        vector_value = value
        excluded_id = None
        if not vector_value:
            excluded_id = str(record.id)
            vector_value = record.vector_value_by_vector_settings(vector_settings)
        if not vector_value:
            raise ValueError("Cannot find a vector value to apply with provided info")
        if order == SimilarityOrder.least_similar:
            vector_value = [-component for component in vector_value]

        vector_key = str(vector_settings.id)
        documents = [
            doc
            for doc in self._documents(dataset.id)
            if doc["id"] != excluded_id and (doc.get("vectors") or {}).get(vector_key)
        ]
        if filter is not None:
            documents = [doc for doc in documents if _matches(filter, doc)]
        if query is not None:
            matching = _text_scores(dataset, query, documents)
            documents = [doc for doc in documents if doc["id"] in matching]

        hits = sorted(
            ((doc, _cosine_score(vector_value, doc["vectors"][vector_key])) for doc in documents),
            key=lambda hit: -hit[1],
        )[:max_results]
        items = [
            SearchResponseItem(record_id=UUID(doc["id"]), score=score)
            for doc, score in hits
            if threshold is None or score >= threshold
        ]
        return SearchResponses(items=items, total=len(hits))

    # -- storage helpers -------------------------------------------------------------------------------------

    def _documents(self, dataset_id: UUID | str) -> Iterator[dict]:
        rows = self.connection.execute(
            "SELECT doc FROM documents WHERE dataset_id = ? ORDER BY seq", (str(dataset_id),)
        )
        return (json.loads(doc) for (doc,) in rows)

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """A write transaction taken up front, so read-modify-write is safe against the worker process."""
        self.connection.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.connection.execute("ROLLBACK")
            raise
        self.connection.execute("COMMIT")

    def _update_document(self, record_id: UUID | str, change: Callable[[dict], Any]) -> None:
        with self._transaction():
            row = self.connection.execute("SELECT doc FROM documents WHERE record_id = ?", (str(record_id),)).fetchone()
            if row is None:
                raise LookupError(f"Record {record_id} is not in the search index {self.path}")
            doc = json.loads(row[0])
            change(doc)
            self.connection.execute("UPDATE documents SET doc = ? WHERE record_id = ?", (_dumps(doc), str(record_id)))


# -- documents (the same shape the Elasticsearch engine indexes) ---------------------------------------------


def _record_document(record: Record, dataset: Dataset) -> dict:
    fields = {}
    for field in dataset.fields:
        if field.is_image:
            continue
        value = record.fields.get(field.name)
        fields[field.name] = str(value) if field.is_custom and value is not None else value

    document = {
        "id": str(record.id),
        "external_id": record.external_id,
        "fields": fields,
        "status": record.status,
        "inserted_at": record.inserted_at,
        "updated_at": record.updated_at,
    }
    if record.metadata_:
        document["metadata"] = {name: value for name, value in record.metadata_.items() if value is not None}
    if record.responses:
        document["responses"] = [_response_entry(response) for response in record.responses]
    if record.suggestions:
        document["suggestions"] = _suggestion_entries(record.suggestions)
    if record.vectors:
        document["vectors"] = {str(vector.vector_settings_id): vector.value for vector in record.vectors}
    return document


def _response_entry(response: Response) -> dict:
    values = response.values or {}
    return {
        "id": response.id,
        "status": response.status,
        "user_id": response.user_id,
        **{question: (value or {}).get("value") for question, value in values.items()},
    }


def _suggestion_entries(suggestions: Iterable[Suggestion]) -> dict:
    return {
        suggestion.question.name: {
            "type": suggestion.type,
            "agent": suggestion.agent,
            "score": suggestion.score,
            "value": suggestion.value,
        }
        for suggestion in suggestions
    }


def _json_default(value: Any) -> Any:
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    raise TypeError(f"Cannot store {type(value).__name__} in the search index")


def _dumps(value: Any) -> str:
    return json.dumps(value, default=_json_default)


# -- filters -------------------------------------------------------------------------------------------------


def _matches(filter: Filter, doc: dict) -> bool:
    if isinstance(filter, AndFilter):
        return all(_matches(inner, doc) for inner in filter.filters)
    if isinstance(filter.scope, ResponseFilterScope):
        return _matches_response_filter(filter, doc)
    return _value_matches(filter, _scope_value(filter.scope, doc))


def _matches_response_filter(filter: Filter, doc: dict) -> bool:
    scope: ResponseFilterScope = filter.scope
    responses = [
        response
        for response in doc.get("responses") or []
        if scope.user is None or response.get("user_id") == str(scope.user.id)
    ]
    if scope.question:
        return any(_value_matches(filter, response.get(scope.question)) for response in responses)
    if scope.property == "status" and isinstance(filter, TermsFilter):
        statuses = set(filter.values)
        if ResponseStatusFilter.pending in statuses and not responses:
            return True
        return any(response.get("status") in statuses for response in responses)
    raise ValueError(f"Cannot process filter scope {scope}")


def _scope_value(scope: FilterScope, doc: dict) -> Any:
    if isinstance(scope, MetadataFilterScope):
        return (doc.get("metadata") or {}).get(scope.metadata_property)
    if isinstance(scope, SuggestionFilterScope):
        return ((doc.get("suggestions") or {}).get(scope.question) or {}).get(scope.property)
    if isinstance(scope, RecordFilterScope):
        return doc.get(scope.property)
    raise ValueError(f"Cannot process request for search scope {scope}")


def _value_matches(filter: Filter, value: Any) -> bool:
    values = _as_list(value)
    if isinstance(filter, TermsFilter):
        wanted = {str(term) for term in filter.values}
        return any(_term(item) in wanted for item in values)
    if isinstance(filter, RangeFilter):
        return any(_in_range(item, filter.ge, filter.le) for item in values)
    raise ValueError(f"Cannot process request for filter {filter}")


def _in_range(value: Any, ge: float | str | None, le: float | str | None) -> bool:
    comparable = _comparable(value)
    if ge is not None and not _compare_ok(_comparable(ge), comparable):
        return False
    return le is None or _compare_ok(comparable, _comparable(le))


def _compare_ok(low: tuple[int, Any], high: tuple[int, Any]) -> bool:
    return low[0] == high[0] and low[1] <= high[1]


def _comparable(value: Any) -> tuple[int, Any]:
    """Numbers, then dates (ISO strings), then other strings: a sort key that never mixes types."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return (3, str(value))
    if isinstance(value, int | float):
        return (0, float(value))
    try:
        return (1, datetime.fromisoformat(value).timestamp())
    except ValueError:
        return (2, value)


def _term(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


# -- sorting -------------------------------------------------------------------------------------------------


def _sorted_documents(documents: list[dict], sort: list[Order]) -> list[dict]:
    """Stable multi-key sort, least significant key first; documents missing a key go last (as in ES)."""
    for order in reversed(sort):
        keyed = [(doc, _sort_value(order.scope, doc)) for doc in documents]
        present = [item for item in keyed if item[1] is not None]
        missing = [doc for doc, value in keyed if value is None]
        present.sort(key=lambda item: item[1], reverse=order.order == SortOrder.desc)
        documents = [doc for doc, _ in present] + missing
    return documents


def _sort_value(scope: FilterScope, doc: dict) -> tuple[int, Any] | None:
    if isinstance(scope, ResponseFilterScope):
        key = scope.question or scope.property
        values = [
            value
            for response in doc.get("responses") or []
            if scope.user is None or response.get("user_id") == str(scope.user.id)
            for value in _as_list(response.get(key))
        ]
    else:
        values = _as_list(_scope_value(scope, doc))
    if not values:
        return None
    if all(isinstance(value, int | float) and not isinstance(value, bool) for value in values):
        return (0, sum(values) / len(values))  # Elasticsearch's `mode: avg` for nested numbers
    return _comparable(values[0])


# -- text relevance ------------------------------------------------------------------------------------------


@dataclass
class _Clause:
    tokens: list[str]
    prefix: bool = False
    negated: bool = False


def _tokens(text: str) -> list[str]:
    return [token.lower() for token in _TOKEN.findall(text)]


def _parse_query(text: str) -> list[list[_Clause]]:
    """`simple_query_string` subset: OR-groups (split on `|`) of AND-ed clauses."""
    groups: list[list[_Clause]] = [[]]
    for match in re.finditer(r'(-?)"([^"]*)"|(\|)|(\S+)', text):
        negation, phrase, bar, word = match.groups()
        if bar:
            groups.append([])
            continue
        if phrase is not None:
            clause = _Clause(tokens=_tokens(phrase), negated=bool(negation))
        else:
            negated = word.startswith("-") and len(word) > 1
            word = word.lstrip("+-")
            clause = _Clause(tokens=_tokens(word), prefix=word.endswith("*"), negated=negated)
        if clause.tokens:
            groups[-1].append(clause)
    return [group for group in groups if group]


def _clause_count(clause: _Clause, tokens: list[str]) -> int:
    """How often the clause occurs in the token list (a phrase must appear as consecutive tokens)."""
    size = len(clause.tokens)
    count = 0
    for start in range(len(tokens) - size + 1):
        window = tokens[start : start + size]
        if window[:-1] == clause.tokens[:-1] and (
            window[-1].startswith(clause.tokens[-1]) if clause.prefix else window[-1] == clause.tokens[-1]
        ):
            count += 1
    return count


def _searchable_text(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _searchable_text(item)
    elif isinstance(value, list):
        for item in value:
            yield from _searchable_text(item)
    elif value is not None:
        yield str(value)


def _text_scores(dataset: Dataset, query: TextQuery | str | None, documents: list[dict]) -> dict[str, float]:
    """Record id -> relevance for the documents matching the query (all, scored 1.0, without a query)."""
    if query is None:
        return {doc["id"]: 1.0 for doc in documents}
    if isinstance(query, str):
        query = TextQuery(q=query)
    if query.field and dataset.field_by_name(query.field) is None:
        raise ValueError(f"Field {query.field} not found in dataset {dataset.id}")

    groups = _parse_query(query.q)
    token_lists = {}
    for doc in documents:
        fields = doc.get("fields") or {}
        selected = [fields.get(query.field)] if query.field else list(fields.values())
        token_lists[doc["id"]] = [token for text in _searchable_text(selected) for token in _tokens(text)]

    counts = {
        doc_id: [[_clause_count(clause, tokens) for clause in group] for group in groups]
        for doc_id, tokens in token_lists.items()
    }
    total = max(len(counts), 1)
    document_frequency = [
        [sum(1 for doc_counts in counts.values() if doc_counts[g][c] > 0) for c in range(len(group))]
        for g, group in enumerate(groups)
    ]
    scores = {}
    for doc_id, doc_counts in counts.items():
        group_scores = [
            sum(
                (1 + math.log(count)) * math.log(1 + total / document_frequency[g][c])
                for c, (clause, count) in enumerate(zip(group, doc_counts[g], strict=True))
                if not clause.negated
            )
            for g, group in enumerate(groups)
            if all((count > 0) != clause.negated for clause, count in zip(group, doc_counts[g], strict=True))
        ]
        if group_scores:
            scores[doc_id] = max(group_scores) or 1.0
    return scores


def _seeded_random(seed: str, record_id: str) -> float:
    """A deterministic number in (0, 1] per (user, record): each user gets their own stable record order."""
    digest = hashlib.sha256(f"{seed}:{record_id}".encode()).digest()
    return (int.from_bytes(digest[:8], "big") + 1) / 2**64


def _cosine_score(query: list[float], vector: list[float]) -> float:
    """Elasticsearch's cosine `_score`: (1 + cosine) / 2, in [0, 1]."""
    dot = sum(a * b for a, b in zip(query, vector, strict=True))
    norms = math.sqrt(sum(a * a for a in query)) * math.sqrt(sum(b * b for b in vector))
    return (1 + dot / norms) / 2 if norms else 0.0
