"""Files: store uploads as blobs plus a row; read, list and delete them within one workspace.

Uploads arrive as an async stream of bytes (the API layer parses multipart or JSON around it);
they are written to the blob store as they come and never held whole in memory. The size limit is
enforced while streaming, so an oversized upload is cut off and answered 413.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

from aistats_gateway import ids
from aistats_gateway.clock import Clock
from aistats_gateway.config import RetentionConfig
from aistats_gateway.domain.idempotency import HEADER, IdempotencyKey, replay_of
from aistats_gateway.errors import InvalidRequest, NotFound, PayloadTooLarge, excerpt
from aistats_gateway.storage.blobs import BlobStore, BlobWriter
from aistats_gateway.storage.files import Files
from aistats_gateway.storage.idempotency import IdempotencyKeys, KeyTaken
from aistats_gateway.storage.records import FileRecord

UPLOAD_PURPOSES = ("batch", "fine-tune", "assistants", "vision", "user_data", "evals")


def check_purpose(purpose: object) -> str:
    if purpose is not None and not isinstance(purpose, str):
        raise InvalidRequest(f"'purpose' must be a string such as \"batch\", got {type(purpose).__name__}.",
                             code="invalid_type", param="purpose")
    if not purpose:
        raise InvalidRequest("Missing required parameter 'purpose' (use \"batch\" for batch input files).",
                             code="missing_required_parameter", param="purpose")
    if purpose not in UPLOAD_PURPOSES:
        raise InvalidRequest(f"Invalid purpose '{excerpt(purpose)}'; use one of: {', '.join(UPLOAD_PURPOSES)}.",
                             code="invalid_purpose", param="purpose")
    return purpose


def check_filename(filename: object, default: str = "upload.jsonl") -> str:
    """The name to store: the uploader's (any text, kept as given) or `default` when none was given."""
    if filename is None or filename == "":
        return default
    if not isinstance(filename, str):
        raise InvalidRequest(f"'filename' must be a string, got {type(filename).__name__}.", code="invalid_type",
                             param="filename")
    if "\x00" in filename:  # PostgreSQL text cannot hold NUL
        raise InvalidRequest("'filename' must not contain NUL characters (\\u0000).", code="invalid_value",
                             param="filename")
    return filename


class LimitedWriter:
    """A blob writer that refuses to grow past `limit` bytes (413 with the limit in the message), hashing the
    content as it streams (an upload's idempotency fingerprint, without reading it twice)."""

    def __init__(self, writer: BlobWriter, limit: int) -> None:
        self.writer = writer
        self.limit = limit
        self.size = 0
        self.sha256 = hashlib.sha256()

    async def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.limit:
            raise PayloadTooLarge(
                f"The file is larger than the {self.limit:,}-byte upload limit; split it into smaller files.",
                code="file_too_large", param="file",
            )
        self.sha256.update(data)
        await self.writer.write(data)


class FileService:
    def __init__(self, rows: Files, blobs: BlobStore, clock: Clock, max_bytes: int,
                 retention: RetentionConfig | None = None, keys: IdempotencyKeys | None = None) -> None:
        self.keys = keys
        self.retention = retention or RetentionConfig()
        self.rows = rows
        self.blobs = blobs
        self.clock = clock
        self.max_bytes = max_bytes

    def new_upload(self) -> tuple[str, str, LimitedWriter]:
        file_id = ids.file_id()
        key = f"files/{file_id}"
        return file_id, key, LimitedWriter(self.blobs.writer(key), self.max_bytes)

    async def finish_upload(
        self, workspace_id: str, file_id: str, key: str, writer: LimitedWriter, *, filename: str, purpose: str,
        expires_after: int | None = None,
    ) -> FileRecord:
        """Publish the upload. `expires_after` (seconds, from the uploader's policy) defaults for batch input
        files to `[retention] input_files_seconds`; the retention sweep removes the file once it has passed."""
        record, _replayed = await self.publish_upload(workspace_id, file_id, key, writer, filename=filename,
                                                      purpose=purpose, expires_after=expires_after)
        return record

    async def publish_upload(
        self, workspace_id: str, file_id: str, key: str, writer: LimitedWriter, *, filename: str, purpose: str,
        expires_after: int | None = None, idempotency: IdempotencyKey | None = None,
    ) -> tuple[FileRecord, bool]:
        """`finish_upload` with an optional idempotency key: (the file, whether it is one an earlier request
        with the same key and content created — then this upload's bytes are dropped)."""
        if idempotency is not None and self.keys is not None:
            earlier = replay_of(await self.keys.get(workspace_id, idempotency.key), idempotency, self.clock.now())
            if earlier is not None:
                await writer.writer.abort()
                return await self._replayed(workspace_id, earlier, idempotency), True
        size = await writer.writer.commit()
        if expires_after is None and purpose == "batch":
            expires_after = self.retention.input_files_seconds
        created = int(self.clock.now())
        record = FileRecord(
            id=file_id, workspace_id=workspace_id, filename=filename[:1024] or "upload.jsonl", purpose=purpose,
            bytes=size, status="processed", blob_key=key, created_at=created,
            expires_at=created + expires_after if expires_after is not None else None,
        )
        try:
            await self.rows.insert(record, idempotency)
        except KeyTaken as taken:  # a request with the same key won the race: answer its file
            await self.blobs.delete(key)
            assert idempotency is not None
            earlier = replay_of(taken.stored, idempotency, self.clock.now())
            if earlier is None:  # cannot be: the key's row was live when the insert met it
                raise
            return await self._replayed(workspace_id, earlier, idempotency), True
        except BaseException:
            await self.blobs.delete(key)
            raise
        return record, False

    async def _replayed(self, workspace_id: str, file_id: str, idempotency: IdempotencyKey) -> FileRecord:
        try:
            return await self.get(workspace_id, file_id)
        except NotFound as exc:
            raise NotFound(f"The {HEADER} '{excerpt(idempotency.key)}' answers file '{file_id}', which is gone "
                           f"({exc.message}); use a new key to upload again.", code="idempotent_object_gone",
                           param=HEADER) from None

    async def create_from_bytes(
        self, workspace_id: str, data: bytes, *, filename: str, purpose: str, expires_after: int | None = None
    ) -> FileRecord:
        file_id, key, writer = self.new_upload()
        try:
            await writer.write(data)
        except BaseException:
            await writer.writer.abort()
            raise
        return await self.finish_upload(workspace_id, file_id, key, writer, filename=filename, purpose=purpose,
                                        expires_after=expires_after)

    async def get(self, workspace_id: str, file_id: str, param: str = "file_id") -> FileRecord:
        # No id holds a NUL, and PostgreSQL refuses one in a query (the path and query string are guarded by the
        # API's middleware; this is for ids in request bodies, like a batch's input_file_id).
        record = await self.rows.get(workspace_id, file_id) if "\x00" not in file_id else None
        if record is None:
            raise NotFound(f"No file with id '{excerpt(file_id)}' in this workspace.",
                           code="file_not_found_or_not_owned", param=param)
        if record.expires_at is not None and record.expires_at <= self.clock.now():
            # Gone for its owner the moment it expires, even before the retention sweep removes it.
            raise NotFound(f"File '{file_id}' expired at {record.expires_at} (its expires_after policy).",
                           code="file_expired", param=param)
        return record

    async def content(self, workspace_id: str, file_id: str) -> tuple[FileRecord, AsyncIterator[bytes]]:
        record = await self.get(workspace_id, file_id)
        if not await self.blobs.exists(record.blob_key):
            raise NotFound(f"The content of file '{file_id}' is no longer available.", code="file_content_missing",
                           param="file_id")
        return record, self.blobs.read(record.blob_key)

    async def delete(self, workspace_id: str, file_id: str) -> FileRecord:
        """Gone for the API at once; the blob too, unless an unfinished batch still reads it as its input (its items
        point into it): then the executor removes it when the last such batch is terminal (purge_deleted_inputs)."""
        found = await self.rows.delete(workspace_id, file_id)
        if found is None:
            raise NotFound(f"No file with id '{excerpt(file_id)}' in this workspace.",
                           code="file_not_found_or_not_owned", param="file_id")
        record, blob_free = found
        if blob_free:
            await self.blobs.delete(record.blob_key)
        return record
