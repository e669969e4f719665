"""Where an experiment is stored: a local (or NFS) folder, or a folder in object storage given as a URI that pyarrow's
`FileSystem.from_uri` reads, as Ray Tune does: `s3://bucket/prefix`, `gs://bucket/prefix`, with pyarrow's query
options (`s3://bucket/prefix?endpoint_override=127.0.0.1:9000&scheme=http` for an S3-compatible store such as MinIO).
Credentials come from the provider's usual environment (AWS_ACCESS_KEY_ID, ..., GOOGLE_APPLICATION_CREDENTIALS),
never from the URI, which is saved with the results and printed.

`Location` is that place as a pyarrow filesystem plus the path on it (what Ray Tune's RunConfig, Tuner.restore and
ExperimentAnalysis take), with the few operations tuner needs: look, list, upload, download. `Experiment` is the one
user of it for the experiment's layout.
"""

from __future__ import annotations

import functools
import hashlib
import os
import posixpath
import shutil
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from tuner.errors import InputError, UserError

# The pre-flight check's patience with an object store: a typo'd endpoint fails in seconds, not after the SDK's
# minute of retries.
PROBE_CONNECT_TIMEOUT_S = 3
PROBE_REQUEST_TIMEOUT_S = 5
CREDENTIALS_IN_URI = ("credentials in the URI would be saved with the results and printed; give them through the "
                      "provider's environment (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, GOOGLE_APPLICATION_CREDENTIALS, "
                      "...)")
PASSWORD_IN_URL = ("a password in the URL would be saved with the results and printed; leave it out and give it the "
                   "database's own way (PGPASSWORD or ~/.pgpass for PostgreSQL, read_default_file=~/.my.cnf for MySQL)")


class StorageError(UserError):
    """The storage named by a URI cannot be read or written (unreachable, no such bucket, no permission)."""


class Location:
    """A folder: an absolute local path, or `scheme://bucket/key?query` in object storage."""

    def __init__(self, uri: str):
        self.uri = uri
        parts = urlsplit(uri)
        self.is_local = len(parts.scheme) <= 1  # no scheme (a one-letter one is a Windows drive)
        self.name = Path(uri).name if self.is_local else posixpath.basename(parts.path.rstrip("/")) or parts.netloc

    @classmethod
    def parse(cls, text: str | os.PathLike, what: str = "run.storage_path") -> Location:
        """A Location from what a user wrote: a path (relative to the working directory, `~` expanded), `file://`,
        or a URI; raises InputError on a URI that carries credentials."""
        text = os.fspath(text)
        parts = urlsplit(text)
        if parts.scheme == "file":
            text, parts = parts.path, urlsplit(parts.path)
        if len(parts.scheme) <= 1:  # no scheme (a one-letter one is a Windows drive)
            return cls(str(Path(text).expanduser().resolve()))
        if (shown := with_credentials_hidden(text, usernames_too=True)) is not None:
            raise InputError(f"{what}: {CREDENTIALS_IN_URI}, got {shown!r}")
        if not parts.netloc:
            raise InputError(f"{what}: expected {parts.scheme}://BUCKET/PREFIX, got {text!r}")
        return cls(text)

    def __repr__(self) -> str:
        return f"Location({self.uri!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Location) and other.uri == self.uri

    def __hash__(self) -> int:
        return hash(self.uri)

    def __reduce__(self):  # the filesystem is rebuilt where it is unpickled, from that machine's credentials
        return Location, (self.uri,)

    # ------------------------------------------------------------------------------------------------ naming

    def child(self, relative: str) -> Location:
        if self.is_local:
            return Location(str(Path(self.uri) / relative))
        parts = urlsplit(self.uri)
        return Location(urlunsplit(parts._replace(path=posixpath.join(parts.path or "/", relative))))

    @property
    def parent(self) -> Location:
        if self.is_local:
            return Location(str(Path(self.uri).parent))
        parts = urlsplit(self.uri)
        return Location(urlunsplit(parts._replace(path=posixpath.dirname(parts.path.rstrip("/")))))

    def relative(self, item: str | os.PathLike) -> str | None:
        """`item` (a URI, or a path on this location's filesystem as Ray Tune reports them) relative to this folder;
        None when it lies outside."""
        item = os.fspath(item)
        if "://" in item:
            inner, base = item.split("?", 1)[0], self.uri.split("?", 1)[0]
        else:
            inner, base = item, self.fs_path
        inner, base = inner.rstrip("/"), base.rstrip("/")
        if inner == base:
            return ""
        return inner[len(base) + 1:] if inner.startswith(base + "/") else None

    def uri_of(self, fs_path: str) -> str:
        """The URI of a path on this location's filesystem (as Ray Tune reports trial and checkpoint folders)."""
        relative = self.relative(fs_path)
        return fs_path if relative is None else (self.child(relative).uri if relative else self.uri)

    # ------------------------------------------------------------------------------------------------ filesystem

    @functools.cached_property
    def _resolved(self):
        import pyarrow.fs

        if self.is_local:
            return pyarrow.fs.LocalFileSystem(), self.uri
        try:
            return pyarrow.fs.FileSystem.from_uri(self.uri)
        except (OSError, ValueError) as error:  # ArrowInvalid is a ValueError
            raise StorageError(f"{self.uri}: {_first_line(error)}") from None

    @property
    def filesystem(self):
        """The pyarrow filesystem (built on first use: for S3 without a region, pyarrow asks the bucket's region)."""
        return self._resolved[0]

    @property
    def fs_path(self) -> str:
        return self._resolved[1].rstrip("/") or self._resolved[1]

    def _path(self, relative: str = "") -> str:
        return posixpath.join(self.fs_path, relative) if relative else self.fs_path

    # ------------------------------------------------------------------------------------------------ operations

    def info(self, relative: str = ""):
        with self._errors(relative):
            return self.filesystem.get_file_info(self._path(relative))

    def exists(self, relative: str = "") -> bool:
        import pyarrow.fs

        return self.info(relative).type != pyarrow.fs.FileType.NotFound

    def is_dir(self, relative: str = "") -> bool:
        import pyarrow.fs

        return self.info(relative).type == pyarrow.fs.FileType.Directory

    def listing(self, relative: str = "") -> dict[str, bool]:
        """name -> whether it is a folder, for what lies directly in `relative` ({} when it does not exist)."""
        import pyarrow.fs

        with self._errors(relative):
            infos = self.filesystem.get_file_info(pyarrow.fs.FileSelector(self._path(relative), allow_not_found=True))
        return {posixpath.basename(i.path.rstrip("/")): i.type == pyarrow.fs.FileType.Directory for i in infos}

    def upload(self, local: Path, relative: str) -> None:
        """Copy a local file or folder to `relative` under this location."""
        import pyarrow.fs

        target = self._path(relative)
        with self._errors(relative):
            if self.is_local:  # object stores have no folders to make
                self.filesystem.create_dir(posixpath.dirname(target) if local.is_file() else target)
            pyarrow.fs.copy_files(str(local), target, destination_filesystem=self.filesystem)

    def download(self, relative: str, local: Path) -> Path:
        """Copy the file or folder at `relative` to `local`, replacing what was there; atomic for a folder (a
        download cut short leaves the old copy, or none)."""
        import pyarrow.fs

        local.parent.mkdir(parents=True, exist_ok=True)
        partial = local.with_name(f".{local.name}.partial-{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        if self.is_dir(relative):
            partial.mkdir()  # copy_files fills a local folder, but does not make it
        with self._errors(relative):
            pyarrow.fs.copy_files(self._path(relative), str(partial), source_filesystem=self.filesystem)
        if local.is_dir():
            shutil.rmtree(local)
        os.replace(partial, local)
        return local

    def remove(self) -> None:
        """Delete this location and everything under it (an object store: every object under its prefix)."""
        with self._errors(""):
            self.filesystem.delete_dir(self.fs_path)

    def read_text(self, relative: str) -> str:
        with self._errors(relative), self.filesystem.open_input_stream(self._path(relative)) as stream:
            return stream.readall().decode()

    def _errors(self, relative: str):
        return _StorageErrors(self.child(relative).uri if relative else self.uri)

    # ------------------------------------------------------------------------------------------------ checks

    def probe(self, what: str = "run.storage_path") -> None:
        """Check, without writing, that the store answers and its bucket exists; raises InputError in seconds."""
        import pyarrow.fs

        try:
            filesystem = impatient(self.filesystem)
        except StorageError as error:
            raise InputError(f"{what}: cannot open {self.uri}: {_first_line(error).removeprefix(self.uri + ': ')}") \
                from None
        object_store = filesystem is not self.filesystem  # S3 or GCS: the first part of the path is the bucket
        bucket = self.fs_path.split("/", 1)[0]
        try:
            found = filesystem.get_file_info(bucket if object_store else self.fs_path).type
        except OSError as error:
            raise InputError(f"{what}: cannot reach {self.uri}: {_first_line(error)}") from None
        if object_store and found == pyarrow.fs.FileType.NotFound:
            raise InputError(f"{what}: no bucket {bucket!r} at {self.uri}; create it first")


class _StorageErrors:
    """Turn pyarrow's OSError (unreachable, denied, missing) into one StorageError line naming the URI."""

    def __init__(self, uri: str):
        self.uri = uri

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if error is not None and isinstance(error, OSError) and not isinstance(error, UserError):
            raise StorageError(f"{self.uri}: {_first_line(error)}") from None
        return False


def impatient(filesystem):
    """The same filesystem, with short timeouts and no retries where pyarrow lets them be set (S3, GCS)."""
    import datetime

    import pyarrow.fs

    if isinstance(filesystem, getattr(pyarrow.fs, "S3FileSystem", ())):
        rebuild, (options,) = filesystem.__reduce__()
        return rebuild({**options, "connect_timeout": PROBE_CONNECT_TIMEOUT_S,
                        "request_timeout": PROBE_REQUEST_TIMEOUT_S,
                        "retry_strategy": pyarrow.fs.AwsStandardS3RetryStrategy(max_attempts=1)})
    if isinstance(filesystem, getattr(pyarrow.fs, "GcsFileSystem", ())):
        rebuild, (options,) = filesystem.__reduce__()
        return rebuild({**options, "retry_time_limit": datetime.timedelta(seconds=PROBE_REQUEST_TIMEOUT_S)})
    return filesystem


def working_copy(location: Location) -> Path:
    """This machine's folder for what tuner keeps of an experiment in object storage (spec, prepared data, the
    study, reports, downloaded checkpoints): $TUNER_CACHE/experiments/NAME-HASH, one per URI."""
    from tuner.trial.embedded import cache_dir

    digest = hashlib.sha256(location.uri.encode()).hexdigest()[:12]
    return cache_dir() / "experiments" / f"{location.name}-{digest}"


def with_credentials_hidden(uri: str, usernames_too: bool = False) -> str | None:
    """`uri` with its password (and user name, with `usernames_too`) shown as ***, when it has one; else None."""
    parts = urlsplit(uri)
    if "://" not in uri or not (parts.password is not None or usernames_too and parts.username is not None):
        return None
    host = parts.netloc.rpartition("@")[2]
    user = "***" if usernames_too else parts.username
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}" if parts.password is not None else f"{user}@{host}"))


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
