#!/usr/bin/env python3
"""An example command trainer: gradient descent on a one-dimensional quadratic, x -> (x - target)².

Pure Python and fast. It speaks the Tunix RT line protocol (docs/trainers.md): typed
hyperparameters from the JSON in TUNIX_RT_HYPERPARAMETERS (the `--name=value` flags carry the same
values, printed here for the log), one metrics line per epoch, one evaluation line at the end.

Test hooks: `crash_at_epoch` raises at that epoch, `sleep_s` pauses after each epoch, `spawn`
starts a child that starts a grandchild (with `escaped` the grandchild leaves the process group),
both sleeping, their pids written to helpers.pid in the output folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

# Each dataset is a bowl with its minimum somewhere else.
TARGETS = {"bowl": 3.0, "offset": -2.0}


def helper(role: str, spawn: str, pid_file: str) -> None:
    """A process that only sleeps: the child starts the grandchild first."""
    if role == "grandchild" and spawn == "escaped":
        os.setsid()
    if role == "child":
        subprocess.Popen(
            [sys.executable, __file__, "--helper=grandchild", f"--spawn={spawn}", f"--pid-file={pid_file}"]
        )
    with open(pid_file, "a") as fh:
        fh.write(f"{os.getpid()}\n")
    time.sleep(600)


def main() -> int:
    hp = json.loads(os.environ["TUNIX_RT_HYPERPARAMETERS"])
    output_dir = Path(os.environ["TUNIX_RT_OUTPUT_DIR"])
    target = TARGETS[os.environ["TUNIX_RT_DATASET"]]
    print(f"quadratic: run {os.environ['TUNIX_RT_RUN_ID']}, flags {' '.join(sys.argv[1:])}")

    if hp["spawn"] != "none":
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--helper=child",
                f"--spawn={hp['spawn']}",
                f"--pid-file={output_dir / 'helpers.pid'}",
            ]
        )

    x, learning_rate = hp["start"], hp["learning_rate"]
    loss = (x - target) ** 2
    for epoch in range(1, hp["epochs"] + 1):
        x -= learning_rate * 2 * (x - target)
        loss = (x - target) ** 2
        print(json.dumps({"step": epoch, "metrics": {"loss": loss, "x": x}}))
        print(f"epoch {epoch}: x={x:.6f} loss={loss:.6g}", file=sys.stderr)
        if epoch == hp["crash_at_epoch"]:
            raise RuntimeError(f"crashing at epoch {epoch} as asked (crash_at_epoch)")
        time.sleep(hp["sleep_s"])

    (output_dir / "result.json").write_text(json.dumps({"x": x, "loss": loss}))
    if hp["evaluate"]:
        print(json.dumps({"evaluation": {"loss": loss, "distance": abs(x - target)}, "primary": "loss"}))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1].startswith("--helper="):
        options = dict(arg[2:].split("=", 1) for arg in sys.argv[1:])
        helper(options["helper"], options["spawn"], options["pid-file"])
    else:
        sys.exit(main())
