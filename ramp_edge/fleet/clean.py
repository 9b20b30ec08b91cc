"""Remove old artifacts and leftovers from a device (`ramp-edge fleet clean`).

A fleet operation `(Transport) -> CleanReport`: lists the files of the given remote
directories with one small Python program on the device, then removes what is not kept:
partial uploads (`*.partial`) always, other files unless their name or sha256 prefix is in
`keep` or they are newer than `older_than_s`. Nothing outside those directories is touched.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ramp_edge.errors import RemoteError
from ramp_edge.fleet.transport import Transport

# argv: dry_run(0/1) older_than_s keep_json dir...; prints one JSON object.
_PY_CLEAN = r"""
import json, os, sys, time
dry, older, keep = sys.argv[1] == "1", float(sys.argv[2]), set(json.loads(sys.argv[3]))
now = time.time(); out = []
for d in sys.argv[4:]:
    try:
        names = sorted(os.listdir(d))
    except OSError:
        continue
    for n in names:
        p = os.path.join(d, n)
        if not os.path.isfile(p) or os.path.islink(p):
            continue
        st = os.stat(p)
        partial = n.endswith(".partial")
        # pushed artifacts are "<sha12>-<file name>"; --keep names the file
        plain = n[13:] if n[12:13] == "-" and all(c in "0123456789abcdef" for c in n[:12]) else n
        kept = not partial and (n in keep or plain in keep or now - st.st_mtime < older)
        removed = False
        if not kept and not dry:
            try:
                os.unlink(p); removed = True
            except OSError:
                pass
        out.append({"path": p, "bytes": st.st_size, "partial": partial, "kept": kept,
                    "removed": removed})
print(json.dumps({"files": out}))
"""


@dataclass(frozen=True, slots=True)
class CleanReport:
    host: str
    files: tuple[dict[str, Any], ...]
    dry_run: bool

    @property
    def freed_bytes(self) -> int:
        return sum(f["bytes"] for f in self.files if f["removed"])

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "dry_run": self.dry_run,
            "files": list(self.files),
            "freed_bytes": self.freed_bytes,
        }


def clean_remote(
    conn: Transport,
    directories: Sequence[str],
    *,
    keep: Sequence[str] = (),
    older_than_s: float = 0.0,
    dry_run: bool = False,
) -> CleanReport:
    """Remove partial uploads and unkept files in `directories` (relative to the login home)."""
    python = conn.python or "python3"
    argv = [python, "-c", _PY_CLEAN, "1" if dry_run else "0", str(older_than_s)]
    argv += [json.dumps(sorted(keep)), *directories]
    result = conn.run(argv, check=False, timeout=120)
    try:
        data = json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        tail = result.stderr.strip().splitlines()[-1:] or [f"exit {result.exit_code}"]
        raise RemoteError(f"{conn.name}: cannot list old artifacts: {tail[0]}") from None
    return CleanReport(conn.name, tuple(data["files"]), dry_run)
