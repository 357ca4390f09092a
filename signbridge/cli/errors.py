"""Errors of the `signbridge` command as one line with the fix, the traceback only with `--debug`.

An operator who typed a command wants to know what to change, not where in SQLAlchemy it broke:
a missing database file, tables that were never created, a Temporal that is not running, a
database that refuses the connection — each is one line naming the setting or command that
fixes it. Anything else is one line with the exception's type and message and a pointer to
`--debug`, which shows the whole traceback.
"""

from __future__ import annotations

from typing import Any

import typer
from sqlalchemy import make_url
from sqlalchemy.exc import ArgumentError, OperationalError, ProgrammingError, SQLAlchemyError
from temporalio.service import RPCError
from typer.core import TyperGroup

from signbridge.core.settings import Settings

DEBUG_KEY = "signbridge.debug"


class OneLineErrors(TyperGroup):
    """The top `signbridge` group: an exception escaping a command becomes one line and exit 1."""

    def invoke(self, ctx: Any) -> Any:  # typer's vendored click.Context
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException):  # exits, usage errors: typer says them
            raise
        except Exception as e:
            if ctx.meta.get(DEBUG_KEY):
                raise
            typer.echo(f"signbridge: {explain(e)}", err=True)
            raise typer.Exit(1) from None


def explain(error: Exception) -> str:
    """One line: what went wrong, and the setting or command that fixes it."""
    if isinstance(error, SQLAlchemyError):
        return _database(error)
    if isinstance(error, OSError) and error.filename:
        return (f"{error.strerror or type(error).__name__}: {error.filename}; check SIGNBRIDGE_DATA_DIR (now "
                f"{Settings().data_dir}) and SIGNBRIDGE_DATABASE_URL")
    if isinstance(error, RPCError) or (isinstance(error, RuntimeError) and "connect" in str(error).lower()):
        settings = Settings()
        return (f"cannot reach Temporal at {settings.temporal_address} ({_first_line(error)}); is it running "
                "(`signbridge run` or `signbridge devserver`)? SIGNBRIDGE_TEMPORAL_ADDRESS says where it is")
    return f"{type(error).__name__}: {_first_line(error)} (run with --debug for the traceback)"


def _database(error: SQLAlchemyError) -> str:
    settings = Settings()
    try:
        shown = make_url(settings.sqlalchemy_url).render_as_string(hide_password=True)
    except ArgumentError:
        shown = "SIGNBRIDGE_DATABASE_URL"
    text = str(getattr(error, "orig", None) or error)
    lowered = text.lower()
    if "no such table" in lowered or ("does not exist" in lowered and isinstance(error, ProgrammingError)):
        return f"the database {shown} has no SignBridge tables yet ({_first_line(text)}); run `signbridge db upgrade`"
    if "unable to open database file" in lowered:
        return (f"cannot open the database {shown}: its folder does not exist or is not writable; "
                f"check SIGNBRIDGE_DATA_DIR (now {settings.data_dir}) or SIGNBRIDGE_DATABASE_URL")
    if isinstance(error, OperationalError):
        return (f"cannot use the database {shown} ({_first_line(text)}); check SIGNBRIDGE_DATABASE_URL and that "
                "the database server is running")
    return f"database error on {shown}: {type(error).__name__}: {_first_line(text)} (--debug shows the traceback)"


def _first_line(error: object) -> str:
    lines = str(error).strip().splitlines()
    return lines[0][:300] if lines else type(error).__name__
