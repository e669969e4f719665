"""The Optuna study's storage: `search.storage` when given (an RDB URL that many machines share, `postgresql://...`,
`mysql+pymysql://...`, `sqlite:///...`, or the path of a journal file on a shared folder), else SQLite in the
experiment's tuner folder (`Experiment.optuna_file`).

Ray Tune pickles the searcher, and with it this storage, into the experiment (tuner.pkl, searcher-state-*.pkl). The
default storage pickles as the experiment's location, not as a file path, so that `--resume` opens the study
wherever this machine keeps that experiment (the folder itself, or the working copy of one in object storage, which
`Experiment.open` has just downloaded).
"""

from __future__ import annotations

from pathlib import Path

import optuna

from tuner.errors import InputError

URL_FORMS = "sqlite:///PATH, postgresql://USER@HOST/DB, mysql+pymysql://USER@HOST/DB, or a journal file path"
CONNECT_TIMEOUT_S = 5
DRIVER_PACKAGES = {"postgresql": "psycopg2-binary", "mysql": "pymysql (with a mysql+pymysql:// URL)"}


class ExperimentSQLite(optuna.storages.RDBStorage):
    """The default study: `optuna.db` in the tuner folder of the experiment at `location` (a path or a URI)."""

    # Set by `--resume` to where the experiment is now: the pickled location is where it was when the search
    # started, and a results folder moved or copied since would reconnect to the old study (a crash when that
    # folder is gone, a study written into the old folder when it is not). A driver resumes one experiment.
    relocated: str | None = None

    def __init__(self, location: str):
        from tuner.experiment.folder import Experiment

        self.location = location
        super().__init__(f"sqlite:///{Experiment(location).optuna_file}")

    def __reduce__(self):
        return _unpickled, (self.location,)


def _unpickled(location: str) -> ExperimentSQLite:
    return ExperimentSQLite(ExperimentSQLite.relocated or location)


def is_journal(url: str) -> bool:
    return "://" not in url


def storage_for(url: str | None, location: str):
    """The storage that `search.storage` names, or the experiment's own SQLite study when it is None."""
    if url is None:
        return ExperimentSQLite(location)
    if is_journal(url):
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(str(Path(url).expanduser())))
    return optuna.storages.RDBStorage(url)


def check(url: str, study_name: str, what: str = "search.storage") -> None:
    """Before anything is written: the storage can be opened and holds no study named `study_name` yet (an
    experiment's study is named after it); raises InputError. Creates nothing (no file, no table)."""
    if is_journal(url):
        path = Path(url).expanduser()
        if not path.parent.is_dir():
            raise InputError(f"{what}: the journal file's folder {path.parent} does not exist, got {url!r}")
        if path.is_file() and study_name in optuna.get_all_study_names(storage_for(url, "")):
            raise InputError(f"{what}: {url} already holds a study named {study_name!r}; choose another --name")
        return
    import sqlalchemy

    try:
        parsed = sqlalchemy.engine.make_url(url)
    except sqlalchemy.exc.ArgumentError:
        raise InputError(f"{what}: expected {URL_FORMS}, got {url!r}") from None
    backend = parsed.get_backend_name()
    connect_args = {}
    if backend == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise InputError(f"{what}: an in-memory SQLite study ends with the driver; give a file, got {url!r}")
        database = Path(parsed.database).expanduser()
        if not database.parent.is_dir():
            raise InputError(f"{what}: the folder of {database} does not exist, got {url!r}")
        if not database.is_file():
            return  # connecting would create it; nothing can be in it yet
    elif backend in ("postgresql", "mysql"):
        connect_args = {"connect_timeout": CONNECT_TIMEOUT_S}
    try:
        engine = sqlalchemy.create_engine(parsed, connect_args=connect_args)
    except (ImportError, sqlalchemy.exc.NoSuchModuleError) as error:
        package = DRIVER_PACKAGES.get(backend, "the database driver for it")
        raise InputError(f"{what}: {parsed.drivername} URLs need {package} installed ({error}), got "
                         f"{parsed.render_as_string(hide_password=True)!r}") from None
    try:
        with engine.connect() as connection:
            tables = sqlalchemy.inspect(connection).get_table_names()
            taken = "studies" in tables and connection.execute(
                sqlalchemy.text("SELECT 1 FROM studies WHERE study_name = :name"), {"name": study_name}).first()
    except sqlalchemy.exc.SQLAlchemyError as error:
        message = str(getattr(error, "orig", error) or error).strip().splitlines()[0]
        raise InputError(f"{what}: cannot connect to {parsed.render_as_string(hide_password=True)}: {message}") \
            from None
    finally:
        engine.dispose()
    if taken:
        raise InputError(f"{what}: {parsed.render_as_string(hide_password=True)} already holds a study named "
                         f"{study_name!r}; choose another --name")

