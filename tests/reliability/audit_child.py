"""Child process of the SIGKILL campaign: appends concurrently until it is killed.

    python audit_child.py DIR {every|batch} SEED

Prints ``ready`` once the log is open, then ``<seq> <hash>`` for every append *after* the
append returned (one ``write`` per line, so a line in the pipe is a whole acknowledgement).
Entries vary in size (up to ~60 KiB) so that some writes span many pages and a kill can land
inside one.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys

from cmcp_sidecar.audit import AuditLog

WORKERS = 16
PAD_SIZES = (0, 0, 0, 200, 3000, 20000, 60000)


async def main(directory: str, fsync: str, seed: int) -> None:
    log = await AuditLog.open(directory, instance_id="kill-test", fsync=fsync)  # type: ignore[arg-type]
    os.write(1, b"ready\n")

    async def worker(k: int) -> None:
        rng = random.Random(seed * 100 + k)
        while True:
            appended = await log.append(
                {
                    "kind": "call",
                    "session": f"w{k}",
                    "decision": rng.choice(("allow", "deny", "redact")),
                    "forwarded": True,
                    "tool": "echo",
                    "pad": "x" * rng.choice(PAD_SIZES),
                }
            )
            os.write(1, f"{appended.seq} {appended.hash}\n".encode())

    await asyncio.gather(*(worker(k) for k in range(WORKERS)))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
