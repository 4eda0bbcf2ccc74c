"""Choose a store by URL. Backends are imported only when chosen, so `import app`
stays fast and the Lambda package never loads psycopg or SQLite code it does not use."""

from __future__ import annotations

from collections.abc import Sequence
from importlib import import_module
from urllib.parse import parse_qsl, urlsplit

from chalicelib import shell_paths
from chalicelib.clock import Clock
from chalicelib.config import DEFAULT_STORE_URL as DEFAULT_STORE_URL
from chalicelib.storage.base import JobStore

SQLITE_OPTIONS = ("durability", "synchronous")  # read by storage/sqlite.py's from_url

# scheme -> (module, factory function taking (url, clock))
_BACKENDS = {
    "memory": ("chalicelib.storage.memory", "from_url"),
    "sqlite": ("chalicelib.storage.sqlite", "from_url"),
    "postgres": ("chalicelib.storage.postgres", "from_url"),
    "postgresql": ("chalicelib.storage.postgres", "from_url"),
    "dynamodb": ("chalicelib.storage.dynamodb", "from_url"),
    "redis": ("chalicelib.storage.redis_store", "from_url"),
    "rediss": ("chalicelib.storage.redis_store", "from_url"),
}


# A driver a store imports -> the extra of pyproject.toml that installs it.
_EXTRAS = {"psycopg": "postgres", "psycopg_pool": "postgres", "redis": "redis"}


def open_store(url: str = DEFAULT_STORE_URL, clock: Clock | None = None) -> JobStore:
    from chalicelib.config import ConfigError
    from chalicelib.redact import redact_url

    module_name, factory = _BACKENDS[store_scheme(url)]
    try:
        module = import_module(module_name)
        store: JobStore = getattr(module, factory)(url, clock)
    except ModuleNotFoundError as exc:
        extra = _EXTRAS.get((exc.name or "").split(".")[0])
        if extra is None:
            raise
        # `make run` installs what SQLite needs; the other stores' drivers are extras.
        raise ConfigError(
            f"SPOOL_STORE_URL {redact_url(url)!r}: this store needs {exc.name}, which is not"
            f" installed. Install Spool's {extra!r} extra (in a checkout:"
            f" .venv/bin/pip install -e '.[{extra}]')"
        ) from exc
    except ValueError as exc:
        if isinstance(exc, ConfigError) and str(exc).startswith("SPOOL_"):
            raise  # another setting the store reads (SPOOL_ATTEMPT_HISTORY) names itself
        # A malformed option in the URL (pool_max=0, durability=bogus): the operator's
        # to fix, said as such, not an "unexpected error".
        raise ConfigError(f"SPOOL_STORE_URL {redact_url(url)!r}: {exc}") from exc
    return store


def store_scheme(url: str, source: str = "SPOOL_STORE_URL") -> str:
    """The URL's store kind; ConfigError naming the ones there are if it names none.
    `source` is where the URL came from, as the refusal names it (`spool db --url`)."""
    from chalicelib.config import ConfigError
    from chalicelib.redact import redact_url

    try:
        scheme = urlsplit(url).scheme.split("+", 1)[0]
    except ValueError as exc:  # "Invalid IPv6 URL": an unclosed [ in the host
        raise ConfigError(f"{source} {redact_url(url)!r}: {exc}") from exc
    if scheme not in _BACKENDS:
        known = ", ".join(f"{name}://" for name in sorted(_BACKENDS))
        shown = redact_url(url)
        what = f"unknown store URL scheme {scheme!r}" if scheme else "a store URL needs a scheme"
        raise ConfigError(
            f"{source} {shown!r}: {what}. Use one of {known} (for example {DEFAULT_STORE_URL})"
        )
    refused = fragment_refusal(url, scheme)
    if refused is not None:
        raise ConfigError(f"{source} (a {scheme}:// URL) {refused}")
    return scheme


def fragment_refusal(url: str, scheme: str) -> str | None:
    """Why a store URL holding `#` is refused, else None.

    A URL's fragment begins at `#` and every parser drops it: `sqlite:////data/a#b/x.db`
    opened (and made) the file /data/a, quietly; a password holding `#` lost its rest,
    the host and the options with it (redis-py then read part of the password as the
    port, libpq part of the user name as the host). The URL is not shown, since what
    follows `#` may be a password's rest, which no redaction would recognise."""
    if "#" not in url:
        return None
    if scheme == "sqlite":
        return (
            "holds '#', where a URL's fragment begins: everything after it would be "
            "dropped, and another file opened. A SQLite path is read as written, so name "
            "the file by a path without '#' (a symbolic link to it works)"
        )
    return (
        "holds '#', where a URL's fragment begins: everything after it (the rest of a "
        "password, the host, the options) would be dropped unread. Write '#' in a user "
        "name or password as %23"
    )


def sqlite_path(url: str) -> tuple[str, dict[str, str]]:
    """sqlite:///relative.db, sqlite:////absolute.db, sqlite:///:memory:"""
    refused = fragment_refusal(url, "sqlite")
    if refused is not None:
        raise ValueError(f"the URL {refused}")
    parts = urlsplit(url)
    if parts.netloc:  # sqlite://name.db: the name parsed as a host, the path empty
        raise ValueError(
            f"a SQLite URL has three slashes before a relative path (sqlite:///"
            f"{parts.netloc}{parts.path}) and four before an absolute one (sqlite:////abs/x.db)"
        )
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    options = url_options(parts.query, "sqlite", SQLITE_OPTIONS)
    if not path:  # `sqlite:///` is a URL cut short, more likely than a wish for the default
        raise ValueError(
            "a SQLite URL names its file (sqlite:///relative.db, sqlite:////abs/x.db); "
            "leave SPOOL_STORE_URL unset for the default, sqlite:///.spool/spool.db"
        )
    unexpanded = shell_paths.refusal(path, "sqlite:///{}")
    if unexpanded is not None:  # sqlite:///~/x.db: a folder named `~` here, held quietly
        raise ValueError(unexpanded)
    if not url.partition(":")[2].startswith("//"):
        # sqlite:/var/x.db (one slash, as file:/ URLs have) read as the relative
        # var/x.db, made quietly under the working directory: refused, as two are.
        raise ValueError(
            f"a SQLite URL has three slashes before a relative path (sqlite:///"
            f"{parts.path.lstrip('/')}) and four before an absolute one "
            f"(sqlite:///{parts.path if parts.path.startswith('/') else '/' + parts.path})"
        )
    return path, options


def url_options(query: str, scheme: str, known: Sequence[str]) -> dict[str, str]:
    """A store URL's query as {option: value}, every option one the store reads (an
    empty value is left out: the store's default holds).

    An option given twice, or one the store does not read (a typo such as
    `durabilty=full` would otherwise leave the default quietly in force), is a
    ConfigError naming it and the options there are.
    """
    pairs = parse_qsl(query, keep_blank_values=True)
    names = [name for name, _ in pairs]
    for name in names:
        if name not in known:
            raise unknown_option(name, scheme, known)
    refuse_repeated(names)
    return {name: value for name, value in pairs if value}


def refuse_repeated(names: Sequence[str]) -> None:
    """A ConfigError naming the first option (alphabetically) a URL gives twice: which
    of the two a store read would be a guess."""
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise config_error(f"option {twice[0]!r} is given more than once; give it once")


def unknown_option(
    name: str, scheme: str, known: Sequence[str], more: str = "", others: Sequence[str] = ()
) -> ValueError:
    """The error for an option a store URL does not take: it names the option, the
    nearest known one when it looks like a typo, and every option the store reads
    (`more` says what else is passed on, such as libpq's parameters, found in `others`)."""
    from difflib import get_close_matches

    close = get_close_matches(name, [*known, *others], n=1, cutoff=0.75)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    takes = f"takes {', '.join(known)}" if known else "takes no options"
    return config_error(f"unknown option {name!r}{hint}: a {scheme}:// URL {takes}{more}")


def config_error(message: str) -> ValueError:
    """A ConfigError (a ValueError: open_store adds the setting's name and the URL)."""
    from chalicelib.config import ConfigError

    return ConfigError(message)
