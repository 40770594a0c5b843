"""Rank 0's channel to the other ranks of a group on one host: each step's plain data, an int64 array,
written once into a shared-memory ring (a memfd every rank maps), with a 16-byte wake-up on a socket per
rank. A rank waiting for its next step blocks in recv, so an idle group burns no CPU. A payload larger
than a ring slot (very long block tables at a full batch) follows its wake-up on the socket instead."""

from __future__ import annotations

import contextlib
import mmap
import os
import socket
import struct
import time

import numpy as np

SLOTS = 4  # rank 0 runs at most two steps ahead of the others (overlapped scheduling): room to spare
SLOT_BYTES = 1 << 20
_WAKE = struct.Struct("qq")  # kind, payload bytes
_IN_RING, _ON_SOCKET, _STOP = 0, 1, 2


def _ring_offset(num_ranks: int) -> int:
    """Bytes before the ring: one counter of steps read per receiving rank, padded to a cache line."""
    return -(-8 * num_ranks // 64) * 64


class StepSender:
    """Rank 0's end; pass `receiver_fds(i)` to the i-th other rank's process (pass_fds), then close them here."""

    def __init__(self, num_receivers: int, slot_bytes: int = SLOT_BYTES):
        self.slot_bytes = slot_bytes
        self.ring_offset = _ring_offset(num_receivers)
        self.memfd = os.memfd_create("pyinfer-steps")
        os.ftruncate(self.memfd, self.ring_offset + SLOTS * slot_bytes)
        self.map = mmap.mmap(self.memfd, 0)
        self.steps_read = np.frombuffer(self.map, dtype=np.int64, count=num_receivers)
        self.pairs = [socket.socketpair() for _ in range(num_receivers)]
        self.sockets = [ours for ours, _ in self.pairs]
        self.num_sent = 0

    def receiver_fds(self, index: int) -> tuple[int, int]:
        """(shared memory, socket) file descriptors of receiver `index`."""
        return self.memfd, self.pairs[index][1].fileno()

    def close_receiver_fds(self) -> None:
        """Once the receivers' processes hold their ends: a receiver's exit then closes its socket."""
        for _, theirs in self.pairs:
            theirs.close()

    def send(self, values: np.ndarray) -> None:
        data = memoryview(np.ascontiguousarray(values, dtype=np.int64)).cast("B")
        if data.nbytes <= self.slot_bytes:
            while int(self.steps_read.min()) < self.num_sent - SLOTS + 1:  # the slot is still being read
                time.sleep(1e-5)
            start = self.ring_offset + self.num_sent % SLOTS * self.slot_bytes
            self.map[start : start + data.nbytes] = data
            wake = _WAKE.pack(_IN_RING, data.nbytes)
            for sock in self.sockets:
                sock.sendall(wake)
        else:
            for sock in self.sockets:
                sock.sendall(_WAKE.pack(_ON_SOCKET, data.nbytes))
                sock.sendall(data)
        self.num_sent += 1

    def stop(self) -> None:
        """Tells every receiver there are no more steps (a receiver already gone is skipped)."""
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.sendall(_WAKE.pack(_STOP, 0))

    def close(self) -> None:
        for ours, theirs in self.pairs:
            ours.close()
            theirs.close()  # closed already once the receivers' processes hold it
        self.steps_read = None  # the view must go before the map it points into
        self.map.close()
        os.close(self.memfd)


class StepReceiver:
    """The end of rank `index` + 1, from the descriptors rank 0 passed."""

    def __init__(self, memfd: int, socket_fd: int, index: int, num_receivers: int):
        self.map = mmap.mmap(memfd, 0)
        os.close(memfd)
        self.ring_offset = _ring_offset(num_receivers)
        self.slot_bytes = (len(self.map) - self.ring_offset) // SLOTS
        self.steps_read = np.frombuffer(self.map, dtype=np.int64, count=num_receivers)
        self.sock = socket.socket(fileno=socket_fd)
        self.index = index
        self.num_read = 0

    def receive(self) -> np.ndarray | None:
        """The next step's values (blocks until rank 0 sends them); None once rank 0 says stop. Raises
        ConnectionError if rank 0 is gone."""
        kind, nbytes = _WAKE.unpack(self._recv_exactly(_WAKE.size))
        if kind == _STOP:
            return None
        if kind == _IN_RING:
            start = self.ring_offset + self.num_read % SLOTS * self.slot_bytes
            # copied out before the count below frees the slot (x86 keeps these in order; a weaker
            # memory model would want a fence between them)
            values = np.frombuffer(self.map, dtype=np.int64, count=nbytes // 8, offset=start).copy()
        else:
            values = np.frombuffer(self._recv_exactly(nbytes), dtype=np.int64)
        self.num_read += 1
        self.steps_read[self.index] = self.num_read
        return values

    def _recv_exactly(self, n: int) -> bytearray:
        buffer = bytearray(n)
        view, got = memoryview(buffer), 0
        while got < n:
            k = self.sock.recv_into(view[got:])
            if k == 0:
                raise ConnectionError("rank 0 of the tensor-parallel group is gone")
            got += k
        return buffer
