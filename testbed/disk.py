"""A small filesystem of a test's own that the test can make fail: an ext4
image on a loop device, mounted on a directory of its own under /tmp.

    with LoopDisk() as disk:            # disk.path: the mount point
        ...                             # a database there
        disk.fail()                     # read-only from now on, under its writers
        ...                             # every process closes its files
        disk.repair()                   # unmounted, checked, mounted again

Why not `mount -o remount,ro`: Linux refuses to make a filesystem read-only
while a file on it is open for writing (EBUSY: "mount point is busy"), and a
database keeps its files open for as long as it runs, SQLite's connections
and PostgreSQL's server alike. The one way a mounted filesystem turns
read-only under its writers is the kernel's own, after an error with
errors=remount-ro: that is what fail() causes (ext4's trigger_fs_error, the
same path a failing disk takes). From then on every write fails (EROFS or
EIO), reads of what is cached may go on, and on Linux 6.x the filesystem
takes writes again only after an unmount: repair() needs every file on it
closed first.
"""
from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import subprocess
import tempfile
import time
from typing import Self


class LoopDisk:
    """size_mb: the image's size (sparse: it costs what is written).
    owner: the user the filesystem's root directory is given to (a
    PostgreSQL server's, say); root keeps it otherwise."""

    def __init__(self, size_mb: int = 128, owner: str | None = None):
        self.size_mb = size_mb
        self.owner = owner
        self.home: pathlib.Path | None = None
        self.device = ""

    @property
    def path(self) -> pathlib.Path:
        """The mount point."""
        return self.home / "mnt"

    @property
    def image(self) -> pathlib.Path:
        return self.home / "disk.img"

    def start(self) -> Self:
        self.home = pathlib.Path(tempfile.mkdtemp(prefix="sdn-enforcement-disk-"))
        # Other users (a PostgreSQL server) reach the mount point through it.
        self.home.chmod(0o755)
        try:
            with open(self.image, "wb") as image:
                image.truncate(self.size_mb << 20)
            self.image.chmod(0o600)
            _run("mkfs.ext4", "-q", "-F", str(self.image))
            self.device = _run("losetup", "--find", "--show", str(self.image)).strip()
            self.path.mkdir()
            self._mount()
            if self.owner:
                shutil.chown(self.path, self.owner, self.owner)
        except BaseException:
            self.close()
            raise
        return self

    def fail(self, timeout: float = 5.0) -> None:
        """The kernel makes the filesystem read-only, as after a disk error;
        returns once a write there is refused."""
        trigger = pathlib.Path(f"/sys/fs/ext4/{pathlib.Path(self.device).name}"
                               "/trigger_fs_error")
        trigger.write_text("sdn-enforcement test: the disk fails\n")
        deadline = time.monotonic() + timeout
        while self.writable():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.path} still takes writes after the error")
            time.sleep(0.05)

    def writable(self) -> bool:
        probe = self.path / ".probe"
        try:
            probe.write_bytes(b"x")
            probe.unlink()
        except OSError:
            return False
        return True

    def repair(self, timeout: float = 20.0) -> None:
        """Unmounted (waiting up to timeout for the last file on it to be
        closed), checked with e2fsck, which replays the journal, and mounted
        again, writable."""
        deadline = time.monotonic() + timeout
        self._unmount(timeout)
        while True:
            result = subprocess.run(["e2fsck", "-f", "-y", str(self.device)],
                                    capture_output=True, text=True, check=False)
            if result.returncode in (0, 1):  # 1: errors corrected
                break
            # The kernel lets go of the device a moment after umount returns.
            if "in use" not in result.stdout + result.stderr or time.monotonic() > deadline:
                raise RuntimeError(f"e2fsck {self.device} exited {result.returncode}: "
                                   f"{result.stdout[-500:]}{result.stderr[-500:]}; "
                                   f"held by {self.holders()}")
            time.sleep(0.1)
        self._mount()

    def holders(self) -> dict[int, str]:
        """The processes with a file, a mapping or a directory on the disk
        (pid -> command line), for the message of a disk that stays busy."""
        inside = str(self.path)
        found = {}
        for proc in pathlib.Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                links = [os.readlink(proc / "cwd"), os.readlink(proc / "root")]
                links += [os.readlink(fd) for fd in (proc / "fd").iterdir()]
                maps = (proc / "maps").read_text()
                mounts = (proc / "mountinfo").read_text()
                if (any(link.startswith(inside) for link in links) or inside in maps
                        or self.device in mounts):
                    found[int(proc.name)] = (proc / "cmdline").read_bytes().replace(
                        b"\0", b" ").decode(errors="replace")[:120]
        return found

    def close(self) -> None:
        """Unmounts (lazily if something still holds a file), detaches the
        loop device and removes the image. Safe to call twice."""
        if self.home is None:
            return
        if self.path.is_mount():
            with contextlib.suppress(Exception):
                self._unmount(10)
            if self.path.is_mount():
                subprocess.run(["umount", "--lazy", str(self.path)], check=False)
        if self.device:
            subprocess.run(["losetup", "--detach", self.device], capture_output=True,
                           check=False)
            self.device = ""
        shutil.rmtree(self.home, ignore_errors=True)
        self.home = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def _mount(self) -> None:
        _run("mount", "-t", "ext4", "-o", "errors=remount-ro", self.device, str(self.path))

    def _unmount(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            result = subprocess.run(["umount", str(self.path)], capture_output=True,
                                    text=True, check=False)
            if result.returncode == 0 or not self.path.is_mount():
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"cannot unmount {self.path}: {result.stderr.strip()}")
            time.sleep(0.1)


def _run(*args: str) -> str:
    result = subprocess.run(args, capture_output=True, text=True, check=False,
                            env={**os.environ, "LC_ALL": "C"})
    if result.returncode:
        raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}): "
                           f"{result.stderr.strip()}")
    return result.stdout
