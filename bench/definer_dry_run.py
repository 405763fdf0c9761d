"""What ``credflip rotate --dry-run`` prints for a MariaDB app whose inactive user is the
DEFINER of a trigger, a view and a routine.

The app is tests/test_mysql_definers.py's: its user made the trigger
``orders_audit``, the views ``big`` and the procedures ``add_numbers`` and
``audited``. ``init`` makes that user blue; one rotation (short waits) makes
green active, so blue, their DEFINER, is the user the next rotation prepares.
The two users' rights then match, and the dry run of that next rotation is
printed verbatim, followed by whether it plans any ``GRANT`` or ``REVOKE`` and
whether it shows a password.

Every credflip command runs as a child process (``python -m credflip``, URLs
in its environment) from ``--src``: by default the credflip this script
imports; for the plan before issue 19's point 2 (commit e1f2da4, which made
MySQL prepare change rights by difference), a copy of its parent's sources:

    git archive e1f2da4^ src | tar -x -C "$(mkdir -p /tmp/before-e1f2 && echo /tmp/before-e1f2)"
    python bench/definer_dry_run.py [--src /tmp/before-e1f2/src]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent.parent / "tests"))
from conftest import run_cli_process
from live_init import CURRENT, private_mariadb
from test_dry_run import printed_sql
from test_mysql_definers import definer_app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=CURRENT, help="credflip's src/ to run")
    args = parser.parse_args()
    with private_mariadb() as mariadb, tempfile.TemporaryDirectory() as tmp:
        app = definer_app(mariadb)
        env = {
            "PYTHONPATH": str(args.src),
            "CREDFLIP_ADMIN_URL": app.admin_url.secret,
            "CREDFLIP_WRITER_URL": app.url.secret,
            "CREDFLIP_ENV": "definers",
            "CREDFLIP_STORE": f"sqlite:///{Path(tmp) / 'params.db'}",
        }
        for step in (["init"], ["rotate", "--yes", "--client-ttl", "200ms", "--quiet", "200ms"]):
            done = run_cli_process(*step, env=env)
            print(f"$ credflip {' '.join(step)}: exit {done.returncode}")
            if done.returncode != 0:
                sys.exit(done.stdout + done.stderr)
        same = app.rights(app.user) == app.rights(app.green)
        print(f"rights of {app.user} and {app.green} equal: {same}")
        plan = run_cli_process("rotate", "--dry-run", env=env)
        print(f"$ credflip rotate --dry-run: exit {plan.returncode}\n")
        print(plan.stdout + plan.stderr)
        planned = printed_sql(plan.stdout)
        print("GRANT planned:", any(s.startswith("GRANT") for s in planned))
        print("REVOKE planned:", any(s.startswith("REVOKE") for s in planned))
        shown = any(
            p and p in plan.stdout + plan.stderr for p in (app.password, mariadb.admin_password)
        )
        print("a password in the output:", shown)


if __name__ == "__main__":
    main()
