"""A stand-in for an Azure confidential VM's vTPM, for libtss2's ``cmd`` TCTI.

    TCTI  cmd:python3 azure_vtpm_standin.py HOST PORT HCL_REPORT_FILE

On Azure the paravisor (HCL) itself answers reads of vTPM NV index 0x01400001 with the HCL
report; everything else is an ordinary TPM. This process does the same in front of a real
software TPM: it reads TPM commands from stdin, answers TPM2_NV_ReadPublic and TPM2_NV_Read of
0x01400001 with the given (real) HCL report, and forwards every other command to swtpm at
HOST:PORT, relaying its response to stdout. swtpm alone cannot hold the report: its NV indices
are at most 2048 bytes, an HCL report is 2600.
"""

from __future__ import annotations

import hashlib
import socket
import struct
import sys
from typing import BinaryIO

HCL_INDEX = 0x01400001
CC_NV_READ_PUBLIC = 0x00000169
CC_NV_READ = 0x0000014E
TPM_ST_NO_SESSIONS, TPM_ST_SESSIONS = 0x8001, 0x8002
TPM_RC_NV_RANGE = 0x0146
SHA256 = 0x000B
# OWNERREAD | AUTHREAD | PPWRITE | NO_DA | WRITTEN | PLATFORMCREATE: a platform-defined,
# written, ordinary index the owner may read.
ATTRIBUTES = 0x20000 | 0x40000 | 0x1 | 0x2000000 | 0x20000000 | 0x40000000


def _read(stream: BinaryIO, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = stream.read(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def _recv(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise SystemExit("swtpm closed the connection")
        data += chunk
    return data


def _response(tag: int, body: bytes, rc: int = 0) -> bytes:
    return struct.pack(">HII", tag, 10 + len(body), rc) + body


class Hcl:
    def __init__(self, report: bytes) -> None:
        self.report = report
        self.public = struct.pack(">IHIHH", HCL_INDEX, SHA256, ATTRIBUTES, 0, len(report))
        self.name = struct.pack(">H", SHA256) + hashlib.sha256(self.public).digest()

    def read_public(self) -> bytes:
        body = struct.pack(">H", len(self.public)) + self.public
        body += struct.pack(">H", len(self.name)) + self.name
        return _response(TPM_ST_NO_SESSIONS, body)

    def read(self, command: bytes) -> bytes:
        _, auth_size = struct.unpack_from(">II", command, 14)
        sessions, pos = [], 22
        while pos < 22 + auth_size:  # echo each session: empty nonce and HMAC, same attributes
            pos += 4
            (nonce_size,) = struct.unpack_from(">H", command, pos)
            pos += 2 + nonce_size
            attributes = command[pos]
            (hmac_size,) = struct.unpack_from(">H", command, pos + 1)
            pos += 3 + hmac_size
            sessions.append(struct.pack(">HBH", 0, attributes, 0))
        size, offset = struct.unpack_from(">HH", command, pos)
        if offset + size > len(self.report):
            return _response(TPM_ST_NO_SESSIONS, b"", TPM_RC_NV_RANGE)
        data = self.report[offset : offset + size]
        params = struct.pack(">H", len(data)) + data
        body = struct.pack(">I", len(params)) + params + b"".join(sessions)
        return _response(TPM_ST_SESSIONS, body)

    def answer(self, command: bytes) -> bytes | None:
        """The paravisor's answer, or None when the command goes to the TPM."""
        (code,) = struct.unpack_from(">I", command, 6)
        if code == CC_NV_READ_PUBLIC and struct.unpack_from(">I", command, 10)[0] == HCL_INDEX:
            return self.read_public()
        if code == CC_NV_READ and struct.unpack_from(">I", command, 14)[0] == HCL_INDEX:
            return self.read(command)
        return None


def main(host: str, port: int, report_path: str) -> None:
    with open(report_path, "rb") as f:
        hcl = Hcl(f.read())
    tpm = socket.create_connection((host, port))
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while (header := _read(stdin, 10)) is not None:
        (size,) = struct.unpack_from(">I", header, 2)
        rest = _read(stdin, size - 10)
        if rest is None:
            break
        command = header + rest
        response = hcl.answer(command)
        if response is None:
            tpm.sendall(command)
            head = _recv(tpm, 10)
            response = head + _recv(tpm, struct.unpack_from(">I", head, 2)[0] - 10)
        stdout.write(response)
        stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
