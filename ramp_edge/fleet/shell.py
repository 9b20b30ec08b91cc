"""POSIX shell text for remote commands: quoting and sha256 one-liners (no paramiko).

Remote commands are built from argument lists with `shlex.quote`, never by pasting strings.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence


def quote_path(path: str) -> str:
    """Shell-quote a remote path, leaving a leading `~/` unquoted so the remote shell expands it."""
    if path == "~":
        return "~"
    if path.startswith("~/"):
        return "~/" + shlex.quote(path[2:])
    return shlex.quote(path)


def build_command(
    argv: Sequence[str], cwd: str | None = None, env: dict[str, str] | None = None
) -> str:
    """A POSIX shell command line from an argument list; nothing is interpreted by the shell.

    `; exit $?` stops the remote shell from exec-ing the last command, so a process killed by a
    signal (SIGKILL from the OOM killer) is reported as 128+signal (137) instead of an
    exit-signal that paramiko drops.
    """
    if not argv:
        raise ValueError("empty argv")
    parts = []
    if cwd:
        parts.append(f"cd {quote_path(cwd)} &&")
    if env:
        parts.append("env " + " ".join(shlex.quote(f"{k}={v}") for k, v in env.items()))
    parts.append(" ".join(shlex.quote(str(a)) for a in argv))
    return " ".join(parts) + "; exit $?"


_PY_SHA = (
    "import hashlib,sys\n"
    "h=hashlib.sha256();n=int(sys.argv[2]);f=open(sys.argv[1],'rb')\n"
    "while n!=0:\n"
    " b=f.read(1<<20 if n<0 else min(n,1<<20))\n"
    " if not b:break\n"
    " h.update(b);n-=len(b) if n>0 else 0\n"
    "print(h.hexdigest())"
)


# Hash a file while another process is still writing it: read to `size` bytes, waiting for
# growth; give up after `idle` seconds without new data (the uploader died). argv: path size idle
_PY_FOLLOW = (
    "import hashlib,sys,time\n"
    "p,size,idle=sys.argv[1],int(sys.argv[2]),float(sys.argv[3])\n"
    "h=hashlib.sha256();n=0;last=time.monotonic();f=open(p,'rb')\n"
    "while n<size:\n"
    " b=f.read(min(1<<20,size-n))\n"
    " if b:\n"
    "  h.update(b);n+=len(b);last=time.monotonic()\n"
    " elif time.monotonic()-last>idle:sys.exit(3)\n"
    " else:time.sleep(0.01)\n"
    "print(h.hexdigest())"
)


def sha256_command(path: str, nbytes: int | None = None, python: str = "python3") -> str:
    """Shell text printing the sha256 of `path` (or its first `nbytes`): sha256sum, else python."""
    qp = quote_path(path)
    n = -1 if nbytes is None else int(nbytes)
    tool = f"sha256sum -- {qp}" if nbytes is None else f"head -c {n} -- {qp} | sha256sum"
    fallback = f"{shlex.quote(python)} -c {shlex.quote(_PY_SHA)} {qp} {n}"
    return (
        f"if command -v sha256sum >/dev/null 2>&1 && command -v head >/dev/null 2>&1; "
        f"then {tool}; else {fallback}; fi"
    )


def _parse_sha(text: str) -> str | None:
    token = text.strip().split()[0] if text.strip() else ""
    if len(token) == 64 and all(c in "0123456789abcdef" for c in token):
        return token
    return None
