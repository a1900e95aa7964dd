"""Secrets the embedded mode keeps under the data directory.

Each secret comes, in order, from the environment variable itself, from the file named
by `<NAME>_FILE`, or from a file in the data directory that is created on first use with
mode 0600. Creation is race-free, so the three processes of `make run` starting together
all end up with the same value.
"""

import os
import secrets
from collections.abc import Callable
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured


def load_or_create(name: str, path: Path, generate: Callable[[], str]) -> str:
    value = os.environ.get(name)
    if value:
        return value.strip()
    named_file = os.environ.get(f"{name}_FILE")
    if named_file:
        try:
            return Path(named_file).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE={named_file} cannot be read: {exc}") from exc
    return _read_or_create(path, generate)


def optional(name: str) -> str:
    """A secret that may be left unset: from the variable or `<NAME>_FILE`, else empty."""
    value = os.environ.get(name)
    if value:
        return value.strip()
    named_file = os.environ.get(f"{name}_FILE")
    if not named_file:
        return ""
    try:
        return Path(named_file).read_text().strip()
    except OSError as exc:
        raise ImproperlyConfigured(f"{name}_FILE={named_file} cannot be read: {exc}") from exc


def _read_or_create(path: Path, generate: Callable[[], str]) -> str:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not path.exists():
        # Written in full under a temporary name, then linked into place: a concurrent
        # reader sees either no file or the whole secret, and only one writer wins.
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(generate() + "\n")
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    value = path.read_text().strip()
    if not value:
        raise ImproperlyConfigured(f"{path} is empty; delete it to generate a new secret")
    if path.stat().st_mode & 0o077:
        raise ImproperlyConfigured(f"{path} must not be readable by group or others (chmod 600)")
    return value


def new_django_secret() -> str:
    return secrets.token_urlsafe(50)


def new_master_key() -> str:
    return secrets.token_hex(32)
