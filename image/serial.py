#!/usr/bin/env python3
"""Drive the debug shell on a QEMU serial console (a Unix socket chardev) from image/test.sh.

  serial.py SOCKET run 'COMMAND' [TIMEOUT]   run COMMAND in the appliance's debug shell (DEBUG=1
                                             images only), print its output, exit with its status
  serial.py LOG wait REGEX [TIMEOUT]         wait until the serial log file matches REGEX
                                             (exit 0), or TIMEOUT seconds pass (exit 1)

The shell echoes what it is sent, so the begin/end markers are written split by quotes in the
command and only the shell's output contains them whole.
"""
import re
import socket
import sys
import time


def run(path: str, command: str, timeout: float) -> int:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    sock.settimeout(0.5)
    nonce = str(int(time.time() * 1000) % 1000000)
    begin, end = f"@@B{nonce}@@", f"@@E{nonce}"
    line = (f"set +H; echo '@@B{nonce}''@@'; {{ {command}\n}} 2>&1; "
            f"echo \"@@E{nonce}\"'='\"$?\"'@@'\n")
    # Ctrl-U clears anything half-typed on the line first.
    sock.sendall(b"\x15" + line.encode())
    buf = ""
    deadline = time.monotonic() + timeout
    pattern = re.compile(re.escape(begin) + r"\r?\n(.*?)" + re.escape(end) + r"=(\d+)@@", re.S)
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        if not chunk:
            break
        buf += chunk.decode(errors="replace")
        m = pattern.search(buf)
        if m:
            sys.stdout.write(m.group(1).replace("\r", ""))
            sys.stdout.flush()
            return int(m.group(2))
    sys.stderr.write(f"serial.py: no answer to {command!r} within {timeout:.0f} s; got:\n{buf[-2000:]}\n")
    return 124


def wait(path: str, regex: str, timeout: float) -> int:
    pattern = re.compile(regex)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(path, "rb") as f:
                text = f.read().decode(errors="replace")
            m = pattern.search(text)
            if m:
                print(m.group(0).strip())
                return 0
        except FileNotFoundError:
            pass
        time.sleep(0.25)
    return 1


def main() -> int:
    if len(sys.argv) < 4 or sys.argv[2] not in ("run", "wait"):
        sys.stderr.write(__doc__)
        return 2
    timeout = float(sys.argv[4]) if len(sys.argv) > 4 else 60.0
    if sys.argv[2] == "run":
        return run(sys.argv[1], sys.argv[3], timeout)
    return wait(sys.argv[1], sys.argv[3], timeout)


if __name__ == "__main__":
    sys.exit(main())
