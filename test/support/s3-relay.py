#!/usr/bin/env python3
# The benchmarks' S3 request counter (driven by s3-relay.ts; see its header for why it exists).
#
# usage: s3-relay.py TARGET_HOST TARGET_PORT
# Listens on 127.0.0.1 (a free port), relays every client connection to its own upstream connection, and prints
# one JSON line per request head ({"t":"req",...}) and per final response head ({"t":"res",...}) on stdout.
# A line "sync N" on stdin is answered with {"t":"sync","n":N} after every line before it: the reader then has
# seen every request whose answer a client already received. Exits when stdin closes (its parent is gone).
#
# Bodies are never read into Python: bytes whose length the framing gives (Content-Length) move with splice(2)
# through a pipe, 1 MiB per call, so relaying 256 MiB costs a few hundred system calls instead of thousands of
# 64 KiB reads and writes. Only heads, chunk-size lines and bodies without a length pass through user space.
import json
import os
import socket
import sys
import threading
from collections import deque

CHUNK = 1 << 20
MAX_HEAD = 64 * 1024
_out = threading.Lock()


def emit(obj):
    line = json.dumps(obj, separators=(",", ":")) + "\n"
    with _out:
        sys.stdout.write(line)
        sys.stdout.flush()


class Closed(Exception):
    pass


class Side:
    """One direction's source socket with the bytes read past the last head."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.pipe_r, self.pipe_w = os.pipe()

    def close(self):
        for fd in (self.pipe_r, self.pipe_w):
            try:
                os.close(fd)
            except OSError:
                pass

    def recv_more(self):
        data = self.sock.recv(CHUNK)
        if not data:
            raise Closed()
        self.buf += data

    def read_until(self, sep, what, eof_ok=False):
        """The bytes up to and including `sep`; None at a clean end of stream when `eof_ok`."""
        while True:
            i = self.buf.find(sep)
            if i >= 0:
                end = i + len(sep)
                out, self.buf = self.buf[:end], self.buf[end:]
                return out
            if len(self.buf) > MAX_HEAD:
                raise ValueError(what + " too long")
            try:
                self.recv_more()
            except Closed:
                if eof_ok and not self.buf:
                    return None
                raise

    def read_head(self):
        """The next head (up to and including CRLFCRLF), or None at a clean end of stream."""
        return self.read_until(b"\r\n\r\n", "head", eof_ok=True)

    def read_line(self):
        return self.read_until(b"\n", "chunk line")

    def forward(self, n, dst):
        """Moves exactly n body bytes to dst: what is buffered first, the rest by splice."""
        if self.buf:
            take = self.buf[:n]
            self.buf = self.buf[n:]
            dst.sendall(take)
            n -= len(take)
        src_fd, dst_fd = self.sock.fileno(), dst.fileno()
        while n > 0:
            got = os.splice(src_fd, self.pipe_w, min(CHUNK, n))
            if got == 0:
                raise Closed()
            n -= got
            while got > 0:
                got -= os.splice(self.pipe_r, dst_fd, got)

    def forward_chunked(self, dst):
        while True:
            line = self.read_line()
            dst.sendall(line)
            size = int(line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while True:  # trailers, up to the empty line
                    t = self.read_line()
                    dst.sendall(t)
                    if t in (b"\r\n", b"\n"):
                        return
            self.forward(size + 2, dst)  # the chunk and its CRLF

    def forward_to_eof(self, dst):
        if self.buf:
            dst.sendall(self.buf)
            self.buf = b""
        while True:
            data = self.sock.recv(CHUNK)
            if not data:
                return
            dst.sendall(data)


def parse(head):
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return lines[0], headers


def body_of(headers, dst, side):
    if "chunked" in headers.get("transfer-encoding", "").lower():
        side.forward_chunked(dst)
    elif "content-length" in headers:
        side.forward(int(headers["content-length"]), dst)


class Pair:
    ids = 0
    ids_lock = threading.Lock()

    def __init__(self, client, target):
        self.client = client
        self.upstream = socket.create_connection(target)
        for s in (client, self.upstream):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.waiting = deque()
        self.lock = threading.Lock()

    def shut(self):
        for s in (self.client, self.upstream):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def requests(self):
        side = Side(self.client)
        try:
            while True:
                head = side.read_head()
                if head is None:
                    self.upstream.shutdown(socket.SHUT_WR)
                    return
                start, headers = parse(head)
                method, _, rest = start.partition(" ")
                url = rest.rpartition(" ")[0]
                with Pair.ids_lock:
                    Pair.ids += 1
                    rid = Pair.ids
                req = {"id": rid, "method": method.upper(), "expect": headers.get("expect", "").lower() == "100-continue", "continued": False}
                with self.lock:
                    self.waiting.append(req)
                emit({"t": "req", "id": rid, "method": method, "url": url, "copy": "x-amz-copy-source" in headers})
                self.upstream.sendall(head)
                body_of(headers, self.upstream, side)
        except (Closed, OSError, ValueError):
            # Half-close only: an upstream that refused mid-body has its answer on the way back, and the client must
            # get it (the response side closes everything once the upstream is done).
            for s, how in ((self.upstream, socket.SHUT_WR), (self.client, socket.SHUT_RD)):
                try:
                    s.shutdown(how)
                except OSError:
                    pass
        finally:
            side.close()

    def responses(self):
        side = Side(self.upstream)
        try:
            while True:
                head = side.read_head()
                if head is None:
                    self.client.shutdown(socket.SHUT_WR)
                    return
                start, headers = parse(head)
                status = int(start.split(" ")[1])
                with self.lock:
                    req = self.waiting[0] if self.waiting else None
                if 100 <= status < 200:
                    if status == 100 and req:
                        req["continued"] = True
                    self.client.sendall(head)
                    continue
                with self.lock:
                    if self.waiting:
                        self.waiting.popleft()
                if req:
                    emit({"t": "res", "id": req["id"], "status": status})
                # A refusal sent before 100 Continue: the announced body never comes, so the stream cannot be
                # framed any further. Say so, and close after this answer.
                close = bool(req and req["expect"] and not req["continued"])
                if close:
                    kept = [l for l in head.decode("latin-1").split("\r\n")[:-2] if not l.lower().startswith(("connection:", "keep-alive:"))]
                    head = ("\r\n".join(kept + ["Connection: close"]) + "\r\n\r\n").encode("latin-1")
                self.client.sendall(head)
                if req and req["method"] == "HEAD" or status in (204, 304):
                    pass
                elif "content-length" in headers or "chunked" in headers.get("transfer-encoding", "").lower():
                    body_of(headers, self.client, side)
                else:
                    side.forward_to_eof(self.client)
                    self.shut()
                    return
                if close:
                    self.shut()
                    return
        except (Closed, OSError, ValueError):
            self.shut()
        finally:
            side.close()

    def run(self):
        t = threading.Thread(target=self.responses, daemon=True)
        t.start()
        self.requests()
        t.join()
        for s in (self.client, self.upstream):
            s.close()


def serve(listener, target):
    while True:
        client, _ = listener.accept()

        def handle(c=client):
            try:
                pair = Pair(c, target)
            except OSError:
                c.close()
                return
            pair.run()

        threading.Thread(target=handle, daemon=True).start()


def main():
    target = (sys.argv[1], int(sys.argv[2]))
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(256)
    threading.Thread(target=serve, args=(listener, target), daemon=True).start()
    emit({"t": "listening", "port": listener.getsockname()[1]})
    for line in sys.stdin:
        parts = line.split()
        if len(parts) == 2 and parts[0] == "sync":
            emit({"t": "sync", "n": int(parts[1])})
    os._exit(0)


if __name__ == "__main__":
    main()
