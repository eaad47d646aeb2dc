"""Supervising a child process: read its stdout and stderr line by line without ever blocking, and
end it together with everything it started (its process group and its recorded descendants)."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import time
from collections import defaultdict
from typing import IO

import psutil

TREE_SCAN_INTERVAL_S = 0.5
MAX_LINE_BYTES = 1 << 20  # a longer line is cut into pieces of this size


class PipeReader:
    """Reads stdout and stderr line by line without ever blocking on one of them."""

    def __init__(self, pipes: dict[str, IO[bytes]]):
        self.selector = selectors.DefaultSelector()
        self.partial: dict[str, bytes] = {}
        for stream, pipe in pipes.items():
            os.set_blocking(pipe.fileno(), False)
            self.selector.register(pipe, selectors.EVENT_READ, stream)
            self.partial[stream] = b""

    @property
    def open(self) -> bool:
        return bool(self.selector.get_map())

    def read(self, timeout: float) -> list[tuple[str, str]]:
        """Complete lines available within `timeout` seconds, as (stream, text)."""
        if not self.open:
            time.sleep(timeout)
            return []
        lines: list[tuple[str, str]] = []
        for key, _events in self.selector.select(timeout):
            stream = key.data
            try:
                chunk = os.read(key.fd, 65536)
            except BlockingIOError:
                continue
            if not chunk:  # end of file: the last line may lack its newline
                self.selector.unregister(key.fileobj)
                key.fileobj.close()
                pieces, self.partial[stream] = [self.partial[stream]] if self.partial[stream] else [], b""
            else:
                *pieces, rest = (self.partial[stream] + chunk).split(b"\n")
                if len(rest) > MAX_LINE_BYTES:
                    pieces.append(rest)
                    rest = b""
                self.partial[stream] = rest
            lines.extend((stream, piece.rstrip(b"\r").decode("utf-8", "replace")) for piece in pieces)
        return lines

    def close(self) -> None:
        for key in list(self.selector.get_map().values()):
            self.selector.unregister(key.fileobj)
            key.fileobj.close()
        self.selector.close()


class ProcessTree:
    """The started process and every process it spawned. The leader runs in a session of its own
    (one signal reaches the whole group); descendants and group members are also recorded while
    the run lasts, so processes that left the group (setsid) or were orphaned are ended too."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc
        self.known: dict[int, psutil.Process] = {}
        self.last_scan = 0.0

    def scan(self) -> None:
        """Record the members of the group and the descendants of every recorded process still
        alive (an orphan's children too)."""
        self.last_scan = time.monotonic()
        children_of: dict[int, list[psutil.Process]] = defaultdict(list)
        for process in psutil.process_iter(["ppid"]):
            children_of[process.info["ppid"]].append(process)
            if process.pid not in self.known and process.pid != self.proc.pid:
                try:
                    if os.getpgid(process.pid) == self.proc.pid:
                        self.known[process.pid] = process
                except OSError:
                    pass
        stack = [self.proc.pid, *(pid for pid, process in self.known.items() if _alive(process))]
        while stack:
            for child in children_of.get(stack.pop(), ()):
                if child.pid not in self.known:
                    self.known[child.pid] = child
                    stack.append(child.pid)

    def scan_if_due(self) -> None:
        if time.monotonic() - self.last_scan >= TREE_SCAN_INTERVAL_S:
            self.scan()

    def kill(self, grace_s: float) -> None:
        """SIGTERM to everything, SIGKILL to what is left after `grace_s` seconds."""
        self.scan()
        # The leader is reaped through Popen (its exit status matters), the others by whoever is
        # their parent now: here, a zombie counts as ended.
        others = [process for process in self.known.values() if _alive(process)]
        if self.proc.poll() is not None and not others:
            return
        self._signal(others, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and (self.proc.poll() is None or any(map(_alive, others))):
            time.sleep(0.05)
        others = [process for process in others if _alive(process)]
        if self.proc.poll() is None or others:
            self._signal(others, signal.SIGKILL)
        self.proc.wait()

    def _signal(self, processes: list[psutil.Process], sig: int) -> None:
        # The group id is the leader's pid (start_new_session); it cannot have been reused in the
        # moment between the end of the run and this call.
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        for process in processes:
            try:
                process.send_signal(sig)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
