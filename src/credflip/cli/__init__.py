"""The ``credflip`` command line: the only package that prints.

Errors are one line on stderr, ``credflip: error: ...`` (and the command that
fixes it on a line of its own, when there is one to paste), with exit codes
0 ok (also ``rotate`` outside its window: nothing to do), 1 failed, 2 usage,
3 lock held, 4 drain timed out, 6 the env is halted (``credflip unhalt``). ``--debug`` adds the
traceback. No password is printed unless ``resolve --show-secrets`` asks.

Importing this package registers every command on :data:`cli`:
``options`` (shared options, secret input), ``render`` (the consoles and what
is printed), ``progress`` (rotation events) and one module per group of
commands.
"""

from __future__ import annotations

import sys
import traceback

import click

from ..errors import CredflipError
from . import admin_cmd, init_cmd, pooler_cmd, rotate_cmd, schedule_cmd, status_cmd
from .render import err

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--debug", is_flag=True, help="Show tracebacks on errors.")
@click.version_option(package_name="credflip")
def cli(debug: bool) -> None:
    """Change database passwords with zero downtime (blue/green login users)."""
    _state["debug"] = debug


_state: dict[str, bool] = {"debug": False}

for _command in (
    init_cmd.init,
    rotate_cmd.rotate_cmd,
    status_cmd.status,
    status_cmd.resolve_cmd,
    status_cmd.history_cmd,
    rotate_cmd.rollback_cmd,
    admin_cmd.unlock_cmd,
    schedule_cmd.unhalt_cmd,
    admin_cmd.save_admin_url_cmd,
    pooler_cmd.save_pooler_url_cmd,
    pooler_cmd.pooler_userlist_cmd,
    admin_cmd.demo_cmd,
):
    cli.add_command(_command)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI and turn errors into one line and an exit code."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        cli.main(args=args, prog_name="credflip", standalone_mode=False)
    except click.exceptions.Abort as exc:
        # click turns Ctrl-C into its own Abort (the interrupt is its context);
        # a prompt answered "no" or closed stdin is an Abort of its own.
        if isinstance(exc.__context__, KeyboardInterrupt):
            return _interrupted()
        err.print("credflip: aborted")
        return 1
    except click.exceptions.ClickException as exc:
        if debug:
            traceback.print_exc()
        message = exc.format_message().replace("\n", " ")
        err.print(f"credflip: error: {message}")
        return 2 if isinstance(exc, click.UsageError) else exc.exit_code
    except CredflipError as exc:
        if debug:
            traceback.print_exc()
        err.print(f"credflip: error: {exc}")
        return exc.exit_code
    except KeyboardInterrupt:
        return _interrupted()
    return 0


def _interrupted() -> int:
    err.print("credflip: interrupted; run the same command again to resume")
    return 130
